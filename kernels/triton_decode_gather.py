"""Fused decode-gather: rebuild a batch's windows straight from the compressed staged blocks.

What it computes (docs/DESIGN.md §4, SPEC §2): for a staged batch of B examples, K staged blocks
and T tiles, per staged column ``c``

    out_c[offsets[e] + j]  = event j of example e's window         (jagged, ``[offsets[-1]]``)
    out_c[e, j]            = the same, ``pad_value`` for j >= len_e  (padded, ``[B, W]``)
    violations[e]          = 1 if a materialized ``ts`` of e is >= request_ts[e]   (int32 ``[B]``;
                             > request_ts[e] with check_leakage="inclusive", the INCLUSIVE constexpr)

Inputs (all int64 device tensors, views of the one packed buffer of ``gpumat/core/staged.py``):
``hdr_c [K, 3]`` (base, slope, meta), ``words_c [W_c + 1]``, the tiles ``tile_block/lo/cnt/out/ex
[T]``, the examples ``offsets [B + 1]``, ``hist_len/tail_src/tail_len/request_ts [B]`` and the
inline tails ``tail_values_c``.

Two kernels per column:

- ``_decode_gather_kernel``: the history part. A tile is the intersection of one example's window
  with one staged block (<= block_size values, 128 by default), so one program takes TILES_PER_PROG
  tiles as a ``[TILES_PER_PROG, BLOCK_SIZE]`` register block (BLOCK_SIZE = the block size, capped
  at 128 lanes on a GPU; larger tier blocks loop): every lane decodes exactly the value it writes
  (one multiply-add and a two-word bit extract), with no scan and no branch on the encoding. The
  grid is ``cdiv(T, TILES_PER_PROG)``: it depends only on shapes, so launching needs no host sync,
  and a 10^6-event history is simply ~8k tiles spread over many programs instead of one long row.
  Tiles of one example write disjoint output ranges, so programs never coordinate.
- ``_gather_tail_kernel``: the inline tail part (plain int64 values): one program per group of
  EX_PER_PROG examples, looping over TAIL_BLOCK-wide chunks of the group's longest used tail.

Why this encoding (blocked linear frame of reference, DESIGN §1): only compressed words cross the
bus and are read from HBM, and random access inside a block is O(1), so a window that starts in
the middle of a block decodes only what it keeps.

Leakage: when the column is ``ts`` and checking is on, a tile whose values reach ``request_ts`` of
its example sets ``violations[tile_ex] = 1`` with a plain masked store; concurrent programs only
ever store the same value 1, so no atomics are needed. A ``ts`` column staged only for the check
(``project=False``) is decoded and checked but never stored.

int64 is used for every index (histories of 10^6 events, batches of 10^5 rows, ``[B, W]`` padded
addresses beyond 2^31) and all decode arithmetic runs in uint64, so wrapping is two's complement
and right shifts are logical; shift counts are kept in ``[0, 63]`` because a shift by 64 means
different things on different backends.
"""

from __future__ import annotations

import contextlib
import os

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

# Launch shapes. On a GPU a program holds TILES_PER_PROG x 128 lanes (512 = 4 values per thread
# with 4 warps: enough loads in flight per thread to hide HBM latency without spilling the
# int64 registers). The interpreter pays per program, so it takes far larger groups.
GPU_TILES_PER_PROG = 4
GPU_EX_PER_PROG = 4
GPU_TAIL_BLOCK = 128
INTERP_TILES_PER_PROG = 512
INTERP_EX_PER_PROG = 1024
INTERP_TAIL_BLOCK = 64
NUM_WARPS = 4
MAX_LANES = 1024 if _DEFINED_INTERPRETED else 128



if triton is not None:

    @triton.jit
    def _decode_chunk(
        c0, words_ptr, out_ptr, tmask, lo, cnt, dst, base, slope, w, wu, wmask, word_off, rts, room, bad,
        n_words, n_out, BLOCK_SIZE: tl.constexpr, STORE: tl.constexpr, CHECK: tl.constexpr, INCLUSIVE: tl.constexpr,
        PADDED: tl.constexpr,
    ):
        """Decode lanes ``c0 .. c0 + BLOCK_SIZE`` of every tile of the program; returns the updated
        per-tile leakage flags."""
        r = c0 + tl.arange(0, BLOCK_SIZE).to(tl.int64)  # [BS]
        live = tmask[:, None] & (r[None, :] < cnt[:, None])  # [TP, BS]
        k = lo[:, None] + r[None, :]
        bit = k * w[:, None]
        q = word_off[:, None] + (bit >> 6)
        s = (bit & 63).to(tl.uint64)
        has_bits = live & (w[:, None] > 0)
        # The second word is needed only when the value straddles a word boundary; masking it
        # also keeps a read at the last word (+1 zero word) inside the buffer.
        lo_w = tl.load(words_ptr + q, mask=has_bits & (q < n_words), other=0).to(tl.uint64, bitcast=True)
        hi_w = tl.load(
            words_ptr + q + 1, mask=has_bits & (s + wu[:, None] > 64) & (q + 1 < n_words), other=0
        ).to(tl.uint64, bitcast=True)
        bits = (lo_w >> s) | tl.where(s == 0, 0, hi_w << ((64 - s) & 63))
        val_u = base[:, None] + slope[:, None] * k.to(tl.uint64) + (bits & wmask[:, None])
        val = val_u.to(tl.int64, bitcast=True)
        if STORE:
            addr = dst[:, None] + r[None, :]
            if PADDED:
                smask = live & (r[None, :] < room[:, None])
            else:
                smask = live & (addr < n_out)
            tl.store(out_ptr + addr, val.to(out_ptr.dtype.element_ty), mask=smask)
        if CHECK:
            if INCLUSIVE:
                leak = val > rts[:, None]
            else:
                leak = val >= rts[:, None]
            bad = tl.maximum(bad, tl.max((live & leak).to(tl.int32), axis=1))
        return bad

    @triton.jit(do_not_specialize=["n_tiles", "n_words", "n_out", "width"])
    def _decode_gather_kernel(
        hdr_ptr,  # int64 [K, 3]
        words_ptr,  # int64 [n_words]
        tile_block_ptr,
        tile_lo_ptr,
        tile_cnt_ptr,
        tile_out_ptr,
        tile_ex_ptr,  # int64 [n_tiles] each
        offsets_ptr,  # int64 [B + 1] (padded only)
        request_ts_ptr,  # int64 [B] (check only)
        out_ptr,  # [n_out] jagged or [B, width] padded, the column's dtype
        viol_ptr,  # int32 [B]
        n_tiles,
        n_words,
        n_out,
        width,
        BLOCK_SIZE: tl.constexpr,
        TILES_PER_PROG: tl.constexpr,
        STORE: tl.constexpr,
        CHECK: tl.constexpr,
        INCLUSIVE: tl.constexpr,  # the check flags ts > request_ts (check_leakage="inclusive"), else ts >= request_ts
        PADDED: tl.constexpr,
        LOOP: tl.constexpr,
    ):
        pid = tl.program_id(0).to(tl.int64)
        t = pid * TILES_PER_PROG + tl.arange(0, TILES_PER_PROG).to(tl.int64)  # [TP]
        tmask = t < n_tiles
        blk = tl.load(tile_block_ptr + t, mask=tmask, other=0)
        lo = tl.load(tile_lo_ptr + t, mask=tmask, other=0)
        cnt = tl.load(tile_cnt_ptr + t, mask=tmask, other=0)  # 0 for masked tiles: no lane live
        dst = tl.load(tile_out_ptr + t, mask=tmask, other=0)
        ex = tl.load(tile_ex_ptr + t, mask=tmask, other=0)

        base = tl.load(hdr_ptr + blk * 3, mask=tmask, other=0).to(tl.uint64, bitcast=True)
        slope = tl.load(hdr_ptr + blk * 3 + 1, mask=tmask, other=0).to(tl.uint64, bitcast=True)
        meta = tl.load(hdr_ptr + blk * 3 + 2, mask=tmask, other=0)
        w = meta & 0xFF
        word_off = meta >> 8

        wu = w.to(tl.uint64)
        one = tl.full([TILES_PER_PROG], 1, tl.uint64)
        wmask = tl.where(wu >= 64, ~(one - one), (one << (wu & 63)) - one)
        room = cnt
        if PADDED:
            row0 = tl.load(offsets_ptr + ex, mask=tmask, other=0)
            dst = ex * width + (dst - row0)  # the tile's first position in its padded row
            room = width - (dst - ex * width)  # lanes past the row's width are never stored
        rts = cnt
        if CHECK:
            rts = tl.load(request_ts_ptr + ex, mask=tmask, other=0)
        bad = tl.zeros([TILES_PER_PROG], dtype=tl.int32)

        if LOOP:
            # Tiers created with blocks wider than BLOCK_SIZE lanes walk their tiles in chunks.
            # A separate constexpr path, because the loop-carried state nearly doubles the
            # registers (about 126 vs 74 per thread on sm_90 at TILES_PER_PROG=4) and the
            # default 128-event blocks never need it.
            longest = tl.max(cnt, axis=0)
            for c0 in range(0, longest, BLOCK_SIZE):
                bad = _decode_chunk(
                    c0, words_ptr, out_ptr, tmask, lo, cnt, dst, base, slope, w, wu, wmask, word_off, rts, room, bad,
                    n_words, n_out, BLOCK_SIZE, STORE, CHECK, INCLUSIVE, PADDED,
                )
        else:
            bad = _decode_chunk(
                0, words_ptr, out_ptr, tmask, lo, cnt, dst, base, slope, w, wu, wmask, word_off, rts, room, bad,
                n_words, n_out, BLOCK_SIZE, STORE, CHECK, INCLUSIVE, PADDED,
            )
        if CHECK:
            tl.store(viol_ptr + ex, tl.full([TILES_PER_PROG], 1, tl.int32), mask=tmask & (bad > 0))

    @triton.jit(do_not_specialize=["n_ex", "n_tail", "n_out", "width"])
    def _gather_tail_kernel(
        tail_ptr,  # int64 [n_tail]
        tail_src_ptr,
        tail_len_ptr,
        hist_len_ptr,  # int64 [B] each
        offsets_ptr,  # int64 [B + 1]
        request_ts_ptr,  # int64 [B]
        out_ptr,
        viol_ptr,  # int32 [B]
        n_ex,
        n_tail,
        n_out,
        width,
        EX_PER_PROG: tl.constexpr,
        TAIL_BLOCK: tl.constexpr,
        STORE: tl.constexpr,
        CHECK: tl.constexpr,
        INCLUSIVE: tl.constexpr,
        PADDED: tl.constexpr,
    ):
        pid = tl.program_id(0).to(tl.int64)
        e = pid * EX_PER_PROG + tl.arange(0, EX_PER_PROG).to(tl.int64)
        emask = e < n_ex
        src = tl.load(tail_src_ptr + e, mask=emask, other=0)
        m = tl.load(tail_len_ptr + e, mask=emask, other=0)
        h = tl.load(hist_len_ptr + e, mask=emask, other=0)
        if PADDED:
            dst = e * width + h
        else:
            dst = tl.load(offsets_ptr + e, mask=emask, other=0) + h
        if CHECK:
            rts = tl.load(request_ts_ptr + e, mask=emask, other=0)
        bad = tl.zeros([EX_PER_PROG], dtype=tl.int32)
        longest = tl.max(m, axis=0)
        for start in range(0, longest, TAIL_BLOCK):
            r = start + tl.arange(0, TAIL_BLOCK).to(tl.int64)
            live = emask[:, None] & (r[None, :] < m[:, None])
            sidx = src[:, None] + r[None, :]
            v = tl.load(tail_ptr + sidx, mask=live & (sidx < n_tail), other=0)
            if STORE:
                addr = dst[:, None] + r[None, :]
                if PADDED:
                    smask = live & ((h[:, None] + r[None, :]) < width)
                else:
                    smask = live & (addr < n_out)
                tl.store(out_ptr + addr, v.to(out_ptr.dtype.element_ty), mask=smask)
            if CHECK:
                if INCLUSIVE:
                    leak = v > rts[:, None]
                else:
                    leak = v >= rts[:, None]
                bad = tl.maximum(bad, tl.max((live & leak).to(tl.int32), axis=1))
        if CHECK:
            tl.store(viol_ptr + e, tl.full([EX_PER_PROG], 1, tl.int32), mask=emask & (bad > 0))


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


def _launch_shapes() -> tuple[int, int, int]:
    """(tiles per program, examples per program, tail lanes) for how the kernels were defined."""
    if _DEFINED_INTERPRETED:
        return INTERP_TILES_PER_PROG, INTERP_EX_PER_PROG, INTERP_TAIL_BLOCK
    return GPU_TILES_PER_PROG, GPU_EX_PER_PROG, GPU_TAIL_BLOCK


def decode_gather(
    staged, column, out, viol, *, store=True, check=False, padded_width=None, tiles_per_prog=None
) -> None:
    """Launch ``_decode_gather_kernel`` for one staged column into ``out`` (jagged ``[N]`` or
    padded ``[B, padded_width]``), flagging ``viol`` (int32 ``[B]``) when ``check``. No host sync."""
    n_tiles = staged.tile_block.numel()
    if n_tiles == 0 or not (store or check):
        return
    tp = tiles_per_prog or _launch_shapes()[0]
    # Lanes per tile row: the block size (a power of two, DESIGN §2) up to a cap that keeps the
    # [TILES_PER_PROG, lanes] block in registers; larger blocks loop in the kernel.
    block = min(triton.next_power_of_2(int(staged.block_size)), MAX_LANES)
    grid = (triton.cdiv(n_tiles, tp),)
    _decode_gather_kernel[grid](
        column.hdr, column.words,
        staged.tile_block, staged.tile_lo, staged.tile_cnt, staged.tile_out, staged.tile_ex,
        staged.offsets, staged.request_ts, out, viol,
        n_tiles, column.words.numel(), out.numel(), 0 if padded_width is None else int(padded_width),
        BLOCK_SIZE=block, TILES_PER_PROG=tp, STORE=store, CHECK=check, INCLUSIVE=check and staged.inclusive,
        PADDED=padded_width is not None,
        LOOP=int(staged.block_size) > block,
        num_warps=NUM_WARPS,
    )


def gather_tail(
    staged, column, out, viol, *, store=True, check=False, padded_width=None, ex_per_prog=None, tail_block=None
) -> None:
    """Launch ``_gather_tail_kernel`` for one staged column (same ``out``/``viol`` as ``decode_gather``)."""
    B = staged.tail_len.numel()
    if B == 0 or column.tail_values.numel() == 0 or not (store or check):
        return
    _, epp, tb = _launch_shapes()
    epp = ex_per_prog or epp
    tb = tail_block or tb
    _gather_tail_kernel[(triton.cdiv(B, epp),)](
        column.tail_values, staged.tail_src, staged.tail_len, staged.hist_len, staged.offsets, staged.request_ts,
        out, viol,
        B, column.tail_values.numel(), out.numel(), 0 if padded_width is None else int(padded_width),
        EX_PER_PROG=epp, TAIL_BLOCK=tb, STORE=store, CHECK=check, INCLUSIVE=check and staged.inclusive,
        PADDED=padded_width is not None,
        num_warps=NUM_WARPS,
    )


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
    return dev


def materialize_staged_triton(
    staged, padded_width=None, pad_value=0, total=None, out=None, tiles_per_prog=None, ex_per_prog=None
):
    """Materialize a device-resident ``StagedBatch`` with the Triton kernels.

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
    ``tiles_per_prog`` / ``ex_per_prog``: launch-shape overrides (tuning, tests).
    """
    dev = _check_staged(staged)
    ok, why = triton_available(dev)
    if not ok:
        raise GpumatError(why)
    B = staged.offsets.numel() - 1
    if padded_width is None:
        n = staged.total if total is None else int(total)
        shape = (n,)
    else:
        shape = (B, int(padded_width))
    viol = torch.zeros(max(B, 0), dtype=torch.int32, device=dev)
    values = {}
    # Triton launches on the current CUDA device: make it the batch's (cuda:1 without a stream
    # context would otherwise launch on cuda:0 against another device's pointers).
    with torch.cuda.device(dev) if dev.type == "cuda" else contextlib.nullcontext():
        _launch_columns(staged, values, viol, out, shape, dev, padded_width, pad_value, tiles_per_prog, ex_per_prog)
    return values, viol


def _launch_columns(staged, values, viol, out, shape, dev, padded_width, pad_value, tiles_per_prog, ex_per_prog):
    """Allocate each column's output (or take the caller's) and launch its two kernels."""
    for name, col, check in staged.passes():
        dt = TORCH_DTYPES[col.dtype]
        buf = None
        if col.project:
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
            values[name] = buf
        store = buf is not None and buf.numel() > 0
        if not (store or check):
            continue
        if not store:
            # Never stored to (STORE=False), but the kernel still takes a real pointer of the dtype.
            buf = torch.empty(1, dtype=dt, device=dev)
        kw = dict(store=store, check=check, padded_width=padded_width)
        decode_gather(staged, col, buf, viol, tiles_per_prog=tiles_per_prog, **kw)
        gather_tail(staged, col, buf, viol, ex_per_prog=ex_per_prog, **kw)
