"""The C blob decoder on a column of BARE LEVELS blocks: a build of host/_native.c at another commit
(BARE LEVELS walked twice: its size, then its values) against this checkout's build (one walk), and
pyarrow's decode of the same column from tuned store-once Parquet (its file API, one thread), alternated in one process (each round
the three interleaved, 5 times; the min of each). The other build is compiled here with setup.py's flags.

    python docs/results/cpu-2026-12-04b/walk_ab.py --old 2769717 [--variant action4] [--length 40]

The other build must have this checkout's C ABI (its gm_decode_blobs is called with this checkout's arguments: the
commits from 2769717 to 6211a6b for ABI 32, from de52cf2 on for 33); --names labels the two builds (old first) where
the comparison is another one than the walks'. A column of codes (a dictionary) is refused: no dictionary is given."""
import argparse
import ctypes
import io
import json
import os
import subprocess
import sys
import sysconfig
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, "profiling")
import short_histories as sh  # noqa: E402
from gpumat.host import codec, fatrow, native, pages  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--old", required=True, help="the commit whose host/_native.c is the other build")
ap.add_argument("--variant", default="action4")
ap.add_argument("--length", type=int, default=40)
ap.add_argument("--rounds", type=int, default=15)
ap.add_argument("--json", default=None)
ap.add_argument("--names", default="two_walks,one_walk", help="the old build's label and this checkout's")
a = ap.parse_args()
n_old, n_new = a.names.split(",")
tmp = tempfile.mkdtemp()
src, so = os.path.join(tmp, "old.c"), os.path.join(tmp, "old.so")
open(src, "w").write(subprocess.check_output(["git", "show", f"{a.old}:host/_native.c"], text=True))
subprocess.check_call(["gcc", "-shared", "-fPIC", "-O3", "-std=c99", "-fno-strict-aliasing", "-mpopcnt",
                       "-I", sysconfig.get_paths()["include"], src, "-o", so])
lib = ctypes.CDLL(so)
lib.gm_abi_version.restype = ctypes.c_int64
if lib.gm_abi_version() != native.ABI:
    raise SystemExit(f"{a.old}'s C ABI is {lib.gm_abi_version()}, this checkout's {native.ABI}: gm_decode_blobs differs")
old = lib.gm_decode_blobs
new = native._decode_blobs
old.restype, old.argtypes = new.restype, new.argtypes

ev = sh.regroup(sh.shape(sh.load_events("ml1m"), [a.variant]), a.length)
u = ev.column("user_id").to_numpy()
v = ev.column("rating").to_numpy().astype(np.int64)
first = np.r_[0, np.flatnonzero(u[1:] != u[:-1]) + 1]
sc = np.diff(np.r_[first, len(u)])
region, off, nb, e, *_ = pages.encode_column_parts(v, sc, 128)
if ((e & codec.ENC_DICT) != 0).any():
    raise SystemExit("a column of codes (its dictionary): not this script's")
tags = codec.enc_tags(e)
keep = ~codec.const_stripes(e)
want = np.concatenate([v[s:s + c] for s, c in zip(first[keep], sc[keep])])
off, nb, sc, tags = off[keep], nb[keep], sc[keep], tags[keep]
bare = int(pages.is_bare(np.where(tags >= 0, tags, region[off])).sum())
for f in (old, new):
    native._decode_blobs = f
    if not np.array_equal(pages.decode_blobs(region, off, nb, sc, 128, tags=tags), want):
        raise SystemExit("the column decoded wrong")
buf = io.BytesIO()
fatrow.write_store_once(ev, buf)
raw = buf.getvalue()


def t_tier(f):
    native._decode_blobs = f
    t0 = time.perf_counter()
    pages.decode_blobs(region, off, nb, sc, 128, tags=tags)
    return time.perf_counter() - t0


def t_pq():  # (pyarrow's file API, one thread: its fastest decode of one column, 1.1-2.2x less CPU than read_table)
    t0 = time.perf_counter()
    pq.ParquetFile(pa.BufferReader(raw)).read(columns=["rating"], use_threads=False)
    return time.perf_counter() - t0


rows = []
runs = ((n_old, lambda: t_tier(old)), (n_new, lambda: t_tier(new)), ("pyarrow", t_pq))
for r in range(a.rounds):  # (each round: its three interleaved, 5 times; the min of each)
    got = {k: [] for k, _ in runs}
    for _ in range(5):
        for k, f in runs:
            got[k].append(f())
    rows.append({k: want.size / min(s) / 1e6 for k, s in got.items()})
    print(f"round {r}: Mvalues/s " + ", ".join(f"{k} {x:.0f}" for k, x in rows[-1].items()), flush=True)
med = {k: float(np.median([x[k] for x in rows])) for k in rows[0]}
ratio = {k: [x[k] / x["pyarrow"] for x in rows] for k in (n_old, n_new)}
key = "one_over_two_median" if (n_old, n_new) == ("two_walks", "one_walk") else f"{n_new}_over_{n_old}_median"
out = {"variant": a.variant, "length": a.length, "values": int(want.size), "blobs": int(sc.size), "bare_blobs": bare,
       "old": a.old, "mvalues_s_median": med, "rounds": rows,
       "x_pyarrow_median": {k: float(np.median(x)) for k, x in ratio.items()},
       "x_pyarrow_min": {k: float(np.min(x)) for k, x in ratio.items()},
       key: float(np.median([x[n_new] / x[n_old] for x in rows]))}
print(json.dumps({k: out[k] for k in ("blobs", "bare_blobs", "mvalues_s_median", "x_pyarrow_median", "x_pyarrow_min", key)}))
if a.json:
    json.dump(out, open(a.json, "w"), indent=1)
