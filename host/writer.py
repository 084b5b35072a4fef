"""Writing new versions (docs/DESIGN.md §2): ``append`` (each user's new events as stripes of one
segment, inline in the commit record when small), ``compact`` (every history rewritten into long
stripes), automatic merging of small segments, and the writers' lock with a timeout.

The commit itself is host/log.py's: a record created once. Data files are written and synced
before it, so a writer that dies or fails leaves the previous version intact; on a failure the
files it wrote are removed (what a killed writer leaves is swept by vacuum).

An append's cost depends on its own size, not on the tier's history: it reads nothing but the
in-memory length history, writes one segment (or none, inline) and one record. Every
``CompactionPolicy.max_small_files`` appends or so, it also merges the small segments into one
(the same histories, fewer files), so reads never degrade with small appends.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import itertools
import os
import time
import uuid

import numpy as np

from gpumat.core.errors import TierError
from gpumat.host import codec, pages, segment
from gpumat.host.log import DATA_DIR, INLINE_BYTES, LOCK_FILE, State, commit
from gpumat.host.ranges import ranges
from gpumat.host.reader import VersionReader
from gpumat.host.segment import encode_segment, encode_segment3
from gpumat.host.store import describe_os_error

MAX_STRIPE = 1 << 20  # events per stripe: bounds one blob, keeps compaction's output pieces large
SEGMENT_EVENTS = 1 << 22  # compaction starts a new data file after this many events (bounds memory)


@dataclasses.dataclass(frozen=True)
class CompactionPolicy:
    """When an append also merges small segments (size-tiered; never changes a result).

    Every append writes a level-0 segment. Once more than ``max_small_files`` level-0 segments
    exist, the next append merges them (and its own events) into one level-1 segment; once more
    than ``fan_in`` level-L segments exist, it merges those into one level L+1 segment. So a tier
    of N small appends has O(fan_in * log N) live segments, and each event is rewritten O(log N)
    times. Segments of ``small_file_bytes`` or more are left to ``compact``. ``max_small_files=None``
    (or ``Tier.open(..., auto_compact=False)``) turns merging off.
    """

    max_small_files: int | None = 8
    fan_in: int = 4
    small_file_bytes: int = 8 << 20


DEFAULT_POLICY = CompactionPolicy()


@contextlib.contextmanager
def writer_lock(store, timeout: float):
    """Hold the tier's writer lock (``flock`` on ``_lock``; readers never take it), waiting at most
    ``timeout`` seconds; yields the lock file's descriptor (the witness is written through it).

    An object store has no lock (yields None): writers there are optimistic, each commit a
    conditional write that may lose the race (``host.log.CommitConflict``); host/tier.py catches up
    and retries within the same ``timeout``."""
    if getattr(store, "remote", False):
        yield None
        return
    path = store.full(LOCK_FILE)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
    except OSError as e:
        raise TierError(f"tier {store.root}: cannot open the writer lock {LOCK_FILE}: {describe_os_error(e)}") from e
    try:
        deadline = time.monotonic() + max(0.0, float(timeout))
        pause = 0.001
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise TierError(f"tier {store.root}: cannot lock {LOCK_FILE}: {describe_os_error(e)}") from e
            if time.monotonic() >= deadline:
                raise TierError(f"tier {store.root}: another writer has held the lock for more than {timeout:g} s "
                                f"(lock_timeout); is a writer hung? (lock file {path})")
            time.sleep(pause)
            pause = min(pause * 2, 0.05)
        yield fd
    finally:
        os.close(fd)  # closing releases the flock (and a killed writer's lock dies with it)


# ----------------------------------------------------------------------------- data files


SEGMENT_FORMAT = 3  # what the writer writes (host/pages.py); format-2 files are read, and rewritten by compact
# Packs (DESIGN §2): runs of stripes of fewer than PACK_BELOW events share blobs, at most PACK_EVENTS
# events (and a block) a pack, where that makes the segment's blobs (a tag moved into the index counted
# as the byte it was, ``_blob_bytes``) at least PACK_MIN_SAVING smaller
# (each stripe's own blobs cost their block bases, tags and padding: on short histories more than
# their values). A read of a packed stripe reads its pack's blocks, its neighbours' events too: so
# packs of one block, and only where they pay well: the bench workload's packable daily segments
# would save 5.5-7% (and its epochs read 1.1 / 4.3 / 7.3 -> 1.3 / 4.5 / 7.5 MB at a bar of 1/16),
# ML-1M's events cut into histories of 20 events save 12.4% (unpacked under a bar of 1/8 they were
# 1.06x the tuned Parquet file; 24-event histories, unpacked, are 0.996x). Weighing them encodes the segment twice, so
# only a segment with at least PACK_MIN_ROWS stripes that would join a pack tries (a small append's
# few short stripes would save a few bytes for twice its encoding time)
PACK_BELOW = 32
PACK_EVENTS = 128
PACK_MIN_SAVING = 1 / 12
PACK_MIN_ROWS = 256
# Larger packs (DESIGN §2 "Packs", "Larger packs"): after packs of PACK_EVENTS, the writer weighs
# packs of up to PACK_LARGE_EVENTS events of stripes under PACK_LARGE_BELOW, and takes them only
# where they make the segment's blobs another PACK_MIN_SAVING smaller than the best so far. Such a
# pack's stripe tables reach the other histories' values (ML-1M's listening variant cut into
# histories of 8 / 24 / 40 events: 1.089x / 1.083x / 1.188x tuned Parquet -> 0.993x / 0.984x /
# 0.990x; with daily timestamps and half stars, cut to 64: 1.198x -> 0.969x); a read of one of its
# stripes reads its pack's blocks, up to four, so ordinary short histories (which save about 1%)
# keep packs of a block. Measured: docs/results/cpu-2026-12-03i/.
PACK_LARGE_BELOW = 128
PACK_LARGE_EVENTS = 512
PACK_SAMPLE_EVENTS, PACK_SAMPLE_RUNS = 1 << 16, 8  # a large segment's larger packs tried on a sample first


def pack_flags(count: np.ndarray, limit: int | None = None, below: int | None = None) -> np.ndarray:
    """``cont`` of ``encode_segment3`` for stripes of ``count`` events (in segment order): runs of
    stripes under ``below`` (``PACK_BELOW``) events cut greedily into packs of at most ``limit``
    (``PACK_EVENTS``) events (a block of 128, or whole blocks of fewer: a pack one event over would
    pay another block's base, tag and fields for it), or of one stripe where that stripe alone is
    over ``limit``."""
    limit = PACK_EVENTS if limit is None else limit
    count = np.asarray(count, np.int64)
    small = count < (PACK_BELOW if below is None else below)
    # each stripe's pack's events so far, itself included; a stripe that is not small counts as
    # over the limit, so that neither it nor the stripe after it continues a pack
    fill = np.fromiter(itertools.accumulate(np.where(small, count, limit + 1).tolist(),
                                            lambda f, c: c if f + c > limit else f + c), np.int64, len(count))
    cont = np.zeros(len(count), np.int64)
    cont[1:] = small[1:] & (fill[:-1] + count[1:] <= limit)
    return cont


def _segment_of(state: State, user, start, count, values: dict):
    """``(buffers, size, index_crc, entry keys)``: a segment of these stripes, and the keys its data
    file's entry carries besides the common ones (``_format_entry``)."""
    if SEGMENT_FORMAT == 2:  # for readers of releases before format 3 (and the tests of mixed tiers)
        blobs = {c: codec.encode_stripes(values[c], count, state.block_size) for c in state.schema}
        return (*encode_segment(list(state.schema), user, start, count, blobs), _format_entry())
    tags = segment.INDEX_FORM > 1  # (form 1: as releases before it wrote, for the tests of such tiers)
    blobs = _encoded(state, values, count, tags)
    blobs, cont, rows = _packs(state, count, values, blobs, tags)
    sizes = count if cont is None else np.add.reduceat(count, np.flatnonzero(cont == 0))
    blobs, lender = _borrow(list(state.schema), values, blobs, sizes, state.block_size, tags)
    # (not a column that lends or borrows: its blobs are the packs' of both)
    per_row = [c for c in rows if cont is not None and rows[c] and c not in lender and c not in lender.values()]
    blobs.update({c: rows[c] for c in per_row})
    dicts = any((np.asarray(b[3]) & codec.ENC_DICT).any() for b in blobs.values())
    const = any(codec.const_stripes(b[3]).any() for b in blobs.values())
    tables = any((b[5] > 0).any() for b in blobs.values())  # (a stripe table's codes may be DELTA blocks)
    if any(pages.code_tables(b[0], b[3], b[5]).any() for b in blobs.values()):
        tables = 2  # (tables of codes into the segment dictionary: releases before them refuse the entry)
    bare = any(pages.bare_blobs(*b[:4]) for c, b in blobs.items() if c not in lender)  # (a borrower's blobs: its lender's)
    blobs = {c: b[:4] for c, b in blobs.items()}
    # (form 3 where its constants, per row of a pack or per stripe, may make the index smaller:
    # whichever does; form 2 where there are none)
    rows_form = min(segment.INDEX_FORM, segment.ROWS_FORM)
    forms = (rows_form, segment.INDEX_FORM) if (per_row or const) and segment.INDEX_FORM > rows_form else rows_form
    *seg, form = encode_segment3(list(state.schema), user, start, count, blobs, cont, lender, forms)
    return (*seg, _format_entry(dicts, const, tables, bool(lender), bool(per_row), form, bare))


def _packs(state: State, count, values: dict, blobs: dict, tags: bool):
    """``(blobs, cont, rows)``: the segment's blobs, as encoded (``cont`` None) or in packs, the
    steps of packs weighed in turn (``PACK_EVENTS``, then ``PACK_LARGE_EVENTS`` where the tier's
    ``large_packs`` allows them, ``Tier.create``), each taken where
    it makes the blobs ``PACK_MIN_SAVING`` smaller than the best before it. ``rows``: the columns'
    constants per row of the packs taken (``pages.pack_row_constants``)."""
    best, cont, rows = _blob_bytes(blobs), None, {}
    count = np.asarray(count, np.int64)
    for below, limit in ((PACK_BELOW, PACK_EVENTS), (PACK_LARGE_BELOW if state.large_packs else 0, PACK_LARGE_EVENTS)):
        c = pack_flags(count, limit, below)
        # packs where they pay (DELTA blocks, for one, do not span histories); a step that packs
        # the stripes as the one before it did is not weighed again, nor one whose stripes cost
        # under the saving asked of it as they are (packs cannot save more than they take)
        if c.sum() < max(PACK_MIN_ROWS, 1) or (cont is not None and np.array_equal(c, cont)):
            continue
        first = np.flatnonzero((cont if cont is not None else np.zeros(len(count), np.int64)) == 0)
        small = np.logical_and.reduceat(count < below, first)  # the blobs (rows, or packs) of short stripes alone
        if sum(_blob_cost(b, small) for b in blobs.values()) < PACK_MIN_SAVING * best:
            continue
        if limit > PACK_EVENTS and not _sample_pays(state, count, values, cont, tags):
            continue
        per_pack = np.add.reduceat(count, np.flatnonzero(c == 0))
        packed = _encoded(state, values, per_pack, tags)
        # a value per row of a pack (a user's age in a pack of short histories): constants per row
        # where that pays, weighed so too (an unpacked row's constant is in the index as well)
        r = {k: pages.pack_row_constants(values[k], count, c, b) for k, b in packed.items()} if tags else {}
        size = _blob_bytes({k: r.get(k) or b for k, b in packed.items()})
        if size <= (1 - PACK_MIN_SAVING) * best:
            blobs, cont, rows, best = packed, c, r, size
    return blobs, cont, rows


def _encoded(state: State, values: dict, sizes, tags: bool) -> dict:
    """Each column's ``encode_column_parts`` for blobs of ``sizes`` events (stripes, or packs)."""
    return {c: pages.encode_column_parts(values[c], sizes, state.block_size, index_tags=tags) for c in state.schema}


def _sample_pays(state: State, count, values: dict, cont, tags: bool) -> bool:
    """Whether larger packs look worth weighing on the whole segment: on a sample of it
    (``PACK_SAMPLE_RUNS`` runs of consecutive stripes, ``PACK_SAMPLE_EVENTS`` events in all) they
    save at least half the bar against the packing before them (``cont``; None: none). A segment
    under four samples is weighed whole. (Weighing a large segment's larger packs whole cost ML-1M's
    append of 8-event histories 3.2-3.4 -> 4.4-5.1 s where they did not pay.)"""
    total = int(count.sum())
    if total < 4 * PACK_SAMPLE_EVENTS:
        return True
    ends = np.cumsum(count)
    runs = []
    for at in np.linspace(0, total - PACK_SAMPLE_EVENTS // PACK_SAMPLE_RUNS, PACK_SAMPLE_RUNS).astype(np.int64):
        lo = int(np.searchsorted(ends, at, side="right"))
        hi = int(np.searchsorted(ends, at + PACK_SAMPLE_EVENTS // PACK_SAMPLE_RUNS, side="left")) + 1
        runs.append(np.arange(lo, min(hi, len(count))))
    idx = np.unique(np.concatenate(runs))
    n = count[idx]
    pos = np.repeat(ends[idx] - np.cumsum(n), n) + np.arange(int(n.sum()))  # the sample's events
    sizes = {}
    for name, flags in (("before", None if cont is None else pack_flags(n)),
                        ("larger", pack_flags(n, PACK_LARGE_EVENTS, PACK_LARGE_BELOW))):
        per = n if flags is None else np.add.reduceat(n, np.flatnonzero(flags == 0))
        sizes[name] = _blob_bytes(_encoded(state, {k: np.asarray(v)[pos] for k, v in values.items()}, per, tags))
    return sizes["larger"] <= (1 - PACK_MIN_SAVING / 2) * sizes["before"]


def _blob_cost(b, which=None) -> int:
    """A column's encoded bytes (``encode_column_parts``), a tag in the index counted as its byte;
    ``which`` (a mask of its blobs): those blobs' bytes alone, their stripe tables and tags too."""
    if which is not None:
        return int((np.asarray(b[2])[which] + np.asarray(b[5])[which]).sum() + (codec.enc_tags(np.asarray(b[3])[which]) >= 0).sum())
    return b[0].nbytes + int((codec.enc_tags(b[3]) >= 0).sum())


def _borrow(columns: list, values: dict, blobs: dict, sizes: np.ndarray, block_size: int, tags: bool) -> tuple[dict, dict]:
    """``(blobs, lender)``: the columns that are functions of another column of the segment (a
    movie's year of its item id) re-encoded as borrowed codes where that pays (``pages.BORROW_*``,
    DESIGN §1 "Borrowed codes"): such a column's region is its table (``pages.borrowed_table``), its
    blobs the lender's (offsets in the lender's region; ``lender[column]`` names it), a stripe
    constant in the lender constant in it too. A lender without a segment dictionary is given one
    (``dictionary="always"``) where what its borrowers save pays for it. ``sizes``: the events of
    each blob (a pack's, with packs)."""
    lender: dict = {}
    if len(columns) < 2 or not len(sizes) or block_size > pages.AUX_MAX_BLOCK:
        return blobs, lender
    blobs = dict(blobs)
    first = np.cumsum(sizes) - sizes
    n = int(sizes.sum())
    # the largest column first: a key (an item id) is the largest of the columns that follow it
    for src in sorted(columns, key=lambda c: -_blob_cost(blobs[c])):
        if src in lender:
            continue
        v = np.asarray(values[src], np.int64)
        own = blobs[src]
        # (a column whose blobs take nothing, or fewer bytes than the share of the lender's codes it
        # would read, never borrows: filtered before the lender is weighed, let alone re-encoded; a
        # lender's codes take about what its own blobs do)
        least = pages.BORROW_MIN_SHARE * (_blob_cost(own) - own[4])
        cand = [c for c in columns if c != src and c not in lender and c not in lender.values()
                and _blob_cost(blobs[c]) > max(least, 0) and pages.is_function(v, values[c], pages.BORROW_SAMPLE)]
        if not cand:
            continue
        order = np.argsort(v, kind="stable")
        sv = v[order]
        same = sv[1:] == sv[:-1]
        if n - int(same.sum()) > n // 2:  # mostly distinct: no dictionary (``encode_column``)
            continue
        cand = [c for c in cand if not (same & (np.diff(np.asarray(values[c], np.int64)[order]) != 0)).any()]
        if not cand:
            continue
        mine = own if own[4] and not (own[5] > 0).any() else \
            pages.encode_column_parts(v, sizes, block_size, dictionary="always", tables=False, index_tags=tags)
        if not mine[4]:
            continue
        dvals = pages.decode_dictionary(mine[0][: mine[4]], block_size)
        rank = np.argsort(dvals, kind="stable")  # (the dictionary sorted: the distinct values, in order)
        if not np.array_equal(dvals[rank], sv[np.r_[True, ~same]]):
            continue
        codes = np.empty(n, np.int64)
        codes[order] = rank[np.cumsum(np.r_[0, ~same])]  # each value's code, from its group in sorted order
        lent = _blob_cost(mine) - mine[4]  # the lender's codes, what a borrower's reader reads
        enc, cst = np.asarray(mine[3], np.int64), codec.const_stripes(mine[3])
        gain, got = -(_blob_cost(mine) - _blob_cost(own)), {}
        for c in cand:
            mine_c = _blob_cost(blobs[c])
            if mine_c < pages.BORROW_MIN_SHARE * lent:
                continue
            t = pages.borrowed_table(codes, np.asarray(values[c], np.int64), len(dvals), block_size)
            if t is None or t.nbytes > (1 - pages.BORROW_MIN_SAVING) * mine_c:
                continue
            x = np.asarray(values[c], np.int64)[first]  # a stripe constant in the lender: its value
            if cst.any() and (codec.zigzag(x[cst]) >= codec.CONST_MAX).any():
                continue
            got[c] = (t, x)
            gain += mine_c - t.nbytes
        if not got or gain <= 0:
            continue
        blobs[src] = mine
        for c, (table, x) in got.items():  # (a borrowed row's flags: its lender's row's, its blob's)
            e = np.where(cst, codec.const_enc(x), enc & codec.ENC_FLAGS)
            blobs[c] = (table, mine[1], np.where(cst, 0, mine[2]), e, len(table), np.zeros(len(sizes), np.int64))
            lender[c] = src
    return blobs, lender


def _blob_bytes(blobs: dict) -> int:
    """The blob bytes of a segment's columns (``encode_column_parts``), a tag in the index counted as
    the byte it was in its blob: packs are weighed as before tags moved (the index's compression
    makes most of those bytes free either way, and the bar was set on blobs with their tags)."""
    return sum(_blob_cost(b) for b in blobs.values())


def _format_entry(dicts: bool = False, const: bool = False, tables: bool | int = False, borrow: bool = False,
                  rowconst: bool = False, form: int | None = None, bare: bool = False) -> dict:
    """The ``format`` key of a new data file's entry (absent for format 2, as older releases wrote),
    ``"dicts"`` for a segment with dictionaries (their heads' form, ``pages.DICT_FORM``: 2, varints;
    releases before 2026-12-02 wrote 1, two u64), ``"const": 1`` for one with constant stripes and
    ``"tables": 1`` for one with stripe tables (DESIGN §1; their codes may be DELTA blocks), ``2``
    where some hold codes into their column's segment dictionary (``tables=2``),
    ``"borrow": 1`` for one with borrowed codes (a column's blobs another's, DESIGN §1), ``"rowconst": 1``
    for one whose packs have constants per row in some column (DESIGN §2 "Packs"), ``"bare": 1`` for
    one with BARE LEVELS blocks (DESIGN §1, format 3's tags): a release
    that cannot read them rejects the entry (an unknown key), even where a checkpoint's snapshot
    spares it the segment's index; ``"index": 2`` or ``3``, its index's ``form`` (host/segment.py
    ``index_residuals``; None: ``INDEX_FORM``; form 2: blobs of one block with their tags in the index,
    form 3 too, and its constants as value steps; releases before 2026-12-02 wrote form 1 and no key)."""
    if SEGMENT_FORMAT == 2:
        return {}
    form = segment.INDEX_FORM if form is None else form
    return {"format": SEGMENT_FORMAT, **({"dicts": pages.DICT_FORM} if dicts else {}), **({"const": 1} if const else {}),
            **({"tables": int(tables)} if tables else {}), **({"borrow": 1} if borrow else {}),
            **({"rowconst": 1} if rowconst else {}), **({"bare": 1} if bare else {}),
            **({"index": form} if form > 1 else {})}


class _Written:
    """Data files written for one commit: synced together, removed together if the commit fails."""

    def __init__(self, store):
        self.store, self.paths = store, []

    def data_file(self, buffers, size: int, crc: int, events: int, keys: dict) -> dict:
        path = f"{DATA_DIR}/{uuid.uuid4().hex}.gseg"
        self.paths.append(path)
        self.store.write_new(path, buffers)
        return {"path": path, "offset": 0, "size": size, "index_crc": crc, "events": int(events), **keys}

    def sync(self) -> None:
        if self.paths:
            self.store.sync_dir(DATA_DIR)

    def discard(self) -> None:
        for p in self.paths:
            with contextlib.suppress(Exception):
                self.store.delete(p)


def _stripes(users, per_user, start):
    """Stripes of at most ``MAX_STRIPE`` events for runs of ``per_user`` events starting at ``start``."""
    nstr, cnt = codec.block_counts(per_user, MAX_STRIPE)
    j = ranges(np.zeros(len(users), np.int64), nstr)
    return np.repeat(users, nstr), np.repeat(start, nstr) + j * MAX_STRIPE, cnt


COMPACTED_LEVEL = 1 << 20  # the level of compaction's (and upgraded tiers') files: never merged


def _due(state: State, policy: CompactionPolicy | None) -> tuple[int, list[str]]:
    """``(level, keys)``: the lowest level with too many small segments, and those segments (``[]``: none)."""
    if policy is None or policy.max_small_files is None:
        return 0, []
    by_level: dict[int, list[str]] = {}
    for k, e in state.files.items():
        if e["size"] < policy.small_file_bytes and e["level"] < COMPACTED_LEVEL:
            by_level.setdefault(e["level"], []).append(k)
    for level in sorted(by_level):
        if len(by_level[level]) > (policy.max_small_files if level == 0 else max(2, policy.fan_in)):
            return level, by_level[level]
    return 0, []


def append(store, state: State, events: dict[str, np.ndarray], segcache: dict, lock_fd: int,
           policy: CompactionPolicy | None = DEFAULT_POLICY) -> State:
    """Commit ``events`` (validated, host/events.py) on top of ``state``; return the new state."""
    uid = events["user_id"]
    if not len(uid):
        return commit(store, state, "append", lock_fd=lock_fd)[0]
    order = np.argsort(uid, kind="stable")  # stable: table order inside each user
    us = uid[order]
    first = np.flatnonzero(np.concatenate(([True], us[1:] != us[:-1])))
    users = us[first]
    per_user = np.diff(np.append(first, len(us)))
    old = state.lengths.at(users, np.full(len(users), state.version))
    values = {c: events[c][order] for c in state.schema}
    level, merge = _due(state, policy)
    segments = []  # (users, starts, counts, values, level) of each segment this commit writes
    if merge and level == 0:  # the level-0 segments and the new events: one level-1 segment
        segments.append((*_merged(store, state, segcache, merge, users, per_user, old, values), 1))
    else:
        if merge:  # the level-L segments into one of level L + 1; the new events on their own
            z = np.zeros(0, np.int64)
            none = {c: z for c in state.schema}
            segments.append((*_merged(store, state, segcache, merge, z, z, z, none), level + 1))
        segments.append((*_stripes(users, per_user, old), values, 0))
    rows = (users, np.full(len(users), state.version + 1, np.int64), old + per_user)
    written = _Written(store)
    try:
        add, payload, inline = [], [], 0
        for seg_users, seg_start, seg_cnt, seg_values, seg_level in segments:
            buffers, size, crc, keys = _segment_of(state, seg_users, seg_start, seg_cnt, seg_values)
            if inline + size <= INLINE_BYTES:
                add.append({"path": None, "offset": inline, "size": size, "index_crc": crc,
                            "events": int(seg_cnt.sum()), "level": seg_level, **keys})
                payload += buffers
                inline += size
            else:
                add.append(dict(written.data_file(buffers, size, crc, int(seg_cnt.sum()), keys), level=seg_level))
        written.sync()
        return commit(store, state, "append", add=add, remove=merge, rows=rows, payload=payload, lock_fd=lock_fd)[0]
    except BaseException:
        written.discard()
        raise


def _merged(store, state: State, segcache: dict, merge: list, users, per_user, old, values):
    """The stripes of one segment holding the small segments ``merge`` and the new events.

    Per user, the stripes of the merged files that are adjacent in position become one run (a
    large file may hold positions between two small ones, so a user can have several runs); the
    new events extend the run that ends at the user's current length, or start a run there.
    Returns ``(users, starts, counts, values)`` of the output stripes, sorted by (user, start).
    """
    reader = VersionReader(store, state, segcache)
    d = reader.directory()
    keys = list(state.files)
    sel = np.flatnonzero(np.isin(d.seg, [keys.index(k) for k in merge]))  # sorted by (user, start)
    run0 = np.ones(len(sel), bool)
    if len(sel):
        run0[1:] = (d.user_id[sel[1:]] != d.user_id[sel[:-1]]) | (sel[1:] != sel[:-1] + 1)
    starts_at = np.flatnonzero(run0)
    run_user, run_start = d.user_id[sel[run0]], d.start[sel[run0]]
    run_cnt = np.add.reduceat(d.count[sel], starts_at) if len(sel) else np.zeros(0, np.int64)
    old_vals = {c: reader.decode_stripes(c, sel) for c in state.schema}
    # the new events of a user extend the run that ends at the user's current length, if any
    ev_off = np.cumsum(per_user) - per_user  # each user's first event in ``values`` (sorted by user)
    if len(users):
        idx = np.minimum(np.searchsorted(users, run_user), len(users) - 1)
        extends = (users[idx] == run_user) & (run_start + run_cnt == old[idx])
        run_new, run_new_src = np.where(extends, per_user[idx], 0), np.where(extends, ev_off[idx], 0)
    else:  # a merge of older levels: no new events
        idx, extends = np.zeros(len(run_user), np.int64), np.zeros(len(run_user), bool)
        run_new = run_new_src = np.zeros(len(run_user), np.int64)
    attached = np.zeros(len(users), bool)
    attached[idx[extends]] = True
    r_user = np.concatenate((run_user, users[~attached]))
    r_start = np.concatenate((run_start, old[~attached]))
    r_old = np.concatenate((run_cnt, np.zeros(int((~attached).sum()), np.int64)))
    r_new = np.concatenate((run_new, per_user[~attached]))
    r_old_src = np.concatenate((np.cumsum(run_cnt) - run_cnt, np.zeros(int((~attached).sum()), np.int64)))
    r_new_src = np.concatenate((run_new_src, ev_off[~attached]))
    o = np.lexsort((r_start, r_user))
    r_user, r_start, r_old, r_new, r_old_src, r_new_src = (a[o] for a in (r_user, r_start, r_old, r_new, r_old_src, r_new_src))
    r_tot = r_old + r_new
    out_off = np.cumsum(r_tot) - r_tot
    dst_old, src_old = ranges(out_off, r_old), ranges(r_old_src, r_old)
    dst_new, src_new = ranges(out_off + r_old, r_new), ranges(r_new_src, r_new)
    merged = {}
    for c in state.schema:
        out = np.empty(int(r_tot.sum()), np.int64)
        out[dst_old] = old_vals[c][src_old]
        out[dst_new] = values[c][src_new]
        merged[c] = out
    return (*_stripes(r_user, r_tot, r_start), merged)


def older_format(e: dict) -> bool:
    """Whether the data file of entry ``e`` is in a format this release no longer writes (format 2,
    or format 3 with dictionaries of 16-byte heads, ``"dicts": 1``, or an index of form 1, no ``"index"``):
    compaction rewrites it. (This release writes an index of form 2, or of form 3 where a segment
    has constants and that form weighs smaller: neither is older.)"""
    if SEGMENT_FORMAT == 2:
        return False
    return e.get("format", 2) < SEGMENT_FORMAT or e.get("dicts", pages.DICT_FORM) < pages.DICT_FORM \
        or e.get("index", 1) < min(segment.INDEX_FORM, segment.ROWS_FORM)


def compact(store, state: State, segcache: dict, lock_fd: int) -> State:
    """Rewrite every history of ``state`` into as few stripes as possible (same events, same
    positions) in data files of about ``SEGMENT_EVENTS`` events; commit. Returns ``state`` itself
    (nothing written, nothing committed) when that would change nothing."""
    reader = VersionReader(store, state, segcache)
    d = reader.directory()
    S = len(d)
    if not S:
        return state
    first = np.flatnonzero(np.concatenate(([True], d.user_id[1:] != d.user_id[:-1])))
    ends = np.append(first[1:], S)
    totals = np.add.reduceat(d.count, first)
    cum = np.cumsum(totals)
    grp = (cum - totals) // SEGMENT_EVENTS  # cut at user boundaries into files of about SEGMENT_EVENTS events
    stripes_now = np.diff(np.append(first, S))
    files_after = int(grp.max()) + 1
    old_format = any(map(older_format, state.files.values()))
    if not (stripes_now > (totals + MAX_STRIPE - 1) // MAX_STRIPE).any() and len(state.files) <= files_after \
            and not old_format:
        return state
    written = _Written(store)
    try:
        add = []
        for g in np.unique(grp):
            us = np.flatnonzero(grp == g)
            si = np.arange(first[us[0]], ends[us[-1]], dtype=np.int64)
            users, start, cnt = _stripes(d.user_id[first[us]], totals[us], np.zeros(len(us), np.int64))
            values = {c: reader.decode_stripes(c, si) for c in state.schema}
            buffers, size, crc, keys = _segment_of(state, users, start, cnt, values)
            add.append(dict(written.data_file(buffers, size, crc, int(cnt.sum()), keys), level=COMPACTED_LEVEL))
        written.sync()
        return commit(store, state, "compact", add=add, remove=list(state.files), lock_fd=lock_fd)[0]
    except BaseException:
        written.discard()
        raise
