"""``gpumat bench engines``: what each engine's host work costs the training process, on streamed examples.

One epoch of ``Materializer.iterate`` per engine (``thread``, ``process``, ``ray``) over examples
streamed from Parquet files, with no model: the loop only takes each batch, so everything the
training process spends is data work. Per engine:

- wall time, examples/s over the epoch, and the time to the first batch (worker or Ray start-up);
- **the training process's own CPU seconds** (``getrusage(RUSAGE_SELF)``: all its threads, its
  children excluded) and its ratio to the thread engine's: the host work that left the process;
- the worker processes' CPU (``RUSAGE_CHILDREN``, process engine: the workers are this process's
  children and have exited when the epoch ends; Ray's workers are not, so not counted there);
- **the training process's peak RSS growth** over the epoch: its high-water mark is reset
  (``/proc/self/clear_refs``) after the loader is built, and read after the epoch, minus the RSS
  before. Where the reset is not allowed, RSS is sampled every 5 ms instead. It is the training
  process's own memory only: the loop never touches the values, so a batch in shared memory (the
  process engine's ring, Ray's object store) counts only as far as the trainer reads it, and the
  workers' memory is not included;
- the bytes shipped per batch (the staged batch: compressed blocks, descriptors, tails) against
  the jagged bytes they expand to, per tenant (``e2e.shipping_bytes``).

The examples: ``--examples`` rows drawn (seeded, with replacement) from the synthetic workload's
logged examples (so every pointer is valid and every window passes the leakage check), written
one file at a time to ``--files`` Parquet files in ``--row-group``-row groups, so neither the
writer nor the loader ever holds them all. The issue's scale is ``--examples 10000000 --files 100``.
"""

from __future__ import annotations

import os
import resource
import threading
import time

import numpy as np

from gpumat.bench.util import (
    check_empty_dir, check_outputs, environment, report, require_matplotlib, scratch_dir,
)
from gpumat.core.errors import SchemaError

ENGINES = ("thread", "process", "ray")


def add_arguments(parser) -> None:
    parser.add_argument("--engines", default=None,
                        help="comma-separated engines to run, in order (default: thread,process, and ray when installed)")
    parser.add_argument("--tenants", default="short,mid,long", help="comma-separated tenants materialized in every batch")
    parser.add_argument("--examples", type=int, default=200_000, help="examples in the stream (default 200000)")
    parser.add_argument("--files", type=int, default=10, help="Parquet files the examples are spread over (default 10)")
    parser.add_argument("--row-group", type=int, default=65536, help="rows per Parquet row group (default 65536)")
    parser.add_argument("--batch-size", type=int, default=1024, help="examples per batch (default 1024)")
    parser.add_argument("--window", type=int, default=65536, help="shuffle window in rows (default 65536)")
    parser.add_argument("--workers", type=int, default=None,
                        help="worker processes / Ray actors (default: cores - 1); the thread engine uses 1 thread")
    parser.add_argument("--depth", type=int, default=2, help="batches prepared ahead (default 2)")
    parser.add_argument("--scale", type=float, default=0.25, help="synthetic workload size (users = 400 x scale)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=None, help="where to build the tier and the files (default: a temporary directory, removed)")
    parser.add_argument("--json", nargs="?", const="-", default=None, metavar="PATH", help="write results as JSON (stdout if no PATH)")
    parser.add_argument("--plot", default=None, metavar="PNG", help="bar chart of trainer CPU and throughput per engine")
    parser.add_argument("--quiet", action="store_true")


def _pos(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SchemaError(f"--{name} must be an integer >= 1, got {value!r}")
    return value


def _say(args):
    quiet = args.quiet or args.json == "-"
    return (lambda *a, **k: None) if quiet else (lambda *a, **k: print(*a, **k, flush=True))


def ray_installed() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def write_examples(table, n: int, files: int, row_group: int, out_dir: str, seed: int, say) -> dict:
    """``n`` rows drawn with replacement from ``table`` into ``files`` Parquet files, one file at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng(seed)
    per_file = np.full(files, n // files, dtype=np.int64)
    per_file[: n % files] += 1
    t0 = time.perf_counter()
    nbytes = 0
    for f, rows in enumerate(per_file):
        take = rng.integers(0, table.num_rows, size=int(rows))
        path = os.path.join(out_dir, f"examples-{f:05d}.parquet")
        pq.write_table(table.take(pa.array(take)), path, row_group_size=row_group)
        nbytes += os.path.getsize(path)
        if (f + 1) % max(1, files // 10) == 0 or f + 1 == files:
            say(f"  examples: {f + 1}/{files} files, {int(per_file[: f + 1].sum()):,} rows")
    return {"rows": int(n), "files": int(files), "row_group": int(row_group), "bytes": int(nbytes),
            "write_s": time.perf_counter() - t0}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _hwm_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise OSError("no VmHWM in /proc/self/status")


class PeakRSS:
    """The training process's peak RSS from now on: the kernel's high-water mark after a reset
    (``clear_refs`` 5), or, where that is refused, RSS sampled every 5 ms by a thread."""

    def __init__(self):
        self.start = _rss_bytes()
        self.method = "VmHWM after clear_refs"
        self._stop = threading.Event()
        self._peak = self.start
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self._thread = None
        except OSError:
            self.method = "sampled every 5 ms"
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()

    def _sample(self):
        while not self._stop.wait(0.005):
            self._peak = max(self._peak, _rss_bytes())

    def stop(self) -> int:
        if self._thread is None:
            return _hwm_bytes()
        self._stop.set()
        self._thread.join()
        return max(self._peak, _rss_bytes())


def _cpu(who) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def run_engine(mat, source: str, engine: str, args, workers: int) -> dict:
    """One epoch of ``mat.iterate`` over ``source`` with ``engine``; the loop only takes the batches."""
    import gc

    gc.collect()
    ray_options = {"init": {"num_cpus": max(2, workers + 1), "include_dashboard": False, "log_to_driver": False}} \
        if engine == "ray" else None
    started_ray = False
    if engine == "ray":
        import ray

        started_ray = not ray.is_initialized()
    cpu0, child0 = _cpu(resource.RUSAGE_SELF), _cpu(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    loader = mat.iterate(source, batch_size=args.batch_size, window=args.window, seed=args.seed, depth=args.depth,
                         workers=workers if engine != "thread" else 1, engine=engine, ray_options=ray_options)
    peak = PeakRSS()
    batches = examples = 0
    t_first = None
    for batch in loader:
        if t_first is None:
            t_first = time.perf_counter()
        batches += 1
        examples += batch.batch_size
    wall = time.perf_counter() - t0
    peak_bytes = peak.stop()
    del loader
    gc.collect()
    cpu = _cpu(resource.RUSAGE_SELF) - cpu0
    children = _cpu(resource.RUSAGE_CHILDREN) - child0
    if started_ray:  # its driver threads would count in the next engine's CPU
        import ray

        ray.shutdown()
    steady = wall - (t_first - t0) if t_first is not None else float("nan")
    return {"engine": engine, "workers": workers if engine != "thread" else 1, "batches": batches,
            "examples": examples, "wall_s": wall, "first_batch_s": (t_first - t0) if t_first else None,
            "examples_per_s": examples / wall if wall else float("nan"),
            "steady_examples_per_s": (examples - args.batch_size) / steady if steady and batches > 1 else None,
            "trainer_cpu_s": cpu, "trainer_cpu_us_per_example": 1e6 * cpu / max(examples, 1),
            "workers_cpu_s": children if engine == "process" else None,
            "rss_before_bytes": peak.start, "rss_peak_growth_bytes": peak_bytes - peak.start,
            "rss_method": peak.method}


def run(args) -> dict:
    """``gpumat bench engines``: print a table, optionally write ``--json`` and ``--plot``; returns the results."""
    import torch

    from gpumat.bench.e2e import available_cores, shipping_bytes
    from gpumat.host.workloads import SYNTH_TENANTS, synthetic_workload
    from gpumat.materializer import Materializer

    say = _say(args)
    check_outputs(args)
    check_empty_dir(args.workdir, "--workdir")
    for name in ("examples", "files", "row_group", "batch_size", "window", "depth"):
        _pos(getattr(args, name), name.replace("_", "-"))
    if args.files > args.examples:
        raise SchemaError(f"--files ({args.files}) must not exceed --examples ({args.examples})")
    known = [t.name for t in SYNTH_TENANTS]
    wanted = [t.strip() for t in args.tenants.split(",") if t.strip()]
    if not wanted or any(t not in known for t in wanted):
        raise SchemaError(f"--tenants {args.tenants!r}: the workload's tenants are {known}")
    engines = [e.strip() for e in args.engines.split(",") if e.strip()] if args.engines else \
        ["thread", "process"] + (["ray"] if ray_installed() else [])
    bad = [e for e in engines if e not in ENGINES]
    if bad or not engines:
        raise SchemaError(f"--engines {args.engines!r}: choose from {list(ENGINES)}")
    if "ray" in engines:
        from gpumat.host.ray_engine import require_ray

        require_ray()
    if args.plot:
        require_matplotlib("--plot")
    cores = available_cores()
    workers = _pos(args.workers, "workers") if args.workers is not None else max(1, cores - 1)
    torch.set_num_threads(1)  # the loop does no math; keep torch's pool from taking a core

    t_start = time.perf_counter()
    with scratch_dir(args.workdir, "gpumat-bench-engines-") as workdir:
        say(f"building the synthetic workload (scale {args.scale}) in {workdir} ...")
        w = synthetic_workload(os.path.join(workdir, "tier"), scale=args.scale, seed=args.seed,
                               progress=not args.quiet and args.json != "-")
        table = w.examples
        say(f"writing {args.examples:,} examples to {args.files} Parquet files ...")
        source = os.path.join(workdir, "examples")
        files = write_examples(table, args.examples, args.files, args.row_group, source, args.seed, say)
        tenants = [t for t in w.tenants if t.name in wanted]
        mat = Materializer(w.tier, tenants, device="cpu")
        rows = np.random.default_rng(args.seed).integers(0, table.num_rows, size=(8, args.batch_size))
        shipped = {t.name: shipping_bytes(w.tier, table, list(rows), t) for t in tenants}
        results = {}
        for engine in engines:
            say(f"[{engine}] one epoch of {args.examples:,} examples ...")
            r = run_engine(mat, source, engine, args, workers)
            results[engine] = r
            say(f"  [{engine}] {r['wall_s']:.1f} s, {r['examples_per_s']:,.0f} examples/s, trainer CPU "
                f"{r['trainer_cpu_s']:.2f} s, peak RSS growth {r['rss_peak_growth_bytes'] / 2**20:.0f} MiB")
        base = results.get("thread")
        for r in results.values():
            r["trainer_cpu_vs_thread"] = r["trainer_cpu_s"] / base["trainer_cpu_s"] if base else None
        result = {
            "benchmark": "engines",
            "environment": environment(),
            "config": {"engines": engines, "tenants": wanted, "batch_size": args.batch_size, "window": args.window,
                       "workers": workers, "depth": args.depth, "cores": cores, "scale": args.scale,
                       "seed": args.seed, "examples": files},
            "workload": {k: v for k, v in w.stats.items() if not isinstance(v, (list, dict))},
            "shipped": shipped,
            "results": results,
            "elapsed_s": time.perf_counter() - t_start,
        }
        report(result, args, print_table, plot, say)
        return result


def print_table(r: dict) -> None:
    cfg = r["config"]
    ex = cfg["examples"]
    print(f"\n{ex['rows']:,} examples in {ex['files']} Parquet files ({ex['bytes'] / 1e6:.1f} MB, row groups of "
          f"{ex['row_group']:,}); tenants {','.join(cfg['tenants'])}; batch {cfg['batch_size']}, window {cfg['window']}, "
          f"depth {cfg['depth']}; {cfg['cores']} cores")
    print("one epoch, the loop only takes the batches; trainer = the training process (getrusage RUSAGE_SELF, "
          "children excluded)")
    print(f"{'engine':<8} {'workers':>7} {'wall s':>8} {'ex/s':>10} {'1st batch s':>11} {'trainer CPU s':>13} "
          f"{'x thread':>8} {'us/ex':>7} {'workers CPU s':>13} {'peak RSS +MiB':>13}")
    for name, e in r["results"].items():
        ratio = f"{e['trainer_cpu_vs_thread']:.3f}" if e["trainer_cpu_vs_thread"] is not None else "-"
        wcpu = f"{e['workers_cpu_s']:.2f}" if e["workers_cpu_s"] is not None else "n/a"
        print(f"{name:<8} {e['workers']:>7} {e['wall_s']:>8.1f} {e['examples_per_s']:>10,.0f} "
              f"{e['first_batch_s'] or float('nan'):>11.2f} {e['trainer_cpu_s']:>13.2f} {ratio:>8} "
              f"{e['trainer_cpu_us_per_example']:>7.1f} {wcpu:>13} {e['rss_peak_growth_bytes'] / 2**20:>13.1f}")
    for name, sh in r["shipped"].items():
        print(f"  shipped {name}: {sh['staged_bytes_per_batch'] / 1e3:.1f} kB staged per batch, expands to "
              f"{sh['materialized_bytes_per_batch'] / 1e3:.1f} kB materialized ({sh['materialized_over_staged']:.1f}x)")
    rss = {e["rss_method"] for e in r["results"].values()}
    print(f"  peak RSS: the training process's own ({', '.join(sorted(rss))}; shared-memory batch pages count only "
          f"where it reads them, workers excluded); Ray's workers are not this process's children (their CPU: n/a)")


def plot(r: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(r["results"])
    res = [r["results"][n] for n in names]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    panels = (("trainer CPU s per epoch", [e["trainer_cpu_s"] for e in res]),
              ("examples/s", [e["examples_per_s"] for e in res]),
              ("trainer peak RSS growth, MiB", [e["rss_peak_growth_bytes"] / 2**20 for e in res]))
    for ax, (title, values) in zip(axes, panels):
        ax.bar(names, values, color=["#4c72b0", "#dd8452", "#55a868"][: len(names)])
        ax.set_title(title, fontsize=10)
        for i, v in enumerate(values):
            ax.annotate(f"{v:,.2f}" if v < 100 else f"{v:,.0f}", (i, v), ha="center", va="bottom", fontsize=8)
    ex = r["config"]["examples"]
    fig.suptitle(f"gpumat bench engines: {ex['rows']:,} streamed examples, {ex['files']} files, "
                 f"batch {r['config']['batch_size']}, {r['config']['cores']} cores", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
