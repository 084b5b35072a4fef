"""The versioned tier (SPEC §4, docs/DESIGN.md §2-§3): append-only user histories in immutable files.

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
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import time
import uuid
import zlib
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from gpumat.errors import CorruptionError, SchemaError, TierError
from gpumat.host import codec
from gpumat.host.schema import DTYPES, check_schema, int_column
from gpumat.host.ranges import ranges
from gpumat.host.segment import Segment, open_segment, write_segment

FORMAT = "gpumat-tier"
FORMAT_VERSION = 1
BLOCK_SIZE = 128
MAX_STRIPE = 1 << 20  # events per stripe: bounds one blob, keeps compaction's output pieces large
SEGMENT_EVENTS = 1 << 22  # compaction starts a new segment file after this many events (bounds memory)
_MANIFEST_RE = re.compile(r"^(\d{20})\.json$")


@dataclass
class Directory:
    """The live stripes of one version, sorted by ``(user_id, start)`` (docs/DESIGN.md §3).

    ``user_id, start, count, nblocks, block0`` int64 ``[S]``, ``seg`` int32 ``[S]`` (index into the
    version's segment list); ``block0`` is the exclusive cumsum of ``nblocks``.
    """

    user_id: np.ndarray
    start: np.ndarray
    count: np.ndarray
    seg: np.ndarray
    nblocks: np.ndarray
    block0: np.ndarray

    def __len__(self) -> int:
        return len(self.user_id)


class _Lengths:
    """Length history rows sorted by (user_id, version): ``length_v(u)`` = last row of u with version <= v."""

    def __init__(self, user, version, length, where: str):
        order = np.lexsort((version, user))
        self.user, self.version, self.length = user[order], version[order], length[order]
        same = self.user[1:] == self.user[:-1]
        if (self.length < 0).any() or (self.version < 0).any() or (same & (self.length[1:] < self.length[:-1])).any():
            raise CorruptionError(f"{where}: length history is inconsistent (negative or shrinking lengths)")
        new_user = np.concatenate(([True], ~same)) if len(self.user) else np.zeros(0, bool)
        self.rank = np.cumsum(new_user) - 1
        self.users = self.user[new_user]
        self.span = int(self.version.max()) + 2 if len(self.version) else 1
        self.keys = self.rank * self.span + self.version

    def at(self, users: np.ndarray, versions: np.ndarray) -> np.ndarray:
        users = np.asarray(users, dtype=np.int64)
        versions = np.broadcast_to(np.asarray(versions, dtype=np.int64), users.shape)
        if len(self.users) == 0 or users.size == 0:
            return np.zeros(users.shape, dtype=np.int64)
        r = np.minimum(np.searchsorted(self.users, users), len(self.users) - 1)
        found = self.users[r] == users
        pos = np.searchsorted(self.keys, r * self.span + np.minimum(versions, self.span - 1), side="right") - 1
        ok = found & (pos >= 0)
        pos = np.maximum(pos, 0)
        ok &= self.rank[pos] == r
        return np.where(ok, self.length[pos], 0)


def _root(uri) -> str:
    if isinstance(uri, os.PathLike):
        uri = os.fspath(uri)
    if not isinstance(uri, str) or not uri:
        raise TierError(f"tier URI must be a local path, got {uri!r}")
    if uri.startswith("file://"):
        uri = uri[len("file://") :]
    return os.path.abspath(uri)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _versions(root: str) -> list[int]:
    try:
        names = os.listdir(os.path.join(root, "_manifests"))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(int(m.group(1)) for m in map(_MANIFEST_RE.match, names) if m)


def _manifest_bytes(m: dict) -> bytes:
    body = json.dumps(m, sort_keys=True).encode()
    return body + b"\nsha256:" + hashlib.sha256(body).hexdigest().encode() + b"\n"


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _check_files(entries, keys, where: str, prefix: str) -> list[dict]:
    if not isinstance(entries, list):
        raise CorruptionError(f"{where}: file list is not a list")
    for e in entries:
        if not isinstance(e, dict) or set(e) != set(keys) or not isinstance(e["path"], str):
            raise CorruptionError(f"{where}: bad file entry {e!r}")
        p = e["path"]
        if not p.startswith(prefix) or "/" in p[len(prefix) :] or ".." in p or not all(_is_int(e[k]) and e[k] >= 0 for k in keys if k != "path"):
            raise CorruptionError(f"{where}: bad file entry {e!r}")
    return entries


def _read_manifest(root: str, version: int) -> dict:
    """Read and verify manifest ``version``; any defect is a ``CorruptionError`` naming the file."""
    path = os.path.join(root, "_manifests", f"{version:020d}.json")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise CorruptionError(f"manifest {path}: cannot be read ({e})") from e
    body, sep, tail = data.rstrip(b"\n").rpartition(b"\nsha256:")
    if not sep or hashlib.sha256(body).hexdigest().encode() != tail:
        raise CorruptionError(f"manifest {path}: checksum mismatch")
    try:
        m = json.loads(body)
    except ValueError as e:
        raise CorruptionError(f"manifest {path}: not JSON ({e})") from e
    want = {"format", "format_version", "version", "parent", "op", "schema", "block_size", "segments", "lengths", "created_unix"}
    if not isinstance(m, dict) or set(m) != want:
        raise CorruptionError(f"manifest {path}: unexpected fields")
    bs = m["block_size"]
    if (
        m["format"] != FORMAT
        or m["format_version"] != FORMAT_VERSION
        or m["version"] != version
        or m["op"] not in ("create", "append", "compact")
        or not _is_int(bs)
        or bs <= 0
        or bs & (bs - 1)
        or bs > 1 << 16
    ):
        raise CorruptionError(f"manifest {path}: bad header fields")
    try:
        schema = check_schema(m["schema"])
    except SchemaError as e:
        raise CorruptionError(f"manifest {path}: bad schema ({e})") from e
    m["schema"] = schema  # JSON keys are sorted on disk; the handle keeps check_schema's order (ts first)
    _check_files(m["segments"], ("path", "size", "index_crc"), path, "_segments/")
    _check_files(m["lengths"], ("path", "size", "crc"), path, "_lengths/")
    return m


def _read_lengths_file(root: str, entry: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    path = os.path.join(root, entry["path"])
    try:
        with open(path, "rb") as f:
            data = f.read()
        if len(data) != entry["size"] or (zlib.crc32(data) & 0xFFFFFFFF) != entry["crc"]:
            raise CorruptionError(f"length file {path}: size or checksum mismatch")
        t = pa.ipc.open_file(pa.BufferReader(data)).read_all()
        if t.column_names != ["user_id", "version", "length"] or any(c.type != pa.int64() or c.null_count for c in t.columns):
            raise CorruptionError(f"length file {path}: unexpected columns")
        return tuple(np.asarray(c.to_numpy(), dtype=np.int64) for c in t.columns)
    except CorruptionError:
        raise
    except (OSError, pa.ArrowException, ValueError) as e:
        raise CorruptionError(f"length file {path}: cannot be read ({type(e).__name__}: {e})") from e


def _write_lengths_file(root: str, user, version, length) -> dict:
    t = pa.table({"user_id": pa.array(user, pa.int64()), "version": pa.array(version, pa.int64()), "length": pa.array(length, pa.int64())})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, t.schema) as w:
        w.write_table(t)
    data = sink.getvalue().to_pybytes()
    rel = f"_lengths/{uuid.uuid4().hex}.arrow"
    with open(os.path.join(root, rel), "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return {"path": rel, "size": len(data), "crc": zlib.crc32(data) & 0xFFFFFFFF}


def _read_events(events, schema: dict) -> dict[str, np.ndarray]:
    """Validate events per SPEC §3; return ``{"user_id": int64, col: int64 (sign-extended)}``."""
    if isinstance(events, (str, os.PathLike)):
        try:
            events = pq.read_table(events)
        except (OSError, pa.ArrowException) as e:
            raise SchemaError(f"cannot read events file {os.fspath(events)!r}: {e}") from e
    elif isinstance(events, pa.RecordBatch):
        events = pa.Table.from_batches([events])
    if not isinstance(events, pa.Table):
        raise SchemaError(f"events must be a Parquet path or a pyarrow Table, got {type(events).__name__}")
    names = events.column_names
    if len(set(names)) != len(names):
        raise SchemaError(f"events have duplicate columns: {names}")
    want = ["user_id", *schema]
    missing = [c for c in want if c not in names]
    extra = [c for c in names if c not in want]
    if missing or extra:
        raise SchemaError(f"events columns: missing {missing}, extra {extra} (schema: user_id + {list(schema)})")
    out = {"user_id": int_column(events.column("user_id"), "int64", "events column 'user_id'")}
    for c, dt in schema.items():
        out[c] = int_column(events.column(c), dt, f"events column {c!r}").astype(np.int64, copy=False)
    return out


class Tier:
    """A handle on the tier at a URI, at one version (SPEC §4).

    A handle opened without ``version`` follows the latest version (``refresh``, and every write moves
    it to the version it commits); one opened with ``version=`` is pinned and read-only.
    """

    def __init__(self, root: str, manifest: dict, pinned: bool):
        self._root = root
        self._pinned = pinned
        self._segcache: dict[str, Segment] = {}
        self._set_manifest(manifest)

    # ----------------------------------------------------------------------------- construction

    @classmethod
    def create(cls, uri, schema, block_size: int = BLOCK_SIZE) -> "Tier":
        """Create an empty tier (version 0) at ``uri``; ``TierError`` if one is already there."""
        schema = check_schema(schema)
        if not _is_int(block_size) or block_size <= 0 or block_size & (block_size - 1) or block_size > 1 << 16:
            raise SchemaError(f"block_size must be a power of two in [1, 65536], got {block_size!r}")
        root = _root(uri)
        if os.path.exists(root) and not os.path.isdir(root):
            raise TierError(f"cannot create a tier at {root}: a file is there")
        if _versions(root):
            raise TierError(f"a tier already exists at {root}")
        try:
            for d in ("", "_manifests", "_segments", "_lengths"):
                os.makedirs(os.path.join(root, d), exist_ok=True)
        except OSError as e:
            raise TierError(f"cannot create a tier at {root}: {e}") from e
        m = cls._new_manifest(None, "create", schema, block_size, [], [])
        m["version"] = 0
        with cls._locked(root):
            if _versions(root):
                raise TierError(f"a tier already exists at {root}")
            cls._commit(root, m)
        return cls(root, m, pinned=False)

    @staticmethod
    def exists(uri) -> bool:
        """Whether a tier (at least one committed manifest) is at ``uri``."""
        return bool(_versions(_root(uri)))

    @classmethod
    def open(cls, uri, version=None) -> "Tier":
        """Open the latest version, or pin ``version`` (read-only). ``TierError`` if there is no tier or no such version."""
        root = _root(uri)
        versions = _versions(root)
        if not versions:
            raise TierError(f"no tier at {root}")
        latest = versions[-1]
        if version is not None:
            if not _is_int(version) and not isinstance(version, np.integer):
                raise TierError(f"version must be an integer, got {version!r}")
            version = int(version)
            if version < 0 or version > latest:
                raise TierError(f"tier {root} has no version {version} (latest is {latest})")
            return cls(root, _read_manifest(root, version), pinned=True)
        return cls(root, _read_manifest(root, latest), pinned=False)

    # ----------------------------------------------------------------------------- properties

    @property
    def version(self) -> int:
        """The version this handle reads."""
        return self._manifest["version"]

    @property
    def schema(self) -> dict[str, str]:
        """Column name -> dtype (``ts`` first)."""
        return dict(self._manifest["schema"])

    @property
    def block_size(self) -> int:
        """Events per encoded block (docs/DESIGN.md §1)."""
        return self._manifest["block_size"]

    @property
    def uri(self) -> str:
        return self._root

    @property
    def pinned(self) -> bool:
        return self._pinned

    def __repr__(self) -> str:
        return f"Tier({self._root!r}, version={self.version}{', pinned' if self._pinned else ''})"

    def refresh(self) -> int:
        """Move an unpinned handle to the latest committed version; returns the handle's version."""
        if not self._pinned:
            versions = _versions(self._root)
            if versions and versions[-1] > self.version:
                self._set_manifest(_read_manifest(self._root, versions[-1]))
        return self.version

    def _set_manifest(self, m: dict) -> None:
        self._manifest = m
        self._schema = m["schema"]
        self._dir = None
        self._dir_cols = None
        self._len = None
        self._segs = None

    # ----------------------------------------------------------------------------- lengths

    def _lengths_hist(self) -> _Lengths:
        if self._len is None:
            parts = [_read_lengths_file(self._root, e) for e in self._manifest["lengths"]]
            cat = [np.concatenate([p[i] for p in parts]) if parts else np.zeros(0, np.int64) for i in range(3)]
            if len(cat[1]) and cat[1].max() > self.version:
                raise CorruptionError(f"tier {self._root}: length history of version {self.version} has later versions")
            self._len = _Lengths(*cat, where=f"tier {self._root} version {self.version}")
        return self._len

    def _check_version(self, version, what: str) -> int:
        if version is None:
            return self.version
        if not (_is_int(version) or isinstance(version, np.integer)):
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
        return self._lengths_hist().at(users, np.full(len(users), v, np.int64)).reshape(shape)

    def length_at(self, user_ids, versions) -> np.ndarray:
        """Vectorized ``length_{versions[i]}(user_ids[i])`` (each pair its own version), int64 ``[N]``.

        Every version must lie in ``[0, self.version]`` (``TierError`` otherwise): callers validating
        pointers check ``version <= tier.version`` first.
        """
        users = np.asarray(user_ids, dtype=np.int64).reshape(-1)
        vers = np.broadcast_to(np.asarray(versions, dtype=np.int64), users.shape)
        if vers.size and (vers.min() < 0 or vers.max() > self.version):
            raise TierError(f"length_at: versions must lie in [0, {self.version}]")
        return self._lengths_hist().at(users, vers)

    # ----------------------------------------------------------------------------- segments / directory

    def _segment(self, i: int) -> Segment:
        if self._segs is None:
            self._segs = [None] * len(self._manifest["segments"])
        s = self._segs[i]
        if s is None:
            e = self._manifest["segments"][i]
            s = self._segcache.get(e["path"])
            if s is None or s.size != e["size"]:
                s = open_segment(os.path.join(self._root, e["path"]), list(self._schema), e["size"], e["index_crc"], self.block_size)
                self._segcache[e["path"]] = s
            self._segs[i] = s
        return s

    def directory(self) -> Directory:
        """The live stripes of the handle's version, sorted by ``(user_id, start)`` (cached per handle).

        Verified against the length history: each user's stripes tile ``[0, length)`` exactly.
        """
        if self._dir is not None:
            return self._dir
        segs = [self._segment(i) for i in range(len(self._manifest["segments"]))]
        cat = lambda f: np.concatenate([f(s) for s in segs]) if segs else np.zeros(0, np.int64)  # noqa: E731
        uid, st, cnt = cat(lambda s: s.user_id), cat(lambda s: s.start), cat(lambda s: s.count)
        seg = np.repeat(np.arange(len(segs), dtype=np.int32), [s.num_stripes for s in segs]) if segs else np.zeros(0, np.int32)
        order = np.lexsort((st, uid))
        uid, st, cnt, seg = uid[order], st[order], cnt[order], seg[order]
        cols = {c: (cat(lambda s: s.off[c])[order], cat(lambda s: s.nwords[c])[order], cat(lambda s: s.enc[c])[order]) for c in self._schema}
        where = f"tier {self._root} version {self.version}"
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
            raise CorruptionError(f"{where}: segments do not tile the histories (overlapping or missing stripes)")
        users = uid[first]
        ends = np.concatenate((np.flatnonzero(first)[1:], [S])) - 1 if S else np.zeros(0, np.int64)
        totals = st[ends] + cnt[ends] if S else np.zeros(0, np.int64)
        L = self._lengths_hist()
        if not np.array_equal(totals, L.at(users, np.full(len(users), self.version))) or int(
            (L.at(L.users, np.full(len(L.users), self.version)) > 0).sum()
        ) != len(users):
            raise CorruptionError(f"{where}: segments disagree with the length history")
        nblocks = (cnt + self.block_size - 1) // self.block_size
        block0 = np.cumsum(nblocks) - nblocks
        # Columns first: another planner thread that finds ``_dir`` set goes straight to ``_dir_cols``.
        self._dir_cols = cols
        self._dir = Directory(uid, st, cnt, seg, nblocks, block0)
        return self._dir

    def read_blocks(self, column: str, stripe_idx, block_lo, block_hi):
        """Blocks ``[block_lo[i], block_hi[i])`` of the blob of ``column`` of directory stripes ``stripe_idx[i]``.

        Returns ``(hdr, words, nbytes)``: ``hdr`` int64 ``[K, 3]`` (base, slope, meta) in request order
        with ``word_off`` rewritten to index ``words`` (int64, every block's packed words back to back,
        plus one zero word); ``nbytes``: bytes read from storage (headers + packed words). Every block's
        hash is verified (``CorruptionError``). Vectorized: one pass per segment, none per block.
        """
        if column not in self._schema:
            raise SchemaError(f"unknown column {column!r}; schema has {list(self._schema)}")
        d = self.directory()
        off_c, nw_c, _ = self._dir_cols[column]
        si = np.asarray(stripe_idx, dtype=np.int64).reshape(-1)
        lo = np.broadcast_to(np.asarray(block_lo, dtype=np.int64), si.shape)
        hi = np.broadcast_to(np.asarray(block_hi, dtype=np.int64), si.shape)
        if si.size and (si.min() < 0 or si.max() >= len(d) or (lo < 0).any() or (hi < lo).any() or (hi > d.nblocks[si]).any()):
            raise SchemaError("read_blocks: stripe index or block range out of bounds")
        bs = self.block_size
        nblk = hi - lo
        K = int(nblk.sum())
        bstripe = np.repeat(si, nblk)
        j = ranges(lo, nblk)
        cnt = np.minimum(bs, d.count[bstripe] - j * bs)
        bseg = d.seg[bstripe]
        blob_w = off_c[bstripe]
        blob_len = nw_c[bstripe]
        hdr4 = np.empty((K, codec.HDR_WORDS), dtype=np.int64)
        order = np.argsort(bseg, kind="stable")
        bounds = np.flatnonzero(np.diff(bseg[order])) + 1
        groups = [(int(bseg[g[0]]), g) for g in np.split(order, bounds) if len(g)]
        for s, g in groups:
            hdr4[g] = self._segment(s).words[blob_w[g, None] + codec.HDR_WORDS * j[g, None] + np.arange(codec.HDR_WORDS)[None, :]]
        meta = hdr4[:, 2]
        w = meta & 255
        woff = meta >> 8
        nw = codec.words_for(cnt, np.minimum(w, 64))
        bad = (meta < 0) | (w > 64) | (woff < codec.HDR_WORDS * ((d.count[bstripe] + bs - 1) // bs)) | (woff + nw > blob_len)
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            raise CorruptionError(f"segment {self._segment(int(bseg[k])).path}: column {column!r} block {int(j[k])} of a stripe of user {int(d.user_id[bstripe[k]])} has an invalid header")
        out_off = np.cumsum(nw) - nw
        total = int(nw.sum())
        words = np.zeros(total + 1, dtype=np.int64)
        for s, g in groups:
            words[ranges(out_off[g], nw[g])] = self._segment(s).words[ranges(blob_w[g] + woff[g], nw[g])]
        h = codec.block_hash(hdr4[:, 0], hdr4[:, 1], meta, words[:total], nw)
        bad = h != hdr4[:, 3].view(np.uint64)
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            raise CorruptionError(
                f"segment {self._segment(int(bseg[k])).path}: column {column!r} block {int(j[k])} of a stripe of user "
                f"{int(d.user_id[bstripe[k]])} fails its checksum ({int(bad.sum())} bad block(s))"
            )
        hdr = hdr4[:, :3].copy()
        hdr[:, 2] = (out_off << 8) | w
        return hdr, words, 8 * (codec.HDR_WORDS * K + total)

    def _decode_stripes(self, column: str, stripe_idx: np.ndarray) -> np.ndarray:
        """All values of ``column`` of the given directory stripes, concatenated in the given order."""
        d = self.directory()
        si = np.asarray(stripe_idx, dtype=np.int64)
        hdr, words, _ = self.read_blocks(column, si, np.zeros(len(si), np.int64), d.nblocks[si])
        nblk = d.nblocks[si]
        j = ranges(np.zeros(len(si), np.int64), nblk)
        cnt = np.minimum(self.block_size, np.repeat(d.count[si], nblk) - j * self.block_size)
        return codec.decode_blocks(hdr, words, cnt)

    def read_history(self, user_id, version=None, columns=None) -> dict[str, np.ndarray]:
        """The full history of one user at ``version`` (default: the handle's), decoded: ``{col: array}``
        in the schema dtypes, oldest first. For tests, tools and naive references."""
        v = self._check_version(version, "read_history")
        cols = list(self._schema) if columns is None else list(columns)
        unknown = [c for c in cols if c not in self._schema]
        if unknown:
            raise SchemaError(f"unknown column(s) {unknown}; schema has {list(self._schema)}")
        u = int(user_id)
        n = int(self.length_at([u], [v])[0])
        d = self.directory()
        a, b = np.searchsorted(d.user_id, u, "left"), np.searchsorted(d.user_id, u, "right")
        si = np.arange(a, b, dtype=np.int64)
        # a later version holds every earlier one as a prefix, so an old version is a prefix of the handle's
        return {c: self._decode_stripes(c, si)[:n].astype(DTYPES[self._schema[c]]) for c in cols}

    # ----------------------------------------------------------------------------- writes

    @staticmethod
    @contextlib.contextmanager
    def _locked(root: str):
        try:
            fd = os.open(os.path.join(root, "_lock"), os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise TierError(f"cannot lock tier {root}: {e}") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the flock (and a killed writer's lock dies with it)

    @staticmethod
    def _new_manifest(parent: dict | None, op: str, schema, block_size, segments, lengths) -> dict:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "version": (parent["version"] + 1) if parent else 0,
            "parent": parent["version"] if parent else None,
            "op": op,
            "schema": schema,
            "block_size": block_size,
            "segments": segments,
            "lengths": lengths,
            "created_unix": time.time(),
        }

    @staticmethod
    def _commit(root: str, m: dict) -> None:
        """Atomically publish manifest ``m``: temp file + fsync + ``os.link`` (fails if taken) + dir fsync."""
        mdir = os.path.join(root, "_manifests")
        tmp = os.path.join(mdir, f".tmp-{uuid.uuid4().hex}")
        final = os.path.join(mdir, f"{m['version']:020d}.json")
        try:
            with open(tmp, "wb") as f:
                f.write(_manifest_bytes(m))
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, final)
            except FileExistsError as e:
                raise TierError(f"tier {root}: version {m['version']} was committed by another writer") from e
            _fsync_dir(mdir)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)

    def _begin_write(self, op: str) -> None:
        if self._pinned:
            raise TierError(f"{op}: the handle of {self._root} is pinned to version {self.version} (read-only)")

    def _catch_up(self) -> None:
        """Under the lock: move the handle to the latest version, so a write lands on top of it."""
        versions = _versions(self._root)
        if versions and versions[-1] != self.version:
            self._set_manifest(_read_manifest(self._root, versions[-1]))

    def _write_stripes(self, user, start, count, values: dict) -> dict:
        """Encode stripes (sorted by (user, start); ``values[c]`` back to back) into a new segment file."""
        bs = self.block_size
        blobs = {c: codec.encode_stripes(values[c], count, bs) for c in self._schema}
        rel = f"_segments/{uuid.uuid4().hex}.gseg"
        size, crc = write_segment(os.path.join(self._root, rel), list(self._schema), user, start, count, blobs)
        return {"path": rel, "size": size, "index_crc": crc}

    def append(self, events) -> int:
        """Append each user's events in table order; commit and return the new version.

        ``events``: a pyarrow Table or Parquet path with ``user_id`` and every schema column (SPEC §3).
        A handle behind the latest version appends on top of it and moves there.
        """
        self._begin_write("append")
        ev = _read_events(events, self._schema)
        with self._locked(self._root):
            self._catch_up()
            m = self._manifest
            segments, lengths = list(m["segments"]), list(m["lengths"])
            uid = ev["user_id"]
            if len(uid):
                order = np.argsort(uid, kind="stable")  # stable: table order inside each user
                us = uid[order]
                first = np.flatnonzero(np.concatenate(([True], us[1:] != us[:-1])))
                users = us[first]
                per_user = np.diff(np.append(first, len(us)))
                old = self._lengths_hist().at(users, np.full(len(users), self.version))
                nstr, cnt = codec.block_counts(per_user, MAX_STRIPE)
                j = ranges(np.zeros(len(users), np.int64), nstr)
                s_user = np.repeat(users, nstr)
                s_start = np.repeat(old, nstr) + j * MAX_STRIPE
                values = {c: ev[c][order] for c in self._schema}
                segments.append(self._write_stripes(s_user, s_start, cnt, values))
                lengths.append(_write_lengths_file(self._root, users, np.full(len(users), self.version + 1), old + per_user))
                _fsync_dir(os.path.join(self._root, "_segments"))
                _fsync_dir(os.path.join(self._root, "_lengths"))
            new = self._new_manifest(m, "append", self._schema, self.block_size, segments, lengths)
            self._commit(self._root, new)
            self._set_manifest(new)
        return self.version

    def compact(self) -> int:
        """Rewrite every history into as few stripes as possible (same events, same positions); commit and
        return the new version. Old segment files stay for handles pinned to older versions."""
        self._begin_write("compact")
        with self._locked(self._root):
            self._catch_up()
            m = self._manifest
            d = self.directory()
            L = self._lengths_hist()
            segments = []
            S = len(d)
            if S:
                first = np.flatnonzero(np.concatenate(([True], d.user_id[1:] != d.user_id[:-1])))
                ends = np.append(first[1:], S)
                totals = np.add.reduceat(d.count, first)
                # cut at user boundaries into segments of about SEGMENT_EVENTS events
                cum = np.cumsum(totals)
                grp = (cum - totals) // SEGMENT_EVENTS
                for g in np.unique(grp):
                    us = np.flatnonzero(grp == g)
                    si = np.arange(first[us[0]], ends[us[-1]], dtype=np.int64)
                    nstr, cnt = codec.block_counts(totals[us], MAX_STRIPE)
                    j = ranges(np.zeros(len(us), np.int64), nstr)
                    values = {c: self._decode_stripes(c, si) for c in self._schema}
                    segments.append(self._write_stripes(np.repeat(d.user_id[first[us]], nstr), j * MAX_STRIPE, cnt, values))
                _fsync_dir(os.path.join(self._root, "_segments"))
            lengths = [_write_lengths_file(self._root, L.user, L.version, L.length)]
            _fsync_dir(os.path.join(self._root, "_lengths"))
            new = self._new_manifest(m, "compact", self._schema, self.block_size, segments, lengths)
            self._commit(self._root, new)
            self._set_manifest(new)
        return self.version

    # ----------------------------------------------------------------------------- inspection

    def stats(self) -> dict:
        """Storage figures of the handle's version (for ``gpumat inspect``)."""
        d = self.directory()
        events = int(d.count.sum())
        per_col = {}
        for c in self._schema:
            _, nw, enc = self._dir_cols[c]
            nbytes = int(nw.sum()) * 8
            per_col[c] = {
                "dtype": self._schema[c],
                "bytes": nbytes,
                "bytes_per_event": nbytes / events if events else 0.0,
                "encodings": {codec.ENC_NAMES[k]: int((enc == k).sum()) for k in codec.ENC_NAMES},
            }
        users = int((self._lengths_hist().at(self._lengths_hist().users, np.full(len(self._lengths_hist().users), self.version)) > 0).sum())
        return {
            "uri": self._root,
            "version": self.version,
            "op": self._manifest["op"],
            "schema": self.schema,
            "block_size": self.block_size,
            "segments": len(self._manifest["segments"]),
            "stripes": len(d),
            "blocks": int(d.nblocks.sum()),
            "users": users,
            "events": events,
            "stored_bytes": int(sum(s["size"] for s in self._manifest["segments"])),
            "length_bytes": int(sum(s["size"] for s in self._manifest["lengths"])),
            "columns": per_col,
        }
