"""python paired_ratio.py TIER [rounds]: decode_stripes of item_id against pyarrow's file API on the same
events (profiling/cpu_decode.py's tuned store-once file), interleaved rounds, CPU time."""
import os, sys, time, numpy as np
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "profiling"))
import pyarrow as pa, pyarrow.parquet as pq
import cpu_decode as cd
from gpumat.host.tier import Tier
t = Tier.open(sys.argv[1])
d = t.directory(); si = np.arange(len(d), dtype=np.int64); r = t._reader
table = cd.events_table(t); blob = cd.tuned_parquet(table)
c = "item_id"
f = {"tier": lambda: r.decode_stripes(c, si),
     "pq": lambda: pq.ParquetFile(pa.BufferReader(blob)).read(columns=[c], use_threads=False)}
res = cd.interleaved(f, int(sys.argv[2]) if len(sys.argv) > 2 else 30)
tt, pp = np.array(res["tier"]), np.array(res["pq"])
print("tier ms med %.3f min %.3f; pq ms med %.3f min %.3f; ratio of medians %.2f, paired median %.2f, ratio of mins %.2f" % (
    np.median(tt)*1e3, tt.min()*1e3, np.median(pp)*1e3, pp.min()*1e3, np.median(pp)/np.median(tt), np.median(pp/tt), pp.min()/tt.min()))
