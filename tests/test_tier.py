"""The tier facade (host/tier.py) end to end: versions, lengths, compaction, inspection, errors, crashes,
corruption. Each job's own module has its own tests (test_log, test_lengths, test_events, test_reader,
test_writer, test_store, test_maintenance); the helpers here (``events``, ``Model``, ``check_version``) are shared with them."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gpumat.core.errors import CorruptionError, GpumatError, SchemaError, TierError
from gpumat.host import codec
from gpumat.host.ranges import ranges
from gpumat.host.tier import Tier

SCHEMA = {"ts": "int64", "item_id": "int64", "action": "int32"}
I64 = np.iinfo(np.int64)


def events(seed, n, users=20):
    rng = np.random.default_rng(seed)
    return pa.table(
        {
            "user_id": rng.integers(0, users, n),
            "ts": np.sort(rng.integers(0, 10**12, n)),
            "item_id": rng.integers(I64.min, I64.max, n, endpoint=True) if seed % 2 else rng.integers(0, 1000, n),
            "action": rng.integers(-(2**31), 2**31, n).astype(np.int32),
        }
    )


class Model:
    """The obviously-right twin: per version, each user's history as Python lists."""

    def __init__(self):
        self.versions = [{}]

    def append(self, table):
        h = {u: {c: list(v) for c, v in cols.items()} for u, cols in self.versions[-1].items()}
        d = table.to_pydict()
        for i, u in enumerate(d["user_id"]):
            row = h.setdefault(u, {c: [] for c in SCHEMA})
            for c in SCHEMA:
                row[c].append(d[c][i])
        self.versions.append(h)

    def compact(self):
        self.versions.append(self.versions[-1])

    def history(self, u, v, column):
        return self.versions[v].get(u, {column: []})[column]

    def length(self, u, v):
        return len(self.history(u, v, "ts"))


def check_version(tier, model, v, users=range(-1, 25)):
    want = model.versions[v]
    lens = tier.lengths(np.array(list(users)), version=v)
    for u, n in zip(users, lens):
        assert n == len(want.get(u, {"ts": []})["ts"]), (u, v)
        h = tier.read_history(u, version=v)
        for c in SCHEMA:
            assert h[c].dtype == np.dtype(SCHEMA[c])
            assert h[c].tolist() == want.get(u, {c: []})[c], (u, v, c)


@pytest.fixture
def tier_model(tmp_path):
    t = Tier.create(tmp_path / "t", SCHEMA, block_size=8)
    m = Model()
    for i in range(3):
        tab = events(i, 150)
        t.append(tab)
        m.append(tab)
    return t, m


def test_versions_lengths_and_pins(tier_model):
    t, m = tier_model
    assert t.version == 3 and t.schema == {"ts": "int64", "action": "int32", "item_id": "int64"}
    for v in range(4):
        check_version(t, m, v)
        p = Tier.open(t.uri, version=v)
        assert p.version == v
        check_version(p, m, v)
        with pytest.raises(TierError):
            p.append(events(9, 5))
        with pytest.raises(TierError):
            p.compact()
        with pytest.raises(TierError):
            p.lengths([1], version=v + 1)
    assert t.lengths([1, 2], version=0).tolist() == [0, 0]
    assert t.lengths([]).shape == (0,) and t.lengths(np.array([[1]])).shape == (1, 1)
    assert t.lengths(pa.array([1], pa.int32())).tolist() == [len(m.versions[3][1]["ts"])]
    with pytest.raises(SchemaError):
        t.lengths([1.5])
    us = np.array([0, 1, 2, 3, 99])
    vs = np.array([0, 1, 2, 3, 3])
    assert t.length_at(us, vs).tolist() == [len(m.versions[v].get(u, {"ts": []})["ts"]) for u, v in zip(us, vs)]
    # an empty table commits a version with no new events
    assert t.append(events(5, 0)) == 4
    m.append(events(5, 0))
    check_version(t, m, 4)


def test_compaction_is_invisible(tier_model):
    t, m = tier_model
    d0 = t.directory()
    before = {u: t.read_history(u) for u in range(20)}
    assert t.compact() == 4
    m.compact()
    d1 = t.directory()
    assert len(d1) < len(d0) and len(d1) == len(np.unique(d1.user_id))
    for v in range(5):
        check_version(t, m, v)
        check_version(Tier.open(t.uri, version=v), m, v)
    for u in range(20):
        for c in SCHEMA:
            assert np.array_equal(before[u][c], t.read_history(u)[c])
    # read_blocks: the same decoded windows before and after (block-aligned ranges of each user)
    old = Tier.open(t.uri, version=3)
    for u in range(0, 20, 3):
        n = int(t.lengths([u])[0])
        got = {}
        for tt in (old, t):
            d = tt.directory()
            a, b = np.searchsorted(d.user_id, u), np.searchsorted(d.user_id, u, "right")
            si = np.arange(a, b)
            hdr, words, nbytes = tt.read_blocks("item_id", si, np.zeros(len(si), np.int64), d.nblocks[si])
            cnt, own = d.block_values(si, 8)  # (a stripe of a pack: its blocks hold its neighbours' events too)
            got[tt] = codec.decode_blocks(hdr, words, cnt)[own]
            assert words[-1] == 0 and nbytes >= len(hdr)  # a tag byte per block at least
        assert got[old].tolist() == got[t].tolist() == m.versions[3].get(u, {"item_id": []})["item_id"][:n]
    # appends after compaction
    tab = events(7, 100)
    t.append(tab)
    m.append(tab)
    assert t.compact() == 6
    m.compact()
    for v in (3, 4, 5, 6):
        check_version(Tier.open(t.uri, version=v), m, v)


def test_a_handle_keeps_the_open_files_of_its_current_version_only(tmp_path):
    """A handle that follows a tier through appends and compactions drops the data files (with their
    indexes, regions and dictionaries) that leave the version, whichever handle committed the
    change; what it reads stays right."""
    a = Tier.create(tmp_path / "t", SCHEMA)
    b = Tier.open(tmp_path / "t")
    m = Model()
    for i in range(12):
        tab = events(i, 300)
        a.append(tab)
        m.append(tab)
        for u in range(0, 20, 7):
            a.read_history(u)
        if i % 4 == 3:
            a.compact()
            m.compact()
        b.refresh()
        for h in (a, b):
            for u in range(20):
                h.read_history(u)
            assert set(h._segcache) <= set(h._reader.state.files), i
    check_version(a, m, a.version)
    assert len(a._segcache) == len(a._reader.state.files)


def test_stale_handles_append_on_top(tmp_path):
    a = Tier.create(tmp_path / "t", SCHEMA)
    b = Tier.open(tmp_path / "t")
    m = Model()
    for i in range(4):
        h = (a, b)[i % 2]
        tab = events(i, 50)
        assert h.append(tab) == i + 1 and h.version == i + 1
        m.append(tab)
    assert a.version == 3 and a.refresh() == 4
    check_version(a, m, 4)
    p = Tier.open(tmp_path / "t", version=2)
    assert p.refresh() == 2


def test_tier_errors(tmp_path):
    with pytest.raises(TierError):
        Tier.open(tmp_path / "none")
    t = Tier.create(tmp_path / "t", SCHEMA)
    with pytest.raises(TierError):
        Tier.create(tmp_path / "t", SCHEMA)
    (tmp_path / "f").write_text("x")
    with pytest.raises(TierError):
        Tier.create(tmp_path / "f", SCHEMA)
    for v in (-1, 1, 5):
        with pytest.raises(TierError):
            Tier.open(tmp_path / "t", version=v)
        with pytest.raises(TierError):
            t.lengths([1], version=v)
    for bad in ({}, {"item": "int64"}, {"ts": "int32"}, {"ts": "int64", "x": "float"}, {"ts": "int64", "user_id": "int64"}):
        with pytest.raises(SchemaError):
            Tier.create(tmp_path / "s", bad)
    assert issubclass(TierError, GpumatError)


def test_bad_events_commit_nothing(tmp_path):
    """The validation itself is test_events.py's; here: a rejected append commits and writes nothing."""
    t = Tier.create(tmp_path / "t", SCHEMA)
    ok = {"user_id": [1, 2], "ts": [1, 2], "item_id": [3, 4], "action": [5, 6]}
    for bad in ({k: v for k, v in ok.items() if k != "action"}, {**ok, "action": pa.array([0, 2**31], pa.int64())}):
        with pytest.raises(SchemaError):
            t.append(pa.table(bad))
    with pytest.raises(SchemaError):
        t.append({"user_id": [1]})
    with pytest.raises(SchemaError, match=r"events file '.*missing\.parquet' not found"):
        t.append(str(tmp_path / "missing.parquet"))
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(SchemaError, match="cannot read events file"):
        t.append(tmp_path / "junk.parquet")
    assert t.version == 0 and Tier.open(tmp_path / "t").version == 0
    assert os.listdir(tmp_path / "t" / "_data") == [] and os.listdir(tmp_path / "t" / "_log") == [f"{0:020d}.rec"]
    # other integer widths that fit are accepted; Parquet paths too
    good = pa.table({**ok, "item_id": pa.array([0, 2**63 - 1], pa.uint64()), "action": pa.array([-1, 7], pa.int8())})
    pq.write_table(good, tmp_path / "e.parquet")
    assert t.append(tmp_path / "e.parquet") == 1
    assert t.read_history(2)["item_id"].tolist() == [2**63 - 1]
    assert t.read_history(1)["action"].tolist() == [-1]


def _files(root):
    """Every file under a tier directory (relative paths), for "nothing was written" checks."""
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


def test_create_refuses_a_non_empty_directory_that_is_not_a_tier(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    (d / "notes.txt").write_text("x")
    with pytest.raises(TierError, match="not empty and holds no gpumat tier"):
        Tier.create(d, SCHEMA)
    assert os.listdir(d) == ["notes.txt"]  # nothing was created
    with pytest.raises(TierError):
        Tier.open(d)
    # a foreign subdirectory, or a tier's subdirectory with foreign content: refused as well
    (tmp_path / "d2" / "sub").mkdir(parents=True)
    (tmp_path / "d3" / "_data").mkdir(parents=True)
    (tmp_path / "d3" / "_data" / "x.gseg").write_bytes(b"")
    for p in (tmp_path / "d2", tmp_path / "d3"):
        with pytest.raises(TierError, match="not empty"):
            Tier.create(p, SCHEMA)
    # an empty existing directory is fine; so is a missing one, parents included
    (tmp_path / "empty").mkdir()
    assert Tier.create(tmp_path / "empty", SCHEMA).version == 0
    assert Tier.create(tmp_path / "a" / "b" / "c", SCHEMA).version == 0
    # the skeleton an interrupted create leaves behind (empty subdirectories, the lock, a temp file)
    sk = tmp_path / "skeleton"
    for sub in ("_log", "_checkpoints", "_data", "_runs", "_tmp"):
        (sk / sub).mkdir(parents=True)
    (sk / "_lock").write_bytes(b"")
    (sk / "_tmp" / "0123.tmp").write_bytes(b"{")
    assert Tier.create(sk, SCHEMA).version == 0 and Tier.open(sk).version == 0
    # an existing tier is still "a tier already exists"
    with pytest.raises(TierError, match="already exists"):
        Tier.create(tmp_path / "empty", SCHEMA)


def test_compact_with_nothing_to_compact_commits_nothing(tmp_path):
    uri = tmp_path / "t"
    t = Tier.create(uri, SCHEMA, block_size=8)
    m = Model()
    before = _files(uri)
    assert t.compact() == 0 and t.version == 0  # empty tier
    assert _files(uri) == before and Tier.open(uri).version == 0
    tab = events(0, 100)
    t.append(tab)
    m.append(tab)
    assert t.append(events(1, 0)) == 2  # an empty append adds no stripe
    m.append(events(1, 0))
    before = _files(uri)
    assert t.compact() == 2  # one append: every user's history is one stripe already
    assert _files(uri) == before and Tier.open(uri).version == 2
    tab = events(2, 100)
    t.append(tab)
    m.append(tab)
    stale = Tier.open(uri)
    assert t.compact() == 4
    m.compact()
    before = _files(uri)
    assert t.compact() == 4 and _files(uri) == before
    # a handle behind the latest version catches up to it: nothing to compact there, so it stays
    assert stale.version == 3 and stale.compact() == 4 == stale.version and _files(uri) == before
    t.append(events(3, 10))
    m.append(events(3, 10))
    assert stale.compact() == 6 and t.refresh() == 6  # catches up to 5, where the new events are second stripes
    m.compact()
    for v in range(7):
        check_version(Tier.open(uri, version=v), m, v, users=range(0, 20, 3))
    assert [r["operation"] for r in t.versions()] == ["create", "append", "append", "append", "compact", "append", "compact"]


def test_versions_lists_every_committed_version(tmp_path):
    t0 = time.time()
    t = Tier.create(tmp_path / "t", SCHEMA)
    sizes = [30, 0, 12]
    for i, n in enumerate(sizes):
        t.append(events(i, n))
    t.compact()
    t.append(events(9, 5))
    rows = t.versions()
    assert [r["version"] for r in rows] == list(range(6))
    assert [r["operation"] for r in rows] == ["create", "append", "append", "append", "compact", "append"]
    assert [r["events"] for r in rows] == [0, 30, 0, 12, 0, 5]
    assert [r["total_events"] for r in rows] == [0, 30, 30, 42, 42, 47]
    assert all(set(r) == {"version", "operation", "events", "total_events", "committed_at"} for r in rows)
    at = [r["committed_at"] for r in rows]
    assert all(isinstance(x, float) for x in at) and at == sorted(at) and t0 - 1 <= at[0] and at[-1] <= time.time() + 1
    assert rows[-1]["total_events"] == t.stats()["events"] == int(t.lengths(np.arange(20)).sum())
    # a pinned handle sees the versions up to its own; the latest handle moves on with refresh
    assert Tier.open(tmp_path / "t", version=3).versions() == rows[:4]
    assert Tier.open(tmp_path / "t").versions() == rows
    # a damaged old record is corruption, not a silent gap
    _flip(os.path.join(t.uri, "_log", f"{2:020d}.rec"), 5, 0)
    with pytest.raises(CorruptionError):
        t.versions()


def test_user_lengths_over_versions(tmp_path):
    t = Tier.create(tmp_path / "t", SCHEMA)
    m = Model()
    for i in range(4):
        tab = events(i, 25, users=6)
        t.append(tab)
        m.append(tab)
    t.compact()
    m.compact()
    tab = events(4, 3, users=2)
    t.append(tab)
    m.append(tab)
    for u in range(8):
        lens = [len(m.versions[v].get(u, {"ts": []})["ts"]) for v in range(len(m.versions))]
        want = [(v, n) for v, n in enumerate(lens) if v and n != lens[v - 1]]
        assert t.user_lengths(u) == want, u
        assert all(isinstance(v, int) and isinstance(n, int) for v, n in t.user_lengths(u))
        assert Tier.open(t.uri, version=2).user_lengths(np.int64(u)) == [(v, n) for v, n in want if v <= 2]
    assert t.user_lengths(-(2**63)) == [] and t.user_lengths(99) == []
    for bad in (1.5, "1", None, 2**63, True):
        with pytest.raises(SchemaError):
            t.user_lengths(bad)


def _flip(path, byte, bit=0):
    with open(path, "r+b") as f:
        f.seek(byte)
        b = f.read(1)[0]
        f.seek(byte)
        f.write(bytes([b ^ (1 << bit)]))


def _read_everything(uri, model):
    """Open fresh handles and read every version; return True if all data is correct."""
    t = Tier.open(uri)
    for v in range(t.version + 1):
        check_version(Tier.open(uri, version=v), model, v, users=range(0, 20))
    return True


def test_bit_flips_are_detected(tmp_path):
    t = Tier.create(tmp_path / "t", SCHEMA, block_size=8)
    m = Model()
    for i in range(2):
        tab = events(i, 80, users=6)
        t.append(tab)
        m.append(tab)
    t.compact()
    m.compact()
    root = t.uri
    files = []
    for sub in ("_log", "_data", "_checkpoints", "_runs"):
        for name in sorted(os.listdir(os.path.join(root, sub))):
            files.append(os.path.join(root, sub, name))
    assert any("_log" in f for f in files) and any("_data" in f for f in files)
    rng = np.random.default_rng(0)
    detected = 0
    for path in files:
        size = os.path.getsize(path)
        # every byte of the trailer region, and random bytes elsewhere
        positions = set(range(max(0, size - 40), size)) | set(rng.integers(0, size, 15).tolist())
        for byte in sorted(positions):
            bit = int(rng.integers(0, 8))
            _flip(path, byte, bit)
            try:
                _read_everything(root, m)
            except CorruptionError:
                detected += 1
            finally:
                _flip(path, byte, bit)
    assert detected > 0
    _read_everything(root, m)
    # a missing data file is corruption too
    seg = [f for f in files if "_data" in f][0]
    os.rename(seg, seg + ".x")
    with pytest.raises(CorruptionError):
        Tier.open(root).read_history(1)
    os.rename(seg + ".x", seg)
    # a corrupt latest record fails open()
    latest = [f for f in files if "_log" in f][-1]
    _flip(latest, 10, 1)
    with pytest.raises(CorruptionError):
        Tier.open(root)


CHILD = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {tests!r})
    from test_tier import events
    from gpumat.host.tier import Tier
    t = Tier.open({uri!r})
    print("ready", flush=True)
    while t.version < 40:
        v = t.version
        t.compact() if v % 3 == 2 else t.append(events(100 + v, 20000))
    """
)


def model_for(v_max):
    m = Model()
    for v in range(v_max):
        if v % 3 == 2:
            m.compact()
        else:
            m.append(events(100 + v, 20000))
    return m


def test_sigkill_mid_write_leaves_a_readable_tier(tmp_path):
    uri = str(tmp_path / "t")
    Tier.create(uri, SCHEMA)
    code = CHILD.format(tests=os.path.dirname(__file__), uri=uri)
    rng = np.random.default_rng(0)
    seen = []
    # kill at different moments: the child commits an append every ~10 ms and a compaction every third version
    for delay in (0.01, 0.05, 0.12, 0.25, 0.4):
        p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
        assert p.stdout.readline().strip() == b"ready"
        # Each writer commits at least once before its kill (a loaded machine may give it no CPU in
        # the first fraction of a second), then dies at a random moment of a later write.
        before, deadline = (seen[-1] if seen else 0), time.monotonic() + 60
        while Tier.open(uri).version <= before and time.monotonic() < deadline and p.poll() is None:
            time.sleep(0.005)
        time.sleep(delay * float(rng.uniform(0.7, 1.3)))
        p.send_signal(signal.SIGKILL)
        p.wait()
        p.stdout.close()
        t = Tier.open(uri)
        seen.append(t.version)
        m = model_for(t.version)
        users = range(0, 20, 7)
        for v in {t.version, max(0, t.version - 1)}:
            check_version(Tier.open(uri, version=v), m, v, users=users)
    assert seen == sorted(seen) and seen[-1] >= len(seen), seen
    # the killed writers' lock is gone: a new write goes through
    t = Tier.open(uri)
    t.append(events(1, 10))
