"""The plain-PyTorch peer on PATCH and RUN blocks staged from a real tier.

The tier's encoder picks RUN for sorted timestamps with many repeats and PATCH for a column of
mostly zeros with rare larger values; the planner stages them as it does for training. The
peer must agree with the contract's own lane formula (``gpumat.core.staged.decode_values``) and
with the reference backend, whether it takes the aux path because a column has such blocks or
because the batch does not say (a device batch without ``known_aux``: every column, every width).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from gpumat.core.staged import AUX_FLAG, AUX_PATCH, AUX_RUN, decode_values
from gpumat.core.tenant import Tenant
from gpumat.host.examples import parse_examples
from gpumat.host.planner import plan
from gpumat.host.reference import materialize_staged_reference
from gpumat.host.tier import Tier
from gpumat.kernels.pt_decode_gather import materialize_staged_torch

SCHEMA = {"ts": "int64", "action": "int32", "dur": "int64"}
USERS = np.arange(1, 9, dtype=np.int64)


def make_tier(path, block_size: int, seed: int = 0):
    """Two appends of 8 users' events: ts sorted with repeats (sessions), action 80% zeros, dur
    lognormal with rare huge outliers (wide exceptions); then examples with pointers into both
    versions, short tails and request times that some histories leak past."""
    rng = np.random.default_rng(seed)
    tier = Tier.create(str(path), SCHEMA, block_size=block_size)
    t0 = 1_700_000_000
    for n in (5000, 3000):
        user = np.sort(rng.choice(USERS, n))
        ts = t0 + np.cumsum(rng.integers(0, 60, n) * (rng.random(n) < 0.2))
        t0 = int(ts[-1]) + 1
        action = np.where(rng.random(n) < 0.8, 0, rng.integers(1, 8, n)).astype(np.int32)
        dur = rng.lognormal(3.0, 1.5, n).astype(np.int64) + (rng.random(n) < 0.01) * rng.integers(1 << 30, 1 << 36, n)
        tier.append(pa.table({"user_id": user, "ts": ts, "action": action, "dur": dur}))
    B = 40
    u = rng.choice(USERS, B)
    v = rng.integers(1, tier.version + 1, B)
    have = tier.length_at(u, v)
    n = np.where(rng.random(B) < 0.5, have, (rng.random(B) * (have + 1)).astype(np.int64))
    m = rng.integers(0, 4, B)
    tails = {c: [list(range(t0 + 1, t0 + 1 + int(k))) for k in m] for c in SCHEMA}
    request_ts = np.where(rng.random(B) < 0.7, t0 + 100, rng.integers(1_700_000_000, t0, B))
    table = pa.table({"user_id": u, "version": v, "length": n, "request_ts": request_ts,
                      **{f"tail_{c}": pa.array(tails[c], pa.list_(pa.int32() if d == "int32" else pa.int64()))
                         for c, d in SCHEMA.items()}})
    return tier, parse_examples(table, SCHEMA)


def contract_values(staged):
    """Every projected column of ``staged`` through ``decode_values`` per tile (DICT blocks looked up
    in the column's dictionaries), plus the tails."""
    out = {}
    for name, col, _ in staged.passes():
        if not col.project:
            continue
        v = np.empty(staged.total, dtype=np.int64)
        for t in range(staged.num_tiles):
            lo, cnt, dst = int(staged.tile_lo[t]), int(staged.tile_cnt[t]), int(staged.tile_out[t])
            k = lo + np.arange(cnt)
            v[dst : dst + cnt] = decode_values(col.hdr, col.words, np.full(cnt, staged.tile_block[t]), k, col.dicts)
        for e in range(staged.batch_size):
            m, src = int(staged.tail_len[e]), int(staged.tail_src[e])
            dst = int(staged.offsets[e] + staged.hist_len[e])
            v[dst : dst + m] = col.tail_values[src : src + m]
        out[name] = v.astype(col.dtype)
    return out


def aux_kinds(col) -> set[int]:
    """The kinds (``AUX_PATCH``, ``AUX_RUN``) of a staged column's aux blocks."""
    meta = col.hdr[:, 2]
    off = meta[(meta & AUX_FLAG) != 0] >> 8
    return set((col.words[off - 1] & 3).tolist())


@pytest.mark.parametrize("max_len", [5, 200, 100_000])
def test_torch_peer_decodes_patch_and_run_from_a_tier(tmp_path, max_len):
    tier, ex = make_tier(tmp_path / "tier", 128)
    staged = plan(tier, ex, Tenant("t", ["ts", "action", "dur"], max_len), check_leakage=True)
    assert aux_kinds(staged.columns["ts"]) >= {AUX_RUN}, "sorted, repeated ts: RUN blocks expected"
    assert aux_kinds(staged.columns["action"]) >= {AUX_PATCH}, "mostly zeros: PATCH blocks expected"
    assert staged.aux("ts") & AUX_RUN and staged.aux("action") & AUX_PATCH
    want = contract_values(staged)
    ref, ref_viol = materialize_staged_reference(staged)
    dev = staged.to("cpu")
    for known in (True, False):  # the aux path where the host says so, then on every column
        if not known:
            dev.known_aux = None
        every = lambda c: AUX_PATCH | AUX_RUN | 8 | 16 | (4 if staged.columns[c].dicts is not None else 0)  # noqa: E731
        assert all(dev.aux(c) == (staged.aux(c) if known else every(c)) for c in SCHEMA)
        got, viol = materialize_staged_torch(dev)
        assert set(got) == set(want)
        for c in want:
            assert got[c].dtype == getattr(torch, SCHEMA[c])
            np.testing.assert_array_equal(got[c].numpy(), want[c], err_msg=f"{c} vs decode_values, known={known}")
            np.testing.assert_array_equal(got[c].numpy(), ref[c], err_msg=f"{c} vs reference, known={known}")
        np.testing.assert_array_equal(viol.numpy().astype(bool), ref_viol)
    assert 0 < ref_viol.sum() < staged.batch_size


def test_torch_peer_forced_aux_path_on_plain_blocks(tmp_path):
    """A tier of 256-value blocks has no PATCH / RUN blocks; a device batch that does not say so
    takes the aux path over 256 lanes (past the four prefix bytes) and must still be exact."""
    tier, ex = make_tier(tmp_path / "tier", 256, seed=1)
    staged = plan(tier, ex, Tenant("t", ["ts", "action", "dur"], 600), check_leakage=False)
    assert not any(staged.aux(c) for c in staged.columns)
    dev = staged.to("cpu")
    dev.known_aux = None
    got, _ = materialize_staged_torch(dev)
    want = contract_values(staged)
    for c in want:
        np.testing.assert_array_equal(got[c].numpy(), want[c], err_msg=c)
