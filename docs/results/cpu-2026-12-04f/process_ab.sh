#!/bin/bash
# process_ab.sh TIER COLUMN ROUNDS: decode_stripes(COLUMN) of every stripe of TIER, median CPU ms of
# 30 reads in a process, the base commit's code (a copy of its packages in /tmp/basepkg, built as
# below) and the installed one's in alternating processes, ROUNDS pairs; prints both medians and the
# paired median of head / base. The base copy:
#   git worktree add /tmp/basewt 3e66a53 && mkdir -p /tmp/basepkg && cp -r /tmp/basewt/gpumat /tmp/basepkg/gpumat &&
#   cp -r /tmp/basewt/kernels /tmp/basepkg/gpumat/kernels && cp -r /tmp/basewt/host /tmp/basepkg/gpumat/host &&
#   gcc -shared -fPIC -O3 -std=c99 -fno-strict-aliasing -mpopcnt -DNDEBUG -fwrapv -I$(python -c 'import sysconfig; print(sysconfig.get_paths()["include"])') \
#       /tmp/basewt/host/_native.c -o /tmp/basepkg/gpumat/host/_native$(python -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
HERE=$(cd "$(dirname "$0")" && pwd)
for i in $(seq 1 $3); do
  b=$(cd /tmp && PYTHONPATH=/tmp/basepkg python "$HERE/process_ab_one.py" $1 $2 30)
  h=$(cd /tmp && python "$HERE/process_ab_one.py" $1 $2 30)
  echo "$b $h"
done | python -c "
import sys, numpy as np
x = np.array([[float(v) for v in l.split()] for l in sys.stdin])
print('$2: base %.3f ms, head %.3f ms (medians of %d process pairs), head/base paired median %.3f' % (np.median(x[:,0]), np.median(x[:,1]), len(x), np.median(x[:,1]/x[:,0])))"
