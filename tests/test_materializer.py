"""``gpumat.Materializer`` and its loader (``iterate``) against ``gpumat.materialize``.

The issue's acceptance tests: batches identical to ``materialize`` on the same examples (both
backends, the Triton one under the interpreter on CPU), a worker's exception surfacing in the
training loop with where it happened, exact save/restore, and streaming refresh while a writer
commits versions.
"""

import json
import os
import threading
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import gpumat
from gpumat import LeakageError, PointerError, Tenant
from gpumat.host.prefetch import StageError
from gpumat.host.workloads import synthetic_workload
from gpumat.kernels.triton_decode_gather import triton_available

# Small windows keep every batch to a few interpreter programs; max_len 0 and a window longer
# than most histories are the edge cases.
TENANTS = [
    Tenant("short", ["item_id", "action"], 7),
    Tenant("mid", ["ts", "category", "item_id"], 300),
    Tenant("none", ["duration_ms"], 0),
]
BACKENDS = ["reference", "triton"]


def gpumat_threads():
    """gpumat's live threads, but the object stores' process-wide request pool (host/objstore.py),
    which an earlier test reading from S3 leaves running by design."""
    return [t.name for t in threading.enumerate()
            if t.name.startswith("gpumat-") and not t.name.startswith("gpumat-objstore") and t.is_alive()]


# The Materializer's device in the tests of dictionaries kept on the device: the GPU where the kernel
# tests run natively (GPUMAT_TEST_NATIVE=1, profiling/gpu_session.sh), else the CPU (Triton interpreted)
NATIVE_DEVICE = "cuda" if os.environ.get("GPUMAT_TEST_NATIVE") == "1" else "cpu"


def need_backend(backend, device="cpu"):
    if backend == "triton":
        ok, why = triton_available(device)
        if not ok:
            pytest.skip(f"triton backend not runnable on {device} here: {why}")


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A seeded multi-version tier (bulk + 3 daily versions) and its logged examples (with tails)."""
    w = synthetic_workload(str(tmp_path_factory.mktemp("mat") / "tier"), scale=0.05, seed=7, days=3,
                           requests_per_day=3.0, median_history=120, max_history=1500, progress=False)
    table = pa.concat_tables([w.train, w.heldout])
    table = table.append_column("row_id", pa.array(np.arange(table.num_rows, dtype=np.int64)))
    assert table.num_rows > 100 and len(np.unique(table.column("version").to_numpy())) > 1
    return w.tier, table


def check_batch(tier, table, batch, tenants=TENANTS):
    """``batch`` equals ``materialize`` on the rows it names, for every tenant; passthrough follows."""
    rows = np.asarray(batch.rows)
    sub = table.take(pa.array(rows))
    for t in tenants:
        want = gpumat.materialize(tier, sub, t, backend="reference")
        got = batch[t.name]
        assert got.equals(want), f"tenant {t.name}, rows {rows[:8].tolist()}: {got} != {want}"
        assert got.nbytes_read == want.nbytes_read
    assert batch.nbytes_read == sum(batch[t.name].nbytes_read for t in tenants)
    for col in ("label_item", "label_action", "row_id"):
        p = batch.passthrough[col]
        assert torch.is_tensor(p), col
        assert p.tolist() == sub.column(col).to_pylist(), col
    assert batch.passthrough["row_id"].tolist() == rows.tolist()
    assert batch.request_ts.dtype == torch.int64 and batch.request_ts.device == batch[tenants[0].name].device
    assert batch.request_ts.tolist() == sub.column("request_ts").to_pylist()
    for t in tenants:
        lengths = batch[t.name].lengths
        assert batch[t.name].max_seq_len == (int(lengths.max()) if lengths.numel() else 0)


# ------------------------------------------------------------------------------------------------
# 1. one call


@pytest.mark.parametrize("backend", BACKENDS)
def test_call_equals_materialize_for_every_tenant(work, backend):
    need_backend(backend)
    tier, table = work
    out = gpumat.Materializer(tier, TENANTS, backend=backend)(table)
    assert set(out.tenants) == {t.name for t in TENANTS}
    assert np.array_equal(out.rows, np.arange(table.num_rows))
    check_batch(tier, table, out)
    assert out.nbytes_read > 0
    assert out.passthrough["label_action"].dtype == torch.int32  # passthrough keeps its dtype
    assert out["none"].values["duration_ms"].numel() == 0 and out["none"].offsets.numel() == table.num_rows + 1


def test_constructor_rejects_bad_tenants(work):
    tier, _ = work
    with pytest.raises(gpumat.SchemaError):
        gpumat.Materializer(tier, [])
    with pytest.raises(gpumat.SchemaError):
        gpumat.Materializer(tier, [Tenant("a", ["ts"], 1), Tenant("a", ["ts"], 2)])
    with pytest.raises(gpumat.SchemaError):
        gpumat.Materializer(tier, [Tenant("a", ["nope"], 1)])


# ------------------------------------------------------------------------------------------------
# 2. the loader


@pytest.mark.parametrize("backend", BACKENDS)
def test_iterate_batches_equal_materialize_and_cover_each_epoch(work, backend):
    need_backend(backend)
    tier, table = work
    mat = gpumat.Materializer(tier, TENANTS, backend=backend)
    loader = mat.iterate(table, batch_size=40, shuffle=True, window=64, seed=3, depth=3, workers=2)
    assert len(loader) == -(-table.num_rows // 40)
    epochs = []
    for _ in range(2):
        batches = list(loader)
        assert len(batches) == len(loader)
        for b in batches:
            check_batch(tier, table, b)
        rows = np.concatenate([b.rows for b in batches])
        assert np.array_equal(np.sort(rows), np.arange(table.num_rows))  # every row exactly once
        epochs.append(rows)
    assert not np.array_equal(epochs[0], epochs[1])  # a new shuffle each epoch
    assert gpumat_threads() == []


def test_epoch_end_does_not_wait_out_the_join_timeout(work):
    # The prefetcher once joined its workers while holding the lock a finishing worker needs, so
    # most epoch ends stalled for the 5 s join timeout; 6 epoch ends take well under a second.
    tier, table = work
    loader = gpumat.Materializer(tier, TENANTS[:1], backend="reference").iterate(
        table, batch_size=64, window=64, depth=2, workers=3)
    t0 = time.monotonic()
    for _ in range(6):
        assert sum(b.rows.size for b in loader) == table.num_rows
    assert time.monotonic() - t0 < 4.5
    assert gpumat_threads() == []


def test_iterate_reads_parquet_and_keeps_user_affinity(work, tmp_path):
    tier, table = work
    path = tmp_path / "examples.parquet"
    pq.write_table(table, path)
    mat = gpumat.Materializer(tier, TENANTS, backend="reference")
    batches = list(mat.iterate(str(path), batch_size=50, shuffle=False, window=table.num_rows))
    rows = np.concatenate([b.rows for b in batches])
    assert np.array_equal(np.sort(rows), np.arange(table.num_rows))
    for b in batches:
        check_batch(tier, table, b)
    users = table.column("user_id").to_numpy()[rows]
    assert np.count_nonzero(users[1:] != users[:-1]) + 1 == len(np.unique(users))  # one window: one run per user


# ------------------------------------------------------------------------------------------------
# 3. a worker's failure surfaces in the loop, with where it happened


def _with(table, row, **cols):
    """``table`` with the int64 column values of ``row`` replaced."""
    for name, value in cols.items():
        arr = table.column(name).to_numpy().copy()
        arr[row] = value
        table = table.set_column(table.column_names.index(name), name, pa.array(arr, pa.int64()))
    return table


def _row_in_batch(loader, k):
    """A row of batch ``k`` of epoch 0 with a non-empty history prefix, and the epoch's batches."""
    batches = loader.epoch_batches(0)
    assert len(batches) > k + 1
    return int(batches[k][len(batches[k]) // 2]), batches


def _consume_until_error(loader, table, tier, k, exc_type):
    got = []
    with pytest.raises(exc_type) as info:
        for b in loader:
            check_batch(tier, table, b)
            got.append(b)
    assert len(got) == k  # every earlier batch was handed out, in order, before the error
    assert gpumat_threads() == []  # the workers stopped
    return info.value


def test_bad_pointer_surfaces_after_the_earlier_batches(work):
    tier, table = work
    mat = gpumat.Materializer(tier, TENANTS, backend="reference")
    probe = mat.iterate(table, batch_size=24, window=48, seed=5, depth=3, workers=2)
    bad, batches = _row_in_batch(probe, 3)
    broken = _with(table, bad, length=10**9)
    err = _consume_until_error(mat.iterate(broken, batch_size=24, window=48, seed=5, depth=3, workers=2),
                               broken, tier, 3, PointerError)
    msg = str(err)
    assert "gpumat host stage" in msg and "batch 3 of epoch 0" in msg and "exceeds" in msg, msg


@pytest.mark.parametrize("backend", BACKENDS)
def test_leakage_error_names_source_rows(work, backend):
    need_backend(backend)
    tier, table = work
    mat = gpumat.Materializer(tier, TENANTS, backend=backend)
    kw = dict(batch_size=40, window=64, seed=1, depth=2, workers=2)
    probe = mat.iterate(table, **kw)
    bad, _ = _row_in_batch(probe, 1)
    assert table.column("length")[bad].as_py() > 0
    leaky = _with(table, bad, request_ts=np.iinfo(np.int64).min)  # every materialized event leaks
    err = _consume_until_error(mat.iterate(leaky, **kw), leaky, tier, 1, LeakageError)
    # rows of the source table, not positions inside the shuffled batch
    assert err.indices.tolist() == [bad]
    assert "batch 1 of epoch 0" in str(err) and f"[{bad}]" in str(err)
    with pytest.raises(LeakageError) as one:
        mat(leaky)
    assert one.value.indices.tolist() == [bad]
    unchecked = gpumat.Materializer(tier, TENANTS, backend=backend, check_leakage=False)(leaky)
    for t in TENANTS:
        assert unchecked[t.name].equals(gpumat.materialize(tier, leaky, t, backend="reference", check_leakage=False))


def _at_newest_ts(tier, table, row):
    """``table`` with ``row``'s request_ts set to the newest ts it materializes (its tail or its history)."""
    probe = gpumat.materialize(tier, table.slice(row, 1), Tenant("all", ["ts"], 10**9), check_leakage=False)
    assert probe.values["ts"].numel() > 0
    return _with(table, row, request_ts=int(probe.values["ts"].max()))


@pytest.mark.parametrize("backend", BACKENDS)
def test_inclusive_accepts_ts_equal_to_request_ts(work, backend):
    need_backend(backend)
    tier, table = work
    row = int(np.flatnonzero(table.column("length").to_numpy() > 0)[5])
    same_second = _at_newest_ts(tier, table, row)
    with pytest.raises(LeakageError, match=r"ts >= request_ts") as err:
        gpumat.Materializer(tier, TENANTS, backend=backend)(same_second)
    assert err.value.indices.tolist() == [row]
    with pytest.raises(LeakageError):
        gpumat.Materializer(tier, TENANTS, backend=backend, check_leakage="strict")(same_second)
    inclusive = gpumat.Materializer(tier, TENANTS, backend=backend, check_leakage="inclusive")
    out = inclusive(same_second)
    for t in TENANTS:
        assert out[t.name].equals(gpumat.materialize(tier, same_second, t, check_leakage=False))
    loader = inclusive.iterate(same_second, batch_size=40, window=64, seed=1)
    assert sum(b.batch_size for b in loader) == table.num_rows
    # one second earlier leaks in both modes, and the message says which test failed
    earlier = _with(same_second, row, request_ts=same_second.column("request_ts")[row].as_py() - 1)
    with pytest.raises(LeakageError, match=r"ts > request_ts") as err:
        inclusive(earlier)
    assert err.value.indices.tolist() == [row]


def test_check_leakage_accepts_only_its_modes(work):
    tier, table = work
    for bad in ("yes", 1, "Strict"):
        with pytest.raises(gpumat.SchemaError, match="check_leakage"):
            gpumat.Materializer(tier, TENANTS, check_leakage=bad)
        with pytest.raises(gpumat.SchemaError, match="check_leakage"):
            gpumat.materialize(tier, table, TENANTS[0], check_leakage=bad)


def test_foreign_exception_in_a_stage_becomes_stage_error(work, monkeypatch):
    tier, table = work
    import gpumat.materializer as m

    mat = gpumat.Materializer(tier, TENANTS, backend="reference")
    kw = dict(batch_size=30, window=60, seed=2, depth=3, workers=2)
    bad, _ = _row_in_batch(mat.iterate(table, **kw), 2)
    real_plan = m.plan

    def plan(tier_, ex, tenant, check):
        if bad in ex.table.column("row_id").to_pylist():
            raise RuntimeError("disk on fire")
        return real_plan(tier_, ex, tenant, check)

    monkeypatch.setattr(m, "plan", plan)
    err = _consume_until_error(mat.iterate(table, **kw), table, tier, 2, StageError)
    assert isinstance(err, gpumat.GpumatError)
    assert isinstance(err.__cause__, RuntimeError)
    assert "batch 2 of epoch 0" in str(err) and "RuntimeError: disk on fire" in str(err)


def test_stopping_early_stops_the_workers(work):
    tier, table = work
    loader = gpumat.Materializer(tier, TENANTS, backend="reference").iterate(table, batch_size=10, depth=4, workers=2)
    it = iter(loader)
    next(it)
    assert gpumat_threads()  # prefetching
    it.close()
    assert gpumat_threads() == []


# ------------------------------------------------------------------------------------------------
# 4. save / restore


def _fingerprint(batches):
    return [(b.rows.tolist(), {t.name: b[t.name] for t in TENANTS}) for b in batches]


def _same(a, b):
    assert [r for r, _ in a] == [r for r, _ in b]
    for (_, ta), (_, tb) in zip(a, b):
        for name in ta:
            assert ta[name].equals(tb[name])


LOADER = dict(batch_size=16, shuffle=True, window=40, seed=11, depth=3, workers=2)


@pytest.mark.parametrize("k", [1, 4])
def test_resume_mid_epoch_is_exact(work, k):
    tier, table = work
    full = gpumat.Materializer(tier, TENANTS, backend="reference").iterate(table, **LOADER)
    epoch0 = _fingerprint(list(full))
    assert len(epoch0) > k + 2

    first = gpumat.Materializer(tier, TENANTS, backend="reference").iterate(table, **LOADER)
    it = iter(first)
    head = [next(it) for _ in range(k)]  # the workers have staged more than k by now
    state = json.loads(json.dumps(first.state_dict()))  # a checkpoint is plain data
    it.close()

    fresh = gpumat.Materializer(gpumat.Tier.open(tier.uri), TENANTS, backend="reference")
    second = fresh.iterate(table, **LOADER)
    second.load_state_dict(state)
    rest = list(second)
    _same(_fingerprint(head + rest), epoch0)


def test_resume_across_an_epoch_boundary_is_exact(work):
    tier, table = work
    full = gpumat.Materializer(tier, TENANTS, backend="reference").iterate(table, **LOADER)
    epochs = [_fingerprint(list(full)) for _ in range(3)]
    assert epochs[0][0][0] != epochs[1][0][0]

    first = gpumat.Materializer(tier, TENANTS, backend="reference").iterate(table, **LOADER)
    _same(_fingerprint(list(first)), epochs[0])
    it = iter(first)
    head = [next(it) for _ in range(2)]
    state = first.state_dict()
    it.close()
    assert state["epoch"] == 1 and state["served"] == 2

    second = gpumat.Materializer(tier, TENANTS, backend="reference").iterate(table, **LOADER)
    second.load_state_dict(state)
    _same(_fingerprint(head + list(second)), epochs[1])
    _same(_fingerprint(list(second)), epochs[2])


def test_resumed_loader_names_failures_by_epoch_batch(work):
    tier, table = work
    mat = gpumat.Materializer(tier, TENANTS, backend="reference")
    bad, _ = _row_in_batch(mat.iterate(table, **LOADER), 3)
    broken = _with(table, bad, length=10**9)
    loader = mat.iterate(broken, **LOADER)
    loader.load_state_dict({**loader.state_dict(), "served": 2})
    with pytest.raises(PointerError, match="batch 3 of epoch 0"):
        list(loader)


def test_resume_rejects_a_different_sampler(work):
    tier, table = work
    mat = gpumat.Materializer(tier, TENANTS, backend="reference")
    state = mat.iterate(table, **LOADER).state_dict()
    with pytest.raises(gpumat.SchemaError):
        mat.iterate(table, **{**LOADER, "batch_size": 17}).load_state_dict(state)


# ------------------------------------------------------------------------------------------------
# 5. streaming: examples point at versions a writer has not committed yet

STREAM_SCHEMA = {"ts": "int64", "item_id": "int64"}
STREAM_TENANTS = [Tenant("s", ["item_id"], 5), Tenant("l", ["ts", "item_id"], 1000)]
USERS = np.array([3, 11, 12, 40, 41, 99], dtype=np.int64)


def _day(rng, d):
    n = int(rng.integers(40, 120))
    return pa.table({
        "user_id": rng.choice(USERS, n),
        "ts": (d * 10**6 + np.arange(n)).astype(np.int64),
        "item_id": rng.integers(0, 10**12, n, dtype=np.int64),
    })


@pytest.fixture()
def stream(tmp_path):
    """A tier at version 1 (day 0), the writer's future operations, and examples of the future days.

    The writer will commit: day 1 (v2), a compaction (v3: every stripe moves), day 2 (v4), day 3
    (v5). The examples of day d point to the version that day's append commits, with lengths
    computed from the known events (some at the full history, some at a prefix of the day).
    """
    rng = np.random.default_rng(4)
    uri = str(tmp_path / "tier")
    tier = gpumat.Tier.create(uri, STREAM_SCHEMA)
    days = [_day(rng, d) for d in range(4)]
    tier.append(days[0])
    ops = [("append", days[1], 2), ("compact", None, 3), ("append", days[2], 4), ("append", days[3], 5)]
    counts = {int(u): 0 for u in USERS}
    for u in days[0].column("user_id").to_numpy():
        counts[int(u)] += 1
    parts = []
    for op, events, version in ops:
        if op != "append":
            continue
        before = dict(counts)
        for u in events.column("user_id").to_numpy():
            counts[int(u)] += 1
        user = np.repeat(USERS, 3)
        hi = np.array([counts[int(u)] for u in user])
        lo = np.array([before[int(u)] for u in user])
        length = np.where(np.arange(user.size) % 3 == 0, hi, lo + (hi - lo) // 2)
        parts.append(pa.table({
            "user_id": user, "version": np.full(user.size, version, dtype=np.int64), "length": length,
            "request_ts": np.full(user.size, 10**9, dtype=np.int64),
        }))
    examples = pa.concat_tables(parts)
    return tier, ops, examples, parts[0].num_rows


def _writer(uri, ops, errors, delay=0.15):
    try:
        w = gpumat.Tier.open(uri)  # its own handle, as another process would have
        for op, events, version in ops:
            time.sleep(delay)
            got = w.append(events) if op == "append" else w.compact()
            assert got == version
    except BaseException as e:  # reported by the test, not lost in the thread
        errors.append(e)


def test_streaming_refresh_follows_a_writer(stream):
    tier, ops, examples, per_day = stream
    assert tier.version == 1 and int(examples.column("version").to_numpy().min()) == 2
    mat = gpumat.Materializer(tier, STREAM_TENANTS, backend="reference", streaming=True, refresh_timeout=10)
    # one day per window, in order: the first batch already needs a version the writer has yet to commit
    loader = mat.iterate(examples, batch_size=per_day // 2, shuffle=False, window=per_day, depth=3, workers=2)
    errors: list = []
    writer = threading.Thread(target=_writer, args=(tier.uri, ops, errors))
    writer.start()
    try:
        batches = list(loader)
    finally:
        writer.join()
    assert errors == []
    assert mat.tier.version == 5
    final = gpumat.Tier.open(tier.uri)
    rows = np.concatenate([b.rows for b in batches])
    assert np.array_equal(np.sort(rows), np.arange(examples.num_rows))
    for b in batches:
        sub = examples.take(pa.array(b.rows))
        for t in STREAM_TENANTS:
            assert b[t.name].equals(gpumat.materialize(final, sub, t, backend="reference")), t.name
    assert gpumat_threads() == []


def test_refresh_never_moves_a_handle_a_batch_is_planned_with(stream, monkeypatch):
    # Two workers: batch 0 (version 1) is being planned while batch 1 (version 2) makes the
    # materializer catch up. Refreshing the shared handle in place would move batch 0's handle to
    # another version's directory between its directory lookup and its block reads (wrong values,
    # no error: seen with a compaction in between). Batch 0 must keep the handle it started with.
    import gpumat.materializer as m

    tier, ops, examples, per_day = stream
    gpumat.Tier.open(tier.uri).append(ops[0][1])  # version 2 is committed, this handle is still at 1
    old = pa.table({"user_id": USERS, "version": np.ones(USERS.size, np.int64), "length": tier.lengths(USERS),
                    "request_ts": np.full(USERS.size, 10**9, np.int64)})
    table = pa.concat_tables([old, examples.slice(0, USERS.size)])  # batch 0: version 1, batch 1: version 2
    mat = gpumat.Materializer(tier, STREAM_TENANTS, backend="reference", streaming=True, refresh_timeout=10)
    planning, caught_up = threading.Event(), threading.Event()
    real_reader, real_plan, seen = mat._reader, m.plan, []

    def reader(ex, cancel=None):
        if int(ex.version.max()) == 2:
            assert planning.wait(10)  # catch up only once batch 0 is planning with the old handle
        t = real_reader(ex, cancel)
        if t.version >= 2:
            caught_up.set()
        return t

    def plan(t, ex, tenant, check):
        if int(ex.version.max()) == 1:
            before = t.version
            planning.set()
            assert caught_up.wait(10)
            seen.append((before, t.version))
        return real_plan(t, ex, tenant, check)

    monkeypatch.setattr(mat, "_reader", reader)
    monkeypatch.setattr(m, "plan", plan)
    batches = list(mat.iterate(table, batch_size=USERS.size, shuffle=False, window=USERS.size, workers=2, depth=2))
    assert seen and all(a == b == 1 for a, b in seen), seen
    final = gpumat.Tier.open(tier.uri)
    for b in batches:
        for t in STREAM_TENANTS:
            assert b[t.name].equals(gpumat.materialize(final, table.take(pa.array(b.rows)), t, backend="reference"))


def test_without_streaming_a_future_version_is_a_pointer_error(stream):
    tier, _, examples, _ = stream
    mat = gpumat.Materializer(tier, STREAM_TENANTS, backend="reference")
    with pytest.raises(PointerError, match="beyond the tier's version 1"):
        list(mat.iterate(examples, batch_size=8, workers=2))
    assert gpumat_threads() == []


def test_streaming_gives_up_after_the_timeout(stream):
    tier, _, examples, _ = stream
    mat = gpumat.Materializer(tier, STREAM_TENANTS, backend="reference", streaming=True, refresh_timeout=0.3)
    t0 = time.monotonic()
    with pytest.raises(PointerError, match=r"waiting 0\.3 s"):
        list(mat.iterate(examples, batch_size=8, workers=2))
    assert time.monotonic() - t0 < 5  # the other worker stopped waiting when the loader closed
    assert gpumat_threads() == []
    assert mat.tier.version == 1


# ------------------------------------------------------------------------------------------------
# 6. torch.utils.data.DataLoader and torchrec Pipelineable methods


def test_dataloader_yields_the_loaders_batches(work):
    tier, table = work
    mat = gpumat.Materializer(tier, TENANTS, backend="reference")
    kw = dict(batch_size=40, window=64, seed=5, workers=2)
    loader = mat.iterate(table, **kw)
    assert isinstance(loader, torch.utils.data.IterableDataset)
    direct = list(mat.iterate(table, **kw))
    via = list(torch.utils.data.DataLoader(loader, batch_size=None))
    assert len(via) == len(direct) == len(loader)
    for a, b in zip(via, direct):
        assert isinstance(a, gpumat.MaterializedBatch)
        assert np.array_equal(a.rows, b.rows) and torch.equal(a.request_ts, b.request_ts)
        for t in TENANTS:
            assert a[t.name].equals(b[t.name])
        assert all(torch.equal(a.passthrough[c], b.passthrough[c]) for c in b.passthrough)
        check_batch(tier, table, a)
    assert len(list(torch.utils.data.DataLoader(loader, batch_size=None))) == len(loader)  # the next epoch
    with pytest.raises(gpumat.SchemaError, match="num_workers=0"):
        next(iter(torch.utils.data.DataLoader(mat.iterate(table, **kw), batch_size=None, num_workers=1)))


def test_to_cpu_keeps_everything(work):
    tier, table = work
    out = gpumat.Materializer(tier, TENANTS, backend="reference")(table)
    moved = out.to("cpu", non_blocking=True)
    for t in TENANTS:
        assert moved[t.name].equals(out[t.name]) and moved[t.name].device.type == "cpu"
        assert moved[t.name].nbytes_read == out[t.name].nbytes_read  # the storage metric survives the move
    assert out["mid"].nbytes_read > 0
    assert moved.nbytes_read == out.nbytes_read
    assert np.array_equal(moved.rows, out.rows)
    assert all(torch.equal(moved.passthrough[c], out.passthrough[c]) for c in out.passthrough)


def test_pin_memory(work):
    if not torch.cuda.is_available():
        pytest.skip("pin_memory needs CUDA: torch cannot page-lock host memory without a CUDA device")
    tier, table = work
    out = gpumat.Materializer(tier, TENANTS, backend="reference")(table)
    pinned = out.pin_memory()
    for t in TENANTS:
        assert pinned[t.name].equals(out[t.name]) and pinned[t.name].offsets.is_pinned()
        assert pinned[t.name].nbytes_read == out[t.name].nbytes_read
    assert all(pinned.passthrough[c].is_pinned() for c in out.passthrough)


def test_record_stream(work):
    if not torch.cuda.is_available():
        pytest.skip("record_stream needs CUDA tensors and a CUDA stream (no CUDA device here)")
    tier, table = work
    out = gpumat.Materializer(tier, TENANTS, backend="reference", device="cuda")(table)
    out.record_stream(torch.cuda.current_stream())
    for t in TENANTS:
        assert out[t.name].equals(gpumat.materialize(tier, table, t, backend="reference"))


# ------------------------------------------------------------------------------------------------
# segment dictionaries: the device copy kept between batches


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_segment_dictionaries_are_copied_once_and_batches_stay_exact(tmp_path, backend):
    """A tier whose bulk segment stores ``item_id`` as codes into a segment dictionary (DESIGN §1):
    every batch equals the reference, and after the first batch that carries the dictionary the
    next ones copy only the rest of their buffer (the same keys: the device copy is reused). On the
    GPU with ``GPUMAT_TEST_NATIVE=1``."""
    need_backend(backend, NATIVE_DEVICE)
    from gpumat.host import codec

    w = synthetic_workload(str(tmp_path / "tier"), scale=0.05, seed=7, days=3, requests_per_day=3.0,
                           median_history=600, max_history=4000, zipf_s=1.3, n_items=10**6, progress=False)
    assert codec.enc_counts(w.tier._reader.blobs("item_id")[2])["DICT"] > 0
    table = pa.concat_tables([w.train, w.heldout])
    table = table.append_column("row_id", pa.array(np.arange(table.num_rows, dtype=np.int64)))
    tenants = [Tenant("short", ["item_id", "action"], 50), Tenant("long", ["item_id", "ts"], 3000)]
    mat = gpumat.Materializer(w.tier, tenants, backend=backend, device=NATIVE_DEVICE)
    for k in range(0, table.num_rows, 30):
        sub = table.slice(k, 30)
        out = mat(sub)
        for t in tenants:
            assert out[t.name].equals(gpumat.materialize(w.tier, sub, t, backend="reference")), (k, t.name)
    held = mat._dicts["item_id"]
    assert held[1].numel() > 0 and mat.dict_bytes_not_copied >= 8 * held[1].numel()
    if backend == "torch":  # batches packed by worker processes carry the dictionaries' keys too
        mat = gpumat.Materializer(w.tier, tenants, backend=backend)
        for b in mat.iterate(table, batch_size=30, shuffle=False, engine="process"):
            check_batch(w.tier, table, b, tenants)
        assert mat.dict_bytes_not_copied > 0


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_segment_dictionaries_stay_beside_stripe_tables(tmp_path, backend):
    """Where a column's stripes take tables of codes into the segment dictionary (64-bit ids a user
    plays again, DESIGN §1), a batch's dictionaries are the segment dictionary, then its users'
    tables, which change batch after batch: the key names the segment dictionary alone, so every
    batch after the first copies only its tables, and every batch equals the reference. On the GPU
    with ``GPUMAT_TEST_NATIVE=1``."""
    need_backend(backend, NATIVE_DEVICE)
    from gpumat.host import native
    from test_pages import SCHEMA as SCHEMA3
    from test_stripe_tables import HASHED_USERS, hashed_replays

    if not native.available()[0]:
        pytest.skip("literal tables are weighed where the C library is built")
    rng = np.random.default_rng(13)
    sc = np.array(HASHED_USERS)
    tier = gpumat.Tier.create(str(tmp_path / "t"), SCHEMA3)
    tier.append(pa.table({"user_id": np.repeat(np.arange(len(sc)), sc), **hashed_replays(rng, sc)}))
    r = tier._reader
    r._dict_sizes("item_id")
    keys, size, keep = r._dsarr["item_id"]
    assert (keep == 1).sum() == 1 and (keep != 1).sum() >= 3  # (one segment dictionary, tables of codes)
    seg_dict = int(keys[keep == 1][0])
    entries = len(r.segment(0).dictionary(seg_dict & ((1 << 40) - 1), 128, int(size[keep == 1][0]), 2)[0])
    enc = r.blobs("item_id")[2]
    ref = int(r.directory().user_id[np.flatnonzero((enc >> 8) == (seg_dict & ((1 << 40) - 1)))[0]])
    n = 36  # (the first batch every user; each batch a user whose stripe holds the segment dictionary's codes)
    u = rng.integers(0, len(sc), n)
    u[: len(sc)], u[6::6] = np.arange(len(sc)), ref
    table = pa.table({"user_id": u, "version": np.full(n, tier.version), "length": tier.lengths(u),
                      "request_ts": np.full(n, 10**9)})
    tenants = [Tenant("t", ["item_id", "action"], 300)]
    mat = gpumat.Materializer(tier, tenants, backend=backend, device=NATIVE_DEVICE)
    for k in range(0, n, 6):
        sub = table.slice(k, 6)
        assert mat(sub)["t"].equals(gpumat.materialize(tier, sub, tenants[0], backend="reference")), k
    held = mat._dicts["item_id"]
    assert held[1].numel() == entries and mat.dict_bytes_not_copied == 8 * entries * (n // 6 - 1)
