"""``JaggedBatch``: a materialized batch of one tenant in the jagged (values + offsets) layout (SPEC §4)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from gpumat.core.errors import SchemaError

_TORCH_DTYPES = {"int64": torch.int64, "int32": torch.int32}


@dataclass
class JaggedBatch:
    """A batch of materialized sequences for one tenant, in the jagged (values + offsets) layout.

    Row ``b`` holds ``values[col][offsets[b]:offsets[b + 1]]``, oldest event first.

    - ``offsets``: ``torch.int64 [B + 1]``, ``offsets[0] == 0``
    - ``lengths``: ``torch.int64 [B]``
    - ``values[col]``: tensor of the schema dtype, ``[offsets[-1]]``

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

    def __post_init__(self):
        if self.lengths is None:
            self.lengths = self.offsets[1:] - self.offsets[:-1]

    @property
    def batch_size(self) -> int:
        return int(self.offsets.numel()) - 1

    @property
    def device(self) -> torch.device:
        return self.offsets.device

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
        )

    def record_stream(self, stream) -> None:
        """Mark every tensor as used on ``stream`` (the torchrec ``Pipelineable`` method)."""
        for t in (self.offsets, self.lengths, *self.values.values()):
            t.record_stream(stream)

    def pin_memory(self) -> "JaggedBatch":
        """Page-locked copy of a CPU batch (the torchrec ``Pipelineable`` method)."""
        return JaggedBatch(
            self.offsets.pin_memory(), {c: v.pin_memory() for c, v in self.values.items()}, self.lengths.pin_memory(),
            self.nbytes_read,
        )

    def to_kjt(self, keys=None):
        """A torchrec ``KeyedJaggedTensor`` with one key per column (needs the ``torchrec`` extra)."""
        try:
            from torchrec.sparse.jagged_tensor import KeyedJaggedTensor
        except ImportError as e:  # pragma: no cover - depends on the optional extra
            raise ImportError("to_kjt() needs torchrec: pip install 'gpumat[torchrec]'") from e
        keys = list(self.values) if keys is None else list(keys)
        values = torch.cat([self.values[k].to(torch.int64) for k in keys]) if keys else torch.empty(0, dtype=torch.int64)
        lengths = self.lengths.repeat(len(keys))
        return KeyedJaggedTensor(keys=keys, values=values, lengths=lengths)

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


def torch_dtype(dtype: str) -> torch.dtype:
    return _TORCH_DTYPES[dtype]
