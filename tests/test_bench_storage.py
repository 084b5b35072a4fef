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


def _events_file(tmp_path, **extra):
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(3)
    n = 6000
    user = np.sort(rng.integers(0, 300, n))
    cols = {"user_id": user, "ts": np.cumsum(rng.integers(1, 100, n)), "item_id": rng.zipf(1.3, n) % 5000,
            "action": rng.choice(4, n, p=[0.85, 0.1, 0.03, 0.02]).astype(np.int32), "title": ["x"] * n, **extra}
    path = tmp_path / "events.parquet"
    pq.write_table(pa.table(cols), path)
    return path, n


def test_bench_storage_of_your_events(tmp_path, capsys):
    """``--events``: the file's integer columns stored as a tier and as tuned store-once Parquet,
    each column's bytes and its ratio, the whole files' (the ratio is the files' sizes); other
    columns left out and said so; a plot per column."""
    import pyarrow.parquet as pq

    path, n = _events_file(tmp_path)
    out, png = tmp_path / "stored.json", tmp_path / "stored.png"
    assert main(["bench", "storage", "--events", str(path), "--json", str(out), "--plot", str(png)]) == 0
    r = json.loads(out.read_text())
    s = r["stored"]
    assert s["events"] == n and set(s["tier_columns"]) == {"ts", "item_id", "action"} and r["left_out"] == ["title"]
    assert s["x_parquet"] == s["tier_file"] / s["parquet_file"]
    assert s["tier_file"] == s["tier_other"] + sum(s["tier_columns"].values())
    assert pq.ParquetFile(path).metadata.num_rows == n and png.stat().st_size > 0
    for c in s["tier_columns"]:
        assert s["column_x_parquet"][c] == s["tier_columns"][c] / s["parquet_columns"][c]
        assert s["tier_index_share"][c] >= 0
    assert set(r["targets"]) == {"tier <= tuned store-once Parquet", "every column <= 1.25x Parquet's"}
    printed = capsys.readouterr().out
    assert "whole file" in printed and "left out: title" in printed and "item_id" in printed


def test_bench_storage_of_your_events_errors(tmp_path, capsys):
    path, _ = _events_file(tmp_path)
    for argv, words in ((["--events", str(tmp_path / "none.parquet")], "not found"),
                        (["--events", str(path), "--uri", str(tmp_path / "t")], "--uri")):
        assert main(["bench", "storage", *argv]) == 2
        assert words in capsys.readouterr().err
    import pyarrow as pa
    import pyarrow.parquet as pq

    for name, table, words in (
            ("nots", pa.table({"user_id": [1, 2], "when": [3, 4]}), "no 'ts' column"),
            ("tstime", pa.table({"user_id": [1, 2], "ts": pa.array([3, 4], pa.timestamp("ms"))}), "timestamp[ms]"),
            ("u64", pa.table({"user_id": [1, 2], "ts": [3, 4], "h": pa.array([1, 2**63 + 5], pa.uint64())}), "'h'")):
        pq.write_table(table, tmp_path / f"{name}.parquet")
        assert main(["bench", "storage", "--events", str(tmp_path / f"{name}.parquet")]) == 2, name
        err = capsys.readouterr().err
        assert words in err and len(err.strip().splitlines()) == 1, (name, err)
