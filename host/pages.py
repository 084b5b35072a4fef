"""Format 3's compact blob layout (docs/DESIGN.md §1 "Format 3"): format 2's blocks (``host.codec.
fit_blocks``: base, slope, width per block of ``block_size`` values) laid out in a fraction of the
bytes, plus PATCH and RUN blocks, and turned into the staged form (DESIGN.md §4) when read.

A blob (one stripe, one column) of ``nb`` blocks, in pages of ``PAGE_BLOCKS`` blocks::

    [tags: u8 per block][anchors: (u32, u32) per page, only with more than one page]
    [payload: every block's bits back to back][fields: LEB128 varints, page after page]

(a one-page blob with PATCH or RUN blocks: ``[tags][fields][payload]``, its payload sizes being in
its fields).

- tag: ``TAG_LFOR`` (128) when the block's line has a slope, plus its width ``w`` (0..64) for a
  plain FOR/LFOR block, ``TAG_PATCH`` (65), ``TAG_RUN`` (66), ``TAG_DELTA`` (67) or
  ``TAG_DELTA_PATCH`` (68), ``TAG_DELTA_SIGNED`` (69), ``TAG_RADIX`` (70), or 71..74 for PATCH,
  RUN, DELTA PATCH and DELTA SIGNED with a sparse bitmap; 76..111 for a compact PATCH block (a
  FLAG block: ``w`` 0, no slope, its base the prediction, a sparse bitmap of ``e`` set bits, ``e``
  in its tag: 76..93 ``e = tag - 75`` with exceptions of no bits, a flag's ones; 94..111 ``e =
  tag - 93`` with a ``w2`` field); 75 for a RUN block whose run starts are gaps; 112..127 for a
  LEVELS block (``L = 1 + (tag - 112) // 4`` levels, a tail of ``wt = (tag - 112) % 4`` bits, no
  slope). Every 7-bit tag is an encoding: a FLAG or LEVELS tag with the slope's bit is a
  ``CorruptionError``, but for CLASSES tags (240, 244, 248, 252) and BARE LEVELS tags (the other
  LEVELS tags with bit 7: a LEVELS block of no fields, its blob's one block).
- fields, per block: ``zigzag(base - prediction)``, ``zigzag(slope)`` when it has one, then PATCH
  DELTA PATCH and DELTA SIGNED: ``w, w2, e``; RUN: ``w, runs`` (with gaps: their width too);
  DELTA: ``w``; RADIX: ``R``; LEVELS: its payload's bits after its first level; a FLAG block none,
  or only ``w2`` (94..111). The prediction is 0 for a page's
  first block, else where the previous block's line ended (``base + slope * n``, ``n`` its values
  or runs), so each page's fields parse on their own.
- DELTA / DELTA PATCH blocks are plain / PATCH blocks whose offsets from the line are steps: value k
  is the line at k plus their sum over ``0 .. k`` (docs/DESIGN.md §1). DELTA SIGNED is DELTA PATCH
  whose exceptions are signed: stored as ``zigzag(high part) - 1``, so a step may be below the
  line's (a pack's timestamps, which jump back between two histories).
- RADIX blocks hold a small alphabet's values ``line + digit``, digits ``0 .. R - 1``, ``g`` of them
  a ``w``-bit code (mixed radix, the first digit lowest): ``ceil(n / g)`` codes of payload; ``g``
  and ``w`` follow from ``R`` (``RADIX_G``, ``RADIX_W``: the fewest bits a digit, at most 16 a code).
- LEVELS blocks hold a small alphabet whose values fall in frequency from the base (a frequency
  dictionary's codes, an action type): a bitmap of ``count`` bits (value above the base), then for
  each level ``i = 1 .. L - 1`` one bit per value whose bits on the levels before are all 1, in
  order (value above ``base + i``), then ``wt`` bits per value past the last level; value k is
  ``base + i`` for the first level ``i`` whose bit for it is 0, else ``base + L +`` its tail. A
  value costs a bit per level it reaches: ``base`` 1 bit, ``base + 1`` 2 (a Huffman code of lengths
  1, 2, ..., ``L``, then ``L + wt``). ``stage_blocks`` turns one into a PATCH block of no low bits
  (the first level its bitmap, the values above the base its exceptions), so the kernels read
  it as they read those.
- payload of block ``j``, from bit ``P_j`` (the bits of the blob's earlier blocks; zero bits to a
  whole byte at the end): ``n w`` bits of values (LSB first), then for PATCH / RUN a bitmap of
  ``count`` bits (the exceptions; the run starts), or a sparse one's set bits' positions
  (``bitmap_bits``: ascending, ``bit_length(count - 1)`` bits each, a RUN block's after position
  0; where they take fewer bits; ``stage_blocks`` turns them back into the bitmap, so the staged
  form does not change), then PATCH's ``e w2`` bits of exceptions (the high parts ``r >> w``, minus
  one).
- anchors of page ``p``: the byte offset (from the blob start) of its first field, and the payload
  bit offset of its first block.

So a reader of blocks ``[lo, hi)`` reads, at known offsets, the tags of their pages and the
anchors around them, then the fields of those pages and the payload: exactly the bits of
``[lo, hi)`` when the pages hold plain blocks only, whole pages when they hold PATCH, RUN or DELTA blocks
(whose sizes are in the fields). A window is still read at block granularity. Blobs sit back to
back at byte granularity; a segment's checksums are per chunk of its blob region
(host/segment.py), so what a read uses is verified.

Parsing (``parse_fields``) decodes the varints of all pages of a batch at once and rebuilds the
bases by a segmented prefix sum (in C when built); ``stage_blocks`` copies each block's bits to word
boundaries (``realign``: in C when built) and writes a PATCH / RUN / DELTA block's aux word. The encoder
(``encode_stripes``) picks per block the kind that takes the fewest bits, and keeps PATCH / RUN in
a stripe set (one segment's column) only where they save ``EXT_MIN_SAVING`` of its payload, DELTA
only where it saves ``DELTA_MIN_SAVING`` more (PATCH and RUN blocks then join it: the column reads
aux words anyway);
``encode_column`` stores a segment's column as codes into a dictionary of its distinct values (the
segment DICT: the dictionary first, then blobs of codes) where that saves ``DICT_MIN_SAVING``.
"""

from __future__ import annotations

import functools
import itertools
import struct

import numpy as np

from gpumat.core.errors import CorruptionError
from gpumat.core.staged import (AUX_CODES, AUX_DELTA, AUX_DICT, AUX_FLAG, AUX_MAX_BLOCK, AUX_MAX_W2, AUX_PATCH, AUX_RADIX, AUX_RUN,
                                 AUX_SIGNED, RADIX_MAX_W)
from gpumat.host import codec, native
from gpumat.host.ranges import ranges, restart_cumsum, take_ranges, unique

PAGE_BLOCKS = 16  # blocks per page: the unit a read parses, and its read amplification at most
# decode_blobs' tag of a constant stripe among blobs (a read's plan, host/reader.py _plan3): no blob, but its
# count copies of the value its offset holds (gm_decode_blobs' GM_CONST_TAG)
CONST_TAG = -2
TAG_LFOR = 0x80
_U64 = np.uint64


zigzag, unzigzag = codec.zigzag, codec.unzigzag


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


# tag & 0x7F of the extended blocks (75..127 reserved)
TAG_PATCH, TAG_RUN, TAG_DELTA, TAG_DELTA_PATCH, TAG_DELTA_SIGNED, TAG_RADIX = 65, 66, 67, 68, 69, 70
# the same kinds with a sparse bitmap: its set bits' positions (``bitmap_bits``)
TAG_PATCH_SPARSE, TAG_RUN_SPARSE, TAG_DELTA_PATCH_SPARSE, TAG_DELTA_SIGNED_SPARSE = 71, 72, 73, 74
# FLAG blocks: sparse PATCH blocks with no low bits and no slope, based where the page's line is
# (their base and ``w`` not stored), ``e`` (1 .. FLAG_MAX_E) in the tag: exceptions of 0 bits (a flag's
# ones; no fields at all), or of ``w2`` bits (one field)
FLAG_MAX_E = 18  # sparse positions pay at most this many in a block of 128 (7 bits each)
TAG_FLAG, TAG_FLAG_W2 = 76, 76 + FLAG_MAX_E  # + e - 1
TAG_FLAG_LAST = TAG_FLAG_W2 + FLAG_MAX_E - 1
# LEVELS blocks: a small alphabet's values as levels of bitmaps (docs/DESIGN.md §1): L levels (1 ..
# LEVELS_MAX) and the tail's width wt (0 .. LEVELS_MAX_WT) in the tag, TAG_LEVELS + 4 (L - 1) + wt; no
# slope; fields the base and the payload's bits after its first level's
TAG_LEVELS, LEVELS_MAX, LEVELS_MAX_WT = TAG_FLAG_LAST + 1, 4, 3
TAG_LAST = TAG_LEVELS + 4 * LEVELS_MAX - 1  # (127: the tag byte's last, bit 7 the slope's)
# CLASSES blocks: LEVELS whose classes hold ranges of values (docs/DESIGN.md §1, an entropy stage):
# class i < L the values base + s_i .. base + s_i + 2^w_i - 1 (s_0 = 0, s_(i+1) = s_i + 2^w_i), coded as
# the levels' bits then w_i low bits; the tail (past level L - 1) from base + s_L, in wt bits. L (1 ..
# LEVELS_MAX) in the tag, TAG_CLASSES + 4 (L - 1): a LEVELS tag with bit 7, which LEVELS never has (no
# slope); fields the base, the payload's bits after its first level, and its shape, w_i in bits 4i ..
# 4i + 3 (i < L) and wt from bit 4L
TAG_CLASSES = 0x80 | TAG_LEVELS
# BARE LEVELS blocks: a LEVELS block of a tail of wt >= 1 bits with bit 7 (``TAG_CLASSES + 4 (L - 1) +
# wt``, which CLASSES never has), no fields: its base the prediction (0), its payload's bits after the
# first level what its levels say (a reader walks them, ``bare_mids``); only as its blob's one block
# (a short stripe of an action type: its base and size fields were 2 of its 8-9 bytes). LEVELS of L
# levels and no tail are bit for bit LEVELS of L - 1 and a 1-bit tail, so every LEVELS block of 2 or
# more values past its first level has a bare form
CLASSES_MAX_W = 15  # a class's low width (4 bits of the shape)
CLASSES_MAX_WT = 24  # the tail's: a value less the base stays under 2^25 (its staged exception a 32-bit word)
# a RUN block whose run starts are stored as gaps (each less the start before less 1) of ``wg`` bits,
# a third field: runs of a few values each (a value per user in a pack of short histories)
TAG_RUN_GAPS = 75
RUN_GAPS = True  # the encoder weighs RUN blocks' starts as gaps (False: as before them)
BARE_LEVELS = True  # the encoder writes a blob's one LEVELS block based at 0 as BARE LEVELS (False: as before them)
SP_DENSE, SP_POSITIONS, SP_GAPS = 0, 1, 2  # a bitmap's form (``Blocks.sp``)
KIND_PLAIN, KIND_PATCH, KIND_RUN = 0, AUX_PATCH, AUX_RUN
KIND_DELTA, KIND_DELTA_PATCH = AUX_DELTA, AUX_DELTA | AUX_PATCH  # the staged aux word's kinds
KIND_DELTA_SIGNED, KIND_RADIX = KIND_DELTA_PATCH | AUX_SIGNED, AUX_RADIX
KIND_LEVELS = 32  # stored only: staged as a PATCH block of no low bits (``stage_blocks``)
KIND_CLASSES = 64  # stored only: staged as a PATCH block of w_0 low bits (``_classes_as_patch``)
_KINDS = [KIND_PATCH, KIND_RUN, KIND_DELTA, KIND_DELTA_PATCH, KIND_DELTA_SIGNED, KIND_RADIX]
_TAG_OF_KIND = np.zeros(KIND_CLASSES + 1, np.int64)
_TAG_OF_KIND[_KINDS] = [TAG_PATCH, TAG_RUN, TAG_DELTA, TAG_DELTA_PATCH, TAG_DELTA_SIGNED, TAG_RADIX]
# varints after base (and slope) per kind: PATCH, DELTA PATCH and DELTA SIGNED w, w2, e; RUN w, runs;
# DELTA w; RADIX R; LEVELS the payload's bits after its first level; CLASSES those and its shape
_EXTRA_FIELDS = np.zeros(KIND_CLASSES + 1, np.int64)
_EXTRA_FIELDS[_KINDS + [KIND_LEVELS, KIND_CLASSES]] = [3, 2, 1, 3, 3, 1, 1, 2]
_SPARSE_KINDS = [KIND_PATCH, KIND_RUN, KIND_DELTA_PATCH, KIND_DELTA_SIGNED]  # the kinds with a bitmap
_SPARSE_TAG_OF_KIND = np.zeros(KIND_CLASSES + 1, np.int64)
_SPARSE_TAG_OF_KIND[_SPARSE_KINDS] = [TAG_PATCH_SPARSE, TAG_RUN_SPARSE, TAG_DELTA_PATCH_SPARSE, TAG_DELTA_SIGNED_SPARSE]


def _radix_table():
    """Per alphabet size ``R`` (0 .. 256): the digits ``g`` per code and the code width ``w`` (at
    most ``RADIX_MAX_W``) with the fewest bits a digit (ties: the fewer digits), 0 where no code
    beats ``bit_length(R - 1)`` bits a digit (powers of two, R < 3; R > 256 fits one digit a code).
    Part of the format: a RADIX block stores only ``R`` (``gm_radix_code`` in host/_native.c)."""
    g_of, w_of = np.zeros(257, np.int64), np.zeros(257, np.int64)
    for r in range(3, 257):
        best = (int(r - 1).bit_length(), 1)
        for g in range(2, RADIX_MAX_W + 1):
            if r**g > 1 << RADIX_MAX_W:
                break
            w = (r**g - 1).bit_length()
            if w * best[1] < best[0] * g:
                best = (w, g)
        if best[1] > 1:
            w_of[r], g_of[r] = best
    return g_of, w_of


RADIX_G, RADIX_W = _radix_table()


def radix_log2_bits(R: np.ndarray) -> np.ndarray:
    """A RADIX block's aux word's high half (DESIGN §4): float32 ``log2 R``'s bits, shifted into place
    (uint64): the kernels' ``1 / R^j`` is ``2^(-j log2 R)``."""
    return np.log2(np.asarray(R, np.float32)).astype(np.float32).view(np.uint32).astype(_U64) << _U64(32)
# A column of a segment uses PATCH / RUN blocks only where they save at least this fraction of its
# payload: each costs the kernels about 25 more instructions per value of the column in a batch
# (13-15 without low bits; ``gpumat bench kernels --static``), worth it for a sparse flag column
# (bench ``action``: -35%), bursts of equal timestamps (ML-1M ``ts``: -40%) or a heavy tail (bench
# ``duration_ms``: -7%, what brings the bench tier under tuned Parquet; the kernels stay under the
# DRAM floor), not for a percent or two (bench ``ts``: -1%).
EXT_MIN_SAVING = 1 / 16
# DELTA blocks (a block's steps, prefix-summed by the decoders: timestamps whose steps are small
# beside their spread) only where they save at least this fraction of what the column takes without
# them: a column with DELTA blocks costs the kernels a warp scan per tile and the walk of whole
# blocks (about 2 more SASS instructions per value of the column, ``gpumat bench kernels --static``,
# ts as DELTA PATCH), worth it for ML-1M's and ML-100K's ts (-19%, -17%; -12% for ML-1M's events
# cut into histories of 28 events, 1.24x -> 1.13x the tuned Parquet ts), not for the bench tier's
# (-7.5%, which would take its long tenant from 3.0 to about 5 instructions per event).
DELTA_MIN_SAVING = 1 / 10
# RADIX blocks (a small alphabet's digits, several a code) only where they save at least this fraction
# of what the column takes without them: each value costs the kernels a division of its code by a
# power of the alphabet (in fp32, exact for codes of at most 16 bits), about 20 more SASS
# instructions per value of the column (PATCH's ~25 are worth 1/16: the same bar); worth it for a
# rating of 5 values (3 -> 2.33 bits a value: -22%) or 3 (2 -> 1.6), not for a flag column whose
# PATCH blocks already take fewer bits.
RADIX_MIN_SAVING = 1 / 16
# CLASSES blocks (an entropy stage for skewed alphabets) only where they save this much more of a
# column's payload than the kinds chosen without them: they stage as PATCH blocks (the kernels' cost
# is PATCH's), but the host parses and stages them in NumPy
CLASSES_MIN_SAVING = 1 / 32
# ... and only in a column whose plain payload is at least this many bits (1 KiB): weighing them
# costs a small append more than it could save (compaction weighs the merged segment again)
EXT_MIN_BITS = 8192
# A column of a segment is stored as codes into a dictionary of its distinct values (the segment
# DICT, ``encode_column``) only where codes and dictionary together save at least this fraction of
# its bytes: each DICT block costs the kernels one gather per value (about 4 more instructions),
# worth it for Zipf ids (bench ``item_id``: 212k distinct in 754k events), not for a few percent.
DICT_MIN_SAVING = 1 / 16
DICT_MAX_ENTRIES = 1 << 26  # a dictionary's entries (512 MiB decoded); the kernels index in 32 bits
# A dictionary's head: form 1 (segments whose entry has ``"dicts": 1``), its entries and its blob's
# bytes as two u64; form 2 (``"dicts": 2``, what this release writes), its entries as a varint: its
# blob runs to where the next blob or dictionary of its column starts, which the index tells (a
# stripe table's 16-byte head was 2% of a listening history's file: DESIGN §1 "Stripe tables").
DICT_HEAD = struct.Struct("<QQ")
DICT_FORM = 2
# A dictionary of at most FREQ_MAX_ENTRIES entries is also tried in frequency order where a first
# estimate (a bit a value, the non-mode values' codes) says it may pay; one of at most
# FREQ_SAMPLED_ENTRIES where an encoding of a sample of its blocks says so (``_frequency_pays``:
# a category that follows its items, a tab, an author; 4-6 low bits a code in PATCH blocks). Not
# an item id's over 2^16 values: such a dictionary loses its sorted steps in that order, and its
# codes' PATCH blocks cost the kernels' aux path on the column every tenant projects (a smaller
# catalogue's ids may take it, at that cost: the same 1/16 as any PATCH block must save; the bench's
# item_id: 14% smaller, 20.4 -> 17.4 bits an event, for 765 -> 967 SASS instructions a program:
# 2.99 -> 3.78 / 4.39 -> 5.50 warp-instructions an event on the long / short tenant, over issue 10's
# bars of 3 and 5; its dictionary 2.22 -> 2.58 B an event, read by every short epoch; DESIGN §1)
FREQ_MAX_ENTRIES = 256
FREQ_SAMPLED_ENTRIES = 1 << 16
FREQ_SAMPLE_BLOCKS = 2048  # the blocks that sample takes (every k-th block of the column)


class Blocks:
    """Per block of a blob (or of many): ``kind`` (``KIND_*``), the line ``base + slope * i`` and
    width ``w`` of its packed values, ``nv`` of them (``cnt``, or the runs of a RUN block), and a
    PATCH block's ``w2``-bit exceptions, ``e`` of them; ``cnt`` the block's values; ``sp`` its
    bitmap's form (``SP_DENSE``, ``SP_POSITIONS``, or for RUN ``SP_GAPS``: its run starts' gaps
    in ``w2`` bits each). ``bits()``: its payload, ``nv w`` bits of values, then its bitmap
    (PATCH, RUN, DELTA PATCH, DELTA SIGNED: ``bitmap_bits``), then ``e w2``. A DELTA block's values
    (and exceptions) are differences: prefix-summed on the line. A RADIX block's ``nv`` values are its
    codes, ``w2`` its alphabet ``R`` and ``e`` its digits a code ``g`` (no exceptions). A LEVELS
    block's first level is its ``nv = cnt`` values of ``w = 1`` bit, ``sp`` its levels ``L``, ``mid``
    the bits of its other levels and ``e`` values of ``w2`` bits its tail (as parsed, before
    ``stage_blocks`` counts them: ``mid`` all the bits after the first level, ``e`` 0). A CLASSES
    block's the same, ``w2`` its shape (``classes_shape``), ``e`` 0 (the encoder's: its levels' bits
    after the first)."""

    FIELDS = ("kind", "w", "base", "slope", "nv", "w2", "e", "cnt", "sp", "mid")

    def __init__(self, kind, w, base, slope, nv, w2, e, cnt, sp=None, mid=None):
        self.kind, self.w, self.base, self.slope, self.nv, self.w2, self.e, self.cnt = kind, w, base, slope, nv, w2, e, cnt
        self.sp = np.zeros(len(kind), np.int8) if sp is None else np.asarray(sp).astype(np.int8)
        self.mid = np.zeros(len(kind), np.int64) if mid is None else np.asarray(mid, np.int64)

    def take(self, idx) -> "Blocks":
        return Blocks(*(getattr(self, f)[idx] for f in self.FIELDS))

    def bits(self) -> np.ndarray:
        return self.nv * self.w + bitmap_bits(self.kind, self.cnt, self.nv, self.e, self.sp, self.w2) + self.mid + \
            np.where(((self.kind & 3) == KIND_PATCH) | (self.kind == KIND_LEVELS), self.e * self.w2, 0)

    def tags(self) -> np.ndarray:
        t = np.where(self.kind == KIND_PLAIN, self.w, np.where(self.sp == SP_GAPS, TAG_RUN_GAPS, np.where(
            self.sp != 0, _SPARSE_TAG_OF_KIND[self.kind], _TAG_OF_KIND[self.kind])))
        t = np.where(self.kind == KIND_LEVELS, TAG_LEVELS + 4 * (self.sp.astype(np.int64) - 1) + self.w2, t)
        t = np.where(self.kind == KIND_CLASSES, TAG_CLASSES + 4 * (self.sp.astype(np.int64) - 1), t)
        return (t | np.where(self.slope != 0, TAG_LFOR, 0)).astype(np.uint8)


def has_bitmap(kind: np.ndarray) -> np.ndarray:
    """Blocks of ``kind`` with a bitmap: PATCH, RUN, DELTA PATCH, DELTA SIGNED."""
    return (np.asarray(kind) & 3) != 0


def position_bits(cnt: np.ndarray) -> np.ndarray:
    """The bits of a position in a block of ``cnt`` values (7 for 128): ``bit_length(cnt - 1)``."""
    return codec.bit_length(np.maximum(np.asarray(cnt, np.int64) - 1, 0).astype(_U64))


def bitmap_bits(kind: np.ndarray, cnt: np.ndarray, nv: np.ndarray, e: np.ndarray, sp: np.ndarray,
                w2: np.ndarray) -> np.ndarray:
    """The stored bits of each block's bitmap: ``cnt`` (one a value), or for a sparse one its set
    bits' positions, ``position_bits(cnt)`` each, ascending: a PATCH block's ``e`` exceptions, a RUN
    block's run starts after position 0 (``nv - 1``; position 0 always starts one); or a RUN
    block's run starts as gaps (``SP_GAPS``: each start less the one before less 1, ``w2`` bits
    each); 0 without one."""
    kind = np.asarray(kind)
    ones = np.where((kind & 3) == KIND_RUN, np.asarray(nv) - 1, e)
    return np.where(has_bitmap(kind), np.where(sp == SP_GAPS, ones * w2, np.where(sp != 0, ones * position_bits(cnt), cnt)), 0)


def sparse_pays(cnt: np.ndarray, ones: np.ndarray) -> np.ndarray:
    """Where a bitmap of ``ones`` stored positions (exceptions; runs after the first) takes fewer
    bits as positions than as ``cnt`` bits: the encoder's choice, ``bitmap_bits``'s ``sp``."""
    return np.asarray(ones) * position_bits(cnt) < np.asarray(cnt)


def _bitmap_cost(cnt: np.ndarray, ones: np.ndarray) -> np.ndarray:
    """The bits of a bitmap of ``ones [n, ...]`` stored positions in blocks of ``cnt [n]`` values:
    the smaller of its two forms (``bitmap_bits``)."""
    c = np.asarray(cnt).reshape((len(cnt),) + (1,) * (np.ndim(ones) - 1))
    return np.minimum(c, ones * position_bits(c))


def _patch_costs(r: np.ndarray, cnt: np.ndarray, w: np.ndarray, flag=None):
    """For PATCH on the residuals ``r [n, lanes]`` (zero past each count) of blocks of width ``w``:
    the best ``(bits, w1, w2, e)`` per block over every low width ``w1 < w`` (exceptions: the values
    of ``r >> w1 != 0``, stored as ``(r >> w1) - 1`` in ``w2 <= AUX_MAX_W2`` bits), bits counting
    the payload and the three extra field bytes; where ``flag`` (bool per block: a line of no
    slope), ``w1 = 0`` with a sparse bitmap of at most ``FLAG_MAX_E`` is a FLAG block, one field
    (``w2``) or none, and no base (8 bits less: the costs leave out every other kind's base). From a histogram of the residuals' bit lengths: ``e(w1)`` is a suffix sum, and
    ``w2(w1)`` depends only on the largest residual. In C when built (``native.patch_costs``)."""
    if native.available()[0]:
        return native.patch_costs(r, cnt, w, flag, AUX_MAX_W2, FLAG_MAX_E)
    n = len(cnt)
    bl = codec.bit_length(r)  # [n, lanes]
    hist = np.bincount((np.arange(n)[:, None] * 66 + bl).reshape(-1), minlength=66 * n).reshape(n, 66)
    e_of = np.cumsum(hist[:, ::-1], axis=1)[:, ::-1][:, 1:]  # e_of[:, w1] = values longer than w1 bits
    rmax = r.max(axis=1) if r.shape[1] else np.zeros(n, _U64)
    w1 = np.arange(65)
    with np.errstate(over="ignore"):
        hi = rmax[:, None] >> np.minimum(w1, 63).astype(_U64)[None, :]
        w2 = codec.bit_length(hi - _U64(1))
    e = e_of[:, :65]
    ok = (w1[None, :] < w[:, None]) & (w2 <= AUX_MAX_W2) & (e > 0)
    fields = 8 * (2 + varint_len(e.astype(_U64)))
    if flag is not None:
        f = np.asarray(flag, bool) & (e[:, 0] <= FLAG_MAX_E) & sparse_pays(cnt, e[:, 0])
        fields[f, 0] = 8 * (w2[f, 0] > 0) - 8  # (and no base: every other kind's, uncounted)
    cost = cnt[:, None] * w1[None, :] + _bitmap_cost(cnt, e) + e * w2 + fields
    cost = np.where(ok, cost, 1 << 60)  # never chosen, and no overflow when added to
    best = np.argmin(cost, axis=1)
    rows = np.arange(n)
    return cost[rows, best], best, w2[rows, best], e[rows, best]


def _signed_patch_costs(r: np.ndarray, cnt: np.ndarray):
    """``_patch_costs`` for signed exceptions (DELTA SIGNED): residuals ``r [n, lanes]`` (int64, 0
    past each count), exceptions the values of ``r >> w1 != 0`` (arithmetic: every negative one),
    stored as ``zigzag(r >> w1) - 1`` in ``w2 <= AUX_MAX_W2`` bits; only blocks with an exception."""
    n = len(cnt)
    neg = r < 0
    bl = np.where(neg, 0, codec.bit_length(r.view(_U64)))  # [n, lanes]; a negative value: always one
    hist = np.bincount((np.arange(n)[:, None] * 66 + bl).reshape(-1), minlength=66 * n).reshape(n, 66)
    e = np.cumsum(hist[:, ::-1], axis=1)[:, ::-1][:, 1:][:, :65] + neg.sum(axis=1)[:, None]  # [n, w1]
    pmax = np.where(neg, 0, r).max(axis=1).view(_U64) if r.shape[1] else np.zeros(n, _U64)
    nmax = np.where(neg, ~r, 0).max(axis=1).view(_U64) if r.shape[1] else np.zeros(n, _U64)  # ~r: -r - 1
    sh = np.minimum(np.arange(65), 63).astype(_U64)[None, :]
    with np.errstate(over="ignore"):
        hp = np.where(np.arange(65)[None, :] < 64, pmax[:, None] >> sh, _U64(0))
        hn = np.where(np.arange(65)[None, :] < 64, nmax[:, None] >> sh, _U64(0))
        top = np.maximum(np.where(hp > 0, _U64(2) * hp - _U64(1), _U64(0)),
                         np.where(neg.any(axis=1)[:, None], _U64(2) * hn, _U64(0)))  # the largest stored
    w2 = codec.bit_length(top)
    w1 = np.arange(65)
    ok = (w1[None, :] < 64) & (w2 <= AUX_MAX_W2) & (w1[None, :] + w2 <= 64) & (e > 0)
    cost = cnt[:, None] * w1[None, :] + _bitmap_cost(cnt, e) + e * w2 + 8 * (2 + varint_len(e.astype(_U64)))
    cost = np.where(ok, cost, 1 << 60)
    best = np.argmin(cost, axis=1)
    rows = np.arange(n)
    return cost[rows, best], best, w2[rows, best], e[rows, best]


def _levels_costs(r: np.ndarray, cnt: np.ndarray, ok: np.ndarray, bare: np.ndarray | None = None):
    """For LEVELS on the residuals ``r [n, lanes]`` (uint64, zero past each count; ``ok``: blocks of
    no slope): the best ``(bits, L, wt, tail, mid)`` per block over ``L`` levels (1 ..
    ``LEVELS_MAX``) and tail widths ``wt`` (0 .. ``LEVELS_MAX_WT``) that hold its largest residual
    (``L + 2^wt - 1``), bits counting the payload and the field of its size past the first level
    (``_NEVER`` where none holds it, or no residual is above 0). Level ``i``'s bits are the values
    of at least ``i`` (``cnt`` for level 0), the tail's the values of at least ``L``. ``bare``: blocks
    that would be BARE LEVELS (a blob's one block, based at 0): no size field, but for one level of
    no tail (weighed with the base field every other kind but FLAG pays, though they have none: as
    plain or FLAG blocks, a flag's stripes cost their index less, whose sizes their tags predict)."""
    n = len(cnt)
    c = np.stack([cnt] + [(r >= _U64(i)).sum(axis=1) for i in range(1, LEVELS_MAX + 1)], 1)  # [n, 5]
    rmax = np.minimum(r.max(axis=1), _U64(256)).astype(np.int64) if r.shape[1] else np.zeros(n, np.int64)
    best = np.full(n, _NEVER, np.int64)
    out = [np.zeros(n, np.int64) for _ in range(4)]
    for L in range(1, LEVELS_MAX + 1):
        mid = c[:, 1:L].sum(axis=1)
        for wt in range(LEVELS_MAX_WT + 1):
            extra = mid + c[:, L] * wt
            fields = 8 * varint_len(extra.astype(_U64))
            if bare is not None and (L > 1 or wt > 0):
                fields = np.where(bare, 0, fields)
            cost = np.where(ok & (c[:, 1] > 0) & (rmax <= L + (1 << wt) - 1), cnt + extra + fields, _NEVER)
            better = cost < best
            best = np.where(better, cost, best)
            for into, x in zip(out, (np.full(n, L), np.full(n, wt), c[:, L], mid)):
                into[better] = x[better]
    return (best, *out)


CLASSES_SEARCH_W = 10  # the encoder's class widths: 0 .. this (a wider class: the tail)
CLASSES_SHORTLIST = 16  # shapes weighed per block: the best on a sample of the chunk's blocks
CLASSES_SAMPLE = 256  # blocks of that sample, spread over the chunk
# ... and each level past a shape's first weighed at this many bits more a block than it takes (the
# shape chosen so; its cost, and the column's choice of kinds, its real bits): a level costs the
# decoders a class, the C decoder's AVX-512 path its low bits unpacked and expanded into the block's
# 8 vectors (a CLASSES block of 5 classes took about 2.8x a FOR block's time, lookups included). On
# ML-1M's item id codes 4 levels saved 0.43% of their payload over 2; weighed so, their CLASSES
# blocks save 6.0% over plain blocks, under EXT_MIN_SAVING, and the column takes plain ones: 6.5%
# more bytes, its reads and those of the columns that borrow its codes 1.3-1.4x faster
# (docs/results/cpu-2026-12-04d/; 0 weighs shapes by their bits alone)
CLASSES_LEVEL_BITS = 16
if sum((CLASSES_SEARCH_W + 1) ** L for L in range(1, LEVELS_MAX + 1)) >= 1 << 15:  # (_classes_costs' keys)
    raise ImportError("CLASSES shapes: a shape's place must fit in 15 bits (16,104 of them)")


@functools.lru_cache(maxsize=None)
def _shapes(L: int, search_w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every ``(w_0 .. w_(L-1))`` of widths 0 .. ``search_w``, as rows [S, L]; their classes' starts
    [S, L + 1] (the tail's last); and the weights [S, L] that make a shape's bits before its tail a
    dot product with the counts under its starts (``_classes_bits``); cached, read-only (the writer
    weighs them per chunk)."""
    g = np.meshgrid(*([np.arange(search_w + 1)] * L), indexing="ij")
    ws = np.stack([x.reshape(-1) for x in g], 1)
    st = np.concatenate([np.zeros((len(ws), 1), np.int64), np.cumsum(np.int64(1) << ws, axis=1)], 1)
    coef = _classes_coef(ws)
    for x in (ws, st, coef):
        x.flags.writeable = False
    return ws, st, coef


def _classes_coef(ws: np.ndarray) -> np.ndarray:
    """For shapes of widths ``ws [S, L]``: ``coef [S, L]`` such that a block of ``c`` values, ``b_k``
    of them under class ``k``'s start (k = 1 .. L; the tail's last), takes ``c (L - 1) + sum_k b_k
    coef_k`` bits in its levels after the first and its classes before the tail: level ``i`` (1 ..
    L-1) holds the ``c - b_i`` values of class ``i`` or more, class ``j`` the ``b_(j+1) - b_j`` of its
    ``w_j`` bits each."""
    coef = np.zeros(ws.shape, np.int64)
    coef[:, :-1] = ws[:, :-1] - ws[:, 1:] - 1
    coef[:, -1] = ws[:, -1]
    return coef


def _classes_bits(c, below, coef, L, tail_w):
    """Bits of ``c`` values (any shape broadcasting with ``below [..., L]``, the counts under the
    starts of classes 1 .. L, the tail's last) after the first level: ``_classes_coef``'s, and the
    tail's ``c - below[..., -1]`` values of ``tail_w`` bits."""
    return c * (L - 1) + (below * coef).sum(axis=-1) + (c - below[..., -1]) * tail_w


def _tail_width(top, start):
    """The bits a tail from ``start`` needs to hold values up to ``top`` (0 where none reach it)."""
    return np.where(top >= start, codec.bit_length(np.maximum(top - start, 0).astype(_U64)), 0)


def _classes_costs(r: np.ndarray, cnt: np.ndarray, ok: np.ndarray, first: np.ndarray):
    """For CLASSES on the residuals ``r [n, lanes]`` (uint64, zero past each count; ``ok``: blocks of
    no slope; ``first``: the first blocks of their pages): the best ``(bits, L, shape, levels' bits
    after the first, mid)`` per block, bits counting the payload and its two fields past the base
    (``_NEVER`` where no shape holds the block or no value is past class 0). The shapes weighed: the
    ``CLASSES_SHORTLIST`` best on a sample of the blocks (every ``L`` and widths of at most
    ``CLASSES_SEARCH_W``; the tail's width, per block, the fewest bits that hold its largest residual,
    at most ``CLASSES_MAX_WT``), ties to the fewer levels, then the narrower first classes. Every
    shape is weighed in one array operation: its bits are a dot product of fixed weights with the
    counts under its starts (``_classes_coef``)."""
    n, lanes = r.shape
    out = [np.full(n, _NEVER, np.int64)] + [np.zeros(n, np.int64) for _ in range(4)]
    valid = np.arange(lanes)[None, :] < cnt[:, None]
    rmax = r.max(axis=1) if lanes else np.zeros(n, _U64)
    cand = np.flatnonzero(ok & (rmax > _U64(0)) & (rmax < _U64(1 << CLASSES_MAX_WT)))
    if not len(cand) or LEVELS_MAX < 1:  # (no levels allowed: as before LEVELS blocks)
        return tuple(out)
    smp = cand[np.linspace(0, len(cand) - 1, min(len(cand), CLASSES_SAMPLE)).astype(np.int64)]
    u, cu = np.unique(r[smp][valid[smp]].astype(np.int64), return_counts=True)
    cum = np.concatenate([[0], np.cumsum(cu)])
    N, top = int(cum[-1]), int(u[-1])
    # the sample's values under each start a shape can have (at most LEVELS_MAX 2^CLASSES_SEARCH_W)
    under = cum[np.searchsorted(u, np.arange(LEVELS_MAX * (1 << CLASSES_SEARCH_W) + 1), "left")]
    keys = []  # every shape's bits on the sample (ties: the first, L-major), for the shortlist
    for L in range(1, LEVELS_MAX + 1):
        ws, st, coef = _shapes(L, CLASSES_SEARCH_W)
        below = under[st[:, 1:]]  # [S, L]
        bits = N + _classes_bits(N, below, coef, L, _tail_width(top, st[:, L])) \
            + CLASSES_LEVEL_BITS * (L - 1) * len(smp)  # (each level past the first: its decode weighed)
        keys.append(np.where(below[:, 0] < N, np.minimum(bits, 1 << 40), 1 << 40))
    keys = (np.concatenate(keys) << 15) + np.arange(sum(len(k) for k in keys))  # (by bits, then by place)
    pick = np.sort(np.partition(keys, CLASSES_SHORTLIST - 1)[:CLASSES_SHORTLIST]) & ((1 << 15) - 1) \
        if len(keys) > CLASSES_SHORTLIST else np.arange(len(keys))
    sizes = np.cumsum([0] + [(CLASSES_SEARCH_W + 1) ** L for L in range(1, LEVELS_MAX + 1)])
    Ls = np.searchsorted(sizes, pick, "right")  # each picked shape's L
    K = len(pick)
    W = np.zeros((K, LEVELS_MAX), np.int64)  # widths, 0 past L
    for k in range(K):
        W[k, :Ls[k]] = _shapes(int(Ls[k]), CLASSES_SEARCH_W)[0][pick[k] - sizes[Ls[k] - 1]]
    lv = np.arange(LEVELS_MAX)[None, :] < Ls[:, None]
    ST = np.cumsum(np.where(lv, np.int64(1) << W, 0), axis=1)  # [K, LEVELS_MAX]: class 1 .. L's starts, then the tail's
    st_L = ST[np.arange(K), Ls - 1]
    # the shape most blocks should share (a page's blocks store their shapes as steps from the one
    # before: a shape its page's CLASSES block before has takes a byte): the sample's best, its tail
    # as wide as the sample's largest residual needs
    wt_star = int(_tail_width(np.array([top]), st_L[:1])[0])
    shape_star = int((W[0] << (4 * np.arange(LEVELS_MAX))).sum()) + (wt_star << (4 * int(Ls[0])))
    # every candidate block's residuals under every start: a histogram over the starts
    bounds = np.unique(ST[lv])
    m = len(cand)
    # (the bounds at or below each residual: a table up to the last bound, no binary search a value)
    at_or_below = np.searchsorted(bounds, np.arange(int(bounds[-1]) + 1), "right")
    vc = valid[cand]
    rc = np.minimum(r[cand][vc], _U64(bounds[-1])).astype(np.int64)
    rows_v = np.repeat(np.arange(m) * (len(bounds) + 1), vc.sum(axis=1))
    hist = np.bincount(rows_v + at_or_below[rc], minlength=m * (len(bounds) + 1))
    below_b = np.cumsum(hist.reshape(m, len(bounds) + 1), axis=1)  # [m, j]: residuals under bounds[j]
    BL = below_b[:, np.searchsorted(bounds, np.where(lv, ST, ST[:, :1]))]  # [m, K, LEVELS_MAX]
    BL = np.where(lv[None], BL, BL[:, np.arange(K), Ls - 1][:, :, None])  # (past L: the tail's, weight 0)
    coef = np.where(lv, _classes_coef(W), 0)
    coef[np.arange(K), Ls - 1] = W[np.arange(K), Ls - 1]
    c = cnt[cand].astype(np.int64)[:, None]
    rm = rmax[cand].astype(np.int64)[:, None]
    own = _tail_width(rm, st_L[None, :])  # [m, K]: the tail each block needs
    # the candidates in order: (shape 0, its own tail), (shape 0, the shared tail), (shape 1, own) ...
    col = np.concatenate([[0], np.arange(K)])
    wt = np.concatenate([own[:, :1], np.full((m, 1), wt_star), own[:, 1:]], 1)  # [m, K + 1]
    B, Lc = BL[:, col], Ls[col][None, :]
    nlev = c * (Lc - 1) - (np.where(np.arange(LEVELS_MAX)[None, None, :] < Lc[..., None] - 1, B, 0)).sum(axis=-1)
    mid = _classes_bits(c, B, coef[col][None], Lc, wt)
    shape = (W[col] << (4 * np.arange(LEVELS_MAX))).sum(axis=1)[None, :] + (wt << (4 * Lc))
    fr = first[cand][:, None]
    # its shape field: a byte where it is the shared one, else its bytes and the next block's step back
    sb = np.where(fr | (shape != shape_star), 8 * varint_len(shape.astype(_U64)) + 8 * ~fr, 8)
    bits = c + mid + 8 * varint_len(mid.astype(_U64)) + sb
    bits = np.where((c - B[..., 0] > 0) & (wt <= CLASSES_MAX_WT) & (own[:, col] <= wt), bits, _NEVER)
    best = np.argmin(bits + CLASSES_LEVEL_BITS * (Lc - 1), axis=1)  # (a level past the first: its decode weighed)
    rows = np.arange(m)
    got = np.flatnonzero(bits[rows, best] < _NEVER)
    at = (rows[got], best[got])
    for into, x in zip(out, (bits, np.broadcast_to(Lc, bits.shape), shape, nlev, mid)):
        into[cand[got]] = x[at]
    return tuple(out)


class _Candidates:
    """Every kind's cost of each block of a chunk (``cost [n, KIND_LEVELS + 1]``, bits of payload
    and fields, column ``k`` the cost as kind ``k``: plain, PATCH, RUN, DELTA, DELTA PATCH, DELTA
    SIGNED, RADIX, LEVELS; ``_NEVER`` where a kind cannot take a block, is not weighed (DELTA
    without ``delta``) or is no kind) and what building each kind needs."""

    def __init__(self, fit, c0: int, c1: int, delta: bool, classes: bool = True):
        cnt = fit.cnt[c0:c1]
        n = c1 - c0
        self.fit, self.c0, self.c1, self.n, self.cnt = fit, c0, c1, n, cnt
        w, slope = fit.w[c0:c1], fit.slope[c0:c1]
        self.r = r = fit.residuals(c0, c1)
        sl_bytes = lambda sl: 8 * np.where(sl != 0, varint_len(zigzag(sl)), 0)  # noqa: E731
        lanes = r.shape[1]
        valid = np.arange(lanes)[None, :] < cnt[:, None]
        never = np.full(n, _NEVER, np.int64)
        cost = {KIND_PLAIN: cnt * w + sl_bytes(slope)}  # by kind: the columns of self.cost
        # PATCH: the same line, low bits + an exception bitmap + the exceptions' high parts
        # a FLAG block's line is where its page's line is (0 at a page's start): weighed so where the
        # block's FOR line has no slope and starts where the block before's ends (a review's case)
        j = np.arange(c0, c1)
        first = (j - fit.bfirst[fit.stripe_of_block[j]]) % PAGE_BLOCKS == 0
        with np.errstate(over="ignore"):
            jp = np.maximum(j - 1, 0)
            prev_end = fit.base[jp].view(_U64) + fit.slope[jp].view(_U64) * fit.cnt[jp].astype(_U64)
        self.flag_ok = (slope == 0) & (fit.base[c0:c1].view(_U64) == np.where(first, _U64(0), prev_end))
        pc, *self.patch = _patch_costs(r, cnt, w, self.flag_ok)
        cost[KIND_PATCH] = pc + sl_bytes(slope)
        # RUN: a run-start bitmap, then the runs' values as a FOR/LFOR line of their own
        self.x2 = x2 = fit.x[fit.vstart[c0:c1, None] + np.where(valid, np.arange(lanes)[None, :], 0)]
        st_ = valid.copy()
        st_[:, 1:] &= x2[:, 1:] != x2[:, :-1]
        self.starts, self.nr = st_, st_.sum(axis=1)
        # run starts as gaps: the widest gap (a start less the one before less 1) after position 0
        pos = np.where(st_, np.arange(lanes)[None, :], -1)
        last = np.maximum.accumulate(np.concatenate([np.zeros((n, 1), np.int64), pos[:, :-1]], 1), axis=1) \
            if lanes else pos
        gap = np.where(st_, np.arange(lanes)[None, :] - last - 1, 0)
        if lanes:
            gap[:, 0] = 0
        self.gw = codec.bit_length(gap.max(axis=1).astype(_U64)) if lanes else np.zeros(n, np.int64)
        self.gcost = np.where(RUN_GAPS & (self.nr > 1), (self.nr - 1) * self.gw + 8, _NEVER)  # (with its field)
        self.rfit = rfit = codec.fit_blocks(x2[st_].view(np.int64), self.nr, lanes)
        rc = np.minimum(_bitmap_cost(cnt, self.nr - 1), self.gcost) + self.nr * rfit.w + \
            8 * (2 + np.where(rfit.slope != 0, varint_len(zigzag(rfit.slope)), 0))
        cost[KIND_RUN] = np.where(self.nr < cnt, rc, never)
        if delta:
            # DELTA: the line base + dmin k (dmin the smallest step), and each step's excess over dmin
            # (0 at position 0) as the bits, prefix-summed by the decoders; its own PATCH on them
            with np.errstate(over="ignore"):
                dx = (x2[:, 1:].view(_U64) - x2[:, :-1].view(_U64)).view(np.int64)
            live = valid[:, 1:]
            self.dmin = np.where(cnt > 1, np.where(live, dx, np.iinfo(np.int64).max).min(axis=1) if lanes > 1 else 0, 0)
            self.steps = do = np.zeros_like(r)
            with np.errstate(over="ignore"):
                do[:, 1:] = np.where(live, dx.view(_U64) - self.dmin.view(_U64)[:, None], _U64(0))
            self.dw = codec.bit_length(do.max(axis=1))
            dpc, *self.dpatch = _patch_costs(do, cnt, self.dw)
            cost[KIND_DELTA], cost[KIND_DELTA_PATCH] = cnt * self.dw + 8 + sl_bytes(self.dmin), dpc + sl_bytes(self.dmin)
            # DELTA SIGNED: the line's step the smallest step that is not negative (a history's
            # timestamps'), the steps below it (a pack's jumps back to the next history) exceptions;
            # weighed only in blocks with a negative step (elsewhere DELTA PATCH is the same, a bit
            # a value cheaper) in at most a quarter of their steps (more are no exceptions: ids)
            nonneg = live & (dx >= 0)
            self.smin = np.where(nonneg.any(axis=1), np.where(nonneg, dx, np.iinfo(np.int64).max).min(axis=1)
                                 if lanes > 1 else 0, 0)
            self.ssteps = so = np.zeros_like(r).view(np.int64)
            sc = np.full(n, _NEVER, np.int64)
            self.spatch = [np.zeros(n, np.int64) for _ in range(3)]
            nneg = (live & (dx < 0)).sum(axis=1) if lanes > 1 else np.zeros(n, np.int64)
            back = np.flatnonzero((nneg > 0) & (4 * nneg <= cnt))
            if len(back):
                with np.errstate(over="ignore"):
                    so[back, 1:] = np.where(live[back], dx[back] - self.smin[back, None], 0)
                got = _signed_patch_costs(so[back], cnt[back])
                sc[back] = got[0] + sl_bytes(self.smin[back])
                for into, part in zip(self.spatch, got[1:]):
                    into[back] = part
            cost[KIND_DELTA_SIGNED] = sc
        # RADIX: the residuals are digits of an alphabet of R = their largest + 1, g of them a code
        rmax = r.max(axis=1) if lanes else np.zeros(n, _U64)
        self.R = R = np.where(rmax < _U64(256), rmax + _U64(1), _U64(0)).astype(np.int64)
        self.rg, self.rw = RADIX_G[R], RADIX_W[R]
        self.ncode = -(-cnt // np.maximum(self.rg, 1))
        rdc = self.ncode * self.rw + 8 * varint_len(R.astype(_U64)) + sl_bytes(slope)
        cost[KIND_RADIX] = np.where(self.rg > 0, rdc, never)
        # LEVELS: the residuals of a line of no slope as levels of bitmaps (their base a field)
        bare = BARE_LEVELS & (fit.nb_s[fit.stripe_of_block[j]] == 1) & (fit.base[c0:c1] == 0)
        lc, *self.levels = _levels_costs(r, cnt, slope == 0, bare)
        cost[KIND_LEVELS] = lc
        # CLASSES: LEVELS whose classes hold ranges of residuals (an entropy stage: a skewed alphabet's),
        # weighed only where they may be taken (the first chunk, or a column that took them) and when
        # a choice asks for them (``kinds``)
        self._classes_ok = ((slope == 0) & classes, first) if classes else None
        self.cost = np.full((n, KIND_CLASSES + 1), _NEVER, np.int64)  # (a kind not weighed: never)
        for k, c in cost.items():
            self.cost[:, k] = c

    def kinds(self, allowed) -> np.ndarray:
        """Each block's cheapest kind among ``allowed`` (ties to the earlier kind)."""
        if KIND_CLASSES in allowed and self._classes_ok is not None:
            self.cost[:, KIND_CLASSES], *self.classes = _classes_costs(self.r, self.cnt, *self._classes_ok)
            self._classes_ok = None
        mask = np.full(self.cost.shape[1], _NEVER, np.int64)
        mask[list(allowed)] = 0
        return np.argmin(np.maximum(self.cost, mask[None, :]), axis=1)

    def size(self, kind: np.ndarray) -> int:
        """Payload bits of the blocks as ``kind``, plus 24 per extended block (its fields; 8 for RADIX)."""
        cnt, fit = self.cnt, self.fit
        w1, w2, e = (np.stack(x) for x in zip(self.patch, getattr(self, "dpatch", self.patch),
                                              getattr(self, "spatch", self.patch)))  # [3, n] each
        bits = np.select(
            [kind == KIND_PLAIN, kind == KIND_PATCH, kind == KIND_RUN, kind == KIND_DELTA, kind == KIND_DELTA_PATCH,
             kind == KIND_RADIX, kind == KIND_LEVELS, kind == KIND_CLASSES],
            [cnt * fit.w[self.c0:self.c1], cnt * w1[0] + _bitmap_cost(cnt, e[0]) + e[0] * w2[0],
             np.minimum(_bitmap_cost(cnt, self.nr - 1), self.gcost) + self.nr * self.rfit.w, cnt * getattr(self, "dw", 0),
             cnt * w1[1] + _bitmap_cost(cnt, e[1]) + e[1] * w2[1], self.ncode * self.rw, self.cost[:, KIND_LEVELS],
             self.cost[:, KIND_CLASSES]],
            cnt * w1[2] + _bitmap_cost(cnt, e[2]) + e[2] * w2[2])
        # (RADIX: one field, R; FLAG blocks, PATCH ones of no low bits, no slope and few exceptions,
        # none or one; LEVELS: its field in its cost; the others' three bytes an estimate kept from
        # before RADIX)
        flag = (kind == KIND_PATCH) & (w1[0] == 0) & self.flag_ok & (e[0] <= FLAG_MAX_E) & sparse_pays(cnt, e[0])
        fields = np.where(flag, 8 * (w2[0] > 0) - 8, np.where(kind == KIND_RADIX, 8, np.where(
            (kind != KIND_PLAIN) & (kind != KIND_LEVELS) & (kind != KIND_CLASSES), 24, 0)))
        return int(bits.sum()) + int(fields.sum())

    def assemble(self, kind: np.ndarray):
        """``(Blocks, pieces)`` of the blocks as ``kind`` (``_choose_chunk``)."""
        fit, c0, c1, n, cnt, r = self.fit, self.c0, self.c1, self.n, self.cnt, self.r
        w, base, slope = fit.w[c0:c1].copy(), fit.base[c0:c1].copy(), fit.slope[c0:c1].copy()
        nv, w2, e = cnt.copy(), np.zeros(n, np.int64), np.zeros(n, np.int64)
        vals, bmap, exc = r.copy(), np.zeros_like(r), np.zeros_like(r)
        p, q = np.flatnonzero(kind == KIND_PATCH), np.flatnonzero(kind == KIND_RUN)
        dd, dp = np.flatnonzero(kind == KIND_DELTA), np.flatnonzero(kind == KIND_DELTA_PATCH)
        ds = np.flatnonzero(kind == KIND_DELTA_SIGNED)
        if len(dd) or len(dp):
            both = np.concatenate([dd, dp])
            vals[both], base[both], slope[both], w[dd] = self.steps[both], self.x2[both, 0].view(np.int64), \
                self.dmin[both], self.dw[dd]
        if len(ds):
            base[ds], slope[ds] = self.x2[ds, 0].view(np.int64), self.smin[ds]
        for pp, rows, (w1s, w2s, es), signed in (
                (p, r, self.patch, False), (dp, getattr(self, "steps", r), getattr(self, "dpatch", self.patch), False),
                (ds, getattr(self, "ssteps", r), getattr(self, "spatch", self.patch), True)):
            if not len(pp):
                continue
            w1 = w1s[pp].astype(_U64)
            rp = rows[pp]
            # the high parts: arithmetic shifts of signed steps (every negative one an exception)
            hi_p = (rp.view(np.int64) >> w1.astype(np.int64)[:, None]) if signed else rp >> w1[:, None]
            isx = hi_p != 0
            vals[pp] = rp.view(_U64) & ((_U64(1) << w1) - _U64(1))[:, None]
            bmap[pp] = isx
            # the exceptions, in position order, packed to the left of their rows
            rank = np.cumsum(isx, axis=1) - 1
            rr, cc = np.nonzero(isx)
            exc[pp[rr], rank[rr, cc]] = (zigzag(hi_p[rr, cc]) if signed else hi_p[rr, cc]) - _U64(1)
            w[pp], w2[pp], e[pp] = w1s[pp], w2s[pp], es[pp]
        rd = np.flatnonzero(kind == KIND_RADIX)
        if len(rd):  # codes of g digits, the first lowest: code i = sum_j r[i g + j] R^j
            g, lanes = self.rg[rd], r.shape[1]
            pos = np.arange(lanes)[None, :]
            powr = self.R[rd, None] ** (pos % g[:, None])  # < 2^16 in every live lane
            row = np.repeat(np.arange(len(rd)), lanes)
            codes = np.bincount(row * lanes + (pos // g[:, None]).reshape(-1),
                                weights=(r[rd].astype(np.int64) * powr).reshape(-1).astype(np.float64),
                                minlength=len(rd) * lanes)
            vals[rd] = codes.reshape(len(rd), lanes).astype(_U64)
            w[rd], nv[rd], w2[rd], e[rd] = self.rw[rd], self.ncode[rd], self.R[rd], g
        lv = np.flatnonzero(kind == KIND_LEVELS)
        cl = np.flatnonzero(kind == KIND_CLASSES)
        mid = np.zeros(n, np.int64)
        lows = None
        if len(lv) or len(cl):  # (room for the levels after the first in the bitmap piece)
            bmap = np.concatenate([bmap, np.zeros((n, (LEVELS_MAX - 2) * r.shape[1]), bmap.dtype)], 1)
        if len(cl):
            lows = self._assemble_classes(cl, vals, bmap, mid)
            w[cl], slope[cl], nv[cl] = 1, 0, cnt[cl]
            w2[cl], e[cl] = self.classes[1][cl], self.classes[2][cl]  # (e: its levels' bits, for the pieces)
        if len(lv):  # the first level as values of 1 bit, the others after it as the bitmap, the tail
            L, wt, tail, mid[lv] = (x[lv] for x in self.levels)
            rl, lanes = r[lv], r.shape[1]
            vals[lv] = rl >= _U64(1)
            at = np.zeros(len(lv), np.int64)  # where level i starts in the bitmap piece
            for i in range(1, LEVELS_MAX):
                m = (rl >= _U64(i)) & (i < L)[:, None]
                rr, cc = np.nonzero(m)
                bmap[lv[rr], at[rr] + (np.cumsum(m, axis=1) - 1)[rr, cc]] = rl[rr, cc] >= _U64(i + 1)
                at += m.sum(axis=1)
            m = rl >= L.astype(_U64)[:, None]
            rr, cc = np.nonzero(m)
            exc[lv[rr], (np.cumsum(m, axis=1) - 1)[rr, cc]] = rl[rr, cc] - L[rr].astype(_U64)
            w[lv], slope[lv], w2[lv], e[lv] = 1, 0, wt, tail
        if len(q):
            vals[q] = 0
            rr = self.rfit.residuals(0, n)[q]
            vals[q, : rr.shape[1]] = rr
            bmap[q, : r.shape[1]] = self.starts[q]
            w[q], base[q], slope[q], nv[q] = self.rfit.w[q], self.rfit.base[q], self.rfit.slope[q], self.nr[q]
        sp = (has_bitmap(kind) & sparse_pays(cnt, np.where((kind & 3) == KIND_RUN, nv - 1, e))).astype(np.int8)
        if len(q):  # RUN blocks whose gaps take fewer bits than either bitmap
            g = q[self.gcost[q] < _bitmap_cost(cnt[q], self.nr[q] - 1)]
            sp[g], w2[g] = SP_GAPS, self.gw[g]
        if len(lv):
            sp[lv] = L
        if len(cl):
            sp[cl] = self.classes[0][cl]
        b, pieces = _blocks_and_pieces(Blocks(kind, w, base, slope, nv, w2, e, cnt, sp, mid), vals, bmap, exc)
        return b, pieces + ([lows] if lows is not None else [])

    def _assemble_classes(self, cl, vals, bmap, mid):
        """CLASSES blocks ``cl``: their first level into ``vals`` (in place), their bits after the
        first level into ``mid``; returns the rest of their payloads, packed, ``(words, word offset,
        words, bit offset in the block, block)`` a row: their levels after the first then their
        classes' low bits (class 0 first, the tail's last), in C (``native.classes_pack``); in NumPy,
        their levels after the first into ``bmap`` (in place), and a row a class."""
        L, shape, nlev, mid[cl] = (x[cl] for x in self.classes)
        rl, lanes, m = self.r[cl], self.r.shape[1], len(cl)
        valid = np.arange(lanes)[None, :] < self.cnt[cl, None]
        width, start = classes_shape(shape, L)
        vals[cl] = valid & (rl >= start[:, 1, None].astype(_U64))  # (class 1 or more: L >= 1)
        if native.available()[0] and lanes <= AUX_MAX_BLOCK:
            nw = (mid[cl] + 63) >> 6
            woff = np.cumsum(nw) - nw
            buf = np.zeros(int(nw.sum()) + 1, _U64)
            native.classes_pack(rl, self.cnt[cl], L, start, width, woff, nw, buf)
            return buf, woff, nw, self.cnt[cl], cl
        cls = np.zeros((m, lanes), np.int64)
        for c in range(1, LEVELS_MAX + 1):
            cls += valid & (c <= L)[:, None] & (rl >= start[:, c, None].astype(_U64))
        at = np.zeros(m, np.int64)  # where level i starts in the bitmap piece
        for i in range(1, LEVELS_MAX):
            sel = (cls >= i) & (i < L)[:, None]
            rr, cc = np.nonzero(sel)
            bmap[cl[rr], at[rr] + (np.cumsum(sel, axis=1) - 1)[rr, cc]] = cls[rr, cc] >= i + 1
            at += sel.sum(axis=1)
        C = LEVELS_MAX + 1
        rows = np.zeros((m * C, lanes), _U64)
        n_c = np.zeros((m, C), np.int64)
        for c in range(C):
            sel = valid & (cls == c)
            rr, cc = np.nonzero(sel)
            rows[rr * C + c, (np.cumsum(sel, axis=1) - 1)[rr, cc]] = rl[rr, cc] - start[rr, c].astype(_U64)
            n_c[:, c] = sel.sum(axis=1)
        bits = n_c * width
        rel = self.cnt[cl, None] + nlev[:, None] + np.cumsum(bits, axis=1) - bits
        pw, pn = width.reshape(-1), n_c.reshape(-1)
        nw = codec.words_for(pn, pw)
        woff = np.cumsum(nw) - nw
        buf = np.zeros(int(nw.sum()) + 1, dtype=_U64)
        codec._pack(rows, np.where(pn > 0, pw, 0), nw, woff, buf)
        return buf, woff, nw, rel.reshape(-1), np.repeat(cl, C)


_NEVER = 1 << 60  # a cost no kind reaches (and no overflow when compared)
_PLAIN_KINDS, _AUX_KINDS = (KIND_PLAIN,), (KIND_PLAIN, KIND_PATCH, KIND_RUN, KIND_LEVELS)
_ALL_KINDS = _AUX_KINDS + (KIND_DELTA, KIND_DELTA_PATCH, KIND_DELTA_SIGNED)  # (RADIX: where it pays on its own)


def _blocks_and_pieces(b: Blocks, vals, bmap, exc):
    """``b`` and its pieces to bit-pack: values, bitmap (``bmap`` [n, lanes] of 0/1; a sparse one's
    rows become its set bits' positions, packed to the left, a RUN block's position 0 left out; a
    RUN block's with gaps, each position less the one before less 1), exceptions."""
    bm = has_bitmap(b.kind)
    sp = np.flatnonzero((b.sp != 0) & bm)
    if len(sp):
        m = bmap[sp] != 0
        m[:, 0] &= (b.kind[sp] & 3) != KIND_RUN
        rr, cc = np.nonzero(m)
        bmap = bmap.copy()
        bmap[sp] = 0
        k = (np.cumsum(m, axis=1) - 1)[rr, cc]
        gap = b.sp[sp[rr]] == SP_GAPS
        prev = np.where(k > 0, np.concatenate(([0], cc[:-1])), 0)  # (the start before, 0 for the first)
        bmap[sp[rr], k] = np.where(gap, cc - prev - 1, cc)
    ones = np.where((b.kind & 3) == KIND_RUN, b.nv - 1, b.e)
    lv = b.kind == KIND_LEVELS  # (its levels after the first: a bitmap of mid bits; CLASSES: of e bits)
    cl = b.kind == KIND_CLASSES
    width = np.where(lv | cl, 1, np.where(b.sp == SP_GAPS, b.w2, np.where(b.sp != 0, position_bits(b.cnt), bm)))
    px = ((b.kind & 3) == KIND_PATCH) | lv
    return b, [(vals, b.w, b.nv), (bmap, width, np.where(cl, b.e, np.where(lv, b.mid, np.where(bm, np.where(b.sp != 0, ones, b.cnt), 0)))),
               (exc, np.where(px, b.w2, 0), np.where(px, b.e, 0))]


def _choose_chunk(fit, c0: int, c1: int, allowed: tuple = _PLAIN_KINDS):
    """Per block of ``c0 .. c1``: the kind among ``allowed`` (FOR/LFOR as ``fit`` chose, PATCH, RUN,
    DELTA, DELTA PATCH, DELTA SIGNED, RADIX) that takes fewest bits (payload and fields; ties to the
    earlier kind). Returns ``(Blocks, pieces)``: ``pieces`` the rows to bit-pack (values, bitmap,
    exceptions), each ``(rows uint64 [n, lanes], width [n], count [n])``."""
    if allowed != _PLAIN_KINDS and c1 > c0:
        c = _Candidates(fit, c0, c1, KIND_DELTA in allowed, KIND_CLASSES in allowed)
        return c.assemble(c.kinds(allowed))
    cnt = fit.cnt[c0:c1]
    r = fit.residuals(c0, c1)
    z = np.zeros(c1 - c0, np.int64)
    b = Blocks(z, fit.w[c0:c1].copy(), fit.base[c0:c1].copy(), fit.slope[c0:c1].copy(), cnt.copy(), z.copy(), z.copy(), cnt)
    return _blocks_and_pieces(b, r, np.zeros_like(r), np.zeros_like(r))


CODES = "codes"  # ``encode_stripes(extended=CODES)``: a dictionary's codes, FOR / LFOR, PATCH, RUN or LEVELS blocks
CODES_DELTA = "codes+delta"  # ... and DELTA ones too: a stripe table's codes (``_stripe_tables``)


def encode_stripes(values: np.ndarray, stripe_counts: np.ndarray, block_size: int, extended: bool | str = True):
    """Encode many stripes of one column in the format-3 layout.

    Returns ``(region, blob_off, blob_nbytes, enc)``: ``region`` uint8, the blobs back to back;
    ``blob_off[S]`` / ``blob_nbytes[S]`` each stripe's byte range in it; ``enc[S]`` the flags
    ``ENC_LFOR`` (some block has a slope), ``ENC_PATCH``, ``ENC_RUN`` (some block is one; 0: FOR). ``extended``: also consider PATCH and RUN
    blocks (block sizes up to ``AUX_MAX_BLOCK``, columns of at least ``EXT_MIN_BITS`` of plain
    payload), kept where they save ``EXT_MIN_SAVING`` of the column's payload (of its first
    ``codec._ENC_CHUNK`` blocks); ``CODES``: PATCH and RUN only (a segment dictionary's codes: the
    kernels look up a DICT block's values after decoding it as a plain, PATCH or RUN block; LEVELS
    blocks are staged as PATCH blocks).

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
    NB = len(fit.cnt)
    allowed = _PLAIN_KINDS
    chunks = [(c0, min(c0 + codec._ENC_CHUNK, NB)) for c0 in range(0, NB, codec._ENC_CHUNK)]
    c0, c1 = chunks[0]
    if extended and bs <= AUX_MAX_BLOCK and int((fit.cnt * fit.w).sum()) >= EXT_MIN_BITS:
        # PATCH / RUN blocks send a batch's column down the kernels' slower aux path (EXT_MIN_SAVING),
        # DELTA blocks down a prefix sum (DELTA_MIN_SAVING), RADIX blocks down a division per value
        # (RADIX_MIN_SAVING): each only where it saves that fraction of the payload the column would
        # take without it (the fields' extra bytes counted), judged on its first chunk of blocks (up
        # to 2^20 values), so that each chunk is chosen once
        # (a set of kinds passes where each of its additions saves its bar against the set without
        # it; then the smallest set that passes: a rating's RADIX blocks save 15% against FOR, 8%
        # against the PATCH blocks that save it 8% alone, and should win, and PATCH beside RADIX
        # must still pay for itself)
        codes = extended in (CODES, CODES_DELTA)  # (codes: no RADIX blocks; CODES: no DELTA ones either)
        c = _Candidates(fit, c0, c1, extended != CODES)
        P, A, D = _PLAIN_KINDS, _AUX_KINDS, _ALL_KINDS
        PR, AR, DR = (k + (KIND_RADIX,) for k in (P, A, D))
        size = {k: c.size(c.kinds(k)) for k in ((P, A) if extended == CODES else (P, A, D) if codes else (P, A, D, PR, AR, DR))}
        pays = lambda k, parent, bar: size[parent] - size[k] >= bar * size[parent]  # noqa: E731
        ok = [P] + [A] * pays(A, P, EXT_MIN_SAVING)
        if extended != CODES and pays(D, A if A in ok else P, DELTA_MIN_SAVING):
            ok.append(D)
        if not codes:
            for k, base, side in ((PR, P, True), (AR, A, pays(AR, PR, EXT_MIN_SAVING)),
                                  (DR, D, pays(DR, AR if AR in ok else PR, DELTA_MIN_SAVING))):
                if base in ok and side and pays(k, base, RADIX_MIN_SAVING):
                    ok.append(k)
        allowed = min(ok, key=size.get)  # (ties: the first, with the fewest kinds)
        if KIND_PATCH in allowed:  # CLASSES blocks where they save CLASSES_MIN_SAVING more (staged as PATCH)
            more = allowed + (KIND_CLASSES,)
            if size[allowed] - c.size(c.kinds(more)) >= CLASSES_MIN_SAVING * size[allowed]:
                allowed = more
        elif allowed == P:  # (or with PATCH, RUN and LEVELS where those alone saved too little: the aux path's bar)
            more = A + (KIND_CLASSES,)
            if size[P] - c.size(c.kinds(more)) >= EXT_MIN_SAVING * size[P]:
                allowed = more
        first = c.assemble(c.kinds(allowed))
    else:
        first = _choose_chunk(fit, c0, c1)
    chosen = itertools.chain([first], (_choose_chunk(fit, c0, c1, allowed) for c0, c1 in chunks[1:]))
    parts, packed, woffs, nws, at, lows, nb0 = [], [], [], [], 0, [], 0
    for b, pieces in chosen:  # a chunk of blocks at a time: bit-pack its values, bitmaps and exceptions
        parts.append(b)
        if len(pieces) > 3:  # CLASSES blocks' bits past their first level: placed once the blocks are
            lows.append((nb0, pieces[3]))
        nb0 += len(b.kind)
        for rows, pw, pn in pieces[:3]:
            nw = codec.words_for(pn, pw)
            woff = np.cumsum(nw) - nw
            buf = np.zeros(int(nw.sum()) + 1, dtype=_U64)
            codec._pack(rows, np.where(pn > 0, pw, 0), nw, woff, buf)
            packed.append(buf)
            woffs.append(woff + at)
            nws.append(nw)
            at += len(buf)
    B = Blocks(*(np.concatenate([getattr(b, f) for b in parts]) for f in Blocks.FIELDS))
    packed = np.concatenate(packed)
    # piece order within a block: values, bitmap, exceptions (nws/woffs are chunk-major, piece-minor)
    woff3 = np.stack([np.concatenate(woffs[i::3]) for i in range(3)], 1)
    nw3 = np.stack([np.concatenate(nws[i::3]) for i in range(3)], 1)
    cnt, base, slope = B.cnt, B.base, B.slope
    sob = fit.stripe_of_block
    nb_s = fit.nb_s
    jin = np.arange(NB, dtype=np.int64) - fit.bfirst[sob]  # block index within its stripe
    np_s, page_stripe = page_layout(nb_s)
    NP = len(page_stripe)
    page_first_abs = np.cumsum(np_s) - np_s  # each stripe's first page
    page_of = page_first_abs[sob] + jin // PAGE_BLOCKS
    starts_page = jin % PAGE_BLOCKS == 0
    lfor = slope != 0
    tag = B.tags()
    ext = np.bincount(sob, weights=B.kind != KIND_PLAIN, minlength=S) > 0  # blobs with PATCH / RUN blocks
    with np.errstate(over="ignore"):
        pred = np.zeros(NB, dtype=_U64)
        prev_end = base.view(_U64) + slope.view(_U64) * np.where(B.kind == KIND_RADIX, cnt, B.nv).astype(_U64)
        pred[1:] = prev_end[:-1]
        pred[starts_page] = 0
        d = zigzag((base.view(_U64) - pred).view(np.int64))
    # FLAG blocks: sparse PATCH blocks of no low bits and no slope, based where the page's line is,
    # of at most FLAG_MAX_E exceptions: their e in the tag, their only field w2 (none for 0)
    flag = (B.kind == KIND_PATCH) & (B.w == 0) & ~lfor & (B.sp == SP_POSITIONS) & (d == 0) & (B.e >= 1) & \
        (B.e <= FLAG_MAX_E)
    tag[flag] = np.where(B.w2[flag] == 0, TAG_FLAG, TAG_FLAG_W2) + B.e[flag] - 1
    # BARE LEVELS: a LEVELS block that is its blob's one block, based at 0, with no fields (L levels
    # and no tail as L - 1 levels and a tail of a bit: the same bits)
    bare = BARE_LEVELS & (B.kind == KIND_LEVELS) & (d == 0) & (nb_s[sob] == 1) & ((B.sp > 1) | (B.w2 > 0))
    L_, wt_ = B.sp[bare].astype(np.int64), B.w2[bare]
    tag[bare] = TAG_CLASSES + np.where(wt_ > 0, 4 * (L_ - 1) + wt_, 4 * (L_ - 2) + 1)
    nx = _EXTRA_FIELDS[B.kind]
    nv = np.where(flag, (B.w2 != 0).astype(np.int64), 1 + lfor.astype(np.int64) + nx + ((B.sp == SP_GAPS) & (B.kind == KIND_RUN)))
    nv[bare] = 0
    vpos = np.cumsum(nv) - nv
    vals = np.empty(int(nv.sum()), dtype=_U64)
    vals[vpos[~flag & ~bare]] = d[~flag & ~bare]
    fw = np.flatnonzero(flag & (B.w2 != 0))
    vals[vpos[fw]] = B.w2[fw]
    vals[vpos[lfor] + 1] = zigzag(slope[lfor])
    xp = vpos + 1 + lfor
    pt, rn = np.flatnonzero(((B.kind & 3) == KIND_PATCH) & ~flag), np.flatnonzero(B.kind == KIND_RUN)
    vals[xp[pt]], vals[xp[pt] + 1], vals[xp[pt] + 2] = B.w[pt], B.w2[pt], B.e[pt]
    vals[xp[rn]], vals[xp[rn] + 1] = B.w[rn], B.nv[rn]
    rg = rn[B.sp[rn] == SP_GAPS]
    vals[xp[rg] + 2] = B.w2[rg]
    dl = np.flatnonzero(B.kind == KIND_DELTA)
    vals[xp[dl]] = B.w[dl]
    lv = np.flatnonzero((B.kind == KIND_LEVELS) & ~bare)
    vals[xp[lv]] = B.mid[lv] + B.e[lv] * B.w2[lv]
    cl = np.flatnonzero(B.kind == KIND_CLASSES)
    vals[xp[cl]], vals[xp[cl] + 1] = B.mid[cl], B.w2[cl] ^ _classes_before(B.kind == KIND_CLASSES, B.w2, page_of)[cl]
    rd = np.flatnonzero(B.kind == KIND_RADIX)
    vals[xp[rd]] = B.w2[rd]
    fbytes, flen = varint_bytes(vals)
    fl_block = codec._segment_sums(flen.astype(_U64), nv).view(np.int64)
    fl_page = np.bincount(page_of, weights=fl_block, minlength=NP).astype(np.int64)
    fl_s = np.bincount(page_stripe, weights=fl_page, minlength=S).astype(np.int64)
    bits = B.bits()
    bits_s = np.bincount(sob, weights=bits, minlength=S).astype(np.int64)
    anchors = np.where(np_s > 1, 8 * np_s, 0)
    # one page with PATCH / RUN blocks: the fields come first (their payload sizes are in them)
    first = ext & (np_s == 1)
    pay_at = nb_s + anchors + np.where(first, fl_s, 0)  # the payload's first byte, from the blob start
    fld_at = np.where(first, nb_s, pay_at + ((bits_s + 7) >> 3))  # the fields' first byte
    blob_nbytes = pay_at + ((bits_s + 7) >> 3) + np.where(first, 0, fl_s)
    blob_off = np.cumsum(blob_nbytes) - blob_nbytes
    R = int(blob_nbytes.sum())
    region64 = np.zeros((R + 7) // 8 + 2, dtype=_U64)
    # the payload (ORed in at bit positions; tags, anchors and fields fill other bytes)
    cb = np.cumsum(bits) - bits
    bit_in_stripe = cb - cb[fit.bfirst[sob]]
    dst_bit = (blob_off + pay_at)[sob] * 8 + bit_in_stripe
    piece_at = np.stack([np.zeros(NB, np.int64), B.nv * B.w,
                         B.nv * B.w + bitmap_bits(B.kind, cnt, B.nv, B.e, B.sp, B.w2) + B.mid], 1)
    _scatter_bits(packed, woff3.reshape(-1), nw3.reshape(-1), (dst_bit[:, None] + piece_at).reshape(-1), region64)
    for nb0, (buf, woff, nw, rel, blk) in lows:  # (CLASSES blocks' payloads past their first level, packed)
        _scatter_bits(buf, woff, nw, dst_bit[nb0 + blk] + rel, region64)
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
    has = lambda m: (np.bincount(sob, weights=m, minlength=S) > 0).astype(np.int64)  # noqa: E731
    # (LEVELS and CLASSES blocks are staged as PATCH blocks: ENC_PATCH)
    enc = has(lfor) * codec.ENC_LFOR | has(((B.kind & 3) == KIND_PATCH) | (B.kind == KIND_LEVELS) |
                                           (B.kind == KIND_CLASSES)) * codec.ENC_PATCH | \
        has(B.kind == KIND_RUN) * codec.ENC_RUN | has((B.kind & AUX_DELTA) != 0) * codec.ENC_DELTA | \
        has(B.kind == KIND_DELTA_SIGNED) * codec.ENC_SIGNED | has(B.kind == KIND_RADIX) * codec.ENC_RADIX | \
        has((B.sp != 0) & (B.kind != KIND_LEVELS) & (B.kind != KIND_CLASSES)) * codec.ENC_SPARSE
    return region, blob_off, blob_nbytes, enc


def encode_column(values: np.ndarray, stripe_counts: np.ndarray, block_size: int, extended: bool = True,
                  dictionary: bool | str = True, constant: bool = True, tables: bool = True, index_tags: bool = True):
    """``encode_stripes``, or the same stripes as codes into a dictionary of the column's distinct
    values (the segment DICT), whichever is smaller by at least ``DICT_MIN_SAVING`` (block sizes up
    to ``AUX_MAX_BLOCK``, columns of at least ``EXT_MIN_BITS``). ``constant``: a stripe whose values
    are all one value has no blob (``codec.ENC_CONST``: the value is in its ``enc``, its blob
    offset where the next stripe's starts), where that is smaller (``_constant_stripes``); the
    other stripes keep their blobs as above (and the dictionary, if any). ``dictionary="always"``:
    the codes, whatever they save, where a dictionary may be had (its lender's, ``borrowed_table``).

    With the dictionary, ``region`` starts with it: its head (``dict_heads``: its entries ``D`` as a
    varint), then a format-3 blob of the ``D`` distinct values (decoded on the host, once per
    segment): sorted, or, for at most ``FREQ_SAMPLED_ENTRIES``, by descending frequency where that is
    smaller (the most frequent value's code is 0: PATCH blocks of codes with no low bits store only
    the other values' codes, a skewed rating's 40%); then the stripes' blobs of codes
    (``values = dict[code]``), FOR / LFOR, PATCH, RUN or LEVELS
    blocks (``CODES``: the kernels decode a block, then look its values up, one gather a value; a
    day's timestamps repeat, so their codes take RUN blocks of runs a few bits wide, where the
    values' runs are days x 86,400 apart); ``enc`` has ``ENC_DICT`` for every stripe (and the
    dictionary's byte offset in ``region``, 0, in bits 8..).

    ``tables``: a stripe whose values repeat within it (a user who keeps to a few values of their
    own) may be stored as codes into a **stripe table**, a dictionary of its own right before its
    blob (``_stripe_tables``; DESIGN §1 "Stripe tables"): its ``enc`` has ``ENC_DICT`` and the
    table's byte offset in bits 8.., as a segment dictionary's codes have theirs.

    ``index_tags``: a blob of one block that is not codes has its tag in its ``enc``, not its bytes
    (``move_tags``; decode it with ``decode_blob(..., tag=codec.enc_tags(enc)[s])``).

    >>> v = np.tile(np.array([10**12, 7, 3 * 10**15, -5]), 600)
    >>> region, off, n, enc, head, _ = encode_column_parts(v, np.array([2000, 400]), 128)
    >>> int(enc[0]) & codec.ENC_DICT, decode_dictionary(region[:head], 128).tolist()
    (8, [-5, 7, 1000000000000, 3000000000000000])
    """
    return encode_column_parts(values, stripe_counts, block_size, extended, dictionary, constant, tables, index_tags)[:4]


def encode_column_parts(values: np.ndarray, stripe_counts: np.ndarray, block_size: int, extended: bool = True,
                        dictionary: bool | str = True, constant: bool = True, tables: bool = True, index_tags: bool = True):
    """``encode_column``'s ``(region, off, nbytes, enc)``, then the bytes of the segment dictionary
    at the region's start (0: none) and, per stripe, the bytes of its stripe table right before its
    blob (0: none; the writer marks a segment with any: its entry's ``tables``). ``index_tags``: the
    tag of each blob of one block that is not codes goes in its ``enc`` (``move_tags``), for an index
    of form 2 (host/segment.py)."""
    sc = np.asarray(stripe_counts, dtype=np.int64)
    out = _encode_column(np.asarray(values, dtype=np.int64), sc, block_size, extended, dictionary, constant, tables)
    return (*move_tags(*out[:4], sc, block_size), *out[4:]) if index_tags else out


def move_tags(region: np.ndarray, off: np.ndarray, nbytes: np.ndarray, enc: np.ndarray, count: np.ndarray,
              block_size: int) -> tuple:
    """``(region, off, nbytes, enc)`` with the tag byte of each blob of one block (``count <=
    block_size``) that is not codes into a dictionary (no ``ENC_DICT``: their ``enc`` holds the
    dictionary's place) nor constant moved into its ``enc`` (``codec.ENC_TAG_SHIFT``): the blob is
    its bytes after the tag, every later offset (blobs, dictionaries) one byte earlier per tag moved.

    >>> region, off, nb, enc = encode_stripes(np.array([5, 9, 7, 1000]), np.array([3, 1]), 4)
    >>> r2, off2, nb2, enc2 = move_tags(region, off, nb, enc, np.array([3, 1]), 4)
    >>> (nb - nb2).tolist(), codec.enc_tags(enc2).tolist() == region[off].tolist()
    ([1, 1], True)
    >>> decode_blob(r2[off2[0]:off2[0] + nb2[0]], 3, 4, tag=int(codec.enc_tags(enc2)[0])).tolist()
    [5, 9, 7]
    """
    off, nbytes, enc = (np.asarray(a, np.int64) for a in (off, nbytes, enc))
    one = (nbytes > 0) & (np.asarray(count, np.int64) <= block_size) & ((enc & (codec.ENC_DICT | codec.ENC_CONST)) == 0)
    one[one] = region[off[one]] != codec.ENC_TAG_MASK  # (an enc holds tags 0 .. 254, as the tag + 1: 255 stays in its blob)
    if not one.any():
        return region, off, nbytes, enc
    at = np.sort(off[one])
    keep = np.ones(len(region), bool)
    keep[at] = False
    moved = lambda x: x - np.searchsorted(at, x, "left")  # noqa: E731  (a blob's own tag is at its offset: not before it)
    enc = enc.copy()
    isd = (enc & codec.ENC_DICT) != 0
    enc[isd] = (moved(enc[isd] >> 8) << 8) | (enc[isd] & codec.ENC_FLAGS)
    enc[one] |= (region[off[one]].astype(np.int64) + 1) << codec.ENC_TAG_SHIFT
    return region[keep], moved(off), nbytes - one, enc


def bare_blobs(region: np.ndarray, off: np.ndarray, nbytes: np.ndarray, enc: np.ndarray) -> bool:
    """Whether any blob of a column (``encode_column_parts``' first four) is a BARE LEVELS block: its
    tag in its index (``codec.enc_tags``) or its first byte (the writer marks such a segment's entry,
    ``"bare"``, so that releases before them reject it)."""
    enc, nbytes = np.asarray(enc, np.int64), np.asarray(nbytes, np.int64)
    t = codec.enc_tags(enc)
    own = (nbytes > 0) & (t < 0)
    return bool(is_bare(t[t >= 0]).any() or is_bare(np.asarray(region)[np.asarray(off, np.int64)[own]]).any())


def tag_flags(tag: np.ndarray) -> np.ndarray:
    """The ``enc`` flags (``codec.ENC_*``) of a blob of one block with tag ``tag``, as ``encode_stripes``
    sets them: what an index of form 2 stores a one-block blob's flags against (host/segment.py)."""
    tag = np.asarray(tag, np.int64)
    t, kind = tag & 0x7F, tag_kind(tag)
    sparse = ((t >= TAG_PATCH_SPARSE) & (t <= TAG_RUN_GAPS)) | (_FLAG_E[t] > 0)
    return has_slope(tag) * codec.ENC_LFOR \
        | (((kind & 3) == KIND_PATCH) | (kind == KIND_LEVELS) | (kind == KIND_CLASSES)) * codec.ENC_PATCH \
        | (kind == KIND_RUN) * codec.ENC_RUN | ((kind & AUX_DELTA) != 0) * codec.ENC_DELTA \
        | (kind == KIND_DELTA_SIGNED) * codec.ENC_SIGNED | (kind == KIND_RADIX) * codec.ENC_RADIX | sparse * codec.ENC_SPARSE


def tag_nbytes(tag: np.ndarray, count: np.ndarray) -> np.ndarray:
    """What a one-block blob whose tag is in its index (``move_tags``) likely takes, from its tag and
    its ``count`` values (a segment index of form 2 stores its bytes less this): a plain block its
    payload and a byte a field; a FLAG block its positions (and exceptions of one bit, with a
    ``w2`` byte); a LEVELS block its bitmap and two bytes (a CLASSES block three; a BARE LEVELS block
    11/8 bits a value, rounded up: ML-1M's 4- and 3-kind action types cut to 40 events take 1.50 and
    1.32 in such blobs); -1 for other kinds (the index predicts
    those from the column's mean)."""
    tag, count = np.asarray(tag, np.int64), np.asarray(count, np.int64)
    t = tag & 0x7F
    pb = position_bits(count)
    e = _FLAG_E[t]
    return np.where(t <= 64, (count * t + 7) // 8 + 1 + has_slope(tag),
                    np.where(e > 0, (e * (pb + _FLAG_FIELDS[t]) + 7) // 8 + _FLAG_FIELDS[t],
                             np.where(is_bare(tag), (11 * count + 63) // 64,
                                      np.where(t >= TAG_LEVELS, (count + 7) // 8 + 2 + is_classes(tag), -1))))


def _encode_column(values, sc, block_size, extended, dictionary, constant, tables):
    """``encode_column``, and: the bytes of the segment dictionary at the region's start (0: none),
    and per stripe the bytes of its stripe table right before its blob (0: none). ``tables="values"``:
    stripe tables of values only (no tables of codes)."""
    if constant:
        full = _encode_column(values, sc, block_size, extended, dictionary, False, tables)
        cst, more = _constant_stripes(values, sc, full[2] + full[5], full[3])
        if cst is None:
            return full
        kept = _keep_a_reference(full, cst)
        got = full
        if kept.any():
            got = _drop_blobs(full, kept, codec.const_enc(values[np.cumsum(sc) - sc]))
            got = got if len(got[0]) + more < len(full[0]) else full
        if (kept != cst).any():  # (a stripe held back from a constant for tables of codes: values alone too)
            alt = _encode_column(values, sc, block_size, extended, dictionary, True, "values")
            got = alt if len(alt[0]) < len(got[0]) else got
        return got
    region, off, nbytes, enc, head = _plain_or_dictionary(values, sc, block_size, extended, dictionary)
    if tables and extended and dictionary and block_size <= AUX_MAX_BLOCK and len(values):
        got = _without_dead_dictionary(*_stripe_tables(values, sc, block_size, region, off, nbytes, enc, head,
                                                       tables != "values"))
        ref = ((np.asarray(got[3], np.int64) & codec.ENC_DICT) != 0) & (got[5] == 0)
        if ref.sum() == 1 and code_tables(got[0], got[3], got[5]).any():
            # (every other stripe takes a table: tables of values alone may drop the segment
            # dictionary, which the per-stripe choice does not weigh: 40 users of their own 64-bit
            # ids took tables of codes and a dictionary of their ids, 2.6% more than without)
            alt = _without_dead_dictionary(*_stripe_tables(values, sc, block_size, region, off, nbytes, enc, head, False))
            got = alt if len(alt[0]) < len(got[0]) else got
        return got
    return region, off, nbytes, enc, head, np.zeros(len(sc), np.int64)


def _drop_blobs(parts: tuple, drop: np.ndarray, enc_dropped: np.ndarray) -> tuple:
    """``_encode_column``'s ``parts`` with the blobs (and stripe tables) of the stripes ``drop``
    removed: their ``enc`` from ``enc_dropped``, no bytes, their offset where the next kept blob
    starts (or the region ends); the other stripes' blobs as they are, each with its table (blobs
    stand alone; a segment dictionary's codes keep it, before them), their places moved."""
    f_region, f_off, f_nb, f_enc, head, lead = parts
    k = np.flatnonzero(~drop)
    span = f_nb[k] + lead[k]
    at = head + np.cumsum(span) - span
    region = np.empty(head + int(span.sum()), np.uint8)
    region[:head] = f_region[:head]
    take_ranges(f_region, f_off[k] - lead[k], span, region, at)
    enc = np.array(enc_dropped, np.int64)
    enc[k] = f_enc[k]
    own = lead[k] > 0
    enc[k[own]] = (f_enc[k[own]] & codec.ENC_FLAGS) | (at[own] << 8)  # a table's new place
    off = np.append(at + lead[k], len(region))[np.searchsorted(k, np.arange(len(drop)))]
    off[k] = at + lead[k]
    nbytes, lead2 = np.zeros(len(drop), np.int64), np.zeros(len(drop), np.int64)
    nbytes[k], lead2[k] = f_nb[k], lead[k]
    return _without_dead_dictionary(region, off, nbytes, enc, head, lead2)


def pack_row_constants(values: np.ndarray, count: np.ndarray, cont: np.ndarray, parts: tuple) -> tuple | None:
    """``encode_column_parts``'s ``parts`` over the packs of rows ``count`` (``cont``: host/segment.py,
    DESIGN §2), with each pack whose rows are each one value, but not all one (a user's age joined
    into the events of a pack of short histories), stored as **constants per row** where that is
    smaller: no blob, each row's ``enc`` its own constant (``codec.const_enc``). Returns the parts
    over the rows (each row its pack's offset, bytes and ``enc``, or its own constant), or None where
    no pack is so stored. An index of form 3 (host/segment.py ``index_residuals``) stores such rows
    by their values' steps (``zigzag(value)``, from the row before: 0 where a user's pieces share
    an age): weighed as a byte per 8 bits of each step that is not 0 and its sign, against the
    pack's blob, its table and a tag in its ``enc`` (the writer then keeps form 3 where it makes
    the index smaller than form 2). (Weighed as ``_constant_stripes`` weighs a
    stripe, by the steps of the ``enc`` fields, form 2's, ML-1M with its features cut to 8 events
    took 3,728 B more, its ``zip_code`` 1.23x Parquet's with its index fields against 1.13x.)"""
    count, cont = np.asarray(count, np.int64), np.asarray(cont, np.int64)
    region, off, nb, enc, head, lead = parts
    first = np.flatnonzero(cont == 0)
    if len(first) == len(count) or not len(count):
        return None
    pack_of = np.cumsum(cont == 0) - 1
    at = np.cumsum(count) - count
    lo = np.minimum.reduceat(values, at)
    one = (lo == np.maximum.reduceat(values, at)) & (codec.zigzag(lo) < _U64(codec.CONST_MAX))
    rows = np.diff(np.append(first, len(count)))
    enc = np.asarray(enc, np.int64)
    cand = np.logical_and.reduceat(one, first) & (rows > 1) & ~codec.const_stripes(enc)
    if not cand.any():
        return None
    q = zigzag(np.where(one, lo, 0)).view(np.int64)
    step = np.diff(q, prepend=0)
    more = np.add.reduceat(np.where(cand[pack_of] & (step != 0), (codec.bit_length(zigzag(step)) + 8) // 8, 0), first)
    saved = np.asarray(nb, np.int64) + np.asarray(lead, np.int64) + (codec.enc_tags(enc) >= 0)
    conv = _keep_a_reference(parts, cand & (saved > more))
    if not conv.any():
        return None
    region, off, nb, enc, head, lead = _drop_blobs(parts, conv, np.where(conv, codec.const_enc(lo[first]), enc))
    row_enc = enc[pack_of]
    rc = conv[pack_of]
    row_enc[rc] = codec.const_enc(lo[rc])
    return region, off[pack_of], nb[pack_of], row_enc, head, lead[pack_of]


def code_tables(region: np.ndarray, enc: np.ndarray, lead: np.ndarray) -> np.ndarray:
    """Per stripe (or pack) of a column's encoded parts (``encode_column_parts``: places relative to
    its ``region``), whether it has a stripe table of codes into the segment dictionary (its head
    after ``CODE_TABLE_MARK``)."""
    enc, lead = np.asarray(enc, np.int64), np.asarray(lead, np.int64)
    own = np.flatnonzero((lead > 0) & ((enc & codec.ENC_DICT) != 0))
    out = np.zeros(len(enc), bool)
    out[own] = np.asarray(region)[enc[own] >> 8] == CODE_TABLE_MARK
    return out


def _keep_a_reference(parts: tuple, drop: np.ndarray) -> np.ndarray:
    """``drop`` (stripes, or packs, about to lose their blobs: constants) less one, where dropping them
    all would leave no stripe indexing the segment dictionary itself while tables of codes index it:
    a reader finds that dictionary at the least dictionary place of the column's rows in the segment
    (host/reader.py), so some row must name it."""
    region, _, _, enc, head, lead = parts
    enc = np.asarray(enc, np.int64)
    if not head or not drop.any() or not code_tables(region, enc, lead).any():
        return drop
    ref = ((enc & codec.ENC_DICT) != 0) & (np.asarray(lead) == 0)
    if (ref & ~drop).any():
        return drop
    drop = drop.copy()
    drop[np.flatnonzero(ref)[0]] = False
    return drop


def _without_dead_dictionary(region, off, nbytes, enc, head, lead):
    """``_encode_column``'s parts without the segment dictionary (its ``head`` bytes at the region's
    start) where no stripe's codes index it (every stripe constant or in a table of its own): every
    place after it ``head`` bytes earlier. Unread, such a dictionary took its bytes, and no blob or
    dictionary start marked where the column's part of the region begins. (Tables of codes index
    it: the encoder keeps a stripe of its own codes beside them, ``_keep_a_reference``.)"""
    isd = (np.asarray(enc, np.int64) & codec.ENC_DICT) != 0
    if not head or (isd & (np.asarray(lead) == 0)).any():
        return region, off, nbytes, enc, head, lead
    if code_tables(region, enc, lead).any():
        raise ValueError("tables of codes whose segment dictionary no stripe indexes (an encoder's bug)")
    enc = np.where(isd, enc - (head << 8), enc)
    return region[head:], np.asarray(off, np.int64) - head, nbytes, enc, 0, lead


def _plain_or_dictionary(values, sc, block_size, extended, dictionary):
    """``encode_stripes``, or codes into the segment dictionary (``encode_column``), and the
    dictionary's bytes at the region's start (0: none). ``dictionary="always"``: the codes whatever
    they save, where a dictionary may be had at all (another column borrows them, ``borrowed_table``)."""
    always = dictionary == "always"
    plain = encode_stripes(values, sc, block_size, extended)
    nbytes = len(plain[0])
    # (blocks of at most AUX_MAX_BLOCK values, as PATCH / RUN: the kernels' aux path tells a block's
    # kind from its aux word only there)
    if not dictionary or 8 * nbytes < EXT_MIN_BITS * (not always) or not len(values) or block_size > AUX_MAX_BLOCK:
        return (*plain, 0)
    uniq, codes, counts = unique(values, return_inverse=True, return_counts=True)
    codes = codes.astype(np.int64, copy=False)
    D = len(uniq)
    if D > min(DICT_MAX_ENTRIES, len(values) // 2):  # a dictionary of mostly distinct values never pays
        return (*plain, 0)
    # a first estimate, before encoding twice more: codes of log2(D) bits and a byte an entry; or,
    # where values repeat (RUN blocks), a code and a 7-bit position a run; or, for a small alphabet
    # in frequency order, a bit a value (a sparse bitmap's 7 a non-mode value), the codes of the
    # values that are not the most frequent (PATCH blocks with no low bits) and five bytes of fields
    # a block
    bd = (D - 1).bit_length()
    runs = int(np.count_nonzero(values[1:] != values[:-1])) + len(sc) if extended else len(values)
    bar = (1 - DICT_MIN_SAVING) * 8 * nbytes - 8 * D
    orders = [None] * (always or min(len(values) * bd, runs * (bd + 7)) < bar)  # the dictionary sorted
    if extended and 1 < D <= FREQ_SAMPLED_ENTRIES:  # by descending frequency
        rank = np.argsort(-counts, kind="stable")
        est = None
        if D <= FREQ_MAX_ENTRIES:
            m = len(values) - int(counts.max())
            est = min(len(values), 7 * m) + m * max(D - 2, 0).bit_length() + 40 * int(((sc + block_size - 1) // block_size).sum())
        if (rank != np.arange(D)).any() and (always or est is not None and est < bar or _frequency_pays(
                values, codes, counts, rank, uniq, sc, block_size, bool(orders))):
            orders.append(rank)
    if not orders:
        return (*plain, 0)
    best = None
    for rank in orders:
        dvals, c = uniq, codes
        if rank is not None:
            dvals, at = uniq[rank], np.empty(D, np.int64)
            at[rank] = np.arange(D)
            c = at[codes]
        dblob, _, _, denc = encode_stripes(dvals, np.array([D]), block_size, extended)
        got = (dblob, denc, *encode_stripes(c, sc, block_size, CODES if extended else False))
        if best is None or len(got[0]) + len(got[2]) < len(best[0]) + len(best[2]):
            best = got
    dblob, denc, region, blob_off, blob_nbytes, enc = best
    dhead = dict_heads([D], [len(dblob)])[0]
    head = len(dhead) + len(dblob)
    if nbytes - (head + len(region)) < DICT_MIN_SAVING * nbytes and not always:
        return (*plain, 0)
    out = np.concatenate([dhead, dblob, region])
    # (ENC_DELTA, ENC_SIGNED where the dictionary has DELTA (SIGNED) blocks: releases before them
    # refuse the segment at open)
    return out, blob_off + head, blob_nbytes, enc | codec.ENC_DICT | (int(denc[0]) & _TABLE_FLAGS), head


def _frequency_pays(values, codes, counts, rank, uniq, sc, block_size, sorted_too) -> bool:
    """Whether the dictionary in descending frequency (``rank``) may make the column smaller than
    its plain blocks (by ``DICT_MIN_SAVING``) and, with ``sorted_too``, than the sorted dictionary
    and its codes: a skewed alphabet (a category that follows its items, an author, a tab), whose
    frequent codes take a few low bits in PATCH blocks and each block the widths of the codes it
    holds, which ``_plain_or_dictionary``'s first estimate (no low bits) does not see. A column
    whose entropy is within a bit of ``log2 D`` never pays; another is weighed on every ``k``-th
    block (about ``FREQ_SAMPLE_BLOCKS`` of them, whatever its stripes' sizes), encoded plain and
    as codes in both orders, with both dictionaries whole. The final choice is the exact one: this
    only decides what is encoded."""
    D, n = len(uniq), len(values)
    p = counts / n
    if -(p * np.log2(p)).sum() > np.log2(D) - 1:
        return False
    # every k-th block of the column (each as a stripe of its own: a stripe's fields cost both
    # orders alike), so that stripes of any sizes are sampled in proportion to their values
    nb = (sc + block_size - 1) // block_size
    first = np.cumsum(nb) - nb
    g = np.arange(0, int(nb.sum()), max(1, int(nb.sum()) // FREQ_SAMPLE_BLOCKS))
    s = np.searchsorted(first, g, side="right") - 1  # each sampled block's stripe
    at0 = (np.cumsum(sc) - sc)[s] + (g - first[s]) * block_size
    ssc = np.minimum(block_size, np.cumsum(sc)[s] - at0)
    take = np.repeat(at0 - np.cumsum(ssc) + ssc, ssc) + np.arange(int(ssc.sum()))
    sv, scodes = values[take], codes[take]
    at = np.empty(D, np.int64)
    at[rank] = np.arange(D)
    scale = n / max(len(sv), 1)
    freq = len(encode_stripes(at[scodes], ssc, block_size, CODES)[0]) * scale \
        + len(encode_stripes(uniq[rank], np.array([D]), block_size, True)[0])
    if freq >= (1 - DICT_MIN_SAVING) * len(encode_stripes(sv, ssc, block_size, True)[0]) * scale:
        return False
    if not sorted_too:
        return True
    return freq < len(encode_stripes(scodes, ssc, block_size, CODES)[0]) * scale \
        + len(encode_stripes(uniq, np.array([D]), block_size, True)[0])


_TABLE_FLAGS = codec.ENC_DELTA | codec.ENC_SIGNED | codec.ENC_RADIX | codec.ENC_SPARSE  # a dictionary's own, in its codes' enc


# Borrowed codes (DESIGN §1 "Borrowed codes"): a column that is a function of another column of the
# segment (a movie's year, genres, an item's category: attributes of its item id) stores no blobs
# of its own, only a dictionary of one entry per code of the other column's segment dictionary;
# its index rows name the other column's blobs of codes. It borrows where that is
# smaller by at least BORROW_MIN_SAVING and its own blobs take at least BORROW_MIN_SHARE of the
# lender's (a tenant that projects it without the lender reads the lender's codes: at most 4x).
BORROW_MIN_SAVING = 1 / 4
BORROW_MIN_SHARE = 1 / 4
BORROW_SAMPLE = 4096  # values the quick test of a function sees first


def is_function(a: np.ndarray, b: np.ndarray, sample: int | None = None) -> bool:
    """Whether ``b[i]`` is determined by ``a[i]`` (equal ``a``, equal ``b``), over the first
    ``sample`` values only where given (a quick test before the whole one).

    >>> is_function(np.array([3, 1, 3, 2]), np.array([7, 5, 7, 7])), is_function(np.array([3, 3]), np.array([1, 2]))
    (True, False)
    """
    if sample is not None:
        a, b = a[:sample], b[:sample]
    if len(a) < 2:
        return True
    order = np.argsort(a, kind="stable")
    sa, sb = a[order], b[order]
    return not ((sa[1:] == sa[:-1]) & (sb[1:] != sb[:-1])).any()


def borrowed_table(codes: np.ndarray, values: np.ndarray, entries: int, block_size: int):
    """The dictionary (its head and blob) of a column that borrows codes (``BORROW_MIN_SAVING``): its
    entry ``k`` the value of every event whose code is ``k`` (each of ``0 .. entries - 1``
    appears), its blob a format-3 blob of ``entries`` values as a segment dictionary's
    (``dict_heads``, ``encode_stripes``); None where ``values`` are not a function of ``codes``.
    (A borrowed row's ``enc`` flags are its lender's row's: its blob's. Its table's blocks, of any
    kind, are not flagged: the entry's ``"borrow"`` turns away every release before them.)

    >>> t = borrowed_table(np.array([1, 0, 1, 2]), np.array([1995, 1977, 1995, 2001]), 3, 128)
    >>> decode_dictionary(t, 128).tolist()
    [1977, 1995, 2001]
    """
    table = np.zeros(entries, np.int64)
    table[codes] = values
    if not np.array_equal(table[codes], values):
        return None
    blob = encode_stripes(table, np.array([entries]), block_size, True)[0]
    return np.concatenate([dict_heads([entries], [len(blob)])[0], blob])


def frequency_tables(values: np.ndarray, sc: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per stripe (``sc`` values each), its distinct values, most frequent first (ties: the smaller
    value first), and each value's code (its rank there): ``(table values, entries per stripe,
    codes)``, the tables back to back in stripe order, ``table[code] == value`` within each stripe.

    >>> frequency_tables(np.array([5, 7, 7, 9, 1, 1, 1]), np.array([3, 4]))[0].tolist()
    [7, 5, 1, 9]
    """
    return _rank_groups(*_value_groups(values, sc), len(values))


def _value_groups(values: np.ndarray, sc: np.ndarray) -> tuple:
    """Each stripe's distinct values: ``(order, gid, gval, gsid, gcnt, tc)``: the values' order by
    (stripe, value), each sorted value's group, each group's value, stripe and count, each
    stripe's groups (``frequency_tables``' first half, all a stripe table's first estimate needs)."""
    S = len(sc)
    sid = np.repeat(np.arange(S), sc)
    lo = int(values.min()) if len(values) else 0
    span = int(values.max()) - lo + 1 if len(values) else 1
    if S * span < 1 << 62:  # one key, (stripe, value): a third of lexsort's time
        order = np.argsort(sid * span + (values - lo), kind="stable")
    else:
        order = np.lexsort((values, sid))
    v, st = values[order], sid[order]
    new = np.ones(len(v), bool)
    new[1:] = (v[1:] != v[:-1]) | (st[1:] != st[:-1])
    gid = np.cumsum(new) - 1
    gval, gsid, gcnt = v[new], st[new], np.bincount(gid)
    return order, gid, gval, gsid, gcnt, np.bincount(gsid, minlength=S).astype(np.int64)


def _rank_groups(order, gid, gval, gsid, gcnt, tc, n: int) -> tuple:
    """``frequency_tables`` from ``_value_groups``: the groups ranked by count within their stripe."""
    o2 = np.lexsort((gval, -gcnt, gsid))
    rank = np.empty(len(gval), np.int64)
    rank[o2] = np.arange(len(gval)) - (np.cumsum(tc) - tc)[gsid[o2]]
    codes = np.empty(n, np.int64)
    codes[order] = rank[gid]
    return gval[o2], tc, codes


# A stripe table must save at least this many bytes too: its place in the index (the stripe's enc,
# a byte offset that changes from stripe to stripe where a segment dictionary's is one value) costs
# a few bytes there. Swept over 0-16 (2026-12-02, varint heads): 8 was smallest or within 0.05% on
# ML-1M, ML-100K, ``replay`` and ``favourites``, real and cut into 8-event users, where 0 let the
# 8-event packs' ratings take tables that lost in the index (rating 1.054x -> 1.016x with its fields).
TABLE_MIN_BYTES = 8
# A stripe table of codes into its column's segment dictionary (DESIGN §1 "Stripe tables", tables of
# codes) starts with this byte, then its head: no head of a table of values does (a varint of at
# least 1 entries starts with a byte of at least 1). Segments with one say ``"tables": 2``.
CODE_TABLE_MARK = 0
CODE_TABLES = True  # the writer weighs tables of codes (False: tables of values only, as before them)
LITERAL_MIN_MATCH = 3  # a stripe table's copy: at least this many events equal to earlier literals ...
LITERAL_WINDOW = 4096  # ... at most this many literals back


def literal_tables(values: np.ndarray, sc: np.ndarray, m: int = LITERAL_MIN_MATCH, window: int = LITERAL_WINDOW):
    """Per stripe (``sc`` values each), its values parsed greedily into literals and copies
    against its own literal stream, LZ77-style: at value i, among the last 8 places where the
    ``m`` literals ``values[i:i + m]`` were seen (newest first; those more than ``window`` literals
    back skipped), the longest run of values from i equal to the literals from there (ties: the
    oldest) is a copy where it is at least ``m`` long, else value i is a new literal. Returns
    ``(literals back to back, literals per stripe, codes)``: each value's literal index in its
    stripe, so ``literals[code] == value`` within each stripe, and a run of literals or a copy is
    a run of codes rising by 1 (DESIGN §1 "Stripe tables"). In C when built (``gm_literal_tables``).

    >>> literal_tables(np.array([1, 2, 3, 4, 1, 2, 3, 4, 5, 9, 9, 9]), np.array([9, 3]))[2].tolist()
    [0, 1, 2, 3, 0, 1, 2, 3, 4, 0, 1, 2]
    """
    values = np.asarray(values, dtype=np.int64)
    sc = np.asarray(sc, dtype=np.int64)
    if native.available()[0]:
        return native.literal_tables(values, sc, m, window)
    return _literal_tables(values, sc, m, window)


def _literal_tables(values: np.ndarray, sc: np.ndarray, m: int, window: int):
    """``literal_tables`` in Python (the C one's twin: the same literals and codes)."""
    lits, nlit, codes = [], np.zeros(len(sc), np.int64), np.empty(len(values), np.int64)
    at = 0
    for s, n in enumerate(sc.tolist()):
        x = values[at : at + n].tolist()
        lit: list = []
        seen: dict = {}
        i = 0
        while i < n:
            best = src = 0
            if i + m <= n:
                for j in reversed(seen.get(tuple(x[i : i + m]), [])[-8:]):  # newest first
                    if len(lit) - j > window:
                        continue
                    k = m
                    while i + k < n and j + k < len(lit) and lit[j + k] == x[i + k]:
                        k += 1
                    if k >= best:
                        best, src = k, j
            if best >= m:
                codes[at + i : at + i + best] = np.arange(src, src + best)
                i += best
                continue
            codes[at + i] = len(lit)
            lit.append(x[i])
            i += 1
            if len(lit) >= m:
                seen.setdefault(tuple(lit[-m:]), []).append(len(lit) - m)
        lits += lit
        nlit[s] = len(lit)
        at += n
    return np.array(lits, np.int64), nlit, codes


def _stripe_tables(values, sc, block_size, region, off, nbytes, enc, head, codes: bool = True):
    """The column as encoded (``region, off, nbytes, enc``, a segment dictionary of ``head`` bytes
    at its start) with the stripes that pay stored as codes into a table of their own (DESIGN §1
    "Stripe tables"): its head (``dict_heads``: its entries), the table's blob (its values,
    any block kind), right before the stripe's blob of codes (``CODES`` blocks). Two tables are
    weighed: the stripe's distinct values, most frequent first (``frequency_tables``: a user who
    keeps to a few values), and its literals (``literal_tables``: a user who repeats runs of
    earlier events). A stripe takes the smaller where table and codes save at least
    ``DICT_MIN_SAVING`` of its blob's bytes (each value then costs the kernels a gather, as a
    segment dictionary's codes do). Only candidates are encoded again: for frequency tables, the
    stripes whose ideal code (each value's ``-log2`` of its frequency in the stripe) and table at
    the stripe's width would be that small; for literal tables, those whose literals are at most
    3/4 of their values and whose table at the stripe's width and codes' jumps (about 20 bits each)
    would be that small (weighed where the C library is built: the parse's Python twin takes about
    10 s a million values). Where the column has a segment dictionary (``head`` bytes), each table
    is weighed twice, as values and as **codes into the segment dictionary** (a table of codes:
    ``CODE_TABLE_MARK`` before its head; its entries a code's few bits where the values are wide,
    hashed ids), and the smaller taken; a table of codes only while some stripe still indexes the
    segment dictionary itself (the reader finds the dictionary at the column's least dictionary
    place in the segment: ``_keep_a_reference``). ``codes=False``: tables of values only (what
    ``_encode_column`` weighs too where the segment dictionary stays for one stripe: tables of
    values alone may let it go). Returns ``(region, off, nbytes, enc, head, lead)``: ``lead``, per
    stripe, its table's bytes (0: none)."""
    S = len(sc)
    if not S or (sc <= 0).any():
        return region, off, nbytes, enc, head, np.zeros(S, np.int64)
    first = np.cumsum(sc) - sc
    bar = np.minimum((1 - DICT_MIN_SAVING) * nbytes, nbytes - TABLE_MIN_BYTES)
    best = nbytes.astype(np.float64)  # per stripe: the bytes of its cheapest choice so far (pick: which table)
    pick = np.full(S, -1, np.int64)
    coded = np.zeros(S, bool)  # ... and whether that table holds codes into the segment dictionary
    tried = []
    groups = _value_groups(values, sc)
    gsid, gcnt, tc = groups[3], groups[4].astype(np.float64), groups[5]
    lo, hi = np.minimum.reduceat(values, first), np.maximum.reduceat(values, first)
    width = codec.bit_length((hi - lo).astype(np.uint64)).astype(np.float64)
    code_of, cw = None, width  # each value's code into the segment dictionary, where tables of codes are weighed
    if head and CODE_TABLES and codes:
        dvals = decode_dictionary(region[:head], block_size)
        srt = np.argsort(dvals, kind="stable")
        code_of = lambda v: srt[np.searchsorted(dvals[srt], v)]  # noqa: E731
        vc = code_of(values)
        cw = codec.bit_length((np.maximum.reduceat(vc, first) - np.minimum.reduceat(vc, first)).astype(np.uint64))
        cw = cw.astype(np.float64)
    vw, width = width, np.minimum(width, cw)
    ideal = np.bincount(gsid, gcnt * np.log2(sc[gsid] / gcnt), minlength=S)
    fields = 8 * dict_heads(tc, tc)[1] + 24 * ((sc + block_size - 1) // block_size)  # its head (about), 3 bytes a block of codes
    cand = (fields + tc * width + ideal < 8 * bar) & (tc < sc)
    if cand.any():  # (ranked only then: item ids a user has once each never are)
        tried.append((*_rank_groups(*groups, len(values)), cand))
    if native.available()[0]:
        lv, lc, lcodes = literal_tables(values, sc)
        # a literal table's codes: little but their jumps (into a copy, and back), each an exception
        # of a position and a distance, about 20 bits
        jump = np.ones(len(values), bool)
        jump[1:] = lcodes[1:] != lcodes[:-1] + 1
        jumps = np.add.reduceat(jump, first) - 1
        tried.append((lv, lc, lcodes, (fields + lc * width + 20 * jumps < 8 * bar) & (4 * lc <= 3 * sc)))
    parts = []
    for t, (tv, tc, codes, cand) in enumerate(tried):
        cand = np.flatnonzero(cand)
        if not len(cand):
            parts.append(None)
            continue
        tfirst = np.cumsum(tc) - tc
        cb = encode_stripes(codes[ranges(first[cand], sc[cand])], sc[cand], block_size, CODES_DELTA)
        # the table as values, and as codes into the segment dictionary (a byte more: the mark), each
        # where its entries' width is within a bit of the other's (64-bit hashed ids: codes only)
        tbs, sizes = [], []
        for mark, w, other, kind in ((0, vw, cw, True), (1, cw, vw, CODES_DELTA)):  # (codes: no RADIX)
            if code_of is None:  # (no segment dictionary: tables of values only)
                sub = np.arange(len(cand)) if not mark else np.zeros(0, np.int64)
            else:
                sub = np.flatnonzero(w[cand] <= other[cand] + 1)
            tb = [np.zeros(0, np.uint8), np.zeros(len(cand), np.int64), np.zeros(len(cand), np.int64), np.zeros(len(cand), np.int64)]
            size = np.full(len(cand), _NEVER)
            if len(sub):
                k = cand[sub]
                tvals = tv[ranges(tfirst[k], tc[k])]
                got = encode_stripes(code_of(tvals) if mark else tvals, tc[k], block_size, kind)
                tb[0], tb[1][sub], tb[2][sub], tb[3][sub] = got
                size[sub] = mark + dict_heads(tc[k], got[2])[1] + got[2]
            tbs.append(tb)
            sizes.append(size)
        as_codes = np.argmin(np.stack(sizes), axis=0)
        size = np.choose(as_codes, sizes) + cb[2]
        better = (size <= bar[cand]) & (size < best[cand])
        best[cand[better]], pick[cand[better]], coded[cand[better]] = size[better], t, as_codes[better] == 1
        parts.append((cand, tc, tbs, as_codes, cb))
    if coded[pick >= 0].any() and (pick >= 0).all():  # (the segment dictionary: indexed by a stripe's own codes too)
        k = np.flatnonzero(coded & (pick >= 0))
        pick[k[np.argmin(nbytes[k] - best[k])]] = -1  # the table of codes that saves least
    take = np.flatnonzero(pick >= 0)
    if not len(take):
        return region, off, nbytes, enc, head, np.zeros(S, np.int64)
    # per stripe that takes a table: its entries, the table's and the codes' blobs (region, offset, bytes, enc)
    ent, t_nb, c_nb, t_enc, c_enc = (np.zeros(S, np.int64) for _ in range(5))
    t_src, c_src = np.zeros(S, np.int64), np.zeros(S, np.int64)
    t_reg, c_reg = [], []
    for t, part in enumerate(parts):
        if part is None:
            continue
        cand, tc, tbs, as_codes, cb = part
        for v, tb in enumerate(tbs):  # (tables of values, then of codes)
            j = np.flatnonzero((pick[cand] == t) & (as_codes == v))
            k = cand[j]
            base_t, base_c = sum(len(r) for r in t_reg), sum(len(r) for r in c_reg)
            ent[k], t_nb[k], c_nb[k], t_enc[k], c_enc[k] = tc[k], tb[2][j], cb[2][j], tb[3][j], cb[3][j]
            t_src[k], c_src[k] = base_t + tb[1][j], base_c + cb[1][j]
            t_reg.append(tb[0])
            c_reg.append(cb[0])
    t_region, c_region = np.concatenate(t_reg), np.concatenate(c_reg)
    lead = np.zeros(S, np.int64)
    heads, hlen = dict_heads(ent[take], t_nb[take])
    mark = coded[take].astype(np.int64)
    if mark.any():  # a table of codes: CODE_TABLE_MARK, then its head
        marked = np.full(int((hlen + mark).sum()), CODE_TABLE_MARK, np.uint8)
        take_ranges(heads, np.cumsum(hlen) - hlen, hlen, marked, np.cumsum(hlen + mark) - hlen)
        heads, hlen = marked, hlen + mark
    lead[take] = hlen + t_nb[take]
    nb2 = nbytes.copy()
    nb2[take] = c_nb[take]
    seg_dict = ((enc & codec.ENC_DICT) != 0) & (lead == 0)
    keep = head if seg_dict.any() else 0  # the segment dictionary, while a stripe still uses it
    span = lead + nb2
    at = keep + np.cumsum(span) - span
    out = np.empty(keep + int(span.sum()), np.uint8)
    out[:keep] = region[:keep]
    rest = np.flatnonzero(lead == 0)
    take_ranges(region, off[rest], nbytes[rest], out, at[rest])
    take_ranges(heads, np.cumsum(hlen) - hlen, hlen, out, at[take])
    take_ranges(t_region, t_src[take], t_nb[take], out, at[take] + hlen)
    take_ranges(c_region, c_src[take], c_nb[take], out, at[take] + lead[take])
    enc2 = enc.copy()
    enc2[take] = c_enc[take] | codec.ENC_DICT | (t_enc[take] & _TABLE_FLAGS) | (at[take] << 8)
    return out, at + lead, nb2, enc2, keep, lead


def _constant_stripes(values: np.ndarray, sc: np.ndarray, nbytes: np.ndarray, enc: np.ndarray) -> tuple:
    """Which stripes (of ``sc`` values each, their blobs ``nbytes`` and ``enc`` as encoded without
    constants) ``encode_column`` stores as constants: those whose values are one value (``zigzag``
    below ``codec.CONST_MAX``), where their blobs' bytes exceed what their values add to the index
    (its ``enc`` field is stored as its steps: about a byte per 8 bits of a step that is not 0);
    ``(None, 0)`` where none are; else ``(mask, the bytes they add to the index)``."""
    if not len(sc) or (sc <= 0).any():
        return None, 0
    first = np.cumsum(sc) - sc
    lo = np.minimum.reduceat(values, first)
    cst = (lo == np.maximum.reduceat(values, first)) & (zigzag(lo) < _U64(codec.CONST_MAX))
    if not cst.any():
        return None, 0
    steps = lambda e: int(((codec.bit_length(zigzag(np.diff(e, prepend=0))) + 7) // 8).sum())  # noqa: E731
    enc = np.asarray(enc, np.int64)
    more = steps(np.where(cst, codec.const_enc(lo), enc)) - steps(enc)
    return (cst, more) if int(np.asarray(nbytes)[cst].sum()) > more else (None, 0)


def codes_kinds(kind: np.ndarray) -> bool:
    """Whether blocks of ``kind`` may hold a dictionary's codes: any but RADIX (a segment
    dictionary's: plain, PATCH, RUN or LEVELS, ``CODES``; a stripe table's DELTA ones too,
    ``CODES_DELTA``)."""
    return bool((np.asarray(kind) != KIND_RADIX).all())


def dict_heads(entries: np.ndarray, nbytes: np.ndarray, form: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The heads (uint8, back to back) of dictionaries of ``entries`` values whose blobs are
    ``nbytes`` long, in ``form`` (``DICT_FORM`` by default), and each head's length."""
    entries = np.asarray(entries, np.int64)
    if (DICT_FORM if form is None else form) == 1:
        b = np.stack([entries, np.asarray(nbytes, np.int64)], 1).astype("<u8").view(np.uint8).reshape(-1)
        return b, np.full(len(entries), DICT_HEAD.size, np.int64)
    b, n = varint_bytes(entries.astype(_U64))
    return b, n.astype(np.int64)


def dictionary_head(buf: np.ndarray, form: int, where: str = "dictionary") -> tuple[int, int]:
    """``(entries, head bytes)`` of the dictionary whose stored bytes (head and blob) are exactly
    ``buf`` (uint8), in ``form``; a head that disagrees with them (form 1: its blob's bytes) or is
    not the shortest varint (form 2) is a ``CorruptionError`` naming ``where``."""
    if form == 1:
        if len(buf) < DICT_HEAD.size:
            raise CorruptionError(f"{where}: shorter than its head")
        n, nb = DICT_HEAD.unpack(bytes(buf[: DICT_HEAD.size]))
        if nb != len(buf) - DICT_HEAD.size:
            raise CorruptionError(f"{where}: its size disagrees with the index")
        h = DICT_HEAD.size
    elif form == 2:
        end = np.flatnonzero(np.asarray(buf[:5]) < 0x80)  # (at most 2^26 entries: 4 bytes)
        if not len(end):
            raise CorruptionError(f"{where}: its head is not a varint of at most 5 bytes")
        h = int(end[0]) + 1
        n = int(varint_decode(buf[:h])[0][0])
        if h != int(varint_len(np.array([n], _U64))[0]):
            raise CorruptionError(f"{where}: its head is not the shortest varint")
    else:
        raise CorruptionError(f"{where}: unknown dictionary head form {form!r}")
    if not 1 <= n <= DICT_MAX_ENTRIES or len(buf) - h < 1:
        raise CorruptionError(f"{where}: bad head ({n} entries, {len(buf) - h} bytes of blob)")
    return n, h


def dictionary_heads(buf: np.ndarray, starts: np.ndarray, lens: np.ndarray, forms: np.ndarray,
                     where: str = "dictionaries") -> tuple[np.ndarray, np.ndarray]:
    """``dictionary_head`` of many dictionaries at once: those whose stored bytes are ``buf[starts[i]
    : starts[i] + lens[i]]`` (uint8), heads in ``forms[i]``: ``(entries, head bytes)`` of each. A bad
    head is a ``CorruptionError`` naming ``where`` and the dictionary's index (``dictionary_head``
    on it names what is wrong)."""
    buf = np.asarray(buf, dtype=np.uint8)
    starts, lens, forms = (np.asarray(a, np.int64).reshape(-1) for a in (starts, lens, forms))
    if native.available()[0]:  # in C; a bad one named by the NumPy parse below
        n, h, bad = native.dict_heads(buf, starts, lens, forms, DICT_MAX_ENTRIES)
        if not bad:
            return n, h
    n, h = np.zeros(len(starts), np.int64), np.zeros(len(starts), np.int64)
    bad = ((forms != 1) & (forms != 2)) | (starts < 0) | (lens < 2) | (lens > len(buf) - starts)  # (no sum to wrap)
    f1 = np.flatnonzero(~bad & (forms == 1) & (lens >= DICT_HEAD.size))
    bad |= ~bad & (forms == 1) & (lens < DICT_HEAD.size)
    if len(f1):
        raw = np.ascontiguousarray(buf[starts[f1, None] + np.arange(DICT_HEAD.size)]).view("<u8")
        n[f1], h[f1] = np.minimum(raw[:, 0], _U64(1 << 62)).astype(np.int64), DICT_HEAD.size
        bad[f1] |= raw[:, 1] != (lens[f1] - DICT_HEAD.size).astype(_U64)
    f2 = np.flatnonzero(~bad & (forms == 2))
    if len(f2):  # a varint of at most 5 bytes (2^26 entries take 4), inside the dictionary's bytes
        k = np.arange(5)
        b = np.where(k < lens[f2, None], buf[np.minimum(starts[f2, None] + k, len(buf) - 1)], 0x80).astype(np.int64)
        end = b < 0x80
        hh = np.argmax(end, axis=1) + 1
        v = (((b & 0x7F) << (7 * k)) * (k < hh[:, None])).sum(axis=1)
        n[f2], h[f2] = v, hh
        bad[f2] |= ~end.any(axis=1) | (hh != varint_len(v.astype(_U64)))
    bad |= (n < 1) | (n > DICT_MAX_ENTRIES) | (lens - h < 1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        if 0 <= starts[i] and 0 <= lens[i] <= len(buf) - starts[i] and forms[i] in (1, 2):
            dictionary_head(buf[starts[i] : starts[i] + lens[i]], int(forms[i]), f"{where}: dictionary {i}")
        raise CorruptionError(f"{where}: dictionary {i}: bad head or bytes (form {int(forms[i])}, {int(lens[i])} bytes)")
    return n, h


def decode_dictionaries(buf: np.ndarray, starts: np.ndarray, lens: np.ndarray, forms: np.ndarray, block_size: int,
                        where: str = "dictionaries") -> tuple[np.ndarray, np.ndarray]:
    """``decode_dictionary`` of many dictionaries at once (``dictionary_heads``' arguments), in
    one pass of the blob decoder: ``(their values back to back, entries of each)``."""
    starts, lens = (np.asarray(a, np.int64).reshape(-1) for a in (starts, lens))
    n, h = dictionary_heads(buf, starts, lens, forms, where)
    return decode_blobs(buf, starts + h, lens - h, n, block_size, where=f"{where} (blob i: dictionary i)"), n


def page_spans(buf: np.ndarray, at: np.ndarray, nb: np.ndarray, blen: np.ndarray, p0: np.ndarray,
               p1: np.ndarray) -> tuple[np.ndarray, ...]:
    """Where pages ``p0[k] .. p1[k]`` of blob ``k`` lie: a blob of ``nb[k]`` blocks in more than one
    page and ``blen[k]`` bytes, whose head (its tags, then its anchors) is at ``buf[at[k]:]`` (uint8):
    ``(f0, f1, b0, b1, ok)``, their fields' bytes ``[f0, f1)`` and their payload's bits ``[b0, b1)``
    from the blob's start (the last page's payload ends where page 0's fields start), and whether
    the anchors agree with that layout (where not, the others are 0)."""
    at, nb, blen, p0, p1 = (np.asarray(x, np.int64).reshape(-1) for x in (at, nb, blen, p0, p1))
    npg = -(-nb // PAGE_BLOCKS)
    pay = nb + 8 * npg
    ok = (npg >= 2) & (0 <= p0) & (p0 <= p1) & (p1 < npg) & (at >= 0) & (at + pay <= len(buf))
    z = np.zeros(len(nb), np.int64)
    if not ok.any():
        return z, z, z, z, ok
    def anchor(p, k):  # noqa: E306  (field k of anchor p of each blob: u32 little-endian)
        i = np.where(ok, at + nb + 8 * np.minimum(p, npg - 1) + 4 * k, 0)
        return (buf[i].astype(np.int64) | buf[i + 1].astype(np.int64) << 8 | buf[i + 2].astype(np.int64) << 16
                | buf[i + 3].astype(np.int64) << 24)
    end = p1 + 1 < npg
    f0, f1 = anchor(p0, 0), np.where(end, anchor(p1 + 1, 0), blen)
    a0 = anchor(z, 0)
    b0, b1 = 8 * pay + anchor(p0, 1), 8 * pay + np.where(end, anchor(p1 + 1, 1), 8 * (a0 - pay))
    ok &= (pay <= a0) & (a0 <= f0) & (f0 <= f1) & (f1 <= blen) & (8 * pay <= b0) & (b0 <= b1) & (b1 <= 8 * a0)
    return tuple(np.where(ok, x, 0) for x in (f0, f1, b0, b1)) + (ok,)


def blobs_of_pages(buf: np.ndarray, at: np.ndarray, nb: np.ndarray, p0: np.ndarray, p1: np.ndarray, pay: np.ndarray,
                   pay_at: np.ndarray, b0: np.ndarray, b1: np.ndarray, fields: np.ndarray, f_at: np.ndarray,
                   nf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Blobs of format 3 (uint8, back to back; and each one's length), blob ``k`` of pages ``p0[k]
    .. p1[k]`` (at least two) of a blob of ``nb[k]`` blocks whose head (tags, anchors) is at
    ``buf[at[k]:]``, from the bytes of its payload from byte ``b0[k] // 8`` (``pay[pay_at[k]:]``, to
    bit ``b1[k]`` at least), its payload's bits ``[b0[k], b1[k])`` and the ``nf[k]`` bytes of those
    pages' fields (``fields[f_at[k]:]``; ``page_spans``): their tags, their anchors moved to the new
    layout, their payload from bit 0 (the bits past ``b1`` zeroed), their fields. A page's fields
    parse on their own and its payload starts at its anchor, so each decodes to its pages' values
    (those ``PAGE_BLOCKS p0`` blocks on), through every check of a whole blob (``decode_blobs``).
    What a read of part of a stripe table decodes (DESIGN §1 "Stripe tables")."""
    at, nb, p0, p1, pay_at, b0, b1, f_at, nf = (np.asarray(x, np.int64).reshape(-1)
                                                for x in (at, nb, p0, p1, pay_at, b0, b1, f_at, nf))
    PB = PAGE_BLOCKS
    nb2 = np.minimum(nb, PB * (p1 + 1)) - PB * p0  # (their blocks)
    na = p1 - p0 + 1  # (their anchors)
    nbits = b1 - b0
    pb = (nbits + 7) >> 3
    size = nb2 + 8 * na + pb + nf
    start = np.cumsum(size) - size
    out = np.empty(int(size.sum()), np.uint8)
    take_ranges(np.asarray(buf, np.uint8), at + PB * p0, nb2, out, start)  # tags
    # anchors: (fields' byte, payload's bit) of each page, less the first page's, past the new head and payload
    k = ranges(np.zeros(len(nb), np.int64), na)
    blob = np.repeat(np.arange(len(nb)), na)
    i = np.repeat(at + nb + 8 * p0, na) + 8 * k
    u = np.asarray(buf, np.uint8)[i[:, None] + np.arange(8)].copy().view("<u4").astype(np.int64)
    u -= u[(np.cumsum(na) - na)[blob]]
    u[:, 0] += (nb2 + 8 * na + pb)[blob]
    take_ranges(u.astype("<u4").view(np.uint8).reshape(-1), 8 * (np.cumsum(na) - na), 8 * na, out, start + nb2)
    # payload, from bit 0 (``realign``: as words, zero past its bits; little-endian, so their bytes)
    nw = (nbits + 63) >> 6
    w = np.zeros(int(nw.sum()) + 1, _U64)
    realign(np.asarray(pay, np.uint8), 8 * pay_at + (b0 & 7), nbits, w, np.cumsum(nw) - nw)
    take_ranges(w.view(np.uint8), 8 * (np.cumsum(nw) - nw), pb, out, start + nb2 + 8 * na)
    take_ranges(np.asarray(fields, np.uint8), f_at, nf, out, start + nb2 + 8 * na + pb)  # fields
    return out, size


def decode_dictionary(buf: np.ndarray, block_size: int, where: str = "dictionary", form: int | None = None) -> np.ndarray:
    """The values (int64: sorted, or by frequency) of the dictionary whose stored bytes (head and
    blob, ``encode_column``) are exactly ``buf`` (uint8), its head in ``form`` (``DICT_FORM`` by
    default); a bad head is a ``CorruptionError`` naming ``where``."""
    buf = np.asarray(buf, dtype=np.uint8)
    n, h = dictionary_head(buf, DICT_FORM if form is None else form, where)
    try:
        return decode_blob(buf[h:], n, block_size)
    except CorruptionError as e:
        raise CorruptionError(f"{where}: {e}") from e


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


_KIND_OF_TAG = np.zeros(128, np.int64)
_KIND_OF_TAG[_TAG_OF_KIND[_TAG_OF_KIND > 0]] = np.flatnonzero(_TAG_OF_KIND)
_KIND_OF_TAG[_SPARSE_TAG_OF_KIND[_SPARSE_TAG_OF_KIND > 0]] = np.flatnonzero(_SPARSE_TAG_OF_KIND)
_KIND_OF_TAG[TAG_FLAG : TAG_FLAG_LAST + 1] = KIND_PATCH
_KIND_OF_TAG[TAG_RUN_GAPS] = KIND_RUN
_KIND_OF_TAG[TAG_LEVELS : TAG_LAST + 1] = KIND_LEVELS
_FLAG_E = np.zeros(128, np.int64)  # a FLAG tag's e (0: not a FLAG tag)
_FLAG_E[TAG_FLAG : TAG_FLAG_LAST + 1] = np.tile(np.arange(1, FLAG_MAX_E + 1), 2)
_FLAG_FIELDS = np.zeros(128, np.int64)  # a FLAG tag's fields: w2 or none
_FLAG_FIELDS[TAG_FLAG_W2 : TAG_FLAG_LAST + 1] = 1


def is_classes(tags: np.ndarray) -> np.ndarray:
    """Whether each tag is a CLASSES block's (``TAG_CLASSES + 4 (L - 1)``)."""
    t = np.asarray(tags, np.int64)
    return (t >= TAG_CLASSES) & (t <= TAG_CLASSES + 4 * (LEVELS_MAX - 1)) & (((t - TAG_CLASSES) & 3) == 0)


def is_bare(tags: np.ndarray) -> np.ndarray:
    """Whether each tag is a BARE LEVELS block's (``TAG_CLASSES + 4 (L - 1) + wt``, ``wt`` 1 .. 3)."""
    t = np.asarray(tags, np.int64)
    return (t > TAG_CLASSES) & (t <= TAG_CLASSES + 4 * LEVELS_MAX - 1) & (((t - TAG_CLASSES) & 3) != 0)


def has_slope(tags: np.ndarray) -> np.ndarray:
    """Whether each tag's block has a slope field (bit 7 of a tag below ``TAG_CLASSES``; CLASSES and
    BARE LEVELS tags use the bit as their own)."""
    t = np.asarray(tags, np.int64)
    return ((t & TAG_LFOR) != 0) & (t < TAG_CLASSES)


def tag_kind(tags: np.ndarray) -> np.ndarray:
    """``KIND_*`` of each tag (checked by ``check_tags``; a BARE LEVELS tag's is ``KIND_LEVELS``)."""
    t = np.asarray(tags, np.int64)
    return np.where(is_classes(t), KIND_CLASSES, _KIND_OF_TAG[t & 0x7F])


def bad_tags(tags: np.ndarray) -> np.ndarray:
    """Tags that are no encoding: past ``TAG_LAST``, or a FLAG or LEVELS tag with the slope's bit
    that is not a CLASSES or BARE LEVELS tag."""
    t = np.asarray(tags, np.int64)
    return (((t & 0x7F) > TAG_LAST) | (((t & 0x7F) >= TAG_FLAG) & ((t & TAG_LFOR) != 0))) & ~is_classes(t) & ~is_bare(t)


def check_tags(tags: np.ndarray, where: str = "pages") -> None:
    """``CorruptionError`` for a tag that is not FOR/LFOR of width 0..64, PATCH, RUN, DELTA, DELTA
    PATCH, DELTA SIGNED, RADIX (sparse or not), FLAG or LEVELS (these two never with a slope), or
    CLASSES."""
    bad = bad_tags(tags)
    if bad.any():
        raise CorruptionError(f"{where}: block tag {int(np.asarray(tags)[np.flatnonzero(bad)[0]])} is not an "
                              f"encoding this release reads")


def fields_per_block(tags: np.ndarray) -> np.ndarray:
    """The varints of each block's fields: base, the slope (LFOR), then its kind's own (a FLAG
    block: none, or ``w2``; a RUN block with gaps: its gaps' width too; a BARE LEVELS block none)."""
    tags = np.asarray(tags, np.int64)
    return np.where(is_bare(tags), 0, np.where(_FLAG_E[tags & 0x7F] > 0, _FLAG_FIELDS[tags & 0x7F],
                    1 + has_slope(tags) + _EXTRA_FIELDS[tag_kind(tags)] + ((tags & 0x7F) == TAG_RUN_GAPS)))


def fields_end(buf: np.ndarray, start: np.ndarray, limit: np.ndarray, nvar: np.ndarray, where: str) -> np.ndarray:
    """Where the ``nvar[i]`` varints from byte ``start[i]`` of ``buf`` end (at most ``limit[i]``):
    the fields of a one-page blob with PATCH or RUN blocks, which come before its payload."""
    if native.available()[0]:
        fe = native.fields_end(np.ascontiguousarray(buf, np.uint8), *(np.ascontiguousarray(a, np.int64) for a in
                                                                      (start, limit, nvar)))
        if fe is None:
            raise CorruptionError(f"{where}: a blob's fields run past its end")
        return fe
    end_at = np.flatnonzero(np.asarray(buf, np.uint8) < 0x80)
    i = np.searchsorted(end_at, start) + nvar - 1
    ok = (nvar > 0) & (i < len(end_at))
    fe = np.where(ok, end_at[np.minimum(i, max(len(end_at) - 1, 0))] + 1 if len(end_at) else 0, start)
    if ((nvar > 0) & ~ok).any() or (fe > limit).any():
        raise CorruptionError(f"{where}: a blob's fields run past its end")
    return fe


def parse_fields(fbuf: np.ndarray, fstart: np.ndarray, fend: np.ndarray, tag: np.ndarray, cnt: np.ndarray,
                 page_of: np.ndarray, where: str = "pages") -> Blocks:
    """The blocks of whole pages: page ``p``'s fields are bytes ``[fstart[p], fend[p])`` of ``fbuf``;
    its blocks (``page_of``, sorted) have tags ``tag`` and ``cnt`` values. An unknown tag, fields
    that are not exactly the page's varints, or a PATCH / RUN block's fields out of range is a
    ``CorruptionError`` naming ``where``."""
    tag = np.asarray(tag, dtype=np.int64)
    cnt = np.asarray(cnt, dtype=np.int64)
    check_tags(tag, where)
    fstart = np.ascontiguousarray(fstart, dtype=np.int64)
    fend = np.ascontiguousarray(fend, dtype=np.int64)
    flen = fend - fstart
    if (flen < 0).any() or (fstart < 0).any() or (fend > len(fbuf)).any():
        raise CorruptionError(f"{where}: a page's fields are out of order")
    K = len(cnt)
    cl = is_classes(tag)
    if native.available()[0]:  # in C: the fields, and what is made of them below (the same checks)
        out = native.parse_fields(np.ascontiguousarray(fbuf, dtype=np.uint8), fstart, fend, np.ascontiguousarray(tag),
                                  np.ascontiguousarray(cnt), np.ascontiguousarray(page_of, dtype=np.int64), _KIND_OF_TAG)
        if out is None:
            raise CorruptionError(f"{where}: a page's fields do not match its tags")
        base, slope, w, nv, w2, e, kind, sp, mid, ok = out
        if not ok:
            raise CorruptionError(f"{where}: a PATCH, RUN, DELTA, RADIX, LEVELS or CLASSES block's fields are out of range")
        return _bare_alone(Blocks(kind, w, base, slope, nv, w2, e, cnt, sp, mid), tag, page_of, len(flen), where)
    else:
        kind = tag_kind(tag)
        lfor = has_slope(tag)
        bare = is_bare(tag)  # (no fields: its base the prediction, its mid walked from its levels, bare_mids)
        vals, end = varint_decode(fbuf[ranges(fstart, flen)])
        nvv = fields_per_block(tag)
        nv_page = np.bincount(page_of, weights=nvv, minlength=len(flen)).astype(np.int64)
        fcum = np.cumsum(flen)
        got = np.diff(np.concatenate(([0], np.searchsorted(end, fcum - 1, side="right"))))
        if len(vals) != int(nvv.sum()) or (got != nv_page).any() or not np.isin(fcum[flen > 0] - 1, end).all():
            raise CorruptionError(f"{where}: a page's fields do not match its tags")
        vpos = np.cumsum(nvv) - nvv
        fe = _FLAG_E[tag & 0x7F]
        flag = fe > 0  # FLAG blocks: no base (the prediction), no w; w2 their one field, if any
        last = max(len(vals) - 1, 0)
        at = lambda i: vals[np.minimum(i, last)] if len(vals) else np.zeros(K, _U64)  # noqa: E731
        d = np.where(flag | bare, 0, unzigzag(at(vpos)))
        slope = np.zeros(K, dtype=np.int64)
        slope[lfor] = unzigzag(vals[vpos[lfor] + 1])
        xp = np.where(flag, vpos - 1, vpos + 1 + lfor)
        ext = kind != KIND_PLAIN
        pt = ((kind & 3) == KIND_PATCH) & ~flag  # PATCH, DELTA PATCH, DELTA SIGNED: w, w2, e
        rd = kind == KIND_RADIX  # RADIX: R (as w2); its g (as e) and w from R
        big = _U64(1 << 40)  # field values saturate here (as in C): out of range, caught below
        x1 = np.minimum(at(xp), big).astype(np.int64)
        R = np.where(rd & (x1 <= 256), x1, 0)
        lv = (kind == KIND_LEVELS) | cl  # LEVELS: w 1 (its first level), w2 its tail's width, e its field
        w = np.where(rd, RADIX_W[R], np.where(flag, 0, np.where(lv, 1, np.where(ext, np.minimum(x1, 65), tag & 0x7F))))
        x2 = np.where(pt | (kind == KIND_RUN) | cl | (_FLAG_FIELDS[tag & 0x7F] > 0), at(xp + 1), 0).astype(_U64)
        gaps = (tag & 0x7F) == TAG_RUN_GAPS  # RUN with gaps: w, runs, the gaps' width
        x3 = np.where(pt | gaps, at(xp + 2), 0).astype(_U64)
        x2, x3 = np.minimum(x2, big).astype(np.int64), np.minimum(x3, big).astype(np.int64)
        g = RADIX_G[R]
        nv = np.where(kind == KIND_RUN, x2, np.where(rd, -(-cnt // np.maximum(g, 1)), cnt))
        w2 = np.where(pt | flag | cl, x2, np.where(rd, x1, np.where(gaps, x3, np.where(lv, (tag - TAG_LEVELS) & 3, 0))))
        if cl.any():  # CLASSES: each shape a step (XOR) from its page's CLASSES block before
            z = np.bitwise_xor.accumulate(np.where(cl, w2, 0))
            f = _first_of(page_of)
            w2 = np.where(cl, z ^ np.where(f > 0, z[np.maximum(f - 1, 0)], 0), w2)
        e = np.where(pt, x3, np.where(rd, g, np.where(bare, -1, np.where(lv, x1, fe))))
        # base_j = d_j + the previous block's line end (base + slope * nv) within a page: a segmented cumsum
        with np.errstate(over="ignore"):
            term = d.view(_U64).copy()
            term[1:] += slope[:-1].view(_U64) * np.where(rd, cnt, nv)[:-1].astype(_U64)  # (RADIX: its values)
            fb0 = _first_of(page_of)
            starts = np.flatnonzero(fb0 == np.arange(K))
            term[starts] = d.view(_U64)[starts]
            cs = np.cumsum(term, dtype=_U64)
            base = (cs - (cs - term)[fb0]).view(np.int64)
    lv = (kind == KIND_LEVELS) | cl  # its levels L in sp; its field, the bits past its first level, in mid
    levels = 1 + (((tag & 0x7F) - TAG_LEVELS) >> 2)
    sp = np.where(lv, levels, np.where((tag & 0x7F) == TAG_RUN_GAPS, SP_GAPS,
                                       ((tag & 0x7F) >= TAG_PATCH_SPARSE) * SP_POSITIONS))
    mid = np.where(lv, e, 0)
    e = np.where(lv, 0, e)
    b = Blocks(kind, w, base, slope, nv, w2, e, cnt, sp, mid)
    pt, rn, ext = (kind & 3) == KIND_PATCH, kind == KIND_RUN, kind != KIND_PLAIN
    bad = (pt & ((w > 63) | (w2 > AUX_MAX_W2) | (w + w2 > 64) | (e < 1) | (e > cnt))) | \
        (rn & ((nv < 1) | (nv > cnt))) | (ext & ((w > 64) | (cnt > AUX_MAX_BLOCK))) | \
        ((sp == SP_GAPS) & ~lv & ((w2 > position_bits(cnt)) | (nv < 2))) | \
        ((kind == KIND_RADIX) & (e < 2)) | \
        (lv & ~cl & (mid > (levels - 1 + w2) * cnt))  # (an R of no code: g 0; LEVELS: past its levels)
    if cl.any():  # CLASSES: a shape of L low widths and a tail's, every value under 2^25 past the base
        Lc = np.where(cl, levels, 1)
        width, _ = classes_shape(np.where(cl, w2, 0), Lc)
        bad |= cl & ((w2 >> (4 * Lc + 5) != 0) | (width[np.arange(K), Lc] > CLASSES_MAX_WT) |
                     (mid > (Lc - 1 + width.max(axis=1)) * cnt))
    if bad.any():
        raise CorruptionError(f"{where}: a PATCH, RUN, DELTA, RADIX, LEVELS or CLASSES block's fields are out of range")
    return _bare_alone(b, tag, page_of, len(flen), where)


def _bare_alone(b: Blocks, tag: np.ndarray, page_of: np.ndarray, pages: int, where: str) -> Blocks:
    """``b``, or a ``CorruptionError`` where a BARE LEVELS block shares its page (its blob must hold
    no other block: the caller, which knows the blob's blocks, checks the rest)."""
    bare = is_bare(tag)
    if bare.any() and (np.bincount(np.asarray(page_of, np.int64), minlength=pages)[np.asarray(page_of)[bare]] != 1).any():
        raise CorruptionError(f"{where}: a BARE LEVELS block that is not its blob's one block")
    return b


def read_bits(buf: np.ndarray, bit: np.ndarray, w: np.ndarray) -> np.ndarray:
    """uint64 values of ``w <= 56`` bits at bit positions ``bit`` of the byte stream ``buf``."""
    padded = np.concatenate([np.asarray(buf, dtype=np.uint8), np.zeros(8, np.uint8)])
    win = np.ndarray((len(padded) - 7,), dtype=_U64, buffer=padded, strides=(1,))  # element j: bytes j..j+7
    v = win[bit >> 3] >> (bit & 7).astype(_U64)
    return v & ((_U64(1) << np.asarray(w).astype(_U64)) - _U64(1))


def _expand_positions(pay: np.ndarray, at: np.ndarray, b: Blocks, dst32: np.ndarray, w32: np.ndarray) -> None:
    """Sparse bitmaps into bitmap words: block ``i`` of ``b`` (PATCH or RUN kinds, all sparse) has its
    positions (or a RUN block's gaps, ``SP_GAPS``) from bit ``at[i]`` of ``pay``; its bitmap's
    32-bit words start at ``w32[dst32[i]]`` (zero). Positions that do not ascend inside the block
    (or a RUN block's 0), or gaps that reach past it, are a ``CorruptionError``."""
    run = (b.kind & 3) == KIND_RUN
    ones = np.where(run, b.nv - 1, b.e)
    gaps = b.sp == SP_GAPS
    pb = np.where(gaps, b.w2, position_bits(b.cnt))
    if int((at + ones * pb).max()) > 8 * len(pay) or (at < 0).any():
        raise CorruptionError("payload: a block's bitmap lies outside its blob")
    if native.available()[0] and (b.cnt <= 128).all() and not native.stage_bitmaps(  # in C; a bad one: NumPy below
            np.ascontiguousarray(pay, dtype=np.uint8), np.ascontiguousarray(at, np.int64), ones.astype(np.int64),
            pb.astype(np.int64), b.cnt.astype(np.int64), np.where(gaps, 2, run.astype(np.int64)),
            np.ascontiguousarray(dst32, np.int64), w32):
        return
    i = ranges(np.zeros(len(ones), np.int64), ones)
    own = np.repeat(np.arange(len(ones)), ones)
    if native.available()[0]:  # (in C: no copy of the whole payload buffer)
        got = np.zeros(len(i), np.uint32)
        if native.unpack_exceptions(np.ascontiguousarray(pay, dtype=np.uint8), np.ascontiguousarray(at, np.int64),
                                    ones.astype(np.int64), pb.astype(np.int64), np.cumsum(ones) - ones, got):
            raise CorruptionError("payload: a block's bitmap lies outside its blob")
        pos = got.astype(np.int64) - 1  # (it stages value + 1)
    else:
        pos = read_bits(pay, at[own] + i * pb[own], pb[own]).astype(np.int64)
    g = gaps[own]
    if g.any():  # gaps: each start is the one before plus its gap plus 1 (the first after 0)
        pos[g] = restart_cumsum(pos[g] + 1, i[g] == 0)
    prev = np.where(i > 0, np.concatenate(([0], pos[:-1])), np.where(run[own], 0, -1))
    if (pos <= prev).any() or (pos >= b.cnt[own]).any():
        raise CorruptionError("payload: a sparse bitmap's positions do not ascend inside its block")
    pos = np.concatenate([pos, np.zeros(int(run.sum()), np.int64)])  # a RUN block's first run
    dst = np.concatenate([dst32[own], dst32[run]])
    np.bitwise_or.at(w32, dst + (pos >> 5), (np.uint32(1) << (pos & 31).astype(np.uint32)))


def bare_mids(pay: np.ndarray, at: np.ndarray, b: Blocks, limit: np.ndarray, where: str = "payload") -> None:
    """Fill in, in place, the ``mid`` of the BARE LEVELS blocks of ``b`` (as parsed: ``mid`` -1, no
    field says it) from their levels: level 0 is ``cnt`` bits from bit ``at`` of ``pay``, each level
    after it a bit per set bit of the level before, then ``w2`` bits per set bit of the last. A level
    or tail that runs past bit ``limit`` (per block: where its blob ends) is a ``CorruptionError``."""
    k = np.flatnonzero(b.mid < 0)
    if not len(k):
        return
    at, lim = np.asarray(at, np.int64)[k], np.asarray(limit, np.int64)[k]
    cnt, L, wt = b.cnt[k], b.sp[k].astype(np.int64), b.w2[k]
    if (at < 0).any() or (lim > 8 * len(pay)).any():
        raise CorruptionError(f"{where}: a LEVELS block lies outside its blob")
    if native.available()[0]:
        mid = native.bare_mids(np.ascontiguousarray(pay, np.uint8), at, cnt, L, wt, lim)
        if mid is None:
            raise CorruptionError(f"{where}: a LEVELS block's levels run past its blob")
        b.mid[k] = mid
        return
    B, pos, n, mid, ntail = len(k), at.copy(), cnt.copy(), np.zeros(len(k), np.int64), np.zeros(len(k), np.int64)
    for i in range(LEVELS_MAX):  # level i: m bits from pos (a bit per set bit of level i - 1)
        m = np.where(i < L, n, 0)
        if (pos + m > lim).any():
            raise CorruptionError(f"{where}: a LEVELS block's levels run past its blob")
        p = ranges(pos, m)
        ones = ((pay[p >> 3] >> (p & 7).astype(np.uint8)) & 1).astype(np.int64)
        n = np.bincount(np.repeat(np.arange(B), m), weights=ones, minlength=B).astype(np.int64)
        mid += m if i else 0
        pos += m
        ntail = np.where(i == L - 1, n, ntail)
    mid += ntail * wt
    if (pos + ntail * wt > lim).any():
        raise CorruptionError(f"{where}: a LEVELS block's tail runs past its blob")
    b.mid[k] = mid


def _expand_levels(pay: np.ndarray, at: np.ndarray, b: Blocks) -> tuple[np.ndarray, np.ndarray]:
    """LEVELS blocks ``b`` (as parsed: ``sp`` their levels ``L``, ``w2`` their tail's width, ``mid``
    their bits after the first level) whose payloads start at bit ``at`` of ``pay``: ``(e1, x)``, per
    block the set bits of its first level, and, block after block, the values (less the base) at
    those bits, in order: its exceptions as a PATCH block of no low bits stages them. Value k is
    the first level ``i`` whose bit for it is 0 (level ``i`` holds a bit for each value whose bits
    on levels ``0 .. i - 1`` are 1, in order), or, past level ``L - 1``, ``L`` plus its tail (``w2``
    bits). Bits after the first level that are not ``mid`` (or no bit set on the first level) are
    a ``CorruptionError``."""
    cnt, L, wt = b.cnt, b.sp.astype(np.int64), b.w2
    if int((at + cnt + b.mid).max()) > 8 * len(pay) or (at < 0).any():
        raise CorruptionError("payload: a LEVELS block lies outside its blob")
    if native.available()[0]:  # (in C: each level walked by its set bits)
        e1, xoff = np.zeros(len(cnt), np.int64), np.cumsum(cnt) - cnt
        x = np.empty(int(cnt.sum()), np.uint32)  # (C writes the e1 values read back)
        if native.stage_levels(np.ascontiguousarray(pay, dtype=np.uint8), np.ascontiguousarray(at, np.int64),
                               np.ascontiguousarray(cnt, np.int64), L, np.ascontiguousarray(wt, np.int64),
                               np.ascontiguousarray(b.mid, np.int64), e1, xoff, x):
            raise CorruptionError("payload: a LEVELS block's levels disagree with its fields")
        return e1, x[ranges(xoff, e1)]
    bit = lambda pos: ((pay[pos >> 3] >> (pos & 7).astype(np.uint8)) & 1).astype(bool)  # noqa: E731
    n, B = cnt.copy(), len(cnt)  # each block's entries on the level at hand
    start = at.copy()  # where each block's level starts
    levels = []  # per level: (its bits, flat; each block's first entry in them)
    for i in range(LEVELS_MAX):
        n = np.where(i < L, n, 0)
        if (start + n > at + cnt + b.mid).any():  # (before reading them)
            raise CorruptionError("payload: a LEVELS block's levels disagree with its fields")
        first = np.cumsum(n) - n
        bits = bit(ranges(start, n)) if n.any() else np.zeros(0, bool)
        levels.append((bits, first))
        start = start + n
        n = np.bincount(np.repeat(np.arange(B), n), weights=bits, minlength=B).astype(np.int64) if len(bits) else \
            np.zeros(B, np.int64)
        if i == 0:
            e1 = n.copy()
            if (e1 < 1).any():
                raise CorruptionError("payload: a LEVELS block has no value above its base")
        ntail = n if i == 0 else np.where(L == i + 1, n, ntail)  # the values past the last level
    if ((start - at - cnt) + ntail * wt != b.mid).any():
        raise CorruptionError("payload: a LEVELS block's levels disagree with its fields")
    tfirst = np.cumsum(ntail) - ntail
    tail = read_bits(pay, np.repeat(start, ntail) + ranges(np.zeros(B, np.int64), ntail) * np.repeat(wt, ntail),
                     np.repeat(wt, ntail)).astype(np.int64) if ntail.any() else np.zeros(0, np.int64)
    # each first-level set bit's walk down the levels: its index on level i, until a bit is 0
    own = np.repeat(np.arange(B), e1)
    idx = ranges(np.zeros(B, np.int64), e1)  # on level 1
    val = np.ones(len(own), np.int64)
    live = np.ones(len(own), bool)
    for i in range(1, LEVELS_MAX + 1):
        deep = live & (i < L[own])  # still walking, with a level i
        at_end = live & (i == L[own])
        if at_end.any():
            val[at_end] = i + tail[tfirst[own[at_end]] + idx[at_end]]
        live &= deep
        if not live.any():
            break
        bits, first = levels[i]
        rank = np.cumsum(bits) - bits  # set bits before each entry, over all blocks
        walk = np.flatnonzero(live)
        j = first[own[walk]] + idx[walk]
        set_ = bits[j]
        val[walk[~set_]] = i  # a 0 on level i: the value is i
        live[walk[~set_]] = False
        idx[walk[set_]] = (rank[j] - rank[first[own[walk]]])[set_]  # its index on level i + 1
    return e1, val.astype(np.uint32)


def classes_shape(shape: np.ndarray, L: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CLASSES blocks' ``(width, start)`` [K, LEVELS_MAX + 1] from their shapes and levels ``L``:
    class ``c`` (``c < L``: ``w_c``, bits ``4c ..`` of the shape; ``c == L``: the tail, ``wt``, bits
    ``4L ..``; past it: none, width 0) holds the values less the base from ``start[:, c]`` to
    ``start[:, c] + 2^width - 1``."""
    shape, L = np.asarray(shape, np.int64), np.asarray(L, np.int64)
    c = np.arange(LEVELS_MAX + 1)[None, :]
    w = np.where(c < L[:, None], (shape[:, None] >> (4 * c)) & 15, np.where(c == L[:, None], shape[:, None] >> (4 * L[:, None]), 0))
    w = np.minimum(w, 62)  # (a shape past its bits: out of range, refused by parse_fields)
    size = np.where(c <= L[:, None], np.int64(1) << w, 0)
    return w, np.cumsum(size, axis=1) - size


def _classes_before(cl: np.ndarray, shape: np.ndarray, page_of: np.ndarray) -> np.ndarray:
    """Per block, the shape of the CLASSES block (``cl``) before it in its page (0: none): what a
    CLASSES block's shape field is stored against (XOR)."""
    K = len(cl)
    j = np.where(cl, np.arange(K), -1)
    last = np.maximum.accumulate(np.concatenate([[-1], j[:-1]])) if K else j  # the CLASSES block before
    ok = (last >= 0) & (page_of[np.maximum(last, 0)] == page_of)
    return np.where(ok, np.asarray(shape, np.int64)[np.maximum(last, 0)], 0)


def _rank_in(sel: np.ndarray, vstart: np.ndarray, vb: np.ndarray) -> np.ndarray:
    """Each value's rank among the ``sel`` values of its block (blocks' values from ``vstart``)."""
    cs = np.cumsum(sel, dtype=np.int64)
    return cs - 1 - (cs - sel)[vstart][vb]


def classes_residuals(pay: np.ndarray, at: np.ndarray, b: Blocks) -> np.ndarray:
    """CLASSES blocks ``b`` (as parsed: ``sp`` their levels, ``w2`` their shapes, ``mid`` their bits
    after the first level) whose payloads start at bit ``at`` of ``pay``: their values less the base
    (uint64), block after block. Level 0 holds a bit per value (set: past class 0), level ``i`` a bit
    per value whose bits on the levels before are all set, in order (set: past class ``i``); then
    each class's low bits (``w_c`` a value, its values in order), class 0 first, the tail's last.
    ``CorruptionError`` where they are not ``mid`` bits after the first level, lie outside ``pay``,
    or no value is past class 0."""
    at, cnt, L = np.asarray(at, np.int64), b.cnt.astype(np.int64), b.sp.astype(np.int64)
    K, tot = len(cnt), int(cnt.sum())
    if ((at + cnt + b.mid) > 8 * len(pay)).any() or (at < 0).any():
        raise CorruptionError("payload: a CLASSES block lies outside its blob")
    width, start = classes_shape(b.w2, L)
    vb = np.repeat(np.arange(K), cnt)
    vstart = np.cumsum(cnt) - cnt
    vj = np.arange(tot) - vstart[vb]
    cls = read_bits(pay, at[vb] + vj, np.ones(tot, np.int64)).astype(np.int64)  # 1: past class 0
    if (np.bincount(vb, weights=cls, minlength=K) < 1).any():
        raise CorruptionError("payload: a CLASSES block has no value past its first class")
    end = at + cnt + b.mid
    pos = at + cnt
    alive = cls == 1
    for i in range(1, LEVELS_MAX):  # level i: a bit for each value still walking (its class past i - 1)
        sel = alive & (i < L[vb])
        if not sel.any():
            break
        n = np.bincount(vb, weights=sel, minlength=K).astype(np.int64)
        if (pos + n > end).any():
            raise CorruptionError("payload: a CLASSES block's classes disagree with its fields")
        idx = np.flatnonzero(sel)
        more = read_bits(pay, pos[vb[idx]] + _rank_in(sel, vstart, vb)[idx], np.ones(len(idx), np.int64)) == 1
        cls[idx[more]] = i + 1
        alive = np.zeros(tot, bool)
        alive[idx[more]] = True
        pos = pos + n
    r = np.zeros(tot, _U64)
    for c in range(LEVELS_MAX + 1):  # each class's low bits, class 0 first, the tail's last
        sel = cls == c
        if not sel.any():
            continue
        n = np.bincount(vb, weights=sel, minlength=K).astype(np.int64)
        w = width[:, c]
        if (pos + n * w > end).any():
            raise CorruptionError("payload: a CLASSES block's classes disagree with its fields")
        idx = np.flatnonzero(sel)
        k = vb[idx]
        r[idx] = start[k, c].astype(_U64) + read_bits(pay, pos[k] + _rank_in(sel, vstart, vb)[idx] * w[k], w[k])
        pos = pos + n * w
    if (pos != end).any():
        raise CorruptionError("payload: a CLASSES block's classes disagree with its fields")
    return r


def write_bits(nbits: int, at: np.ndarray, v: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``nbits`` bits (bytes, LSB first, zero padded) holding each ``v`` (of ``w <= 64`` bits; the
    fields disjoint) from bit ``at``."""
    out = np.zeros((nbits + 63) // 64 + 1, _U64)
    at, w = np.asarray(at, np.int64), np.asarray(w, np.int64)
    v = np.asarray(v, _U64) & np.where(w >= 64, ~_U64(0), (_U64(1) << np.minimum(w, 63).astype(_U64)) - _U64(1))
    sh = (at & 63).astype(_U64)
    np.bitwise_or.at(out, at >> 6, v << sh)
    spill = (at & 63) + w > 64
    np.bitwise_or.at(out, (at >> 6)[spill] + 1, v[spill] >> (_U64(64) - sh[spill]))
    return out.view(np.uint8)


def _classes_as_patch(pay: np.ndarray, src_bit: np.ndarray, b: Blocks):
    """``(pay, src_bit, b)`` with each CLASSES block of ``b`` made the PATCH block it stages as: ``w_0``
    low bits a value (its value less the base, mod ``2^w_0``), its first level the bitmap, and the
    high parts of the values past class 0 (less 1) its exceptions, written after ``pay``; every
    other block as it was."""
    cl = np.flatnonzero(b.kind == KIND_CLASSES)
    sub = b.take(cl)
    cnt = sub.cnt.astype(np.int64)
    got = native.classes_patch(np.ascontiguousarray(pay, np.uint8), src_bit[cl], cnt, sub.sp, sub.w2, sub.mid) \
        if native.available()[0] else None
    if got is not None:  # in C; a block it refuses: the body below, which names what is wrong
        extra, w2, e, boff = got
        w0 = sub.w2 & 15
    else:
        extra, w0, w2, e, boff = _classes_stream(pay, src_bit[cl], sub)
    b = b.take(np.arange(len(b.kind)))
    b.kind[cl], b.w[cl], b.nv[cl], b.w2[cl], b.e[cl], b.sp[cl], b.mid[cl], b.slope[cl] = KIND_PATCH, w0, cnt, w2, e, 0, 0, 0
    src_bit = np.array(src_bit, np.int64, copy=True)
    src_bit[cl] = 8 * len(pay) + boff
    return np.concatenate([np.asarray(pay, np.uint8), extra]), src_bit, b


def _classes_stream(pay: np.ndarray, at: np.ndarray, sub: Blocks) -> tuple:
    """``_classes_as_patch``'s PATCH blocks in NumPy: ``(stream, w0, w2, e, boff)``."""
    r = classes_residuals(pay, at, sub)
    cnt = sub.cnt.astype(np.int64)
    K = len(cnt)
    vb = np.repeat(np.arange(K), cnt)
    vstart = np.cumsum(cnt) - cnt
    vj = np.arange(len(r)) - vstart[vb]
    w0 = sub.w2 & 15
    hi = r >> w0[vb].astype(_U64)
    isx = hi != 0
    e = np.bincount(vb, weights=isx, minlength=K).astype(np.int64)
    top = np.zeros(K, _U64)
    np.maximum.at(top, vb[isx], hi[isx] - _U64(1))
    w2 = codec.bit_length(top)
    nbits = cnt * w0 + cnt + e * w2
    boff = np.cumsum(nbits) - nbits
    xi = np.flatnonzero(isx)
    at = np.concatenate([boff[vb] + vj * w0[vb], boff[vb] + cnt[vb] * w0[vb] + vj,
                         (boff + cnt * w0 + cnt)[vb[xi]] + _rank_in(isx, vstart, vb)[xi] * w2[vb[xi]]])
    vals = np.concatenate([r, isx.astype(_U64), hi[xi] - _U64(1)])
    wid = np.concatenate([w0[vb], np.ones(len(r), np.int64), w2[vb[xi]]])
    return write_bits(int(nbits.sum()), at, vals, wid), w0, w2, e, boff


def stage_blocks(pay: np.ndarray, src_bit: np.ndarray, b: Blocks, dict_blocks=None):
    """The staged form (docs/DESIGN.md §4) of blocks ``b`` whose payloads start at bit ``src_bit`` of
    ``pay`` (uint8): ``(hdr int64 [K, 3], words int64)``, one zero word at the end. A plain block's
    bits are realigned to a word boundary (format 2's words); a PATCH, RUN or DELTA block gets its aux
    word, then its values and its bitmap (none for DELTA), each from a word boundary, then a PATCH block's exceptions as
    32-bit words (their high parts, ``exception + 1``, or for DELTA SIGNED ``unzigzag(exception + 1)``
    as an int32: one load each on the GPU); a RADIX block gets an aux word of ``AUX_RADIX``, its ``R``
    and its ``g``, then its codes. ``dict_blocks``
    (bool per block; any kind but RADIX): blocks of codes, staged as DICT blocks (a plain one gets an
    aux word of kind ``AUX_DICT`` before its values, a PATCH, RUN or DELTA one ``AUX_CODES`` in its
    own; the caller adds where their dictionary starts to the base)."""
    src_bit = np.asarray(src_bit, dtype=np.int64)
    if (b.kind == KIND_CLASSES).any():  # CLASSES blocks: the PATCH blocks they stage as, after the payload
        pay, src_bit, b = _classes_as_patch(pay, src_bit, b)
    if native.available()[0] and len(b.kind):  # in C, all in one pass; a block it cannot stage: the body below
        K = len(b.kind)
        d = np.zeros(K, np.int64) if dict_blocks is None else dict_blocks
        got = native.stage_blocks(np.ascontiguousarray(pay, dtype=np.uint8), np.stack(
            (b.kind, b.w, b.nv, b.w2, b.e, b.cnt, b.sp, b.mid, src_bit, d)).astype(np.int64, copy=False))
        if got is not None:
            words, meta, off = got
            hdr = np.empty((K, 3), dtype=np.int64)
            hdr[:, 0], hdr[:, 1], hdr[:, 2] = b.base, b.slope, meta
            rd = np.flatnonzero(b.kind == KIND_RADIX)
            if len(rd):  # RADIX: R and g where a bitmap's and exceptions' offsets would be, log2 R's float32 bits
                R, coded = b.w2[rd], d[rd] != 0
                words[off[rd] - 1] = (KIND_RADIX | (R << 8) | (b.e[rd] << 18)).astype(_U64) | \
                    np.where(coded, _U64(AUX_CODES), _U64(0)) | radix_log2_bits(R)
            return hdr, words.view(np.int64)
    b_kind0 = b.kind
    lv = np.flatnonzero(b_kind0 == KIND_LEVELS)
    if len(lv):  # LEVELS blocks: staged as PATCH blocks of no low bits, their first level the bitmap
        e1, lvx = _expand_levels(pay, src_bit[lv], b.take(lv))
        b = b.take(np.arange(len(b.kind)))
        b.kind[lv], b.w[lv], b.nv[lv], b.e[lv], b.w2[lv], b.sp[lv], b.mid[lv] = KIND_PATCH, 0, b.cnt[lv], e1, 0, 0, 0
    ext = b.kind != KIND_PLAIN
    aux = ext if dict_blocks is None else ext | np.asarray(dict_blocks, bool)
    bm = has_bitmap(b.kind)
    vw = codec.words_for(b.nv, b.w)
    bw = np.where(bm, (b.cnt + 63) >> 6, 0)
    ne = np.where((b.kind & 3) == KIND_PATCH, b.e, 0)  # exceptions (a RADIX block's e is its g)
    ew = (ne + 1) >> 1
    tot = aux + vw + bw + ew
    off = np.cumsum(tot) - tot + aux  # each block's word_off: its values
    words = np.zeros(int(tot.sum()) + 1, dtype=_U64)
    vbits = b.nv * b.w
    mbits = bitmap_bits(b.kind, b.cnt, b.nv, b.e, b.sp, b.w2)  # as stored
    K = len(off)
    dense = np.where(b.sp != 0, 0, mbits)
    realign(pay, np.concatenate([src_bit, src_bit + vbits]), np.concatenate([vbits, dense]), words,
            np.concatenate([off, off + vw]))
    sp = np.flatnonzero((b.sp != 0) & bm)
    if len(sp):  # a sparse bitmap: set the bits at its positions (a RUN block's bit 0 too)
        _expand_positions(pay, (src_bit + vbits)[sp], b.take(sp), 2 * (off + vw)[sp], words.view(np.uint32))
    hdr = np.empty((K, 3), dtype=np.int64)
    hdr[:, 0] = b.base
    hdr[:, 1] = b.slope
    hdr[:, 2] = (off << 8) | np.where(aux, AUX_FLAG, 0) | b.w
    words[off[aux & ~ext] - 1] = AUX_DICT
    coded = np.zeros(K, bool) if dict_blocks is None else np.asarray(dict_blocks, bool) & ext
    a = np.flatnonzero(ext)
    if len(a):
        w32 = words.view(np.uint32)
        if len(lv):
            w32[ranges(2 * (off + vw + bw)[lv], b.e[lv])] = lvx
        p = np.flatnonzero((ne > 0) & (b_kind0 != KIND_LEVELS)) if len(lv) else np.flatnonzero(ne > 0)
        if len(p):  # the exceptions: w2-bit (high part - 1) stored, one 32-bit word (high part) staged
            at, e, w2 = (src_bit + vbits + mbits)[p], b.e[p], b.w2[p]
            if int((at + e * w2).max()) > 8 * len(pay) or (at < 0).any():
                raise CorruptionError("payload: a block's exceptions lie outside its blob")
            signed = b.kind[p] == KIND_DELTA_SIGNED  # (the high part is unzigzag(stored + 1), staged as an int32)
            if native.available()[0]:
                if native.unpack_exceptions(np.ascontiguousarray(pay, dtype=np.uint8), at, e, w2, 2 * (off + vw + bw)[p], w32,
                                            signed.astype(np.int64)):
                    raise CorruptionError("payload: a block's exceptions lie outside its blob")
            else:
                i = ranges(np.zeros(len(p), np.int64), e)
                x = read_bits(pay, np.repeat(at, e) + i * np.repeat(w2, e), np.repeat(w2, e))
                w32[np.repeat(2 * (off + vw + bw)[p], e) + i] = (x + _U64(1)).astype(np.uint32)
            sg = p[signed] if not native.available()[0] else p[:0]
            if len(sg):  # DELTA SIGNED, in NumPy
                at = ranges(2 * (off + vw + bw)[sg], b.e[sg])
                w32[at] = unzigzag(w32[at]).astype(np.int32).view(np.uint32)
        if native.available()[0] and (b.cnt[a] <= 128).all():  # in C: kind, offsets, the rank prefixes
            lo, pre_w = np.empty(len(a), _U64), np.zeros(len(a), _U64)
            if native.stage_aux(w32, 2 * (off[a] + vw[a]), b.kind[a].astype(np.int64), b.cnt[a].astype(np.int64),
                                b.e[a].astype(np.int64), b.nv[a].astype(np.int64), vw[a].astype(np.int64),
                                bw[a].astype(np.int64), coded[a].astype(np.int64), lo):
                raise CorruptionError("payload: a PATCH or RUN block's bitmap disagrees with its fields")
        else:
            g = np.arange(4)
            at = 2 * (off[a] + vw[a])[:, None] + g[None, :]
            pc = np.where((g[None, :] < ((b.cnt[a] + 31) >> 5)[:, None]) & bm[a, None],
                          np.bitwise_count(w32[np.minimum(at, len(w32) - 1)]), 0)
            ones = pc.sum(axis=1)
            ka = b.kind[a] & 3
            if (np.where(ka == KIND_PATCH, ones != b.e[a], (ka == KIND_RUN) & ((ones != b.nv[a]) | (w32[at[:, 0]] & 1 == 0)))).any():
                raise CorruptionError("payload: a PATCH or RUN block's bitmap disagrees with its fields")
            pre = np.cumsum(pc, axis=1) - pc  # [n, 4]: set bits before each 32-lane group (<= 96)
            pre_w = (pre.astype(_U64) << (_U64(32) + _U64(8) * g.astype(_U64))[None, :]).sum(axis=1, dtype=_U64)
            lo = (b.kind[a] | ((2 * vw[a]) << 8) | ((2 * (vw[a] + bw[a])) << 18)).astype(_U64)
            lo[coded[a]] |= _U64(AUX_CODES)
        rd = b.kind[a] == KIND_RADIX  # RADIX: R and g where a bitmap's and exceptions' offsets would be,
        R = b.w2[a][rd]  # and float32 log2 R where the rank prefixes would be (the GPU's exp2, DESIGN §4)
        lo[rd] = (KIND_RADIX | (R << 8) | (b.e[a][rd] << 18)).astype(_U64) | np.where(coded[a][rd], _U64(AUX_CODES), _U64(0))
        pre_w[rd] = radix_log2_bits(R)
        words[off[a] - 1] = lo | pre_w
    return hdr, words.view(np.int64)


def check_payload(pay_bit: np.ndarray, bits: np.ndarray, first: np.ndarray, limit_bit: np.ndarray, where: str) -> None:
    """``CorruptionError`` unless each page's (or blob's) payload, from bit ``pay_bit`` and ``bits``
    per block (``first``: the first block of each group), ends by ``limit_bit``."""
    end = pay_bit + np.add.reduceat(bits, first) if len(first) and len(bits) else pay_bit
    if (end > limit_bit).any():
        raise CorruptionError(f"{where}: a blob's payload runs into its fields")


def decode_blobs(buf: np.ndarray, boff: np.ndarray, blen: np.ndarray, count: np.ndarray, block_size: int,
                 dicts: np.ndarray | None = None, dstart: np.ndarray | None = None, dlen: np.ndarray | None = None,
                 where: str = "blobs", tags: np.ndarray | None = None, out: np.ndarray | None = None,
                 dst: np.ndarray | None = None, tables: tuple | None = None) -> np.ndarray:
    """All values (int64) of the blobs ``[boff[s], + blen[s])`` of ``buf`` (uint8) of ``count[s]``
    values each, back to back (or, given ``out`` and ``dst``, blob ``s``'s to ``out[dst[s]:]``,
    returning ``out``: a caller's array, no copy). Where ``dlen[s] > 0`` blob ``s`` holds codes into ``dicts[dstart[s]:]
    [:dlen[s]]`` (a segment dictionary) and gives the entries they index. Where ``tags[s] >= 0``
    blob ``s`` is one block whose tag is ``tags[s]``, not its first byte (``move_tags``). No
    checksum (those are per segment chunk); anything else that is not a blob of format 3 is a
    ``CorruptionError`` naming ``where``, and so is a code outside its dictionary. Where
    ``tags[s] == CONST_TAG`` there is no blob ``s`` but ``count[s]`` copies of the value ``boff[s]``
    (a constant stripe; its dictionary and table not read).

    ``tables``: ``(tab, tbuf, toff, tlen, tcnt, tdstart, tdlen)``, stripe tables (DESIGN §1) each
    decoded just before the blobs that index it: where ``tab[s] >= 0`` blob ``s``'s codes index table
    ``t = tab[s]`` instead, the blob ``[toff[t], + tlen[t])`` of ``tbuf`` of ``tcnt[t]`` entries (itself
    codes into ``dicts[tdstart[t]:][:tdlen[t]]`` where ``tdlen[t] > 0``: a table of codes). In C
    (``native.decode_blobs``) no table is written out: each is decoded into a buffer in the cache
    and looked up there; without C, the tables are decoded first, then the blobs, as two calls.

    In C when built: one pass per blob from its bytes to its values (tags, fields, payload, PATCH /
    RUN, lookup), no staged form (a blob whose tag is given: copied after it first, but a BARE
    LEVELS block, decoded where it lies); else
    ``decode_blob`` per blob (the same values and errors)."""
    boff, blen, count = (np.ascontiguousarray(a, dtype=np.int64).reshape(-1) for a in (boff, blen, count))
    tags = None if tags is None else np.asarray(tags, np.int64).reshape(-1)
    if out is None:
        out, dst = np.empty(int(count.sum()), np.int64), np.cumsum(count) - count
    else:
        dst = np.ascontiguousarray(dst, dtype=np.int64).reshape(-1)
        if out.dtype != np.int64 or dst.shape != count.shape:
            raise ValueError("decode_blobs: an int64 out, and dst [S] inside it")
    if dicts is not None:
        dicts = np.ascontiguousarray(dicts, dtype=np.int64).reshape(-1)
        dstart, dlen = (np.ascontiguousarray(a, dtype=np.int64).reshape(-1) for a in (dstart, dlen))
    if tables is not None:
        tables = (np.ascontiguousarray(tables[0], np.int64).reshape(-1), np.ascontiguousarray(tables[1], np.uint8)) \
            + tuple(np.ascontiguousarray(a, np.int64).reshape(-1) for a in tables[2:])
    if native.available()[0]:  # (it checks every position itself)
        bad, why, *table = native.decode_blobs(np.ascontiguousarray(buf, dtype=np.uint8), boff, blen, count,
                                               dst, block_size, out, dicts, dstart, dlen,
                                               None if tags is None else np.ascontiguousarray(tags, np.int64), tables)
        if bad:
            of = "'s table" if table and table[0] else ""
            raise CorruptionError(f"{where}: blob {bad - 1}{of}: {native.BLOB_ERRORS.get(why, why)}")
        return out
    if tables is not None:
        if dicts is None and (tables[6] != 0).any():
            raise ValueError("decode_blobs: tables of codes (tdlen > 0) need the dictionaries they index (dicts)")
        if len(tables[0]) != len(count) or (len(count) and int(tables[0].max()) >= len(tables[4])):
            raise ValueError("decode_blobs: tables: a table per blob (tab [S], -1 for none), each below T")
    if tables is not None and len(tables[4]):  # the tables first, then the blobs, their codes into them
        which, tbuf, toff, tlen, tcnt, tdstart, tdlen = tables
        coded = tdlen > 0
        nd = 0 if dicts is None else len(dicts)
        tv = decode_blobs(tbuf, toff, tlen, tcnt, block_size, dicts if coded.any() else None,
                          tdstart if coded.any() else None, tdlen if coded.any() else None, f"{where}: tables")
        ts = nd + np.cumsum(tcnt) - tcnt
        own = which >= 0
        dicts = tv if dicts is None else np.concatenate([dicts, tv])
        dstart = np.where(own, ts[np.maximum(which, 0)], 0 if dstart is None else dstart)
        dlen = np.where(own, tcnt[np.maximum(which, 0)], 0 if dlen is None else dlen)
    if len(dst) and ((dst < 0) | (count < 0) | (dst > len(out) - count)).any():
        raise ValueError("decode_blobs: an int64 out, and dst [S] inside it")
    for s in range(len(count)):
        n, at = int(count[s]), int(dst[s])
        if tags is not None and tags[s] == CONST_TAG:
            out[at : at + n] = boff[s]
            continue
        if boff[s] < 0 or blen[s] < 0 or boff[s] > len(buf) - blen[s]:  # (no sum that can wrap)
            raise CorruptionError(f"{where}: blob {s}: {native.BLOB_ERRORS[1]}")
        blob = np.asarray(buf[boff[s] : boff[s] + blen[s]], dtype=np.uint8)
        codes = dicts is not None and dlen[s] > 0
        try:
            if tags is not None and tags[s] >= 0:
                if n > block_size or tags[s] > 255:
                    raise CorruptionError(native.BLOB_ERRORS[11])
                blob = np.concatenate([np.array([tags[s]], np.uint8), blob])
            if codes and not codes_kinds(tag_kind(blob[: -(-n // block_size)])):
                check_tags(blob[: -(-n // block_size)])
                raise CorruptionError(native.BLOB_ERRORS[9])
            v = decode_blob(blob, n, block_size)
            if codes and len(v) and (v.view(_U64) >= _U64(dlen[s])).any():
                raise CorruptionError(native.BLOB_ERRORS[8])
        except CorruptionError as e:
            raise CorruptionError(f"{where}: blob {s}: {e}") from None
        if codes:
            v = dicts[dstart[s] + v]
        out[at : at + n] = v
    return out


def decode_blob(blob: np.ndarray, count: int, block_size: int, tag: int | None = None) -> np.ndarray:
    """All values of one blob of ``count`` values (no checksum: those are per segment chunk);
    ``tag``: a blob of one block whose tag is in its index (``move_tags``; None or negative: in the blob)."""
    if native.available()[0]:
        return decode_blobs(blob, [0], [len(blob)], [count], block_size, where="blob",
                            tags=None if tag is None else [tag])
    blob = np.asarray(blob, dtype=np.uint8)
    if tag is not None and tag >= 0:  # (a negative tag: in the blob, as in decode_blobs)
        if count > block_size or tag > 255:
            raise CorruptionError(f"blob: {native.BLOB_ERRORS[11]}")
        blob = np.concatenate([np.array([tag], np.uint8), blob])
    _, cnt = codec.block_counts(np.array([count]), block_size)
    nb = len(cnt)
    npg = -(-nb // PAGE_BLOCKS)
    if len(blob) < nb + (8 * npg if npg > 1 else 0):
        raise CorruptionError("blob: shorter than its tags")
    tags = blob[:nb].astype(np.int64)
    check_tags(tags, "blob")
    ext = (tag_kind(tags) != KIND_PLAIN).any()
    if ext and block_size > AUX_MAX_BLOCK:  # (the encoder takes extended blocks only up to AUX_MAX_BLOCK)
        raise CorruptionError(f"blob: {native.BLOB_ERRORS[10]}")
    page_of = np.arange(nb) // PAGE_BLOCKS
    if npg > 1:
        anc = np.frombuffer(blob[nb : nb + 8 * npg].tobytes(), "<u4").reshape(-1, 2).astype(np.int64)
        pay = nb + 8 * npg
        fs, fe = anc[:, 0], np.append(anc[1:, 0], len(blob))
        if fs[0] < pay or (fe < fs).any():
            raise CorruptionError("blob: its anchors disagree with its tags")
        limit = 8 * fs[0]
    elif ext:  # one page with PATCH / RUN blocks: its fields, then its payload
        fs = np.array([nb])
        fe = fields_end(blob, fs, np.array([len(blob)]), np.array([int(fields_per_block(tags).sum())]), "blob")
        pay, limit = int(fe[0]), 8 * len(blob)
    else:
        pay = nb
        fs = np.array([pay + ((int((cnt * (tags & 0x7F)).sum()) + 7) >> 3)])
        fe, limit = np.array([len(blob)]), 8 * int(fs[0])
        if fs[0] > len(blob):
            raise CorruptionError("blob: shorter than its payload")
    b = parse_fields(blob, fs, fe, tags, cnt, page_of, "blob")
    if is_bare(tags).any():  # (one block, of one page: its payload from ``pay`` to the blob's end)
        if nb != 1:
            raise CorruptionError("blob: a BARE LEVELS block that is not its blob's one block")
        bare_mids(blob, np.array([8 * pay]), b, np.array([limit]), "blob")
    bits = b.bits()
    cb = np.cumsum(bits) - bits
    check_payload(np.array([8 * pay]), bits, np.array([0]), np.array([limit]), "blob")
    if npg > 1 and (anc[:, 1] != cb[::PAGE_BLOCKS]).any():
        raise CorruptionError("blob: its anchors disagree with its tags")
    hdr, words = stage_blocks(blob, 8 * pay + cb, b)
    return codec.decode_blocks(hdr, words, cnt)
