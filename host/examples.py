"""Examples (versioned pointers + tails) as read from Parquet or a pyarrow Table, checked per SPEC §3.

An example is ``(user_id, version, length, request_ts)`` plus, optionally, a tail: one
``tail_<c>`` list column per schema column ``c``, the unsealed events serving saw. Every other
column passes through untouched.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from gpumat.core.errors import PointerError, SchemaError, describe_indices
from gpumat.core.names import POINTER_COLUMNS, TAIL_PREFIX
from gpumat.host.schema import int_column, list_column



@dataclass
class Examples:
    """Parsed examples: NumPy arrays, tails flattened (CSR) per schema column, as int64."""

    user_id: np.ndarray  # int64 [B]
    version: np.ndarray  # int64 [B]
    length: np.ndarray  # int64 [B]
    request_ts: np.ndarray  # int64 [B]
    tail_offsets: np.ndarray  # int64 [B + 1]
    tail_values: dict  # column -> int64 [tail_offsets[-1]] (empty arrays when the table has no tails)
    passthrough: list  # names of the passthrough columns, in table order
    table: pa.Table  # the input, for passthrough columns

    @property
    def size(self) -> int:
        return int(self.user_id.size)

    @property
    def tail_len(self) -> np.ndarray:
        return np.diff(self.tail_offsets)


def example_files(examples) -> list[str]:
    """The Parquet files named by a path, a directory (its ``*.parquet`` files), a glob pattern, or a
    list of those, in the order given (a directory's and a pattern's files sorted by name).

    A name that matches nothing is a ``SchemaError`` that says so.
    """
    items = [examples] if isinstance(examples, (str, bytes)) or hasattr(examples, "__fspath__") else list(examples)
    files: list[str] = []
    for item in items:
        if not (isinstance(item, (str, bytes)) or hasattr(item, "__fspath__")):
            raise SchemaError(f"examples: expected a path or glob pattern, got {type(item).__name__}")
        path = os.fsdecode(item)
        if os.path.isfile(path):  # a file whose name looks like a pattern (``ex[1].parquet``) is that file
            found = [path]
        elif os.path.isdir(path):
            found = sorted(glob.glob(os.path.join(glob.escape(path), "*.parquet")))
            if not found:
                raise SchemaError(f"examples directory {path!r} holds no *.parquet file")
        elif glob.has_magic(path):
            found = sorted(f for f in glob.glob(path) if os.path.isfile(f))
            if not found:
                raise SchemaError(f"examples pattern {path!r} matches no file")
        else:
            raise SchemaError(f"examples file {path!r} not found")
        files += found
    if not files:
        raise SchemaError("examples: an empty list of files")
    return files


def _with_empty_tails(table: pa.Table, tail_fields: dict[str, pa.Field]) -> pa.Table:
    """``table`` with an empty list for every tail column it lacks (a file without tails: empty tails)."""
    for name, f in tail_fields.items():
        if name not in table.column_names:
            empty = pa.ListArray.from_arrays(pa.array(np.zeros(table.num_rows + 1, dtype=np.int32)), pa.array([], f.type.value_type))
            table = table.append_column(pa.field(name, f.type), empty)
    return table


def read_examples_table(examples) -> pa.Table:
    """A pyarrow Table from a Table, a RecordBatch, or Parquet files (see ``example_files``).

    Files may differ in their tail columns: a file with none has empty tails (its rows get empty
    ``tail_<c>`` lists). Every file must have the same other columns with the same types.
    """
    if isinstance(examples, pa.Table):
        return examples
    if isinstance(examples, pa.RecordBatch):
        return pa.Table.from_batches([examples])
    if not (isinstance(examples, (str, bytes, list, tuple)) or hasattr(examples, "__fspath__")):
        raise SchemaError(f"examples must be a pyarrow Table, Parquet path(s) or glob pattern(s), got {type(examples).__name__}")
    files = example_files(examples)
    tables = []
    for path in files:
        try:
            tables.append(pq.read_table(path))
        except (OSError, pa.ArrowException) as e:
            raise SchemaError(f"cannot read examples from {path!r}: {' '.join(str(e).split())}") from None
    if len(tables) == 1:
        return tables[0]
    tail_fields = {f.name: f for t in tables for f in t.schema if f.name.startswith(TAIL_PREFIX)}
    tables = [_with_empty_tails(t, tail_fields) for t in tables]
    order = tables[0].column_names
    for path, t in zip(files, tables):
        if set(t.column_names) != set(order):
            raise SchemaError(f"examples file {path!r} has columns {sorted(t.column_names)}, the first file {sorted(order)}")
    try:
        return pa.concat_tables([t.select(order) for t in tables], promote_options="permissive")
    except pa.ArrowException as e:
        raise SchemaError(f"examples files disagree on column types: {' '.join(str(e).split())}") from None


def parse_examples(examples, schema: dict[str, str]) -> Examples:
    """Check ``examples`` against SPEC §3 and the tier ``schema``; raise ``SchemaError`` on any violation."""
    table = read_examples_table(examples)
    names = table.column_names
    if len(set(names)) != len(names):
        raise SchemaError(f"examples: duplicate column names in {names}")
    missing = [c for c in POINTER_COLUMNS if c not in names]
    if missing:
        raise SchemaError(f"examples: missing column(s) {missing}; required: {list(POINTER_COLUMNS)}")
    cols = {c: int_column(table.column(c), "int64", f"examples column {c!r}") for c in POINTER_COLUMNS}

    tail_names = [n for n in names if n.startswith(TAIL_PREFIX)]
    unknown = [n for n in tail_names if n[len(TAIL_PREFIX) :] not in schema]
    if unknown:
        raise SchemaError(f"examples: {unknown} name no schema column (schema has {sorted(schema)})")
    B = table.num_rows
    tail_values: dict[str, np.ndarray] = {}
    if tail_names:
        absent = [TAIL_PREFIX + c for c in schema if TAIL_PREFIX + c not in names]
        if absent:
            raise SchemaError(f"examples: tail columns must be all present or none; missing {absent}")
        tail_offsets = None
        for c, dtype in schema.items():
            offs, vals = list_column(table.column(TAIL_PREFIX + c), dtype, f"examples column {TAIL_PREFIX + c!r}")
            if tail_offsets is None:
                tail_offsets = offs
            elif not np.array_equal(offs, tail_offsets):
                bad = np.flatnonzero(np.diff(offs) != np.diff(tail_offsets))
                raise SchemaError(f"examples: tail lists of unequal length in row(s) {describe_indices(bad)}")
            tail_values[c] = vals.astype(np.int64, copy=False)
    else:
        tail_offsets = np.zeros(B + 1, dtype=np.int64)
        tail_values = {c: np.zeros(0, dtype=np.int64) for c in schema}
    passthrough = [n for n in names if n not in POINTER_COLUMNS and not n.startswith(TAIL_PREFIX)]
    return Examples(
        cols["user_id"], cols["version"], cols["length"], cols["request_ts"], tail_offsets, tail_values, passthrough, table
    )


def check_pointers(ex: Examples, tier) -> None:
    """Raise ``PointerError`` unless every pointer names a prefix that ``tier`` holds (SPEC §5)."""
    for name, arr in (("version", ex.version), ("length", ex.length)):
        bad = np.flatnonzero(arr < 0)
        if bad.size:
            raise PointerError(f"examples {describe_indices(bad)}: negative {name}")
    bad = np.flatnonzero(ex.version > tier.version)
    if bad.size:
        raise PointerError(
            f"examples {describe_indices(bad)}: version {int(ex.version[bad[0]])} is beyond the tier's version {tier.version}"
        )
    if ex.size == 0:
        return
    have = tier.length_at(ex.user_id, ex.version)
    bad = np.flatnonzero(ex.length > have)
    if bad.size:
        i = bad[0]
        raise PointerError(
            f"examples {describe_indices(bad)}: length {int(ex.length[i])} exceeds user {int(ex.user_id[i])}'s "
            f"history at version {int(ex.version[i])} ({int(have[i])} events)"
        )
