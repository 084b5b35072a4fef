"""gpumat inside torchrec (SPEC §10): ``Pipelineable`` batches, ``sparse_features`` and ``to_kjt``, and
torchrec's train pipelines over ``Materializer.iterate``: ``TrainPipelineBase`` in process, and
``TrainPipelineSparseDist`` on gloo at world size 1 and 2 with a table-wise sharded
``EmbeddingBagCollection`` that must be pipelined, losses identical to a plain loop.

CI installs torchrec (README's test command); without it only the import-cost test runs.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import logging
import os
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pyarrow as pa
import pytest
import torch

import gpumat
from gpumat import Tenant
from gpumat.core.batch import JaggedBatch
from gpumat.core.errors import SchemaError

HAVE_TORCHREC = importlib.util.find_spec("torchrec") is not None
needs_torchrec = pytest.mark.skipif(not HAVE_TORCHREC, reason="torchrec is not installed (README: torchrec)")

SCHEMA = {"ts": "int64", "item_id": "int64", "action": "int32"}
TENANTS = [Tenant("short", ["item_id", "action"], 6), Tenant("long", ["item_id"], 40)]
NUM_ITEMS = 300


def build_tier(uri: str, users: int = 48, seed: int = 0):
    """A small tier (item ids < NUM_ITEMS, actions < 5) and one example per (user, prefix length)."""
    rng = np.random.default_rng(seed)
    n = rng.integers(0, 60, users)
    user = np.repeat(np.arange(users, dtype=np.int64), n)
    ts = np.concatenate([np.sort(rng.choice(10_000, k, replace=False)) for k in n]).astype(np.int64)
    tier = gpumat.Tier.create(uri, SCHEMA)
    tier.append(pa.table({"user_id": user, "ts": ts, "item_id": rng.integers(0, NUM_ITEMS, user.size),
                          "action": rng.integers(0, 5, user.size).astype(np.int32)}))
    ex_user = np.repeat(np.arange(users, dtype=np.int64), 3)
    length = np.minimum(rng.integers(0, 70, ex_user.size), n[ex_user])
    examples = pa.table({
        "user_id": ex_user, "version": np.ones(ex_user.size, dtype=np.int64), "length": length,
        "request_ts": np.full(ex_user.size, 20_000, dtype=np.int64) + np.arange(ex_user.size),
        "label": rng.random(ex_user.size).astype(np.float32),
    })
    return tier, examples


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return build_tier(str(tmp_path_factory.mktemp("torchrec") / "tier"))


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300)


# ------------------------------------------------------------------------------------------------
# 1. Pipelineable, without paying for torchrec at import


def test_importing_gpumat_batches_does_not_import_torchrec():
    proc = _run("""
        import sys
        import gpumat.core.batch, gpumat.materializer
        print('torchrec' in sys.modules, any(m.startswith('fbgemm') for m in sys.modules))
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "False"]


@needs_torchrec
def test_batches_are_pipelineable_whichever_is_imported_first(small):
    # torchrec imported after gpumat built a batch: the import hook registers the classes.
    proc = _run("""
        import torch
        from gpumat.core.batch import JaggedBatch
        from gpumat.materializer import MaterializedBatch
        b = JaggedBatch(torch.tensor([0, 1]), {"item_id": torch.tensor([3])})
        from torchrec.streamable import Pipelineable, Multistreamable
        print(isinstance(b, Pipelineable), isinstance(MaterializedBatch({"t": b}), Pipelineable),
              issubclass(JaggedBatch, Multistreamable))
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "True", "True"]
    # torchrec imported first (this process): registered at once.
    from torchrec.streamable import Pipelineable

    tier, examples = small
    out = gpumat.Materializer(tier, TENANTS)(examples.slice(0, 5))
    assert isinstance(out, Pipelineable) and isinstance(out["short"], Pipelineable)


# ------------------------------------------------------------------------------------------------
# 2. sparse_features and to_kjt


def _check_kjt_matches(kjt, batch: gpumat.MaterializedBatch):
    """Every key ``tenant.column`` of ``kjt`` holds exactly that JaggedBatch's column and lengths."""
    assert kjt.stride() == batch.batch_size
    per_key = kjt.to_dict()
    for key in kjt.keys():
        tenant, col = key.split(".")
        jb = batch[tenant]
        assert torch.equal(per_key[key].values(), jb.values[col].to(torch.int64)), key
        assert torch.equal(per_key[key].lengths().to(torch.int64), jb.lengths), key


@needs_torchrec
def test_sparse_features_cover_every_tenant_column_with_unique_keys(small):
    tier, examples = small
    mat = gpumat.Materializer(tier, TENANTS)
    loader = mat.iterate(examples, batch_size=16, seed=3)
    n = 0
    for batch in loader:
        kjt = batch.sparse_features
        assert kjt.keys() == ["short.item_id", "short.action", "long.item_id"]  # "item_id" twice, told apart
        assert kjt.weights_or_none() is None
        _check_kjt_matches(kjt, batch)
        n += 1
    assert n == len(loader)
    one = mat(examples.slice(0, 9))  # __call__ builds it too
    _check_kjt_matches(one.sparse_features, one)


@needs_torchrec
def test_sparse_features_option(small):
    tier, examples = small
    ex = examples.slice(0, 7)
    assert gpumat.Materializer(tier, TENANTS, sparse_features=False)(ex).sparse_features is None
    assert gpumat.Materializer(tier, TENANTS, sparse_features=True)(ex).sparse_features.keys()[0] == "short.item_id"
    custom = gpumat.Materializer(tier, TENANTS, sparse_features=lambda b: b.to_kjt(
        keys=["long.item_id"], rename={"long.item_id": "item"}, weights={"short": "action"}))
    out = custom(ex)
    kjt = out.sparse_features
    assert kjt.keys() == ["item"]
    assert torch.equal(kjt.values(), out["long"].values["item_id"])
    assert torch.equal(kjt.weights(), torch.ones(kjt.values().numel()))  # tenant "long" not in the dict: 1.0
    with pytest.raises(SchemaError, match="sparse_features"):
        gpumat.Materializer(tier, TENANTS, sparse_features="yes")


@needs_torchrec
def test_to_kjt_selects_renames_and_weights():
    # The example of JaggedBatch.to_kjt's docstring.
    b = JaggedBatch(torch.tensor([0, 2, 3]), {"item_id": torch.tensor([7, 8, 9]),
                                              "rating": torch.tensor([5, 3, 4], dtype=torch.int32)})
    kjt = b.to_kjt(keys=["item_id"], rename={"item_id": "item"}, weights="rating")
    assert (kjt.keys(), kjt.values().tolist(), kjt.lengths().tolist(), kjt.weights().tolist()) == (
        ["item"], [7, 8, 9], [2, 1], [5.0, 3.0, 4.0])
    both = b.to_kjt(rename=str.upper)
    assert both.keys() == ["ITEM_ID", "RATING"] and both.values().tolist() == [7, 8, 9, 5, 3, 4]
    assert both.values().dtype == torch.int64
    with pytest.raises(SchemaError, match="duplicate keys"):
        b.to_kjt(rename=lambda c: "x")
    with pytest.raises(SchemaError, match="unknown column"):
        b.to_kjt(keys=["nope"])
    with pytest.raises(SchemaError, match="weights"):
        b.to_kjt(weights="nope")

    mb = gpumat.MaterializedBatch({"a": b, "b": b})
    kjt = mb.to_kjt(keys=["b.rating", "a.item_id"], weights="rating")
    assert kjt.keys() == ["b.rating", "a.item_id"]
    assert kjt.values().tolist() == [5, 3, 4, 7, 8, 9] and kjt.weights().tolist() == [5.0, 3.0, 4.0] * 2
    with pytest.raises(SchemaError, match="unknown key"):
        mb.to_kjt(keys=["item_id"])
    with pytest.raises(SchemaError, match="duplicate keys"):
        mb.to_kjt(rename=lambda k: k.split(".")[1])  # the two tenants' item_id collide
    empty = JaggedBatch(torch.zeros(1, dtype=torch.int64), {"item_id": torch.zeros(0, dtype=torch.int64)})
    assert empty.to_kjt().stride() == 0 and empty.to_kjt().keys() == ["item_id"]


@needs_torchrec
def test_batch_moves_with_its_sparse_features(small):
    tier, examples = small
    out = gpumat.Materializer(tier, TENANTS)(examples.slice(0, 6))
    moved = out.to("cpu", non_blocking=True)
    assert moved.sparse_features is not out.sparse_features
    _check_kjt_matches(moved.sparse_features, moved)
    assert torch.equal(moved.request_ts, out.request_ts)
    pinned = out.pin_memory() if torch.cuda.is_available() else out
    _check_kjt_matches(pinned.sparse_features, pinned)


# ------------------------------------------------------------------------------------------------
# 3. torchrec's train pipelines over Materializer.iterate


class _Model(torch.nn.Module):
    """An EmbeddingBagCollection over ``batch.sparse_features`` and a linear head on the pooled embeddings."""

    def __init__(self, device=None):
        import torchrec

        super().__init__()
        tables = [
            torchrec.EmbeddingBagConfig(name=f"t_{k.replace('.', '_')}", embedding_dim=4, num_embeddings=NUM_ITEMS,
                                        feature_names=[k])
            for k in ("short.item_id", "short.action", "long.item_id")
        ]
        self.ebc = torchrec.EmbeddingBagCollection(tables=tables, device=device)
        self.head = torch.nn.Linear(12, 1)

    def forward(self, batch):
        pooled = self.ebc(batch.sparse_features).values()
        pred = self.head(pooled).squeeze(-1)
        loss = torch.nn.functional.mse_loss(pred, batch.passthrough["label"])
        return loss, loss.detach()


@needs_torchrec
def _plain_losses(model, opt, batches) -> list[float]:
    """The unpipelined loop a pipeline must match, loss for loss."""
    losses = []
    for batch in batches:
        opt.zero_grad()
        loss, _ = model(batch)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_train_pipeline_base_runs_over_iterate(small):
    from torchrec.distributed.train_pipeline import TrainPipelineBase

    tier, examples = small
    mat = gpumat.Materializer(tier, TENANTS)

    def fresh():
        torch.manual_seed(0)
        model = _Model()
        return model, torch.optim.SGD(model.parameters(), lr=0.05)

    plain = _plain_losses(*fresh(), mat.iterate(examples, batch_size=16, seed=1))
    model, opt = fresh()
    pipe = TrainPipelineBase(model, opt, torch.device("cpu"))
    it = iter(mat.iterate(examples, batch_size=16, seed=1))
    piped = []
    while True:
        try:
            piped.append(pipe.progress(it).item())
        except StopIteration:
            break
    assert len(plain) >= 8 and piped == plain


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world_size: int, port: int, tier_uri: str, examples_path: str, out_dir: str) -> None:
    """One rank: the plain loop and TrainPipelineSparseDist over the same sharded batches, from the same weights."""
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    logging.getLogger().addHandler(Keep())
    logging.getLogger().setLevel(logging.INFO)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        from fbgemm_gpu.split_embedding_configs import EmbOptimType
        from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
        from torchrec.distributed.model_parallel import DistributedModelParallel
        from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints, Topology
        from torchrec.distributed.train_pipeline import TrainPipelineSparseDist
        from torchrec.distributed.types import ShardingEnv
        from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper

        tier = gpumat.Tier.open(tier_uri)
        mat = gpumat.Materializer(tier, TENANTS)
        pg = dist.GroupMember.WORLD
        counts = torch.tensor([len(mat.iterate(examples_path, batch_size=8, seed=2))])
        dist.all_reduce(counts, op=dist.ReduceOp.MIN)  # every rank runs the same number of steps
        steps = int(counts)

        def build():
            torch.manual_seed(0)
            model = _Model(device=torch.device("meta"))
            sharder = EmbeddingBagCollectionSharder(fused_params={"optimizer": EmbOptimType.EXACT_SGD,
                                                                  "learning_rate": 0.05})
            constraints = {c.name: ParameterConstraints(sharding_types=["table_wise"], compute_kernels=["fused"])
                           for c in model.ebc.embedding_bag_configs()}
            plan = EmbeddingShardingPlanner(topology=Topology(world_size=world_size, compute_device="cpu"),
                                            constraints=constraints).collective_plan(model, [sharder], pg)
            torch.manual_seed(1)
            dmp = DistributedModelParallel(model, env=ShardingEnv.from_process_group(pg), device=torch.device("cpu"),
                                           plan=plan, sharders=[sharder])
            dense = KeyedOptimizerWrapper({n: p for n, p in dmp.named_parameters() if "ebc" not in n},
                                          lambda ps: torch.optim.SGD(ps, lr=0.05))
            return dmp, CombinedOptimizer([dmp.fused_optimizer, dense])

        def batches():
            return itertools.islice(iter(mat.iterate(examples_path, batch_size=8, seed=2)), steps)

        plain = _plain_losses(*build(), batches())
        dmp, opt = build()
        pipe = TrainPipelineSparseDist(dmp, opt, torch.device("cpu"))
        it = batches()
        piped = []
        while True:
            try:
                piped.append(pipe.progress(it).item())
            except StopIteration:
                break
        result = {"plain": plain, "piped": piped, "pipelined": [type(m).__name__ for m in pipe._pipelined_modules],
                  "not_pipelined": [r for r in records if "will NOT be pipelined" in r],
                  "will_be_pipelined": [r for r in records if "will be pipelined" in r],
                  "sharding": str(plan_types(dmp))}
    finally:
        dist.destroy_process_group()
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(result, f)


def plan_types(dmp) -> dict:
    return {name: s.sharding_type for module_plan in dmp.plan.plan.values() for name, s in module_plan.items()}


@needs_torchrec
@pytest.mark.parametrize("world_size", [1, 2])
def test_train_pipeline_sparse_dist_pipelines_the_sharded_embedding(tmp_path, world_size):
    import torch.multiprocessing as mp

    tier, examples = build_tier(str(tmp_path / "tier"), users=40, seed=world_size)
    path = str(tmp_path / "examples.parquet")
    import pyarrow.parquet as pq

    pq.write_table(examples, path)
    ctx = mp.spawn(_rank_main, args=(world_size, _free_port(), tier.uri, path, str(tmp_path)), nprocs=world_size,
                   join=False)
    deadline = time.monotonic() + 240
    while not ctx.join(timeout=5):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail(f"world size {world_size}: the ranks did not finish in 240 s")
    for rank in range(world_size):
        r = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert r["not_pipelined"] == [], r["not_pipelined"]
        assert r["will_be_pipelined"] and r["pipelined"] == ["ShardedEmbeddingBagCollection"], r
        assert "table_wise" in r["sharding"], r["sharding"]
        assert len(r["plain"]) >= 3 and r["piped"] == r["plain"], (rank, r["plain"], r["piped"])
