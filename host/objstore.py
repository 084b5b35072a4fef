"""Tiers on object stores: the second implementation of host/store.py's interface (docs/OBJECT_STORES.md).

A tier URI is resolved by ``pyarrow.fs.FileSystem.from_uri`` (``s3://``, ``gs://``, ``hdfs://``;
``file://`` and plain paths stay ``LocalStore``), or a ``pyarrow.fs.FileSystem`` is given and the
URI is a path inside it. Every file of a tier is an object named like the local file.

- **Commits without rename.** A version is committed by creating ``_log/<v>.rec`` with a
  conditional write: S3 ``PUT`` with ``If-None-Match: *`` (boto3), GCS ``ifGenerationMatch=0``
  (google-cloud-storage), HDFS ``rename`` onto a name that must not exist. A filesystem with none
  of these is read-only here (a write says so). There is no lock: writers build their record
  against the state they know, and on a conflict catch up and rebuild (host/tier.py).
- **Requests.** ``ObjectStore`` sends every request itself: retries with jittered exponential
  backoff on throttling and transient failures (503 SlowDown, 500, 409 conflicts of conditional
  writes, connection resets and timeouts), an optional injected latency per request (to see what a
  remote store will cost), and counters (``IOStats``). Ranges are read through a page cache (LRU by
  bytes, shared by the process) of the immutable objects; the pages a call misses are fetched as
  few ranged GETs (at most one per requested range, ranges whose holes are small merged, a size cap
  per GET), issued concurrently on a small thread pool.
- **S3** goes through boto3 (the ``s3`` extra) for everything: exact request counts, one retry
  policy, conditional PUTs, ``LastModified``. Endpoint, credentials and region come from the
  filesystem's options or the standard environment (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
  ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``). Without boto3 (or with ``GPUMAT_S3_CLIENT=pyarrow``)
  an ``s3://`` tier is read through pyarrow's own S3 client, read-only.

Knobs (environment): ``GPUMAT_OBJECT_CACHE_BYTES`` (page cache, default 256 MiB; 0 turns it off),
``GPUMAT_OBJECT_PAGE_BYTES`` (16 KiB), ``GPUMAT_OBJECT_GAP_BYTES`` (holes between ranges read
through, 64 KiB), ``GPUMAT_OBJECT_THREADS`` (concurrent requests, 16),
``GPUMAT_OBJECT_RETRIES`` (attempts per request, 8), ``GPUMAT_OBJECT_LATENCY_MS`` (injected latency
per request, 0).
"""

from __future__ import annotations

import email.utils
import hashlib
import os
import random
import threading
import time
import uuid
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

from gpumat.core.errors import CorruptionError, TierError
from gpumat.host.store import TMP_DIR, IOStats, LocalStore

IMMUTABLE_DIRS = ("_log/", "_checkpoints/", "_runs/", "_data/", "_segments/")  # names created once, never rewritten


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def _first_line(e: BaseException, limit: int = 300) -> str:
    text = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return text if len(text) <= limit else text[:limit] + "..."


# ----------------------------------------------------------------------------- backend outcomes


class NotFound(Exception):
    """The object does not exist."""


class Precondition(Exception):
    """A conditional write found the name taken."""


class Transient(Exception):
    """Worth retrying: throttling, a server error, a reset or timed-out connection."""


class Denied(Exception):
    """Not worth retrying: permissions, credentials, a missing bucket, a bad request."""


class Unsupported(Exception):
    """The filesystem cannot do this (a conditional write)."""


# ----------------------------------------------------------------------------- the page cache


class PageCache:
    """Pages (``page`` bytes, aligned in the object) of immutable objects, least recently used
    evicted first once more than ``capacity`` bytes are held. Shared by the process; thread-safe.
    A page shorter than ``page`` is the object's last one (empty: past its end)."""

    def __init__(self, capacity: int, page: int):
        self.capacity, self.page = max(0, int(capacity)), max(512, int(page))
        self._pages: OrderedDict = OrderedDict()
        self._sizes: dict = {}  # (store id, path) -> size of objects read whole
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            v = self._pages.get(key)
            if v is not None:
                self._pages.move_to_end(key)
            return v

    def put(self, key, data: bytes) -> None:
        if not self.capacity:
            return
        with self._lock:
            old = self._pages.pop(key, None)
            if old is not None:
                self._bytes -= len(old)
            self._pages[key] = data
            self._bytes += len(data)
            while self._bytes > self.capacity and self._pages:
                _, v = self._pages.popitem(last=False)
                self._bytes -= len(v)

    def size_of(self, sid, path):
        return self._sizes.get((sid, path))

    def set_size(self, sid, path, n: int) -> None:
        if self.capacity:
            with self._lock:
                if len(self._sizes) > 1 << 16:
                    self._sizes.clear()
                self._sizes[(sid, path)] = n

    def clear(self) -> None:
        with self._lock:
            self._pages.clear()
            self._sizes.clear()
            self._bytes = 0

    @property
    def nbytes(self) -> int:
        return self._bytes


CACHE = PageCache(_env_int("GPUMAT_OBJECT_CACHE_BYTES", 256 << 20), _env_int("GPUMAT_OBJECT_PAGE_BYTES", 16 << 10))


def clear_cache() -> None:
    """Forget every cached page (after objects were changed behind gpumat's back, e.g. in a test)."""
    CACHE.clear()


_POOL: tuple | None = None  # (pid, executor): a forked child makes its own
_POOL_LOCK = threading.Lock()
THREADS = max(1, _env_int("GPUMAT_OBJECT_THREADS", 16))


def _pool() -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL[0] != os.getpid():
            _POOL = (os.getpid(), ThreadPoolExecutor(THREADS, thread_name_prefix="gpumat-objstore"))
        return _POOL[1]


def _after_fork_in_child() -> None:
    """A forked child must not use the parent's locks (held by a thread that no longer exists),
    thread pool or HTTP connections: start afresh."""
    global _POOL, _POOL_LOCK, _CLIENTS_LOCK
    _POOL, _POOL_LOCK, _CLIENTS_LOCK = None, threading.Lock(), threading.Lock()
    _CLIENTS.clear()
    CACHE._lock = threading.Lock()


def _run_all(fns: list) -> list:
    """Call every function (concurrently when several); results in order, the first error raised."""
    if len(fns) == 1:
        return [fns[0]()]
    futs = [_pool().submit(f) for f in fns]
    out, err = [], None
    for f in futs:
        try:
            out.append(f.result())
        except BaseException as e:  # noqa: BLE001 - every future is waited for; the first error wins
            err = err or e
            out.append(None)
    if err is not None:
        raise err
    return out


def _join(data) -> bytes:
    if isinstance(data, (list, tuple)):
        return b"".join(memoryview(b).cast("B") for b in data)
    return bytes(memoryview(data).cast("B"))


# ----------------------------------------------------------------------------- S3 through boto3


_THROTTLE = {"SlowDown", "Throttling", "ThrottlingException", "RequestThrottled", "TooManyRequestsException",
             "RequestLimitExceeded", "ServiceUnavailable", "InternalError", "RequestTimeout", "RequestTimeoutException",
             "ConditionalRequestConflict", "OperationAborted"}
_CLIENTS: dict = {}
_CLIENTS_LOCK = threading.Lock()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _s3_client(endpoint, region, access_key, secret_key, session_token, anonymous):
    key = (endpoint, region, access_key, secret_key, session_token, anonymous)
    with _CLIENTS_LOCK:
        c = _CLIENTS.get(key)
        if c is None:
            import boto3
            from botocore.config import Config

            kw = dict(retries={"total_max_attempts": 1}, max_pool_connections=THREADS + 4, connect_timeout=5,
                      read_timeout=60, tcp_keepalive=True)
            if anonymous:
                from botocore import UNSIGNED

                kw["signature_version"] = UNSIGNED
            session = boto3.session.Session()
            c = session.client("s3", endpoint_url=endpoint or None, region_name=region or None,
                               aws_access_key_id=access_key or None, aws_secret_access_key=secret_key or None,
                               aws_session_token=session_token or None, config=Config(**kw))
            _CLIENTS[key] = c
        return c


def _s3_outcome(e: BaseException) -> Exception:
    """The backend outcome of a boto3/botocore exception."""
    from botocore import exceptions as bx

    if isinstance(e, bx.ClientError):
        err = e.response.get("Error", {}) or {}
        code = str(err.get("Code", ""))
        status = int((e.response.get("ResponseMetadata", {}) or {}).get("HTTPStatusCode", 0) or 0)
        text = f"{code or status}: {err.get('Message', '') or _first_line(e)}"
        if code == "NoSuchBucket":
            return Denied("NoSuchBucket: the bucket does not exist")
        if code in ("NoSuchKey", "NotFound", "404") or status == 404:
            return NotFound(text)
        if code == "PreconditionFailed" or status == 412:
            return Precondition(text)
        if code == "InvalidRange" or status == 416:
            return NotFound("InvalidRange: the range starts past the object's end")
        if code in _THROTTLE or status >= 500 or status in (408, 429) or (status == 409 and code == "ConditionalRequestConflict"):
            return Transient(text)
        return Denied(text)
    if isinstance(e, (bx.NoCredentialsError, bx.PartialCredentialsError, bx.ParamValidationError)):
        return Denied(_first_line(e))
    if isinstance(e, (bx.HTTPClientError, bx.ConnectionError, bx.ResponseStreamingError, bx.IncompleteReadError,
                      ConnectionError, TimeoutError)):
        return Transient(f"{type(e).__name__}: {_first_line(e)}")
    try:
        from urllib3.exceptions import HTTPError as Urllib3Error

        if isinstance(e, Urllib3Error):
            return Transient(f"{type(e).__name__}: {_first_line(e)}")
    except ImportError:  # pragma: no cover
        pass
    return Denied(f"{type(e).__name__}: {_first_line(e)}")


class S3Backend:
    """The objects under ``s3://bucket/prefix``, through boto3 (one client per configuration)."""

    name = "s3"
    conditional_writes = "S3 PUT If-None-Match: * (boto3)"

    def __init__(self, bucket: str, prefix: str, endpoint=None, region=None, access_key=None, secret_key=None,
                 session_token=None, anonymous=False):
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.endpoint, self.region = endpoint, region
        self.client = _s3_client(endpoint, region, access_key, secret_key, session_token, anonymous)
        self.server_date = None  # (server unix time, local unix time) of the last listing

    def identity(self) -> tuple:
        return ("s3", self.endpoint or "", self.bucket, self.prefix)

    def describe(self) -> str:
        return f"s3 endpoint {self.endpoint or 'AWS default'}, region {self.region or 'default'}, via boto3"

    def key(self, path: str) -> str:
        return f"{self.prefix}/{path}" if self.prefix else path

    def _call(self, fn, *a, **kw):
        try:
            return fn(*a, **kw)
        except Exception as e:  # noqa: BLE001 - classified
            raise _s3_outcome(e) from e

    def get(self, path: str, start: int | None = None, end: int | None = None) -> bytes:
        kw = {} if start is None else {"Range": f"bytes={start}-{end - 1}"}

        def go():
            try:
                r = self.client.get_object(Bucket=self.bucket, Key=self.key(path), **kw)
            except Exception as e:  # noqa: BLE001
                if kw and getattr(e, "response", {}).get("Error", {}).get("Code") == "InvalidRange":
                    return b""  # the range starts past the end: a short read (the caller says so)
                raise
            return r["Body"].read()

        return self._call(go)

    def head(self, path: str) -> tuple[int, float]:
        r = self._call(self.client.head_object, Bucket=self.bucket, Key=self.key(path))
        return int(r["ContentLength"]), r["LastModified"].timestamp()

    def list(self, directory: str, start_after: str | None = None, page: str | None = None):
        """One page: ``(objects [(name, size, mtime)], sub-directories, token of the next page or None)``."""
        pfx = self.key(directory) + "/" if directory else (self.prefix + "/" if self.prefix else "")
        kw = {"Bucket": self.bucket, "Prefix": pfx, "Delimiter": "/"}
        if page:
            kw["ContinuationToken"] = page
        elif start_after:
            kw["StartAfter"] = pfx + start_after
        r = self._call(self.client.list_objects_v2, **kw)
        date = (r.get("ResponseMetadata", {}).get("HTTPHeaders", {}) or {}).get("date")
        if date:
            try:
                self.server_date = (email.utils.parsedate_to_datetime(date).timestamp(), time.time())
            except (TypeError, ValueError):
                pass
        objs = [(o["Key"][len(pfx):], int(o["Size"]), o["LastModified"].timestamp()) for o in r.get("Contents", [])]
        dirs = [p["Prefix"][len(pfx):].rstrip("/") for p in r.get("CommonPrefixes", [])]
        return objs, dirs, (r.get("NextContinuationToken") if r.get("IsTruncated") else None)

    def put(self, path: str, body: bytes) -> None:
        self._call(self.client.put_object, Bucket=self.bucket, Key=self.key(path), Body=body)

    def put_if_absent(self, path: str, body: bytes) -> None:
        self._call(self.client.put_object, Bucket=self.bucket, Key=self.key(path), Body=body, IfNoneMatch="*")

    def delete(self, path: str) -> None:
        self._call(self.client.delete_object, Bucket=self.bucket, Key=self.key(path))

    def copy(self, src: str, dst: str) -> None:
        self._call(self.client.copy_object, Bucket=self.bucket, Key=self.key(dst),
                   CopySource={"Bucket": self.bucket, "Key": self.key(src)})

    def check(self) -> None:
        """Reach the bucket (a missing bucket or bad credentials say so)."""
        self._call(self.client.list_objects_v2, Bucket=self.bucket, Prefix=self.key(""), MaxKeys=1)


# ----------------------------------------------------------------------------- any pyarrow filesystem


def _arrow_outcome(e: BaseException) -> Exception:
    if isinstance(e, FileNotFoundError):
        return NotFound(_first_line(e))
    if isinstance(e, PermissionError):
        return Denied(_first_line(e))
    text = _first_line(e)
    low = text.lower()
    if isinstance(e, (ConnectionError, TimeoutError)) or any(
            w in low for w in ("slowdown", "slow_down", "503", "500 ", "internal error", "throttl", "timed out", "timeout",
                               "connection", "curl", "network", "unavailable", "reset by peer", "temporar")):
        return Transient(text)
    if "not found" in low or "no such" in low or "does not exist" in low:
        return NotFound(text)
    return Denied(f"{type(e).__name__}: {text}")


class ArrowBackend:
    """The objects under ``base`` of any ``pyarrow.fs.FileSystem``; conditional writes through
    ``committer(backend, path, body)`` (raising ``Precondition``), or none (read-only)."""

    name = "pyarrow"

    def __init__(self, fs, base: str, committer=None, committer_name: str | None = None):
        self.fs, self.base = fs, base.rstrip("/")
        self.committer = committer
        self.conditional_writes = committer_name
        self.server_date = None

    def identity(self) -> tuple:
        return (type(self.fs).__name__, id(self.fs), self.base)

    def describe(self) -> str:
        return f"pyarrow {type(self.fs).__name__}"

    def key(self, path: str) -> str:
        return f"{self.base}/{path}" if path else self.base

    def _call(self, fn, *a, **kw):
        try:
            return fn(*a, **kw)
        except Exception as e:  # noqa: BLE001 - classified
            raise _arrow_outcome(e) from e

    def get(self, path: str, start: int | None = None, end: int | None = None) -> bytes:
        def go():
            if start is None:
                with self.fs.open_input_stream(self.key(path)) as f:
                    return f.read()
            with self.fs.open_input_file(self.key(path)) as f:
                size = f.size()
                if start >= size:
                    return b""
                return f.read_at(min(end, size) - start, start)

        return self._call(go)

    def head(self, path: str) -> tuple[int, float]:
        import pyarrow.fs as pafs

        info = self._call(self.fs.get_file_info, self.key(path))
        if info.type != pafs.FileType.File:
            raise NotFound(f"{path}: no such object")
        return int(info.size), (info.mtime.timestamp() if info.mtime is not None else 0.0)

    def list(self, directory: str, start_after: str | None = None, page: str | None = None):
        import pyarrow.fs as pafs

        base = self.key(directory)
        infos = self._call(self.fs.get_file_info, pafs.FileSelector(base, allow_not_found=True, recursive=False))
        objs, dirs = [], []
        for i in infos:
            name = i.path[len(base):].lstrip("/")
            if not name or (start_after is not None and name <= start_after):
                continue
            if i.type == pafs.FileType.Directory:
                dirs.append(name)
            elif i.type == pafs.FileType.File:
                objs.append((name, int(i.size), i.mtime.timestamp() if i.mtime is not None else 0.0))
        return objs, dirs, None

    def put(self, path: str, body: bytes) -> None:
        def go():
            with self.fs.open_output_stream(self.key(path)) as f:
                f.write(body)

        self._call(go)

    def put_if_absent(self, path: str, body: bytes) -> None:
        if self.committer is None:
            raise Unsupported(f"{type(self.fs).__name__} offers no conditional write (create-if-absent) that "
                              "gpumat can use")
        try:
            self.committer(self, path, body)
        except (Precondition, Transient, NotFound, Denied):
            raise
        except Exception as e:  # noqa: BLE001 - classified
            raise _arrow_outcome(e) from e

    def delete(self, path: str) -> None:
        self._call(self.fs.delete_file, self.key(path))

    def copy(self, src: str, dst: str) -> None:
        self._call(self.fs.copy_file, self.key(src), self.key(dst))

    def check(self) -> None:
        self._call(self.fs.get_file_info, self.key(""))


def _gcs_committer():
    """``ifGenerationMatch=0`` through google-cloud-storage, if it is installed (not tested here)."""
    try:
        from google.api_core import exceptions as gx
        from google.cloud import storage
    except ImportError:
        return None
    client = storage.Client()

    def commit(backend, path, body):
        bucket, _, key = backend.key(path).partition("/")
        try:
            client.bucket(bucket).blob(key).upload_from_string(body, if_generation_match=0)
        except gx.PreconditionFailed as e:
            raise Precondition(str(e)) from e
        except (gx.TooManyRequests, gx.ServiceUnavailable, gx.InternalServerError) as e:
            raise Transient(str(e)) from e

    return commit


def _rename_committer(backend, path, body):
    """HDFS: write a temporary file, then rename it onto the name, which HDFS refuses when it exists
    (not tested here: no HDFS in CI)."""
    tmp = f"{TMP_DIR}/{uuid.uuid4().hex}.tmp"
    backend.put(tmp, body)
    try:
        backend.fs.move(backend.key(tmp), backend.key(path))
    except Exception as e:  # noqa: BLE001
        try:
            backend.head(path)
        except NotFound:
            raise _arrow_outcome(e) from e
        raise Precondition(f"{path} exists") from e
    finally:
        try:
            backend.delete(tmp)
        except Exception:  # noqa: BLE001 - gone after a rename, or debris for vacuum
            pass


# ----------------------------------------------------------------------------- the store


_CONDITIONAL_OK: set = set()  # stores (by identity) whose conditional writes were seen to work


class ObjectStore:
    """A tier's objects (paths relative to the tier, ``/``-separated) on ``backend``; the interface
    of host/store.py's ``LocalStore``, built for object stores (see the module docstring)."""

    remote = True
    coalesce_gap_bytes = _env_int("GPUMAT_OBJECT_GAP_BYTES", 64 << 10)  # a hole this small costs less than a second request
    max_request_bytes = 8 << 20  # a larger range is split into several concurrent GETs
    blob_readahead_bytes = 64 << 10  # host/reader.py reads a (stripe, column) blob this small whole with its headers

    def __init__(self, backend, root: str, latency_s: float | None = None, attempts: int | None = None,
                 base_delay_s: float = 0.02, max_delay_s: float = 2.0):
        self.backend, self.root = backend, root
        self.io = IOStats()
        self.inject_latency_s = (_env_int("GPUMAT_OBJECT_LATENCY_MS", 0) / 1000.0) if latency_s is None else float(latency_s)
        self.attempts = max(1, attempts or _env_int("GPUMAT_OBJECT_RETRIES", 8))
        self.base_delay_s, self.max_delay_s = base_delay_s, max_delay_s
        self._sid = backend.identity()
        self._listed: dict = {}  # path -> (size, mtime) from the last listing (immutable paths only)

    def __repr__(self) -> str:
        return f"ObjectStore({self.root!r}, {self.backend.describe()})"

    def full(self, path: str) -> str:
        return f"{self.root}/{path}" if path else self.root

    @property
    def readahead_bytes(self) -> int:
        """Blobs this small are read whole with their headers (their words then come from the cache;
        without a cache, reading ahead would only waste bytes)."""
        return self.blob_readahead_bytes if CACHE.capacity else 0

    def stats(self) -> dict:
        """Requests, retries, bytes and cache hits so far (``IOStats``)."""
        return self.io.snapshot()

    def now(self) -> float:
        """The store's clock (from the Date of the last listing), to compare with ``LastModified``."""
        d = self.backend.server_date
        return time.time() + (d[0] - d[1] if d else 0.0)

    @staticmethod
    def _immutable(path: str) -> bool:
        return path.startswith(IMMUTABLE_DIRS)

    # ------------------------------------------------------------------ requests
    def _request(self, kind: str, path: str, fn, nwritten: int = 0, on_transient=None):
        """``fn()`` with retries; the backend outcomes ``NotFound``, ``Precondition``, ``Denied`` and
        ``Unsupported`` pass through, ``Transient`` ones are retried, then a ``TierError``."""
        delay = self.base_delay_s
        last = None
        for attempt in range(self.attempts):
            if attempt:
                time.sleep(random.uniform(0.5 * delay, delay))
                delay = min(2 * delay, self.max_delay_s)
            if self.inject_latency_s:
                time.sleep(self.inject_latency_s)
            t0 = time.perf_counter()
            try:
                out = fn()
            except Transient as e:
                self.io.request(kind, time.perf_counter() - t0, nwritten=nwritten, retry=attempt > 0)
                last = e
                if on_transient is not None:
                    on_transient()
                continue
            except BaseException:
                self.io.request(kind, time.perf_counter() - t0, nwritten=nwritten, retry=attempt > 0)
                raise
            self.io.request(kind, time.perf_counter() - t0, nread=len(out) if isinstance(out, bytes) else 0,
                            nwritten=nwritten, retry=attempt > 0)
            return out
        raise TierError(f"tier {self.root}: {kind.upper()} {path or '(the tier)'} failed after {self.attempts} attempts "
                        f"({self.backend.describe()}): {last}")

    def _fail(self, e: Exception, path: str, what: str) -> Exception:
        if isinstance(e, NotFound):
            return CorruptionError(f"tier {self.root}: file {path} is missing")
        if isinstance(e, Unsupported):
            return TierError(f"tier {self.root}: cannot {what} {path}: {e}; this tier is read-only here")
        return TierError(f"tier {self.root}: cannot {what} {path or 'the tier'}: {e} ({self.backend.describe()})")

    def check_access(self) -> None:
        """``TierError`` saying what was tried when the store cannot be reached or read."""
        try:
            self._request("list", "", self.backend.check)
        except (Denied, NotFound) as e:
            raise self._fail(Denied(str(e)), "", "reach") from e

    # ------------------------------------------------------------------ reads
    def _get(self, path: str, start=None, end=None) -> bytes:
        try:
            return self._request("get", path, lambda: self.backend.get(path, start, end))
        except (NotFound, Denied) as e:
            raise self._fail(e, path, "read") from e

    def read(self, path: str) -> bytes:
        """The whole object (immutable ones through the page cache)."""
        if not self._immutable(path):
            return self._get(path)
        n = CACHE.size_of(self._sid, path)
        if n is not None:
            P = CACHE.page
            pages = [CACHE.get((self._sid, path, p)) for p in range((n + P - 1) // P)]
            if all(pg is not None for pg in pages):
                self.io.add(cache_hits=len(pages), cache_hit_bytes=n)
                return b"".join(pages)
        data = self._get(path)
        self._keep(path, 0, data, whole=True)
        return data

    def _keep(self, path: str, start: int, data: bytes, whole: bool = False, end: int | None = None) -> dict:
        """Cache the pages of ``data`` (bytes ``[start, start + len)``, ``start`` page-aligned; the
        object ends inside it when ``whole`` or when fewer than ``end - start`` bytes came back)."""
        P = CACHE.page
        got = {}
        p0 = start // P
        last = (end - start + P - 1) // P if end is not None else (len(data) + P - 1) // P
        for i in range(max(last, 1 if whole else 0)):
            pg = data[i * P:(i + 1) * P]
            if len(pg) < P and not (whole or (end is not None and len(data) < end - start)):
                break  # a partial page in the middle of an object never happens; keep nothing doubtful
            got[p0 + i] = pg
            CACHE.put((self._sid, path, p0 + i), pg)
        if whole:
            CACHE.set_size(self._sid, path, len(data))
        return got

    def read_at(self, path: str, offset: int, n: int, fresh: bool = False) -> bytes:
        buf = bytearray(n)
        self.fetch([(path, offset, memoryview(buf))])
        return bytes(buf)

    def read_into(self, path: str, offset: int, buf: memoryview) -> None:
        self.fetch([(path, offset, buf)])

    def fetch(self, reqs) -> None:
        """Fill each ``(path, offset, writable byte view)`` of ``reqs``: pages in the cache are copied,
        the others read by few ranged GETs (one per request at most; requests whose holes are under
        ``coalesce_gap_bytes`` share one, up to ``max_request_bytes``), all issued concurrently. Bytes
        past an object's end are a ``CorruptionError`` (shorter than recorded)."""
        reqs = [(p, int(o), v) for p, o, v in reqs if len(v)]
        if not reqs:
            return
        P = CACHE.page
        have: dict = {}  # (path, page) -> bytes, for this call (the cache may evict meanwhile)
        want: dict = {}  # path -> [(first missing page, last missing page + 1)]
        hits = hit_bytes = 0
        for path, off, view in reqs:
            if not self._immutable(path):  # mutable objects: read straight, never cached
                data = self._get(path, off, off + len(view))
                self._copy(path, off, view, {0: data}, off, len(view) or 1)
                continue
            p0, p1 = off // P, (off + len(view) - 1) // P
            lo = hi = None
            for p in range(p0, p1 + 1):
                k = (path, p)
                if k in have:
                    continue
                pg = CACHE.get((self._sid, path, p))
                if pg is None:
                    lo = p if lo is None else lo
                    hi = p + 1
                else:
                    have[k] = pg
                    hits += 1
                    hit_bytes += len(pg)
            if lo is not None:
                want.setdefault(path, []).append((lo, hi))
        if hits:
            self.io.add(cache_hits=hits, cache_hit_bytes=hit_bytes)
        gap, cap = max(0, self.coalesce_gap_bytes // P), max(1, (self.max_request_bytes or 1 << 62) // P)
        spans = []
        for path, runs in want.items():
            runs.sort()
            cur = None
            for lo, hi in runs:
                if cur is not None and lo - cur[1] <= gap and max(hi, cur[1]) - cur[0] <= cap:
                    cur[1] = max(cur[1], hi)
                    continue
                if cur is not None:
                    spans.append((path, *cur))
                cur = [lo, hi]
            spans.append((path, *cur))
        spans = [(path, s, min(s + cap, hi)) for path, lo, hi in spans for s in range(lo, hi, cap)]

        def get_span(path, lo, hi):
            return path, lo, self._keep(path, lo * P, self._get(path, lo * P, hi * P), end=hi * P)

        for path, lo, got in _run_all([lambda a=s: get_span(*a) for s in spans]):
            for p, pg in got.items():
                have[(path, p)] = pg
        for path, off, view in reqs:
            if self._immutable(path):
                self._copy(path, off, view, {p: have.get((path, p)) for p in range(off // P, (off + len(view) - 1) // P + 1)}, 0, P)

    def _copy(self, path: str, off: int, view: memoryview, pages: dict, base: int, P: int) -> None:
        """Copy bytes ``[off, off + len(view))`` from ``pages`` (page ``p`` holds ``[base + p * P, ...)``)."""
        n, pos = len(view), 0
        while pos < n:
            a = off + pos - base
            p, inpage = a // P, a % P
            pg = pages.get(p)
            take = min(P - inpage, n - pos)
            if pg is None or len(pg) < inpage + take:
                got = pos + max(0, (len(pg) if pg is not None else 0) - inpage)
                raise CorruptionError(f"tier {self.root}: file {path} is shorter than recorded "
                                      f"({got} of {n} bytes at offset {off}): truncated?")
            view[pos:pos + take] = pg[inpage:inpage + take]
            pos += take

    def prefetch(self, paths) -> None:
        """Read these immutable objects whole into the cache, concurrently (errors are left for the
        reads that follow to raise)."""
        todo = [p for p in dict.fromkeys(paths) if self._immutable(p) and CACHE.size_of(self._sid, p) is None]
        if len(todo) < 2 or not CACHE.capacity:
            return

        def one(p):
            try:
                self.read(p)
            except Exception:  # noqa: BLE001 - raised again, in order, by the read that needs it
                pass

        _run_all([lambda p=p: one(p) for p in todo])

    def warm(self, ranges) -> None:
        """Read the ``(path, offset, n)`` ranges into the cache (one concurrent wave)."""
        if not CACHE.capacity:
            return
        reqs = [(p, o, memoryview(bytearray(n))) for p, o, n in ranges if n > 0]
        try:
            self.fetch(reqs)
        except CorruptionError:
            pass  # the read that needs it says so

    def exists(self, path: str) -> bool:
        try:
            self._request("head", path, lambda: self.backend.head(path))
            return True
        except NotFound:
            return False
        except Denied as e:
            raise self._fail(e, path, "read") from e

    def exists_many(self, paths) -> list[bool]:
        return _run_all([lambda p=p: self.exists(p) for p in paths])

    def _list(self, directory: str, start_after: str | None = None):
        objs, dirs, token = [], [], None
        while True:
            try:
                o, d, token = self._request("list", directory, lambda t=token: self.backend.list(directory, start_after, t))
            except (NotFound, Denied) as e:
                raise TierError(f"tier {self.root}: cannot list {directory or 'the tier'}: {e} ({self.backend.describe()})") from e
            objs += o
            dirs += d
            if not token:
                break
        for name, size, mtime in objs:
            path = f"{directory}/{name}" if directory else name
            if self._immutable(path) or path.startswith(TMP_DIR + "/"):  # names never reused
                self._listed[path] = (size, mtime)
        return objs, dirs

    def list(self, directory: str, start_after: str | None = None) -> list[str]:
        objs, dirs = self._list(directory, start_after)
        return [o[0] for o in objs] + [d for d in dirs if start_after is None or d > start_after]

    def list_entries(self, directory: str) -> list[tuple[str, bool]]:
        objs, dirs = self._list(directory)
        return [(o[0], False) for o in objs] + [(d, True) for d in dirs]

    def stat(self, path: str) -> tuple[int, float]:
        """``(size, mtime)``: ``mtime`` is the object's ``LastModified`` (the store's clock: ``now()``)."""
        got = self._listed.get(path)
        if got is not None:
            return got
        try:
            return self._request("head", path, lambda: self.backend.head(path))
        except (NotFound, Denied) as e:
            raise self._fail(e, path, "read") from e

    # ------------------------------------------------------------------ writes
    def write_error(self, e, path: str, what: str) -> TierError:
        return TierError(f"tier {self.root}: cannot {what} {path or 'the tier'}: {e}")

    def makedirs(self, *directories: str) -> None:
        """Object stores have no directories."""

    def sync_dir(self, directory: str) -> None:
        """Object stores have no directories to make durable: a PUT is durable when it returns."""

    def _put(self, path: str, body: bytes) -> None:
        try:
            self._request("put", path, lambda: self.backend.put(path, body), nwritten=len(body))
        except (NotFound, Denied, Unsupported) as e:
            raise self._fail(e, path, "write") from e

    def write_new(self, path: str, data) -> int:
        """Create ``path`` (a fresh name) with ``data``; returns the size."""
        body = _join(data)
        self._put(path, body)
        return len(body)

    def replace(self, path: str, data, durable: bool = False) -> None:
        """Overwrite ``path`` (a PUT is atomic: readers see the old or the new object)."""
        self._put(path, _join(data))

    def _check_conditional(self) -> None:
        """Once per store: a store that ignores conditional writes would let two writers both commit
        a version, so it is refused rather than trusted."""
        if self._sid in _CONDITIONAL_OK:
            return
        probe = f"{TMP_DIR}/{uuid.uuid4().hex}.probe"
        first = self._put_if_absent_once(probe, b"probe")
        second = self._put_if_absent_once(probe, b"probe2")
        try:
            self._request("delete", probe, lambda: self.backend.delete(probe))
        except Exception:  # noqa: BLE001 - vacuum sweeps _tmp
            pass
        if not first or second:
            raise TierError(f"tier {self.root}: the store ignores conditional writes (a second create-if-absent "
                            f"of one name succeeded); gpumat cannot commit safely here ({self.backend.describe()})")
        _CONDITIONAL_OK.add(self._sid)

    def _put_if_absent_once(self, path: str, body: bytes) -> bool:
        try:
            self._request("put", path, lambda: self.backend.put_if_absent(path, body), nwritten=len(body))
            return True
        except Precondition:
            return False
        except (NotFound, Denied, Unsupported) as e:
            raise self._fail(e, path, "commit") from e

    def put_if_absent(self, path: str, data) -> bool:
        """Create ``path`` with ``data`` unless it exists (False, nothing changed): a conditional write,
        atomic on the store. A retried write that finds the name taken reads the object back: if it
        holds exactly these bytes, an earlier attempt of this call landed (True)."""
        self._check_conditional()
        body = _join(data)
        unsure = [False]

        def mark():
            unsure[0] = True

        try:
            self._request("put", path, lambda: self.backend.put_if_absent(path, body), nwritten=len(body), on_transient=mark)
            return True
        except Precondition:
            if not unsure[0]:
                return False
            return self._landed(path, body)
        except (NotFound, Denied, Unsupported) as e:
            raise self._fail(e, path, "commit") from e
        except TierError:
            if unsure[0] and self._landed(path, body, quiet=True):
                return True
            raise

    def _landed(self, path: str, body: bytes, quiet: bool = False) -> bool:
        try:
            data = self._request("get", path, lambda: self.backend.get(path))
        except NotFound:
            if quiet:
                return False
            raise TierError(f"tier {self.root}: commit of {path} failed: the name is taken but the object is gone")
        except Exception:  # noqa: BLE001
            if quiet:
                return False
            raise
        return hashlib.sha256(data).digest() == hashlib.sha256(body).digest()

    def move(self, src: str, dst: str) -> None:
        """Copy then delete (object stores cannot rename)."""
        try:
            self._request("copy", src, lambda: self.backend.copy(src, dst))
            self._request("delete", src, lambda: self.backend.delete(src))
        except (NotFound, Denied, Unsupported) as e:
            raise self._fail(e, src, "move") from e
        self._listed.pop(src, None)

    def delete(self, path: str) -> int:
        """Remove ``path``; returns the bytes freed (0 if it was already gone)."""
        got = self._listed.pop(path, None)
        if got is None:
            try:
                got = self._request("head", path, lambda: self.backend.head(path))
            except NotFound:
                return 0
            except Denied as e:
                raise self._fail(e, path, "delete") from e
        try:
            self._request("delete", path, lambda: self.backend.delete(path))
        except NotFound:
            return 0
        except (Denied, Unsupported) as e:
            raise self._fail(e, path, "delete") from e
        return int(got[0])


# ----------------------------------------------------------------------------- resolving a URI


def _s3_store(fs, path: str, root_uri: str) -> ObjectStore:
    bucket, _, prefix = path.strip("/").partition("/")
    if not bucket:
        raise TierError(f"tier URI {root_uri!r}: no bucket in it (s3://bucket/prefix)")
    root = f"s3://{bucket}/{prefix}".rstrip("/")
    try:
        import boto3  # noqa: F401
    except ImportError:
        boto3 = None
    if boto3 is None or os.environ.get("GPUMAT_S3_CLIENT") == "pyarrow":
        return ObjectStore(ArrowBackend(fs, path.strip("/")), root)  # read-only: no conditional writes
    opts = fs.__reduce__()[1][0]
    endpoint = opts.get("endpoint_override") or None
    if endpoint and "://" not in endpoint:
        endpoint = f"{opts.get('scheme') or 'https'}://{endpoint}"
    if endpoint is None:
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None
    region = getattr(fs, "region", None) or opts.get("region") or os.environ.get("AWS_REGION") \
        or os.environ.get("AWS_DEFAULT_REGION") or None
    backend = S3Backend(bucket, prefix, endpoint, region, opts.get("access_key"), opts.get("secret_key"),
                        opts.get("session_token"), bool(opts.get("anonymous")))
    return ObjectStore(backend, root)


def store_for(fs, path: str, uri: str):
    """The store of the tier at ``path`` inside pyarrow filesystem ``fs``."""
    import pyarrow.fs as pafs

    while isinstance(fs, pafs.SubTreeFileSystem):
        path = f"{fs.base_path.rstrip('/')}/{path.lstrip('/')}" if path else fs.base_path
        fs = fs.base_fs
    if isinstance(fs, pafs.LocalFileSystem):
        return LocalStore(os.path.abspath(path))
    if isinstance(fs, pafs.S3FileSystem):
        return _s3_store(fs, path, uri)
    name = type(fs).__name__
    base = path.rstrip("/")
    if name == "GcsFileSystem":
        commit = _gcs_committer()
        return ObjectStore(ArrowBackend(fs, base, commit, "GCS ifGenerationMatch=0 (google-cloud-storage)" if commit else None),
                           f"gs://{base}")
    if name == "HadoopFileSystem":
        return ObjectStore(ArrowBackend(fs, base, _rename_committer, "HDFS rename onto an absent name"), f"hdfs://{base}")
    return ObjectStore(ArrowBackend(fs, base), f"{getattr(fs, 'type_name', name)}://{base}")


def resolve_store(uri, filesystem=None):
    """The store of the tier at ``uri``: a ``LocalStore`` for local paths and ``file://``, else an
    ``ObjectStore`` over the filesystem ``pyarrow.fs.FileSystem.from_uri`` resolves (or over
    ``filesystem``, the URI then a path inside it). ``TierError`` says what was tried."""
    if isinstance(uri, os.PathLike):
        uri = os.fspath(uri)
    if not isinstance(uri, str) or not uri:
        raise TierError(f"tier URI must be a path or a URI such as s3://bucket/prefix, got {uri!r}")
    if filesystem is not None:
        import pyarrow.fs as pafs

        if not isinstance(filesystem, pafs.FileSystem):
            raise TierError(f"filesystem must be a pyarrow.fs.FileSystem, got {type(filesystem).__name__}")
        path = uri.split("://", 1)[1] if "://" in uri else uri
        return store_for(filesystem, path, uri)
    if uri.startswith("file://"):
        return LocalStore(os.path.abspath(uri[len("file://"):]))
    if "://" not in uri:
        return LocalStore(os.path.abspath(uri))
    import pyarrow.fs as pafs

    try:
        fs, path = pafs.FileSystem.from_uri(uri)
    except Exception as e:  # noqa: BLE001 - every failure to resolve is the same answer
        raise TierError(f"tier URI {uri!r}: pyarrow.fs.FileSystem.from_uri cannot resolve it: {_first_line(e)} "
                        "(tiers live at local paths, file://, s3://, gs:// or hdfs:// URIs, or pass filesystem=)") from None
    return store_for(fs, path, uri)
