"""python read_in_context.py TIER COLUMN [skip ...]: the whole-column read's CPU time and its C call's, each read after
what profiling/cpu_decode.py runs between two (its batch path, staged decode, pyarrow's file and dataset APIs, a
memcpy), less the steps named in skip; medians of 40 reads."""
import os, sys, time, numpy as np
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "profiling"))
import pyarrow as pa, pyarrow.parquet as pq
import cpu_decode as cd
from gpumat.host import codec, native
from gpumat.host.tier import Tier
t = Tier.open(sys.argv[1]); c = sys.argv[2]
d = t.directory(); si = np.arange(len(d), dtype=np.int64); r = t._reader
blob = cd.tuned_parquet(cd.events_table(t))
hdr, words, cnt, dicts, own = cd.all_blocks(t, c)
src = np.arange(int(d.count.sum())); dst = np.empty_like(src)
def stored():
    b = t.read_blocks(c, si, np.zeros_like(si), d.nblocks); codec.decode_blocks(b[0], b[1], cnt, dicts=b.dicts)
fns = {"batch": stored, "staged": lambda: codec.decode_blocks(hdr, words, cnt, dicts=dicts),
       "pq_file": lambda: pq.ParquetFile(pa.BufferReader(blob)).read(columns=[c], use_threads=False),
       "pq_dataset": lambda: pq.read_table(pa.BufferReader(blob), columns=[c], use_threads=False),
       "memcpy": lambda: np.copyto(dst, src)}
skip = set(sys.argv[3:])
res = {"tier": [], "C": []}
inc = [0.0]  # (the read's C calls, summed)
for name in [n for n in ("_decode_tabled", "_decode_blobs") if hasattr(native, n)]:  # (_decode_tabled: before ABI 33)
    def timed(*a, f=getattr(native, name)):
        t0 = time.process_time(); x = f(*a); inc[0] += time.process_time() - t0; return x
    setattr(native, name, timed)
for _ in range(40):
    inc[0] = 0.0
    t0 = time.process_time(); r.decode_stripes(c, si); res["tier"].append(time.process_time() - t0)
    res["C"].append(inc[0])
    for k, f in fns.items():
        if k not in skip:
            f()
tier, cc = np.median(res["tier"]) * 1e3, np.median(res["C"]) * 1e3
print("skipping %s: read %.3f ms, its C %.3f, the rest %.3f" % (sorted(skip) or "nothing", tier, cc, tier - cc))
