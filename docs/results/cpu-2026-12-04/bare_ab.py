"""short_histories.py with BARE LEVELS blocks off (``--before``) or on: the same variants and lengths,
for an A/B of stored bytes. Usage: python bare_ab.py [--before] -- SHORT_HISTORIES_ARGS..."""
import sys

sys.path.insert(0, "profiling")
from gpumat.host import pages  # noqa: E402

args = sys.argv[1:]
if args and args[0] == "--before":
    pages.BARE_LEVELS = False
    args = args[1:]
if args and args[0] == "--":
    args = args[1:]
import short_histories  # noqa: E402

short_histories.main(args)
