"""Run a profiling script with tables of codes on or off, in one process each (A/B of the same code):

    python docs/results/cpu-2026-12-03g/ab.py on|off SCRIPT [ARGS...]

from the repository root; ``off`` sets ``gpumat.host.pages.CODE_TABLES = False`` (the writer's
tables of values only: the encoder before tables of codes, byte for byte) before the script runs."""
import os
import runpy
import sys

from gpumat.host import pages

mode, script = sys.argv[1], sys.argv[2]
if mode not in ("on", "off"):
    raise SystemExit("usage: ab.py on|off SCRIPT [ARGS...]")
pages.CODE_TABLES = mode == "on"
sys.argv = [script, *sys.argv[3:]]
sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
runpy.run_path(script, run_name="__main__")
