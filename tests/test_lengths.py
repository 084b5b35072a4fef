"""The length history (host/lengths.py) against a plain dict per version, extended version by
version as a handle does it, and its stored rows."""

import numpy as np
import pytest

from gpumat.core.errors import CorruptionError
from gpumat.host.lengths import LayeredLengths, LengthHistory, decode_rows, encode_rows


def _random_history(seed, versions=12, users=30):
    """Rows as appends write them: at each version, new (larger) lengths for a random set of users."""
    rng = np.random.default_rng(seed)
    cur, snaps, rows = {}, [{}], []
    for v in range(1, versions + 1):
        if rng.random() < 0.2:  # a compaction: no rows
            snaps.append(dict(cur))
            continue
        for u in rng.choice(np.arange(-5, users), int(rng.integers(0, 8)), replace=False).tolist():
            cur[u] = cur.get(u, 0) + int(rng.integers(1, 100))
            rows.append((u, v, cur[u]))
        snaps.append(dict(cur))
    perm = rng.permutation(len(rows))  # files may hold rows in any order
    arr = np.array([rows[i] for i in perm], np.int64).reshape(-1, 3)
    return LengthHistory(arr[:, 0], arr[:, 1], arr[:, 2], where="test"), snaps


@pytest.mark.parametrize("seed", range(4))
def test_against_snapshots(seed):
    L, snaps = _random_history(seed)
    users = np.arange(-7, 33)
    for v, snap in enumerate(snaps):
        assert L.at(users, np.full(users.size, v)).tolist() == [snap.get(int(u), 0) for u in users]
        assert L.live_users(v).tolist() == sorted(snap)
    # versions beyond the last row answer like the last version
    assert L.at(users, np.full(users.size, 10**9)).tolist() == [snaps[-1].get(int(u), 0) for u in users]
    for u in users.tolist():
        lens = [s.get(u, 0) for s in snaps]
        assert L.of_user(u) == [(v, n) for v, n in enumerate(lens) if v and n != lens[v - 1]]
    added = L.events_per_version(len(snaps) - 1)
    totals = [sum(s.values()) for s in snaps]
    assert added.tolist() == [totals[0]] + [b - a for a, b in zip(totals, totals[1:])]
    assert L.events_per_version(2).tolist() == added[:3].tolist()


def test_empty_and_inconsistent():
    z = np.zeros(0, np.int64)
    L = LengthHistory(z, z, z, where="w")
    assert L.at(np.array([1, 2]), np.array([0, 5])).tolist() == [0, 0]
    assert L.of_user(1) == [] and L.events_per_version(2).tolist() == [0, 0, 0] and L.live_users(3).size == 0
    for u, v, n in (([1, 1], [1, 2], [5, 3]), ([1], [-1], [2]), ([1], [1], [-2])):
        with pytest.raises(CorruptionError, match="w: length history is inconsistent"):
            LengthHistory(np.array(u), np.array(v), np.array(n), where="w")


def test_rows_round_trip_and_damage():
    data = encode_rows([3, 1], [1, 1], [2, 5])
    assert [a.tolist() for a in decode_rows(data, "t")] == [[3, 1], [1, 1], [2, 5]]
    with pytest.raises(CorruptionError, match="t: length rows"):
        decode_rows(data[:-9], "t")


@pytest.mark.parametrize("seed", range(3))
def test_extend_version_by_version_equals_one_history(seed, monkeypatch):
    """A handle's history grows by ``extend`` across commits (a sorted base plus small parts, merged
    as they grow): at every step it answers exactly like a history built from all rows at once."""
    monkeypatch.setattr(LayeredLengths, "MERGE_MIN", 16)
    monkeypatch.setattr(LayeredLengths, "MAX_PARTS", 3)
    rng = np.random.default_rng(seed)
    z = np.zeros(0, np.int64)
    L = LengthHistory(z, z, z, where="t")
    rows, cur = [], {}
    users = np.arange(-4, 40)
    for v in range(1, 80):
        touched = rng.choice(users, int(rng.integers(0, 9)), replace=False)
        new = np.array([cur.get(int(u), 0) + int(rng.integers(1, 5)) for u in touched], np.int64)
        for u, n in zip(touched.tolist(), new.tolist()):
            cur[u] = n
            rows.append((u, v, n))
        L = L.extend(touched, v, new, where="t")
        ref = LengthHistory(*(np.array([r[i] for r in rows], np.int64) for i in range(3)), where="t") if rows else L
        for _ in range(LayeredLengths.READS_UNMERGED + 2):  # part by part, then merged (an epoch's reads)
            q = rng.integers(0, v + 2, users.size)
            assert L.at(users, q).tolist() == ref.at(users, q).tolist(), v
        assert len(L) == len(rows)
    assert L.of_user(3) == ref.of_user(3) and L.events_per_version(79).tolist() == ref.events_per_version(79).tolist()
    with pytest.raises(CorruptionError, match="arrive after"):
        L.extend(np.array([1]), 5, np.array([99]), where="t")
