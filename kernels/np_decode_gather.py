"""NumPy twin of ``kernels/triton_decode_gather.py``: the same decode-gather, obviously right.

Every function mirrors a part of the Triton module (the history kernel's per-column work ->
``decode_gather_np``, the tail kernel's -> ``gather_tail_np``, ``materialize_staged_triton`` ->
``materialize_staged_np``) and computes exactly what the kernels compute per tile, vectorized over
all tiles at once (one column at a time: the kernels' fusion of columns changes no value): value
``k`` of staged block ``b`` is

    base[b] + slope[b] * k + bits(words, word_off[b] * 64 + k * w[b], w[b])   (uint64 wrapping)

(docs/DESIGN.md §1). All arithmetic is done in ``uint64`` so overflow wraps exactly as two's
complement int64 does on the device, and shift counts stay in ``[0, 63]`` (NumPy, like C, leaves
a shift by 64 undefined).
"""

from __future__ import annotations

import numpy as np

from gpumat.core.errors import GpumatError
from gpumat.core.names import NUMPY_DTYPES
from gpumat.core.staged import decode_values

def decode_values_np(hdr, words, block, k, dicts=None) -> np.ndarray:
    """Decode value ``k[i]`` of staged block ``block[i]``; returns int64 with the shape of ``k``.

    ``hdr``: int64 ``[K, 3]`` (base, slope, meta), ``words``: int64 ``[W + 1]``, ``dicts``: the
    column's dictionaries (DICT blocks). The staged contract's own lane formula
    (``gpumat.core.staged.decode_values``, PATCH, RUN and DICT blocks too), which is what every
    kernel evaluates per value.
    """
    return decode_values(hdr, words, block, k, dicts)


# Mean segment length (values) from which segments are copied as slices rather than gathered
# with one index (the same rule as the reference backend's).
SLICE_MIN_MEAN = 256


def _ranges(starts, counts) -> np.ndarray:
    """Concatenation of ``arange(starts[i], starts[i] + counts[i])`` (counts >= 1), without a Python loop."""
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.asarray(starts, dtype=np.int64)
    step = np.ones(total, dtype=np.int64)
    first = np.cumsum(counts) - counts
    step[0] = starts[0]
    step[first[1:]] = starts[1:] - (starts[:-1] + counts[:-1] - 1)
    return np.cumsum(step)


def _copy_segments(src, src_start, n, dst_flat, dst_start) -> np.ndarray:
    """Copy ``src[src_start[i]:+n[i]]`` to ``dst_flat[dst_start[i]:+n[i]]`` for every segment (slices
    when segments are long, else one gather and one scatter); returns the copied values back to
    back (the segments' values in order, for the leakage check)."""
    if n.size == 0:
        return np.zeros(0, dtype=src.dtype)
    if int(n.sum()) >= SLICE_MIN_MEAN * n.size:
        parts = [src[s : s + k] for s, k in zip(src_start.tolist(), n.tolist())]
        if dst_flat is not None:
            for d, part in zip(dst_start.tolist(), parts):
                dst_flat[d : d + part.size] = part
        return np.concatenate(parts)
    vals = src[_ranges(src_start, n)]
    if dst_flat is not None:
        dst_flat[_ranges(dst_start, n)] = vals
    return vals


def _flag(vals, n, ex, request_ts, viol, inclusive: bool) -> None:
    """``viol[ex[i]] = 1`` where segment ``i`` (``n[i]`` values of ``vals``, back to back) holds a
    value ``>= request_ts[ex[i]]`` (``>`` when ``inclusive``): one ``maximum.reduceat``."""
    if n.size == 0:
        return
    top = np.maximum.reduceat(vals, np.cumsum(n) - n)
    rts = np.asarray(request_ts, dtype=np.int64)[ex]
    bad = top > rts if inclusive else top >= rts
    viol[ex[bad]] = 1


def _dst(offsets, ex, pos, padded_width):
    """Flat output positions: ``pos`` itself (jagged), or row ``ex``, column ``pos - offsets[ex]``."""
    if padded_width is None:
        return pos
    return ex * int(padded_width) + (pos - np.asarray(offsets, dtype=np.int64)[ex])


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
    dicts=None,
) -> None:
    """Twin of ``_history_kernel`` for one column: decode every tile into ``out`` and flag leakage in ``viol``.

    Tile ``t`` decodes values ``tile_lo[t] .. tile_lo[t] + tile_cnt[t] - 1`` of block
    ``tile_block[t]`` and writes value ``r`` to ``out[tile_out[t] + r]`` (jagged, ``out`` 1-D) or to
    ``out[tile_ex[t], tile_out[t] - offsets[tile_ex[t]] + r]`` (padded, ``out`` ``[B, W]``).
    With ``check``, ``viol[tile_ex[t]] = 1`` when a decoded value is ``>= request_ts[tile_ex[t]]``
    (``> request_ts[tile_ex[t]]`` when ``inclusive``: the kernel's ``INCLUSIVE``).

    Each staged block is decoded once, the prefix its tiles use (``decode_values_np``: the kernel's
    formula); tiles that continue each other in the decoded values, in the output and in their
    example merge into runs, which are copied as segments; the check is one maximum per run.
    """
    tile_cnt = np.asarray(tile_cnt, dtype=np.int64)
    keep = tile_cnt > 0
    if not keep.any():
        return
    tb = np.asarray(tile_block, dtype=np.int64)[keep]
    lo = np.asarray(tile_lo, dtype=np.int64)[keep]
    cnt = tile_cnt[keep]
    pos = np.asarray(tile_out, dtype=np.int64)[keep]
    ex = np.asarray(tile_ex, dtype=np.int64)[keep]
    K = np.asarray(hdr).reshape(-1, 3).shape[0]
    used = np.zeros(K, dtype=np.int64)
    np.maximum.at(used, tb, lo + cnt)
    blocks = np.flatnonzero(used)
    dense = decode_values_np(hdr, words, np.repeat(blocks, used[blocks]), _ranges(np.zeros(blocks.size, np.int64), used[blocks]),
                             dicts)
    dense_start = np.cumsum(used) - used
    src = dense_start[tb] + lo
    o = np.argsort(pos, kind="stable")
    src, pos, cnt, ex = src[o], pos[o], cnt[o], ex[o]
    new = np.ones(src.size, dtype=bool)
    new[1:] = (src[1:] != src[:-1] + cnt[:-1]) | (pos[1:] != pos[:-1] + cnt[:-1]) | (ex[1:] != ex[:-1])
    first = np.flatnonzero(new)
    run_n = np.add.reduceat(cnt, first)
    run_ex = ex[first]
    flat = out.reshape(-1) if store else None
    vals = _copy_segments(dense.astype(out.dtype) if store else dense, src[first], run_n, flat,
                          _dst(offsets, run_ex, pos[first], padded_width))
    if check:
        _flag(vals, run_n, run_ex, request_ts, viol, inclusive)


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
    """Twin of ``_tail_kernel`` for one column: copy ``tail_len[e]`` values from ``tail_values[tail_src[e]:]``
    to ``out[offsets[e] + hist_len[e] + r]`` (or ``out[e, hist_len[e] + r]`` padded), flagging leakage:
    one segment per example."""
    tail_len = np.asarray(tail_len, dtype=np.int64)
    ex = np.flatnonzero(tail_len > 0)
    if ex.size == 0:
        return
    n = tail_len[ex]
    pos = np.asarray(offsets, dtype=np.int64)[ex] + np.asarray(hist_len, dtype=np.int64)[ex]
    tv = np.asarray(tail_values, dtype=np.int64)
    flat = out.reshape(-1) if store else None
    vals = _copy_segments(tv.astype(out.dtype) if store else tv, np.asarray(tail_src, dtype=np.int64)[ex], n, flat,
                          _dst(offsets, ex, pos, padded_width))
    if check:
        _flag(vals, n, ex, request_ts, viol, inclusive)


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
            out=out, viol=viol, store=col.project, check=check, padded_width=padded_width, dicts=col.dicts, **common,
        )
        gather_tail_np(
            col.tail_values, staged.tail_src, staged.tail_len, staged.hist_len,
            out=out, viol=viol, store=col.project, check=check, padded_width=padded_width, **common,
        )
        if col.project:
            values[name] = out
    return values, viol
