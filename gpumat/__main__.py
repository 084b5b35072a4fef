"""``python -m gpumat``: the same command line as ``gpumat``."""

import sys

from gpumat.cli import main

sys.exit(main())
