"""NumPy twin of ``kernels/triton_decode_gather.py``: the same decode-gather, obviously right.

Every function mirrors a kernel or launcher of the Triton module by name
(``_decode_gather_kernel`` -> ``decode_gather_np``, ``_gather_tail_kernel`` -> ``gather_tail_np``,
``materialize_staged_triton`` -> ``materialize_staged_np``) and computes exactly what the kernel
computes per tile, vectorized over all tiles at once: value ``k`` of staged block ``b`` is

    base[b] + slope[b] * k + bits(words, word_off[b] * 64 + k * w[b], w[b])   (uint64 wrapping)

(docs/DESIGN.md §1). All arithmetic is done in ``uint64`` so overflow wraps exactly as two's
complement int64 does on the device, and shift counts stay in ``[0, 63]`` (NumPy, like C, leaves
a shift by 64 undefined).
"""

from __future__ import annotations

import numpy as np

from gpumat.core.errors import GpumatError
from gpumat.core.names import NUMPY_DTYPES

_U64 = np.uint64
_ALL_ONES = np.uint64(0xFFFFFFFFFFFFFFFF)


def _as_u64(a) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.int64).view(np.uint64)


def decode_values_np(hdr, words, block, k) -> np.ndarray:
    """Decode value ``k[i]`` of staged block ``block[i]``; returns int64 with the shape of ``k``.

    ``hdr``: int64 ``[K, 3]`` (base, slope, meta), ``words``: int64 ``[W + 1]``.
    """
    hdr = np.asarray(hdr, dtype=np.int64).reshape(-1, 3)
    wu = _as_u64(words)
    block = np.asarray(block, dtype=np.int64)
    k = np.asarray(k, dtype=np.int64)
    if block.size == 0:
        return np.zeros(k.shape, dtype=np.int64)
    base = hdr[block, 0].view(np.uint64)
    slope = hdr[block, 1].view(np.uint64)
    meta = hdr[block, 2]
    w = meta & 0xFF
    word_off = meta >> 8
    bit = k * w
    q = word_off + (bit >> 6)
    s = (bit & 63).astype(np.uint64)
    n = wu.size
    # A w = 0 block may sit at the very end of ``words`` and a value whose bits end inside its
    # first word never needs the second one: read 0 past the end instead of faulting (the kernel
    # masks the same loads).
    lo = np.where(q < n, wu[np.minimum(q, n - 1)], _U64(0))
    hi = np.where(q + 1 < n, wu[np.minimum(q + 1, n - 1)], _U64(0))
    r = (lo >> s) | np.where(s == 0, _U64(0), hi << ((_U64(64) - s) & _U64(63)))
    mask = np.where(w >= 64, _ALL_ONES, (_U64(1) << (w & 63).astype(np.uint64)) - _U64(1))
    r &= mask
    v = base + slope * k.astype(np.uint64) + r
    return v.view(np.int64)


def decode_gather_np(
    hdr,
    words,
    tile_block,
    tile_lo,
    tile_cnt,
    tile_out,
    tile_ex,
    offsets,
    request_ts,
    out,
    viol,
    *,
    store: bool = True,
    check: bool = False,
    inclusive: bool = False,
    padded_width: int | None = None,
) -> None:
    """Twin of ``_decode_gather_kernel``: decode every tile into ``out`` and flag leakage in ``viol``.

    Tile ``t`` decodes values ``tile_lo[t] .. tile_lo[t] + tile_cnt[t] - 1`` of block
    ``tile_block[t]`` and writes value ``r`` to ``out[tile_out[t] + r]`` (jagged, ``out`` 1-D) or to
    ``out[tile_ex[t], tile_out[t] - offsets[tile_ex[t]] + r]`` (padded, ``out`` ``[B, W]``).
    With ``check``, ``viol[tile_ex[t]] = 1`` when a decoded value is ``>= request_ts[tile_ex[t]]``
    (``> request_ts[tile_ex[t]]`` when ``inclusive``: the kernel's ``INCLUSIVE``).
    """
    tile_cnt = np.asarray(tile_cnt, dtype=np.int64)
    if tile_cnt.size == 0:
        return
    tile_of = np.repeat(np.arange(tile_cnt.size), tile_cnt)  # tile of every decoded value
    r = np.arange(tile_of.size, dtype=np.int64) - np.repeat(np.cumsum(tile_cnt) - tile_cnt, tile_cnt)
    blk = np.asarray(tile_block, dtype=np.int64)[tile_of]
    k = np.asarray(tile_lo, dtype=np.int64)[tile_of] + r
    vals = decode_values_np(hdr, words, blk, k)
    ex = np.asarray(tile_ex, dtype=np.int64)[tile_of]
    pos = np.asarray(tile_out, dtype=np.int64)[tile_of] + r
    if store:
        if padded_width is None:
            out[pos] = vals.astype(out.dtype)
        else:
            out[ex, pos - np.asarray(offsets, dtype=np.int64)[ex]] = vals.astype(out.dtype)
    if check:
        rts = np.asarray(request_ts, dtype=np.int64)[ex]
        bad = vals > rts if inclusive else vals >= rts
        viol[ex[bad]] = 1


def gather_tail_np(
    tail_values,
    tail_src,
    tail_len,
    hist_len,
    offsets,
    request_ts,
    out,
    viol,
    *,
    store: bool = True,
    check: bool = False,
    inclusive: bool = False,
    padded_width: int | None = None,
) -> None:
    """Twin of ``_gather_tail_kernel``: copy ``tail_len[e]`` values from ``tail_values[tail_src[e]:]``
    to ``out[offsets[e] + hist_len[e] + r]`` (or ``out[e, hist_len[e] + r]`` padded), flagging leakage."""
    tail_len = np.asarray(tail_len, dtype=np.int64)
    if tail_len.size == 0 or tail_len.sum() == 0:
        return
    ex = np.repeat(np.arange(tail_len.size), tail_len)
    r = np.arange(ex.size, dtype=np.int64) - np.repeat(np.cumsum(tail_len) - tail_len, tail_len)
    vals = np.asarray(tail_values, dtype=np.int64)[np.asarray(tail_src, dtype=np.int64)[ex] + r]
    dst = np.asarray(hist_len, dtype=np.int64)[ex] + r
    if store:
        if padded_width is None:
            out[np.asarray(offsets, dtype=np.int64)[ex] + dst] = vals.astype(out.dtype)
        else:
            out[ex, dst] = vals.astype(out.dtype)
    if check:
        rts = np.asarray(request_ts, dtype=np.int64)[ex]
        bad = vals > rts if inclusive else vals >= rts
        viol[ex[bad]] = 1


def materialize_staged_np(staged, padded_width: int | None = None, pad_value: int = 0):
    """Twin of ``materialize_staged_triton`` for a host-resident (NumPy) ``StagedBatch``.

    Returns ``(values, violations)``: ``values[col]`` of the column's dtype, ``[offsets[-1]]``
    (jagged) or ``[B, padded_width]`` filled with ``pad_value`` past each row's length; only the
    columns with ``project=True``. ``violations``: ``np.int32 [B]``, 1 where an example has a
    materialized ``ts >= request_ts`` (``ts > request_ts`` when ``staged.inclusive``; all 0 when
    ``staged.check_leakage`` is off).
    """
    if staged.check_leakage and "ts" not in staged.columns:
        # Checking without the ts column would report "no leak" for every example.
        raise GpumatError("staged batch asks for the leakage check but stages no 'ts' column")
    offsets = np.asarray(staged.offsets, dtype=np.int64)
    B = offsets.size - 1
    total = int(offsets[-1]) if offsets.size else 0
    viol = np.zeros(B, dtype=np.int32)
    values = {}
    common = dict(offsets=offsets, request_ts=staged.request_ts, inclusive=staged.inclusive)
    for name, col, check in staged.passes():
        dt = NUMPY_DTYPES[col.dtype]
        if padded_width is None:
            out = np.zeros(total, dtype=dt)
        else:
            out = np.full((B, int(padded_width)), pad_value, dtype=dt)
        decode_gather_np(
            col.hdr, col.words, staged.tile_block, staged.tile_lo, staged.tile_cnt, staged.tile_out, staged.tile_ex,
            out=out, viol=viol, store=col.project, check=check, padded_width=padded_width, **common,
        )
        gather_tail_np(
            col.tail_values, staged.tail_src, staged.tail_len, staged.hist_len,
            out=out, viol=viol, store=col.project, check=check, padded_width=padded_width, **common,
        )
        if col.project:
            values[name] = out
    return values, viol
