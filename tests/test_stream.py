"""host/stream.py: examples streamed a unit (row group) at a time, the epoch order every engine shares,
sharding by user across ranks, and resuming from the position in the stream."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gpumat.core.errors import SchemaError
from gpumat.host.prefetch import AffinitySampler
from gpumat.host.stream import ExampleSource, ExampleStream, cluster_by_user, shard_of


def examples(n=997, users=53, seed=0, tails=True):
    rng = np.random.default_rng(seed)
    cols = {"user_id": rng.integers(0, users, n).astype(np.int64), "version": np.ones(n, np.int64),
            "length": np.zeros(n, np.int64), "request_ts": np.arange(n, dtype=np.int64),
            "row_id": np.arange(n, dtype=np.int64)}
    t = pa.table(cols)
    if tails:
        t = t.append_column("tail_ts", pa.array([[i] * (i % 3) for i in range(n)], pa.list_(pa.int64())))
    return t


@pytest.fixture
def files(tmp_path):
    """The same 997 examples in 5 files of 2-3 row groups each, the 3rd file without tails."""
    t = examples()
    paths, lo = [], 0
    for i, n in enumerate([150, 300, 97, 250, 200]):
        part = t.slice(lo, n)
        if i == 2:
            part = part.drop_columns(["tail_ts"])
        p = tmp_path / f"part-{i}.parquet"
        pq.write_table(part, p, row_group_size=110)
        paths.append(str(p))
        lo += n
    return tmp_path, paths, t


def all_rows(stream, epoch=0):
    return [b for b in stream.epoch_rows(epoch)]


def test_units_are_row_groups_and_tails_are_filled_in(files):
    d, paths, t = files
    src = ExampleSource(str(d))
    assert src.num_rows == t.num_rows and src.num_units == 2 + 3 + 1 + 3 + 2
    got = pa.concat_tables([src.read_unit(u) for u in range(src.num_units)])
    assert got.column("row_id").to_pylist() == list(range(t.num_rows))
    tails = got.column("tail_ts").to_pylist()
    for i, tail in enumerate(tails):
        assert tail == ([] if 450 <= i < 547 else [i] * (i % 3))  # the tail-less file: empty tails


def test_every_row_once_batches_in_windows_and_clustered(files):
    d, paths, t = files
    users = t.column("user_id").to_numpy()
    s = ExampleStream(ExampleSource(paths), batch_size=32, window=100, seed=4)
    assert s.window == 128  # a whole number of batches
    batches = all_rows(s)
    assert len(batches) == s.num_batches() == -(-t.num_rows // 32)
    flat = np.concatenate(batches)
    assert np.array_equal(np.sort(flat), np.arange(t.num_rows))
    for w0 in range(0, flat.size, 128):
        seq = users[flat[w0:w0 + 128]]
        assert np.count_nonzero(seq[1:] != seq[:-1]) + 1 == np.unique(seq).size  # one run per user
        for u in np.unique(seq):
            assert np.all(np.diff(flat[w0:w0 + 128][seq == u]) > 0)  # a user's rows in source order
    # the rows a batch names are the rows its table holds
    for k in (0, 3, s.num_batches() - 1):
        rows, table = s.batch(0, k)
        assert table.column("row_id").to_pylist() == rows.tolist()
    assert not np.array_equal(flat, np.concatenate(all_rows(s, 1)))  # a new order each epoch
    same = ExampleStream(ExampleSource(paths), batch_size=32, window=100, seed=4)
    assert all(np.array_equal(a, b) for a, b in zip(batches, all_rows(same)))  # seeded


def test_a_table_streams_like_the_affinity_sampler(files):
    _, _, t = files
    users = t.column("user_id").to_numpy()
    for rank, world in ((0, 1), (1, 3)):
        s = ExampleStream(ExampleSource(t, unit_rows=64), 16, 64, True, 9, False, rank, world)
        sampler = AffinitySampler(users, 16, 64, True, 9, False, rank, world)
        for epoch in (0, 1):
            assert [b.tolist() for b in s.epoch_rows(epoch)] == [b.tolist() for b in sampler.epoch_batches(epoch)]


def test_ranks_split_by_user_hash_and_cover_everything_once(files):
    d, paths, t = files
    users = t.column("user_id").to_numpy()
    per_rank = [np.concatenate(ExampleStream(ExampleSource(paths), 20, 64, True, 1, False, r, 3).epoch_rows(0))
                for r in range(3)]
    flat = np.concatenate(per_rank)
    assert np.array_equal(np.sort(flat), np.arange(t.num_rows))
    for r, rows in enumerate(per_rank):
        assert np.all(shard_of(users[rows], 3) == r)


def test_drop_last_drops_only_the_final_partial_batch(files):
    _, paths, t = files
    s = ExampleStream(ExampleSource(paths), 32, 100, drop_last=True)
    assert s.num_batches() == t.num_rows // 32
    assert all(b.size == 32 for b in s.epoch_rows(0))


def test_bounded_memory_reads_one_window_of_units(files, monkeypatch):
    _, paths, t = files
    src = ExampleSource(paths)
    read = []
    real = src.read_unit

    def spy(u, columns=None):
        read.append(u)
        return real(u, columns)

    monkeypatch.setattr(src, "read_unit", spy)
    s = ExampleStream(src, 16, 64, seed=2)
    for k in range(s.num_batches()):
        s.batch(0, k)
    # every unit is read about once per epoch (those at a window's edges twice), never the whole source at once
    assert len(read) <= src.num_units + 2 * (-(-t.num_rows // 64))
    assert s._cached[3].size <= 64


def test_cluster_by_user():
    u = np.array([5, 7, 5, 9, 7, 5])
    assert cluster_by_user(u).tolist() == [0, 2, 5, 1, 4, 3]
    assert cluster_by_user(u, keys=np.array([6, 5, 4, 3, 2, 1])).tolist() == [5, 2, 0, 4, 1, 3]
    assert cluster_by_user(u[:0]).size == 0


def test_cluster_by_user_keeps_groups_together():
    """With ``groups`` (a pack's users) and a seeded order, each group's users come together, each
    user's rows together and in order; users in no group are groups of their own; every row once.
    Without a seed, the groups by their smallest user (each user its own group: ascending users)."""
    rng = np.random.default_rng(7)
    u = rng.integers(0, 300, 3000)
    gu = np.unique(rng.choice(300, 200, replace=False))
    gg = gu // 16  # runs of neighbouring users: a pack's
    order = cluster_by_user(u, np.random.default_rng(1), None, (gu, gg))
    assert np.array_equal(np.sort(order), np.arange(u.size))
    seq = u[order]
    gid = np.where(np.isin(seq, gu), gg[np.minimum(np.searchsorted(gu, seq), len(gu) - 1)], -1 - seq)
    for arr in (seq, gid):  # contiguous runs: a value never comes back after another one
        starts = arr[np.r_[True, arr[1:] != arr[:-1]]]
        assert len(starts) == len(np.unique(arr))
    for x in np.unique(u):  # a user's rows in their order
        assert (np.diff(order[seq == x]) > 0).all()
    assert len(np.unique(gid)) == len(np.unique(u[~np.isin(u, gu)])) + len(np.unique(gg[np.isin(gu, u)]))
    plain = cluster_by_user(u, None, None, (gu, gg))  # no seed: groups by their smallest user, users ascending
    seq = u[plain]
    gid = np.where(np.isin(seq, gu), gg[np.minimum(np.searchsorted(gu, seq), len(gu) - 1)], -1 - seq)
    starts = gid[np.r_[True, gid[1:] != gid[:-1]]]
    assert len(starts) == len(np.unique(gid)) and np.array_equal(np.sort(plain), np.arange(u.size))
    first_user = [seq[gid == g].min() for g in starts]
    assert first_user == sorted(first_user)
    assert cluster_by_user(u, None, None, (np.arange(400), np.arange(400))).tolist() == cluster_by_user(u).tolist()
    assert cluster_by_user(u, np.random.default_rng(1), None, (gu[:0], gg[:0])).tolist() == \
        cluster_by_user(u, np.random.default_rng(1)).tolist()


def test_bad_sources_are_schema_errors(tmp_path, files):
    _, paths, _ = files
    with pytest.raises(SchemaError, match="examples must be a pyarrow Table"):
        ExampleSource(42)
    with pytest.raises(SchemaError, match="missing column 'user_id'"):
        ExampleSource(pa.table({"x": [1]}))
    pq.write_table(pa.table({"user_id": [1], "version": [1], "length": [0], "request_ts": [1], "extra": [1]}),
                   tmp_path / "extra.parquet")
    with pytest.raises(SchemaError, match="has columns"):
        ExampleSource([paths[0], str(tmp_path / "extra.parquet")])
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(SchemaError, match="cannot read examples from"):
        ExampleSource(str(tmp_path / "junk.parquet"))
    with pytest.raises(SchemaError, match="batch_size"):
        ExampleStream(ExampleSource(paths), 0)
    with pytest.raises(SchemaError, match="rank 3"):
        ExampleStream(ExampleSource(paths), 4, rank=3, world_size=3)


def test_a_table_of_many_chunks_pickles_to_its_own_size():
    """Workers receive the source pickled: a Table of chunks that slice shared buffers (what
    ``concat_tables``/``take`` leave behind) must not pickle every chunk's parent buffers."""
    import pickle

    big = pa.table({"user_id": np.arange(20_000, dtype=np.int64), "x": np.arange(20_000, dtype=np.int64)})
    sliced = pa.concat_tables([big.slice(i, 100) for i in range(0, 20_000, 100)])  # 200 chunks, one parent
    src = ExampleSource(sliced, unit_rows=4096)
    blob = pickle.dumps(src)
    assert len(blob) < 2 * sliced.nbytes + 100_000
    back = pickle.loads(blob)
    assert back.table.equals(sliced) and np.array_equal(back.units, src.units)
