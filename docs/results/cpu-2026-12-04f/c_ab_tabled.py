"""python c_ab_tabled.py A.so B.so [rounds]: the C part of a whole-column read of hash_items+replay's
item_id (its one gm_decode_tabled call, captured), replayed with two builds of the C decoder
(build_variant.sh) alternated, each round in both orders; the output checked against the read's in the first round.
The tier: the one profiling/cpu_decode.py --dataset ml1m --variant hash_items+replay --workdir /tmp/cpudec3 builds."""
import sys, time, ctypes, numpy as np
from gpumat.host.tier import Tier
from gpumat.host import native
t = Tier.open("/tmp/cpudec3/tier-ml1m-hash_items+replay")
d = t.directory(); si = np.arange(len(d), dtype=np.int64); r = t._reader
cap = {}
orig = native.decode_blobs
def wrapped(*a, **k):
    cap["a"] = a; return orig(*a, **k)
native.decode_blobs = wrapped
want = r.decode_stripes("item_id", si)
native.decode_blobs = orig
a = cap["a"]
fn = native._decode_tabled
libs = []
for p in sys.argv[1:3]:
    lib = ctypes.CDLL(p)
    f = lib.gm_decode_tabled; f.restype, f.argtypes = fn.restype, fn.argtypes
    libs.append(f)
N = int(sys.argv[3]) if len(sys.argv) > 3 else 300
ts = [[], []]
for i in range(N):
    for k in (0, 1) if i % 2 else (1, 0):
        native._decode_tabled = libs[k]
        t0 = time.perf_counter(); orig(*a); ts[k].append(time.perf_counter() - t0)
        if i == 0:
            if not np.array_equal(a[6], want):
                raise RuntimeError("the build's output differs from the read's")
ts = np.array(ts) * 1e3
print("A med %.3f p10 %.3f | B med %.3f p10 %.3f | B/A paired median %.3f" % (np.median(ts[0]), np.percentile(ts[0], 10),
      np.median(ts[1]), np.percentile(ts[1], 10), np.median(ts[1] / ts[0])))
