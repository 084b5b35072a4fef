#!/usr/bin/env bash
# A LEVELS / CLASSES block's levels taken by two loads and a shift (gm_bits128, ca42250)
# against gm_realign_one before it (488bfda's host/_native.c), so_ab.py, 60 rounds: the bench's ts (FOR / LFOR
# blocks, no levels: a control), ML-1M + features genre (borrowed codes over item_id's CLASSES blocks),
# ML-1M item_id (CLASSES), the bench's action (LEVELS), ML-1M ts (DELTA PATCH blocks).
# bash docs/results/cpu-2026-12-04c/levels_ab.sh WORKDIR
R=$(dirname "$0"); T=$(mktemp -d)
git show 488bfda:host/_native.c > "$T/before.c"
python "$R/so_ab.py" "$T/before.c" "$1" bench:-:ts ml1m+features:-:genre ml1m:-:item_id bench:-:action ml1m:-:ts --rounds 60
