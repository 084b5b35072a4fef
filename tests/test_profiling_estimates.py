"""The measuring scripts' own logic: what their figures rest on (the copies as pieces of
``profiling/stripe_tables_estimate.py``, the ``replay`` variant and ``--dataset EVENTS.parquet`` of
``profiling/short_histories.py``, the logs of ``profiling/synthetic_logs.py``)."""

from __future__ import annotations

import os
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gpumat.core.errors import GpumatError

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "profiling"))

import stripe_tables_estimate as re_  # noqa: E402

from gpumat.host import pages  # noqa: E402
import short_histories as sh  # noqa: E402
import synthetic_logs as sl  # noqa: E402


def _with_replays(rng, n: int, alphabet: int) -> list:
    x = rng.integers(0, alphabet, n).tolist()
    for _ in range(n // 10):  # runs copied from earlier, some overlapping earlier copies
        s = int(rng.integers(1, n))
        a = int(rng.integers(0, s))
        k = int(rng.integers(1, 20))
        x[s:s + k] = x[a:a + min(k, s - a)][: n - s]
        x = x[:n]
    return x


@pytest.mark.parametrize("m", [1, 2, 4, 7])
def test_copy_parse_gives_every_history_back(m):
    rng = np.random.default_rng(m)
    for trial in range(60):
        n = int(rng.integers(0, 300))
        x = _with_replays(rng, n, int(rng.integers(1, 50)))
        n = len(x)  # (a copy may shorten the list)
        window = int(rng.integers(1, 400))
        lit, _, codes = pages.literal_tables(np.array(x, np.int64), np.array([n]), m, window)
        pieces = re_.pieces(codes, m)
        assert re_.literal_index(pieces, m) == codes.tolist() and lit[codes].tolist() == x
        assert sum(p[0] for p in pieces) == len(lit)
        for run, extra, back, start, src in pieces:
            if back:  # a copy's source: a run of literals at most `window` back, before the copy's literals end
                assert 0 < back <= window and src + extra + m <= len(lit) and extra >= 0
        # the read estimate: never more blocks than there are, the whole history reads every block
        nb, plain = re_.window_blocks(n, pieces, m, n)
        assert nb == -(-len(lit) // re_.BS) and plain == (-(-n // re_.BS) if n else 1)


def test_copies_shrink_a_replayed_history():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 1000, 100).tolist() * 10
    lit, _, codes = pages.literal_tables(np.array(x, np.int64), np.array([len(x)]), 4, 4096)
    pieces = re_.pieces(codes, 4)
    # a copy's source is literals only (never the copy itself, as LZ77's overlapping matches are):
    # nine copies of the hundred literals
    assert len(lit) == 100 and [(p[1] + 4, p[2]) for p in pieces] == [(100, 100)] * 9


def _events(users: int, per: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    u = np.repeat(np.arange(users, dtype=np.int64), per)
    return pa.table({"user_id": u, "ts": np.arange(len(u), dtype=np.int64),
                     "item_id": rng.integers(0, 500, len(u)).astype(np.int64),
                     "rating": rng.integers(1, 6, len(u)).astype(np.int32)})


def test_replay_variant_copies_within_each_user_only():
    ev = _events(30, 200)
    out = sh.VARIANTS["replay"](ev, np.random.default_rng(1))
    before, after = sh._col(ev, "item_id"), sh._col(out, "item_id")
    u = sh._col(ev, "user_id")
    assert (after != before).mean() > 0.2
    for user in range(30):
        m = u == user
        assert set(after[m]) <= set(before[m])  # every item is one the user had
        assert (after[m][:24] == before[m][:24]).all()  # no replay before 2 x 12 events
    for c in ("user_id", "ts", "rating"):
        assert out.column(c).equals(ev.column(c))


def test_favourites_variant_keeps_each_user_to_a_few():
    ev = _events(50, 400)
    out = sh.VARIANTS["favourites"](ev, np.random.default_rng(1))
    v, u = sh._col(out, "rating"), sh._col(out, "user_id")
    top5 = [np.sort(np.bincount(v[u == k]))[-5:].sum() / 400 for k in range(50)]
    assert min(top5) > 0.8 and v.min() >= 0 and v.max() < 2000


def test_events_from_a_parquet_file(tmp_path):
    rng = np.random.default_rng(2)
    n = 500
    path = str(tmp_path / "ev.parquet")
    pq.write_table(pa.table({"user_id": rng.integers(0, 20, n).astype(np.int32), "ts": rng.integers(0, 50, n),
                             "clicks": rng.integers(0, 3, n).astype(np.int8),
                             "score": rng.integers(0, 9, n).astype(np.int32),
                             "name": ["x"] * n}), path)
    ev = sh.load_events(path)
    assert ev.column_names == ["user_id", "ts", "clicks", "score"]
    assert [str(f.type) for f in ev.schema] == ["int64", "int64", "int64", "int32"]
    key = list(zip(sh._col(ev, "user_id").tolist(), sh._col(ev, "ts").tolist()))
    assert key == sorted(key) and ev.num_rows == n
    r = sh.measure(ev, str(tmp_path / "work"))
    assert r["events"] == n and set(r["column_x_parquet"]) == {"ts", "clicks", "score"}


@pytest.mark.parametrize("kind", sorted(sl.KINDS))
def test_synthetic_logs_have_their_shapes(kind):
    """Each log as its docstring says: seeded, each user's times rising, a category or author that
    follows its item, the mixes and lengths of the datasets they stand for."""
    t = sl.KINDS[kind](np.random.default_rng(0))
    assert t.equals(sl.KINDS[kind](np.random.default_rng(0)))
    u, ts, item = (t.column(c).to_numpy() for c in ("user_id", "ts", "item_id"))
    first = np.r_[0, np.flatnonzero(u[1:] != u[:-1]) + 1]
    assert len(np.unique(u)) == len(first)  # each user's events together, in time order
    assert (np.diff(ts)[np.diff(u) == 0] > 0).all()
    follows = {"sessions": "category", "taobao": "category", "hashed": "author_id"}[kind]
    pairs = np.unique(np.stack([item, t.column(follows).to_numpy()]), axis=1)
    assert len(np.unique(pairs[0])) == pairs.shape[1]  # one category (author) an item
    mean = t.num_rows / len(first)
    assert {"sessions": 4 < mean < 7, "taobao": 80 < mean < 130, "hashed": 60 < mean < 120}[kind]
    if kind == "taobao":
        share = np.bincount(t.column("behavior").to_numpy()) / t.num_rows
        assert np.allclose(share, [0.895, 0.055, 0.03, 0.02], atol=0.005)
    if kind == "hashed":
        assert abs(t.column("click").to_numpy().mean() - 0.15) < 0.005 and item.min() < -(2**60) < 2**60 < item.max()


def test_l2_model_command_prices_the_batches(tmp_path):
    """``profiling/l2_model.py``: the bench batch's floor is its profile's time times its L2 share (the
    calibration), and the ceiling against the D2D copy follows from the batch's bytes."""
    import json

    import l2_model

    out = tmp_path / "l2.json"
    r = l2_model.main(["--tenants", "long", "--sets", "bench", "--codes", "uniform", "--sms", "1", "--json", str(out)])
    row = json.loads(out.read_text())["rows"][0]
    assert row == json.loads(json.dumps(r["rows"][0]))
    assert abs(row["l2_floor_us"] - 0.9181 * 76.29) < 0.01 and row["bytes_moved"] == 141_680_752
    assert abs(row["ceiling_pct_of_d2d"] - 100 * 141_680_752 / (70.04e-6 * 4250e9)) < 0.1
    assert abs(row["ceiling_by_requests_pct_of_d2d"] - row["ceiling_pct_of_d2d"]) < 0.1  # (both fitted to this batch)


def test_l2_model_on_a_planned_batch(tmp_path):
    """The L2 model on a batch the planner stages from a tier (segment dictionaries back to back, each
    DICT block's base where its own starts): every DICT tile's indices are the reference decode's;
    this small tier's item ids are mostly PATCH blocks of codes (a dictionary under 2^16 entries, in
    frequency order), which the model refuses rather than miscounts."""
    import static_real

    from gpumat.bench import l2
    from gpumat.host.workloads import synthetic_workload
    from gpumat.ops import decode_gather

    w = synthetic_workload(str(tmp_path / "tier"), scale=0.05, seed=3, days=3, progress=False)
    st = static_real.planned(w.tier, 4096, 12, columns=("item_id", "action"))
    ref, _ = decode_gather(st, "reference")
    col, kinds = st.columns["item_id"], {"dict": 0, "plain": 0, "other": 0}
    assert col.dicts is not None
    for t in range(len(st.tile_block)):
        try:
            idx = l2.block_codes(col, int(st.tile_block[t]), st.block_size)
        except GpumatError:
            kinds["other"] += 1
            continue
        if idx is None:
            kinds["plain"] += 1
            continue
        lo, cnt, row = int(st.tile_lo[t]), int(st.tile_cnt[t]), int(st.tile_out[t])
        assert np.array_equal(ref["item_id"].numpy()[row:row + cnt], col.dicts[idx[lo:lo + cnt]])
        kinds["dict"] += 1
    assert kinds["dict"] > 0 and kinds["other"] > 0, kinds
    with pytest.raises(GpumatError, match="not modelled"):
        l2.simulate(st, n_sms=132, l1_kib=224, seq=2)
