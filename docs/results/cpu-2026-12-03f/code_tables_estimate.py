"""What stripe tables of segment-dictionary codes (not of values) would store: ML-1M's item ids,
real users, as they are, as a listening history (``replay``) and as a listening history of large
ids (``hash_items+replay``); ``item_id``'s blobs and dictionaries in bytes.

The estimate encodes each user's codes into the column's segment dictionary (its distinct values,
sorted) as the column, with stripe tables weighed as the writer weighs them
(``pages.encode_column_parts``), less the dictionary of the codes, plus the values' own segment
dictionary. Run from the repository root: ``python docs/results/cpu-2026-12-03f/code_tables_estimate.py``.
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.getcwd(), "profiling"))
import short_histories as sh  # noqa: E402

from gpumat.host import pages  # noqa: E402

base = sh.load_events("ml1m")
print("variant, item_id bytes: tables of values (today) / no tables / tables of codes (estimate); stripes with a table")
for variant in ("real", "replay", "hash_items+replay"):
    ev = base if variant == "real" else sh.shape(base, variant.split("+"))
    u, it = ev.column("user_id").to_numpy(), ev.column("item_id").to_numpy()
    first = np.r_[0, np.flatnonzero(u[1:] != u[:-1]) + 1]
    sc = np.diff(np.r_[first, len(u)])
    _, codes = np.unique(it, return_inverse=True)
    today = pages.encode_column_parts(it, sc, 128)
    plain = pages.encode_column_parts(it, sc, 128, tables=False)
    coded = pages.encode_column_parts(codes.astype(np.int64), sc, 128)
    est = len(coded[0]) - coded[4] + plain[4]
    print(f"{variant}: {len(today[0]):,} / {len(plain[0]):,} / {est:,}; {int((today[5] > 0).sum())} / {int((coded[5] > 0).sum())}")
