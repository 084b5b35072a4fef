"""Pool cpu_decode.py's rounds of dec_hash_replay_{off,on}_r*.json (from this folder): per column, the
median, 5th percentile and lowest of tier decode over pyarrow's, and the median Mvalues/s of each."""
import glob
import json

import numpy as np

for side in ("off", "on"):
    runs = [json.load(open(f))["decode"]["columns"] for f in sorted(glob.glob(f"dec_hash_replay_{side}_r*.json"))]
    for c in runs[0]:
        ratio = np.concatenate([r[c]["tier_over_parquet"] for r in runs])
        tier = np.concatenate([r[c]["tier_Mvps"] for r in runs])
        pq = np.concatenate([r[c]["parquet_Mvps"] for r in runs])
        batch = np.concatenate([r[c]["batch_path_over_parquet"] for r in runs])
        print(f"{side:3s} {c:8s} rounds {len(ratio)}  tier/pq median {np.median(ratio):5.2f}  p5 {np.percentile(ratio, 5):5.2f}  "
              f"lowest {ratio.min():5.2f}   tier {np.median(tier):4.0f}  pyarrow {np.median(pq):4.0f} Mvalues/s   "
              f"batch/pq {np.median(batch):4.2f}   stored B/event {runs[0][c]['tier_bytes_per_event']:.2f}")
