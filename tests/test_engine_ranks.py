"""Two trainer processes (``torch.multiprocessing.spawn``, ``torch.distributed`` on gloo) fed by
``Materializer.iterate``: with ``engine="ray"`` both ranks read ONE Ray Data pipeline on a local
Ray cluster (``host.ray_engine.SharedRayFeed``), with ``engine="process"`` each rank its own worker
processes, with ``engine="thread"`` each rank its own host threads. Every rank gets exactly its user-hash shard, in the order every engine shares: each
batch equals ``materialize`` of its rows, the ranks' row sets (``all_gather`` over gloo) are
disjoint and cover the examples once per epoch, and a rank resumed mid-epoch from ``state_dict``
continues exactly where it stopped."""

from __future__ import annotations

import json
import os
import socket
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import gpumat
from gpumat import Tenant
from gpumat.host.workloads import synthetic_workload

TENANTS = [Tenant("short", ["item_id", "action"], 7), Tenant("mid", ["ts", "category", "item_id"], 300)]
KW = dict(batch_size=32, window=64, seed=3, depth=2, workers=1)
WORLD = 2


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("ranks")
    w = synthetic_workload(str(d / "tier"), scale=0.05, seed=11, days=3, requests_per_day=3.0, median_history=100,
                           max_history=1200, progress=False)
    table = pa.concat_tables([w.train, w.heldout])
    table = table.append_column("row_id", pa.array(np.arange(table.num_rows, dtype=np.int64)))
    ex = d / "examples"
    ex.mkdir()
    half = table.num_rows // 2
    pq.write_table(table.slice(0, half), ex / "a.parquet", row_group_size=70)
    pq.write_table(table.slice(half), ex / "b.parquet", row_group_size=70)
    return w.tier.uri, str(ex), table.num_rows


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _trainer(rank: int, world: int, port: int, engine: str, tier_uri: str, examples: str, out_dir: str,
             ray_address: str | None) -> None:
    """One rank: an epoch checked against materialize, then epoch 1 stopped after 2 batches and resumed."""
    import torch
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        opts = {}
        if engine == "ray":
            import ray

            ray.init(address=ray_address, log_to_driver=False)
        tier = gpumat.Tier.open(tier_uri)
        table = pq.read_table(examples)
        mat = gpumat.Materializer(tier, TENANTS, backend="reference")
        loader = mat.iterate(examples, engine=engine, ray_options=opts, **KW)  # rank and world from torch.distributed
        t0 = time.perf_counter()
        got = list(loader)
        epoch_s = time.perf_counter() - t0
        assert [b.rows.tolist() for b in got] == [r.tolist() for r in loader.epoch_batches(0)]
        for b in got:
            sub = table.take(pa.array(b.rows))
            assert sub.column("row_id").to_numpy().tolist() == b.rows.tolist()
            for t in TENANTS:
                assert b[t.name].equals(gpumat.materialize(tier, sub, t, backend="reference")), (rank, t.name)
        rows = np.concatenate([b.rows for b in got])
        everyone = [None] * world
        dist.all_gather_object(everyone, rows.tolist())

        # epoch 1: two batches, state_dict, then a new loader resumes (every rank at its own position)
        want1 = [r.tolist() for r in loader.epoch_batches(1)]
        it = iter(loader)
        head = [next(it).rows.tolist() for _ in range(2)]
        it.close()
        state = loader.state_dict()
        again = mat.iterate(examples, engine=engine, ray_options=opts, **KW)
        again.load_state_dict(state)
        tail = [b.rows.tolist() for b in again]
        result = {"rows": rows.tolist(), "all": everyone, "batches": len(got), "epoch_s": epoch_s,
                  "resumed_equal": head + tail == want1, "state": state, "feed": loader.ray_options.get("feed")}
    finally:
        dist.destroy_process_group()
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(result, f)


def _run_ranks(engine, work, tmp_path, ray_address=None):
    import torch.multiprocessing as mp

    tier_uri, examples, n = work
    ctx = mp.spawn(_trainer, args=(WORLD, _free_port(), engine, tier_uri, examples, str(tmp_path), ray_address),
                   nprocs=WORLD, join=False)
    deadline = time.monotonic() + 300  # a hang guard, not a timing: shared CI machines stall
    while not ctx.join(timeout=2):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail(f"engine {engine}: the ranks did not finish in 300 s")
    res = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(WORLD)]
    per_rank = [set(r["rows"]) for r in res]
    assert all(len(s) == len(r["rows"]) for s, r in zip(per_rank, res))  # no example twice on a rank
    assert not per_rank[0] & per_rank[1]  # disjoint
    assert sorted(per_rank[0] | per_rank[1]) == list(range(n))  # every example once per epoch
    if engine == "ray":  # both ranks met on one feed name (rank 0's token, broadcast over gloo)
        assert res[0]["feed"] is not None and res[0]["feed"] == res[1]["feed"]
    for r in res:  # what each rank saw of the others over gloo is what they reported
        assert [sorted(x) for x in r["all"]] == [sorted(x["rows"]) for x in res]
        assert r["resumed_equal"] and r["state"]["epoch"] == 1 and r["state"]["served"] == 2
    return res


def test_two_ranks_thread_engine(work, tmp_path):
    _run_ranks("thread", work, tmp_path)


def test_two_ranks_process_engine(work, tmp_path):
    _run_ranks("process", work, tmp_path)


@pytest.mark.xdist_group("ray")  # (the worker that runs test_engine_ray.py's cluster, in turn)
def test_two_ranks_share_one_ray_pipeline(work, tmp_path):
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    # Ray's memory monitor kills workers when the NODE is near its limit, whoever uses the memory;
    # on a shared CI machine that is other jobs: off for this small cluster.
    os.environ["RAY_memory_monitor_refresh_ms"] = "0"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        address = ray.get_runtime_context().gcs_address
        _run_ranks("ray", work, tmp_path, address)
        # the routers (one per feed) are gone: the last rank to leave each one removed it
        from ray.util import list_named_actors

        left = [a for a in list_named_actors(all_namespaces=True) if str(a.get("name", "")).startswith("gpumat-feed")]
        assert left == []
    finally:
        ray.shutdown()
