"""The packing stage as a DALI parallel ``external_source``: one packed staged batch per sample.

``StagedBatchSource`` is the picklable callable that ``fn.external_source(source=...,
batch=False, parallel=True, num_outputs=2)`` runs in DALI's worker processes. For sample ``i`` of
DALI epoch ``k`` it takes batch ``i`` of sampler epoch ``first_epoch + k`` (the rows of
``AffinitySampler.epoch_batches``), parses and checks those examples, plans them for ONE tenant
(``host.planner.plan``) and returns the plan packed for a single copy:

    flat    int64 [N]      every array of the ``StagedBatch`` (``StagedBatch.pack``: aligned, a column's words with room after them)
    layout  int64 [6 + 4A]  where each of the A arrays lies in ``flat`` (encoding below)

The worker opens the tier (pinned to one version, so every worker and every epoch reads the same
snapshot whatever writers commit meanwhile) and reads the examples Parquet lazily, once per
worker: nothing heavy is pickled when DALI spawns its workers, only paths and the epoch's batches.

**Layout encoding** (all int64). A header of ``LAYOUT_HEADER`` words

    [LAYOUT_MAGIC, epoch, batch index, B (examples), nbytes_read, A (arrays), total events]

then one row of four words per array, ``[offset into flat, ndim, dim0, dim1]`` (``dim1 = 0`` for a
1-D array), in the fixed order of ``StagedBatch.arrays()``:

    offsets, hist_len, tail_src, tail_len, request_ts,             (EXAMPLE_FIELDS, [B + 1], [B] ...)
    tile_block, tile_lo, tile_cnt, tile_out, tile_ex,              (TILE_FIELDS, [T])
    then per staged column, in the planner's order (the tenant's columns, then ``ts`` when it is
    staged only for the leakage check): <c>.hdr [K, 3], <c>.words [W + 1], <c>.tail_values [M];
    then per staged column, the same order: <c>.dicts [D] (empty for a column without DICT blocks)

Names are not shipped: both sides derive them from (tenant, check_leakage) with
``layout_names``, and ``unpack_staged`` checks the count. The header's epoch and batch index let
the consumer verify that DALI handed the samples over in order.

**Errors travel in band.** DALI re-raises a worker's exception in the main process as a plain
``Exception`` (chained to a ``RuntimeError`` that carries only ``str(exc)``): the type is lost, and
because DALI runs its input callbacks ``prefetch_queue_depth`` iterations ahead, the error
surfaces up to that many batches early, before batches that were planned fine. So the source never
lets an error escape: it returns an *error sample*, a layout whose header starts with
``ERROR_MAGIC`` (``[ERROR_MAGIC, epoch, batch, message bytes, 0, 0, 0]``) and a flat buffer holding
``"<TypeName>\\n<message>"`` in UTF-8 (zero-padded to whole words), where the message says where it
happened (worker pid, tenant, epoch, batch and the batch's source rows). The consumer raises it
with ``raise_packed_error`` when it reaches that batch, in order, as the original gpumat type
(``StageError`` for any other type, with the worker's traceback). Whatever DALI itself raises is
wrapped by ``reraise_worker_error``.
"""

from __future__ import annotations

import os
import traceback

import numpy as np
import torch

import gpumat.core.errors as _errors
from gpumat.core.tenant import Tenant
from gpumat.core.errors import GpumatError, describe_indices
from gpumat.host.examples import check_pointers, parse_examples, read_examples_table
from gpumat.host.planner import plan, staged_columns
from gpumat.host.prefetch import AffinitySampler, StageError
from gpumat.core.staged import EXAMPLE_FIELDS, TILE_FIELDS, StagedBatch, StagedColumn, column_array_names, leakage_mode

LAYOUT_MAGIC = 0x474D41545F4C4159  # "GMAT_LAY": a packed layout, not some other int64 array
ERROR_MAGIC = 0x474D41545F455252  # "GMAT_ERR": an error sample (see the module docstring)
LAYOUT_HEADER = 7
_ROW = 4  # words per array in the layout: offset, ndim, dim0, dim1


def layout_names(tenant: Tenant, check_leakage: bool) -> list[str]:
    """The array names of a packed staged batch, in the fixed order of the layout encoding.

    >>> layout_names(Tenant("t", ["item_id"], 4), True)[-5:]
    ['ts.hdr', 'ts.words', 'ts.tail_values', 'item_id.dicts', 'ts.dicts']
    """
    names = list(EXAMPLE_FIELDS + TILE_FIELDS)
    cols = [col for col, _ in staged_columns(tenant, check_leakage)]
    for col in cols:
        names += column_array_names(col)
    # fixed names: every column has a (maybe empty) dictionary, last as StagedBatch.arrays packs them
    return names + [f"{col}.dicts" for col in cols]


def encode_layout(staged: StagedBatch, layout: dict, epoch: int, batch: int) -> np.ndarray:
    """The int64 layout array (module docstring) of a batch packed by ``StagedBatch.pack``."""
    out = np.zeros(LAYOUT_HEADER + _ROW * len(layout), dtype=np.int64)
    # total = offsets[-1], known on the host: the device side sizes its outputs without reading it back
    out[:LAYOUT_HEADER] = (LAYOUT_MAGIC, epoch, batch, staged.batch_size, staged.nbytes_read, len(layout), staged.total)
    rows = out[LAYOUT_HEADER:].reshape(-1, _ROW)
    for i, (offset, shape) in enumerate(layout.values()):
        if len(shape) > 2:
            raise GpumatError(f"staged array of rank {len(shape)} cannot be encoded (at most 2)")
        rows[i, :2] = (offset, len(shape))
        rows[i, 2 : 2 + len(shape)] = shape
    return out


def decode_layout(layout: np.ndarray, names: list[str]) -> tuple[dict, dict]:
    """(``name -> (offset, shape)`` as ``StagedBatch.from_flat`` takes it, header fields) of a layout array."""
    layout = np.asarray(layout, dtype=np.int64).ravel()
    if layout.size < LAYOUT_HEADER or int(layout[0]) != LAYOUT_MAGIC:
        raise GpumatError("not a packed staged-batch layout (bad magic word)")
    magic, epoch, batch, size, nbytes, count, total = (int(x) for x in layout[:LAYOUT_HEADER])
    if count != len(names) or layout.size != LAYOUT_HEADER + _ROW * count:
        raise GpumatError(
            f"packed layout holds {count} arrays, expected {len(names)} for the staged columns "
            f"{sorted({n.split('.')[0] for n in names if '.' in n})}: source and consumer disagree on tenant or check_leakage"
        )
    rows = layout[LAYOUT_HEADER:].reshape(count, _ROW)
    decoded = {name: (int(r[0]), tuple(int(d) for d in r[2 : 2 + int(r[1])])) for name, r in zip(names, rows)}
    return decoded, {"epoch": epoch, "batch": batch, "batch_size": size, "nbytes_read": nbytes, "total": total}


def unpack_staged(flat, layout, tenant: Tenant, schema: dict[str, str], block_size: int,
                  check_leakage: bool) -> StagedBatch:
    """Rebuild the ``StagedBatch`` that ``StagedBatchSource`` packed, as views into ``flat``.

    ``flat``: the packed int64 buffer as a torch tensor on any device (a NumPy array is taken as a
    CPU tensor without a copy); ``layout``: the layout array (host). The column structure (names,
    dtypes, which are projected) comes from ``tenant``, ``schema`` and ``check_leakage``, exactly
    as the planner chose it. An error sample raises the worker's error (``raise_packed_error``).
    """
    raise_packed_error(flat, layout)
    if not torch.is_tensor(flat):
        flat = torch.from_numpy(np.ascontiguousarray(flat, dtype=np.int64))
    decoded, header = decode_layout(layout, layout_names(tenant, check_leakage))
    empty = np.zeros(0, dtype=np.int64)
    template = StagedBatch(
        block_size,
        {c: StagedColumn(c, schema[c], empty, empty, empty, project, empty)
         for c, project in staged_columns(tenant, check_leakage)},
        *(empty for _ in EXAMPLE_FIELDS + TILE_FIELDS),
        check_leakage=check_leakage,
        nbytes_read=header["nbytes_read"],
        known_total=header["total"],  # so the kernels never read offsets[-1] back from the device
    )
    return template.from_flat(flat, decoded)


def epoch_arrays(sampler: AffinitySampler, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """The batches of ``sampler.epoch_batches(epoch)`` as (rows int64 [R], bounds int64 [nb + 1]), CSR."""
    batches = sampler.epoch_batches(epoch)
    bounds = np.zeros(len(batches) + 1, dtype=np.int64)
    np.cumsum([b.size for b in batches], out=bounds[1:])
    rows = np.concatenate(batches).astype(np.int64) if batches else np.zeros(0, dtype=np.int64)
    return rows, bounds


class StagedBatchSource:
    """``external_source`` callback (sample mode): sample ``i`` -> the packed plan of batch ``i``.

    ``tier_uri``/``version``: the tier and the pinned version every worker opens.
    ``examples_path``: the examples Parquet file. ``tenant``, ``check_leakage``: as in ``plan``.
    ``sampler``: the epoch's batches; ``first_epoch``'s are computed here (in the caller, and
    pickled to the workers as two arrays), later epochs lazily in each worker from the same seeded
    sampler (deterministic, so every worker agrees). DALI epoch ``k`` is sampler epoch
    ``first_epoch + k``; a sample index past the epoch's last batch raises ``StopIteration``.

    Called directly (outside DALI) it behaves the same: ``source(info)`` with any object that has
    ``idx_in_epoch`` and ``epoch_idx``.
    """

    def __init__(self, tier_uri, version: int, examples_path, tenant: Tenant, sampler: AffinitySampler,
                 first_epoch: int, check_leakage=True):
        self.tier_uri = os.fspath(tier_uri)
        self.version = int(version)
        self.examples_path = os.fspath(examples_path)
        self.tenant = tenant
        self.sampler = sampler
        self.first_epoch = int(first_epoch)
        self.check_leakage = leakage_mode(check_leakage)  # "strict", "inclusive" or None
        self._epochs = {self.first_epoch: epoch_arrays(sampler, self.first_epoch)}
        self._tier = None  # opened lazily, once per worker process
        self._table = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_tier"] = state["_table"] = None  # per-process handles: each worker opens its own
        return state

    def _batches(self, epoch: int):
        if epoch not in self._epochs:
            self._epochs = {epoch: epoch_arrays(self.sampler, epoch)}  # one epoch at a time: bounded memory
        return self._epochs[epoch]

    def _open(self):
        if self._tier is None:
            from gpumat.host.tier import Tier  # the tier module is heavy; only workers need it

            self._tier = Tier.open(self.tier_uri, version=self.version)
            self._table = read_examples_table(self.examples_path)
        return self._tier, self._table

    def rows(self, epoch: int, batch: int) -> np.ndarray:
        """Source rows of batch ``batch`` of sampler epoch ``epoch``; ``StopIteration`` past the end."""
        rows, bounds = self._batches(epoch)
        if batch >= bounds.size - 1:
            raise StopIteration
        return rows[bounds[batch] : bounds[batch + 1]]

    def pack_batch(self, epoch: int, batch: int, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Parse, check and plan the examples at ``rows``; return (flat, layout) int64 arrays."""
        import pyarrow as pa

        tier, table = self._open()
        ex = parse_examples(table.take(pa.array(rows)), tier.schema)
        check_pointers(ex, tier)
        staged = plan(tier, ex, self.tenant, self.check_leakage)
        for col in staged.columns.values():  # the fixed layout: an empty dictionary where the column has none
            if col.dicts is None:
                col.dicts = np.zeros(0, dtype=np.int64)
        flat, layout = staged.pack()
        return flat.numpy(), encode_layout(staged, layout, epoch, batch)

    def __call__(self, sample_info):
        epoch = self.first_epoch + int(sample_info.epoch_idx)
        batch = int(sample_info.idx_in_epoch)
        rows = self.rows(epoch, batch)  # StopIteration ends DALI's epoch
        try:
            return self.pack_batch(epoch, batch, rows)
        except Exception as e:
            where = (
                f"DALI worker pid {os.getpid()}, tenant {self.tenant.name!r}, epoch {epoch}, batch {batch} "
                f"(example indices are within the batch; its rows in {self.examples_path}: {describe_indices(rows)})"
            )
            return encode_error(e, where, epoch, batch)


def encode_error(exc: BaseException, where: str, epoch: int, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """The error sample (flat, layout) of ``exc`` raised while planning ``batch`` of ``epoch``."""
    text = f"{where}: {exc}"
    if not isinstance(exc, GpumatError):  # a bug or an environment failure: keep the worker's traceback
        text += "\n" + "".join(traceback.format_exception(exc)).rstrip()
    data = f"{type(exc).__name__}\n{text}".encode("utf-8", "replace")
    flat = np.zeros(-(-len(data) // 8) or 1, dtype=np.int64)
    flat.view(np.uint8)[: len(data)] = np.frombuffer(data, dtype=np.uint8)
    layout = np.array([ERROR_MAGIC, epoch, batch, len(data), 0, 0, 0], dtype=np.int64)  # LAYOUT_HEADER words
    return flat, layout


def raise_packed_error(flat, layout) -> None:
    """Raise the error an error sample carries (nothing for a normal sample).

    A gpumat error type is raised as itself with the worker's message (which says where); any
    other type as ``StageError`` naming it. ``flat``: the sample's flat buffer (host or device).
    """
    layout = np.asarray(layout, dtype=np.int64).ravel()
    if layout.size < LAYOUT_HEADER or int(layout[0]) != ERROR_MAGIC:
        return
    if torch.is_tensor(flat):
        flat = flat.cpu().numpy()
    data = np.ascontiguousarray(flat, dtype=np.int64).view(np.uint8)[: int(layout[3])].tobytes()
    name, _, message = data.decode("utf-8", "replace").partition("\n")
    cls = getattr(_errors, name, None)
    if isinstance(cls, type) and issubclass(cls, GpumatError) and cls is not _errors.LeakageError:
        raise cls(message)
    raise StageError(f"gpumat DALI source failed: {name}: {message}")


def reraise_worker_error(exc: BaseException) -> None:
    """Wrap an exception that DALI itself raised from ``pipe.run()`` (worker died, shared memory,
    a source that failed outside its guarded part) as ``StageError`` chained to it. Always raises."""
    text = str(exc).strip()
    cause = exc.__cause__
    if cause is not None and str(cause).strip() and str(cause).strip() not in text:
        text += f" (caused by {type(cause).__name__}: {str(cause).strip()})"
    raise StageError(f"gpumat DALI pipeline failed: {type(exc).__name__}: {text}") from exc
