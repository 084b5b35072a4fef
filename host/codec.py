"""The blocked, random-access frame-of-reference codec of docs/DESIGN.md §1 (NumPy, vectorized).

A column of ``n`` int64 values is cut into blocks of ``BS`` values (the last one may be short).
Block ``b`` stores ``x[k] = base + slope * k + r[k]`` (wrapping int64 arithmetic) with ``r[k]`` an
unsigned ``w``-bit integer bit-packed into 64-bit words. The blob of one (stripe, column) is

    header  nb x 4 words [base, slope, meta = (word_off << 8) | w, hash]
    packed  ceil(cnt_b * w_b / 64) words per block, at word_off (from the blob start)

Every function here works on many blocks (of many stripes) at once: the loops are over the 65
possible bit widths or over the 6 steps of a bit-length computation, never over blocks or values.
All arithmetic is done on ``uint64`` views, so it wraps exactly like the two's-complement formula
that the kernels evaluate, and any slope decodes correctly; the encoder only prefers a slope when
it needs fewer bits than plain frame of reference.

Decoding and checksums run in C (``host/_native.c`` through ``gpumat.host.native``) when the
install built it, else in NumPy as described here; both give the same bits (tests/test_codec.py).
"""

from __future__ import annotations

import functools

import numpy as np

from gpumat.core.errors import CorruptionError
from gpumat.core.staged import AUX_FLAG, decode_values, dict_blocks, dict_lookup
from gpumat.host import native
from gpumat.host.ranges import ranges

HDR_WORDS = 4  # base, slope, meta, hash
ENC_FOR = 0  # every block has slope 0
ENC_LFOR = 1  # at least one block has a fitted slope
ENC_PATCH, ENC_RUN = 2, 4  # format 3: some block is a PATCH / RUN block (flags, with ENC_LFOR)
ENC_DICT = 8  # format 3: the blob holds codes into its segment's dictionary of the column
ENC_DELTA = 16  # format 3: some block is a DELTA (or DELTA PATCH) block (with ENC_DICT: of its dictionary)
ENC_SIGNED = 32  # format 3: some block is a DELTA SIGNED block (with ENC_DELTA; with ENC_DICT: of its dictionary)
ENC_RADIX = 64  # format 3: some block is a RADIX block
ENC_SPARSE = 128  # format 3: some block's bitmap is stored sparse, as its set bits' positions
ENC_FLAGS = 0xFF  # the flag bits of an ``enc`` field; with ENC_DICT, bits 8.. hold the dictionary's place
# format 3, without ENC_DICT: every value of the stripe (of its pack) is one value, ``zigzag(value)``
# in bits 9.. (below ``CONST_MAX``), no other flag; its blob has no bytes (DESIGN §1 "Constant stripes")
ENC_CONST = 256
CONST_MAX = 1 << 54  # zigzag(value) of a constant stripe: below this, so that its enc is a non-negative int64
# format 3, an index of form 2 (host/segment.py ``INDEX_FORM``), without ENC_DICT or ENC_CONST: a blob of
# one block may have its tag byte in its ``enc`` instead of its bytes, ``tag + 1`` in bits 9..16 (0: the
# tag is in the blob), so that a short history's blob of a low-entropy column does not pay a byte for it
ENC_TAG_SHIFT, ENC_TAG_MASK = 9, 0xFF
ENC_NAMES = {ENC_FOR: "FOR", ENC_LFOR: "LFOR", ENC_PATCH: "PATCH", ENC_RUN: "RUN", ENC_DICT: "DICT", ENC_DELTA: "DELTA",
             ENC_SIGNED: "SIGNED", ENC_RADIX: "RADIX", ENC_SPARSE: "SPARSE", ENC_CONST: "CONST"}


def enc_counts(enc: np.ndarray) -> dict:
    """Stripes per encoding from the index's ``enc`` flags: FOR (none), LFOR, PATCH, RUN, DICT, ...,
    CONST (a stripe may count under several; a constant one only under CONST)."""
    enc = np.asarray(enc, np.int64)
    cst = const_stripes(enc)
    flags = enc & ENC_FLAGS
    return {name: int(cst.sum() if k == ENC_CONST else ((flags == 0) & ~cst).sum() if k == ENC_FOR
                      else ((flags & k) != 0).sum()) for k, name in ENC_NAMES.items()}


def const_stripes(enc: np.ndarray) -> np.ndarray:
    """Which ``enc`` fields (format 3) say a constant stripe: ``ENC_CONST`` without ``ENC_DICT``
    (whose bits 8.. are its dictionary's place)."""
    enc = np.asarray(enc, np.int64)
    return ((enc & ENC_DICT) == 0) & ((enc & ENC_CONST) != 0)


def enc_tags(enc: np.ndarray) -> np.ndarray:
    """Per ``enc`` field (format 3), the tag of its one-block blob when the index holds it (``ENC_TAG_SHIFT``),
    else -1 (the tag is in the blob, or there is no blob)."""
    enc = np.asarray(enc, np.int64)
    own = ((enc & (ENC_DICT | ENC_CONST)) == 0) & (enc >> ENC_TAG_SHIFT != 0)
    return np.where(own, ((enc >> ENC_TAG_SHIFT) & ENC_TAG_MASK) - 1, -1)


def const_enc(values: np.ndarray) -> np.ndarray:
    """The ``enc`` field of constant stripes of ``values`` (each ``zigzag(value) < CONST_MAX``)."""
    return ENC_CONST | (zigzag(values).view(np.int64) << 9)


def const_values(enc: np.ndarray) -> np.ndarray:
    """The value of each constant stripe's ``enc`` field (``const_enc``'s inverse)."""
    return unzigzag((np.asarray(enc, np.int64) >> 9).view(np.uint64))


def zigzag(v: np.ndarray) -> np.ndarray:
    """int64 -> uint64: 0, -1, 1, -2 ... -> 0, 1, 2, 3 ... (wrapping)."""
    v = np.asarray(v, dtype=np.int64)
    return (v.view(np.uint64) << np.uint64(1)) ^ (v >> np.int64(63)).view(np.uint64)


def unzigzag(z: np.ndarray) -> np.ndarray:
    """uint64 -> int64, the inverse of ``zigzag``."""
    z = np.asarray(z, dtype=np.uint64)
    return ((z >> np.uint64(1)) ^ (np.uint64(0) - (z & np.uint64(1)))).view(np.int64)

_U64 = np.uint64
_GOLDEN = _U64(0x9E3779B97F4A7C15)
_M1 = _U64(0xBF58476D1CE4E5B9)
_M2 = _U64(0x94D049BB133111EB)
_ONE = _U64(1)


def _u(a) -> np.ndarray:
    """A uint64 view (no copy) of an int64/uint64 array."""
    a = np.asarray(a)
    return a.view(np.uint64) if a.dtype == np.int64 else a.astype(np.uint64, copy=False)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 output function for state ``x`` (uint64 in, uint64 out, elementwise).

    ``z = x + 0x9E3779B97F4A7C15; z = (z ^ z >> 30) * 0xBF58476D1CE4E5B9;
    z = (z ^ z >> 27) * 0x94D049BB133111EB; return z ^ z >> 31`` -- a bijection of 64-bit words.
    """
    with np.errstate(over="ignore"):
        z = x + _GOLDEN
        z ^= z >> _U64(30)
        z *= _M1
        z ^= z >> _U64(27)
        z *= _M2
        z ^= z >> _U64(31)
    return z


def _mix_at(words: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """``splitmix64(word XOR (pos * golden))``: the per-word term of the mix64 block checksum."""
    with np.errstate(over="ignore"):
        return splitmix64(_u(words) ^ (_u(pos) * _GOLDEN))


def bit_length(v: np.ndarray) -> np.ndarray:
    """Exact bit length of uint64 values (0 for 0, 64 for values >= 2**63), as int64: in C when built
    (a count of leading zeros), else the exponent of each 32-bit half as a float64 (exact below 2**53)."""
    v = _u(v)
    if native.available()[0]:
        return native.bit_length(v)
    hi = (v >> _U64(32)).astype(np.float64)
    lo = (v & _U64(0xFFFFFFFF)).astype(np.float64)
    return np.where(hi > 0, 32 + np.frexp(hi)[1], np.frexp(lo)[1]).astype(np.int64)


def words_for(cnt, w) -> np.ndarray:
    """Packed words of a block of ``cnt`` values of ``w`` bits: ``ceil(cnt * w / 64)``."""
    return (np.asarray(cnt, dtype=np.int64) * np.asarray(w, dtype=np.int64) + 63) >> 6


def block_counts(stripe_counts: np.ndarray, block_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-stripe block numbers and per-block value counts for stripes of ``stripe_counts`` values.

    Returns ``(nblocks [S], cnt [sum nblocks])``; blocks never straddle stripes.
    """
    sc = np.asarray(stripe_counts, dtype=np.int64)
    nb = (sc + block_size - 1) // block_size
    total = int(nb.sum())
    cnt = np.full(total, block_size, dtype=np.int64)
    last = np.cumsum(nb) - 1
    has = nb > 0
    cnt[last[has]] = sc[has] - (nb[has] - 1) * block_size
    return nb, cnt


def _segment_sums(terms: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """Wrapping uint64 sums of consecutive segments of ``terms`` (segment i has ``lens[i]`` >= 0 terms)."""
    cs = np.zeros(len(terms) + 1, dtype=np.uint64)
    np.cumsum(terms, out=cs[1:])
    ends = np.cumsum(np.asarray(lens, dtype=np.int64))
    with np.errstate(over="ignore"):
        return cs[ends] - cs[ends - lens]


def block_hash(base, slope, meta, packed, nwords) -> np.ndarray:
    """mix64 checksums of K blocks: ``sum_i splitmix64(word_i ^ (i * golden))`` over base, slope, meta,
    packed words (i from 0 within the block). ``packed`` holds the K blocks' words back to back,
    block k owning ``nwords[k]`` of them. Returns uint64 ``[K]``."""
    nwords = np.asarray(nwords, dtype=np.int64)
    if native.available()[0]:
        c = lambda a: np.ascontiguousarray(_u(a)).reshape(-1)  # noqa: E731
        return native.block_hash(c(base), c(slope), c(meta), c(packed), np.ascontiguousarray(nwords))
    k = len(nwords)
    h = _mix_at(base, np.zeros(k, np.int64))
    with np.errstate(over="ignore"):
        h += _mix_at(slope, np.ones(k, np.int64))
        h += _mix_at(meta, np.full(k, 2, np.int64))
        if len(packed):
            first = np.cumsum(nwords) - nwords
            pos = np.arange(len(packed), dtype=np.int64) - np.repeat(first, nwords) + 3
            h += _segment_sums(_mix_at(packed, pos), nwords)
    return h


# --------------------------------------------------------------------------------------- encoding


@functools.lru_cache(maxsize=512)
def _pack_table(w: int, bs: int):
    """For width ``w``: the (value, word, shift) contributions of a full block's bit stream, sorted by word.

    Returns ``(k, left, right, starts, nwords)``: value ``k[t]`` contributes ``r << left[t]`` (low part) or
    ``r >> right[t]`` (the high part that spills into the next word) to word ``word[t]``;
    ``starts`` are the first entries of each word (for ``np.add.reduceat``). Cached (read-only
    arrays): a small append packs a few blocks of a few widths, and building the table was most of it."""
    k = np.arange(bs, dtype=np.int64)
    bit = k * w
    word, sh = bit >> 6, bit & 63
    spill = sh + w > 64
    ks = np.concatenate([k, k[spill]])
    wd = np.concatenate([word, word[spill] + 1])
    left = np.concatenate([sh, np.zeros(int(spill.sum()), np.int64)])
    right = np.concatenate([np.zeros(bs, np.int64), 64 - sh[spill]])
    order = np.argsort(wd, kind="stable")
    ks, wd, left, right = ks[order], wd[order], left[order], right[order]
    starts = np.flatnonzero(np.concatenate(([True], wd[1:] != wd[:-1])))
    out = ks, left.astype(np.uint64), right.astype(np.uint64), starts
    for a in out:
        a.flags.writeable = False
    return (*out, int(wd[-1]) + 1)


_ENC_CHUNK = 8192  # blocks per encoder pass: bounds the encoder's temporaries to a few [8192, BS] arrays
_CHUNK = 1024  # blocks per vectorized step: keeps the [chunk, BS] temporaries in cache


def _pack(r2: np.ndarray, w: np.ndarray, nw: np.ndarray, dst: np.ndarray, out: np.ndarray) -> None:
    """Bit-pack the residuals ``r2 [NB, BS]`` (uint64, zero past each block's count) of widths ``w [NB]``
    into ``out``: block b's ``nw[b]`` words go to ``out[dst[b]:dst[b] + nw[b]]``. One table per width,
    so a word is the ``np.add.reduceat`` of its (disjoint-bit) contributions: no per-value scatter.
    In C when built (``native.pack``: a word at a time, in a register)."""
    if native.available()[0]:
        return native.pack(r2, w, nw, dst, out)
    bs = r2.shape[1]
    for wv in np.unique(w):
        wv = int(wv)
        if wv == 0:
            continue
        sel_all = np.flatnonzero(w == wv)
        ks, left, right, starts, nwf = _pack_table(wv, bs)
        for c0 in range(0, len(sel_all), _CHUNK):
            sel = sel_all[c0 : c0 + _CHUNK]
            rk = r2[sel][:, ks]
            contrib = (rk << left[None, :]) >> right[None, :] if right.any() else rk << left[None, :]
            words = np.add.reduceat(contrib, starts, axis=1)  # [c, nwf]
            n = nw[sel]
            if (n == nwf).all():
                out[(dst[sel][:, None] + np.arange(nwf)[None, :]).ravel()] = words.ravel()
            else:
                m = np.arange(nwf)[None, :] < n[:, None]
                out[ranges(dst[sel], n)] = words[m]


class _Fit:
    """Per-block choice of one column's encoding (``fit_blocks``): ``nb_s [S]`` blocks per stripe,
    per block ``cnt``, ``base``, ``slope``, ``w`` (int64 ``[NB]``), ``stripe_of_block``, ``bfirst [S]``
    (each stripe's first block) and ``vstart`` (each block's first value)."""

    def __init__(self, **kw):
        self.__dict__.update(kw)

    def residuals(self, c0: int, c1: int) -> np.ndarray:
        """uint64 ``[c1 - c0, lanes]`` residuals ``x - base - slope * k`` of blocks ``c0 .. c1`` (zero
        past each block's count): what is bit-packed."""
        cnt, j, ju = self.cnt, self.j, self.j.astype(np.uint64)
        valid = j[None, :] < cnt[c0:c1, None]
        x2 = self.x[self.vstart[c0:c1, None] + np.where(valid, j[None, :], 0)]
        with np.errstate(over="ignore"):
            x2 -= self.slope[c0:c1].view(np.uint64)[:, None] * ju[None, :]
            x2 -= self.base[c0:c1].view(np.uint64)[:, None]
        x2[~valid] = 0
        return x2


def fit_blocks(values: np.ndarray, stripe_counts: np.ndarray, block_size: int) -> _Fit | None:
    """Cut stripes of one column into blocks and choose each block's ``(base, slope, w)``: frame of
    reference (``slope`` 0, ``base`` the minimum), or a linear fit when it needs fewer bits. The
    choice every format shares (format 3 lays the same blocks out compactly, host/pages.py).
    None when there are no values."""
    bs = int(block_size)
    x = _u(np.ascontiguousarray(values, dtype=np.int64))
    sc = np.asarray(stripe_counts, dtype=np.int64)
    S = len(sc)
    nb_s, cnt = block_counts(sc, bs)
    NB = len(cnt)
    if NB == 0:
        return None
    # block b starts at value vstart[b]; gather into [NB, BS], padding short blocks with their first value
    stripe_of_block = np.repeat(np.arange(S), nb_s)
    sstart = np.cumsum(sc) - sc
    bfirst = np.cumsum(nb_s) - nb_s
    vstart = sstart[stripe_of_block] + (np.arange(NB) - bfirst[stripe_of_block]) * bs
    # lanes per block row: many short stripes (small appends) must not pay for full BS-wide rows
    j = np.arange(int(cnt.max()), dtype=np.int64)
    ju = j.astype(np.uint64)
    base = np.empty(NB, dtype=np.int64)
    slope = np.empty(NB, dtype=np.int64)
    w = np.empty(NB, dtype=np.int64)
    # pass 1, a chunk of blocks at a time (bounded memory): choose (base, slope, w) per block
    for c0 in range(0, NB, _ENC_CHUNK):
        c1 = min(c0 + _ENC_CHUNK, NB)
        cc = cnt[c0:c1]
        valid = j[None, :] < cc[:, None]
        x2 = x[vstart[c0:c1, None] + np.where(valid, j[None, :], 0)]  # short blocks padded with their first value
        s2 = x2.view(np.int64)
        with np.errstate(over="ignore"):
            # plain frame of reference: base = min (signed); max - min is exact in uint64 (range < 2**64)
            base_for = s2.min(axis=1)
            w_for = bit_length(s2.max(axis=1).view(np.uint64) - base_for.view(np.uint64))
            # linear frame of reference: slope from the end points, rounded toward -inf, computed in
            # float (no overflow) and clipped; any slope decodes exactly (wrapping), so this only
            # affects the width, and the slope is kept only when it saves bits.
            first = s2[:, 0].astype(np.float64)
            last = s2[np.arange(c1 - c0), cc - 1].astype(np.float64)
            sl = np.floor((last - first) / np.maximum(cc - 1, 1))
            sl = np.where(cc > 1, np.clip(sl, -(2.0**62), 2.0**62), 0).astype(np.int64)
            e2 = (x2 - sl.view(np.uint64)[:, None] * ju[None, :]).view(np.int64)
            e2 = np.where(valid, e2, e2[:, :1])
            base_lin = e2.min(axis=1)
            w_lin = bit_length(e2.max(axis=1).view(np.uint64) - base_lin.view(np.uint64))
        use_lin = (w_lin < w_for) & (sl != 0)
        w[c0:c1] = np.where(use_lin, w_lin, w_for)
        base[c0:c1] = np.where(use_lin, base_lin, base_for)
        slope[c0:c1] = np.where(use_lin, sl, 0)
    return _Fit(x=x, j=j, nb_s=nb_s, cnt=cnt, base=base, slope=slope, w=w, stripe_of_block=stripe_of_block,
                bfirst=bfirst, vstart=vstart)


def encode_stripes(values: np.ndarray, stripe_counts: np.ndarray, block_size: int):
    """Encode many stripes of one column at once.

    ``values``: int64 ``[sum stripe_counts]``, the stripes' values back to back.
    Returns ``(region, blob_off, blob_words, enc)``: ``region`` int64, the blobs back to back (each
    a whole number of words, no gaps); ``blob_off[S]`` / ``blob_words[S]`` the word offset and length
    of stripe s's blob in ``region``; ``enc[S]`` ``ENC_FOR`` or ``ENC_LFOR``.

    >>> region, off, nw, enc = encode_stripes(np.arange(10, 20), np.array([4, 6]), 4)
    >>> decode_blob(region[off[1]:off[1] + nw[1]], 6, 4).tolist()
    [14, 15, 16, 17, 18, 19]
    """
    bs = int(block_size)
    S = len(np.asarray(stripe_counts))
    fit = fit_blocks(values, stripe_counts, bs)
    if fit is None:
        z = np.zeros(S, dtype=np.int64)
        return np.zeros(0, dtype=np.int64), z, z.copy(), z.copy()
    nb_s, cnt, base, slope, w = fit.nb_s, fit.cnt, fit.base, fit.slope, fit.w
    stripe_of_block, bfirst, NB = fit.stripe_of_block, fit.bfirst, len(fit.cnt)

    # layout: blob of stripe s = header (4 * nb_s words) + its blocks' packed words
    nw = words_for(cnt, w)
    packed_in_stripe = _segment_sums(nw.view(np.uint64), nb_s).view(np.int64)
    blob_words = HDR_WORDS * nb_s + packed_in_stripe
    blob_off = np.cumsum(blob_words) - blob_words
    # word_off of block b (relative to its blob): header, then the packed words of earlier blocks of the stripe
    cum_nw = np.cumsum(nw) - nw
    word_off = HDR_WORDS * nb_s[stripe_of_block] + cum_nw - cum_nw[bfirst[stripe_of_block]]
    region = np.zeros(int(blob_words.sum()), dtype=np.uint64)
    dst = blob_off[stripe_of_block] + word_off
    for c0 in range(0, NB, _ENC_CHUNK):  # pass 2: pack, a chunk of blocks at a time
        c1 = min(c0 + _ENC_CHUNK, NB)
        _pack(fit.residuals(c0, c1), w[c0:c1], nw[c0:c1], dst[c0:c1], region)

    meta = (word_off << 8) | w
    hpos = blob_off[stripe_of_block] + HDR_WORDS * (np.arange(NB) - bfirst[stripe_of_block])
    packed = region[ranges(blob_off[stripe_of_block] + word_off, nw)]
    h = block_hash(base, slope, meta, packed, nw)
    region[hpos] = base.view(np.uint64)
    region[hpos + 1] = slope.view(np.uint64)
    region[hpos + 2] = meta.view(np.uint64)
    region[hpos + 3] = h
    enc = (_segment_sums((slope != 0).astype(np.uint64), nb_s) > 0).astype(np.int64)
    return region.view(np.int64), blob_off, blob_words, enc


def encode_column(values: np.ndarray, block_size: int) -> tuple[np.ndarray, int]:
    """Encode one column of one stripe: ``(blob int64 [4 * nb + packed], enc)`` (``enc``: 0 FOR, 1 LFOR).

    >>> blob, enc = encode_column(np.array([100, 101, 103, 104], dtype=np.int64), 128)
    >>> decode_blob(blob, 4, 128).tolist(), enc
    ([100, 101, 103, 104], 1)
    """
    values = np.asarray(values, dtype=np.int64)
    region, _, _, enc = encode_stripes(values, np.array([len(values)]), block_size)
    return region, int(enc[0])


# --------------------------------------------------------------------------------------- decoding


_DEC_CHUNK = 1024  # blocks per bulk decode step: a few [chunk, lanes] temporaries stay in cache
_FEW_VALUES = 1 << 14  # up to this many lanes in all, ``_decode_few`` (every width at once) is cheaper
_VIEW_DTYPES = {8: np.uint8, 16: np.uint16, 32: np.uint32, 64: np.uint64}


def _unpack_rows(rows: np.ndarray, w: int, out: np.ndarray, tmp: np.ndarray) -> None:
    """Residuals of ``n`` blocks of width ``w`` into ``out`` (uint64 ``[n, lanes]``, ``lanes`` a multiple
    of 8), from their packed words, the rows of ``rows`` (uint64 ``[n, ceil(lanes * w / 64) + 1]``,
    C-contiguous, the last word a spare one so that no load runs past a row). ``tmp``: uint64 scratch
    of at least ``n * lanes`` values.

    No per-value index arrays: the layout of a width is fixed, so each case is a handful of bulk
    operations over whole blocks. Widths 8, 16, 32, 64 are plain views of the words (value ``k`` is
    element ``k``: little-endian). Widths up to 56: 8 values take exactly ``w`` bytes, so value
    ``8g + i`` starts at byte ``g * w + (i * w) // 8``, bit ``(i * w) % 8``: for each of the 8 phases
    ``i``, one strided (unaligned) 8-byte load of every group and a shift into a contiguous plane,
    then one pass interleaves the planes and masks. Widths 57..63: the two words each value spans,
    by column (the same columns for every block)."""
    n, lanes = out.shape
    if w in _VIEW_DTYPES:
        np.copyto(out, rows.view(_VIEW_DTYPES[w])[:, :lanes], casting="unsafe")
        return
    mask = (_ONE << _U64(w)) - _ONE
    if w <= 56:  # the 8-byte load at byte (i * w) // 8 holds the whole value: shift <= 7, 7 + 56 <= 64
        g = lanes // 8
        planes = tmp.reshape(-1)[: n * lanes].reshape(8, n, g)
        rb = rows.strides[0]
        for i in range(8):
            src = np.ndarray((n, g), dtype=np.uint64, buffer=rows, offset=(i * w) >> 3, strides=(rb, w))
            np.right_shift(src, _U64((i * w) & 7), out=planes[i])
        np.bitwise_and(planes.transpose(1, 2, 0), mask, out=out.reshape(n, g, 8))
        return
    k = np.arange(lanes, dtype=np.int64)
    q, sh = (k * w) >> 6, ((k * w) & 63).astype(np.uint64)
    np.right_shift(np.take(rows, q, axis=1), sh, out=out)
    hi = np.take(rows, q + 1, axis=1)
    hi <<= (_U64(64) - sh) & _U64(63)
    hi[:, sh == 0] = 0  # a value that starts a word takes nothing from the next one
    out |= hi
    out &= mask


def _decode_chunks(hdr: np.ndarray, words, lanes: int):
    """Decode K blocks at ``lanes`` lanes (a multiple of 8), a chunk of blocks of one width at a time:
    yields ``(idx, vals)``, ``vals`` uint64 ``[len(idx), lanes]`` (a reused buffer: consume it before
    the next step) holding blocks ``idx`` (an index array or a slice). Lanes at or past a block's
    count hold unspecified values (the bits after its own). ``words`` must hold every block's packed
    words (verified hashes guarantee it)."""
    K = hdr.shape[0]
    w_all = hdr[:, 2] & 255
    off_all = hdr[:, 2] >> 8
    order = np.argsort(w_all, kind="stable")
    ws = w_all[order]
    cut = np.flatnonzero(np.diff(ws)) + 1
    first = np.concatenate([[0], cut]).tolist()
    last = np.concatenate([cut, [K]]).tolist()
    in_order = len(first) == 1 or not (order != np.arange(K)).any()
    base_all, slope_all = _u(hdr[:, 0]), _u(hdr[:, 1])
    if not in_order:
        base_all, slope_all, off_all = base_all[order], slope_all[order], off_all[order]
    # spare words: a row of a short block (or of the last block) may run past the words it owns;
    # what it reads there only reaches lanes past the block's count
    spare = (lanes * int(ws[-1]) + 63) // 64 + 1
    wds = np.concatenate([_u(np.asarray(words, dtype=np.int64)).reshape(-1), np.zeros(spare, np.uint64)])
    ku = np.arange(lanes, dtype=np.uint64)
    # chunk buffers, reused across chunks: they stay in cache
    step = max(1, (_DEC_CHUNK * 128) // lanes)  # about 128k values a step, whatever the block size
    ch = min(K, step)
    buf = np.empty((ch, lanes), dtype=np.uint64)
    tmp = np.empty((ch, lanes), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for a, b in zip(first, last):
            wv = int(ws[a])
            col = np.arange((lanes * wv + 63) // 64 + 1, dtype=np.int64)
            for c0 in range(a, b, step):
                c1 = min(c0 + step, b)
                o = buf[: c1 - c0]
                if wv:
                    _unpack_rows(wds[off_all[c0:c1, None] + col[None, :]], wv, o, tmp)
                    o += base_all[c0:c1, None]
                else:
                    o[:] = base_all[c0:c1, None]
                slope = slope_all[c0:c1]
                if slope.any():
                    t = tmp[: c1 - c0]
                    np.multiply(slope[:, None], ku[None, :], out=t)
                    o += t
                yield (slice(c0, c1) if in_order else order[c0:c1]), o


_MASKS = np.array([(1 << w) - 1 for w in range(65)], dtype=np.uint64)  # 2**64 - 1 fits: w = 64 is all ones


def _decode_few(hdr: np.ndarray, words, lanes: int) -> np.ndarray:
    """``decode_blocks_padded`` for a few blocks of many widths (uint64 ``[K, lanes]``): every width in
    the same few operations, where the bulk path pays its fixed cost once per width for a handful
    of blocks. Value ``k`` of a block of width ``w <= 56`` is one unaligned 8-byte load at byte
    ``8 * word_off + (k * w) // 8`` (a view whose element ``j`` starts at byte ``j``), shifted by
    ``(k * w) % 8`` and masked; wider blocks take the two words each value spans."""
    K = hdr.shape[0]
    w = hdr[:, 2] & 255
    off = hdr[:, 2] >> 8
    k = np.arange(lanes, dtype=np.int64)
    kw = w[:, None] * k[None, :]
    wds = np.concatenate([_u(np.asarray(words, dtype=np.int64)).reshape(-1), np.zeros(lanes + 2, np.uint64)])
    win = np.ndarray((wds.size * 8 - 7,), dtype=np.uint64, buffer=wds, strides=(1,))  # element j: bytes j..j+7
    with np.errstate(over="ignore"):
        r = win[(kw >> 3) + (off * 8)[:, None]]
        r >>= (kw & 7).astype(np.uint64)
        wide = np.flatnonzero(w > 56)
        if wide.size:  # a value may span 9 bytes: the two words it touches
            bit = off[wide, None] * 64 + kw[wide]
            q, sh = bit >> 6, (bit & 63).astype(np.uint64)
            hi = wds[q + 1] << ((_U64(64) - sh) & _U64(63))
            hi[sh == 0] = 0
            r[wide] = (wds[q] >> sh) | hi
        r &= _MASKS[w][:, None]
        r += _u(hdr[:, 0])[:, None]
        slope = _u(hdr[:, 1])
        if slope.any():
            r += slope[:, None] * k.astype(np.uint64)[None, :]
    return r.reshape(K, lanes)


def decode_blocks_padded(hdr: np.ndarray, words: np.ndarray, lanes: int, dicts=None) -> np.ndarray:
    """Values ``0 .. lanes - 1`` of K blocks as int64 ``[K, lanes]`` (``lanes`` a multiple of 8): row
    ``k`` is block ``k``; lanes at or past a block's count hold unspecified values (the bits after its
    own, or zeros). ``words`` must hold every block's packed words (verified hashes guarantee it);
    ``dicts``: the column's dictionaries (docs/DESIGN.md §4), for its DICT blocks.

    Bulk, per bit width: the blocks are taken in width order; the blocks of one width have their
    packed words copied into the rows of a small matrix (one gather of words, not of values), the
    residuals come out of it by views, strided loads and shifts (``_unpack_rows``), and
    ``base + slope * k`` is added per row."""
    hdr = np.asarray(hdr, dtype=np.int64).reshape(-1, 3)
    pad = _decode_blocks_padded(hdr, words, lanes, dicts)
    if lanes and (hdr[:, 2] & AUX_FLAG).any() and not native.available()[0]:  # DICT blocks: codes, then a lookup each
        b = dict_blocks(hdr, words)
        if len(b):
            pad[b] = dict_lookup(dicts, pad[b])
    return pad


def _decode_blocks_padded(hdr: np.ndarray, words: np.ndarray, lanes: int, dicts=None) -> np.ndarray:
    """``decode_blocks_padded``; the C decoder also looks up DICT blocks' values in ``dicts``."""
    hdr = np.asarray(hdr, dtype=np.int64).reshape(-1, 3)
    K = hdr.shape[0]
    aux = (hdr[:, 2] & AUX_FLAG) != 0
    if K and lanes and aux.any() and not native.available()[0]:  # PATCH / RUN blocks: the lane formula
        pad = np.empty((K, lanes), dtype=np.int64)
        p, a = np.flatnonzero(~aux), np.flatnonzero(aux)
        pad[p] = _decode_blocks_padded(hdr[p], words, lanes)
        pad[a] = decode_values(hdr, words, np.repeat(a, lanes), np.tile(np.arange(lanes), len(a)), lookup=False).reshape(-1, lanes)
        return pad
    if K and lanes and native.available()[0]:
        pad = np.empty((K, lanes), dtype=np.int64)
        _native_decode(hdr, words, None, np.full(K, lanes, np.int64), np.arange(K, dtype=np.int64) * lanes, pad,
                       clamp=True, dicts=dicts)
        return pad
    if K and lanes and K * lanes <= _FEW_VALUES:
        return _decode_few(hdr, words, lanes).view(np.int64)
    pad = np.empty((K, lanes), dtype=np.uint64)
    if K and lanes:
        for idx, vals in _decode_chunks(hdr, words, lanes):
            pad[idx] = vals
    return pad.view(np.int64)


def decode_blocks(hdr: np.ndarray, words: np.ndarray, counts: np.ndarray, lo: np.ndarray | None = None,
                  dicts=None) -> np.ndarray:
    """Decode K blocks into one dense int64 array: block k contributes values ``[lo[k], lo[k] + counts[k])``
    of its block (``lo`` defaults to 0), in block order. ``dicts``: the column's dictionaries, for its
    DICT blocks (docs/DESIGN.md §4).

    ``hdr``: int64 ``[K, 3]`` (base, slope, meta) with ``word_off`` indexing ``words``; ``words``: int64.
    The caller guarantees (by verified hashes) that each block's packed words lie inside ``words``.
    Decoded in bulk as ``decode_blocks_padded`` does; a block of ``lanes`` values is copied whole to
    its place in the output (a row of a view whose row ``s`` starts at output position ``s``), the
    values of the other blocks one by one.

    >>> blob, _ = encode_column(np.array([5, -7, 9, 11, 13], dtype=np.int64), 4)
    >>> h = blob[: 2 * 4].reshape(2, 4)[:, :3]
    >>> decode_blocks(h, blob, np.array([4, 1])).tolist()
    [5, -7, 9, 11, 13]
    >>> decode_blocks(h, blob, np.array([2, 1]), lo=np.array([1, 0])).tolist()
    [-7, 9, 13]
    """
    hdr = np.asarray(hdr, dtype=np.int64).reshape(-1, 3)
    counts = np.asarray(counts, dtype=np.int64)
    out = _decode_blocks(hdr, words, counts, lo, dicts)
    if (hdr[:, 2] & AUX_FLAG).any() and not native.available()[0]:  # DICT blocks: codes, then a lookup each
        b = dict_blocks(hdr, words)
        if len(b):
            at = ranges((np.cumsum(counts) - counts)[b], counts[b])
            out[at] = dict_lookup(dicts, out[at])
    return out


def _decode_blocks(hdr: np.ndarray, words: np.ndarray, counts: np.ndarray, lo: np.ndarray | None = None,
                   dicts=None) -> np.ndarray:
    """``decode_blocks``; the C decoder also looks up DICT blocks' values in ``dicts``."""
    hdr = np.asarray(hdr, dtype=np.int64).reshape(-1, 3)
    counts = np.asarray(counts, dtype=np.int64)
    aux = (hdr[:, 2] & AUX_FLAG) != 0
    if aux.any() and not native.available()[0]:  # PATCH / RUN blocks: the lane formula, the rest in bulk
        out = np.empty(int(counts.sum()), dtype=np.int64)
        at = np.cumsum(counts) - counts
        p, a = np.flatnonzero(~aux), np.flatnonzero(aux)
        out[ranges(at[p], counts[p])] = _decode_blocks(hdr[p], words, counts[p], None if lo is None else np.asarray(lo)[p])
        k = ranges(np.zeros(len(a), np.int64) if lo is None else np.asarray(lo, dtype=np.int64)[a], counts[a])
        out[ranges(at[a], counts[a])] = decode_values(hdr, words, np.repeat(a, counts[a]), k, lookup=False)
        return out
    if lo is not None and native.available()[0]:  # only the wanted values: no decode-then-select
        lo = np.ascontiguousarray(lo, dtype=np.int64)
        out = np.empty(int(counts.sum()), dtype=np.int64)
        if out.size:
            _native_decode(hdr, words, lo, counts, np.cumsum(counts) - counts, out, dicts=dicts)
        return out
    if lo is not None:
        lo = np.asarray(lo, dtype=np.int64)
        full = _decode_blocks(hdr, words, lo + counts)
        start = np.cumsum(lo + counts) - (lo + counts)
        return full[ranges(start + lo, counts)]
    total = int(counts.sum())
    out = np.empty(total, dtype=np.uint64)
    if total == 0:
        return out.view(np.int64)
    if native.available()[0]:
        _native_decode(hdr, words, None, counts, np.cumsum(counts) - counts, out, dicts=dicts)
        return out.view(np.int64)
    lanes = -(-int(counts.max()) // 8) * 8  # a multiple of 8: whole groups of 8 values
    if len(counts) * lanes <= _FEW_VALUES:
        pad = _decode_few(hdr, words, lanes).view(np.int64)
        return pad.reshape(-1) if (counts == lanes).all() else pad[np.arange(lanes)[None, :] < counts[:, None]]
    start = np.cumsum(counts) - counts
    rows = np.lib.stride_tricks.as_strided(out, shape=(max(total - lanes + 1, 0), lanes), strides=(8, 8))
    full = counts == lanes
    short = np.flatnonzero(~full)
    # the blocks of fewer values (a stripe's last) are kept aside, then placed value by value at once
    short_at = np.full(len(counts), -1, np.int64)
    short_at[short] = np.arange(len(short))
    side = np.empty((len(short), lanes), dtype=np.uint64)
    for idx, vals in _decode_chunks(hdr, words, lanes):
        if not len(short):
            rows[start[idx]] = vals
            continue
        f = full[idx]
        if f.all():
            rows[start[idx]] = vals
            continue
        if f.any():
            rows[start[idx][f]] = vals[f]
        side[short_at[idx][~f]] = vals[~f]
    if len(short):
        c = counts[short]
        out[ranges(start[short], c)] = side[np.arange(lanes)[None, :] < c[:, None]]
    return out.view(np.int64)


def _native_decode(hdr, words, lo, counts, dst, out, clamp: bool = False, dicts=None) -> None:
    """``native.decode`` on contiguous int64 views (DICT blocks looked up in ``dicts``); a block outside
    ``words`` is a ``CorruptionError``."""
    hdr = np.ascontiguousarray(hdr, dtype=np.int64)
    words = np.ascontiguousarray(words, dtype=np.int64).reshape(-1)
    d = None if dicts is None else np.ascontiguousarray(dicts, dtype=np.int64).reshape(-1)
    bad = native.decode(hdr, words, lo, np.ascontiguousarray(counts, dtype=np.int64), dst, out, clamp, d)
    if bad:
        k = bad - 1
        raise CorruptionError(f"block {k}: header (base, slope, meta) = {hdr[k].tolist()} points outside the "
                              f"{words.size} packed words read")


def decode_blob(blob: np.ndarray, count: int, block_size: int) -> np.ndarray:
    """Decode a whole blob of ``count`` values (hashes verified: ``CorruptionError`` on a mismatch)."""
    blob = np.asarray(blob, dtype=np.int64)
    _, cnt = block_counts(np.array([count]), block_size)
    hdr4 = blob[: HDR_WORDS * len(cnt)].reshape(-1, HDR_WORDS) if len(cnt) else np.zeros((0, 4), np.int64)
    if len(hdr4) != len(cnt):
        raise CorruptionError(f"blob of {len(blob)} words too short for {len(cnt)} block headers")
    check_blocks(hdr4, blob, cnt, np.zeros(len(cnt), np.int64), np.full(len(cnt), len(blob), np.int64))
    return decode_blocks(hdr4[:, :3], blob, cnt)


def check_blocks(hdr4: np.ndarray, words: np.ndarray, cnt: np.ndarray, blob_start: np.ndarray, blob_len: np.ndarray, where: str = "blob"):
    """Verify K blocks whose blobs start at word ``blob_start[k]`` of ``words`` (``blob_len[k]`` words long):
    header sanity (width, packed range inside the blob) and the mix64 hash. ``CorruptionError`` naming
    ``where`` on the first failure; returns the blocks' packed word counts."""
    hdr4 = np.asarray(hdr4, dtype=np.int64)
    meta = hdr4[:, 2]
    w = meta & 255
    off = meta >> 8
    nw = words_for(cnt, np.minimum(w, 64))
    bad = (w > 64) | (off < 0) | (off + nw > blob_len) | (meta < 0)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise CorruptionError(f"{where}: block {k} has an invalid header (meta {int(meta[k])})")
    packed = _u(words)[ranges(blob_start + off, nw)]
    h = block_hash(hdr4[:, 0], hdr4[:, 1], meta, packed, nw)
    bad = h != _u(hdr4[:, 3])
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise CorruptionError(f"{where}: block {k} fails its checksum ({int(bad.sum())} bad block(s))")
    return nw, packed
