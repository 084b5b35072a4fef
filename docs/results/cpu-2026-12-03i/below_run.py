"""``python docs/results/cpu-2026-12-03i/below_run.py N SCRIPT ARGS``: a profiling script with ``writer.PACK_LARGE_BELOW`` N (stripes under N events may join larger packs)."""
import runpy, sys
from gpumat.host import writer
writer.PACK_LARGE_BELOW = int(sys.argv[1])
script = sys.argv[2]; sys.argv = [script] + sys.argv[3:]
sys.path.insert(0, "profiling"); runpy.run_path(script, run_name="__main__")
