"""Whole-column reads (decode_stripes) with and without narrowed dictionaries (host/native.py ``narrowed``,
switched off by raising NARROW_MIN_ENTRIES), and pyarrow's file API on the same column of the tuned
store-once Parquet file (profiling/cpu_decode.py's), the three interleaved ROUNDS times in one process,
their order each of the six in turn (CPU time, medians; each ratio the median of the per-round ratios):
    python docs/results/cpu-2026-12-04c/narrow_ab.py WORKDIR [dataset:variant:column ...] [--rounds N]"""
import argparse, itertools, sys, time
sys.path.insert(0, "profiling")
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import cpu_decode as cd
from gpumat.host import native

ap = argparse.ArgumentParser()
ap.add_argument("workdir")
ap.add_argument("cases", nargs="*", default=["bench:-:category", "bench:-:item_id"])
ap.add_argument("--rounds", type=int, default=30)
a = ap.parse_args()
on = native.NARROW_MIN_ENTRIES
for case in a.cases:
    ds, var, c = (None if x == "-" else x for x in case.split(":"))
    tier, _, _ = cd.load(a.workdir, 1.0, ds, var)
    r = tier._reader; d = tier.directory(); si = np.arange(len(d), dtype=np.int64)
    blob = cd.tuned_parquet(cd.events_table(tier))
    native.NARROW_MIN_ENTRIES = 1 << 62; x = r.decode_stripes(c, si)
    native.NARROW_MIN_ENTRIES = on; y = r.decode_stripes(c, si); y = r.decode_stripes(c, si)  # (its second use)
    z = pq.ParquetFile(pa.BufferReader(blob)).read(columns=[c], use_threads=False).column(c).to_numpy()
    assert np.array_equal(x, y) and np.array_equal(x, z)
    arms = {"int64": lambda: r.decode_stripes(c, si), "narrow": lambda: r.decode_stripes(c, si),
            "pq_file": lambda: pq.ParquetFile(pa.BufferReader(blob)).read(columns=[c], use_threads=False)}
    T = {k: [] for k in arms}
    perms = list(itertools.permutations(arms))
    for i in range(a.rounds):
        for k in perms[i % len(perms)]:
            f = arms[k]
            native.NARROW_MIN_ENTRIES = 1 << 62 if k == "int64" else on
            t0 = time.process_time(); f(); T[k].append(time.process_time() - t0)
    native.NARROW_MIN_ENTRIES = on
    T = {k: np.array(v) for k, v in T.items()}
    med = {k: 1e3 * np.median(v) for k, v in T.items()}
    print(f"{case}: {len(x):,} values; ms int64 {med['int64']:.2f} narrow {med['narrow']:.2f} pq file API {med['pq_file']:.2f}; "
          f"int64/narrow {np.median(T['int64'] / T['narrow']):.3f}; x file API: int64 {np.median(T['pq_file'] / T['int64']):.2f} "
          f"narrow {np.median(T['pq_file'] / T['narrow']):.2f}", flush=True)
