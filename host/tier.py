"""The versioned tier (SPEC §4, §7; docs/DESIGN.md §2-§3): append-only user histories in immutable files.

``Tier`` is the public handle; the work is done by one module per job:

- host/store.py: the tier's files (create once, read by ranges, bounded open files, OS errors said plainly);
- host/objstore.py: the same on object stores (S3, GCS, HDFS, any pyarrow filesystem): conditional-write
  commits, concurrent coalesced ranged GETs with retries, a page cache, request counters;
- host/log.py: the metadata: a commit record per version, checkpoints, the witness, a version's state;
- host/lengths.py: the length history (``length_v(u)``), kept in memory across commits;
- host/events.py: reading and validating event tables;
- host/reader.py: reading one version (directory of live stripes, verified blocks, histories);
- host/writer.py: writing new versions (append, compact, merging small segments) and the writers' lock;
- host/maintenance.py: vacuum (retention), repair of lost metadata, upgrading format-1 tiers.

Readers never lock and never see a half-written version; writers serialize on a lock, waiting at
most ``lock_timeout`` seconds (on an object store, where there is no lock, a writer that loses the
race for a version number catches up and rebuilds its commit on top of the winner's, for at most
``lock_timeout`` seconds). A version number is never used twice, whatever file is lost.

Example (a temporary directory; histories keep table order per user):

>>> import tempfile, pyarrow as pa
>>> d = tempfile.mkdtemp()
>>> t = Tier.create(d + "/t", {"ts": "int64", "item_id": "int32"})
>>> t.append(pa.table({"user_id": [7, 3, 7], "ts": [1, 2, 3], "item_id": [10, 11, 12]}))
1
>>> t.lengths([7, 3, 99]).tolist()
[2, 1, 0]
>>> t.read_history(7)["item_id"].tolist()
[10, 12]
>>> t.compact()  # every history is in one stripe of one file already: nothing to do, no new version
1
>>> t.append(pa.table({"user_id": [7], "ts": [4], "item_id": [13]}))
2
>>> t.compact()  # user 7's history is in two stripes: rewritten into one, committed as version 3
3
>>> [(r["version"], r["operation"], r["events"], r["total_events"]) for r in t.versions()]
[(0, 'create', 0, 0), (1, 'append', 3, 3), (2, 'append', 1, 4), (3, 'compact', 0, 4)]
>>> t.user_lengths(7)
[(1, 2), (2, 3)]
"""

from __future__ import annotations

import os
import random
import time

import numpy as np
import pyarrow as pa

from gpumat.core.errors import CorruptionError, SchemaError, TierError
from gpumat.host import codec, log, maintenance
from gpumat.host.events import read_events
from gpumat.host.objstore import resolve_store
from gpumat.host import reader
from gpumat.host.reader import Directory, VersionReader
from gpumat.host.schema import DTYPES, check_schema, int_column
from gpumat.host.store import LocalStore
from gpumat.host import writer
from gpumat.host.writer import DEFAULT_POLICY, CompactionPolicy, writer_lock

__all__ = ["BLOCK_SIZE", "CompactionPolicy", "Directory", "Tier"]

BLOCK_SIZE = 128  # the default events per encoded block
LOCK_TIMEOUT = 600.0


def _is_int(x) -> bool:
    return (isinstance(x, int) and not isinstance(x, bool)) or isinstance(x, np.integer)


def tier_root(uri) -> str:
    """The absolute local directory of a local tier URI (a path, a ``PathLike`` or ``file://...``);
    for the commands that work on local tiers only (``gpumat upgrade``)."""
    if isinstance(uri, os.PathLike):
        uri = os.fspath(uri)
    if not isinstance(uri, str) or not uri:
        raise TierError(f"tier URI must be a local path, got {uri!r}")
    if uri.startswith("file://"):
        uri = uri[len("file://") :]
    if "://" in uri:
        raise TierError(f"tier URI {uri!r}: this command works on local tiers only (a path or file://)")
    return os.path.abspath(uri)


class Tier:
    """A handle on the tier at a URI, at one version (SPEC §4).

    A handle opened without ``version`` follows the latest version (``refresh``, and every write moves
    it to the version it commits); one opened with ``version=`` is pinned and read-only.
    """

    def __init__(self, store: LocalStore, state: log.State, pinned: bool, lock_timeout: float = LOCK_TIMEOUT,
                 policy: CompactionPolicy | None = DEFAULT_POLICY):
        self._store = store
        self._pinned = pinned
        self._lock_timeout = float(lock_timeout)
        self._policy = policy
        self._segcache: dict = {}  # file key -> open Segment, shared by the readers of every version this handle reads
        self._set_state(state)

    # ----------------------------------------------------------------------------- construction

    @classmethod
    def create(cls, uri, schema, block_size: int = BLOCK_SIZE, lock_timeout: float = LOCK_TIMEOUT,
               filesystem=None, large_packs: bool = True) -> "Tier":
        """Create an empty tier (version 0) at ``uri``; ``TierError`` if one is already there, or if ``uri``
        is a file or a non-empty directory that holds no tier (a missing or empty directory is fine).

        ``uri``: a local path, ``file://``, or any URI ``pyarrow.fs.FileSystem.from_uri`` resolves
        (``s3://bucket/prefix``, ``gs://``, ``hdfs://``); with ``filesystem`` (a
        ``pyarrow.fs.FileSystem``) a path inside it. See docs/OBJECT_STORES.md.

        ``large_packs`` (kept by the tier, for every writer: appends and compactions in any process):
        whether short histories may be packed up to 512 events where that makes a segment's blobs
        another 1/12 smaller (docs/DESIGN.md §2 "Larger packs"). A read of one such history reads its
        pack's blocks (up to four): a job that reads short histories shuffled, not by packs, reads
        and stages less with ``large_packs=False`` (packs of one block only), at some bytes stored."""
        schema = check_schema(schema)
        if not isinstance(large_packs, bool):
            raise SchemaError(f"large_packs must be True or False, got {large_packs!r}")
        if not (_is_int(block_size) and 0 < block_size <= 1 << 16 and not block_size & (block_size - 1)):
            raise SchemaError(f"block_size must be a power of two in [1, 65536], got {block_size!r}")
        store = resolve_store(uri, filesystem)
        root = store.root
        if store.remote:
            store.check_access()
        elif os.path.exists(root) and not os.path.isdir(root):
            raise TierError(f"cannot create a tier at {root}: a file is there")
        if maintenance.has_tier(store):
            raise TierError(f"a tier already exists at {root}")
        foreign = maintenance.foreign_entries(store)
        if foreign:
            shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
            raise TierError(f"cannot create a tier at {root}: the directory is not empty and holds no gpumat tier ({shown})")
        if not store.remote:
            try:
                os.makedirs(root, exist_ok=True)
            except OSError as e:
                raise store.write_error(e, "", "create directory") from e
        store.makedirs(*log.DIRS)
        with writer_lock(store, lock_timeout) as fd:
            if log.latest_version(store) is not None:
                raise TierError(f"a tier already exists at {root}")
            try:
                state, _ = log.commit(store, log.State.genesis(schema, int(block_size), large_packs), "create", lock_fd=fd)
            except log.CommitConflict:
                raise TierError(f"a tier already exists at {root} (created meanwhile by another writer)") from None
        return cls(store, state, pinned=False, lock_timeout=lock_timeout)

    @staticmethod
    def exists(uri, filesystem=None) -> bool:
        """Whether a tier is at ``uri``."""
        return maintenance.has_tier(resolve_store(uri, filesystem))

    @classmethod
    def open(cls, uri, version=None, lock_timeout: float = LOCK_TIMEOUT, auto_compact=True, filesystem=None) -> "Tier":
        """Open the latest version, or pin ``version`` (read-only).

        ``TierError`` if there is no tier, no such version, or the version expired (vacuum) or was
        rolled back (repair); ``CorruptionError`` if metadata it needs is lost or damaged.
        ``lock_timeout``: how long a write through this handle waits for the writer lock.
        ``auto_compact``: True (the default ``CompactionPolicy``), a ``CompactionPolicy``, or False:
        whether appends through this handle also merge small segments (never changes a result).
        ``filesystem``: a ``pyarrow.fs.FileSystem`` that ``uri`` is a path in (default: resolved from
        ``uri``, see ``create``).
        """
        store = resolve_store(uri, filesystem)
        latest = log.latest_version(store)
        if latest is None:
            maintenance.check_old_format(store)
            raise TierError(f"no tier at {store.root}")
        policy = DEFAULT_POLICY if auto_compact is True else (auto_compact or None)
        if policy is not None and not isinstance(policy, CompactionPolicy):
            raise SchemaError(f"auto_compact must be True, False or a CompactionPolicy, got {auto_compact!r}")
        if version is None:
            return cls(store, log.load_state(store, latest), False, lock_timeout, policy)
        if not _is_int(version):
            raise TierError(f"version must be an integer, got {version!r}")
        version = int(version)
        if version < 0 or version > latest:
            raise TierError(f"tier {store.root} has no version {version} (latest is {latest})")
        return cls(store, maintenance.load_pinned(store, version), True, lock_timeout, policy)

    # ----------------------------------------------------------------------------- properties

    @property
    def version(self) -> int:
        """The version this handle reads."""
        return self._reader.version

    @property
    def schema(self) -> dict[str, str]:
        """Column name -> dtype (``ts`` first)."""
        return dict(self._reader.schema)

    @property
    def block_size(self) -> int:
        """Events per encoded block (docs/DESIGN.md §1)."""
        return self._reader.block_size

    @property
    def large_packs(self) -> bool:
        """Whether its writers may pack short histories up to 512 events (``create``)."""
        return self._reader.state.large_packs

    @property
    def uri(self) -> str:
        return self._store.root

    @property
    def pinned(self) -> bool:
        return self._pinned

    def io_stats(self) -> dict:
        """What this handle has asked of its storage so far (cumulative; subtract two snapshots for a
        batch or an epoch): ``requests`` (by kind: ``get``, ``put``, ``head``, ``list``, ``delete``,
        ``copy``; ``retries`` of them), ``bytes_read``, ``bytes_written``, ``cache_hits`` /
        ``cache_hit_bytes`` (object stores' page cache), ``request_s``, and ``blocks_read`` /
        ``block_runs`` (blocks the planner asked for, in runs of consecutive blocks). On a local
        tier a request is one read, write, stat or listing call."""
        return self._store.stats()

    @property
    def store(self):
        """The storage under this handle (host/store.py ``LocalStore`` or host/objstore.py
        ``ObjectStore``): for tools and benchmarks, e.g. ``tier.store.inject_latency_s``."""
        return self._store

    def __repr__(self) -> str:
        return f"Tier({self.uri!r}, version={self.version}{', pinned' if self._pinned else ''})"

    def refresh(self) -> int:
        """Move an unpinned handle to the latest committed version; returns the handle's version."""
        if not self._pinned:
            self._catch_up()
        return self.version

    def _catch_up(self) -> None:
        latest = log.latest_version(self._store)
        if latest is not None and latest > self.version:
            self._set_state(log.advance(self._store, self._reader.state, latest))

    def _set_state(self, state: log.State) -> None:
        # one attribute swap: a reader in use by another thread keeps reading its own version
        self._reader = VersionReader(self._store, state, self._segcache)
        # data files that left the version (merged by an append or a compaction) leave the handle's
        # cache with their indexes, regions and dictionaries: a handle that follows a tier through
        # many versions holds the files of the current one only (an older reader still in use keeps
        # its own references)
        live = set(state.files)
        for k in [k for k in self._segcache if k not in live]:
            self._segcache.pop(k, None)

    # ----------------------------------------------------------------------------- lengths

    def _check_version(self, version, what: str) -> int:
        if version is None:
            return self.version
        if not _is_int(version):
            raise TierError(f"{what}: version must be an integer, got {version!r}")
        version = int(version)
        if version < 0 or version > self.version:
            raise TierError(f"{what}: no version {version} in this handle of {self.uri} (version {self.version})")
        return version

    def lengths(self, user_ids, version=None) -> np.ndarray:
        """``length_version(u)`` for each user id (0 for unknown users), int64, same shape as ``user_ids``.

        ``version`` defaults to the handle's; beyond it or negative: ``TierError``.
        """
        v = self._check_version(version, "lengths")
        if isinstance(user_ids, (pa.Array, pa.ChunkedArray)):
            users, shape = int_column(user_ids, "int64", "user_ids"), (len(user_ids),)
        else:
            arr = np.asarray(user_ids)
            shape = arr.shape
            users = np.zeros(0, np.int64) if arr.size == 0 else int_column(arr.reshape(-1), "int64", "user_ids")
        return self._reader.length_history().at(users, np.full(len(users), v, np.int64)).reshape(shape)

    def length_at(self, user_ids, versions) -> np.ndarray:
        """Vectorized ``length_{versions[i]}(user_ids[i])`` (each pair its own version), int64 ``[N]``.

        Every version must lie in ``[0, self.version]`` (``TierError`` otherwise): callers validating
        pointers check ``version <= tier.version`` first.
        """
        r = self._reader
        users = np.asarray(user_ids, dtype=np.int64).reshape(-1)
        vers = np.broadcast_to(np.asarray(versions, dtype=np.int64), users.shape)
        if vers.size and (vers.min() < 0 or vers.max() > r.version):
            raise TierError(f"length_at: versions must lie in [0, {r.version}]")
        return r.length_history().at(users, vers)

    def user_lengths(self, user_id) -> list[tuple[int, int]]:
        """``(version, length)`` at every version up to the handle's where ``user_id``'s length changed,
        oldest first (``[]`` for a user without events). ``SchemaError`` for a non-int64 user id."""
        if not _is_int(user_id) or not -(2**63) <= int(user_id) < 2**63:
            raise SchemaError(f"user_lengths: user_id must be an int64 integer, got {user_id!r}")
        return self._reader.length_history().of_user(int(user_id))

    # ----------------------------------------------------------------------------- reads (docs/DESIGN.md §3)

    def directory(self) -> Directory:
        """The live stripes of the handle's version, sorted by ``(user_id, start)`` (cached per version).

        Verified against the length history: each user's stripes tile ``[0, length)`` exactly.
        """
        return self._reader.directory()

    def pack_groups(self) -> tuple[np.ndarray, np.ndarray]:
        """``(users, group)``: the users whose newest events are in a pack (short histories sharing
        blobs, docs/DESIGN.md §2), ascending, and their pack (``Directory.blob``). A batch stages a
        block of a pack once for all its users in the batch, so an epoch that keeps a pack's users
        together (``Materializer.iterate(affinity="pack")``, ``host.stream.cluster_by_user``) reads
        and stages each pack about once instead of once a user (a user whose events lie in several
        packs, appends since the last compaction, is grouped by its newest only)."""
        d = self.directory()
        if not len(d):
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        last = np.r_[np.flatnonzero(d.user_id[1:] != d.user_id[:-1]), len(d) - 1]  # each user's newest stripe
        packed = last[d.bcount[last] != d.count[last]]
        return d.user_id[packed].copy(), d.blob[packed].copy()

    def read_blocks(self, column: str, stripe_idx, block_lo, block_hi):
        """Blocks ``[block_lo[i], block_hi[i])`` of the blob of ``column`` of directory stripes ``stripe_idx[i]``
        (a stripe's blocks: ``Directory.nblocks`` of them; in a pack, its blobs' blocks from
        ``Directory.b0``, the first holding its first event at position ``skip % block_size``).

        Returns ``(hdr, words, nbytes)``: ``hdr`` int64 ``[K, 3]`` (base, slope, meta) in request order
        with ``word_off`` rewritten to index ``words`` (int64, every block's packed words back to back,
        plus one zero word); ``nbytes``: bytes read from storage (headers + packed words). Every block's
        hash is verified (``CorruptionError``). Vectorized: one pass per segment, none per block.
        """
        return self._reader.read_blocks(column, stripe_idx, block_lo, block_hi)

    def read_blocks_many(self, columns, stripe_idx, block_lo, block_hi) -> dict:
        """``{column: read_blocks(column, stripe_idx, block_lo, block_hi)}`` for several columns at once:
        the same results, read together (on an object store, two waves of concurrent requests for
        all the columns instead of two per column)."""
        return self._reader.read_blocks_many(columns, stripe_idx, block_lo, block_hi)

    def decode_stripes(self, column: str, stripe_idx) -> np.ndarray:
        """Every value of ``column`` of the directory stripes ``stripe_idx``, concatenated in that order
        (int64): whole blobs read (verified) and decoded on the host."""
        return self._reader.decode_stripes(column, stripe_idx)

    def read_history(self, user_id, version=None, columns=None) -> dict[str, np.ndarray]:
        """The full history of one user at ``version`` (default: the handle's), decoded: ``{col: array}``
        in the schema dtypes, oldest first. For tests, tools and naive references."""
        r = self._reader
        v = self._check_version(version, "read_history")
        cols = list(r.schema) if columns is None else list(columns)
        unknown = [c for c in cols if c not in r.schema]
        if unknown:
            raise SchemaError(f"unknown column(s) {unknown}; schema has {list(r.schema)}")
        u = int(user_id)
        n = int(r.length_history().at(np.array([u], np.int64), np.array([v], np.int64))[0])
        si = r.directory().user_stripes(u)
        # a later version holds every earlier one as a prefix, so an old version is a prefix of the handle's
        return {c: r.decode_stripes(c, si)[:n].astype(DTYPES[r.schema[c]]) for c in cols}

    # ----------------------------------------------------------------------------- writes

    def _begin_write(self, op: str) -> None:
        if self._pinned:
            raise TierError(f"{op}: the handle of {self.uri} is pinned to version {self.version} (read-only)")

    def _committed(self, state: log.State) -> None:
        """Adopt a committed state; checkpoint it when enough versions have passed (best effort:
        the version is committed either way, and a later commit checkpoints instead)."""
        self._set_state(state)
        if state.version - state.checkpoint_version >= log.CHECKPOINT_EVERY:
            try:
                self._set_state(log.write_checkpoint(self._store, state, self._reader.snapshot()))
            except TierError:
                pass

    def _writable(self) -> None:
        """Under the lock: move to the latest version and check that its metadata is still there (a
        lost newest record must be repaired, not written over)."""
        self._catch_up()
        v = self.version
        if not (self._store.exists(log.record_name(v)) or self._store.exists(log.checkpoint_name(v))):
            raise CorruptionError(f"tier {self.uri}: the metadata of version {v} is missing; "
                                  f"run `gpumat repair {self.uri}`")

    def append(self, events) -> int:
        """Append each user's events in table order; commit and return the new version.

        ``events``: a pyarrow Table or Parquet path with ``user_id`` and every schema column (SPEC §3).
        A handle behind the latest version appends on top of it and moves there.
        """
        self._begin_write("append")
        ev = read_events(events, self._reader.schema)

        def attempt(fd):
            self._committed(writer.append(self._store, self._reader.state, ev, self._segcache, fd, self._policy))

        self._write(attempt)
        return self.version

    def _write(self, attempt) -> None:
        """Run ``attempt(lock_fd)`` under the writer lock, on the latest version. On an object store (no
        lock) a commit can lose the race for its number (``CommitConflict``): catch up and run it again,
        rebuilt on the new state, until ``lock_timeout`` has passed."""
        deadline = time.monotonic() + self._lock_timeout
        pause = 0.005
        with writer_lock(self._store, self._lock_timeout) as fd:
            while True:
                self._writable()
                try:
                    return attempt(fd)
                except log.CommitConflict as e:
                    if time.monotonic() >= deadline:
                        raise TierError(f"tier {self.uri}: other writers kept committing first for more than "
                                        f"{self._lock_timeout:g} s (lock_timeout); nothing was committed") from e
                time.sleep(random.uniform(0, pause))
                pause = min(2 * pause, 0.5)

    def compact(self) -> int:
        """Rewrite every history into as few stripes and files as possible (same events, same positions);
        commit and return the new version. Old files stay for handles of older versions until vacuum.

        With nothing to compact, nothing is written or committed and the latest version is returned:
        callers tell by comparing it with the version before the call.
        """
        self._begin_write("compact")

        def attempt(fd):
            state = writer.compact(self._store, self._reader.state, self._segcache, fd)
            if state is not self._reader.state:
                self._committed(state)

        self._write(attempt)
        return self.version

    def vacuum(self, keep_last: int | None = None, min_age_s: float = 3600.0) -> dict:
        """Delete what no retained version needs (SPEC §7): files superseded by compaction, debris of
        failed or killed writers and, with ``keep_last=N``, the metadata of versions older than the
        newest N (they expire: ``open(version=)`` says so; pointers into them stay valid). Nothing a
        version committed in the last ``min_age_s`` seconds needs is deleted.

        Returns ``{"files_removed", "bytes_freed", "expired_before", "versions_retained"}``.
        """
        self._begin_write("vacuum")
        out = maintenance.vacuum(self._store, keep_last, min_age_s, self._lock_timeout)
        self._catch_up()
        return out

    @staticmethod
    def repair(uri, roll_back: bool = False, lock_timeout: float = LOCK_TIMEOUT, filesystem=None) -> dict:
        """Check a tier's metadata and, with ``roll_back=True``, recover from lost or damaged newest
        versions by committing a new version equal to the newest intact one (the lost numbers are
        never reused; pointers into them fail). Without ``roll_back`` nothing changes: the returned
        report says what is wrong and what rolling back would do. See ``host.maintenance.repair``.
        """
        return maintenance.repair(resolve_store(uri, filesystem), roll_back, lock_timeout)

    # ----------------------------------------------------------------------------- inspection

    def stats(self) -> dict:
        """Storage figures of the handle's version (for ``gpumat inspect``)."""
        r = self._reader
        d = r.directory()
        events = int(d.count.sum())
        per_col = {}
        own = d.owner  # the stripes of a pack share its blobs: each counted once
        for c in r.schema:
            enc = r.blobs(c)[2]  # (per stripe: a pack's rows each with its blob's, or their own constant)
            dict_bytes = r.dict_bytes(c)
            lent = r.borrowed(c)[own]  # (borrowed codes: counted by the column they are)
            nbytes = int(r.blob_bytes(c)[own][~lent].sum()) + dict_bytes
            off = r.blobs(c)[0][own][lent]
            lenders = [x for x in r.schema if x != c and lent.any()
                       and (~r.borrowed(x)[own][lent] & (r.blobs(x)[0][own][lent] == off)).any()]
            _, size, keep = r._dsarr[c]  # (``dict_bytes`` read the dictionaries' sizes)
            tab = size[keep != 1]  # stripe tables: read by every read that needs them (those not kept)
            per_col[c] = {
                "dtype": r.schema[c],
                "bytes": nbytes,  # blobs and segment dictionaries
                "bytes_per_event": nbytes / events if events else 0.0,
                "dictionary_bytes": dict_bytes,
                # (DESIGN §1 "Stripe tables"; a short window of a long history reads the part it needs of
                # one of TABLE_PART_BYTES or more, where it holds three pages)
                "stripe_tables": {"count": len(tab), "bytes": int(tab.sum()), "largest_bytes": int(tab.max(initial=0)),
                                  "read_in_part": int((tab[keep[keep != 1] == 0] >= reader.TABLE_PART_BYTES).sum())},
                "encodings": codec.enc_counts(enc),
                "borrowed_stripes": int(lent.sum()),  # stripes whose blobs are another column's codes
                "borrowed_from": lenders,  # those columns (DESIGN §1 "Borrowed codes")
            }
        files = r.state.files.values()
        return {
            "uri": self.uri,
            "version": r.version,
            "op": r.state.op,
            "schema": dict(r.schema),
            "block_size": r.block_size,
            "large_packs": r.state.large_packs,
            "segments": len(r.state.files),
            "segment_formats": {str(f): int(n) for f, n in zip(*np.unique(r.seg_formats(), return_counts=True))},
            "inline_segments": sum(1 for e in files if e["path"].startswith(log.LOG_DIR + "/")),
            "stripes": len(d),
            "blocks": int(d.bblocks[own].sum()),
            "packed_stripes": int((d.bcount != d.count).sum()),  # stripes in packs of short histories
            "users": len(r.length_history().live_users(r.version)),
            "events": events,
            "stored_bytes": int(sum(e["size"] for e in files)),
            "metadata_bytes": maintenance.metadata_bytes(self._store, r.state),
            "columns": per_col,
        }

    def versions(self, newest: int | None = None) -> list[dict]:
        """One dict per retained version up to the handle's, oldest first (``newest=N``: only the
        newest N): ``{"version", "operation" ("create" | "append" | "compact" | "repair"), "events"
        (added by that version), "total_events", "committed_at" (unix time)}``.

        Operations and times come from the commit records (each read and verified); expired versions
        and versions lost to a repair are not listed. Event counts come from the length history.
        """
        r = self._reader
        added = r.length_history().events_per_version(r.version)
        total = np.cumsum(added)
        first = max(log.read_expired(self._store), 0)
        logged = set(log.logged_versions(self._store))
        have = sorted((logged | set(log.checkpoint_versions(self._store))) & set(range(first, r.version + 1)))
        have = [v for v in have if not r.state.lost_at(v)]
        if newest is not None:
            have = have[-int(newest):] if newest > 0 else []
        self._store.prefetch([log.record_name(v) for v in have if v in logged])
        out = []
        for v in have:  # a version without a record (an upgraded tier's first) is described by its checkpoint
            h = log.read_record(self._store, v)[0] if v in logged else log.read_checkpoint_header(self._store, v)
            out.append({"version": v, "operation": h["op"], "events": int(added[v]), "total_events": int(total[v]),
                        "committed_at": float(h["created_unix"])})
        return out
