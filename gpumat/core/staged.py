"""The staged batch: what the host hands to the device for one batch and one tenant.

This is the contract between ``gpumat.host`` (the planner fills it with NumPy arrays) and
``gpumat.kernels`` (which read it, host or device resident); neither imports the other.

See docs/DESIGN.md §4. Everything is int64 and packed into ONE flat buffer, so a batch crosses
the bus in a single host-to-device copy (from pinned memory, ``non_blocking``), and the device
side takes views into it. Only compressed bytes travel: block headers and packed words, never
decoded values (the tails are the only plain values, and they are what the example carried).

Shapes (B examples, K staged blocks, T tiles):

- per column ``c``: ``hdr[c]`` ``[K, 3]`` (base, slope, meta), ``words[c]`` ``[W_c + 1]``,
  ``tail_values[c]`` ``[sum of the batch's tail lengths]`` (int64, int32 columns sign-extended),
  and ``dicts[c]`` ``[D_c]`` only for a column with DICT blocks (their dictionaries, back to back)
- tiles: ``tile_block``, ``tile_lo``, ``tile_cnt``, ``tile_out``, ``tile_ex`` ``[T]``
- examples: ``offsets`` ``[B + 1]``, ``hist_len``, ``tail_src``, ``tail_len``, ``request_ts`` ``[B]``
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from gpumat.core.errors import GpumatError, SchemaError

if TYPE_CHECKING:  # torch is imported only where a batch is packed or moved
    import torch

EXAMPLE_FIELDS = ("offsets", "hist_len", "tail_src", "tail_len", "request_ts")
TILE_FIELDS = ("tile_block", "tile_lo", "tile_cnt", "tile_out", "tile_ex")
COLUMN_PARTS = ("hdr", "words", "tail_values")  # the arrays of a staged column, in packing order
# Every array starts at a multiple of PACK_ALIGN int64 words (128 bytes) of the packed buffer.
# Triton specializes each pointer argument on 16-byte alignment: views at arbitrary word offsets
# would give each batch a new alignment pattern, hence a new compilation of the kernels.
PACK_ALIGN = 16
# After each column's words, WORDS_SLACK int64 words of the packed buffer (zeros), so that the
# history kernel may load values without a mask (kernels/triton_decode_gather.py, its SLACK path,
# which the launcher takes where a tensor's storage has a chunk's room after the words): on the
# GPU a chunk is at most 128 positions, so a tile's dead lanes (past its count) address at most
# 127 positions past its last live value, 64 bits each at most: under 128 words past the column's
# words (a review's guard pages found 126 the worst); 144, a multiple of PACK_ALIGN, with a margin.
WORDS_SLACK = 144

# A staged block's ``meta`` (docs/DESIGN.md §4): ``word_off << 8 | AUX_FLAG? | w``. Widths are 0..64
# (``WIDTH_MASK``); ``AUX_FLAG`` says the block has an auxiliary word at ``words[word_off - 1]``:
# low 32 bits ``kind | bm << 8 | ex << 18``, high 32 bits the bitmap's rank prefix per 32-lane group
# (byte g: the set bits of bitmap words 0 .. g - 1), ``bm`` and ``ex`` the 32-bit word offsets of
# the bitmap and of a PATCH block's exceptions (one 32-bit word each, the high part ``r >> w`` of
# the residual) from word ``2 * word_off``. ``kind & 3``: 1 PATCH, 2 RUN, 3 DICT (0: plain). A DICT
# block (the other bits of its aux word are 0) is a plain block whose value line indexes its
# column's ``dicts``: ``i`` = the low 32 bits of ``base + slope * k + bits`` (its code plus where its
# dictionary starts in ``dicts``, which the host adds to its base), value = ``dicts[min(i, D - 1)]``
# (the kernels' clamp is the definition's). ``kind & AUX_DELTA`` on a plain or PATCH block (kind 4
# or 5; ignored on RUN and DICT): its offsets from the line (bits, plus a PATCH exception) are
# differences, so value k is the line at k plus their sum over positions ``0 .. k``. ``kind &
# AUX_SIGNED`` on a DELTA PATCH block (kind 13; ignored on every other kind): its exceptions' 32-bit
# words are signed (two's complement, sign-extended before the shift), so a step may go back: a
# pack's timestamps (host/pages.py), which jump back where one history ends and the next begins.
# ``kind == AUX_RADIX`` (the aux word's low 5 bits exactly 16: not with DELTA, not on PATCH, RUN or
# DICT): a RADIX block, ``g`` digits ``0 .. R - 1`` per ``w``-bit code (``R`` in the ``bm`` field,
# ``g`` in ``ex``, float32 ``log2 R`` in the high 32 bits for the Triton kernel's digits; the stager
# gives ``R >= 3``, ``g >= 2``, ``R^g <= 2^w``, ``w <= 16`` from the format's table): value k is
# ``base + slope * k`` plus digit ``k mod g`` of code ``k div g`` (``code div R^(k mod g) mod R``).
# Small alphabets: 5 ratings take 3 to 7 bits (2.33 a value), 3 flags 5 to 8 bits (1.6).
# ``kind & AUX_CODES`` (the stager sets it on a PATCH or RUN block, kind 33 or 34, and on a DELTA
# block, 36: plain, 37: PATCH, 45: SIGNED): a DICT block decoded as that kind: its values are indices into the column's
# ``dicts``, looked up as a DICT block's value line is (a segment dictionary's codes that repeat: a
# day's timestamps; a stripe table's codes, which rise by 1 along a run of a user's literals or a
# copy of them, as DELTA blocks: host/pages.py).
WIDTH_MASK = 0x7F
AUX_FLAG = 0x80
AUX_PATCH, AUX_RUN, AUX_DICT = 1, 2, 3
AUX_DELTA = 4  # a flag on kind 0 (plain) or 1 (PATCH)
AUX_SIGNED = 8  # a flag on kind 5 (DELTA PATCH): signed exceptions
AUX_RADIX = 16  # a kind of its own: digits of a small alphabet, several a code
AUX_CODES = 32  # a flag on kind 1 (PATCH), 2 (RUN) or a DELTA kind (4, 5, 13): its values are dictionary codes
RADIX_MAX_W = 16  # a RADIX block's codes: at most 16 bits (the kernels divide them exactly in fp32)
AUX_KINDS_ALL = 31  # ``StagedBatch.aux``'s bits: 1 PATCH, 2 RUN, 4 DICT, 8 DELTA, 16 RADIX
AUX_MAX_BLOCK = 128  # the four prefix bytes cover blocks of up to 4 x 32 values
AUX_MAX_W2 = 31  # the stored exceptions' width: their high parts (exception + 1) fit a 32-bit word


def packed_span(name: str, shape) -> int:
    """int64 words array ``name`` of ``shape`` takes in a packed buffer: its words rounded up to
    ``PACK_ALIGN``, and a column's words ``WORDS_SLACK`` more."""
    return -(-int(np.prod(shape, dtype=np.int64)) // PACK_ALIGN) * PACK_ALIGN + WORDS_SLACK * name.endswith(".words")


def pack_into(s: "StagedBatch", flat: np.ndarray, layout: dict) -> None:
    """``s``'s arrays into ``flat`` (int64, NumPy) at ``layout``'s offsets, each column's slack
    after its words zeroed (``StagedBatch.pack``; the worker processes' shared memory too). Words
    two columns share (a borrowed column's, its lender's) are written once (``StagedBatch._layout``)."""
    done = set()  # the places of words written (an empty array may share its place with the next)
    for name, a in s.arrays():
        off, shape = layout[name]
        if name.endswith(".words"):
            if off in done:
                continue
            done.add(off)
        n = int(np.prod(shape, dtype=np.int64))
        flat[off : off + n] = np.asarray(a, dtype=np.int64).reshape(-1)
        if name.endswith(".words"):
            flat[off + n : off + packed_span(name, shape)] = 0


def column_array_names(column: str, dicts: bool = False) -> tuple[str, ...]:
    """The names of ``column``'s arrays in a packed batch's layout, in packing order (``dicts``:
    the column has DICT blocks, so a dictionary array too).

    >>> column_array_names("item_id")
    ('item_id.hdr', 'item_id.words', 'item_id.tail_values')
    >>> column_array_names("item_id", dicts=True)[-1]
    'item_id.dicts'
    """
    return tuple(f"{column}.{part}" for part in COLUMN_PARTS + (("dicts",) if dicts else ()))


def leakage_mode(check_leakage) -> str | None:
    """The leakage check a ``check_leakage`` argument asks for (SPEC §2): ``"strict"`` (``True``, the
    default: every materialized ``ts < request_ts``), ``"inclusive"`` (``ts <= request_ts``) or
    ``None`` (``False``: no check). Anything else is a ``SchemaError``.

    >>> leakage_mode(True), leakage_mode("inclusive"), leakage_mode(False)
    ('strict', 'inclusive', None)
    """
    if isinstance(check_leakage, (bool, np.bool_)):
        return "strict" if check_leakage else None
    if check_leakage is None:  # what this function returns for "no check"
        return None
    if isinstance(check_leakage, str) and check_leakage in ("strict", "inclusive"):
        return check_leakage
    raise SchemaError(f"check_leakage must be True, 'strict', 'inclusive' or False; got {check_leakage!r}")


@dataclass
class StagedColumn:
    """One column of a staged batch. ``project`` is False for ``ts`` staged only for the leakage check."""

    name: str
    dtype: str  # "int64" | "int32": the dtype of the materialized output
    hdr: object  # [K, 3] int64 (np.ndarray on the host, torch.Tensor on the device)
    words: object  # [W + 1] int64
    tail_values: object  # [sum tails] int64
    project: bool = True
    # int64 [D]: the dictionaries of the column's DICT blocks, back to back (each block's base
    # counts where its own starts); None when the column stages no DICT block
    dicts: object = None
    # what ``dicts`` holds, when its maker knows (the tier's reader: one int per segment dictionary,
    # naming it, in order): equal keys, equal ``dicts[:dict_kept]``; a consumer may keep a device
    # copy of those and copy only the rest (``gpumat.Materializer``; the rest: the stripe tables of
    # the batch's users, DESIGN §1). None: unknown.
    dict_keys: tuple | None = None
    # the entries at the start of ``dicts`` that ``dict_keys`` names (None: all of them)
    dict_kept: int | None = None

    def parts(self) -> tuple:
        """The column's arrays: ``column_array_names`` order, then its dictionaries (which
        ``StagedBatch.arrays`` packs after every column's other arrays)."""
        return (self.hdr, self.words, self.tail_values) + (() if self.dicts is None else (self.dicts,))


@dataclass
class StagedBatch:
    """The descriptor arrays and compressed blocks of one (batch, tenant), host or device resident."""

    block_size: int
    columns: dict[str, StagedColumn]
    offsets: object
    hist_len: object
    tail_src: object
    tail_len: object
    request_ts: object
    tile_block: object
    tile_lo: object
    tile_cnt: object
    tile_out: object
    tile_ex: object
    # True / "strict": flag ts >= request_ts; "inclusive": flag ts > request_ts; False / None: no check
    check_leakage: bool | str | None = True
    nbytes_read: int = 0  # bytes read from storage to build this batch (projection pushdown metric)
    # The packed buffer the arrays are views of (``from_flat``), if any: a stream that reads the
    # batch must keep it alive (``packed.record_stream``).
    packed: object = field(default=None, repr=False)
    # Sizes the host knows when it builds a batch, carried to its device copy so that no backend
    # reads them back from the device (a host sync per batch): ``offsets[-1]`` and ``sum(tile_cnt)``.
    known_total: int | None = field(default=None, repr=False)
    known_history: int | None = field(default=None, repr=False)
    # What the kernels specialize their launch on, again known on the host for free: the longest
    # tail and each column's widest block (``max(meta & WIDTH_MASK)``; > 32 bits needs the 3-word path).
    known_max_tail: int | None = field(default=None, repr=False)
    known_max_width: dict[str, int] | None = field(default=None, repr=False)
    # and the kinds of aux blocks a column stages (``aux``; the kernels' PATCH and RUN paths)
    known_aux: dict[str, int] | None = field(default=None, repr=False)
    # and, per column whose blocks are an earlier column's (borrowed codes), that column (``codes_of``)
    known_codes_of: dict[str, str] | None = field(default=None, repr=False)

    @property
    def batch_size(self) -> int:
        return len(self.offsets) - 1

    @property
    def total(self) -> int:
        """Events in the batch, ``offsets[-1]`` (never read from a device when the host built the batch)."""
        return self.known_total if self.known_total is not None else int(self.offsets[-1])

    @property
    def history_events(self) -> int:
        """Events taken from the tier, ``sum(tile_cnt)``; the rest of ``total`` comes from tails."""
        if self.known_history is not None:
            return self.known_history
        return int(self.tile_cnt.sum()) if self.num_tiles else 0

    @property
    def max_tail(self) -> int:
        """The longest tail of the batch (never read from a device when the host built the batch)."""
        if self.known_max_tail is not None:
            return self.known_max_tail
        return int(self.tail_len.max()) if self.batch_size > 0 else 0

    def max_width(self, column: str) -> int:
        """The widest staged block of ``column``, in bits (64 when unknown on a device batch:
        the kernels then take the path that is right for every width)."""
        if self.known_max_width is not None and column in self.known_max_width:
            return self.known_max_width[column]
        hdr = self.columns[column].hdr
        if isinstance(hdr, np.ndarray):
            return int((hdr[:, 2] & WIDTH_MASK).max()) if len(hdr) else 0
        return 64

    def aux(self, column: str) -> int:
        """The kinds of aux blocks ``column`` stages: bit 0 PATCH, bit 1 RUN, bit 2 DICT, bit 3 DELTA,
        bit 4 RADIX (every kind when unknown on a device batch: the kernels then take the path that is right for
        every block; DICT only where the column has a non-empty dictionary array: a packed layout
        that always carries one, as DALI's, stages an empty one for a column without DICT blocks)."""
        if self.known_aux is not None and column in self.known_aux:
            return self.known_aux[column]
        col = self.columns[column]
        d = col.dicts
        has_dicts = d is not None and int(d.numel() if hasattr(d, "numel") else np.asarray(d).size) > 0
        if isinstance(col.hdr, np.ndarray):
            meta = col.hdr[:, 2] if len(col.hdr) else col.hdr[:0, 0]
            words = np.asarray(col.words, np.int64)
            a = (meta[(meta & AUX_FLAG) != 0] >> 8) - 1
            a = a[(a >= 0) & (a < words.size)]  # (a corrupt word_off: decoded as plain by the kernels' masks)
            aw = words[a] & 63 if len(a) else a
            kinds = aw & 3
            return int((kinds == AUX_PATCH).any()) | (int((kinds == AUX_RUN).any()) << 1) | \
                (int(is_dict_kind(aw).any()) << 2) | (int(((aw & AUX_DELTA) != 0).any()) << 3) | \
                (int(((aw & 31) == AUX_RADIX).any()) << 4)
        return AUX_KINDS_ALL if has_dicts else AUX_KINDS_ALL & ~4

    def codes_lent(self) -> dict[str, str]:
        """``{column: codes_of(column)}`` for every column that has one."""
        return {name: lender for name in self.columns if (lender := self.codes_of(name)) is not None}

    def codes_of(self, column: str) -> str | None:
        """The earlier column whose staged blocks ``column``'s are, word for word (the same words
        array, the same slopes and ``meta``), its headers' bases aside: a borrowed column and its
        lender, or two borrowers of one lender (DESIGN §1 "Borrowed codes"; host/reader.py stages
        their words once). Their values before a dictionary lookup then differ by the bases alone,
        so the kernels decode the blocks once for both. None where there is none, or on a device
        batch that was not told (``known_codes_of``)."""
        if self.known_codes_of is not None:
            return self.known_codes_of.get(column)
        col = self.columns[column]
        if not isinstance(col.hdr, np.ndarray):
            return None
        for name, other in self.columns.items():
            if name == column:
                return None
            if other.words is col.words and isinstance(other.hdr, np.ndarray) and other.hdr.shape == col.hdr.shape \
                    and np.array_equal(other.hdr[:, 1:], col.hdr[:, 1:]):
                return name
        return None

    @property
    def inclusive(self) -> bool:
        """The leakage check accepts ``ts == request_ts`` (``check_leakage="inclusive"``)."""
        return leakage_mode(self.check_leakage) == "inclusive"

    @property
    def num_tiles(self) -> int:
        return len(self.tile_block)

    def passes(self):
        """``(name, column, check)`` for every column a backend must run over, in staged order.

        ``check``: this pass also flags ``ts >= request_ts`` (``ts > request_ts`` when
        ``inclusive``; the leakage check rides on the ``ts`` column). A column that is neither
        projected nor checked needs no pass.
        """
        checking = leakage_mode(self.check_leakage) is not None
        for name, col in self.columns.items():
            check = checking and name == "ts"
            if col.project or check:
                yield name, col, check

    def arrays(self):
        """``(name, array)`` for every array of the batch, in packing order: the dictionaries last,
        so that a consumer that holds them already copies only the packed buffer's prefix
        (``dicts_offset``)."""
        for f in EXAMPLE_FIELDS + TILE_FIELDS:
            yield f, getattr(self, f)
        for name, col in self.columns.items():
            yield from zip(column_array_names(name), col.parts()[:3])
        for name, col in self.columns.items():
            if col.dicts is not None:
                yield f"{name}.dicts", col.dicts

    @staticmethod
    def dicts_offset(layout) -> int:
        """Where the dictionaries start in a packed buffer laid out by ``pack`` (its length if none)."""
        at = [off for name, (off, _) in layout.items() if name.endswith(".dicts")]
        return min(at) if at else max((off + packed_span(name, s) for name, (off, s) in layout.items()), default=0)

    def staged_bytes(self) -> int:
        """Bytes that cross the bus for this batch (all descriptors, headers, packed words, tails),
        not counting the alignment padding of ``pack`` (at most 15 words per array) nor the room
        after each column's words (``WORDS_SLACK``); words two columns share, once."""
        return sum(int(a.numel() if hasattr(a, "numel") else np.asarray(a).size) * 8 for _, a in self._unique_arrays())

    def _unique_arrays(self):
        """``arrays()``, but a column's words that an earlier column's words are (the same object: a
        borrowed column's and its lender's, host/reader.py ``read_blocks_many``) only once."""
        seen = {}  # (each array held: an id is unique only while its object lives)
        for name, a in self.arrays():
            if name.endswith(".words"):
                if id(a) in seen:
                    continue
                seen[id(a)] = a
            yield name, a

    def _layout(self) -> tuple[dict[str, tuple[int, tuple[int, ...]]], int]:
        """``name -> (offset, shape)`` of every array in the packed buffer, and the buffer's length;
        words two columns share (the same object) have one place, both names pointing at it."""
        layout: dict[str, tuple[int, tuple[int, ...]]] = {}
        total, seen = 0, {}
        for name, a in self.arrays():
            shape = tuple(a.shape)
            if name.endswith(".words") and id(a) in seen:
                layout[name] = seen[id(a)][0]
                continue
            layout[name] = (total, shape)
            if name.endswith(".words"):
                seen[id(a)] = (layout[name], a)  # (held: an id is unique only while its object lives)
            total += packed_span(name, shape)
        return layout, total

    def packed_numel(self) -> int:
        """int64 words of the buffer ``pack`` fills (arrays plus alignment padding)."""
        return self._layout()[1]

    def pack(self, out: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, tuple[int, tuple[int, ...]]]]:
        """Pack every array into one flat int64 CPU tensor, with ``WORDS_SLACK`` zeros after each
        column's words (``out`` if given and large enough, e.g. a
        reusable pinned buffer; size it with ``packed_numel()``). Returns the buffer and the layout
        ``name -> (offset, shape)``; every offset is a multiple of ``PACK_ALIGN`` words."""
        import torch  # only here: the planner builds staged batches without torch

        self.check_tiles()
        layout, total = self._layout()
        if out is None or out.numel() < total:
            out = torch.empty(total, dtype=torch.int64)
        pack_into(self, out[:total].numpy(), layout)
        return out[:total], layout

    def check_tiles(self) -> None:
        """Every tile of a host batch inside one staged block (``0 <= tile_lo``, ``tile_lo + tile_cnt
        <= block_size``, ``0 <= tile_block < K``) and one example; else a ``GpumatError`` naming the
        first bad tile. ``pack`` and the workers' packing check, so a batch crosses the bus only so: the kernels trust the
        tiles (their own checks cover what comes from storage, the block headers, and the outputs'
        ranges), which the host builds, and checking them on the device would cost every batch
        instructions. Only a NumPy batch is checked (a device one would have to be read back)."""
        arrays = (self.tile_block, self.tile_lo, self.tile_cnt, self.tile_ex, self.offsets)
        if not all(isinstance(a, np.ndarray) for a in arrays) or not len(self.tile_block) or not self.columns:
            return  # (a batch that stages no column reads no block)
        K = min(len(col.hdr) for col in self.columns.values())
        blk, lo, cnt, ex = (np.asarray(a, np.int64) for a in arrays[:4])
        bad = (blk < 0) | (blk >= K) | (lo < 0) | (cnt < 0) | (cnt > int(self.block_size) - lo) | (ex < 0) \
            | (ex >= len(self.offsets) - 1)
        if bad.any():
            t = int(np.flatnonzero(bad)[0])
            raise GpumatError(f"staged batch: tile {t} (block {int(blk[t])} of {K}, values {int(lo[t])} + "
                              f"{int(cnt[t])} of {self.block_size}, example {int(ex[t])} of {len(self.offsets) - 1}) "
                              "is outside the batch's blocks or examples")

    def to(self, device, non_blocking: bool = False, buffer: torch.Tensor | None = None) -> "StagedBatch":
        """A copy whose arrays are torch tensors on ``device``: one packed copy, views on the device.

        ``buffer``: an optional reusable (pinned) host buffer to pack into.
        """
        flat, layout = self.pack(buffer)
        dev_flat = flat.to(device, non_blocking=non_blocking)
        return self.from_flat(dev_flat, layout)

    def from_flat(self, flat: torch.Tensor, layout, dicts: dict | None = None) -> "StagedBatch":
        """Rebuild this batch's structure over a packed buffer (on any device) laid out by ``pack``.
        ``dicts``: ``{column: array}`` dictionaries held elsewhere (the buffer need not hold them)."""
        dicts = dicts or {}

        def view(name):
            off, shape = layout[name]
            n = int(np.prod(shape)) if shape else 1
            return flat[off : off + n].view(shape)

        # A batch the host built (NumPy arrays) knows its sizes for free; a template or a device
        # batch carries only what it was told.
        host_built = isinstance(self.offsets, np.ndarray) and self.offsets.size > 0
        known_total = self.known_total if self.known_total is not None or not host_built else self.total
        known_history = self.known_history if self.known_history is not None or not host_built else self.history_events
        known_max_tail = self.known_max_tail if self.known_max_tail is not None or not host_built else self.max_tail
        known_max_width = self.known_max_width
        if known_max_width is None and host_built:
            known_max_width = {name: self.max_width(name) for name in self.columns}
        known_aux = self.known_aux
        if known_aux is None and host_built:
            known_aux = {name: self.aux(name) for name in self.columns}
        known_codes_of = self.known_codes_of
        if known_codes_of is None and host_built:
            known_codes_of = self.codes_lent()
        cols = {
            name: StagedColumn(name, c.dtype, *(view(a) for a in column_array_names(name)), c.project,
                               dicts[name] if name in dicts else view(f"{name}.dicts") if c.dicts is not None else None,
                               c.dict_keys, c.dict_kept)
            for name, c in self.columns.items()
        }
        return StagedBatch(
            self.block_size,
            cols,
            *(view(f) for f in EXAMPLE_FIELDS),
            *(view(f) for f in TILE_FIELDS),
            check_leakage=self.check_leakage,
            nbytes_read=self.nbytes_read,
            packed=flat,
            known_total=known_total,
            known_history=known_history,
            known_max_tail=known_max_tail,
            known_max_width=known_max_width,
            known_aux=known_aux,
            known_codes_of=known_codes_of,
        )


_U64 = np.uint64


def _bits_u64(wu: np.ndarray, bit: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Bits ``[bit, bit + w)`` of the little-endian uint64 stream ``wu`` (``w`` in 0..64), reading 0
    past its end (a ``w = 0`` block may sit at the very end; the kernels mask the same loads)."""
    n = wu.size
    q = bit >> 6
    s = (bit & 63).astype(_U64)
    lo = np.where((q >= 0) & (q < n), wu[np.clip(q, 0, max(n - 1, 0))], _U64(0)) if n else np.zeros(q.shape, _U64)
    hi = np.where((q + 1 >= 0) & (q + 1 < n), wu[np.clip(q + 1, 0, max(n - 1, 0))], _U64(0)) if n else lo
    r = (lo >> s) | np.where(s == 0, _U64(0), hi << ((_U64(64) - s) & _U64(63)))
    mask = np.where(w >= 64, ~_U64(0), (_U64(1) << (np.asarray(w) & 63).astype(_U64)) - _U64(1))
    return r & mask


def _ranges_from0(n: np.ndarray) -> np.ndarray:
    """``0 .. n[i] - 1`` for each i, back to back."""
    return np.arange(int(n.sum()), dtype=np.int64) - np.repeat(np.cumsum(n) - n, n)


def decode_values(hdr, words, block, k, dicts=None, lookup: bool = True) -> np.ndarray:
    """The staged contract's definition (docs/DESIGN.md §4): value ``k[i]`` of staged block
    ``block[i]``, int64 with the shape of ``k``, by the lane formula every decoder implements.

    A block of width ``w`` at ``word_off``: ``base + slope * k + bits(64 word_off + k w, w)``
    (uint64, wrapping). With ``AUX_FLAG``, its aux word ``A = words[word_off - 1]`` and the bitmap
    (32-bit words from ``2 word_off + bm``): ``rank(k)`` = ``prefix[k >> 5]`` + the set bits of
    bitmap word ``k >> 5`` below bit ``k & 31``, ``set(k)`` = bit ``k``.

    - RUN: the run-start bitmap: ``idx = rank(k) + set(k) - 1`` replaces ``k`` in the formula (the
      block's line and bits are its runs' values).
    - PATCH: ``+ X[rank k] << w`` where ``set(k)``, ``X`` the exceptions' high parts, 32-bit words
      from ``2 word_off + ex``.

    - DELTA (``kind & AUX_DELTA`` with kind 0 or 1): the offsets from the line (``bits``, plus a
      PATCH block's exception) are differences: value k is ``base + slope * k`` plus their sum over
      positions ``0 .. k`` (a prefix sum; the encoder stores 0 at position 0). With ``AUX_SIGNED``
      too (a DELTA PATCH block), ``X`` is a signed 32-bit word: ``+ int32(X) << w``.
    - RADIX (``kind == AUX_RADIX``, ``R`` and ``g`` in the ``bm`` and ``ex`` fields): ``bits`` are
      read at ``k div g`` (a code of ``g`` digits) and replaced by digit ``k mod g`` of it,
      ``bits div R^(k mod g) mod R``.
    - DICT (kind 3, or a PATCH, RUN or DELTA block with ``AUX_CODES``, decoded as that kind first): that
      value's low 32 bits ``i`` index the column's dictionaries (the block's code plus where its
      dictionary starts: the stager adds that to the base): ``dicts[min(i, D - 1)]`` (0 for an
      empty ``dicts``).

    ``hdr``: int64 ``[K, 3]`` (base, slope, meta); ``words``, ``dicts``: int64. Reads past
    ``words`` give 0. ``lookup=False``: a DICT block's index, not its value (host decoders that
    look the indices up afterwards).

    >>> h = np.array([[10, 0, (1 << 8) | AUX_FLAG | 1]])  # RUN, run values 10 + (0, 1): bitmap 0b101
    >>> aux = AUX_RUN | (2 << 8) | (4 << 18)  # bitmap at 32-bit word 2 (after the values' 64-bit word)
    >>> w = np.array([aux | (0 << 32), 0b10, 0b101], dtype=np.int64)
    >>> decode_values(h, w, np.zeros(4, np.int64), np.arange(4)).tolist()
    [10, 10, 11, 11]
    >>> h = np.array([[100, 3, (1 << 8) | AUX_FLAG | 2]])  # DELTA: the line 100 + 3 k plus the sums of 0, 1, 2, 3
    >>> decode_values(h, np.array([AUX_DELTA, 0b11100100, 0]), np.zeros(4, np.int64), np.arange(4)).tolist()
    [100, 104, 109, 115]
    >>> aux = AUX_PATCH | AUX_DELTA | AUX_SIGNED | (2 << 8) | (3 << 18)  # an exception of -1 at k = 2: a step back
    >>> w = np.array([aux, 0b10010100, 4 | (0xFFFFFFFF << 32) - (1 << 64)], dtype=np.int64)
    >>> h = np.array([[100, 0, (1 << 8) | AUX_FLAG | 2]])  # DELTA PATCH, signed: offsets 0, 1, 1 - 4, 2
    >>> decode_values(h, w, np.zeros(4, np.int64), np.arange(4)).tolist()
    [100, 101, 98, 100]
    >>> h = np.array([[10, 0, (1 << 8) | AUX_FLAG | 7]])  # RADIX: digits 1, 4, 0 | 3, 2 of 5, in 7-bit codes
    >>> w = np.array([AUX_RADIX | (5 << 8) | (3 << 18), (1 + 4 * 5) | (3 + 2 * 5) << 7], dtype=np.int64)
    >>> decode_values(h, w, np.zeros(5, np.int64), np.arange(5)).tolist()
    [11, 14, 10, 13, 12]
    >>> h = np.array([[1 + 2, 0, (1 << 8) | AUX_FLAG | 1]])  # DICT: codes 1 + (0, 1), its dictionary from 2
    >>> decode_values(h, np.array([AUX_DICT, 0b10, 0]), np.zeros(2, np.int64), np.arange(2),
    ...               dicts=np.array([7, 7, -5, 40, 900])).tolist()
    [40, 900]
    """
    return _decode_values(hdr, words, block, k, dicts, lookup, True)


def _decode_values(hdr, words, block, k, dicts, lookup: bool, scan: bool) -> np.ndarray:
    """``decode_values``; ``scan=False``: a DELTA block's offset at ``k`` (bits plus exception), not
    their prefix sum (the definition's inner step)."""
    hdr = np.asarray(hdr, dtype=np.int64).reshape(-1, 3)
    wu = np.ascontiguousarray(words, dtype=np.int64).reshape(-1).view(_U64)
    block = np.asarray(block, dtype=np.int64)
    k = np.asarray(k, dtype=np.int64)
    if block.size == 0:
        return np.zeros(k.shape, dtype=np.int64)
    base = hdr[block, 0].view(_U64)
    slope = hdr[block, 1].view(_U64)
    meta = hdr[block, 2]
    w = meta & WIDTH_MASK
    off = meta >> 8
    idx = k.copy()
    patch = np.zeros(k.shape, _U64)
    a = np.flatnonzero((meta & AUX_FLAG).reshape(-1))
    if a.size:
        n32 = 2 * wu.size
        w32 = wu.view(np.uint32)
        kf, of = k.reshape(-1)[a], off.reshape(-1)[a]
        aw = np.where((of >= 1) & (of <= wu.size), wu[np.clip(of - 1, 0, max(wu.size - 1, 0))], _U64(0)) \
            if wu.size else np.zeros(a.size, _U64)
        kind = (aw & _U64(3)).astype(np.int64)
        bm = ((aw >> _U64(8)) & _U64(1023)).astype(np.int64)
        ex = ((aw >> _U64(18)) & _U64(1023)).astype(np.int64)
        g, s = kf >> 5, (kf & 31).astype(np.uint32)
        at = 2 * of + bm + g
        bmw = np.where((at >= 0) & (at < n32), w32[np.clip(at, 0, max(n32 - 1, 0))], np.uint32(0)) if n32 else s * 0
        pre = ((aw >> (_U64(32) + (8 * (g & 3)).astype(_U64))) & _U64(255)).astype(np.int64)
        rank = pre + np.bitwise_count(bmw & ((np.uint32(1) << s) - np.uint32(1))).astype(np.int64)
        hit = ((bmw >> s) & np.uint32(1)).astype(np.int64)
        run = kind == AUX_RUN
        idx.reshape(-1)[a[run]] = (rank + hit - 1)[run]
        pt = np.flatnonzero((kind == AUX_PATCH) & (hit == 1))
        if pt.size:
            at = 2 * of[pt] + ex[pt] + rank[pt]
            x = np.where((at >= 0) & (at < n32), w32[np.clip(at, 0, n32 - 1)], np.uint32(0))
            sgn = (aw[pt] & _U64(AUX_DELTA | AUX_SIGNED)) == _U64(AUX_DELTA | AUX_SIGNED)  # signed: int32
            x = np.where(sgn, x.view(np.int32).astype(np.int64).view(_U64), x.astype(_U64))
            with np.errstate(over="ignore"):
                patch.reshape(-1)[a[pt]] = x << (w.reshape(-1)[a[pt]] & 63).astype(_U64)
    bidx = idx  # where the bits are read: a RADIX block's code of g digits
    rd = np.flatnonzero((aw & _U64(31)) == _U64(AUX_RADIX)) if a.size else a
    if rd.size:
        bidx = idx.copy()
        R = np.maximum((aw[rd] >> _U64(8)) & _U64(1023), _U64(2)).astype(np.int64)
        g = np.maximum((aw[rd] >> _U64(18)) & _U64(1023), _U64(1)).astype(np.int64)
        bidx.reshape(-1)[a[rd]] = kf[rd] // g
    with np.errstate(over="ignore", divide="ignore"):
        bits = _bits_u64(wu, 64 * off + bidx * w, w)
        if rd.size:  # the digit: the code over R^(k mod g), mod R (R^(g - 1) < 2^16 in a valid block)
            r = np.minimum(kf[rd] % g, 16)
            bits.reshape(-1)[a[rd]] = (bits.reshape(-1)[a[rd]].astype(np.int64) // R ** r % R).astype(_U64)
        v = base + slope * idx.astype(_U64) + bits + patch
    if a.size and scan:
        dl = np.flatnonzero(((aw & _U64(AUX_DELTA)) != 0) & (kind <= AUX_PATCH) & (kf >= 0))
        if dl.size:  # DELTA: the line at k plus the offsets' sum over 0 .. k (the offsets: base and slope 0)
            flat = a[dl]
            kd = kf[dl]
            ub, inv = np.unique(block.reshape(-1)[flat], return_inverse=True)
            n = np.zeros(len(ub), np.int64)
            np.maximum.at(n, inv, kd + 1)  # each block's offsets, 0 .. its largest k
            h0 = hdr.copy()
            h0[:, :2] = 0
            o = _decode_values(h0, words, np.repeat(ub, n), _ranges_from0(n), None, False, False).view(_U64)
            with np.errstate(over="ignore"):
                cs = np.cumsum(o, dtype=_U64)
                first = np.cumsum(n) - n  # each block's first offset in cs
                before = np.where(first > 0, cs[np.maximum(first - 1, 0)], _U64(0))
                s_ = cs[first[inv] + kd] - before[inv]
                v.reshape(-1)[flat] = base.reshape(-1)[flat] + slope.reshape(-1)[flat] * kd.astype(_U64) + s_
    if a.size and lookup:
        dk = np.flatnonzero(is_dict_kind(aw))
        if dk.size:
            v.reshape(-1)[a[dk]] = dict_lookup(dicts, v.reshape(-1)[a[dk]]).view(_U64)
    return v.view(np.int64)


def dict_blocks(hdr, words) -> np.ndarray:
    """The DICT blocks of a staged column (host arrays): their indices into ``hdr``."""
    meta = np.asarray(hdr, dtype=np.int64).reshape(-1, 3)[:, 2]
    wu = np.ascontiguousarray(words, dtype=np.int64).reshape(-1).view(_U64)
    a = np.flatnonzero((meta & AUX_FLAG) != 0)
    at = (meta[a] >> 8) - 1
    a, at = a[(at >= 0) & (at < wu.size)], at[(at >= 0) & (at < wu.size)]
    return a[is_dict_kind(wu[at])]


def dict_lines(hdr, words) -> tuple[np.ndarray, np.ndarray]:
    """Copies of a staged column's ``hdr`` and ``words`` (host arrays) whose DICT blocks decode to
    their value lines (where their dictionary starts + their codes) instead of their values: a
    plain one without its aux flag, a PATCH, RUN or DELTA one without ``AUX_CODES``."""
    hdr = np.array(hdr, dtype=np.int64).reshape(-1, 3)
    words = np.array(words, dtype=np.int64).reshape(-1)
    d = dict_blocks(hdr, words)
    at = (hdr[d, 2] >> 8) - 1
    coded = (words[at] & 3) != AUX_DICT
    words[at[coded]] &= ~AUX_CODES
    hdr[d[~coded], 2] &= ~AUX_FLAG
    return hdr, words


def is_dict_kind(aw) -> np.ndarray:
    """Which aux words (their low bits) are a DICT block's: kind 3, or any with ``AUX_CODES`` (a
    PATCH, RUN or DELTA block of codes)."""
    aw = np.asarray(aw).astype(_U64, copy=False)
    return ((aw & _U64(3)) == _U64(AUX_DICT)) | ((aw & _U64(AUX_CODES)) != 0)


def dict_lookup(dicts, index) -> np.ndarray:
    """DICT values (``decode_values``): ``dicts[min(index mod 2^32, D - 1)]`` (int64), 0 for an
    empty ``dicts``; ``index`` int64 or uint64 (a DICT block's value line; a fresh array: it is
    overwritten)."""
    d = np.zeros(1, np.int64) if dicts is None or np.asarray(dicts).size == 0 else np.asarray(dicts, np.int64).reshape(-1)
    i = np.asarray(index)
    i = i.view(np.int64) if i.dtype == _U64 else i.astype(np.int64, copy=False)
    np.bitwise_and(i, 0xFFFFFFFF, out=i)
    return np.take(d, i, mode="clip", out=i)  # i >= 0 here: the clip is the min(i, D - 1)
