"""The writer's cost of weighing tables of codes: ML-1M's events shaped as a listening history of
large ids (``hash_items+replay``, as ``profiling/short_histories.py`` makes them), appended to a new
tier with tables of codes off and on, alternately, ``ROUNDS`` times each; the seconds of each append
and the tier's bytes. Run from the repository root:
``python docs/results/cpu-2026-12-03g/append_ab.py docs/results/cpu-2026-12-03g/append_ab.json``."""
import json
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.getcwd(), "profiling"))
import short_histories as sh  # noqa: E402

from gpumat.host import pages  # noqa: E402
from gpumat.host.tier import Tier  # noqa: E402

ROUNDS = 4
ev = sh.shape(sh.load_events("ml1m"), ["hash_items", "replay"])
schema = {c: str(ev.schema.field(c).type) for c in ev.column_names if c != "user_id"}
out = {"events": ev.num_rows, "off": [], "on": []}
for r in range(ROUNDS):
    for side in ("off", "on"):
        pages.CODE_TABLES = side == "on"
        d = tempfile.mkdtemp()
        try:
            t = Tier.create(os.path.join(d, "t"), schema)
            t0 = time.perf_counter()
            t.append(ev)
            dt = time.perf_counter() - t0
            size = sum(os.path.getsize(os.path.join(p, f)) for p, _, fs in os.walk(d) for f in fs)
        finally:
            shutil.rmtree(d)
        out[side].append({"append_s": dt, "bytes": size})
        print(side, f"{dt:.2f} s", f"{size:,} B", flush=True)
json.dump(out, open(sys.argv[1], "w"), indent=1)
