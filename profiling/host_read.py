"""The host's read of a batch, per tenant, on ``gpumat bench storage``'s workload: what a
Materializer's host stage does before it decodes (``parse_examples``, ``check_pointers``, ``plan``:
the tier's blocks read, verified, parsed and staged), as ``gpumat bench storage``'s "late read"
column times it (``late_epoch(..., decode=False)``), in CPU milliseconds per batch.

    python profiling/host_read.py [--scale 1.0] [--workdir /tmp/gpumat-cpu-decode] [--tenants short,mid,long]
                                  [--batches N] [--epochs E] [--json out.json]

Each tenant: one epoch over the first ``--batches`` user-clustered batches of 256 (all by default)
to warm up, then ``--epochs`` more, timed (``process_time``, best and median per epoch). The same
command under valgrind counts instructions, which the machine's noise does not move: run it with
``--epochs 10`` and ``--epochs 0`` and divide the difference by ten times the batches:

    valgrind --tool=cachegrind --cache-sim=no python profiling/host_read.py --tenants short --batches 10 --epochs 10

The workload is built once in ``--workdir`` (shared with ``profiling/cpu_decode.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--workdir", default="/tmp/gpumat-cpu-decode")
    p.add_argument("--tenants", default="short,mid,long")
    p.add_argument("--batches", type=int, default=0, help="the first N batches (0: all)")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from cpu_decode import load

    from gpumat.bench.storage import late_epoch
    from gpumat.host.workloads import user_clustered_batches

    tier, tenants, examples = load(a.workdir, a.scale)
    batches = user_clustered_batches(examples, 256, seed=0)
    if a.batches:
        batches = batches[: a.batches]
    out = {"batches": len(batches), "epochs": a.epochs, "tenants": {}}
    for t in tenants:
        if t.name not in a.tenants.split(","):
            continue
        late_epoch(tier, batches, t, decode=False)  # (warm: the segment dictionaries, the pooled regions)
        ms = []
        for _ in range(a.epochs):
            t0 = time.process_time()
            late_epoch(tier, batches, t, decode=False)
            ms.append((time.process_time() - t0) / len(batches) * 1e3)
        out["tenants"][t.name] = {"ms_per_batch": ms}
        if ms:
            s = sorted(ms)
            print(f"{t.name:<6} {len(batches)} batches: {s[0]:.2f} ms a batch (best), {s[len(s) // 2]:.2f} (median)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
    return out


if __name__ == "__main__":
    main()
