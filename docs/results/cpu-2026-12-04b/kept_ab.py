"""CPU ms (median of 40) of whole-column reads (decode_stripes) of ML-1M rating / item_id and hash_items+replay item_id,
with the reader as checked out (kept_ab.sh alternates 416cb71 and bf0496d's host/reader.py, host/segment.py)."""
import sys, time, json
sys.path.insert(0, "profiling")
import numpy as np
import cpu_decode as cd
from gpumat.host import segment
segment.FULL_READ_BYTES = 1 << 40
out = {}
for ds, var, cols in (("ml1m", None, ("rating", "item_id")), ("ml1m", "hash_items+replay", ("item_id",))):
    tier, _, _ = cd.load("/tmp/cpudec_new", 1.0, ds, var)
    r = tier._reader; d = tier.directory(); si = np.arange(len(d), dtype=np.int64)
    for c in cols:
        for _ in range(3): r.decode_stripes(c, si)
        xs = []
        for _ in range(40):
            t0 = time.process_time(); r.decode_stripes(c, si); xs.append(time.process_time() - t0)
        out[f"{ds}:{var}:{c}"] = float(np.median(xs) * 1e3)
print(json.dumps(out))
