"""A rough upper bound for a DELTA block kind of `ts` (not in the format): per 128-value block, the
differences of consecutive values (0 at each block's first position, whose absolute value would be
a field of its own) encoded by the writer's own encoder (``host.pages.encode_stripes``: FOR, LFOR,
PATCH, RUN per block), plus 5 bytes per block for that absolute start, against the tier's `ts`
(rung F3) and the tuned store-once Parquet file's, per dataset.

    python profiling/delta_ts_estimate.py [bench] [ml1m] [ml100k]

Random access to such a block needs prefix sums on the GPU (a warp scan) and per-group partial
sums in the block's aux word; this only measures whether the bytes would pay.
"""

from __future__ import annotations

import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import format_study as fs  # noqa: E402

from gpumat.host import pages  # noqa: E402


def estimate(name: str, bs: int = 128, start_bytes: int = 5) -> dict:
    ds = fs.load_dataset(name, tempfile.mkdtemp(prefix=f"gpumat-delta-{name}-"))
    v, sc, seg = ds["values"]["ts"], ds["sc"], ds["seg"]
    n = len(v)
    pos = np.arange(n) - np.repeat(np.cumsum(sc) - sc, sc)
    first = pos % bs == 0
    d = np.empty_like(v)
    d[0] = 0
    d[1:] = v[1:] - v[:-1]
    d[first] = 0
    f3 = delta = 0
    for s in np.unique(seg):
        m = np.repeat(seg == s, sc)
        f3 += len(pages.encode_stripes(v[m], sc[seg == s], bs)[0])
        delta += len(pages.encode_stripes(d[m], sc[seg == s], bs)[0]) + start_bytes * int(first[m].sum())
    return {"events": n, "f3": f3 / n, "delta": delta / n, "parquet": ds["parquet_cols"]["ts"] / n}


if __name__ == "__main__":
    for name in sys.argv[1:] or ["bench", "ml1m", "ml100k"]:
        r = estimate(name)
        print(f"{name}: ts B/event: tier (F3) {r['f3']:.3f}, delta in blocks (rough) {r['delta']:.3f}, "
              f"store-once Parquet {r['parquet']:.3f} ({r['events']:,} events)", flush=True)
