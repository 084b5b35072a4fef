"""Writing the data files of a new version (docs/DESIGN.md §2): for ``append``, each user's new events
as stripes of one new segment file plus a length file of the touched users; for ``compact``, every
history rewritten into as few stripes as possible plus one consolidated length file. Also the
writers' lock. Nothing here commits: the caller links the manifest (host/manifest.py), so files of
a writer that dies before it are never visible.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import uuid

import numpy as np

from gpumat.core.errors import TierError
from gpumat.host import codec
from gpumat.host.lengths import write_lengths_file
from gpumat.host.manifest import LENGTH_DIR, LOCK_FILE, SEGMENT_DIR, fsync_dir
from gpumat.host.ranges import ranges
from gpumat.host.reader import VersionReader
from gpumat.host.segment import write_segment

MAX_STRIPE = 1 << 20  # events per stripe: bounds one blob, keeps compaction's output pieces large
SEGMENT_EVENTS = 1 << 22  # compaction starts a new segment file after this many events (bounds memory)


@contextlib.contextmanager
def writer_lock(root: str):
    """Hold the tier's writer lock (``fcntl.flock`` on ``_lock``; readers never take it)."""
    try:
        fd = os.open(os.path.join(root, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise TierError(f"cannot lock tier {root}: {e}") from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the flock (and a killed writer's lock dies with it)


def write_stripes(root: str, schema: dict, block_size: int, user, start, count, values: dict) -> dict:
    """Encode stripes (sorted by (user, start); ``values[c]`` back to back) into a new segment file.

    Returns the manifest entry ``{path, size, index_crc}``; the caller fsyncs the directory.
    """
    blobs = {c: codec.encode_stripes(values[c], count, block_size) for c in schema}
    rel = f"{SEGMENT_DIR}/{uuid.uuid4().hex}.gseg"
    size, crc = write_segment(os.path.join(root, rel), list(schema), user, start, count, blobs)
    return {"path": rel, "size": size, "index_crc": crc}


def append_files(reader: VersionReader, events: dict[str, np.ndarray]) -> tuple[list[dict], list[dict]]:
    """Write the data files that append validated ``events`` (host/events.py) on top of ``reader``'s
    version; return the next version's ``(segments, lengths)`` manifest lists (no files for no events)."""
    m = reader.manifest
    segments, lengths = list(m["segments"]), list(m["lengths"])
    uid = events["user_id"]
    if not len(uid):
        return segments, lengths
    order = np.argsort(uid, kind="stable")  # stable: table order inside each user
    us = uid[order]
    first = np.flatnonzero(np.concatenate(([True], us[1:] != us[:-1])))
    users = us[first]
    per_user = np.diff(np.append(first, len(us)))
    old = reader.length_history().at(users, np.full(len(users), reader.version))
    nstr, cnt = codec.block_counts(per_user, MAX_STRIPE)
    j = ranges(np.zeros(len(users), np.int64), nstr)
    values = {c: events[c][order] for c in reader.schema}
    segments.append(write_stripes(reader.root, reader.schema, reader.block_size, np.repeat(users, nstr), np.repeat(old, nstr) + j * MAX_STRIPE, cnt, values))
    lengths.append(write_lengths_file(reader.root, users, np.full(len(users), reader.version + 1), old + per_user))
    fsync_dir(os.path.join(reader.root, SEGMENT_DIR))
    fsync_dir(os.path.join(reader.root, LENGTH_DIR))
    return segments, lengths


def compactable(reader: VersionReader) -> bool:
    """Whether compaction would reduce the number of stripes: some user's history is in more stripes
    than the ``ceil(length / MAX_STRIPE)`` that compaction writes."""
    d = reader.directory()
    if not len(d):
        return False
    first = np.flatnonzero(np.concatenate(([True], d.user_id[1:] != d.user_id[:-1])))
    stripes = np.diff(np.append(first, len(d)))
    totals = np.add.reduceat(d.count, first)
    return bool((stripes > (totals + MAX_STRIPE - 1) // MAX_STRIPE).any())


def compact_files(reader: VersionReader) -> tuple[list[dict], list[dict]]:
    """Write every history of ``reader``'s version as few stripes (same events, same positions) in new
    segment files of about ``SEGMENT_EVENTS`` events, and one consolidated length file (every row, so
    every older version's lengths stay answerable); return the ``(segments, lengths)`` lists."""
    d = reader.directory()
    L = reader.length_history()
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
            values = {c: reader.decode_stripes(c, si) for c in reader.schema}
            segments.append(write_stripes(reader.root, reader.schema, reader.block_size, np.repeat(d.user_id[first[us]], nstr), j * MAX_STRIPE, cnt, values))
        fsync_dir(os.path.join(reader.root, SEGMENT_DIR))
    lengths = [write_lengths_file(reader.root, L.user, L.version, L.length)]
    fsync_dir(os.path.join(reader.root, LENGTH_DIR))
    return segments, lengths
