"""Reading one committed version of a tier (docs/DESIGN.md §3): its length history, its directory of
live stripes (verified against the lengths), verified blocks for the planner, decoded histories.

A ``VersionReader`` is immutable in what it reads (one ``host.log.State``) and caches lazily, so
planner threads can share it; a handle that moves to another version gets a new reader.
"""

from __future__ import annotations

import functools
import hashlib
import os
import threading
from dataclasses import dataclass

import numpy as np

from gpumat.core.errors import CorruptionError, GpumatError, SchemaError
from gpumat.core.staged import AUX_FLAG, dict_lines
from gpumat.host import codec, native, pages
from gpumat.host.lengths import LengthHistory
from gpumat.host.log import State
from gpumat.host.ranges import ranges, take_ranges, unique
from gpumat.host.segment import CHUNK_BYTES, Segment, known_segment, open_segment, pack_sizes, pack_skips


def _meta_cache_bytes() -> int:
    """``GPUMAT_META_CACHE_BYTES`` (default 64 MiB; 0 turns the cache off): what a reader may keep of
    its large segments' blob heads (``_MetaCache``)."""
    try:
        return max(0, int(os.environ.get("GPUMAT_META_CACHE_BYTES", 64 << 20)))
    except ValueError:
        return 64 << 20


HEAD_KEPT_MAX = 8192  # a longer blob head (over ~5,400 blocks: a history of ~700k events) is read by pages, not kept
# A segment's stripe tables of a column, where all of them take at most TABLES_KEPT_BYTES stored, are
# kept once read, as its segment dictionary is, each of at most TABLE_KEPT_ENTRIES entries (so at most
# 2,048 tables of 512 bytes decoded: 1 MiB a segment and column); the others are read by every read
# that needs them. ML-1M + features' `genre`: 60 tables in 497 bytes, re-read and decoded at every
# whole-column read, 15-25% of its time.
TABLES_KEPT_BYTES = 4096
TABLE_KEPT_ENTRIES = 64
# A read of blocks (a batch's windows) reads, of a stripe table of at least TABLE_PART_BYTES stored and
# three pages, only the pages that hold the entries its codes index (at least two; DESIGN §1 "Stripe
# tables"); a table of fewer pages, or whose pages the codes all need, is read whole
TABLE_PART_BYTES = 4096


class _MetaCache:
    """The heads of a version's large-segment blobs, kept once read and verified: a format-3 blob's
    tags and, for a stripe of several pages, its pages' anchors (its first ``nb + 8 pages`` bytes),
    which is what the first of a batch's two waves of reads fetches. A blob read again (the next
    epoch, another window of the same user) then needs one wave: its fields and payload.

    Append-only, up to ``capacity`` bytes (blobs past it are read as before, never evicted: a
    place, once published, stays valid). Planner threads share it: a thread reserves room under the
    lock, fills it outside, and publishes the blobs' places only then, so a reader sees a blob
    either not kept or filled. ``hits`` counts the requests served from it, ``kept`` the blobs
    stored. A blob is keyed by its column and ``Directory.blob`` (a pack's stripes share one head)."""

    def __init__(self, nstripes: int, capacity: int):
        self.nstripes, self.capacity = nstripes, min(capacity, (1 << 31) - 1)
        # schema column -> int32 [nstripes]: a blob's head's place, -1: not kept (4 bytes a stripe and
        # column read, beside the directory's 24)
        self.at: dict[int, np.ndarray] = {}
        self.buf: np.ndarray | None = None  # uint8 [capacity], made when first needed (untouched pages cost nothing)
        self.used = self.hits = self.kept = 0
        self.lock = threading.Lock()

    def lookup(self, cols: np.ndarray, si: np.ndarray) -> np.ndarray:
        """The place of each blob ``(schema column cols[i], Directory.blob si[i])``, -1 where not kept
        (``cols`` in runs: a read's requests are column after column)."""
        out = np.full(len(si), -1, np.int64)
        if not self.at or not len(si):
            return out
        cuts = np.r_[0, np.flatnonzero(cols[1:] != cols[:-1]) + 1, len(cols)].tolist()
        for a, b in zip(cuts[:-1], cuts[1:]):
            arr = self.at.get(int(cols[a]))
            if arr is not None:
                out[a:b] = arr[si[a:b]]
        return out

    def reserve(self, nbytes: np.ndarray) -> np.ndarray:
        """Room for blobs of ``nbytes`` each, in order while they fit: their places, -1 past the room."""
        with self.lock:
            ends = self.used + np.cumsum(nbytes)
            fit = ends <= self.capacity  # (a prefix: the ends grow)
            if not fit.any():
                return np.full(len(nbytes), -1, np.int64)
            if self.buf is None:
                self.buf = np.empty(self.capacity, np.uint8)
            self.used = int(ends[fit][-1])
            return np.where(fit, ends - nbytes, -1)

    def release(self, places: np.ndarray, nbytes: np.ndarray) -> None:
        """Room reserved for blobs never filled (their read failed): given back when nothing was
        reserved after it (else it stays unused: places once handed out are never reused)."""
        with self.lock:
            if len(places) and self.used == int((places + nbytes).max()):
                self.used = int(places.min())

    def publish(self, cols: np.ndarray, si: np.ndarray, places: np.ndarray) -> None:
        """Blobs whose reserved room holds their heads now."""
        with self.lock:
            for c in np.unique(cols).tolist():
                a = self.at.get(c)
                if a is None:
                    a = self.at[c] = np.full(self.nstripes, -1, np.int32)
                m = cols == c
                a[si[m]] = places[m]
            self.kept += len(si)


class Blocks(tuple):
    """What ``read_blocks`` returns: ``(hdr, words, nbytes)``, and ``dicts``: the dictionaries its
    DICT blocks index (int64, back to back: the segment dictionaries of the stripes read, then
    their stripe tables; each block's base already counts where its own starts), ``None`` when it
    has none; ``dict_keys``: one int per segment dictionary, in order, naming it (its segment and
    place: equal keys, equal ``dicts[:dict_kept]``), None where there is none; ``dict_kept``: the
    entries they take."""

    dicts: np.ndarray | None
    dict_keys: tuple | None
    dict_kept: int

    def __new__(cls, hdr, words, nbytes, dicts=None, dict_keys=None, dict_kept=0):
        t = super().__new__(cls, (hdr, words, nbytes))
        t.dicts, t.dict_keys, t.dict_kept = dicts, dict_keys, dict_kept
        return t

    def __getnewargs__(self):  # pickle, copy
        return (*self, self.dicts, self.dict_keys, self.dict_kept)


@dataclass
class Directory:
    """The live stripes of one version, sorted by ``(user_id, start)`` (docs/DESIGN.md §3).

    ``user_id, start, count, nblocks, block0`` int64 ``[S]``, ``seg`` int32 ``[S]`` (index into the
    version's segment list); ``block0`` is the exclusive cumsum of ``nblocks``.

    A stripe's blobs hold its events alone, or, in a pack of short histories (DESIGN §2), after
    ``skip`` events of the stripes before it in the pack: its blobs hold ``bcount`` events in
    ``bblocks`` blocks, and its events are blob positions ``[skip, skip + count)``. Its blocks, as
    ``read_blocks`` numbers them, are the blob's blocks ``b0 = skip // block_size`` onwards
    (``nblocks`` of them), its first event at position ``skip % block_size`` of its first block.
    ``owner``: the stripes whose blobs start with their own events (one per blob); ``blob``: the
    directory index of a stripe standing for its blobs (the stripes of one pack share it, every
    other stripe is its own), so that a batch stages a block of a pack once for all its stripes.
    """

    user_id: np.ndarray
    start: np.ndarray
    count: np.ndarray
    seg: np.ndarray
    nblocks: np.ndarray
    block0: np.ndarray
    skip: np.ndarray | None = None
    bcount: np.ndarray | None = None
    b0: np.ndarray | None = None
    bblocks: np.ndarray | None = None
    blob: np.ndarray | None = None

    def __post_init__(self):
        if self.skip is None:
            self.skip, self.bcount = np.zeros_like(self.count), self.count
            self.b0, self.bblocks = np.zeros_like(self.count), self.nblocks
        if self.blob is None:
            self.blob = np.arange(len(self.count), dtype=np.int64)

    @property
    def owner(self) -> np.ndarray:
        return self.skip == 0

    def __len__(self) -> int:
        return len(self.user_id)

    def block_values(self, stripe_idx, block_size: int, block_lo=None, block_hi=None) -> tuple[np.ndarray, np.ndarray | slice]:
        """For blocks ``[block_lo[i], block_hi[i])`` (default: all) of stripes ``stripe_idx`` (as
        ``read_blocks`` returns them): each block's value count, and which of their values
        (concatenated) are the stripes' own events (a pack's blocks hold other stripes' too;
        ``slice(None)``: all of them)."""
        si = np.asarray(stripe_idx, np.int64).reshape(-1)
        lo = np.zeros(len(si), np.int64) if block_lo is None else np.broadcast_to(np.asarray(block_lo, np.int64), si.shape)
        hi = self.nblocks[si] if block_hi is None else np.broadcast_to(np.asarray(block_hi, np.int64), si.shape)
        nblk = hi - lo
        j = ranges(self.b0[si] + lo, nblk)  # each block's index in its blobs
        cnt = np.minimum(block_size, np.repeat(self.bcount[si], nblk) - j * block_size)
        if (self.bcount[si] == self.count[si]).all():  # every stripe its own blobs
            return cnt, slice(None)
        nval = np.bincount(np.repeat(np.arange(len(si)), nblk), cnt, minlength=len(si)).astype(np.int64)
        p0 = (self.b0[si] + lo) * block_size  # the blob position of each request's first value
        a = np.maximum(self.skip[si], p0)
        b = np.minimum(self.skip[si] + self.count[si], p0 + nval)
        return cnt, ranges(np.cumsum(nval) - nval + a - p0, np.maximum(b - a, 0))

    def pack_rows(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(order, first, rows)``: the stripes of packs, each pack's in blob order (by ``skip``),
        the packs one after another; per directory stripe, where its pack's stripes start in
        ``order`` and how many they are (cached)."""
        got = getattr(self, "_pack_rows", None)
        if got is None:
            packed = np.flatnonzero(self.bcount != self.count)
            order = packed[np.lexsort((self.skip[packed], self.blob[packed]))]
            new = np.ones(len(order), bool)
            new[1:] = self.blob[order[1:]] != self.blob[order[:-1]]
            starts = np.flatnonzero(new)
            first, rows = np.zeros(len(self), np.int64), np.zeros(len(self), np.int64)
            gid = np.cumsum(new) - 1
            first[order] = starts[gid]
            rows[order] = np.diff(np.append(starts, len(order)))[gid]
            got = self._pack_rows = (order, first, rows)
        return got

    def packed_run(self, a: int, b: int) -> slice | None:
        """The stripes ``[a, b)`` (a run of rows) as whole blobs: where the run's events are exactly
        the values of blobs ``k`` of the slice returned, back to back (their first rows
        ``blob_rows()[k]``; each pack's stripes one after another in blob order, none of its values
        left out: a pack whose stripes are not all live is not), else None."""
        breaks, owners = self._blob_runs()
        if not (a < b and self.skip[a] == 0 and self.skip[b - 1] + self.count[b - 1] == self.bcount[b - 1]
                and breaks[b - 1] == breaks[a]):
            return None
        return slice(int(np.searchsorted(owners, a)), int(np.searchsorted(owners, b)))

    def blob_rows(self) -> np.ndarray:
        """The rows whose blobs start with their own events (``owner``): one per blob, in row order (cached)."""
        return self._blob_runs()[1]

    def _blob_runs(self) -> tuple[np.ndarray, np.ndarray]:
        """Per row, how many rows up to it break the sequence of blob values (a row's values follow
        the row's before it in one blob, or start a blob after that row ended its own), and the
        blobs' first rows (``owner``; one per blob): cached."""
        got = getattr(self, "_runs", None)
        if got is None:
            ends = self.skip + self.count
            cont = np.ones(len(self), bool)
            cont[1:] = np.where(self.skip[1:] == 0, ends[:-1] == self.bcount[:-1],
                                (self.blob[1:] == self.blob[:-1]) & (self.skip[1:] == ends[:-1]))
            got = self._runs = (np.cumsum(~cont), np.flatnonzero(self.skip == 0))
        return got

    def user_stripes(self, user_id: int) -> np.ndarray:
        """Directory indices (ascending, so oldest first) of the stripes of one user."""
        a, b = np.searchsorted(self.user_id, user_id, "left"), np.searchsorted(self.user_id, user_id, "right")
        return np.arange(a, b, dtype=np.int64)


class VersionReader:
    """Reads the version described by ``state`` from the tier's ``store``.

    ``segcache``: ``{file key: Segment}`` shared by the readers of one handle (data files are
    immutable, so a segment opened for one version serves every later one that lists it).
    """

    def __init__(self, store, state: State, segcache: dict[str, Segment] | None = None):
        self.store = store
        self.state = state
        self.schema: dict[str, str] = state.schema
        self.version: int = state.version
        self.block_size: int = state.block_size
        self.where = f"tier {store.root} version {self.version}"
        self._segcache = {} if segcache is None else segcache
        self._files = list(state.files.items())
        self._borrows = any(e.get("borrow") for _, e in self._files)  # (some segment has borrowed codes, DESIGN §1)
        self._segs: list[Segment | None] = [None] * len(self._files)
        self._dir: Directory | None = None
        self._dir_cols: dict | None = None
        self._pool: tuple | None = None
        self._pool3: tuple | None = None  # format 3's small regions (bytes, verified), as ``_pool``
        self.dict_bytes_read = 0  # stored bytes of the segment dictionaries this reader read
        self._dsizes: dict = {}  # per column, its dictionaries' stored bytes (``_dict_sizes``)
        self._start_keys = None  # ``_starts``
        self._lent: dict = {}  # ``borrowed``, per column
        self._dsarr: dict = {}  # per column, ``_dict_sizes`` as arrays: (keys sorted, stored bytes, kept once read: 1, or 2 where small)
        self._drow: dict = {}  # per column, each row's dictionary's index in ``_dsarr``'s keys (int32, -1: none), and
        # the same where it is a stripe table of its own, else -1: ``_own_tables``
        self._tfacts: dict = {}  # per column, its stripe tables' marks and heads, once read (``_table_facts``)
        self._plans: dict = {}  # per column, a whole pooled column's decode arguments, or False (``_plan3``)
        self._dcat: tuple | None = None  # the last concatenation of several kept dictionaries: (keys' bytes, it, lens, places)
        self._regions: np.ndarray | None = None  # each segment's blob-region bytes (``_region_bytes``)
        self._meta: _MetaCache | None = None  # large segments' blob heads, once read (``_MetaCache``)
        self._meta_lock = threading.Lock()
        self._colpos = {c: i for i, c in enumerate(self.schema)}
        self._tags: dict = {}  # per column, its directory's blob tags and constant stripes (``_blob_kinds``)
        self._all3: bool | None = None  # every data file of format 3 (``_format3``)

    # ------------------------------------------------------------------ lengths
    def length_history(self) -> LengthHistory:
        """The version's length history (every version's rows up to this one)."""
        return self.state.lengths

    # ------------------------------------------------------------------ segments and directory
    def segment(self, i: int) -> Segment:
        """Data file ``i`` of the version, its index read and verified once."""
        s = self._segs[i]
        if s is None:
            key, e = self._files[i]
            s = self._segcache.get(key)
            if s is None or s.size != e["size"]:
                s = open_segment(self.store, e["path"], e["offset"], e["size"], e["index_crc"], list(self.schema), self.block_size)
                if s.fmt != e.get("format", 2):
                    raise CorruptionError(f"{self.where}: data file {s.name} is format {s.fmt}, its entry says "
                                          f"{e.get('format', 2)}")
                if s.form != e.get("index", 1):
                    raise CorruptionError(f"{self.where}: data file {s.name} has an index of form {s.form}, its entry "
                                          f"says {e.get('index', 1)}")
                self._segcache[key] = s
            self._segs[i] = s
        return s

    def directory(self) -> Directory:
        """The live stripes, sorted by ``(user_id, start)`` (cached).

        Verified against the length history: each user's stripes tile ``[0, length)`` exactly.
        """
        if self._dir is not None:
            return self._dir
        parts = []  # (seg index per stripe, user, start, count, {c: (off, nwords, enc)}, skip, bcount)
        from_snapshot = self._from_snapshot(parts)
        self._warm_indexes([i for i in range(len(self._segs)) if i not in from_snapshot])
        for i in range(len(self._segs)):
            if i in from_snapshot:
                continue
            s = self.segment(i)
            cont = s.cont if s.cont is not None else np.zeros(s.num_stripes, np.int64)
            parts.append((np.full(s.num_stripes, i, np.int32), s.user_id, s.start, s.count,
                          {c: (s.off[c], s.nwords[c], s.enc[c]) for c in self.schema},
                          pack_skips(s.count, cont), pack_sizes(s.count, cont)))
        cat = lambda f: np.concatenate([f(p) for p in parts]) if parts else np.zeros(0, np.int64)  # noqa: E731
        seg, uid, st, cnt = (cat(lambda p, k=k: p[k]) for k in range(4))
        skip, bcount = cat(lambda p: p[5]), cat(lambda p: p[6])
        order = np.lexsort((st, uid))
        uid, st, cnt, seg = uid[order], st[order], cnt[order], seg[order].astype(np.int32)
        skip, bcount = skip[order], bcount[order]
        cols = {c: tuple(cat(lambda p, c=c, j=j: p[4][c][j])[order] for j in range(3)) for c in self.schema}
        # each user's stripes must tile [0, length_v(u)): contiguous, from 0, summing to the length
        S = len(uid)
        first = np.ones(S, bool)
        if S:
            first[1:] = uid[1:] != uid[:-1]
        expect = np.zeros(S, np.int64)
        if S:
            expect[1:] = st[:-1] + cnt[:-1]
        expect[first] = 0
        if (st != expect).any():
            raise CorruptionError(f"{self.where}: segments do not tile the histories (overlapping or missing stripes)")
        users = uid[first]
        ends = np.concatenate((np.flatnonzero(first)[1:], [S])) - 1 if S else np.zeros(0, np.int64)
        totals = st[ends] + cnt[ends] if S else np.zeros(0, np.int64)
        L = self.length_history()
        if not np.array_equal(totals, L.at(users, np.full(len(users), self.version))) or L.num_users() != len(users):
            raise CorruptionError(f"{self.where}: segments disagree with the length history")
        bs = self.block_size
        nblocks = (skip % bs + cnt + bs - 1) // bs
        block0 = np.cumsum(nblocks) - nblocks
        # Columns first: another planner thread that finds ``_dir`` set goes straight to ``_dir_cols``.
        self._dir_cols = cols
        self._dir = Directory(uid, st, cnt, seg, nblocks, block0, skip, bcount, skip // bs, (bcount + bs - 1) // bs,
                              _blob_ids(seg, skip))
        return self._dir

    TAIL_BYTES = 64 << 10  # an object store reads this much of a segment's end to open it: trailer and index

    def _warm_indexes(self, idx: list) -> None:
        """Read the ends of the segments about to be opened (trailer, index: usually in the last
        ``TAIL_BYTES``) in one concurrent wave, so that opening each costs no request of its own (a
        no-op on a local store)."""
        todo = []
        for i in idx:
            if self._segs[i] is None:
                key, e = self._files[i]
                s = self._segcache.get(key)
                if s is None or s.size != e["size"]:
                    n = min(e["size"], self.TAIL_BYTES)
                    todo.append((e["path"], e["offset"] + e["size"] - n, n))
        if len(todo) > 1:
            self.store.warm(todo)

    def _from_snapshot(self, parts: list) -> set:
        """Add the stripes of files the last checkpoint's directory snapshot lists (and are still
        live) to ``parts`` without reading those files' indexes; returns their segment indices."""
        snap = self.state.directory
        if snap is None:
            return set()
        keys, region, t = snap
        pos = {k: i for i, (k, _) in enumerate(self._files)}
        now = np.array([pos.get(k, -1) for k in keys], np.int64)
        for j, k in enumerate(keys):
            i = int(now[j])
            if i >= 0 and self._segs[i] is None:
                e = self._files[i][1]
                s = self._segcache.get(k)
                if s is None or s.size != e["size"]:
                    s = known_segment(self.store, e["path"], e["offset"], e["size"], int(region[j]), e.get("format", 2),
                                      e.get("index", 1))
                    self._segcache[k] = s
                self._segs[i] = s
        seg = now[t["file"]]
        keep = seg >= 0
        parts.append((seg[keep], t["user_id"][keep], t["start"][keep], t["count"][keep],
                      {c: tuple(t[f"{c}.{f}"][keep] for f in ("off", "nwords", "enc")) for c in self.schema},
                      t["skip"][keep], t["bcount"][keep]))
        return {int(i) for i in now if i >= 0}

    def snapshot(self) -> tuple:
        """``(file keys, region words, stripe columns)`` of this version, for a checkpoint (host/log.py)."""
        d = self.directory()
        keys = [k for k, _ in self._files]
        region = np.array([self.segment(i).region_words for i in range(len(keys))], np.int64)
        table = {"user_id": d.user_id, "start": d.start, "count": d.count, "file": d.seg.astype(np.int64),
                 "skip": d.skip, "bcount": d.bcount}
        for c in self.schema:
            off, nw, enc = self._dir_cols[c]
            table.update({f"{c}.off": off, f"{c}.nwords": nw, f"{c}.enc": enc})
        return keys, region, table

    def blobs(self, column: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per directory stripe, the blob of ``column``: ``(word offset in its segment, words, encoding)``."""
        self.directory()
        return self._dir_cols[column]

    # ------------------------------------------------------------------ blocks
    def read_blocks(self, column: str, stripe_idx, block_lo, block_hi):
        """Blocks ``[block_lo[i], block_hi[i])`` of the blob of ``column`` of directory stripes ``stripe_idx[i]``.

        Returns ``Blocks(hdr, words, nbytes)``: ``hdr`` int64 ``[K, 3]`` (base, slope, meta) in request
        order with ``word_off`` rewritten to index ``words`` (int64, every block's packed words back to
        back, plus one zero word); ``nbytes``: the stored bytes the blocks need (format 2: their headers
        and packed words; format 3: the pages holding them and their page-table entries); ``.dicts``:
        the dictionaries of its DICT blocks (blocks of stripes stored as codes, DESIGN §1), or None:
        decoders take it (``codec.decode_blocks(..., dicts=)``, ``StagedColumn.dicts``). Everything read
        is verified (format 2: each block's hash; format 3: the chunk checksums), else
        ``CorruptionError``. Vectorized: one pass per segment, none per block.
        """
        return self.read_blocks_many([column], stripe_idx, block_lo, block_hi)[column]

    def read_blocks_many(self, columns, stripe_idx, block_lo, block_hi) -> dict:
        """``{column: read_blocks(column, ...)}`` for the same blocks of several columns, read together:
        the headers of every column in one ``store.fetch``, then the words of every column in one more
        (on an object store: two waves of concurrent GETs per batch, instead of two per column). What
        does not depend on the column (which blocks, of which segments, where they go) is worked out
        once for all of them (``_BlockPlan``)."""
        columns = list(dict.fromkeys(columns))
        for c in columns:
            if c not in self.schema:
                raise SchemaError(f"unknown column {c!r}; schema has {list(self.schema)}")
        plan = self._block_plan(stripe_idx, block_lo, block_hi)
        if isinstance(plan, _BlockPlan) and plan.fmt == 3:  # every column in one pass
            phases = {tuple(columns): self._read_phases3(columns, plan)}
        else:
            phases = {(c,): _one(c, self._read_phases(c, plan)) for c in columns}
        out = {}
        try:
            wanted = {k: next(g) for k, g in phases.items()}
            while wanted:
                self.store.fetch([r for reqs in wanted.values() for r in reqs])
                nxt = {}
                for k in wanted:
                    try:
                        nxt[k] = next(phases[k])
                    except StopIteration as e:
                        out.update(e.value)
                wanted = nxt
        finally:  # a read that failed: each pass closed now (what it reserved given back), not when collected
            for g in phases.values():
                g.close()
        return out

    def seg_formats(self) -> np.ndarray:
        """The format (2 or 3) of each data file of the version, from its entry (no read)."""
        return np.array([e.get("format", 2) for _, e in self._files], np.int64)

    def _format3(self, si: np.ndarray) -> bool:
        """Whether every segment of directory rows ``si`` is of format 3 (no step per row where all are)."""
        if self._all3 is None:
            self._all3 = bool((self.seg_formats() == 3).all())
        return self._all3 or bool((self.seg_formats()[self.directory().seg[si]] == 3).all())

    def _blob_kinds(self, column: str) -> tuple[np.ndarray, np.ndarray, bool]:
        """Per directory stripe, the tag of its one-block blob of ``column`` where its index holds it,
        else -1 (``codec.enc_tags``), and whether it is a constant stripe (``codec.const_stripes``),
        and whether any is; cached: a whole-column read asks for all of them."""
        t = self._tags.get(column)
        if t is None:
            enc = self._dir_cols[column][2]
            cst = codec.const_stripes(enc)
            t = self._tags[column] = (codec.enc_tags(enc), cst, bool(cst.any()))
        return t

    def blob_bytes(self, column: str) -> np.ndarray:
        """Per directory stripe, the stored bytes of its blob of ``column`` (the stripes of a pack
        share one: ``Directory.owner`` counts each once)."""
        d = self.directory()
        n = self._dir_cols[column][1]
        return np.where(self.seg_formats()[d.seg] == 3, n, 8 * n) if len(n) else n

    def borrowed(self, column: str) -> np.ndarray:
        """Per directory stripe, whether its blob of ``column`` is another column's (borrowed codes,
        DESIGN §1: a DICT blob that starts before its dictionary's head and a byte, as the open check
        tells them), whose bytes that column counts."""
        got = self._lent.get(column)
        if got is None:
            self.directory()
            off, _, enc = self._dir_cols[column]
            got = ((enc & codec.ENC_DICT) != 0) & ((enc >> 8) + 2 > off) & (self.seg_formats()[self._dir.seg] == 3)
            got.flags.writeable = False
            self._lent[column] = got
        return got

    def forget_dictionaries(self) -> None:
        """Drop the segment dictionaries read so far (the next reads read them again): for
        benchmarks that count what an epoch reads from a cold start."""
        for s in list(self._segcache.values()) + [s for s in self._segs if s is not None]:
            s._dicts = s._kept = None
        self._dcat = None
        self._plans = {}

    def forget_heads(self, keep: bool = True) -> None:
        """Drop the blob heads kept so far (``_MetaCache``); with ``keep=False`` keep none from now on
        (every read of a large segment takes its two waves): for benchmarks that count the reads a
        batch makes without them."""
        with self._meta_lock:
            self._meta = None if keep else False

    def dict_bytes(self, column: str) -> int:
        """The stored bytes of the dictionaries of ``column``: its segment dictionaries (each at the
        start of the column's part of its segment's blob region, host/pages.py ``encode_column``) and
        stripe tables (each right before its stripe's blob)."""
        return int(sum(self._dict_sizes(column).values()))

    def _block_plan(self, stripe_idx, block_lo, block_hi):
        """The column-independent half of a read: the requested blocks, their stripes, segments and
        places, checked against the directory (``SchemaError`` when out of bounds). Requests in
        format-2 and format-3 files get a plan each (``_MixedPlan``), merged after the reads."""
        d = self.directory()
        si = np.asarray(stripe_idx, dtype=np.int64).reshape(-1)
        lo = np.broadcast_to(np.asarray(block_lo, dtype=np.int64), si.shape)
        hi = np.broadcast_to(np.asarray(block_hi, dtype=np.int64), si.shape)
        if si.size and (si.min() < 0 or si.max() >= len(d) or (lo < 0).any() or (hi < lo).any() or (hi > d.nblocks[si]).any()):
            raise SchemaError("read_blocks: stripe index or block range out of bounds")
        fmt = self.seg_formats()[d.seg[si]] if len(si) else np.zeros(0, np.int64)
        if len(si) and (fmt == 3).any() and (fmt == 2).any():
            parts = [(np.flatnonzero(fmt == f), None) for f in (2, 3)]
            parts = [(r, self._plan_of(si[r], lo[r], hi[r], f)) for (r, _), f in zip(parts, (2, 3))]
            return _MixedPlan(parts=parts, nblk=hi - lo)
        return self._plan_of(si, lo, hi, int(fmt[0]) if len(fmt) else 3)

    def _plan_of(self, si, lo, hi, fmt: int) -> "_BlockPlan":
        nblk = hi - lo
        if fmt == 3:  # format 3 works from the requests alone (host/pages.py, ``_read_phases3``)
            # in its blobs' numbering: a stripe of a pack starts at block b0 of them
            return _BlockPlan(si=si, lo=lo + self.directory().b0[si], nblk=nblk, K=int(nblk.sum()), fmt=3)
        d = self.directory()
        bs = self.block_size
        bstripe = np.repeat(si, nblk)
        j = ranges(lo, nblk)
        bseg = d.seg[bstripe]
        order = np.argsort(bseg, kind="stable")
        bounds = np.flatnonzero(np.diff(bseg[order])) + 1
        groups = [(int(bseg[g[0]]), g) for g in np.split(order, bounds) if len(g)]
        req_first = np.cumsum(nblk) - nblk
        pool, pool_base = self._small_pool()
        req_seg = d.seg[si]
        small_req = pool_base[req_seg] >= 0 if len(si) else np.zeros(0, bool)
        # per large segment: the requests (stripe ranges) that have blocks in it
        large = [(s, g, _nonempty(np.unique(np.searchsorted(req_first, g, side="right") - 1), nblk))
                 for s, g in groups if pool_base[s] < 0]
        return _BlockPlan(
            si=si, lo=lo, nblk=nblk, K=int(nblk.sum()), bstripe=bstripe, j=j, bseg=bseg, large=large,
            cnt=np.minimum(bs, d.count[bstripe] - j * bs), req_first=req_first, pool=pool, pool_base=pool_base,
            small_reqs=np.flatnonzero(small_req & (nblk > 0)), small_blocks=np.flatnonzero(pool_base[bseg] >= 0),
            stripe_hdr_words=codec.HDR_WORDS * ((d.count[bstripe] + bs - 1) // bs), pool_base_req=pool_base[req_seg],
            fmt=fmt,
        )

    def _read_phases(self, column: str, p):
        """``read_blocks`` of one column as a generator over a plan: yields the reads it needs
        (``store.fetch`` requests), twice (format 2: headers, then words; format 3: page tables,
        then pages), and returns ``(hdr, words, nbytes)``."""
        if not isinstance(p, _MixedPlan):
            if p.fmt == 3:
                return (yield from self._read_phases3([column], p))[column]
            return (yield from self._read_phases2(column, p))
        gens = [(r, _first_of_dict(self._read_phases3([column], q)) if q.fmt == 3 else self._read_phases2(column, q))
                for r, q in p.parts]
        results = [None] * len(gens)
        live = list(range(len(gens)))
        while live:
            fetch, nxt = [], []
            for i in live:
                try:
                    fetch += next(gens[i][1])
                    nxt.append(i)
                except StopIteration as e:
                    results[i] = e.value
            live = nxt
            if live:
                yield fetch
        return _merge_parts([(r, res) for (r, _), res in zip(gens, results)], p.nblk)

    def _read_phases2(self, column: str, p: "_BlockPlan"):
        """``_read_phases`` for blocks in format-2 files."""
        d = self.directory()
        off_c, nw_c, _ = self._dir_cols[column]
        si, lo, nblk, K, req_first = p.si, p.lo, p.nblk, p.K, p.req_first
        bstripe, j, bseg = p.bstripe, p.j, p.bseg
        blob_w = off_c[bstripe]
        blob_len = nw_c[bstripe]
        hdr4 = np.empty((K, codec.HDR_WORDS), dtype=np.int64)
        # headers: the requested blocks of one stripe are adjacent (HDR_WORDS words each): one range per
        # request. Small segments are gathered in one pass over their regions held in memory; a large one
        # is read by coalesced ranges (Segment.read_words), one segment at a time.
        pool = p.pool
        reqs = p.small_reqs
        if len(reqs):
            idx = ranges(p.pool_base_req[reqs] + off_c[si[reqs]] + codec.HDR_WORDS * lo[reqs], codec.HDR_WORDS * nblk[reqs])
            hdr4[ranges(req_first[reqs], nblk[reqs])] = pool[idx].reshape(-1, codec.HDR_WORDS)
        # one fetch for the headers of every large segment (concurrent requests on an object store); an
        # object store also reads whole the blobs under ``readahead_bytes`` in the same requests, so
        # that their words, asked for next, come from its cache: one request per run, not two
        ahead = int(getattr(self.store, "readahead_bytes", 0) or 0)
        pending, fetch = [], []
        for s, g, reqs in p.large:
            seg = self.segment(s)
            rq, finish = seg.words_request(off_c[si[reqs]] + codec.HDR_WORDS * lo[reqs], codec.HDR_WORDS * nblk[reqs])
            fetch += rq
            pending.append((reqs, finish))
            if ahead:
                whole = np.unique(si[reqs][nw_c[si[reqs]] * 8 <= ahead])
                fetch += [(seg.path, seg.base + 8 * o, memoryview(bytearray(8 * n)))
                          for o, n in zip(off_c[whole].tolist(), nw_c[whole].tolist())]
        yield fetch
        for reqs, finish in pending:
            hdr4[ranges(req_first[reqs], nblk[reqs])] = finish().reshape(-1, codec.HDR_WORDS)
        meta = hdr4[:, 2]
        w = meta & 255
        woff = meta >> 8
        nw = codec.words_for(p.cnt, np.minimum(w, 64))
        bad = (meta < 0) | (w > 64) | (woff < p.stripe_hdr_words) | (woff + nw > blob_len)
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            raise CorruptionError(f"segment {self.segment(int(bseg[k])).name}: column {column!r} block {int(j[k])} of a stripe of user {int(d.user_id[bstripe[k]])} has an invalid header")
        out_off = np.cumsum(nw) - nw
        total = int(nw.sum())
        words = np.zeros(total + 1, dtype=np.int64)
        b = p.small_blocks
        if len(b):
            words[ranges(out_off[b], nw[b])] = pool[ranges(p.pool_base[bseg[b]] + blob_w[b] + woff[b], nw[b])]
        pending, fetch = [], []
        for s, g, _ in p.large:
            rq, finish = self.segment(s).words_request(blob_w[g] + woff[g], nw[g])
            fetch += rq
            pending.append((g, finish))
        yield fetch
        for g, finish in pending:
            words[ranges(out_off[g], nw[g])] = finish()
        h = codec.block_hash(hdr4[:, 0], hdr4[:, 1], meta, words[:total], nw)
        bad = h != hdr4[:, 3].view(np.uint64)
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            raise CorruptionError(
                f"segment {self.segment(int(bseg[k])).name}: column {column!r} block {int(j[k])} of a stripe of user "
                f"{int(d.user_id[bstripe[k]])} fails its checksum ({int(bad.sum())} bad block(s))"
            )
        hdr = hdr4[:, :3].copy()
        hdr[:, 2] = (out_off << 8) | w
        io = getattr(self.store, "io", None)
        if io is not None:
            io.add(blocks_read=K, block_runs=int((nblk > 0).sum()))
        return Blocks(hdr, words, 8 * (codec.HDR_WORDS * K + total))

    def _read_phases3(self, columns: list, p: "_BlockPlan"):
        """``_read_phases`` for blocks in format-3 files (host/pages.py), every column of ``columns``
        in one pass (a request per column and stripe range): returns ``{column: (hdr, words,
        nbytes)}``. Phase 1 reads the tags of the pages holding the wanted blocks (and, for stripes
        of several pages, their anchors, and anchor 0 with the last page); phase 2 the fields of
        those pages and the payload: exactly the bits of the wanted blocks when the pages hold plain
        blocks only, whole pages when they hold PATCH / RUN blocks (whose sizes are in the fields;
        one page: the blob after its tags). Every byte is verified by its segment's chunk checksums
        (a large segment's reads widened to whole chunks); the fields are parsed and the wanted
        blocks staged (``pages.stage_blocks``)."""
        d = self.directory()
        self._small_pool()  # small segments: one concurrent read of every region, verified once
        pool3, base3 = self._pool3
        act = np.flatnonzero(p.nblk > 0)
        C = len(columns)
        si1, lo1, nblk1 = p.si[act], p.lo[act], p.nblk[act]
        si, lo, nblk = np.tile(si1, C), np.tile(lo1, C), np.tile(nblk1, C)  # column-major requests
        colpos = np.repeat(np.array([self._colpos[c] for c in columns], np.int64), len(si1))  # each one's schema column
        hi = lo + nblk
        PB = pages.PAGE_BLOCKS
        bo = np.concatenate([self._dir_cols[c][0][si1] for c in columns]) if C else si
        blen = np.concatenate([self._dir_cols[c][1][si1] for c in columns]) if C else si
        enc = np.concatenate([self._dir_cols[c][2][si1] for c in columns]) if C else si
        # constant stripes (codec.ENC_CONST) have no bytes: their blocks are made below, the rest read
        cst = codec.const_stripes(enc)
        full = (si, lo, nblk, enc)
        if cst.any():
            keep = np.flatnonzero(~cst)
            si, lo, nblk, hi, bo, blen, enc, colpos = (a[keep] for a in (si, lo, nblk, hi, bo, blen, enc, colpos))
        isd = (enc & codec.ENC_DICT) != 0  # requests of stripes stored as codes into a segment dictionary
        # a blob of one block whose tag is in its index (codec.enc_tags): read as if its tag came first
        tag_in = codec.enc_tags(enc)
        ti = tag_in >= 0
        bo, blen = bo - ti, blen + ti
        nb = d.bblocks[si]  # the blobs' blocks (a pack's, for a stripe of one)
        npg = (nb + PB - 1) // PB
        multi = npg > 1
        p1, p2 = lo // PB, (hi + PB - 1) // PB
        t0 = np.where(multi, PB * p1, 0)  # the tags read: whole pages (one page: all of them)
        t1 = np.where(multi, np.minimum(nb, PB * p2), nb)
        na = np.where(multi, np.minimum(p2 + 1, npg) - p1, 0)  # anchors read: pages p1 .. p2 (if any)
        pay_at = nb + np.where(multi, 8 * npg, 0)
        seg = d.seg[si]
        in_pool = base3[seg] >= 0
        region_of = self._region_bytes()
        where = self._where3(columns, seg)
        if (ti & (nb != 1)).any():  # (open_segment refuses it; a checkpoint's snapshot is not read there)
            raise CorruptionError(f"{where}: a blob of several blocks with its tag in its index")
        request = lambda owner, starts, lens: self._bytes_request3(seg[owner], starts, lens, where)  # noqa: E731

        R = np.arange(len(si))
        # a stripe of several pages whose last page is read also reads anchor 0: where its payload
        # ends (its first field), which PATCH / RUN pages need, their payload sizes being in their fields
        n0 = np.where(multi & (p1 > 0) & (p2 >= npg), 8, 0)
        ntag = t1 - t0
        nread = np.where(ti, 0, ntag)  # (a tag in the index: nothing read for it)
        # the first wave: each request's tags, anchors and anchor 0 (three pieces, at ``rel`` in its
        # blob); a large segment's blob whose head (tags and anchors) a read kept needs none of it,
        # and one read now has its whole head read instead, and kept (``_MetaCache``)
        rel, plen, own = np.concatenate([t0 + ti, nb + 8 * p1, nb]), np.concatenate([nread, 8 * na, n0]), np.concatenate([R, R, R])
        head = np.where(multi, nb + 8 * npg, nb)
        blob = d.blob[si]  # (a pack's stripes share their blobs, so their heads: kept once, by blob)
        mc, place, hit, new, new_at = self._meta_places(colpos, blob, head, ~in_pool & ~ti & (head <= HEAD_KEPT_MAX))
        kept = place >= 0
        ln = np.concatenate([np.where(kept[own], 0, plen), head[new]])
        nz = np.flatnonzero(ln)  # (the pieces of no bytes left out: their bytes are none either way)
        reads, fin = request(np.concatenate([own, new])[nz], np.concatenate([bo[own] + rel, bo[new]])[nz], ln[nz]) \
            if len(nz) else ([], lambda: np.zeros(0, np.uint8))
        # an object store also reads whole (in whole chunks) the blobs under ``readahead_bytes`` of
        # large segments in this wave, so that the next one finds their fields and payload in its
        # cache: one round trip for them, as format 2's headers-and-words (not a blob whose head was
        # kept: its fields and payload are the next wave's, which may be the batch's only one)
        ahead = int(getattr(self.store, "readahead_bytes", 0) or 0)
        if ahead:
            r = np.flatnonzero(~in_pool & (blen <= ahead) & ~hit)
            a0 = np.maximum(bo[r], 0) // CHUNK_BYTES * CHUNK_BYTES  # (a tag in the index: bo may be -1)
            a1 = np.minimum(-(-(bo[r] + blen[r]) // CHUNK_BYTES) * CHUNK_BYTES, region_of[seg[r]])
            for s_, x0, x1 in set(zip(seg[r].tolist(), a0.tolist(), a1.tolist())):  # each blob once
                sg = self.segment(s_)
                reads.append((sg.path, sg.base + x0, memoryview(bytearray(x1 - x0))))
        # the heads of the stripe tables the read may read in part (``_table_parts``), in this wave too
        theads = {}
        for c in columns:
            m = isd & (colpos == self._colpos[c])
            if m.any():
                tk, tl = self._table_heads(c, seg[m], enc[m], nblk[m], d.bcount[si[m]])
                if len(tk):
                    rq_t, fin_t = self._bytes_request3(tk >> 40, tk & ((1 << 40) - 1), tl, where)
                    reads = reads + rq_t
                    theads[c] = (tk, tl, fin_t)
        try:
            yield reads
            first = fin()
            for c, (tk, tl, fin_t) in theads.items():
                theads[c] = (tk, tl, *fin_t(in_place=True))
                self.dict_bytes_read += int(tl.sum())
        except BaseException:  # a failed or abandoned read: the room reserved for its heads back, where it can be
            if len(new_at):
                mc.release(new_at, head[new])
            raise
        got = _meta_fill(mc, first, plen, kept[own], place[own] + rel, colpos[new], blob[new], new_at, head[new])
        nt, nanc = int(nread.sum()), int(8 * na.sum())
        tags = got[:nt].astype(np.int64)
        if ti.any():
            tags = np.empty(int(ntag.sum()), np.int64)
            at = np.cumsum(ntag) - ntag
            tags[at[ti]] = tag_in[ti]
            tags[ranges(at[~ti], ntag[~ti])] = got[:nt]
        pages.check_tags(tags, where)
        anc = np.frombuffer(got[nt : nt + nanc].tobytes(), "<u4").reshape(-1, 2).astype(np.int64)
        anc0 = np.zeros(len(si), np.int64)
        anc0[n0 > 0] = np.frombuffer(got[nt + nanc :].tobytes(), "<u4").reshape(-1, 2)[:, 0]
        # per tag read: its request, block index, count, width
        rq = np.repeat(R, ntag)
        j = ranges(t0, ntag)
        cnt = np.minimum(self.block_size, d.bcount[si][rq] - j * self.block_size)
        ext_tag = pages.tag_kind(tags) != pages.KIND_PLAIN
        wbits = np.where(ext_tag, 0, cnt * (tags & 0x7F))  # plain blocks' payload, known from their tags
        # requests whose pages hold PATCH / RUN blocks read whole pages' payload (one page: the whole
        # blob after its tags, fields first), located once their fields are parsed
        ext = np.bincount(rq, weights=ext_tag, minlength=len(si)) > 0
        one_x = ext & ~multi
        cb = np.cumsum(wbits) - wbits
        first_tag = np.cumsum(ntag) - ntag
        bits_before = lambda k: cb[first_tag + k - t0] - cb[first_tag]  # noqa: E731  bits of tags [t0, k)
        # the pages read: one for a one-page stripe, else p1 .. p2 - 1 with fields bounded by anchors
        npr = np.where(multi, p2 - p1, 1)
        pr = np.repeat(R, npr)
        a_first = np.cumsum(na) - na
        k = ranges(np.zeros(len(si), np.int64), npr)  # page index within the request's pages
        total_bits = np.add.reduceat(wbits, first_tag) if len(first_tag) else np.zeros(0, np.int64)
        fs = np.where(multi[pr], anc[np.minimum(a_first[pr] + k, len(anc) - 1), 0] if len(anc) else 0,
                      np.where(one_x, nb, pay_at + ((total_bits + 7) >> 3))[pr])
        nxt = a_first[pr] + k + 1
        has_next = multi[pr] & (k + 1 < na[pr])
        fe = np.where(has_next, anc[np.minimum(nxt, len(anc) - 1), 0] if len(anc) else 0, blen[pr])
        pbit = np.where(multi, anc[np.minimum(a_first, len(anc) - 1), 1] if len(anc) else 0, 0)  # payload bit of t0
        b_lo = np.where(ext, pbit, pbit + bits_before(lo))
        b_hi = pbit + bits_before(hi - 1) + wbits[first_tag + hi - 1 - t0]
        last = p2 >= npg
        pend = 8 * np.where(n0 > 0, anc0, anc[np.minimum(a_first, len(anc) - 1), 0] if len(anc) else 0) - 8 * pay_at
        nxt_pb = anc[np.minimum(a_first + na - 1, len(anc) - 1), 1] if len(anc) else np.zeros(len(si), np.int64)
        b_hi = np.where(ext & multi, np.where(last, pend, nxt_pb), np.where(one_x, 0, b_hi))
        b_lo = np.where(one_x, 0, b_lo)
        req_fs, req_fe = fs[np.cumsum(npr) - npr], fe[np.cumsum(npr) - 1]
        bad = (fs < pay_at[pr]) | (fe < fs) | (fe > blen[pr])
        bad_r = (pay_at + ((b_hi + 7) >> 3) > np.where(one_x, blen, req_fs)) | (b_lo < 0) | (b_hi < b_lo)
        if bad.any() or bad_r.any():
            raise CorruptionError(f"{where}: the anchors of a stripe disagree with its tags")
        pb0 = pay_at + (b_lo >> 3)
        pbn = pay_at + ((b_hi + 7) >> 3) - pb0
        reads, fin = request(np.concatenate([R, R]), np.concatenate([bo + req_fs, bo + pb0]),
                             np.concatenate([req_fe - req_fs, pbn]))
        yield reads
        got = fin()
        nf = int((req_fe - req_fs).sum())
        fbuf = got[:nf]
        f_at = np.cumsum(req_fe - req_fs) - (req_fe - req_fs)
        page_of = np.repeat(np.arange(len(pr)), np.minimum(PB, np.where(multi[pr], nb[pr] - PB * (p1[pr] + k), nb[pr])))
        f0, f1 = f_at[pr] + fs - req_fs[pr], f_at[pr] + fe - req_fs[pr]
        x1 = np.flatnonzero(one_x[pr])  # (their request's only page)
        if len(x1):
            nvar = np.bincount(rq, weights=pages.fields_per_block(tags), minlength=len(si)).astype(np.int64)
            f1[x1] = pages.fields_end(fbuf, f0[x1], f1[x1], nvar[pr[x1]], where)  # (where: made when raised)
        blk = pages.parse_fields(fbuf, f0, f1, tags, cnt, page_of, where)
        if self.block_size > pages.AUX_MAX_BLOCK and (blk.kind != pages.KIND_PLAIN).any():
            raise CorruptionError(f"{where}: {native.BLOB_ERRORS[10]}")
        # each request's payload in ``got``: after the fields read (exact or whole pages), or, for one
        # page with PATCH / RUN blocks, right after its fields
        p_at = 8 * (nf + np.cumsum(pbn) - pbn) + (b_lo & 7)
        p_at[one_x] = 8 * f1[np.cumsum(npr) - 1][one_x]
        bare = np.flatnonzero(pages.is_bare(tags))
        if len(bare):  # its blob's one block: its payload from p_at to the blob's end (its bits walked)
            r = rq[bare]
            if (nb[r] != 1).any():
                raise CorruptionError(f"{where}: a BARE LEVELS block that is not its blob's one block")
            at_b, lim_b = np.zeros(len(tags), np.int64), np.zeros(len(tags), np.int64)
            at_b[bare], lim_b[bare] = p_at[r], 8 * (f_at[r] + blen[r] - nb[r])
            pages.bare_mids(got, at_b, blk, lim_b, where)
        bits = blk.bits()
        cb = np.cumsum(bits) - bits
        want = ranges(first_tag + lo - t0, nblk)
        sub = np.where(ext, cb[first_tag], cb[first_tag + lo - t0])
        tot = np.add.reduceat(bits, first_tag) if len(first_tag) else np.zeros(0, np.int64)
        room = np.where(one_x, 8 * (f_at + blen - nb) - p_at, np.where(ext, b_hi - b_lo, 1 << 62))
        if (ext & (tot > room)).any() or (multi & ext & ~last & (tot != b_hi - b_lo)).any():
            raise CorruptionError(f"{where}: the anchors of a stripe disagree with its fields")
        src = np.repeat(p_at - sub, nblk) + cb[want]
        dict_b = np.repeat(isd, nblk)
        if dict_b.any() and not pages.codes_kinds(blk.kind[want][dict_b]):
            raise CorruptionError(f"{where}: {native.BLOB_ERRORS[9]}")
        blk = blk.take(want)
        io = getattr(self.store, "io", None)
        if io is not None:
            io.add(blocks_read=len(want), block_runs=len(si))
        # what the blocks need (tags, anchors, fields of their pages; their payload), as format 2
        # counts headers and words; the chunk rounding and coalescing are the store's ``io`` figures
        need = nread + 8 * na + n0 + (req_fe - req_fs) + pbn
        if cst.any():  # the constant stripes' blocks put in, in request order: they need no bytes
            encs = [self._dir_cols[c][2] for c in columns]
            got, src, blk, dict_b, need = _with_constants(d, encs, cst, *full, self.block_size, got, src, blk, dict_b, need,
                                                          self.where)
            si, lo, nblk, enc = full
            isd, seg = (enc & codec.ENC_DICT) != 0, d.seg[si]
        hdr, words = pages.stage_blocks(got, src, blk, dict_b if dict_b.any() else None)
        n1, K1 = len(si1), int(nblk1.sum())
        off = (hdr[:, 2] >> 8) - ((hdr[:, 2] & AUX_FLAG) != 0)  # where each block's words start (aux word first)
        share = {}
        if C > 1 and self._borrows:
            need, share = self._lent_once(columns, si1, need)
        out = {}
        for i, c in enumerate(columns):  # column c: requests [i n1, (i + 1) n1), blocks [i K1, (i + 1) K1)
            h = hdr[i * K1 : (i + 1) * K1].copy()
            w0 = int(off[i * K1]) if K1 else 0
            w1 = int(off[(i + 1) * K1]) if i + 1 < C and K1 else len(words) - 1
            h[:, 2] -= w0 << 8
            wc = np.zeros(w1 - w0 + 1, np.int64)
            wc[:-1] = words[w0:w1]
            rq = slice(i * n1, (i + 1) * n1)
            dicts = keys = None
            kept = 0
            if isd[rq].any():  # (the codes of its blocks, for a stripe table read in part)
                codes = (h, wc, nblk1, np.minimum(self.block_size, np.repeat(d.bcount[si1], nblk1) - self.block_size *
                                                  ranges(lo1, nblk1)), d.bcount[si1])
                dicts, keys, start, _, kept = self._dictionaries(c, seg[rq], enc[rq], isd[rq], codes=codes,
                                                                 heads=theads.get(c))
                if start.any():  # (one dictionary, the common case: it starts at 0)
                    h[:, 0] += np.repeat(start, nblk1)
            out[c] = Blocks(h, wc, int(need[rq].sum()), dicts, keys, kept)
        for c, lender in share.items():  # the lender's very words (a batch stages and copies them once)
            if np.array_equal(out[c][1], out[lender][1]):
                out[c] = Blocks(out[c][0], out[lender][1], out[c][2], out[c].dicts, out[c].dict_keys, out[c].dict_kept)
        return out

    def _lent_once(self, columns, si, need):
        """``(need, share)``: ``need`` (per request, column after column) with each blob that
        borrowed codes (DESIGN §1) share counted once: at the first column of the read that names
        it (the same bytes, read once); ``share[c]``, an earlier column of the read whose blobs
        every request of column ``c`` names (their staged words are then the same)."""
        lent = {c: self.borrowed(c)[si] for c in columns}
        if not any(v.any() for v in lent.values()):  # (no borrower among the read's requests)
            return need, {}
        need = need.copy()
        n1, share = len(si), {}
        at = {c: (self._dir_cols[c][0][si], self._dir_cols[c][1][si]) for c in columns}
        for i, c in enumerate(columns):
            dup = np.zeros(n1, bool)
            for c2 in columns[:i]:
                same = (lent[c] | lent[c2]) & (at[c2][0] == at[c][0]) & (at[c2][1] == at[c][1])
                dup |= same
                if n1 and c not in share and (same | ((at[c][1] == 0) & (at[c2][1] == 0))).all():
                    share[c] = c2  # (constant stripes have no words: the words are checked equal)
            need[i * n1 : (i + 1) * n1][dup] = 0
        return need, share

    def _meta_places(self, cols, si, head, eligible):
        """Where the heads of the requests' blobs (``si``: ``Directory.blob`` of their stripes) are
        kept (``_MetaCache``): ``(cache, place, hit, new, new_at)``: the cache (None: off), each
        request's blob head's place (-1: read its pieces as before), whether it was kept before this
        read, and the blobs to read whole now (a request of each) with the room reserved for them.
        ``eligible``: the requests of large segments that read a head."""
        n = len(si)
        place, hit = np.full(n, -1, np.int64), np.zeros(n, bool)
        none = np.zeros(0, np.int64)
        mc = self._meta_cache() if eligible.any() else None
        if mc is None:
            return None, place, hit, none, none
        e = np.flatnonzero(eligible)
        place[e] = mc.lookup(cols[e], si[e])
        hit[e] = place[e] >= 0
        with mc.lock:
            mc.hits += int(hit.sum())
        miss = e[~hit[e]]
        if not len(miss):
            return mc, place, hit, none, none
        _, first, inv = np.unique(cols[miss] * mc.nstripes + si[miss], return_index=True, return_inverse=True)
        new = miss[first]  # a request of each blob (a batch may read one blob for several windows)
        new_at = mc.reserve(head[new])
        place[miss] = new_at[inv.reshape(-1)]
        fit = new_at >= 0
        return mc, place, hit, new[fit], new_at[fit]

    def _meta_cache(self) -> "_MetaCache | None":
        """The reader's ``_MetaCache`` (None when ``GPUMAT_META_CACHE_BYTES`` is 0)."""
        if self._meta is None:
            with self._meta_lock:
                if self._meta is None:
                    cap = _meta_cache_bytes()
                    self._meta = _MetaCache(len(self.directory().seg), cap) if cap else False
        return self._meta or None

    def _region_bytes(self) -> np.ndarray:
        """Each segment's blob-region bytes (cached: the version's files are fixed)."""
        if self._regions is None:
            self._regions = np.array([self.segment(i).region_bytes for i in range(len(self._segs))], np.int64)
        return self._regions

    def _where3(self, columns, seg) -> "_Where":
        """A read's place in an error message: its columns and segments (worked out when raised)."""
        names = lambda: sorted({self.segment(int(s)).name for s in np.unique(seg)})  # noqa: E731
        return _Where(lambda: f"columns {list(columns)} of segment(s) {names()}")

    def _bytes_request3(self, seg, starts, lens, where):
        """Bytes ``[starts[i], + lens[i])`` of the blob region of format-3 segment ``seg[i]``: the small
        segments' from their pooled regions (verified when read), one ``bytes_request`` per large
        segment (its chunks verified). ``(reads, finish)``: ``store.fetch(reads)``, then ``finish()``
        gives their bytes back to back, in order (uint8); ``finish(in_place=True)`` gives ``(buf, at)``,
        range ``i`` at ``buf[at[i]:][:lens[i]]``: the pool itself, no copy, when every range is in it;
        ``finish(groups=True)`` gives ``[(buf, idx, at)]``, range ``idx[j]`` at ``buf[at[j]:]``: the pool's
        ranges and each large segment's where they were read, never copied."""
        self._small_pool()
        pool3, base3 = self._pool3
        if len(seg) and (starts + lens > self._region_bytes()[seg]).any():  # only an index that disagrees with its file
            raise CorruptionError(f"{where}: a blob reaches past its segment's blob region")
        in_pool = base3[seg] >= 0
        reads, parts = [], []
        whole = bool(in_pool.all())  # (most often: every range in the pool)
        for s in [] if whole else unique(seg[~in_pool]).tolist():
            g = np.flatnonzero(seg == s)
            rq, fin = self.segment(s).bytes_request(starts[g], lens[g])
            reads += rq
            parts.append((g, fin))

        def finish(in_place: bool = False, groups: bool = False):
            if groups:  # (no copy: the pool's ranges, then each large segment's from the buffer it was read into)
                if whole:
                    return [(pool3, np.arange(len(seg)), base3[seg] + starts)] if len(seg) else []
                q = np.flatnonzero(in_pool)
                out = [(pool3, q, base3[seg[q]] + starts[q])] if len(q) else []
                for g, fin in parts:
                    b, w = fin(in_place=True)
                    out.append((b, g, w))
                return out
            if in_place and not parts:  # (read-only: the pool is shared)
                return pool3, base3[seg] + starts
            at = np.cumsum(lens) - lens
            out = np.empty(int(lens.sum()), np.uint8)
            q = np.flatnonzero(in_pool)
            if len(q):
                take_ranges(pool3, base3[seg[q]] + starts[q], lens[q], out, at[q])
            for g, fin in parts:
                fin(out, at[g])  # (straight into place)
            return (out, at) if in_place else out
        return reads, finish

    def _dict_sizes(self, column: str) -> dict:
        """``{(segment << 40) | dictionary offset: stored bytes}`` of ``column``'s dictionaries: its
        segment dictionaries and stripe tables, each ending where the next blob or dictionary in its
        segment starts (``_starts``; a stripe table can lie between a segment dictionary and its
        first codes), from the directory (cached; ``_dsarr``: the same as sorted arrays, and which are
        kept once read)."""
        sizes = self._dsizes.get(column)
        if sizes is None:
            d = self.directory()
            off, _, enc = self._dir_cols[column]
            m = (enc & codec.ENC_DICT) != 0
            seg = d.seg.astype(np.int64)
            k, o = (seg[m] << 40) | (enc[m] >> 8), off[m]
            order = np.lexsort((o, k))
            k, o = k[order], o[order]
            first = np.flatnonzero(np.r_[True, k[1:] != k[:-1]]) if len(k) else k
            keys = k[first]
            at = self._starts(column)
            j = np.searchsorted(at, keys, side="right")
            nxt = at[np.minimum(j, len(at) - 1)] if len(at) else keys
            # (none after it, or the next in another segment: an index that disagrees, read as empty)
            size = np.where((j < len(at)) & ((nxt >> 40) == (keys >> 40)), nxt - keys, 0)
            # kept once read: a dictionary more than one blob uses (a segment dictionary; a pack's
            # stripes share one blob), every dictionary of a segment without stripe tables, and a
            # segment's stripe tables where all of them take at most TABLES_KEPT_BYTES
            blobs = np.add.reduceat(np.r_[True, (k[1:] != k[:-1]) | (o[1:] != o[:-1])], first) if len(k) else k
            tables = np.array([bool(e.get("tables")) for _, e in self._files], bool)
            keep = ((blobs > 1) | ~tables[(keys >> 40).astype(np.int64)]).astype(np.int8) if len(keys) else \
                np.zeros(0, np.int8)
            if len(keys):  # a segment dictionary that tables of codes index (its segment's first): kept too
                first_of = np.r_[True, (keys[1:] >> 40) != (keys[:-1] >> 40)]
                keep[first_of & self._code_tables()[(keys >> 40).astype(np.int64)]] = 1
            if len(keys) and not keep.all():  # 2: a table kept if it has at most TABLE_KEPT_ENTRIES
                seg_k = (keys >> 40).astype(np.int64)
                small = np.bincount(seg_k, np.where(keep > 0, 0, size), minlength=len(self._files)) <= TABLES_KEPT_BYTES
                keep[(keep == 0) & small[seg_k]] = 2
            self._dsarr[column] = (keys, size, keep)  # (before the sizes: another thread may find them)
            sizes = self._dsizes[column] = dict(zip(keys.tolist(), size.tolist()))
        return sizes

    def _code_tables(self) -> np.ndarray:
        """Per data file, whether its stripe tables may hold codes into their column's segment
        dictionary (its entry's ``"tables": 2``, DESIGN §1 "Stripe tables")."""
        return np.array([e.get("tables") == 2 for _, e in self._files], bool)

    def _decode_with_code_tables(self, column: str, keys: np.ndarray, todo: np.ndarray, have: np.ndarray, parts: "_Parts",
                                 buf: np.ndarray, at: np.ndarray, ln: np.ndarray, forms: np.ndarray, coded: np.ndarray,
                                 where: str, first: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The dictionaries ``keys``, back to back (``_laid_out``: those of ``first`` first), the entries
        and place of each: those
        kept (``have``: in ``parts``) and those read (``todo``: stored bytes ``buf[at:][:ln]``), some of
        them tables of codes (``coded``, per ``todo``: their mark at ``at``). Decoded straight into
        place (one array: no copy of a batch's tables, whose pages are the cost on this scale) in two
        passes of the C decoder: the others, then the tables of codes, each code looked up in its
        column's segment dictionary as it is decoded (a table of codes becomes a table of values:
        what every read after it sees). That dictionary is the one at the least place of the
        column's rows in the segment (the encoder keeps a row naming it): read in the first pass,
        kept, or read now and kept (once per open segment). A code outside it, or a table of codes
        at its place, is a ``CorruptionError``."""
        a2, l2 = at + coded, ln - coded
        n, h = pages.dictionary_heads(buf, a2, l2, forms, where)
        cat, lens, kat = _laid_out(todo, n, have, parts, first)
        plain, cj = np.flatnonzero(~coded), np.flatnonzero(coded)
        if len(plain):
            pages.decode_blobs(buf, a2[plain] + h[plain], l2[plain] - h[plain], n[plain], self.block_size,
                               where=f"{where} (blob i: dictionary i)", out=cat, dst=kat[todo[plain]])
        skeys = self._dsarr[column][0]
        ck = keys[todo[cj]]
        sk = skeys[np.searchsorted(skeys, (ck >> 40) << 40)]  # (each segment's least: its segment dictionary)
        if (sk == ck).any():
            k = int(ck[sk == ck][0])
            raise CorruptionError(f"{where}: segment {k >> 40}: a table of codes at its segment dictionary's place "
                                  f"(byte {k & ((1 << 40) - 1)})")
        need, inv = np.unique(sk, return_inverse=True)
        done = have.copy()  # (kept, or decoded in the first pass)
        done[todo[plain]] = True
        sds = []
        for k in need.tolist():
            w = int(np.searchsorted(keys, k))
            if w < len(keys) and keys[w] == k and done[w]:  # (kept, or decoded in the first pass)
                sd = cat[kat[w] : kat[w] + lens[w]]
            else:
                sd, nb = self.segment(k >> 40).dictionary(k & ((1 << 40) - 1), self.block_size, self._dict_sizes(column)[k],
                                                          self._files[k >> 40][1].get("dicts", 1))
                self.dict_bytes_read += nb
            sds.append(sd)
        dl = np.array([len(d) for d in sds], np.int64)
        pages.decode_blobs(buf, a2[cj] + h[cj], l2[cj] - h[cj], n[cj], self.block_size,
                           # (one segment: its dictionary as it is, a view of cat where read now: the tables
                           # are written elsewhere in cat)
                           sds[0] if len(sds) == 1 else np.concatenate(sds),
                           (np.cumsum(dl) - dl)[inv.reshape(-1)], dl[inv.reshape(-1)],
                           where=f"{where}: tables of codes (blob i: table i)", out=cat, dst=kat[todo[cj]])
        return cat, lens, kat

    def _table_heads(self, column: str, seg: np.ndarray, enc: np.ndarray, nblk: np.ndarray,
                     bcnt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The stripe tables that requests of codes (segments ``seg``, dictionaries' places in ``enc``,
        ``nblk`` blocks each of blobs of ``bcnt`` values) may read in part (``_table_parts``): those
        not kept, of at least ``TABLE_PART_BYTES``, in segments of the second head form, whose
        requests read under half their blob's values. ``(keys, bytes)``: each one's key and the
        bytes of its head, tags and anchors at most (those of a table of an entry a value of its
        blob), which a read of blocks reads in its first wave."""
        self._dict_sizes(column)
        skeys, ssize, skept = self._dsarr[column]
        none = np.zeros(0, np.int64)
        if not ((skept == 0) & (ssize >= TABLE_PART_BYTES)).any():  # (most columns: no table that long)
            return none, none
        keys, inv = unique((seg.astype(np.int64) << 40) | (enc >> 8), return_inverse=True)
        inv = inv.reshape(-1)
        w = np.minimum(np.searchsorted(skeys, keys), len(skeys) - 1)
        form2 = np.array([e.get("dicts", 1) == 2 for _, e in self._files], bool)[(keys >> 40).astype(np.int64)]
        sel = (skeys[w] == keys) & (skept[w] == 0) & (ssize[w] >= TABLE_PART_BYTES) & form2 \
            & (np.bincount(inv, nblk * self.block_size, len(keys)) < np.bincount(inv, bcnt, len(keys)) // 2)
        dmax = np.zeros(len(keys), np.int64)
        np.maximum.at(dmax, inv, bcnt)  # (a table: at most an entry a value of its blob)
        nbm = -(-dmax[sel] // self.block_size)
        return keys[sel], np.minimum(ssize[w[sel]], 6 + nbm + 8 * -(-nbm // pages.PAGE_BLOCKS))

    def _table_parts(self, column: str, keys: np.ndarray, size: np.ndarray, cand: np.ndarray, r: np.ndarray,
                     inv: np.ndarray, codes: tuple, heads: tuple) -> tuple:
        """``(chosen, reads, finish)``: of the stripe tables ``keys[cand]`` (``size`` stored bytes
        each), those read in part for a read of blocks (DESIGN §1 "Stripe tables", windows that read
        part of a table: ``keys[chosen]``), the reads of the pages of each that hold the entries its
        requests' codes index (``r``: the requests of codes, ``inv``: each one's dictionary), which
        the caller fetches (with its other dictionaries: one wave), and ``finish(stored)``, then ``{i:
        (entries, first)}`` (``stored(key)``: the bytes of a dictionary read in that wave, or None: a
        segment dictionary that tables of codes need may be among them): of each, the entries from the least of those codes (``first``) to the
        greatest (what the kernels may gather). A window
        of a long history reads its own stretch of a table that covers the whole history. The codes
        come from the requests' staged blocks (``codes``: ``(hdr, words, blocks per request, values
        per block, values of each request's blob)``, decoded here to their value lines: their codes,
        before the dictionaries' starts are added). ``heads``: ``(keys, bytes, buf, at)``, what the
        read's first wave read of the tables ``_table_heads`` chose (each one's head, tags and
        anchors at ``buf[at:]``); their pages' fields and payload are decoded as a blob of their own
        (``pages.blobs_of_pages``), in one pass of the blob decoder, a table of codes through its segment dictionary (read and kept as
        ``_decode_with_code_tables`` does). A table of fewer than three pages, in a segment of the
        first head form, or whose pages the codes all need is left out (read whole)."""
        hdr, words, nblk, vcnt, bcnt = codes
        nothing = np.zeros(0, np.int64), [], lambda stored: {}
        bs, PB, mask = self.block_size, pages.PAGE_BLOCKS, (1 << 40) - 1
        part = cand & np.isin(keys, heads[0])  # (``_table_heads``' choice: not where the requests read half their blobs)
        ci = np.flatnonzero(part)
        rq = np.flatnonzero(part[inv])  # the requests of those tables (positions in r)
        if not len(rq):
            return nothing
        k0 = np.cumsum(nblk) - nblk  # (each request's first block)
        rows = ranges(k0[r[rq]], nblk[r[rq]])
        lines = codec.decode_blocks(*dict_lines(hdr[rows], words), vcnt[rows])
        nv = np.add.reduceat(vcnt[rows], np.cumsum(nblk[r[rq]]) - nblk[r[rq]])
        at = np.cumsum(nv) - nv
        lo, hi, dmax = (np.full(len(keys), f, np.int64) for f in (np.iinfo(np.int64).max, -1, 0))
        ok = nv > 0
        np.minimum.at(lo, inv[rq[ok]], np.minimum.reduceat(lines, at[ok]))
        np.maximum.at(hi, inv[rq[ok]], np.maximum.reduceat(lines, at[ok]))
        np.maximum.at(dmax, inv[rq], bcnt[r[rq]])  # (a table: at most an entry a value of its blob)
        hk, hl, buf, hat = heads
        w = np.minimum(np.searchsorted(hk, keys[ci]), max(len(hk) - 1, 0))
        ci, w = ci[(hk[w] == keys[ci]) & (hi[ci] >= 0)], w[(hk[w] == keys[ci]) & (hi[ci] >= 0)]  # (their heads read)
        if not len(ci):
            return nothing
        plen, bat = hl[w], hat[w]
        segi = (keys[ci] >> 40).astype(np.int64)
        where = self._where3([column], segi)
        coded = self._code_tables()[segi] & (plen > 1)
        coded[coded] = buf[bat[coded]] == pages.CODE_TABLE_MARK
        n, h = pages.dictionary_heads(buf, bat + coded, plen - coded, np.full(len(ci), 2, np.int64), where)
        D, a = n, bat + coded + h  # (each table's entries, and its blob in ``buf``)
        nb = -(-D // bs)
        npg = -(-nb // PB)
        p0, p1 = np.maximum(lo[ci], 0) // (bs * PB), np.minimum(hi[ci], D - 1) // (bs * PB)
        one = p0 == p1  # (a blob of its pages has two at least)
        p0, p1 = np.where(one & (p1 + 1 >= npg), p0 - 1, p0), np.where(one & (p1 + 1 < npg), p1 + 1, p1)
        f0, f1, b0, b1, ok = pages.page_spans(buf, a, nb, size[ci] - coded - h, p0, p1)
        # (three pages at least, a page at least left unread, its head inside what was read)
        j = np.flatnonzero(ok & (npg >= 3) & (D <= dmax[ci]) & (p1 - p0 + 1 < npg) & (nb + 8 * npg <= plen - coded - h))
        if not len(j):
            return nothing
        i = ci[j]
        base = (keys[i] & mask) + coded[j] + h[j]  # (each table's blob in its segment's region)
        sj = segi[j]
        pb0, pb1, nf = b0[j] >> 3, (b1[j] + 7) >> 3, f1[j] - f0[j]
        reads, fin = self._bytes_request3(np.r_[sj, sj], np.r_[base + f0[j], base + pb0], np.r_[nf, pb1 - pb0], where)

        def finish(stored) -> dict:
            got = fin()
            self.dict_bytes_read += len(got)
            f_at, p_at = np.cumsum(nf) - nf, int(nf.sum()) + np.cumsum(pb1 - pb0) - (pb1 - pb0)
            blobs, bl = pages.blobs_of_pages(buf, a[j], nb[j], p0[j], p1[j], got, p_at, b0[j], b1[j], got, f_at, nf)
            first = bs * PB * p0[j]  # (the entry each one's pages start at)
            c = np.minimum(D[j], bs * PB * (p1[j] + 1)) - first
            dicts = dstart = dlen = None
            cj = np.flatnonzero(coded[j])
            if len(cj):  # tables of codes: through their segment dictionaries (each its segment's least key)
                skeys = self._dsarr[column][0]
                sks = np.unique(skeys[np.searchsorted(skeys, sj[cj] << 40)])
                sds = {}
                for k in sks.tolist():  # (kept; or among the batch's other dictionaries, read in this wave)
                    sg, form = self.segment(k >> 40), self._files[k >> 40][1].get("dicts", 1)
                    got_k = stored(k) if sg.cached_dictionary(k & mask) is None else None
                    if got_k is not None:
                        sds[k] = sg.dictionary_from(k & mask, got_k, bs, True, form)
                        continue
                    sds[k], nbr = sg.dictionary(k & mask, bs, self._dict_sizes(column)[k], form)
                    self.dict_bytes_read += nbr
                dl = np.array([len(sds[k]) for k in sks.tolist()], np.int64)
                w = np.searchsorted(sks, skeys[np.searchsorted(skeys, sj << 40)])
                dicts = sds[int(sks[0])] if len(sks) == 1 else np.concatenate([sds[k] for k in sks.tolist()])  # (one: no copy)
                dstart, dlen = np.zeros(len(j), np.int64), np.zeros(len(j), np.int64)
                dstart[cj], dlen[cj] = (np.cumsum(dl) - dl)[w[cj]], dl[w[cj]]
            vals = pages.decode_blobs(blobs, np.cumsum(bl) - bl, bl, c, bs, dicts, dstart, dlen,
                                      f"{where}: pages of stripe tables (blob i: table i)")
            vals.flags.writeable = False
            # (of each, the entries from its least code to its greatest: what the kernels may gather)
            e0 = np.maximum(lo[i], first)
            x = np.cumsum(c) - c + e0 - first
            m = np.minimum(hi[i] + 1, first + c) - e0
            return {k: (vals[y : y + z], e) for k, y, z, e in zip(i.tolist(), x.tolist(), m.tolist(), e0.tolist())}

        return i, reads, finish

    def _starts(self, column: str) -> np.ndarray:
        """The places in format-3 segments' blob regions where a dictionary of ``column`` may end, as
        sorted ``(segment << 40) | offset``: where each of its blobs starts, where every column's
        dictionaries start, where each column's part of each region begins (its least blob offset
        there, or its dictionary) and each region's end (the last three cached). A column's own
        blobs follow its dictionaries, but a column with borrowed codes (DESIGN §1) has only its
        dictionary in its part of the region: it ends where the next part begins."""
        d = self.directory()
        seg = d.seg.astype(np.int64)
        if self._start_keys is None:
            nseg, parts = len(self._segs), []
            for c in self.schema:
                off, _, enc = self._dir_cols[c]
                m = (enc & codec.ENC_DICT) != 0
                least = np.full(nseg, np.iinfo(np.int64).max, np.int64)
                np.minimum.at(least, seg, off)
                has = np.flatnonzero(least < np.iinfo(np.int64).max)
                parts += [(seg[m] << 40) | (enc[m] >> 8), (has.astype(np.int64) << 40) | least[has]]
            fmt3 = np.flatnonzero(self.seg_formats() == 3)
            ends = np.array([self.segment(int(i)).region_words for i in fmt3.tolist()], np.int64)
            self._start_keys = unique(np.concatenate(parts + [(fmt3.astype(np.int64) << 40) | ends]))
        return unique(np.concatenate([(seg << 40) | self._dir_cols[column][0], self._start_keys]))

    def _dictionaries(self, column, seg, enc, isd, with_key: bool = True, codes: tuple | None = None,
                      heads: tuple | None = None) -> tuple:
        """The dictionaries of the DICT requests ``isd`` (their segments ``seg``, the dictionary's
        place in ``enc``) back to back, each once, the segment dictionaries first; the key of those
        (None where there are none, and with ``with_key=False``); per request where its dictionary
        starts in them and its entries (0 for a request not of codes); and the entries the key names
        (the segment dictionaries': a consumer that holds them copies only the rest, the stripe
        tables, which change batch after batch; ``Blocks.dict_kept``). A read adds the start to the
        base of the request's blocks, so that a block's value line is its index into them (DESIGN
        §4). Those not kept are read in one fetch. A segment dictionary is read once per open
        segment (like its index, not counted in a read's ``nbytes``: ``dict_bytes_read`` counts
        them); a stripe's own table at every read that needs it (``dict_bytes_read`` too), but where
        all of its segment's tables of the column take at most ``TABLES_KEPT_BYTES`` stored: then
        each of at most ``TABLE_KEPT_ENTRIES`` entries is kept once read too. ``codes``: the requests'
        staged blocks, ``(hdr, words, blocks per request, values per block, values of each request's
        blob)``, with which a stripe table of at least ``TABLE_PART_BYTES`` is read in part: the
        pages its codes index (``_table_parts``, from their ``heads``, read beside the blocks' first
        wave: ``_table_heads``); its start is then where those begin less their first entry."""
        r = slice(None) if isd.all() else np.flatnonzero(isd)  # (a whole column of codes: no copies of its rows)
        pair = (seg[r].astype(np.int64) << 40) | (enc[r] >> 8)  # (segment, dictionary offset): offsets are < 2^40
        keys, inv = unique(pair, return_inverse=True)
        mask = (1 << 40) - 1
        self._dict_sizes(column)
        skeys, ssize, skept = self._dsarr[column]
        w = np.minimum(np.searchsorted(skeys, keys), max(len(skeys) - 1, 0))
        found = (skeys[w] == keys) if len(skeys) else np.zeros(len(keys), bool)
        size = np.where(found, ssize[w] if len(skeys) else 0, 0)
        kept = np.where(found, skept[w] if len(skeys) else 0, 0)  # (1: kept; 2: kept where it is small)
        first = kept == 1  # (the segment dictionaries: laid out first, the same batch after batch)
        segi = (keys >> 40).astype(np.int64)
        useg, sinv = unique(segi, return_inverse=True)
        segs = {int(u): self.segment(int(u)) for u in useg}
        parts = _Parts(len(keys))
        have = np.zeros(len(keys), bool)
        e0 = np.zeros(len(keys), np.int64)  # (a table read in part: its first entry read)
        cand = (kept == 0) & (size >= TABLE_PART_BYTES)  # (first: a table of codes may read its segment dictionary)
        preads, pfinish = [], lambda stored: {}  # (tables read in part: their pages, fetched with the others below)
        if codes is not None and heads is not None and cand.any():
            chosen, preads, pfinish = self._table_parts(column, keys, size, cand, np.flatnonzero(isd), inv.reshape(-1),
                                                              codes, heads)
            have[chosen] = True
        for u, sg in segs.items():  # dictionaries kept by their segments (a segment dictionary, once read)
            if sg.has_kept_dictionaries():
                i = np.flatnonzero((segi == u) & (kept > 0))  # (only those: a batch names thousands of tables)
                found, pool, st, ln = sg.kept_dictionaries(keys[i] & mask, TABLE_KEPT_ENTRIES)
                parts.pooled(i[found], pool, st[found], ln[found])
                have[i[found]] = True
                for j in i[~found & (kept[i] == 1)].tolist():  # (a larger segment dictionary: kept whole, apart)
                    v = sg.cached_dictionary(int(keys[j] & mask))
                    if v is not None:
                        parts[j], have[j] = v, True
        todo = np.flatnonzero(~have)
        vals = laid = None
        reads = []
        if len(todo):  # one fetch for all of them (concurrent on an object store), every chunk verified
            sg, st, ln = segi[todo], keys[todo] & mask, size[todo]
            reads, fin = self._bytes_request3(sg, st, ln, self._where3([column], sg))
        if len(reads) or len(preads):
            self.store.fetch(reads + preads)
        if len(todo):
            buf, at = fin(in_place=True)
        def stored(k: int):  # (the stored bytes of dictionary k where this wave read it, else None)
            w = int(np.searchsorted(keys[todo], k))
            return buf[at[w] : at[w] + ln[w]] if w < len(todo) and keys[todo[w]] == k else None

        for i, (v, e) in pfinish(stored).items():
            parts[i], e0[i] = v, e
        if len(todo):
            forms = np.array([self._files[s][1].get("dicts", 1) for s in useg.tolist()], np.int64)[sinv[todo]]
            # tables of codes (DESIGN §1 "Stripe tables"): the mark before the head, then a table as any other
            coded = self._code_tables()[segi[todo]] & (ln > 1)
            coded[coded] = buf[at[coded]] == pages.CODE_TABLE_MARK
            where = f"{self.where}: column {column!r}"
            try:  # all of them in one pass of the blob decoder (a stripe's table is a few dozen values)
                if coded.any():  # (two, straight into the batch's layout: then the tables of codes)
                    laid, lens, kat = self._decode_with_code_tables(column, keys, todo, have, parts, buf, at, ln, forms,
                                                                    coded, where, first)
                    vals, cnt, pos = laid, lens[todo], kat[todo]
                else:
                    vals, cnt = pages.decode_dictionaries(buf, at, ln, forms, self.block_size, where)
                    pos = np.cumsum(cnt) - cnt
            except CorruptionError:  # the one at fault, named by its segment and place
                for i, a, n, f, c in zip(todo.tolist(), at.tolist(), ln.tolist(), forms.tolist(), coded.tolist()):
                    segs[int(segi[i])].dictionary_from(int(keys[i] & mask), buf[a + c : a + n], self.block_size, False, f)
                raise
            vals.flags.writeable = False  # shared by every batch that reads them
            for j in np.flatnonzero(kept[todo]).tolist():  # kept alone: not a view that keeps a batch's tables alive
                i = int(todo[j])
                if kept[i] == 2 and cnt[j] > TABLE_KEPT_ENTRIES:
                    continue
                d = vals if cnt[j] == len(vals) else vals[pos[j] : pos[j] + cnt[j]].copy()
                segs[int(segi[i])].keep_dictionary(int(keys[i] & mask), d)
            self.dict_bytes_read += int(ln.sum())
        if laid is not None:  # (every one in its place already)
            cat, at = laid, kat
        elif vals is not None and len(todo) == len(keys) and first.all() == first.any():  # (``vals``: key order, theirs)
            lens, cat, at = cnt, vals, pos
        elif vals is not None:  # kept ones and those read now: the read ones in one copy
            cat, lens, at = _laid_out(todo, cnt, have, parts, first)
            take_ranges(vals, pos, cnt, cat, at[todo])
            cat.flags.writeable = False
        else:  # every one kept: batch after batch the same few, laid out once (``_dcat``; not with
            # tables read in part, which are this read's own)
            whole = None if len(preads) or len(keys) == 1 else keys.tobytes()
            last = self._dcat
            if whole is not None and last is not None and last[0] == whole:
                cat, lens, at = last[1:]
            else:
                lens, cat = parts.lens(np.arange(len(keys))), None
                at = _places(lens, first)
        if int(lens.sum()) >= 1 << 31:
            raise GpumatError(f"{self.where}: a batch's dictionaries exceed 2^31 entries; use smaller batches")
        start, length = np.zeros(len(seg), np.int64), np.zeros(len(seg), np.int64)
        if len(keys) == 1:  # (one dictionary: every request's the same place)
            start[r], length[r] = at[0] - e0[0], lens[0]
        else:
            start[r] = at[inv.reshape(-1)] - e0[inv.reshape(-1)]
            length[r] = lens[inv.reshape(-1)]
        files = [(segs[int(u)].path, segs[int(u)].base) for u in useg.tolist()]
        # the key names the segment dictionaries, the array's first ``nkept`` entries (the tables
        # after them change batch after batch): hashed once per file, then per dictionary
        key = _dict_keys(files, sinv.reshape(-1)[first], (keys & mask)[first]) if with_key and first.any() else None
        nkept = int(lens[first].sum()) if key is not None else 0
        if cat is not None:
            return cat, key, start, length, nkept
        if len(keys) == 1:
            return parts.get(0), key, start, length, nkept
        cat = parts.write(np.empty(int(lens.sum()), np.int64), at, np.arange(len(keys)))  # (at: that order)
        cat.flags.writeable = False
        if whole is not None:  # (the reader's own segments and places: its keys say what it holds)
            self._dcat = (whole, cat, lens, at)
        return cat, key, start, length, nkept

    def _small_pool(self) -> tuple[np.ndarray, np.ndarray]:
        """The blob regions of every small segment back to back (read once per version), and each
        segment's word offset in it (-1 for a large segment, read by ranges instead)."""
        if self._pool is None:
            base = np.full(len(self._segs), -1, np.int64)
            regions, at = [], 0
            todo = [s for s in (self.segment(i) for i in range(len(self._segs))) if s.small and s._region is None]
            if todo:  # one fetch (concurrent on an object store) for every small region not read yet
                # format 3: the region and its chunk checksums after it, verified when kept
                bufs = [np.empty(s.region_words, np.int64) if s.fmt == 2 else np.empty(sum(s.checks_span), np.uint8)
                        for s in todo]
                self.store.fetch([(s.path, s.base, memoryview(b).cast("B")) for s, b in zip(todo, bufs)])
                for s, b in zip(todo, bufs):
                    s.set_region(b)
            base3 = np.full(len(self._segs), -1, np.int64)
            regions3, at3 = [], 0
            for i in range(len(self._segs)):
                s = self.segment(i)
                if s.small and s.fmt == 2:
                    regions.append(s.region())
                    base[i] = at
                    at += s.region_words
                elif s.small:
                    regions3.append(s.region())
                    base3[i] = at3
                    at3 += s.region_bytes
            # _pool3 first: another planner thread that finds ``_pool`` set goes straight to ``_pool3``
            pool3 = np.concatenate(regions3) if regions3 else np.zeros(0, np.uint8)
            pool3.flags.writeable = False  # (reads decode from it in place: no copy)
            self._pool3 = (pool3, base3)
            self._pool = (np.concatenate(regions) if regions else np.zeros(0, np.int64), base)
        return self._pool

    def decode_stripes(self, column: str, stripe_idx) -> np.ndarray:
        """All values of ``column`` of the given directory stripes, concatenated in the given order (int64).

        Stripes all in format-3 files, with the C decoder built: their whole blobs are read (one
        range each, verified) and decoded straight to values (``pages.decode_blobs``: parse,
        PATCH / RUN, dictionary lookup in one pass per blob, no staged form). Otherwise through
        ``read_blocks`` and ``codec.decode_blocks``: the same values, and the same
        ``CorruptionError`` for a code outside its segment's dictionary (which a batch's DICT
        lookup clamps, by the staged contract). The whole-blob path also checks every page's
        anchor against the bits before it, where the block path uses the anchors it starts from."""
        d = self.directory()
        si = np.asarray(stripe_idx, dtype=np.int64).reshape(-1)
        if column not in self.schema:
            raise SchemaError(f"unknown column {column!r}; schema has {list(self.schema)}")
        run = _run(si)  # (a run of rows: its bounds are its ends)
        if len(si) and (si[0] < 0 or si[-1] >= len(d) if run is not None else si.min() < 0 or si.max() >= len(d)):
            raise SchemaError("decode_stripes: stripe index out of bounds")
        if len(si) and native.available()[0] and self._format3(si):
            return self._decode_stripes3(column, si, run=run)
        got = self.read_blocks(column, si, np.zeros(len(si), np.int64), d.nblocks[si])
        # the values of each stripe's blocks (in a pack, other stripes' too), and where its own are
        cnt, take = d.block_values(si, self.block_size)
        nval = np.bincount(np.repeat(np.arange(len(si)), d.nblocks[si]), cnt, minlength=len(si)).astype(np.int64)
        first = np.cumsum(nval) - nval
        if got.dicts is None:
            return codec.decode_blocks(got[0], got[1], cnt)[take]
        # DICT blocks decoded as plain ones (their aux word is before their values): the value lines
        # (where the dictionary starts + the code), each checked against its own dictionary, then looked up
        vals = codec.decode_blocks(*dict_lines(got[0], got[1]), cnt)
        enc = self._dir_cols[column][2][si]
        isd = (enc & codec.ENC_DICT) != 0
        _, _, start, length, _ = self._dictionaries(column, d.seg[si], enc, isd, with_key=False)
        at = ranges(first[isd], nval[isd])
        line = vals[at] - np.repeat(start[isd], nval[isd])
        if len(line) and ((line < 0) | (line >= np.repeat(length[isd], nval[isd]))).any():
            raise CorruptionError(f"{self.where}: column {column!r}: a code outside its segment's dictionary")
        vals[at] = got.dicts[vals[at]]
        return vals[take]

    def _decode_stripes3(self, column: str, si: np.ndarray, out: np.ndarray | None = None,
                         at: np.ndarray | None = None, run: slice | None = None) -> np.ndarray:
        """``decode_stripes`` of stripes in format-3 files: their blobs, whole, one fetch, one C pass,
        each stripe's values to ``out[at[i]:]`` (a new array of them back to back where not given).
        ``run``: ``si`` as a slice, where it is a run of rows; one that is whole blobs (every stripe of
        its packs, ``Directory.packed_run``) is those blobs' values back to back, decoded so."""
        d = self.directory()
        some = self._blob_kinds(column)[2]  # (no constant stripe in the column: no step for them)
        if out is None and run is not None:
            k = d.packed_run(run.start, run.stop)
            plan = self._column_plan(column, k.stop - k.start) if k is not None and some else None
            if k is not None and (not some or plan):  # (a plan fills the constant stripes: this one, kept or not)
                return self._decode_blobs3(column, d.blob_rows()[k], blobs=k, plan=plan)
        enc = self._dir_cols[column][2][si] if some else None
        cst = self._blob_kinds(column)[1][si] if some else None
        if out is None:
            if some and cst.all():  # (a value per user: a feature joined into the events)
                return np.repeat(codec.const_values(enc), d.count[si])
            n = d.count[si]
            out, at = np.empty(int(n.sum()), np.int64), np.cumsum(n) - n
        if some and cst.any():  # constant stripes: their value, count times, to their places; the others from their blobs
            c = np.flatnonzero(cst)
            n = d.count[si[c]]
            take_ranges(np.repeat(codec.const_values(enc[c]), n), np.cumsum(n) - n, n, out, at[c])
            if len(c) < len(si):
                self._decode_stripes3(column, si[~cst], out, at[~cst])
            return out
        if len(d.pack_rows()[0]) and (d.bcount[si] != d.count[si]).any():  # stripes of packs: each blob once
            k = None if run is None else d.packed_run(run.start, run.stop)  # (run: as decode_stripes found it)
            if k is not None:  # (a run of whole packs, to a caller's places: their blobs decoded straight there)
                return self._decode_blobs3(column, d.blob_rows()[k], out, at[d.blob_rows()[k] - run.start], blobs=k)
            off = self._dir_cols[column][0][si]
            if len(si) and 0 <= int(off.min()) and int(off.max()) < 1 << 40:  # (segment, offset) as one key, in order
                _, u, inv = unique((d.seg[si].astype(np.int64) << 40) | off, return_index=True, return_inverse=True)
            else:
                _, u, inv = np.unique(np.stack((d.seg[si].astype(np.int64), off), 1), axis=0,
                                      return_index=True, return_inverse=True)
            inv = inv.reshape(-1)
            bstart = np.cumsum(d.bcount[si[u]]) - d.bcount[si[u]]
            return take_ranges(self._decode_blobs3(column, si[u]), bstart[inv] + d.skip[si], d.count[si], out, at)
        return self._decode_blobs3(column, si, out, at)

    def _decode_blobs3(self, column: str, si: np.ndarray, out: np.ndarray | None = None,
                       dst: np.ndarray | None = None, blobs: slice | None = None, plan: tuple | None = None) -> np.ndarray:
        """Every value of the blobs of ``column`` of stripes ``si`` (all of a pack's for a stripe of
        one), back to back, or blob ``i``'s to ``out[dst[i]:]``. A read of every blob or more (then
        any read while the plan is kept), in a version whose every segment is pooled, takes its
        arguments from the column's plan (``_plan3``), gathered by ``si`` (views where ``si`` is a
        run of rows, or ``blobs``, the
        plan's blobs of ``si`` where it is the first rows of a run of whole blobs): no step per table
        or dictionary; any other read, or a bad blob (named by it), through ``_blob_args``. ``plan``:
        the one to take (the read that made it, where it is not kept)."""
        d = self.directory()
        if not len(si) or (blobs is None and len(d.blob_rows()) < len(d)):  # (the plan is per blob: packs by blobs)
            return self._decode_blobs3_read(column, si, out, dst)
        plan = self._column_plan(column, len(si)) if plan is None else plan
        if not plan:
            return self._decode_blobs3_read(column, si, out, dst)
        buf, boff, dstart, dlen, dicts, tables, tsz, (blen, cnt, tags, bblocks), consts = plan
        ix = blobs if blobs is not None else _run(si)  # (blobs in order, a run of rows: every array a view)
        ix = si if ix is None else ix
        cnt = cnt[ix]
        if out is None:
            out, dst = np.empty(int(cnt.sum()), np.int64), np.cumsum(cnt) - cnt
        io = getattr(self.store, "io", None)
        if io is not None:  # (the constant stripes: no blob read)
            io.add(blocks_read=int(bblocks[ix].sum()),
                   block_runs=len(si) - (int((tags[ix] == pages.CONST_TAG).sum()) if consts else 0))
        if tsz is not None:
            self.dict_bytes_read += int(tsz[ix].sum())
        bad = native.decode_blobs(buf, boff[ix], blen[ix], cnt, dst, self.block_size, out,
                                  dicts, None if dicts is None else dstart[ix], None if dicts is None else dlen[ix],
                                  tags[ix], None if tables is None else (tables[0][ix],) + tables[1:])
        if bad[0]:  # (the same blobs, but the constant stripes, through the path that names what is wrong, and raises)
            live = tags[ix] != pages.CONST_TAG
            return self._decode_blobs3_read(column, si[live], out, dst[live])
        return out

    def _column_plan(self, column: str, n: int) -> "tuple | bool | None":
        """``column``'s plan (``_plan3``) for a read of ``n`` blobs: made by the first read of every
        blob or more (so that making it, which reads every blob's dictionaries, costs no more than
        that read), then taken by any read while it is kept."""
        plan = self._plans.get(column)
        if plan is None and n >= len(self.directory().blob_rows()):
            plan = self._plan3(column)
        return plan

    def _plan3(self, column: str) -> "tuple | bool":
        """The arguments of a whole-blob decode of every blob of ``column`` (``_blob_args`` of their
        first rows, ``Directory.blob_rows``), where every segment of the version is pooled
        (``_small_pool``), in blob order: the pool, each blob's place in it and its dictionary's in
        ``dicts`` (int64 a blob), the stripe tables' places, heads and dictionaries, each blob's
        table's stored bytes (0: none), and its bytes, values, tag and blocks (the directory's own
        arrays where no stripe shares its blob and none is constant; a constant stripe's tag
        ``pages.CONST_TAG``, its value in place of its place, no block). False where a segment is
        not pooled, where the column's tables or dictionaries do not read (a read names the one at
        fault), or where a pack holds constants per row (``pages.pack_row_constants``: no blob, a
        value a row). Kept for the
        reads that follow unless a dictionary it holds is one the tier does not keep
        (``_kept_only``): then only the read that made it takes it (no second read of its
        dictionaries), and the reads after it find their own. It holds its dictionaries: the kept one
        itself where there is one, else their concatenation (a copy of them, as ``_dcat`` holds the
        last), until ``forget_dictionaries`` of this reader drops it (another reader's, on the shared
        segments, does not)."""
        d = self.directory()
        self._small_pool()
        owners = d.blob_rows()
        cst = self._blob_kinds(column)[1][owners]
        live = np.flatnonzero(~cst)  # (constant stripes: no blob)
        rows, nb = owners[live], len(owners)
        plan = keep = False
        # (a pack with constants per row, pages.pack_row_constants, has no blob but a value a row: not one a blob)
        per_row = bool((self._blob_kinds(column)[1] & (d.bcount != d.count)).any())
        if len(rows) and not per_row and bool((self._pool3[1][d.seg] >= 0).all()):
            try:
                parts, _, _, dicts, dstart, dlen, tables, _ = self._blob_args(column, rows)
            except CorruptionError:
                parts = None
            if parts is not None and len(parts) == 1:
                keep = self._kept_only(column, rows, tables)
                boff = np.zeros(nb, np.int64)
                boff[live] = parts[0][2]
                ds = dl = tab = tsz = None
                if dicts is not None:
                    ds, dl = np.zeros(nb, np.int64), np.zeros(nb, np.int64)
                    ds[live], dl[live] = dstart, dlen
                if tables is not None:
                    tab, tsz = np.full(nb, -1, np.int64), np.zeros(nb, np.int64)
                    tab[live] = tables[0]
                    own = tab >= 0
                    tsz[own] = self._dsarr[column][1][tables[-1]][tab[own]]
                    tables = (tab,) + tables[1:-1]
                per = (self._dir_cols[column][1], d.bcount, self._blob_kinds(column)[0], d.bblocks)
                if nb < len(d) or len(live) < nb:  # (stripes of packs: each blob's, copied; constant ones filled)
                    per = tuple(x[owners] for x in per)
                    c = np.flatnonzero(cst)
                    per[2][c], per[3][c] = pages.CONST_TAG, 0
                    boff[c] = codec.const_values(self._dir_cols[column][2][owners[c]])
                plan = (parts[0][0], boff, ds, dl, dicts, tables, tsz, per, len(live) < nb)
        self._plans[column] = plan if keep else False
        return plan

    def _kept_only(self, column: str, rows: np.ndarray, tables: tuple | None) -> bool:
        """Whether every dictionary that a decode of ``column``'s rows ``rows`` looks up whole (each
        DICT row's that is not a table of its own, and the segment dictionaries that tables of codes
        index) is one its segment keeps once read (``_dict_sizes``; a plan holds them as the cache
        does, never a table the tier reads anew at each read)."""
        enc = self._dir_cols[column][2][rows]
        isd = (enc & codec.ENC_DICT) != 0
        if not isd.any():
            return True
        skeys = self._dsarr[column][0]
        need = self._row_dicts(column, rows[isd], skeys)
        if tables is not None:
            _, coded, _, _, sdi = self._tfacts[column]
            u = tables[-1]
            need = np.concatenate([need[tables[0][isd] < 0], sdi[u][coded[u]]])
        need = unique(need)
        if len(need) and int(need[0]) < 0:
            return False
        mask = (1 << 40) - 1
        return all(self.segment(k >> 40).cached_dictionary(k & mask) is not None for k in skeys[need].tolist())

    def _decode_blobs3_read(self, column: str, si: np.ndarray, out: np.ndarray | None = None,
                            dst: np.ndarray | None = None) -> np.ndarray:
        """``_decode_blobs3`` through ``_blob_args``: the blobs' bytes fetched (each large segment's),
        their tables and dictionaries found for this read."""
        d = self.directory()
        parts, cnt, tags, dicts, dstart, dlen, tables, where = self._blob_args(column, si)
        io = getattr(self.store, "io", None)
        if io is not None:
            io.add(blocks_read=int(d.bblocks[si].sum()), block_runs=len(si))
        if tables is not None:
            self.dict_bytes_read += int(self._dsarr[column][1][tables[-1]].sum())
            tables = tables[:-1]
        blen, seg = self._dir_cols[column][1][si], d.seg[si]
        if out is None:
            out, dst = np.empty(int(cnt.sum()), np.int64), np.cumsum(cnt) - cnt
        for buf, g, at in parts:  # (the small segments' blobs where they are pooled, each large one's where it was read)
            w = where if len(parts) == 1 else self._where3([column], seg[g])  # (a bad blob: named in its group)
            g = slice(None) if len(parts) == 1 else g
            try:
                pages.decode_blobs(buf, at, blen[g], cnt[g], self.block_size, dicts, None if dicts is None else dstart[g],
                                   None if dicts is None else dlen[g], w, tags[g], out, dst[g],
                                   None if tables is None else (tables[0][g],) + tables[1:])
            except CorruptionError:
                if tables is not None:  # (a table at fault: named by the path that decodes tables apart)
                    enc = self._dir_cols[column][2][si]
                    self._dictionaries(column, seg, enc, (enc & codec.ENC_DICT) != 0, with_key=False)
                raise
        return out

    def _blob_args(self, column: str, si: np.ndarray) -> tuple:
        """What a whole-blob decode of the blobs of ``column`` of rows ``si`` takes, their bytes
        fetched: ``(parts, cnt, tags, dicts, dstart, dlen, tables, where)``: ``parts`` as
        ``_bytes_request3``'s ``finish(groups=True)``; ``tables`` as ``pages.decode_blobs`` takes them,
        then the tables' indices in ``_dsarr``'s keys (None where no blob's dictionary is a stripe
        table of its own)."""
        d = self.directory()
        off, blen, enc = (a[si] for a in self._dir_cols[column])
        seg = d.seg[si]
        where = self._where3([column], seg)
        reads, fin = self._bytes_request3(seg, off, blen, where)
        isd = (enc & codec.ENC_DICT) != 0
        own = None
        treads: list = []
        if isd.any():  # stripe tables not kept: read with the blobs, each decoded just before its blob
            own, u, tab, w = self._own_tables(column, si, isd)
            if own.any():
                tkeys = self._dsarr[column][0][u]
                treads, tfin = self._bytes_request3((tkeys >> 40).astype(np.int64), tkeys & ((1 << 40) - 1),
                                                    self._dsarr[column][1][u], where)
        self.store.fetch(reads + treads)
        parts = fin(groups=True)
        dicts = dstart = dlen = tables = None
        if own is not None and own.any():
            try:
                dicts, dstart, dlen, tables = self._tables_in_cache(column, seg, isd & ~own, w, u, tab,
                                                                    *tfin(in_place=True), where)
            except CorruptionError:
                self._dictionaries(column, seg, enc, isd, with_key=False)  # (names the one at fault)
                raise
            tables += (u,)
        elif isd.any():
            dicts, _, dstart, dlen, _ = self._dictionaries(column, seg, enc, isd, with_key=False)
        return parts, d.bcount[si], self._blob_kinds(column)[0][si], dicts, dstart, dlen, tables, where

    def _own_tables(self, column: str, si: np.ndarray, isd: np.ndarray) -> tuple:
        """Of the DICT blobs ``isd`` of directory rows ``si`` in a whole-blob decode, those whose
        dictionary is a stripe table that is never kept (``_dict_sizes``: the tables of a segment
        whose tables are too many to keep), which ``_decode_blobs3`` decodes each just before its
        blob, in the cache (``gm_decode_blobs``), rather than all of them into one array first:
        ``(own, u, tab, w)``: those blobs (a mask), the tables' indices in ``_dsarr``'s keys, each
        blob's table (into ``u``) or -1, and each blob's dictionary's index there (-1: none found)."""
        self._dict_sizes(column)
        skeys, ssize, skept = self._dsarr[column]
        if not len(skeys) or not (skept == 0).any():
            return np.zeros(len(si), bool), None, None, None
        d = self.directory()
        rows = self._drow.get(column)
        if rows is None and 4 * len(si) >= len(d):  # (a read of a quarter of the rows or more: every row's, once)
            row = self._row_dicts(column, np.arange(len(d)), skeys).astype(np.int32)
            # (and each row's where it is a table of its own, else -1)
            rows = self._drow[column] = (row, np.where((row >= 0) & (skept[row] == 0) & (ssize[row] > 1), row, -1))
        if rows is None:  # (a smaller read looks up its rows' keys alone: one user's stripes in a tier of millions)
            w = self._row_dicts(column, si, skeys)
            own = isd & (w >= 0)
            own[own] = (skept[w[own]] == 0) & (ssize[w[own]] > 1)
            ow = w[own]
        else:
            w, ow = rows[0][si], rows[1][si]
            own = isd & (ow >= 0)
            if not own.all():  # (all: a column of stripe tables, read whole)
                ow = ow[own]
        u, inv = unique(ow, return_inverse=True)
        if len(inv) == len(si):
            return own, u, inv.astype(np.int64, copy=False).reshape(-1), w
        tab = np.full(len(si), -1, np.int64)
        tab[own] = inv.reshape(-1)
        return own, u, tab, w

    def _row_dicts(self, column: str, si: np.ndarray, skeys: np.ndarray) -> np.ndarray:
        """Per directory row ``si``, the index of its dictionary of ``column`` in ``skeys``, or -1."""
        pair = (self.directory().seg[si].astype(np.int64) << 40) | (self._dir_cols[column][2][si] >> 8)
        w = np.minimum(np.searchsorted(skeys, pair), len(skeys) - 1)
        w[skeys[w] != pair] = -1
        return w

    def _tables_in_cache(self, column: str, seg: np.ndarray, rest: np.ndarray, w: np.ndarray,
                         u: np.ndarray, tab: np.ndarray, tbuf: np.ndarray, tat: np.ndarray, where) -> tuple:
        """``(dicts, dstart, dlen, tables)`` for ``pages.decode_blobs`` (``tables``: the stripe tables
        ``u`` (``_own_tables``), read to ``tbuf[tat:]``, the blobs' ``tab``): the dictionaries of the
        blobs ``rest`` (``w``: each blob's, as ``_own_tables`` found it) and the segment dictionaries
        that tables of codes index, from ``_dictionaries`` (kept, or read now). Each table's mark
        (DESIGN §1: a table of codes, into the least dictionary of its segment's column) and head are
        read at its first read and kept with the column's keys (``_table_facts``: facts of immutable,
        verified bytes, as the heads of a large segment's blobs are kept)."""
        skeys, ssize, _ = self._dsarr[column]
        coded, n, skip, sdi = self._table_facts(column, u, tbuf, tat, where)
        su = ssize[u]
        r = np.flatnonzero(rest)
        # (each dictionary asked for once: thousands of blobs and tables name their segment's; every DICT
        # row's key is among the keys, which _dict_sizes took from all of them)
        x = np.concatenate([w[r], sdi[coded]])
        if len(x) and x.min() == x.max():  # (most often: one segment's)
            ki, inv = x[:1], np.zeros(len(x), np.int64)
        else:
            ki, inv = unique(x, return_inverse=True)
        keys, inv = skeys[ki], inv.reshape(-1)
        dicts = dstart = dlen = None
        tdstart, tdlen = np.zeros(len(u), np.int64), np.zeros(len(u), np.int64)
        if len(keys):
            one = self.segment(int(keys[0] >> 40)).cached_dictionary(int(keys[0] & ((1 << 40) - 1))) \
                if len(keys) == 1 else None  # (most often: one segment's, kept)
            if one is not None:
                dicts, ds, dl = one, np.zeros(1, np.int64), np.array([len(one)], np.int64)
            else:
                dicts, _, ds, dl, _ = self._dictionaries(column, keys >> 40, (keys & ((1 << 40) - 1)) << 8,
                                                         np.ones(len(keys), bool), with_key=False)
            dstart, dlen = np.zeros(len(seg), np.int64), np.zeros(len(seg), np.int64)
            dstart[r], dlen[r] = ds[inv[: len(r)]], dl[inv[: len(r)]]
            tdstart[coded], tdlen[coded] = ds[inv[len(r):]], dl[inv[len(r):]]
        return dicts, dstart, dlen, (tab, tbuf, tat + skip, su - skip, n, tdstart, tdlen)

    def _table_facts(self, column: str, u: np.ndarray, tbuf: np.ndarray, tat: np.ndarray, where) -> tuple:
        """Of the stripe tables ``u`` (indices in ``_dsarr``'s keys), read to ``tbuf[tat:]``: whether
        each is a table of codes (its mark, in a segment whose tables may be), its entries, the bytes
        before its blob (the mark and the head), and the index of its segment's dictionary (the
        segment's least key: ``CorruptionError`` for a table of codes at that place). Read once per
        table, then kept (as the arrays the C decoder takes: no conversion per read)."""
        skeys, ssize, _ = self._dsarr[column]
        f = self._tfacts.get(column)
        if f is None:
            sdi = np.searchsorted(skeys, (skeys >> 40) << 40).astype(np.int32)  # (each key's segment's least)
            # (keys fewer than 2^31: 22 bytes a table in all)
            f = self._tfacts[column] = (np.zeros(len(skeys), bool), np.zeros(len(skeys), bool),
                                        np.zeros(len(skeys), np.int64), np.zeros(len(skeys), np.int64), sdi)
        known, coded, n, skip, sdi = f
        new = ~known[u]
        if new.any():
            j, at, size = u[new], tat[new], ssize[u[new]]
            tseg = (skeys[j] >> 40).astype(np.int64)
            c = self._code_tables()[tseg] & (size > 1)
            c[c] = tbuf[at[c]] == pages.CODE_TABLE_MARK
            if (c & (sdi[j] == j)).any():
                k = int(skeys[j[c & (sdi[j] == j)][0]])
                raise CorruptionError(f"{where}: column {column!r}: segment {k >> 40}: a table of codes at its segment "
                                      f"dictionary's place (byte {k & ((1 << 40) - 1)})")
            forms = np.array([e.get("dicts", 1) for _, e in self._files], np.int64)[tseg]
            nn, hh = pages.dictionary_heads(tbuf, at + c, size - c, forms, _Where(lambda: f"{where}: column {column!r}"))
            # (the facts before the flag: another thread may find them)
            coded[j], n[j], skip[j] = c, nn, hh + c
            known[j] = True
        return coded[u], n[u], skip[u], sdi[u]


class _Parts:
    """The dictionaries of a batch (``VersionReader._dictionaries``, by index) already in memory:
    ranges of their segments' packed kept ones (``Segment.kept_dictionaries``: found, sized and
    copied a segment at a time, where a batch names hundreds of stripe tables) or arrays of their
    own (tables read in part)."""

    def __init__(self, n: int):
        self.pool = np.full(n, -1, np.int64)  # (index into pools, or -1)
        self.st, self.ln = np.zeros(n, np.int64), np.zeros(n, np.int64)
        self.pools: list = []
        self.own: dict = {}

    def pooled(self, i: np.ndarray, pool: np.ndarray, st: np.ndarray, ln: np.ndarray) -> None:
        if len(i):
            self.pool[i], self.st[i], self.ln[i] = len(self.pools), st, ln
            self.pools.append(pool)

    def __setitem__(self, i: int, v: np.ndarray) -> None:
        self.own[i] = v

    def get(self, i: int) -> np.ndarray:
        p = int(self.pool[i])
        return self.own[i] if p < 0 else self.pools[p][self.st[i] : self.st[i] + self.ln[i]]

    def lens(self, idx: np.ndarray) -> np.ndarray:
        out = self.ln[idx].copy()
        for j in np.flatnonzero(self.pool[idx] < 0).tolist():
            out[j] = len(self.own[int(idx[j])])
        return out

    def write(self, cat: np.ndarray, at: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """Dictionaries ``idx`` copied into ``cat`` at ``at[idx]``; returns ``cat``."""
        p = self.pool[idx]
        for k, pool in enumerate(self.pools):
            j = idx[p == k]
            if len(j):
                take_ranges(pool, self.st[j], self.ln[j], cat, at[j])
        for i in idx[p < 0].tolist():
            cat[at[i] : at[i] + len(self.own[i])] = self.own[i]
        return cat


def _run(si: np.ndarray) -> slice | None:
    """``si`` as a slice where it is a run of rows (each the one before it plus one), else None."""
    if not len(si) or si[-1] - si[0] != len(si) - 1 or (len(si) > 1 and not bool((np.diff(si) == 1).all())):
        return None
    return slice(int(si[0]), int(si[-1]) + 1)


def _laid_out(todo: np.ndarray, cnt: np.ndarray, have: np.ndarray, parts: _Parts, first: np.ndarray) -> tuple:
    """A batch's dictionaries (``VersionReader._dictionaries``), those of ``first`` (its segment
    dictionaries) before the others, each part in key order: ``(cat, lens, at)``, an array for all
    of them with the kept ones (``have``: in ``parts``) copied in, and each one's entries and place;
    those read now (``todo``, ``cnt`` entries each) are the caller's to write."""
    lens = np.zeros(len(have), np.int64)
    hv = np.flatnonzero(have)
    lens[todo], lens[hv] = cnt, parts.lens(hv)
    at = _places(lens, first)
    return parts.write(np.empty(int(lens.sum()), np.int64), at, hv), lens, at


def _places(lens: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Where each of a batch's dictionaries (``lens`` entries each) starts in its array: those of
    ``first`` (the segment dictionaries: the same batch after batch, ``Blocks.dict_kept``) back to
    back from 0, the others after them, each part in key order."""
    order = np.argsort(~first, kind="stable")  # (those of ``first``, then the others, each in key order)
    at = np.empty(len(lens), np.int64)
    at[order] = np.cumsum(lens[order]) - lens[order]
    return at


def _blob_ids(seg, skip) -> np.ndarray:
    """``Directory.blob``: per stripe, the first directory index of the stripes of its pack (itself
    for a stripe with blobs of its own). A pack's rows are consecutive rows of its segment's index,
    the first with ``skip`` 0, the others after it; the directory, restricted to one segment, lists
    that segment's rows in their index's order (both sorted by ``(user_id, start)``)."""
    blob = np.arange(len(skip), dtype=np.int64)
    if not (skip != 0).any():
        return blob
    order = np.argsort(seg, kind="stable")  # each segment's stripes, in its index's order
    new = skip[order] == 0
    new[1:] |= seg[order[1:]] != seg[order[:-1]]
    blob[order] = order[np.flatnonzero(new)][np.cumsum(new) - 1]
    return blob


def _meta_fill(mc: "_MetaCache | None", buf, plen, kept, src, cols, si, new_at, head) -> np.ndarray:
    """The first wave's pieces back to back, as if every one was read: ``buf`` holds those not
    ``kept`` (``plen`` bytes each, in order), then the heads of the blobs read whole (kept now,
    at ``new_at`` in ``mc``); a kept piece is copied from the cache at ``src``."""
    if not kept.any():
        return buf
    eff = np.where(kept, 0, plen)
    n_read = int(eff.sum())
    if len(new_at):
        take_ranges(buf, n_read + np.cumsum(head) - head, head, mc.buf, new_at)
        mc.publish(cols, si, new_at)
    out = np.empty(int(plen.sum()), np.uint8)
    at = np.cumsum(plen) - plen
    r, k = np.flatnonzero(~kept & (plen > 0)), np.flatnonzero(kept & (plen > 0))
    if len(r):
        take_ranges(buf, (np.cumsum(eff) - eff)[r], plen[r], out, at[r])
    if len(k):
        take_ranges(mc.buf, src[k], plen[k], out, at[k])
    return out


@dataclass
class _BlockPlan:
    """What a read of blocks ``[lo[i], lo[i] + nblk[i])`` of stripes ``si`` needs, whatever the column:
    per block its stripe, index in the stripe, value count and segment; the segments read by ranges
    (``large``: each with its blocks and the requests that touch them); where each request's blocks
    go (``req_first``); the small segments' pooled regions."""

    si: np.ndarray
    lo: np.ndarray
    nblk: np.ndarray
    K: int
    # format 2 only (a format-3 plan is the requests alone)
    bstripe: np.ndarray | None = None
    j: np.ndarray | None = None
    bseg: np.ndarray | None = None
    large: list | None = None
    cnt: np.ndarray | None = None
    req_first: np.ndarray | None = None
    pool: np.ndarray | None = None
    pool_base: np.ndarray | None = None
    small_reqs: np.ndarray | None = None
    small_blocks: np.ndarray | None = None
    stripe_hdr_words: np.ndarray | None = None
    pool_base_req: np.ndarray | None = None
    fmt: int = 2


@dataclass
class _MixedPlan:
    """A read over files of both formats: a ``_BlockPlan`` for the requests ``r`` of each (``parts``)."""

    parts: list
    nblk: np.ndarray


class _Where:
    """An error message's place, worked out only if an error is raised (``str()``)."""

    def __init__(self, fn):
        self.fn = fn

    def __str__(self) -> str:
        return self.fn()


def _one(column: str, gen):
    """A one-column read generator as one that returns ``{column: result}``."""
    return {column: (yield from gen)}


def _first_of_dict(gen):
    """A generator that returns ``{column: result}`` for one column, as one that returns the result."""
    return next(iter((yield from gen).values()))


def _merge_parts(parts: list, nblk: np.ndarray) -> tuple:
    """One ``(hdr, words, nbytes)`` in request order from the results of requests ``r`` of each part."""
    first = np.cumsum(nblk) - nblk
    K = int(nblk.sum())
    pos_all, nw_all, hdrs, words_l = [], [], [], []
    for r, (hdr, words, _) in parts:
        off = (hdr[:, 2] >> 8) - ((hdr[:, 2] & AUX_FLAG) != 0)  # a block's words, from its aux word if any
        nw = np.diff(np.append(off, len(words) - 1))
        pos_all.append(ranges(first[r], nblk[r]))
        nw_all.append(nw)
        hdrs.append(hdr)
        words_l.append(words)
    nw = np.zeros(K, np.int64)
    for pos, n in zip(pos_all, nw_all):
        nw[pos] = n
    out_off = np.cumsum(nw) - nw
    words = np.zeros(int(nw.sum()) + 1, np.int64)
    hdr = np.empty((K, 3), np.int64)
    for pos, n, h, w in zip(pos_all, nw_all, hdrs, words_l):
        words[ranges(out_off[pos], n)] = w[: int(n.sum())]
        hdr[pos] = h
        hdr[pos, 2] = ((out_off[pos] + ((h[:, 2] & AUX_FLAG) != 0)) << 8) | (h[:, 2] & 255)
    dicts = [res for _, res in parts if getattr(res, "dicts", None) is not None]  # format 3's part only
    return Blocks(hdr, words, sum(res[2] for _, res in parts),
                  *((dicts[0].dicts, dicts[0].dict_keys, dicts[0].dict_kept) if dicts else ()))


def _with_constants(d: Directory, encs: list, cst, si, lo, nblk, enc, block_size, got, src, blk, dict_b, need,
                    where: str = "tier"):
    """The staging inputs of a read's blocks (``got``, ``src``, ``blk``, ``dict_b``: of the requests
    not in ``cst``; ``need``: per such request) with the blocks of the constant requests ``cst`` put
    in, in request order (``si, lo, nblk, enc``: every request's; the requests column-major over
    ``encs``, each column's ``enc`` per directory stripe): plain blocks of width 0 whose base is the
    stripe's value, from no bytes. A pack's block whose rows are each a constant of their own
    (``pages.pack_row_constants``) holds each row's value at its positions: a plain block of the
    values less their least, its payload made here and put after ``got``'s bytes."""
    isc = np.repeat(cst, nblk)
    K = len(isc)
    fields = np.zeros((len(pages.Blocks.FIELDS), K), np.int64)  # (every field an integer)
    fields[:, ~isc] = np.stack([getattr(blk, f) for f in pages.Blocks.FIELDS])
    out = pages.Blocks(*fields)
    j = ranges(lo[cst], nblk[cst])  # the constant blocks' places in their blobs (``lo``: in the blobs' numbering)
    cnt = np.minimum(block_size, np.repeat(d.bcount[si[cst]], nblk[cst]) - j * block_size)
    out.cnt[isc] = out.nv[isc] = cnt
    out.base[isc] = np.repeat(codec.const_values(enc[cst]), nblk[cst])
    src_all, dict_all, need_all = np.zeros(K, np.int64), np.zeros(K, bool), np.zeros(len(cst), np.int64)
    src_all[~isc], dict_all[~isc], need_all[~cst] = src, dict_b, need
    rc = np.flatnonzero(cst & (d.bcount[si] != d.count[si]))  # constant requests of stripes of packs
    if not len(rc):
        return got, src_all, out, dict_all, need_all
    # each such request's pack's rows, in blob order: a row's value at its positions
    order, first, rows = d.pack_rows()
    at, n = first[si[rc]], rows[si[rc]]
    mem = order[ranges(at, n)]
    rq = np.repeat(np.arange(len(rc)), n)
    col = (rc * len(encs)) // len(cst)  # (column-major: each column's requests a run of equal length)
    menc = np.empty(len(mem), np.int64)
    for c, e in enumerate(encs):
        m = np.flatnonzero(col[rq] == c)
        menc[m] = e[mem[m]]
    if not codec.const_stripes(menc).all():
        raise CorruptionError(f"{where}: a pack's rows name different blobs: some constant, some not")
    # each such request's pack, event by event: its rows' values, each repeated its count
    bc = d.bcount[si[rc]]
    if (np.add.reduceat(d.count[mem], np.cumsum(n) - n) != bc).any():
        raise CorruptionError(f"{where}: a pack's rows do not hold its events")
    seq = np.repeat(codec.const_values(menc), d.count[mem])
    # the blocks of those requests (blob block ``jr``), their values from it: a plain block each, its
    # values less their least packed at their width from a word boundary (``codec._pack``)
    on = np.zeros(len(cst), bool)
    on[rc] = True
    blk_rc = np.flatnonzero(np.repeat(on, nblk))
    jr = ranges(lo[rc], nblk[rc])
    b_cnt = out.cnt[blk_rc]
    at_v = np.repeat(np.repeat(np.cumsum(bc) - bc, nblk[rc]) + jr * block_size, b_cnt) + ranges(np.zeros(len(jr), np.int64), b_cnt)
    vals = seq[at_v]
    first_v = np.cumsum(b_cnt) - b_cnt
    base = np.minimum.reduceat(vals, first_v) if len(vals) else np.zeros(0, np.int64)
    w = codec.bit_length((np.maximum.reduceat(vals, first_v) - base).view(np.uint64)) if len(vals) else base
    nw = codec.words_for(b_cnt, w)
    dst = np.cumsum(nw) - nw
    words = np.zeros(int(nw.sum()) + 1, np.uint64)
    for c0 in range(0, len(blk_rc), _PACK_CHUNK):  # (a [chunk, block_size] matrix at a time)
        c1 = min(c0 + _PACK_CHUNK, len(blk_rc))
        r2 = np.zeros((c1 - c0, block_size), np.uint64)
        k = ranges(np.zeros(c1 - c0, np.int64), b_cnt[c0:c1])
        v0, v1 = first_v[c0], first_v[c1 - 1] + b_cnt[c1 - 1]
        r2[np.repeat(np.arange(c1 - c0), b_cnt[c0:c1]), k] = (vals[v0:v1] - np.repeat(base[c0:c1], b_cnt[c0:c1])).view(np.uint64)
        codec._pack(r2, w[c0:c1], nw[c0:c1], dst[c0:c1], words)
    extra = words.view(np.uint8)
    out.base[blk_rc], out.w[blk_rc] = base, w
    src_all[blk_rc] = 8 * len(got) + 64 * dst
    return np.concatenate([np.asarray(got, np.uint8), extra]), src_all, out, dict_all, need_all


_PACK_CHUNK = 4096  # ``_with_constants``: blocks packed a pass


@functools.lru_cache(maxsize=1 << 12)
def _file_key(path: str, base: int) -> int:
    """A 64-bit hash of a data file's place (data files are never rewritten)."""
    return int.from_bytes(hashlib.blake2b(f"{path}@{base}".encode(), digest_size=8).digest(), "little")


def _dict_keys(files: list, which: np.ndarray, offs: np.ndarray) -> tuple:
    """The keys of dictionaries at byte ``offs`` of data files ``files[which]`` (``(path, base)``):
    63-bit hashes of where they are, one per dictionary (a batch of stripe tables names hundreds:
    a hash per file, then splitmix64's finalizer over the file's hash and the offset)."""
    fk = [_file_key(p, b) for p, b in files]
    if len(offs) <= 16:  # a batch's few segment dictionaries: the same mix in Python ints (no NumPy steps)
        M = (1 << 64) - 1
        out = []
        for w, o in zip(np.asarray(which).tolist(), np.asarray(offs).tolist()):
            x = (fk[w] + (o & M) * 0x9E3779B97F4A7C15) & M
            x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M
            x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & M
            out.append((x ^ (x >> 31)) >> 1)
        return tuple(out)
    with np.errstate(over="ignore"):
        x = np.array(fk, np.uint64)[which] \
            + np.asarray(offs).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        x ^= x >> np.uint64(30)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(27)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return tuple((x >> np.uint64(1)).tolist())


def _nonempty(reqs: np.ndarray, nblk: np.ndarray) -> np.ndarray:
    return reqs[nblk[reqs] > 0]
