"""python c_ab_column.py TIER COLUMN A.so B.so [rounds]: every gm_decode_blobs / gm_decode_tabled call of
a whole-column read (captured), replayed with two builds of the C decoder alternated."""
import sys, time, ctypes, numpy as np
from gpumat.host.tier import Tier
from gpumat.host import native
t = Tier.open(sys.argv[1]); col = sys.argv[2]
d = t.directory(); si = np.arange(len(d), dtype=np.int64); r = t._reader
calls = []
orig = native.decode_blobs
def wrapped(*a, **k):
    calls.append((a, k)); return orig(*a, **k)
native.decode_blobs = wrapped
want = r.decode_stripes(col, si)
native.decode_blobs = orig
names = ["_decode_blobs", "_decode_tabled"]
fns = {n: getattr(native, n) for n in names}
libs = []
for p in sys.argv[3:5]:
    lib = ctypes.CDLL(p)
    m = {}
    for n in names:
        f = getattr(lib, "gm" + n); f.restype, f.argtypes = fns[n].restype, fns[n].argtypes; m[n] = f
    libs.append(m)
N = int(sys.argv[5]) if len(sys.argv) > 5 else 200
ts = [[], []]
for i in range(N):
    for k in ((0, 1) if i % 2 else (1, 0)):
        for n in names: setattr(native, n, libs[k][n])
        t0 = time.perf_counter()
        for a, kw in calls: orig(*a, **kw)
        ts[k].append(time.perf_counter() - t0)
ts = np.array(ts) * 1e3
print("%s %s: %d calls; A med %.3f | B med %.3f | B/A paired median %.3f" % (sys.argv[1].split('/')[-1], col, len(calls), np.median(ts[0]), np.median(ts[1]), np.median(ts[1] / ts[0])))
