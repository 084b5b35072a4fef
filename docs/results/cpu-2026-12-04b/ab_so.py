"""A/B of two builds of host/_native.c on whole-column reads (decode_stripes), alternated 30 times in one process
(CPU time, medians; the old build compiled here with setup.py's flags, its functions swapped in for the checkout's):
    python docs/results/cpu-2026-12-04b/ab_so.py OLD.c [dataset:variant:column ...]"""
import sys, time
sys.path.insert(0, "profiling")
import numpy as np
import cpu_decode as cd
from gpumat.host import native, segment
segment.FULL_READ_BYTES = 1 << 40
from native_builds import swap  # (profiling/native_builds.py: the old build compiled, its functions swapped in)
old_f, new_f, use = swap(sys.argv[1])  # (a path to a .c file)
cases = [("ml1m", None, "rating"), ("ml1m", None, "item_id"), ("ml1m", "hash_items+replay", "item_id")] if len(sys.argv) < 3 else [tuple(None if x == "-" else x for x in c.split(":")) for c in sys.argv[2:]]
for ds, var, c in cases:
    tier, _, _ = cd.load("/tmp/cpudec_new", 1.0, ds, var)
    r = tier._reader; d = tier.directory(); si = np.arange(len(d), dtype=np.int64)
    use(old_f); a = r.decode_stripes(c, si); use(new_f); b = r.decode_stripes(c, si)
    assert np.array_equal(a, b)
    T = {"old": [], "new": []}
    for _ in range(30):
        for k, fs in (("old", old_f), ("new", new_f)):
            use(fs); t0 = time.process_time(); r.decode_stripes(c, si); T[k].append(time.process_time() - t0)
    ratio = np.median(np.array(T["old"]) / np.array(T["new"]))
    print(f"{ds}:{var}:{c} old {np.median(T['old'])*1e3:.2f} ms new {np.median(T['new'])*1e3:.2f} ms  old/new median {ratio:.3f}")
