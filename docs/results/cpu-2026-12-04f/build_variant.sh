#!/bin/bash
# build_variant.sh SRC NAME: a copy of the C decoder built as setup.py builds it, to /tmp/ab/NAME.so,
# for c_ab_tabled.py / c_ab_column.py (two builds' exported functions called alternately, one process)
mkdir -p /tmp/ab
gcc -shared -fPIC -O3 -std=c99 -fno-strict-aliasing -mpopcnt -DNDEBUG -fwrapv \
    -I"$(python -c 'import sysconfig; print(sysconfig.get_paths()["include"])')" "$1" -o /tmp/ab/$2.so
