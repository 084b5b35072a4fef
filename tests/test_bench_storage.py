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
    # the honest peers beside today's Fat Row, read + decode for every layout
    for peer in ("fatrow_tuned", "store_once_parquet"):
        assert r[peer]["uih_bytes_stored"] > 0
    for t in r["tenants"].values():
        for k in ("late_with_decode_cpu_s", "fatrow_cpu_s", "fatrow_tuned_cpu_s", "store_once_cpu_s",
                  "fatrow_tuned_bytes_read", "store_once_bytes_read"):
            assert t[k] >= 0, k
    assert all(c["store_once_bytes_per_event"] > 0 for c in r["columns"].values())
    out = capsys.readouterr().out
    assert "tenant (epoch)" in out and "store-once" in out


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
