"""A whole-column read timed inside gm_decode_blobs (C) and outside it (the reader's Python, the file read,
the checksums), warm (right after the same read) and polluted (right after pyarrow's read of the column and a
memcpy of 8 MB: cpu_decode.py's round), 15 reads each (CPU time, medians):
    python docs/results/cpu-2026-12-04d/cold_split.py COLUMN DATASET WORKDIR"""
import sys, time
sys.path.insert(0, "profiling")
import numpy as np, pyarrow as pa, pyarrow.parquet as pq
import cpu_decode as cd
from gpumat.host import native
tier, _, _ = cd.load(sys.argv[3], 1.0, sys.argv[2], None)
r = tier._reader; d = tier.directory(); si = np.arange(len(d), dtype=np.int64)
table = cd.events_table(tier); blob = cd.tuned_parquet(table)
c = sys.argv[1]
n = table.num_rows; src = np.arange(n, dtype=np.int64); dst = np.empty_like(src)
f = native._decode_blobs; acc = [0.0]
def w(*a):
    t0 = time.process_time(); x = f(*a); acc[0] += time.process_time() - t0; return x
native._decode_blobs = w
def polluted():
    pq.ParquetFile(pa.BufferReader(blob)).read(columns=[c], use_threads=False); np.copyto(dst, src)
for mode in ("warm", "polluted"):
    T, C = [], []
    for _ in range(15):
        if mode == "warm": r.decode_stripes(c, si)
        else: polluted()
        acc[0] = 0; t0 = time.process_time(); r.decode_stripes(c, si); T.append(time.process_time() - t0); C.append(acc[0])
    T, C = np.array(T), np.array(C)
    print(f"{c} {mode}: total {1e3*np.median(T):.3f} C {1e3*np.median(C):.3f} rest {1e3*np.median(T-C):.3f} ms")
