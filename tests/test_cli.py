"""The command line as a new user meets it: every failure exits 2 with one line that says what and
where; ``--version``, ``python -m gpumat``; inspect's versions and user lengths; compact's no-op;
ingest's refusal of a foreign directory; examples as several files, globs and mixed tails."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import gpumat
from gpumat.cli import main

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")


def cli(*argv, cwd=None, pre: str = "") -> subprocess.CompletedProcess:
    """``python -m gpumat ARGV`` in a fresh process (``pre``: Python run first, e.g. to hide a module)."""
    code = textwrap.dedent(f"""
        import sys
        {pre}
        from gpumat.cli import main
        sys.exit(main({list(map(str, argv))!r}))
    """) if pre else None
    cmd = [sys.executable, "-c", code] if code else [sys.executable, "-m", "gpumat", *map(str, argv)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=cwd)


def assert_one_line_error(proc, *words):
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert "Traceback" not in proc.stderr


@pytest.fixture
def tier(tmp_path):
    t = gpumat.Tier.create(str(tmp_path / "tier"), {"ts": "int64", "item_id": "int64"})
    t.append(pa.table({"user_id": [1, 1, 2], "ts": [1, 2, 3], "item_id": [4, 5, 6]}))
    t.append(pa.table({"user_id": [1, 3], "ts": [4, 5], "item_id": [7, 8]}))
    return t


def test_version_and_module_entry_point():
    proc = cli("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"gpumat {gpumat.__version__}"
    proc = cli("bench", "--help")
    assert proc.returncode == 0
    for name in ("storage", "kernels", "e2e"):
        assert name in proc.stdout
    assert "decode-gather" in proc.stdout  # each benchmark says what it measures


def test_version_is_the_installed_packages(monkeypatch, tmp_path):
    import importlib.metadata
    import tomllib
    from pathlib import Path

    assert gpumat.__version__ == importlib.metadata.version("gpumat")
    source = tomllib.loads((Path(gpumat.__file__).parents[1] / "pyproject.toml").read_text())["project"]["version"]
    assert gpumat.__version__ == source  # pyproject.toml is the one place it is written

    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    assert gpumat._version() == source  # a source tree that is not installed reads pyproject.toml
    assert gpumat._source_version(tmp_path / "pyproject.toml") == "0+unknown"  # no file
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    assert gpumat._source_version(tmp_path / "pyproject.toml") == "0+unknown"  # no version in it


@NO_CUDA
def test_cuda_device_without_cuda_is_one_line(tmp_path, tier):
    ex = tmp_path / "ex.parquet"
    pq.write_table(pa.table({"user_id": [1], "version": [1], "length": [1], "request_ts": [9]}), ex)
    tn = tmp_path / "t.json"
    tn.write_text(json.dumps({"name": "t", "columns": ["item_id"], "max_len": 4}))
    proc = cli("materialize", tier.uri, ex, "--tenant", tn, "--out", tmp_path / "o.parquet", "--device", "cuda")
    assert_one_line_error(proc, "gpumat materialize", "cuda", "not available")
    assert not (tmp_path / "o.parquet").exists()
    proc = cli("demo", "--device", "cuda", "--workdir", tmp_path / "demo")
    assert_one_line_error(proc, "gpumat demo", "not available")
    assert not (tmp_path / "demo").exists()  # failed before any work
    proc = cli("bench", "kernels")
    assert_one_line_error(proc, "gpumat bench", "not available")


def test_plot_without_matplotlib_fails_before_the_run(tmp_path):
    hide = "sys.modules['matplotlib'] = None"
    proc = cli("bench", "storage", "--scale", "0.01", "--plot", tmp_path / "p.png", "--workdir", tmp_path / "w", pre=hide)
    assert_one_line_error(proc, "--plot", "matplotlib", "pip install")
    assert not (tmp_path / "w").exists()


def test_missing_files_are_said_missing(tmp_path, tier):
    assert_one_line_error(cli("ingest", tier.uri, tmp_path / "missing.parquet"), "missing.parquet", "not found")
    assert not (tmp_path / "new").exists()
    assert_one_line_error(cli("ingest", tmp_path / "new", tmp_path / "missing.parquet"), "not found")
    assert not (tmp_path / "new").exists()
    tn = tmp_path / "t.json"
    tn.write_text(json.dumps({"name": "t", "columns": ["item_id"], "max_len": 4}))
    proc = cli("materialize", tier.uri, tmp_path / "nope.parquet", "--tenant", tn, "--out", tmp_path / "o.parquet")
    assert_one_line_error(proc, "nope.parquet", "not found")
    proc = cli("materialize", tier.uri, tmp_path / "nope.parquet", "--tenant", tmp_path / "no.json", "--out", "o")
    assert_one_line_error(proc, "no.json", "not found")
    (tmp_path / "bin.json").write_bytes(b"\xff\xfe")
    ex = tmp_path / "ex.parquet"
    pq.write_table(pa.table({"user_id": [1], "version": [1], "length": [1], "request_ts": [9]}), ex)
    proc = cli("materialize", tier.uri, ex, "--tenant", tmp_path / "bin.json", "--out", tmp_path / "o.parquet")
    assert_one_line_error(proc, "cannot read tenant")
    for argv in (["inspect"], ["bench"], ["inspect", tier.uri, "--versions", "-1"], ["frobnicate"]):
        assert_one_line_error(cli(*argv), "error:", "--help")  # usage errors: one line too
    proc = cli("materialize", tier.uri, ex, "--tenant", tn, "--out", tmp_path / "o.parquet", "--device", "meta")
    assert_one_line_error(proc, "gpumat materialize", "device meta")
    assert_one_line_error(cli("inspect", tmp_path / "nothing"), "no tier")


def test_broken_pipe_is_one_line(tier):
    proc = subprocess.Popen([sys.executable, "-m", "gpumat", "inspect", tier.uri, "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # the reader goes away before gpumat writes (like `| head -1` after one line)
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 2, err
    assert err.strip().splitlines() == ["gpumat inspect: output closed early (broken pipe)"]


def test_ingest_refuses_a_directory_that_is_not_a_tier(tmp_path):
    d = tmp_path / "photos"
    d.mkdir()
    (d / "cat.jpg").write_bytes(b"meow")
    ev = tmp_path / "ev.parquet"
    pq.write_table(pa.table({"user_id": [1], "ts": [1], "item_id": [2]}), ev)
    assert_one_line_error(cli("ingest", d, ev), "not empty")
    assert sorted(p.name for p in d.iterdir()) == ["cat.jpg"]


def test_ingest_without_larger_packs(tmp_path, capsys):
    """``gpumat ingest --no-large-packs`` creates a tier that keeps packs of a block (its setting,
    shown by ``inspect``); given for a tier created without it, it is refused, appending nothing."""
    ev = tmp_path / "ev.parquet"
    pq.write_table(pa.table({"user_id": [1, 1, 2], "ts": [1, 2, 3], "item_id": [2, 3, 4]}), ev)
    assert main(["ingest", str(tmp_path / "t"), str(ev), "--no-large-packs"]) == 0
    assert main(["ingest", str(tmp_path / "t"), str(ev), "--no-large-packs"]) == 0  # (the same setting: appends)
    t = gpumat.Tier.open(tmp_path / "t")
    assert not t.large_packs and t.version == 2
    capsys.readouterr()
    assert main(["inspect", t.uri]) == 0
    assert "(no larger packs)" in capsys.readouterr().out
    assert main(["ingest", str(tmp_path / "u"), str(ev)]) == 0
    assert_one_line_error(cli("ingest", tmp_path / "u", ev, "--no-large-packs"), "created with larger packs allowed")
    assert gpumat.Tier.open(tmp_path / "u").large_packs and gpumat.Tier.open(tmp_path / "u").version == 1


def test_compact_with_nothing_to_compact_commits_nothing(tier, capsys):
    assert main(["compact", tier.uri]) == 0
    v = gpumat.Tier.open(tier.uri).version
    assert main(["compact", tier.uri]) == 0
    assert "nothing to compact" in capsys.readouterr().out
    assert gpumat.Tier.open(tier.uri).version == v


def test_inspect_lists_versions_and_a_users_lengths(tier, capsys):
    assert main(["inspect", tier.uri, "--user", "1"]) == 0
    out = capsys.readouterr().out
    assert "versions (3)" in out and "append" in out and "create" in out
    assert "LFOR" in out and "frame of reference" in out
    assert main(["inspect", tier.uri, "--json", "--user", "1"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert [v["version"] for v in r["versions"]] == [0, 1, 2]
    assert [v["events"] for v in r["versions"]] == [0, 3, 2]
    assert r["user"]["lengths"] == [{"version": 1, "length": 2}, {"version": 2, "length": 3}]
    assert main(["inspect", tier.uri, "--at", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["version"] == 1


def test_materialize_takes_several_files_globs_and_mixed_tails(tmp_path, tier, capsys):
    d = tmp_path / "ex"
    d.mkdir()
    pq.write_table(pa.table({"user_id": [1], "version": [2], "length": [3], "request_ts": [99],
                             "tail_ts": [[6]], "tail_item_id": [[9]]}), d / "a.parquet")
    pq.write_table(pa.table({"user_id": [2, 3], "version": [2, 2], "length": [1, 1], "request_ts": [99, 99]}),
                   d / "b.parquet")
    tn = tmp_path / "t.json"
    tn.write_text(json.dumps({"name": "t", "columns": ["item_id"], "max_len": 3}))
    for examples in ([str(d)], [str(d / "b.parquet"), str(d / "a*.parquet")]):
        out = tmp_path / "o.parquet"
        assert main(["materialize", tier.uri, *examples, "--tenant", str(tn), "--out", str(out)]) == 0
        got = dict(zip(pq.read_table(out).column("user_id").to_pylist(), pq.read_table(out).column("item_id").to_pylist()))
        assert got == {1: [5, 7, 9], 2: [6], 3: [8]}


def test_sigterm_stops_a_bench_cleanly(tmp_path):
    """A scheduler's SIGTERM during a benchmark: exit 143 with one line, and its temporary tier is
    removed (the ``finally`` blocks run), not left behind in TMPDIR."""
    import os
    import signal
    import time

    env = {**os.environ, "TMPDIR": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "gpumat", "bench", "e2e", "--device", "cpu", "--tenants", "short",
                             "--steps", "100000", "--scale", "0.05", "--repeats", "1", "--threads", "1", "--quiet"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob("gpumat-bench-e2e-*/**/_log/*.rec")) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.2)
        assert list(tmp_path.glob("gpumat-bench-e2e-*")), "the bench never built its tier"
        time.sleep(3)  # into the materialization and training
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err[-2000:]
    assert "terminated" in err
    assert not list(tmp_path.glob("gpumat-bench-e2e-*")), list(tmp_path.iterdir())
