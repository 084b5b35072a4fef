"""Reading one version (host/reader.py): the directory and its verification, blocks, thread safety."""

import numpy as np
import pytest

from gpumat.core.errors import CorruptionError, SchemaError
from gpumat.host import codec
import dataclasses

from gpumat.host.log import load_state
from gpumat.host.reader import VersionReader
from gpumat.host.store import LocalStore
from gpumat.host.tier import Tier
from test_tier import SCHEMA, events


def reader(tier, v, cache=None, **change):
    store = LocalStore(tier.uri)
    state = load_state(store, v)
    return VersionReader(store, dataclasses.replace(state, **change) if change else state, cache)


@pytest.fixture
def tier(tmp_path):
    t = Tier.create(tmp_path / "t", SCHEMA, block_size=8)
    for i in range(3):
        t.append(events(i, 60, users=5))
    return t


def test_directory_tiles_each_history(tier):
    r = reader(tier, 3)
    d = r.directory()
    assert d is r.directory()  # cached
    assert np.all(np.diff(d.user_id) >= 0)
    assert d.block0.tolist() == (np.cumsum(d.nblocks) - d.nblocks).tolist()
    # a stripe of a pack (short histories sharing blobs) starts at position skip % 8 of its first block
    assert d.nblocks.tolist() == ((d.skip % 8 + d.count + 7) // 8).tolist()
    assert (d.skip + d.count <= d.bcount).all()
    for u in range(5):
        si = d.user_stripes(u)
        assert d.start[si].tolist() == (np.cumsum(d.count[si]) - d.count[si]).tolist()
        n = int(r.length_history().at(np.array([u]), np.array([3]))[0])
        assert int(d.count[si].sum()) == n
        assert r.decode_stripes("item_id", si).tolist() == tier.read_history(u)["item_id"].tolist()
    assert d.user_stripes(99).size == 0
    off, nw, enc = r.blobs("ts")
    assert off.shape == nw.shape == enc.shape == (len(d),)


def test_read_blocks_bounds_and_columns(tier):
    r = reader(tier, 3)
    d = r.directory()
    with pytest.raises(SchemaError, match="unknown column"):
        r.read_blocks("nope", [0], [0], [1])
    for si, lo, hi in (([len(d)], [0], [1]), ([0], [-1], [1]), ([0], [1], [0]), ([0], [0], [int(d.nblocks[0]) + 1])):
        with pytest.raises(SchemaError, match="out of bounds"):
            r.read_blocks("ts", si, lo, hi)
    hdr, words, nbytes = r.read_blocks("ts", [], [], [])
    assert hdr.shape == (0, 3) and words.tolist() == [0] and nbytes == 0
    # any block range decodes to the right slice of the stripe
    i = int(np.argmax(d.nblocks))
    full = r.decode_stripes("ts", [i])
    lo, hi = 1, int(d.nblocks[i])
    hdr, words, nbytes = r.read_blocks("ts", [i], [lo], [hi])
    cnt = np.minimum(8, int(d.bcount[i]) - (d.b0[i] + np.arange(lo, hi)) * 8)  # its blobs' blocks b0 + lo ..
    first = lo * 8 - int(d.skip[i]) % 8  # where block lo starts among the stripe's own events
    assert codec.decode_blocks(hdr, words, cnt)[: len(full) - first].tolist() == full[first:].tolist()
    # format 3: the pages holding the blocks (and their page-table entries), never more than the blob
    assert 0 < nbytes <= int(r.blob_bytes("ts")[i])


def test_directory_disagreeing_with_lengths_is_corruption(tier):
    good = load_state(LocalStore(tier.uri), 3)
    older = load_state(LocalStore(tier.uri), 2)
    files = dict(list(good.files.items())[:-1])
    for change in (dict(files=files), dict(lengths=older.lengths)):
        with pytest.raises(CorruptionError):
            reader(tier, 3, **change).directory()


def test_segments_are_shared_through_the_cache(tier):
    cache = {}
    a = reader(tier, 2, cache)
    a.directory()
    b = reader(tier, 3, cache)
    b.directory()
    assert b.segment(0) is a.segment(0) and len(cache) == 3


def test_directory_publishes_columns_before_the_directory(tier):
    # Planner threads share one reader: a thread that finds ``_dir`` already set reads ``_dir_cols``
    # right away, so ``directory()`` must publish ``_dir_cols`` first. Simulate a thread arriving
    # at the moment ``_dir`` is published.
    seen = []

    class Watched(VersionReader):
        @property
        def _dir(self):
            return self.__dict__.get("_watched_dir")

        @_dir.setter
        def _dir(self, value):
            self.__dict__["_watched_dir"] = value
            if value is not None:
                seen.append(self.read_blocks("item_id", [0], [0], [1])[0].shape)

    store = LocalStore(tier.uri)
    w = Watched(store, load_state(store, 3))
    w.directory()
    assert seen == [(1, 3)]


def test_large_segments_are_read_by_coalesced_ranges(tmp_path, monkeypatch):
    """Above FULL_READ_BYTES a segment is not read whole: the ranges a batch needs are read, merged
    when close, and give the same blocks as a whole read."""
    import gpumat.host.segment as segment

    t = Tier.create(tmp_path / "t", SCHEMA, block_size=8)
    for i in range(2):
        t.append(events(i, 3000, users=40))
    t.compact()
    whole = {u: t.read_history(u) for u in range(40)}
    monkeypatch.setattr(segment, "FULL_READ_BYTES", 0)
    monkeypatch.setattr(segment, "COALESCE_GAP_WORDS", 3)
    fresh = Tier.open(t.uri)
    for u in range(40):
        got = fresh.read_history(u)
        assert all(got[c].tolist() == whole[u][c].tolist() for c in SCHEMA), u
    d = fresh.directory()
    rng = np.random.default_rng(1)
    si = rng.choice(len(d), 25)
    lo = (rng.random(25) * d.nblocks[si]).astype(np.int64)
    hi = lo + ((d.nblocks[si] - lo) * rng.random(25)).astype(np.int64)
    a = fresh.read_blocks("item_id", si, lo, hi)
    monkeypatch.setattr(segment, "FULL_READ_BYTES", 1 << 30)
    b = Tier.open(t.uri).read_blocks("item_id", si, lo, hi)
    assert all(np.array_equal(x, y) for x, y in zip(a[:2], b[:2])) and a[2] == b[2]


def test_a_file_truncated_under_a_reader_is_corruption_not_a_crash(tmp_path, monkeypatch):
    import gpumat.host.segment as segment

    monkeypatch.setattr(segment, "FULL_READ_BYTES", 0)  # read by ranges, after the truncation
    t = Tier.create(tmp_path / "t", SCHEMA, block_size=8)
    t.append(events(0, 3000, users=4))
    t.append(events(1, 3000, users=4))
    t.compact()
    h = Tier.open(t.uri)
    h.directory()  # indexes read; blocks not yet
    data = [f for f in (tmp_path / "t" / "_data").iterdir()]
    with open(data[0], "r+b") as f:
        f.truncate(64)
    with pytest.raises(CorruptionError, match="shorter|truncated|checksum"):
        for u in range(4):
            h.read_history(u)


def _mixed_events(seed, n, users):
    """Events whose blocks take every kind a read parses: runs and a small alphabet (``item_id``:
    RUN blocks, dictionary codes), a rare exception (``action``: PATCH / FLAG, constant stripes of
    users without one), few-event users (one-block blobs, their tag in the index)."""
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    u = np.where(rng.random(n) < 0.02, users + rng.integers(0, 8, n), rng.integers(0, users, n))
    item = np.repeat(rng.integers(0, 50, n), rng.integers(1, 9, n))[:n]
    action = np.where((rng.random(n) < 0.03) & (u % 3 != 0), rng.integers(1, 2**31, n), 0).astype(np.int32)
    return pa.table({"user_id": u, "ts": np.sort(rng.integers(0, 10**12, n)), "item_id": item, "action": action})


def _random_plan(rng, d, n):
    si = rng.choice(len(d), n)
    si = np.concatenate([si, si[: n // 4]])  # some blobs twice in one read (two windows of one user)
    lo = (rng.random(len(si)) * d.nblocks[si]).astype(np.int64)
    hi = lo + np.maximum(1, ((d.nblocks[si] - lo) * rng.random(len(si))).astype(np.int64))
    return si, lo, np.minimum(hi, d.nblocks[si])


def _same_blocks(a, b):
    for c in a:
        x, y = a[c], b[c]
        assert all(np.array_equal(p, q) for p, q in zip(x[:2], y[:2])) and x[2] == y[2], c
        assert (x.dicts is None) == (y.dicts is None) and (x.dicts is None or np.array_equal(x.dicts, y.dicts)), c


@pytest.fixture
def large_tier(tmp_path, monkeypatch):
    """A tier of large segments only (read by ranges, each blob's head in the first wave), stripes
    of one to a dozen pages."""
    import gpumat.host.segment as segment

    monkeypatch.setattr(segment, "FULL_READ_BYTES", 0)
    t = Tier.create(tmp_path / "t", SCHEMA, block_size=8)
    for i in range(2):
        t.append(_mixed_events(i, 6000, users=12))
    t.compact()
    t.append(_mixed_events(2, 2000, users=12))
    return t


def _waves(r):
    """Record the reader's store fetches: the byte count of each non-empty wave."""
    waves, fetch = [], r.store.fetch

    def counting(reqs):
        reqs = list(reqs)
        if any(len(v) for _, _, v in reqs):
            waves.append(sum(len(v) for _, _, v in reqs))
        return fetch(reqs)

    r.store.fetch = counting
    return waves


@pytest.mark.parametrize("cap,head_max", [(64 << 20, None), (700, None), (64 << 20, 40)])
def test_blob_heads_kept_once_read(large_tier, monkeypatch, cap, head_max):
    """A large segment's blob heads (tags, anchors), once read, are kept by the reader: the same
    blocks again take one wave of reads, not two, and fewer bytes; every read gives the blocks a
    reader without the cache gives (a cache too small for all, or heads too long to keep: those
    that are kept, the rest read by pages as before)."""
    import gpumat.host.reader as reader_mod

    if head_max is not None:
        monkeypatch.setattr(reader_mod, "HEAD_KEPT_MAX", head_max)
    cols = list(SCHEMA)
    monkeypatch.setenv("GPUMAT_META_CACHE_BYTES", "0")
    plain = reader(large_tier, large_tier.version)
    monkeypatch.setenv("GPUMAT_META_CACHE_BYTES", str(cap))
    r = reader(large_tier, large_tier.version)
    d = r.directory()
    assert d.nblocks.max() > 6 * 16  # stripes of several pages
    rng = np.random.default_rng(3)
    for k in range(6):
        plan = _random_plan(rng, d, 30)
        want = plain.read_blocks_many(cols, *plan)
        waves = _waves(r)
        first = r.read_blocks_many(cols, *plan)
        n_first, b_first = len(waves), sum(waves)
        again = r.read_blocks_many(cols, *plan)
        del r.store.fetch  # (the store's own again)
        _same_blocks(first, want)
        _same_blocks(again, want)
        if cap > 1 << 20 and head_max is None:  # the first read: the heads, then fields and payload (and the dictionaries)
            assert len(waves) == n_first + 1 and waves[-1] < b_first or k and n_first == 1, waves
            assert n_first >= 2 or k, waves  # (a later plan's blobs may all be kept already)
    mc = r._meta
    assert mc.kept and mc.hits and mc.used <= cap
    if cap < 1 << 20 or head_max is not None:
        assert mc.used > 0 and mc.kept < len(cols) * int(d.owner.sum())  # some kept, not all


def test_blob_heads_shared_by_planner_threads(large_tier, monkeypatch):
    """Threads reading through one reader fill and use its kept heads together: every read gives
    the blocks of a reader without the cache."""
    import threading

    cols = list(SCHEMA)
    monkeypatch.setenv("GPUMAT_META_CACHE_BYTES", "0")
    plain = reader(large_tier, large_tier.version)
    monkeypatch.setenv("GPUMAT_META_CACHE_BYTES", str(4000))
    r = reader(large_tier, large_tier.version)
    d = r.directory()
    plans = [_random_plan(np.random.default_rng(s), d, 20) for s in range(12)]
    want = [plain.read_blocks_many(cols, *p) for p in plans]
    errors, got = [], {}

    def work(k):
        try:
            for rep in range(3):
                for i in range(k, len(plans), 4):
                    got[(i, rep)] = r.read_blocks_many(cols, *plans[i])
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for (i, _), blocks in got.items():
        _same_blocks(blocks, want[i])
    assert r._meta.hits > 0


def test_forget_heads(large_tier):
    """``forget_heads()`` drops the kept heads (the next read of the same blocks takes two waves
    again, then keeps them); ``forget_heads(keep=False)`` keeps none from then on."""
    cols = list(SCHEMA)
    r = reader(large_tier, large_tier.version)
    plan = _random_plan(np.random.default_rng(5), r.directory(), 30)
    want = r.read_blocks_many(cols, *plan)
    waves = _waves(r)
    for forget, n in ((None, 1), (True, 2), (None, 1), (False, 2), (None, 2)):
        if forget is not None:
            r.forget_heads(keep=forget)
        before = len(waves)
        _same_blocks(r.read_blocks_many(cols, *plan), want)
        assert len(waves) - before == n, (forget, waves)


def test_heads_of_a_pack_kept_once_and_room_given_back(tmp_path, monkeypatch):
    """A pack's stripes share one kept head (keyed by ``Directory.blob``); a read that fails after
    reserving room for heads gives the room back."""
    import gpumat.host.segment as segment
    from test_packs import SCHEMA as PACK_SCHEMA, short_histories

    from gpumat.host import writer

    monkeypatch.setattr(segment, "FULL_READ_BYTES", 0)
    monkeypatch.setattr(writer, "PACK_MIN_ROWS", 0)
    monkeypatch.setattr(writer, "PACK_MIN_SAVING", -1.0)  # every run of short stripes packed
    t = Tier.create(tmp_path / "t", PACK_SCHEMA, block_size=8)
    t.append(short_histories(0, 400, 6))
    r = reader(t, t.version)
    d = r.directory()
    packed = np.flatnonzero(d.bcount != d.count)
    assert len(packed) > 2 * len(np.unique(d.blob[packed]))
    si = packed
    lo, hi = np.zeros(len(si), np.int64), d.nblocks[si]
    want = reader(t, t.version).read_blocks_many(list(PACK_SCHEMA), si, lo, hi)
    _same_blocks(r.read_blocks_many(list(PACK_SCHEMA), si, lo, hi), want)
    mc = r._meta
    assert mc.kept == len(PACK_SCHEMA) * len(np.unique(d.blob[si]))  # one head a pack and column
    _same_blocks(r.read_blocks_many(list(PACK_SCHEMA), si, lo, hi), want)
    # a read that fails in its first wave: no room kept for heads it never filled
    r2 = reader(t, t.version)
    r2.directory()

    def failing(reqs):
        raise OSError("the store went away")

    r2.store.fetch = failing
    with pytest.raises(OSError):
        r2.read_blocks_many(list(PACK_SCHEMA), si, lo, hi)
    assert r2._meta.used == 0 and r2._meta.kept == 0
    del r2.store.fetch
    _same_blocks(r2.read_blocks_many(list(PACK_SCHEMA), si, lo, hi), want)
