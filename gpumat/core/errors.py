"""The typed errors of SPEC §5. Every error the library raises on purpose derives from GpumatError.

The bottom layer: imports nothing of the project, and no torch.
"""

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
    """A materialized event has ``ts >= request_ts`` (``ts > request_ts`` with ``check_leakage="inclusive"``).
    ``indices`` holds the offending example indices."""

    def __init__(self, message: str, indices=None):
        super().__init__(message)
        self.indices = np.asarray([] if indices is None else indices, dtype=np.int64)

    @classmethod
    def check(cls, violations, user_id, request_ts, rows=None, where: str = "", inclusive: bool = False) -> None:
        """Raise for the examples flagged in ``violations`` (bool ``[B]``), if any.

        ``user_id``/``request_ts``: the batch's ``[B]`` arrays, for the message. ``rows``: each
        example's row in the caller's source (a shuffled loader's batch is a subset of its
        source, so batch-local indices would point at the wrong rows); the identity when None.
        ``where``: which batch, prefixed to the message. ``inclusive``: the check was
        ``ts <= request_ts`` (the message then says ``ts > request_ts``).
        """
        bad = np.flatnonzero(np.asarray(violations))
        if not bad.size:
            return
        named = bad if rows is None else np.asarray(rows, dtype=np.int64)[bad]
        prefix = f"{where}: " if where else ""
        first = bad[0]
        raise cls(
            f"{prefix}examples {describe_indices(named)} materialize events with ts {'>' if inclusive else '>='} request_ts "
            f"(first: user {int(np.asarray(user_id)[first])}, request_ts {int(np.asarray(request_ts)[first])})",
            named,
        )


class CorruptionError(GpumatError):
    """Stored bytes (data or manifest, of any version) fail their checksum or cannot be decoded."""


def describe_indices(indices, limit: int = 8) -> str:
    """'[3, 17, 40]' or '[3, 17, ... (+120 more)]': example indices for a one-line error."""
    idx = [int(i) for i in np.asarray(indices).ravel()[: limit + 1]]
    total = int(np.asarray(indices).size)
    if total <= limit:
        return "[" + ", ".join(map(str, idx)) + "]"
    return "[" + ", ".join(map(str, idx[:limit])) + f", ... (+{total - limit} more)]"
