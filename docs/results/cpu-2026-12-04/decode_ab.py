"""Decode speed of one column with and without BARE LEVELS blocks, and pyarrow's decode of the same
column from tuned store-once Parquet, alternated in one process (min of each round's repeats).

    python docs/results/cpu-2026-12-04/decode_ab.py [--variant action4] [--length 40] [--rounds 7]"""
import argparse
import io
import json
import sys
import time

import numpy as np
import pyarrow.parquet as pq

sys.path.insert(0, "profiling")
import short_histories as sh  # noqa: E402
from gpumat.host import codec, fatrow, pages  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--variant", default="action4")
ap.add_argument("--length", type=int, default=40)
ap.add_argument("--rounds", type=int, default=7)
ap.add_argument("--json", default=None)
a = ap.parse_args()
ev = sh.regroup(sh.shape(sh.load_events("ml1m"), [a.variant]), a.length)
u = ev.column("user_id").to_numpy()
v = ev.column("rating").to_numpy().astype(np.int64)
first = np.r_[0, np.flatnonzero(u[1:] != u[:-1]) + 1]
sc = np.diff(np.r_[first, len(u)])
enc = {}
for bare in (False, True):
    pages.BARE_LEVELS = bare
    region, off, nb, e, *_ = pages.encode_column_parts(v, sc, 128)
    tags = codec.enc_tags(e)
    keep = ~codec.const_stripes(e)
    if not np.array_equal(pages.decode_blobs(region, off[keep], nb[keep], sc[keep], 128, tags=tags[keep]),
                          np.concatenate([v[s:s + c] for s, c in zip(first[keep], sc[keep])])):
        raise SystemExit(f"the column decoded wrong (BARE_LEVELS={bare})")
    enc[bare] = (region, off[keep], nb[keep], sc[keep], tags[keep], int(region.size))
buf = io.BytesIO()
fatrow.write_store_once(ev, buf)
raw = buf.getvalue()


def t_tier(bare):
    r, o, n, c, t, _ = enc[bare]
    t0 = time.perf_counter()
    pages.decode_blobs(r, o, n, c, 128, tags=t)
    return time.perf_counter() - t0


def t_pq():
    t0 = time.perf_counter()
    pq.read_table(io.BytesIO(raw), columns=["rating"], use_threads=False).column(0).to_numpy()
    return time.perf_counter() - t0


rows = []
for r in range(a.rounds):
    got = {k: min(f() for _ in range(5)) for k, f in (("before", lambda: t_tier(False)), ("bare", lambda: t_tier(True)),
                                                       ("pyarrow", t_pq))}
    rows.append({k: len(v) / s / 1e6 for k, s in got.items()})
    print(f"round {r}: Mvalues/s " + ", ".join(f"{k} {x:.0f}" for k, x in rows[-1].items()), flush=True)
med = {k: float(np.median([x[k] for x in rows])) for k in rows[0]}
out = {"variant": a.variant, "length": a.length, "values": len(v), "column_bytes": {"before": enc[False][5], "bare": enc[True][5]},
       "mvalues_s_median": med, "rounds": rows,
       "x_pyarrow_median": {k: float(np.median([x[k] / x["pyarrow"] for x in rows])) for k in ("before", "bare")}}
print(json.dumps({k: out[k] for k in ("column_bytes", "mvalues_s_median", "x_pyarrow_median")}))
if a.json:
    json.dump(out, open(a.json, "w"), indent=1)
