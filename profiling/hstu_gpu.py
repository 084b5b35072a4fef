"""Issue 13's GPU checks, in one short run: the jagged HSTU attention kernels against the dense layer
and the PyTorch twin, and a 64K-event history that trains.

    python profiling/hstu_gpu.py --json OUT.json

A. Attention alone, ``N = B x W = 65536`` events per batch at ``W`` = 1024 ... 65536, ``H = 4`` heads
   of ``dh = 64`` (model width 256), fp32 inputs, with the Triton dots in IEEE fp32 and in TF32.
   Per case: forward and forward+backward time (``triton.testing.do_bench`` medians) of the Triton
   kernels, of the PyTorch twin (where it takes under a few seconds) and of the dense ``[B, H, W, W]``
   layer (where its tensors fit in 40 GB); the useful TFLOP/s (a causal row of ``W`` events has
   ``W (W + 1) / 2`` pairs, 4 dh H flops each forward, 10 dh H forward+backward: 2 and 5 matmuls);
   and the relative error of Triton's output and gradients against the dense layer (or the twin).
B. Correctness on jagged batches (empty rows, odd lengths, one 10^5-event row): the Triton kernels on
   fp32 inputs (IEEE and TF32 dots) against the dense layer in float64 on the GPU (the twin in
   float64 for the long row), relative error of the output and of every gradient.
C. Training: the HSTU model (``attention="triton"``) on rows of 65536 events, a few Adam steps:
   step time, peak device memory, the losses.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

import torch


def rel(a, b):
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def make_inputs(B, W, H, dh, device, seed, buckets=128):
    g = torch.Generator().manual_seed(seed)
    N = B * W
    offsets = torch.arange(B + 1, dtype=torch.int64) * W
    gaps = torch.randint(1, 5000, (N,), generator=g)
    ts = torch.cat([gaps[i * W:(i + 1) * W].cumsum(0) for i in range(B)]) if N else gaps
    q, k, v = (torch.randn(N, H, dh, generator=g) * 0.5 for _ in range(3))
    pos_w = torch.randn(W, H, generator=g) * 0.1
    time_w = torch.randn(buckets, H, generator=g) * 0.1
    do = torch.randn(N, H, dh, generator=g)
    to = dict(device=device)
    leaf = [t.to(**to).requires_grad_() for t in (q, k, v, pos_w, time_w)]
    return leaf, ts.to(**to), offsets.to(**to), do.to(**to)


def attention_case(B, W, H, dh, precision, device, dense_limit, twin_limit):
    from triton.testing import do_bench

    from gpumat.kernels.jagged_hstu import triton_jagged_hstu_attention
    from gpumat.kernels.pt_jagged_hstu import dense_hstu_attention, pt_jagged_hstu_attention

    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    (q, k, v, pos_w, time_w), ts, offsets, do = make_inputs(B, W, H, dh, device, seed=W)
    fns = {"triton": triton_jagged_hstu_attention, "pytorch_twin": pt_jagged_hstu_attention,
           "dense": dense_hstu_attention}
    pairs = B * W * (W + 1) / 2
    res = {"B": B, "W": W, "H": H, "dh": dh, "events": B * W, "precision": precision,
           "useful_gflop_fwd": 4 * dh * H * pairs / 1e9, "useful_gflop_fwd_bwd": 10 * dh * H * pairs / 1e9}
    dense_bytes = 6 * B * H * W * W * 4  # scores, time buckets (int64 ~ 2x fp32), silu, grads
    outs = {}
    for name, fn in fns.items():
        if name == "dense" and dense_bytes > dense_limit:
            res[name] = {"skipped": f"[B, H, W, W] tensors need ~{dense_bytes / 1e9:.0f} GB"}
            continue
        if name == "pytorch_twin" and W > twin_limit:
            res[name] = {"skipped": f"W > {twin_limit}: too slow for this run"}
            continue
        args = (q, k, v, ts, offsets, pos_w, time_w, W)
        torch.cuda.reset_peak_memory_stats()
        try:
            o = fn(*args)
            grads = torch.autograd.grad(o, (q, k, v, pos_w, time_w), do)
            outs[name] = (o.detach(), [g.detach() for g in grads])
            fwd = do_bench(lambda: fn(*args), warmup=5, rep=40, return_mode="median")

            def step():
                out = fn(*args)
                torch.autograd.grad(out, (q, k, v, pos_w, time_w), do)

            both = do_bench(step, warmup=5, rep=60, return_mode="median")
            res[name] = {"fwd_ms": fwd, "fwd_bwd_ms": both,
                         "fwd_tflops": res["useful_gflop_fwd"] / fwd,  # GFLOP / ms = TFLOP/s
                         "fwd_bwd_tflops": res["useful_gflop_fwd_bwd"] / both,
                         "peak_gb": torch.cuda.max_memory_allocated() / 1e9}
        except torch.OutOfMemoryError as e:
            res[name] = {"skipped": f"out of memory: {str(e)[:120]}"}
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    ref = "dense" if "dense" in outs else ("pytorch_twin" if "pytorch_twin" in outs else None)
    if ref and "triton" in outs:
        (o, g), (ro, rg) = outs["triton"], outs[ref]
        res["error_vs"] = ref
        res["rel_err"] = {"o": rel(o, ro), **{n: rel(a, b) for n, a, b in zip(("dq", "dk", "dv", "dpos", "dtime"), g, rg)}}
    for name in ("pytorch_twin", "dense"):
        if "fwd_bwd_ms" in res.get(name, {}) and "fwd_bwd_ms" in res.get("triton", {}):
            res[f"speedup_over_{name}"] = res[name]["fwd_bwd_ms"] / res["triton"]["fwd_bwd_ms"]
    return res


def check_case(lengths, precision, device, seed):
    """Triton (fp32 inputs) against a float64 reference on the same GPU."""
    from gpumat.kernels.jagged_hstu import triton_jagged_hstu_attention
    from gpumat.kernels.pt_jagged_hstu import dense_hstu_attention, pt_jagged_hstu_attention

    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    g = torch.Generator().manual_seed(seed)
    H, dh, nb = 2, 32, 64
    N = sum(lengths)
    offsets = torch.tensor([0] + list(lengths)).cumsum(0).to(device)
    base = [0.5 * torch.randn(N, H, dh, generator=g, dtype=torch.float64) for _ in range(3)]
    P = max(max(lengths), 1)
    base += [0.3 * torch.randn(P, H, generator=g, dtype=torch.float64), 0.3 * torch.randn(nb, H, generator=g, dtype=torch.float64)]
    ts = torch.randint(0, 5000, (N,), generator=g).cumsum(0).to(device)
    do = torch.randn(N, H, dh, generator=g, dtype=torch.float64).to(device)
    long_row = max(lengths) > 8192
    ref_fn = pt_jagged_hstu_attention if long_row else dense_hstu_attention

    def run(fn, dtype):
        leaves = [t.to(device, dtype).requires_grad_() for t in base]
        q, k, v, pos_w, time_w = leaves
        o = fn(q, k, v, ts, offsets, pos_w, time_w, P)
        o.backward(do.to(dtype))
        return [o.detach().double()] + [t.grad.double() for t in leaves]

    got, ref = run(triton_jagged_hstu_attention, torch.float32), run(ref_fn, torch.float64)
    errs = {n: rel(a, b) for n, a, b in zip(("o", "dq", "dk", "dv", "dpos", "dtime"), got, ref)}
    finite = all(bool(torch.isfinite(t).all()) for t in got)
    return {"lengths": lengths if len(lengths) <= 16 else f"{len(lengths)} rows", "precision": precision,
            "reference": ref_fn.__name__ + " float64", "rel_err": errs, "finite": finite}


def train_case(W, B, steps, device, layers, dim, heads):
    from gpumat.core.batch import JaggedBatch
    from gpumat.models.hstu import HSTU, HSTUConfig

    torch.manual_seed(0)
    cfg = HSTUConfig(num_items=1 << 17, dim=dim, num_layers=layers, num_heads=heads, max_len=W,
                     num_negatives=512, attention="triton", check_ids=False)
    model = HSTU(cfg).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(1)
    offsets = (torch.arange(B + 1, dtype=torch.int64) * W).to(device)
    items = torch.randint(0, cfg.num_items, (B * W,), generator=g).to(device)
    ts = torch.randint(1, 5000, (B * W,), generator=g).view(B, W).cumsum(1).view(-1).to(device)
    batch = JaggedBatch(offsets, {"item_id": items, "ts": ts}, known_max_len=W)
    labels = torch.randint(0, cfg.num_items, (B,), generator=g).to(device)
    torch.cuda.reset_peak_memory_stats()
    losses, times = [], []
    for _ in range(steps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = model.loss(batch, labels)
        loss.backward()
        opt.step()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
        losses.append(float(loss.detach()))
    ok = all(math.isfinite(x) for x in losses)
    return {"W": W, "B": B, "layers": layers, "dim": dim, "heads": heads, "steps": steps, "losses": losses,
            "finite": ok, "step_ms": times, "median_step_ms_after_first": sorted(times[1:])[len(times[1:]) // 2] if steps > 1 else None,
            "peak_gb": torch.cuda.max_memory_allocated() / 1e9}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", required=True)
    p.add_argument("--widths", default="1024,4096,16384,65536")
    p.add_argument("--events", type=int, default=65536, help="events per attention batch (B = events / W)")
    p.add_argument("--precisions", default="ieee,tf32")
    p.add_argument("--train-steps", type=int, default=4)
    p.add_argument("--train-precision", default="tf32", choices=["ieee", "tf32"])
    p.add_argument("--checks", default="1", help="0: skip the correctness checks (B)")
    p.add_argument("--ieee-max-width", type=int, default=4096,
                   help="time IEEE-fp32 dots only up to this W (they are ~3x slower than TF32)")
    p.add_argument("--twin-limit", type=int, default=4096, help="longest W the PyTorch twin is timed at")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit("hstu_gpu.py needs a CUDA device")
    dev = torch.device("cuda")
    out = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "checks": [], "attention": [], "train": []}
    import triton

    out["triton"] = triton.__version__

    def save():
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)

    cases = [[0, 1, 17, 300, 0, 1000, 129, 4097], [64] * 40 + [0, 5], [100_000, 3, 0]]
    for prec in args.precisions.split(",") if args.checks != "0" else ():
        for i, lengths in enumerate(cases):
            try:
                r = check_case(lengths, prec, dev, seed=i)
            except Exception as e:
                r = {"lengths": str(lengths)[:60], "precision": prec, "error": f"{type(e).__name__}: {e}"[:400]}
            out["checks"].append(r)
            save()
            print(f"check {prec:>5} {r['lengths']}: {r.get('rel_err', r.get('error'))}", flush=True)
            torch.cuda.empty_cache()
    for prec in args.precisions.split(","):
        for W in (int(w) for w in args.widths.split(",")):
            if prec == "ieee" and W > args.ieee_max_width:
                continue
            B = max(1, args.events // W)
            t0 = time.perf_counter()
            try:
                r = attention_case(B, W, 4, 64, prec, dev, dense_limit=40e9, twin_limit=args.twin_limit)
            except Exception as e:  # keep the other cases' results
                r = {"B": B, "W": W, "precision": prec, "error": f"{type(e).__name__}: {e}"[:400]}
            r["wall_s"] = time.perf_counter() - t0
            out["attention"].append(r)
            save()
            tri = r.get("triton", {})
            print(f"{prec:>5} W={W:>6} B={B:>3}: triton fwd {tri.get('fwd_ms', float('nan')):8.3f} ms "
                  f"fwd+bwd {tri.get('fwd_bwd_ms', float('nan')):8.3f} ms ({tri.get('fwd_bwd_tflops', float('nan')):.1f} TFLOP/s) "
                  f"x dense {r.get('speedup_over_dense', float('nan')):.2f} x twin {r.get('speedup_over_pytorch_twin', float('nan')):.2f} "
                  f"err {r.get('rel_err', r.get('error'))}", flush=True)
    torch.backends.cuda.matmul.allow_tf32 = args.train_precision == "tf32"
    out["train_precision"] = args.train_precision
    for W, B, layers in ((65536, 1, 2), (4096, 16, 4)):
        t0 = time.perf_counter()
        try:
            r = train_case(W, B, args.train_steps, dev, layers=layers, dim=256, heads=4)
        except Exception as e:
            r = {"W": W, "B": B, "error": f"{type(e).__name__}: {e}"[:400]}
        r["wall_s"] = time.perf_counter() - t0
        out["train"].append(r)
        save()
        print(f"train W={W} B={B} layers={layers}: {r.get('median_step_ms_after_first')} ms/step, "
              f"peak {r.get('peak_gb', float('nan')):.1f} GB, losses {r.get('losses', r.get('error'))}", flush=True)
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
