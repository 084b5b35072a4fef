"""``gpumat bench engines`` end to end at a tiny size: one streamed epoch per engine, the training
process's CPU and memory, the shipped bytes; its arguments checked before anything is built."""

from __future__ import annotations

import argparse
import json
import os

import pyarrow.parquet as pq
import pytest

from gpumat.bench import engines as bench_engines
from gpumat.core.errors import SchemaError

TINY = ["--scale", "0.05", "--examples", "3000", "--files", "3", "--row-group", "500", "--batch-size", "256",
        "--tenants", "short,mid", "--quiet"]


def _args(argv):
    parser = argparse.ArgumentParser()
    bench_engines.add_arguments(parser)
    return parser.parse_args(argv)


def test_bench_engines_thread_and_process(tmp_path, capsys):
    out, png, work = tmp_path / "engines.json", tmp_path / "engines.png", tmp_path / "work"
    bench_engines.run(_args(TINY + ["--engines", "thread,process", "--json", str(out), "--plot", str(png),
                                    "--workdir", str(work)]))
    r = json.loads(out.read_text())
    assert r["benchmark"] == "engines" and r["config"]["engines"] == ["thread", "process"] == sorted(r["results"], reverse=True)
    files = sorted(os.listdir(work / "examples"))
    assert len(files) == 3 and sum(pq.ParquetFile(work / "examples" / f).metadata.num_rows for f in files) == 3000
    assert pq.ParquetFile(work / "examples" / files[0]).metadata.num_row_groups == 2  # 1000 rows, groups of 500
    for name, e in r["results"].items():
        assert e["examples"] == 3000 and e["batches"] == 12, name  # every example once
        assert e["trainer_cpu_s"] > 0 and e["wall_s"] > 0 and e["rss_peak_growth_bytes"] > -2**30
    assert r["results"]["thread"]["trainer_cpu_vs_thread"] == 1.0
    assert r["results"]["process"]["workers_cpu_s"] > 0 and r["results"]["thread"]["workers_cpu_s"] is None
    assert set(r["shipped"]) == {"short", "mid"}
    assert all(s["materialized_over_staged"] > 0 for s in r["shipped"].values())
    assert png.stat().st_size > 0
    table = capsys.readouterr().out
    assert "x thread" in table and "shipped mid" in table


@pytest.mark.parametrize("argv, match", [
    (["--engines", "thread,spark"], "choose from"),
    (["--tenants", "huge"], "tenants"),
    (["--examples", "2", "--files", "3"], "must not exceed"),
    (["--batch-size", "0"], "batch-size"),
])
def test_bench_engines_rejects_bad_arguments_first(argv, match, tmp_path):
    with pytest.raises(SchemaError, match=match):
        bench_engines.run(_args(TINY + argv + ["--workdir", str(tmp_path / "w")]))
    assert not (tmp_path / "w").exists()  # nothing was built
