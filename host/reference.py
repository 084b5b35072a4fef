"""The CPU reference backend (``backend="reference"``): NumPy, exact to SPEC §2.

It consumes the same staged batch as the kernels but shares none of their code: the host codec
decodes every staged block whole, in bulk (``host.codec.decode_blocks_padded``: row ``k`` holds
block ``k``), then each example's sequence is the values of its tiles followed by its tail,
exactly the definition

    S = history[u][0:n] ++ tail ;  out = S[len(S) - min(L, len(S)):]

because the planner cut each window ``[n - h, n)`` into tiles in order (tests check the whole
path against a plain Python loop over ``Tier.read_history``).

Assembly copies *segments*, not values: tiles that continue each other both in the decoded rows
and in the output (a window over full blocks) merge into one run, so an example's history is
usually one slice; its tail is another. Long segments are copied as slices; a batch of short
ones (short windows) is gathered with one index built once and shared by every column. The
leakage check is one ``maximum.reduceat`` of the ``ts`` output per example.
"""

from __future__ import annotations

import numpy as np

from gpumat.core.staged import StagedBatch
from gpumat.host.codec import decode_blocks_padded
from gpumat.host.ranges import ranges

# Mean segment length (values) from which a batch is assembled by slice copies (one Python-level
# copy per segment and column) rather than one vectorized gather.
SLICE_MIN_MEAN = 256


def plan_segments(staged: StagedBatch, lanes: int):
    """The copies that assemble a batch: ``(src, dst, n, from_tail)`` int64/bool arrays, one row per
    segment, sorted by ``dst`` and tiling ``[0, total)``. A history segment reads ``n`` values from
    position ``src`` of the decoded blocks flattened as ``[K, lanes]``; a tail segment reads
    ``tail_values[src:src + n]``."""
    tile_block = np.asarray(staged.tile_block, dtype=np.int64)
    tile_lo = np.asarray(staged.tile_lo, dtype=np.int64)
    tile_cnt = np.asarray(staged.tile_cnt, dtype=np.int64)
    tile_out = np.asarray(staged.tile_out, dtype=np.int64)
    keep = tile_cnt > 0
    if not keep.all():
        tile_block, tile_lo, tile_cnt, tile_out = tile_block[keep], tile_lo[keep], tile_cnt[keep], tile_out[keep]
    if tile_out.size > 1 and (np.diff(tile_out) < 0).any():
        o = np.argsort(tile_out, kind="stable")
        tile_block, tile_lo, tile_cnt, tile_out = tile_block[o], tile_lo[o], tile_cnt[o], tile_out[o]
    src = tile_block * lanes + tile_lo
    # runs: a tile that starts where the previous one ended, in the rows and in the output
    new = np.ones(src.size, dtype=bool)
    if src.size > 1:
        end_src = src[:-1] + tile_cnt[:-1]
        end_dst = tile_out[:-1] + tile_cnt[:-1]
        new[1:] = (src[1:] != end_src) | (tile_out[1:] != end_dst)
    first = np.flatnonzero(new)
    h_src, h_dst = src[first], tile_out[first]
    h_n = np.add.reduceat(tile_cnt, first) if first.size else np.zeros(0, np.int64)

    offsets = np.asarray(staged.offsets, dtype=np.int64)
    tail_len = np.asarray(staged.tail_len, dtype=np.int64)
    has = np.flatnonzero(tail_len > 0)
    t_src = np.asarray(staged.tail_src, dtype=np.int64)[has]
    t_dst = offsets[has] + np.asarray(staged.hist_len, dtype=np.int64)[has]
    t_n = tail_len[has]

    src = np.concatenate([h_src, t_src])
    dst = np.concatenate([h_dst, t_dst])
    n = np.concatenate([h_n, t_n])
    from_tail = np.concatenate([np.zeros(h_src.size, bool), np.ones(t_src.size, bool)])
    o = np.argsort(dst, kind="stable")
    return src[o], dst[o], n[o], from_tail[o]


def materialize_staged_reference(staged: StagedBatch, out: dict | None = None) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """(values per projected column in its schema dtype, violations bool [B]) for a host-resident batch.

    ``out``: optional ``{column: array}`` of ``staged.total`` values in the column's dtype to write
    the projected columns into (a worker's shared-memory message); the others are allocated."""
    B = staged.batch_size
    if not staged.columns:  # a tenant with no columns and no leakage check: offsets only, nothing to decode
        return {}, np.zeros(B, dtype=bool)
    total = staged.total
    offsets = np.asarray(staged.offsets, dtype=np.int64)
    lanes = -(-max(int(staged.block_size), 1) // 8) * 8
    src, dst, n, from_tail = plan_segments(staged, lanes)
    by_slices = n.size == 0 or total >= SLICE_MIN_MEAN * n.size
    if not by_slices:
        # one gather index over [decoded rows ++ tail values] shared by every column; the offset
        # of the tails inside it depends on K only, the same for every column
        K = next(iter(staged.columns.values())).hdr.shape[0]
        idx = ranges(np.where(from_tail, src + K * lanes, src), n)
    else:
        seg = list(zip(src.tolist(), dst.tolist(), n.tolist(), from_tail.tolist()))

    values: dict[str, np.ndarray] = {}
    violations = np.zeros(B, dtype=bool)
    for name, col, check in staged.passes():
        dt = np.dtype(col.dtype) if col.project else np.dtype(np.int64)
        hdr = np.asarray(col.hdr)
        rows = decode_blocks_padded(hdr, np.asarray(col.words), lanes, col.dicts).reshape(-1) if hdr.shape[0] else np.zeros(0, np.int64)
        tails = np.asarray(col.tail_values)
        dest = out.get(name) if out is not None and col.project else None
        if dest is None:
            dest = np.empty(total, dtype=dt)
        elif dest.shape != (total,) or dest.dtype != dt:
            raise ValueError(f"out[{name!r}]: expected {total} values of {dt}, got {dest.shape} {dest.dtype}")
        if by_slices:
            for s, d, k, t in seg:
                dest[d : d + k] = (tails if t else rows)[s : s + k]
        else:
            src = np.concatenate([rows.astype(dt, copy=False), tails.astype(dt, copy=False)])
            np.take(src, idx, out=dest)
        if check and total:
            # strict: ts >= request_ts leaks; inclusive: only ts > request_ts does
            ne = np.flatnonzero(offsets[1:] > offsets[:-1])
            top = np.maximum.reduceat(dest, offsets[ne])
            rts = np.asarray(staged.request_ts, dtype=np.int64)[ne]
            violations[ne] = top > rts if staged.inclusive else top >= rts
        if col.project:
            values[name] = dest
    return values, violations
