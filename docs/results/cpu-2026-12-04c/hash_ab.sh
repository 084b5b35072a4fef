#!/usr/bin/env bash
# The bench's ts read whole (its blobs in the tier's one large segment: every read verifies their
# 2,048-byte chunks) with the AVX-512 chunk checksums and without (GPUMAT_NO_AVX512=1; ts's FOR / LFOR
# blocks take no other AVX-512 path), processes alternated 8 times, 100 reads each; then chunk_hash
# alone on 2.6 MB. bash docs/results/cpu-2026-12-04c/hash_ab.sh TIER_DIR
R=$(dirname "$0")
for i in 1 2 3 4 5 6 7 8; do
  for e in 0 1; do echo -n "GPUMAT_NO_AVX512=$e "; GPUMAT_NO_AVX512=$e python "$R/read_loop.py" ts "$1" 100; done
done
for e in 0 1; do GPUMAT_NO_AVX512=$e python -c "
import time, numpy as np
from gpumat.host import segment
b = np.random.default_rng(0).integers(0, 256, 2_600_000).astype(np.uint8)
ts = []
for _ in range(300):
    t0 = time.perf_counter(); segment.chunk_hash(b, 2048, 0); ts.append(time.perf_counter() - t0)
print('GPUMAT_NO_AVX512=$e chunk_hash of 2.6 MB: %.3f ms (%.1f GB/s)' % (1e3 * np.median(ts), len(b) / np.median(ts) / 1e9))
"; done
