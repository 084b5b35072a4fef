"""How serving produces examples: a versioned pointer into the sealed tier plus the unsealed tail.

At request time, serving knows two things about a user: the tier's last *sealed* version (and the
user's length in it), and the recent events that arrived since and are not sealed yet. It logs

    (user_id, version = sealed version, length = length_version(user), request_ts,
     tail_<c> = the user's unsealed events with ts < request_ts, in arrival order,  passthrough...)

which is an example of SPEC §3. ``ExampleLogger`` is that serving side, vectorized over many
requests at once: ``observe`` buffers unsealed events, ``request`` logs examples, ``seal`` appends
the buffer to the tier as a new version.

Why ``ts < request_ts`` (strict): an event at the request's own timestamp is the request's outcome
(its label), not context; SPEC §2's leakage cutoff uses the same strict inequality, so a logged
example always materializes without a ``LeakageError`` as long as the sealed history is older than
the request (serving seals whole past periods, so it is).

>>> import tempfile, numpy as np, pyarrow as pa
>>> from gpumat.host.tier import Tier
>>> tier = Tier.create(tempfile.mkdtemp() + "/t", {"ts": "int64", "item_id": "int64"})
>>> log = ExampleLogger(tier)
>>> log.observe(pa.table({"user_id": [1, 1, 2], "ts": [10, 20, 15], "item_id": [7, 8, 9]}))
>>> log.seal()
1
>>> log.observe(pa.table({"user_id": [1, 1], "ts": [30, 40], "item_id": [5, 6]}))
>>> ex = log.request([1, 2], request_ts=[35, 35], passthrough={"label_item": [6, 3]})
>>> ex.column("version").to_pylist(), ex.column("length").to_pylist(), ex.column("tail_item_id").to_pylist()
([1, 1], [2, 1], [[5], []])
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from gpumat.core.errors import SchemaError
from gpumat.core.names import POINTER_COLUMNS, TAIL_PREFIX
from gpumat.host.events import read_events
from gpumat.host.schema import PA_TYPES, check_schema, int_column
from gpumat.host.ranges import ranges

# pyarrow's list<> has int32 offsets: a list column longer than this is split into chunks.
_MAX_LIST_VALUES = 2**31 - 1


def list_array(offsets: np.ndarray, values: np.ndarray, pa_type: pa.DataType) -> pa.ChunkedArray:
    """A ``list<pa_type>`` column from CSR ``offsets`` (int64 [rows + 1]) and flat ``values``.

    Split into several chunks when the values outgrow pyarrow's int32 list offsets.
    """
    offsets = np.asarray(offsets, dtype=np.int64)
    rows = offsets.size - 1
    flat = pa.array(values, type=pa_type)
    chunks = []
    lo = 0
    while lo < rows or not chunks:
        # the largest hi with offsets[hi] - offsets[lo] <= _MAX_LIST_VALUES (at least one row)
        hi = int(np.searchsorted(offsets, offsets[lo] + _MAX_LIST_VALUES, side="right")) - 1
        hi = min(max(hi, lo + 1), rows) if rows else 0
        base = int(offsets[lo])
        local = (offsets[lo : hi + 1] - base).astype(np.int32)
        chunks.append(pa.ListArray.from_arrays(pa.array(local), flat.slice(base, int(offsets[hi]) - base)))
        lo = hi
        if rows == 0:
            break
    return pa.chunked_array(chunks, type=pa.list_(pa_type))


class ExampleLogger:
    """The serving side: logs examples as ``(sealed pointer, unsealed tail)`` and seals the buffer.

    ``tier`` is a writable ``Tier`` handle; the logger reads its ``version``, ``schema`` and
    ``lengths`` and writes through ``append``. Events passed to ``observe`` are buffered in
    arrival order (call order, then row order) until ``seal``.
    """

    def __init__(self, tier):
        self.tier = tier
        self.schema = check_schema(dict(tier.schema))
        self._chunks: list[dict[str, np.ndarray]] = []
        self._index = None  # cached (order, sorted user ids) of the buffer, rebuilt after observe/seal

    # ---------------------------------------------------------------- buffering
    def _check_events(self, events) -> dict[str, np.ndarray]:
        """SPEC §3's event validation (host/events.py); unlike ``Tier.append``, no Parquet paths."""
        if not isinstance(events, (pa.Table, pa.RecordBatch)):
            raise SchemaError(f"events must be a pyarrow Table, got {type(events).__name__}")
        return read_events(events, self.schema)

    def observe(self, events: pa.Table) -> None:
        """Buffer unsealed ``events`` (``user_id`` + every schema column; SPEC §3's integer rule)."""
        cols = self._check_events(events)
        if cols["user_id"].size:
            self._chunks.append(cols)
            self._index = None

    @property
    def pending(self) -> int:
        """Number of buffered (unsealed) events."""
        return sum(int(c["user_id"].size) for c in self._chunks)

    def _buffer(self) -> dict[str, np.ndarray]:
        """The buffer as one array per column, in arrival order (consolidated in place)."""
        if not self._chunks:
            empty = {"user_id": np.zeros(0, np.int64)}
            empty.update({c: np.zeros(0, np.dtype(d)) for c, d in self.schema.items()})
            return empty
        if len(self._chunks) > 1:
            self._chunks = [{c: np.concatenate([ch[c] for ch in self._chunks]) for c in self._chunks[0]}]
        return self._chunks[0]

    def _sorted(self):
        """Buffer positions grouped by user, each user's ordered by ``ts`` (ties: arrival order)."""
        if self._index is None:
            buf = self._buffer()
            order = np.lexsort((buf["ts"], buf["user_id"]))  # lexsort is stable: ties keep arrival order
            self._index = (order, buf["user_id"][order], buf["ts"][order])
        return self._index

    # ---------------------------------------------------------------- logging
    def request(self, user_ids, request_ts, passthrough: dict | None = None) -> pa.Table:
        """Log one example per request, as serving would at ``request_ts``.

        ``user_ids`` and ``request_ts``: integer arrays ``[R]`` (a scalar ``request_ts`` applies
        to all). ``passthrough``: ``{name: array [R]}`` copied as extra columns (labels,
        candidates); names must not collide with the pointer columns nor start with ``tail_``.

        Returns the examples table of SPEC §3: ``user_id, version, length, request_ts`` (int64),
        ``tail_<c>`` (``list<dtype of c>``) for every schema column, then the passthrough columns.
        The tail of request ``r`` is every buffered event of its user with ``ts < request_ts[r]``,
        in arrival order.
        """
        users = _int64_array(user_ids, "request user_ids")
        R = users.size
        if np.ndim(request_ts) == 0 and not isinstance(request_ts, (pa.Array, pa.ChunkedArray)):
            request_ts = np.full(R, request_ts)
        rts = _int64_array(request_ts, "request_ts")
        if rts.size != R:
            raise SchemaError(f"request: {R} user_ids but {rts.size} request_ts")
        passthrough = dict(passthrough or {})
        for name, col in passthrough.items():
            if not isinstance(name, str) or name in POINTER_COLUMNS or name.startswith(TAIL_PREFIX):
                raise SchemaError(f"request: passthrough column name {name!r} is reserved")
            if len(col) != R:
                raise SchemaError(f"request: passthrough column {name!r} has {len(col)} rows, expected {R}")

        version = int(self.tier.version)
        length = np.asarray(self.tier.lengths(users), dtype=np.int64) if R else np.zeros(0, np.int64)

        # Tail: per request, the user's buffered events with ts < request_ts. With the buffer sorted
        # by (user, ts) these are one contiguous run [lo, cut); re-sorting the picked positions by
        # (request, arrival position) restores arrival order inside each tail. Work is O(output).
        order, s_user, s_ts = self._sorted()
        lo = np.searchsorted(s_user, users, side="left")
        hi = np.searchsorted(s_user, users, side="right")
        cut = _search_runs(s_ts, lo, hi, rts)
        counts = cut - lo
        pos = order[ranges(lo, counts)]  # arrival positions, grouped by request
        req = np.repeat(np.arange(R, dtype=np.int64), counts)
        pos = pos[np.lexsort((pos, req))]
        offsets = np.zeros(R + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])

        buf = self._buffer()
        cols: dict[str, pa.ChunkedArray | pa.Array] = {
            "user_id": pa.array(users, pa.int64()),
            "version": pa.array(np.full(R, version, dtype=np.int64)),
            "length": pa.array(length),
            "request_ts": pa.array(rts, pa.int64()),
        }
        for c, dtype in self.schema.items():
            cols[TAIL_PREFIX + c] = list_array(offsets, buf[c][pos], PA_TYPES[dtype])
        for name, col in passthrough.items():
            cols[name] = col if isinstance(col, (pa.Array, pa.ChunkedArray)) else pa.array(np.asarray(col))
        return pa.table(cols)

    # ---------------------------------------------------------------- sealing
    def seal(self, before_ts: int | None = None) -> int:
        """Append the buffered events to the tier as one new version and drop them from the buffer.

        With ``before_ts``, only the events with ``ts < before_ts`` are sealed (in arrival order);
        the others stay buffered. Returns the new version (an empty seal still commits one).
        """
        buf = self._buffer()
        if before_ts is None:
            keep = np.zeros(buf["user_id"].size, dtype=bool)
        else:
            keep = buf["ts"] >= int(before_ts)
        seal = ~keep
        table = pa.table({c: pa.array(v[seal]) for c, v in buf.items()})
        version = int(self.tier.append(table))
        self._chunks = [{c: v[keep] for c, v in buf.items()}] if keep.any() else []
        self._index = None
        return version


def _int64_array(x, what: str) -> np.ndarray:
    """Any integer array-like (pyarrow included) -> 1-D int64 per the integer rule; ``[]`` is fine."""
    if isinstance(x, (pa.Array, pa.ChunkedArray)):
        return int_column(x, "int64", what)
    arr = np.asarray(x).reshape(-1)
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    return int_column(arr, "int64", what)


def _search_runs(values: np.ndarray, lo: np.ndarray, hi: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Per query i, ``lo[i] + count of values[lo[i]:hi[i]] < x[i]``; each run sorted ascending.

    A vectorized binary search: about log2(longest run) NumPy passes over the queries.
    """
    left = lo.astype(np.int64, copy=True)
    right = hi.astype(np.int64, copy=True)
    if values.size == 0:
        return left
    while True:
        active = left < right
        if not active.any():
            return left
        mid = (left + right) // 2
        midv = values[np.minimum(mid, values.size - 1)]
        go_right = active & (midv < x)
        left = np.where(go_right, mid + 1, left)
        right = np.where(active & ~go_right, mid, right)
