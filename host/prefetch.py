"""Host pipeline stages: a data-affinity sampler and a bounded background prefetcher.

``AffinitySampler`` orders an epoch of examples into batches in which a user's examples sit
together (within a shuffle window), so the planner reads each of the user's blocks once per batch,
and shards examples across ranks by user hash, so a user's examples never straddle ranks: the
order ``Materializer.iterate`` streams (``host.stream``), computed in memory from the user ids.

``Prefetcher`` runs a stage function over a stream of work items in background threads with a
bounded queue (``depth`` items in flight), yields results in order, re-raises a worker's exception
in the consumer with the item it failed on, and shuts down cleanly on ``close()`` or when the
consumer stops early.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from gpumat.core.errors import GpumatError, SchemaError
from gpumat.host.stream import shard_of  # noqa: F401  (re-exported: the rank of a user)


def user_clustered_order(user_ids, window: int | None = None, rng: np.random.Generator | None = None,
                         shuffle_windows: bool = False) -> np.ndarray:
    """A permutation of rows that makes each user's rows contiguous inside every window (data affinity).

    Rows are cut into consecutive windows of ``window`` rows (None: one window). Inside a window
    each user's rows keep their input order; the users come in a random order drawn from ``rng``
    (ascending user id when ``rng`` is None). The windows keep their order (a time-ordered stream
    stays roughly time-ordered: a shuffle buffer), or, with ``shuffle_windows``, come in a random
    order drawn from ``rng``.

    >>> user_clustered_order(np.array([5, 7, 5, 9, 7, 5])).tolist()  # users ascending, input order inside
    [0, 2, 5, 1, 4, 3]
    >>> order = user_clustered_order(np.array([5, 7, 5, 9, 7, 5]), rng=np.random.default_rng(0))
    >>> np.array([5, 7, 5, 9, 7, 5])[order].tolist()
    [7, 7, 9, 5, 5, 5]
    """
    if window is not None and (isinstance(window, bool) or int(window) < 1):
        raise SchemaError(f"user_clustered_order: window must be >= 1 or None, got {window!r}")
    user = np.asarray(user_ids, dtype=np.int64)
    n = user.size
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    rows = np.arange(n, dtype=np.int64)
    win = rows // int(window) if window else np.zeros(n, dtype=np.int64)
    _, group = np.unique(np.stack([win, user]), axis=1, return_inverse=True)  # (window, user), sorted
    group = group.reshape(-1)
    n_groups = int(group.max()) + 1
    user_rank = rng.permutation(n_groups) if rng is not None else np.arange(n_groups)
    win_rank = rng.permutation(int(win[-1]) + 1)[win] if shuffle_windows and rng is not None else win
    return np.lexsort((rows, user_rank[group], win_rank))


def dist_rank_world() -> tuple[int, int]:
    """(rank, world size) of ``torch.distributed`` when initialized, else (0, 1)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class AffinitySampler:
    """Batches of example row indices in the streamed epoch order (``host.stream``), from user ids in memory.

    The order of ``Materializer.iterate`` over a Table with these user ids, computed in one go:
    units of ``window`` rows (in a seeded random order when ``shuffle``), this rank's rows
    (``hash(user) % world == rank``) cut into windows of ``window`` rows rounded up to a multiple
    of ``batch_size``, each window grouped by user (users in a seeded random order, a user's rows
    in their original order; ``groups``: the users of a pack together, ``Tier.pack_groups()``)
    and cut into batches. ``state_dict()`` records the epoch and the
    number of batches already handed out, so a resumed loader neither skips nor repeats rows.

    >>> s = AffinitySampler(np.array([5, 1, 5, 2, 1, 5]), batch_size=4, window=6, shuffle=False)
    >>> [b.tolist() for b in s]
    [[1, 4, 3, 0], [2, 5]]
    """

    def __init__(self, user_ids, batch_size: int, window: int = 65536, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = False, rank: int | None = None, world_size: int | None = None, groups=None):
        if batch_size <= 0 or window <= 0:
            raise SchemaError(f"batch_size and window must be positive, got {batch_size}, {window}")
        self.user_ids = np.asarray(user_ids, dtype=np.int64)
        self.batch_size = int(batch_size)
        self.window = int(window)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.drop_last = drop_last
        if rank is None or world_size is None:
            rank, world_size = dist_rank_world()
        if not 0 <= rank < world_size:
            raise SchemaError(f"rank {rank} is not in [0, {world_size})")
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self._served = 0  # batches of the current epoch already handed out
        self._stream = None
        self.groups = groups  # (users, group) kept together (``Tier.pack_groups()``: a pack's users)

    @property
    def stream(self):
        if self._stream is None:
            import pyarrow as pa

            from gpumat.host.stream import ExampleSource, ExampleStream

            source = ExampleSource(pa.table({"user_id": self.user_ids}), unit_rows=self.window)
            self._stream = ExampleStream(source, self.batch_size, self.window, self.shuffle, self.seed,
                                         self.drop_last, self.rank, self.world_size, groups=self.groups)
        return self._stream

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self._served = 0

    def epoch_batches(self, epoch: int | None = None) -> list[np.ndarray]:
        """Every batch of ``epoch`` (default: the current one) for this rank, in order."""
        return self.stream.epoch_rows(self.epoch if epoch is None else int(epoch))

    def __len__(self) -> int:
        return self.stream.num_batches()

    def __iter__(self):
        batches = self.epoch_batches()
        while self._served < len(batches):
            b = batches[self._served]
            self._served += 1
            yield b
        self.epoch += 1
        self._served = 0

    def _groups_digest(self) -> str | None:
        """A digest of ``groups`` (None without): a state saved with other groups orders otherwise."""
        from gpumat.host.stream import groups_digest

        return groups_digest(self.groups)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "served": self._served, "seed": self.seed, "rank": self.rank,
                "world_size": self.world_size, "batch_size": self.batch_size, "window": self.window,
                "groups": self._groups_digest()}

    def load_state_dict(self, state: dict) -> None:
        for key in ("seed", "world_size", "batch_size", "window"):
            if state[key] != getattr(self, key):
                raise SchemaError(f"sampler state has {key}={state[key]}, this sampler {getattr(self, key)}")
        if state.get("groups") != self._groups_digest():
            raise SchemaError(f"sampler state was saved with groups {state.get('groups')}, this sampler has "
                              f"{self._groups_digest()}: its batches would not be the ones it counted")
        self.epoch, self._served = int(state["epoch"]), int(state["served"])


class StageError(GpumatError):
    """A background pipeline stage failed; the message says which stage and which item."""


_DONE = object()


@dataclass
class _Failure:
    where: str
    exc: BaseException


class Prefetcher:
    """Apply ``fn`` to ``items`` in ``workers`` background threads, ``depth`` results ahead, in order.

    Iterating yields ``fn(item)`` for each item in order. A worker's exception is re-raised in the
    consumer as ``StageError`` (chained to the original; a ``GpumatError`` is re-raised as itself
    with the stage and item added to its message) once the items before it were consumed.
    ``describe(i, item)`` names item ``i`` in that message (default ``"item i"``): a caller that
    knows more (the batch of an epoch, its rows) says so.
    """

    def __init__(self, fn, items, depth: int = 2, workers: int = 1, name: str = "stage", describe=None):
        self.fn, self.name = fn, name
        self._describe = describe or (lambda i, item: f"item {i}")
        self._items = iter(items)
        self._depth = max(1, int(depth))
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._next_index = 0
        self._results: dict[int, object] = {}
        self._cond = threading.Condition()
        self._slots = threading.Semaphore(self._depth)
        self._finished_at: int | None = None
        self._threads = [threading.Thread(target=self._work, name=f"gpumat-{name}-{i}", daemon=True) for i in range(max(1, workers))]
        for t in self._threads:
            t.start()
        self._consumed = 0

    def _take(self):
        with self._lock:
            if self._stop.is_set():
                return None
            try:
                item = next(self._items)
            except StopIteration:
                return None
            except BaseException as e:  # the item source itself failed
                i = self._next_index
                self._next_index += 1
                return i, _Failure(f"{self.name}: reading item {i}", e)
            i = self._next_index
            self._next_index += 1
            return i, item

    def _work(self):
        while not self._stop.is_set():
            while not self._slots.acquire(timeout=0.1):
                if self._stop.is_set():
                    return
            taken = self._take()
            if taken is None:
                self._slots.release()
                with self._cond:
                    self._finished_at = self._next_index if self._finished_at is None else min(self._finished_at, self._next_index)
                    self._cond.notify_all()
                return
            i, item = taken
            if isinstance(item, _Failure):
                result = item
            else:
                try:
                    result = self.fn(item)
                except BaseException as e:
                    try:
                        where = self._describe(i, item)
                    except Exception:  # a broken describe must not hide the stage's own error
                        where = f"item {i}"
                    result = _Failure(f"{self.name} failed on {where}", e)
            with self._cond:
                self._results[i] = result
                self._cond.notify_all()

    def __iter__(self):
        return self

    def __next__(self):
        with self._cond:
            while self._consumed not in self._results:
                if self._finished_at is not None and self._consumed >= self._finished_at:
                    break
                self._cond.wait(timeout=0.1)
            result = self._results.pop(self._consumed, _DONE)
        if result is _DONE:
            # close() outside the lock: it joins the workers, and a worker that is leaving takes
            # the lock to record where the items ended (joining under it waited out the timeout).
            self.close()
            raise StopIteration
        self._consumed += 1
        self._slots.release()
        if isinstance(result, _Failure):
            self.close()
            exc = result.exc
            if isinstance(exc, GpumatError):
                # Keep the type (and attributes such as LeakageError.indices) so callers can catch it;
                # say where it happened.
                exc.args = (f"{result.where}: {exc.args[0] if exc.args else ''}",) + tuple(exc.args[1:])
                raise exc
            raise StageError(f"{result.where}: {type(exc).__name__}: {exc}") from exc
        return result

    def close(self) -> None:
        """Stop the workers (they finish the item in hand) and drop buffered results."""
        self._stop.set()
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(timeout=5)
        with self._cond:
            self._results.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        self._stop.set()

