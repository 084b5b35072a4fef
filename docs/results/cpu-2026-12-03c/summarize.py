"""Pools the per-round ratios of this directory's `cpu_decode.py` runs (3 runs x 15 rounds a dataset
and path): median, 5th percentile and lowest of tier decode / pyarrow decode, and the medians of
each side's Mvalues/s and of the batch path / pyarrow. `python summarize.py` (the `dec_*` runs, at
`a72b1c2`) or `python summarize.py final` (the `final_*` runs, at `7fd3fa6`)."""
import collections
import glob
import json
import os
import sys

import numpy as np

here = os.path.dirname(os.path.abspath(__file__))
prefix = sys.argv[1] if len(sys.argv) > 1 else "dec"
for ds in ("ml1m+features", "ml1m", "bench"):
    for var in ("", "_no_avx512"):
        acc = collections.defaultdict(lambda: collections.defaultdict(list))
        for f in sorted(glob.glob(f"{here}/{prefix}_{ds}{var}_r*.json")):
            for c, v in json.load(open(f))["decode"]["columns"].items():
                for k in ("tier_over_parquet", "tier_Mvps", "parquet_Mvps", "batch_path_over_parquet"):
                    acc[c][k] += v[k]
        if not acc:
            continue
        print(f"{ds}{var or ' (AVX-512)'}")
        for c, v in acc.items():
            r = np.array(v["tier_over_parquet"])
            print(f"  {c:12s} rounds {len(r)}  tier/pq median {np.median(r):5.2f}  p5 {np.percentile(r, 5):5.2f}  "
                  f"lowest {r.min():5.2f}   tier {np.median(v['tier_Mvps']):5.0f}  pyarrow {np.median(v['parquet_Mvps']):4.0f} "
                  f"Mvalues/s   batch/pq {np.median(v['batch_path_over_parquet']):.2f}")
