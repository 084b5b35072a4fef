"""Per column of each ``cpu_decode.py --json`` file given: the tier's column decode over pyarrow's,
median (5th percentile, lowest) of the interleaved rounds, against its file API (ParquetFile.read,
one thread: the faster way every round here) and against its dataset API (pq.read_table).

    python docs/results/cpu-2026-12-04b/summarize.py docs/results/cpu-2026-12-04b/dec_*.json"""
import json
import sys

import numpy as np

for path in sys.argv[1:]:
    d = json.load(open(path))
    name = d["dataset"] + (f" {d['variant']}" if d.get("variant") else "")
    print(f"{name} ({path.rsplit('/', 1)[-1]}, {d['repeat']} rounds)")
    for c, v in d["decode"]["columns"].items():
        n = d["decode"]["events"]
        tier = np.array([n / x for x in v["tier_Mvps"]])  # (seconds * 1e6)
        f = np.array([n / x for x in v["parquet_file_api_Mvps"]]) / tier
        s = np.array([n / x for x in v["parquet_dataset_api_Mvps"]]) / tier
        print(f"  {c:<14} tier {np.median(v['tier_Mvps']):6.0f} Mvalues/s   x file API {np.median(f):5.2f} "
              f"({np.percentile(f, 5):.2f}, {f.min():.2f})   x dataset API {np.median(s):5.2f} ({np.percentile(s, 5):.2f}, {s.min():.2f})")
