"""``engine="ray"``: the host stages of ``Materializer.iterate`` as a Ray Data pipeline.

An epoch is a Dataset of batch indices ``(rank, k)`` (``from_items``, in epoch order) mapped by an
actor pool (``map_batches`` with ``concurrency=workers``, one CPU each): every actor holds a
``host.workers.BatchProducer`` per rank (the tier opened once, each rank's window cache) and
turns item ``(rank, k)`` into a packed message (header + one byte buffer: the staged batch, or on
a CPU training device the finished jagged arrays). The trainer wraps the buffers without copying
(they sit in Ray's object store). The schedule is the one every engine uses (``host.stream``), so
the batches, their order and ``state_dict`` are the same as with ``thread`` and ``process``.

One trainer (``world_size == 1``) reads its pipeline with ``iter_batches`` in order
(``preserve_order``). Several trainers share ONE pipeline (``SharedRayFeed``): a small named
actor, the *router*, runs it and hands each rank exactly its batches, in order.

Why a router and not ``Dataset.streaming_split(n)``. ``streaming_split`` gives blocks to whichever
split asks (``equal=True`` balances row counts and drops the remainder); ``OutputSplitter``
says "does not provide any ordering guarantees" (Ray 2.60: it dispatches greedily to the split
that has received the fewest rows). Our ranks own users by hash (``splitmix64(user) % world``), so
a rank must get *its* batches, and in its order: that is what makes every engine's batches
identical, and ``state_dict`` a position that resumes on any engine. A per-rank ``split`` of the
item dataset cannot share one actor pool (each split is its own execution). So the router runs
the single Dataset and routes by content: the items are interleaved ``(k, rank)``, the output
keeps that order, and row ``i`` of the output is item ``i``; the router never touches the data, it
passes each rank the ObjectRef of the block holding its batch (each rank maps it from the local
object store, zero-copy). The cost: routing is static, not work-stealing (the slowest rank paces
the pipeline: at most ``depth + 1`` unfetched batches per rank, then the router stops pulling and
Ray Data's own backpressure stops the actors), which synchronous data-parallel training imposes
anyway; and one actor call per batch (about a millisecond, hidden by ``depth`` calls in flight).

Ranks find the router by name in the ``"gpumat"`` namespace: ``ray_options={"feed": name}``, or by
default a digest of everything that defines the epoch (tier, version, tenants, source, batch
size, window, seed, world size, epoch), so the ranks of one job meet without talking to each
other. Two concurrent jobs with identical settings on one cluster must pass distinct ``feed``
names (a rank that joins twice is an error that says so). The router is created by the first rank
to arrive, starts the pipeline once every rank has joined (each with its own start batch, so a
resumed epoch works), and is killed by the last rank to leave.

Sources: a Table or Parquet paths, as for the other engines, or a ``ray.data.Dataset`` (its blocks
are the units; they stay in Ray's object store, each actor fetches the blocks of the windows it
builds). Ray is optional (``pip install 'gpumat[ray]'``); without it ``engine="ray"`` is a
``GpumatError`` that says so. Connect to a cluster with ``ray.init(address=...)`` before
iterating; otherwise a local one is started (``ray_options={"init": {...}}`` passes arguments to
``ray.init``).
"""

from __future__ import annotations

import hashlib
import os
import pickle
import threading
import time
from collections import deque
from dataclasses import replace

import numpy as np
import pyarrow as pa

from gpumat.core.errors import GpumatError
from gpumat.host.prefetch import StageError
from gpumat.host.stream import ExampleSource, ExampleStream, _is_ray_dataset, groups_digest, unit_counts_all
from gpumat.host.workers import ALIGN_BYTES, BatchProducer, _failure, remote_error, views

INSTALL = "engine='ray' needs Ray Data: pip install 'gpumat[ray]' (or pip install 'ray[data]')"
NAMESPACE = "gpumat"
CHUNK = 16  # batches of one rank per input block at most (a window's batches, read once by one actor)


def require_ray():
    """The ``ray`` module, or a ``GpumatError`` that says how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise GpumatError(f"{INSTALL} ({e})") from None
    return ray


def _connect(options: dict):
    ray = require_ray()
    if not ray.is_initialized():
        ray.init(**{"include_dashboard": False, "log_to_driver": False, **options.get("init", {})})
    return ray


class DatasetSource(ExampleSource):
    """A ``ray.data.Dataset`` as an examples source: its blocks (in the object store) are the units."""

    def __init__(self, ds):
        ray = require_ray()
        bundles = list(ds.materialize().iter_internal_ref_bundles())
        self.refs, counts = [], []
        for b in bundles:
            for ref, meta in zip(b.block_refs, b.metadata):
                self.refs.append(ref)
                counts.append(meta.num_rows)
        self.table, self.files = None, []
        self.units = np.stack([np.full(len(counts), -2, np.int64), np.arange(len(counts), dtype=np.int64),
                               np.asarray(counts, dtype=np.int64)], axis=1).reshape(-1, 3)
        first = self._block(0) if self.refs else pa.table({"user_id": pa.array([], pa.int64())})
        self.schema = first.schema
        self.unit_start = np.concatenate([[0], np.cumsum(self.units[:, 2])])[:-1].astype(np.int64)
        self._open = {}
        self._ray = ray

    def _block(self, i: int) -> pa.Table:
        import ray
        from ray.data.block import BlockAccessor

        return BlockAccessor.for_block(ray.get(self.refs[i])).to_arrow()

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_ray"] = None
        return state

    def read_unit(self, u: int, columns=None) -> pa.Table:
        t = self._block(int(self.units[u, 1]))
        return t.select(columns) if columns is not None else t


def fingerprint(source: ExampleSource) -> bytes:
    """What identifies a source's rows across processes, cheaply: its files or its user ids, units, schema."""
    h = hashlib.sha256()
    h.update(source.units.tobytes())
    h.update(str(source.schema).encode())
    if source.files:
        h.update("\0".join(source.files).encode())
    elif source.table is not None:
        for chunk in source.table.column("user_id").chunks:
            h.update(chunk.to_numpy(zero_copy_only=False).tobytes())
    return h.digest()


class RayStream(ExampleStream):
    """A rank's stream whose batches a Ray Data pipeline builds (``feed``)."""

    def __init__(self, examples, batch_size, window, shuffle, seed, drop_last, rank, world_size, options: dict,
                 groups=None):
        require_ray()
        self.options = dict(options)
        source = DatasetSource(examples) if _is_ray_dataset(examples) else ExampleSource(examples, unit_rows=window)
        super().__init__(source, batch_size, window, shuffle, seed, drop_last, rank, world_size, groups=groups)
        self._feeds: dict = {}  # epoch -> feeds started

    def feed(self, spec, epoch: int, start: int, workers: int, depth: int):
        spec.counts = self.counts
        if self.world_size == 1:
            return RayFeed(spec, epoch, start, self.num_batches(), workers, depth, self.options)
        return SharedRayFeed(spec, epoch, start, self.num_batches(), workers, depth, self.options,
                             self.feed_name(spec, epoch))

    def feed_name(self, spec, epoch: int) -> str:
        """The router's name: ``ray_options["feed"]`` (or a digest of what defines this epoch for every
        rank), the epoch, and how many feeds of that epoch this stream started before (every rank
        starts the same ones, so a re-iterated epoch never meets the previous feed's router)."""
        base = self.options.get("feed")
        if base is None:
            h = hashlib.sha256(fingerprint(self.source))
            what = (spec.tier_uri, spec.tier_version, spec.streaming, [t.to_json() for t in spec.tenants],
                    str(spec.check_leakage), spec.decode, self.batch_size, self.window, self.shuffle, self.seed,
                    self.drop_last, self.world_size, groups_digest(spec.groups))
            h.update(repr(what).encode())
            base = h.hexdigest()[:16]
        gen = self._feeds.get(epoch, 0)
        self._feeds[epoch] = gen + 1
        return f"gpumat-feed-{base}-e{epoch}-g{gen}"


# ------------------------------------------------------------------------------------------ builder


class _Builder:
    """The ``map_batches`` actor: items ``(r, k)`` in, packed messages out (one row each).

    ``counts``: int64 ``[world_size, U]``, every rank's rows per unit, to build any rank's batches
    (the shared pipeline); ``None``: the spec's own rank only.
    """

    def __init__(self, spec, epoch: int, counts=None):
        self.spec, self.epoch, self.counts = spec, epoch, counts
        self.producers: dict = {}
        self.tier = None

    def _producer(self, r: int) -> BatchProducer:
        p = self.producers.get(r)
        if p is None:
            spec = self.spec if self.counts is None else replace(self.spec, rank=r, counts=self.counts[r])
            p = self.producers[r] = BatchProducer(spec, tier=self.tier)
            self.tier = p.tier
        return p

    def __call__(self, batch: dict) -> pa.Table:
        ks = [int(k) for k in batch["k"]]
        rs = [int(r) for r in batch["r"]] if "r" in batch else [self.spec.rank] * len(ks)
        headers, packed = [], []
        for r, k in zip(rs, ks):
            seen: list = []
            try:
                p = self._producer(r).produce(self.epoch, k, seen)
                headers.append(pickle.dumps({"header": p.header, "arrays": p.arrays}))
                packed.append(p)
            except Exception as e:  # noqa: BLE001 - travels to the training loop in the batch's place
                headers.append(pickle.dumps(_failure(k, e, seen[0] if seen else None)))
                packed.append(None)
        # One data buffer for the rows, each value starting on the 128-byte grid the views need.
        sizes = [0 if p is None else -(-p.nbytes // ALIGN_BYTES) * ALIGN_BYTES for p in packed]
        offsets = np.zeros(len(sizes) + 1, dtype=np.int64)
        np.cumsum(sizes, out=offsets[1:])
        data = np.empty(int(offsets[-1]), dtype=np.uint8)
        for i, (p, lo) in enumerate(zip(packed, offsets[:-1])):
            if p is not None:
                try:
                    p.write(data[lo: lo + p.nbytes])  # decodes here on a CPU training device
                except Exception as e:  # noqa: BLE001 - as a failure of produce
                    headers[i] = pickle.dumps(_failure(ks[i], e))
        n = len(ks)
        buf = pa.LargeBinaryArray.from_buffers(pa.large_binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data)])
        return pa.table({"r": pa.array(rs, pa.int64()), "k": pa.array(ks, pa.int64()),
                         "msg": pa.array(headers, pa.binary()), "buf": buf})


def _pipeline(ray, items: list, spec, epoch: int, counts, workers: int, options: dict):
    """The Dataset of one epoch: ``items`` ``[(r, k)]`` in order -> packed messages, in the same order.

    Input blocks hold runs of up to ``CHUNK`` consecutive batches of every rank (a window's batches
    go to one actor, which reads the window once); each output row is emitted as its own block.
    """
    n_ranks = max(1, len({r for r, _ in items}))
    per_block = CHUNK * n_ranks
    ds = ray.data.from_items([{"r": r, "k": k} for r, k in items],
                             override_num_blocks=max(1, -(-len(items) // per_block)))
    ctx = ds.context  # this Dataset's own copy: the caller's DataContext is left as it is
    ctx.execution_options.preserve_order = True
    ctx.target_max_block_size = 1  # one output block per batch: handed on as soon as it is built
    return ds.map_batches(_Builder, fn_constructor_args=(spec, epoch, counts), batch_size=1,
                          compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=options.get("num_cpus", 1),
                          batch_format="numpy")


def _message(t: pa.Table, row: int, epoch: int, counter=None):
    """``(k, header, arrays)`` of row ``row`` of a pipeline output block (views into the object store)."""
    k = int(t.column("k")[row].as_py())
    msg = pickle.loads(t.column("msg")[row].as_py())
    if msg.get("failed"):
        raise _reraise(msg, epoch)
    col = t.column("buf")
    if col.num_chunks != 1:
        col = col.combine_chunks()
    else:
        col = col.chunk(0)
    offs = np.frombuffer(col.buffers()[1], dtype=np.int64)[col.offset: col.offset + len(col) + 1]
    lo, hi = int(offs[row]), int(offs[row + 1])
    base = np.frombuffer(col.buffers()[2], dtype=np.uint8)
    data = base[lo:hi]  # a view into the object store
    if data.ctypes.data % ALIGN_BYTES:  # the block's buffer sits off the 128-byte grid the views need
        aligned = np.empty(data.size + ALIGN_BYTES, dtype=np.uint8)
        skip = -aligned.ctypes.data % ALIGN_BYTES
        aligned[skip: skip + data.size] = data
        data = aligned[skip: skip + data.size]
        if counter is not None:
            counter()
    return k, msg["header"], views(data, msg["arrays"])


class RayFeed:
    """One epoch of the only rank from ``start`` on, built by a Ray Data pipeline; yields ``(k, header, arrays)``."""

    def __init__(self, spec, epoch, start, total, workers, depth, options):
        ray = _connect(options)
        self.epoch = epoch
        ds = _pipeline(ray, [(spec.rank, k) for k in range(start, total)], spec, epoch, None, workers, options)
        self._it = iter(ds.iter_batches(batch_size=1, batch_format="pyarrow", prefetch_batches=max(1, depth)))
        self._closed = False
        self.copies = 0  # buffers that had to be copied to align them

    def _copied(self):
        self.copies += 1

    def __iter__(self):
        return self

    def __next__(self):
        if self._closed:
            raise StopIteration
        try:
            t = next(self._it)
        except StopIteration:
            self.close()
            raise
        try:
            return _message(t, 0, self.epoch, self._copied)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        it, self._it = self._it, None
        close = getattr(it, "close", None)
        if close is not None:
            close()


# ------------------------------------------------------------------------------------ shared feed


class Router:
    """The actor that runs one epoch's pipeline for every rank and routes each batch to its rank.

    Threaded (``max_concurrency``): the pump thread drains the pipeline; ranks call ``join``,
    ``get`` (their ``i``-th batch, blocking up to ``timeout`` s) and ``leave`` concurrently.
    """

    def __init__(self, name: str, spec, counts, epoch: int, workers: int, depth: int, options: dict):
        self.feed, self.spec, self.counts, self.epoch = name, spec, np.asarray(counts), int(epoch)
        self.world = int(self.counts.shape[0])
        self.workers, self.limit, self.options = int(workers), max(1, int(depth)) + 1, dict(options)
        self.cv = threading.Condition()
        self.starts: dict = {}
        self.totals: dict = {}
        self.queues = [dict() for _ in range(self.world)]  # rank -> {i: (k, block ref, row)}
        self.produced = [0] * self.world
        self.fetched = [0] * self.world
        self.left: set = set()
        self.done = False
        self.error: str | None = None
        self.stop = False
        self.idle_timeout = float(self.options.get("idle_timeout", 600.0))
        self.seen = time.monotonic()
        threading.Thread(target=self._watch, name="gpumat feed watchdog", daemon=True).start()

    def _watch(self) -> None:
        """A detached router outlives a crashed job: it exits after ``idle_timeout`` s without a call."""
        while True:
            time.sleep(min(5.0, self.idle_timeout))
            with self.cv:
                if time.monotonic() - self.seen > self.idle_timeout:
                    self.stop = True
                    break
        os._exit(0)

    def join(self, rank: int, start: int, total: int) -> None:
        with self.cv:
            self.seen = time.monotonic()
            if rank in self.starts:
                raise GpumatError(f"rank {rank} joined feed {self.feed} twice: another job with the same "
                                  f"settings shares this Ray cluster; pass ray_options={{'feed': <unique name>}}")
            self.starts[rank], self.totals[rank] = int(start), int(total)
            if len(self.starts) == self.world:
                threading.Thread(target=self._pump, name="gpumat feed pump", daemon=True).start()

    def waiting_for(self) -> list:
        with self.cv:
            return [r for r in range(self.world) if r not in self.starts]

    def get(self, rank: int, i: int, timeout: float = 1.0):
        """``("batch", k, [block ref], row)``, ``("end",)``, ``("error", text)`` or ``("wait",)`` (not yet)."""
        deadline = time.monotonic() + timeout
        with self.cv:
            while True:
                self.seen = time.monotonic()
                if self.error is not None:
                    return ("error", self.error)
                item = self.queues[rank].pop(i, None)
                if item is not None:
                    self.fetched[rank] += 1
                    self.cv.notify_all()
                    k, ref, row = item
                    return ("batch", k, [ref], row)  # in a list: the caller borrows the ref, Ray does not resolve it
                if self.done and i >= self.produced[rank]:
                    return ("end",)
                left = deadline - time.monotonic()
                if left <= 0:
                    return ("wait",)
                self.cv.wait(left)

    def leave(self, rank: int) -> bool:
        """Rank ``rank`` is done (finished or stopped); True when it was the last one."""
        with self.cv:
            self.seen = time.monotonic()
            self.left.add(rank)
            self.queues[rank].clear()
            self.cv.notify_all()
            last = len(self.left) == self.world
            if last:
                self.stop = True
            return last

    def _pump(self) -> None:
        import ray

        try:
            lo = min(self.starts.values())
            hi = max(self.totals.values())
            items = [(r, k) for k in range(lo, hi) for r in range(self.world) if self.starts[r] <= k < self.totals[r]]
            if items:
                ds = _pipeline(ray, items, self.spec, self.epoch, self.counts, self.workers, self.options)
                i = 0
                for bundle in ds.iter_internal_ref_bundles():
                    for ref, meta in zip(bundle.block_refs, bundle.metadata):
                        for row in range(meta.num_rows):
                            r, k = items[i]
                            i += 1
                            with self.cv:
                                while not self.stop and r not in self.left and \
                                        self.produced[r] - self.fetched[r] >= self.limit:
                                    self.cv.wait()
                                if self.stop:
                                    return
                                if r in self.left:
                                    continue
                                self.queues[r][self.produced[r]] = (k, ref, row)
                                self.produced[r] += 1
                                self.cv.notify_all()
                if i != len(items):
                    raise StageError(f"the pipeline gave {i} batches, {len(items)} were asked for")
            with self.cv:
                self.done = True
                self.cv.notify_all()
        except BaseException as e:  # noqa: BLE001 - every rank hears of it in its next get
            with self.cv:
                self.error = f"{type(e).__name__}: {e}"
                self.cv.notify_all()


class SharedRayFeed:
    """This rank's batches of one epoch from the pipeline every rank shares (module docstring)."""

    def __init__(self, spec, epoch, start, total, workers, depth, options, name: str):
        ray = _connect(options)
        self._ray = ray
        self.epoch, self.rank, self.depth = int(epoch), int(spec.rank), max(1, int(depth))
        self.join_timeout = float(options.get("join_timeout", 600.0))
        self.copies = 0
        self._closed = False
        stream_world = spec.world_size
        self.name = name
        cls = ray.remote(Router)
        try:
            self.router = ray.get_actor(self.name, namespace=NAMESPACE)
        except ValueError:  # not there yet: create it (or, if another rank just did, get that one)
            counts = unit_counts_all(spec.source, stream_world)
            # Detached: the router must outlive the rank that happened to create it (ranks finish
            # unequal epochs at different times); the last rank to leave kills it, and an abandoned
            # one (a crashed job) exits on its own after ``idle_timeout``.
            self.router = cls.options(name=self.name, namespace=NAMESPACE, get_if_exists=True, num_cpus=0,
                                      lifetime="detached", max_concurrency=stream_world * (self.depth + 1) + 4, max_restarts=0).remote(
                name, spec, counts, epoch, workers, depth, options)
        ray.get(self.router.join.remote(self.rank, int(start), int(total)))
        self._next = 0
        self._calls: deque = deque()
        self._t0 = time.monotonic()

    def _copied(self):
        self.copies += 1

    def __iter__(self):
        return self

    def _ask(self):
        while len(self._calls) < self.depth:
            i = self._next + len(self._calls)
            self._calls.append((i, self.router.get.remote(self.rank, i)))

    def __next__(self):
        if self._closed:
            raise StopIteration
        try:
            while True:
                self._ask()
                i, call = self._calls.popleft()
                got = self._ray.get(call)
                if got[0] == "wait":  # ask again (in order); give up when a rank never joined
                    self._calls.appendleft((i, self.router.get.remote(self.rank, i)))
                    if time.monotonic() - self._t0 > self.join_timeout:
                        missing = self._ray.get(self.router.waiting_for.remote())
                        if missing:
                            raise StageError(f"gpumat ray feed {self.name}: rank(s) {missing} did not join within "
                                             f"{self.join_timeout:g} s")
                    continue
                if got[0] == "end":
                    self.close()
                    raise StopIteration
                if got[0] == "error":
                    raise StageError(f"gpumat ray feed {self.name} failed in epoch {self.epoch}: {got[1]}")
                _, k, (ref,), row = got
                self._next += 1
                t = self._ray.get(ref)
                if not isinstance(t, pa.Table):
                    from ray.data.block import BlockAccessor

                    t = BlockAccessor.for_block(t).to_arrow()
                if int(t.column("r")[row].as_py()) != self.rank or int(t.column("k")[row].as_py()) != k:
                    raise StageError(f"gpumat ray feed {self.name}: routed batch ({t.column('r')[row]}, "
                                     f"{t.column('k')[row]}) to rank {self.rank} in place of batch {k}")
                return _message(t, row, self.epoch, self._copied)
        except StopIteration:
            raise
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Leave the feed; the last rank to leave stops the pipeline and removes the router."""
        if self._closed:
            return
        self._closed = True
        self._calls.clear()
        try:
            if self._ray.get(self.router.leave.remote(self.rank)):
                self._ray.kill(self.router)
        except Exception:  # noqa: BLE001 - the router is gone already (killed, or its owner exited)
            pass


def _reraise(msg: dict, epoch: int) -> BaseException:
    return remote_error(msg, f"gpumat ray stage failed on batch {msg['k']} of epoch {epoch}")
