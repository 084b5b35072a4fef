"""Run a profiling script with packs of up to N events (``writer.PACK_EVENTS``, and ``pack_flags``'
default, which holds it): ``python docs/results/cpu-2026-12-03h/packs_512_run.py N SCRIPT ARGS``
from the repository root (SCRIPT: profiling/short_histories.py, profiling/pack_affinity.py)."""
import runpy
import sys

from gpumat.host import writer

n = int(sys.argv[1])
writer.PACK_EVENTS = n
writer.pack_flags.__defaults__ = (n,)
script = sys.argv[2]
sys.argv = [script] + sys.argv[3:]
sys.path.insert(0, "profiling")
runpy.run_path(script, run_name="__main__")
