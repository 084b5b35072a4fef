#!/usr/bin/env bash
# This session's C changes, each against the commit before it (both built from their host/_native.c), and
# the session's last C decoder against the first's, by c_ab.py (C only) on the columns each was made for
# and a control or two, on the tiers of the session before (their ML-1M item ids CLASSES blocks).
# bash docs/results/cpu-2026-12-04d/ab_session.sh WORKDIR
R=$(dirname "$0"); T=$(mktemp -d); W=$1
for c in 2710780 673db49 cf67eb1 fb88c9f 7a3af8a 9728c26; do git show $c:host/_native.c > $T/$c.c; done
ab() { python $R/c_ab.py $T/$1.c $W "${@:3}" --new $T/$2.c; }
echo "== 673db49 (plain values 16 a vector) against 2710780"
ab 2710780 673db49 bench:-:category bench:-:duration_ms bench:-:ts ml1m+features:-:rating ml1m+features:-:genre
echo "== cf67eb1 (CLASSES vectors in registers, levels by an inline pdep) against 673db49"
ab 673db49 cf67eb1 ml1m+features:-:genre ml1m:-:item_id bench:-:category
echo "== fb88c9f (codes proven below their dictionary by their largest) against cf67eb1"
ab cf67eb1 fb88c9f bench:-:category ml1m+features:-:genre ml1m:-:item_id
echo "== 7a3af8a (PATCH / RUN bitmaps by two loads) against fb88c9f"
ab fb88c9f 7a3af8a ml1m+features:-:genre bench:-:duration_ms ml1m:hash_items+replay:item_id
echo "== 9728c26 (unchecked lookups unrolled by 4) against 7a3af8a"
ab 7a3af8a 9728c26 bench:-:category ml1m+features:-:genre ml1m:-:item_id
echo "== 9728c26 (the session's last C decoder) against 2710780"
ab 2710780 9728c26 bench:-:category bench:-:ts bench:-:action bench:-:duration_ms bench:-:item_id \
    ml1m+features:-:genre ml1m+features:-:genres ml1m+features:-:item_id ml1m+features:-:rating ml1m:hash_items+replay:item_id
