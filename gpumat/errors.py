"""The typed errors of SPEC §5. Every error the library raises on purpose derives from GpumatError."""

from __future__ import annotations

import numpy as np


class GpumatError(Exception):
    """Base class of every gpumat error."""


class TierError(GpumatError):
    """No tier at the URI, a tier already there, a version that does not exist, a write through a pinned handle."""


class SchemaError(GpumatError, ValueError):
    """A request that does not fit the schema or the API (columns, dtypes, nulls, tenants, backends, widths)."""


class PointerError(GpumatError, ValueError):
    """A versioned pointer that names no prefix: version beyond the tier, length beyond the user's history, negatives."""


class LeakageError(GpumatError):
    """A materialized event has ``ts >= request_ts``. ``indices`` holds the offending example indices."""

    def __init__(self, message: str, indices=None):
        super().__init__(message)
        self.indices = np.asarray([] if indices is None else indices, dtype=np.int64)


class CorruptionError(GpumatError):
    """Stored bytes (data or manifest, of any version) fail their checksum or cannot be decoded."""


def describe_indices(indices, limit: int = 8) -> str:
    """'[3, 17, 40]' or '[3, 17, ... (+120 more)]': example indices for a one-line error."""
    idx = [int(i) for i in np.asarray(indices).ravel()[: limit + 1]]
    total = int(np.asarray(indices).size)
    if total <= limit:
        return "[" + ", ".join(map(str, idx)) + "]"
    return "[" + ", ".join(map(str, idx[:limit])) + f", ... (+{total - limit} more)]"
