"""Writing versions' data files (host/writer.py): stripe caps, segment cuts, when compaction has work."""

import os

import numpy as np
import pyarrow as pa

import gpumat.host.writer as writer
from gpumat.host.manifest import read_manifest
from gpumat.host.reader import VersionReader
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
    assert d.count.max() <= 64 and len(t._manifest["segments"]) > 1
    # compaction's stripes start at multiples of MAX_STRIPE: the fewest a history can take
    assert (d.start % 64 == 0).all() and len(d) == int(((t.lengths([0, 1, 2]) + 63) // 64).sum())
    for v in range(5):
        check_version(Tier.open(t.uri, version=v), m, v, users=range(3))


def _one_user(n, ts0=0):
    return pa.table({"user_id": np.full(n, 5), "ts": np.arange(ts0, ts0 + n), "item_id": np.arange(n),
                     "action": np.zeros(n, np.int32)})


def test_compactable_counts_stripes_not_appends(tmp_path, monkeypatch):
    monkeypatch.setattr(writer, "MAX_STRIPE", 64)
    t = Tier.create(tmp_path / "t", SCHEMA, block_size=16)
    reader = lambda: VersionReader(t.uri, read_manifest(t.uri, t.version))  # noqa: E731
    assert not writer.compactable(reader())  # empty
    t.append(_one_user(200))  # 64 + 64 + 64 + 8 from position 0: as few stripes as compaction would write
    assert len(t.directory()) == 4 and not writer.compactable(reader())
    assert t.compact() == 1
    t.append(_one_user(10, 200))  # a fifth stripe where ceil(210 / 64) = 4 would do
    assert writer.compactable(reader())
    assert t.compact() == 3 and len(t.directory()) == 4 and not writer.compactable(reader())
    assert t.read_history(5)["ts"].tolist() == list(range(210))


def test_append_files_write_nothing_for_no_events(tmp_path):
    t = Tier.create(tmp_path / "t", SCHEMA)
    r = VersionReader(t.uri, read_manifest(t.uri, 0))
    empty = {"user_id": np.zeros(0, np.int64), **{c: np.zeros(0, np.int64) for c in SCHEMA}}
    assert writer.append_files(r, empty) == ([], [])
    assert os.listdir(os.path.join(t.uri, "_segments")) == os.listdir(os.path.join(t.uri, "_lengths")) == []


def test_writer_lock_is_exclusive(tmp_path):
    import fcntl

    t = Tier.create(tmp_path / "t", SCHEMA)
    with writer.writer_lock(t.uri):
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
    with writer.writer_lock(t.uri):  # released on exit
        pass
