#!/usr/bin/env bash
# What the dictionary lookups cost a read: a diagnostic build of this checkout's host/_native.c whose
# gm_finish adds 1 to each code instead of looking it up (its values wrong), as so_ab.py's "old" build,
# against the checkout's, on the bench's category (borrowed codes into a 212,106-entry table).
# bash docs/results/cpu-2026-12-04c/no_lookups.sh WORKDIR
R=$(dirname "$0"); T=$(mktemp -d)
python - "$T/no_lookups.c" <<'PY'
import sys
s = open("host/_native.c").read()
a = s.replace("o[i] = lo + (uint64_t)dict[o[i]];", "o[i] = o[i] + 1;").replace(
    "o[i] = lo + (uint64_t)dict[v < (uint64_t)D ? v : 0];", "o[i] = v + 1;")
assert a.count("o[i] = v + 1;") == 2 and "o[i] = o[i] + 1;" in a
open(sys.argv[1], "w").write(a)
PY
python "$R/so_ab.py" "$T/no_lookups.c" "$1" bench:-:category --rounds 60 --no-check
