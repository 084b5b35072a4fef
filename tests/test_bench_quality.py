"""``gpumat bench quality`` (gpumat/bench/quality.py) and what it stands on: the seen-items filter
and the ranking metrics (against hand computations), ``HSTUConfig.supervise_last`` (the newest-S
path equals the full model), and the command end to end on a tiny synthetic workload."""

from __future__ import annotations

import json
import math

import pytest
import torch

from gpumat.cli import main
from gpumat.core.batch import JaggedBatch
from gpumat.core.errors import SchemaError
from gpumat.models.hstu import HSTU, HSTUConfig
from gpumat.models.train import evaluate_ranking, mask_seen, ranking_metrics

pytestmark = pytest.mark.usefixtures("one_thread")


def _batch(rows):
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.int64)
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
    items = torch.tensor([i for r in rows for i in r], dtype=torch.int64)
    ts = torch.tensor([100 + 9 * p * p for r in rows for p in range(len(r))], dtype=torch.int64)
    return JaggedBatch(offsets, {"item_id": items, "ts": ts, "action": items % 5})


def test_seen_items_filter_and_metrics_by_hand():
    # 6 items; item 0 is padding (excluded). Row 0 saw items 5 and 1, row 1 saw nothing.
    scores = torch.tensor([[9.0, 8.0, 1.0, 3.0, 2.0, 7.0],
                           [9.0, 8.0, 1.0, 3.0, 2.0, 7.0]])
    masked = mask_seen(scores, torch.tensor([0, 2, 2]), torch.tensor([5, 1]), exclude=[0])
    inf = float("-inf")
    assert masked.tolist() == [[inf, inf, 1.0, 3.0, 2.0, inf], [inf, 8.0, 1.0, 3.0, 2.0, 7.0]]
    assert scores[0, 0] == 9.0  # the input is not modified
    # target 4: row 0 ranks it 2nd (after 3), row 1 4th (after 1, 5, 3)
    m = ranking_metrics(masked, torch.tensor([4, 4]), ks=(1, 3, 10))
    assert m["n"] == 2
    assert m["hr@1"] == 0.0 and m["hr@3"] == 1.0 and m["hr@10"] == 2.0
    assert m["ndcg@3"] == pytest.approx(1 / math.log2(3))
    assert m["ndcg@10"] == pytest.approx(1 / math.log2(3) + 1 / math.log2(5))
    assert m["mrr"] == pytest.approx(1 / 2 + 1 / 4)
    # unfiltered, row 0 would rank it 5th (after 0, 1, 5, 3)
    assert ranking_metrics(scores[:1], torch.tensor([4]), ks=(3, 5))["hr@5"] == 1.0
    assert ranking_metrics(scores[:1], torch.tensor([4]), ks=(3, 5))["hr@3"] == 0.0
    # a filtered target is a miss, whatever k; ties count in expectation (2-way tie for 1st -> 1/2 at k=1)
    m = ranking_metrics(masked, torch.tensor([5, 0]), ks=(1, 6))
    assert m["hr@1"] == m["hr@6"] == m["mrr"] == 0.0
    m = ranking_metrics(torch.tensor([[1.0, 1.0, 0.0]]), torch.tensor([1]), ks=(1, 2))
    assert m["hr@1"] == 0.5 and m["hr@2"] == 1.0 and m["ndcg@2"] == pytest.approx((1 + 1 / math.log2(3)) / 2)


class _Fixed(torch.nn.Module):
    """A model whose scores are a fixed table: row b scores ``table[b]``."""

    def __init__(self, table):
        super().__init__()
        self.table = table
        self.p = torch.nn.Parameter(torch.zeros(1))

    def score(self, batch):
        return self.table[: batch.batch_size]


def test_evaluate_ranking_filters_each_rows_history():
    table = torch.tensor([[0.0, 5.0, 4.0, 3.0, 2.0], [0.0, 5.0, 4.0, 3.0, 2.0]])
    batch = _batch([[1, 2], [3]])
    labels = torch.tensor([3, 2])  # row 0: 1 and 2 filtered -> rank 1; row 1: 3 filtered -> rank 2
    got = evaluate_ranking(_Fixed(table), [(batch, labels)], ks=(1, 2), exclude=[0])
    assert got == {"hr@1": 0.5, "ndcg@1": 0.5, "hr@2": 1.0, "ndcg@2": pytest.approx((1 + 1 / math.log2(3)) / 2),
                   "mrr": 0.75, "n": 2}
    raw = evaluate_ranking(_Fixed(table), [(batch, labels)], ks=(1,), filter_seen=False)
    assert raw["hr@1"] == 0.0 and raw["mrr"] == pytest.approx((1 / 3 + 1 / 2) / 2)
    with pytest.raises(SchemaError):
        evaluate_ranking(_Fixed(table), [(batch, labels)], ks=(0,))


@pytest.mark.parametrize("layers,query", [(0, "own"), (1, "own"), (2, "own"), (2, "next")])
def test_supervise_last_equals_the_full_model(layers, query):
    rows = [[1, 2, 3, 4, 5], [], [7], [8, 9, 10, 11, 12, 13, 14, 15, 16], [3, 4]]
    batch = _batch(rows)
    labels = torch.tensor([1, 2, 3, 4, 5])
    qts = batch.values["ts"][(batch.offsets[1:] - 1).clamp(min=0)] + 10_000 if query == "next" else None
    cfg = HSTUConfig(num_items=20, dim=8, num_layers=layers, num_heads=2, max_len=12, num_negatives=4,
                     num_time_buckets=16, side_features={"action": 5}, time_bias_query=query)
    torch.manual_seed(1)
    full = HSTU(cfg).eval()
    cols, offsets, lengths, _ = full._jagged(batch)
    h = full._encode(cols, offsets, qts)
    for S in (1, 3, 9):
        part = HSTU(HSTUConfig(**{**vars(cfg), "supervise_last": S})).eval()
        part.load_state_dict(full.state_dict())
        hn, qpos = part._encode_newest(cols, offsets, lengths, S, qts)
        for b in range(len(rows)):
            for s in range(S):
                if qpos[b, s] >= 0:
                    torch.testing.assert_close(hn[b, s], h[int(offsets[b] + qpos[b, s])], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(part(batch, qts), full(batch, qts), atol=1e-5, rtol=1e-5)
        part.loss(batch, labels, qts).backward()
    # S >= the longest row: the same targets, the same loss (same sampled negatives)
    part = HSTU(HSTUConfig(**{**vars(cfg), "supervise_last": 9})).eval()
    part.load_state_dict(full.state_dict())
    for lab in (labels, None):
        torch.manual_seed(5)
        a = full.loss(batch, lab, qts)
        torch.manual_seed(5)
        torch.testing.assert_close(part.loss(batch, lab, qts), a)


def test_bench_quality_end_to_end(tmp_path, capsys):
    out, png = tmp_path / "q.json", tmp_path / "q.png"
    try:
        import matplotlib  # noqa: F401

        plot = ["--plot", str(png)]
    except ImportError:
        plot = []
    argv = ["bench", "quality", "--dataset", "synthetic", "--max-lens", "8,32", "--seeds", "2", "--steps", "2",
            "--eval-every", "1", "--batch-size", "4", "--dim", "8", "--negatives", "4", "--users", "8",
            "--requests-per-user", "2", "--distance", "40", "--items", "30", "--threads", "1", "--quiet",
            "--workdir", str(tmp_path / "w"), "--json", str(out), *plot]
    assert main(argv) == 0
    r = json.loads(out.read_text())
    assert r["dataset"] == "synthetic" and r["seeds"] == 2 and len(r["runs"]) == 4
    assert [s["max_len"] for s in r["summary"]] == [8, 32]
    for s in r["summary"]:
        assert s["seeds"] == 2 and 0.0 <= s["hr@10"] <= 1.0 and s["hr@10_std"] >= 0.0
        assert s["examples"] == 8 and s["peak_rss_bytes"] > 0 and len(s["curve"]) == 2
    for run in r["runs"]:  # the same examples and targets for every tenant: only max_len differs
        assert run["steps"] == 2 and run["config"]["supervise_last"] == 1 and run["planned_steps"] == 2
        assert run["config"]["max_len"] == run["max_len"]
    assert set(r["ceiling"]) == {"8", "32"}
    table = capsys.readouterr().out
    assert "max_len" in table and "ceiling" in table
    if plot:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["bench", "quality", "--dataset", "synthetic", "--max-lens", "0", "--json", str(out)]) == 2
    assert "comma-separated integers >= 1" in capsys.readouterr().err


def test_without_in_batch_negatives_the_pool_is_the_sampled_items():
    batch = _batch([[1, 2, 3], [4, 5]])
    labels = torch.tensor([6, 7])
    cfg = HSTUConfig(num_items=20, dim=8, num_layers=1, num_heads=2, max_len=12, num_negatives=0,
                     in_batch_negatives=False)
    torch.manual_seed(0)
    model = HSTU(cfg)
    assert model.loss(batch, labels).item() == 0.0  # the positive is the only candidate
    with_batch = HSTU(HSTUConfig(**{**vars(cfg), "in_batch_negatives": True}))
    with_batch.load_state_dict(model.state_dict())
    assert with_batch.loss(batch, labels).item() > 0.0
