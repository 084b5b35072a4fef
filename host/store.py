"""The bytes under a tier: named immutable files in a directory, read whole or by ranges, created once.

Every file a tier writes is immutable and created exactly once, so the store needs only a few
operations: create a new file (``write_new``), create a file that must not exist yet, atomically
(``put_if_absent``: the commit primitive), read whole or at an offset, list, stat and delete. The
rest of host/ talks to a tier's bytes only through here, so a different store (an object store)
is a second implementation of this interface.

``LocalStore`` keeps a bounded pool of open files (``FilePool``, shared by every handle of the
process), reads with ``pread`` and never memory-maps: a file truncated under a reader is a short
read (``CorruptionError``), never a ``SIGBUS``.

OS failures say what happened where: a write that fails (no space, no inodes, permission denied,
name too long, too many open files, a read-only file system) is a ``TierError`` naming the tier,
the file and the cause; a listed file that is missing or too short is a ``CorruptionError``; any
other failure to read is a ``TierError`` (never mistaken for bad bytes).
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import time
import uuid
from collections import OrderedDict

from gpumat.core.errors import CorruptionError, TierError

TMP_DIR = "_tmp"  # scratch for files being written: never read, swept by vacuum


def describe_os_error(e: OSError) -> str:
    """``'No space left on device (ENOSPC)'``: the cause of an OS error, in words and by name."""
    name = errno.errorcode.get(e.errno, "") if e.errno else ""
    text = e.strerror or str(e)
    return f"{text} ({name})" if name else text


class FilePool:
    """At most ``capacity`` open read-only file descriptors, least recently used closed first.

    Shared by every handle of the process, so a tier with thousands of files stays far below
    ``ulimit -n``. Thread-safe; a descriptor is never closed while a read on it is in flight.
    """

    def __init__(self, capacity: int = 64):
        self.capacity = max(1, int(capacity))
        self._fds: OrderedDict[str, list] = OrderedDict()  # path -> [fd, readers in flight]
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def fd(self, path: str, fresh: bool = False):
        """A descriptor of ``path``; ``fresh``: make sure it is the file now at ``path`` (a cached one
        keeps reading a file deleted or renamed since: right for immutable files a reader is already
        using, wrong for a reader opening the file anew)."""
        with self._lock:
            entry = self._fds.get(path)
            if entry is not None and fresh:
                st = os.stat(path)  # FileNotFoundError if it is gone
                cur = os.fstat(entry[0])
                if (st.st_ino, st.st_dev) != (cur.st_ino, cur.st_dev):
                    del self._fds[path]
                    if entry[1] == 0:
                        os.close(entry[0])
                    entry = None
            if entry is None:
                entry = [os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)), 0]
                self._fds[path] = entry
            self._fds.move_to_end(path)
            entry[1] += 1
            self._evict()
        try:
            yield entry[0]
        finally:
            with self._lock:
                entry[1] -= 1
                if entry[1] == 0 and self._fds.get(path) is not entry:
                    os.close(entry[0])  # evicted or forgotten while in use: close now
                self._evict()

    def _evict(self) -> None:
        for path in list(self._fds):
            if len(self._fds) <= self.capacity:
                break
            entry = self._fds[path]
            if entry[1] == 0:
                del self._fds[path]
                os.close(entry[0])

    def forget(self, path: str) -> None:
        """Close ``path``'s descriptor (deleted files); an in-flight read finishes first."""
        with self._lock:
            entry = self._fds.pop(path, None)
            if entry is not None and entry[1] == 0:
                os.close(entry[0])

    def __len__(self) -> int:
        return len(self._fds)


POOL = FilePool(int(os.environ.get("GPUMAT_OPEN_FILES", "64")))


class IOStats:
    """Counters of what a store asked of its storage, cumulative and thread-safe.

    ``requests`` counts every request sent (each retry too; locally: each read, write, stat, list,
    delete call), split by kind in ``get``/``put``/``head``/``list``/``delete``/``copy``; ``retries``
    those that were retries; ``bytes_read``/``bytes_written`` the payload bytes moved; ``cache_hits``
    and ``cache_hit_bytes`` the pages an object store served from its local cache instead;
    ``request_s`` the seconds spent in requests (summed over concurrent ones); ``blocks_read`` and
    ``block_runs`` the encoded blocks the readers asked for and the runs of consecutive blocks they
    came in (so ``get / block_runs`` is the GETs per coalesced run). ``snapshot()`` returns a dict;
    ``IOStats.delta(after, before)`` the difference of two (per batch, per epoch).
    """

    FIELDS = ("requests", "get", "put", "head", "list", "delete", "copy", "retries", "bytes_read",
              "bytes_written", "cache_hits", "cache_hit_bytes", "request_s", "blocks_read", "block_runs")

    def __init__(self):
        self._lock = threading.Lock()
        self._c = dict.fromkeys(self.FIELDS, 0)

    def add(self, **counts) -> None:
        with self._lock:
            for k, v in counts.items():
                self._c[k] += v

    def request(self, kind: str, seconds: float = 0.0, nread: int = 0, nwritten: int = 0, retry: bool = False) -> None:
        with self._lock:
            c = self._c
            c["requests"] += 1
            c[kind] += 1
            c["request_s"] += seconds
            c["bytes_read"] += nread
            c["bytes_written"] += nwritten
            c["retries"] += bool(retry)

    def snapshot(self) -> dict:
        with self._lock:
            return dict(self._c)

    @staticmethod
    def delta(after: dict, before: dict) -> dict:
        return {k: after[k] - before.get(k, 0) for k in after}


def _nbytes(data) -> int:
    return sum(memoryview(b).nbytes for b in data) if isinstance(data, (list, tuple)) else memoryview(data).nbytes


class LocalStore:
    """A tier's files in a local directory ``root`` (paths are relative, ``/``-separated)."""

    remote = False  # flock, fsync and atomic rename exist here; object stores have none of them
    coalesce_gap_bytes = 32 << 10  # Segment.read_words reads ranges closer than this as one
    max_request_bytes = None  # no cap on one read

    def __init__(self, root: str):
        self.root = root
        self.io = IOStats()

    def stats(self) -> dict:
        """What this store has read and written so far (``IOStats``; a local "request" is one call)."""
        return self.io.snapshot()

    def now(self) -> float:
        """The clock file times are compared with (vacuum's ``min_age_s``)."""
        return time.time()

    def __repr__(self) -> str:
        return f"LocalStore({self.root!r})"

    def full(self, path: str) -> str:
        return os.path.join(self.root, *path.split("/"))

    # ------------------------------------------------------------------ errors
    def write_error(self, e: OSError, path: str, what: str) -> TierError:
        return TierError(f"tier {self.root}: cannot {what} {path or 'the tier directory'}: {describe_os_error(e)}")

    def read_error(self, e: OSError, path: str) -> Exception:
        if isinstance(e, FileNotFoundError):
            return CorruptionError(f"tier {self.root}: file {path} is missing")
        return TierError(f"tier {self.root}: cannot read {path}: {describe_os_error(e)}")

    # ------------------------------------------------------------------ reads
    def read(self, path: str) -> bytes:
        """The whole file."""
        try:
            with open(self.full(path), "rb") as f:
                data = f.read()
        except OSError as e:
            raise self.read_error(e, path) from e
        self.io.request("get", nread=len(data))
        return data

    def read_at(self, path: str, offset: int, n: int, fresh: bool = False) -> bytes:
        """``n`` bytes at ``offset``; fewer (the file is shorter than its metadata says) is corruption.
        ``fresh``: read the file now at ``path``, not one a pooled descriptor still holds."""
        full = self.full(path)
        try:
            with POOL.fd(full, fresh) as fd:
                data = os.pread(fd, n, offset)
        except OSError as e:
            raise self.read_error(e, path) from e
        self.io.request("get", nread=len(data))
        if len(data) != n:
            raise CorruptionError(f"tier {self.root}: file {path} is shorter than recorded "
                                  f"({len(data)} of {n} bytes at offset {offset}): truncated?")
        return data

    def read_into(self, path: str, offset: int, buf: memoryview) -> None:
        """Fill ``buf`` from ``offset`` (one ``preadv``, ``fetch``); a short read is corruption."""
        self.fetch([(path, offset, buf)])

    def fetch(self, reqs) -> None:
        """Fill each ``(path, offset, writable byte view)`` of ``reqs``: one ``preadv`` each, a file's
        ranges under one pooled descriptor (a batch reads tens of ranges of one segment); a short
        read is corruption."""
        by_path: dict = {}
        for path, offset, view in reqs:
            if len(view):
                by_path.setdefault(path, []).append((offset, view))
        for path, items in by_path.items():
            reads = nbytes = 0
            try:
                with POOL.fd(self.full(path)) as fd:
                    for offset, view in items:
                        got = os.preadv(fd, [view], offset)
                        reads, nbytes = reads + 1, nbytes + got
                        if got != len(view):
                            raise CorruptionError(f"tier {self.root}: file {path} is shorter than recorded "
                                                  f"({got} of {len(view)} bytes at offset {offset}): truncated?")
            except OSError as e:
                raise self.read_error(e, path) from e
            finally:  # every read made counts, a short one too
                self.io.add(requests=reads, get=reads, bytes_read=nbytes)

    def prefetch(self, paths) -> None:
        """Object stores read these whole files ahead, concurrently; the page cache does it here."""

    def warm(self, ranges) -> None:
        """Object stores read these ``(path, offset, n)`` ranges into their cache ahead; nothing here."""

    def exists(self, path: str) -> bool:
        self.io.request("head")
        try:
            os.stat(self.full(path))
            return True
        except FileNotFoundError:
            return False
        except OSError as e:
            raise self.read_error(e, path) from e

    def exists_many(self, paths) -> list[bool]:
        return [self.exists(p) for p in paths]

    def list(self, directory: str, start_after: str | None = None) -> list[str]:
        """Names in ``directory`` (``[]`` when it does not exist); with ``start_after``, only the names
        that sort after it (object stores list from there, saving requests)."""
        self.io.request("list")
        try:
            names = os.listdir(self.full(directory))
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as e:
            raise TierError(f"tier {self.root}: cannot list {directory}: {describe_os_error(e)}") from e
        return names if start_after is None else [n for n in names if n > start_after]

    def list_entries(self, directory: str) -> list[tuple[str, bool]]:
        """``(name, is_directory)`` of the entries of ``directory``."""
        return [(n, os.path.isdir(os.path.join(self.full(directory), n))) for n in self.list(directory)]

    def stat(self, path: str) -> tuple[int, float]:
        """``(size, mtime)``."""
        self.io.request("head")
        try:
            st = os.stat(self.full(path))
        except OSError as e:
            raise self.read_error(e, path) from e
        return st.st_size, st.st_mtime

    # ------------------------------------------------------------------ writes
    def makedirs(self, *directories: str) -> None:
        for d in directories:
            try:
                os.makedirs(self.full(d), exist_ok=True)
            except OSError as e:
                raise self.write_error(e, d, "create directory") from e

    def _write(self, full: str, data) -> None:
        fd = os.open(full, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o644)
        try:
            for chunk in data if isinstance(data, (list, tuple)) else [data]:
                view = memoryview(chunk).cast("B")
                while view:
                    view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)

    def write_new(self, path: str, data) -> int:
        """Create ``path`` (it must not exist) with ``data`` (bytes or a list of buffers), fsynced.

        The name is durable only after ``sync_dir`` of its directory. On failure the partial file is
        removed (best effort: what a killed process leaves is swept by vacuum). Returns the size.
        """
        full = self.full(path)
        self.io.request("put", nwritten=_nbytes(data))
        try:
            self._write(full, data)
            return os.path.getsize(full)
        except OSError as e:
            with contextlib.suppress(OSError):
                os.unlink(full)
            raise self.write_error(e, path, "write") from e

    def put_if_absent(self, path: str, data) -> bool:
        """Atomically create ``path`` with ``data`` unless it exists (then False and nothing changes).

        A temporary file is written and fsynced, then hard-linked to ``path`` (``link`` fails if the
        name is taken, so two writers never both create it) and the directory fsynced: readers see
        the whole file or none of it.
        """
        tmp = f"{TMP_DIR}/{uuid.uuid4().hex}.tmp"
        tmp_full, full = self.full(tmp), self.full(path)
        self.io.request("put", nwritten=_nbytes(data))
        try:
            try:
                self._write(tmp_full, data)
            except FileNotFoundError:  # a tier made before _tmp existed, or _tmp swept
                os.makedirs(os.path.dirname(tmp_full), exist_ok=True)
                self._write(tmp_full, data)
            try:
                os.link(tmp_full, full)
            except FileExistsError:
                return False
            self.sync_dir(os.path.dirname(path))
            return True
        except OSError as e:
            raise self.write_error(e, path, "commit") from e
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp_full)

    def replace(self, path: str, data, durable: bool = False) -> None:
        """Overwrite ``path`` atomically (temp file + rename); fsynced (file and directory) if ``durable``."""
        tmp = self.full(f"{TMP_DIR}/{uuid.uuid4().hex}.tmp")
        self.io.request("put", nwritten=_nbytes(data))
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                if durable:
                    f.flush()
                    os.fsync(f.fileno())
            os.replace(tmp, self.full(path))
            if durable:
                self.sync_dir(os.path.dirname(path))
        except OSError as e:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise self.write_error(e, path, "write") from e

    def sync_dir(self, directory: str) -> None:
        """fsync a directory, making the names created in it durable."""
        full = self.full(directory) if directory else self.root
        try:
            fd = os.open(full, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as e:
            raise self.write_error(e, directory, "sync") from e

    def move(self, src: str, dst: str) -> None:
        """Rename ``src`` to ``dst`` (used to set damaged files aside)."""
        try:
            os.replace(self.full(src), self.full(dst))
        except OSError as e:
            raise self.write_error(e, src, "move") from e
        POOL.forget(self.full(src))

    def delete(self, path: str) -> int:
        """Remove ``path``; returns the bytes freed (0 if it was already gone)."""
        full = self.full(path)
        self.io.request("delete")
        try:
            size = os.stat(full).st_size
            os.unlink(full)
        except FileNotFoundError:
            return 0
        except OSError as e:
            raise self.write_error(e, path, "delete") from e
        POOL.forget(full)
        return size
