"""Fused decode-gather: rebuild a batch's windows straight from the compressed staged blocks.

What it computes (docs/DESIGN.md §4, SPEC §2): for a staged batch of B examples, K staged blocks
and T tiles, per staged column ``c``

    out_c[offsets[e] + j]  = event j of example e's window         (jagged, ``[offsets[-1]]``)
    out_c[e, j]            = the same, ``pad_value`` for j >= len_e  (padded, ``[B, W]``)
    violations[e]          = 1 if a materialized ``ts`` of e is >= request_ts[e]   (int32 ``[B]``;
                             > request_ts[e] with check_leakage="inclusive", the INCLUSIVE constexpr)

Inputs (all int64 device tensors, views of the one packed buffer of ``gpumat/core/staged.py``):
``hdr_c [K, 3]`` (base, slope, meta), ``words_c [W_c + 1]``, the tiles ``tile_block/lo/cnt/out/ex
[T]``, the examples ``offsets [B + 1]``, ``hist_len/tail_src/tail_len/request_ts [B]``, the
inline tails ``tail_values_c`` and, for a column with DICT blocks, its dictionaries ``dicts_c``.

Two launches per tenant, each over all of its columns (the column arrays are passed as tuples,
the per-column choices as constexpr bit masks, so one compiled kernel serves a tenant's schema):

- ``_history_kernel``: a tile is the intersection of one example's window with one staged block
  (<= block_size values, 128 by default). On a GPU a program is one warp that walks SEQ tiles in
  turn (unrolled; ``(TP, SEQ, warps[, maxnreg])`` by length bucket, ``LAUNCH_BY_BUCKET``, tuned by ``gpumat bench kernels``);
  lane ``l`` of the warp holds positions ``l, l + 32, l + 64, l + 96`` of a tile. Position ``k + 32 i``
  of a block of width ``w`` starts at bit ``(k + 32 i) * w``, i.e. at 32-bit word ``(k * w >> 5) + i
  * w`` with the same shift ``k * w & 31`` for every ``i``: a lane computes its word, shift and
  ``base + slope * k`` once per tile and column, and each value then costs one address add, two
  32-bit loads, one funnel shift (``_bits32``), one mask, one add and one store. The tile
  descriptors are loaded once (scalars of the program) and shared by every column; the leakage
  check rides on the ``ts`` column's pass. A column whose blocks are all <= 32 bits wide (known
  on the host, ``StagedBatch.max_width``) never touches a third word; an int32 output never
  needs more than the low 32 bits, so its arithmetic is 32-bit throughout. The grid is the
  number of tiles over SEQ: it depends only on shapes and host-known sizes, so launching needs no
  host sync, and a 10^6-event history is ~2k independent programs. Tiles of one example write disjoint output ranges, so
  programs never coordinate. Tier blocks wider than 128 lanes loop (the LOOP constexpr).
- ``_tail_kernel``: the inline tails (plain int64 values): EX_PER_PROG examples per program in rows
  of TAIL_BLOCK lanes, the power of two at or above the batch's longest tail (known on the host;
  unknown tails loop over 32-lane chunks).

PATCH and RUN blocks (``meta`` bit 7, docs/DESIGN.md §4): a column whose batch stages them takes,
by constexpr masks the host sets (``StagedBatch.aux``), a path that reads the block's aux word once
per tile, then per value its bitmap word and a rank (prefix byte + popcount): RUN reads the run's
index in place of the position (so each value has its own word and shift), PATCH adds one 32-bit
exception word shifted past the low bits. A column whose blocks are all 0 bits wide (PATCH flags
without low bits, constants) skips the value loads (``NOBITS_MASK``). A column with DICT blocks
(aux kind 3, or a PATCH, RUN or DELTA block with ``AUX_CODES``: ``DICT_MASK``) gathers each value from its
dictionary (``dicts_c``, int64) at the block's value (line): its code plus where its dictionary
starts, which the host folds into its base.
Columns whose staged blocks are one column's, word for word (borrowed codes, DESIGN §1: an item's
genre and year on its id's codes; ``StagedBatch.codes_of``), are decoded once: the launcher names
the first of them ``LENDER`` and the others ``BORROW_MASK`` (``borrow_plan``), and a borrowing column
takes the lender's value line of each position (its code), adds its own base less the lender's (its
dictionary's start), and gathers from its own dictionary.
A column with DELTA blocks (aux kind 4 or 5, ``DELTA_MASK``) walks its tiles by block position and
prefix-sums a DELTA block's offsets over the block (``_prefix``: on the GPU each thread holds
consecutive positions, so one warp scan of the threads' sums; docs/DESIGN.md §4); a DELTA SIGNED
block's exceptions (aux bit 8 on kind 5: a pack's timestamps) are sign-extended int32 words.

The launch shapes were chosen from the SASS (``gpumat bench kernels --static``, 2026-12-01): 2.42 /
2.56 warp-instructions per event for the long bench tenant with FOR blocks only, 2.86 / 2.96 with
its ``action`` column as PATCH blocks (as the bench tier stores it), 3.59 / 3.79 and 4.21 / 4.36
for the short one (triton 3.9 / 3.6), against 9.7 / 7.8 and 16.6 / 14.0 for the previous
one-launch-per-column, 64-bit design.

Why this encoding (blocked linear frame of reference, DESIGN §1): only compressed words cross the
bus and are read from HBM, and random access inside a block is O(1), so a window that starts in
the middle of a block decodes only what it keeps. The bit stream is little-endian, so the 64-bit
words of the format are read as pairs of 32-bit words with no change to the format.

Leakage: when the column is ``ts`` and checking is on, a tile whose values reach ``request_ts`` of
its example sets ``violations[tile_ex] = 1`` with a plain masked store; concurrent programs only
ever store the same value 1, so no atomics are needed. A ``ts`` column staged only for the check
(``project=False``) is decoded and checked but never stored.

Value loads: a tile's dead lanes (positions past its count) compute addresses up to 127 positions
past its last live value; with the packed batch's room after each column's words
(``gpumat.core.staged.WORDS_SLACK``) and long windows (``SLACK_MIN_BUCKET``), the launcher takes
the SLACK path, whose value loads have no mask (those lanes read the room, and their values are
never stored or checked); otherwise the loads are masked.

Arithmetic: positions within a block, bit offsets and word indices are 32-bit (the launcher
refuses a batch whose arrays exceed 2^31 elements); output addresses are 64-bit (``[B, W]``
padded addresses beyond 2^31). Values are computed with wrapping unsigned arithmetic (64-bit for
int64 outputs, 32-bit for int32 ones), so overflow is two's complement and right shifts are
logical; every shift count stays in ``[0, 31]`` because a shift by the full width means different
things on different backends. Memory safety does not rest on the checksums alone: a tile whose
header points outside its column's words, or whose output range is out of bounds, reads inside
the words (on the SLACK path a dead lane, inside the room after them) and stores nothing out of range.
"""

from __future__ import annotations

import contextlib
import functools
import os

import numpy as np
import torch

from gpumat.core.batch import TORCH_DTYPES
from gpumat.core.errors import GpumatError

try:  # triton is a Linux-only dependency; without it the backend is simply unavailable
    import triton
    import triton.language as tl

    _TRITON_IMPORT_ERROR = None
except ImportError as e:  # pragma: no cover - depends on the platform
    triton = None
    tl = None
    _TRITON_IMPORT_ERROR = e

# Whether the kernels below were defined under Triton's CPU interpreter: triton.jit decides this
# once, when the decorator runs, so setting TRITON_INTERPRET later changes nothing.
_DEFINED_INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
INTERPRETED = _DEFINED_INTERPRETED  # public: backend="auto" must never pick the interpreter

# Launch shapes. On a GPU a program holds TILES_PER_PROG rows of 128 lanes, one row (tile) per
# warp with 4 values per thread, and the tail programs as many lanes (rows as wide as the batch's
# longest tail, up to MAX_TAIL_BLOCK). The interpreter pays per program, so it takes far larger groups.
GPU_TILES_PER_PROG = 1
# Tiles one warp walks in turn. Measured on an H200 (2026-12-04, `gpumat bench kernels`, graph-timed,
# the bench batches with item ids as DICT codes, docs/results/h200-2026-12-04/): SEQ 2 with one
# warp fastest for the short tenant (0.090 ms; SEQ 1 3.6% slower) and within 0.1% of SEQ 1 for mid
# and long (0.083 / 0.081 ms); SEQ 4 4-12% slower, SEQ 8 10-22%; two-tile programs (2, 1, 1) 1-12%
# slower, 2-warp programs 2-33%, 4-tile ones 45-130%. (2026-11-30, before DICT blocks: SEQ 2 fastest too.)
GPU_TILES_SEQ = 2
GPU_TAIL_LANES = 512
INTERP_TILES_PER_PROG = 512
INTERP_TAIL_LANES = 65536
MAX_TAIL_BLOCK = 128
HISTORY_WARPS = 1  # one tile per one-warp program: per-tile values live once per thread, never replicated
TAIL_WARPS = 4
MAX_LANES = 1024 if _DEFINED_INTERPRETED else 128



if triton is not None:

    @triton.jit
    def _bits32(a, b, s):
        """Bits ``[s, s + 32)`` of the 64-bit pair ``b:a`` (uint32 words, ``s`` in ``[0, 31]``).

        ``(b << 1) << (31 - s)`` is ``b << (32 - s)`` without the shift by 32 (s = 0) that
        backends disagree on: every shift count stays in ``[0, 31]``."""
        return (a >> s) | ((b << 1) << (31 - s))

    @triton.jit
    def _popc(x):
        """Set bits of each uint32 (the SWAR count, which LLVM turns into one POPC on the GPU)."""
        x = x - ((x >> 1) & 0x55555555)
        x = (x & 0x33333333) + ((x >> 2) & 0x33333333)
        x = (x + (x >> 4)) & 0x0F0F0F0F
        return (x * 0x01010101) >> 24

    @triton.jit
    def _prefix(o, ONE_D: tl.constexpr, LANES: tl.constexpr, STEPS: tl.constexpr):
        """Inclusive prefix sums of ``o`` over a tile's positions: the GPU shape's one axis (element
        ``j`` holds position ``(j % LANES) * STEPS + j // LANES``), or ``[LANES, STEPS, TP]``
        (position ``lane + LANES * step``)."""
        if ONE_D:
            # element j is position (j % LANES) * STEPS + j // LANES: each thread's STEPS values are
            # consecutive positions, so their sums are in registers and only the threads' totals
            # take a warp scan (one, where the strided order took one per step; docs/DESIGN.md §4)
            o2 = tl.reshape(o, (STEPS, LANES))  # [step, lane]
            tot = tl.sum(o2, axis=0)
            return tl.reshape(tl.cumsum(o2, axis=0) + (tl.cumsum(tot, axis=0) - tot)[None, :], (STEPS * LANES,))
        else:
            row = tl.sum(o, axis=0, keep_dims=True)  # [1, STEPS, TP]: each step's total
            return tl.cumsum(o, axis=0) + (tl.cumsum(row, axis=1) - row)

    @triton.jit
    def _headers(hdrs, blk3, NCOL: tl.constexpr, BORROW_MASK: tl.constexpr):
        """Each column's ``(base, slope, meta)`` of the tile's block (a borrowing column needs only its
        base: the others repeat it), loaded before the tile's decode (``_history_chunk``'s ``hv``)."""
        hv = ()
        for c in tl.static_range(NCOL):
            hp = hdrs[c] + blk3  # a dead tile reads block 0 (the launcher checks there is one)
            base = tl.load(hp)
            if (BORROW_MASK >> c) & 1:
                hv = hv + ((base, base, base),)
            else:
                hv = hv + ((base, tl.load(hp + 1), tl.load(hp + 2)),)
        return hv

    @triton.jit
    def _history_chunk(
        hdrs, words, outs, nwords, dicts, ndicts, c0, lane, step, blk3, lo, cnt, row, room, rts, vp, hv,
        NCOL: tl.constexpr, STORE_MASK: tl.constexpr, OUT64_MASK: tl.constexpr, WIDE_MASK: tl.constexpr,
        PATCH_MASK: tl.constexpr, RUN_MASK: tl.constexpr, NOBITS_MASK: tl.constexpr, DICT_MASK: tl.constexpr,
        DELTA_MASK: tl.constexpr, RADIX_MASK: tl.constexpr, CHECK_COL: tl.constexpr, INCLUSIVE: tl.constexpr,
        LANES: tl.constexpr,
        STEPS: tl.constexpr, ONE_D: tl.constexpr, SLACK: tl.constexpr, LENDER: tl.constexpr, BORROW_MASK: tl.constexpr,
    ):
        """Positions ``c0 .. c0 + STEPS * LANES`` of the program's tiles, every column; a live value of
        the checked column past its request's timestamp stores 1 at ``vp`` (its tile's example's
        flag: every such lane stores the same value, so no reduction is needed). Shapes: per lane
        ``[LANES, 1, 1]``, per step ``[1, STEPS, 1]``, per tile ``[1, 1, TP]`` (lanes first: the dimension Triton's coalescing pass makes fastest when no dimension of a
        gathered address is contiguous, so a warp's 32 threads are the 32 lanes on every version);
        lane ``l`` of step ``i`` holds position ``c0 + l + LANES * i``.

        With 32 lanes, position ``k + 32 i`` of a block of width ``w`` starts at bit ``(k + 32 i) * w``:
        word ``(k * w >> 5) + i * w``, shift ``k * w & 31``. So a lane finds its word, shift and
        ``base + slope * k`` once per tile and column, and each of its STEPS values costs one address
        add, two loads, one funnel shift, one mask, one add and one store.

        A column with DELTA blocks (``DELTA_MASK``; blocks of at most LANES * STEPS values, no LOOP)
        walks its tiles by block position instead: the positions before the tile's are decoded too
        (masked from the stores), and a DELTA block's offsets are prefix-summed over the block
        (``_prefix``). On the GPU shape, lane ``l`` holds positions ``l * STEPS .. l * STEPS + STEPS
        - 1`` (each value with its own word and shift), so that the prefix sum is a sum in registers
        and one warp scan of the lanes' totals; in the interpreter's shape, position ``l + LANES i``."""
        r = c0 + lane + step * LANES  # [LANES, STEPS, 1]: the position within the tile
        live = r < cnt  # [LANES, STEPS, TP] (a dead tile has cnt 0)
        smask = live & (r < room)
        kl = lo + c0 + lane  # [LANES, 1, TP]: the lane's position within its block at step 0
        one = tl.full(kl.shape, 1, tl.uint32)
        ones = ~(one - one)
        if DELTA_MASK != 0:  # the block-position walk: r_q is the position in the block, r_q - lo in the tile
            if ONE_D:  # a thread's STEPS values are consecutive positions (``_prefix``): each its own word
                r_q = c0 + lane * STEPS + step + (lo - lo)
                kl_q, ln_q, st_q = r_q, r_q, step - step
            else:
                r_q = r
                kl_q = c0 + lane + (lo - lo)  # [LANES, 1, TP]
                ln_q, st_q = c0 + lane, step
            live_q = (r_q >= lo) & (r_q < lo + cnt)
            need_q = r_q < tl.where(cnt > 0, lo + cnt, 0)  # the offsets a prefix sum needs (none in a dead tile)
            smask_q = live_q & (r_q - lo < room)
        # Every column's loads come before any store: the compiler must assume a store may alias any
        # later load, so a store between two columns would make each column's chain of dependent
        # loads (header, words, aux word, bitmap, exceptions, dictionary) wait for the one before it
        # (measured on an H200, 2026-12-04: 23 of 27 cycles per issued instruction waiting on loads).
        # The values and their store masks are carried in tuples, one entry per column.
        vals, dsts, sms = (), (), ()
        for c in tl.static_range(NCOL):
            # kl_c: each lane's position in its block at step 0 (ln_c: in the tile); a step adds
            # st_c * LANES to both (DELTA on the GPU shape: st_c is 0, kl_c every value's own position)
            if (DELTA_MASK >> c) & 1:
                kl_c, lv_c, sm_c, ck_c, row_c, ln_c, st_c = kl_q, need_q, smask_q, live_q, row - lo, ln_q, st_q
            else:
                kl_c, lv_c, sm_c, ck_c, row_c, ln_c, st_c = kl, live, smask, live, row, c0 + lane, step
            sk = (st_c * LANES).to(tl.uint32)  # what a step adds to the position
            klu = kl_c.to(tl.uint32)
            if (BORROW_MASK >> c) & 1:
                # Codes borrowed from column LENDER (DESIGN §1 "Borrowed codes"): its blocks are this
                # column's, word for word, so its value line before the dictionary lookup is this
                # column's but for the base (each column's dictionary start, folded in by the host):
                # one header load and an add, no decode (the launcher checks the headers, ``borrow_plan``)
                base = hv[c][0]
                if (OUT64_MASK >> c) & 1:  # (then the lender is 64-bit too)
                    val = (lend_v.to(tl.uint64, bitcast=True) + (base.to(tl.uint64, bitcast=True)
                                                                 - lend_b.to(tl.uint64, bitcast=True))).to(tl.int64, bitcast=True)
                else:
                    if (OUT64_MASK >> LENDER) & 1:
                        lv32 = lend_v.to(tl.uint64, bitcast=True).to(tl.uint32)
                    else:
                        lv32 = lend_v.to(tl.uint32, bitcast=True)
                    val = (lv32 + (base.to(tl.uint32) - lend_b.to(tl.uint32))).to(tl.int32, bitcast=True)
            else:
                # Per tile: the block header, three loads every lane shares (``_headers``, ahead)
                base, slope, meta = hv[c][0], hv[c][1], hv[c][2]
                w = (meta & 0x7F).to(tl.int32)
                off = (meta >> 8).to(tl.int32) * 2  # the block's first 32-bit word
                # Memory safety only (the host verified every block's checksum): a tile whose header
                # points outside the staged words reads the column's first two words instead.
                nw2 = nwords[c] - 1  # the column's 32-bit words, 2 (W + 1), from opaque_count(W + 1)
                ok = (off >= 0) & (w <= 64) & (off + (((lo + cnt) * w) >> 5) + 1 < nw2)
                if ((RUN_MASK | RADIX_MASK) >> c) & 1:  # a RUN / RADIX block's runs / codes are fewer than its positions: clamped below
                    ok = ok | ((off >= 2) & (w <= 64) & ((meta & 0x80) != 0) & (off < nw2))
                w = tl.where(ok, w, 0)
                off = tl.where(ok, off, 0)
                wu = w.to(tl.uint32)
                m_lo = tl.where(wu >= 32, ones, (one << (wu & 31)) - one)
                lim = nw2 - 3  # the last start of a 3-word read: aux-derived addresses are clamped to it
                if ((PATCH_MASK | RUN_MASK | (DICT_MASK & DELTA_MASK) | RADIX_MASK) >> c) & 1:
                    auxok = ok & ((meta & 0x80) != 0) & (off >= 2) & (nw2 >= 4) & (lo + cnt <= 128)
                    at = tl.where(auxok, off - 2, 0)
                    alo = tl.where(auxok, tl.load(words[c] + at).to(tl.uint32, bitcast=True), 0)
                    ahi = tl.load(words[c] + at + 1).to(tl.uint32, bitcast=True)
                if (RADIX_MASK >> c) & 1:
                    # RADIX blocks (aux low bits 16): R and g in the tile's aux word, and float32 log2 R in
                    # its high half; ceil(2^16 / g) turns each position's division by g into a multiply
                    # and a shift (exact: positions < 128)
                    israd = ((alo & 31) + (klu - klu)) == 16
                    rrf = tl.maximum((alo >> 8) & 1023, 2).to(tl.float32)
                    rg = tl.maximum((alo >> 18) & 1023, 1)
                    mg = (-tl.floor(-65536.0 / rg.to(tl.float32))).to(tl.uint32)
                    # (other tiles: powers of 1, no overflow on lanes whose digit is not taken)
                    l2r = tl.where((alo & 31) == 16, ahi.to(tl.float32, bitcast=True), 0.0)
                    rcpr = 1.0 / rrf
                if ((PATCH_MASK | RUN_MASK | (DICT_MASK & DELTA_MASK)) >> c) & 1:
                    # PATCH / RUN blocks (docs/DESIGN.md §4): the aux word before the block's values (a
                    # tile's two loads), then per value its bitmap word (the lane's group g0 plus the
                    # step: a constant offset) and rank (prefix byte + popcount below the lane's bit).
                    g0 = kl_c >> 5
                    bit = one << (klu & 31)  # the lane's bit in its bitmap word, every step
                    kind = (alo & 3) + (bit - bit)  # the tile's, as a per-lane block (masks of one shape)
                    isdel = ((alo & 6) + (bit - bit)) == 4  # DELTA or DELTA PATCH
                    # a live value's group is at most 3 (blocks of <= 128 values): so the bitmap's base,
                    # clamped once per tile, keeps every load inside the words
                    bmb = tl.minimum(off + ((alo >> 8) & 1023).to(tl.int32), nw2 - 4)
                    bmw = tl.load(words[c] + (bmb + g0) + st_c, mask=lv_c & (kind != 0), other=0).to(tl.uint32, bitcast=True)
                    pre = ahi >> ((g0 & 3) * 8).to(tl.uint32)  # the prefix bytes from the lane's group on
                    rank = (((pre >> (st_c * 8).to(tl.uint32)) & 255) + _popc(bmw & (bit - one))).to(tl.int32)
                    hit = (bmw & bit) != 0
                if (RADIX_MASK >> c) & 1 and not ((PATCH_MASK | RUN_MASK | (DICT_MASK & DELTA_MASK)) >> c) & 1:
                    kind = (alo & 3) + (klu - klu)  # (DICT blocks among RADIX ones: told by the aux word)
                    isdel = ((alo & 6) + (klu - klu)) == 4
                if ((DELTA_MASK & ~(PATCH_MASK | RUN_MASK | DICT_MASK | RADIX_MASK)) >> c) & 1:
                    # DELTA blocks the column's only flagged ones: told by the flag, no aux word load
                    isdel = (((meta >> 7) & 1).to(tl.uint32) + (klu - klu)) == 1
                if ((RUN_MASK | RADIX_MASK) >> c) & 1:
                    # RUN: the run's index replaces the position; RADIX: the position's code, k div g; so
                    # each value has its own word and shift
                    kb = kl_c + st_c * LANES  # [LANES, STEPS, TP]: each value's position in its block
                    idx = kb
                    if (RUN_MASK >> c) & 1:
                        idx = tl.where(kind == 2, rank + hit.to(tl.int32) - 1, idx)
                    lix = idx  # the position the value's line is taken at (a RUN block's: its run's)
                    if (RADIX_MASK >> c) & 1:
                        qd = ((kb.to(tl.uint32) * mg) >> 16).to(tl.int32)
                        rd = kb - qd * rg.to(tl.int32)  # the digit's place in its code
                        idx = tl.where(israd, qd, idx)
                        lix = tl.where(israd, kb, lix)
                    p = idx * w
                    s = (p & 31).to(tl.uint32)
                    pa = words[c] + tl.minimum(off + (p >> 5), lim)
                else:
                    # Per lane: the word of step 0 and the shift every step shares.
                    p0 = kl_c * w
                    s = (p0 & 31).to(tl.uint32)
                    pa = (words[c] + (off + (p0 >> 5))) + st_c * w  # [LANES, STEPS, TP]
                if (NOBITS_MASK >> c) & 1:  # every staged block of the column is 0 bits wide (constants, or
                    lo32 = tl.zeros(lv_c.shape, tl.uint32)  # PATCH blocks with no low bits: a sparse flag column)
                else:
                    if SLACK:  # (the launcher saw a chunk's room after every column's words: no mask)
                        a = tl.load(pa).to(tl.uint32, bitcast=True)
                        b = tl.load(pa + 1).to(tl.uint32, bitcast=True)
                    else:
                        a = tl.load(pa, mask=lv_c).to(tl.uint32, bitcast=True)
                        b = tl.load(pa + 1, mask=lv_c).to(tl.uint32, bitcast=True)
                    lo32 = _bits32(a, b, s) & m_lo
                if (RADIX_MASK >> c) & 1:
                    # a RADIX value: digit rd of its code, (code div R^rd) mod R, in fp32: 1 / R^rd as
                    # 2^(-rd log2 R), within 2^-18 of it; codes and powers are under 2^16, so each true
                    # quotient (code + 0.5) / R^rd is 0.5 / R^rd from an integer, its error under 0.25 / R^rd
                    q2 = tl.floor((lo32.to(tl.float32) + 0.5) * tl.exp2(-(rd.to(tl.float32) * l2r)))
                    dig = q2 - tl.floor((q2 + 0.5) * rcpr) * rrf
                    lo32 = tl.where(israd, dig.to(tl.uint32), lo32)
                if (PATCH_MASK >> c) & 1:
                    # PATCH: an exception's high part (0 elsewhere: the masked load's other), shifted past the low bits
                    # (hit: bmw is 0 for dead lanes and plain blocks; a RUN block's bits are no exceptions)
                    xmask = (hit & (kind == 1)) if ((RUN_MASK | DICT_MASK) >> c) & 1 else hit
                    xh = tl.load(words[c] + tl.minimum(off + ((alo >> 18) & 1023).to(tl.int32) + rank, lim),
                                 mask=xmask, other=0).to(tl.uint32, bitcast=True)
                if (OUT64_MASK >> c) & 1:
                    bits = lo32.to(tl.uint64)
                    if (WIDE_MASK >> c) & 1:  # some block is wider than 32 bits: a third word, the high half
                        w3 = tl.load(pa + 2, mask=lv_c & (s + wu > 64)).to(tl.uint32, bitcast=True)
                        m_hi = tl.where(wu >= 64, ones, tl.where(wu > 32, (one << ((wu - 32) & 31)) - one, 0))
                        bits = bits | ((_bits32(b, w3, s) & m_hi).to(tl.uint64) << 32)
                    if (PATCH_MASK >> c) & 1:
                        xw = xh.to(tl.uint64)
                        if (DELTA_MASK >> c) & 1:  # DELTA SIGNED (aux bits 4 and 8): the exception's word is an int32
                            xw = tl.where((alo & 12) == 12, xh.to(tl.int32, bitcast=True).to(tl.int64).to(tl.uint64, bitcast=True), xw)
                        bits = bits + (xw << (wu & 63).to(tl.uint64))
                    if (DELTA_MASK >> c) & 1:  # a DELTA block's offsets, prefix-summed over the block
                        bits = tl.where(isdel, _prefix(bits, ONE_D, LANES, STEPS), bits)
                    slope_u = slope.to(tl.uint64, bitcast=True)
                    if (RUN_MASK >> c) & 1:
                        val = (base.to(tl.uint64, bitcast=True) + slope_u * lix.to(tl.uint64) + bits).to(tl.int64, bitcast=True)
                    else:
                        lane_v = base.to(tl.uint64, bitcast=True) + slope_u * klu.to(tl.uint64)  # [LANES, 1, TP]
                        val = (lane_v + slope_u * sk.to(tl.uint64) + bits).to(tl.int64, bitcast=True)
                else:
                    # An int32 output needs only the low 32 bits of base + slope * k + r: wrapping 32-bit math.
                    # (DELTA SIGNED's int32 exceptions: the same low 32 bits as sign-extended ones)
                    if (PATCH_MASK >> c) & 1:  # an exception's high part adds nothing to the low 32 bits where w >= 32
                        # (the writer's int32 PATCH blocks are under 32 bits wide, a DELTA block's steps up to 33;
                        # any staged header decodes as the contract says, and a shift by 32 or more is undefined)
                        lo32 = lo32 + tl.where(wu < 32, xh << (wu & 31), 0)
                    if (DELTA_MASK >> c) & 1:
                        lo32 = tl.where(isdel, _prefix(lo32, ONE_D, LANES, STEPS), lo32)
                    slope32 = slope.to(tl.uint32)
                    if (RUN_MASK >> c) & 1:
                        val = (base.to(tl.uint32) + slope32 * lix.to(tl.uint32) + lo32).to(tl.int32, bitcast=True)
                    else:
                        lane_v = base.to(tl.uint32) + slope32 * klu
                        val = (lane_v + slope32 * sk + lo32).to(tl.int32, bitcast=True)
            if c == LENDER:  # (its value line, before any lookup: what its borrowers start from)
                lend_v, lend_b = val, base
            if (DICT_MASK >> c) & 1:
                # DICT blocks (aux kind 3): the value line is an index into the column's dictionaries
                # (the block's code plus where its dictionary starts, folded into its base by the
                # host), read mod 2^32 and clamped to them (the contract's definition, and memory
                # safety); one gather per value. A column without PATCH / RUN / DELTA blocks needs
                # no aux word: its flagged blocks are its DICT blocks.
                if (BORROW_MASK >> c) & 1:  # (the lender's blocks: its DICT lanes)
                    isd = lend_d
                elif ((PATCH_MASK | RUN_MASK | DELTA_MASK | RADIX_MASK) >> c) & 1:  # (the aux word was read: its kind)
                    # kind 3, or a PATCH, RUN or DELTA block of codes (aux bit 32)
                    isd = (kind == 3) | (((alo & 32) + (klu - klu)) == 32)
                else:
                    isd = (((meta >> 7) & 1).to(tl.uint32) + (klu - klu)) == 1  # per lane, as ``kind``
                if c == LENDER:
                    lend_d = isd
                dmax = tl.cast((ndicts[c] >> 1) - 1, tl.uint32)  # D - 1, from opaque_count(D)
                di = tl.minimum(val.to(tl.uint64, bitcast=True).to(tl.uint32) if (OUT64_MASK >> c) & 1
                                else val.to(tl.uint32, bitcast=True), dmax)
                # Dead lanes gather nothing where their word loads were masked (their index is clamped
                # like any other, and nothing stores them): each gather that misses L1 costs a 32-byte
                # sector of L2, the kernel's limit on dictionary batches (profiling/NOTES.md), and a
                # masked load leaves a dead lane's code undefined on the GPU (the short tenant's batch
                # has 0.46 dead lanes an event). Unmasked (SLACK: long windows, about 0.002 dead lanes
                # an event) they gather the entry the next block's bits name: the mask would cost the
                # 64-register launch a spill (triton 3.9).
                gmask = isd if SLACK else isd & lv_c
                val = tl.load(dicts[c] + di.to(tl.int32, bitcast=True), mask=gmask, other=val.to(tl.int64)).to(val.dtype)
            vals = vals + (val.to(outs[c].dtype.element_ty),)
            dsts = dsts + ((outs[c] + (row_c + ln_c)) + st_c * LANES,)
            sms = sms + (sm_c,)
            if c == CHECK_COL:
                late = ck_c & ((val > rts) if INCLUSIVE else (val >= rts))
        for c in tl.static_range(NCOL):
            if (STORE_MASK >> c) & 1:
                tl.store(dsts[c], vals[c], mask=sms[c])
        if CHECK_COL >= 0:
            tl.store(vp + tl.zeros(late.shape, tl.int32), tl.full(late.shape, 1, tl.int32), mask=late)

    @triton.jit
    def _tail_chunk(
        tails, outs, c0, src, m, row, room, eok, rts, vp,
        NCOL: tl.constexpr, STORE_MASK: tl.constexpr, CHECK_COL: tl.constexpr, INCLUSIVE: tl.constexpr,
        TAIL_BLOCK: tl.constexpr,
    ):
        """Tail lanes ``c0 .. c0 + TAIL_BLOCK`` of the program's examples, every column (plain int64
        values); a live value of the checked column past its request's timestamp stores 1 at its
        example's flag (``vp``), as in the history."""
        r = c0 + tl.arange(0, TAIL_BLOCK)
        live = eok[None, :] & (r[:, None] < m[None, :])
        smask = live & (r[:, None] < room[None, :])
        for c in tl.static_range(NCOL):
            v = tl.load((tails[c] + src)[None, :] + r[:, None], mask=live, other=0)
            if (STORE_MASK >> c) & 1:
                tl.store((outs[c] + row)[None, :] + r[:, None], v.to(outs[c].dtype.element_ty), mask=smask)
            if c == CHECK_COL:
                late = (v > rts[None, :]) if INCLUSIVE else (v >= rts[None, :])
                tl.store(vp[None, :] + tl.zeros(live.shape, tl.int32), tl.full(live.shape, 1, tl.int32), mask=live & late)

    @triton.jit
    def _tile_desc(
        t, tile_block_ptr, tile_lo_ptr, tile_cnt_ptr, tile_out_ptr, tile_ex_ptr, offsets_ptr, request_ts_ptr, viol_ptr,
        n_tiles, n_ex, n_out, width,
        CHECK_COL: tl.constexpr, PADDED: tl.constexpr, LANES: tl.constexpr, STEPS: tl.constexpr,
        TILES_PER_PROG: tl.constexpr,
    ):
        """Tiles ``t`` (int32 ``[TILES_PER_PROG]``): their descriptors, checked, as ``(lane, step, blk3,
        lo, cnt, row, room, rts, vp)`` in the shapes ``_history_chunk`` takes."""
        tmask = t < n_tiles
        blk = tl.load(tile_block_ptr + t, mask=tmask, other=0).to(tl.int32)
        lo = tl.load(tile_lo_ptr + t, mask=tmask, other=0).to(tl.int32)
        cnt = tl.load(tile_cnt_ptr + t, mask=tmask, other=0).to(tl.int32)  # 0 for masked tiles
        row = tl.load(tile_out_ptr + t, mask=tmask, other=0)  # int64: the tile's first output
        ex = tl.load(tile_ex_ptr + t, mask=tmask, other=0)
        tok = tmask & (ex >= 0) & (ex < n_ex)
        if PADDED:
            rel = row - tl.load(offsets_ptr + ex, mask=tok, other=0)  # position in the example's row
            row = ex * width + rel
            room = tl.minimum(tl.maximum(width - rel, 0), 1 << 30).to(tl.int32)  # lanes past the width: not stored
            tok = tok & (rel >= 0)
        else:
            room = cnt
            tok = tok & (row >= 0) & (row + cnt <= n_out)
        rts = row
        if CHECK_COL >= 0:
            rts = tl.load(request_ts_ptr + ex, mask=tok, other=0)
        cnt = tl.where(tok, cnt, 0)  # a dead tile has no live lane
        if TILES_PER_PROG == 1:
            # One tile per program (the GPU shape): tile values are scalars and a lane's STEPS
            # values are a 1-D block (thread t holds positions t, t + 32, ...), the layout every
            # Triton version gives a 1-D tensor.
            j = tl.arange(0, LANES * STEPS)
            lane, step = j % LANES, j // LANES
            blk3 = tl.sum(tl.where(tok, blk * 3, 0))
            lo3, cnt3, row3, room3 = tl.sum(lo), tl.sum(cnt), tl.sum(row), tl.sum(room)
            rts3 = tl.sum(rts)
            vp = viol_ptr + tl.sum(ex)  # (a dead tile has no live lane: it never stores)
        else:
            # Many tiles per program (the interpreter): per-tile values as [1, 1, TP] against
            # [LANES, STEPS, 1] positions.
            lane = tl.arange(0, LANES)[:, None, None]
            step = tl.arange(0, STEPS)[None, :, None]
            blk3 = tl.where(tok, blk * 3, 0)[None, None, :]
            lo3, cnt3, row3, room3 = lo[None, None, :], cnt[None, None, :], row[None, None, :], room[None, None, :]
            rts3 = rts[None, None, :]
            vp = (viol_ptr + ex)[None, None, :]
        return lane, step, blk3, lo3, cnt3, row3, room3, rts3, vp

    @triton.jit
    def _tiles(
        t, hdrs, words, outs, nwords, dicts, ndicts, tile_block_ptr, tile_lo_ptr, tile_cnt_ptr, tile_out_ptr, tile_ex_ptr,
        offsets_ptr, request_ts_ptr, viol_ptr, n_tiles, n_ex, n_out, width,
        NCOL: tl.constexpr, STORE_MASK: tl.constexpr, OUT64_MASK: tl.constexpr, WIDE_MASK: tl.constexpr,
        PATCH_MASK: tl.constexpr, RUN_MASK: tl.constexpr, NOBITS_MASK: tl.constexpr, DICT_MASK: tl.constexpr,
        DELTA_MASK: tl.constexpr, RADIX_MASK: tl.constexpr, CHECK_COL: tl.constexpr, INCLUSIVE: tl.constexpr,
        PADDED: tl.constexpr,
        LANES: tl.constexpr, STEPS: tl.constexpr, TILES_PER_PROG: tl.constexpr, LOOP: tl.constexpr,
        SLACK: tl.constexpr, LENDER: tl.constexpr, BORROW_MASK: tl.constexpr,
    ):
        """Tiles ``t`` (int32 ``[TILES_PER_PROG]``), every column: descriptors, headers, then the decode."""
        lane, step, blk3, lo3, cnt3, row3, room3, rts3, vp = _tile_desc(
            t, tile_block_ptr, tile_lo_ptr, tile_cnt_ptr, tile_out_ptr, tile_ex_ptr, offsets_ptr, request_ts_ptr,
            viol_ptr, n_tiles, n_ex, n_out, width, CHECK_COL, PADDED, LANES, STEPS, TILES_PER_PROG)
        hv = _headers(hdrs, blk3, NCOL, BORROW_MASK)
        if LOOP:
            # Tiers created with blocks wider than LANES * STEPS walk their tiles in chunks
            # (a separate constexpr path: the loop-carried state costs registers).
            if TILES_PER_PROG == 1:
                longest = cnt3
            else:
                longest = tl.max(tl.reshape(cnt3, (TILES_PER_PROG,)), axis=0)
            for c0 in range(0, longest, LANES * STEPS):
                _history_chunk(
                    hdrs, words, outs, nwords, dicts, ndicts, c0, lane, step, blk3, lo3, cnt3, row3, room3, rts3, vp, hv,
                    NCOL, STORE_MASK, OUT64_MASK, WIDE_MASK, PATCH_MASK, RUN_MASK, NOBITS_MASK, DICT_MASK, 0, 0, CHECK_COL,
                    INCLUSIVE, LANES, STEPS, TILES_PER_PROG == 1, False, LENDER, BORROW_MASK,
                )
        else:
            _history_chunk(
                hdrs, words, outs, nwords, dicts, ndicts, 0, lane, step, blk3, lo3, cnt3, row3, room3, rts3, vp, hv,
                NCOL, STORE_MASK, OUT64_MASK, WIDE_MASK, PATCH_MASK, RUN_MASK, NOBITS_MASK, DICT_MASK, DELTA_MASK,
                RADIX_MASK, CHECK_COL, INCLUSIVE, LANES, STEPS, TILES_PER_PROG == 1, SLACK, LENDER, BORROW_MASK,
            )


    @triton.jit(do_not_specialize=["n_tiles", "n_ex", "n_out", "width", "len_bucket"])
    def _history_kernel(
        hdrs,  # tuple: per column, int64 [K, 3] (base, slope, meta)
        words,  # tuple: per column, the packed words as int32 [2 * (W + 1)]
        outs,  # tuple: per column, [n_out] jagged or [B, width] padded, the column's dtype
        nwords,  # tuple: per column, opaque_count(W + 1) (64-bit words)
        dicts,  # tuple: per column, int64 [D]: the dictionaries of its DICT blocks (any pointer without)
        ndicts,  # tuple: per column, opaque_count(D) (D >= 1)
        tile_block_ptr, tile_lo_ptr, tile_cnt_ptr, tile_out_ptr, tile_ex_ptr,  # int64 [n_tiles]
        offsets_ptr,  # int64 [B + 1] (padded only)
        request_ts_ptr,  # int64 [B] (check only)
        viol_ptr,  # int32 [B]
        n_tiles, n_ex, n_out, width,
        NCOL: tl.constexpr,
        STORE_MASK: tl.constexpr,  # bit c: column c is stored
        OUT64_MASK: tl.constexpr,  # bit c: column c is decoded to 64 bits (int64 output, or the checked ts)
        WIDE_MASK: tl.constexpr,  # bit c: some block of column c is wider than 32 bits
        PATCH_MASK: tl.constexpr,  # bit c: column c stages PATCH blocks (the exception path)
        RUN_MASK: tl.constexpr,  # bit c: column c stages RUN blocks (the per-value index path)
        NOBITS_MASK: tl.constexpr,  # bit c: every staged block of column c is 0 bits wide (no value loads)
        DICT_MASK: tl.constexpr,  # bit c: column c stages DICT blocks (one dictionary gather per value)
        DELTA_MASK: tl.constexpr,  # bit c: column c stages DELTA blocks (a prefix sum per tile)
        RADIX_MASK: tl.constexpr,  # bit c: column c stages RADIX blocks (a code's digit per value)
        CHECK_COL: tl.constexpr,  # the column the leakage check reads (ts), -1 for none
        INCLUSIVE: tl.constexpr,  # flag ts > request_ts (check_leakage="inclusive"), else ts >= request_ts
        PADDED: tl.constexpr,
        LANES: tl.constexpr,  # 32 (a warp), or the block size when smaller
        STEPS: tl.constexpr,  # values per lane: LANES * STEPS positions per tile per pass
        TILES_PER_PROG: tl.constexpr,  # tiles side by side in one program (the interpreter's shape)
        SEQ: tl.constexpr,  # groups of TILES_PER_PROG tiles one after another in one program
        LOOP: tl.constexpr,
        len_bucket,  # the autotuner's key only: log2 of the batch's mean events per example
        SLACK: tl.constexpr = False,  # every column's words have a chunk's room after them: unmasked value loads
        LENDER: tl.constexpr = -1,  # the column whose codes the BORROW_MASK columns share (-1: none)
        BORROW_MASK: tl.constexpr = 0,  # bit c: column c's blocks are LENDER's, its own base aside (no decode)
    ):
        """The history, all columns: SEQ x TILES_PER_PROG tiles per program. A program walks SEQ
        groups in turn (unrolled; one-tile groups in pairs, both descriptors loaded first), each group TILES_PER_PROG tiles side by side (one tile: scalars of the program;
        several: [LANES, STEPS, TP] blocks, the interpreter's shape and a GPU candidate whose loads
        of every tile of the group are issued before any store)."""
        if TILES_PER_PROG == 1 and SEQ > 1 and not LOOP:
            # One tile at a time (the GPU shape), in pairs: both tiles' descriptors are loaded before
            # the first one's decode, so the second tile's decode waits on one dependent load fewer
            # (on an H200, 2026-12-04, the kernel waits on loads for most of its cycles). Pairs, not
            # all SEQ tiles at once: each tile held ahead costs registers. Loading both tiles' block
            # headers ahead too (measured on the H200: short 5% faster, mid and long within 1-3%)
            # moved the held headers to the uniform datapath and cost 11% more SASS instructions
            # (808 against 728 for the bench columns, sm_90, triton 3.9), over the static bound of 3
            # warp-instructions an event on the long tenant (3.22, triton 3.6): not kept.
            for p in tl.static_range(0, SEQ, 2):
                ds = ()
                for i in tl.static_range(2):
                    if p + i < SEQ:
                        ds = ds + (_tile_desc(
                            (tl.program_id(0) * SEQ + p + i) + tl.arange(0, 1), tile_block_ptr, tile_lo_ptr,
                            tile_cnt_ptr, tile_out_ptr, tile_ex_ptr, offsets_ptr, request_ts_ptr, viol_ptr, n_tiles,
                            n_ex, n_out, width, CHECK_COL, PADDED, LANES, STEPS, 1),)
                for i in tl.static_range(2):
                    if p + i < SEQ:
                        d = ds[i]
                        _history_chunk(
                            hdrs, words, outs, nwords, dicts, ndicts, 0, d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7],
                            d[8], _headers(hdrs, d[2], NCOL, BORROW_MASK), NCOL, STORE_MASK, OUT64_MASK, WIDE_MASK,
                            PATCH_MASK, RUN_MASK, NOBITS_MASK, DICT_MASK, DELTA_MASK, RADIX_MASK, CHECK_COL, INCLUSIVE,
                            LANES, STEPS, True, SLACK, LENDER, BORROW_MASK,
                        )
        else:
            for i in tl.static_range(SEQ):
                g = tl.program_id(0) * SEQ + i
                _tiles(
                    g * TILES_PER_PROG + tl.arange(0, TILES_PER_PROG),
                    hdrs, words, outs, nwords, dicts, ndicts, tile_block_ptr, tile_lo_ptr, tile_cnt_ptr, tile_out_ptr,
                    tile_ex_ptr, offsets_ptr, request_ts_ptr, viol_ptr, n_tiles, n_ex, n_out, width,
                    NCOL, STORE_MASK, OUT64_MASK, WIDE_MASK, PATCH_MASK, RUN_MASK, NOBITS_MASK, DICT_MASK, DELTA_MASK,
                    RADIX_MASK, CHECK_COL, INCLUSIVE, PADDED, LANES, STEPS, TILES_PER_PROG, LOOP, SLACK, LENDER,
                    BORROW_MASK,
                )

    @triton.jit(do_not_specialize=["n_ex", "n_tail", "n_out", "width"])
    def _tail_kernel(
        tails,  # tuple: per column, int64 [n_tail]
        outs,  # tuple: per column, as for the history
        offsets_ptr,  # int64 [B + 1]
        hist_len_ptr, tail_src_ptr, tail_len_ptr, request_ts_ptr,  # int64 [B]
        viol_ptr,  # int32 [B]
        n_ex, n_tail, n_out, width,
        NCOL: tl.constexpr,
        STORE_MASK: tl.constexpr,
        CHECK_COL: tl.constexpr,
        INCLUSIVE: tl.constexpr,
        PADDED: tl.constexpr,
        EX_PER_PROG: tl.constexpr,
        TAIL_BLOCK: tl.constexpr,
        TAIL_LOOP: tl.constexpr,
    ):
        """The inline tails: EX_PER_PROG examples per program, rows of TAIL_BLOCK lanes (sized to the
        batch's longest tail), all columns."""
        e = tl.program_id(0) * EX_PER_PROG + tl.arange(0, EX_PER_PROG)
        emask = e < n_ex
        src = tl.load(tail_src_ptr + e, mask=emask, other=0)
        m = tl.load(tail_len_ptr + e, mask=emask, other=0)
        h = tl.load(hist_len_ptr + e, mask=emask, other=0)
        eok = emask & (src >= 0) & (m >= 0) & (src + m <= n_tail) & (h >= 0)
        if PADDED:
            row = e.to(tl.int64) * width + h
            room = tl.minimum(tl.maximum(width - h, 0), 1 << 30).to(tl.int32)
        else:
            row = tl.load(offsets_ptr + e, mask=emask, other=0) + h
            room = m.to(tl.int32)
            eok = eok & (row >= 0) & (row + m <= n_out)
        m = m.to(tl.int32)
        rts = row
        if CHECK_COL >= 0:
            rts = tl.load(request_ts_ptr + e, mask=emask, other=0)
        vp = viol_ptr + e  # (an example that is not ok has no live lane: it never stores)
        if TAIL_LOOP:
            longest = tl.max(tl.where(eok, m, 0), axis=0)
            for c0 in range(0, longest, TAIL_BLOCK):
                _tail_chunk(tails, outs, c0, src, m, row, room, eok, rts, vp, NCOL, STORE_MASK, CHECK_COL, INCLUSIVE, TAIL_BLOCK)
        else:
            _tail_chunk(tails, outs, 0, src, m, row, room, eok, rts, vp, NCOL, STORE_MASK, CHECK_COL, INCLUSIVE, TAIL_BLOCK)


def triton_available(device) -> tuple[bool, str]:
    """Whether the Triton backend can run on torch ``device``, and if not, why and what to do.

    Never touches CUDA: a ``cuda`` device is taken on trust (the launch itself reports a missing
    driver). On a CPU device the kernels run only under Triton's interpreter, which must have been
    switched on (``TRITON_INTERPRET=1``) before gpumat was imported.

    >>> triton_available("meta")[0]
    False
    """
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        return False, f"not a torch device: {device!r} ({e})"
    if triton is None:
        return False, (
            f"triton is not installed ({_TRITON_IMPORT_ERROR}); use backend='reference' or install triton (Linux)"
        )
    if dev.type == "cuda":
        return True, "triton on CUDA"
    if dev.type == "cpu":
        if os.environ.get("TRITON_INTERPRET") == "1" and _DEFINED_INTERPRETED:
            return True, "triton interpreter on CPU (slow: for tests and debugging)"
        if os.environ.get("TRITON_INTERPRET") == "1":
            return False, (
                "TRITON_INTERPRET=1 was set after gpumat was imported, so the kernels were compiled for a GPU; "
                "use backend='reference' or device='cuda', or set TRITON_INTERPRET=1 before importing gpumat"
            )
        return False, (
            "the triton backend needs a CUDA device; use backend='reference' or device='cuda', "
            "or set TRITON_INTERPRET=1 before importing gpumat to run the kernels in the (slow) interpreter"
        )
    return False, (
        f"the triton backend does not support device type {dev.type!r}; use backend='reference' or device='cuda'"
    )


def _launch_shapes() -> tuple[int, int]:
    """(tiles per program, tail lanes per program) for how the kernels were defined."""
    if _DEFINED_INTERPRETED:
        return INTERP_TILES_PER_PROG, INTERP_TAIL_LANES
    return GPU_TILES_PER_PROG, GPU_TAIL_LANES


def _pow2(n: int) -> int:
    """The smallest power of two >= ``n`` (>= 1), in plain Python: ``triton.next_power_of_2`` is a
    JIT-aware function whose call costs tens of microseconds on the launch path."""
    return 1 << max(int(n) - 1, 0).bit_length()


def tail_shape(max_tail: int | None, lanes: int, ex_per_prog: int | None = None) -> tuple[int, int, bool]:
    """``(EX_PER_PROG, TAIL_BLOCK, TAIL_LOOP)`` for a batch whose longest tail is ``max_tail``
    (``None``: unknown, as for a batch built on the device): a row of lanes as wide as the longest
    tail (a power of two, at most ``MAX_TAIL_BLOCK``), and as many examples as fill ``lanes``.

    >>> tail_shape(16, 512), tail_shape(1000, 512), tail_shape(None, 512)
    ((32, 16, False), (4, 128, True), (16, 32, True))
    """
    if max_tail is None:
        tb, loop = 32, True
    else:
        tb = min(_pow2(max(int(max_tail), 1)), MAX_TAIL_BLOCK)
        loop = int(max_tail) > tb
    return (ex_per_prog or max(1, lanes // tb)), tb, loop


# The history kernel's launch per length bucket (``len_bucket``: log2 of the batch's mean events per
# example): ``(TP, SEQ, warps)``: TP tiles side by side, SEQ such groups walked in turn, and the
# program's warps. All are constexpr (one compiled kernel each). ``gpumat bench kernels`` on a GPU
# times every ``LAUNCH_CHOICES`` entry per tenant, graph-replayed, and keeps the fastest for the rest
# of its run (printed and in its JSON, to be put here); ``gpumat bench kernels --static`` reports
# each candidate's registers and instructions per event. Buckets not listed take
# ``(GPU_TILES_PER_PROG, GPU_TILES_SEQ, HISTORY_WARPS)``.
# The history kernel's unmasked value loads (SLACK) save 25 SASS instructions a program of the bench
# column set (765 -> 740, triton 3.6) but fetch what dead lanes (past a tile's count) address: on
# short windows, whose tiles are often partial, that is more memory traffic (counted over the
# bench batches' tiles, not measured on a GPU: the short tenant +24% distinct 32-byte sectors of
# the words, about +3.7% of the bytes the batch moves; mid +3%; long about 0, a 2^16-event window
# having two partial tiles against 510 full ones). A kernel
# the static model calls memory-bound gains nothing from fewer instructions there, so only batches
# whose mean window is at least 2^SLACK_MIN_BUCKET events take them.
SLACK_MIN_BUCKET = 14
# A fourth element caps a thread's registers (ptxas ``maxnreg``). An SM of compute capability 9.0
# holds at most 32 resident programs, so one-warp programs reach 32 warps an SM only at 64 registers
# or fewer (65,536 / 32 warps / 32 lanes). With triton 3.6 (the GPU image's) the default (1, 2, 1)
# takes 66 for the bench column set's long batch (unmasked loads, ``SLACK``; the short and mid
# batches' masked loads take 64), hence 28 warps an SM; capped at 64 it compiles without spills
# to 754 SASS instructions against 743 (+1.5%) and holds 32 (``profiling/maxnreg_static.py``,
# docs/results/cpu-2026-12-04f/). Not the default: heavier column sets (ts as DELTA PATCH blocks)
# spill under that cap, and the trade is for a GPU to time. Programs of several warps cost 2.25x the
# instructions a tile, and spill under any cap that would give them more warps.
LAUNCH_BY_BUCKET: dict[int, tuple[int, ...]] = {}
LAUNCH_CHOICES = ((1, 1, 1), (1, 2, 1), (1, 2, 1, 64), (1, 4, 1), (1, 8, 1), (1, 2, 2), (2, 1, 1), (2, 2, 1),
                  (2, 1, 2), (4, 1, 2), (4, 1, 4))


def len_bucket(staged) -> int:
    """The autotuning key of a batch: ``floor(log2(mean events per example))`` from sizes the host
    knows (-1 when unknown, as for a batch built on the device). Never reads the device.

    >>> from types import SimpleNamespace as NS
    >>> len_bucket(NS(known_total=4096 * 8, offsets=NS(numel=lambda: 9))), len_bucket(NS(known_total=None))
    (12, -1)
    """
    if staged.known_total is None:
        return -1
    B = max(staged.offsets.numel() - 1, 1)
    return max(int(staged.known_total // B).bit_length() - 1, 0)


def history_options(warps: int, maxnreg: int = 0, wide: bool = False) -> dict:
    """The compile options of a history program: ``num_warps``, and ``maxnreg`` (ptxas's cap on
    registers a thread) where a launch's fourth element sets one, for a batch of no wide column
    (``wide``: a block over 32 bits, whose 3-word path takes more registers: 72 for the bench column
    set, which spills under 64 with triton 3.9).

    >>> history_options(1), history_options(1, 64), history_options(1, 64, wide=True)
    ({'num_warps': 1}, {'num_warps': 1, 'maxnreg': 64}, {'num_warps': 1})
    """
    return {"num_warps": warps, "maxnreg": maxnreg} if maxnreg and not wide else {"num_warps": warps}


def launch_for(bucket: int) -> tuple[int, ...]:
    """``(TP, SEQ, warps[, maxnreg])`` of the history kernel for a batch of length bucket ``bucket``."""
    return LAUNCH_BY_BUCKET.get(bucket, (GPU_TILES_PER_PROG, GPU_TILES_SEQ, HISTORY_WARPS))


_AUTOTUNED = []


@functools.lru_cache(maxsize=1)
def _autotune_requested() -> bool:
    """``GPUMAT_AUTOTUNE=1``, read once (set it before the first batch)."""
    return os.environ.get("GPUMAT_AUTOTUNE") == "1"


def _autotuned():
    """``_history_kernel`` under ``triton.autotune`` over ``LAUNCH_CHOICES``, keyed by the length bucket
    and the column set, when ``GPUMAT_AUTOTUNE=1`` on a GPU (else None). Opt-in: the first batch of
    each key is benchmarked, which synchronizes the device once."""
    if _DEFINED_INTERPRETED or not _autotune_requested():
        return None
    if not _AUTOTUNED:
        configs = [triton.Config({"TILES_PER_PROG": c[0], "SEQ": c[1]}, **history_options(*c[2:])) for c in LAUNCH_CHOICES]
        _AUTOTUNED.append(triton.autotune(configs=configs, key=["len_bucket", "NCOL", "STORE_MASK", "PADDED"])(
            _history_kernel))
    return _AUTOTUNED[0]


# Triton specializes every int inside a tuple argument (1 becomes a constant, a multiple of 16
# gets an attribute) and ``do_not_specialize`` does not reach into tuples: a column's word and
# dictionary counts, passed plain, would compile a new kernel whenever a batch's pattern of counts
# changed (each compile takes seconds). They travel as ``opaque_count(n)``: 2 n + 1, odd (never a
# multiple of 16), at least 3 (never 1), below 2^31 (int32: n under 2^30, checked), so every
# batch of a schema has one key; the kernel takes what it needs back in one or two integer ops.


def opaque_count(n: int) -> int:
    """A count ``1 <= n < 2^30`` as a tuple element of a kernel argument that Triton cannot specialize on."""
    if not 1 <= n < 1 << 30:
        raise GpumatError(f"staged batch too large for one launch: a column's count {n} (limit 2^30); use smaller batches")
    return 2 * int(n) + 1


def _limit(what: str, n: int) -> None:
    """The kernels index within one staged array in 32 bits: refuse (never wrap) a batch beyond that."""
    if n >= 2**31 - 2**16:
        raise GpumatError(f"staged batch too large for one launch: {what} is {n} (limit 2^31); use smaller batches")


def _check_staged(staged) -> torch.device:
    arrays = list(staged.arrays())
    dev = staged.offsets.device if torch.is_tensor(staged.offsets) else "one device"
    for name, a in arrays:
        if not torch.is_tensor(a) or a.dtype != torch.int64 or a.device != dev or not a.is_contiguous():
            got = f"{a.dtype} on {a.device}" if torch.is_tensor(a) else type(a).__name__
            raise GpumatError(
                f"staged array {name!r} must be a contiguous int64 tensor on {dev} "
                f"(use StagedBatch.to(device)); got {got}"
            )
    if staged.check_leakage and "ts" not in staged.columns:
        # Checking without the ts column would report "no leak" for every example.
        raise GpumatError("staged batch asks for the leakage check but stages no 'ts' column")
    for name, col in staged.columns.items():
        if col.dtype not in TORCH_DTYPES:
            raise GpumatError(
                f"staged column {name!r} has dtype {col.dtype!r}; expected one of {sorted(TORCH_DTYPES)}"
            )
        if col.words.numel() < 1:  # (the contract's W + 1 words: the kernels' reads stay inside them)
            raise GpumatError(f"staged column {name!r} has no packed words; a staged column has W + 1 >= 1")
    return dev


def materialize_staged_triton(
    staged, padded_width=None, pad_value=0, total=None, out=None, tiles_per_prog=None, ex_per_prog=None, launch=None,
    borrow=True,
):
    """Materialize a device-resident ``StagedBatch`` with one launch of ``_materialize_kernel``.

    Returns ``(values, violations)`` as device tensors, without waiting for the device:
    ``values[col]`` (the columns with ``project=True``) of the column's dtype, shape
    ``[offsets[-1]]`` (jagged) or ``[B, padded_width]`` (padded, ``pad_value`` past each row's
    length; the caller guarantees ``padded_width >= max(lengths)``, positions past the width are
    not written); ``violations``: int32 ``[B]``, 1 where example e materialized a ``ts >=
    request_ts[e]`` (``ts > request_ts[e]`` when ``staged.inclusive``; checked when
    ``staged.check_leakage`` and a ``ts`` column is staged).

    ``total``: overrides ``staged.total`` (``offsets[-1]``: known on the host for a batch the
    planner built and moved with ``StagedBatch.to``/``from_flat``, so the launch never syncs). ``out``: optional preallocated
    outputs per column (reused buffers; filled with ``pad_value`` first when padded).
    ``tiles_per_prog`` / ``ex_per_prog``: launch-shape overrides (tuning, tests); ``launch``: the
    history kernel's whole ``(TP, SEQ, warps)``. ``borrow``: columns that share their blocks
    (``borrow_plan``) decode them once; False decodes each on its own (the same results: for
    measuring what it saves).
    """
    dev = _check_staged(staged)
    ok, why = triton_available(dev)
    if not ok:
        raise GpumatError(why)
    B = staged.offsets.numel() - 1
    if padded_width is None:
        shape = (staged.total if total is None else int(total),)
    else:
        shape = (B, int(padded_width))
    viol = torch.zeros(max(B, 0), dtype=torch.int32, device=dev)
    values = {}
    # Triton launches on the current CUDA device: make it the batch's (cuda:1 without a stream
    # context would otherwise launch on cuda:0 against another device's pointers).
    with torch.cuda.device(dev) if dev.type == "cuda" else contextlib.nullcontext():
        _launch(staged, values, viol, out, shape, dev, padded_width, pad_value, tiles_per_prog, ex_per_prog, launch,
                borrow)
    return values, viol


def _room_after(t: torch.Tensor) -> int:
    """Elements of ``t``'s storage after its last one (a view of a packed buffer: up to the
    buffer's end), read without a sync."""
    return t.untyped_storage().nbytes() // t.element_size() - t.storage_offset() - t.numel()


def _output(name, col, out, shape, dev, padded_width, pad_value):
    """The column's output buffer: the caller's (checked) or a new one, filled with the pad when padded."""
    dt = TORCH_DTYPES[col.dtype]
    buf = None if out is None else out.get(name)
    if buf is None:
        buf = torch.empty(shape, dtype=dt, device=dev)
    elif tuple(buf.shape) != shape or buf.dtype != dt or buf.device != dev:
        raise GpumatError(
            f"output buffer for {name!r} must be {dt} {list(shape)} on {dev}, "
            f"got {buf.dtype} {list(buf.shape)} on {buf.device}"
        )
    if padded_width is not None:
        buf.fill_(pad_value)
    return buf


def borrow_plan(staged, masks) -> tuple[int, int]:
    """``(LENDER, BORROW_MASK)`` of the history kernel for ``staged`` (columns in ``passes()``
    order; ``masks``: the launch's ``column_masks``):
    the columns whose blocks are an earlier column's (``StagedBatch.codes_of``: borrowed codes,
    DESIGN §1) take that column's decoded value lines, each plus its own base, and decode nothing.
    One lender a launch (the one most columns borrow from); a column borrows only where its
    masks are its lender's (the same paths: the same blocks say so) and, if its output is 64-bit,
    so is the lender's (a 32-bit line has no high half to give). ``(-1, 0)``: none."""
    groups = {}  # the columns of one set of blocks (codes_of: the set's first column, or the column itself)
    for c, (name, _, _) in enumerate(staged.passes()):
        groups.setdefault(staged.codes_of(name) or name, []).append(c)
    same = lambda a, b: all(((m >> a) & 1) == ((m >> b) & 1) for m in masks[1:])  # noqa: E731
    best = (-1, 0)
    for first, *rest in groups.values():
        mask = sum(1 << c for c in rest if same(c, first) and (masks[0] >> c) & 1 <= (masks[0] >> first) & 1)
        if mask.bit_count() > best[1].bit_count():
            best = (first, mask)
    return best


def column_masks(staged) -> tuple[int, ...]:
    """The history kernel's per-column paths for ``staged`` (its ``passes()``, bit ``c`` for column
    ``c``): ``(OUT64, WIDE, PATCH, RUN, NOBITS, DICT, DELTA, RADIX)`` masks, from what the host knows
    (a device batch that was not told: every path that is right for any block), never the device."""
    out = [0] * 8
    for c, (name, col, check) in enumerate(staged.passes()):
        w = staged.max_width(name)  # (64, i.e. the path right for every width, when unknown)
        kinds = staged.aux(name)  # PATCH / RUN ... blocks (every kind, the paths right for every block, when unknown)
        words = col.words.numel() if torch.is_tensor(col.words) else np.asarray(col.words).size
        if words < 2:  # (no block has an aux word, which needs a word after it: nor would the aux
            kinds = 0  # paths' clamp to the last 3-word read, nwords * 2 - 3, stay inside the words)
        bits = (col.dtype == "int64" or check, w > 32, kinds & 1, kinds >> 1 & 1, w == 0, kinds >> 2 & 1,
                kinds >> 3 & 1, kinds >> 4 & 1)
        for i, b in enumerate(bits):
            out[i] |= int(bool(b)) << c
    return tuple(out)


def _launch(staged, values, viol, out, shape, dev, padded_width, pad_value, tiles_per_prog, ex_per_prog, launch=None,
            borrow=True):
    """Take every column's output and launch the one kernel over all of them (history tiles and tails)."""
    hdrs, words, tails, outs, nwords, dicts, ndicts = [], [], [], [], [], [], []
    masks = column_masks(staged)
    out64_mask, wide_mask, patch_mask, run_mask, nobits_mask, dict_mask, delta_mask, radix_mask = masks
    store_mask, check_col = 0, -1
    for c, (name, col, check) in enumerate(staged.passes()):
        buf = _output(name, col, out, shape, dev, padded_width, pad_value) if col.project else None
        if buf is not None:
            values[name] = buf
        if buf is not None and buf.numel() > 0:
            store_mask |= 1 << c
        else:  # never stored to, but the kernel takes a real pointer of the column's dtype
            buf = torch.empty(1, dtype=TORCH_DTYPES[col.dtype], device=dev)
        if check:
            check_col = c
        if dict_mask >> c & 1:  # DICT blocks: their dictionaries (an empty one reads as a single 0)
            has = col.dicts is not None and col.dicts.numel() > 0
            d = col.dicts if has else torch.zeros(1, dtype=torch.int64, device=dev)
        else:  # never read
            d = col.hdr
        dicts.append(d)
        ndicts.append(max(d.numel(), 1))
        _limit("a column's dictionaries", d.numel())
        hdrs.append(col.hdr)
        words.append(col.words.view(torch.int32))
        tails.append(col.tail_values)
        outs.append(buf)
        nwords.append(col.words.numel())
    if not store_mask and check_col < 0:
        return
    lender, borrow_mask = borrow_plan(staged, masks) if borrow else (-1, 0)
    T = staged.tile_block.numel()
    B = staged.offsets.numel() - 1
    n_tail = tails[0].numel()
    for what, n in [("a column's words (32-bit)", 2 * max(nwords)), ("the staged blocks", 3 * hdrs[0].shape[0]),
                    ("the tiles", T), ("the examples", B)]:
        _limit(what, n)
    if T and not hdrs[0].shape[0]:
        raise GpumatError(f"staged batch has {T} tiles but no staged blocks")
    tp0, lanes = _launch_shapes()
    bucket = len_bucket(staged)
    tuned = False
    if launch is not None:
        if len(launch) not in (3, 4):
            raise GpumatError(f"launch {tuple(launch)}: (TP, SEQ, warps) or (TP, SEQ, warps, maxnreg)")
        tp, seq, warps, maxnreg = (int(x) for x in (*launch, 0)[:4])
        if min(tp, seq, warps) < 1 or warps & (warps - 1) or tp & (tp - 1) or not (maxnreg == 0 or 16 <= maxnreg <= 255):
            raise GpumatError(f"launch (TP, SEQ, warps[, maxnreg]) = {tuple(launch)}: each >= 1, TP and warps powers "
                              "of two, maxnreg 16..255")
    elif tiles_per_prog is not None:
        tp, seq, warps, maxnreg = tiles_per_prog, (GPU_TILES_SEQ if tiles_per_prog == 1 else 1), HISTORY_WARPS, 0
    elif _DEFINED_INTERPRETED:
        tp, seq, warps, maxnreg = tp0, 1, HISTORY_WARPS, 0
    else:
        tp, seq, warps, maxnreg = (*launch_for(bucket), 0)[:4]
        tuned = _autotuned() is not None
    epp, tb, tail_loop = tail_shape(staged.known_max_tail, lanes, ex_per_prog)
    # Lanes per tile row: the block size (a power of two, DESIGN §2) up to a cap that keeps the
    # [TILES_PER_PROG, lanes] block in registers; larger blocks loop in the kernel.
    block = min(_pow2(int(staged.block_size)), MAX_LANES)
    lanes_h = min(block, 32)
    width = 0 if padded_width is None else int(padded_width)
    n_out = shape[0] if padded_width is None else 0
    common = dict(NCOL=len(hdrs), STORE_MASK=store_mask, CHECK_COL=check_col,
                  INCLUSIVE=check_col >= 0 and staged.inclusive, PADDED=padded_width is not None)
    if T:
        args = (tuple(hdrs), tuple(words), tuple(outs), tuple(map(opaque_count, nwords)), tuple(dicts),
                tuple(map(opaque_count, ndicts)),
                staged.tile_block, staged.tile_lo, staged.tile_cnt, staged.tile_out, staged.tile_ex,
                staged.offsets, staged.request_ts, viol, T, B, n_out, width)
        loop = int(staged.block_size) > block
        # Value loads unmasked for long windows where every column's words have storage after them
        # for a chunk's dead lanes (``WORDS_SLACK``: what ``StagedBatch.pack`` leaves; never in the
        # looping path, whose chunks may start past a short tile's end); SLACK_MIN_BUCKET says why
        slack = not loop and bucket >= SLACK_MIN_BUCKET and all(_room_after(col.words) >= block + 1
                                                                for _, col, _ in staged.passes())
        # (DELTA blocks hold at most AUX_MAX_BLOCK values: a tier of larger blocks, which loops, has none)
        kw = dict(SLACK=slack, OUT64_MASK=out64_mask, WIDE_MASK=wide_mask, PATCH_MASK=patch_mask, RUN_MASK=run_mask, NOBITS_MASK=nobits_mask,
                  DICT_MASK=dict_mask, DELTA_MASK=0 if loop else delta_mask, RADIX_MASK=0 if loop else radix_mask,
                  LANES=lanes_h, STEPS=block // lanes_h, LENDER=lender, BORROW_MASK=borrow_mask,
                  LOOP=loop, **common)
        if tuned:
            _autotuned()[lambda meta: (triton.cdiv(T, meta["TILES_PER_PROG"] * meta["SEQ"]),)](
                *args, len_bucket=bucket, **kw)
        else:
            _history_kernel[(triton.cdiv(T, tp * seq),)](*args, len_bucket=bucket, TILES_PER_PROG=tp, SEQ=seq,
                                                         **history_options(warps, maxnreg, wide_mask != 0), **kw)
    if n_tail and B > 0:
        _tail_kernel[(triton.cdiv(B, epp),)](
            tuple(tails), tuple(outs), staged.offsets, staged.hist_len, staged.tail_src, staged.tail_len,
            staged.request_ts, viol, B, n_tail, n_out, width,
            EX_PER_PROG=epp, TAIL_BLOCK=tb, TAIL_LOOP=tail_loop, num_warps=TAIL_WARPS, **common,
        )
