"""``gpumat bench kernels`` without a GPU: the static check (gpumat/bench/static.py) compiles every
kernel configuration for sm_90 and sm_80 and fails on a compile error or a spill; the synthetic
staged batches it counts are the ones the GPU benchmark times."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from gpumat.core.errors import GpumatError

from gpumat.bench.kernels import FEATURE_COLUMNS, FOR_ITEM_COLUMNS, synthetic_staged
from gpumat.ops import decode_gather


def test_static_check_compiles_every_configuration_without_spills(tmp_path):
    out = tmp_path / "static.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # compile for the GPU, not the interpreter
    proc = subprocess.run([sys.executable, "-m", "gpumat", "bench", "kernels", "--static", "--scale", "0.01",
                           "--json", str(out)], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    s = json.loads(out.read_text())["static"]
    assert s["arch"] == "sm_90" and s["spilling_configurations"] == 0
    kernels = {(k["kernel"], k["arch"]) for k in s["kernels"]}
    assert kernels == {(k, a) for k in ("history", "history_masked", "tail") for a in ("sm_90", "sm_80")}
    assert all(k["regs"] > 0 and k["sass_instructions"] > 50 for k in s["kernels"])
    # every mode of the bench tenants' one-launch-for-all-columns configuration is compiled
    modes = {(k["inclusive"], k["padded"], k["wide"], k["loop"]) for k in s["kernels"]
             if k["kernel"] == "history" and len(k["columns"]) == 3 and k["arch"] == "sm_90"}
    assert len(modes) == 16
    for name in ("short", "mid", "long"):
        t = s["tenants"][name]
        assert t["warp_instructions_per_event"] > 0 and t["issue_floor_us"] > 0 and t["dram_floor_us"] > 0
        # one-warp programs: at most 32 warps an SM (32 resident programs), fewer past 64 registers
        assert (t["history_warps_per_sm"] == 32) == (t["history_registers"] <= 64) and t["history_warps_per_sm"] <= 32
        # the bench batches hold item_id as DICT blocks, as the bench tier stores it: one gather more than FOR
        assert s["tenants_item_for"][name]["warp_instructions_per_event"] < t["warp_instructions_per_event"]
        # two attributes borrowing item_id's codes: decoded once, they cost less than decoded each
        once, each = s["tenants_borrowed"][name], s["tenants_borrowed_decoded"][name]
        assert once["bytes_moved"] == each["bytes_moved"] and once["warp_instructions"] < each["warp_instructions"]
        # the L2 floor (gpumat.bench.l2): a dictionary gather a value (about a sector each, uniform
        # codes) and 12 bytes stored put the bench batches over a sector an event; two more gathers
        # an event raise it further. (Over the DRAM floor at full scale: here the 2 MiB dictionary
        # is most of a tiny batch's bytes.)
        assert t["l2_sectors_per_event"] > 1 and t["l2_floor_us"] > 0 and once["l2_floor_us"] > 1.5 * t["l2_floor_us"]
        assert t["l2_over_dram"] == t["l2_floor_us"] / t["dram_floor_us"]
    assert "warp-instr/event" in proc.stdout and "borrowing item_id's codes, decoded once" in proc.stdout
    assert "L2 floor" in proc.stdout and s["model"]["l2"]["sectors_per_s"] > 0
    capped = next(c for c in s["launch_candidates"] if len(c["launch"]) == 4)  # (the bench batches: narrow blocks)
    assert all(t["history_registers"] <= capped["launch"][3] and t["warps_per_sm"] == 32 for t in capped["tenants"].values())


def test_synthetic_batches_decode_alike_on_every_host_backend():
    for staged in (synthetic_staged(40, 300, seed=4, columns=FOR_ITEM_COLUMNS), synthetic_staged(40, 300, seed=5, columns=FEATURE_COLUMNS),
                   synthetic_staged(40, 300, seed=3)):
        ref, rv = decode_gather(staged, "reference")
        for backend in ("numpy", "torch"):
            got, v = decode_gather(staged if backend == "numpy" else staged.to("cpu"), backend)
            assert all(np.array_equal(got[c].numpy(), ref[c].numpy()) for c in ref) and bool((v == rv).all())
    assert staged.aux("item_id") == 4 and staged.columns["item_id"].dicts is not None


@pytest.mark.parametrize("codes", ["tier", "frequency"])
def test_synthetic_codes_decode_as_drawn(codes):
    """A DICT column's codes drawn as the bench tier's (``tier_codes``) are what every backend
    decodes: each value the dictionary entry of its code; in frequency order, entry 0 the commonest."""
    staged = synthetic_staged(30, 600, seed=7, codes=codes)
    ref, rv = decode_gather(staged, "reference")
    got, v = decode_gather(staged, "numpy")
    assert all(np.array_equal(got[c].numpy(), ref[c].numpy()) for c in ref) and bool((v == rv).all())
    d = staged.columns["item_id"].dicts
    vals, cnt = np.unique(ref["item_id"].numpy(), return_counts=True)
    pos = {int(x): i for i, x in enumerate(d.tolist())}
    in_dict = np.array([int(x) in pos for x in vals])
    # the history's values are all entries (the tails are random ids): most of the values, most events
    assert in_dict.sum() > 0.5 * len(vals) and cnt[in_dict].sum() > 0.9 * cnt.sum()
    codes_seen = np.repeat([pos[int(x)] for x in vals[in_dict]], cnt[in_dict])
    assert codes_seen.max() < 230_000  # about 220k distinct ids in the tier: codes never near 2^18
    if codes == "frequency":
        assert np.bincount(codes_seen).argmax() == 0
    with pytest.raises(ValueError, match="codes must be one of"):
        synthetic_staged(2, 256, codes="zipf")


def test_borrowed_batch_bench_runs_both_ways(monkeypatch):
    """The GPU bench's borrowed-codes batch (``bench_borrowed``), here on the interpreter with a CPU
    clock in place of CUDA graphs: both launches agree, and both are timed against the same bytes."""
    import time

    import gpumat.bench.kernels as bk
    from gpumat.kernels.triton_decode_gather import INTERPRETED

    if not INTERPRETED:
        pytest.skip("the Triton kernels run on a CPU only under TRITON_INTERPRET=1")
    calls = []

    def clock(fn, per_call_bytes=0):
        t0 = time.perf_counter()
        fn()
        calls.append(per_call_bytes)
        return {"median_ms": (time.perf_counter() - t0) * 1e3}

    monkeypatch.setattr(bk, "time_device", clock)
    r = bk.bench_borrowed("tiny", 256, 6, "cpu", {"d2d_copy_GBps": 1.0})
    assert r["columns"] == ["item_id", "genre", "year", "action", "ts"] and len(calls) == 2 and calls[0] == calls[1] > 0
    assert r["speedup"] > 0 and 0 < r["decoded_once"]["fraction_of_d2d"]


def _cpu_clock(calls):
    import time

    def clock(fn, per_call_bytes=0, **_):
        t0 = time.perf_counter()
        fn()
        calls.append(per_call_bytes)
        return {"median_ms": (time.perf_counter() - t0) * 1e3}

    return clock


def test_column_sets_and_launch_tuning_run_on_the_interpreter(monkeypatch):
    """The GPU bench's block-kind decomposition (``bench_column_sets``) and launch tuning
    (``tune_launch``) on the interpreter, a CPU clock in place of CUDA graphs: a launch that fails
    is reported beside the others' times, never timed, and never the one kept."""
    import gpumat.bench.kernels as bk
    from gpumat.kernels import triton_decode_gather as tdg

    if not tdg.INTERPRETED:
        pytest.skip("the Triton kernels run on a CPU only under TRITON_INTERPRET=1")
    calls = []
    monkeypatch.setattr(bk, "time_device", _cpu_clock(calls))
    r = bk.bench_column_sets("tiny", 256, 6, "cpu", {"d2d_copy_GBps": 1.0})
    sets = ("plain", "patch_action", "bench", "tier_codes", "frequency_codes")
    assert len(calls) == 5 and all(r[k]["fraction_of_d2d"] > 0 and r[k]["bytes_moved"] > 0 for k in sets)
    staged = synthetic_staged(6, 256, seed=1).to("cpu")
    expect = tdg.materialize_staged_triton(staged, launch=(1, 1, 1))
    expect = (expect[0], expect[1] != 0)
    monkeypatch.setattr(tdg, "LAUNCH_CHOICES", ((1, 1, 1), (3, 1, 1), (2, 1, 1), (1, 2, 1, 64)))
    monkeypatch.setattr(tdg, "LAUNCH_BY_BUCKET", {})
    t = bk.tune_launch(staged, 1, expect, rounds=1)
    assert set(t["errors"]) == {"3,1,1"} and "powers of two" in t["errors"]["3,1,1"]
    assert "3,1,1" not in t["median_ms_by_tp_seq_warps"] and tuple(t["best"]) != (3, 1, 1)
    assert set(t["median_ms_by_tp_seq_warps"]) >= {"1,1,1", "2,1,1", "1,2,1,64"}  # (a register cap: a fourth element)


def test_l2_model_reads_the_codes_the_decoders_decode():
    """``gpumat.bench.l2`` (the L2 model) prices each dictionary gather at the code the kernel reads: the codes
    it takes from a tile's staged words are the ones every decoder looks up, and a tile that starts
    inside its block gathers its own positions' entries (live lanes only)."""
    from gpumat.bench import l2 as l2_model

    staged = synthetic_staged(5, 300, seed=2, codes="tier")
    ref, _ = decode_gather(staged, "reference")
    col = staged.columns["item_id"]
    kinds = l2_model.column_kinds(staged)
    assert kinds == {"item_id": "dict", "action": "patch", "ts": "for"}
    starts_inside = 0
    for t in range(len(staged.tile_block)):
        lo, cnt, row = int(staged.tile_lo[t]), int(staged.tile_cnt[t]), int(staged.tile_out[t])
        codes = l2_model.block_codes(col, int(staged.tile_block[t]))
        assert np.array_equal(ref["item_id"].numpy()[row:row + cnt], col.dicts[codes[lo:lo + cnt]])
        lay = l2_model.Layout()
        _, body = l2_model.tile_program(staged, t, lay, {"item_id": codes}, kinds)
        got = np.concatenate([s for what, s, *_ in body if what == "dictionary"])
        want = np.concatenate([np.unique((lay.base["item_id.dicts"] + 8 * codes[lo + i:lo + min(i + 32, cnt)]) >> 5)
                               for i in range(0, cnt, 32)])
        assert np.array_equal(got, want)
        starts_inside += lo > 0
    assert starts_inside > 0


def test_l2_model_counts_sectors_and_l1_hits():
    """Without an L1 every loaded sector reaches L2; uniform codes cost about one sector a value; codes
    in frequency order (popular ids in the dictionary's first lines) hit a modelled L1 more; stores
    are the same either way; kinds of blocks the model does not lay out are refused."""
    from gpumat.bench import l2 as l2_model
    from gpumat.bench.kernels import DELTA_TS_COLUMNS

    uni = synthetic_staged(8, 2048, seed=1)
    none = l2_model.simulate(uni, n_sms=2, l1_kib=0, seq=2)
    assert none["l1_hit_pct"] == 0 and 0.95 < none["l2_sectors_by_what_per_event"]["dictionary"] <= 1.0
    # item_id int64 and action int32 stored: 12 bytes an event, at least 12 / 32 sectors
    assert 12 / 32 <= none["l2_sectors_by_what_per_event"]["stores"] < 1.2 * 12 / 32
    assert none["l2_requests_per_event"] <= none["l2_sectors_per_event"]
    cached = l2_model.simulate(uni, n_sms=2, l1_kib=224, seq=2)
    assert cached["l2_sectors_per_event"] < none["l2_sectors_per_event"]
    freq = l2_model.simulate(synthetic_staged(8, 2048, seed=1, codes="frequency"), n_sms=2, l1_kib=224, seq=2)
    assert freq["l2_sectors_by_what_per_event"]["dictionary"] < 0.8 * cached["l2_sectors_by_what_per_event"]["dictionary"]
    assert freq["l2_sectors_by_what_per_event"]["stores"] == cached["l2_sectors_by_what_per_event"]["stores"]
    assert l2_model.moved_bytes(uni) - l2_model.moved_bytes(uni, 4) == 4 * len(uni.columns["item_id"].dicts)
    with pytest.raises(GpumatError, match="not modelled"):
        l2_model.simulate(synthetic_staged(4, 300, columns=DELTA_TS_COLUMNS), n_sms=1, l1_kib=224, seq=2)
