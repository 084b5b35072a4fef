"""Would keeping every stripe table decoded speed up a whole-column read? A paired A/B in one process.

    python docs/results/cpu-2026-12-04e/keep_tables.py TIER [COLUMN] [ROUNDS]

Two readers of the same tier: one opened with ``TABLES_KEPT_BYTES`` and ``TABLE_KEPT_ENTRIES`` past
any table (every table kept once read, decoded), one with the defaults (tables re-read and decoded
at every read, where a segment's tables take more than ``TABLES_KEPT_BYTES``). Both decode the
column whole (``decode_stripes``), alternated round by round; the results are checked equal.
TIER: e.g. ``profiling/cpu_decode.py --dataset ml1m --variant hash_items+replay``'s tier.
"""

import sys
import time

import numpy as np

import gpumat.host.reader as R
from gpumat.host.tier import Tier


def main(path: str, column: str = "item_id", rounds: int = 25) -> None:
    R.TABLES_KEPT_BYTES, R.TABLE_KEPT_ENTRIES = 1 << 40, 1 << 40  # (read when a reader first sizes a column's tables)
    kept = Tier.open(path)
    si = np.arange(len(kept.directory()), dtype=np.int64)
    ref = kept._reader.decode_stripes(column, si)
    R.TABLES_KEPT_BYTES, R.TABLE_KEPT_ENTRIES = 4096, 64
    default = Tier.open(path)
    for r in (kept._reader, default._reader):
        if not np.array_equal(r.decode_stripes(column, si), ref):
            raise RuntimeError("the two readers disagree")
    ta, tb = [], []
    for _ in range(rounds):
        for r, ts in ((kept._reader, ta), (default._reader, tb)):
            t0 = time.perf_counter()
            r.decode_stripes(column, si)
            ts.append(time.perf_counter() - t0)
    keys, size, keep = default._reader._dsarr[column]
    print(f"{path} {column}: {len(keys)} dictionaries ({int(size.sum())} bytes stored), kept by default: "
          f"{int((keep > 0).sum())}; every table kept {np.median(ta) * 1e3:.2f} ms, default {np.median(tb) * 1e3:.2f} ms "
          f"a read: every table kept runs at {np.median(np.array(tb) / np.array(ta)):.2f}x the default's speed "
          "(the paired rounds' median)")


if __name__ == "__main__":
    main(sys.argv[1], *(sys.argv[2:3] or ["item_id"]), *(int(x) for x in sys.argv[3:4]))
