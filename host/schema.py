"""Schema checks and the integer rule of SPEC §3, shared by every reader of user input.

The rule: an integer column of any width is accepted when every value fits the target dtype;
a value that does not fit, a non-integer column or a null is a ``SchemaError``.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from gpumat.core.errors import SchemaError
from gpumat.core.names import NUMPY_DTYPES, TAIL_PREFIX

DTYPES = NUMPY_DTYPES  # the name host/tier.py imports
PA_TYPES = {name: pa.from_numpy_dtype(dt) for name, dt in NUMPY_DTYPES.items()}  # the Arrow type of each dtype


def check_schema(schema) -> dict[str, str]:
    """Validate a tier schema; return it as a plain ``dict`` in a stable order (``ts`` first)."""
    if not isinstance(schema, dict) or not schema:
        raise SchemaError(f"schema must be a non-empty dict of column name -> dtype, got {schema!r}")
    out: dict[str, str] = {}
    for name, dtype in schema.items():
        if not isinstance(name, str) or not name:
            raise SchemaError(f"schema column names must be non-empty strings, got {name!r}")
        if name == "user_id":
            raise SchemaError("'user_id' is the key, not a schema column")
        if name.startswith(TAIL_PREFIX):
            raise SchemaError(f"schema column {name!r}: names starting with {TAIL_PREFIX!r} are reserved")
        if dtype not in NUMPY_DTYPES:
            raise SchemaError(f"schema column {name!r}: dtype must be 'int64' or 'int32', got {dtype!r}")
    if "ts" not in schema:
        raise SchemaError("schema must contain 'ts' with dtype 'int64'")
    if schema["ts"] != "int64":
        raise SchemaError(f"schema column 'ts' must be 'int64', got {schema['ts']!r}")
    out["ts"] = "int64"
    for name in sorted(schema):
        if name != "ts":
            out[name] = schema[name]
    return out


def int_column(col, dtype: str, what: str) -> np.ndarray:
    """A pyarrow (chunked) integer array or a NumPy array -> NumPy array of ``dtype``, per the integer rule.

    ``what`` names the column in the error message ("events column 'item_id'").
    """
    target = NUMPY_DTYPES[dtype]
    if isinstance(col, np.ndarray):
        if col.dtype.kind not in "iu":
            raise SchemaError(f"{what}: expected integers, got dtype {col.dtype}")
        arr = col
    else:
        if isinstance(col, pa.ChunkedArray):
            col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
        if not pa.types.is_integer(col.type):
            raise SchemaError(f"{what}: expected an integer column, got {col.type}")
        if col.null_count:
            raise SchemaError(f"{what}: {col.null_count} null value(s)")
        arr = col.to_numpy(zero_copy_only=False)
    if arr.dtype == target:
        return arr
    if arr.size:
        info = np.iinfo(target)
        lo, hi = arr.min(), arr.max()
        if (arr.dtype.kind == "u" and int(hi) > info.max) or (
            arr.dtype.kind == "i" and (int(lo) < info.min or int(hi) > info.max)
        ):
            raise SchemaError(f"{what}: value out of range for {dtype} (min {int(lo)}, max {int(hi)})")
    return arr.astype(target)


def list_column(col, dtype: str, what: str) -> tuple[np.ndarray, np.ndarray]:
    """A pyarrow list<integer> column -> (offsets int64 [rows + 1], values of ``dtype``), per the integer rule."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    if not (pa.types.is_list(col.type) or pa.types.is_large_list(col.type)):
        raise SchemaError(f"{what}: expected a list<{dtype}> column, got {col.type}")
    if col.null_count:
        raise SchemaError(f"{what}: {col.null_count} null list(s)")
    offsets = np.asarray(col.offsets, dtype=np.int64)  # (a slice's own)
    # its values: the child's between its first and last offset (what flatten() gives with no null
    # list, without a compute call per column and batch)
    flat = col.values.slice(int(offsets[0]), int(offsets[-1] - offsets[0]))
    offsets = offsets - offsets[0]
    if not pa.types.is_integer(flat.type):
        raise SchemaError(f"{what}: expected list<{dtype}>, got {col.type}")
    return offsets, int_column(flat, dtype, what + " (list values)")
