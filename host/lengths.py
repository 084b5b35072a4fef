"""The length history of a tier (docs/DESIGN.md §2): ``(user_id, version, length)`` rows stored in
immutable, checksummed Arrow IPC files, and the questions asked of them (``length_v(u)``, a user's
lengths over versions, the events each version added).

Each append writes the new lengths of the users it touched; a compaction writes one consolidated file.
``length_v(u)`` is the length of the last row of ``u`` with ``version <= v`` (0 without one).

>>> L = LengthHistory(np.array([7, 3, 7]), np.array([1, 1, 2]), np.array([2, 1, 5]), where="doc")
>>> L.at(np.array([7, 7, 7, 3, 99]), np.array([0, 1, 2, 2, 2])).tolist()
[0, 2, 5, 1, 0]
>>> L.of_user(7)
[(1, 2), (2, 5)]
>>> L.events_per_version(3).tolist()
[0, 3, 3, 0]
"""

from __future__ import annotations

import os
import uuid
import zlib

import numpy as np
import pyarrow as pa

from gpumat.core.errors import CorruptionError
from gpumat.host.manifest import LENGTH_DIR

COLUMNS = ("user_id", "version", "length")


class LengthHistory:
    """Length history rows sorted by (user_id, version): ``length_v(u)`` = last row of u with version <= v."""

    def __init__(self, user, version, length, where: str):
        order = np.lexsort((version, user))
        self.user, self.version, self.length = user[order], version[order], length[order]
        same = self.user[1:] == self.user[:-1]
        if (self.length < 0).any() or (self.version < 0).any() or (same & (self.length[1:] < self.length[:-1])).any():
            raise CorruptionError(f"{where}: length history is inconsistent (negative or shrinking lengths)")
        self._new_user = np.concatenate(([True], ~same)) if len(self.user) else np.zeros(0, bool)
        self.rank = np.cumsum(self._new_user) - 1
        self.users = self.user[self._new_user]
        self.span = int(self.version.max()) + 2 if len(self.version) else 1
        self.keys = self.rank * self.span + self.version

    def at(self, users: np.ndarray, versions: np.ndarray) -> np.ndarray:
        """``length_{versions[i]}(users[i])``, int64, vectorized (versions broadcast against users)."""
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

    def live_users(self, version: int) -> np.ndarray:
        """The users (ascending) with at least one event at ``version``."""
        return self.users[self.at(self.users, np.full(len(self.users), version, np.int64)) > 0]

    def of_user(self, user: int) -> list[tuple[int, int]]:
        """``(version, length)`` at every version where ``user``'s length changed, oldest first."""
        a, b = np.searchsorted(self.user, user, "left"), np.searchsorted(self.user, user, "right")
        out: list[tuple[int, int]] = []
        for v, n in zip(self.version[a:b].tolist(), self.length[a:b].tolist()):
            if n != (out[-1][1] if out else 0):
                out.append((v, n))
        return out

    def events_per_version(self, version: int) -> np.ndarray:
        """int64 ``[version + 1]``: the events version ``v`` added to all histories, for each ``v <= version``."""
        prev = np.zeros(len(self.length), np.int64)
        if len(self.length):
            prev[1:] = self.length[:-1]
            prev[self._new_user] = 0
        out = np.zeros(version + 1, np.int64)
        keep = self.version <= version
        np.add.at(out, self.version[keep], (self.length - prev)[keep])
        return out


def read_lengths_file(root: str, entry: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``(user_id, version, length)`` int64 arrays of a manifest's length-file ``entry``, verified."""
    path = os.path.join(root, entry["path"])
    try:
        with open(path, "rb") as f:
            data = f.read()
        if len(data) != entry["size"] or (zlib.crc32(data) & 0xFFFFFFFF) != entry["crc"]:
            raise CorruptionError(f"length file {path}: size or checksum mismatch")
        t = pa.ipc.open_file(pa.BufferReader(data)).read_all()
        if t.column_names != list(COLUMNS) or any(c.type != pa.int64() or c.null_count for c in t.columns):
            raise CorruptionError(f"length file {path}: unexpected columns")
        return tuple(np.asarray(c.to_numpy(), dtype=np.int64) for c in t.columns)
    except CorruptionError:
        raise
    except (OSError, pa.ArrowException, ValueError) as e:
        raise CorruptionError(f"length file {path}: cannot be read ({type(e).__name__}: {e})") from e


def load_length_history(root: str, entries: list[dict], version: int, where: str) -> LengthHistory:
    """The length history of a version from its manifest's length-file ``entries``."""
    parts = [read_lengths_file(root, e) for e in entries]
    cat = [np.concatenate([p[i] for p in parts]) if parts else np.zeros(0, np.int64) for i in range(3)]
    if len(cat[1]) and cat[1].max() > version:
        raise CorruptionError(f"{where}: length history of version {version} has later versions")
    return LengthHistory(*cat, where=where)


def write_lengths_file(root: str, user, version, length) -> dict:
    """Write a new length file (fsynced, fresh uuid name); return its manifest entry ``{path, size, crc}``."""
    t = pa.table({c: pa.array(a, pa.int64()) for c, a in zip(COLUMNS, (user, version, length))})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, t.schema) as w:
        w.write_table(t)
    data = sink.getvalue().to_pybytes()
    rel = f"{LENGTH_DIR}/{uuid.uuid4().hex}.arrow"
    with open(os.path.join(root, rel), "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return {"path": rel, "size": len(data), "crc": zlib.crc32(data) & 0xFFFFFFFF}
