"""The tier directory's layout and its manifests (docs/DESIGN.md §2): one checksummed JSON file per
committed version, how it is verified, listed and atomically committed.

A manifest is the JSON body (sorted keys) followed by one line ``sha256:<hex of the body>``. It is
committed by writing a temporary file, fsyncing it, ``os.link``-ing it to its final name (which fails
if another writer took the number) and fsyncing the directory: a version is visible whole or not at
all, and the tier's version is the highest manifest number.

>>> import tempfile, os
>>> root = tempfile.mkdtemp()
>>> os.makedirs(os.path.join(root, MANIFEST_DIR))
>>> commit_manifest(root, new_manifest(None, "create", {"ts": "int64"}, 128, [], []))
>>> list_versions(root), read_manifest(root, 0)["op"]
([0], 'create')
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
import uuid

from gpumat.core.errors import CorruptionError, SchemaError, TierError
from gpumat.host.schema import check_schema

FORMAT = "gpumat-tier"
FORMAT_VERSION = 1
OPS = ("create", "append", "compact")
FIELDS = frozenset({"format", "format_version", "version", "parent", "op", "schema", "block_size", "segments", "lengths", "created_unix"})
MANIFEST_DIR = "_manifests"
SEGMENT_DIR = "_segments"
LENGTH_DIR = "_lengths"
LOCK_FILE = "_lock"
SUBDIRS = (MANIFEST_DIR, SEGMENT_DIR, LENGTH_DIR)
TMP_PREFIX = ".tmp-"
_MANIFEST_RE = re.compile(r"^(\d{20})\.json$")


def is_int(x) -> bool:
    """A Python ``int`` that is not a ``bool``."""
    return isinstance(x, int) and not isinstance(x, bool)


def valid_block_size(bs) -> bool:
    """Whether ``bs`` is a legal block size: a power of two in ``[1, 65536]``."""
    return is_int(bs) and 0 < bs <= 1 << 16 and not bs & (bs - 1)


def tier_root(uri) -> str:
    """The absolute local directory of a tier URI (a path, a ``PathLike`` or ``file://...``)."""
    if isinstance(uri, os.PathLike):
        uri = os.fspath(uri)
    if not isinstance(uri, str) or not uri:
        raise TierError(f"tier URI must be a local path, got {uri!r}")
    if uri.startswith("file://"):
        uri = uri[len("file://") :]
    return os.path.abspath(uri)


def fsync_dir(path: str) -> None:
    """fsync a directory, so that the names created in it are durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def manifest_path(root: str, version: int) -> str:
    return os.path.join(root, MANIFEST_DIR, f"{version:020d}.json")


def list_versions(root: str) -> list[int]:
    """The committed versions at ``root``, ascending (``[]`` when there is no tier)."""
    try:
        names = os.listdir(os.path.join(root, MANIFEST_DIR))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(int(m.group(1)) for m in map(_MANIFEST_RE.match, names) if m)


def foreign_entries(root: str) -> list[str]:
    """Entries of the directory ``root`` that are not the skeleton an interrupted ``create`` leaves.

    The skeleton: the three empty subdirectories (the manifest one may hold temporary files) and the
    lock file. ``[]`` for a missing or empty directory, or one that holds only the skeleton.
    """
    try:
        names = os.listdir(root)
    except FileNotFoundError:
        return []
    out = []
    for name in sorted(names):
        path = os.path.join(root, name)
        if name == LOCK_FILE and os.path.isfile(path):
            continue
        if name in SUBDIRS and os.path.isdir(path):
            inside = os.listdir(path)
            if all(name == MANIFEST_DIR and n.startswith(TMP_PREFIX) for n in inside):
                continue
        out.append(name)
    return out


def manifest_bytes(m: dict) -> bytes:
    """The stored form of manifest ``m``: sorted-key JSON plus its ``sha256:`` line."""
    body = json.dumps(m, sort_keys=True).encode()
    return body + b"\nsha256:" + hashlib.sha256(body).hexdigest().encode() + b"\n"


def _check_files(entries, keys, where: str, prefix: str) -> list[dict]:
    if not isinstance(entries, list):
        raise CorruptionError(f"{where}: file list is not a list")
    for e in entries:
        if not isinstance(e, dict) or set(e) != set(keys) or not isinstance(e["path"], str):
            raise CorruptionError(f"{where}: bad file entry {e!r}")
        p = e["path"]
        if not p.startswith(prefix) or "/" in p[len(prefix) :] or ".." in p or not all(is_int(e[k]) and e[k] >= 0 for k in keys if k != "path"):
            raise CorruptionError(f"{where}: bad file entry {e!r}")
    return entries


def read_manifest(root: str, version: int) -> dict:
    """Read and verify manifest ``version``; any defect is a ``CorruptionError`` naming the file."""
    path = manifest_path(root, version)
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
    if not isinstance(m, dict) or set(m) != FIELDS:
        raise CorruptionError(f"manifest {path}: unexpected fields")
    if (
        m["format"] != FORMAT
        or m["format_version"] != FORMAT_VERSION
        or m["version"] != version
        or m["op"] not in OPS
        or not valid_block_size(m["block_size"])
        or not isinstance(m["created_unix"], (int, float))
        or isinstance(m["created_unix"], bool)
    ):
        raise CorruptionError(f"manifest {path}: bad header fields")
    try:
        schema = check_schema(m["schema"])
    except SchemaError as e:
        raise CorruptionError(f"manifest {path}: bad schema ({e})") from e
    m["schema"] = schema  # JSON keys are sorted on disk; the handle keeps check_schema's order (ts first)
    _check_files(m["segments"], ("path", "size", "index_crc"), path, SEGMENT_DIR + "/")
    _check_files(m["lengths"], ("path", "size", "crc"), path, LENGTH_DIR + "/")
    return m


def new_manifest(parent: dict | None, op: str, schema: dict, block_size: int, segments: list, lengths: list) -> dict:
    """The manifest of the version after ``parent`` (version 0 when ``parent`` is None)."""
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


def commit_manifest(root: str, m: dict) -> None:
    """Atomically publish manifest ``m``: temp file + fsync + ``os.link`` (fails if taken) + dir fsync."""
    mdir = os.path.join(root, MANIFEST_DIR)
    tmp = os.path.join(mdir, f"{TMP_PREFIX}{uuid.uuid4().hex}")
    final = manifest_path(root, m["version"])
    try:
        with open(tmp, "wb") as f:
            f.write(manifest_bytes(m))
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, final)
        except FileExistsError as e:
            raise TierError(f"tier {root}: version {m['version']} was committed by another writer") from e
        fsync_dir(mdir)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
