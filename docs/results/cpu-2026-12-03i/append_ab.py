"""The writer's append time with and without the second step of packs (``writer.PACK_LARGE_BELOW``
0: the writer as before it), alternately in one process: ML-1M's real users and cut into histories
of N events (as ``profiling/short_histories.py`` cuts them), one append each into a fresh tier.

    python docs/results/cpu-2026-12-03i/append_ab.py [--lengths 0,8,40] [--variant real] [--rounds 3] [--json OUT]
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, "profiling")
from short_histories import PER_USER, load_events, regroup, shape  # noqa: E402

from gpumat.host import writer  # noqa: E402
from gpumat.host.tier import Tier  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--lengths", default="0,8,40")
ap.add_argument("--variant", default="real")
ap.add_argument("--rounds", type=int, default=3)
ap.add_argument("--json", default=None)
a = ap.parse_args()
parts = a.variant.split("+")
ev = shape(load_events("ml1m"), [v for v in parts if v not in PER_USER])
large = writer.PACK_LARGE_BELOW
out = {"variant": a.variant, "runs": {}}
for n in [int(x) for x in a.lengths.split(",")]:
    e = shape(regroup(ev, n), [v for v in parts if v in PER_USER])
    schema = {c: str(e.schema.field(c).type) for c in e.column_names if c != "user_id"}
    res = {"before": [], "ladder": []}
    for r in range(a.rounds):
        for name, below in (("before", 0), ("ladder", large)):
            writer.PACK_LARGE_BELOW = below
            wd = tempfile.mkdtemp(prefix="gpumat-ab-")
            try:
                t = Tier.create(os.path.join(wd, "t"), schema)
                t0 = time.perf_counter()
                t.append(e)
                dt = time.perf_counter() - t0
                res[name].append({"append_s": dt, "stored_bytes": int(t.stats()["stored_bytes"])})
            finally:
                shutil.rmtree(wd, ignore_errors=True)
    writer.PACK_LARGE_BELOW = large
    out["runs"][str(n)] = res
    f = lambda k: ", ".join(f"{x['append_s']:.2f}" for x in res[k])  # noqa: E731
    print(f"{a.variant} {n or 'real'}: before {f('before')} s ({res['before'][0]['stored_bytes']:,} B); "
          f"ladder {f('ladder')} s ({res['ladder'][0]['stored_bytes']:,} B)", flush=True)
if a.json:
    with open(a.json, "w") as fh:
        json.dump(out, fh, indent=1)
