"""The length history (host/lengths.py) against a plain dict per version, and its files."""

import os

import numpy as np
import pytest

from gpumat.core.errors import CorruptionError
from gpumat.host.lengths import LengthHistory, load_length_history, read_lengths_file, write_lengths_file


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


def test_files_round_trip_and_damage(tmp_path):
    root = str(tmp_path)
    os.makedirs(tmp_path / "_lengths")
    e1 = write_lengths_file(root, [3, 1], [1, 1], [2, 5])
    e2 = write_lengths_file(root, [3], [2], [9])
    assert e1["path"].startswith("_lengths/") and e1["path"] != e2["path"]
    assert [a.tolist() for a in read_lengths_file(root, e1)] == [[3, 1], [1, 1], [2, 5]]
    L = load_length_history(root, [e1, e2], 2, where="t")
    assert L.at(np.array([3, 3, 1]), np.array([1, 2, 2])).tolist() == [2, 9, 5]
    with pytest.raises(CorruptionError, match="later versions"):
        load_length_history(root, [e1, e2], 1, where="t")
    with pytest.raises(CorruptionError, match="size or checksum"):
        read_lengths_file(root, dict(e1, crc=e1["crc"] ^ 1))
    with pytest.raises(CorruptionError, match="cannot be read"):
        read_lengths_file(root, dict(e1, path="_lengths/missing.arrow"))
