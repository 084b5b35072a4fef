"""``gpumat bench e2e`` and ``profiling/e2e_trace.py`` end to end on the CPU path, at a tiny size.

The CUDA-only parts (sync-debug check, device times) cannot run here; their pure pieces (the
stage aggregation, the sync check's report of where a sync happened) are tested with stand-ins.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from gpumat.bench import e2e as bench_e2e
from gpumat.bench import trace
from gpumat.core.errors import GpumatError, SchemaError
from gpumat.ops import pick_device

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--device", "cpu", "--scale", "0.05", "--steps", "2", "--warmup", "1", "--profile-steps", "2",
        "--batch-size", "4", "--model-max-len", "32", "--dim", "16", "--layers", "1", "--heads", "2",
        "--num-items", "256", "--quiet"]


def _args(argv):
    parser = argparse.ArgumentParser()
    bench_e2e.add_arguments(parser)
    return parser.parse_args(argv)


def test_bench_e2e_cpu_end_to_end(tmp_path):
    out, png = tmp_path / "e2e.json", tmp_path / "e2e.png"
    result = bench_e2e.run(_args(TINY + ["--json", str(out), "--plot", str(png)]))
    on_disk = json.loads(out.read_text())
    assert on_disk["benchmark"] == "e2e" and set(on_disk["results"]) == {"short", "mid", "long"}
    assert {"git_commit", "torch", "device"} <= set(on_disk["environment"])
    assert on_disk["config"]["device"] == "cpu" and on_disk["config"]["inflight"] >= 2
    for name, r in result["results"].items():
        assert set(r["modes"]) == {"ideal", "overlapped", "sync"}, name
        for mode, m in r["modes"].items():
            assert m["ms_per_step"] > 0 and m["examples_per_s"] > 0 and m["steps"] == 2, (name, mode)
            assert len(m["host_ms_per_step"]) == 2
        assert set(r["overhead_vs_ideal_pct"]) == {"overlapped", "sync"}
        assert r["model_max_len"] == 32 and r["capped"] and r["notes"]
        stages = r["profile"]["stages"]
        assert set(stages) == set(trace.STAGES)
        # CPU device: the reference backend plans and decodes in the host threads (at least once
        # in the profiled steps: the pipeline refills after each step, and the last refill may end
        # after the profiler stops, as it did once in 7 fresh-clone runs on a loaded machine)
        assert stages["gpumat.plan"]["calls"] >= 1 and stages["gpumat.decode"]["calls"] >= 1, stages
        assert stages["gpumat.plan"]["cpu_ms_total"] > 0
        assert r["sync_check"] == {"skipped": "no CUDA device"}
    assert on_disk["target"]["tenant"] == "mid" and on_disk["target"]["met"] is None  # a GPU target
    assert png.stat().st_size > 0


def test_cli_dispatches_e2e(tmp_path, capsys):
    from gpumat.cli import main

    out = tmp_path / "e2e.json"
    assert main(["bench", "e2e", *TINY, "--tenants", "short", "--profile-steps", "0", "--json", str(out)]) == 0
    r = json.loads(out.read_text())["results"]
    assert set(r) == {"short"} and "profile" not in r["short"]


@pytest.fixture
def no_build(monkeypatch):
    """Fails the test if the workload is built (seconds of work) before the arguments are checked."""
    import gpumat.host.workloads as workloads

    def built(*args, **kwargs):
        raise AssertionError("the workload was built before the arguments were checked")

    monkeypatch.setattr(workloads, "synthetic_workload", built)


def test_bad_arguments_are_typed_errors(no_build):
    with pytest.raises(SchemaError, match="inflight"):
        bench_e2e.run(_args(TINY + ["--inflight", "1"]))
    with pytest.raises(SchemaError, match=r"--tenants: unknown \['huge'\]; the workload's tenants are \['short', 'mid', 'long'\]"):
        bench_e2e.run(_args(TINY + ["--tenants", "short,huge"]))
    with pytest.raises(SchemaError, match="--tenants: no tenant in ' , '"):
        bench_e2e.run(_args(TINY + ["--tenants", " , "]))
    with pytest.raises(SchemaError, match="steps"):
        bench_e2e.run(_args(TINY + ["--steps", "0"]))


def test_outputs_and_backend_fail_before_the_build(tmp_path, no_build, monkeypatch):
    busy = tmp_path / "busy"
    (busy / "tier").mkdir(parents=True)
    afile = tmp_path / "file"
    afile.write_text("x")
    for argv, words in ((["--workdir", busy], "is not empty: pass an empty or new directory"),
                        (["--json", tmp_path], "is a directory"),
                        (["--plot", afile / "p.png"], "is a file"),
                        (["--workdir", afile], "is a file")):
        with pytest.raises(GpumatError, match=words):
            bench_e2e.run(_args(TINY + list(map(str, argv))))
    # Without the interpreter (tests/conftest.py switches it on), Triton cannot run on a CPU.
    monkeypatch.delenv("TRITON_INTERPRET")
    with pytest.raises(GpumatError, match="backend='triton' cannot run on device cpu"):
        bench_e2e.run(_args(TINY + ["--backend", "triton"]))


def test_plan_caps_long_tenant_and_fits_memory():
    from gpumat.core.tenant import Tenant

    model = bench_e2e.PLANS["cuda"]["model"]
    long_ = bench_e2e.plan_tenant(Tenant("long", ["item_id", "ts"], 65536), "cuda", model, memory_bytes=80e9)
    assert long_.model_max_len == 16384 and any("capped" in n for n in long_.notes)
    assert bench_e2e.attention_bytes(long_.batch_size, long_.model_max_len, 4, 4) <= 0.6 * 80e9
    small = bench_e2e.plan_tenant(Tenant("mid", ["item_id"], 4096), "cuda", model, memory_bytes=0.2e9)
    assert bench_e2e.attention_bytes(small.batch_size, small.model_max_len, 4, 4) <= 0.6 * 0.2e9
    assert any("fits 60%" in n for n in small.notes)
    # on a CPU the long tenant trains at real length (jagged attention: no [B, H, W, W])
    cpu = bench_e2e.plan_tenant(Tenant("long", ["item_id", "ts"], 65536), "cpu", bench_e2e.PLANS["cpu"]["model"])
    assert cpu.model_max_len == 2048


def _fake_sync_site(x):
    raise RuntimeError("called a synchronizing CUDA operation")


def test_sync_check_reports_where_it_synced():
    """A stand-in guard: the 'sync' happens in the feed's third batch, while the guard is on."""
    state = {"on": False, "steps": 0}

    def guard(on):
        state["on"] = on

    def feed():
        for i in range(10):
            if state["on"] and i == 3:
                _fake_sync_site(i)
            yield i, i

    def step(batch, labels):
        assert not state["on"], "the model step must run outside the guard"
        state["steps"] += 1

    r = trace.sync_check(feed(), step, warmup=1, steps=5, guard=guard)
    assert r["sync_free"] is False and r["checked_steps"] == 2
    assert "synchronizing" in r["error"] and "_fake_sync_site" in r["op"]
    assert not state["on"]
    ok = trace.sync_check(iter([(i, i) for i in range(6)]), step, warmup=1, steps=5, guard=guard)
    assert ok["sync_free"] is True and ok["checked_steps"] == 5


def test_sync_check_follows_host_stage_errors_to_their_cause():
    from gpumat.host.prefetch import Prefetcher

    def stage(i):
        if i == 2:
            _fake_sync_site(i)
        return i

    state = {"on": False}
    pf = Prefetcher(stage, iter(range(5)), depth=2, workers=1, name="test stage")
    feed = ((i, i) for i in pf)
    r = trace.sync_check(feed, lambda b, l: None, warmup=0, steps=5, guard=lambda on: state.update(on=on))
    pf.close()
    assert r["sync_free"] is False and "_fake_sync_site" in r["op"], r


def test_aggregate_stages_counts_cpu_ranges_once():
    from torch.autograd import DeviceType

    class Ev:
        def __init__(self, name, dev, cpu_us, dev_us):
            self.name, self.device_type, self.cpu_time_total, self.device_time_total = name, dev, cpu_us, dev_us

    evs = [Ev("gpumat.h2d", DeviceType.CPU, 100.0, 40.0), Ev("gpumat.h2d", DeviceType.CUDA, 0.0, 40.0),
           Ev("gpumat.decode", DeviceType.CPU, 300.0, 0.0), Ev("aten::mm", DeviceType.CPU, 5.0, 0.0)]
    st = trace.aggregate_stages(evs, steps=2)
    assert st["gpumat.h2d"]["calls"] == 1 and st["gpumat.h2d"]["device_ms_total"] == pytest.approx(0.04)
    assert st["gpumat.decode"]["cpu_ms_per_step"] == pytest.approx(0.15)
    assert st["gpumat.plan"]["calls"] == 0


def test_cuda_device_without_gpu_is_a_typed_error():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(GpumatError, match="cuda"):
        pick_device("cuda")


def test_e2e_trace_script_cpu(tmp_path):
    out = tmp_path / "trace.json"
    cmd = [sys.executable, str(ROOT / "profiling" / "e2e_trace.py"), "--device", "cpu", "--tenant", "mid",
           "--steps", "2", "--warmup", "1", "--scale", "0.05", "--batch-size", "4", "--model-max-len", "32",
           "--dim", "16", "--layers", "1", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert str(out) in proc.stdout
    names = {e.get("name") for e in json.loads(out.read_text())["traceEvents"]}
    assert {"gpumat.plan", "gpumat.decode", "e2e.step", "e2e.wait_batch"} <= names, sorted(n for n in names if n and "." in n)[:20]


def test_bench_e2e_process_engine(tmp_path):
    out = tmp_path / "e2e.json"
    result = bench_e2e.run(_args(TINY + ["--tenants", "short", "--profile-steps", "0", "--engine", "process",
                                         "--workers", "1", "--json", str(out)]))
    r = result["results"]["short"]
    assert result["config"]["engine"] == "process" and r["engine"] == "process"
    for m in r["modes"].values():
        assert m["trainer_cpu_ms_per_step"] >= 0
    sh = r["shipping"]
    assert sh["staged_bytes_per_batch"] > 0 and sh["materialized_bytes_per_batch"] > 0
    assert json.loads(out.read_text())["results"]["short"]["shipping"] == sh
