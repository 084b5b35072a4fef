"""The blocked frame-of-reference codec (host/codec.py): round trips, encoding choice, checksums."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpumat.core.errors import CorruptionError
from gpumat.host import codec, native
from gpumat.host.ranges import ranges

I64 = np.iinfo(np.int64)


pytestmark = pytest.mark.usefixtures("decoder")  # every test on the C codec and on NumPy's (conftest.py)


def assert_same(got, want):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, (got.shape, want.shape)
    bad = np.flatnonzero(got != want)
    assert bad.size == 0, f"first mismatches at {bad[:8].tolist()}: got {got[bad[:8]].tolist()} want {want[bad[:8]].tolist()}"


def headers(region, blob_off, stripe_counts, bs):
    """(hdr [K, 3] with word_off rebased onto ``region``, counts [K]) of every block of every stripe."""
    nb, cnt = codec.block_counts(stripe_counts, bs)
    sob = np.repeat(np.arange(len(nb)), nb)
    j = np.arange(len(cnt)) - (np.cumsum(nb) - nb)[sob]
    pos = blob_off[sob] + 4 * j
    hdr = np.stack([region[pos], region[pos + 1], region[pos + 2]], 1)
    hdr[:, 2] = (((hdr[:, 2] >> 8) + blob_off[sob]) << 8) | (hdr[:, 2] & 255)
    return hdr, cnt


def roundtrip(x, bs):
    x = np.asarray(x, dtype=np.int64)
    blob, enc = codec.encode_column(x, bs)
    assert_same(codec.decode_blob(blob, len(x), bs), x)
    return blob, enc


@pytest.mark.parametrize("bs", [1, 4, 128])
def test_extremes_in_one_block(bs):
    x = np.array([I64.min, I64.max, 0, -1, 1, I64.min + 1, I64.max - 1] * 3, dtype=np.int64)
    blob, _ = roundtrip(x, bs)
    if bs == 128:
        assert blob[2] & 255 == 64  # raw bits


def test_constant_and_empty():
    blob, enc = roundtrip(np.full(300, -5), 128)
    assert enc == codec.ENC_FOR
    assert len(blob) == 3 * 4  # headers only: w = 0 stores no packed words
    blob, _ = roundtrip(np.zeros(0, np.int64), 128)
    assert len(blob) == 0


def test_sorted_ts_uses_a_slope_and_fewer_bits():
    rng = np.random.default_rng(1)
    ts = 1_700_000_000_000 + np.cumsum(rng.integers(900, 1100, 1000))
    blob, enc = roundtrip(ts, 128)
    assert enc == codec.ENC_LFOR
    w = blob[2 : 8 * 4 : 4] & 255
    assert (w <= 12).all(), w  # a random walk around the line; plain FOR needs 17 bits
    blob, enc = roundtrip(rng.permutation(ts), 128)
    assert enc == codec.ENC_FOR  # no line helps a shuffled column


def test_linear_with_overflowing_slope_and_descending():
    roundtrip(np.array([I64.min, I64.max, I64.min, I64.max]), 4)
    roundtrip(np.arange(1000, 0, -7), 128)
    roundtrip(I64.max - np.arange(0, 1000) * 3, 128)
    roundtrip(I64.min + np.arange(0, 1000) * (2**53), 128)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(I64.min, I64.max), max_size=300),
    st.sampled_from([1, 2, 8, 32, 128]),
)
def test_roundtrip_random(values, bs):
    roundtrip(values, bs)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.integers(0, 400), max_size=12),
    st.integers(0, 63),
    st.sampled_from([4, 16, 128]),
    st.integers(0, 2**32),
)
def test_encode_stripes_and_decode_blocks(counts, bits, bs, seed):
    rng = np.random.default_rng(seed)
    counts = np.array(counts, dtype=np.int64)
    x = rng.integers(-(2**bits), 2**bits, int(counts.sum()), dtype=np.int64)
    x[::7] = np.cumsum(x[::7]) // 3
    region, off, nw, enc = codec.encode_stripes(x, counts, bs)
    assert len(region) == nw.sum() and (off == np.cumsum(nw) - nw).all()
    hdr, cnt = headers(region, off, counts, bs)
    assert_same(codec.decode_blocks(hdr, region, cnt), x)
    # selected windows: value lo..lo+n of each block
    if len(cnt):
        lo = rng.integers(0, cnt)
        n = rng.integers(0, cnt - lo + 1)
        start = np.repeat(np.cumsum(cnt) - cnt + lo, n) + ranges(np.zeros(len(n), np.int64), n)
        assert_same(codec.decode_blocks(hdr, region, n, lo=lo), x[start])
        # a subset of blocks in any order
        pick = rng.permutation(len(cnt))[: max(1, len(cnt) // 2)]
        want = np.concatenate([x[s : s + c] for s, c in zip((np.cumsum(cnt) - cnt)[pick], cnt[pick])])
        assert_same(codec.decode_blocks(hdr[pick], region, cnt[pick]), want)


def test_every_width():
    bs = 128
    for w in range(65):
        lo = 0
        hi = (1 << w) - 1
        x = np.array([lo + (hi - lo) * k // (bs - 1) for k in range(bs)], dtype=np.uint64).view(np.int64)
        x = np.random.default_rng(w).permutation(x)
        blob, enc = roundtrip(x, bs)
        assert blob[2] & 255 == w, (w, blob[2] & 255)


def test_pack_in_c_equals_numpy(monkeypatch, decoder):
    """The encoder's bit packing (``codec._pack``) in C writes NumPy's words: every width 1..64,
    blocks of 1 to 128 values, each its words and no more (the words between stay as they were);
    a block out of range is a ``ValueError`` with nothing written for it."""
    if decoder != "native":
        pytest.skip("compares the C packing with NumPy's: runs once, with the C codec")
    rng = np.random.default_rng(1)
    for t in range(200):
        NB, lanes = int(rng.integers(0, 30)), int(rng.choice([1, 5, 64, 128]))
        w, cnt = rng.integers(0, 65, NB), rng.integers(1, lanes + 1, NB)
        r2 = rng.integers(0, 2**63, (NB, lanes), dtype=np.int64).astype(np.uint64) * np.uint64(2) \
            + rng.integers(0, 2, (NB, lanes)).astype(np.uint64)
        r2 &= np.where(w[:, None] == 64, np.uint64(2**64 - 1), (np.uint64(1) << w[:, None].astype(np.uint64)) - np.uint64(1))
        r2[np.arange(lanes)[None, :] >= cnt[:, None]] = 0
        nw = codec.words_for(cnt, w)
        dst = np.cumsum(nw + 1) - nw  # (a word between blocks, left as it was)
        got = np.full(int((nw + 1).sum()) + 3, 7, np.uint64)
        want = got.copy()
        codec._pack(r2, w, nw, dst, got)
        with monkeypatch.context() as m:
            m.setattr(native, "available", lambda: (False, None))
            codec._pack(r2, w, nw, dst, want)
        assert got.tolist() == want.tolist(), t
    out = np.zeros(4, np.uint64)
    with pytest.raises(ValueError):
        native.pack(np.ones((1, 8), np.uint64), [1], [1], [4], out)  # (past out)
    assert not out.any()


def test_hash_detects_every_single_bit_flip():
    rng = np.random.default_rng(3)
    x = rng.integers(-1000, 1000, 300)
    blob, _ = codec.encode_column(x, 128)
    raw = blob.view(np.uint64)
    for i in range(len(raw)):
        for b in range(64):
            bad = raw.copy()
            bad[i] ^= np.uint64(1) << np.uint64(b)
            with pytest.raises(CorruptionError):
                codec.decode_blob(bad.view(np.int64), len(x), 128)


def test_decode_speed_is_vectorized():
    # a sanity bound, not a benchmark: a per-value Python loop would take seconds
    import time

    x = np.random.default_rng(0).integers(0, 1 << 20, 1 << 20)
    region, off, nw, _ = codec.encode_stripes(x, np.full(1 << 10, 1 << 10), 128)
    hdr, cnt = headers(region, off, np.full(1 << 10, 1 << 10), 128)
    t = time.perf_counter()
    assert_same(codec.decode_blocks(hdr, region, cnt), x)
    assert time.perf_counter() - t < 1.0


@pytest.mark.parametrize("few", [0, 1 << 40], ids=["bulk", "few"])
def test_bulk_and_few_paths_every_width_short_blocks(few, monkeypatch):
    """Both decoders (bulk per width; every width at once for a few blocks) on blocks of every width
    0..64, mixed in one call, full and short, with windows (``lo``) and padded rows."""
    monkeypatch.setattr(codec, "_FEW_VALUES", few)
    rng = np.random.default_rng(11)
    parts, counts = [], []
    for w in range(65):
        for cnt in (128, 37, 1):
            hi = (1 << w) - 1
            r = rng.integers(0, 2**63, cnt, dtype=np.int64).view(np.uint64) % np.uint64(hi + 1) if w < 64 else \
                rng.integers(I64.min, I64.max, cnt, dtype=np.int64, endpoint=True).view(np.uint64)
            r[0], r[-1] = np.uint64(0), np.uint64(hi)  # force the width (FOR: base = min)
            parts.append((r + np.uint64(rng.integers(0, 2**40) if w < 56 else 0)).view(np.int64))
            counts.append(cnt)
    x = np.concatenate(parts)
    counts = np.array(counts)
    region, off, nw, _ = codec.encode_stripes(x, counts, 128)
    hdr, cnt = headers(region, off, counts, 128)
    assert set((hdr[:, 2] & 255).tolist()) >= set(range(1, 65))
    assert_same(codec.decode_blocks(hdr, region, cnt), x)
    lo = rng.integers(0, cnt)
    n = rng.integers(0, cnt - lo + 1)
    want = x[ranges(np.cumsum(cnt) - cnt + lo, n)]
    assert_same(codec.decode_blocks(hdr, region, n, lo=lo), want)
    pad = codec.decode_blocks_padded(hdr, region, 128)
    assert_same(pad[np.arange(128)[None, :] < cnt[:, None]], x)


def _bits_reference(words, bit, w):
    """Python ints: bits [bit, bit + w) of the little-endian word stream (the codec's definition)."""
    if w == 0:
        return 0
    q, sh = bit // 64, bit % 64
    v = int(words[q]) >> sh
    if sh + w > 64:
        v |= int(words[q + 1]) << (64 - sh)
    return v & ((1 << w) - 1)


@pytest.mark.parametrize("seed", range(4))
def test_decode_every_width_slope_and_range_against_python(seed, decoder):
    """Random headers at every width 0..64 (word offsets anywhere, blocks up to the buffer's end),
    random slopes and value ranges ``[lo, lo + cnt)``: each value is ``base + slope * j + bits``
    (wrapping), computed here with Python integers."""
    rng = np.random.default_rng(seed)
    nwords = 400
    words = rng.integers(0, 2**63, nwords, dtype=np.int64) * 2 + rng.integers(0, 2, nwords)
    K = 300
    w = np.concatenate([np.arange(65), rng.integers(0, 65, K - 65)])
    hi = rng.integers(0, 140, K)
    need = (hi * w + 63) // 64
    off = np.array([rng.integers(0, nwords - n + 1) for n in need])
    off[:65] = nwords - need[:65]  # the first 65 end exactly at the buffer's end
    lo = np.minimum(rng.integers(0, 20, K), hi)
    cnt = hi - lo
    base = rng.integers(I64.min, I64.max, K, dtype=np.int64)
    slope = np.where(rng.random(K) < 0.5, 0, rng.integers(I64.min, I64.max, K, dtype=np.int64))
    hdr = np.stack([base, slope, (off << 8) | w], 1)
    got = codec.decode_blocks(hdr, words, cnt, lo=lo)
    want = []
    for k in range(K):
        for j in range(int(lo[k]), int(hi[k])):
            v = (int(base[k]) + int(slope[k]) * j + _bits_reference(words.view(np.uint64), int(off[k]) * 64 + j * int(w[k]), int(w[k]))) % 2**64
            want.append(v - 2**64 if v >= 2**63 else v)
    assert_same(got, np.array(want, dtype=np.int64))
    full = hi > 0
    dense = codec.decode_blocks(hdr[full], words, hi[full])
    assert_same(dense, np.concatenate([codec.decode_blocks(hdr[k : k + 1], words, hi[k : k + 1]) for k in np.flatnonzero(full)]))
    pad = codec.decode_blocks_padded(hdr[full], words, 144)  # lanes past a block's count: anything
    rows = pad[np.arange(144)[None, :] < hi[full][:, None]]
    assert_same(rows, dense)


def test_decode_rejects_a_header_outside_the_words(decoder):
    """A header whose words lie outside the buffer: a ``CorruptionError`` from the C decoder (it checks
    every block before reading); NumPy's path relies on verified hashes and is not asked."""
    if decoder != "native":
        pytest.skip("the NumPy decoder trusts verified headers: runs with the C decoder")
    words = np.arange(10, dtype=np.int64)
    hdr = np.array([[0, 0, (8 << 8) | 64], [0, 0, (9 << 8) | 64]], dtype=np.int64)  # block 1 needs words 9..10
    with pytest.raises(CorruptionError, match="block 1"):
        codec.decode_blocks(hdr, words, np.array([1, 2]))
    with pytest.raises(CorruptionError, match="block 0"):
        codec.decode_blocks(np.array([[0, 0, (-1 << 8) | 3]]), words, np.array([4]))
    for lo in (2**60, 2**63 - 1):  # a range whose bit positions would overflow int64: refused, not wrapped
        with pytest.raises(CorruptionError, match="block 0"):
            codec.decode_blocks(np.array([[0, 0, 64]]), words, np.array([1]), lo=np.array([lo]))
    with pytest.raises(ValueError, match="output positions"):
        native.decode(np.zeros((1, 3), np.int64), words, None, np.array([4]), np.array([-1]), np.zeros(4, np.int64))


def test_a_build_of_another_version_is_not_used(monkeypatch, decoder):
    """``_native`` built from an older ``_native.c`` (an editable install not rebuilt): NumPy decodes."""
    if decoder != "native":
        pytest.skip("about the C decoder's build: runs once, with the C decoder")
    monkeypatch.setattr(native, "ABI", native.ABI + 1)
    fn, why = native._load()
    assert fn is None and "another version" in why


def test_bit_length_exact_on_either_codec():
    """``bit_length`` (C: leading zeros; NumPy: float exponents) at every power of two and its
    neighbours, any shape, as Python's ``int.bit_length``."""
    p = np.array([0, 1] + [x for k in range(1, 64) for x in ((1 << k) - 1, 1 << k, (1 << k) + 1)] + [2**64 - 1], np.uint64)
    want = [int(x).bit_length() for x in p.tolist()]
    assert codec.bit_length(p).tolist() == want
    assert codec.bit_length(p.view(np.int64)).tolist() == want  # int64 views are read as uint64
    assert codec.bit_length(p[:190].reshape(-1, 2)).tolist() == np.reshape(want[:190], (-1, 2)).tolist()


def test_block_hash_c_equals_numpy(monkeypatch, decoder):
    """The C checksum and NumPy's agree (tiers written by either verify on the other)."""
    if decoder != "native":
        pytest.skip("compares the C checksum with NumPy's: runs once, with the C decoder")
    rng = np.random.default_rng(3)
    nw = rng.integers(0, 40, 200)
    nw[:3] = 0
    packed = rng.integers(I64.min, I64.max, int(nw.sum()) + 5, dtype=np.int64)
    base, slope, meta = (rng.integers(I64.min, I64.max, 200, dtype=np.int64) for _ in range(3))
    c = codec.block_hash(base, slope, meta, packed[: nw.sum()], nw)
    monkeypatch.setattr(native, "_decode", None)
    assert np.array_equal(c, codec.block_hash(base, slope, meta, packed[: nw.sum()], nw))
