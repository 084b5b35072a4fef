"""``gpumat bench storage``: late materialization's tier against Fat Row, on the synthetic multi-tenant workload.

Both layouts hold the same logged examples. For each we measure bytes written, bytes stored,
the bytes every tenant reads for one epoch (examples in user-clustered batches) and the host CPU
seconds that epoch takes; for the tier also the stored bytes per event per column against raw
int64. Late materialization's epoch = parse + check pointers + plan (pushdown reads with checksum
verification); "+ decode" adds the CPU reference's decode into jagged tensors, which is what the
Fat Row reader's figure includes (Parquet decode + truncation).

Beside today's Fat Row (rows in request order, no dictionary, default pages: what a naive writer
produces) two honest peers (host/fatrow.py): the strongest Fat Row a user would write (rows
sorted by (user, request_ts), per-column encodings chosen as the smallest, zstd 3, 64 MiB pages
and row groups) and a tuned store-once Parquet (each event once, sorted by user, zstd 3, ts
DELTA_BINARY_PACKED and dictionary where they are smallest, 16k-row groups), read by gathering
each example's window from the row groups it overlaps. Every peer's CPU figure is read + decode
into jagged tensors, compared with late materialization's read + decode.

With ``--uri`` (e.g. ``s3://bucket/prefix``, endpoint and credentials from ``AWS_*``) the tier is built
there, and for each tenant the report adds what an object store will cost: requests and bytes per
batch of a cold epoch (every GET against the blocks and runs of blocks the planner asked for, and
the bytes fetched against the planned ones), the same for a warm epoch (the page cache), and, with
``--latency-ms`` injected per request, the wall time per batch and how long a training loop fed by
``Materializer.iterate`` waits for each batch while a CPU step of ``--step-ms`` runs.

With ``--events EVENTS.parquet`` it measures your events instead: stored as a tier and as tuned
store-once Parquet, whole files and per column (``gpumat/bench/stored.py``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from gpumat.core.progress import progress as progress_bar
from gpumat.bench.util import (
    check_outputs, dir_bytes, environment, human_bytes, print_targets, report, require_matplotlib, scratch_dir,
)

TARGETS = {"stored_ratio_max": 0.10, "short_read_ratio_max": 1 / 20, "long_read_ratio_max": 1 / 5}


def add_arguments(parser) -> None:
    parser.add_argument("--scale", type=float, default=1.0, help="workload size (users = 400 x scale)")
    parser.add_argument("--days", type=int, default=4, help="daily versions of requests")
    parser.add_argument("--batch-size", type=int, default=256, help="examples per batch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=None, help="where to build (default: a temporary directory, removed)")
    parser.add_argument("--json", nargs="?", const="-", default=None, metavar="PATH", help="write results as JSON (stdout if no PATH)")
    parser.add_argument("--plot", default=None, metavar="PNG", help="bar chart of stored and read bytes")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--uri", default=None, metavar="URI",
                        help="build the tier at URI (s3://bucket/prefix, gs://, hdfs://, a path) and report requests "
                             "and bytes per batch (S3 endpoint and credentials from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...)")
    parser.add_argument("--latency-ms", type=float, default=0.0,
                        help="with --uri: latency injected into every storage request (object stores), e.g. 20")
    parser.add_argument("--step-ms", type=float, default=100.0,
                        help="with --uri: CPU training step (ms, one core) that the prefetching loader must keep fed")
    parser.add_argument("--workers", type=int, default=2, help="with --uri: host workers of the loader")
    parser.add_argument("--loader-batches", type=int, default=30, help="with --uri: batches of the loader run per tenant")
    parser.add_argument("--events", default=None, metavar="EVENTS.parquet",
                        help="your events instead of the workload (user_id, ts, integer columns, as `gpumat ingest` "
                             "takes them): bytes stored as a tier and as tuned store-once Parquet, per column "
                             "(--scale, --days, --batch-size, --seed: the workload's, unused)")



def late_epoch(tier, batches, tenant, decode: bool) -> tuple[int, float]:
    """(bytes read, CPU seconds) for one epoch of ``tenant`` over ``batches`` (the host side only):
    parse, plan and read the tier's blocks (and, once, the segment dictionaries they need), and
    with ``decode`` also materialize on the host."""
    from gpumat.host.examples import check_pointers, parse_examples
    from gpumat.host.planner import plan
    from gpumat.ops import decode_gather

    nbytes = 0
    r = tier._reader
    r.forget_dictionaries()  # each epoch reads the segment dictionaries it needs once, and counts them
    d0 = r.dict_bytes_read
    t0 = time.process_time()
    for table in batches:
        ex = parse_examples(table, tier.schema)
        check_pointers(ex, tier)
        staged = plan(tier, ex, tenant, check_leakage=True)
        nbytes += staged.nbytes_read
        if decode:
            decode_gather(staged, "reference")
    return nbytes + r.dict_bytes_read - d0, time.process_time() - t0


def _tier_bytes(tier) -> int:
    """Bytes of every file of the tier (any store: a listing)."""
    st, total = tier.store, 0
    for name, is_dir in st.list_entries(""):
        if is_dir:
            total += sum(st.stat(f"{name}/{n}")[0] for n in st.list(name))
        else:
            total += st.stat(name)[0]
    return total


def _cpu_step(ms: float) -> None:
    """A training step's worth of CPU: matrix products on one core for ``ms`` milliseconds."""
    import torch

    a = torch.randn(128, 128)
    end = time.perf_counter() + ms / 1e3
    while time.perf_counter() < end:
        a = torch.tanh(a @ a) * 0.5


EPOCHS = ("cold", "warm", "uncached", "uncached_noheads")  # ``io_epoch``'s, in order


def io_epoch(uri, tenant, batches, latency_s: float) -> dict:
    """Requests and bytes per batch of one epoch of ``tenant`` on a fresh handle of ``uri`` (cold:
    the page cache emptied), then a second, warm epoch on the same handle, then one with the page
    cache off (every batch fetches its own blocks: GETs against its runs of blocks, bytes against
    the planned ones; the handle's reader keeps the blob heads it read, so one wave a batch: a tier
    larger than the page cache, read again), then the same without the heads (``uncached_noheads``:
    two waves a batch, as before they were kept); wall times with ``latency_s`` injected per request."""
    from gpumat.host.examples import check_pointers, parse_examples
    from gpumat.host.objstore import CACHE, clear_cache
    from gpumat.host.planner import plan
    from gpumat.host.store import IOStats
    from gpumat.host.tier import Tier

    clear_cache()
    t0 = time.perf_counter()
    tier = Tier.open(uri)
    if hasattr(tier.store, "inject_latency_s"):
        tier.store.inject_latency_s = latency_s
    tier.directory()
    out = {"open": dict(IOStats.delta(tier.io_stats(), {}), wall_s=time.perf_counter() - t0)}
    for name in EPOCHS:
        capacity = CACHE.capacity
        if name.startswith("uncached"):
            clear_cache()
            CACHE.capacity = 0
        if name == "uncached_noheads":
            tier._reader.forget_heads(keep=False)
        rows = []
        for table in batches:
            s0, t1 = tier.io_stats(), time.perf_counter()
            ex = parse_examples(table, tier.schema)
            check_pointers(ex, tier)
            staged = plan(tier, ex, tenant, check_leakage=True)
            d = IOStats.delta(tier.io_stats(), s0)
            rows.append((d["get"], d["requests"], d["bytes_read"], staged.nbytes_read, d["blocks_read"], d["block_runs"],
                         d["retries"], time.perf_counter() - t1))
        CACHE.capacity = capacity
        a = np.array(rows, dtype=np.float64).reshape(-1, 8)
        tot = a.sum(axis=0)
        out[name] = {
            "batches": len(rows), "gets": int(tot[0]), "requests": int(tot[1]), "bytes_fetched": int(tot[2]),
            "bytes_planned": int(tot[3]), "blocks": int(tot[4]), "block_runs": int(tot[5]), "retries": int(tot[6]),
            "gets_per_batch_mean": float(a[:, 0].mean()) if len(a) else 0.0,
            "gets_per_batch_max": int(a[:, 0].max()) if len(a) else 0,
            "bytes_fetched_per_batch_mean": float(a[:, 2].mean()) if len(a) else 0.0,
            "gets_per_block": tot[0] / tot[4] if tot[4] else None,
            "gets_per_block_run": tot[0] / tot[5] if tot[5] else None,
            "max_gets_over_runs_in_a_batch": float(np.max(a[:, 0] / np.maximum(a[:, 5], 1))) if len(a) else 0.0,
            "fetched_over_planned": tot[2] / tot[3] if tot[3] else None,
            "wall_s": float(tot[7]), "wall_ms_per_batch": 1e3 * float(a[:, 7].mean()) if len(a) else 0.0,
        }
    return out


def loader_epoch(uri, tenant, examples, args) -> dict:
    """A training loop fed by ``Materializer.iterate`` (reference backend, ``args.workers`` host
    workers, cold cache, ``args.latency_ms`` per request) around a CPU step of ``args.step_ms``:
    how long each ``next(batch)`` waits."""
    import torch

    from gpumat.host.objstore import clear_cache
    from gpumat.host.tier import Tier
    from gpumat.materializer import Materializer

    torch.set_num_threads(1)  # one core for the step, the others for the loader (README, *Profiling*)
    clear_cache()
    tier = Tier.open(uri)
    if hasattr(tier.store, "inject_latency_s"):
        tier.store.inject_latency_s = args.latency_ms / 1e3
    mat = Materializer(tier, [tenant], device="cpu", backend="reference", sparse_features=False)
    it = iter(mat.iterate(examples, batch_size=args.batch_size, seed=args.seed, workers=args.workers))
    waits = []
    t0 = time.perf_counter()
    for _ in range(args.loader_batches):
        t1 = time.perf_counter()
        try:
            next(it)
        except StopIteration:
            break
        waits.append(time.perf_counter() - t1)
        _cpu_step(args.step_ms)
    wall = time.perf_counter() - t0
    w = np.array(waits[1:] or [0.0]) * 1e3  # the first batch has no step to hide behind
    return {"batches": len(waits), "step_ms": args.step_ms, "workers": args.workers, "latency_ms": args.latency_ms,
            "first_wait_ms": 1e3 * waits[0] if waits else None, "wait_ms_mean": float(w.mean()),
            "wait_ms_p50": float(np.percentile(w, 50)), "wait_ms_p95": float(np.percentile(w, 95)),
            "wall_ms_per_batch": 1e3 * wall / max(1, len(waits)), "requests": tier.io_stats()["requests"]}


def _fat_epoch(reader, tenant, batch_size) -> tuple[int, float]:
    """(bytes read, CPU seconds) of one Fat Row epoch: read + decode into jagged tensors."""
    nbytes = 0
    t0 = time.process_time()
    for _, nb in reader.iter_epoch(tenant, batch_size):
        nbytes += nb
    return nbytes, time.process_time() - t0


def _store_once_epoch(reader, tenant, batches) -> tuple[int, float]:
    """(bytes read, CPU seconds) of one store-once Parquet epoch over the late epoch's batches:
    parse, read the row groups the windows overlap, decode, gather into jagged tensors."""
    nbytes = 0
    t0 = time.process_time()
    for _, nb in reader.iter_epoch(tenant, batches):
        nbytes += nb
    return nbytes, time.process_time() - t0


def tuned_reader_encodings(path) -> dict | None:
    """The per-column encodings a tuned Fat Row file was written with (its gpumat metadata)."""
    import json

    raw = (pq.ParquetFile(path).schema_arrow.metadata or {}).get(b"gpumat.fatrow")
    return json.loads(raw).get("encodings") if raw else None


def _seq_bytes(path, columns) -> dict:
    """Compressed bytes of each ``seq_`` column of a Fat Row file, from its footer."""
    md = pq.ParquetFile(path).metadata
    out = {c: 0 for c in columns}
    for rg in range(md.num_row_groups):
        for j in range(md.num_columns):
            name = md.schema.column(j).path.split(".")[0]
            if name.startswith("seq_") and name[4:] in out:
                out[name[4:]] += md.row_group(rg).column(j).total_compressed_size
    return out


def run(args) -> dict:
    if getattr(args, "events", None) is not None:
        from gpumat.bench.stored import run_events

        return run_events(args)
    from gpumat.host.fatrow import FatRowReader, StoreOnceReader, store_once_table, write_fat_rows, write_store_once
    from gpumat.host.workloads import synthetic_workload, user_clustered_batches

    if args.plot:
        require_matplotlib("--plot")
    check_outputs(args)
    progress = not args.quiet and args.json != "-"
    say = print if args.json != "-" else (lambda *a, **k: None)
    with scratch_dir(args.workdir, "gpumat-bench-storage-") as workdir:
        t0 = time.perf_counter()
        tier_uri = args.uri or os.path.join(workdir, "tier")
        say(f"building the synthetic workload (scale {args.scale}) in {tier_uri} ...")
        w = synthetic_workload(tier_uri, scale=args.scale, seed=args.seed, days=args.days, progress=progress)
        tier, tenants, examples = w.tier, w.tenants, w.examples
        ex_path = os.path.join(workdir, "examples.parquet")
        pq.write_table(examples, ex_path, compression="zstd")
        fat_path = os.path.join(workdir, "fatrow.parquet")
        say("writing Fat Row ...")
        fat_written = write_fat_rows(examples, tier, tenants, fat_path)
        reader = FatRowReader(fat_path)
        seq_bytes = _seq_bytes(fat_path, reader.columns)
        # the honest peers: the strongest Fat Row a user would write, and each event stored once in Parquet
        say("writing the tuned Fat Row (sorted by user, tuned encodings, 64 MiB pages) ...")
        tuned_path = os.path.join(workdir, "fatrow_tuned.parquet")
        tuned_written = write_fat_rows(examples, tier, tenants, tuned_path, tuned=True)
        tuned_reader = FatRowReader(tuned_path)
        tuned_seq_bytes = _seq_bytes(tuned_path, tuned_reader.columns)
        say("writing the store-once Parquet (sorted by user, tuned encodings, 16k-row groups) ...")
        once_path = os.path.join(workdir, "store_once.parquet")
        once_written = write_store_once(store_once_table(tier), once_path)
        once_reader = StoreOnceReader(once_path)
        once_uih = sum(once_reader.column_bytes(c) for c in tier.schema)
        fat_events = int(pc.sum(pc.list_value_length(pq.read_table(fat_path, columns=[f"seq_{reader.columns[0]}"]).column(0))).as_py() or 0)

        stats = tier.stats()
        tier_live = stats["stored_bytes"] + stats["metadata_bytes"]
        tier_written = _tier_bytes(tier) if args.uri else dir_bytes(os.path.join(workdir, "tier"))
        ex_bytes = os.path.getsize(ex_path)
        fat_uih = sum(seq_bytes.values())

        batches = user_clustered_batches(examples, args.batch_size, seed=args.seed)
        per_tenant = {}
        for t in progress_bar(tenants, "epochs per tenant", "tenant", enabled=progress):
            late_b, late_s = late_epoch(tier, batches, t, decode=False)
            _, late_ds = late_epoch(tier, batches, t, decode=True)
            fat_b, fat_s = _fat_epoch(reader, t, args.batch_size)
            tuned_b, tuned_s = _fat_epoch(tuned_reader, t, args.batch_size)
            once_b, once_s = _store_once_epoch(once_reader, t, batches)
            per_tenant[t.name] = {
                "columns": list(t.columns), "max_len": t.max_len,
                "late_bytes_read": late_b, "fatrow_bytes_read": fat_b, "read_ratio": late_b / fat_b if fat_b else None,
                "late_cpu_s": late_s, "late_with_decode_cpu_s": late_ds, "fatrow_cpu_s": fat_s,
                # every *_cpu_s of a peer is read + decode into jagged tensors, like late_with_decode_cpu_s
                "fatrow_tuned_bytes_read": tuned_b, "fatrow_tuned_cpu_s": tuned_s,
                "read_ratio_vs_fatrow_tuned": late_b / tuned_b if tuned_b else None,
                "store_once_bytes_read": once_b, "store_once_cpu_s": once_s,
                "read_ratio_vs_store_once": late_b / once_b if once_b else None,
            }
        per_col = {
            c: {"late_bytes_per_event": col["bytes_per_event"], "raw_int64_bytes_per_event": 8.0,
                "fatrow_bytes_per_stored_event": seq_bytes.get(c, 0) / fat_events if fat_events and c in seq_bytes else None,
                "fatrow_bytes_per_uih_event": seq_bytes.get(c, 0) / stats["events"] if c in seq_bytes else None,
                "fatrow_tuned_bytes_per_uih_event": tuned_seq_bytes[c] / stats["events"] if c in tuned_seq_bytes else None,
                "store_once_bytes_per_event": once_reader.column_bytes(c) / stats["events"] if stats["events"] else None,
                "store_once_encoding": once_reader.encodings.get(c),
                "encodings": col["encodings"]}
            for c, col in stats["columns"].items()
        }
        result = {
            "benchmark": "storage",
            "environment": environment(),
            "workload": {**w.stats, "scale": args.scale, "seed": args.seed, "batch_size": args.batch_size,
                          "batches": len(batches), "tenants": [t.to_json() for t in tenants]},
            "late": {"bytes_written": tier_written + ex_bytes, "tier_files_written": tier_written,
                     "uih_bytes_stored": tier_live, "examples_bytes": ex_bytes, "bytes_stored": tier_live + ex_bytes},
            "fatrow": {"bytes_written": fat_written, "bytes_stored": fat_written, "uih_bytes_stored": fat_uih,
                       "sequence_events_stored": fat_events},
            "fatrow_tuned": {"bytes_written": tuned_written, "bytes_stored": tuned_written,
                             "uih_bytes_stored": sum(tuned_seq_bytes.values()),
                             "encodings": tuned_reader_encodings(tuned_path),
                             "layout": "rows sorted by (user_id, request_ts), zstd 3, 64 MiB pages and row groups"},
            "store_once_parquet": {"bytes_written": once_written, "bytes_stored": once_written + ex_bytes,
                                   "uih_bytes_stored": once_uih, "encodings": once_reader.encodings,
                                   "layout": "events sorted by user, zstd 3, 16384-row groups"},
            "stored_uih_ratio": tier_live / fat_uih,
            "stored_uih_ratio_vs_fatrow_tuned": tier_live / max(1, sum(tuned_seq_bytes.values())),
            "stored_uih_ratio_vs_store_once": tier_live / max(1, once_uih),
            "tenants": per_tenant,
            "columns": per_col,
            "elapsed_s": time.perf_counter() - t0,
        }
        short, long_ = per_tenant.get("short"), per_tenant.get("long")
        if args.uri:
            result["object_store"] = {"uri": tier.uri, "store": repr(tier.store), "latency_ms": args.latency_ms,
                                      "page_bytes": _page_bytes(), "coalesce_gap_bytes": getattr(tier.store, "coalesce_gap_bytes", None),
                                      "tenants": {}}
            for t in progress_bar(tenants, "object store epochs", "tenant", enabled=progress):
                r = io_epoch(tier.uri, t, batches, args.latency_ms / 1e3)
                r["loader"] = loader_epoch(tier.uri, t, examples, args)
                result["object_store"]["tenants"][t.name] = r
        result["targets"] = {
            "stored_uih_ratio <= 1/10": result["stored_uih_ratio"] <= TARGETS["stored_ratio_max"],
            **({"short read ratio <= 1/20": short["read_ratio"] <= TARGETS["short_read_ratio_max"]} if short else {}),
            **({"long read ratio <= 1/5": long_["read_ratio"] <= TARGETS["long_read_ratio_max"]} if long_ else {}),
        }
        report(result, args, _print_table, _plot, say)
        return result


def _print_table(r: dict) -> None:
    w = r["workload"]
    print(f"\nworkload: {w['users']} users, {w['events']:,} events (longest {w['max_history']:,}), "
          f"{w['requests']:,} examples, {w['versions']} versions, batches of {w['batch_size']} (user-clustered)")
    late, fat = r["late"], r["fatrow"]
    tuned, once = r.get("fatrow_tuned"), r.get("store_once_parquet")
    print(f"{'':28}{'late materialization':>22}{'Fat Row':>14}{'ratio':>9}")
    for label, a, b in (("bytes written", late["bytes_written"], fat["bytes_written"]),
                        ("bytes stored (total)", late["bytes_stored"], fat["bytes_stored"]),
                        ("UIH bytes stored", late["uih_bytes_stored"], fat["uih_bytes_stored"])):
        print(f"{label:<28}{human_bytes(a):>22}{human_bytes(b):>14}{a / b:>9.4f}")
    if tuned and once:
        print(f"UIH bytes stored by the stronger peers: Fat Row tuned (sorted by user, tuned encodings, 64 MiB pages) "
              f"{human_bytes(tuned['uih_bytes_stored'])} (late/that {late['uih_bytes_stored'] / tuned['uih_bytes_stored']:.3f}), "
              f"store-once Parquet {human_bytes(once['uih_bytes_stored'])} "
              f"(late/that {late['uih_bytes_stored'] / once['uih_bytes_stored']:.3f})")
    print(f"\n{'tenant (epoch)':<28}{'late read':>12}{'Fat Row read':>14}{'ratio':>9}{'late CPU s':>12}{'+decode s':>11}{'Fat Row s':>11}")
    for name, t in r["tenants"].items():
        print(f"{name + ' (' + str(t['max_len']) + ')':<28}{human_bytes(t['late_bytes_read']):>12}{human_bytes(t['fatrow_bytes_read']):>14}"
              f"{t['read_ratio']:>9.4f}{t['late_cpu_s']:>12.2f}{t['late_with_decode_cpu_s']:>11.2f}{t['fatrow_cpu_s']:>11.2f}")
    if tuned and once:
        print(f"\n{'bytes read per epoch':<28}{'late':>10}{'Fat Row':>11}{'FR tuned':>11}{'store-once':>12}"
              f"{'late/tuned':>12}{'late/once':>11}")
        for name, t in r["tenants"].items():
            print(f"{name:<28}{human_bytes(t['late_bytes_read']):>10}{human_bytes(t['fatrow_bytes_read']):>11}"
                  f"{human_bytes(t['fatrow_tuned_bytes_read']):>11}{human_bytes(t['store_once_bytes_read']):>12}"
                  f"{t['read_ratio_vs_fatrow_tuned']:>12.3f}{t['read_ratio_vs_store_once']:>11.3f}")
        print(f"\n{'host CPU s per epoch':<28}{'late read':>10}{'read + decode into jagged tensors':>36}")
        print(f"{'':<28}{'only':>10}{'late':>9}{'Fat Row':>9}{'FR tuned':>10}{'store-once':>12}")
        for name, t in r["tenants"].items():
            print(f"{name:<28}{t['late_cpu_s']:>10.2f}{t['late_with_decode_cpu_s']:>9.2f}{t['fatrow_cpu_s']:>9.2f}"
                  f"{t['fatrow_tuned_cpu_s']:>10.2f}{t['store_once_cpu_s']:>12.2f}")
    print(f"\n{'column':<16}{'tier B/event':>14}{'raw int64':>11}{'Fat Row B/stored event':>24}"
          f"{'store-once B/event':>20}{'(encoding)':>22}")
    for c, col in r["columns"].items():
        fr = col["fatrow_bytes_per_stored_event"]
        so = col.get("store_once_bytes_per_event")
        print(f"{c:<16}{col['late_bytes_per_event']:>14.3f}{8.0:>11.1f}{(f'{fr:.3f}' if fr is not None else '-'):>24}"
              f"{(f'{so:.3f}' if so is not None else '-'):>20}{str(col.get('store_once_encoding') or ''):>22}")
    os_ = r.get("object_store")
    if os_:
        print(f"\nobject store {os_['uri']} ({os_['store']}), {os_['latency_ms']:g} ms injected per request")
        print(f"{'tenant':<8}{'epoch':<10}{'GETs':>7}{'/batch':>8}{'max':>5}{'blocks':>8}{'runs':>7}{'GET/run':>9}"
              f"{'fetched':>10}{'planned':>10}{'ms/batch':>10}")
        for name, t in os_["tenants"].items():
            for ep in EPOCHS:
                e = t[ep]
                print(f"{name:<8}{ep.replace('uncached_noheads', 'unc-heads'):<10}{e['gets']:>7}{e['gets_per_batch_mean']:>8.1f}{e['gets_per_batch_max']:>5}"
                      f"{e['blocks']:>8}{e['block_runs']:>7}{(e['gets_per_block_run'] or 0):>9.3f}"
                      f"{human_bytes(e['bytes_fetched']):>10}{human_bytes(e['bytes_planned']):>10}{e['wall_ms_per_batch']:>10.1f}")
            L = t["loader"]
            print(f"{'':<8}loader: {L['workers']} workers, CPU step {L['step_ms']:g} ms: wait per batch mean "
                  f"{L['wait_ms_mean']:.1f} ms, p95 {L['wait_ms_p95']:.1f} ms (first {L['first_wait_ms']:.0f} ms), "
                  f"{L['wall_ms_per_batch']:.1f} ms/batch; open: {t['open']['requests']} requests")
    print_targets(r["targets"])


def _page_bytes():
    from gpumat.host.objstore import CACHE

    return CACHE.page


def _plot(r: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = ["UIH stored"] + [f"{n} read/epoch" for n in r["tenants"]]
    late = [r["late"]["uih_bytes_stored"]] + [t["late_bytes_read"] for t in r["tenants"].values()]
    fat = [r["fatrow"]["uih_bytes_stored"]] + [t["fatrow_bytes_read"] for t in r["tenants"].values()]
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.bar(x - 0.2, np.array(fat) / 1e6, 0.4, label="Fat Row", color="#c44e52")
    ax.bar(x + 0.2, np.array(late) / 1e6, 0.4, label="gpumat late materialization", color="#4c72b0")
    for i, (a, b) in enumerate(zip(late, fat)):
        ax.annotate(f"1/{b / a:.0f}" if a else "", (x[i] + 0.2, a / 1e6), ha="center", va="bottom", fontsize=9)
    ax.set_yscale("log")
    ax.set_xticks(x, labels)
    ax.set_ylabel("MB (log scale)")
    w = r["workload"]
    ax.set_title(f"Storage and bytes read per epoch: {w['users']} users, {w['events']:,} events, {w['requests']:,} examples")
    ax.legend()
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
