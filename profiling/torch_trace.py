"""Record a torch.profiler chrome trace of a few fused materializations (needs a CUDA GPU).

    python profiling/torch_trace.py [--tenant mid] [--steps 5] [--out profiling/trace_decode_gather.json]

Open the JSON in chrome://tracing or https://ui.perfetto.dev: per step you should see one packed
H2D copy of the staged batch, then per tenant one ``_history_kernel`` and one
``_tail_kernel`` over all its columns, and no host sync between them (the single sync is the read of the
leakage flags at the end of each step).
"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile, record_function, schedule

from gpumat.bench.kernels import TENANTS, synthetic_staged
from gpumat.ops import decode_gather


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tenant", default="mid", choices=[t[0] for t in TENANTS])
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--out", default="profiling/trace_decode_gather.json")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("torch_trace.py needs a CUDA GPU (torch.cuda.is_available() is False)")
        return 2
    _, L, B = next(t for t in TENANTS if t[0] == args.tenant)
    staged = synthetic_staged(B, L, seed=0)
    pinned = staged.pack()[0].pin_memory()  # a reusable pinned staging buffer, as the loader keeps one
    dev_staged = staged.to("cuda", buffer=pinned)
    decode_gather(dev_staged, "triton")  # compile outside the trace
    torch.cuda.synchronize()
    sched = schedule(wait=1, warmup=1, active=args.steps)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], schedule=sched, record_shapes=True) as prof:
        for _ in range(args.steps + 2):
            with record_function("stage_h2d"):
                dev_staged = staged.to("cuda", non_blocking=True, buffer=pinned)
            with record_function("decode_gather"):
                values, viol = decode_gather(dev_staged, "triton")
            with record_function("read_leakage_flags"):
                int(viol.max()) if viol.numel() else 0
            prof.step()
    prof.export_chrome_trace(args.out)
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=12))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
