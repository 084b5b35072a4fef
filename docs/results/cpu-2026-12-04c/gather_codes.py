"""gather_bench.c's inputs: the bench's item_id codes of its DICT stripes (their values' places in item_id's segment
dictionary) and category's table per code, int64, to DIR/codes.bin and DIR/cdict.bin.
    python docs/results/cpu-2026-12-04c/gather_codes.py TIER_DIR DIR"""
import sys
import numpy as np
from gpumat.host import codec
from gpumat.host.tier import Tier

r = Tier.open(sys.argv[1])._reader
d = r.directory()
si = np.arange(len(d))
enc = r._dir_cols["item_id"][2][si]
isd = (enc & codec.ENC_DICT) != 0
items = r._dictionaries("item_id", d.seg[si], enc, isd, with_key=False)[0]
table = r._dictionaries("category", d.seg[si], r._dir_cols["category"][2][si], isd, with_key=False)[0]
codes = np.searchsorted(items, r.decode_stripes("item_id", si[isd]))
codes.astype(np.int64).tofile(f"{sys.argv[2]}/codes.bin")
np.asarray(table, np.int64).tofile(f"{sys.argv[2]}/cdict.bin")
print(len(codes), "codes,", len(table), "table entries")
