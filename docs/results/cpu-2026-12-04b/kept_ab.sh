# python's CPU ms of whole-column reads with the reader before (416cb71) and after (bf0496d) kept
# dictionaries were packed, alternated three times: bash docs/results/cpu-2026-12-04b/kept_ab.sh
set -e
for i in 1 2 3; do
  for c in 416cb71 bf0496d; do
    git checkout -q $c -- host/reader.py host/segment.py
    echo "$c $(python docs/results/cpu-2026-12-04b/kept_ab.py) $(python docs/results/cpu-2026-12-04b/kept_dicts.py)"
  done
done
git checkout -q HEAD -- host/reader.py host/segment.py
