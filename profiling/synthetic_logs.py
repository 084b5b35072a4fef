"""Event logs shaped like three public click logs, for ``profiling/short_histories.py --dataset FILE``.

MovieLens is the only real dataset this project may load at run time (its variants in
``short_histories.py`` change one column of it at a time). These logs are drawn whole, seeded, in
the shapes of datasets users train sequential recommenders on, with what decides a columnar
format's size: how skewed each column is, what follows what, and how long the histories are.

- ``sessions`` (YooChoose's, Diginetica's session logs): 150,000 sessions of 1-200 events
  (geometric, mean 5.5), items from 50,000 by a walk (70% of steps go to one of the item's 8
  Zipf-chosen successors: the paths many sessions share), timestamps in seconds, and a
  ``category`` of 300 that follows the item (skewed as the items are);
- ``taobao`` (Taobao's UserBehavior): 20,000 users of about 100 events (log-normal), items
  Zipf(1.15) over 400,000, a ``category`` of about 9,000 that follows the item, page view / cart /
  favourite / buy at 89.5 / 5.5 / 3 / 2%, seconds over nine days in bursts;
- ``hashed`` (a production log of hashed ids, KuaiRand's columns): 20,000 users of 3-5,000 events
  (log-normal), 64-bit hashed user, item and author ids (items Zipf(1.2) over 300,000, each with
  one of 50,000 authors), a click at 15%, a watch time (0 in 30% of events), milliseconds.

    python profiling/synthetic_logs.py sessions /tmp/sessions.parquet
    python profiling/short_histories.py --dataset /tmp/sessions.parquet --lengths 0
"""

from __future__ import annotations

import argparse

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def _bursts(rng, n_per: np.ndarray, gap_lo: int, gap_hi: int, long_p: float, long_lo: int, long_hi: int,
            start: np.ndarray) -> np.ndarray:
    """Each user's times: ``start`` plus the running sum of gaps, most in ``[gap_lo, gap_hi)``, a
    share ``long_p`` in ``[long_lo, long_hi)`` (a new session)."""
    n = int(n_per.sum())
    gaps = np.where(rng.random(n) < long_p, rng.integers(long_lo, long_hi, n), rng.integers(gap_lo, gap_hi, n))
    first = np.cumsum(n_per) - n_per
    run = np.cumsum(gaps)
    return np.repeat(start - np.r_[0, run[first[1:] - 1]], n_per) + run


def sessions(rng) -> pa.Table:
    S, items = 150_000, 50_000
    n_per = np.clip(rng.geometric(0.18, S), 1, 200)
    succ = rng.zipf(1.3, (items, 8)) % items
    item = np.empty(int(n_per.sum()), np.int64)
    at = 0
    for n in n_per.tolist():  # a walk: a step goes to a successor of the item (70%) or anywhere (Zipf)
        cur = int(rng.zipf(1.1) % items)
        for k in range(n):
            item[at + k] = cur + 1
            cur = int(succ[cur, rng.integers(0, 8)]) if rng.random() < 0.7 else int(rng.zipf(1.1) % items)
        at += n
    start = 1_396_000_000 + np.sort(rng.integers(0, 86_400 * 180, S))
    ts = _bursts(rng, n_per, 5, 300, 0.0, 0, 1, start)
    category = (np.arange(items + 1) * 2654435761 % 300)[item]
    return pa.table({"user_id": np.repeat(np.arange(1, S + 1, dtype=np.int64), n_per), "ts": ts,
                     "item_id": item, "category": category.astype(np.int64)})


def taobao(rng) -> pa.Table:
    U, items = 20_000, 400_000
    n_per = np.clip(rng.lognormal(4.3, 0.8, U).astype(np.int64), 5, 2000)
    N = int(n_per.sum())
    item = rng.permutation(items)[rng.zipf(1.15, N) % items].astype(np.int64) + 1
    category = (rng.zipf(1.3, items) % 9000).astype(np.int64)[item - 1]
    behavior = rng.choice(4, N, p=[0.895, 0.055, 0.03, 0.02]).astype(np.int32)
    ts = _bursts(rng, n_per, 1, 120, 0.1, 3600, 86_400, 1_511_539_200 + rng.integers(0, 86_400 * 4, U))
    uid = np.repeat(np.arange(U, dtype=np.int64) * 7919 % 1_000_003 + 1, n_per)
    return pa.table({"user_id": uid, "ts": ts, "item_id": item, "category": category, "behavior": behavior})


def hashed(rng) -> pa.Table:
    U, items, authors = 20_000, 300_000, 50_000
    n_per = np.clip(rng.lognormal(4.0, 1.0, U).astype(np.int64), 3, 5000)
    N = int(n_per.sum())
    hi = np.iinfo(np.int64)
    item_ids = rng.integers(hi.min, hi.max, items, dtype=np.int64)
    author_of = rng.integers(hi.min, hi.max, authors, dtype=np.int64)[rng.integers(0, authors, items)]
    pop = rng.zipf(1.2, N) % items
    watch = np.where(rng.random(N) < 0.7, rng.gamma(2.0, 8000, N), 0).astype(np.int64)
    ts = _bursts(rng, n_per, 2_000, 60_000, 0.05, 3_600_000, 86_400_000,
                 1_650_000_000_000 + rng.integers(0, 10**9, U))
    return pa.table({"user_id": np.repeat(rng.integers(1, 2**62, U), n_per), "ts": ts, "item_id": item_ids[pop],
                     "author_id": author_of[pop], "click": (rng.random(N) < 0.15).astype(np.int32), "watch_ms": watch})


KINDS = {"sessions": sessions, "taobao": taobao, "hashed": hashed}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("kind", choices=sorted(KINDS))
    ap.add_argument("out", help="the events Parquet file to write")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    t = KINDS[a.kind](np.random.default_rng(a.seed))
    pq.write_table(t, a.out)
    users = len(np.unique(t.column("user_id").to_numpy()))
    print(f"{a.out}: {a.kind}, {t.num_rows:,} events, {users:,} users, columns {', '.join(t.column_names)}")


if __name__ == "__main__":
    main()
