"""Run the fused history kernel of one `gpumat bench kernels` tenant under chosen launches, for a profiler.

Every launch first runs once (compiles, warms the allocator), then each runs once more in the same
order: under ``ncu --launch-skip N --launch-count N`` (N launches) the profiler sees exactly one
warmed run of each. The outputs of every launch are checked against the first's.

    python profiling/ncu_launches.py --tenant long --launches 1,2,1 2,1,1
    (profiling/ncu_kernels.sh wraps it in ncu)
"""

from __future__ import annotations

import argparse

import torch

from gpumat.bench import kernels as bk
from gpumat.core.errors import GpumatError
from gpumat.kernels import triton_decode_gather as tdg


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tenant", default="long", choices=[t[0] for t in bk.TENANTS])
    ap.add_argument("--launches", nargs="+", default=["1,2,1"], help="(TP, SEQ, warps[, maxnreg]) launches, e.g. 1,2,1 1,2,1,64 2,1,1")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply the tenant's batch size")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--codes", default="uniform", choices=bk.CODE_KINDS,
                    help="how the batch's DICT codes are drawn (gpumat.bench.kernels.CODE_KINDS)")
    args = ap.parse_args(argv)
    name, L, B = next(t for t in bk.TENANTS if t[0] == args.tenant)
    staged = bk.synthetic_staged(max(1, int(B * args.scale)), L, codes=args.codes)
    dev = staged.to(args.device)
    launches = [tuple(int(x) for x in s.split(",")) for s in args.launches]
    first = None
    for rnd in ("warm", "profiled"):
        for c in launches:
            values, viol = tdg.materialize_staged_triton(dev, total=staged.total, launch=c)
            if first is None:
                first = (values, viol)
            elif not (all(torch.equal(values[k], first[0][k]) for k in values) and torch.equal(viol, first[1])):
                raise GpumatError(f"launch {c} disagrees with launch {launches[0]}")
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
        print(f"{rnd}: {len(launches)} launches of the {name} tenant ({staged.total} events, {args.codes} codes): {launches}")


if __name__ == "__main__":
    main()
