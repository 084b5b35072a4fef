"""The CPU reference backend (``backend="reference"``): NumPy, exact to SPEC §2.

It consumes the same staged batch as the kernels but shares none of their code: the host codec
decodes every staged block whole (``host.codec.decode_blocks``), then each example's sequence is
the values of its tiles followed by its tail, exactly the definition

    S = history[u][0:n] ++ tail ;  out = S[len(S) - min(L, len(S)):]

because the planner cut each window ``[n - h, n)`` into tiles in order (tests check the whole
path against a plain Python loop over ``Tier.read_history``).
"""

from __future__ import annotations

import numpy as np

from gpumat.host.codec import decode_blocks
from gpumat.host.ranges import expand_ranges
from gpumat.core.staged import StagedBatch


def materialize_staged_reference(staged: StagedBatch) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """(values per projected column in its schema dtype, violations bool [B]) for a host-resident batch."""
    B = staged.batch_size
    if not staged.columns:  # a tenant with no columns and no leakage check: offsets only, nothing to decode
        return {}, np.zeros(B, dtype=bool)
    total = staged.total
    offsets = np.asarray(staged.offsets)
    hist_len = np.asarray(staged.hist_len)
    tail_len = np.asarray(staged.tail_len)
    tile_block = np.asarray(staged.tile_block)
    tile_lo = np.asarray(staged.tile_lo)
    tile_cnt = np.asarray(staged.tile_cnt)
    tile_out = np.asarray(staged.tile_out)

    K = next(iter(staged.columns.values())).hdr.shape[0]
    used = np.zeros(K, dtype=np.int64)  # values of each block that some tile uses: decode that prefix
    np.maximum.at(used, tile_block, tile_lo + tile_cnt)
    dense_start = np.cumsum(used) - used

    # Where every output value comes from: the history tiles, then the tails.
    h_owner, h_pos = expand_ranges(tile_out, tile_cnt)
    h_src = dense_start[tile_block[h_owner]] + tile_lo[h_owner] + (h_pos - tile_out[h_owner])
    t_owner, t_pos = expand_ranges(offsets[:-1] + hist_len, tail_len)
    t_src = np.asarray(staged.tail_src)[t_owner] + (t_pos - offsets[:-1][t_owner] - hist_len[t_owner])

    values: dict[str, np.ndarray] = {}
    violations = np.zeros(B, dtype=bool)
    # strict: ts >= request_ts leaks; inclusive: only ts > request_ts does
    leaks = np.greater if staged.inclusive else np.greater_equal
    for name, col, check in staged.passes():
        dense = decode_blocks(np.asarray(col.hdr), np.asarray(col.words), used)
        out = np.empty(total, dtype=np.int64)
        out[h_pos] = dense[h_src]
        out[t_pos] = np.asarray(col.tail_values)[t_src]
        if check and total:
            example_of = np.repeat(np.arange(B), np.diff(offsets))
            violations[example_of[leaks(out, np.asarray(staged.request_ts)[example_of])]] = True
        if col.project:
            values[name] = out.astype(col.dtype, copy=False)
    return values, violations
