"""cProfile of 30 batch reads (read_blocks of 4096 shuffled stripes of the rating column) of ML-1M with a 4-kind
action type cut into histories of 40 events: the share of pages.bare_mids (the batch path's first walk of
BARE LEVELS blocks).  python docs/results/cpu-2026-12-04b/bare_batch_profile.py"""
import sys, time, cProfile, pstats, shutil
sys.path.insert(0, "profiling")
import numpy as np
import short_histories as sh
from gpumat.host.tier import Tier
from gpumat.host import segment
ev = sh.regroup(sh.shape(sh.load_events("ml1m"), ["action4"]), 40)
p = "/tmp/gpumat_bare_tier"
shutil.rmtree(p, ignore_errors=True)
t = Tier.create(p, {c: str(ev.schema.field(c).type) for c in ev.column_names if c != "user_id"})
t.append(ev)
t = Tier.open(p)
d = t.directory()
rng = np.random.default_rng(0)
si = rng.permutation(len(d))[:4096]
def rd():
    t.read_blocks("rating", si, np.zeros_like(si), d.nblocks[si])
for _ in range(3): rd()
pr = cProfile.Profile(); pr.enable()
for _ in range(30): rd()
pr.disable()
st = pstats.Stats(pr); st.sort_stats("cumtime").print_stats("bare_mids|read_blocks|stage_blocks|parse_fields")
