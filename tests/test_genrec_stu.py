"""examples/genrec_stu.py: generative-recommenders-style STU layers trained on gpumat's jagged batches."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _example():
    spec = importlib.util.spec_from_file_location("genrec_stu", ROOT / "examples" / "genrec_stu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_stu_trains_on_jagged_batches():
    result = _example().main(["--stu", "local", "--data", "synthetic", "--steps", "24", "--batch-size", "24"])
    assert result["steps"] == 24
    assert result["loss_last"] < 0.7 * result["loss_first"], result


def test_local_stu_is_causal_and_rows_are_independent():
    ex = _example()
    torch.manual_seed(0)
    stu = ex.LocalSTUStack([ex.LocalSTULayer(8, 2, 4, 4) for _ in range(2)]).eval()
    lengths = torch.tensor([3, 0, 4])
    offsets = torch.tensor([0, 3, 3, 7])
    x = torch.randn(7, 8)
    y = stu(x=x, x_lengths=lengths, x_offsets=offsets, max_seq_len=4)
    later = x.clone()
    later[2] += 1.0  # row 0's last event
    later[3:] -= 2.0  # all of row 2
    z = stu(x=later, x_lengths=lengths, x_offsets=offsets, max_seq_len=4)
    assert torch.allclose(y[:2], z[:2], atol=1e-6)  # row 0's earlier outputs do not see its later event
    assert not torch.allclose(y[2], z[2])
    one = stu(x=later[3:], x_lengths=lengths[2:], x_offsets=torch.tensor([0, 4]), max_seq_len=4)
    assert torch.allclose(one, z[3:], atol=1e-6)  # a row's outputs do not depend on the other rows


def test_research_hstu_recipe_pads_with_the_target_at_length(tmp_path):
    """examples/genrec_research_hstu.py's padded_features (what generative-recommenders' research
    trainer feeds its HSTU), checked here without generative-recommenders."""
    import pyarrow as pa

    import gpumat

    spec = importlib.util.spec_from_file_location("genrec_research_hstu", ROOT / "examples" / "genrec_research_hstu.py")
    research = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(research)
    tier = gpumat.Tier.create(str(tmp_path / "t"), {"ts": "int64", "item_id": "int64", "rating": "int32"})
    tier.append(pa.table({"user_id": [1, 1, 1, 2], "ts": [10, 20, 30, 5], "item_id": [4, 5, 6, 9],
                          "rating": pa.array([5, 4, 3, 1], pa.int32())}))
    examples = pa.table({"user_id": [1, 3, 2], "version": [1, 1, 1], "length": [3, 0, 1],
                         "request_ts": [30, 40, 50], "label_item": [7, 8, 2]})
    tenant = gpumat.Tenant("recent", ["item_id", "rating", "ts"], 2)
    batch = gpumat.Materializer(tier, [tenant], sparse_features=False, check_leakage="inclusive")(examples)
    lengths, ids, payloads, targets = research.padded_features(batch, tenant, batch.passthrough["label_item"], 2)
    assert lengths.tolist() == [2, 1] and targets.tolist() == [7, 2]  # user 3 (no history) dropped
    assert ids.tolist() == [[5, 6, 7, 0, 0], [9, 2, 0, 0, 0]]  # width max_len + 2 + 1, target at `length`
    assert payloads["timestamps"].tolist() == [[20, 30, 30, 0, 0], [5, 50, 0, 0, 0]]
    assert payloads["ratings"].tolist() == [[4, 3, 0, 0, 0], [1, 0, 0, 0, 0]]
