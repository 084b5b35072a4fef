"""Pools the per-round ratios of this directory's `cpu_decode.py` runs of ML-1M with its features
(3 runs x 15 rounds each, `before` at `229692c` and `after` with borrowed codes, run alternately):
median, 5th percentile and lowest of tier decode / pyarrow decode, and the medians of each side's
Mvalues/s and of the batch path / pyarrow. `python summarize.py`."""
import collections
import glob
import json
import os

import numpy as np

here = os.path.dirname(os.path.abspath(__file__))
for tag in ("before", "after"):
    acc = collections.defaultdict(lambda: collections.defaultdict(list))
    for f in sorted(glob.glob(f"{here}/dec_ml1mf_{tag}_r*.json")):
        for c, v in json.load(open(f))["decode"]["columns"].items():
            for k in ("tier_over_parquet", "tier_Mvps", "parquet_Mvps", "batch_path_over_parquet", "tier_bytes_per_event"):
                acc[c][k] += v[k] if isinstance(v[k], list) else [v[k]]
    print(tag)
    for c, v in acc.items():
        r = np.array(v["tier_over_parquet"])
        print(f"  {c:12s} rounds {len(r)}  tier/pq median {np.median(r):5.2f}  p5 {np.percentile(r, 5):5.2f}  "
              f"lowest {r.min():5.2f}   tier {np.median(v['tier_Mvps']):5.0f}  pyarrow {np.median(v['parquet_Mvps']):4.0f} "
              f"Mvalues/s   batch/pq {np.median(v['batch_path_over_parquet']):.2f}   stored B/event {v['tier_bytes_per_event'][0]:.2f}")
