"""CPU ms (median of 300) of the reader's _dictionaries for ML-1M rating (582 kept stripe tables and its
segment dictionary), all kept: kept_ab.sh runs it with each reader."""
import sys, time
sys.path.insert(0, "profiling")
import numpy as np
import cpu_decode as cd
from gpumat.host import codec, segment
segment.FULL_READ_BYTES = 1 << 40
tier, *_ = cd.load("/tmp/cpudec_new", 1.0, "ml1m", None)
r = tier._reader; d = tier.directory(); si = np.arange(len(d))
enc = r._dir_cols["rating"][2]; isd = (enc & codec.ENC_DICT) != 0
r.decode_stripes("rating", si); r.decode_stripes("rating", si)
xs = []
for _ in range(300):
    t0 = time.process_time(); r._dictionaries("rating", d.seg, enc, isd, with_key=False); xs.append(time.process_time() - t0)
print("dictionaries ms median %.3f" % (np.median(xs) * 1e3))
