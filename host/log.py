"""The tier's metadata (docs/DESIGN.md §2): a log of small commit records, periodic checkpoints, and
the state of a version rebuilt from them.

- ``_log/<v>.rec``: the commit record of version ``v``: what changed (data files added and removed,
  the new lengths of the users an append touched) and, for a small append, its data inline. A
  version is committed by creating its record with ``put_if_absent``: whole or not at all, and
  never twice.
- ``_checkpoints/<v>.ckpt``: the whole state at ``v`` (live data files, the length history as a
  few immutable *runs* in ``_runs/``, which versions are expired or were lost). Written every
  ``CHECKPOINT_EVERY`` versions; opening reads the newest checkpoint and the records after it.
- ``_lock``: the writers' lock; its content is the *witness*, the newest committed version, so
  a lost newest record is noticed (``CorruptionError``), never silently rolled back. On an object
  store (host/objstore.py) there is no lock: ``_lock`` is a small object each committer overwrites
  with the witness, and ``put_if_absent`` is a conditional write; a writer that loses the race for a
  number gets ``CommitConflict`` and retries on top of the winner (host/tier.py).

Every file ends with a sha256 of its bytes (runs with a crc32 recorded in the checkpoint), so a
damaged byte anywhere is a ``CorruptionError``. Metadata grows linearly with versions and what one
commit writes does not depend on how many came before.

>>> import tempfile
>>> from gpumat.host.store import LocalStore
>>> store = LocalStore(tempfile.mkdtemp())
>>> store.makedirs(*DIRS)
>>> s0 = State.genesis({"ts": "int64"}, 128)
>>> commit(store, s0, "create", created_unix=0.0)[0].version
0
>>> latest_version(store), load_state(store, 0).schema
(0, {'ts': 'int64'})
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import struct
import time
import uuid
import zlib

import numpy as np

from gpumat.core.errors import CorruptionError, GpumatError, SchemaError, TierError
from gpumat.host.lengths import LengthHistory, decode_rows, encode_rows, layered
from gpumat.host.schema import check_schema
from gpumat.host.store import TMP_DIR

FORMAT = "gpumat-tier"
FORMAT_VERSION = 2
OPS = ("create", "append", "compact", "repair")
LOG_DIR, CKPT_DIR, DATA_DIR, RUNS_DIR = "_log", "_checkpoints", "_data", "_runs"
LOCK_FILE = "_lock"
LEGACY_DATA_DIR = "_segments"  # the data directory of format-1 tiers (host/maintenance.upgrade)
DIRS = (LOG_DIR, CKPT_DIR, DATA_DIR, RUNS_DIR, TMP_DIR)
CHECKPOINT_EVERY = 16  # versions between checkpoints: bounds the records an open replays
INLINE_BYTES = 1 << 20  # an append whose segment is at most this large keeps it inside its record
REC_MAGIC, CKPT_MAGIC = b"GPUMREC2", b"GPUMCKP2"
_U64 = struct.Struct("<Q")
_NAME_DIGITS = 20


def record_name(v: int) -> str:
    return f"{LOG_DIR}/{v:0{_NAME_DIGITS}d}.rec"


def checkpoint_name(v: int) -> str:
    return f"{CKPT_DIR}/{v:0{_NAME_DIGITS}d}.ckpt"


def _versions_in(names, suffix: str) -> list[int]:
    out = []
    for n in names:
        if len(n) == _NAME_DIGITS + len(suffix) and n.endswith(suffix) and n[:_NAME_DIGITS].isdigit():
            out.append(int(n[:_NAME_DIGITS]))
    return sorted(out)


def logged_versions(store) -> list[int]:
    """Versions that have a record, ascending."""
    return _versions_in(store.list(LOG_DIR), ".rec")


def checkpoint_versions(store, after: int | None = None) -> list[int]:
    """Versions that have a checkpoint, ascending (with ``after``: only those above it)."""
    start = None if after is None or after < 0 else checkpoint_name(after).split("/")[1]
    return _versions_in(store.list(CKPT_DIR, start_after=start), ".ckpt")


def newest_checkpoint_at_or_below(store, v: int) -> int | None:
    """The newest checkpoint version ``<= v`` (listing only the names near ``v`` first: on an object
    store a full listing costs a request per thousand names)."""
    near = [c for c in checkpoint_versions(store, after=v - 64 * CHECKPOINT_EVERY) if c <= v]
    if not near and v - 64 * CHECKPOINT_EVERY >= 0:
        near = [c for c in checkpoint_versions(store) if c <= v]
    return near[-1] if near else None


class CommitConflict(TierError):
    """Another writer created the record of this version first (object stores' optimistic
    concurrency: catch up and rebuild; under the local lock it never happens)."""


# ----------------------------------------------------------------------------- framing


def _frame(magic: bytes, parts: list) -> list:
    """``magic, (u64 length, part)*, sha256 of all of it``: the shape of records and checkpoints.

    A part is bytes or a list of buffers (written back to back, never joined). Returns the list of
    buffers of the whole file.
    """
    out = [magic]
    for p in parts:
        bufs = [memoryview(b).cast("B") for b in (p if isinstance(p, list) else [p])]
        out += [_U64.pack(sum(b.nbytes for b in bufs)), *bufs]
    h = hashlib.sha256()
    for b in out:
        h.update(b)
    return out + [h.digest()]


def _unframe(data: bytes, magic: bytes, nparts: int, where: str) -> list[memoryview]:
    view = memoryview(data)
    if len(data) < len(magic) + 32 or bytes(view[: len(magic)]) != magic:
        raise CorruptionError(f"{where}: not a gpumat {('record' if magic == REC_MAGIC else 'checkpoint')} (bad magic)")
    if hashlib.sha256(view[:-32]).digest() != bytes(view[-32:]):
        raise CorruptionError(f"{where}: checksum mismatch")
    parts, pos = [], len(magic)
    for _ in range(nparts):
        if pos + 8 > len(data) - 32:
            raise CorruptionError(f"{where}: truncated")
        (n,) = _U64.unpack(view[pos : pos + 8])
        pos += 8
        if pos + n > len(data) - 32:
            raise CorruptionError(f"{where}: truncated")
        parts.append(view[pos : pos + n])
        pos += n
    if pos != len(data) - 32:
        raise CorruptionError(f"{where}: trailing bytes")
    return parts


def _json(view, where: str) -> dict:
    try:
        obj = json.loads(bytes(view))
    except ValueError as e:
        raise CorruptionError(f"{where}: header is not JSON ({e})") from e
    if not isinstance(obj, dict) or obj.get("format") != FORMAT or obj.get("format_version") != FORMAT_VERSION:
        raise CorruptionError(f"{where}: not a {FORMAT} v{FORMAT_VERSION} header")
    return obj


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _check_entry(e, where: str) -> dict:
    """A data-file entry: ``{path, offset, size, index_crc, events, level[, format][, dicts][, const][, tables][, borrow][, rowconst][, bare][, index]}``
    (path None: the record's inline payload; level: how many merges made it, host/writer.py; format:
    the segment's format, 3, absent for format 2; dicts: 1 for a format-3 segment with dictionaries,
    const: 1 for one with constant stripes, tables: 1 for one with stripe tables (2: some of codes into
    the segment dictionary, DESIGN §1), borrow: 1 for one
    with borrowed codes (DESIGN §1), rowconst: 1 for one with constants per row of a pack (DESIGN §2),
    bare: 1 for one with BARE LEVELS blocks (DESIGN §1),
    so that releases before them reject it; dicts: 2 where its dictionaries' heads are varints,
    host/pages.py ``DICT_FORM``; index: 2 or 3, its index's form, host/segment.py ``index_residuals``)."""
    keys = {"path", "offset", "size", "index_crc", "events", "level"}
    extra = {"dicts": (1, 2), "const": (1,), "tables": (1, 2), "borrow": (1,), "rowconst": (1,), "bare": (1,), "index": (2, 3)}  # (format 3 only)
    if not isinstance(e, dict) or set(e) - {"format", *extra} != keys or e.get("format", 2) not in (2, 3) \
            or not _is_int(e.get("format", 2)) \
            or any(k in e and (not _is_int(e[k]) or e[k] not in ok or e.get("format") != 3) for k, ok in extra.items()):
        raise CorruptionError(f"{where}: bad data file entry {e!r}")
    p = e["path"]
    if p is not None and (not isinstance(p, str) or not p.startswith((DATA_DIR + "/", LOG_DIR + "/", LEGACY_DATA_DIR + "/"))
                          or ".." in p or p.count("/") != 1):
        raise CorruptionError(f"{where}: bad data file entry {e!r}")
    if not all(_is_int(e[k]) and e[k] >= 0 for k in ("offset", "size", "index_crc", "events", "level")):
        raise CorruptionError(f"{where}: bad data file entry {e!r}")
    return e


def file_key(e: dict) -> str:
    """The identity of a data file entry (a file, or a payload at an offset of a record)."""
    return e["path"] if not e["offset"] else f"{e['path']}@{e['offset']}"


# ----------------------------------------------------------------------------- state


@dataclasses.dataclass
class State:
    """Everything a reader of one version needs, rebuilt from a checkpoint and the records after it."""

    version: int
    schema: dict
    block_size: int
    files: dict  # key -> data file entry, in commit order
    lengths: LengthHistory
    runs: list  # run entries (checkpointed rows of versions <= runs_version)
    runs_version: int
    expired_before: int = 0  # versions below this can no longer be opened
    lost: list = dataclasses.field(default_factory=list)  # [lo, hi, repaired_at]: versions rolled back by repair
    checkpoint_version: int = -1
    op: str = "create"
    created_unix: float = 0.0
    # the stripes of the files live at the last checkpoint, as the checkpoint recorded them (host/reader.py
    # uses it instead of reading every file's index): (file keys, their region words, stripe columns)
    directory: tuple | None = None
    # whether writers may take packs of up to writer.PACK_LARGE_EVENTS events (DESIGN §2 "Larger packs"):
    # set when the tier is created; stored (as "large_packs": false) only where False, so that a tier
    # that keeps the default is read by releases before the setting
    large_packs: bool = True

    @classmethod
    def genesis(cls, schema: dict, block_size: int, large_packs: bool = True) -> "State":
        z = np.zeros(0, np.int64)
        return cls(-1, dict(schema), block_size, {}, LengthHistory(z, z, z, "genesis"), [], -1, checkpoint_version=0,
                   large_packs=bool(large_packs))

    def lost_at(self, v: int):
        return next((r for r in self.lost if r[0] <= v <= r[1]), None)


def _apply(state: State, header: dict, rows, record: str, payload_at: int, where: str) -> State:
    """The state after one record."""
    v = header["version"]
    files = dict(state.files)
    for key in header["remove"]:
        if files.pop(key, None) is None:
            raise CorruptionError(f"{where}: removes {key}, which version {state.version} does not have")
    for e in header["add"]:
        e = dict(e)
        if e["path"] is None:  # the record's own inline payload
            e["path"], e["offset"] = record, payload_at + e["offset"]
        files[file_key(e)] = e
    lengths = state.lengths
    if rows is not None and len(rows[0]):
        if (rows[1] != v).any():
            raise CorruptionError(f"{where}: length rows of another version")
        lengths = lengths.extend(rows[0], v, rows[2], where)
    lost = list(state.lost)
    if header["op"] == "repair":
        lost.append(list(header["lost"]))
    return dataclasses.replace(state, version=v, files=files, lengths=lengths, lost=lost, op=header["op"],
                               created_unix=float(header["created_unix"]))


def _check_header(h: dict, v: int, where: str) -> None:
    need = {"format", "format_version", "version", "parent", "op", "created_unix", "add", "remove", "lost", "schema", "block_size"}
    if set(h) - {"large_packs"} != need or not _setting_ok(h, v == 0) or h["version"] != v or h["op"] not in OPS \
            or not isinstance(h["add"], list) or not isinstance(h["remove"], list) \
            or not all(isinstance(k, str) for k in h["remove"]) or not isinstance(h["created_unix"], (int, float)) or isinstance(h["created_unix"], bool):
        raise CorruptionError(f"{where}: bad record header")
    if (v == 0) != (h["op"] == "create") or (h["op"] != "repair" and h["parent"] != (v - 1 if v else None)):
        raise CorruptionError(f"{where}: bad record header (version {v}, op {h['op']!r}, parent {h['parent']!r})")
    for e in h["add"]:
        _check_entry(e, where)


def _setting_ok(h: dict, allowed: bool) -> bool:
    """Whether a header's ``"large_packs"`` is absent, or (where a header may hold it: version 0's
    record, a checkpoint) false: the one value stored (``State.large_packs``)."""
    return "large_packs" not in h or (allowed and h["large_packs"] is False)


# ----------------------------------------------------------------------------- records


def encode_record(state: State, op: str, add: list, remove: list, rows=None, payload=None,
                  lost=None, created_unix: float | None = None) -> tuple[dict, list, int]:
    """The header, the buffers and the inline payload's offset of the record of ``state.version + 1``."""
    v = state.version + 1
    header = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "version": v,
        "parent": (lost[0] - 1) if op == "repair" else (state.version if v else None),
        "op": op, "created_unix": time.time() if created_unix is None else created_unix,
        "add": add, "remove": remove, "lost": lost,
        "schema": state.schema if v == 0 else None, "block_size": state.block_size if v == 0 else None,
    }
    if v == 0 and not state.large_packs:
        header["large_packs"] = False
    head = json.dumps(header, sort_keys=True).encode()
    rows_bytes = encode_rows(*rows) if rows is not None and len(rows[0]) else b""
    payload_at = len(REC_MAGIC) + 8 + len(head) + 8 + len(rows_bytes) + 8
    return header, _frame(REC_MAGIC, [head, rows_bytes, list(payload or [])]), payload_at


def read_record(store, v: int) -> tuple[dict, tuple | None, int]:
    """``(header, length rows or None, byte offset of the inline payload)`` of version ``v``'s record."""
    where = f"tier {store.root}: record of version {v}"
    try:
        data = store.read(record_name(v))
    except CorruptionError:
        raise CorruptionError(f"{where} is missing (`gpumat repair {store.root}` says how to recover)") from None
    head, rows_b, payload = _unframe(data, REC_MAGIC, 3, where)
    h = _json(head, where)
    _check_header(h, v, where)
    rows = decode_rows(bytes(rows_b), where) if len(rows_b) else None
    payload_at = len(REC_MAGIC) + 8 + len(head) + 8 + len(rows_b) + 8
    if any(e["path"] is None and e["offset"] + e["size"] > len(payload) for e in h["add"]):
        raise CorruptionError(f"{where}: inline data beyond the payload")
    return h, rows, payload_at


# ----------------------------------------------------------------------------- checkpoints and runs


def _write_run(store, rows) -> dict:
    data = encode_rows(*rows)
    path = f"{RUNS_DIR}/{uuid.uuid4().hex}.arrow"
    store.write_new(path, data)
    return {"path": path, "size": len(data), "crc": zlib.crc32(data) & 0xFFFFFFFF, "rows": int(len(rows[0])),
            "max_version": int(rows[1].max()) if len(rows[1]) else -1}


def _read_run(store, e: dict, where: str):
    data = store.read(e["path"])
    if len(data) != e["size"] or (zlib.crc32(data) & 0xFFFFFFFF) != e["crc"]:
        raise CorruptionError(f"{where}: length run {e['path']} fails its size or checksum")
    rows = decode_rows(data, f"{where}: run {e['path']}")
    if len(rows[0]) != e["rows"]:
        raise CorruptionError(f"{where}: length run {e['path']} has {len(rows[0])} rows, recorded {e['rows']}")
    return rows


def dir_fields(schema: dict, packs: bool = True) -> list[str]:
    """The stripe columns of a directory snapshot: ``skip`` and ``bcount`` (where a stripe's events
    start in its blobs, and their events: host/reader.py ``Directory``) since packs; snapshots
    written before them have neither (every stripe its own blobs)."""
    head = ["user_id", "start", "count", "file"] + (["skip", "bcount"] if packs else [])
    return head + [f"{c}.{k}" for c in schema for k in ("off", "nwords", "enc")]


def write_checkpoint(store, state: State, directory: tuple | None = None) -> State:
    """Checkpoint ``state``: new length rows become a run (runs merged tiered, so there are
    O(log versions) of them), the directory snapshot (``(file keys, region words, stripe columns)``
    of ``state``'s files, from host/reader.py) a file, then the checkpoint itself; returns the state
    that refers to them."""
    user, ver, length = state.lengths.rows()
    new = ver > state.runs_version
    runs = list(state.runs)
    if new.any():
        fresh = (user[new], ver[new], length[new])
        # merge while the newest run is at least half the one before it (a binary counter of run sizes)
        while runs and runs[-1]["rows"] <= 2 * len(fresh[0]):
            old = _read_run(store, runs.pop(), f"tier {store.root}")
            fresh = tuple(np.concatenate((a, b)) for a, b in zip(old, fresh))
        # sorted by (user, version): read back, a run needs no sort (host/lengths.py)
        order = np.lexsort((fresh[1], fresh[0]))
        runs.append(_write_run(store, tuple(a[order] for a in fresh)))
    dir_entry = None
    if directory is not None:
        from gpumat.host.segment import pack_int_table

        keys, region, table = directory
        data = pack_int_table(table, dir_fields(state.schema))
        path = f"{RUNS_DIR}/{uuid.uuid4().hex}.dir"
        store.write_new(path, data)
        dir_entry = {"path": path, "size": len(data), "crc": zlib.crc32(data) & 0xFFFFFFFF, "files": list(keys),
                     "region_words": [int(x) for x in region]}
    if new.any() or directory is not None:
        store.sync_dir(RUNS_DIR)
    header = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "version": state.version, "op": state.op,
        "created_unix": state.created_unix, "schema": state.schema, "block_size": state.block_size,
        "files": list(state.files.values()), "runs": runs, "expired_before": state.expired_before,
        "lost": state.lost, "directory": dir_entry,
    }
    if not state.large_packs:
        header["large_packs"] = False
    store.put_if_absent(checkpoint_name(state.version), _frame(CKPT_MAGIC, [json.dumps(header, sort_keys=True).encode()]))
    return dataclasses.replace(state, runs=runs, runs_version=state.version, checkpoint_version=state.version,
                               directory=directory if directory is not None else state.directory)


def read_checkpoint_header(store, v: int) -> dict:
    where = f"tier {store.root}: checkpoint of version {v}"
    (head,) = _unframe(store.read(checkpoint_name(v)), CKPT_MAGIC, 1, where)
    h = _json(head, where)
    need = {"format", "format_version", "version", "op", "created_unix", "schema", "block_size", "files", "runs",
            "expired_before", "lost", "directory"}
    if set(h) - {"large_packs"} != need or not _setting_ok(h, True) or h["version"] != v \
            or not isinstance(h["files"], list) or not isinstance(h["runs"], list) or not _is_int(h["expired_before"]) or not isinstance(h["lost"], list):
        raise CorruptionError(f"{where}: bad header")
    for e in h["files"]:
        _check_entry(e, where)
    for r in h["runs"]:
        if not isinstance(r, dict) or set(r) != {"path", "size", "crc", "rows", "max_version"} \
                or not isinstance(r["path"], str) or not r["path"].startswith(RUNS_DIR + "/") or ".." in r["path"]:
            raise CorruptionError(f"{where}: bad run entry {r!r}")
    d = h["directory"]
    if d is not None and (not isinstance(d, dict) or set(d) != {"path", "size", "crc", "files", "region_words"}
                          or not isinstance(d["path"], str) or not d["path"].startswith(RUNS_DIR + "/") or ".." in d["path"]
                          or not isinstance(d["files"], list) or not isinstance(d["region_words"], list)
                          or len(d["files"]) != len(d["region_words"])
                          or set(d["files"]) != {file_key(e) for e in h["files"]}):
        raise CorruptionError(f"{where}: bad directory entry")
    try:
        h["schema"] = check_schema(h["schema"])
    except SchemaError as e:
        raise CorruptionError(f"{where}: bad schema ({e})") from e
    return h


def _read_directory(store, h: dict, where: str) -> tuple | None:
    d = h["directory"]
    if d is None:
        return None
    from gpumat.host.segment import unpack_int_table

    data = store.read(d["path"])
    if len(data) != d["size"] or (zlib.crc32(data) & 0xFFFFFFFF) != d["crc"]:
        raise CorruptionError(f"{where}: directory snapshot {d['path']} fails its size or checksum")
    from gpumat.host.segment import table_fields

    packs = table_fields(data) == len(dir_fields(h["schema"]))
    table = unpack_int_table(data, dir_fields(h["schema"], packs), f"{where}: directory snapshot")
    if not packs:
        table["skip"], table["bcount"] = np.zeros_like(table["count"]), table["count"].copy()
    nfiles = len(d["files"])
    if len(table["file"]) and (table["file"].min() < 0 or table["file"].max() >= nfiles):
        raise CorruptionError(f"{where}: directory snapshot refers to a file it does not list")
    sk, bc, cnt = table["skip"], table["bcount"], table["count"]
    if len(cnt) and ((sk < 0) | (cnt <= 0) | (cnt > 1 << 40) | (bc > 1 << 40) | (sk > bc - cnt)).any():
        raise CorruptionError(f"{where}: directory snapshot places a stripe outside its blobs")
    return list(d["files"]), np.asarray(d["region_words"], np.int64), table


def _state_from_checkpoint(store, v: int) -> State:
    where = f"tier {store.root}: checkpoint of version {v}"
    h = read_checkpoint_header(store, v)
    store.prefetch([r["path"] for r in h["runs"]] + ([h["directory"]["path"]] if h["directory"] else []))
    parts, last = [], -1
    for r in h["runs"]:  # consecutive version ranges, oldest first
        rows = _read_run(store, r, where)
        if len(rows[1]) and (rows[1].min() <= last or rows[1].max() > v):
            raise CorruptionError(f"{where}: length runs overlap or hold later versions")
        last = int(rows[1].max()) if len(rows[1]) else last
        parts.append(LengthHistory(*rows, where=where))
    z = np.zeros(0, np.int64)
    lengths = layered(parts, where) if parts else LengthHistory(z, z, z, where)
    return State(v, h["schema"], h["block_size"], {file_key(e): e for e in h["files"]},
                 lengths, h["runs"], v, h["expired_before"], [list(x) for x in h["lost"]],
                 v, h["op"], float(h["created_unix"]), _read_directory(store, h, where), h.get("large_packs", True))


# ----------------------------------------------------------------------------- the witness


_WITNESS = struct.Struct("<8sQI")  # magic, version, crc32 of the first 16 bytes


def witness_bytes(v: int) -> bytes:
    head = struct.pack("<8sQ", b"GPUMLAST", v)
    return head + struct.pack("<I", zlib.crc32(head) & 0xFFFFFFFF)


def read_witness(store) -> int | None:
    """The newest committed version as the last writer left it in ``_lock`` (None: absent or unreadable;
    on an object store a failure to reach it is raised: the listing that would follow fails too)."""
    try:
        data = store.read(LOCK_FILE)[: _WITNESS.size]
    except CorruptionError:
        return None
    except TierError:
        if getattr(store, "remote", False):
            raise
        return None
    if len(data) != _WITNESS.size:
        return None
    magic, v, crc = _WITNESS.unpack(data)
    return v if magic == b"GPUMLAST" and crc == zlib.crc32(data[:16]) & 0xFFFFFFFF else None


def write_witness(fd: int, v: int) -> None:
    """Under the writer lock: record ``v`` as the newest committed version (no fsync: a witness, not the truth)."""
    os.pwrite(fd, witness_bytes(v), 0)


# ----------------------------------------------------------------------------- expiry


EXPIRED_FILE = "_expired"
_EXPIRED = struct.Struct("<8sQI")


def read_expired(store) -> int:
    """Versions below this were expired by vacuum (0 when none were)."""
    try:
        data = store.read(EXPIRED_FILE)
    except CorruptionError:  # absent: nothing expired
        return 0
    if len(data) != _EXPIRED.size:
        raise CorruptionError(f"tier {store.root}: {EXPIRED_FILE} is damaged")
    magic, v, crc = _EXPIRED.unpack(data)
    if magic != b"GPUMEXP2" or crc != zlib.crc32(data[:16]) & 0xFFFFFFFF:
        raise CorruptionError(f"tier {store.root}: {EXPIRED_FILE} is damaged")
    return v


def write_expired(store, v: int) -> None:
    """Record (durably, atomically) that versions below ``v`` are expired."""
    head = struct.pack("<8sQ", b"GPUMEXP2", v)
    store.replace(EXPIRED_FILE, head + struct.pack("<I", zlib.crc32(head) & 0xFFFFFFFF), durable=True)


# ----------------------------------------------------------------------------- versions


def latest_version(store) -> int | None:
    """The newest version number ever committed here (None: no tier), from the witness when it is
    consistent with the log, else from the names of records and checkpoints.

    A number named by the witness or a checkpoint but without its record is still the newest
    (opening it then fails with ``CorruptionError``): a lost record never lets a number be reused.
    """
    w = read_witness(store)
    if w is not None and store.exists_many([record_name(w), record_name(w + 1), record_name(w + 2)]) == [True, False, False]:
        return w
    # names above the witness are enough (it is a candidate itself); an object store lists from there
    logged = _versions_in(store.list(LOG_DIR, start_after=None if w is None else record_name(w).split("/")[1]), ".rec")
    ckpts = checkpoint_versions(store, after=w)
    cands = [x for x in (logged[-1] if logged else None, ckpts[-1] if ckpts else None, w) if x is not None]
    return max(cands) if cands else None


def load_state(store, v: int) -> State:
    """The state of version ``v``: the newest checkpoint at or below it, then the records after it.

    ``TierError`` for a version that expired or was rolled back by ``repair``; ``CorruptionError``
    for a missing or damaged record or checkpoint.
    """
    c = newest_checkpoint_at_or_below(store, v)
    state = None
    if c is not None:
        state = _state_from_checkpoint(store, c)
        if state.version == v:
            return state
    start = state.version + 1 if state is not None else 0
    if state is not None:
        lost = state.lost_at(v)
        if lost:
            raise_unavailable(store, v, state.expired_before, state.lost)
    store.prefetch([record_name(k) for k in range(start, v + 1) if state is None or not state.lost_at(k)])
    for k in range(start, v + 1):
        if state is not None and state.lost_at(k):
            continue
        try:
            h, rows, at = read_record(store, k)
        except CorruptionError:
            if state is not None and k < state.expired_before:
                raise_unavailable(store, v, state.expired_before, state.lost)
            raise
        if k == 0:
            try:
                schema = check_schema(h["schema"])
            except SchemaError as e:
                raise CorruptionError(f"tier {store.root}: record of version 0 has a bad schema ({e})") from e
            state = State.genesis(schema, h["block_size"], h.get("large_packs", True))
        elif state is None:
            raise CorruptionError(f"tier {store.root}: version {v} has no checkpoint or record to start from")
        state = _apply(state, h, rows, record_name(k), at, f"tier {store.root}: record of version {k}")
    if state is None or state.version != v:
        raise CorruptionError(f"tier {store.root}: version {v} cannot be rebuilt")
    return state


def raise_unavailable(store, v: int, expired_before: int, lost: list):
    """``TierError`` for version ``v`` when it expired or was lost to a repair (else nothing)."""
    r = next((x for x in lost if x[0] <= v <= x[1]), None)
    if r:
        raise TierError(f"tier {store.root}: version {v} was lost and rolled back by repair at version {r[2]} "
                        f"(versions {r[0]}..{r[1]}); pointers into it fail")
    if v < expired_before:
        raise TierError(f"tier {store.root}: version {v} has expired (vacuum keeps versions >= {expired_before}); "
                        "pointers into it stay valid against newer versions")


def advance(store, state: State, v: int) -> State:
    """``state`` moved forward to version ``v`` by replaying the records after it (a handle's refresh).

    A repair since ``state`` (a record rolling back, records of lost versions moved aside) sends it
    to a full load of ``v`` from its checkpoint instead.
    """
    if getattr(store, "remote", False) and v - state.version > 4 * CHECKPOINT_EVERY:
        # far behind on an object store: a checkpoint and a few records cost fewer requests
        return load_state(store, v)
    store.prefetch([record_name(k) for k in range(state.version + 1, v + 1)])
    for k in range(state.version + 1, v + 1):
        try:
            h, rows, at = read_record(store, k)
        except CorruptionError:
            return load_state(store, v)
        if h["op"] == "repair":
            return load_state(store, v)
        state = _apply(state, h, rows, record_name(k), at, f"tier {store.root}: record of version {k}")
    return state


def commit(store, state: State, op: str, add=(), remove=(), rows=None, payload=None, lost=None,
           created_unix: float | None = None, lock_fd: int | None = None) -> tuple[State, dict]:
    """Commit version ``state.version + 1`` (its data files already written and synced): create its
    record (``put_if_absent``), update the witness; return the new state and the record header.
    ``CommitConflict`` (a ``TierError``) if the number is taken: by a writer that did not hold the
    lock, or on an object store (no lock) by the writer that won the race for it."""
    header, buffers, payload_at = encode_record(state, op, list(add), list(remove), rows, payload, lost, created_unix)
    v = header["version"]
    if not store.put_if_absent(record_name(v), buffers):
        raise CommitConflict(f"tier {store.root}: version {v} was committed by another writer")
    if lock_fd is not None:
        write_witness(lock_fd, v)
    elif getattr(store, "remote", False):
        with contextlib.suppress(GpumatError):  # a hint, never trusted alone: the commit stands without it
            store.replace(LOCK_FILE, witness_bytes(v))
    new = _apply(state, header, rows, record_name(v), payload_at, f"tier {store.root}: record of version {v}")
    return new, header
