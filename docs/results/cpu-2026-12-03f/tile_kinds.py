"""The tiles of a batch planned as profiling/static_real.py plans its short one (2,048 users at max_len
256), counted by each column's block kind (its aux word's low 6 bits; -1: a plain block).
Usage, from the repository root: python docs/results/cpu-2026-12-03f/tile_kinds.py DATASET COLUMNS."""
import sys, collections, numpy as np
sys.path.insert(0, 'profiling')
import cpu_decode, static_real
from gpumat.core.staged import AUX_FLAG
tier = cpu_decode.load("/tmp/gpumat_static_real", 1.0, sys.argv[1])[0]
cols = sys.argv[2].split(",")
s = static_real.planned(tier, 256, 2048, columns=cols)
blk = np.asarray(s.tile_block)
for n, c, _ in s.passes():
    h = np.asarray(c.hdr); w = np.asarray(c.words)
    meta = h[blk, 2]
    aux = (meta & AUX_FLAG) != 0
    a = (meta >> 8) - 1
    aw = np.where(aux, w[np.clip(a, 0, len(w) - 1)] & 63, -1)
    cnt = collections.Counter(aw.tolist())
    print(n, c.dtype, "tiles by aux word kind (-1 plain):", dict(sorted(cnt.items())), "max width", int((meta & 127).max()))
