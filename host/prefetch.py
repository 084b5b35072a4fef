"""Host pipeline stages: a data-affinity sampler and a bounded background prefetcher.

``AffinitySampler`` orders an epoch of examples into batches in which a user's examples sit
together (within a shuffle window), so the planner reads each of the user's blocks once per batch,
and shards examples across ranks by user hash, so a user's examples never straddle ranks.

``Prefetcher`` runs a stage function over a stream of work items in background threads with a
bounded queue (``depth`` items in flight), yields results in order, re-raises a worker's exception
in the consumer with the item it failed on, and shuts down cleanly on ``close()`` or when the
consumer stops early.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from gpumat.errors import GpumatError, SchemaError


def _mix_hash(x: np.ndarray) -> np.ndarray:
    """splitmix64 of int64 keys: a stable hash for sharding users across ranks (same on every host)."""
    z = x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def dist_rank_world() -> tuple[int, int]:
    """(rank, world size) of ``torch.distributed`` when initialized, else (0, 1)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class AffinitySampler:
    """Batches of example row indices, user-clustered, sharded by user hash, resumable.

    Each epoch: this rank's rows (``hash(user) % world == rank``) are cut into shuffle windows of
    ``window`` rows (in a seeded random order of windows when ``shuffle``); inside a window the
    rows are grouped by user (users in a seeded random order, a user's rows in their original
    order), then cut into batches of ``batch_size``. ``state_dict()`` records the epoch and the
    number of batches already handed out, so a resumed loader neither skips nor repeats rows.

    >>> s = AffinitySampler(np.array([5, 1, 5, 2, 1, 5]), batch_size=4, window=6, shuffle=False)
    >>> [b.tolist() for b in s]
    [[1, 4, 3, 0], [2, 5]]
    """

    def __init__(self, user_ids, batch_size: int, window: int = 65536, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = False, rank: int | None = None, world_size: int | None = None):
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

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self._served = 0

    def epoch_batches(self, epoch: int | None = None) -> list[np.ndarray]:
        """Every batch of ``epoch`` (default: the current one) for this rank, in order."""
        epoch = self.epoch if epoch is None else epoch
        rows = np.flatnonzero(_mix_hash(self.user_ids) % np.uint64(self.world_size) == np.uint64(self.rank))
        rng = np.random.default_rng([self.seed, epoch])
        starts = np.arange(0, rows.size, self.window)
        if self.shuffle:
            starts = rng.permutation(starts)
        order = []
        for s in starts:
            win = rows[s : s + self.window]
            users = self.user_ids[win]
            uniq, inv = np.unique(users, return_inverse=True)
            rank_of_user = rng.permutation(uniq.size) if self.shuffle else np.arange(uniq.size)
            order.append(win[np.lexsort((np.arange(win.size), rank_of_user[inv]))])
        flat = np.concatenate(order) if order else np.zeros(0, dtype=np.int64)
        cut = np.arange(self.batch_size, flat.size, self.batch_size)
        batches = np.split(flat, cut) if flat.size else []
        if self.drop_last and batches and batches[-1].size < self.batch_size:
            batches = batches[:-1]
        return batches

    def __len__(self) -> int:
        return len(self.epoch_batches())

    def __iter__(self):
        batches = self.epoch_batches()
        while self._served < len(batches):
            b = batches[self._served]
            self._served += 1
            yield b
        self.epoch += 1
        self._served = 0

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "served": self._served, "seed": self.seed, "rank": self.rank,
                "world_size": self.world_size, "batch_size": self.batch_size, "window": self.window}

    def load_state_dict(self, state: dict) -> None:
        for key in ("seed", "world_size", "batch_size", "window"):
            if state[key] != getattr(self, key):
                raise SchemaError(f"sampler state has {key}={state[key]}, this sampler {getattr(self, key)}")
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

