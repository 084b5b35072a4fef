"""Format 3's compact blob layout (docs/DESIGN.md §1 "Format 3"): the same blocks as format 2
(``host.codec.fit_blocks``: base, slope, width per block of ``block_size`` values), laid out in
a fraction of the bytes, and turned back into format 2's staged form when read.

A blob (one stripe, one column) of ``nb`` blocks, in pages of ``PAGE_BLOCKS`` blocks::

    [tags: u8 per block][anchors: (u32, u32) per page, only with more than one page]
    [payload: every block's residual bits back to back][fields: LEB128 varints, page after page]

- tag: the block's width ``w`` (0..64), plus ``TAG_LFOR`` (128) when the block has a slope; other
  values are reserved for the encodings of the next steps (``CorruptionError`` today).
- payload: value ``k`` of block ``j`` is bits ``[P_j + k w_j, P_j + (k + 1) w_j)`` of the payload
  (LSB first), ``P_j`` the bits of the blob's earlier blocks; zero bits to a whole byte.
- fields, per block: ``zigzag(base - prediction)``, then ``zigzag(slope)`` for an LFOR block. The
  prediction is 0 for a page's first block, else where the previous block's line ended
  (``base + slope * count``), so each page's fields parse on their own.
- anchors of page ``p``: the byte offset (from the blob start) of its first field, and the payload
  bit offset of its first block. With one page, the payload starts after the tags and the fields
  after the payload.

So a reader of blocks ``[lo, hi)`` reads, at known offsets, the tags of their pages and the
anchors around them, then the fields of those pages and exactly the payload bits of ``[lo, hi)``:
a window is still read at block granularity. Blobs sit back to back at byte granularity; a
segment's checksums are per chunk of its blob region (host/segment.py), so what a read uses is
verified. On the bench workload the 32 bytes of header per block and column of format 2 were 13%
of the tier.

Parsing (``parse_fields``) decodes the varints of all pages of a batch at once and rebuilds the
bases by a segmented prefix sum; ``stage_blocks`` copies each block's bits to a word boundary
(``realign``: in C when built). The result is format 2's ``hdr [K, 3]`` and ``words``: the staged
contract and every kernel are unchanged.
"""

from __future__ import annotations

import numpy as np

from gpumat.core.errors import CorruptionError
from gpumat.host import codec, native
from gpumat.host.ranges import ranges

PAGE_BLOCKS = 16  # blocks per page: the unit a read parses, and its read amplification at most
TAG_LFOR = 0x80
_U64 = np.uint64


def zigzag(v: np.ndarray) -> np.ndarray:
    """int64 -> uint64: 0, -1, 1, -2 ... -> 0, 1, 2, 3 ... (wrapping)."""
    v = np.asarray(v, dtype=np.int64)
    return (v.view(_U64) << _U64(1)) ^ (v >> np.int64(63)).view(_U64)


def unzigzag(z: np.ndarray) -> np.ndarray:
    """uint64 -> int64, the inverse of ``zigzag``."""
    z = np.asarray(z, dtype=_U64)
    return ((z >> _U64(1)) ^ (_U64(0) - (z & _U64(1)))).view(np.int64)


def varint_len(v: np.ndarray) -> np.ndarray:
    """Bytes of the LEB128 varint of each uint64 (1..10)."""
    return np.maximum(1, (codec.bit_length(v) + 6) // 7)


def varint_bytes(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The varints of ``v`` (uint64) back to back: ``(bytes uint8, length of each)``.

    >>> b, n = varint_bytes(np.array([0, 127, 128, 300], dtype=np.uint64)); b.tolist(), n.tolist()
    ([0, 127, 128, 1, 172, 2], [1, 1, 2, 2])
    """
    v = np.asarray(v, dtype=_U64)
    n = varint_len(v)
    owner = np.repeat(np.arange(len(v)), n)
    t = np.arange(len(owner), dtype=np.int64) - np.repeat(np.cumsum(n) - n, n)  # byte index within the varint
    b = (v[owner] >> (7 * t).astype(_U64)) & _U64(0x7F)
    b |= np.where(t < n[owner] - 1, _U64(0x80), _U64(0))
    return b.astype(np.uint8), n


def varint_decode(b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every varint of the byte stream ``b`` (which must end one): ``(values uint64, end index of each)``.
    ``CorruptionError`` for a varint of more than 10 bytes or past 64 bits."""
    b = np.asarray(b, dtype=np.uint8)
    end = np.flatnonzero(b < 0x80)
    if len(b) and (not len(end) or end[-1] != len(b) - 1):
        raise CorruptionError("fields: a varint runs past the end of its page")
    start = np.concatenate(([0], end[:-1] + 1)) if len(end) else end
    n = end - start + 1
    if len(n) and (n.max() > 10 or (b[end[n == 10]] > 1).any()):
        raise CorruptionError("fields: a varint longer than 64 bits")
    t = np.arange(len(b), dtype=np.int64) - np.repeat(start, n)
    vals = (b.astype(_U64) & _U64(0x7F)) << (7 * t).astype(_U64)
    out = np.add.reduceat(vals, start) if len(start) else np.zeros(0, _U64)
    return out.astype(_U64, copy=False), end


def page_layout(nb_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pages of stripes of ``nb_s`` blocks: ``(pages per stripe, each page's stripe)``."""
    nb_s = np.asarray(nb_s, dtype=np.int64)
    np_s = (nb_s + PAGE_BLOCKS - 1) // PAGE_BLOCKS
    return np_s, np.repeat(np.arange(len(nb_s)), np_s)


def encode_stripes(values: np.ndarray, stripe_counts: np.ndarray, block_size: int):
    """Encode many stripes of one column in the format-3 layout.

    Returns ``(region, blob_off, blob_nbytes, enc)``: ``region`` uint8, the blobs back to back;
    ``blob_off[S]`` / ``blob_nbytes[S]`` each stripe's byte range in it; ``enc[S]`` ``ENC_LFOR``
    where some block has a slope, else ``ENC_FOR``.

    >>> region, off, n, enc = encode_stripes(np.arange(10, 20), np.array([4, 6]), 4)
    >>> decode_blob(region[off[1]:off[1] + n[1]], 6, 4).tolist()
    [14, 15, 16, 17, 18, 19]
    """
    bs = int(block_size)
    sc = np.asarray(stripe_counts, dtype=np.int64)
    S = len(sc)
    fit = codec.fit_blocks(values, sc, bs)
    if fit is None:
        z = np.zeros(S, dtype=np.int64)
        return np.zeros(0, dtype=np.uint8), z, z.copy(), z.copy()
    nb_s, cnt, base, slope, w = fit.nb_s, fit.cnt, fit.base, fit.slope, fit.w
    NB = len(cnt)
    sob = fit.stripe_of_block
    jin = np.arange(NB, dtype=np.int64) - fit.bfirst[sob]  # block index within its stripe
    np_s, page_stripe = page_layout(nb_s)
    NP = len(page_stripe)
    page_first_abs = np.cumsum(np_s) - np_s  # each stripe's first page
    page_of = page_first_abs[sob] + jin // PAGE_BLOCKS
    starts_page = jin % PAGE_BLOCKS == 0
    lfor = slope != 0
    tag = (w | np.where(lfor, TAG_LFOR, 0)).astype(np.uint8)
    with np.errstate(over="ignore"):
        pred = np.zeros(NB, dtype=_U64)
        prev_end = base.view(_U64) + slope.view(_U64) * cnt.astype(_U64)
        pred[1:] = prev_end[:-1]
        pred[starts_page] = 0
        d = zigzag((base.view(_U64) - pred).view(np.int64))
    nv = 1 + lfor.astype(np.int64)
    vpos = np.cumsum(nv) - nv
    vals = np.empty(int(nv.sum()), dtype=_U64)
    vals[vpos] = d
    vals[vpos[lfor] + 1] = zigzag(slope[lfor])
    fbytes, flen = varint_bytes(vals)
    fl_block = codec._segment_sums(flen.astype(_U64), nv).view(np.int64)
    fl_page = np.bincount(page_of, weights=fl_block, minlength=NP).astype(np.int64)
    bits = cnt * w
    bits_s = np.bincount(sob, weights=bits, minlength=S).astype(np.int64)
    anchors = np.where(np_s > 1, 8 * np_s, 0)
    pay_at = nb_s + anchors  # the payload's first byte, from the blob start
    fld_at = pay_at + ((bits_s + 7) >> 3)  # the fields' first byte
    blob_nbytes = fld_at + np.bincount(page_stripe, weights=fl_page, minlength=S).astype(np.int64)
    blob_off = np.cumsum(blob_nbytes) - blob_nbytes
    R = int(blob_nbytes.sum())
    region64 = np.zeros((R + 7) // 8 + 2, dtype=_U64)
    # the payload (ORed in at bit positions; tags, anchors and fields fill other bytes)
    cb = np.cumsum(bits) - bits
    bit_in_stripe = cb - cb[fit.bfirst[sob]]
    dst_bit = (blob_off + pay_at)[sob] * 8 + bit_in_stripe
    nw = codec.words_for(cnt, w)
    packed = np.zeros(int(nw.sum()) + 1, dtype=_U64)
    woff = np.cumsum(nw) - nw
    for c0 in range(0, NB, codec._ENC_CHUNK):
        c1 = min(c0 + codec._ENC_CHUNK, NB)
        codec._pack(fit.residuals(c0, c1), w[c0:c1], nw[c0:c1], woff[c0:c1], packed)
    _scatter_bits(packed, woff, nw, dst_bit, region64)
    region = region64.view(np.uint8)[:R].copy()
    region[blob_off[sob] + jin] = tag
    # anchors of stripes of several pages: (u32 first field byte, u32 first payload bit) per page
    cfp = np.cumsum(fl_page) - fl_page
    f_rel = fld_at[page_stripe] + cfp - cfp[page_first_abs[page_stripe]]
    p_rel = bit_in_stripe[np.flatnonzero(starts_page)]  # pages are in block order: page k starts block 16k
    multi = np.flatnonzero(np_s[page_stripe] > 1)
    if len(multi) and (max(int(f_rel[multi].max()), int(p_rel[multi].max())) >= 1 << 32):
        raise ValueError("format 3 anchors are u32: a stripe's blob must stay under 512 MiB (the writer's "
                         "stripes of 2^20 events are far below)")
    if len(multi):
        kin = np.arange(NP) - page_first_abs[page_stripe]
        at = blob_off[page_stripe[multi]] + nb_s[page_stripe[multi]] + 8 * kin[multi]
        pair = np.stack([f_rel[multi], p_rel[multi]], 1).astype("<u4")
        region[ranges(at, np.full(len(at), 8))] = pair.view(np.uint8).reshape(-1)
    fb_in_page = np.cumsum(fl_block) - fl_block
    fb_in_page -= fb_in_page[_first_of(page_of)]
    fdst = blob_off[sob] + f_rel[page_of] + fb_in_page
    region[ranges(fdst, fl_block)] = fbytes
    enc = (np.bincount(sob, weights=lfor, minlength=S) > 0).astype(np.int64)
    return region, blob_off, blob_nbytes, enc


def _first_of(group: np.ndarray) -> np.ndarray:
    """For a sorted group id per element, the index of each element's group's first element."""
    new = np.ones(len(group), bool)
    new[1:] = group[1:] != group[:-1]
    first = np.flatnonzero(new)
    return first[np.cumsum(new) - 1]


def _scatter_bits(packed: np.ndarray, woff: np.ndarray, nw: np.ndarray, dst_bit: np.ndarray, out: np.ndarray) -> None:
    """OR block k's ``nw[k]`` words (``packed[woff[k]:]``, zero past its bits) into the uint64 stream
    ``out`` at bit ``dst_bit[k]`` (the blocks' bit ranges are disjoint)."""
    owner = np.repeat(np.arange(len(nw)), nw)
    i = np.arange(len(owner), dtype=np.int64) - np.repeat(np.cumsum(nw) - nw, nw)
    src = packed[np.repeat(woff, nw) + i]
    bit = dst_bit[owner] + 64 * i
    q, s = bit >> 6, (bit & 63).astype(_U64)
    np.bitwise_or.at(out, q, src << s)
    hi = s > 0
    np.bitwise_or.at(out, q[hi] + 1, src[hi] >> (_U64(64) - s[hi]))


def realign(buf: np.ndarray, src_bit: np.ndarray, nbits: np.ndarray, out: np.ndarray, dst_word: np.ndarray) -> None:
    """Copy bits ``[src_bit[k], src_bit[k] + nbits[k])`` of the byte stream ``buf`` to ``out`` (uint64)
    from word ``dst_word[k]``, zero past them: the words format 2 would have stored."""
    nbits = np.ascontiguousarray(nbits, dtype=np.int64)
    nw = (nbits + 63) >> 6
    if not len(nw) or not nw.sum():
        return
    if int((src_bit + nbits).max()) > 8 * len(buf) or (src_bit < 0).any():
        raise CorruptionError("payload: a block's bits lie outside its blob")
    if native.available()[0]:
        native.realign(np.ascontiguousarray(buf, dtype=np.uint8), np.ascontiguousarray(src_bit, dtype=np.int64),
                       nbits, np.ascontiguousarray(dst_word, dtype=np.int64), out)
        return
    padded = np.concatenate([np.asarray(buf, dtype=np.uint8), np.zeros(16, np.uint8)])
    win = np.ndarray((len(padded) - 7,), dtype=_U64, buffer=padded, strides=(1,))  # element j: bytes j..j+7
    owner = np.repeat(np.arange(len(nw)), nw)
    i = np.arange(len(owner), dtype=np.int64) - np.repeat(np.cumsum(nw) - nw, nw)
    bit = src_bit[owner] + 64 * i
    byte, sh = bit >> 3, (bit & 7).astype(_U64)
    v = win[byte] >> sh
    v |= np.where(sh > 0, padded[byte + 8].astype(_U64) << ((_U64(64) - sh) & _U64(63)), _U64(0))
    rem = nbits[owner] - 64 * i  # bits of this word that belong to the block (1..64 for the last)
    v &= np.where(rem >= 64, ~_U64(0), (_U64(1) << np.minimum(rem, 63).astype(_U64)) - _U64(1))
    out[np.repeat(dst_word, nw) + i] = v


def check_tags(tags: np.ndarray, where: str = "pages") -> None:
    """``CorruptionError`` for a tag that is not FOR/LFOR of width 0..64 (later formats' encodings)."""
    bad = (np.asarray(tags, np.int64) & 0x7F) > 64
    if bad.any():
        raise CorruptionError(f"{where}: block tag {int(np.asarray(tags)[np.flatnonzero(bad)[0]])} is not an "
                              f"encoding this release reads")


def parse_fields(fbuf: np.ndarray, fstart: np.ndarray, fend: np.ndarray, tag: np.ndarray, cnt: np.ndarray,
                 page_of: np.ndarray, where: str = "pages"):
    """Bases and slopes of the blocks of whole pages: page ``p``'s fields are bytes ``[fstart[p],
    fend[p])`` of ``fbuf``; its blocks (``page_of``, sorted) have tags ``tag`` and ``cnt`` values.
    Returns ``(w, base, slope)`` per block. An unknown tag, or fields that are not exactly the
    page's varints, is a ``CorruptionError`` naming ``where``."""
    tag = np.asarray(tag, dtype=np.int64)
    cnt = np.asarray(cnt, dtype=np.int64)
    check_tags(tag, where)
    w = tag & 0x7F
    lfor = (tag & TAG_LFOR) != 0
    fstart = np.ascontiguousarray(fstart, dtype=np.int64)
    fend = np.ascontiguousarray(fend, dtype=np.int64)
    flen = fend - fstart
    if (flen < 0).any() or (fstart < 0).any() or (fend > len(fbuf)).any():
        raise CorruptionError(f"{where}: a page's fields are out of order")
    if native.available()[0]:
        base, slope, bad = native.parse_fields(np.ascontiguousarray(fbuf, dtype=np.uint8), fstart, fend,
                                               np.ascontiguousarray(tag), np.ascontiguousarray(cnt),
                                               np.ascontiguousarray(page_of, dtype=np.int64))
        if bad:
            raise CorruptionError(f"{where}: a page's fields do not match its tags")
        return w, base, slope
    vals, end = varint_decode(fbuf[ranges(fstart, flen)])
    nv = 1 + lfor.astype(np.int64)
    nv_page = np.bincount(page_of, weights=nv, minlength=len(flen)).astype(np.int64)
    fcum = np.cumsum(flen)
    got = np.diff(np.concatenate(([0], np.searchsorted(end, fcum - 1, side="right"))))
    if len(vals) != int(nv.sum()) or (got != nv_page).any() or not np.isin(fcum[flen > 0] - 1, end).all():
        raise CorruptionError(f"{where}: a page's fields do not match its tags")
    vpos = np.cumsum(nv) - nv
    d = unzigzag(vals[vpos])
    slope = np.zeros(len(cnt), dtype=np.int64)
    slope[lfor] = unzigzag(vals[vpos[lfor] + 1])
    # base_j = d_j + (the previous block's base + slope * count) within a page: a segmented cumsum
    with np.errstate(over="ignore"):
        term = d.view(_U64).copy()
        term[1:] += slope[:-1].view(_U64) * cnt[:-1].astype(_U64)
        fb0 = _first_of(page_of)
        starts = np.flatnonzero(fb0 == np.arange(len(cnt)))
        term[starts] = d.view(_U64)[starts]
        cs = np.cumsum(term, dtype=_U64)
        base = (cs - (cs - term)[fb0]).view(np.int64)
    return w, base, slope


def stage_blocks(pay: np.ndarray, src_bit: np.ndarray, cnt: np.ndarray, w: np.ndarray, base: np.ndarray,
                 slope: np.ndarray):
    """Format 2's staged form of blocks whose residual bits start at bit ``src_bit`` of ``pay``
    (uint8): ``(hdr int64 [K, 3], words int64)``, each block's bits realigned to a word boundary,
    one zero word at the end."""
    nw = codec.words_for(cnt, w)
    out_off = np.cumsum(nw) - nw
    words = np.empty(int(nw.sum()) + 1, dtype=_U64)  # realign writes every word of every block
    words[-1] = 0
    realign(pay, np.asarray(src_bit, dtype=np.int64), cnt * w, words, out_off)
    hdr = np.empty((len(cnt), 3), dtype=np.int64)
    hdr[:, 0] = base
    hdr[:, 1] = slope
    hdr[:, 2] = (out_off << 8) | w
    return hdr, words.view(np.int64)


def blob_layout(nb: int, blob_len: int, tags: np.ndarray, anchors: np.ndarray | None, cnt: np.ndarray):
    """Where a blob's pieces are: ``(payload start byte, fields start of each page, fields end of each
    page)``, from its ``nb`` tags, its anchors (u32 ``[npages, 2]``, None for one page) and block counts.
    ``CorruptionError`` when they disagree with each other or the blob length."""
    check_tags(tags, "blob")
    bits = cnt * (np.asarray(tags, np.int64) & 0x7F)
    npg = -(-nb // PAGE_BLOCKS)
    pay = nb + (8 * npg if npg > 1 else 0)
    fld = pay + ((int(bits.sum()) + 7) >> 3)
    if npg > 1:
        f = anchors[:, 0].astype(np.int64)
        pb = anchors[:, 1].astype(np.int64)
        want_pb = np.concatenate(([0], np.cumsum(bits)))[::PAGE_BLOCKS][:npg]
        if f[0] != fld or (np.diff(f) < 0).any() or f[-1] > blob_len or (pb != want_pb).any():
            raise CorruptionError("blob: its anchors disagree with its tags")
        return pay, f, np.append(f[1:], blob_len)
    if fld > blob_len:
        raise CorruptionError("blob: shorter than its payload")
    return pay, np.array([fld]), np.array([blob_len])


def decode_blob(blob: np.ndarray, count: int, block_size: int) -> np.ndarray:
    """All values of one blob of ``count`` values (no checksum: those are per segment chunk)."""
    blob = np.asarray(blob, dtype=np.uint8)
    _, cnt = codec.block_counts(np.array([count]), block_size)
    nb = len(cnt)
    npg = -(-nb // PAGE_BLOCKS)
    if len(blob) < nb + (8 * npg if npg > 1 else 0):
        raise CorruptionError("blob: shorter than its tags")
    tags = blob[:nb]
    anchors = np.frombuffer(blob[nb : nb + 8 * npg].tobytes(), "<u4").reshape(-1, 2) if npg > 1 else None
    pay, fs, fe = blob_layout(nb, len(blob), tags, anchors, cnt)
    page_of = np.arange(nb) // PAGE_BLOCKS
    w, base, slope = parse_fields(blob, fs, fe, tags, cnt, page_of, "blob")
    cb = np.cumsum(cnt * w) - cnt * w
    hdr, words = stage_blocks(blob, 8 * pay + cb, cnt, w, base, slope)
    return codec.decode_blocks(hdr, words, cnt)
