"""A/B of the reader's whole-column read (decode_stripes) as at OLD_COMMIT against this checkout, in one process:
two readers of the same tier, the old one's methods (every function of its class: decode_stripes, _dictionaries, ...)
taken from OLD_COMMIT's host/reader.py (bound to that reader alone: each keeps its own caches), the C decoder the
same; ROUNDS rounds, the order alternating (CPU time; medians; the ratio the median of the rounds'):
    python docs/results/cpu-2026-12-04c/py_ab.py OLD_COMMIT WORKDIR dataset:variant:column ... [--rounds N]"""
import argparse, subprocess, sys, time, types
sys.path.insert(0, "profiling")
import numpy as np
import cpu_decode as cd
from gpumat.host.tier import Tier

ap = argparse.ArgumentParser()
ap.add_argument("old"); ap.add_argument("workdir"); ap.add_argument("cases", nargs="+")
ap.add_argument("--rounds", type=int, default=40)
a = ap.parse_args()
src = subprocess.check_output(["git", "show", f"{a.old}:host/reader.py"], text=True)
old_mod = types.ModuleType("old_reader"); old_mod.__file__ = "old_reader.py"; sys.modules["old_reader"] = old_mod
exec(compile(src, "old_reader.py", "exec"), old_mod.__dict__)
METHODS = [k for k, v in vars(old_mod.VersionReader).items() if isinstance(v, types.FunctionType) and not k.startswith("__")]
for case in a.cases:
    ds, var, c = (None if x == "-" else x for x in case.split(":"))
    tier, _, _ = cd.load(a.workdir, 1.0, ds, var)
    new = Tier.open(tier.uri)._reader
    old = Tier.open(tier.uri)._reader
    for m in METHODS:
        setattr(old, m, types.MethodType(getattr(old_mod.VersionReader, m), old))
    si = np.arange(len(new.directory()), dtype=np.int64)
    x = old.decode_stripes(c, si); x = old.decode_stripes(c, si)
    y = new.decode_stripes(c, si); y = new.decode_stripes(c, si)
    assert np.array_equal(x, y)
    T = {"old": [], "new": []}
    for i in range(a.rounds):
        for k in (("old", "new") if i % 2 == 0 else ("new", "old")):
            r = old if k == "old" else new
            t0 = time.process_time(); r.decode_stripes(c, si); T[k].append(time.process_time() - t0)
    o, n = np.array(T["old"]), np.array(T["new"])
    print(f"{case}: old {1e3 * np.median(o):.2f} ms new {1e3 * np.median(n):.2f} ms  old/new median {np.median(o / n):.3f} "
          f"(quartiles {np.percentile(o / n, 25):.3f}-{np.percentile(o / n, 75):.3f})", flush=True)
