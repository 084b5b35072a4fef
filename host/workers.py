"""Host work outside the training process: batches built by worker processes, handed over in shared memory.

``BatchProducer`` is everything the host does for one batch, with no torch: read the batch's
examples from the stream (``host.stream``), parse and check them, plan every tenant against the
tier, and either pack each tenant's staged batch (compressed blocks + descriptors, the layout of
``StagedBatch.pack``) or, when the training device is the CPU, also decode it with the reference
backend into finished jagged arrays. It returns one flat byte buffer and a small header
(``Packed``); the ``process`` engine puts the buffer in a POSIX shared-memory segment, the
``ray`` engine in Ray's object store. The training process maps it and wraps views (no copy).

``ProcessPool`` runs ``workers`` spawned processes over one epoch: worker ``i`` builds batches
``start + i, start + i + workers, ...``, each into a slot of its ring of reused segments
(``ShmRing``; a segment of its own when the loop holds every slot), and puts its header on its own
bounded queue (``depth`` batches in flight in all); the consumer reads the queues round-robin, so
batches come in epoch order. A worker's exception travels as a message in the place of its batch
and is re-raised there with the worker, the batch and its rows named; a worker that dies without
a word is reported too. ``close()`` (also on break, exception or KeyboardInterrupt in the loop)
stops the workers, unlinks every segment not handed over, and joins (then kills) the processes.
A batch's memory stays valid exactly as long as the tensors that view it: a one-off segment is
unlinked as soon as the consumer maps it, and a ring slot goes back to its worker only when the
last array viewing its mapping is gone.
"""

from __future__ import annotations

import contextlib
import math
import mmap
import os
import pickle
import queue
import secrets
import signal
import sys
import threading
import time
import traceback
import weakref
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from gpumat.core.errors import GpumatError, PointerError, describe_indices
from gpumat.core.staged import EXAMPLE_FIELDS, PACK_ALIGN, TILE_FIELDS, StagedBatch, StagedColumn, pack_into
from gpumat.host.examples import check_pointers, parse_examples
from gpumat.host.planner import plan
from gpumat.host.prefetch import StageError
from gpumat.host.reference import materialize_staged_reference
from gpumat.host.stream import ExampleSource, ExampleStream
from gpumat.host.tier import Tier

ALIGN_BYTES = 8 * PACK_ALIGN  # every array of a message starts at a multiple of 128 bytes
SHM_DIR = "/dev/shm"


# ------------------------------------------------------------------------------------ shared memory

try:  # CPython's POSIX shared-memory calls (what multiprocessing.shared_memory uses), without its tracker
    import _posixshmem
except ImportError:  # pragma: no cover - not POSIX
    _posixshmem = None


def shm_create(name: str, nbytes: int) -> mmap.mmap:
    """A new shared-memory segment ``name`` of ``nbytes`` bytes, mapped read-write."""
    if _posixshmem is None:  # pragma: no cover
        raise GpumatError("engine='process' needs POSIX shared memory")
    fd = _posixshmem.shm_open("/" + name, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    try:
        os.ftruncate(fd, nbytes)
        return mmap.mmap(fd, nbytes)
    except BaseException:
        shm_unlink(name)
        raise
    finally:
        os.close(fd)


def shm_attach(name: str, nbytes: int, unlink: bool = True) -> mmap.mmap:
    """Map segment ``name``; ``unlink``: also unlink its name, so the memory lives as long as the mapping."""
    fd = _posixshmem.shm_open("/" + name, os.O_RDWR, 0o600)
    try:
        return mmap.mmap(fd, nbytes)
    finally:
        os.close(fd)
        if unlink:
            shm_unlink(name)


class ShmRing:
    """A worker's ring of reused segments (``{prefix}-r{slot}``): writing a batch into a slot the
    training process has let go of costs no new pages (a fresh segment is allocated, page-faulted
    in by the worker, then freed page by page when the trainer drops the batch: at 10-20 MB a batch
    that is most of the trainer's remaining CPU). A slot is free again when every array viewing it in
    the trainer is gone (``ProcessPool`` returns it through ``free``); when none is free, because the
    loop holds on to its batches, the worker uses a one-off segment instead, so holding batches never
    stalls the pipeline. A slot grows (``ftruncate``) to the largest batch written into it."""

    def __init__(self, prefix: str, slots: int, free):
        self.prefix, self.free = prefix, free
        self.unused = list(range(slots))[::-1]
        self.maps: dict[int, mmap.mmap] = {}
        self.size: dict[int, int] = {}

    def name(self, slot: int) -> str:
        return f"{self.prefix}-r{slot}"

    def take(self) -> int | None:
        """A free slot, or None (never waits)."""
        if self.unused:
            return self.unused.pop()
        try:  # this worker is the queue's only reader: not empty means get() does not wait
            return None if self.free.empty() else self.free.get()
        except (OSError, ValueError, EOFError):
            return None

    def mapping(self, slot: int, nbytes: int) -> mmap.mmap:
        """This worker's mapping of ``slot``, grown to at least ``nbytes``."""
        if self.size.get(slot, 0) < nbytes:
            old = self.maps.pop(slot, None)
            self.size.pop(slot, None)
            if old is not None:
                old.close()
            fd = _posixshmem.shm_open("/" + self.name(slot), os.O_CREAT | os.O_RDWR, 0o600)
            try:
                os.ftruncate(fd, nbytes)
                self.maps[slot] = mmap.mmap(fd, nbytes)
            finally:
                os.close(fd)
            self.size[slot] = nbytes
        return self.maps[slot]

    def close(self, unlink: bool) -> None:
        """Unmap every slot; ``unlink``: also remove their names (a batch the trainer maps stays valid).
        A worker that ends its epoch leaves the names: batches still queued name them, and the
        pool's ``close()`` removes them; one whose training process is gone removes them itself."""
        for slot, mm in list(self.maps.items()):
            try:
                mm.close()
            except BufferError:  # still viewed here (a failure's traceback): unmapped when that goes
                pass
            if unlink:
                shm_unlink(self.name(slot))
        self.maps.clear()


def shm_unlink(name: str) -> None:
    try:
        _posixshmem.shm_unlink("/" + name)
    except FileNotFoundError:
        pass


def shm_segments(prefix: str) -> list[str]:
    """Names of the segments that start with ``prefix`` (Linux lists them in /dev/shm)."""
    try:
        return sorted(n for n in os.listdir(SHM_DIR) if n.startswith(prefix))
    except OSError:  # pragma: no cover - no /dev/shm to list
        return []


# ------------------------------------------------------------------------------------------ messages


@dataclass
class Packed:
    """One batch as built outside the training process: ``header`` (small, picklable) and the
    layout of ``nbytes`` bytes that hold every array: ``arrays[name] = (byte offset, dtype, shape)``."""

    header: dict
    arrays: dict
    nbytes: int
    fills: list = field(default_factory=list, repr=False)  # (name, fill(view)) writers, dropped once written
    posts: list = field(default_factory=list, repr=False)  # fn(get) writers of several arrays, run after the fills

    def write(self, buf) -> None:
        """Fill ``buf`` (any writable buffer of ``nbytes`` bytes) with the arrays. Decoding happens
        here, straight into ``buf`` (``jagged_layout``), so it may raise what decoding raises."""
        for name, fill in self.fills:
            if fill is not None:
                fill(view(buf, self.arrays[name]))
        for fn in self.posts:
            fn(lambda name: view(buf, self.arrays[name]))
        self.fills, self.posts = [], []


def view(buf, spec) -> np.ndarray:
    off, dtype, shape = spec
    # math.prod, not np.prod: a dozen arrays per batch, and np.prod's dispatch was half the trainer's
    # cost of receiving a batch (0.45 of 0.9 ms)
    return np.frombuffer(buf, dtype=np.dtype(dtype), count=math.prod(shape), offset=off).reshape(shape)


def views(buf, arrays: dict) -> dict[str, np.ndarray]:
    """Every array of a message as a NumPy view of ``buf``."""
    return {name: view(buf, spec) for name, spec in arrays.items()}


class _Layout:
    def __init__(self):
        self.arrays: dict = {}
        self.fills: list = []
        self.posts: list = []
        self.nbytes = 0

    def add(self, name: str, dtype, shape, fill=None) -> None:
        dtype = np.dtype(dtype)
        n = math.prod(int(s) for s in shape)
        self.arrays[name] = (self.nbytes, dtype.str, tuple(int(s) for s in shape))
        self.fills.append((name, fill))
        self.nbytes += -(-n * dtype.itemsize // ALIGN_BYTES) * ALIGN_BYTES

    def array(self, name: str, a) -> None:
        a = np.asarray(a)

        def fill(v, a=a):
            v[...] = a

        self.add(name, a.dtype, a.shape, fill)


def staged_layout(s: StagedBatch) -> tuple[dict, int]:
    """The layout ``StagedBatch.pack`` gives ``s`` (``name -> (word offset, shape)``) and its words."""
    return s._layout()


def pack_staged(s: StagedBatch, flat: np.ndarray, layout: dict) -> None:
    """``StagedBatch.pack`` into ``flat`` (int64, NumPy): the same words, without torch."""
    pack_into(s, flat, layout)


def staged_skeleton(s: StagedBatch) -> dict:
    """What a consumer needs, beside the packed words, to rebuild ``s`` (``staged_from_skeleton``)."""
    sk = {"block_size": s.block_size, "columns": [(c.name, c.dtype, c.project, c.dicts is not None, c.dict_keys, c.dict_kept)
                                                  for c in s.columns.values()],
          "check_leakage": s.check_leakage, "nbytes_read": s.nbytes_read, "known_total": s.total,
          "known_history": s.history_events}
    # sizes the kernels specialize on, where this StagedBatch knows them (carried so no device reads them back)
    if "known_max_tail" in _STAGED_FIELDS:
        sk["known_max_tail"] = s.max_tail
    if "known_max_width" in _STAGED_FIELDS:
        sk["known_max_width"] = {name: s.max_width(name) for name in s.columns}
    if "known_aux" in _STAGED_FIELDS:
        sk["known_aux"] = {name: s.aux(name) for name in s.columns}
    if "known_codes_of" in _STAGED_FIELDS:
        sk["known_codes_of"] = s.codes_lent()
    return sk


_STAGED_FIELDS = set(StagedBatch.__dataclass_fields__)


def _known(sk: dict) -> dict:
    return {k: v for k, v in sk.items() if k.startswith("known_") and k in _STAGED_FIELDS}


def staged_from_skeleton(sk: dict, flat, layout: dict) -> StagedBatch:
    """The staged batch ``staged_skeleton`` described, its arrays views of ``flat`` (NumPy or torch)."""
    empty = StagedBatch(sk["block_size"], {n: StagedColumn(n, d, None, None, None, p, True if x else None, k, kk)
                                           for n, d, p, x, k, kk in sk["columns"]},
                        *([None] * 10), check_leakage=sk["check_leakage"], nbytes_read=sk["nbytes_read"], **_known(sk))
    if isinstance(flat, np.ndarray):
        def take(name):
            off, shape = layout[name]
            n = int(np.prod(shape)) if shape else 1
            return flat[off: off + n].reshape(shape)

        cols = {n: StagedColumn(n, c.dtype, take(f"{n}.hdr"), take(f"{n}.words"), take(f"{n}.tail_values"), c.project,
                                take(f"{n}.dicts") if c.dicts is not None else None, c.dict_keys, c.dict_kept)
                for n, c in empty.columns.items()}
        return StagedBatch(sk["block_size"], cols, *(take(f) for f in EXAMPLE_FIELDS), *(take(f) for f in TILE_FIELDS),
                           check_leakage=sk["check_leakage"], nbytes_read=sk["nbytes_read"], packed=flat, **_known(sk))
    return empty.from_flat(flat, layout)


# ------------------------------------------------------------------------------------------ producer


@dataclass
class ProducerSpec:
    """Everything a worker needs to build any batch of the stream (picklable: paths and plain values)."""

    tier_uri: str
    tier_filesystem: object
    tier_version: int
    streaming: bool
    refresh_timeout: float
    tenants: list
    check_leakage: object
    decode: bool  # CPU training device and the reference backend: deliver finished jagged arrays
    source: ExampleSource
    batch_size: int
    window: int
    shuffle: bool
    seed: int
    drop_last: bool
    rank: int
    world_size: int
    counts: object = None  # this rank's rows per unit, when already counted
    kjt: bool = False  # with ``decode``: also the KeyedJaggedTensor of every tenant column (``jagged_layout``)
    groups: object = None  # (users, group) kept together in a window (``affinity="pack"``)


class BatchProducer:
    """Builds batch ``k`` of an epoch as a ``Packed`` message (module docstring)."""

    def __init__(self, spec: ProducerSpec, tier: Tier | None = None):
        self.spec = spec
        fs = spec.tier_filesystem
        if tier is not None:  # shared by the producers of several ranks in one worker
            self.tier = tier
        elif spec.streaming:
            self.tier = Tier.open(spec.tier_uri, filesystem=fs)
        else:
            self.tier = Tier.open(spec.tier_uri, version=spec.tier_version, filesystem=fs)
        self.stream = ExampleStream(spec.source, spec.batch_size, spec.window, spec.shuffle, spec.seed, spec.drop_last,
                                    spec.rank, spec.world_size, counts=spec.counts, groups=spec.groups)
        self.cancel = threading.Event()

    def num_batches(self) -> int:
        return self.stream.num_batches()

    def _reader(self, ex):
        """A tier handle new enough for ``ex`` (streaming: wait for the version, as ``Materializer`` does)."""
        need = int(ex.version.max()) if ex.size else 0
        tier = self.tier
        if need <= tier.version or not self.spec.streaming:
            return tier
        deadline = time.monotonic() + self.spec.refresh_timeout
        while True:
            latest = Tier.open(tier.uri, filesystem=self.spec.tier_filesystem)
            if latest.version >= need:
                self.tier = latest
                return latest
            if time.monotonic() >= deadline:
                raise PointerError(f"examples point to version {need}, but the tier is at {latest.version} "
                                   f"after waiting {self.spec.refresh_timeout:g} s for it")
            if self.cancel.wait(0.05):
                raise PointerError(f"stopped waiting for version {need}: the loader was closed")

    def produce(self, epoch: int, k: int, rows_seen: list | None = None) -> Packed:
        rows, table = self.stream.batch(epoch, k)
        if rows_seen is not None:
            rows_seen.append(rows)
        spec = self.spec
        ex = parse_examples(table, self.tier.schema)
        tier = self._reader(ex)
        check_pointers(ex, tier)
        staged = {t.name: plan(tier, ex, t, spec.check_leakage) for t in spec.tenants}
        lay = _Layout()
        lay.array("rows", rows.astype(np.int64, copy=False))
        lay.array("user_id", ex.user_id)
        lay.array("request_ts", ex.request_ts)
        numeric, other = [], {}
        for name in ex.passthrough:
            col = ex.table.column(name)
            if pa.types.is_integer(col.type) or pa.types.is_floating(col.type):
                lay.array(f"pt.{name}", col.to_numpy())
                numeric.append(name)
            else:
                other[name] = col
        tenants = {}
        if spec.decode:
            for t in spec.tenants:
                s = staged[t.name]
                offsets = np.asarray(s.offsets)
                lay.array(f"t.{t.name}.offsets", offsets)
                lay.array(f"t.{t.name}.lengths", np.diff(offsets))
                tenants[t.name] = {"mode": "jagged", "columns": list(t.columns), "nbytes_read": s.nbytes_read,
                                   "max_len": int(np.diff(offsets).max()) if offsets.size > 1 else 0}
            jagged_layout(lay, spec.tenants, staged, spec.kjt)
        else:
            for name, s in staged.items():
                s.check_tiles()  # (as ``StagedBatch.pack`` does: the kernels trust the tiles)
                layout, words = staged_layout(s)
                lay.add(f"t.{name}.packed", np.int64, (words,), lambda v, s=s, layout=layout: pack_staged(s, v, layout))
                tenants[name] = {"mode": "staged", "skeleton": staged_skeleton(s), "layout": layout,
                                 "staged_bytes": s.staged_bytes()}
        header = {"k": k, "epoch": epoch, "tenants": tenants, "passthrough": list(ex.passthrough),
                  "numeric": numeric, "other": other, "tier_version": tier.version,
                  "materialized_bytes": _materialized_bytes(staged, spec.tenants)}
        return Packed(header, lay.arrays, max(lay.nbytes, ALIGN_BYTES), lay.fills, lay.posts)


def jagged_layout(lay: _Layout, tenants, staged: dict, kjt: bool) -> None:
    """The finished jagged values of every tenant column and the leakage flags, decoded by the
    reference backend straight into the message when it is written (no intermediate arrays).

    ``kjt``: laid out as the ``KeyedJaggedTensor`` that ``MaterializedBatch.to_kjt()`` builds (keys
    ``"{tenant}.{column}"`` in tenant then column order): ``kjt.values`` (int64, the columns back to
    back) and ``kjt.lengths`` (each tenant's lengths, once per column). An int64 column's
    ``t.{tenant}.v.{column}`` is then a view of its slice of ``kjt.values``, so the trainer wraps both
    with no copy and the message carries those values once; an int32 column has its own array, and
    its slice of ``kjt.values`` is filled from it."""
    parts = [(t.name, c, staged[t.name].total, np.dtype(staged[t.name].columns[c].dtype)) for t in tenants for c in t.columns]
    starts = np.cumsum([0] + [n for _, _, n, _ in parts]).tolist()
    if kjt:
        lay.add("kjt.values", np.int64, (starts[-1],))
        base = lay.arrays["kjt.values"][0]
    for (name, c, n, dt), a in zip(parts, starts[:-1]):
        if kjt and dt == np.int64:  # a view of the KJT's values: no bytes of its own
            lay.arrays[f"t.{name}.v.{c}"] = (base + 8 * a, dt.str, (n,))
        else:
            lay.add(f"t.{name}.v.{c}", dt, (n,))
    if kjt:
        lengths = [np.diff(np.asarray(staged[t.name].offsets)) for t in tenants for _ in t.columns]
        lay.array("kjt.lengths", np.concatenate(lengths) if lengths else np.zeros(0, np.int64))
    batch = next(iter(staged.values())).batch_size if staged else 0
    lay.add("violations", np.bool_, (batch,))

    def decode(get):
        violations = get("violations")
        violations[...] = False
        for t in tenants:
            _, viol = materialize_staged_reference(staged[t.name], {c: get(f"t.{t.name}.v.{c}") for c in t.columns})
            violations |= np.asarray(viol, dtype=bool)
        if kjt:
            values = get("kjt.values")
            for (name, c, n, dt), a in zip(parts, starts[:-1]):
                if dt != np.int64:
                    values[a : a + n] = get(f"t.{name}.v.{c}")

    lay.posts.append(decode)


def _materialized_bytes(staged: dict, tenants) -> int:
    """Bytes of the jagged batches a message expands to (offsets + values of every tenant column)."""
    total = 0
    for t in tenants:
        s = staged[t.name]
        total += 8 * (s.batch_size + 1) + s.total * sum(4 if s.columns[c].dtype == "int32" else 8 for c in t.columns)
    return total


# ------------------------------------------------------------------------------------ process pool


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a worker process (the ``__cause__`` of what the loop raises)."""

    def __init__(self, tb: str):
        super().__init__(tb)
        self.tb = tb

    def __str__(self):
        return self.tb


_END = "end"


def remote_error(msg: dict, where: str) -> BaseException:
    """The exception to raise in the training process for a failure message (``_failure``) from a
    worker or a Ray actor: its own type for a ``GpumatError``, else ``StageError``; ``where`` (and the
    example rows) prefixed to the message, the remote traceback as the cause."""
    if msg.get("rows") is not None:
        where += f" (example rows {describe_indices(msg['rows'])})"
    exc = pickle.loads(msg["exc"]) if msg["exc"] is not None else None
    if isinstance(exc, GpumatError):
        exc.args = (f"{where}: {exc.args[0] if exc.args else ''}",) + tuple(exc.args[1:])
        exc.__cause__ = RemoteTraceback(msg["tb"])
        return exc
    err = StageError(f"{where}: {msg['type']}: {msg['text']}")
    err.__cause__ = exc if exc is not None else RemoteTraceback(msg["tb"])
    if exc is not None:
        exc.__cause__ = RemoteTraceback(msg["tb"])
    return err


def _failure(k, exc: BaseException, rows=None) -> dict:
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        blob = pickle.dumps(exc)
        pickle.loads(blob)
    except Exception:  # an exception that does not survive pickling travels as text
        blob = None
    return {"failed": True, "k": k, "exc": blob, "type": type(exc).__name__, "text": str(exc), "tb": tb,
            "rows": None if rows is None else np.asarray(rows)}


def _worker_main(spec: ProducerSpec, index: int, workers: int, epoch: int, start: int, out, stop, prefix: str,
                 free=None, slots: int = 0):
    """A worker process: batches ``start + index``, ``+ workers``, ... of ``epoch``, each into a slot of
    its ring (``ShmRing``: ``slots`` segments, returned through ``free``) or, none being free, a
    segment of its own."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the training loop's to handle; it stops us
    parent = os.getppid()

    def alive() -> bool:
        return not stop.is_set() and os.getppid() == parent

    def put(msg) -> bool:
        while alive():
            try:
                out.put(msg, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    k = start + index
    try:
        producer = BatchProducer(spec)
        total = producer.num_batches()
    except BaseException as e:  # noqa: BLE001 - reported to the loop in the place of the first batch
        put(_failure(k, e))
        out.cancel_join_thread()
        return
    ring = ShmRing(prefix, slots, free)
    try:
        while k < total and alive():
            seen: list = []
            slot = name = None
            try:
                packed = producer.produce(epoch, k, seen)
                slot = ring.take() if free is not None else None
                if slot is not None:
                    name = ring.name(slot)
                    packed.write(ring.mapping(slot, packed.nbytes))  # decodes here (jagged_layout)
                else:
                    mm = shm_create(f"{prefix}-{k}", packed.nbytes)
                    name = f"{prefix}-{k}"
                    try:
                        packed.write(mm)
                    finally:
                        mm.close()
            except BaseException as e:  # noqa: BLE001
                if slot is not None:
                    ring.unused.append(slot)  # nothing views it: free again
                elif name is not None:
                    shm_unlink(name)
                put(_failure(k, e, seen[0] if seen else None))
                break
            msg = {"k": k, "shm": name, "slot": slot, "nbytes": packed.nbytes, "header": packed.header,
                   "arrays": packed.arrays}
            if not put(msg):
                if slot is None:
                    shm_unlink(name)
                break
            k += workers
        else:
            put(_END)
    finally:
        ring.close(unlink=os.getppid() != parent)
    producer.cancel.set()
    if not alive():
        out.cancel_join_thread()  # nobody will read what is left in the queue: do not wait on it at exit


@contextlib.contextmanager
def _main_module_hidden():
    """Start spawned workers without re-running the caller's ``__main__`` in them.

    A spawned child imports the parent's main module before it runs the target: in a training
    script that re-executes the script's top level (its imports: seconds and memory per worker) and,
    without an ``if __name__ == "__main__":`` guard, fails. The workers need nothing from it (their
    target and arguments live in gpumat), so the main module's path is hidden while they start.
    """
    main = sys.modules.get("__main__")
    saved = {k: main.__dict__[k] for k in ("__file__", "__spec__") if main is not None and k in main.__dict__}
    try:
        for k in saved:
            if k == "__file__":
                del main.__dict__[k]
            else:
                main.__dict__[k] = None
        yield
    finally:
        if main is not None:
            main.__dict__.update(saved)


RING_SPARE = 4  # ring slots per worker beyond its queued batches: those the training loop holds


def _unlink_all(prefix: str) -> None:
    for name in shm_segments(prefix):
        shm_unlink(name)


class ProcessPool:
    """``workers`` processes building an epoch's batches from ``start`` on; iterate for ``(k, header, arrays)``."""

    def __init__(self, spec: ProducerSpec, epoch: int, start: int, workers: int = 1, depth: int = 2,
                 name: str = "gpumat worker"):
        import multiprocessing as mp

        ctx = mp.get_context("spawn")  # never fork a process that runs torch (its threads, CUDA)
        self.name, self.epoch, self.start = name, int(epoch), int(start)
        self.workers = max(1, int(workers))
        self.prefix = f"gpumat-{os.getpid()}-{secrets.token_hex(4)}"
        per = max(1, -(-max(1, int(depth)) // self.workers))
        self._stop = ctx.Event()
        self._queues = [ctx.Queue(maxsize=per) for _ in range(self.workers)]
        # each worker's ring: its queued batches, the one it writes, and RING_SPARE the loop holds
        self._free = [ctx.SimpleQueue() for _ in range(self.workers)]
        # (worker, slot) of mappings nothing views any more: appended by finalizers (no lock taken there,
        # they may run inside any allocation), sent back to the workers by the consuming thread
        self._returned: deque = deque()
        self._procs = [ctx.Process(target=_worker_main, name=f"{name}-{i}",
                                   args=(spec, i, self.workers, self.epoch, self.start, self._queues[i], self._stop,
                                         f"{self.prefix}-{i}", self._free[i], per + 1 + RING_SPARE), daemon=True)
                       for i in range(self.workers)]
        self._next = self.start
        self._closed = False
        # at interpreter exit without close() (multiprocessing's own exit hook kills the workers
        # first), the segments named after this pool are still removed
        self._sweep = weakref.finalize(self, _unlink_all, self.prefix)
        self.delivered = {"ring": 0, "own": 0}  # batches handed over in a ring slot / in a segment of their own
        try:
            with _main_module_hidden():
                for p in self._procs:
                    p.start()
        except BaseException:
            self.close()
            raise

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs if p.pid is not None]

    def where(self, k: int) -> str:
        return f"batch {k} of epoch {self.epoch}"

    def __iter__(self):
        return self

    def __next__(self):
        if self._closed:
            raise StopIteration
        k = self._next
        i = (k - self.start) % self.workers
        msg = self._get(i, k)
        if msg == _END:
            self.close()
            raise StopIteration
        if msg.get("failed"):
            self.close()
            raise self._reraise(i, msg)
        self._next += 1
        slot = msg.get("slot")
        mm = shm_attach(msg["shm"], msg["nbytes"], unlink=slot is None)
        if slot is not None:  # the slot goes back to its worker once nothing views this mapping
            weakref.finalize(mm, self._returned.append, (i, slot))
        self.delivered["own" if slot is None else "ring"] += 1
        return k, msg["header"], views(mm, msg["arrays"])

    def _give_back(self) -> None:
        """Send the slots finalizers freed back to their workers."""
        while self._returned:
            i, slot = self._returned.popleft()
            self._free[i].put(slot)

    def _get(self, i: int, k: int):
        q, proc = self._queues[i], self._procs[i]
        while True:
            self._give_back()
            try:
                return q.get(timeout=0.1)
            except queue.Empty:
                if not proc.is_alive():
                    try:  # it may have put its last message just before leaving
                        return q.get(timeout=0.5)
                    except queue.Empty:
                        pass
                    code = proc.exitcode
                    self.close()
                    raise StageError(f"{self.name} {i} (pid {proc.pid}) exited with code {code} before "
                                     f"{self.where(k)} was delivered")

    def _reraise(self, i: int, msg: dict) -> BaseException:
        return remote_error(msg, f"{self.name} {i} (pid {self._procs[i].pid}) failed on {self.where(msg['k'])}")

    def close(self) -> None:
        """Stop the workers, unlink every segment not handed over, and join (then terminate) them."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        deadline = time.monotonic() + 5.0
        while any(p.pid is not None and p.is_alive() for p in self._procs) and time.monotonic() < deadline:
            self._drain()
            time.sleep(0.02)
        for p in self._procs:
            if p.pid is None:  # never started
                continue
            if p.is_alive():
                p.terminate()
                p.join(timeout=2)
            if p.is_alive():  # pragma: no cover - a worker stuck in a system call
                p.kill()
                p.join(timeout=2)
            else:
                p.join()
        self._drain()
        for q in self._queues:
            q.close()
            q.join_thread()
        self._returned.clear()
        for f in self._free:
            f.close()
        _unlink_all(self.prefix)  # ring slots, and a segment a worker made but never sent

    def _drain(self) -> None:
        for q in self._queues:
            while True:
                try:
                    msg = q.get_nowait()
                except (queue.Empty, OSError, ValueError, EOFError):
                    break
                if isinstance(msg, dict) and "shm" in msg:
                    shm_unlink(msg["shm"])

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

