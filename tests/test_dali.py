"""The DALI packing stage (host/dali_source.py, gpumat/dali.py), CPU-only pipeline (``device_id=None``).

The twin is ``gpumat.api.materialize(..., backend="reference")`` on the same rows: the DALI path
must give, batch for batch, the identical ``JaggedBatch``. Pipelines spawn worker processes that
import torch, so the module builds few of them (one per test that needs one) with 1-2 workers.
"""

import sys
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

pytest.importorskip("nvidia.dali")

from gpumat.api import materialize  # noqa: E402
from gpumat.core.tenant import Tenant  # noqa: E402
from gpumat.dali import DaliMaterializer  # noqa: E402
from gpumat.core.errors import GpumatError, LeakageError, PointerError, SchemaError, describe_indices  # noqa: E402
from gpumat.host.dali_source import (  # noqa: E402
    StagedBatchSource,
    encode_error,
    layout_names,
    raise_packed_error,
    reraise_worker_error,
    unpack_staged,
)
from gpumat.host.examples import parse_examples  # noqa: E402
from gpumat.host.planner import plan  # noqa: E402
from gpumat.host.prefetch import AffinitySampler, StageError  # noqa: E402
from gpumat.host.tier import Tier  # noqa: E402

SCHEMA = {"ts": "int64", "item_id": "int64", "action": "int32"}
TENANT = Tenant("short", ["item_id", "action"], 300)  # ts staged only for the leakage check
N_EXAMPLES = 61
I64 = np.iinfo(np.int64)


def _events(rng, n, users, t0):
    return pa.table(
        {
            "user_id": rng.integers(0, users, n),
            "ts": t0 + np.sort(rng.integers(0, 10**6, n)),
            "item_id": rng.integers(I64.min, I64.max, n, endpoint=True),
            "action": rng.integers(-(2**31), 2**31, n).astype(np.int32),
        }
    )


def _examples(rng, tier, n, request_ts=10**9):
    """Random pointers into every version of ``tier`` (lengths 0..length_v) and random tails (0..6 events)."""
    users = rng.integers(0, 13, n)  # 13 > the tier's 12 users: some examples point to an unknown user (length 0)
    versions = rng.integers(0, tier.version + 1, n)
    have = tier.length_at(users, versions)
    lengths = np.floor(rng.random(n) * (have + 1)).astype(np.int64)
    tail_n = rng.integers(0, 7, n)
    cols = {"user_id": users, "version": versions, "length": lengths, "request_ts": np.full(n, request_ts)}
    cols["tail_ts"] = pa.array([list(5 * 10**8 + np.arange(m)) for m in tail_n], pa.list_(pa.int64()))
    cols["tail_item_id"] = pa.array([list(rng.integers(-(10**6), 10**6, m)) for m in tail_n], pa.list_(pa.int64()))
    cols["tail_action"] = pa.array([list(rng.integers(-5, 5, m)) for m in tail_n], pa.list_(pa.int32()))
    cols["label"] = np.arange(n, dtype=np.float32)  # a passthrough column: must not disturb anything
    return pa.table(cols)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A tier with several appends and a compaction in between, and an examples Parquet file."""
    d = tmp_path_factory.mktemp("dali")
    rng = np.random.default_rng(7)
    tier = Tier.create(str(d / "tier"), SCHEMA)
    for k in range(3):
        tier.append(_events(rng, int(rng.integers(200, 900)), 12, k * 10**7))
    tier.compact()
    for k in range(3, 5):
        tier.append(_events(rng, int(rng.integers(200, 900)), 12, k * 10**7))
    table = _examples(rng, tier, N_EXAMPLES)
    path = str(d / "examples.parquet")
    pq.write_table(table, path)
    return SimpleNamespace(dir=d, tier=tier, table=table, path=path)


def assert_same_batch(got, want, where):
    assert torch.equal(got.offsets, want.offsets), f"{where}: offsets differ: {got.offsets} vs {want.offsets}"
    assert sorted(got.values) == sorted(want.values), f"{where}: columns {sorted(got.values)} vs {sorted(want.values)}"
    for c, w in want.values.items():
        g = got.values[c]
        assert g.dtype == w.dtype, f"{where}: column {c} dtype {g.dtype} vs {w.dtype}"
        if not torch.equal(g, w):
            bad = torch.nonzero(g != w).flatten()[:8].tolist()
            raise AssertionError(f"{where}: column {c} differs first at positions {bad}: {g[bad].tolist()} vs {w[bad].tolist()}")
    assert got.nbytes_read == want.nbytes_read, f"{where}: nbytes_read {got.nbytes_read} vs {want.nbytes_read}"


# ---- in-process: the source callable, the layout encoding, error re-typing ---------------------


def _source(data, tenant=TENANT, check_leakage=True, path=None, batch_size=9):
    sampler = AffinitySampler(data.table.column("user_id").to_numpy(), batch_size, window=16, seed=3, rank=0, world_size=1)
    return StagedBatchSource(data.tier.uri, data.tier.version, path or data.path, tenant, sampler, 0, check_leakage), sampler


@pytest.mark.parametrize("tenant,check", [(TENANT, True), (Tenant("ts", ["ts", "action"], 5), True), (TENANT, False),
                                          (Tenant("none", ["item_id"], 0), True)])
def test_source_roundtrip(data, tenant, check):
    """Packing in the source and unpacking by layout rebuilds exactly the planner's StagedBatch."""
    src, sampler = _source(data, tenant, check)
    batches = sampler.epoch_batches(0)
    assert [src.rows(0, i).tolist() for i in range(len(batches))] == [b.tolist() for b in batches]
    for i, rows in enumerate(batches):
        flat, layout = src(SimpleNamespace(epoch_idx=0, idx_in_epoch=i))
        assert flat.dtype == np.int64 and layout.dtype == np.int64 and flat.ndim == layout.ndim == 1
        got = unpack_staged(flat, layout, tenant, SCHEMA, data.tier.block_size, check)
        want = plan(data.tier, parse_examples(data.table.take(pa.array(rows)), SCHEMA), tenant, check)
        for c in want.columns.values():  # the source's fixed layout: an empty dictionary where a column has none
            if c.dicts is None:
                c.dicts = np.zeros(0, np.int64)
        assert list(got.columns) == list(want.columns)
        assert [c.project for c in got.columns.values()] == [c.project for c in want.columns.values()]
        names = layout_names(tenant, check)
        assert [n for n, _ in got.arrays()] == names == [n for n, _ in want.arrays()]
        for (name, g), (_, w) in zip(got.arrays(), want.arrays()):
            assert np.array_equal(np.asarray(g), np.asarray(w)) and np.asarray(g).shape == np.asarray(w).shape, name
        assert got.nbytes_read == want.nbytes_read and got.check_leakage == check
    with pytest.raises(StopIteration):
        src(SimpleNamespace(epoch_idx=0, idx_in_epoch=len(batches)))
    # DALI epoch 1 is sampler epoch 1: a new shuffle, computed lazily in the worker
    epoch1 = sampler.epoch_batches(1)
    assert [src.rows(1, i).tolist() for i in range(len(epoch1))] == [b.tolist() for b in epoch1]
    with pytest.raises(StopIteration):
        src.rows(1, len(epoch1))


def test_layout_mismatch_is_an_error(data):
    src, _ = _source(data)
    flat, layout = src(SimpleNamespace(epoch_idx=0, idx_in_epoch=0))
    with pytest.raises(GpumatError, match="disagree on tenant or check_leakage"):
        unpack_staged(flat, layout, TENANT, SCHEMA, data.tier.block_size, check_leakage=False)
    with pytest.raises(GpumatError, match="bad magic"):
        unpack_staged(flat, layout[1:], TENANT, SCHEMA, data.tier.block_size, True)


def test_source_error_travels_in_band(data):
    """The source returns an error sample; unpacking it raises the gpumat type with where it happened."""
    bad = data.table.to_pydict()
    bad["length"][4] = 10**9
    path = str(data.dir / "bad_inproc.parquet")
    pq.write_table(pa.table(bad, schema=data.table.schema), path)
    src, sampler = _source(data, path=path, batch_size=N_EXAMPLES)
    flat, layout = src(SimpleNamespace(epoch_idx=0, idx_in_epoch=0))
    i = int(np.flatnonzero(sampler.epoch_batches(0)[0] == 4)[0])
    where = r"^DALI worker pid \d+, tenant 'short', epoch 0, batch 0 .*: "
    with pytest.raises(PointerError, match=where + rf"examples \[{i}\]: length 1000000000 exceeds user"):
        unpack_staged(flat, layout, TENANT, SCHEMA, data.tier.block_size, True)
    with pytest.raises(PointerError):
        raise_packed_error(torch.from_numpy(flat), layout)
    # a non-gpumat error (a bug) becomes StageError and keeps the worker's traceback
    flat, layout = encode_error(ZeroDivisionError("boom"), "worker 1, batch 3", 0, 3)
    with pytest.raises(StageError, match=r"ZeroDivisionError: worker 1, batch 3: boom"):
        raise_packed_error(flat, layout)
    raise_packed_error(flat, np.zeros(6, np.int64))  # a layout without the error magic: not an error sample
    # what DALI itself raises (a plain Exception caused by a RuntimeError) becomes StageError
    dali_exc = Exception("Exception traceback received from worker thread: ...")
    dali_exc.__cause__ = RuntimeError("shm gone")
    with pytest.raises(StageError, match="DALI pipeline failed: Exception: .*caused by RuntimeError: shm gone") as ei:
        reraise_worker_error(dali_exc)
    assert ei.value.__cause__ is dali_exc


def test_missing_dali_says_how_to_install(data, monkeypatch):
    monkeypatch.setitem(sys.modules, "nvidia.dali", None)
    with pytest.raises(ImportError, match=r"pip install 'gpumat\[dali\]'"):
        DaliMaterializer(data.tier.uri, data.path, TENANT, batch_size=8)


def test_bad_arguments(data):
    with pytest.raises(SchemaError):
        DaliMaterializer(data.tier.uri, data.table, TENANT, batch_size=8)  # a Table, not a path
    with pytest.raises(SchemaError):
        DaliMaterializer(data.tier.uri, data.path, Tenant("x", ["nope"], 3), batch_size=8)
    with pytest.raises(SchemaError):
        DaliMaterializer(data.tier.uri, data.path, TENANT, batch_size=8, py_num_workers=0)
    with pytest.raises(SchemaError):
        DaliMaterializer(data.tier.uri, data.path, TENANT, batch_size=0)


def test_pack_affinity_reaches_the_sampler(data):
    """``affinity="pack"``: the sampler keeps the tier's packs together (``Tier.pack_groups``), as
    ``Materializer.iterate`` does; another value is a ``SchemaError``."""
    mat = DaliMaterializer(data.tier.uri, data.path, TENANT, batch_size=8, affinity="pack")
    users, group = data.tier.pack_groups()
    assert np.array_equal(mat.sampler.groups[0], users) and np.array_equal(mat.sampler.groups[1], group)
    assert DaliMaterializer(data.tier.uri, data.path, TENANT, batch_size=8).sampler.groups is None
    with pytest.raises(SchemaError, match="affinity must be one of"):
        DaliMaterializer(data.tier.uri, data.path, TENANT, batch_size=8, affinity="blob")


# ---- the DALI pipeline (spawned workers) -------------------------------------------------------


def test_dali_cpu_pipeline_matches_reference(data):
    """Two epochs on one pipeline: every batch equals gpumat.materialize on its rows; every example once."""
    mat = DaliMaterializer(data.tier.uri, data.path, TENANT, batch_size=8, device="cpu", py_num_workers=2,
                           prefetch_queue_depth=2, seed=5, shuffle=True, window=24)
    with mat:
        orders = []
        for epoch in range(2):
            assert mat.epoch == epoch
            batches = mat.epoch_batches()
            got = list(mat)
            assert len(got) == len(batches) == len(mat) == -(-N_EXAMPLES // 8)
            for i, (b, rows) in enumerate(zip(got, batches)):
                want = materialize(data.tier, data.table.take(pa.array(rows)), TENANT, backend="reference")
                assert_same_batch(b, want, f"epoch {epoch} batch {i}")
            order = np.concatenate(batches)
            assert np.array_equal(np.sort(order), np.arange(N_EXAMPLES)), "each example exactly once per epoch"
            orders.append(order)
        assert not np.array_equal(orders[0], orders[1]), "the sampler reshuffles each epoch"
        assert mat.epoch == 2


def test_dali_worker_error_surfaces_typed(data):
    """A bad pointer in the last batch: every batch before it arrives first (DALI's prefetch ran the
    failing one early), then PointerError saying where."""
    table = data.table.slice(0, 24).to_pydict()
    batches = AffinitySampler(np.asarray(table["user_id"]), 8, shuffle=False, rank=0, world_size=1).epoch_batches(0)
    k = len(batches) - 1
    table["length"][int(batches[k][0])] = 10**9  # the first example of the last batch
    path = str(data.dir / "bad.parquet")
    pq.write_table(pa.table(table, schema=data.table.schema), path)
    mat = DaliMaterializer(data.tier.uri, path, TENANT, batch_size=8, py_num_workers=1, prefetch_queue_depth=3, shuffle=False)
    assert [b.tolist() for b in mat.epoch_batches()] == [b.tolist() for b in batches]
    seen = []
    with mat, pytest.raises(PointerError) as ei:
        for b in mat:
            seen.append(b)
    assert len(seen) == k
    msg = str(ei.value)
    assert "DALI worker pid" in msg and f"epoch 0, batch {k}" in msg, msg
    assert "examples [0]: length 1000000000 exceeds user" in msg, msg
    assert describe_indices(batches[k]) in msg, msg  # the batch's source rows
    assert mat.epoch == 0  # the failed epoch is not counted as done


def test_dali_leakage_is_reported(data):
    """The leakage check runs on the consumer side on the backend's flags, as in gpumat.materialize."""
    table = data.table.slice(0, 10).to_pydict()
    table["request_ts"] = [0] * 10  # every non-empty example leaks
    path = str(data.dir / "leak.parquet")
    pq.write_table(pa.table(table, schema=data.table.schema), path)
    mat = DaliMaterializer(data.tier.uri, path, TENANT, batch_size=10, py_num_workers=1, shuffle=False)
    with mat, pytest.raises(LeakageError, match="tenant 'short', epoch 0, batch 0: examples") as ei:
        next(iter(mat))
    lengths = np.asarray(table["length"]) + np.asarray([len(t) for t in table["tail_ts"]])
    assert ei.value.indices.tolist() == np.flatnonzero(lengths > 0).tolist()


def test_dali_inclusive_accepts_same_second_events(data):
    """check_leakage="inclusive" reaches the consumer's backend: request_ts equal to each example's
    newest materialized ts passes, where the strict default rejects every non-empty example."""
    sub = data.table.slice(0, 10)
    newest = materialize(data.tier, sub, Tenant("probe", ["ts"], TENANT.max_len), check_leakage=False)
    lengths = newest.lengths.numpy()
    table = sub.to_pydict()
    table["request_ts"] = [int(newest.row(b)["ts"].max()) if lengths[b] else 0 for b in range(sub.num_rows)]
    path = str(data.dir / "same_second.parquet")
    same_second = pa.table(table, schema=data.table.schema)
    pq.write_table(same_second, path)
    strict = DaliMaterializer(data.tier.uri, path, TENANT, batch_size=10, py_num_workers=1, shuffle=False)
    with strict, pytest.raises(LeakageError, match="ts >= request_ts") as ei:
        next(iter(strict))
    assert ei.value.indices.tolist() == np.flatnonzero(lengths > 0).tolist()
    inclusive = DaliMaterializer(data.tier.uri, path, TENANT, batch_size=10, py_num_workers=1, shuffle=False,
                                 check_leakage="inclusive")
    with inclusive:
        got = next(iter(inclusive))
    rows = inclusive.epoch_batches(0)[0]
    assert got.equals(materialize(data.tier, same_second.take(pa.array(rows)), TENANT, check_leakage="inclusive"))


def test_unpacked_batch_runs_the_kernels(data):
    """The CUDA path's consumer half: the views unpack_staged builds feed the Triton kernels (here under
    TRITON_INTERPRET=1, set by conftest) and give the reference's values."""
    from gpumat.kernels.triton_decode_gather import materialize_staged_triton, triton_available

    if not triton_available(torch.device("cpu"))[0]:
        pytest.skip("Triton cannot run on this machine's CPU (no interpreter)")
    src, sampler = _source(data, batch_size=16)
    for i, rows in enumerate(sampler.epoch_batches(0)):
        flat, layout = src(SimpleNamespace(epoch_idx=0, idx_in_epoch=i))
        staged = unpack_staged(torch.from_numpy(flat), layout, TENANT, SCHEMA, data.tier.block_size, True)
        values, viol = materialize_staged_triton(staged)
        want = materialize(data.tier, data.table.take(pa.array(rows)), TENANT, backend="reference")
        assert not viol.any()
        for c in TENANT.columns:
            assert torch.equal(values[c], want.values[c]), f"batch {i} column {c}"
