"""``gpumat bench versions``: a tier at streaming scale (SPEC §7), measured as it grows.

A tier takes ``--versions`` small appends (``--per-append`` users of ``--users``, ``--events`` events
each), never compacted by hand, in a process limited to ``--nofile`` open files. At checkpoints
(10, 100, 1000, ...) it measures:

- ``append``: median time of the appends since the previous checkpoint;
- ``open``: opening the latest version (a fresh handle, median of 5);
- ``open_materialize``: a fresh handle materializing ``--pointers`` random pointers into random
  versions (median of 3).

At the end: the same pointers on a *one-append* tier holding the same events (and the results
compared, bit for bit, plus a sample against a plain-Python oracle), the directory's size against
that tier before and after ``vacuum(keep_last=1, min_age_s=0)``, fsyncs per commit, and, with
``--killed-writers N``, N writer processes SIGKILLed mid-append followed by compact + vacuum, against
a clean tier holding the same histories. JSON with ``--json``, a PNG with ``--plot``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np

from gpumat.bench.util import check_outputs, dir_bytes, environment, report, require_matplotlib, scratch_dir

SCHEMA = {"ts": "int64", "item_id": "int64", "action": "int32"}


def add_arguments(parser) -> None:
    parser.add_argument("--versions", type=int, default=2000, help="small appends to make (default 2000)")
    parser.add_argument("--users", type=int, default=200, help="user population (default 200)")
    parser.add_argument("--per-append", type=int, default=20, help="users per append (default 20)")
    parser.add_argument("--events", type=int, default=3, help="events per user per append (default 3)")
    parser.add_argument("--pointers", type=int, default=300, help="pointers materialized per measurement (default 300)")
    parser.add_argument("--nofile", type=int, default=256, help="RLIMIT_NOFILE of this process (default 256; 0: unchanged)")
    parser.add_argument("--killed-writers", type=int, default=8, metavar="N", help="writers to SIGKILL mid-append (0: skip)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=None, help="keep the tiers here (default: a temporary directory, removed)")
    parser.add_argument("--json", nargs="?", const="-", default=None, metavar="PATH", help="write results as JSON (stdout if no PATH)")
    parser.add_argument("--plot", default=None, metavar="PNG", help="append / open / materialize time against versions")


def _checkpoints(n: int) -> list[int]:
    out = [c for c in (10, 100, 300, 1000, 2000, 3000, 5000, 10000, 20000, 50000) if c < n]
    return out + [n]



def _append_table(rng, v: int, users: int, per: int, events: int):
    import pyarrow as pa

    u = np.repeat(rng.choice(users, per, replace=False), events)
    n = len(u)
    return pa.table({"user_id": u, "ts": np.full(n, v * 10, np.int64) + np.arange(n) % events,
                     "item_id": rng.integers(0, 10**6, n), "action": rng.integers(0, 5, n).astype(np.int32)})


def _median_ms(fn, reps: int) -> float:
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts) * 1e3)


def _fsyncs_per_commit(tier, table) -> int:
    """fsync calls of one ``append`` (os.fsync counted for the duration of the call)."""
    real = os.fsync
    count = [0]

    def counting(fd):
        count[0] += 1
        return real(fd)

    os.fsync = counting
    try:
        tier.append(table)
    finally:
        os.fsync = real
    return count[0]


KILLED_WRITER = textwrap.dedent("""
    import sys, numpy as np, pyarrow as pa
    from gpumat.host.tier import Tier
    t = Tier.open(sys.argv[1])
    rng = np.random.default_rng(int(sys.argv[2]))
    print("ready", flush=True)
    while True:
        n = 60000
        t.append(pa.table({"user_id": rng.integers(0, 50, n), "ts": np.arange(n), "item_id": rng.integers(0, 2**40, n),
                           "action": rng.integers(0, 5, n).astype(np.int32)}))
""")


def killed_writers(workdir: str, n: int, seed: int) -> dict:
    """N writers SIGKILLed mid-append, then compact + vacuum: the tier against a clean one holding the same histories."""
    import pyarrow as pa

    from gpumat.host.tier import Tier

    uri = os.path.join(workdir, "killed")
    Tier.create(uri, SCHEMA)
    rng = np.random.default_rng(seed)
    for k in range(n):
        p = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, uri, str(seed * 100 + k)], stdout=subprocess.PIPE)
        p.stdout.readline()
        time.sleep(float(rng.uniform(0.2, 0.8)))
        p.send_signal(signal.SIGKILL)
        p.wait()
        p.stdout.close()
    t = Tier.open(uri)
    debris = dir_bytes(uri)
    t.compact()
    t.vacuum(min_age_s=0)
    after = dir_bytes(uri)
    clean_uri = os.path.join(workdir, "clean")
    clean = Tier.create(clean_uri, SCHEMA)
    users = np.arange(50)
    hist = {int(u): t.read_history(int(u)) for u in users}
    cols = {"user_id": np.concatenate([np.full(len(hist[u]["ts"]), u) for u in hist])}
    for c in SCHEMA:
        cols[c] = np.concatenate([hist[u][c] for u in hist])
    clean.append(pa.table(cols))
    clean.compact()
    same = all(np.array_equal(clean.read_history(int(u))[c], hist[int(u)][c]) for u in users for c in SCHEMA)
    return {"writers": n, "version": t.version, "events": int(sum(len(h["ts"]) for h in hist.values())),
            "bytes_before": debris, "bytes_after_compact_vacuum": after, "clean_bytes": dir_bytes(clean_uri),
            "ratio_to_clean": after / max(1, dir_bytes(clean_uri)), "histories_equal": same}


def run(args) -> dict:
    import pyarrow as pa

    import gpumat
    from gpumat.core.errors import SchemaError
    from gpumat.host.tier import Tier

    if args.plot:
        require_matplotlib("--plot")
    check_outputs(args)
    if args.versions < 1 or args.per_append < 1 or args.per_append > args.users or args.events < 1:
        raise SchemaError("--versions, --per-append and --events must be >= 1, and --per-append <= --users")
    if args.nofile:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(args.nofile, hard), hard))
    say = print if args.json != "-" else (lambda *a, **k: None)
    rng = np.random.default_rng(args.seed)
    tenant = gpumat.Tenant("t", ["item_id", "ts"], 256)
    with scratch_dir(args.workdir, "gpumat-bench-versions-") as workdir:
        uri = os.path.join(workdir, "tier")
        t = Tier.create(uri, SCHEMA)
        tables, appends, rows = [], [], []
        marks = _checkpoints(args.versions)
        last = 0
        say(f"{args.versions} appends of {args.per_append} users x {args.events} events (of {args.users} users), "
            f"RLIMIT_NOFILE {args.nofile or 'unchanged'}, in {workdir}")
        for v in range(1, args.versions + 1):
            tab = _append_table(rng, v, args.users, args.per_append, args.events)
            tables.append(tab)
            t0 = time.perf_counter()
            t.append(tab)
            appends.append(time.perf_counter() - t0)
            if v == marks[0]:
                marks.pop(0)
                users = rng.integers(0, args.users, args.pointers)
                vers = rng.integers(1, v + 1, args.pointers)
                h = Tier.open(uri)
                ex = pa.table({"user_id": users, "version": vers, "length": h.length_at(users, vers),
                               "request_ts": np.full(args.pointers, 2**62)})
                row = {"versions": v, "append_ms": float(np.median(appends[last:v]) * 1e3),
                       "open_ms": _median_ms(lambda: Tier.open(uri), 5),
                       "open_materialize_ms": _median_ms(lambda: gpumat.materialize(Tier.open(uri), ex, tenant, backend="reference"), 3),
                       "data_files": h.stats()["segments"], "bytes": dir_bytes(uri)}
                rows.append(row)
                last = v
                say(f"  {v:>6} versions: append {row['append_ms']:.2f} ms, open {row['open_ms']:.2f} ms, "
                    f"open+materialize {row['open_materialize_ms']:.1f} ms, {row['data_files']} data files, "
                    f"{row['bytes'] / 1e6:.1f} MB")
        appends_ms = np.array(appends) * 1e3
        # the same events in one append; the same pointers (same lengths) at its version 1
        one_uri = os.path.join(workdir, "one")
        one = Tier.create(one_uri, SCHEMA)
        one.append(pa.concat_tables(tables))
        users = rng.integers(0, args.users, args.pointers)
        vers = rng.integers(1, args.versions + 1, args.pointers)
        lengths = Tier.open(uri).length_at(users, vers)
        ex_many = pa.table({"user_id": users, "version": vers, "length": lengths, "request_ts": np.full(args.pointers, 2**62)})
        ex_one = ex_many.set_column(1, "version", pa.array(np.ones(args.pointers, np.int64)))
        many_b = gpumat.materialize(Tier.open(uri), ex_many, tenant, backend="reference")
        one_b = gpumat.materialize(Tier.open(one_uri), ex_one, tenant, backend="reference")
        # a plain-Python oracle for a sample: every event of user u, in append order, prefix of length n
        oracle_ok = True
        for i in range(min(20, args.pointers)):
            u, n = int(users[i]), int(lengths[i])
            items = [x for tab in tables for uu, x in zip(tab.column("user_id").to_pylist(), tab.column("item_id").to_pylist()) if uu == u][:n]
            got = many_b.values["item_id"][int(many_b.offsets[i]):int(many_b.offsets[i + 1])].tolist()
            oracle_ok &= got == items[-256:]
        result = {
            "environment": environment(),
            "config": {k: getattr(args, k) for k in ("versions", "users", "per_append", "events", "pointers", "nofile", "seed")},
            "checkpoints": rows,
            "append_median_ms_100_300": float(np.median(appends_ms[100:300])) if args.versions >= 300 else None,
            "append_median_ms_last_200": float(np.median(appends_ms[-200:])),
            "open_materialize_ms": rows[-1]["open_materialize_ms"],
            "one_append_open_materialize_ms": _median_ms(lambda: gpumat.materialize(Tier.open(one_uri), ex_one, tenant, backend="reference"), 3),
            "results_identical": bool(many_b.equals(one_b)) and oracle_ok,
            "bytes_one_append": dir_bytes(one_uri),
            "bytes_before_vacuum": dir_bytes(uri),
        }
        result["vacuum"] = Tier.open(uri).vacuum(keep_last=1, min_age_s=0)
        result["bytes_after_vacuum"] = dir_bytes(uri)
        result["ratio_before_vacuum"] = result["bytes_before_vacuum"] / result["bytes_one_append"]
        result["ratio_after_vacuum"] = result["bytes_after_vacuum"] / result["bytes_one_append"]
        h = Tier.open(uri)
        result["fsyncs_per_commit"] = {"small append (inline)": _fsyncs_per_commit(h, tables[0]),
                                       "large append (data file)": _fsyncs_per_commit(
                                           h, _append_table(rng, 0, args.users, args.users, 3000))}
        if args.killed_writers:
            say(f"SIGKILLing {args.killed_writers} writers mid-append ...")
            result["killed_writers"] = killed_writers(workdir, args.killed_writers, args.seed)
        report(result, args, print_table, plot, say)
        return result


def print_table(r: dict) -> None:
    print(f"\n{'versions':>9}{'append ms':>11}{'open ms':>9}{'open+mat ms':>13}{'data files':>12}{'MB':>8}")
    for row in r["checkpoints"]:
        print(f"{row['versions']:>9}{row['append_ms']:>11.2f}{row['open_ms']:>9.2f}{row['open_materialize_ms']:>13.1f}"
              f"{row['data_files']:>12}{row['bytes'] / 1e6:>8.2f}")
    if r["append_median_ms_100_300"]:
        print(f"append median: versions 100-300 {r['append_median_ms_100_300']:.2f} ms, last 200 "
              f"{r['append_median_ms_last_200']:.2f} ms ({r['append_median_ms_last_200'] / r['append_median_ms_100_300']:.2f}x)")
    print(f"open+materialize {r['open_materialize_ms']:.1f} ms vs {r['one_append_open_materialize_ms']:.1f} ms on a one-append "
          f"tier ({r['open_materialize_ms'] / r['one_append_open_materialize_ms']:.2f}x); identical: {r['results_identical']}")
    print(f"size vs one-append tier: {r['ratio_before_vacuum']:.1f}x before vacuum, {r['ratio_after_vacuum']:.2f}x after "
          f"vacuum(keep_last=1, min_age_s=0)")
    print(f"fsyncs per commit: {r['fsyncs_per_commit']}")
    k = r.get("killed_writers")
    if k:
        print(f"{k['writers']} writers SIGKILLed: {k['bytes_before'] / 1e6:.1f} MB, after compact + vacuum "
              f"{k['bytes_after_compact_vacuum'] / 1e6:.2f} MB = {k['ratio_to_clean']:.2f}x a clean tier; "
              f"histories equal: {k['histories_equal']}")


def plot(r: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    v = [row["versions"] for row in r["checkpoints"]]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for key, label in (("append_ms", "append (median)"), ("open_ms", "open latest"),
                       ("open_materialize_ms", f"open + materialize {r['config']['pointers']} pointers")):
        ax.plot(v, [row[key] for row in r["checkpoints"]], marker="o", label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("versions (small appends, never compacted by hand)")
    ax.set_ylabel("ms")
    ax.set_title(f"gpumat tier at streaming scale ({r['environment']['git_commit'][:10]})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
