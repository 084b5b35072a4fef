"""The host pipeline stages: data-affinity sampler (clustering, sharding, resume) and the prefetcher."""

import threading
import time

import numpy as np
import pytest

from gpumat.core.errors import PointerError, SchemaError
from gpumat.host.prefetch import AffinitySampler, Prefetcher, StageError, user_clustered_order


def _users(n=1000, nusers=37, seed=0):
    return np.random.default_rng(seed).integers(0, nusers, n)


def test_sampler_covers_every_row_once_and_clusters_users():
    users = _users()
    s = AffinitySampler(users, batch_size=64, window=256, seed=3)
    batches = list(s)
    rows = np.concatenate(batches)
    assert np.array_equal(np.sort(rows), np.arange(users.size))
    # a shuffle window is 256 rows of the epoch order (4 batches): inside it a user's rows are
    # contiguous and keep their original order
    for w0 in range(0, users.size, 256):
        part = rows[w0:w0 + 256]
        seq = users[part]
        changes = np.flatnonzero(seq[1:] != seq[:-1])
        assert len(changes) + 1 == len(np.unique(seq))
        for u in np.unique(seq):
            assert np.all(np.diff(part[seq == u]) > 0)
    # units of 256 input rows in a shuffled order: a window holds rows of at most two units
    for w0 in range(0, users.size, 256):
        assert np.unique(rows[w0:w0 + 256] // 256).size <= 2


def test_sampler_window_is_a_whole_number_of_batches():
    users = _users(500, 11)
    s = AffinitySampler(users, batch_size=30, window=100, shuffle=False)  # window: 100 rows -> 120 (4 batches)
    rows = np.concatenate(list(s))
    for w0 in range(0, users.size, 120):
        seq = users[rows[w0:w0 + 120]]
        assert np.count_nonzero(seq[1:] != seq[:-1]) + 1 == np.unique(seq).size
        assert np.array_equal(np.unique(seq), np.sort(np.unique(seq)))
        assert np.all(np.diff(seq) >= 0)  # no shuffle: users ascending inside a window


def test_sampler_epochs_differ_and_are_seeded():
    users = _users()
    a = AffinitySampler(users, 50, window=200, seed=1)
    b = AffinitySampler(users, 50, window=200, seed=1)
    e0a, e0b = np.concatenate(list(a)), np.concatenate(list(b))
    assert np.array_equal(e0a, e0b)
    e1a = np.concatenate(list(a))
    assert not np.array_equal(e0a, e1a)


def test_sampler_shards_by_user_across_ranks():
    users = _users(2000, 101)
    shards = [np.concatenate(list(AffinitySampler(users, 32, seed=0, rank=r, world_size=3))) for r in range(3)]
    allrows = np.concatenate(shards)
    assert np.array_equal(np.sort(allrows), np.arange(users.size))
    owners = [set(users[s].tolist()) for s in shards]
    assert not (owners[0] & owners[1]) and not (owners[1] & owners[2]) and not (owners[0] & owners[2])


def test_sampler_resume_neither_skips_nor_repeats():
    users = _users()
    full = AffinitySampler(users, 30, window=128, seed=9)
    expected = [b.tolist() for b in full.epoch_batches(0)]
    s = AffinitySampler(users, 30, window=128, seed=9)
    it = iter(s)
    got = [next(it).tolist() for _ in range(7)]
    state = s.state_dict()
    t = AffinitySampler(users, 30, window=128, seed=9)
    t.load_state_dict(state)
    got += [b.tolist() for b in t]
    assert got == expected


def test_prefetcher_keeps_order_with_several_workers():
    def slow(x):
        time.sleep(0.001 * (x % 3))
        return x * x

    assert list(Prefetcher(slow, range(50), depth=4, workers=3)) == [x * x for x in range(50)]


def test_prefetcher_bounds_work_in_flight():
    started = []
    gate = threading.Event()

    def fn(x):
        started.append(x)
        gate.wait(2)
        return x

    p = Prefetcher(fn, range(100), depth=3, workers=2)
    time.sleep(0.2)
    assert len(started) <= 3
    gate.set()
    assert list(p) == list(range(100))


def test_prefetcher_reraises_worker_error_with_where():
    def fn(x):
        if x == 6:
            raise ZeroDivisionError("bad row")
        return x

    p = Prefetcher(fn, range(20), depth=2, name="plan")
    got = []
    with pytest.raises(StageError, match="plan failed on item 6: ZeroDivisionError: bad row"):
        for x in p:
            got.append(x)
    assert got == list(range(6))


def test_prefetcher_keeps_gpumat_error_types():
    def fn(x):
        raise PointerError("length 9 exceeds")

    with pytest.raises(PointerError, match="item 0: length 9 exceeds"):
        list(Prefetcher(fn, range(3)))


def test_prefetcher_close_stops_workers():
    p = Prefetcher(lambda x: x, iter(range(10**9)), depth=2, workers=2)
    assert next(p) == 0
    p.close()
    for t in p._threads:
        assert not t.is_alive()


def test_user_clustered_order():
    rng = np.random.default_rng(0)
    user = rng.integers(0, 30, 1000)
    for window in (None, 100, 7):
        order = user_clustered_order(user, window=window, rng=np.random.default_rng(5))
        assert np.array_equal(np.sort(order), np.arange(1000))
        assert np.array_equal(order, user_clustered_order(user, window=window, rng=np.random.default_rng(5)))
        w = 1000 if window is None else window
        for lo in range(0, 1000, w):
            part = order[lo:lo + w]
            assert np.array_equal(np.sort(part), np.arange(lo, min(lo + w, 1000)))  # windows stay in place
            u = user[part]
            starts = np.flatnonzero(np.r_[True, u[1:] != u[:-1]])
            assert np.unique(u).size == starts.size  # each user contiguous
            for s, e in zip(starts, np.r_[starts[1:], u.size]):
                assert np.all(np.diff(part[s:e]) > 0)  # a user's rows keep their order
    a, b = (user_clustered_order(user, rng=np.random.default_rng(k)) for k in (1, 2))
    assert not np.array_equal(a, b)
    shuffled = user_clustered_order(user, 100, np.random.default_rng(3), shuffle_windows=True)
    assert np.array_equal(np.sort(shuffled), np.arange(1000))
    assert not np.array_equal(shuffled // 100, np.arange(1000) // 100)  # windows moved, each still whole
    assert all(np.unique(shuffled[i:i + 100] // 100).size == 1 for i in range(0, 1000, 100))
    assert user_clustered_order(user[:0]).size == 0
    with pytest.raises(SchemaError):
        user_clustered_order(user, window=0)
