"""Keeping a tier healthy for years (SPEC §7): retention (``vacuum``), recovery from lost or damaged
newest metadata (``repair``), pinned opens that say why a version is gone, and the checks that keep
``create`` from taking over a directory that is not a tier.

Vacuum holds the writer lock, so no writer on this machine is mid-commit; files nobody refers to
(debris of killed writers) are removed only once older than ``min_age_s``, and nothing a version
committed within ``min_age_s`` needs is ever removed. On an object store there is no lock: the same
rules hold because they rest on ages (``LastModified`` against the store's clock) and on what
committed versions refer to, never on the lock; run one vacuum (or repair) of a tier at a time there.
"""

from __future__ import annotations

import dataclasses
import time

from gpumat.core.errors import CorruptionError, SchemaError, TierError
from gpumat.host import log
from gpumat.host.store import TMP_DIR
from gpumat.host.writer import COMPACTED_LEVEL, writer_lock

OLD_MANIFEST_DIR = "_manifests"  # format 1 (one full manifest per version)
QUARANTINE_DIR = "_quarantine"  # damaged metadata that repair moved aside


def has_tier(store) -> bool:
    """Whether ``store`` holds a tier (of this format or format 1)."""
    return log.latest_version(store) is not None or bool(_old_manifests(store))


def has_old_format(store) -> bool:
    """Whether ``store`` holds a format-1 tier (one manifest per version) that ``upgrade`` converts."""
    return bool(_old_manifests(store))


def _old_manifests(store) -> list[str]:
    return [n for n in store.list(OLD_MANIFEST_DIR) if n.endswith(".json")]


def check_old_format(store) -> None:
    """``TierError`` with the way out when ``store`` holds a format-1 tier."""
    if _old_manifests(store):
        raise TierError(f"the tier at {store.root} is in format 1 (one manifest per version), which this "
                        f"release reads only to convert it: run `gpumat upgrade {store.root}`")


def foreign_entries(store) -> list[str]:
    """Entries of the tier directory that are not the skeleton an interrupted ``create`` leaves
    (the empty subdirectories, temporary files, the lock). ``[]`` for a missing or empty directory."""
    out = []
    for name, is_dir in sorted(store.list_entries("")):
        if name == log.LOCK_FILE and not is_dir:
            continue
        if name in log.DIRS and is_dir and (name == TMP_DIR or not store.list(name)):
            continue
        out.append(name)
    return out


def _newest_checkpoint_header(store) -> dict | None:
    ckpts = log.checkpoint_versions(store)
    return log.read_checkpoint_header(store, ckpts[-1]) if ckpts else None


def load_pinned(store, v: int) -> log.State:
    """The state of version ``v`` for a pinned handle; ``TierError`` if it expired or was lost."""
    newest = _newest_checkpoint_header(store)
    log.raise_unavailable(store, v, log.read_expired(store), [list(x) for x in (newest or {}).get("lost", [])])
    return log.load_state(store, v)


def metadata_bytes(store, state: log.State) -> int:
    """Bytes of the tier's metadata on disk: records (less the data inline in them), checkpoints, runs."""
    total = 0
    for d in (log.LOG_DIR, log.CKPT_DIR, log.RUNS_DIR):
        for name in store.list(d):
            total += store.stat(f"{d}/{name}")[0]
    inline = sum(e["size"] for e in state.files.values() if e["path"].startswith(log.LOG_DIR + "/"))
    return total - inline


# ----------------------------------------------------------------------------- vacuum


def vacuum(store, keep_last: int | None, min_age_s: float, lock_timeout: float) -> dict:
    """See ``Tier.vacuum``. Under the writer lock:

    1. ``P``: the oldest version committed within ``min_age_s`` (the newest if none is that recent);
    2. the first retained version ``E``: with ``keep_last=N``, ``min(latest - N + 1, P)``; without,
       the newest version at or before ``P`` that made files obsolete (compaction or a merge of small
       segments): versions before it can no longer be read whole, so they expire;
    3. a checkpoint at ``E`` and the expiry mark, then: records and checkpoints older than ``E`` (a
       record whose inline data is still live stays), data files and runs no retained version or
       checkpoint refers to, temporary files; unreferenced files only when older than ``min_age_s``.
    """
    if keep_last is not None and (isinstance(keep_last, bool) or not isinstance(keep_last, int) or keep_last < 1):
        raise SchemaError(f"keep_last must be None or an integer >= 1, got {keep_last!r}")
    if isinstance(min_age_s, bool) or not isinstance(min_age_s, (int, float)) or not min_age_s >= 0:
        raise SchemaError(f"min_age_s must be a number >= 0, got {min_age_s!r}")
    cutoff = time.time() - float(min_age_s)  # for commit times (the writers' clocks)
    removed, freed = 0, 0

    def rm(path: str) -> None:
        nonlocal removed, freed
        n = store.delete(path)
        removed += 1
        freed += n

    with writer_lock(store, lock_timeout):
        latest = log.latest_version(store)
        if latest is None:
            raise TierError(f"no tier at {store.root}")
        state = log.load_state(store, latest)
        expired = max(log.read_expired(store), state.expired_before)
        logged = [v for v in log.logged_versions(store) if v >= expired]
        store.prefetch([log.record_name(v) for v in logged])
        headers = {v: log.read_record(store, v)[0] for v in logged}
        recent = [v for v in logged if headers[v]["created_unix"] >= cutoff]
        P = recent[0] if recent else latest
        removed_at = {key: v for v, h in headers.items() for key in h["remove"]}
        if keep_last is not None:
            E = max(expired, min(latest - keep_last + 1, P))
        else:
            E = max([expired] + [v for v, h in headers.items() if h["remove"] and v <= P])
        E = min(E, latest)
        # what retained versions need: the newest state's files, and files removed after E
        needed = set(state.files) | {key for key, v in removed_at.items() if v > E}
        needed_paths = {key.split("@")[0] for key in needed}
        if E > log.read_expired(store):
            if E not in log.checkpoint_versions(store):
                log.write_checkpoint(store, dataclasses.replace(log.load_state(store, E), expired_before=E))
            log.write_expired(store, E)
        # metadata of expired versions
        for v in log.logged_versions(store):
            if v < E and log.record_name(v) not in needed_paths:
                rm(log.record_name(v))
        ckpts = log.checkpoint_versions(store)
        for c in ckpts:
            if c < E:
                rm(log.checkpoint_name(c))
        # runs the remaining checkpoints refer to (and the newest state may still write one)
        keep_runs = {r["path"] for r in state.runs}
        for c in log.checkpoint_versions(store):
            h = log.read_checkpoint_header(store, c)
            keep_runs |= {r["path"] for r in h["runs"]} | ({h["directory"]["path"]} if h["directory"] else set())
        file_cutoff = store.now() - float(min_age_s)  # for file times (the store's clock: LastModified)
        for d, keep in ((log.RUNS_DIR, keep_runs), (log.DATA_DIR, needed_paths), (log.LEGACY_DATA_DIR, needed_paths)):
            for name in store.list(d):
                path = f"{d}/{name}"
                if path in keep:
                    continue
                superseded = d != log.RUNS_DIR and any(k.split("@")[0] == path for k in removed_at)
                if superseded or store.stat(path)[1] < file_cutoff:
                    rm(path)
        for name in store.list(TMP_DIR):
            if store.stat(f"{TMP_DIR}/{name}")[1] < file_cutoff:
                rm(f"{TMP_DIR}/{name}")
    return {"files_removed": removed, "bytes_freed": freed, "expired_before": E,
            "versions_retained": latest - E + 1 - sum(min(hi, latest) - max(lo, E) + 1
                                                      for lo, hi, _ in state.lost if hi >= E)}


# ----------------------------------------------------------------------------- repair


def repair(store, roll_back: bool, lock_timeout: float) -> dict:
    """Diagnose the newest versions and, with ``roll_back``, recover.

    Returns ``{"ok": bool, "latest": int, "intact": int, "problem": str | None, "action": str}``.
    ``ok``: the newest version opens. Otherwise ``intact`` is the newest version that does, and
    rolling back commits version ``latest + 1`` with exactly its state: the damaged or missing
    records and checkpoints of the versions in between move to ``_quarantine/``, their numbers are
    never reused, and opening one of them says it was lost (pointers into them fail rather than
    return other events).
    """
    with writer_lock(store, lock_timeout) as fd:
        hi = log.latest_version(store)
        if hi is None:
            check_old_format(store)
            raise TierError(f"no tier at {store.root}")
        try:
            log.load_state(store, hi)
            return {"ok": True, "latest": hi, "intact": hi, "problem": None, "action": "none: the tier is intact"}
        except CorruptionError as e:
            problem = " ".join(str(e).split())
        expired = log.read_expired(store)
        intact = None
        for v in range(hi - 1, expired - 1, -1):
            try:
                state = log.load_state(store, v)
                intact = v
                break
            except (CorruptionError, TierError):
                continue
        if intact is None:
            raise CorruptionError(f"tier {store.root}: no version from {expired} to {hi} can be rebuilt ({problem})")
        action = (f"commit version {hi + 1} equal to version {intact}; versions {intact + 1}..{hi} become lost "
                  "(their numbers are never reused)")
        report = {"ok": False, "latest": hi, "intact": intact, "problem": problem, "action": action}
        if not roll_back:
            return report
        store.makedirs(QUARANTINE_DIR)
        for v in range(intact + 1, hi + 1):
            for name in (log.record_name(v), log.checkpoint_name(v)):
                if store.exists(name):
                    store.move(name, f"{QUARANTINE_DIR}/{name.replace('/', '_')}")
        state = dataclasses.replace(state, version=hi)
        new, _ = log.commit(store, state, "repair", lost=[intact + 1, hi, hi + 1], lock_fd=fd)
        log.write_checkpoint(store, new)
        report["action"] = "done: " + action
        report["version"] = new.version
        return report


# ----------------------------------------------------------------------------- format 1


OLD_SEGMENT_DIR, OLD_LENGTH_DIR = "_segments", "_lengths"


def _read_old_manifest(store, v: int) -> dict:
    import hashlib
    import json

    path = f"{OLD_MANIFEST_DIR}/{v:020d}.json"
    data = store.read(path)
    body, sep, tail = data.rstrip(b"\n").rpartition(b"\nsha256:")
    if not sep or hashlib.sha256(body).hexdigest().encode() != tail:
        raise CorruptionError(f"tier {store.root}: format-1 manifest {path} fails its checksum")
    try:
        m = json.loads(body)
        ok = m["version"] == v and isinstance(m["segments"], list) and isinstance(m["lengths"], list)
    except (ValueError, KeyError, TypeError) as e:
        raise CorruptionError(f"tier {store.root}: format-1 manifest {path} cannot be read ({e})") from e
    if not ok:
        raise CorruptionError(f"tier {store.root}: format-1 manifest {path} is inconsistent")
    return m


def upgrade(store, lock_timeout: float = 600.0) -> dict:
    """Convert a format-1 tier in place (``gpumat upgrade``): its newest version becomes a checkpoint.

    The data files stay where they are (format 1's ``_segments/`` is a valid data directory); the
    length files become one run, so every pointer, into any version, keeps its meaning. Versions
    before the newest had only format-1 manifests: they become expired (``open(version=)`` says
    so). Crash-safe: the checkpoint is committed atomically before the old manifests are removed,
    and running ``upgrade`` again finishes an interrupted one.
    """
    import zlib

    import numpy as np
    import pyarrow as pa

    from gpumat.host.lengths import LengthHistory
    from gpumat.host.schema import check_schema
    from gpumat.host.segment import open_segment

    old = sorted(int(n[:20]) for n in _old_manifests(store) if n[:20].isdigit())
    if not old:
        raise TierError(f"no format-1 tier at {store.root}")
    V = old[-1]
    store.makedirs(*log.DIRS)
    with writer_lock(store, lock_timeout) as fd:
        if log.latest_version(store) != V:  # else: a previous run committed the checkpoint; only clean up
            m = _read_old_manifest(store, V)
            try:
                schema = check_schema(m["schema"])
            except SchemaError as e:
                raise CorruptionError(f"tier {store.root}: format-1 manifest of version {V} has a bad schema ({e})") from e
            files = {}
            for e in m["segments"]:
                seg = open_segment(store, e["path"], 0, e["size"], e["index_crc"], list(schema), m["block_size"])
                entry = {"path": e["path"], "offset": 0, "size": e["size"], "index_crc": e["index_crc"],
                         "events": int(seg.count.sum()), "level": COMPACTED_LEVEL}
                files[log.file_key(entry)] = entry
            parts = []
            for e in m["lengths"]:
                data = store.read(e["path"])
                if len(data) != e["size"] or (zlib.crc32(data) & 0xFFFFFFFF) != e["crc"]:
                    raise CorruptionError(f"tier {store.root}: format-1 length file {e['path']} fails its checksum")
                t = pa.ipc.open_file(pa.BufferReader(data)).read_all()
                parts.append([np.asarray(t.column(c).to_numpy(), np.int64) for c in ("user_id", "version", "length")])
            rows = [np.concatenate([p[i] for p in parts]) if parts else np.zeros(0, np.int64) for i in range(3)]
            state = log.State(V, schema, m["block_size"], files, LengthHistory(*rows, where=f"tier {store.root}"),
                              [], -1, expired_before=V, op=m["op"], created_unix=float(m["created_unix"]))
            log.write_checkpoint(store, state)
            log.write_expired(store, V)
            log.write_witness(fd, V)
        state = log.load_state(store, V)
        live = {e["path"] for e in state.files.values()}
        for d in (OLD_MANIFEST_DIR, OLD_LENGTH_DIR, OLD_SEGMENT_DIR):
            for name in store.list(d):
                if f"{d}/{name}" not in live:
                    store.delete(f"{d}/{name}")
    return {"version": V, "segments": len(state.files), "length_rows": len(state.lengths)}
