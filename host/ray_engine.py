"""``engine="ray"``: the host stages of ``Materializer.iterate`` as a Ray Data pipeline.

One epoch of one rank is a Dataset of batch indices (``from_items``, in epoch order) mapped by an
actor pool (``map_batches`` with ``concurrency=workers``, one CPU each): every actor holds a
``host.workers.BatchProducer`` (the tier opened once, the stream's window cache) and turns batch
``k`` into a packed message (header + one byte buffer: the staged batch, or on a CPU training
device the finished jagged arrays). The trainer reads the results with ``iter_batches`` in order
(``preserve_order``) and wraps the buffers without copying (they sit in Ray's object store).

The schedule is the one every engine uses (``host.stream``), so the batches, their order and
``state_dict`` are the same as with ``thread`` and ``process``. Sources: a Table or Parquet paths,
as for the other engines, or a ``ray.data.Dataset`` (its blocks are the units; they stay in Ray's
object store, each actor fetches the blocks of the windows it builds).

Ray is optional (``pip install 'gpumat[ray]'``); without it ``engine="ray"`` is a ``GpumatError``
that says so. Connect to a cluster with ``ray.init(address=...)`` before iterating; otherwise a
local one is started (``ray_options={"init": {...}}`` passes arguments to ``ray.init``).
"""

from __future__ import annotations

import pickle

import numpy as np
import pyarrow as pa

from gpumat.core.errors import GpumatError, describe_indices
from gpumat.host.prefetch import StageError
from gpumat.host.stream import ExampleSource, ExampleStream, _is_ray_dataset
from gpumat.host.workers import ALIGN_BYTES, BatchProducer, RemoteTraceback, _failure, views

INSTALL = "engine='ray' needs Ray Data: pip install 'gpumat[ray]' (or pip install 'ray[data]')"


def require_ray():
    """The ``ray`` module, or a ``GpumatError`` that says how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise GpumatError(f"{INSTALL} ({e})") from None
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


class RayStream(ExampleStream):
    """A rank's stream whose batches a Ray Data pipeline builds (``feed``)."""

    def __init__(self, examples, batch_size, window, shuffle, seed, drop_last, rank, world_size, options: dict):
        require_ray()
        self.options = dict(options)
        source = DatasetSource(examples) if _is_ray_dataset(examples) else ExampleSource(examples, unit_rows=window)
        super().__init__(source, batch_size, window, shuffle, seed, drop_last, rank, world_size)

    def feed(self, spec, epoch: int, start: int, workers: int, depth: int) -> "RayFeed":
        spec.counts = self.counts
        return RayFeed(spec, epoch, start, self.num_batches(), workers, depth, self.options)


class _Builder:
    """The ``map_batches`` actor: batch indices in, packed messages out."""

    def __init__(self, spec, epoch: int):
        self.producer = BatchProducer(spec)
        self.epoch = epoch

    def __call__(self, batch: dict) -> dict:
        ks, headers, bufs = [], [], []
        for k in batch["k"]:
            k = int(k)
            seen: list = []
            try:
                p = self.producer.produce(self.epoch, k, seen)
                buf = np.zeros(p.nbytes, dtype=np.uint8)
                p.write(buf)
                msg = {"header": p.header, "arrays": p.arrays}
            except Exception as e:  # noqa: BLE001 - travels to the training loop in the batch's place
                buf = np.zeros(0, dtype=np.uint8)
                msg = _failure(k, e, seen[0] if seen else None)
            ks.append(k)
            headers.append(pickle.dumps(msg))
            bufs.append(buf.tobytes() if buf.size else b"")
        return {"k": np.asarray(ks, dtype=np.int64), "msg": np.asarray(headers, dtype=object),
                "buf": np.asarray(bufs, dtype=object)}


class RayFeed:
    """One epoch of a rank from ``start`` on, built by a Ray Data pipeline; yields ``(k, header, arrays)``."""

    def __init__(self, spec, epoch, start, total, workers, depth, options):
        ray = require_ray()
        if not ray.is_initialized():
            ray.init(**{"include_dashboard": False, "log_to_driver": False, **options.get("init", {})})
        from ray.data import DataContext

        ctx = DataContext.get_current()
        ctx.execution_options.preserve_order = True
        self.epoch = epoch
        ks = list(range(start, total))
        ds = ray.data.from_items([{"k": k} for k in ks], override_num_blocks=max(1, min(len(ks), 4 * workers)))
        ds = ds.map_batches(_Builder, fn_constructor_args=(spec, epoch), batch_size=1,
                            compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=options.get("num_cpus", 1),
                            batch_format="numpy")
        self._it = iter(ds.iter_batches(batch_size=1, batch_format="pyarrow", prefetch_batches=max(1, depth)))
        self._closed = False
        self.copies = 0  # buffers that had to be copied to align them

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
        k = int(t.column("k")[0].as_py())
        msg = pickle.loads(t.column("msg")[0].as_py())
        if msg.get("failed"):
            self.close()
            raise _reraise(msg, self.epoch)
        data = np.frombuffer(t.column("buf")[0].as_buffer(), dtype=np.uint8)  # a view into the object store
        if data.ctypes.data % ALIGN_BYTES:  # Arrow placed the value off the 128-byte grid the views need
            aligned = np.empty(data.size + ALIGN_BYTES, dtype=np.uint8)
            skip = -aligned.ctypes.data % ALIGN_BYTES
            aligned[skip: skip + data.size] = data
            data = aligned[skip: skip + data.size]
            self.copies += 1
        return k, msg["header"], views(data, msg["arrays"])

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        it, self._it = self._it, None
        close = getattr(it, "close", None)
        if close is not None:
            close()


def _reraise(msg: dict, epoch: int) -> BaseException:
    where = f"gpumat ray stage failed on batch {msg['k']} of epoch {epoch}"
    if msg.get("rows") is not None:
        where += f" (example rows {describe_indices(msg['rows'])})"
    exc = pickle.loads(msg["exc"]) if msg["exc"] is not None else None
    if isinstance(exc, GpumatError):
        exc.args = (f"{where}: {exc.args[0] if exc.args else ''}",) + tuple(exc.args[1:])
        exc.__cause__ = RemoteTraceback(msg["tb"])
        return exc
    err = StageError(f"{where}: {msg['type']}: {msg['text']}")
    err.__cause__ = RemoteTraceback(msg["tb"])
    return err
