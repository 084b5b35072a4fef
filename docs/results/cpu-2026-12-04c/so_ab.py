"""A/B of two builds of host/_native.c (the same ABI) on whole-column reads (decode_stripes), ROUNDS rounds in one
process, the two builds' order alternating round by round (CPU time; medians; the ratio the median of the rounds'):
the old build compiled here with setup.py's flags, its functions swapped in for the checkout's.
    python docs/results/cpu-2026-12-04c/so_ab.py OLD.c WORKDIR dataset:variant:column ... [--rounds N] [--no-check]"""
import argparse, sys, time
sys.path.insert(0, "profiling")
import numpy as np
import cpu_decode as cd
from native_builds import swap  # (profiling/native_builds.py)

ap = argparse.ArgumentParser()
ap.add_argument("old_c"); ap.add_argument("workdir"); ap.add_argument("cases", nargs="+")
ap.add_argument("--rounds", type=int, default=40)
ap.add_argument("--no-check", action="store_true", help="a diagnostic build whose values differ (no_lookups.sh)")
a = ap.parse_args()
old_f, new_f, use = swap(a.old_c)
for case in a.cases:
    ds, var, c = (None if x == "-" else x for x in case.split(":"))
    tier, _, _ = cd.load(a.workdir, 1.0, ds, var)
    r = tier._reader; d = tier.directory(); si = np.arange(len(d), dtype=np.int64)
    use(old_f); x = r.decode_stripes(c, si); x = r.decode_stripes(c, si)
    use(new_f); y = r.decode_stripes(c, si); y = r.decode_stripes(c, si)
    assert a.no_check or np.array_equal(x, y)
    T = {"old": [], "new": []}
    for i in range(a.rounds):
        for k in (("old", "new") if i % 2 == 0 else ("new", "old")):
            use(old_f if k == "old" else new_f)
            t0 = time.process_time(); r.decode_stripes(c, si); T[k].append(time.process_time() - t0)
    use(new_f)
    o, n = np.array(T["old"]), np.array(T["new"])
    print(f"{case}: old {1e3 * np.median(o):.2f} ms new {1e3 * np.median(n):.2f} ms  old/new median {np.median(o / n):.3f} "
          f"(quartiles {np.percentile(o / n, 25):.3f}-{np.percentile(o / n, 75):.3f})", flush=True)
