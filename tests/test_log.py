"""The tier's metadata (host/log.py): commit records, checkpoints, the witness, rebuilding a version's
state; metadata that grows linearly with versions and opens that do not replay the whole history."""

import os

import pytest

from gpumat.core.errors import CorruptionError
from gpumat.host import log
from gpumat.host.store import LocalStore
from gpumat.host.tier import Tier
from test_tier import SCHEMA, Model, _flip, check_version, events



def test_checkpoints_bound_the_replay(tmp_path, monkeypatch):
    monkeypatch.setattr(log, "CHECKPOINT_EVERY", 8)
    t = Tier.create(tmp_path / "t", SCHEMA, block_size=8)
    m = Model()
    for i in range(30):
        tab = events(i, 7, users=5)
        t.append(tab)
        m.append(tab)
    store = LocalStore(t.uri)
    assert log.checkpoint_versions(store) == [8, 16, 24]
    reads = []
    real = log.read_record
    monkeypatch.setattr(log, "read_record", lambda s, v: reads.append(v) or real(s, v))
    for v in (30, 24, 17, 3):
        reads.clear()
        check_version(Tier.open(t.uri, version=v) if v != 30 else Tier.open(t.uri), m, v, users=range(5))
        start = max([c for c in (0, 8, 16, 24) if c <= v])
        assert sorted(set(reads)) == list(range(start + 1 if start else 0, v + 1)), (v, reads)
    # runs stay few: a binary counter of run sizes
    assert len(log.read_checkpoint_header(store, 24)["runs"]) <= 3


def test_metadata_grows_linearly(tmp_path, monkeypatch):
    monkeypatch.setattr(log, "CHECKPOINT_EVERY", 16)
    t = Tier.create(tmp_path / "t", SCHEMA)  # small segments merge (the default policy): live files stay few

    def meta():
        return sum(os.path.getsize(os.path.join(d, f)) for sub in ("_checkpoints", "_runs")
                   for d, _, fs in os.walk(os.path.join(t.uri, sub)) for f in fs)

    sizes = {}
    for i in range(1, 161):
        t.append(events(i, 3, users=20))
        if i in (40, 160):
            sizes[i] = meta()
    # checkpoints list live files and runs, never every version: 4x the versions, well under 16x the bytes
    assert sizes[160] < 8 * sizes[40], sizes


def test_the_witness_names_the_newest_version(tmp_path):
    t = Tier.create(tmp_path / "t", SCHEMA)
    store = LocalStore(t.uri)
    assert log.read_witness(store) == 0
    t.append(events(0, 5))
    assert log.read_witness(store) == 1 == log.latest_version(store)
    # a damaged witness is ignored (the log decides), never trusted
    _flip(os.path.join(t.uri, "_lock"), 9)
    assert log.read_witness(store) is None and log.latest_version(store) == 1
    os.unlink(os.path.join(t.uri, "_lock"))
    assert log.latest_version(store) == 1 and Tier.open(t.uri).append(events(1, 5)) == 2


def test_damaged_or_missing_newest_record_is_corruption_never_a_rollback(tmp_path):
    t = Tier.create(tmp_path / "t", SCHEMA)
    for i in range(3):
        t.append(events(i, 10))
    rec = os.path.join(t.uri, "_log", f"{3:020d}.rec")
    _flip(rec, os.path.getsize(rec) // 2)
    with pytest.raises(CorruptionError, match="version 3"):
        Tier.open(t.uri)
    os.unlink(rec)
    with pytest.raises(CorruptionError, match="version 3"):
        Tier.open(t.uri)
    with pytest.raises(CorruptionError, match="repair"):
        t.append(events(9, 1))  # the writer that made version 3: it must not write over the loss either
    assert Tier.open(t.uri, version=2).version == 2  # older versions still open
    assert sorted(os.listdir(os.path.join(t.uri, "_log"))) == [f"{v:020d}.rec" for v in range(3)]


def test_records_are_verified(tmp_path):
    t = Tier.create(tmp_path / "t", SCHEMA)
    t.append(events(0, 10))
    store = LocalStore(t.uri)
    h, rows, at = log.read_record(store, 1)
    assert h["op"] == "append" and h["version"] == 1 and h["parent"] == 0 and rows[0].size > 0
    assert h["add"][0]["path"] is None  # a small append's data is inline
    data = open(os.path.join(t.uri, "_log", f"{1:020d}.rec"), "rb").read()
    for cut in (len(data) - 1, 40, 8):
        with open(os.path.join(t.uri, "_log", f"{1:020d}.rec"), "wb") as f:
            f.write(data[:cut])
        with pytest.raises(CorruptionError):
            log.read_record(store, 1)
