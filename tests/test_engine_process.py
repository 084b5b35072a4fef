"""``Materializer.iterate(engine="process")``: batches built by worker processes and handed over in
shared memory equal the thread engine's and ``materialize``'s, batch for batch; resume crosses
engines; a worker's error surfaces in the loop with where it happened; breaking, raising or
interrupting the loop leaves no worker process and no shared-memory segment behind."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import gpumat
from gpumat import PointerError, Tenant
from gpumat.host.prefetch import StageError
from gpumat.host.stream import shard_of
from gpumat.host.workers import shm_segments
from gpumat.host.workloads import synthetic_workload

TENANTS = [Tenant("short", ["item_id", "action"], 7), Tenant("mid", ["ts", "category", "item_id"], 300),
           Tenant("none", ["duration_ms"], 0)]
KW = dict(batch_size=24, window=48, seed=5, depth=3, workers=2)


def workers_alive():
    return [p for p in multiprocessing.active_children() if p.name.startswith("gpumat worker")]


def segments():
    return shm_segments(f"gpumat-{os.getpid()}-")


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    w = synthetic_workload(str(tmp_path_factory.mktemp("eng") / "tier"), scale=0.05, seed=7, days=3,
                           requests_per_day=3.0, median_history=120, max_history=1500, progress=False)
    table = pa.concat_tables([w.train, w.heldout])
    table = table.append_column("row_id", pa.array(np.arange(table.num_rows, dtype=np.int64)))
    return w.tier, table


def same_batch(a, b, tenants=TENANTS):
    assert np.array_equal(a.rows, b.rows)
    for t in tenants:
        assert a[t.name].equals(b[t.name]), t.name
        assert a[t.name].nbytes_read == b[t.name].nbytes_read and a[t.name].max_seq_len == b[t.name].max_seq_len
    assert a.nbytes_read == b.nbytes_read and torch.equal(a.request_ts, b.request_ts)
    assert (a.sparse_features is None) == (b.sparse_features is None)
    if a.sparse_features is not None:  # the KJT the workers lay out equals the one built here
        ka, kb = a.sparse_features, b.sparse_features
        assert ka.keys() == kb.keys() and ka.stride() == kb.stride()
        assert torch.equal(ka.values(), kb.values()) and ka.values().dtype == kb.values().dtype == torch.int64
        assert torch.equal(ka.lengths(), kb.lengths()) and ka.lengths().dtype == kb.lengths().dtype
    assert set(a.passthrough) == set(b.passthrough)
    for c, v in a.passthrough.items():
        w = b.passthrough[c]
        assert (torch.equal(v, w) and v.dtype == w.dtype) if torch.is_tensor(v) else v.equals(w), c


@pytest.mark.parametrize("backend", ["reference", "numpy"])  # jagged batches from the workers / staged batches decoded here
def test_process_engine_equals_thread_engine_and_materialize(work, backend):
    tier, table = work
    mat = gpumat.Materializer(tier, TENANTS, backend=backend)
    loader = mat.iterate(table, engine="process", **KW)
    thread = mat.iterate(table, **KW)
    for _ in range(2):  # two epochs, a new order each
        got, want = list(loader), list(thread)
        assert len(got) == len(want) == len(loader)
        for a, b in zip(got, want):
            same_batch(a, b)
        sub = table.take(pa.array(got[1].rows))
        for t in TENANTS:
            assert got[1][t.name].equals(gpumat.materialize(tier, sub, t, backend="reference"))
        assert np.array_equal(np.sort(np.concatenate([b.rows for b in got])), np.arange(table.num_rows))
    assert workers_alive() == [] and segments() == []


def test_ring_slots_are_reused_only_once_nothing_views_them(work):
    """A batch the loop drops gives its slot back; one it keeps is never overwritten; a loop that
    keeps every batch gets segments of their own (the pipeline never waits for a slot)."""
    from gpumat.host.workers import ProcessPool

    tier, table = work
    mat = gpumat.Materializer(tier, TENANTS)
    loader = mat.iterate(table, **dict(KW, workers=1, depth=2))
    spec = mat._producer_spec(loader)
    want = [mat(table.take(pa.array(r))) for r in loader.epoch_batches(0)]
    kept = {}
    with ProcessPool(spec, 0, 0, workers=1, depth=2) as pool:
        for k, header, arrays in pool:
            v = arrays["t.mid.v.ts"]
            assert np.array_equal(v, want[k]["mid"].values["ts"].numpy())
            if k in (1, 2):  # held across the next batches: its slot must not be written meanwhile
                kept[k] = v
            del arrays, v
            for j, held in kept.items():
                assert np.array_equal(held, want[j]["mid"].values["ts"].numpy()), (k, j)
        assert pool.delivered["ring"] == len(want) and pool.delivered["own"] == 0
    pool = ProcessPool(spec, 0, 0, workers=1, depth=2)
    held_all = list(pool)
    assert len(held_all) == len(want) > 8 and pool.delivered["own"] > 0
    for k, _, arrays in held_all:
        assert np.array_equal(arrays["t.short.v.item_id"], want[k]["short"].values["item_id"].numpy())
    del kept, held_all
    assert workers_alive() == [] and segments() == []


def test_sparse_features_off_or_custom_on_the_process_engine(work):
    """The workers lay out only the default KJT; ``False`` gives none, a callable runs in the trainer."""
    tier, table = work
    kw = dict(KW, workers=1)
    off = next(iter(gpumat.Materializer(tier, TENANTS, sparse_features=False).iterate(table, engine="process", **kw)))
    assert off.sparse_features is None
    mine = next(iter(gpumat.Materializer(tier, TENANTS, sparse_features=lambda b: ("mine", b.batch_size))
                     .iterate(table, engine="process", **kw)))
    assert mine.sparse_features == ("mine", mine.batch_size)
    assert workers_alive() == [] and segments() == []


def test_two_ranks_over_parquet_files_see_every_example_once(work, tmp_path):
    tier, table = work
    for i in range(3):
        pq.write_table(table.slice(i * 150, 150 if i < 2 else None), tmp_path / f"ex-{i}.parquet", row_group_size=64)
    mat = gpumat.Materializer(tier, TENANTS[:2], backend="reference")
    seen = []
    for rank in (0, 1):
        kw = dict(KW, rank=rank, world_size=2)
        got = list(mat.iterate(str(tmp_path), engine="process", **kw))
        want = list(mat.iterate(str(tmp_path), **kw))
        assert len(got) == len(want)
        for a, b in zip(got, want):
            same_batch(a, b, TENANTS[:2])
        rows = np.concatenate([b.rows for b in got])
        assert np.all(shard_of(table.column("user_id").to_numpy()[rows], 2) == rank)
        seen.append(rows)
    assert np.array_equal(np.sort(np.concatenate(seen)), np.arange(table.num_rows))


@pytest.mark.parametrize("first, second", [("process", "process"), ("thread", "process"), ("process", "thread")])
def test_resume_mid_epoch_across_engines(work, first, second):
    tier, table = work
    mat = gpumat.Materializer(tier, TENANTS, backend="reference")
    full = [b.rows.tolist() for b in mat.iterate(table, **KW)]
    a = mat.iterate(table, engine=first, **KW)
    it = iter(a)
    head = [next(it).rows.tolist() for _ in range(3)]
    state = a.state_dict()
    it.close()
    assert state["epoch"] == 0 and state["served"] == 3
    b = mat.iterate(table, engine=second, **KW)
    b.load_state_dict(state)
    assert head + [x.rows.tolist() for x in b] == full
    assert workers_alive() == [] and segments() == []


def _with(table, row, **cols):
    for name, value in cols.items():
        arr = table.column(name).to_numpy().copy()
        arr[row] = value
        table = table.set_column(table.column_names.index(name), name, pa.array(arr, pa.int64()))
    return table


def test_worker_error_surfaces_after_the_earlier_batches_with_where(work):
    tier, table = work
    mat = gpumat.Materializer(tier, TENANTS, backend="reference")
    probe = mat.iterate(table, **KW)
    bad = int(probe.epoch_batches(0)[3][5])
    broken = _with(table, bad, length=10**9)
    got = []
    with pytest.raises(PointerError) as err:
        for b in mat.iterate(broken, engine="process", **KW):
            got.append(b)
    assert len(got) == 3
    msg = str(err.value)
    assert "gpumat worker 1" in msg and "batch 3 of epoch 0" in msg and "exceeds" in msg and str(bad) in msg, msg
    assert "Traceback" in str(err.value.__cause__)  # the worker's own traceback
    assert workers_alive() == [] and segments() == []


def test_leakage_error_names_source_rows(work):
    tier, table = work
    mat = gpumat.Materializer(tier, TENANTS, backend="reference")
    bad = int(mat.iterate(table, **KW).epoch_batches(0)[1][3])
    assert table.column("length")[bad].as_py() > 0
    leaky = _with(table, bad, request_ts=np.iinfo(np.int64).min)
    with pytest.raises(gpumat.LeakageError) as err:
        list(mat.iterate(leaky, engine="process", **KW))
    assert err.value.indices.tolist() == [bad] and "batch 1 of epoch 0" in str(err.value)
    assert workers_alive() == [] and segments() == []


def test_a_killed_worker_is_reported(work):
    tier, table = work
    mat = gpumat.Materializer(tier, TENANTS, backend="reference")
    it = iter(mat.iterate(table, engine="process", **KW))
    next(it)
    victim = workers_alive()[0]
    os.kill(victim.pid, signal.SIGKILL)
    with pytest.raises(StageError, match=r"exited with code -9"):
        for _ in it:
            pass
    assert workers_alive() == [] and segments() == []


@pytest.mark.parametrize("how", ["break", "raise", "interrupt"])
def test_leaving_the_loop_stops_workers_and_frees_shared_memory(work, how):
    tier, table = work
    mat = gpumat.Materializer(tier, TENANTS, backend="reference")
    loader = mat.iterate(table, engine="process", **KW)
    kept = []
    exc = {"raise": RuntimeError, "interrupt": KeyboardInterrupt}.get(how)
    try:
        for i, b in enumerate(loader):
            kept.append(b)
            if i == 2:
                assert workers_alive()
                if exc is None:
                    break
                raise exc("stop")
    except (RuntimeError, KeyboardInterrupt):
        pass
    assert workers_alive() == [] and segments() == []
    # the batches handed out stay valid after their segments were unlinked
    sub = table.take(pa.array(kept[2].rows))
    assert kept[2]["mid"].equals(gpumat.materialize(tier, sub, TENANTS[1], backend="reference"))
    assert loader.state_dict()["served"] == 3


def test_workers_import_no_torch_and_scripts_need_no_main_guard(work, tmp_path):
    tier, table = work
    pq.write_table(table, tmp_path / "ex.parquet")
    script = tmp_path / "train.py"  # no `if __name__ == "__main__":` guard, as many training scripts are written
    script.write_text(textwrap.dedent(f"""
        import sys, gpumat
        from gpumat import Tenant
        import gpumat.host.workers as w
        real = w.BatchProducer.__init__
        def init(self, spec):
            assert "torch" not in sys.modules, "a worker imported torch"
            real(self, spec)
        w.BatchProducer.__init__ = init
        mat = gpumat.Materializer(gpumat.Tier.open({tier.uri!r}), [Tenant("s", ["item_id"], 5)])
        n = sum(b.batch_size for b in mat.iterate({str(tmp_path / "ex.parquet")!r}, engine="process", batch_size=50,
                                                   workers=2))
        print("rows", n)
    """))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"rows {table.num_rows}" in proc.stdout


def test_unknown_engine_and_bad_workers(work):
    tier, table = work
    mat = gpumat.Materializer(tier, TENANTS, backend="reference")
    with pytest.raises(gpumat.SchemaError, match="engine must be one of"):
        mat.iterate(table, engine="dask")
    with pytest.raises(gpumat.SchemaError, match="workers"):
        mat.iterate(table, engine="process", workers=0)
