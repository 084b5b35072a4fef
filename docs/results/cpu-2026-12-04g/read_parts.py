"""python read_parts.py TIER COLUMN [reads]: a whole-column read (decode_stripes) timed in its parts, each the median
over the reads (wall time, the reads back to back, so warm): the C call, the Python around it (each reader step)."""
import collections, sys, time, numpy as np
from gpumat.host.tier import Tier
from gpumat.host import reader as R, native as NT, pages as PG
t = Tier.open(sys.argv[1]); col = sys.argv[2]
d = t.directory(); si = np.arange(len(d), dtype=np.int64); r = t._reader
acc = collections.defaultdict(list)
def wrap(owner, name, key):
    f = getattr(owner, name)
    def w(*a, **k):
        t0 = time.perf_counter(); x = f(*a, **k); acc[key].append(time.perf_counter() - t0); return x
    setattr(owner, name, w)
wrap(PG, "decode_blobs", "pages.decode_blobs"); wrap(NT, "decode_blobs", "native.decode_blobs")
for n in ("_decode_tabled", "_decode_blobs"):  # (one call a read; _decode_tabled: before ABI 33)
    if hasattr(NT, n):
        wrap(NT, n, "C")
for n in ("_own_tables", "_tables_in_cache", "_bytes_request3", "_decode_blobs3", "_decode_stripes3"):
    wrap(R.VersionReader, n, n)
r.decode_stripes(col, si)
acc.clear()
N = int(sys.argv[3]) if len(sys.argv) > 3 else 300
for _ in range(N):
    t0 = time.perf_counter(); r.decode_stripes(col, si); acc["total"].append(time.perf_counter() - t0)
m = collections.defaultdict(float, {k: np.median(v) * 1e6 * len(v) / N for k, v in acc.items()})
for k, v in m.items():
    print("%8.1f us  %s" % (v, k))
print("outside C %.1f us: pages wrapper %.1f, native wrapper %.1f, _decode_blobs3's own %.1f, _decode_stripes3's own %.1f, "
      "decode_stripes' own %.1f" % (m["total"] - m["C"], m["pages.decode_blobs"] - m["native.decode_blobs"],
      m["native.decode_blobs"] - m["C"], m["_decode_blobs3"] - m["pages.decode_blobs"] - m["_own_tables"]
      - m["_tables_in_cache"] - m["_bytes_request3"], m["_decode_stripes3"] - m["_decode_blobs3"], m["total"] - m["_decode_stripes3"]))
