"""``gpumat bench storage`` (gpumat/bench/storage.py) end to end at a tiny scale, and the output checks
every benchmark makes before it runs (gpumat/bench/util.py)."""

import json

import pytest

from gpumat.bench.util import check_output
from gpumat.cli import main
from gpumat.core.errors import GpumatError


def test_bench_storage_tiny(tmp_path, capsys):
    out = tmp_path / "out" / "storage.json"
    assert main(["bench", "storage", "--scale", "0.02", "--quiet", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["late"]["uih_bytes_stored"] > 0 and r["fatrow"]["uih_bytes_stored"] > r["late"]["uih_bytes_stored"]
    assert set(r["tenants"]) == {"short", "mid", "long"}
    assert "tenant (epoch)" in capsys.readouterr().out


def test_outputs_are_checked_before_the_run(tmp_path):
    f = tmp_path / "a_file"
    f.write_text("x")
    check_output(str(tmp_path / "new" / "dir" / "r.json"), "--json")  # parents are created later
    with pytest.raises(GpumatError, match="is a file"):
        check_output(str(f / "r.json"), "--json")
    with pytest.raises(GpumatError, match="is a directory"):
        check_output(str(tmp_path), "--plot")
    with pytest.raises(GpumatError, match="is a file"):
        check_output(str(f / "wd"), "--workdir")
    assert main(["bench", "storage", "--scale", "0.02", "--plot", str(f / "p.png")]) == 2
