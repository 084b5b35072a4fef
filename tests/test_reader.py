"""Reading one version (host/reader.py): the directory and its verification, blocks, thread safety."""

import numpy as np
import pytest

from gpumat.core.errors import CorruptionError, SchemaError
from gpumat.host import codec
from gpumat.host.manifest import read_manifest
from gpumat.host.reader import VersionReader
from gpumat.host.tier import Tier
from test_tier import SCHEMA, events


@pytest.fixture
def tier(tmp_path):
    t = Tier.create(tmp_path / "t", SCHEMA, block_size=8)
    for i in range(3):
        t.append(events(i, 60, users=5))
    return t


def test_directory_tiles_each_history(tier):
    r = VersionReader(tier.uri, read_manifest(tier.uri, 3))
    d = r.directory()
    assert d is r.directory()  # cached
    assert np.all(np.diff(d.user_id) >= 0)
    assert d.block0.tolist() == (np.cumsum(d.nblocks) - d.nblocks).tolist()
    assert d.nblocks.tolist() == ((d.count + 7) // 8).tolist()
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
    r = VersionReader(tier.uri, read_manifest(tier.uri, 3))
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
    cnt = np.minimum(8, int(d.count[i]) - np.arange(lo, hi) * 8)
    assert codec.decode_blocks(hdr, words, cnt).tolist() == full[lo * 8:].tolist()
    assert nbytes == 8 * (codec.HDR_WORDS * (hi - lo) + len(words) - 1)


def test_directory_disagreeing_with_lengths_is_corruption(tier):
    m = read_manifest(tier.uri, 3)
    for bad in (dict(m, segments=m["segments"][:-1]), dict(m, lengths=m["lengths"][:-1])):
        with pytest.raises(CorruptionError):
            VersionReader(tier.uri, bad).directory()


def test_segments_are_shared_through_the_cache(tier):
    cache = {}
    a = VersionReader(tier.uri, read_manifest(tier.uri, 2), cache)
    a.directory()
    b = VersionReader(tier.uri, read_manifest(tier.uri, 3), cache)
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

    w = Watched(tier.uri, read_manifest(tier.uri, 3))
    w.directory()
    assert seen == [(1, 3)]
