"""The Fat Row baseline: every example row carries its whole sequence, materialized at write time.

This is the industry-standard layout that late materialization replaces. For each example
``(u, v, n, tail)`` the writer materializes SPEC §2's sequence once, for the *union* of the
tenants: the union of their columns at the longest ``max_len`` (``L = max over tenants``),

    S = history[u][0:n] ++ tail ;  seq = S[max(0, len(S) - L):]   (newest L events, oldest first)

and stores it as Parquet ``list<dtype>`` columns ``seq_<col>`` beside ``user_id``, ``request_ts``
and the passthrough columns (labels). A tenant then reads its columns (Parquet column projection)
but, unlike a versioned pointer, it cannot push its shorter ``max_len`` down: it reads each whole
list and keeps the last ``max_len`` values. Every user's history is also stored once per example
(the duplication that makes fat rows fat).

Compression: zstd (pyarrow's level), dictionary encoding off for the sequence columns (Parquet
falls back to plain for high-cardinality ids anyway, and dictionary pages would let the baseline
hide the duplication behind an encoding it does not use in practice). Row groups are cut at about
``row_group_bytes`` of uncompressed sequence data (default 64 MiB), the usual target for
scan-oriented Parquet.

Bytes read (``FatRowReader``) are the compressed column-chunk sizes from the Parquet footer of
the row groups a read touches, for the projected ``seq_`` columns only.
"""

from __future__ import annotations

import json
import os
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from gpumat.core.batch import JaggedBatch
from gpumat.core.tenant import Tenant
from gpumat.core.errors import PointerError, SchemaError, describe_indices
from gpumat.host.examples import parse_examples
from gpumat.host.logger import list_array
from gpumat.host.planner import window_sizes
from gpumat.host.ranges import ranges
from gpumat.host.schema import PA_TYPES

SEQ_PREFIX = "seq_"
_META_KEY = b"gpumat.fatrow"


def _union_columns(tenants, schema: dict[str, str]) -> tuple[list[str], int]:
    tenants = list(tenants)
    if not tenants:
        raise SchemaError("write_fat_rows: at least one tenant is needed")
    for t in tenants:
        if not isinstance(t, Tenant):
            raise SchemaError(f"write_fat_rows: expected Tenant objects, got {type(t).__name__}")
        t.check(schema)
    wanted = {c for t in tenants for c in t.columns}
    return [c for c in schema if c in wanted], max(t.max_len for t in tenants)


def _read_histories(tier, users: np.ndarray, versions: np.ndarray, columns: list[str], schema):
    """Each distinct user's history once (at the newest version any of its examples names), flat.

    Returns ``(hist_base [U], hist_len [U], flat {col: values})``; immutability makes the newest
    version's history a superset of every older pointer's prefix.
    """
    uniq, inv = np.unique(users, return_inverse=True)
    vmax = np.full(uniq.size, -1, dtype=np.int64)
    np.maximum.at(vmax, inv, versions)
    parts = {c: [] for c in columns}
    hist_len = np.zeros(uniq.size, dtype=np.int64)
    read_cols = columns or ["ts"]  # tenants without columns still need the lengths
    for i, (u, v) in enumerate(zip(uniq.tolist(), vmax.tolist())):  # one read per user, not per event
        h = tier.read_history(u, version=v, columns=read_cols)
        for c in columns:
            parts[c].append(np.asarray(h[c], dtype=schema[c]))
        hist_len[i] = len(h[read_cols[0]])
    flat = {c: (np.concatenate(parts[c]) if parts[c] else np.zeros(0, dtype=schema[c])) for c in columns}
    hist_base = np.cumsum(hist_len) - hist_len
    return inv.reshape(-1), hist_base, hist_len, flat


def write_fat_rows(examples, tier, tenants, path, compression: str = "zstd", row_group_bytes: int = 64 << 20,
                   max_row_group_rows: int = 65536) -> int:
    """Write the Fat Row Parquet file of ``examples`` for the union of ``tenants``; return its size in bytes.

    ``examples``: an examples table or Parquet path (SPEC §3) whose pointers ``tier`` holds.
    Output rows follow the input order: ``user_id``, ``request_ts``, the passthrough columns, then
    ``seq_<c>`` (``list<dtype of c>``) for every column some tenant reads, in schema order, each
    holding the newest ``max(tenant.max_len)`` events of ``history[u][0:n] ++ tail``.
    Raises ``SchemaError`` (bad examples or tenants) and ``PointerError`` (a length beyond the
    user's history).
    """
    schema = dict(tier.schema)
    columns, L = _union_columns(tenants, schema)
    ex = parse_examples(examples, schema)
    bad = np.flatnonzero((ex.version < 0) | (ex.length < 0) | (ex.version > tier.version))
    if bad.size:
        raise PointerError(f"examples {describe_indices(bad)}: version or length out of range")
    inv, hist_base, hist_len, hist = _read_histories(tier, ex.user_id, ex.version, columns, schema)
    bad = np.flatnonzero(ex.length > hist_len[inv])
    if bad.size:
        raise PointerError(f"examples {describe_indices(bad)}: length exceeds the user's history")

    # SPEC §2 windows, as the planner cuts them: the last t of the tail, then history [n - h, n)
    m = ex.tail_len
    h, t = window_sizes(ex, L)
    seq_len = h + t
    event_bytes = sum(np.dtype(schema[c]).itemsize for c in columns)
    cum = np.concatenate([[0], np.cumsum(seq_len * max(event_bytes, 1))])

    passthrough = [n for n in ex.passthrough if not n.startswith(SEQ_PREFIX)]
    if len(passthrough) != len(ex.passthrough):
        raise SchemaError(f"write_fat_rows: passthrough column names starting with {SEQ_PREFIX!r} are reserved")
    fields = [pa.field("user_id", pa.int64()), pa.field("request_ts", pa.int64())]
    fields += [ex.table.schema.field(n) for n in passthrough]
    fields += [pa.field(SEQ_PREFIX + c, pa.list_(PA_TYPES[schema[c]])) for c in columns]
    meta = {"columns": columns, "max_len": L, "tenants": [tt.to_json() for tt in tenants], "compression": compression}
    out_schema = pa.schema(fields, metadata={_META_KEY: json.dumps(meta).encode()})

    B = ex.size
    with pq.ParquetWriter(os.fspath(path), out_schema, compression=compression,
                          use_dictionary=["user_id", "request_ts", *passthrough]) as writer:
        a = 0
        while a < B:
            # the largest row group whose sequences stay within row_group_bytes (at least one row)
            b = int(np.searchsorted(cum, cum[a] + row_group_bytes, side="right")) - 1
            b = min(max(b, a + 1), a + max_row_group_rows, B)
            sl = slice(a, b)
            offs = np.concatenate([[0], np.cumsum(seq_len[sl])])
            hist_src = ranges(hist_base[inv[sl]] + ex.length[sl] - h[sl], h[sl])
            hist_pos = ranges(offs[:-1], h[sl])
            tail_src = ranges(ex.tail_offsets[a:b] + m[sl] - t[sl], t[sl])
            tail_pos = ranges(offs[:-1] + h[sl], t[sl])
            cols = {
                "user_id": pa.array(ex.user_id[sl]),
                "request_ts": pa.array(ex.request_ts[sl]),
            }
            for n in passthrough:
                cols[n] = ex.table.column(n).slice(a, b - a)
            for c in columns:
                seq = np.empty(int(offs[-1]), dtype=schema[c])
                seq[hist_pos] = hist[c][hist_src]
                seq[tail_pos] = ex.tail_values[c][tail_src]  # int64 tails fit the schema dtype (checked)
                cols[SEQ_PREFIX + c] = list_array(offs, seq, PA_TYPES[schema[c]])
            writer.write_table(pa.table(cols, schema=out_schema), row_group_size=b - a)
            a = b
    return os.path.getsize(path)


class FatRowReader:
    """Reads tenants' sequences back from a Fat Row file, counting the compressed bytes it touches.

    ``read(tenant, rows)`` -> ``(JaggedBatch, nbytes)``; ``iter_epoch(tenant, batch_size)`` yields
    the same for consecutive batches of a full pass, each row group read (and counted) once;
    ``epoch_nbytes(tenant)`` is what one pass reads.
    """

    def __init__(self, path):
        self.path = os.fspath(path)
        try:
            self._pf = pq.ParquetFile(self.path)
        except (OSError, pa.ArrowException) as e:
            raise SchemaError(f"{self.path}: not a readable Parquet file ({e})") from None
        md = self._pf.metadata
        raw = (self._pf.schema_arrow.metadata or {}).get(_META_KEY)
        if raw is None:
            raise SchemaError(f"{self.path}: not a Fat Row file (no {_META_KEY.decode()} metadata)")
        meta = json.loads(raw)
        self.columns: list[str] = meta["columns"]
        self.max_len: int = int(meta["max_len"])
        self.num_rows = md.num_rows
        sizes = np.array([md.row_group(i).num_rows for i in range(md.num_row_groups)], dtype=np.int64)
        self._rg_start = np.concatenate([[0], np.cumsum(sizes)])
        # compressed bytes of each (row group, seq column): a list column is one leaf in the footer
        leaf = {md.schema.column(j).path.split(".")[0]: j for j in range(md.num_columns)}
        self._chunk_bytes = {
            c: np.array([md.row_group(i).column(leaf[SEQ_PREFIX + c]).total_compressed_size
                         for i in range(md.num_row_groups)], dtype=np.int64)
            for c in self.columns
        }
        self._types = {c: self._pf.schema_arrow.field(SEQ_PREFIX + c).type.value_type for c in self.columns}

    @property
    def num_row_groups(self) -> int:
        return int(self._rg_start.size - 1)

    def _check(self, tenant: Tenant) -> None:
        missing = [c for c in tenant.columns if c not in self.columns]
        if missing:
            raise SchemaError(f"{self.path}: tenant {tenant.name!r} reads {missing}, not stored (has {self.columns})")
        if tenant.max_len > self.max_len:
            raise SchemaError(f"{self.path}: tenant {tenant.name!r} max_len {tenant.max_len} exceeds the stored "
                              f"sequences' {self.max_len}")

    def _load(self, rg: int, tenant: Tenant) -> tuple[dict, int]:
        """Row group ``rg``'s tenant columns as ``{col: (offsets int64 [r + 1], values)}`` and its bytes."""
        table = self._pf.read_row_group(rg, columns=[SEQ_PREFIX + c for c in tenant.columns])
        out = {}
        for c in tenant.columns:
            col = table.column(SEQ_PREFIX + c)
            arr = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
            offs = np.asarray(arr.offsets, dtype=np.int64)
            out[c] = (offs - offs[0], arr.flatten().to_numpy())
        return out, int(sum(self._chunk_bytes[c][rg] for c in tenant.columns))

    def _assemble(self, parts, tenant: Tenant) -> JaggedBatch:
        """Rows ``local`` of each loaded row group, truncated to their last ``max_len`` values, in order."""
        L = tenant.max_len
        starts, keeps, values = [], [], {c: [] for c in tenant.columns}
        base = 0
        for lists, local in parts:
            offs = next(iter(lists.values()))[0] if lists else np.zeros(local.size + 1, dtype=np.int64)
            keep = np.minimum(offs[local + 1] - offs[local], L)
            starts.append(base + offs[local + 1] - keep)  # the newest L: a suffix of the stored list
            keeps.append(keep)
            for c in tenant.columns:
                values[c].append(lists[c][1])
            base += int(offs[-1])
        starts = np.concatenate(starts) if starts else np.zeros(0, dtype=np.int64)
        keep = np.concatenate(keeps) if keeps else np.zeros(0, dtype=np.int64)
        src = ranges(starts, keep)
        offsets = np.zeros(keep.size + 1, dtype=np.int64)
        np.cumsum(keep, out=offsets[1:])
        vals = {}
        for c in tenant.columns:
            flat = np.concatenate(values[c]) if values[c] else np.zeros(0, dtype=self._types[c].to_pandas_dtype())
            vals[c] = torch.from_numpy(np.ascontiguousarray(flat[src]))
        return JaggedBatch(torch.from_numpy(offsets), vals)

    def _rows(self, rows) -> np.ndarray:
        if rows is None:
            return np.arange(self.num_rows, dtype=np.int64)
        if isinstance(rows, slice):
            return np.arange(self.num_rows, dtype=np.int64)[rows]
        idx = np.asarray(rows).reshape(-1)
        if idx.size == 0:
            return np.zeros(0, dtype=np.int64)
        if idx.dtype.kind not in "iu":
            raise SchemaError(f"rows must be None, a slice or integer indices, got dtype {idx.dtype}")
        bad = np.flatnonzero((idx < 0) | (idx >= self.num_rows))
        if bad.size:
            raise SchemaError(f"rows {describe_indices(idx[bad])} are outside [0, {self.num_rows})")
        return idx.astype(np.int64)

    def read(self, tenant: Tenant, rows=None) -> tuple[JaggedBatch, int]:
        """Tenant ``tenant``'s sequences for ``rows`` (None: all; a slice; or row indices, any order).

        Reads the whole column chunks of the touched row groups (no length pushdown) and keeps
        each list's last ``max_len`` values. Returns ``(batch, nbytes)``, ``nbytes`` the compressed
        size of the projected column chunks read.
        """
        self._check(tenant)
        idx = self._rows(rows)
        rg_of = np.searchsorted(self._rg_start, idx, side="right") - 1
        touched = np.unique(rg_of)
        loaded, nbytes = [], 0
        for rg in touched.tolist():
            lists, nb = self._load(rg, tenant)
            nbytes += nb
            loaded.append(lists)
        # rows in the requested order: gather from the concatenation of the touched row groups
        local_base = np.concatenate([[0], np.cumsum(np.diff(self._rg_start)[touched])])
        pos = local_base[np.searchsorted(touched, rg_of)] + (idx - self._rg_start[rg_of])
        return self._assemble([(self._merge(loaded, tenant), pos)], tenant), nbytes

    def iter_epoch(self, tenant: Tenant, batch_size: int) -> Iterator[tuple[JaggedBatch, int]]:
        """One full pass in file order: ``(batch, nbytes)`` per ``batch_size`` rows; a row group's
        bytes are counted by the first batch that touches it, so the ``nbytes`` sum to
        ``epoch_nbytes(tenant)``."""
        self._check(tenant)
        if isinstance(batch_size, bool) or int(batch_size) < 1:
            raise SchemaError(f"batch_size must be >= 1, got {batch_size!r}")
        loaded: dict[int, dict] = {}
        for a in range(0, self.num_rows, int(batch_size)):
            b = min(a + int(batch_size), self.num_rows)
            rg_lo = int(np.searchsorted(self._rg_start, a, side="right")) - 1
            rg_hi = int(np.searchsorted(self._rg_start, b - 1, side="right")) - 1
            nbytes = 0
            for rg in list(loaded):
                if rg < rg_lo:
                    del loaded[rg]  # a pass never goes back: free what is behind
            parts = []
            for rg in range(rg_lo, rg_hi + 1):
                if rg not in loaded:
                    loaded[rg], nb = self._load(rg, tenant)
                    nbytes += nb
                lo = max(a, int(self._rg_start[rg])) - int(self._rg_start[rg])
                hi = min(b, int(self._rg_start[rg + 1])) - int(self._rg_start[rg])
                parts.append((loaded[rg], np.arange(lo, hi, dtype=np.int64)))
            yield self._assemble(parts, tenant), nbytes

    def _merge(self, loaded: list, tenant: Tenant) -> dict:
        """Concatenate loaded row groups' ``{col: (offsets, values)}`` into one."""
        out = {}
        for c in tenant.columns:
            offs, vals, base = [np.zeros(1, dtype=np.int64)], [], 0
            for lists in loaded:
                o, v = lists[c]
                offs.append(o[1:] + base)
                vals.append(v)
                base += int(o[-1])
            empty = np.zeros(0, dtype=self._types[c].to_pandas_dtype())
            out[c] = (np.concatenate(offs), np.concatenate(vals) if vals else empty)
        return out

    def epoch_nbytes(self, tenant: Tenant) -> int:
        """Compressed bytes one full pass reads for ``tenant`` (its column chunks in every row group)."""
        self._check(tenant)
        return int(sum(int(self._chunk_bytes[c].sum()) for c in tenant.columns))

