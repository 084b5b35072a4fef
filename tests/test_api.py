"""materialize() end to end against a naive loop over Tier.read_history: SPEC §2 semantics and §5 errors."""

import numpy as np
import pyarrow as pa
import pytest

import gpumat
from gpumat import LeakageError, PointerError, SchemaError, Tenant

SCHEMA = {"ts": "int64", "item_id": "int64", "action": "int32"}
I64 = np.iinfo(np.int64)


def random_events(rng, users, n, ts0):
    u = rng.choice(users, n)
    item = rng.integers(I64.min, I64.max, n, dtype=np.int64, endpoint=True)
    return pa.table({
        "user_id": u.astype(np.int64),
        "ts": (ts0 + np.arange(n)).astype(np.int64),
        "item_id": np.where(rng.random(n) < 0.5, rng.integers(0, 50, n), item).astype(np.int64),
        "action": rng.integers(-(2**31), 2**31 - 1, n, dtype=np.int64, endpoint=True).astype(np.int32),
    })


def build_tier(tmp_path, rng, appends=6, compact_at=(3,)):
    tier = gpumat.Tier.create(str(tmp_path / "tier"), SCHEMA)
    users = np.array([1, 2, 3, 5, 8, 13, 21, I64.max, I64.min], dtype=np.int64)
    ts = 0
    for a in range(appends):
        n = int(rng.integers(0, 700))
        tier.append(random_events(rng, users, n, ts))
        ts += n
        if a in compact_at:
            tier.compact()
    return tier, users, ts


def naive(tier, user_id, version, length, request_ts, tail, tenant):
    """SPEC §2 literally: S = history[u][0:n] ++ tail; keep the newest L; project."""
    hist = tier.read_history(int(user_id), version=int(version))
    S = {c: np.concatenate([hist[c][:length], np.asarray(tail[c], dtype=np.int64)]) for c in SCHEMA}
    k = len(S["ts"])
    lo = max(0, k - tenant.max_len)
    return {c: S[c][lo:] for c in tenant.columns}, S["ts"][lo:]


def random_examples(rng, tier, users, B, ts_end, with_tail=True):
    u = rng.choice(users, B)
    v = rng.integers(0, tier.version + 1, B)
    have = tier.length_at(u, v)
    n = (rng.random(B) * (have + 1)).astype(np.int64)
    full = rng.random(B) < 0.3  # pointers at the whole history of their version
    n[full] = have[full]
    cols = {"user_id": u, "version": v, "length": n, "request_ts": np.full(B, ts_end + 10**6, dtype=np.int64)}
    if with_tail:
        m = rng.integers(0, 6, B)
        m[rng.random(B) < 0.4] = 0
        tails = {c: [] for c in SCHEMA}
        for i in range(B):
            tails["ts"].append(list(range(ts_end + 1, ts_end + 1 + int(m[i]))))
            tails["item_id"].append(rng.integers(I64.min, I64.max, int(m[i]), dtype=np.int64, endpoint=True).tolist())
            tails["action"].append(rng.integers(-5, 5, int(m[i])).tolist())
        cols["tail_ts"] = pa.array(tails["ts"], pa.list_(pa.int64()))
        cols["tail_item_id"] = pa.array(tails["item_id"], pa.list_(pa.int64()))
        cols["tail_action"] = pa.array(tails["action"], pa.list_(pa.int32()))
    cols["label"] = np.arange(B)
    return pa.table(cols)


def check_against_naive(tier, table, tenant, batch):
    offsets = batch.offsets.numpy()
    assert offsets[0] == 0 and len(offsets) == table.num_rows + 1
    assert np.array_equal(batch.lengths.numpy(), np.diff(offsets))
    has_tail = "tail_ts" in table.column_names
    for i in range(table.num_rows):
        r = {c: table.column(c)[i].as_py() for c in table.column_names}
        tail = {c: r[f"tail_{c}"] for c in SCHEMA} if has_tail else {c: [] for c in SCHEMA}
        want, _ = naive(tier, r["user_id"], r["version"], r["length"], r["request_ts"], tail, tenant)
        for c in tenant.columns:
            got = batch.values[c].numpy()[offsets[i] : offsets[i + 1]]
            if not np.array_equal(got, want[c]):
                bad = np.flatnonzero(got != want[c])[:5] if got.shape == want[c].shape else "length"
                pytest.fail(f"example {i} column {c}: first mismatches at {bad}: got {got[:8]} want {want[c][:8]}")
    for c in tenant.columns:
        assert str(batch.values[c].dtype) == f"torch.{SCHEMA[c]}"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_reference_matches_naive_loop(tmp_path, seed):
    rng = np.random.default_rng(seed)
    tier, users, ts_end = build_tier(tmp_path, rng)
    table = random_examples(rng, tier, users, 150, ts_end)
    for tenant in (Tenant("short", ["item_id", "action"], 3), Tenant("mid", ["ts", "item_id"], 130),
                   Tenant("long", ["action", "ts", "item_id"], 5000), Tenant("zero", ["item_id"], 0)):
        batch = gpumat.materialize(tier, table, tenant, backend="reference")
        check_against_naive(tier, table, tenant, batch)


def test_pushdown_reads_only_needed_blocks(tmp_path):
    rng = np.random.default_rng(5)
    tier = gpumat.Tier.create(str(tmp_path / "t"), SCHEMA)
    n = 20000
    tier.append(pa.table({"user_id": np.zeros(n, np.int64), "ts": np.arange(n, dtype=np.int64),
                          "item_id": rng.integers(0, 2**40, n), "action": rng.integers(0, 4, n).astype(np.int32)}))
    ex = pa.table({"user_id": [0, 0], "version": [1, 1], "length": [n, n - 1], "request_ts": [n + 1, n + 1]})
    short = gpumat.materialize(tier, ex, Tenant("s", ["item_id"], 100), backend="reference")
    long_ = gpumat.materialize(tier, ex, Tenant("l", ["item_id"], n), backend="reference")
    # both examples share blocks (affinity): the short read is about two 128-event blocks of item_id + ts
    assert 0 < short.nbytes_read < long_.nbytes_read / 50
    nots = gpumat.materialize(tier, ex, Tenant("s", ["item_id"], 100), backend="reference", check_leakage=False)
    assert nots.nbytes_read < short.nbytes_read  # no ts read without the leakage check


def test_tail_only_and_empty_batch(tmp_path):
    rng = np.random.default_rng(1)
    tier, users, ts_end = build_tier(tmp_path, rng, appends=2, compact_at=())
    table = random_examples(rng, tier, users, 20, ts_end)
    empty = table.slice(0, 0)
    b = gpumat.materialize(tier, empty, Tenant("t", ["item_id"], 10), backend="reference")
    assert b.offsets.tolist() == [0] and b.values["item_id"].numel() == 0
    assert b.to_padded()["item_id"].shape == (0, 0)
    no_hist = table.set_column(table.column_names.index("length"), "length", pa.array(np.zeros(20, np.int64)))
    b = gpumat.materialize(tier, no_hist, Tenant("t", ["item_id"], 3), backend="reference")
    check_against_naive(tier, no_hist, Tenant("t", ["item_id"], 3), b)


def test_leakage_names_offending_examples(tmp_path):
    tier = gpumat.Tier.create(str(tmp_path / "t"), SCHEMA)
    tier.append(pa.table({"user_id": [1, 1, 1, 2], "ts": [10, 20, 30, 5], "item_id": [1, 2, 3, 4], "action": [0, 0, 0, 0]},
                         schema=pa.schema([("user_id", pa.int64()), ("ts", pa.int64()), ("item_id", pa.int64()), ("action", pa.int32())])))
    ex = pa.table({"user_id": [1, 2, 1, 1], "version": [1, 1, 1, 1], "length": [3, 1, 3, 1], "request_ts": [31, 6, 25, 15]})
    with pytest.raises(LeakageError) as e:
        gpumat.materialize(tier, ex, Tenant("t", ["item_id"], 10), backend="reference")
    assert e.value.indices.tolist() == [2]
    # truncation first: the newest event only, ts 30 >= 25 still leaks; max_len 0 materializes nothing
    b = gpumat.materialize(tier, ex, Tenant("t", ["item_id"], 0), backend="reference")
    assert b.values["item_id"].numel() == 0
    ok = gpumat.materialize(tier, ex.slice(0, 2), Tenant("t", ["item_id"], 10), backend="reference")
    assert ok.values["item_id"].tolist() == [1, 2, 3, 4]
    off = gpumat.materialize(tier, ex, Tenant("t", ["item_id"], 10), backend="reference", check_leakage=False)
    assert off.offsets.tolist() == [0, 3, 4, 7, 8]
    tail = ex.slice(0, 1).append_column("tail_ts", pa.array([[40]], pa.list_(pa.int64())))
    tail = tail.append_column("tail_item_id", pa.array([[9]], pa.list_(pa.int64()))).append_column("tail_action", pa.array([[0]], pa.list_(pa.int32())))
    with pytest.raises(LeakageError):
        gpumat.materialize(tier, tail, Tenant("t", ["item_id"], 10), backend="reference")


def test_pointer_errors(tmp_path):
    tier = gpumat.Tier.create(str(tmp_path / "t"), SCHEMA)
    tier.append(random_events(np.random.default_rng(0), np.array([1]), 5, 0))
    tier.append(random_events(np.random.default_rng(1), np.array([1]), 5, 5))
    t = Tenant("t", ["item_id"], 10)
    base = {"user_id": [1], "version": [1], "length": [5], "request_ts": [100]}
    gpumat.materialize(tier, pa.table(base), t, backend="reference")
    for key, val in (("version", 3), ("length", 6), ("version", -1), ("length", -1)):
        bad = dict(base, **{key: [val]})
        with pytest.raises(PointerError):
            gpumat.materialize(tier, pa.table(bad), t, backend="reference")
    with pytest.raises(PointerError):  # length exists at version 2 but not at version 1
        gpumat.materialize(tier, pa.table(dict(base, length=[10])), t, backend="reference")
    gpumat.materialize(tier, pa.table(dict(base, version=[2], length=[10])), t, backend="reference")
    with pytest.raises(PointerError):  # unknown user has length 0
        gpumat.materialize(tier, pa.table(dict(base, user_id=[77], length=[1])), t, backend="reference")


def test_schema_errors(tmp_path):
    tier = gpumat.Tier.create(str(tmp_path / "t"), SCHEMA)
    tier.append(random_events(np.random.default_rng(0), np.array([1]), 5, 0))
    t = Tenant("t", ["item_id"], 10)
    base = {"user_id": [1], "version": [1], "length": [5], "request_ts": [100]}
    cases = [
        pa.table({k: v for k, v in base.items() if k != "length"}),  # missing column
        pa.table(dict(base, length=pa.array([5.0]))),  # not an integer
        pa.table(dict(base, length=pa.array([None], pa.int64()))),  # null
        pa.table(dict(base, user_id=pa.array([2**63], pa.uint64()))),  # does not fit int64
        pa.table(dict(base, tail_ts=pa.array([[1]], pa.list_(pa.int64())))),  # not all tail columns
        pa.table(dict(base, tail_ts=pa.array([[1]]), tail_item_id=pa.array([[1, 2]]), tail_action=pa.array([[1]], pa.list_(pa.int32())))),
        pa.table(dict(base, tail_ts=pa.array([[1]]), tail_item_id=pa.array([[1]]), tail_action=pa.array([[2**40]]))),  # int32 overflow
        pa.table(dict(base, tail_ts=pa.array([[1]]), tail_item_id=pa.array([[1]]), tail_action=pa.array([[1]], pa.list_(pa.int32())), tail_bogus=pa.array([[1]]))),
        pa.table(dict(base, tail_ts=pa.array([[1]]), tail_item_id=pa.array([None], pa.list_(pa.int64())), tail_action=pa.array([[1]], pa.list_(pa.int32())))),
    ]
    for table in cases:
        with pytest.raises(SchemaError):
            gpumat.materialize(tier, table, t, backend="reference")
    narrow = pa.table({k: pa.array(v, pa.int16()) for k, v in base.items()})  # any integer width that fits
    assert gpumat.materialize(tier, narrow, t, backend="reference").lengths.tolist() == [5]
    for bad_tenant in (Tenant("t", ["nope"], 5),):
        with pytest.raises(SchemaError):
            gpumat.materialize(tier, pa.table(base), bad_tenant)
    with pytest.raises(SchemaError):
        Tenant("t", ["item_id"], -1)
    with pytest.raises(SchemaError):
        gpumat.materialize(tier, pa.table(base), t, backend="cuda-magic")
    b = gpumat.materialize(tier, pa.table(base), t, backend="reference")
    with pytest.raises(SchemaError):
        b.to_padded(width=4)
    assert b.to_padded(pad_value=-7, width=7)["item_id"][0, 5:].tolist() == [-7, -7]


def test_auto_never_picks_the_interpreter(tmp_path):
    from gpumat.ops import resolve_backend
    import torch

    assert resolve_backend("auto", torch.device("cpu")) == "reference"
