"""Launch sweep of the jagged HSTU attention kernels on a GPU: tile sizes, warps, pipeline stages,
and what the bias gradients cost. One batch (``B x W`` events, H = 4, dh = 64, fp32, TF32 dots).

    python profiling/hstu_sweep.py --json OUT.json

Per configuration ``(BLOCK_M, BLOCK_N, num_warps, num_stages)``: forward, forward+backward with every
gradient, and forward+backward without the bias-table gradients (``pos_w``, ``time_w`` frozen);
each checked against the default configuration's output first.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from hstu_gpu import make_inputs, rel  # noqa: E402

CONFIGS = [(32, 32, 8, 1), (64, 64, 4, 1), (64, 64, 4, 2), (64, 32, 4, 2), (128, 64, 8, 2), (128, 64, 4, 2),
           (64, 64, 8, 2), (128, 128, 8, 2)]


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--json", required=True)
    p.add_argument("--W", type=int, default=4096)
    p.add_argument("--B", type=int, default=16)
    args = p.parse_args(argv)
    from triton.testing import do_bench

    from gpumat.kernels import jagged_hstu as jh

    torch.backends.cuda.matmul.allow_tf32 = True
    (q, k, v, pos_w, time_w), ts, offsets, do = make_inputs(args.B, args.W, 4, 64, torch.device("cuda"), seed=3)
    out = {"W": args.W, "B": args.B, "configs": []}
    ref = None
    for bm, bn, warps, stages in CONFIGS:
        jh.NUM_WARPS, jh.NUM_STAGES = warps, stages
        r = {"block_m": bm, "block_n": bn, "num_warps": warps, "num_stages": stages}
        t0 = time.perf_counter()
        try:
            def fwd():
                return jh.triton_jagged_hstu_attention(q, k, v, ts, offsets, pos_w, time_w, args.W, block_m=bm, block_n=bn)

            o = fwd()
            g = torch.autograd.grad(o, (q, k, v, pos_w, time_w), do)
            if ref is None:
                ref = (o.detach(), [x.detach() for x in g])
            r["rel_err_vs_first"] = max([rel(o, ref[0])] + [rel(a, b) for a, b in zip(g, ref[1])])
            r["fwd_ms"] = do_bench(fwd, warmup=3, rep=30, return_mode="median")
            r["fwd_bwd_ms"] = do_bench(lambda: torch.autograd.grad(fwd(), (q, k, v, pos_w, time_w), do),
                                       warmup=3, rep=40, return_mode="median")
            # the bias tables frozen (no requires_grad): the kernels skip their gradients
            pw, tw = pos_w.detach(), time_w.detach()
            r["fwd_bwd_no_bias_grad_ms"] = do_bench(
                lambda: torch.autograd.grad(jh.triton_jagged_hstu_attention(q, k, v, ts, offsets, pw, tw, args.W,
                                                                            block_m=bm, block_n=bn), (q, k, v), do),
                warmup=3, rep=40, return_mode="median")
        except Exception as e:  # noqa: BLE001 - a configuration that fails to compile or run is reported
            r["error"] = f"{type(e).__name__}: {e}"[:300]
        r["wall_s"] = time.perf_counter() - t0
        out["configs"].append(r)
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
        print(f"bm={bm:>3} bn={bn:>3} warps={warps} stages={stages}: fwd {r.get('fwd_ms', float('nan')):7.2f} "
              f"fwd+bwd {r.get('fwd_bwd_ms', float('nan')):7.2f} (no bias grads {r.get('fwd_bwd_no_bias_grad_ms', float('nan')):7.2f}) ms "
              f"err {r.get('rel_err_vs_first', r.get('error'))}", flush=True)


if __name__ == "__main__":
    main()
