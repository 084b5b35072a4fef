"""Jagged HSTU attention: the Triton kernels (kernels/jagged_hstu.py; under the interpreter on CPU)
against their PyTorch twin (kernels/pt_jagged_hstu.py), the twin against the dense reference (the
original padded layer), a 10^5-event row, the model's attention backends against each other, and
the kernels compiled for sm_90 with no spill."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from gpumat.core.errors import SchemaError
from gpumat.kernels import jagged_hstu as jh
from gpumat.kernels.pt_jagged_hstu import (
    LOG_BUCKET_WIDTH, attend_block, dense_hstu_attention, pt_jagged_hstu_attention, time_bucket_index,
)
from gpumat.models.hstu import HSTU, HSTUConfig
from test_hstu import assert_close, make_batch

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]
I64 = torch.iinfo(torch.int64)


def jagged_inputs(lengths, heads=2, dh=8, buckets=16, positions=None, ts="sorted", seed=0, dtype=torch.float64):
    """Random ``q, k, v [N, H, dh]``, ``ts [N]``, ``offsets``, ``pos_w [P, H]``, ``time_w [nb, H]``."""
    g = torch.Generator().manual_seed(seed)
    N = sum(lengths)
    offsets = torch.tensor([0] + list(lengths)).cumsum(0)
    q, k, v = (0.5 * torch.randn(N, heads, dh, generator=g, dtype=dtype) for _ in range(3))
    if ts == "sorted":
        t = torch.randint(0, 5000, (N,), generator=g).cumsum(0)
    elif ts == "random":
        t = torch.randint(-10**12, 10**12, (N,), generator=g)
    else:  # extremes: deltas that overflow int64, ties, zero
        t = torch.randint(-2**62, 2**62, (N,), generator=g)
        t[::5], t[1::7], t[2::11] = I64.min, I64.max, 0
    P = positions or max(max(lengths, default=1), 1)
    pos_w = 0.3 * torch.randn(P, heads, generator=g, dtype=dtype)
    time_w = 0.3 * torch.randn(buckets, heads, generator=g, dtype=dtype) if buckets else None
    return q, k, v, (t if buckets else None), offsets, pos_w, time_w


def outputs_and_grads(fn, inputs, max_len, dtype=None, seed=1, **kw):
    """``[o, dq, dk, dv, dpos, dtime]`` (float64) of ``fn`` for a random upstream gradient."""
    q, k, v, ts, offsets, pos_w, time_w = inputs
    leaves = [t if t is None else t.detach().to(dtype or t.dtype).requires_grad_() for t in (q, k, v, pos_w, time_w)]
    o = fn(leaves[0], leaves[1], leaves[2], ts, offsets, leaves[3], leaves[4], max_len, **kw)
    g = torch.randn(o.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    o.backward(g.to(o.dtype))
    return [o.detach().double()] + [None if t is None else t.grad.double() for t in leaves]


NAMES = ("o", "dq", "dk", "dv", "dpos", "dtime")


def assert_all_close(got, ref, atol, rtol, what):
    for name, a, b in zip(NAMES, got, ref):
        if b is None:
            assert a is None, f"{what}: {name}"
            continue
        assert_close(a, b, atol=atol, rtol=rtol, what=f"{what}: {name}")


# ---------------------------------------------------------------- time buckets


@pytest.mark.parametrize("buckets", [1, 2, 64, 128, 200])
def test_bucket_thresholds_reproduce_the_float64_buckets(buckets):
    """The kernel's float32 estimate + one threshold compare equals the float64 reference, at every
    threshold's neighbours, at the extremes and on random deltas."""
    thr = jh.bucket_thresholds(buckets, "cpu")
    inner = thr[1:buckets]
    down, up = (torch.nextafter(inner, torch.full_like(inner, x)) for x in (-float("inf"), float("inf")))
    dt = torch.cat([inner, down, up, torch.tensor([1.0, 2.0, 3.0, 2.0**63, 2.0**64]),
                    torch.randint(1, 2**62, (2000,)).double()])
    ref = (dt.log() / LOG_BUCKET_WIDTH).clamp(max=buckets - 1).long()
    est = (dt.float().log2() * (torch.log(torch.tensor(2.0)).item() / LOG_BUCKET_WIDTH) - 0.01)
    b0 = est.clamp(min=0).long().clamp(max=buckets - 1)
    got = b0 + (dt >= thr[b0 + 1]).long()
    assert torch.equal(got, ref), dt[got != ref][:5]


# ---------------------------------------------------------------- twin vs dense reference


@pytest.mark.parametrize("block,buckets,group_elements", [(1, 16, 1 << 23), (7, 16, 1 << 23), (256, 16, 1 << 23),
                                                          (5, 0, 1 << 23), (16, 16, 300)])
def test_twin_matches_the_dense_layer(block, buckets, group_elements):
    lengths = [0, 1, 37, 70, 5, 0, 16, 33] if block > 1 else [0, 1, 9, 2, 0, 5]  # block 1: a block per event
    inputs = jagged_inputs(lengths, buckets=buckets)
    ref = outputs_and_grads(dense_hstu_attention, inputs, max_len=90)
    got = outputs_and_grads(pt_jagged_hstu_attention, inputs, max_len=90, block=block, group_elements=group_elements)
    assert_all_close(got, ref, atol=1e-12, rtol=1e-10, what=f"twin block={block}")


def test_query_times_differ_from_key_times():
    """``ts_query`` (each query's time for the time bias; generative-recommenders takes the next
    event's) through the dense layer, the twin and the kernels: the same function, and not the
    function of ``tq = ts``."""
    lengths = [0, 1, 37, 5, 0, 19]
    q, k, v, ts, offsets, pos_w, time_w = jagged_inputs(lengths, buckets=64, positions=60, seed=4)
    tsq = ts + torch.randint(0, 40_000, ts.shape, generator=torch.Generator().manual_seed(9))
    inputs = (q, k, v, ts, offsets, pos_w, time_w)
    ref = outputs_and_grads(dense_hstu_attention, inputs, max_len=60, ts_query=tsq)
    twin = outputs_and_grads(pt_jagged_hstu_attention, inputs, max_len=60, block=7, ts_query=tsq)
    assert_all_close(twin, ref, atol=1e-12, rtol=1e-10, what="twin with ts_query")
    got = outputs_and_grads(jh.triton_jagged_hstu_attention, inputs, max_len=60, dtype=torch.float32,
                            block_m=16, block_n=16, ts_query=tsq)
    assert_all_close(got, ref, atol=2e-6, rtol=1e-4, what="kernel with ts_query")
    own = outputs_and_grads(dense_hstu_attention, inputs, max_len=60)
    assert not torch.allclose(own[0], ref[0])
    with pytest.raises(SchemaError, match="ts_query"):
        dense_hstu_attention(q, k, v, None, offsets, pos_w, None, 60, ts_query=tsq)


def test_twin_handles_batches_with_no_events():
    for lengths in ([], [0, 0]):
        inputs = jagged_inputs(lengths)
        got = outputs_and_grads(pt_jagged_hstu_attention, inputs, max_len=4)
        assert got[0].shape == (0, 2, 8) and torch.all(got[4] == 0)


# ---------------------------------------------------------------- kernel vs twin


@pytest.mark.parametrize("block_m,block_n,ts,buckets", [(16, 16, "sorted", 16), (16, 32, "random", 128),
                                                        (32, 16, "extreme", 128), (16, 16, "sorted", 0)])
def test_kernel_matches_twin(block_m, block_n, ts, buckets):
    """float32 kernels (interpreted on CPU) against the float64 twin: outputs and all five gradients,
    on rows that are empty, shorter than a block, and spanning several (odd lengths)."""
    inputs = jagged_inputs([0, 1, 37, 5, 0, 19], buckets=buckets, ts=ts, positions=60, seed=2)
    ref = outputs_and_grads(pt_jagged_hstu_attention, inputs, max_len=60, block=13)
    got = outputs_and_grads(jh.triton_jagged_hstu_attention, inputs, max_len=60, dtype=torch.float32,
                            block_m=block_m, block_n=block_n)
    assert_all_close(got, ref, atol=2e-6, rtol=1e-4, what=f"kernel {block_m}x{block_n} ts={ts}")


def test_kernel_rejects_bad_inputs():
    q, k, v, ts, offsets, pos_w, time_w = jagged_inputs([3, 2], dtype=torch.float32)
    with pytest.raises(SchemaError, match="power of two"):
        jh.triton_jagged_hstu_attention(q, k, v, ts, offsets, pos_w, time_w, 8, block_m=24)
    with pytest.raises(SchemaError, match="q, k, v"):
        jh.triton_jagged_hstu_attention(q, k[:-1], v, ts, offsets, pos_w, time_w, 8)
    with pytest.raises(SchemaError, match="together"):
        jh.triton_jagged_hstu_attention(q, k, v, None, offsets, pos_w, time_w, 8)
    with pytest.raises(SchemaError, match="offsets"):
        jh.triton_jagged_hstu_attention(q, k, v, ts, offsets.int(), pos_w, time_w, 8)
    with pytest.raises(SchemaError, match="position table"):
        pt_jagged_hstu_attention(q, k, v, ts, offsets, pos_w[:2], time_w, 8)


# ---------------------------------------------------------------- a 10^5-event row


def _long_row_reference(q, k, v, ts, pos_w, time_w, inv, qi, kj, do):
    """The pairs ``qi x kj`` of one row (float64, direct): ``(o part, a, ds, rel, bucket)``."""
    s = q[qi, 0] @ k[kj, 0].T
    rel = qi[:, None] - kj[None, :]
    s = s + pos_w[rel.clamp(0, pos_w.shape[0] - 1), 0]
    b = time_bucket_index(ts[qi], ts[kj], time_w.shape[0])
    s = s + time_w[b, 0]
    mask = (rel >= 0).double()
    sig = torch.sigmoid(s)
    a = s * sig * inv * mask
    ds = (do[qi, 0] @ v[kj, 0].T) * sig * (1 + s * (1 - sig)) * inv * mask
    return a, ds, rel, b


def test_a_long_row():
    """A 10^5-event row (after a short one and an empty one, so its addresses are large): the
    kernel's last query block (forward and dQ, with that block's bias gradients) and its first key
    block (dK, dV over every query) against a direct float64 computation of those pairs, and the
    twin's block on the same queries. Only these blocks run: the whole row is 5 * 10^9 pairs, hours
    in the interpreter (the kernels are plain loops over the row: the blocks left out take the
    same code path as those run)."""
    n, dh, nb = 100_000, 16, 128
    lengths = [40, 0, n]
    q, k, v, ts, offsets, pos_w, time_w = jagged_inputs(lengths, heads=1, dh=dh, buckets=nb, positions=n, seed=3)
    N, start = sum(lengths), 40
    do = torch.randn(N, 1, dh, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    inv = 1.0 / n
    f32 = [t.float().contiguous() for t in (q, k, v, do)]
    rows = lambda *r: torch.tensor(r, dtype=torch.int64)  # noqa: E731

    # Last query block (16 queries) against all keys: forward, dQ and that block's bias gradients.
    BM, BN = 16, 1024
    L = jh._Launch(f32[0], ts, offsets, pos_w.float(), time_w.float(), n, BM, BN)
    last = (n - 1) // BM
    plan = (rows(2, -1), rows(last, 0))
    o = jh._forward(L, *f32[:3], plan=plan)
    dq, _, _, dpos, dtime = jh._backward(L, *f32, True, True, plans=((rows(-1), rows(0)), plan))
    R = lambda t: t[start:]  # noqa: E731  the long row's events
    qi = torch.arange(last * BM, n)
    kj = torch.arange(n)
    a, ds, rel, b = _long_row_reference(R(q), R(k), R(v), R(ts), pos_w, time_w, inv, qi, kj, R(do))
    sl = slice(start + last * BM, start + n)
    assert_close(o[sl, 0].double(), a @ R(v)[:, 0], atol=1e-6, rtol=1e-4, what="long row: o")
    assert_close(dq[sl, 0].double(), ds @ R(k)[:, 0], atol=1e-6, rtol=1e-4, what="long row: dq")
    keep = rel >= 0
    ref_pos = torch.zeros(n, dtype=torch.float64).index_add_(0, rel[keep], ds[keep])
    ref_time = torch.zeros(nb, dtype=torch.float64).index_add_(0, b[keep], ds[keep])
    assert_close(dpos[:, 0].double(), ref_pos, atol=1e-8, rtol=1e-3, what="long row: dpos")
    assert_close(dtime[:, 0].double(), ref_time, atol=1e-8, rtol=1e-3, what="long row: dtime")
    # The twin's unit of work on the same queries.
    tw = attend_block(R(q)[qi].transpose(0, 1)[None], R(k).transpose(0, 1)[None], R(v).transpose(0, 1)[None],
                      R(ts)[qi][None], R(ts)[None], int(qi[0]), pos_w, time_w, inv)
    assert_close(tw[0, 0], a @ R(v)[:, 0], atol=1e-12, rtol=1e-9, what="long row: twin block")

    # First key block (16 keys) against every query: dK, dV.
    L = jh._Launch(f32[0], ts, offsets, pos_w.float(), time_w.float(), n, 4096, 16)
    _, dk, dv, _, _ = jh._backward(L, *f32, False, False, plans=((rows(2), rows(0)), (rows(-1), rows(0))))
    a, ds, _, _ = _long_row_reference(R(q), R(k), R(v), R(ts), pos_w, time_w, inv, torch.arange(n), torch.arange(16), R(do))
    assert_close(dk[start:start + 16, 0].double(), ds.T @ R(q)[:, 0], atol=1e-6, rtol=1e-4, what="long row: dk")
    assert_close(dv[start:start + 16, 0].double(), a.T @ R(do)[:, 0], atol=1e-6, rtol=1e-4, what="long row: dv")


def test_plan_lists_every_block_once_longest_row_first():
    lengths = torch.tensor([5, 0, 100_000, 33])
    row, blk = jh._plan(lengths, int(lengths.sum()), 32, heavy_last_block=True)
    assert row.numel() == 100_038 // 32 + 4
    got = sorted(zip(row[row >= 0].tolist(), blk[row >= 0].tolist()))
    want = sorted((r, b) for r, n in enumerate(lengths.tolist()) for b in range(-(-n // 32)))
    assert got == want
    assert row[0] == 2 and blk[0] == (100_000 - 1) // 32  # the costliest block of the longest row first


# ---------------------------------------------------------------- the model's backends


def test_model_attention_backends_agree():
    """HSTU with the dense layer, the twin and the kernels: same loss, same gradients, on a batch with
    empty rows and a row longer than max_len (kept newest)."""
    rows = [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14], [], [5, 6, 7], [8], [], [2, 9, 4, 4, 1, 3, 7]]
    batch = make_batch(rows, with_rating=True)
    labels = torch.tensor([5, 1, 7, 2, 3, 9])
    results = {}
    for attention in ("dense", "pytorch", "triton"):
        torch.manual_seed(0)
        model = HSTU(HSTUConfig(num_items=30, dim=16, num_layers=2, num_heads=2, max_len=10, num_negatives=8,
                                side_features={"rating": 5}, attention=attention))
        with torch.no_grad():  # non-zero biases, so the bias paths matter
            for layer in model.layers:
                layer.pos_bias.weight.normal_(0, 0.3)
                layer.time_bias.weight.normal_(0, 0.3)
        torch.manual_seed(1)
        loss = model.loss(batch, labels)
        loss.backward()
        results[attention] = (loss.detach(), model(batch).detach(), {n: p.grad for n, p in model.named_parameters()})
    ref_loss, ref_out, ref_grads = results["dense"]
    for attention in ("pytorch", "triton"):
        loss, out, grads = results[attention]
        assert_close(loss, ref_loss, atol=1e-5, what=f"{attention}: loss")
        assert_close(out, ref_out, atol=1e-5, what=f"{attention}: user vectors")
        for name, g in ref_grads.items():
            assert_close(grads[name], g, atol=1e-5, rtol=1e-4, what=f"{attention}: grad {name}")


# ---------------------------------------------------------------- sm_90


def test_kernels_compile_for_sm90_without_spills():
    """Every kernel at its GPU launch shape (32 x 32 tiles, 8 warps), head dims 32 and 64, every bias
    on, compiled ahead of time for sm_90 (triton.compile + GPUTarget, no GPU needed): no spill
    (no local-memory store in the SASS, an empty stack frame). Registers are printed (pytest -s)."""
    pytest.importorskip("triton")
    code = textwrap.dedent("""
        import json, os, re, subprocess, tempfile
        import triton
        from triton.backends.compiler import GPUTarget
        from triton.compiler import ASTSource
        from gpumat.bench.static import _tools
        import gpumat.kernels.jagged_hstu as jh
        assert not jh.INTERPRETED
        out = []
        for dh in (64, 32):
            for fn, extra in ((jh._hstu_fwd_kernel, {}), (jh._hstu_bwd_dq_kernel, dict(POS_GRAD=True, TIME_GRAD=True)),
                              (jh._hstu_bwd_dkdv_kernel, {})):
                consts = dict(H=2, DH=dh, BLOCK_D=dh, BLOCK_M=jh.GPU_BLOCK_M, BLOCK_N=jh.GPU_BLOCK_N,
                              NUM_BUCKETS=128, PRECISION="tf32", **extra)
                sig = {}
                for n in fn.arg_names:
                    sig[n] = ("constexpr" if n in consts else "i64" if n.startswith("stride") or n == "num_pos"
                              else "fp32" if n == "inv_max_len" else "*i64" if n in ("TS", "TSQ", "OFFSETS", "PLAN_ROW", "PLAN_BLK")
                              else "*fp64" if n == "THR" else "*fp32")
                src = ASTSource(fn=fn, signature=sig, constexprs={(fn.arg_names.index(n),): v for n, v in consts.items()})
                ck = triton.compile(src, target=GPUTarget("cuda", 90, 32),
                                    options={"num_warps": jh.NUM_WARPS, "num_stages": jh.NUM_STAGES})
                with tempfile.TemporaryDirectory() as d:
                    path = os.path.join(d, "k.cubin")
                    open(path, "wb").write(ck.asm["cubin"])
                    run = lambda tool, *a: subprocess.run([os.path.join(_tools(), tool), *a, path], capture_output=True,
                                                          text=True, check=True).stdout
                    usage, sass = run("cuobjdump", "-res-usage"), run("nvdisasm", "-c")
                m = re.search(r"REG:(\\d+) STACK:(\\d+) SHARED:(\\d+) LOCAL:(\\d+)", usage)
                out.append({"kernel": fn.__name__, "dh": dh, "regs": int(m[1]), "stack": int(m[2]),
                            "local": int(m[4]), "spill_stores": len(re.findall(r"\\bSTL\\b", sass))})
        print(json.dumps(out))
    """)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # compile for the GPU
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    for r in report:
        print(f"sm_90 {r['kernel']} dh={r['dh']}: {r['regs']} registers, stack {r['stack']} B, {r['spill_stores']} spill stores")
    assert len(report) == 6
    bad = [r for r in report if r["spill_stores"] or r["stack"] or r["local"]]
    assert not bad, bad
