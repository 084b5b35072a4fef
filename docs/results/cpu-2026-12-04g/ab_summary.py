"""python ab_summary.py DIR TAG...: per column, the median of cpu_decode's per-round tier/pq ratio (pyarrow's faster API each
round) over all rounds of all runs, for the session start's code (base) and the head's, run in alternating processes
(cd_ab.sh), and each run's median."""
import glob, json, sys, numpy as np
d = sys.argv[1]
for tag in sys.argv[2:]:
    for side in ("base", "head"):
        runs = sorted(glob.glob(f"{d}/{tag}_{side}_*.json"))
        cols = {}
        for f in runs:
            for c, v in json.load(open(f))["decode"]["columns"].items():
                cols.setdefault(c, []).append(v["tier_over_parquet"])
        for c, rs in cols.items():
            allr = np.concatenate(rs)
            print(f"{tag:6} {side:4} {c:12} median {np.median(allr):.2f} over {len(allr)} rounds; per run " +
                  " ".join(f"{np.median(r):.2f}" for r in rs))
