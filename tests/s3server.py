"""A real S3 API on loopback for the tests: moto's standalone server in a subprocess, and a small
HTTP proxy in front of it that fails some requests (503 SlowDown, 500, dropped connections, a PUT
applied upstream whose answer is lost), the way a throttled or flaky object store does.

Tests take the ``s3`` fixture (the endpoint; it also sets the ``AWS_*`` environment so that
``s3://`` URIs, subprocesses and the CLI reach it) and ``s3_root`` (a fresh ``s3://bucket/prefix``).
"""

from __future__ import annotations

import atexit
import http.client
import http.server
import os
import random
import socket
import subprocess
import sys
import threading
import time
import uuid

import pytest

BUCKET = "gpumat-tests"
ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


_SERVER: dict = {}


def _start() -> str:
    """Start the moto server once per process (every module that imports the fixtures shares it)."""
    if "endpoint" in _SERVER:
        return _SERVER["endpoint"]
    pytest.importorskip("moto.server", reason="the s3 tests need moto[server] (pip install -e '.[dev]')")
    boto3 = pytest.importorskip("boto3", reason="s3 tiers need boto3 (pip install -e '.[s3]')")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    atexit.register(lambda: (proc.terminate(), proc.wait(timeout=10)))
    endpoint = f"http://127.0.0.1:{port}"
    os.environ.update(ENV, AWS_ENDPOINT_URL=endpoint)
    c = boto3.client("s3", endpoint_url=endpoint)
    deadline = time.monotonic() + 30
    while True:
        try:
            c.create_bucket(Bucket=BUCKET)
            break
        except Exception:  # noqa: BLE001 - not up yet
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the moto server did not start")
            time.sleep(0.05)
    _SERVER.update(endpoint=endpoint, proc=proc)
    return endpoint


@pytest.fixture(scope="session")
def s3():
    """The endpoint of a moto S3 server on 127.0.0.1 (bucket ``BUCKET`` made); the ``AWS_*``
    environment points at it from then on (subprocesses and the CLI inherit it)."""
    return _start()


@pytest.fixture()
def s3_root(s3):
    """A fresh ``s3://bucket/prefix`` under which a test puts its tiers."""
    return f"s3://{BUCKET}/{uuid.uuid4().hex[:12]}"


def client(endpoint):
    import boto3

    return boto3.client("s3", endpoint_url=endpoint)


def keys(endpoint, root: str) -> list[str]:
    """Every object key under ``s3://bucket/prefix`` ``root``, relative to it."""
    bucket, _, prefix = root[len("s3://"):].partition("/")
    out = []
    for page in client(endpoint).get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/"):
        out += [o["Key"][len(prefix) + 1:] for o in page.get("Contents", [])]
    return out


# ------------------------------------------------------------------------------------------ faults


class FaultProxy:
    """An HTTP proxy to ``upstream`` on a loopback port that answers a seeded fraction of requests
    with ``503 SlowDown`` (``slowdown``), ``500 InternalError`` (``error``), a dropped connection
    (``reset``), or, for PUTs, forwards the request and then drops the connection before answering
    (``lost_reply``: the write happened, the client cannot know). ``counts`` says what it did."""

    def __init__(self, upstream: str, slowdown=0.0, error=0.0, reset=0.0, lost_reply=0.0, seed=0):
        self.upstream = upstream.split("://", 1)[1]
        self.rates = {"slowdown": slowdown, "error": error, "reset": reset, "lost_reply": lost_reply}
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.counts = {"requests": 0, "slowdown": 0, "error": 0, "reset": 0, "lost_reply": 0}
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _body(self) -> bytes:
                n = self.headers.get("Content-Length")
                if n is not None:
                    return self.rfile.read(int(n))
                if "chunked" in (self.headers.get("Transfer-Encoding") or ""):
                    out = b""
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if not size:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return out
                        out += self.rfile.read(size)
                        self.rfile.readline()
                return b""

            def _drop(self):
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

            def _handle(self):
                body = self._body()
                fault = proxy.decide(self.command)
                if fault == "reset":
                    return self._drop()
                if fault in ("slowdown", "error"):
                    code, status = ("SlowDown", 503) if fault == "slowdown" else ("InternalError", 500)
                    msg = f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code><Message>injected</Message></Error>"
                    data = msg.encode() if self.command != "HEAD" else b""
                    self.send_response(status)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                conn = http.client.HTTPConnection(proxy.upstream, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "transfer-encoding")}
                headers["Content-Length"] = str(len(body))
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                conn.close()
                if fault == "lost_reply":
                    return self._drop()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("connection", "transfer-encoding", "content-length", "server", "date"):
                        self.send_header(k, v)
                self.send_header("Content-Length", resp.getheader("Content-Length") if self.command == "HEAD"
                                 else str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def decide(self, method: str) -> str | None:
        with self.lock:
            self.counts["requests"] += 1
            r = self.rng.random()
            for name, rate in self.rates.items():
                if name == "lost_reply" and method != "PUT":
                    continue
                if r < rate:
                    self.counts[name] += 1
                    return name
                r -= rate
            return None

    def close(self):
        self.server.shutdown()
        self.server.server_close()
