"""host/planner.py: the staged batch of a small tier against a naive computation of every
example's window (SPEC §2), the blocks it reads (only those some window overlaps, each once) and
the bytes it says it read."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from gpumat.core.tenant import Tenant
from gpumat.host.codec import decode_blocks
from gpumat.host.examples import parse_examples
from gpumat.host.planner import plan, staged_columns, window_sizes
from gpumat.host.tier import Tier

SCHEMA = {"ts": "int64", "item_id": "int64", "action": "int32"}
BS = 8  # small blocks: many of them in a small tier
USERS = np.array([3, 5, 11, 12], dtype=np.int64)
TENANTS = (Tenant("pair", ["item_id", "action"], 5), Tenant("ts", ["ts"], 20), Tenant("all", ["item_id"], 1000),
           Tenant("zero", ["item_id"], 0))


@pytest.fixture(scope="module", params=[False, True], ids=["own", "packs"])
def small(request, tmp_path_factory):
    """A tier of one stripe per user (two appends, then compacted: three versions), blocks of 8 events,
    and 60 examples: pointers into every version (an unknown user among them), tails of 0-3 events.
    ``packs``: the short stripes share blobs (the writer made to pack them), else each has its own."""
    from gpumat.host import writer

    rng = np.random.default_rng(7)
    tier = Tier.create(str(tmp_path_factory.mktemp("planner") / "tier"), SCHEMA, block_size=BS)
    ts = 0
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(writer, "PACK_MIN_SAVING", -1.0 if request.param else writer.PACK_MIN_SAVING)
        mp.setattr(writer, "PACK_BELOW", writer.PACK_BELOW if request.param else 0)
        mp.setattr(writer, "PACK_LARGE_BELOW", writer.PACK_LARGE_BELOW if request.param else 0)
        mp.setattr(writer, "PACK_MIN_ROWS", 0)
        for n in (60, 45):
            tier.append(pa.table({"user_id": rng.choice(USERS, n), "ts": ts + np.arange(n),
                                  "item_id": rng.integers(0, 1000, n), "action": rng.integers(0, 5, n).astype(np.int32)}))
            ts += n
        tier.compact()
    assert len(tier.directory()) == USERS.size  # one stripe per user
    assert (tier.directory().skip > 0).any() == request.param  # packed: some after another's events
    B = 60
    u = rng.choice(np.append(USERS, 99), B)
    v = rng.integers(0, tier.version + 1, B)
    have = tier.length_at(u, v)
    n = np.where(rng.random(B) < 0.3, have, (rng.random(B) * (have + 1)).astype(np.int64))  # some whole histories
    m = rng.integers(0, 4, B)
    tails = {c: [list(range(ts + 1, ts + 1 + int(k))) for k in m] for c in SCHEMA}
    table = pa.table({"user_id": u, "version": v, "length": n, "request_ts": np.full(B, ts + 100),
                      **{f"tail_{c}": pa.array(tails[c], pa.list_(pa.int32() if d == "int32" else pa.int64()))
                         for c, d in SCHEMA.items()}})
    return tier, parse_examples(table, SCHEMA)


def naive_window(n: int, m: int, max_len: int) -> tuple[int, int]:
    """(h, t) of SPEC §2, one example at a time: the last t tail events, history positions [n - h, n)."""
    t = min(m, max_len)
    return min(n, max_len - t), t


@pytest.mark.parametrize("tenant", TENANTS, ids=lambda t: t.name)
def test_windows_and_blocks_against_naive(small, tenant):
    tier, ex = small
    staged = plan(tier, ex, tenant, check_leakage=True)
    hist = {int(u): tier.read_history(int(u)) for u in USERS}
    want_h, want_t = zip(*(naive_window(int(n), int(m), tenant.max_len) for n, m in zip(ex.length, ex.tail_len)))
    assert staged.hist_len.tolist() == list(want_h) and staged.tail_len.tolist() == list(want_t)
    assert staged.offsets.tolist() == np.concatenate([[0], np.cumsum(np.add(want_h, want_t))]).tolist()
    assert staged.tail_src.tolist() == (ex.tail_offsets[:-1] + ex.tail_len - np.array(want_t)).tolist()
    assert [c for c, _ in staged_columns(tenant, True)] == list(staged.columns)

    # one stripe per user; a short one may be in a pack, its events from blob position ``skip`` on
    # (a pack's users share their blobs: ``blob``)
    d = tier.directory()
    skip = {int(u): int(d.skip[d.user_stripes(int(u))[0]]) for u in USERS}
    blob = {int(u): int(d.blob[d.user_stripes(int(u))[0]]) for u in USERS}
    needed = {(blob[int(ex.user_id[e])], (skip[int(ex.user_id[e])] + p) // BS) for e in range(ex.size)
              for p in range(int(ex.length[e]) - want_h[e], int(ex.length[e]))}
    block_of = {}  # staged block -> (blobs, block of the blobs), from the tiles
    K = staged.columns["ts"].hdr.shape[0]  # every staged column has the same blocks
    used = np.zeros(K, dtype=np.int64)
    np.maximum.at(used, staged.tile_block, staged.tile_lo + staged.tile_cnt)
    start = np.cumsum(used) - used
    assert all(col.hdr.shape == (K, 3) for col in staged.columns.values())
    dense = {c: decode_blocks(col.hdr, col.words, used) for c, col in staged.columns.items()}
    for e in range(ex.size):
        n, h, u = int(ex.length[e]), want_h[e], int(ex.user_id[e])
        tiles = np.flatnonzero(staged.tile_ex == e)
        tiles = tiles[np.argsort(staged.tile_out[tiles])]
        assert int(staged.tile_cnt[tiles].sum()) == h
        out = int(staged.offsets[e])
        for i in tiles:  # in order, back to back from the example's first output position
            assert staged.tile_out[i] == out
            first = n - h + (out - int(staged.offsets[e]))  # history position of the tile's first event
            q = skip[u] + first  # its position in the stripe's blobs
            assert staged.tile_lo[i] == q % BS
            k, cnt = int(staged.tile_block[i]), int(staged.tile_cnt[i])
            assert block_of.setdefault(k, (blob[u], q // BS)) == (blob[u], q // BS)
            lo = int(start[k] + staged.tile_lo[i])
            for c in staged.columns:
                assert dense[c][lo : lo + cnt].tolist() == hist[u][c][first : first + cnt].tolist(), (e, c)
            out += cnt
    # Only the blocks some window overlaps, each once (data affinity; a pack's, once for its users).
    assert set(block_of.values()) == needed and len(block_of) == K == len(needed)


def test_nbytes_read_is_what_the_staged_blocks_hold(small):
    tier, ex = small
    for tenant in TENANTS:
        for check in (True, False):
            staged = plan(tier, ex, tenant, check_leakage=check)
            # format 3: the pages of the staged blocks: at least a tag byte per block, at most the stored blobs
            low = sum(col.hdr.shape[0] for col in staged.columns.values())
            high = sum(int(tier._reader.blob_bytes(c).sum()) for c in staged.columns)
            assert low <= staged.nbytes_read <= high, (tenant, check)
    pair = plan(tier, ex, TENANTS[0], check_leakage=True)
    assert list(pair.columns) == ["item_id", "action", "ts"] and not pair.columns["ts"].project
    unchecked = plan(tier, ex, TENANTS[0], check_leakage=False)
    assert list(unchecked.columns) == ["item_id", "action"]
    assert 0 < unchecked.nbytes_read < pair.nbytes_read  # no ts read without the leakage check


def test_no_history_reads_nothing(small):
    tier, ex = small
    for tenant in (TENANTS[3], Tenant("t", ["item_id"], 3)):
        staged = plan(tier, parse_examples(ex.table.set_column(2, "length", pa.array(np.zeros(ex.size, np.int64))),
                                           SCHEMA) if tenant.max_len else ex, tenant)
        assert staged.nbytes_read == 0 and staged.num_tiles == 0
        assert all(col.hdr.shape == (0, 3) and col.words.tolist() == [0] for col in staged.columns.values())
        assert staged.tail_len.tolist() == np.minimum(ex.tail_len, tenant.max_len).tolist()


def test_window_sizes_truncate_tail_first(small):
    _, ex = small
    for L in (0, 1, 3, 50):
        h, t = window_sizes(ex, L)
        assert (t == np.minimum(ex.tail_len, L)).all() and (h + t <= L).all()
        assert (h == np.minimum(ex.length, L - t)).all()
