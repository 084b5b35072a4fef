"""Keeping a tier healthy (host/maintenance.py): vacuum and expiry, no version number ever reused
whatever file is lost, repair, upgrading format-1 tiers."""

import json
import os
import shutil
import time

import numpy as np
import pyarrow as pa
import pytest

import gpumat
from gpumat.core.errors import CorruptionError, PointerError, TierError
from gpumat.host.tier import Tier
from test_tier import SCHEMA, Model, check_version, events


def _size(root):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(root) for f in fs)


def _old(path, seconds=7200):
    t = time.time() - seconds
    os.utime(path, (t, t))


def test_vacuum_removes_superseded_files_and_debris_but_nothing_recent(tmp_path):
    t = Tier.create(tmp_path / "t", SCHEMA, block_size=8)
    m = Model()
    for i in range(4):
        tab = events(i, 2000, users=5)  # large enough for data files of their own
        t.append(tab)
        m.append(tab)
    t.compact()
    m.compact()
    debris = [os.path.join(t.uri, "_data", "0" * 32 + ".gseg"), os.path.join(t.uri, "_tmp", "x.tmp"),
              os.path.join(t.uri, "_runs", "1" * 32 + ".arrow")]
    for p in debris:
        open(p, "wb").write(b"x" * 100)
    fresh = os.path.join(t.uri, "_data", "2" * 32 + ".gseg")  # a running writer's file: too young to touch
    open(fresh, "wb").write(b"y")
    for p in debris:
        _old(p)
    r = t.vacuum()  # default min_age: every version is recent, so no version expires...
    assert r["expired_before"] == 0 and r["versions_retained"] == 6
    assert not any(os.path.exists(p) for p in debris) and os.path.exists(fresh)  # ...but old debris goes
    for v in range(6):
        check_version(Tier.open(t.uri, version=v), m, v, users=range(5))
    before = _size(t.uri)
    r = t.vacuum(min_age_s=0)  # now the compaction's superseded files go, and versions before it expire
    assert r["expired_before"] == 5 and r["files_removed"] >= 4 and r["bytes_freed"] > 0
    assert _size(t.uri) < before
    with pytest.raises(TierError, match="expired"):
        Tier.open(t.uri, version=4)
    # pointers into expired versions stay valid: lengths and materialize answer for them
    h = Tier.open(t.uri)
    assert h.lengths(list(range(5)), version=2).tolist() == [m.length(u, 2) for u in range(5)]
    ex = pa.table({"user_id": [1, 3], "version": [2, 3], "length": [m.length(1, 2), m.length(3, 3)],
                   "request_ts": [2**62, 2**62]})
    b = gpumat.materialize(h, ex, gpumat.Tenant("t", ["item_id"], 10**6), backend="reference")
    want = m.history(1, 2, "item_id") + m.history(3, 3, "item_id")
    assert b.values["item_id"].tolist() == want
    check_version(h, m, 5, users=range(5))
    assert [r["version"] for r in h.versions()] == [5]


def test_keep_last_expires_metadata_but_never_what_is_recent(tmp_path):
    t = Tier.create(tmp_path / "t", SCHEMA)
    m = Model()
    for i in range(10):
        tab = events(i, 30, users=4)
        t.append(tab)
        m.append(tab)
    r = t.vacuum(keep_last=3)  # every version is younger than min_age: nothing expires
    assert r["expired_before"] == 0 and Tier.open(t.uri, version=1).version == 1
    r = t.vacuum(keep_last=3, min_age_s=0)
    assert r["expired_before"] == 8 and r["versions_retained"] == 3
    for v in (0, 7):
        with pytest.raises(TierError, match="expired"):
            Tier.open(t.uri, version=v)
    for v in (8, 9, 10):
        check_version(Tier.open(t.uri, version=v), m, v, users=range(4))
    assert [x["version"] for x in Tier.open(t.uri).versions()] == [8, 9, 10]
    t.append(events(99, 5, users=4))  # numbering goes on
    assert t.version == 11
    with pytest.raises(gpumat.SchemaError):
        t.vacuum(keep_last=0)


def _fingerprint(uri, v):
    h = Tier.open(uri, version=v) if v != Tier.open(uri).version else Tier.open(uri)
    return {u: {c: a.tolist() for c, a in h.read_history(u).items()} for u in range(6)}


@pytest.mark.parametrize("kind", ["_log", "_checkpoints", "_data", "_runs", "_lock", "_expired"])
def test_losing_the_newest_file_of_any_kind_never_reuses_a_version(tmp_path, kind, monkeypatch):
    from gpumat.host import log, writer

    monkeypatch.setattr(log, "CHECKPOINT_EVERY", 4)
    monkeypatch.setattr(writer, "INLINE_BYTES", 20_000)  # the 3000-event appends get data files of their own
    src = Tier.create(tmp_path / "src", SCHEMA)
    for i in range(9):
        src.append(events(i, 3000 if i % 4 == 0 else 20, users=6))
    src.vacuum(keep_last=5, min_age_s=0)
    seen = {v: _fingerprint(src.uri, v) for v in range(5, 10)}
    d = shutil.copytree(src.uri, tmp_path / "c")
    files = [os.path.join(d, kind)] if kind in ("_lock", "_expired") else \
        sorted((os.path.join(d, kind, f) for f in os.listdir(os.path.join(d, kind))), key=os.path.getmtime)
    assert files and os.path.exists(files[-1]), kind
    os.unlink(files[-1])
    for attempt in range(2):  # whatever happens, a number that was committed keeps its content
        try:
            Tier.open(d).append(events(100 + attempt, 7, users=6))
        except (CorruptionError, TierError):
            pass
        for v, want in seen.items():
            try:
                got = _fingerprint(d, v)
            except (CorruptionError, TierError):
                continue
            assert got == want, (kind, v)


def test_repair_rolls_back_explicitly_and_never_reuses_the_lost_numbers(tmp_path, capsys):
    from gpumat.cli import main

    t = Tier.create(tmp_path / "t", SCHEMA)
    m = Model()
    for i in range(4):
        tab = events(i, 25, users=5)
        t.append(tab)
        m.append(tab)
    os.unlink(os.path.join(t.uri, "_log", f"{4:020d}.rec"))
    with pytest.raises(CorruptionError, match="version 4"):
        Tier.open(t.uri)
    r = Tier.repair(t.uri)
    assert not r["ok"] and r["latest"] == 4 and r["intact"] == 3 and "version 5" in r["action"]
    assert main(["repair", t.uri]) == 2 and "--roll-back" in capsys.readouterr().err  # nothing changed
    with pytest.raises(CorruptionError):
        Tier.open(t.uri)
    assert main(["repair", t.uri, "--roll-back"]) == 0
    h = Tier.open(t.uri)
    assert h.version == 5
    for u in range(5):  # version 5 holds version 3's histories
        assert h.read_history(u)["item_id"].tolist() == m.history(u, 3, "item_id")
    with pytest.raises(TierError, match="lost"):
        Tier.open(t.uri, version=4)
    # a pointer logged against lost version 4 beyond version 3's length: an error, not other events
    u = max(range(5), key=lambda u: m.length(u, 4) - m.length(u, 3))
    ex = pa.table({"user_id": [u], "version": [4], "length": [m.length(u, 4)], "request_ts": [2**62]})
    with pytest.raises(PointerError):
        gpumat.materialize(h, ex, gpumat.Tenant("t", ["item_id"], 100), backend="reference")
    assert h.append(events(50, 5, users=5)) == 6
    assert Tier.repair(t.uri)["ok"] and main(["repair", t.uri]) == 0


def _format1_tier(root, schema, appends):
    """A tier as release 0.1 wrote it: segments, length files and one sha256-suffixed JSON manifest per version."""
    import hashlib
    import uuid
    import zlib

    from gpumat.host import codec
    from gpumat.host.segment import encode_segment

    from gpumat.host.schema import check_schema

    schema = check_schema(schema)  # the column order segments are written in
    for d in ("_manifests", "_segments", "_lengths"):
        os.makedirs(os.path.join(root, d))
    segs, lens, hist = [], [], {}
    for v in range(len(appends) + 1):
        if v:
            tab = appends[v - 1]
            uid = tab.column("user_id").to_numpy()
            order = np.argsort(uid, kind="stable")
            users, first, per = np.unique(uid[order], return_index=True, return_counts=True)
            start = np.array([hist.get(int(u), 0) for u in users], np.int64)
            blobs = {c: codec.encode_stripes(tab.column(c).to_numpy().astype(np.int64)[order], per, 8) for c in schema}
            bufs, size, crc = encode_segment(list(schema), users, start, per, blobs)
            rel = f"_segments/{uuid.uuid4().hex}.gseg"
            open(os.path.join(root, rel), "wb").write(b"".join(bytes(memoryview(b).cast("B")) for b in bufs))
            segs.append({"path": rel, "size": size, "index_crc": crc})
            for u, k in zip(users.tolist(), per.tolist()):
                hist[u] = hist.get(u, 0) + k
            t = pa.table({"user_id": pa.array(users, pa.int64()), "version": pa.array(np.full(len(users), v), pa.int64()),
                          "length": pa.array([hist[u] for u in users.tolist()], pa.int64())})
            sink = pa.BufferOutputStream()
            with pa.ipc.new_file(sink, t.schema) as w:
                w.write_table(t)
            data = sink.getvalue().to_pybytes()
            rel = f"_lengths/{uuid.uuid4().hex}.arrow"
            open(os.path.join(root, rel), "wb").write(data)
            lens.append({"path": rel, "size": len(data), "crc": zlib.crc32(data) & 0xFFFFFFFF})
        m = {"format": "gpumat-tier", "format_version": 1, "version": v, "parent": v - 1 if v else None,
             "op": "append" if v else "create", "schema": schema, "block_size": 8, "segments": list(segs),
             "lengths": list(lens), "created_unix": 1.0 + v}
        body = json.dumps(m, sort_keys=True).encode()
        with open(os.path.join(root, "_manifests", f"{v:020d}.json"), "wb") as f:
            f.write(body + b"\nsha256:" + hashlib.sha256(body).hexdigest().encode() + b"\n")


def test_upgrade_a_format1_tier(tmp_path):
    from gpumat.cli import main

    root = str(tmp_path / "old")
    tabs = [events(i, 40, users=5) for i in range(3)]
    _format1_tier(root, SCHEMA, tabs)
    with pytest.raises(TierError, match="gpumat upgrade"):
        Tier.open(root)
    with pytest.raises(TierError, match="already exists"):
        Tier.create(root, SCHEMA)
    assert main(["upgrade", root]) == 0
    m = Model()
    for tab in tabs:
        m.append(tab)
    check_version(Tier.open(root, version=3), m, 3, users=range(6))  # format 2, the old files
    m.compact()
    h = Tier.open(root)  # version 4: the same histories rewritten in format 3
    check_version(h, m, 4, users=range(6))
    assert all(e.get("format") == 3 for e in h._reader.state.files.values())
    assert h.lengths([0, 1, 2], version=1).tolist() == [m.length(u, 1) for u in range(3)]  # old pointers keep working
    with pytest.raises(TierError, match="expired"):
        Tier.open(root, version=2)
    assert not os.path.exists(os.path.join(root, "_manifests")) or not os.listdir(os.path.join(root, "_manifests"))
    assert main(["upgrade", root]) == 0 and Tier.open(root).version == 4  # nothing left to rewrite
    assert h.append(events(9, 10, users=5)) == 5 and h.compact() == 6
    m.append(events(9, 10, users=5))
    m.compact()
    h.vacuum(keep_last=1, min_age_s=0)
    check_version(Tier.open(root), m, 6, users=range(6))
    assert os.listdir(os.path.join(root, "_segments")) == []
