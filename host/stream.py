"""Streamed examples: where they come from, and the order an epoch reads them in, with bounded memory.

An examples source (``ExampleSource``) is a pyarrow Table, Parquet files (a file, a directory, a
list of files or glob patterns) or, with the ray engine, a ``ray.data.Dataset`` (read there). It is
cut into *units*: the row groups of its files (slices of ``window`` rows of a Table). Only the
Parquet footers are read up front (row counts, schemas); rows are read one unit at a time.

The epoch order (``StreamSchedule``), the same for every engine and every host:

1. units in a seeded random order (``shuffle``; file order otherwise),
2. this rank's rows (``splitmix64(user_id) % world_size == rank``) of the units, in that order,
   cut into *windows* of ``W = ceil(window / batch_size) * batch_size`` rows,
3. inside a window each user's rows are made contiguous (data affinity; users in a seeded random
   order, a user's rows in their order in the source; with ``groups``, the users of a pack
   together, the packs in a seeded random order), then cut into ``W / batch_size`` batches.

A window is a whole number of batches, so every batch lies inside one window and batch ``k`` of
an epoch is found from ``k`` alone: window ``k * batch_size // W``, read from the units that
hold it. That makes the position in the stream a pair ``(epoch, k)`` (the loader's
``state_dict``), lets any worker build any batch, and bounds memory by one window plus the two
units at its edges. With ``world_size > 1`` each rank counts its rows per unit once (reading the
``user_id`` column only); with one rank the footers suffice.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from gpumat.core.errors import SchemaError
from gpumat.core.names import TAIL_PREFIX
from gpumat.host.codec import splitmix64
from gpumat.host.examples import example_files


AFFINITIES = ("user", "pack")  # what a window keeps together: a user's rows, or also a pack's users (``groups``)


def check_affinity(affinity) -> None:
    """``SchemaError`` unless ``affinity`` is one of ``AFFINITIES``."""
    if affinity not in AFFINITIES:
        raise SchemaError(f"affinity must be one of {list(AFFINITIES)}, got {affinity!r}")


def groups_digest(groups) -> str | None:
    """A short digest of ``cluster_by_user``'s ``groups`` (None without): states and feed names that
    must tell two orders apart."""
    if groups is None:
        return None
    import hashlib

    h = hashlib.sha256()
    for a in groups:
        h.update(np.ascontiguousarray(a, np.int64).tobytes())
        h.update(b"|")
    return h.hexdigest()[:16]


def shard_of(user_ids, world_size: int) -> np.ndarray:
    """The rank that owns each user: ``splitmix64(user) % world_size``, the same on every host."""
    return (splitmix64(np.asarray(user_ids, dtype=np.int64).view(np.uint64)) % np.uint64(world_size)).astype(np.int64)


def cluster_by_user(user_ids, rng: np.random.Generator | None = None, keys=None, groups=None) -> np.ndarray:
    """A permutation of rows that makes each user's rows contiguous (data affinity).

    Users come in a random order drawn from ``rng`` (ascending user id when ``rng`` is None); a
    user's rows keep their input order (the order of ``keys``, e.g. their rows in the source).
    ``groups``: ``(users, group)``, int64 arrays, ``users`` ascending: the users of a group come
    together (the groups in a random order, then their users in a random order; without ``rng``
    the groups by their smallest user, their users ascending), so that the users of one pack
    (``Tier.pack_groups``) share batches; a user not in ``users`` is a group of its own.

    >>> cluster_by_user(np.array([5, 7, 5, 9, 7, 5])).tolist()
    [0, 2, 5, 1, 4, 3]
    """
    user = np.asarray(user_ids, dtype=np.int64)
    if user.size == 0:
        return np.zeros(0, dtype=np.int64)
    uniq, group = np.unique(user, return_inverse=True)
    group = group.reshape(-1)
    n_groups = int(group.max()) + 1
    rank = rng.permutation(n_groups) if rng is not None else np.arange(n_groups)
    within = np.arange(user.size, dtype=np.int64) if keys is None else np.asarray(keys)
    if groups is None or not len(groups[0]):
        return np.lexsort((within, rank[group]))
    gu, gg = (np.asarray(a, np.int64) for a in groups)
    i = np.minimum(np.searchsorted(gu, uniq), len(gu) - 1)
    key = np.where(gu[i] == uniq, gg[i], -1 - np.arange(n_groups))  # (no pack: a group of its own)
    _, kinv = np.unique(key, return_inverse=True)
    kinv = kinv.reshape(-1)
    if rng is not None:
        krank = rng.permutation(int(kinv.max()) + 1)
    else:  # each group where its smallest user falls (``uniq`` ascending: its first)
        first = np.full(int(kinv.max()) + 1, n_groups, np.int64)
        np.minimum.at(first, kinv, np.arange(n_groups))
        krank = first
    return np.lexsort((within, rank[group], krank[kinv][group]))


def _int_or_fail(value, name: str, lo: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < lo:
        raise SchemaError(f"{name} must be an integer >= {lo}, got {value!r}")
    return int(value)


# ----------------------------------------------------------------------------------------------- source


def _empty_lists(n: int, value_type) -> pa.Array:
    return pa.ListArray.from_arrays(pa.array(np.zeros(n + 1, dtype=np.int32)), pa.array([], value_type))


class ExampleSource:
    """Examples cut into units (a file's row groups, or slices of a Table), read one unit at a time.

    Picklable (worker processes rebuild what they need: paths, not data, for files).
    ``units``: int64 ``[U, 3]`` (file index or -1 for the Table, row group or first row, rows);
    ``unit_start``: the source row index of each unit's first row (files concatenated in order).
    Files may differ in their tail columns (a file without them has empty tails); every other
    column must be in every file, with types that unify (``SchemaError`` otherwise, up front).
    """

    def __init__(self, examples, unit_rows: int = 65536):
        unit_rows = _int_or_fail(unit_rows, "window")
        self.table: pa.Table | None = None
        self.files: list[str] = []
        if isinstance(examples, pa.RecordBatch):
            examples = pa.Table.from_batches([examples])
        if isinstance(examples, pa.Table):
            self.table = examples
            n = examples.num_rows
            starts = np.arange(0, n, unit_rows, dtype=np.int64)
            self.units = np.stack([np.full(starts.size, -1, np.int64), starts, np.minimum(unit_rows, n - starts)], axis=1)
            self.schema = examples.schema
        elif isinstance(examples, (str, bytes, list, tuple)) or hasattr(examples, "__fspath__"):
            self.files = example_files(examples)
            schemas, units = [], []
            for i, path in enumerate(self.files):
                try:
                    meta = pq.read_metadata(path)
                    schemas.append(meta.schema.to_arrow_schema())
                except (OSError, pa.ArrowException) as e:
                    raise SchemaError(f"cannot read examples from {path!r}: {' '.join(str(e).split())}") from None
                for g in range(meta.num_row_groups):
                    units.append((i, g, meta.row_group(g).num_rows))
            self.units = np.asarray(units, dtype=np.int64).reshape(-1, 3)
            self.schema = self._unify(schemas)
        else:
            hint = " (a ray.data.Dataset needs engine='ray')" if _is_ray_dataset(examples) else ""
            raise SchemaError(f"examples must be a pyarrow Table, Parquet path(s) or glob pattern(s){hint}, "
                              f"got {type(examples).__name__}")
        if "user_id" not in self.schema.names:
            raise SchemaError("examples: missing column 'user_id'")
        self.unit_start = np.concatenate([[0], np.cumsum(self.units[:, 2])])[:-1].astype(np.int64)
        self._open: OrderedDict = OrderedDict()  # path -> ParquetFile, a few kept open

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_open"] = OrderedDict()
        if self.table is not None:
            # A Table of many chunks that slice shared buffers pickles each chunk's buffers whole:
            # ML-1M's 90k training examples (593 chunks, 83 MB) pickled to 7.2 GB. The Arrow IPC
            # stream writes each chunk's own rows once.
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, self.table.schema) as writer:
                writer.write_table(self.table)
            state["table"] = sink.getvalue()
        return state

    def __setstate__(self, state: dict) -> None:
        if isinstance(state.get("table"), pa.Buffer):
            state["table"] = pa.ipc.open_stream(state["table"]).read_all()
        self.__dict__.update(state)

    def _unify(self, schemas: list[pa.Schema]) -> pa.Schema:
        base = [f for f in schemas[0] if not f.name.startswith(TAIL_PREFIX)]
        names = sorted(f.name for f in base)
        for path, s in zip(self.files, schemas):
            mine = sorted(f.name for f in s if not f.name.startswith(TAIL_PREFIX))
            if mine != names:
                first = sorted(schemas[0].names)
                raise SchemaError(f"examples file {path!r} has columns {sorted(s.names)}, the first file {first}")
        tails: dict[str, pa.Field] = {}
        for s in schemas:
            for f in s:
                if f.name.startswith(TAIL_PREFIX):
                    tails.setdefault(f.name, f)
        order = [f.name for f in schemas[0] if not f.name.startswith(TAIL_PREFIX)]
        order += list(tails)
        try:
            unified = pa.unify_schemas([self._with_tails(s, tails) for s in schemas], promote_options="permissive")
        except pa.ArrowException as e:
            raise SchemaError(f"examples files disagree on column types: {' '.join(str(e).split())}") from None
        return pa.schema([unified.field(n) for n in order])

    @staticmethod
    def _with_tails(s: pa.Schema, tails: dict) -> pa.Schema:
        for name, f in tails.items():
            if name not in s.names:
                s = s.append(f)
        return s

    @property
    def num_rows(self) -> int:
        return int(self.units[:, 2].sum())

    @property
    def num_units(self) -> int:
        return int(self.units.shape[0])

    def _parquet(self, path: str) -> pq.ParquetFile:
        f = self._open.pop(path, None)
        if f is None:
            f = pq.ParquetFile(path)
        self._open[path] = f
        while len(self._open) > 4:
            self._open.popitem(last=False)[1].close()
        return f

    def read_unit(self, u: int, columns: list[str] | None = None) -> pa.Table:
        """Unit ``u`` as a Table with the source's columns (``columns``: only those), empty tails filled in."""
        fi, lo, n = (int(x) for x in self.units[u])
        if fi < 0:
            t = self.table.slice(lo, n)
            return t.select(columns) if columns is not None else t
        path = self.files[fi]
        try:
            f = self._parquet(path)
            have = set(f.schema_arrow.names)
            want = self.schema.names if columns is None else columns
            t = f.read_row_group(lo, columns=[c for c in want if c in have], use_threads=False)
        except (OSError, pa.ArrowException) as e:
            raise SchemaError(f"cannot read examples from {path!r} (row group {lo}): {' '.join(str(e).split())}") from None
        cols = []
        for name in want:
            target = self.schema.field(name)
            if name in t.column_names:
                col = t.column(name)
                cols.append(col if col.type == target.type else col.cast(target.type))
            else:  # a tail column this file lacks: empty tails
                cols.append(_empty_lists(t.num_rows, target.type.value_type))
        return pa.Table.from_arrays(cols, schema=pa.schema([self.schema.field(n) for n in want]))

    def user_ids(self, u: int) -> np.ndarray:
        col = self.read_unit(u, ["user_id"]).column("user_id")
        if col.null_count or not pa.types.is_integer(col.type):
            raise SchemaError(f"examples column 'user_id' must be int64 without nulls (unit {u}: {col.type}, "
                              f"{col.null_count} nulls)")
        return col.to_numpy().astype(np.int64, copy=False)


def _is_ray_dataset(obj) -> bool:
    return type(obj).__module__.startswith("ray.data")


# --------------------------------------------------------------------------------------------- schedule


@dataclass
class StreamSchedule:
    """The epoch order of a source's rows for one rank (module docstring): pure arithmetic on the
    rows each unit holds for the rank, so every engine and worker computes the same batches."""

    counts: np.ndarray  # int64 [U]: this rank's rows in each unit
    batch_size: int
    window: int  # W, a multiple of batch_size
    shuffle: bool
    seed: int
    drop_last: bool
    _orders: dict = field(default_factory=dict, repr=False)

    @property
    def rows(self) -> int:
        return int(self.counts.sum())

    def num_batches(self) -> int:
        full, rest = divmod(self.rows, self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)

    def unit_order(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(units in epoch order, exclusive cumsum of their rank rows)."""
        got = self._orders.get(epoch)
        if got is None:
            n = self.counts.size
            order = np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle else np.arange(n)
            start = np.concatenate([[0], np.cumsum(self.counts[order])])[:-1].astype(np.int64)
            self._orders = {epoch: (order, start)}  # one epoch at a time
            got = self._orders[epoch]
        return got

    def window_of(self, k: int) -> int:
        return k * self.batch_size // self.window

    def window_units(self, epoch: int, w: int) -> list[tuple[int, int, int]]:
        """``[(unit, lo, hi)]``: window ``w`` is rank rows ``[lo, hi)`` of each unit, units in epoch order."""
        order, start = self.unit_order(epoch)
        lo, hi = w * self.window, min((w + 1) * self.window, self.rows)
        out = []
        i = int(np.searchsorted(start, lo, side="right")) - 1
        while i < order.size and lo < hi:
            u = int(order[i])
            a = lo - int(start[i])
            b = min(hi - int(start[i]), int(self.counts[u]))
            if b > a:
                out.append((u, a, b))
                lo = int(start[i]) + b
            i += 1
        return out

    def window_rng(self, epoch: int, w: int) -> np.random.Generator | None:
        return np.random.default_rng([self.seed, epoch, w]) if self.shuffle else None


def unit_counts(source: ExampleSource, rank: int, world_size: int) -> np.ndarray:
    """This rank's rows in each unit: the footers' row counts with one rank, else a pass over ``user_id``."""
    if world_size == 1:
        return source.units[:, 2].copy()
    return np.asarray([int(np.count_nonzero(shard_of(source.user_ids(u), world_size) == rank))
                       for u in range(source.num_units)], dtype=np.int64)


def unit_counts_all(source: ExampleSource, world_size: int) -> np.ndarray:
    """Every rank's rows in each unit, int64 ``[world_size, U]``: one pass over ``user_id`` (none with one rank)."""
    if world_size == 1:
        return source.units[:, 2].copy().reshape(1, -1)
    out = np.zeros((world_size, source.num_units), dtype=np.int64)
    for u in range(source.num_units):
        out[:, u] = np.bincount(shard_of(source.user_ids(u), world_size), minlength=world_size)
    return out


def check_rank(rank: int, world_size: int) -> None:
    if not 0 <= rank < world_size:
        raise SchemaError(f"rank {rank} is not in [0, {world_size})")


class ExampleStream:
    """One rank's epochs of a source: ``batch(epoch, k) -> (rows, Table)``, a window read at a time.

    ``rows``: int64 ``[b]``, the examples' row indices in the source; the Table holds those rows
    (every column, tails normalized). Batches of one window come from one read of its units (the
    last window read is kept), so reading batches in order reads every unit about once.
    """

    def __init__(self, source: ExampleSource, batch_size: int, window: int = 65536, shuffle: bool = True,
                 seed: int = 0, drop_last: bool = False, rank: int = 0, world_size: int = 1, counts=None,
                 groups=None):
        self.batch_size = _int_or_fail(batch_size, "batch_size")
        window = _int_or_fail(window, "window")
        check_rank(rank, world_size)
        self.source, self.rank, self.world_size = source, int(rank), int(world_size)
        self.shuffle, self.seed, self.drop_last = bool(shuffle), int(seed), bool(drop_last)
        self.window = -(-window // self.batch_size) * self.batch_size
        self._counts = None if counts is None else np.asarray(counts, dtype=np.int64)
        self._schedule: StreamSchedule | None = None
        self._cached: tuple | None = None  # (epoch, w, table, rows, order)
        self.groups = groups  # (users, group): users kept together in a window (``cluster_by_user``)

    @property
    def schedule(self) -> StreamSchedule:
        if self._schedule is None:
            if self._counts is None:
                self._counts = unit_counts(self.source, self.rank, self.world_size)
            self._schedule = StreamSchedule(self._counts, self.batch_size, self.window, self.shuffle, self.seed,
                                            self.drop_last)
        return self._schedule

    @property
    def counts(self) -> np.ndarray:
        return self.schedule.counts

    def num_batches(self) -> int:
        return self.schedule.num_batches()

    def read_window(self, epoch: int, w: int):
        """(Table of the window's rows in clustered order's source, their source rows, clustered order)."""
        s = self.schedule
        parts, rows = [], []
        for u, a, b in s.window_units(epoch, w):
            t = self.source.read_unit(u)
            if self.world_size > 1:
                users = t.column("user_id").to_numpy().astype(np.int64, copy=False)
                mine = np.flatnonzero(shard_of(users, self.world_size) == self.rank)[a:b]
            else:
                mine = np.arange(a, b, dtype=np.int64)
            parts.append(t.take(pa.array(mine)) if mine.size != t.num_rows else t)
            rows.append(self.source.unit_start[u] + mine)
        table = pa.concat_tables(parts) if len(parts) != 1 else parts[0]
        if len(parts) > 1:
            table = table.combine_chunks()
        rows = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        users = table.column("user_id").to_numpy().astype(np.int64, copy=False) if table.num_rows else rows
        return table, rows, cluster_by_user(users, s.window_rng(epoch, w), rows, self.groups)

    def batch_rows(self, epoch: int, k: int):
        """(source rows of batch ``k``, the window's Table, positions of the batch in it)."""
        s = self.schedule
        if not 0 <= k < s.num_batches():
            raise IndexError(f"batch {k} of epoch {epoch}: the epoch has {s.num_batches()} batches")
        w = s.window_of(k)
        if self._cached is None or self._cached[:2] != (epoch, w):
            self._cached = (epoch, w, *self.read_window(epoch, w))
        _, _, table, rows, order = self._cached
        j = k * self.batch_size - w * s.window
        pos = order[j: j + self.batch_size]
        return rows[pos], table, pos

    def batch(self, epoch: int, k: int) -> tuple[np.ndarray, pa.Table]:
        rows, table, pos = self.batch_rows(epoch, k)
        return rows, table.take(pa.array(pos))

    def batches(self, epoch: int, start: int = 0, step: int = 1):
        """``(k, rows, Table)`` for batches ``start, start + step, ...`` of ``epoch``."""
        for k in range(start, self.num_batches(), step):
            rows, table = self.batch(epoch, k)
            yield k, rows, table

    def epoch_rows(self, epoch: int) -> list[np.ndarray]:
        """Every batch's source rows for ``epoch`` (reads the user ids only: for tests and tools)."""
        return [self.batch_rows(epoch, k)[0] for k in range(self.num_batches())]
