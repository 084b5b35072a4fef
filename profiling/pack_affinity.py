"""What an epoch reads and stages when short histories share blobs (packs), by batch order.

A tier of short histories stores runs of them in one blob (a pack, docs/DESIGN.md §2). A batch
stages a block of a pack once for all the batch's users in it (``host.planner``), so what an
epoch reads depends on how often a pack's users share a batch: users in id order (an evaluation
pass, ``shuffle=False``), users shuffled (``Materializer.iterate``'s default, ``affinity="user"``),
or packs shuffled with their users together (``affinity="pack"``); and, for comparison, users in
id order with the planner staging a pack's block once for each of its stripes (as before it
staged it once a batch: "id order, before"). Per dataset and order it
prints the epoch's planned bytes (``StagedBatch.nbytes_read``), staged blocks, staged bytes (what
crosses to the device), and the host CPU seconds of planning, against the tier's stored bytes.

    python profiling/pack_affinity.py [--dataset ml1m|ml100k|EVENTS.parquet] [--lengths 8,24,0]
                                      [--variant replay] [--appends 1] [--tenant-len 64] [--no-large-packs]
                                      [--batch-size 256] [--json out.json]

Each example is one request per (pseudo-)user at its full history (ML-1M cut into pseudo-users
of ``--lengths`` events, as ``profiling/short_histories.py`` cuts it, shaped by its ``--variant``
as that script shapes it; 0: the real users), the
events appended in ``--appends`` parts in time order (more than one: a user's history in several
stripes, each part's short ones packed apart). Each order runs on a fresh handle: "store B" is
what the store read (a segment under 4 MiB is read whole, once), "read B" what the blocks need
(``StagedBatch.nbytes_read``: what a tier too large to hold reads, before coalescing). With
``--ranged`` every segment is read by ranges, as a large one is (``FULL_READ_BYTES`` 0), ranges
whose holes are under 32 KiB merged into one read.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa


def epoch(tier, table, tenant, batch_size: int, shuffle: bool, groups) -> dict:
    """Plan one epoch of ``table`` in the order ``AffinitySampler`` gives (what ``iterate`` streams)."""
    from gpumat.host.examples import check_pointers, parse_examples
    from gpumat.host.planner import plan
    from gpumat.host.prefetch import AffinitySampler
    from gpumat.host.store import IOStats

    sampler = AffinitySampler(table.column("user_id").to_numpy(), batch_size, 65536, shuffle, 0, False, 0, 1,
                              groups=groups)
    out = {"batches": 0, "bytes_read": 0, "staged_blocks": 0, "staged_bytes": 0}
    tier.directory()
    io0 = tier.io_stats()
    t0 = time.process_time()
    for rows in sampler.epoch_batches(0):
        ex = parse_examples(table.take(pa.array(rows)), tier.schema)
        check_pointers(ex, tier)
        s = plan(tier, ex, tenant, check_leakage=True)
        out["batches"] += 1
        out["bytes_read"] += int(s.nbytes_read)
        out["staged_blocks"] += int(len(next(iter(s.columns.values())).hdr))
        out["staged_bytes"] += int(s.staged_bytes())
    out["cpu_s"] = time.process_time() - t0
    io = IOStats.delta(tier.io_stats(), io0)
    out["store_bytes_read"], out["store_reads"] = int(io["bytes_read"]), int(io["get"])
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="ml1m")
    ap.add_argument("--lengths", default="8,24,0")
    ap.add_argument("--variant", default="real", help="a variant of profiling/short_histories.py (replay: listening)")
    ap.add_argument("--appends", type=int, default=1, help="the events appended in this many parts, in time order")
    ap.add_argument("--ranged", action="store_true", help="read every segment by ranges, as a large one is")
    ap.add_argument("--no-large-packs", action="store_true",
                    help="tiers created with large_packs=False (packs of one block only; Tier.create)")
    ap.add_argument("--tenant-len", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from short_histories import PER_USER, VARIANTS, dump, load_events, regroup, shape

    from gpumat.core.tenant import Tenant
    from gpumat.host import planner, segment
    from gpumat.host.tier import Tier

    if a.ranged:
        segment.FULL_READ_BYTES = 0  # every segment read by ranges, as a large tier's

    parts = a.variant.split("+")
    if any(v not in VARIANTS for v in parts):
        ap.error(f"--variant: one or more of {', '.join(VARIANTS)} joined by +; got {a.variant!r}")
    ev = shape(load_events(a.dataset), [v for v in parts if v not in PER_USER])
    out = {"dataset": a.dataset, "variant": a.variant, "tenant_len": a.tenant_len, "batch_size": a.batch_size, "appends": a.appends,
           "ranged": a.ranged, "large_packs": not a.no_large_packs, "runs": {}}
    print(f"{a.dataset} ({a.variant}): one request a user at its full history, tenant of {a.tenant_len} events, "
          f"batches of {a.batch_size}, {a.appends} append(s){', segments read by ranges' if a.ranged else ''}\n")
    print(f"{'events/user':>11} {'users':>8} {'packed':>7} {'tier B':>10} | {'order':<17} {'store B':>11} {'read B':>11} "
          f"{'blocks':>8} {'staged B':>11} {'CPU s':>6}")
    for n in [int(x) for x in a.lengths.split(",")]:
        wd = tempfile.mkdtemp(prefix="gpumat-packs-")
        try:
            e = shape(regroup(ev, n), [v for v in parts if v in PER_USER])
            schema = {c: str(e.schema.field(c).type) for c in e.column_names if c != "user_id"}
            tier = Tier.create(os.path.join(wd, "t"), schema, large_packs=not a.no_large_packs)
            ts = e.column("ts").to_numpy()
            cuts = np.quantile(ts, np.linspace(0, 1, a.appends + 1)[1:-1]) if a.appends > 1 else []
            part = np.searchsorted(cuts, ts, side="right")
            for k in range(a.appends):
                tier.append(e.filter(pa.array(part == k)))
            users = np.unique(e.column("user_id").to_numpy())
            table = pa.table({"user_id": users, "version": np.full(len(users), tier.version),
                              "length": tier.lengths(users), "request_ts": np.full(len(users), 2**62)})
            tenant = Tenant("all", list(schema), a.tenant_len)
            groups = tier.pack_groups()
            st = tier.stats()
            run = {"users": int(len(users)), "packed_users": int(len(groups[0])), "tier_bytes": int(st["stored_bytes"]),
                   "orders": {}}
            for name, shuffle, g in (("id order, before", False, None), ("users in id order", False, None),
                                     ("users shuffled", True, None), ("packs shuffled", True, groups)):
                if name.endswith("before"):  # the planner as before: a pack's block staged once a stripe
                    once, planner._pack_blocks_once = planner._pack_blocks_once, lambda *x: None
                try:
                    r = epoch(Tier.open(tier.uri), table, tenant, a.batch_size, shuffle, g)
                finally:
                    if name.endswith("before"):
                        planner._pack_blocks_once = once
                run["orders"][name] = r
                print(f"{(n or 'real'):>11} {len(users):>8} {len(groups[0]):>7} {st['stored_bytes']:>10,} | {name:<17} "
                      f"{r['store_bytes_read']:>11,} {r['bytes_read']:>11,} {r['staged_blocks']:>8,} {r['staged_bytes']:>11,} "
                      f"{r['cpu_s']:>6.2f}",
                      flush=True)
            out["runs"][str(n)] = run
        finally:
            shutil.rmtree(wd, ignore_errors=True)
    dump(out, a.json)
    return out


if __name__ == "__main__":
    main()
