"""The history kernel's L2 traffic on `gpumat bench kernels` batches, counted on the CPU
(``gpumat.bench.l2``: sectors each warp instruction touches at the kernel's addresses, an SM's L1,
what reaches L2), with the floors that L2's rate fitted to the H200's profile puts under each.

Why: on the H200 (2026-12-04, `docs/results/h200-2026-12-04/ncu_long_call*.txt`) the long tenant's
fastest launches ran with **L2 Cache Throughput at 90-92%** of peak while DRAM ran at 32%: the
kernel is bound by L2, and "waiting on dependent loads" (long scoreboard) is that queue.

Per tenant, column set (``COLUMN_SETS``), DICT code distribution (``gpumat.bench.kernels.CODE_KINDS``:
``uniform``, the bench's batches; ``tier``, the bench tier's Zipf item ids in their sorted
dictionary; ``frequency``, the same in a dictionary in frequency order), L1 size, dictionary entry
size and use of L1 by data read once (``--streams``): L2 sectors and requests an event, L1 hit
rates, bytes used a sector; then the floors (by sectors and by requests: which of the two L2's limit
follows, the counters do not yet say) and the most of the D2D copy each allows. The bench batch's
own floor is the profile's time times its L2 share by construction; the other batches are the
check (the borrowed batch, 2.4x the sectors, measured on the same H200). ::

    python profiling/l2_model.py [--tenants long] [--sets bench,borrowed] [--sms 4] [--l1-kib 224]
                                 [--seq 2] [--dict-bytes 8,4] [--streams cached,bypass] [--json out.json]
"""

from __future__ import annotations

import argparse
import json

from gpumat.bench import kernels as kb
from gpumat.bench.l2 import (D2D_BPS, L1_KIB, NCU_LONG, SECTOR, STREAM_MODES, l2_floor_us, l2_rates, moved_bytes,
                             simulate)

# The same session's bench times (call 3, tuned launch) by tenant and column set
MEASURED_US = {("short", "bench"): 92.1, ("mid", "bench"): 84.2, ("long", "bench"): 81.0, ("long", "for_items"): 63.0,
               ("long", "plain"): 52.1, ("long", "borrowed"): 189.8}
COLUMN_SETS = {"bench": kb.COLUMNS, "for_items": kb.FOR_ITEM_COLUMNS, "plain": kb.PLAIN_COLUMNS,
               "borrowed": kb.FEATURE_COLUMNS}


def real_check(workdir: str, sms: int, l1_kib: int, seq: int, json_path: str | None = None,
               users: int = 128, max_len: int = 65536) -> dict:
    """The model on a batch planned from the bench tier (``users`` random users' whole histories, cut
    to ``max_len``; the kernel bench's columns, ``ts`` for the check), against a synthetic batch of
    about as many events with codes drawn as the tier's (``codes="tier"``): whether those stand for
    the tier's real codes. Every DICT tile's indices are checked against the reference decode."""
    import os
    import sys

    import numpy as np

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import cpu_decode
    import static_real

    from gpumat.bench.l2 import block_codes
    from gpumat.ops import decode_gather

    tier, *_ = cpu_decode.load(workdir, 1.0, "bench")
    st = static_real.planned(tier, max_len, users, columns=("item_id", "action"))
    ref, _ = decode_gather(st, "reference")
    col, tiles, bad = st.columns["item_id"], 0, 0
    for t in range(len(st.tile_block)):
        idx = block_codes(col, int(st.tile_block[t]), st.block_size)
        if idx is None:
            continue
        lo, cnt, row = int(st.tile_lo[t]), int(st.tile_cnt[t]), int(st.tile_out[t])
        tiles += 1
        bad += not np.array_equal(ref["item_id"].numpy()[row:row + cnt], col.dicts[idx[lo:lo + cnt]])
    if bad:
        raise AssertionError(f"{bad} of {tiles} DICT tiles' indices differ from the reference decode")
    B = max(1, round(st.total / (0.9 * max_len)))  # (a synthetic history is U[L/2, 2L]: about 0.9 L a window)
    out = {"real": {"batch_events": int(st.total), "batch_tiles": len(st.tile_block), "dict_tiles_checked": tiles,
                    **simulate(st, sms, l1_kib, seq)}}
    for codes in ("tier", "uniform"):
        syn = kb.synthetic_staged(B, max_len, codes=codes)
        out[f"synthetic_{codes}"] = {"batch_events": int(syn.total), "batch_tiles": len(syn.tile_block),
                                     **simulate(syn, sms, l1_kib, seq)}
    for k, r in out.items():
        print(f"{k:18s} {r['batch_events']:>9} events, {r['batch_tiles']} tiles ({r['tiles']} tiles, {r['events']} events simulated): "
              f"{r['l2_sectors_per_event']:.3f} L2 sectors an event, dictionary "
              f"{r['l2_sectors_by_what_per_event'].get('dictionary', 0):.3f} (its L1 hits "
              f"{r['l1_hit_by_what_pct'].get('dictionary', 0):.1f}%) | "
              + " ".join(f"{w} {v:.3f}" for w, v in r["l2_sectors_by_what_per_event"].items()))
    print(f"(every one of {tiles} DICT tiles' indices equal to the reference decode's)")
    if json_path:
        with open(json_path, "w") as f:
            json.dump(out, f, indent=1)
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tenants", default="long", help="comma-separated: short, mid, long")
    ap.add_argument("--sets", default="bench,for_items,plain", help="column sets: " + ", ".join(COLUMN_SETS))
    ap.add_argument("--codes", default=",".join(kb.CODE_KINDS), help="DICT codes drawn as (CODE_KINDS)")
    ap.add_argument("--sms", type=int, default=4, help="SMs simulated (their share of the tiles)")
    ap.add_argument("--l1-kib", default=str(L1_KIB), help="L1 sizes to model, comma-separated (KiB); the first is "
                    "the one the floors are fitted with")
    ap.add_argument("--seq", type=int, default=2, help="tiles a program (the launch's SEQ)")
    ap.add_argument("--dict-bytes", default="8", help="a dictionary entry's bytes, comma-separated (8, 4)")
    ap.add_argument("--streams", default="cached", help="how loads of data read once use L1, comma-separated: "
                    + ", ".join(STREAM_MODES))
    ap.add_argument("--real", default=None, metavar="WORKDIR",
                    help="instead: a batch planned from the bench tier (built in WORKDIR as profiling/cpu_decode.py "
                         "builds it), its dictionary indices checked against the reference decode, against a "
                         "synthetic batch of the same size with the tier's codes")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    if a.real:
        return real_check(a.real, a.sms, int(a.l1_kib.split(",")[0]), a.seq, a.json)
    tenants = {n: (L, B) for n, L, B in kb.TENANTS}
    kib0 = int(a.l1_kib.split(",")[0])
    rows = []
    for tn in a.tenants.split(","):
        L, B = tenants[tn]
        for cs in a.sets.split(","):
            has_dict = any(len(c) > 6 and c[6] for c in COLUMN_SETS[cs])
            for ck in (a.codes.split(",") if has_dict else ["-"]):
                staged = kb.synthetic_staged(B, L, columns=COLUMN_SETS[cs], codes=ck if ck != "-" else "uniform")
                combos = [(int(k), ef, int(d)) for k in a.l1_kib.split(",")
                          for ef in a.streams.split(",")
                          for d in (a.dict_bytes.split(",") if has_dict else ["8"])]
                for kib, ef, db in combos:
                    r = simulate(staged, a.sms, kib, a.seq, ef, db)
                    r.update(tenant=tn, columns=cs, codes=ck, l1_kib=kib, streams=ef, dict_bytes=db, seq=a.seq,
                             bytes_moved=moved_bytes(staged, db))
                    rows.append(r)
                    print(f"{tn:5s} {cs:9s} {ck:9s} L1 {kib:3d} KiB {ef} dict {db} B: "
                          f"{r['l2_sectors_per_event']:.3f} L2 sectors ({r['l2_requests_per_event']:.3f} requests) an event, "
                          f"L1 hits {r['l1_hit_pct']:.1f}% ({r['l1_hit_pct_with_stores']:.1f}% with stores), "
                          f"ld {r['ld_bytes_per_sector_pct']:.1f}% st {r['st_bytes_per_sector_pct']:.1f}% of a sector used | "
                          + " ".join(f"{k} {v:.3f}" for k, v in r["l2_sectors_by_what_per_event"].items()), flush=True)
    report = {"rows": rows, "ncu": NCU_LONG, "measured_us": {f"{k[0]}/{k[1]}": v for k, v in MEASURED_US.items()}}
    # calibration: the L2 rates (sectors, requests) that put the profiled launch at its measured L2
    # throughput (the bench batch's floor is then that run's time times its L2 share, by construction:
    # the other batches are the check)
    canon = lambda r: r["l1_kib"] == kib0 and r["streams"] == "cached" and r["dict_bytes"] == 8  # noqa: E731
    cal = next((r for r in rows if r["tenant"] == "long" and r["columns"] == "bench" and r["codes"] == "uniform"
                and canon(r)), None)
    if cal is not None:
        hist = {tn: int(kb.synthetic_staged(B, L).tile_cnt.sum()) for tn, (L, B) in tenants.items()
                if tn in {r["tenant"] for r in rows}}
        rates = l2_rates(cal)
        rate, rate_rq = rates["sectors_per_s"], rates["requests_per_s"]
        report["calibration"] = {"history_events": hist, "l2_sectors_per_s_at_100pct": rate,
                                 "l2_bytes_per_s_at_100pct": rate * SECTOR, "l2_requests_per_s_at_100pct": rate_rq}
        print(f"calibration: the long batch's {cal['l2_sectors_per_event'] * hist['long'] / 1e6:.2f} M L2 sectors "
              f"({cal['l2_requests_per_event'] * hist['long'] / 1e6:.2f} M requests) in {NCU_LONG['us']} us at "
              f"{NCU_LONG['l2_throughput_pct']}% -> {rate * SECTOR / 1e12:.2f} TB/s of sectors at 100%")
        for r in rows:
            n = hist[r["tenant"]]
            r.update(l2_floor_us(r, n, rates))
            r["ceiling_pct_of_d2d"] = 100.0 * r["bytes_moved"] / (r["l2_floor_us"] * 1e-6) / D2D_BPS
            r["ceiling_by_requests_pct_of_d2d"] = 100.0 * r["bytes_moved"] / (r["l2_floor_by_requests_us"] * 1e-6) / D2D_BPS
            m = MEASURED_US.get((r["tenant"], r["columns"])) if r["codes"] in ("uniform", "-") and canon(r) else None
            print(f"  {r['tenant']:5s} {r['columns']:9s} {r['codes']:9s} L1 {r['l1_kib']} {r['streams']} "
                  f"dict {r['dict_bytes']} B: L2 floor {r['l2_floor_us']:.1f} us by sectors, "
                  f"{r['l2_floor_by_requests_us']:.1f} by requests; at most {r['ceiling_pct_of_d2d']:.1f}% / "
                  f"{r['ceiling_by_requests_pct_of_d2d']:.1f}% of the D2D copy"
                  + (f" (measured {m} us)" if m else ""))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(report, f, indent=1)
    return report


if __name__ == "__main__":
    main()
