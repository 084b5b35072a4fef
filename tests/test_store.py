"""The tier's files (host/store.py) and the environment: a bounded number of open files, OS failures
said plainly (typed, naming the tier and the cause, nothing committed, writable again afterwards)."""

import contextlib
import os
import subprocess
import sys
import textwrap
import uuid

import pytest

from gpumat.core.errors import CorruptionError, TierError
from gpumat.host.store import FilePool, LocalStore
from gpumat.host.tier import Tier
from test_tier import SCHEMA, Model, check_version, events

TESTS = os.path.dirname(__file__)


def test_file_pool_is_bounded_and_reads_right(tmp_path):
    pool = FilePool(4)
    paths = []
    for i in range(20):
        p = tmp_path / f"f{i}"
        p.write_bytes(bytes([i]) * 10)
        paths.append(str(p))
    for _ in range(3):
        for i, p in enumerate(paths):
            with pool.fd(p) as fd:
                assert os.pread(fd, 2, 3) == bytes([i, i])
            assert len(pool) <= 4
    store = LocalStore(str(tmp_path))
    with pytest.raises(CorruptionError, match="shorter than recorded"):
        store.read_at("f3", 5, 10)
    with pytest.raises(CorruptionError, match="missing"):
        store.read_at("nope", 0, 1)


def test_a_tier_of_many_small_appends_works_under_ulimit_256(tmp_path):
    """400 appends with merging off: 400 data segments, read through a pool of 64 descriptors."""
    code = textwrap.dedent(f"""
        import resource, sys
        sys.path.insert(0, {TESTS!r})
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
        from test_tier import SCHEMA, Model, check_version, events
        from gpumat.host.tier import Tier
        t = Tier.open(Tier.create({str(tmp_path / 't')!r}, SCHEMA).uri, auto_compact=False)
        m = Model()
        for i in range(400):
            tab = events(i, 5, users=7)
            t.append(tab)
            m.append(tab)
        assert t.stats()["segments"] == 400
        check_version(Tier.open(t.uri), m, 400, users=range(7))
        check_version(Tier.open(t.uri, version=123), m, 123, users=range(7))
        print("ok", len(__import__("os").listdir("/proc/self/fd")))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("ok") and int(proc.stdout.split()[1]) < 100


@contextlib.contextmanager
def tmpfs(path, size_kb):
    os.makedirs(path)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(path)], capture_output=True).returncode:
        pytest.skip("mounting a tmpfs needs root (CI runs as root): no small file system to fill")
    try:
        yield str(path)
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _fill(fs):
    """Fill the file system; returns the filler's path."""
    filler = os.path.join(fs, f"filler-{uuid.uuid4().hex}")
    with contextlib.suppress(OSError):
        with open(filler, "wb") as f:
            while True:
                f.write(b"\0" * 4096)
                f.flush()
    return filler


def test_a_full_disk_is_a_typed_error_and_the_tier_recovers(tmp_path):
    with tmpfs(tmp_path / "fs", 2048) as fs:
        t = Tier.create(os.path.join(fs, "t"), SCHEMA)
        m = Model()
        for i in range(3):
            tab = events(i, 200, users=30)
            t.append(tab)
            m.append(tab)
        filler = _fill(fs)
        for attempt in (lambda: t.append(events(5, 40000, users=30)), t.compact):  # a data file, and a rewrite
            with pytest.raises(TierError) as e:
                attempt()
            msg = str(e.value)
            assert t.uri in msg and "No space left on device" in msg and "ENOSPC" in msg, msg
            assert t.version == 3 and Tier.open(t.uri).version == 3
            check_version(Tier.open(t.uri), m, 3, users=range(0, 30, 7))  # the previous version, intact
            # nothing half-written stays behind holding the space
            assert os.listdir(os.path.join(t.uri, "_tmp")) == [] and os.listdir(os.path.join(t.uri, "_data")) == []
        os.unlink(filler)
        big = events(5, 40000, users=30)
        assert t.append(big) == 4  # writable again once space is free
        m.append(big)
        assert t.compact() == 5
        m.compact()
        check_version(Tier.open(t.uri), m, 5, users=range(0, 30, 7))


def test_read_only_file_system_and_long_names_are_typed(tmp_path):
    with tmpfs(tmp_path / "fs", 4096) as fs:
        t = Tier.create(os.path.join(fs, "t"), SCHEMA)
        t.append(events(0, 30))
        assert subprocess.run(["mount", "-o", "remount,ro", fs], capture_output=True).returncode == 0
        try:
            with pytest.raises(TierError, match="Read-only file system"):
                t.append(events(1, 30))
            with pytest.raises(TierError, match="Read-only file system|cannot create"):
                Tier.create(os.path.join(fs, "u"), SCHEMA)
            assert Tier.open(t.uri).read_history(3)["ts"].size >= 0  # reading still works
        finally:
            subprocess.run(["mount", "-o", "remount,rw", fs], capture_output=True)
        assert t.append(events(1, 30)) == 2
    with pytest.raises(TierError, match="too long|ENAMETOOLONG"):
        Tier.create(tmp_path / ("x" * 300), SCHEMA)


def test_too_many_open_files_is_a_tier_error_not_corruption(tmp_path):
    t = Tier.create(tmp_path / "t", SCHEMA)
    t.append(events(0, 30))
    code = textwrap.dedent(f"""
        import resource, sys
        sys.path.insert(0, {TESTS!r})
        from gpumat.core.errors import TierError
        from gpumat.host.tier import Tier
        from test_tier import events
        h = Tier.open({t.uri!r})
        ev = events(1, 5)
        hold = []
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
        try:
            while True:
                hold.append(open("/dev/null"))
        except OSError:
            pass
        for what in (lambda: Tier.open({t.uri!r}).read_history(1), lambda: h.append(ev)):
            try:
                what()
                print("no error")
            except TierError as e:
                print("TierError", "EMFILE" in str(e))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split("\n")[:2] == ["TierError True", "TierError True"], proc.stdout
    assert Tier.open(t.uri).version == 1
