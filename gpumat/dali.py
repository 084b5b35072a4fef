"""``DaliMaterializer``: the host packing stage run by NVIDIA DALI (extra ``gpumat[dali]``).

The same work as ``Materializer.iterate`` for one tenant, with the host stages moved into DALI's
parallel ``external_source`` (worker *processes*, so parsing and planning scale past the GIL):

    DALI workers (spawned)   rows of batch i -> parse -> check pointers -> plan -> pack
                             -> (flat int64 [N], layout int64 [6 + 4A])   (host/dali_source.py)
    DALI pipeline            CPU: hands the two arrays over; CUDA: ``flat.gpu()`` (DALI's copy)
    this process             ``unpack_staged`` -> views -> the same backends as ``gpumat.materialize``
                             (``reference`` on CPU, the Triton kernels on CUDA) -> ``JaggedBatch``

**One DALI sample = one example batch, and DALI's batch size is 1.** Each ``pipe.run()`` returns
exactly one packed example batch, so batch ``i`` of an epoch is sample ``i`` and the epoch ends
at a ``StopIteration`` on a sample boundary. With a DALI batch of several samples, the epoch's
last DALI batch would be partial whenever the number of example batches is not a multiple of it,
and DALI's sample mode drops or rejects partial batches: examples would be lost. Parallelism
does not suffer: DALI schedules ``prefetch_queue_depth`` runs ahead, each run's sample goes to a
free worker, so ``min(py_num_workers, prefetch_queue_depth)`` batches are planned at once.

Nothing touches CUDA or imports DALI at import time; DALI is imported when a ``DaliMaterializer``
is built, the CUDA device is queried when its pipeline is first built (the first iteration).
"""

from __future__ import annotations

import os

import numpy as np
import pyarrow.parquet as pq
import torch

from gpumat.core.batch import JaggedBatch
from gpumat.core.tenant import Tenant
from gpumat.core.errors import GpumatError, LeakageError, SchemaError
from gpumat.core.staged import leakage_mode
from gpumat.host.dali_source import (
    StagedBatchSource,
    decode_layout,
    epoch_arrays,
    layout_names,
    raise_packed_error,
    reraise_worker_error,
    unpack_staged,
)
from gpumat.host.prefetch import AffinitySampler
from gpumat.host.stream import check_affinity
from gpumat.host.schema import int_column
from gpumat.host.tier import Tier
from gpumat.ops import check_device, decode_gather, resolve_backend, resolve_device


def _import_dali():
    """(Pipeline, fn, types, feed_ndarray) from DALI, or an ``ImportError`` that says how to install it."""
    try:
        from nvidia.dali import Pipeline, fn, types
        from nvidia.dali.plugin.pytorch import feed_ndarray
    except ImportError as e:
        raise ImportError(
            f"gpumat's DALI backend needs NVIDIA DALI ({e}); install it with: pip install 'gpumat[dali]'"
        ) from e
    return Pipeline, fn, types, feed_ndarray


class DaliMaterializer:
    """Iterate one tenant's ``JaggedBatch``es over an examples Parquet file, packed by a DALI pipeline.

    ``tier_uri``: the tier; ``version``: the version every worker reads (default: the latest when
    this object is built; pinning keeps every batch of every epoch on one snapshot).
    ``examples_path``: examples Parquet (SPEC §3). ``tenant``: a ``Tenant``. ``batch_size``,
    ``seed``, ``shuffle``, ``window``: the ``AffinitySampler`` that cuts each epoch into
    user-clustered batches (sharded across ``torch.distributed`` ranks when initialized).
    ``device``: ``"cpu"`` (DALI CPU-only pipeline, ``device_id=None``, reference backend) or a
    CUDA device (DALI copies each packed batch to the GPU, Triton kernels decode it).
    ``py_num_workers``, ``prefetch_queue_depth``: DALI's worker processes and runs in flight.
    ``check_leakage``: as in ``gpumat.materialize``. ``affinity``: as in ``Materializer.iterate``
    (``"pack"``: a pack's users in the same batches, ``Tier.pack_groups``).

    Iterating yields the current epoch's batches in order (batch ``i`` holds the examples at
    ``epoch_batches()[i]``, in that order), then moves to the next epoch. A worker's error is
    raised here with its gpumat type and where it happened; after an error, or when a loop stops
    early, the next iteration starts the epoch again on a fresh pipeline (DALI cannot rewind).
    Workers' errors arrive in order: the batches before the failing one are all yielded first.
    """

    def __init__(self, tier_uri, examples_path, tenant: Tenant, batch_size: int, device="cpu", version=None,
                 py_num_workers: int = 2, prefetch_queue_depth: int = 2, seed: int = 0, shuffle: bool = True,
                 check_leakage=True, window: int = 65536, affinity: str = "user"):
        _import_dali()
        check_affinity(affinity)
        if not isinstance(tenant, Tenant):
            raise SchemaError(f"tenant must be a gpumat.Tenant, got {type(tenant).__name__}")
        self.device = resolve_device(device)
        check_device(self.device)
        if self.device.type not in ("cpu", "cuda"):
            raise SchemaError(f"DaliMaterializer runs on 'cpu' or a CUDA device, got {self.device}")
        for name, value in (("py_num_workers", py_num_workers), ("prefetch_queue_depth", prefetch_queue_depth)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise SchemaError(f"{name} must be a positive integer, got {value!r}")
        if not (isinstance(examples_path, str) or hasattr(examples_path, "__fspath__")):
            raise SchemaError(
                f"examples_path must be a Parquet path (DALI's workers read it themselves), got {type(examples_path).__name__}"
            )
        self.tier_uri = os.fspath(tier_uri)
        self.examples_path = os.fspath(examples_path)
        tier = Tier.open(self.tier_uri, version=version)
        self.version = tier.version
        self.schema = tier.schema
        self.block_size = tier.block_size
        tenant.check(self.schema)
        self.tenant = tenant
        self.check_leakage = leakage_mode(check_leakage)  # "strict", "inclusive" or None
        self.py_num_workers = int(py_num_workers)
        self.prefetch_queue_depth = int(prefetch_queue_depth)
        try:
            users = pq.read_table(self.examples_path, columns=["user_id"]).column("user_id")
        except (OSError, KeyError, ValueError) as e:
            raise SchemaError(f"cannot read column 'user_id' of examples {self.examples_path!r}: {e}") from None
        # Kept for leakage messages: a violation names the user, as gpumat.materialize does.
        self._users = int_column(users, "int64", "examples column 'user_id'")
        self.sampler = AffinitySampler(self._users, batch_size, window, shuffle, seed,
                                       groups=tier.pack_groups() if affinity == "pack" else None)
        self._pipe = None
        self._pipe_epoch = None  # sampler epoch of the pipeline's next DALI epoch
        self._backend = None

    # ---- sampler ---------------------------------------------------------------------------
    def __len__(self) -> int:
        """Batches in the current epoch."""
        return len(self.sampler)

    @property
    def epoch(self) -> int:
        return self.sampler.epoch

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration run sampler epoch ``epoch``."""
        self.sampler.set_epoch(epoch)

    def epoch_batches(self, epoch: int | None = None) -> list[np.ndarray]:
        """The source rows of every batch of ``epoch`` (default: the current one), in iteration order."""
        return self.sampler.epoch_batches(epoch)

    # ---- pipeline --------------------------------------------------------------------------
    def _build(self, epoch: int):
        """A DALI pipeline whose DALI epoch k plans sampler epoch ``epoch + k``."""
        Pipeline, fn, types, _ = _import_dali()
        cuda = self.device.type == "cuda"
        # Queried here, not at construction: building a DaliMaterializer never touches CUDA.
        device_id = (self.device.index if self.device.index is not None else torch.cuda.current_device()) if cuda else None
        source = StagedBatchSource(self.tier_uri, self.version, self.examples_path, self.tenant, self.sampler,
                                   epoch, self.check_leakage)
        pipe = Pipeline(batch_size=1, num_threads=1, device_id=device_id, py_num_workers=self.py_num_workers,
                        py_start_method="spawn", prefetch_queue_depth=self.prefetch_queue_depth)
        with pipe:
            flat, layout = fn.external_source(source=source, batch=False, parallel=True, num_outputs=2, ndim=1,
                                              dtype=types.INT64, prefetch_queue_depth=self.prefetch_queue_depth)
            # The layout stays on the host: it is read there to build the views.
            pipe.set_outputs(flat.gpu() if cuda else flat, layout)
        pipe.build()
        return pipe

    def close(self) -> None:
        """Shut the DALI pipeline and its worker processes down (a later iteration builds a new one)."""
        self._pipe = None  # DALI's Pipeline.__del__ stops the workers
        self._pipe_epoch = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- iteration -------------------------------------------------------------------------
    def _resolve_backend(self) -> str:
        if self._backend is None:
            self._backend = resolve_backend("triton" if self.device.type == "cuda" else "reference", self.device)
        return self._backend

    def __iter__(self):
        backend = self._resolve_backend()
        epoch = self.sampler.epoch
        if self._pipe is None or self._pipe_epoch != epoch:
            self.close()
            self._pipe = self._build(epoch)
            self._pipe_epoch = epoch
        pipe = self._pipe
        rows, bounds = self._epoch_rows(epoch)
        finished = False
        try:
            for batch in range(bounds.size):
                try:
                    outs = pipe.run()
                except StopIteration:
                    if batch != bounds.size - 1:
                        raise GpumatError(f"DALI ended epoch {epoch} after {batch} of {bounds.size - 1} batches") from None
                    pipe.reset()
                    finished = True
                    break
                except Exception as e:  # DALI's own failures (workers' errors arrive in band, see _finish)
                    reraise_worker_error(e)
                yield self._finish(outs, backend, epoch, batch, rows[bounds[batch] : bounds[batch + 1]])
        finally:
            if not finished:
                self.close()  # mid-epoch (error or early stop): this pipeline cannot restart the epoch
        self._pipe_epoch = epoch + 1
        self.sampler.set_epoch(epoch + 1)

    def _epoch_rows(self, epoch: int):
        return epoch_arrays(self.sampler, epoch)

    def _finish(self, outs, backend: str, epoch: int, batch: int, rows: np.ndarray) -> JaggedBatch:
        """Views over the packed batch, the backend, the leakage check: one ``JaggedBatch``."""
        _, _, _, feed_ndarray = _import_dali()
        flat_out, layout_out = outs
        layout = np.array(layout_out[0], dtype=np.int64)  # copies: DALI reuses its output buffers
        src = flat_out[0]
        flat = torch.empty(src.shape(), dtype=torch.int64, device=self.device)
        if self.device.type == "cuda":
            feed_ndarray(src, flat, cuda_stream=torch.cuda.current_stream(self.device))
        else:
            feed_ndarray(src, flat)
        raise_packed_error(flat, layout)  # a worker's error, raised in order, at the batch it belongs to
        _, header = decode_layout(layout, layout_names(self.tenant, self.check_leakage))
        if (header["epoch"], header["batch"], header["batch_size"]) != (epoch, batch, rows.size):
            raise GpumatError(
                f"DALI delivered epoch {header['epoch']} batch {header['batch']} ({header['batch_size']} examples) "
                f"where epoch {epoch} batch {batch} ({rows.size} examples) was due"
            )
        staged = unpack_staged(flat, layout, self.tenant, self.schema, self.block_size, self.check_leakage)
        # Already where the backend runs (DALI made the copy): the host backends read the CPU views.
        values, v = decode_gather(staged, backend)
        viol = v.cpu().numpy()  # the one read back of the batch
        if self.check_leakage and viol.any():
            LeakageError.check(viol, self._users[rows], staged.request_ts.cpu().numpy(),
                               where=f"tenant {self.tenant.name!r}, epoch {epoch}, batch {batch}",
                               inclusive=self.check_leakage == "inclusive")
        return JaggedBatch(staged.offsets.clone(), {c: values[c] for c in self.tenant.columns}, nbytes_read=staged.nbytes_read)
