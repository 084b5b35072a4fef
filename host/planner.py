"""The planner: projection pushdown on columns and length, data affinity, and the staged batch.

For one batch of examples and one tenant (columns C, max_len L), example e with pointer
(u, v, n) and a tail of m events materializes (SPEC §2)

    t_e = min(m, L)           its last t_e tail events
    h_e = min(n, L - t_e)     history positions [n - h_e, n)

The planner finds the 128-event blocks that overlap any example's history window, reads each of
them once per batch however many of the user's examples need it (data affinity), and only for
the staged columns (the tenant's, plus ``ts`` for the leakage check). Everything is vectorized:
no Python loop per example, per block or per event; the only loop is over staged columns.

The result is a ``StagedBatch`` (docs/DESIGN.md §4): compressed block headers and packed words
plus tile descriptors; a tile is the intersection of one example's window with one staged block.
"""

from __future__ import annotations

import numpy as np

from gpumat.core.tenant import Tenant
from gpumat.host.examples import Examples
from gpumat.host.ranges import expand_ranges
from gpumat.core.staged import StagedBatch, StagedColumn, leakage_mode


def staged_columns(tenant: Tenant, check_leakage) -> list[tuple[str, bool]]:
    """(column, projected) pairs to stage: the tenant's columns, plus ``ts`` (not projected) for the check."""
    cols = [(c, True) for c in tenant.columns]
    if leakage_mode(check_leakage) and "ts" not in tenant.columns:
        cols.append(("ts", False))
    return cols


def window_sizes(ex: Examples, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """(h, t): events each example takes from its history and from its tail (SPEC §2)."""
    m = ex.tail_len
    t = np.minimum(m, max_len)
    h = np.minimum(ex.length, max_len - t)
    return h, t


def _geometry(d):
    """(users, user_base, g_start) of a directory, cached on it.

    Global history coordinate: users laid end to end in directory order, so that a stripe is the
    interval [g_start, g_start + count) and a user's history window is one contiguous interval.
    """
    geom = getattr(d, "_gpumat_geometry", None)
    if geom is None:
        users, uidx = np.unique(d.user_id, return_inverse=True)
        user_end = np.zeros(users.size, dtype=np.int64)
        np.maximum.at(user_end, uidx, d.start + d.count)
        user_base = np.cumsum(user_end) - user_end
        geom = (users, user_base, user_base[uidx] + d.start)
        object.__setattr__(d, "_gpumat_geometry", geom)
    return geom


def _pack_blocks_once(d, blk_stripe: np.ndarray, blk_local: np.ndarray) -> np.ndarray | None:
    """For the batch's blocks (stripe, block index in the stripe), the index of the first of them
    that is the same block of the same blobs (``Directory.blob``: a pack's stripes share theirs);
    None when no two are (no pack, or one stripe of each)."""
    blob = d.blob[blk_stripe]
    packed = d.bcount[blk_stripe] != d.count[blk_stripe]
    if np.count_nonzero(packed) < 2:
        return None
    key = np.where(packed, blob, -1 - np.arange(blob.size))  # (a stripe of its own blobs: its own key)
    j = d.b0[blk_stripe] + blk_local  # the block's index in its blobs
    _, first, inv = np.unique(np.stack([key, j]), axis=1, return_index=True, return_inverse=True)
    if len(first) == blob.size:
        return None
    return first[inv.reshape(-1)]


def plan(tier, ex: Examples, tenant: Tenant, check_leakage=True) -> StagedBatch:
    """Build the staged batch of ``ex`` for ``tenant`` from ``tier`` (pointers must already be checked).

    ``check_leakage``: ``True``/``"strict"``, ``"inclusive"`` or ``False`` (SPEC §2); the staged
    batch carries the mode to the backend, which flags ``ts >= request_ts`` (strict) or
    ``ts > request_ts`` (inclusive).
    """
    mode = leakage_mode(check_leakage)
    bs = tier.block_size
    B = ex.size
    h, t = window_sizes(ex, tenant.max_len)
    lengths = h + t
    offsets = np.zeros(B + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    cols = staged_columns(tenant, mode)

    need = np.flatnonzero(h > 0)
    if need.size:
        d = tier.directory()
        users, user_base, g_start = _geometry(d)

        e_user = np.searchsorted(users, ex.user_id[need])
        win_lo = ex.length[need] - h[need]  # first history position of the window
        g_lo = user_base[e_user] + win_lo
        g_hi = user_base[e_user] + ex.length[need] - 1  # last position (inclusive)
        s_lo = np.searchsorted(g_start, g_lo, side="right") - 1
        s_hi = np.searchsorted(g_start, g_hi, side="right") - 1
        # a stripe of a pack starts at position ``phase`` of its first block (its blobs' block b0)
        phase = d.skip % bs
        gb_lo = d.block0[s_lo] + (g_lo - g_start[s_lo] + phase[s_lo]) // bs  # global block ids, contiguous per window
        gb_hi = d.block0[s_hi] + (g_hi - g_start[s_hi] + phase[s_hi]) // bs
        nblk = gb_hi - gb_lo + 1

        # Data affinity: every block that any window needs, once.
        _, all_blocks = expand_ranges(gb_lo, nblk)
        blocks = np.unique(all_blocks)
        blk_stripe = np.searchsorted(d.block0, blocks, side="right") - 1
        blk_local = blocks - d.block0[blk_stripe]
        blk_g0 = g_start[blk_stripe] - phase[blk_stripe] + blk_local * bs  # global coordinate of each staged block's position 0
        # the stripe's own events in it: [blk_first, blk_end) (a stripe's last block may be short; in a
        # pack, its blocks may begin or end with other stripes' events)
        blk_first = np.maximum(blk_g0, g_start[blk_stripe])
        blk_end = np.minimum(blk_g0 + bs, g_start[blk_stripe] + d.count[blk_stripe])
        # and once for every stripe of a pack: a block of a pack's blobs is read and staged once,
        # through the first of its stripes the batch needs it for (``Directory.blob``)
        staged_of = _pack_blocks_once(d, blk_stripe, blk_local)
        kept = staged_of == np.arange(blocks.size) if staged_of is not None else slice(None)
        r_blocks, r_stripe, r_local = blocks[kept], blk_stripe[kept], blk_local[kept]

        # Runs of consecutive blocks within one stripe: one contiguous read each.
        brk = np.ones(r_blocks.size, dtype=bool)
        brk[1:] = (np.diff(r_blocks) != 1) | (np.diff(r_stripe) != 0)
        run_first = np.flatnonzero(brk)
        run_len = np.diff(np.append(run_first, r_blocks.size))
        run_stripe = r_stripe[run_first]
        run_lo = r_local[run_first]
        run_hi = run_lo + run_len

        # Tiles: window e x staged block k (positions within a pack's block are the blob's: ``phase``).
        tile_e, tile_gb = expand_ranges(gb_lo, nblk)
        tile_k = np.searchsorted(blocks, tile_gb)
        ex_of_tile = need[tile_e]
        first = np.maximum(g_lo[tile_e], blk_first[tile_k])
        last = np.minimum(g_hi[tile_e], blk_end[tile_k] - 1)
        tile_lo = first - blk_g0[tile_k]
        tile_cnt = last - first + 1
        tile_out = offsets[ex_of_tile] + (first - g_lo[tile_e])
        if staged_of is not None:  # the block staged for each tile: its pack's block's first
            tile_k = (np.cumsum(kept) - 1)[staged_of[tile_k]]
    else:
        run_stripe = run_lo = run_hi = np.zeros(0, dtype=np.int64)
        tile_k = tile_lo = tile_cnt = tile_out = ex_of_tile = np.zeros(0, dtype=np.int64)

    staged: dict[str, StagedColumn] = {}
    nbytes = 0
    # every column's blocks in one call: on an object store, one wave of concurrent requests for all
    read = tier.read_blocks_many([c for c, _ in cols], run_stripe, run_lo, run_hi) if run_stripe.size else {}
    for col, project in cols:
        if run_stripe.size:
            (hdr, words, nb), dicts, keys, kept = read[col], read[col].dicts, read[col].dict_keys, read[col].dict_kept
        else:
            hdr, words, nb, dicts, keys, kept = np.zeros((0, 3), dtype=np.int64), np.zeros(1, dtype=np.int64), 0, None, None, 0
        nbytes += nb
        staged[col] = StagedColumn(col, tier.schema[col], hdr, words, ex.tail_values[col], project, dicts, keys, kept)

    return StagedBatch(
        block_size=bs,
        columns=staged,
        offsets=offsets,
        hist_len=h.astype(np.int64),
        tail_src=ex.tail_offsets[:-1] + (ex.tail_len - t),
        tail_len=t.astype(np.int64),
        request_ts=ex.request_ts,
        tile_block=tile_k.astype(np.int64),
        tile_lo=tile_lo.astype(np.int64),
        tile_cnt=tile_cnt.astype(np.int64),
        tile_out=tile_out.astype(np.int64),
        tile_ex=ex_of_tile.astype(np.int64),
        check_leakage=mode,
        nbytes_read=nbytes,
    )
