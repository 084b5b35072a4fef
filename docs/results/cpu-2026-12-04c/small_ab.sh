#!/usr/bin/env bash
# Small dictionaries looked up by a permute (gm_finish_x512, 0877ee2) against the scalar lookups before it
# (d634963's host/_native.c), so_ab.py, 40 rounds: ML-1M's rating (its stripe tables of 3-5 ratings) in
# three tiers, and the bench's action (no dictionary: a control).
# bash docs/results/cpu-2026-12-04c/small_ab.sh WORKDIR
R=$(dirname "$0"); T=$(mktemp -d)
git show d634963:host/_native.c > "$T/before.c"
python "$R/so_ab.py" "$T/before.c" "$1" ml1m:-:rating ml1m+features:-:rating ml1m:hash_items+replay:rating bench:-:action --rounds 40
