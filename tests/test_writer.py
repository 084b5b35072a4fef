"""Writing versions (host/writer.py): stripe caps, data file cuts, when compaction has work, merging
small segments, the lock and its timeout."""

import os

import numpy as np
import pyarrow as pa

import gpumat.host.writer as writer
import pytest

from gpumat.core.errors import TierError
from gpumat.host.store import LocalStore
from gpumat.host.tier import Tier
from test_tier import SCHEMA, Model, check_version, events


def test_large_user_splits_into_capped_stripes(tmp_path, monkeypatch):
    monkeypatch.setattr(writer, "MAX_STRIPE", 64)
    monkeypatch.setattr(writer, "SEGMENT_EVENTS", 100)
    t = Tier.create(tmp_path / "t", SCHEMA, block_size=16)
    m = Model()
    for i in range(3):
        tab = events(i, 300, users=3)
        t.append(tab)
        m.append(tab)
    assert t.directory().count.max() <= 64
    assert t.compact() == 4
    m.compact()
    d = t.directory()
    assert d.count.max() <= 64 and t.stats()["segments"] > 1
    # compaction's stripes start at multiples of MAX_STRIPE: the fewest a history can take
    assert (d.start % 64 == 0).all() and len(d) == int(((t.lengths([0, 1, 2]) + 63) // 64).sum())
    for v in range(5):
        check_version(Tier.open(t.uri, version=v), m, v, users=range(3))


def _one_user(n, ts0=0):
    return pa.table({"user_id": np.full(n, 5), "ts": np.arange(ts0, ts0 + n), "item_id": np.arange(n),
                     "action": np.zeros(n, np.int32)})


def test_compaction_counts_stripes_and_files_not_appends(tmp_path, monkeypatch):
    monkeypatch.setattr(writer, "MAX_STRIPE", 64)
    t = Tier.create(tmp_path / "t", SCHEMA, block_size=16)
    assert t.compact() == 0  # empty
    t.append(_one_user(200))  # 64 + 64 + 64 + 8 from position 0: as few stripes as compaction would write
    assert len(t.directory()) == 4 and t.compact() == 1
    t.append(_one_user(10, 200))  # a fifth stripe where ceil(210 / 64) = 4 would do
    assert t.compact() == 3 and len(t.directory()) == 4 and t.compact() == 3
    assert t.read_history(5)["ts"].tolist() == list(range(210))
    # other users in their own files: one stripe each, but more files than compaction writes
    t.append(pa.table({"user_id": [1], "ts": [0], "item_id": [0], "action": [0]}))
    assert t.stats()["segments"] == 2 and t.compact() == 5 and t.stats()["segments"] == 1 and t.compact() == 5


def test_an_empty_append_writes_no_data(tmp_path):
    t = Tier.create(tmp_path / "t", SCHEMA)
    assert t.append(events(0, 0)) == 1
    assert os.listdir(os.path.join(t.uri, "_data")) == [] and t.stats()["segments"] == 0


def test_small_appends_merge_by_levels(tmp_path):
    """Size-tiered merging: more than 4 level-0 segments merge (with the append's events) into a
    level-1 one, more than 2 level-L into a level L+1 one; a large file between small ones keeps each
    user's merged stripes in position order. Every version reads back exactly."""
    policy = writer.CompactionPolicy(max_small_files=4, fan_in=2, small_file_bytes=3000)
    t = Tier.open(Tier.create(tmp_path / "t", SCHEMA, block_size=8).uri, auto_compact=policy)
    m = Model()
    sizes = [3, 5, 400, 2, 7, 1, 9, 3, 4, 2, 6, 300, 1, 1, 8, 2, 5] + [2] * 40  # 400/300: above small_file_bytes
    levels_seen = set()
    for i, n in enumerate(sizes):
        tab = events(i, n, users=6)
        t.append(tab)
        m.append(tab)
        small = [e for e in t._reader.state.files.values() if e["size"] < 3000]
        by = {}
        for e in small:
            by[e["level"]] = by.get(e["level"], 0) + 1
        levels_seen |= set(by)
        assert by.get(0, 0) <= 5 and all(n <= 3 for lv, n in by.items() if lv), by
    assert {0, 1, 2} <= levels_seen
    assert t.stats()["segments"] < 15
    for v in range(t.version + 1):
        check_version(Tier.open(t.uri, version=v), m, v, users=range(6))
    off = Tier.open(t.uri, auto_compact=False)
    n = off.stats()["segments"]
    for i in range(6):
        off.append(events(100 + i, 2, users=6))
    assert off.stats()["segments"] == n + 6


def test_writer_lock_times_out(tmp_path):
    t = Tier.create(tmp_path / "t", SCHEMA)
    store = LocalStore(t.uri)
    with writer.writer_lock(store, 5):
        other = Tier.open(t.uri, lock_timeout=0.2)
        with pytest.raises(TierError, match="lock_timeout"):
            other.append(events(0, 3))
    assert other.append(events(0, 3)) == 1


def test_writer_lock_is_exclusive(tmp_path):
    import fcntl

    t = Tier.create(tmp_path / "t", SCHEMA)
    with writer.writer_lock(LocalStore(t.uri), 1):
        fd = os.open(os.path.join(t.uri, "_lock"), os.O_RDWR)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                taken = False
            except BlockingIOError:
                taken = True
        finally:
            os.close(fd)
    assert taken
    with writer.writer_lock(LocalStore(t.uri), 1):  # released on exit
        pass
