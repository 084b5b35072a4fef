import sys, time, numpy as np
from gpumat.host.tier import Tier
t = Tier.open(sys.argv[1]); col = sys.argv[2]
d = t.directory(); si = np.arange(len(d), dtype=np.int64); r = t._reader
for _ in range(5): r.decode_stripes(col, si)
ts = []
for _ in range(int(sys.argv[3])):
    t0 = time.process_time(); r.decode_stripes(col, si); ts.append(time.process_time() - t0)
print(np.median(ts) * 1e3)
