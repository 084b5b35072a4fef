"""The length history of a tier (docs/DESIGN.md §2): ``(user_id, version, length)`` rows, and the
questions asked of them (``length_v(u)``, a user's lengths over versions, the events each version
added).

Each append's commit record carries the new lengths of the users it touched (host/log.py); a
checkpoint refers to the rows of every earlier version in a few immutable *runs*. A handle keeps the
history in memory across commits: ``extend`` adds one version's rows without re-sorting the rest
(a small sorted delta on top of a sorted base, merged when it grows), so an append's cost does not
grow with the number of versions. ``length_v(u)`` is the length of the last row of ``u`` with
``version <= v`` (0 without one).

>>> L = LengthHistory(np.array([7, 3, 7]), np.array([1, 1, 2]), np.array([2, 1, 5]), where="doc")
>>> L.at(np.array([7, 7, 7, 3, 99]), np.array([0, 1, 2, 2, 2])).tolist()
[0, 2, 5, 1, 0]
>>> L.of_user(7)
[(1, 2), (2, 5)]
>>> L.events_per_version(3).tolist()
[0, 3, 3, 0]
>>> L2 = L.extend(np.array([3]), 4, np.array([4]), where="doc")
>>> L2.at(np.array([3, 3, 7]), np.array([3, 4, 4])).tolist(), len(L2)
([1, 4, 5], 4)
"""

from __future__ import annotations

import numpy as np

from gpumat.core.errors import CorruptionError

COLUMNS = ("user_id", "version", "length")


class LengthHistory:
    """Length history rows sorted by (user_id, version): ``length_v(u)`` = last row of u with version <= v."""

    def __init__(self, user, version, length, where: str):
        user, version, length = (np.asarray(a, dtype=np.int64) for a in (user, version, length))
        if len(user) > 1 and not ((user[1:] > user[:-1]) | ((user[1:] == user[:-1]) & (version[1:] > version[:-1]))).all():
            order = np.lexsort((version, user))  # stored runs are sorted already: no sort when opening
            user, version, length = user[order], version[order], length[order]
        self.user, self.version, self.length = user, version, length
        same = self.user[1:] == self.user[:-1]
        if (self.length < 0).any() or (self.version < 0).any() or (same & (self.length[1:] < self.length[:-1])).any():
            raise CorruptionError(f"{where}: length history is inconsistent (negative or shrinking lengths)")
        self._new_user = np.concatenate(([True], ~same)) if len(self.user) else np.zeros(0, bool)
        self.rank = np.cumsum(self._new_user) - 1
        self.users = self.user[self._new_user]
        self.span = int(self.version.max()) + 2 if len(self.version) else 1
        self.keys = self.rank * self.span + self.version

    def __len__(self) -> int:
        return len(self.user)

    @property
    def max_version(self) -> int:
        return int(self.version.max()) if len(self.version) else -1

    def rows(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every row, sorted by ``(user_id, version)``."""
        return self.user, self.version, self.length

    def found_at(self, users: np.ndarray, versions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(found, length)``: whether some row of ``users[i]`` has version ``<= versions[i]``, and the last one's length."""
        users = np.asarray(users, dtype=np.int64)
        versions = np.broadcast_to(np.asarray(versions, dtype=np.int64), users.shape)
        if len(self.users) == 0 or users.size == 0:
            return np.zeros(users.shape, dtype=bool), np.zeros(users.shape, dtype=np.int64)
        r = np.minimum(np.searchsorted(self.users, users), len(self.users) - 1)
        found = self.users[r] == users
        pos = np.searchsorted(self.keys, r * self.span + np.clip(versions, -1, self.span - 1), side="right") - 1
        ok = found & (pos >= 0)
        pos = np.maximum(pos, 0)
        ok &= self.rank[pos] == r
        return ok, np.where(ok, self.length[pos], 0)

    def at(self, users: np.ndarray, versions: np.ndarray) -> np.ndarray:
        """``length_{versions[i]}(users[i])``, int64, vectorized (versions broadcast against users)."""
        return self.found_at(users, versions)[1]

    def extend(self, user, version: int, length, where: str) -> "LengthHistory":
        """This history plus the rows of one new ``version`` (later than every row here)."""
        return LayeredLengths(self, [], where).extend(user, version, length, where)

    def num_users(self) -> int:
        """Users with at least one row (every row has a positive length: the users with events)."""
        return len(self.users)

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


class LayeredLengths(LengthHistory):
    """A sorted base plus up to ``MAX_PARTS`` small sorted parts of newer versions (newest last).

    ``extend`` adds a part; the parts are merged into one when there are too many, and into the
    base when they hold more than a quarter of the rows, so an append costs O(its rows) amortized
    (plus a logarithmic factor), whatever the number of versions.
    """

    MAX_PARTS = 16
    MERGE_MIN = 4096
    READS_UNMERGED = 4  # lookups answered part by part; then the parts are merged, once, for the next

    def __init__(self, base: LengthHistory, parts: list, where: str):  # noqa: D107 - merged lazily, no super()
        self.base, self.parts, self.where = base, parts, where
        self._merged = None
        self._reads = 0

    def __len__(self) -> int:
        return len(self.base) + sum(len(p) for p in self.parts)

    @property
    def max_version(self) -> int:
        return max([self.base.max_version] + [p.max_version for p in self.parts])

    def _full(self) -> LengthHistory:
        if self._merged is None:
            self._merged = _merge([self.base, *self.parts], self.where)
        return self._merged

    def __getattr__(self, name):  # user, version, length, users, ...: the merged arrays, built once
        if name in ("base", "parts", "where", "_merged", "_reads"):
            raise AttributeError(name)
        return getattr(self._full(), name)

    def rows(self):
        return self._full().rows()

    def found_at(self, users, versions):
        # a handle that only appends reads a few lengths per commit (part by part: no merge of the base
        # per version); one that keeps reading one version (an epoch's batches) merges once
        if self._merged is not None or self._reads >= self.READS_UNMERGED:
            return self._full().found_at(users, versions)
        self._reads += 1
        found, out = self.base.found_at(users, versions)
        for part in self.parts:  # oldest to newest: a newer part's row wins
            f, n = part.found_at(users, versions)
            found |= f
            out = np.where(f, n, out)
        return found, out

    def at(self, users, versions):
        return self.found_at(users, versions)[1]

    def num_users(self):
        if self._merged is not None:
            return len(self._merged.users)
        return len(np.unique(np.concatenate([self.base.users, *(p.users for p in self.parts)])))

    def live_users(self, version):
        return self._full().live_users(version)

    def of_user(self, user):
        return self._full().of_user(user)

    def events_per_version(self, version):
        return self._full().events_per_version(version)

    def extend(self, user, version, length, where):
        if not len(user):
            return self
        part = LengthHistory(user, np.full(len(user), version, np.int64), length, where)
        if part.version.min() <= self.max_version:
            raise CorruptionError(f"{where}: length rows of version {version} arrive after version {self.max_version}")
        parts = [*self.parts, part]
        in_parts = sum(len(p) for p in parts)
        if in_parts > max(self.MERGE_MIN, len(self.base) // 4):
            return _merge([self.base, *parts], where)
        if len(parts) > self.MAX_PARTS:
            parts = [_merge(parts, where)]
        return LayeredLengths(self.base, parts, where)


def _merge(histories: list, where: str) -> LengthHistory:
    rows = [h.rows() for h in histories]
    return LengthHistory(*(np.concatenate([r[i] for r in rows]) for i in range(3)), where=where)


def encode_rows(user, version, length) -> bytes:
    """``(user_id, version, length)`` rows, compact (delta-coded, zstd): how records and runs store them."""
    from gpumat.host.segment import pack_int_table

    return pack_int_table({"user_id": user, "version": version, "length": length}, list(COLUMNS))


def decode_rows(data, where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rows of ``encode_rows``; anything else is a ``CorruptionError`` naming ``where``."""
    from gpumat.host.segment import unpack_int_table

    t = unpack_int_table(data, list(COLUMNS), f"{where}: length rows")
    return t["user_id"], t["version"], t["length"]


def layered(histories: list, where: str) -> LengthHistory:
    """Histories of consecutive version ranges (oldest first) as one, without merging them."""
    if len(histories) == 1:
        return histories[0]
    return LayeredLengths(histories[0], list(histories[1:]), where)
