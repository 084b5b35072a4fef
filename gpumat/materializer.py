"""``gpumat.Materializer``: the drop-in module for the training step.

One batch: ``mat(examples) -> MaterializedBatch`` (one ``JaggedBatch`` per tenant).
A stream: ``for batch in mat.iterate(examples, batch_size=...)`` overlaps every stage with the
training step:

    host threads   read rows -> parse -> plan (pushdown, dedup) -> pack into a pinned slot
    copy stream    one host-to-device copy of the packed slot
    side stream    decode-gather kernels (per tenant), leakage flags copied back asynchronously
    compute stream waits on an event; tensors are ``record_stream``-ed so nothing is reused early

``depth`` batches are staged ahead on the host and ``inflight`` batches ahead on the device; the
leakage flags of a batch are read only when it is handed out, ``inflight`` batches later, so the
steady state has no host synchronization. On a CPU device the whole materialization runs in the
host threads (NumPy releases the GIL), which overlaps it with the step as well.

Examples are streamed (``gpumat.host.stream``: a row group at a time, in an epoch order every
engine shares). ``engine=`` moves the host stages out of this process: ``"process"`` (worker
processes, batches handed over in shared memory: ``gpumat.host.workers``) or ``"ray"`` (a Ray
Data pipeline: ``gpumat.host.ray_engine``); this process then only maps each packed batch, copies
it to the device and runs the kernels (on a CPU device the workers decode too).
"""

from __future__ import annotations

import contextlib
import threading
import time
import warnings
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import torch

from gpumat.core.batch import JaggedBatch, build_kjt, kjt_parts
from gpumat.core.errors import LeakageError, PointerError, SchemaError, describe_indices
from gpumat.core.pipelineable import keyed_jagged_tensor_class, pipelineable, torchrec_installed
from gpumat.core.staged import leakage_mode
from gpumat.core.tenant import Tenant
from gpumat.host.examples import Examples, check_pointers, parse_examples
from gpumat.host.planner import plan
from gpumat.host.prefetch import Prefetcher, dist_rank_world
from gpumat.host.stream import ExampleSource, ExampleStream, check_affinity
from gpumat.host.workers import ProcessPool, ProducerSpec, staged_from_skeleton
from gpumat.host.tier import Tier
from gpumat.ops import check_device, decode_gather, resolve_backend, resolve_device, runs_on_host


@contextlib.contextmanager
def stage_range(name: str, cuda: bool):
    """An NVTX range (on CUDA) and a profiler range (everywhere) around a pipeline stage."""
    if cuda:
        torch.cuda.nvtx.range_push(name)
    try:
        with torch.autograd.profiler.record_function(name):
            yield
    finally:
        if cuda:
            torch.cuda.nvtx.range_pop()


@pipelineable
@dataclass
class MaterializedBatch:
    """One batch for every tenant, plus the examples' passthrough columns (labels, candidates).

    - ``tenants[name]``: a ``JaggedBatch`` (also ``batch[name]``)
    - ``passthrough[col]``: a tensor for numeric columns (a pyarrow array otherwise)
    - ``request_ts``: int64 ``[B]``, each example's request time, on the batch's device
    - ``sparse_features``: a torchrec ``KeyedJaggedTensor`` over every tenant column, keys
      ``"{tenant}.{column}"`` (``to_kjt()``), built by the loader beside the values when
      torchrec is installed (``Materializer(sparse_features=...)``), else None
    - ``rows``: the examples' row indices in the source

    torchrec's ``Pipelineable`` (``to``, ``record_stream``, ``pin_memory``; registered as one when
    torchrec is imported), so ``TrainPipelineBase`` and ``TrainPipelineSparseDist`` take it as
    their batch; a sharded embedding that reads ``batch.sparse_features`` is pipelined.
    """

    tenants: dict[str, JaggedBatch]
    passthrough: dict = field(default_factory=dict)
    rows: np.ndarray | None = None
    nbytes_read: int = 0
    request_ts: torch.Tensor | None = None
    sparse_features: object = None

    def __getitem__(self, tenant: str) -> JaggedBatch:
        return self.tenants[tenant]

    @property
    def batch_size(self) -> int:
        return next(iter(self.tenants.values())).batch_size if self.tenants else 0

    def to_kjt(self, keys=None, rename=None, weights=None):
        """A torchrec ``KeyedJaggedTensor`` over the tenants' columns, keys ``"{tenant}.{column}"``.

        - ``keys``: the keys to include, in order (default: every column of every tenant, in
          tenant then column order), as ``"{tenant}.{column}"`` names.
        - ``rename``: ``None``, a dict ``{"{tenant}.{column}": key}`` or a callable on those names
          (e.g. ``lambda k: k.split(".")[1]`` for one tenant); keys must stay unique.
        - ``weights``: ``None``; a column name (every tenant with a selected key must read it: its
          values, as float32, weight that tenant's keys); or a dict ``{tenant: column}``, the
          tenants it omits weighted 1.0.

        Values int64, lengths int64, ``stride`` = B; on the batch's device. Needs torchrec.
        """
        names = {f"{t}.{c}": (t, c) for t, b in self.tenants.items() for c in b.values}
        wanted = list(names) if keys is None else list(keys)
        unknown = [k for k in wanted if k not in names]
        if unknown:
            raise SchemaError(f"to_kjt: unknown key(s) {unknown}; keys are '{{tenant}}.{{column}}': {list(names)}")
        if weights is not None and not isinstance(weights, (str, dict)):
            raise SchemaError(f"to_kjt: weights must be None, a column name or a dict {{tenant: column}}, got {weights!r}")
        parts = []
        for k in wanted:
            t, c = names[k]
            w = weights.get(t) if isinstance(weights, dict) else weights
            parts += kjt_parts(self.tenants[t], [c], rename, w, prefix=f"{t}.")
        return build_kjt(parts, self.batch_size, weighted=weights is not None)

    def _map(self, fn_batch, fn_tensor, fn_kjt):
        return MaterializedBatch(
            {k: _keep_nbytes(fn_batch(b), b) for k, b in self.tenants.items()},
            {k: fn_tensor(v) if torch.is_tensor(v) else v for k, v in self.passthrough.items()},
            self.rows,
            self.nbytes_read,
            None if self.request_ts is None else fn_tensor(self.request_ts),
            None if self.sparse_features is None else fn_kjt(self.sparse_features),
        )

    def to(self, device, non_blocking: bool = False) -> "MaterializedBatch":
        return self._map(lambda b: b.to(device, non_blocking), lambda t: t.to(device, non_blocking=non_blocking),
                         lambda k: k.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> "MaterializedBatch":
        return self._map(lambda b: b.pin_memory(), lambda t: t.pin_memory(), lambda k: k.pin_memory())

    def record_stream(self, stream) -> None:
        for b in self.tenants.values():
            b.record_stream(stream)
        for v in self.passthrough.values():
            if torch.is_tensor(v):
                v.record_stream(stream)
        if self.request_ts is not None:
            self.request_ts.record_stream(stream)
        if self.sparse_features is not None:
            self.sparse_features.record_stream(stream)


def _keep_nbytes(moved: JaggedBatch, src: JaggedBatch) -> JaggedBatch:
    # JaggedBatch.to / pin_memory build a new batch without the storage metric; carry it over.
    moved.nbytes_read = src.nbytes_read
    return moved


def _host_offsets(s) -> torch.Tensor:
    """A host-built staged batch's offsets as a tensor (no copy)."""
    return torch.from_numpy(np.asarray(s.offsets))


def _longest(s) -> int:
    """The longest row of a host-built staged batch (its offsets are NumPy)."""
    offsets = np.asarray(s.offsets)
    return int(np.diff(offsets).max()) if offsets.size > 1 else 0


def _passthrough(ex: Examples, pin: bool = False) -> dict:
    """Numeric passthrough columns as tensors (pinned for an asynchronous copy when ``pin``), others as Arrow."""
    out = {}
    for name in ex.passthrough:
        col = ex.table.column(name)
        if pa.types.is_integer(col.type) or pa.types.is_floating(col.type):
            t = torch.from_numpy(col.to_numpy(zero_copy_only=False).copy())
            out[name] = t.pin_memory() if pin else t
        else:
            out[name] = col
    return out


def _check_leakage(violations: np.ndarray, st, mode: str) -> None:
    """``LeakageError`` naming the leaking examples by their row in the source, and the batch."""
    LeakageError.check(violations, st.ex.user_id, st.ex.request_ts, rows=st.rows, where=st.where,
                       inclusive=mode == "inclusive")


@dataclass
class _Staged:
    """A batch after the host stages: parsed examples and one staged plan per tenant."""

    ex: Examples
    rows: np.ndarray | None
    staged: dict
    passthrough: dict = field(default_factory=dict)  # labels etc., built (and pinned on CUDA) off the training thread
    request_ts: torch.Tensor | None = None  # int64 [B], like the labels
    packed: dict | None = None  # per tenant: (flat int64 host buffer, layout), packed for one copy
    batch: MaterializedBatch | None = None  # host backends: the whole batch, built off the training thread
    violations: np.ndarray | None = None
    where: str = ""  # which batch this is ("batch 3 of epoch 0"), for errors raised when it is handed out


def _sparse_builder(sparse_features):
    """The function that builds ``MaterializedBatch.sparse_features`` (None: no KJT)."""
    if sparse_features is False:
        return None
    if sparse_features is None or sparse_features is True:
        if sparse_features is None and not torchrec_installed():
            return None
        try:
            keyed_jagged_tensor_class()  # imported now (seconds, once), not in the first batch
        except ImportError as e:
            if sparse_features is True:
                raise
            warnings.warn(f"Materializer: batches carry no sparse_features: {e}", RuntimeWarning, stacklevel=3)
            return None
        return MaterializedBatch.to_kjt
    if callable(sparse_features):
        return sparse_features
    raise SchemaError(f"sparse_features must be None, True, False or a callable(batch) -> KeyedJaggedTensor, "
                      f"got {sparse_features!r}")


class Materializer:
    """Late materialization for several tenants at once.

    ``tenants``: list of ``Tenant``. ``device``, ``backend``, ``check_leakage`` (``True`` /
    ``"strict"``, ``"inclusive"``, ``False``): as in ``gpumat.materialize``. ``streaming``: when
    examples point to a version newer than the tier handle, move to the latest version, waiting up
    to ``refresh_timeout`` seconds for it to land (``self.tier`` then becomes a new handle on that
    version; a pinned handle never moves).

    ``sparse_features``: what every batch's ``MaterializedBatch.sparse_features`` holds, built
    where the values are made (the host stage for host backends, the side stream on a GPU), never
    on access:

    - ``None`` (default): ``batch.to_kjt()`` when torchrec is installed and loads, else None
    - ``True``: the same, and an ``ImportError`` here when torchrec is missing
    - ``False``: None (saves the copy of every value the KeyedJaggedTensor is)
    - a callable ``fn(batch) -> KeyedJaggedTensor``, e.g.
      ``lambda b: b.to_kjt(keys=["long.item_id"], weights="rating")``

    >>> import pyarrow as pa, tempfile, gpumat
    >>> tier = gpumat.Tier.create(tempfile.mkdtemp() + "/t", {"ts": "int64", "item_id": "int64"})
    >>> _ = tier.append(pa.table({"user_id": [1, 1, 2], "ts": [1, 2, 1], "item_id": [5, 6, 7]}))
    >>> mat = gpumat.Materializer(tier, [gpumat.Tenant("a", ["item_id"], 1), gpumat.Tenant("b", ["ts"], 8)])
    >>> out = mat(pa.table({"user_id": [1, 2], "version": [1, 1], "length": [2, 1], "request_ts": [9, 9]}))
    >>> out["a"].values["item_id"].tolist(), out["b"].values["ts"].tolist()
    ([6, 7], [1, 2, 1])
    """

    def __init__(self, tier, tenants, device="cpu", backend: str = "auto", check_leakage=True,
                 streaming: bool = False, refresh_timeout: float = 60.0, sparse_features=None):
        self.device = resolve_device(device)
        check_device(self.device)  # before anything else: a device that cannot work here fails first
        tenants = list(tenants)
        if not tenants or not all(isinstance(t, Tenant) for t in tenants):
            raise SchemaError("tenants must be a non-empty list of gpumat.Tenant")
        names = [t.name for t in tenants]
        if len(set(names)) != len(names):
            raise SchemaError(f"tenant names must be unique, got {names}")
        for t in tenants:
            t.check(tier.schema)
        self.tier = tier
        self.tenants = tenants
        self.backend = resolve_backend(backend, self.device)
        self.check_leakage = leakage_mode(check_leakage)  # "strict", "inclusive" or None
        self.sparse_features = _sparse_builder(sparse_features)
        self.streaming = streaming
        self.refresh_timeout = float(refresh_timeout)
        self._refresh_lock = threading.Lock()
        # per column, the device copy of the segment dictionaries the last batch used, their keys
        # (``StagedColumn.dict_keys``) and the event after its copy (CUDA): a batch with the same keys
        # copies only the rest of its buffer
        self._dicts: dict[str, tuple] = {}
        self.dict_bytes_not_copied = 0  # host-to-device bytes the cache saved (for the benchmarks)

    # ---- host stages -------------------------------------------------------------------------
    def _reader(self, ex: Examples, cancel: threading.Event | None = None):
        """The tier handle that this batch is planned against, new enough for ``ex`` when streaming.

        Host workers plan batches concurrently on ``self.tier``. ``Tier.refresh()`` would swap the
        manifest and drop the directory cache of a handle that another worker is in the middle of
        planning with (stripe indices of one version, blocks of another: wrong values). So a
        refresh never mutates a handle in use: it opens a fresh handle and publishes it, and each
        batch uses the one handle it read at its start.
        """
        tier = self.tier
        need = int(ex.version.max()) if ex.size else 0
        if need <= tier.version or not self.streaming or tier.pinned:
            return tier
        deadline = time.monotonic() + self.refresh_timeout
        stop = cancel if cancel is not None else threading.Event()
        with self._refresh_lock:
            while True:
                tier = self.tier  # another worker may have published a newer handle meanwhile
                if tier.version >= need:
                    return tier
                latest = Tier.open(tier.uri)
                if latest.version > tier.version:
                    self.tier = tier = latest
                    continue
                if time.monotonic() >= deadline:
                    raise PointerError(
                        f"examples point to version {need}, but the tier is at {tier.version} "
                        f"after waiting {self.refresh_timeout:g} s for it"
                    )
                # the loader sets ``cancel`` on shutdown: stop waiting instead of holding close() up
                if stop.wait(0.05):
                    raise PointerError(f"stopped waiting for version {need}: the loader was closed")

    def stage(self, examples, rows=None, cancel: threading.Event | None = None) -> _Staged:
        """Host half of one batch: parse, check, plan every tenant (and, for a host backend, decode
        and build the whole batch, its ``sparse_features`` included)."""
        cuda = self.device.type == "cuda"
        with stage_range("gpumat.plan", cuda):
            ex = parse_examples(examples, self.tier.schema)
            tier = self._reader(ex, cancel)
            check_pointers(ex, tier)
            staged = {t.name: plan(tier, ex, t, self.check_leakage) for t in self.tenants}
        request_ts = torch.from_numpy(ex.request_ts.copy())
        out = _Staged(ex, rows, staged, passthrough=_passthrough(ex, pin=cuda),
                      request_ts=request_ts.pin_memory() if cuda else request_ts)
        if not runs_on_host(self.backend):
            with stage_range("gpumat.pack", cuda):
                # Pinned slots come from torch's caching host allocator: a slot returns to the pool
                # only after the copy that reads it has completed, so reuse is never early.
                out.packed = {
                    name: s.pack(torch.empty(s.packed_numel(), dtype=torch.int64, pin_memory=True) if cuda else None)
                    for name, s in staged.items()
                }
        else:
            with stage_range("gpumat.decode", cuda):
                values, viol = {}, torch.zeros(ex.size, dtype=torch.bool)
                for name, s in staged.items():
                    values[name], v = decode_gather(s, self.backend)
                    viol |= v
                out.violations = viol.numpy()
            tenants = {t.name: self._jagged(t, _host_offsets(staged[t.name]), values[t.name], staged[t.name])
                       for t in self.tenants}
            out.batch = self._batch(tenants, out.passthrough, out.request_ts, staged)
        return out

    def _jagged(self, t: Tenant, offsets: torch.Tensor, values: dict, s) -> JaggedBatch:
        """One tenant's batch; its longest row is known from the host plan (no device read later)."""
        return JaggedBatch(offsets, {c: values[c] for c in t.columns}, nbytes_read=s.nbytes_read,
                           known_max_len=_longest(s))

    def _batch(self, tenants, passthrough, request_ts, staged) -> MaterializedBatch:
        """The ``MaterializedBatch`` of one batch, with its ``sparse_features`` built here, beside the values."""
        batch = MaterializedBatch(tenants, passthrough, None, sum(s.nbytes_read for s in staged.values()), request_ts)
        if self.sparse_features is not None:
            with stage_range("gpumat.sparse_features", self.device.type == "cuda"):
                batch.sparse_features = self.sparse_features(batch)
        return batch

    # ---- device stage ------------------------------------------------------------------------
    def _finish_host(self, st: _Staged) -> MaterializedBatch:
        if self.check_leakage:
            _check_leakage(st.violations, st, self.check_leakage)
        batch = st.batch
        batch.rows = st.rows
        return batch.to(self.device) if self.device.type != "cpu" else batch

    def _launch(self, st: _Staged, streams=None):
        """Issue copies and kernels for one batch, and build it on the side stream; returns a handle to finish later."""
        cuda = self.device.type == "cuda"
        copy_stream, side_stream = streams if streams else (None, None)
        tenants, viol = {}, None
        ctx = torch.cuda.stream(copy_stream) if copy_stream is not None else contextlib.nullcontext()
        with ctx:  # labels and request times travel on the copy stream too, from the pinned tensors the host stage made
            passthrough = {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v
                           for k, v in st.passthrough.items()}
            request_ts = st.request_ts.to(self.device, non_blocking=True)
        for t in self.tenants:
            s = st.staged[t.name]
            ctx = torch.cuda.stream(copy_stream) if copy_stream is not None else contextlib.nullcontext()
            with stage_range("gpumat.h2d", cuda), ctx:
                dev, held = self._copy(s, *st.packed[t.name])
                # Without side streams (``__call__``) copy and kernels share the current stream,
                # which orders them; only the two-stream pipeline needs the event.
                copied = torch.cuda.Event() if cuda and streams else None
                if copied is not None:
                    copied.record(copy_stream)
            ctx = torch.cuda.stream(side_stream) if side_stream is not None else contextlib.nullcontext()
            with stage_range("gpumat.decode", cuda), ctx:
                if copied is not None:
                    side_stream.wait_event(copied)
                    dev.packed.record_stream(side_stream)
                    for d in held:  # cached dictionaries: not reused before this batch's kernels ran
                        d.record_stream(side_stream)
                values, v = decode_gather(dev, self.backend)  # sizes travel from the host plan: no sync
                # a copy of the offsets, so a batch the caller keeps does not pin the packed buffer
                tenants[t.name] = self._jagged(t, dev.offsets.clone(), values, s)
                viol = v if viol is None else viol | v
        flags = None
        done = None
        ctx = torch.cuda.stream(side_stream) if side_stream is not None else contextlib.nullcontext()
        with ctx:
            if copy_stream is not None:
                torch.cuda.current_stream(self.device).wait_stream(copy_stream)  # the labels' copy
            # On the side stream, after the kernels: the KeyedJaggedTensor is ready with the values.
            batch = self._batch(tenants, passthrough, request_ts, st.staged)
            if cuda:
                if viol is not None:
                    flags = torch.empty(viol.shape, dtype=viol.dtype, pin_memory=True)
                    flags.copy_(viol, non_blocking=True)
                done = torch.cuda.Event()
                done.record()
            else:
                flags = viol
        return st, batch, flags, done

    def _copy(self, s, flat, layout):
        """One tenant's packed batch on the device: ``(staged batch, dictionaries it holds apart from
        its packed buffer)``. A column whose dictionaries start with the ones the last batch left on
        the device (the same keys: the tier's segment dictionaries, DESIGN §4) copies only the rest
        of them (its stripe tables, if any: DESIGN §1), after a device copy of those; when every
        column's are all held, only the buffer before the dictionaries is copied (they are 79-93%
        of a bench batch's bytes). Else all of it, and the dictionaries the keys name are kept."""
        cuda = self.device.type == "cuda"
        cols = [c for c, col in s.columns.items() if col.dicts is not None]
        held = {}
        for c in cols:
            e = self._dicts.get(c)  # one read: another thread may replace the entry
            if e is not None and s.columns[c].dict_keys is not None and e[0] == s.columns[c].dict_keys:
                held[c] = e
        if not held:
            dev = s.from_flat(flat.to(self.device, non_blocking=True), layout)
            for c in cols:
                self._keep(c, s.columns[c], dev.columns[c].dicts, cuda)
            return dev, []
        if cuda:  # the copy may have run on another stream (another loader, epoch or a direct call)
            cur = torch.cuda.current_stream(self.device)
            for _, t, ready in held.values():
                cur.wait_event(ready)
                t.record_stream(cur)
        n = s.dicts_offset(layout)
        dev_flat = torch.empty(n, dtype=torch.int64, device=self.device)
        dev_flat.copy_(flat[:n], non_blocking=True)
        tensors = {}
        for c in cols:
            off, shape = layout[f"{c}.dicts"]
            size = int(np.prod(shape))
            if c not in held:
                tensors[c] = flat[off : off + size].to(self.device, non_blocking=True)
                self._keep(c, s.columns[c], tensors[c], cuda)
                continue
            t0 = held[c][1]
            kh = t0.numel()
            if size == kh:  # (all of them held: that very tensor)
                tensors[c] = t0
            else:  # the held ones, then the rest from the host
                tensors[c] = torch.empty(size, dtype=torch.int64, device=self.device)
                tensors[c][:kh].copy_(t0, non_blocking=True)
                tensors[c][kh:].copy_(flat[off + kh : off + size], non_blocking=True)
            self.dict_bytes_not_copied += 8 * kh
        return s.from_flat(dev_flat, {k: v for k, v in layout.items() if not k.endswith(".dicts")}, tensors), \
            list(tensors.values())

    def _keep(self, c: str, col, dicts, cuda: bool) -> None:
        """Keep column ``c``'s dictionaries that its keys name (``dict_kept`` entries, all where None),
        a copy of their own (a kept batch must not pin this buffer), for the next batches."""
        if col.dict_keys is None:
            return
        k = dicts.numel() if col.dict_kept is None else int(col.dict_kept)
        t = dicts[:k].clone()
        ready = None
        if cuda:
            ready = torch.cuda.Event()
            ready.record(torch.cuda.current_stream(self.device))
        self._dicts[c] = (col.dict_keys, t, ready)

    def _finish_device(self, handle) -> MaterializedBatch:
        st, batch, flags, done = handle
        cuda = self.device.type == "cuda"
        with stage_range("gpumat.handoff", cuda):
            batch.rows = st.rows
            if done is not None:
                compute = torch.cuda.current_stream(self.device)
                compute.wait_event(done)
                batch.record_stream(compute)  # made on the copy/side streams, used on this one
            if self.check_leakage and flags is not None:
                if done is not None:
                    done.synchronize()  # recorded `inflight - 1` batches ago: complete in the steady state
                _check_leakage(flags.cpu().numpy(), st, self.check_leakage)
        return batch

    # ---- public ------------------------------------------------------------------------------
    def __call__(self, examples) -> MaterializedBatch:
        """Materialize one batch of examples for every tenant (synchronously); ``rows`` is ``arange(B)``."""
        st = self.stage(examples)
        st.rows = np.arange(st.ex.size, dtype=np.int64)
        if st.batch is not None:
            return self._finish_host(st)
        return self._finish_device(self._launch(st))

    def iterate(self, examples, batch_size: int = 256, shuffle: bool = True, window: int = 65536, seed: int = 0,
                depth: int = 2, inflight: int = 2, workers: int = 1, drop_last: bool = False,
                rank: int | None = None, world_size: int | None = None, engine: str = "thread",
                ray_options: dict | None = None, affinity: str = "user") -> "MaterializedLoader":
        """An overlapped, resumable stream of ``MaterializedBatch`` over streamed examples (SPEC §9).

        ``examples``: a pyarrow Table, a Parquet file, a directory of them, a list of files or glob
        patterns, or (``engine="ray"``) a ``ray.data.Dataset``; read a unit (row group) at a time.
        ``engine``: where the host work runs. ``"thread"``: ``workers`` threads of this process.
        ``"process"``: ``workers`` spawned processes that read, plan, read the tier and pack each
        batch into shared memory (and, on a CPU device with the reference backend, decode it too);
        this process maps it and only copies it to the device and runs the kernels. ``"ray"``: the
        same stages as a Ray Data pipeline (``ray_options``: see ``gpumat.host.ray_engine``). Every
        engine yields the same batches in the same order, and ``state_dict`` resumes on any of them.
        ``affinity``: ``"user"`` (a user's examples together in a shuffle window) or ``"pack"`` (and the
        users whose newest events share a pack together, ``Tier.pack_groups`` of the tier's version
        now, which ``state_dict`` records: a tier of short histories then stages a pack's block once
        for its users in a batch instead of once a user; batches hold runs of neighbouring users).
        """
        return MaterializedLoader(self, examples, batch_size, shuffle, window, seed, depth, inflight, workers,
                                  drop_last, rank, world_size, engine, ray_options, affinity)

    # ---- engines outside this process -------------------------------------------------------------
    def _filesystem(self):
        """The pyarrow filesystem the tier was opened with (None for a local tier): another handle of
        it (a worker's, an older version's) opens through the same one."""
        store = self.tier.store
        return getattr(store, "fs", None) if getattr(store, "remote", False) else None

    def _producer_spec(self, loader: "MaterializedLoader", counts=None) -> ProducerSpec:
        """What a worker (process or Ray task) needs to build any batch of ``loader``'s stream."""
        tier = self.tier
        st = loader.stream
        return ProducerSpec(tier.uri, self._filesystem(), tier.version, self.streaming and not tier.pinned, self.refresh_timeout,
                            list(self.tenants), self.check_leakage,
                            self.device.type == "cpu" and self.backend == "reference",
                            st.source, st.batch_size, st.window, st.shuffle, st.seed, st.drop_last, st.rank,
                            st.world_size, counts, kjt=self.sparse_features is MaterializedBatch.to_kjt, groups=st.groups)

    def _from_message(self, k: int, header: dict, arrays: dict, where: str) -> _Staged:
        """A batch built outside this process, as the device stage takes it: views, no copies."""
        t = {name: torch.from_numpy(a) for name, a in arrays.items()}
        ex = _ExampleView(arrays["user_id"], arrays["request_ts"])
        passthrough = {}
        for name in header["passthrough"]:
            passthrough[name] = t[f"pt.{name}"] if name in header["numeric"] else header["other"][name]
        rows = arrays["rows"]
        st = _Staged(ex, rows, {}, passthrough=passthrough, request_ts=t["request_ts"], where=where)
        modes = {h["mode"] for h in header["tenants"].values()}
        if modes == {"jagged"}:
            tenants = {}
            for tn in self.tenants:
                h = header["tenants"][tn.name]
                tenants[tn.name] = JaggedBatch(t[f"t.{tn.name}.offsets"], {c: t[f"t.{tn.name}.v.{c}"] for c in h["columns"]},
                                               t[f"t.{tn.name}.lengths"], nbytes_read=h["nbytes_read"],
                                               known_max_len=h["max_len"])
            st.violations = arrays["violations"]
            st.batch = MaterializedBatch(tenants, passthrough, None, sum(h["nbytes_read"] for h in header["tenants"].values()),
                                         st.request_ts)
            if "kjt.values" in t:  # the default KJT, laid out by the worker (host.workers.jagged_layout): wrapped
                keys = [f"{tn.name}.{c}" for tn in self.tenants for c in header["tenants"][tn.name]["columns"]]
                st.batch.sparse_features = keyed_jagged_tensor_class()(
                    keys=keys, values=t["kjt.values"], lengths=t["kjt.lengths"], stride=ex.size)
            elif self.sparse_features is not None:
                st.batch.sparse_features = self.sparse_features(st.batch)
            return st
        host = runs_on_host(self.backend)
        for tn in self.tenants:
            h = header["tenants"][tn.name]
            if host:
                st.staged[tn.name] = staged_from_skeleton(h["skeleton"], arrays[f"t.{tn.name}.packed"], h["layout"])
            else:
                flat = t[f"t.{tn.name}.packed"]
                st.staged[tn.name] = staged_from_skeleton(h["skeleton"], flat, h["layout"])
        if host:  # a host backend other than the reference (its workers only run the reference): decode here
            values, viol = {}, torch.zeros(ex.size, dtype=torch.bool)
            for name, s in st.staged.items():
                values[name], v = decode_gather(s, self.backend)
                viol |= v
            st.violations = viol.numpy()
            tenants = {tn.name: self._jagged(tn, _host_offsets(st.staged[tn.name]), values[tn.name], st.staged[tn.name])
                       for tn in self.tenants}
            st.batch = self._batch(tenants, passthrough, st.request_ts, st.staged)
            return st
        st.packed = {tn.name: (t[f"t.{tn.name}.packed"], header["tenants"][tn.name]["layout"]) for tn in self.tenants}
        return st


@dataclass
class _ExampleView:
    """The parts of a batch's examples that errors name (the rest stayed with the worker)."""

    user_id: np.ndarray
    request_ts: np.ndarray

    @property
    def size(self) -> int:
        return int(self.user_id.size)


ENGINES = ("thread", "process", "ray")


def _shared_feed_token(world_size: int) -> str | None:
    """A name every rank of this run shares for its Ray feed (``host.ray_engine``): rank 0's random
    token, broadcast over ``torch.distributed`` when it is initialized (``iterate`` is then a
    collective: every rank calls it), so a restarted job never meets a previous run's pipeline.
    Without ``torch.distributed`` (ranks given by hand) ``None``: the ranks meet on a digest of the
    settings instead (pass ``ray_options={"feed": name}`` to run two such jobs on one cluster)."""
    import secrets

    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() != world_size:
        return None
    token = [secrets.token_hex(8) if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(token, src=0)
    return token[0]


class MaterializedLoader(torch.utils.data.IterableDataset):
    """The stream behind ``Materializer.iterate``: streamed examples -> host stages (an engine) -> device stage.

    Examples are read a unit (row group) at a time in the order of ``gpumat.host.stream``; the
    epoch's batches are the same on every engine. ``state_dict()`` is the position in the stream:
    the epoch and the batches handed to the caller (not those prefetched), so ``load_state_dict``
    on a new loader over the same examples, with any engine, resumes exactly there.

    Also a ``torch.utils.data.IterableDataset`` of whole batches: ``DataLoader(loader,
    batch_size=None)`` (``num_workers=0``; ``pin_memory=True`` works too) yields the same batches
    as iterating the loader. It keeps its own host workers (``workers=``): DataLoader worker
    processes would each replay the whole stream, so ``num_workers > 0`` is a ``SchemaError``.
    """

    def __init__(self, mat: Materializer, examples, batch_size, shuffle, window, seed, depth, inflight, workers,
                 drop_last, rank, world_size, engine="thread", ray_options=None, affinity="user"):
        if engine not in ENGINES:
            raise SchemaError(f"engine must be one of {list(ENGINES)}, got {engine!r}")
        check_affinity(affinity)
        self.affinity = affinity
        # the packs of the version the loader starts at (a state records it: a resume regroups by it)
        self.pack_version = mat.tier.version if affinity == "pack" else None
        groups = mat.tier.pack_groups() if affinity == "pack" else None
        if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
            raise SchemaError(f"workers must be an integer >= 1, got {workers!r}")
        if rank is None or world_size is None:
            rank, world_size = dist_rank_world()
        self.mat = mat
        self.engine = engine
        self.depth, self.inflight, self.workers = depth, max(1, inflight), int(workers)
        self.ray_options = dict(ray_options or {})
        if engine == "ray" and world_size > 1 and "feed" not in self.ray_options:
            self.ray_options["feed"] = _shared_feed_token(world_size)
        if engine == "ray":
            from gpumat.host import ray_engine

            ray_engine.require_ray()
            self.stream = ray_engine.RayStream(examples, batch_size, window, shuffle, seed, drop_last, rank, world_size,
                                               self.ray_options, groups)
        else:
            self.stream = ExampleStream(ExampleSource(examples, unit_rows=window), batch_size, window, shuffle, seed,
                                        drop_last, rank, world_size, groups=groups)
        self.epoch = 0
        self._consumed = 0  # batches of the current epoch handed to the caller
        self._window = int(window)

    def __len__(self) -> int:
        return self.stream.num_batches()

    def epoch_batches(self, epoch: int | None = None) -> list[np.ndarray]:
        """The source rows of every batch of ``epoch`` (default: the current one), in order."""
        return self.stream.epoch_rows(self.epoch if epoch is None else int(epoch))

    def state_dict(self) -> dict:
        st = self.stream
        k = self._consumed
        return {"epoch": self.epoch, "served": k, "seed": st.seed, "rank": st.rank, "world_size": st.world_size,
                "batch_size": st.batch_size, "window": self._window, "shuffle": st.shuffle, "affinity": self.affinity,
                "pack_version": self.pack_version,
                "stream_window": k * st.batch_size // st.window, "batch_in_window": k % (st.window // st.batch_size)}

    def load_state_dict(self, state: dict) -> None:
        st = self.stream
        mine = {"seed": st.seed, "world_size": st.world_size, "batch_size": st.batch_size, "window": self._window,
                "rank": st.rank, "affinity": self.affinity}
        for key, value in mine.items():
            have = state.get(key, "user" if key == "affinity" else value)  # (a state saved before affinity: "user")
            if have != value:
                raise SchemaError(f"loader state has {key}={have}, this loader {value}")
        if self.affinity == "pack" and state.get("pack_version") != self.pack_version:
            self._group_by_packs_of(state.get("pack_version"))
        self.epoch, self._consumed = int(state["epoch"]), int(state["served"])

    def _group_by_packs_of(self, version) -> None:
        """Order the stream by the packs of tier ``version`` (a state saved by a loader that started
        there: the same batches, though the tier has moved on since)."""
        if isinstance(version, bool) or not isinstance(version, (int, np.integer)) or version < 0:
            raise SchemaError(f"loader state has pack_version={version!r}: a pack-affinity state names the tier "
                              "version whose packs ordered it")
        tier = self.mat.tier
        then = tier if int(version) == tier.version else Tier.open(tier.uri, version=int(version),
                                                                    filesystem=self.mat._filesystem())
        self.stream.groups = then.pack_groups()
        self.stream._cached = None
        self.pack_version = int(version)

    def __iter__(self):
        if torch.utils.data.get_worker_info() is not None:
            raise SchemaError(
                "a MaterializedLoader runs its own host workers (Materializer.iterate(workers=N)); "
                "wrap it in DataLoader(loader, batch_size=None) with num_workers=0"
            )
        return self._batches()

    def _thread_stage(self, epoch: int, first: int, cancel: threading.Event):
        mat = self.mat

        def where(k: int) -> str:
            return f"batch {k} of epoch {epoch}"

        def run(item):
            k, rows, table = item
            st = mat.stage(table, rows, cancel)
            st.where = where(k)
            return st

        # Items carry their index in the epoch, so an error names the batch of the epoch (and its
        # source rows), not a position relative to where a resumed loader started.
        return Prefetcher(run, self.stream.batches(epoch, first), depth=self.depth, workers=self.workers,
                          name="gpumat host stage",
                          describe=lambda i, item: f"{where(item[0])} (example rows {describe_indices(item[1])})")

    def _remote_stage(self, feed, epoch: int):
        for k, header, arrays in feed:
            yield self.mat._from_message(k, header, arrays, f"batch {k} of epoch {epoch}")

    def _batches(self):
        mat = self.mat
        epoch = self.epoch
        first = self._consumed
        cancel = threading.Event()
        if self.engine == "thread":
            stage = self._thread_stage(epoch, first, cancel)
            source = stage
        else:
            if self.engine == "process":
                stage = ProcessPool(mat._producer_spec(self), epoch, first, self.workers, self.depth)
            else:
                stage = self.stream.feed(mat._producer_spec(self, counts=False), epoch, first, self.workers, self.depth)
            source = self._remote_stage(stage, epoch)
        cuda = mat.device.type == "cuda"
        streams = (torch.cuda.Stream(mat.device), torch.cuda.Stream(mat.device)) if cuda and not runs_on_host(mat.backend) else None
        pending: deque = deque()
        try:
            for st in source:
                if st.batch is not None:
                    out = mat._finish_host(st)
                    self._consumed += 1
                    yield out
                    continue
                pending.append(mat._launch(st, streams))
                if len(pending) >= self.inflight:
                    out = mat._finish_device(pending.popleft())
                    self._consumed += 1
                    yield out
            while pending:
                out = mat._finish_device(pending.popleft())
                self._consumed += 1
                yield out
        finally:
            cancel.set()
            stage.close()
        self.epoch = epoch + 1
        self._consumed = 0
