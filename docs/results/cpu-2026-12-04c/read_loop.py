"""Whole-column reads (decode_stripes of every stripe) of one column, N times in this process: the median and
least CPU time (ms). python docs/results/cpu-2026-12-04c/read_loop.py COLUMN TIER_DIR [N]"""
import sys, time
import numpy as np
from gpumat.host.tier import Tier

col, path = sys.argv[1], sys.argv[2]
n = int(sys.argv[3]) if len(sys.argv) > 3 else 200
r = Tier.open(path)._reader
si = np.arange(len(r.directory()), dtype=np.int64)
r.decode_stripes(col, si)
ts = []
for _ in range(n):
    t0 = time.process_time(); r.decode_stripes(col, si); ts.append(time.process_time() - t0)
print(f"{col} median {1e3 * np.median(ts):.3f} ms least {1e3 * min(ts):.3f} ms")
