"""Record a torch.profiler chrome trace of a few overlapped HSTU training steps (CPU or CUDA).

    python profiling/e2e_trace.py [--tenant mid] [--steps 4] [--device auto] [--out profiling/trace_e2e.json]

The steps are fed by ``Materializer.iterate`` exactly as in ``gpumat bench e2e``'s overlapped
mode (same model sizing per device). Open the JSON in https://ui.perfetto.dev or chrome://tracing:

- the host-stage thread(s) (``gpumat-gpumat host stage-*``) show ``gpumat.plan`` (and, on CUDA,
  ``gpumat.pack``) for batches ahead of the one being trained on;
- the training thread shows ``e2e.wait_batch`` (how long the loop waited for data; short when
  the overlap works) with ``gpumat.h2d`` / ``gpumat.decode`` / ``gpumat.handoff`` inside, then
  ``e2e.step`` (forward, backward, optimizer);
- on CUDA, the H2D copy and the ``_history_kernel`` / ``_tail_kernel`` launches sit
  on their own streams (not the compute stream) and run under the previous step's kernels.

On a CPU device the reference backend runs plan and decode in the host threads, so there the
whole materialization shows up on the stage thread, beside ``e2e.step`` on the main thread.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tenant", default="mid", help="short, mid or long (default mid)")
    p.add_argument("--steps", type=int, default=4, help="profiled steps (after --warmup)")
    p.add_argument("--warmup", type=int, default=2, help="steps before the trace starts (pipeline fill, compilation)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--scale", type=float, default=None, help="workload size (default 1.0 on cuda, 0.25 on cpu)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--model-max-len", type=int, default=None)
    p.add_argument("--dim", type=int, default=None)
    p.add_argument("--layers", type=int, default=None)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--inflight", type=int, default=2)
    p.add_argument("--min-fill", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="profiling/trace_e2e.json", help="chrome trace JSON to write")
    args = p.parse_args(argv)

    import torch
    from torch.profiler import ProfilerActivity, schedule

    from gpumat.bench.e2e import PLANS, make_model, make_step, plan_tenant, select_examples
    from gpumat.bench.trace import STAGES, thread_profiler
    from gpumat.models.train import labeled_batches
    from gpumat.ops import pick_device
    from gpumat.core.errors import GpumatError
    from gpumat.host.workloads import synthetic_workload
    from gpumat.materializer import Materializer, stage_range

    try:
        device = pick_device(args.device)
    except GpumatError as e:
        print(f"e2e_trace.py: {e}", file=sys.stderr)
        return 2
    kind = device.type
    model = dict(PLANS[kind]["model"])
    if args.dim is not None:
        model["dim"] = args.dim
    if args.layers is not None:
        model["num_layers"] = args.layers
    scale = args.scale if args.scale is not None else PLANS[kind]["scale"]
    workdir = tempfile.mkdtemp(prefix="gpumat-e2e-trace-")
    try:
        w = synthetic_workload(os.path.join(workdir, "tier"), scale=scale, seed=args.seed, progress=False)
        tenant = next((t for t in w.tenants if t.name == args.tenant), None)
        if tenant is None:
            print(f"e2e_trace.py: unknown tenant {args.tenant!r}; choose from {[t.name for t in w.tenants]}", file=sys.stderr)
            return 2
        memory = torch.cuda.get_device_properties(device).total_memory if kind == "cuda" else None
        plan = plan_tenant(tenant, kind, model, args.batch_size, args.model_max_len, memory)
        n = args.warmup + args.steps + args.depth + args.inflight + 1
        table, _ = select_examples(w.examples, int(args.min_fill * plan.model_max_len), n * plan.batch_size)
        mat = Materializer(w.tier, [tenant], device=device, sparse_features=False)
        net, opt = make_model(tenant, model, plan.model_max_len, device, args.seed)
        step = make_step(net, opt, model["num_items"], kind == "cuda")
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if kind == "cuda" else [])
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        seen: set = set()

        def ready(p):  # called once, when the last active step ends
            p.export_chrome_trace(args.out)
            seen.update(e.name for e in p.events() if e.name in STAGES)

        # warmup: the pipeline fills and kernels compile before the recorded steps; repeat=1: one trace
        prof, all_threads = thread_profiler(acts, schedule=schedule(wait=0, warmup=args.warmup, active=args.steps, repeat=1),
                                      on_trace_ready=ready)
        with prof:
            loader = mat.iterate(table, batch_size=plan.batch_size, seed=args.seed, depth=args.depth,
                                 inflight=args.inflight, drop_last=True, rank=0, world_size=1)
            feed = labeled_batches(loader, tenant.name)
            try:
                for i in range(args.warmup + args.steps):
                    with stage_range("e2e.wait_batch", kind == "cuda"):
                        batch, labels = next(feed)
                    step(batch, labels)
                    if kind == "cuda" and i == args.warmup + args.steps - 1:
                        torch.cuda.synchronize(device)  # the last step's kernels complete inside the trace
                    prof.step()
            finally:
                feed.close()
        seen = sorted(seen)
        print(f"tenant {tenant.name} (max_len {tenant.max_len}) on {device}, backend {mat.backend}: batch {plan.batch_size}, "
              f"model max_len {plan.model_max_len}; {args.steps} steps traced after {args.warmup} warm-up steps")
        for note in plan.notes:
            print(f"note: {note}")
        print(f"gpumat stage ranges in the trace: {', '.join(seen) or 'none'}"
              + ("" if all_threads else " (this torch cannot record ranges of the host-stage threads)"))
        print(f"wrote {args.out}  (open in https://ui.perfetto.dev or chrome://tracing)")
        return 0
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
