#!/bin/bash
# cd_ab.sh "DATASET ARGS" TAG PAIRS OUT: profiling/cpu_decode.py --repeat 9 (tiers in /tmp/cpudec3) with the session
# start's code (40df8b3: a copy of its packages in /tmp/basepkg7, built as below; BASE=DIR another) and the installed
# head's, in alternating processes, PAIRS pairs; JSON and logs to OUT/TAG_{base,head}_i.*. The base copy:
#   git worktree add /tmp/basewt7 40df8b3 && mkdir -p /tmp/basepkg7 && cp -r /tmp/basewt7/gpumat /tmp/basepkg7/gpumat &&
#   cp -r /tmp/basewt7/kernels /tmp/basepkg7/gpumat/kernels && cp -r /tmp/basewt7/host /tmp/basepkg7/gpumat/host &&
#   gcc -shared -fPIC -O3 -std=c99 -fno-strict-aliasing -mpopcnt -DNDEBUG -fwrapv -I$(python -c 'import sysconfig; print(sysconfig.get_paths()["include"])') \
#       /tmp/basewt7/host/_native.c -o /tmp/basepkg7/gpumat/host/_native$(python -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
cd "$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"
for i in $(seq 1 $3); do
  PYTHONPATH=${BASE:-/tmp/basepkg7} python profiling/cpu_decode.py $1 --workdir /tmp/cpudec3 --part decode --repeat 9 --json $4/$2_base_$i.json > $4/$2_base_$i.log 2>&1
  python profiling/cpu_decode.py $1 --workdir /tmp/cpudec3 --part decode --repeat 9 --json $4/$2_head_$i.json > $4/$2_head_$i.log 2>&1
done
