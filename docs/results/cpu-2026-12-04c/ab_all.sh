#!/usr/bin/env bash
# Every paired A/B of this session, on cpu_decode.py's tiers in WORKDIR (built by its --workdir runs):
# bash docs/results/cpu-2026-12-04c/ab_all.sh WORKDIR > docs/results/cpu-2026-12-04c/ab_all.log 2>&1
R=$(dirname "$0"); W=$1
echo "== narrowed dictionaries (narrow_ab.py; ts: a control, no dictionary)"
python "$R/narrow_ab.py" "$W" bench:-:category bench:-:item_id bench:-:ts --rounds 48
CASES="bench:-:category bench:-:item_id bench:-:ts bench:-:duration_ms ml1m:-:rating ml1m:-:item_id ml1m+features:-:genre ml1m:hash_items+replay:item_id"
echo "== reader at 1a21c48 (blobs copied back to back; before the NumPy steps were cut) against this checkout (py_ab.py)"
python "$R/py_ab.py" 1a21c48 "$W" $CASES --rounds 40
echo "== reader at 5ce61af (blobs decoded where they lie; before the NumPy steps were cut) against this checkout"
python "$R/py_ab.py" 5ce61af "$W" $CASES --rounds 40
echo "== chunk checksums with and without AVX-512 (hash_ab.sh)"
bash "$R/hash_ab.sh" "$W/tier-1"
