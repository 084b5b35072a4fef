"""Reading and validating event tables (SPEC §3): the input of ``Tier.append``, ``gpumat ingest`` and
``ExampleLogger.observe``.

Events are a pyarrow Table (or RecordBatch, or a Parquet path) with ``user_id`` and exactly the
schema's columns; every column follows the integer rule (any integer width whose values fit, no
nulls). Anything else is a ``SchemaError``.

>>> import pyarrow as pa
>>> ev = read_events(pa.table({"user_id": [7], "ts": pa.array([1], pa.int8())}), {"ts": "int64"})
>>> {c: (a.dtype.name, a.tolist()) for c, a in ev.items()}
{'user_id': ('int64', [7]), 'ts': ('int64', [1])}
>>> read_events_table("missing.parquet")
Traceback (most recent call last):
...
gpumat.core.errors.SchemaError: events file 'missing.parquet' not found
"""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from gpumat.core.errors import SchemaError
from gpumat.host.schema import int_column


def read_events_table(events) -> pa.Table:
    """A pyarrow Table from a Table, a RecordBatch or a Parquet path (columns not checked yet).

    A path that does not exist: ``SchemaError`` saying the file was not found; a file pyarrow cannot
    read: ``SchemaError`` saying so (one line); anything else: ``SchemaError``.
    """
    if isinstance(events, pa.Table):
        return events
    if isinstance(events, pa.RecordBatch):
        return pa.Table.from_batches([events])
    if not isinstance(events, (str, os.PathLike)):
        raise SchemaError(f"events must be a Parquet path or a pyarrow Table, got {type(events).__name__}")
    path = os.fspath(events)
    if os.path.isdir(path):
        raise SchemaError(f"events {path!r} is a directory; give one Parquet file")
    try:
        return pq.read_table(path)
    except (OSError, ValueError, pa.ArrowException) as e:
        if isinstance(e, FileNotFoundError) or not os.path.lexists(path):
            raise SchemaError(f"events file {path!r} not found") from e
        raise SchemaError(f"cannot read events file {path!r}: {' '.join(str(e).split())}") from e


def read_events(events, schema: dict[str, str]) -> dict[str, np.ndarray]:
    """Validate events per SPEC §3 against a checked ``schema``.

    ``events``: what ``read_events_table`` takes. Returns ``{"user_id": int64, c: array of c's schema
    dtype}`` in table order. Duplicate, missing or extra columns, a non-integer column, a null or a
    value that does not fit its dtype: ``SchemaError``.
    """
    events = read_events_table(events)
    names = events.column_names
    if len(set(names)) != len(names):
        raise SchemaError(f"events have duplicate columns: {names}")
    want = ["user_id", *schema]
    missing = [c for c in want if c not in names]
    extra = [c for c in names if c not in want]
    if missing or extra:
        raise SchemaError(f"events columns: missing {missing}, extra {extra} (schema: user_id + {list(schema)})")
    out = {"user_id": int_column(events.column("user_id"), "int64", "events column 'user_id'")}
    for c, dtype in schema.items():
        out[c] = int_column(events.column(c), dtype, f"events column {c!r}")
    return out
