"""The versioned tier (SPEC §4, docs/DESIGN.md §2-§3): append-only user histories in immutable files.

``Tier`` is the public handle; the work is done by one module per job:

- host/manifest.py: the directory layout, one checksummed manifest per version, atomic commits;
- host/lengths.py: the length history (``length_v(u)``) and its files;
- host/events.py: reading and validating event tables;
- host/reader.py: reading one version (directory of live stripes, verified blocks, histories);
- host/writer.py: writing a new version's data files (append, compact) and the writers' lock.

A tier directory holds immutable segment files (``_segments/*.gseg``, the encoded events), immutable
length-history files (``_lengths/*.arrow``) and one manifest per committed version
(``_manifests/<version:020d>.json``) that lists the live files with their sizes and checksums. A
version is committed by atomically linking its manifest into place, so readers never lock and never
see a half-written version; writers serialize on ``fcntl.flock(_lock)``.

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
>>> t.compact()  # every history is in one stripe already: nothing to do, no new version
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

import numpy as np
import pyarrow as pa

from gpumat.core.errors import SchemaError, TierError
from gpumat.host import codec
from gpumat.host.events import read_events
from gpumat.host.manifest import (
    SUBDIRS,
    commit_manifest,
    foreign_entries,
    is_int,
    list_versions,
    new_manifest,
    read_manifest,
    tier_root,
    valid_block_size,
)
from gpumat.host.reader import Directory, VersionReader
from gpumat.host.schema import DTYPES, check_schema, int_column
from gpumat.host.writer import append_files, compact_files, compactable, writer_lock

__all__ = ["BLOCK_SIZE", "Directory", "Tier"]

BLOCK_SIZE = 128  # the default events per encoded block


class Tier:
    """A handle on the tier at a URI, at one version (SPEC §4).

    A handle opened without ``version`` follows the latest version (``refresh``, and every write moves
    it to the version it commits); one opened with ``version=`` is pinned and read-only.
    """

    def __init__(self, root: str, manifest: dict, pinned: bool):
        self._root = root
        self._pinned = pinned
        self._segcache: dict = {}  # path -> open Segment, shared by the readers of every version this handle reads
        self._set_manifest(manifest)

    # ----------------------------------------------------------------------------- construction

    @classmethod
    def create(cls, uri, schema, block_size: int = BLOCK_SIZE) -> "Tier":
        """Create an empty tier (version 0) at ``uri``; ``TierError`` if one is already there, or if ``uri``
        is a file or a non-empty directory that holds no tier (a missing or empty directory is fine)."""
        schema = check_schema(schema)
        if not valid_block_size(block_size):
            raise SchemaError(f"block_size must be a power of two in [1, 65536], got {block_size!r}")
        root = tier_root(uri)
        if os.path.exists(root) and not os.path.isdir(root):
            raise TierError(f"cannot create a tier at {root}: a file is there")
        if list_versions(root):
            raise TierError(f"a tier already exists at {root}")
        try:
            foreign = foreign_entries(root)
        except OSError as e:
            raise TierError(f"cannot create a tier at {root}: {e}") from e
        if foreign:
            shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
            raise TierError(f"cannot create a tier at {root}: the directory is not empty and holds no gpumat tier ({shown})")
        try:
            for d in ("", *SUBDIRS):
                os.makedirs(os.path.join(root, d), exist_ok=True)
        except OSError as e:
            raise TierError(f"cannot create a tier at {root}: {e}") from e
        m = new_manifest(None, "create", schema, block_size, [], [])
        with writer_lock(root):
            if list_versions(root):
                raise TierError(f"a tier already exists at {root}")
            commit_manifest(root, m)
        return cls(root, m, pinned=False)

    @staticmethod
    def exists(uri) -> bool:
        """Whether a tier (at least one committed manifest) is at ``uri``."""
        return bool(list_versions(tier_root(uri)))

    @classmethod
    def open(cls, uri, version=None) -> "Tier":
        """Open the latest version, or pin ``version`` (read-only). ``TierError`` if there is no tier or no such version."""
        root = tier_root(uri)
        versions = list_versions(root)
        if not versions:
            raise TierError(f"no tier at {root}")
        latest = versions[-1]
        if version is not None:
            if not is_int(version) and not isinstance(version, np.integer):
                raise TierError(f"version must be an integer, got {version!r}")
            version = int(version)
            if version < 0 or version > latest:
                raise TierError(f"tier {root} has no version {version} (latest is {latest})")
            return cls(root, read_manifest(root, version), pinned=True)
        return cls(root, read_manifest(root, latest), pinned=False)

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
    def uri(self) -> str:
        return self._root

    @property
    def pinned(self) -> bool:
        return self._pinned

    @property
    def _manifest(self) -> dict:
        return self._reader.manifest

    def __repr__(self) -> str:
        return f"Tier({self._root!r}, version={self.version}{', pinned' if self._pinned else ''})"

    def refresh(self) -> int:
        """Move an unpinned handle to the latest committed version; returns the handle's version."""
        if not self._pinned:
            versions = list_versions(self._root)
            if versions and versions[-1] > self.version:
                self._set_manifest(read_manifest(self._root, versions[-1]))
        return self.version

    def _set_manifest(self, m: dict) -> None:
        # one attribute swap: a reader in use by another thread keeps reading its own version
        self._reader = VersionReader(self._root, m, self._segcache)

    # ----------------------------------------------------------------------------- lengths

    def _check_version(self, version, what: str) -> int:
        if version is None:
            return self.version
        if not (is_int(version) or isinstance(version, np.integer)):
            raise TierError(f"{what}: version must be an integer, got {version!r}")
        version = int(version)
        if version < 0 or version > self.version:
            raise TierError(f"{what}: no version {version} in this handle of {self._root} (version {self.version})")
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
        if not (is_int(user_id) or isinstance(user_id, np.integer)) or not -(2**63) <= int(user_id) < 2**63:
            raise SchemaError(f"user_lengths: user_id must be an int64 integer, got {user_id!r}")
        return self._reader.length_history().of_user(int(user_id))

    # ----------------------------------------------------------------------------- reads (docs/DESIGN.md §3)

    def directory(self) -> Directory:
        """The live stripes of the handle's version, sorted by ``(user_id, start)`` (cached per version).

        Verified against the length history: each user's stripes tile ``[0, length)`` exactly.
        """
        return self._reader.directory()

    def read_blocks(self, column: str, stripe_idx, block_lo, block_hi):
        """Blocks ``[block_lo[i], block_hi[i])`` of the blob of ``column`` of directory stripes ``stripe_idx[i]``.

        Returns ``(hdr, words, nbytes)``: ``hdr`` int64 ``[K, 3]`` (base, slope, meta) in request order
        with ``word_off`` rewritten to index ``words`` (int64, every block's packed words back to back,
        plus one zero word); ``nbytes``: bytes read from storage (headers + packed words). Every block's
        hash is verified (``CorruptionError``). Vectorized: one pass per segment, none per block.
        """
        return self._reader.read_blocks(column, stripe_idx, block_lo, block_hi)

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
            raise TierError(f"{op}: the handle of {self._root} is pinned to version {self.version} (read-only)")

    def _catch_up(self) -> None:
        """Under the lock: move the handle to the latest version, so a write lands on top of it."""
        versions = list_versions(self._root)
        if versions and versions[-1] != self.version:
            self._set_manifest(read_manifest(self._root, versions[-1]))

    def _commit(self, op: str, segments: list, lengths: list) -> None:
        r = self._reader
        m = new_manifest(r.manifest, op, r.schema, r.block_size, segments, lengths)
        commit_manifest(self._root, m)
        self._set_manifest(m)

    def append(self, events) -> int:
        """Append each user's events in table order; commit and return the new version.

        ``events``: a pyarrow Table or Parquet path with ``user_id`` and every schema column (SPEC §3).
        A handle behind the latest version appends on top of it and moves there.
        """
        self._begin_write("append")
        ev = read_events(events, self._reader.schema)
        with writer_lock(self._root):
            self._catch_up()
            self._commit("append", *append_files(self._reader, ev))
        return self.version

    def compact(self) -> int:
        """Rewrite every history into as few stripes as possible (same events, same positions); commit and
        return the new version. Old segment files stay for handles pinned to older versions.

        With nothing to compact (the tier is empty, or no history is in more stripes than compaction
        would write), nothing is written or committed and the latest version is returned: callers tell
        by comparing it with the version before the call.
        """
        self._begin_write("compact")
        with writer_lock(self._root):
            self._catch_up()
            if compactable(self._reader):
                self._commit("compact", *compact_files(self._reader))
        return self.version

    # ----------------------------------------------------------------------------- inspection

    def stats(self) -> dict:
        """Storage figures of the handle's version (for ``gpumat inspect``)."""
        r = self._reader
        d = r.directory()
        events = int(d.count.sum())
        per_col = {}
        for c in r.schema:
            _, nw, enc = r.blobs(c)
            nbytes = int(nw.sum()) * 8
            per_col[c] = {
                "dtype": r.schema[c],
                "bytes": nbytes,
                "bytes_per_event": nbytes / events if events else 0.0,
                "encodings": {codec.ENC_NAMES[k]: int((enc == k).sum()) for k in codec.ENC_NAMES},
            }
        m = r.manifest
        return {
            "uri": self._root,
            "version": r.version,
            "op": m["op"],
            "schema": dict(r.schema),
            "block_size": r.block_size,
            "segments": len(m["segments"]),
            "stripes": len(d),
            "blocks": int(d.nblocks.sum()),
            "users": len(r.length_history().live_users(r.version)),
            "events": events,
            "stored_bytes": int(sum(s["size"] for s in m["segments"])),
            "length_bytes": int(sum(s["size"] for s in m["lengths"])),
            "columns": per_col,
        }

    def versions(self) -> list[dict]:
        """One dict per committed version up to the handle's, oldest first (for ``gpumat inspect``):
        ``{"version", "operation" ("create" | "append" | "compact"), "events" (added by that version),
        "total_events", "committed_at" (unix time)}``.

        Operations and times come from the manifests (each one read and verified), event counts from
        the handle's length history, which holds every earlier version's lengths.
        """
        r = self._reader
        added = r.length_history().events_per_version(r.version)
        total = np.cumsum(added)
        out = []
        for v in list_versions(self._root):
            if v > r.version:
                break
            m = r.manifest if v == r.version else read_manifest(self._root, v)
            out.append({"version": v, "operation": m["op"], "events": int(added[v]), "total_events": int(total[v]),
                        "committed_at": float(m["created_unix"])})
        return out
