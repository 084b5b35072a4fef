"""The HSTU model: shapes, causality, padding invariance, empty rows, and learning (trained with
gpumat/models/train.py, whose own tests are in tests/test_train.py)."""

from __future__ import annotations

import doctest
import math

import pytest
import torch
import torch.nn.functional as F

import gpumat.models.hstu
import gpumat.models.train
from gpumat.core.batch import JaggedBatch
from gpumat.core.errors import SchemaError
from gpumat.kernels.pt_jagged_hstu import BucketBias
from gpumat.models.hstu import HSTU, HSTUConfig
from gpumat.models.train import evaluate, popularity_eval, train_steps


pytestmark = pytest.mark.usefixtures("one_thread")


def assert_close(actual, expected, atol=1e-5, rtol=1e-5, what=""):
    """allclose that names the first mismatching index instead of just failing."""
    actual, expected = actual.detach(), expected.detach()
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    bad = ~torch.isclose(actual, expected, atol=atol, rtol=rtol)
    if bad.any():
        idx = tuple(int(i) for i in bad.nonzero()[0])
        raise AssertionError(
            f"{what}: {int(bad.sum())} mismatches, first at {idx}: {actual[idx].item()} vs {expected[idx].item()}"
        )


def make_batch(rows, with_rating=False):
    """rows: list of lists of item ids -> JaggedBatch with ts = 100 * 3**position-ish, rating = item % 5."""
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.int64)
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
    items = torch.tensor([i for r in rows for i in r], dtype=torch.int64)
    ts = torch.tensor([1000 + 7 * p * p for r in rows for p in range(len(r))], dtype=torch.int64)
    vals = {"item_id": items, "ts": ts}
    if with_rating:
        vals["rating"] = (items % 5).to(torch.int32)
    return JaggedBatch(offsets, vals)


def small_model(seed=0, **kw):
    torch.manual_seed(seed)
    args = dict(num_items=30, dim=16, num_layers=2, num_heads=2, max_len=12, num_negatives=8)
    args.update(kw)
    return HSTU(HSTUConfig(**args)).eval()


def test_doc_examples_run():
    for mod in (gpumat.models.hstu, gpumat.models.train):
        res = doctest.testmod(mod)
        assert res.failed == 0 and res.attempted > 0, mod.__name__


def test_shapes():
    model = small_model(side_features={"rating": 5})
    batch = make_batch([[1, 2, 3, 4], [], [5, 6]], with_rating=True)
    h, mask = model.encode(batch)
    assert h.shape == (3, 4, 16) and mask.shape == (3, 4) and mask.dtype == torch.bool
    assert mask.sum(1).tolist() == [4, 0, 2]
    assert torch.all(h[~mask] == 0)
    assert_close(h[mask].norm(dim=-1), torch.ones(6), what="unit-norm outputs")
    assert model(batch).shape == (3, 16)
    assert model.score(batch).shape == (3, 30)
    loss = model.loss(batch, torch.tensor([5, 1, 7]))
    assert loss.dim() == 0 and torch.isfinite(loss)


@pytest.mark.parametrize("absolute_positions", [False, True])
def test_causal_future_change_leaves_past_unchanged(absolute_positions):
    model = small_model(side_features={"rating": 5}, absolute_positions=absolute_positions)
    base = [[3, 9, 4, 11, 2, 8, 1], [5, 6, 7]]
    ref, _ = model.encode(make_batch(base, with_rating=True))
    for p in range(1, 7):
        rows = [list(base[0]), list(base[1])]
        rows[0][p] = (rows[0][p] + 13) % 30  # changes item_id and rating
        b = make_batch(rows, with_rating=True)
        b.values["ts"][p] += 10**6  # and the event's time
        out, _ = model.encode(b)
        assert_close(out[0, :p], ref[0, :p], atol=1e-6, what=f"positions before {p}")
        assert not torch.allclose(out[0, p], ref[0, p]), f"position {p} should see its own event"
        assert_close(out[1], ref[1], atol=1e-6, what="other row")


@pytest.mark.parametrize("absolute_positions", [False, True])
@pytest.mark.parametrize("width_rows", [[[1] * 9], [[2, 3] * 6, [4]]])
def test_padding_invariance(width_rows, absolute_positions):
    model = small_model(absolute_positions=absolute_positions)
    row = [7, 3, 21, 3, 8]
    alone_h, _ = model.encode(make_batch([row]))
    alone = model(make_batch([row]))
    padded_h, mask = model.encode(make_batch(width_rows + [row] + [[]]))
    i = len(width_rows)
    assert padded_h.shape[1] > len(row)
    assert_close(padded_h[i, : len(row)], alone_h[0], atol=1e-5, what="per-position outputs")
    assert_close(model(make_batch(width_rows + [row] + [[]]))[i], alone[0], atol=1e-5, what="last position")


@pytest.mark.parametrize("absolute_positions", [False, True])
def test_rows_longer_than_max_len_keep_newest_events(absolute_positions):
    model = small_model(max_len=5, absolute_positions=absolute_positions)
    row = list(range(1, 12))
    b = make_batch([row])
    b_tail = JaggedBatch(torch.tensor([0, 5]), {c: v[-5:] for c, v in b.values.items()})
    assert_close(model(b), model(b_tail), what="truncated row")
    assert model.encode(b)[0].shape[1] == 5


def test_empty_rows_use_learned_empty_vector():
    model = small_model()
    empty = F.normalize(model.empty.detach(), dim=-1)
    for rows in ([[], []], [[], [4, 5], []]):
        out = model(make_batch(rows))
        assert torch.isfinite(out).all()
        for b, r in enumerate(rows):
            if not r:
                assert_close(out[b], empty, what="empty row")
    # All rows empty, and a batch of no rows at all: finite loss, finite gradients.
    model.train()
    for rows, labels in (([[], []], [3, 4]), ([], [])):
        model.zero_grad()
        loss = model.loss(make_batch(rows), torch.tensor(labels, dtype=torch.int64))
        loss.backward()
        assert torch.isfinite(loss)
        assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
    assert model(make_batch([])).shape == (0, 16)
    assert model.score(make_batch([[], []])).shape == (2, 30)


def test_bucket_bias_backward_matches_embedding():
    torch.manual_seed(1)
    table = torch.randn(7, 3, dtype=torch.float64, requires_grad=True)
    idx = torch.randint(7, (2, 5, 5))
    g = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    (ours,) = torch.autograd.grad(BucketBias.apply(table, idx), table, g)
    (ref,) = torch.autograd.grad(F.embedding(idx, table).permute(0, 3, 1, 2), table, g)
    assert_close(ours, ref, atol=1e-12, what="time-bias gradient")


def test_time_buckets_extremes_do_not_overflow():
    ts = torch.tensor([[torch.iinfo(torch.int64).min, 0, torch.iinfo(torch.int64).max]])
    tb = gpumat.models.hstu.time_buckets(ts, 128)
    assert tb.min() >= 0 and tb.max() <= 127 and tb[0, 2, 0] == 127 and tb[0, 1, 1] == 0


def test_input_errors_are_schema_errors():
    model = small_model(side_features={"rating": 5})
    good = make_batch([[1, 2]], with_rating=True)
    with pytest.raises(SchemaError, match="rating"):
        model(make_batch([[1, 2]]))
    with pytest.raises(SchemaError, match="item_id"):
        model(make_batch([[1, 30]], with_rating=True))
    with pytest.raises(SchemaError, match="labels"):
        model.loss(good, torch.tensor([1, 2]))
    with pytest.raises(SchemaError, match="labels"):
        model.loss(good, torch.tensor([-1]))
    with pytest.raises(SchemaError):
        HSTUConfig(num_items=10, dim=10, num_heads=3)
    with pytest.raises(SchemaError):
        HSTUConfig(num_items=0)
    with pytest.raises(SchemaError):
        HSTUConfig(num_items=10, sampler="zipf")
    with pytest.raises(SchemaError, match="set_item_counts"):
        small_model(sampler="popularity").loss(good, torch.tensor([1]))


def test_sampler_and_logq_variants_give_finite_losses():
    counts = torch.arange(30)
    batch = make_batch([[1, 2, 3], [], [4, 5]])
    labels = torch.tensor([4, 1, 6])
    for kw in ({"logq_correction": True}, {"sampler": "popularity", "logq_correction": True},
               {"train_all_positions": False}, {"num_negatives": 0}, {"num_time_buckets": 0},
               {"negative_sampling": "per_query"}, {"negative_sampling": "per_query", "in_batch_negatives": False},
               {"negative_sampling": "per_query", "sampler": "popularity", "logq_correction": True},
               {"negative_sampling": "per_query", "num_negatives": 0}, {"absolute_positions": True}):
        model = small_model(**kw).train()
        if kw.get("sampler") == "popularity":
            model.set_item_counts(counts)
        loss = model.loss(batch, labels)
        loss.backward()
        assert torch.isfinite(loss), kw
    assert torch.isfinite(small_model().loss(batch, None))


def test_per_query_negatives_equal_shared_for_one_query():
    """One supervised query: its K per-query negatives are the shared pool drawn from the same
    generator state, so both samplings give the same loss; with many queries they differ."""
    one, labels = make_batch([[3, 9]]), torch.tensor([4])
    kw = dict(train_all_positions=False, in_batch_negatives=False, num_negatives=8)
    losses = []
    for mode in ("shared", "per_query"):
        model = small_model(negative_sampling=mode, **kw)
        torch.manual_seed(5)
        losses.append(model.loss(one, labels))
    assert_close(losses[0], losses[1], atol=1e-6, what="one query")
    many = make_batch([[1, 2, 3, 4, 5, 6], [7, 8, 9, 10]])
    out = []
    for mode in ("shared", "per_query"):
        model = small_model(negative_sampling=mode, num_negatives=8)
        torch.manual_seed(5)
        out.append(float(model.loss(many, torch.tensor([11, 12])).detach()))
    assert out[0] != out[1]


def test_per_query_logits_by_matmul_or_gather_agree(monkeypatch):
    """A small catalog reads each query's negatives from one full-catalog matmul, a large one gathers
    their embeddings: the same logits, so the same loss and gradients."""
    batch, labels = make_batch([[1, 2, 3, 4, 5], [6, 7, 8]]), torch.tensor([9, 10])
    results = []
    for per_negative in (0, 10**6):
        monkeypatch.setattr(gpumat.models.hstu, "FULL_LOGITS_PER_NEGATIVE", per_negative)
        model = small_model(negative_sampling="per_query", num_negatives=6).train()
        torch.manual_seed(2)
        loss = model.loss(batch, labels)
        loss.backward()
        results.append((loss.detach(), model.item_emb.weight.grad.clone()))
    # (float32 sums in another order: a CPU whose matmul kernels block differently moves the 5th digit)
    assert_close(results[0][0], results[1][0], atol=1e-6, rtol=1e-4, what="loss")
    assert_close(results[0][1], results[1][1], atol=1e-6, rtol=1e-4, what="item embedding gradient")


def test_next_event_query_times():
    """time_bias_query="next": position i is timed at event i + 1 (the row's last at its query_ts).
    Changing an event's item leaves earlier positions alone; changing its time moves the position
    before it (which now reads that time), and query_ts moves only each row's last position."""
    model = small_model(time_bias_query="next")
    with torch.no_grad():  # the time bias starts at zero: give it something to say
        for layer in model.layers:
            layer.time_bias.weight.normal_(0, 1.0)
    base = [[3, 9, 4, 11, 2, 8, 1], [5, 6, 7]]
    b0 = make_batch(base)
    qts = b0.values["ts"][b0.offsets[1:] - 1] + torch.tensor([500, 70_000])
    cols, offsets, _, _ = model._jagged(b0)
    ref = model._encode(cols, offsets, qts)
    rows = [list(base[0]), list(base[1])]
    rows[0][4] = 20
    b1 = make_batch(rows)
    cols1, _, _, _ = model._jagged(b1)
    out = model._encode(cols1, offsets, qts)
    assert_close(out[:4], ref[:4], atol=1e-6, what="before the changed item")
    b2 = make_batch(base)
    b2.values["ts"][4] += 10**6
    cols2, _, _, _ = model._jagged(b2)
    out = model._encode(cols2, offsets, qts)
    assert_close(out[:3], ref[:3], atol=1e-6, what="before the retimed event's predecessor")
    assert not torch.allclose(out[3], ref[3]), "position 3 reads event 4's time"
    other = model._encode(cols, offsets, qts + torch.tensor([0, 10**7]))
    assert_close(other[:9], ref[:9], atol=1e-6, what="all but the second row's last position")
    assert not torch.allclose(other[9], ref[9])
    with pytest.raises(SchemaError, match="query_ts"):
        model.loss(b0, torch.tensor([1, 2]), torch.tensor([1, 2, 3]))
    with pytest.raises(SchemaError, match="time_bias_query"):
        HSTUConfig(num_items=5, time_bias_query="previous")


def test_triples_carry_query_times_through_training_and_evaluation():
    torch.manual_seed(0)
    model = HSTU(HSTUConfig(num_items=N_ITEMS, dim=16, num_layers=1, num_heads=2, max_len=12, num_negatives=8,
                            time_bias_query="next"))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    triples = [(b, lab, b.values["ts"][(b.offsets[1:] - 1).clamp(min=0)] + 7) for b, lab in successor_batches(1, count=3)]
    log = train_steps(model, opt, iter(triples), steps=3, log_every=1, progress=False)
    assert log["steps"] == 3 and all(math.isfinite(v) for _, v in log["losses"])
    assert evaluate(model, triples, k=5)["n"] == 3 * 64
    with pytest.raises(SchemaError, match="query_ts"):
        train_steps(model, opt, iter([(triples[0][0], triples[0][1], torch.zeros(3))]), steps=1, progress=False)


def test_config_rejects_unknown_negative_sampling():
    with pytest.raises(SchemaError, match="negative_sampling"):
        HSTUConfig(num_items=5, negative_sampling="local")


# ---------------------------------------------------------------- learning


N_ITEMS = 40


def successor_batches(seed, batch_size=64, max_len=12, count=None):
    """Rows are runs i, i+1, i+2, ... (mod N) of length 0..max_len; the label is the next one."""
    g = torch.Generator().manual_seed(seed)
    n = 0
    while count is None or n < count:
        n += 1
        lengths = torch.randint(0, max_len + 1, (batch_size,), generator=g)
        starts = torch.randint(0, N_ITEMS, (batch_size,), generator=g)
        rows = [[(int(s) + p) % N_ITEMS for p in range(int(L))] for s, L in zip(starts, lengths)]
        labels = torch.tensor([(int(s) + int(L)) % N_ITEMS for s, L in zip(starts, lengths)])
        yield make_batch(rows), labels


def train_small(seed, steps, **kw):
    torch.manual_seed(seed)
    cfg = HSTUConfig(num_items=N_ITEMS, dim=32, num_layers=1, num_heads=2, max_len=12, num_negatives=16, **kw)
    model = HSTU(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    log = train_steps(model, opt, successor_batches(seed), steps=steps, log_every=10, progress=False)
    return model, log


@pytest.mark.parametrize("kw", [{}, {"negative_sampling": "per_query", "absolute_positions": True}])
def test_loss_decreases_and_beats_popularity(kw):
    model, log = train_small(seed=0, steps=120, **kw)
    losses = [v for _, v in log["losses"]]
    assert log["steps"] == 120 and log["examples_per_s"] > 0
    assert losses[-1] < 0.5 * losses[0], losses
    eval_batches = list(successor_batches(seed=123, count=4))
    metrics = evaluate(model, eval_batches, k=10)
    train_labels = torch.cat([lab for _, lab in successor_batches(seed=7, count=4)])
    pop = popularity_eval(train_labels, torch.cat([lab for _, lab in eval_batches]), k=10, num_items=N_ITEMS)
    assert metrics["n"] == pop["n"] == 256
    # Rows of length 0 (1 in 13) have an unpredictable label; every other row is deterministic.
    assert metrics["hr@10"] > 0.85 and metrics["hr@10"] > pop["hr@10"] + 0.4, (metrics, pop)
    assert metrics["ndcg@10"] > pop["ndcg@10"]


def test_training_is_deterministic_with_a_seed():
    m1, log1 = train_small(seed=3, steps=8)
    m2, log2 = train_small(seed=3, steps=8)
    assert log1["losses"] == log2["losses"]
    for (n, a), (_, b) in zip(m1.state_dict().items(), m2.state_dict().items()):
        assert torch.equal(a, b), n
