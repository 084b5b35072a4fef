"""``Materializer.iterate(engine="ray")`` on a local Ray cluster: the same batches as the thread engine,
from a Table and from a ``ray.data.Dataset``, resume across engines, worker errors with where they
happened; and without Ray, a message that says how to install it."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pytest

import gpumat
from gpumat import PointerError, Tenant
from gpumat.host.workloads import synthetic_workload

TENANTS = [Tenant("short", ["item_id", "action"], 7), Tenant("mid", ["ts", "category", "item_id"], 300)]
KW = dict(batch_size=40, window=80, seed=5, depth=2, workers=2)
# (with pytest-xdist's --dist loadgroup: one worker runs every test that starts a Ray cluster, in turn)
pytestmark = pytest.mark.xdist_group("ray")


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    # Ray's memory monitor kills workers when the NODE is near its limit, whoever uses the memory;
    # on a shared CI machine that is other jobs: off for this small cluster.
    os.environ["RAY_memory_monitor_refresh_ms"] = "0"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    w = synthetic_workload(str(tmp_path_factory.mktemp("ray") / "tier"), scale=0.05, seed=7, days=3,
                           requests_per_day=3.0, median_history=120, max_history=1500, progress=False)
    return w.tier, pa.concat_tables([w.train, w.heldout])


def test_ray_engine_equals_thread_engine_and_resumes(ray_cluster, work):
    tier, table = work
    mat = gpumat.Materializer(tier, TENANTS, backend="reference")
    want = list(mat.iterate(table, **KW))
    got = list(mat.iterate(table, engine="ray", **KW))
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert np.array_equal(a.rows, b.rows)
        for t in TENANTS:
            assert a[t.name].equals(b[t.name]) and a[t.name].nbytes_read == b[t.name].nbytes_read
        assert a.passthrough["label_item"].tolist() == b.passthrough["label_item"].tolist()
        if b.sparse_features is not None:  # torchrec installed: the KJT the actors laid out equals this one
            ka, kb = a.sparse_features, b.sparse_features
            assert ka.keys() == kb.keys() and ka.values().tolist() == kb.values().tolist()
            assert ka.lengths().tolist() == kb.lengths().tolist()
    # a Dataset's blocks are its units (a Table's are slices of `window` rows): every row once, each
    # batch what materialize gives for its rows
    ds = ray_cluster.data.from_arrow(table)
    got = list(mat.iterate(ds, engine="ray", **KW))
    assert np.array_equal(np.sort(np.concatenate([b.rows for b in got])), np.arange(table.num_rows))
    for b in got[:3]:
        sub = table.take(pa.array(b.rows))
        for t in TENANTS:
            assert b[t.name].equals(gpumat.materialize(tier, sub, t, backend="reference"))
    first = mat.iterate(table, **KW)
    it = iter(first)
    head = [next(it).rows.tolist() for _ in range(2)]
    it.close()
    resumed = mat.iterate(table, engine="ray", **KW)
    resumed.load_state_dict(first.state_dict())
    assert head + [b.rows.tolist() for b in resumed] == [b.rows.tolist() for b in want]


def test_ray_worker_error_names_the_batch(ray_cluster, work):
    tier, table = work
    mat = gpumat.Materializer(tier, TENANTS, backend="reference")
    bad = int(mat.iterate(table, **KW).epoch_batches(0)[2][0])
    length = table.column("length").to_numpy().copy()
    length[bad] = 10**9
    broken = table.set_column(table.column_names.index("length"), "length", pa.array(length))
    got = []
    with pytest.raises(PointerError, match=r"gpumat ray stage failed on batch 2 of epoch 0 .*exceeds"):
        for b in mat.iterate(broken, engine="ray", **KW):
            got.append(b)
    assert len(got) == 2


def test_without_ray_the_error_says_how_to_install(work, monkeypatch):
    import builtins

    real = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    tier, table = work
    with pytest.raises(gpumat.GpumatError, match=r"pip install 'gpumat\[ray\]'"):
        gpumat.Materializer(tier, TENANTS).iterate(table, engine="ray")


def test_ray_engine_with_pack_affinity(ray_cluster, tmp_path):
    """``affinity="pack"`` on the ray engine: the thread engine's batches (the actors order each
    window with the same pack groups), every example once."""
    from test_packs import SCHEMA as PACK_SCHEMA, short_histories

    from gpumat.host.tier import Tier

    t = Tier.create(str(tmp_path / "t"), PACK_SCHEMA)
    for i, (users, most) in enumerate([(300, 12), (400, 3)]):
        t.append(short_histories(i, users, most))
    users, group = t.pack_groups()
    assert len(users) and len(np.unique(group)) < len(users)
    u = np.unique(t.directory().user_id)
    table = pa.table({"user_id": u, "version": np.full(len(u), t.version), "length": t.lengths(u),
                      "request_ts": np.full(len(u), 2_100_000_000)})
    mat = gpumat.Materializer(t, [Tenant("all", ["ts", "item_id"], 8)], backend="reference")
    want = list(mat.iterate(table, affinity="pack", **KW))
    got = list(mat.iterate(table, engine="ray", affinity="pack", **KW))
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert np.array_equal(a.rows, b.rows) and a["all"].equals(b["all"]) and a.nbytes_read == b.nbytes_read
    assert np.array_equal(np.sort(np.concatenate([b.rows for b in got])), np.arange(table.num_rows))


def test_ray_engine_reads_tables_of_codes(ray_cluster, tmp_path):
    """A tier whose stripe tables hold codes into the segment dictionary (64-bit ids a user plays
    again, DESIGN §1): the Ray engine's batches equal the thread engine's, and each row is the last
    events of its user's history up to its length."""
    from gpumat.host import native
    from gpumat.host.tier import Tier
    from test_pages import SCHEMA as SCHEMA3
    from test_stripe_tables import HASHED_USERS, hashed_replays

    if not native.available()[0]:
        pytest.skip("literal tables are weighed where the C library is built")
    sc = np.array(HASHED_USERS)
    cols = hashed_replays(np.random.default_rng(3), sc)
    users = np.repeat(np.arange(len(sc)), sc)
    t = Tier.create(str(tmp_path / "t"), SCHEMA3)
    t.append(pa.table({"user_id": users, **cols}))
    assert [e.get("tables") for e in t._reader.state.files.values() if e["path"]] == [2]
    rng = np.random.default_rng(4)
    u = rng.integers(0, len(sc), 90)
    n = rng.integers(1, sc[u] + 1)
    table = pa.table({"user_id": u, "version": [t.version] * 90, "length": n, "request_ts": [2**62] * 90})
    tenant = Tenant("a", ["item_id", "action"], 200)
    mat = gpumat.Materializer(t, [tenant], backend="reference")
    kw = dict(batch_size=30, window=45, seed=1, depth=2, workers=2)
    want = list(mat.iterate(table, **kw))
    got = list(mat.iterate(table, engine="ray", **kw))
    assert len(got) == len(want) == 3
    first = np.cumsum(sc) - sc
    for a, b in zip(got, want):
        assert np.array_equal(a.rows, b.rows) and a["a"].equals(b["a"])
        for i, r in enumerate(a.rows.tolist()):
            hist = cols["item_id"][first[u[r]] : first[u[r]] + n[r]][-200:]
            assert a["a"].row(i)["item_id"].tolist() == hist.tolist()
