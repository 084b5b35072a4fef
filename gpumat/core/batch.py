"""``JaggedBatch``: a materialized batch of one tenant in the jagged (values + offsets) layout (SPEC §4),
and the ``KeyedJaggedTensor`` built from jagged columns (SPEC §10)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from gpumat.core.errors import SchemaError
from gpumat.core.pipelineable import keyed_jagged_tensor_class, pipelineable

TORCH_DTYPES = {"int64": torch.int64, "int32": torch.int32}  # schema dtype name -> torch dtype


@pipelineable
@dataclass
class JaggedBatch:
    """A batch of materialized sequences for one tenant, in the jagged (values + offsets) layout.

    Row ``b`` holds ``values[col][offsets[b]:offsets[b + 1]]``, oldest event first.

    - ``offsets``: ``torch.int64 [B + 1]``, ``offsets[0] == 0``
    - ``lengths``: ``torch.int64 [B]``
    - ``values[col]``: tensor of the schema dtype, ``[offsets[-1]]``
    - ``max_seq_len``: the longest row, an ``int`` (known on the host for a batch gpumat built)

    The layout is the one generative-recommenders' jagged modules take (``x_offsets`` ``[B + 1]``,
    ``x_lengths`` ``[B]``, ``max_seq_len``), and torchrec's ``Pipelineable`` (``to``,
    ``record_stream``, ``pin_memory``) when torchrec is installed.

    >>> import torch
    >>> b = JaggedBatch(torch.tensor([0, 2, 2, 5]), {"item_id": torch.tensor([7, 8, 1, 2, 3])})
    >>> b.lengths.tolist()
    [2, 0, 3]
    >>> b.to_padded(pad_value=-1)["item_id"].tolist()
    [[7, 8, -1], [-1, -1, -1], [1, 2, 3]]
    >>> b.row(2)["item_id"].tolist()
    [1, 2, 3]
    """

    offsets: torch.Tensor
    values: dict[str, torch.Tensor]
    lengths: torch.Tensor = field(default=None)  # derived from offsets when not given
    nbytes_read: int = 0  # bytes read from storage to build this batch (0 when not read from a tier)
    # The longest row, when the host knows it (the planner does): reading it then needs no device sync.
    known_max_len: int | None = field(default=None, repr=False)

    def __post_init__(self):
        if self.lengths is None:
            self.lengths = self.offsets[1:] - self.offsets[:-1]

    @property
    def batch_size(self) -> int:
        return int(self.offsets.numel()) - 1

    @property
    def device(self) -> torch.device:
        return self.offsets.device

    @property
    def max_seq_len(self) -> int:
        """The longest row (0 for an empty batch): generative-recommenders' ``max_seq_len``.

        Free for a batch gpumat built (the planner knows every length on the host); otherwise read
        from ``lengths`` once (a device sync on a GPU) and remembered.
        """
        if self.known_max_len is None:
            self.known_max_len = int(self.lengths.max()) if self.batch_size > 0 else 0
        return self.known_max_len

    def row(self, b: int) -> dict[str, torch.Tensor]:
        """Row ``b`` as a dict of 1-D tensors."""
        lo, hi = int(self.offsets[b]), int(self.offsets[b + 1])
        return {c: v[lo:hi] for c, v in self.values.items()}

    def to_padded(self, pad_value: int = 0, width: int | None = None) -> dict[str, torch.Tensor]:
        """Dense ``[B, W]`` tensors: row ``b`` holds its sequence in ``[0, lengths[b])`` and ``pad_value`` after.

        ``W = max(lengths)`` (0 for an empty batch) when ``width`` is None; a ``width`` below the
        longest row is a ``SchemaError``.
        """
        B = self.batch_size
        longest = int(self.lengths.max()) if B > 0 else 0
        if width is None:
            W = longest
        else:
            if isinstance(width, bool) or not isinstance(width, (int, np.integer)):
                raise SchemaError(f"padding width must be an integer or None, got {width!r}")
            if width < longest:
                raise SchemaError(f"padding width {width!r} is below the longest row ({longest})")
            W = int(width)
        if isinstance(pad_value, bool) or not isinstance(pad_value, (int, np.integer)):
            raise SchemaError(f"pad_value must be an integer, got {pad_value!r}")
        for col, v in self.values.items():
            info = torch.iinfo(v.dtype)
            if not info.min <= int(pad_value) <= info.max:
                raise SchemaError(f"pad_value {int(pad_value)} does not fit column {col!r} ({str(v.dtype).replace('torch.', '')})")
        dev = self.offsets.device
        pos = torch.arange(W, device=dev, dtype=torch.int64)
        mask = pos.unsqueeze(0) < self.lengths.unsqueeze(1)  # [B, W]
        src = (self.offsets[:-1].unsqueeze(1) + pos.unsqueeze(0))[mask]
        out = {}
        for col, v in self.values.items():
            dense = torch.full((B, W), pad_value, dtype=v.dtype, device=dev)
            dense[mask] = v[src]
            out[col] = dense
        return out

    def to(self, device, non_blocking: bool = False) -> "JaggedBatch":
        """Copy to ``device`` (the torchrec ``Pipelineable`` method)."""
        return JaggedBatch(
            self.offsets.to(device, non_blocking=non_blocking),
            {c: v.to(device, non_blocking=non_blocking) for c, v in self.values.items()},
            self.lengths.to(device, non_blocking=non_blocking),
            self.nbytes_read,
            self.known_max_len,
        )

    def record_stream(self, stream) -> None:
        """Mark every tensor as used on ``stream`` (the torchrec ``Pipelineable`` method)."""
        for t in (self.offsets, self.lengths, *self.values.values()):
            t.record_stream(stream)

    def pin_memory(self) -> "JaggedBatch":
        """Page-locked copy of a CPU batch (the torchrec ``Pipelineable`` method)."""
        return JaggedBatch(
            self.offsets.pin_memory(), {c: v.pin_memory() for c, v in self.values.items()}, self.lengths.pin_memory(),
            self.nbytes_read, self.known_max_len,
        )

    def to_kjt(self, keys=None, rename=None, weights=None):
        """A torchrec ``KeyedJaggedTensor``: one key per column, every key with this batch's lengths.

        - ``keys``: the columns to include, in order (default: every column, in ``values`` order).
        - ``rename``: ``None``, a dict ``{column: key}`` (columns it omits keep their name) or a
          callable ``column -> key``; the resulting keys must be unique.
        - ``weights``: ``None``, or a column whose values (as float32) weight every key's events,
          e.g. ``weights="rating"`` for a weighted ``EmbeddingBagCollection``.

        Values are int64 (int32 columns are widened), lengths int64, ``stride`` = B. Needs torchrec
        (README, *torchrec*). For ``offsets [0, 2, 3]``, ``item_id [7, 8, 9]``, ``rating [5, 3, 4]``
        (tests/test_torchrec.py runs this)::

            kjt = b.to_kjt(keys=["item_id"], rename={"item_id": "item"}, weights="rating")
            kjt.keys(), kjt.values().tolist(), kjt.lengths().tolist(), kjt.weights().tolist()
            # (['item'], [7, 8, 9], [2, 1], [5.0, 3.0, 4.0])
        """
        return build_kjt(kjt_parts(self, keys, rename, weights), self.batch_size, weighted=weights is not None)

    def equals(self, other: "JaggedBatch") -> bool:
        """True when offsets, columns, dtypes and every value are identical (devices may differ)."""
        if set(self.values) != set(other.values):
            return False
        if not torch.equal(self.offsets.cpu(), other.offsets.cpu()):
            return False
        return all(
            self.values[c].dtype == other.values[c].dtype and torch.equal(self.values[c].cpu(), other.values[c].cpu())
            for c in self.values
        )

    def __repr__(self) -> str:
        cols = ", ".join(f"{c}:{str(v.dtype).replace('torch.', '')}" for c, v in self.values.items())
        return f"JaggedBatch(B={self.batch_size}, events={int(self.offsets[-1]) if self.batch_size >= 0 else 0}, [{cols}], device={self.device})"


def _renamed(name: str, rename) -> str:
    if rename is None:
        return name
    if isinstance(rename, Mapping):
        return rename.get(name, name)
    if isinstance(rename, Callable):
        return rename(name)
    raise SchemaError(f"rename must be None, a dict or a callable, got {type(rename).__name__}")


def kjt_parts(batch: JaggedBatch, columns=None, rename=None, weights=None, prefix: str = ""):
    """``[(key, values, lengths, weights or None)]`` of ``batch``'s ``columns`` for ``build_kjt``.

    Keys are ``prefix + column``, then ``rename``d (a dict or a callable over that name); an
    unknown column or weight column is a ``SchemaError``.
    """
    columns = list(batch.values) if columns is None else list(columns)
    unknown = [c for c in columns if c not in batch.values]
    if unknown:
        raise SchemaError(f"to_kjt: unknown column(s) {unknown}; the batch has {list(batch.values)}")
    w = None
    if weights is not None:
        if not isinstance(weights, str) or weights not in batch.values:
            raise SchemaError(f"to_kjt: weights must name a column of the batch ({list(batch.values)}), got {weights!r}")
        w = batch.values[weights].to(torch.float32)
    return [(_renamed(prefix + c, rename), batch.values[c], batch.lengths, w) for c in columns]


def build_kjt(parts, stride: int, weighted: bool = False):
    """One ``KeyedJaggedTensor`` from ``kjt_parts`` (of one batch or several with the same B).

    ``weighted``: the KJT carries weights; a part without weights gets 1.0 for its events.
    Duplicate keys are a ``SchemaError`` (torchrec would silently keep only one of them).
    """
    KeyedJaggedTensor = keyed_jagged_tensor_class()
    keys = [k for k, _, _, _ in parts]
    seen, dup = set(), []
    for k in keys:
        if k in seen:
            dup.append(k)
        seen.add(k)
    if dup:
        raise SchemaError(f"to_kjt: duplicate keys {sorted(set(dup))}; rename them (rename=...)")
    if parts:
        values = torch.cat([v.to(torch.int64) for _, v, _, _ in parts])
        lengths = torch.cat([n for _, _, n, _ in parts])
        w = torch.cat([ws if ws is not None else torch.ones(v.shape, dtype=torch.float32, device=v.device)
                       for _, v, _, ws in parts]) if weighted else None
    else:
        values = torch.empty(0, dtype=torch.int64)
        lengths = torch.empty(0, dtype=torch.int64)
        w = torch.empty(0, dtype=torch.float32) if weighted else None
    return KeyedJaggedTensor(keys=keys, values=values, lengths=lengths, weights=w, stride=int(stride))

