"""C-only A/B of two builds of host/_native.c (the same ABI): the arguments of every native.decode_blobs call of a
whole-column read (decode_stripes) captured once, then the raw C calls (gm_decode_blobs) of the old build and the
new one (this checkout's, or --new NEW.c) timed alternately, ROUNDS rounds (wall time; medians; the ratio the
median of the rounds'), their values compared first. No Python in the timed part: a change to the C decoder
measured without the reader's noise.
    python docs/results/cpu-2026-12-04d/c_ab.py OLD.c WORKDIR dataset:variant:column ... [--new NEW.c] [--rounds N]"""
import argparse, sys, time
sys.path.insert(0, "profiling")
import numpy as np
import cpu_decode as cd
from native_builds import swap  # (profiling/native_builds.py)
from gpumat.host import native

ap = argparse.ArgumentParser()
ap.add_argument("old_c"); ap.add_argument("workdir"); ap.add_argument("cases", nargs="+")
ap.add_argument("--rounds", type=int, default=150)
ap.add_argument("--new", help="the new build's source (default: this checkout's build)")
a = ap.parse_args()
old_f, new_f, use = swap(a.old_c)
if a.new:
    new_f = swap(a.new)[0]
for case in a.cases:
    ds, var, c = (None if x == "-" else x for x in case.split(":"))
    tier, _, _ = cd.load(a.workdir, 1.0, ds, var)
    r = tier._reader; si = np.arange(len(tier.directory()), dtype=np.int64)
    calls, f0 = [], native.decode_blobs
    native.decode_blobs = lambda *x, **k: (calls.append((x, k)), f0(*x, **k))[1]
    r.decode_stripes(c, si)
    native.decode_blobs = f0

    def run():
        for x, k in calls:
            if native.decode_blobs(*x, **k) != (0, 0):
                raise RuntimeError(f"{case}: a blob the C decoder refused")

    outs = lambda: [x[6].copy() for x, _ in calls]  # noqa: E731 (each call's out)
    use(old_f); run(); want = outs(); use(new_f); run(); got = outs()
    if not all(np.array_equal(p, q) for p, q in zip(want, got)):
        raise RuntimeError(f"{case}: the two builds decode differently")
    T = {"old": [], "new": []}
    for i in range(a.rounds):
        for k in (("old", "new") if i % 2 == 0 else ("new", "old")):
            use(old_f if k == "old" else new_f)
            t0 = time.perf_counter(); run(); T[k].append(time.perf_counter() - t0)
    use(new_f)
    o, n = np.array(T["old"]), np.array(T["new"])
    print(f"{case}: old {1e3 * np.median(o):.3f} ms new {1e3 * np.median(n):.3f} ms  old/new median {np.median(o / n):.3f} "
          f"(quartiles {np.percentile(o / n, 25):.3f}-{np.percentile(o / n, 75):.3f})", flush=True)
