"""``python docs/results/cpu-2026-12-03i/before_run.py SCRIPT ARGS``: a profiling script with the writer as before larger packs (``writer.PACK_LARGE_BELOW`` 0)."""
import runpy, sys
from gpumat.host import writer
writer.PACK_LARGE_BELOW = 0  # the ladder's second step never packs: the writer as before
script = sys.argv[1]; sys.argv = [script] + sys.argv[2:]
sys.path.insert(0, "profiling"); runpy.run_path(script, run_name="__main__")
