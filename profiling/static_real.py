"""The static check (``gpumat bench kernels --static``, gpumat/bench/static.py) on batches planned
from a real tier: ML-1M with its item and user features (``profiling/short_histories.py``'s
``ml1m+features``: each rating with its movie's release year, genres and first genre, which borrow
``item_id``'s codes, DESIGN §1 "Borrowed codes"), for a tenant of the item and its attributes and
the leakage check on ``ts``. Each batch's history and tail configurations are compiled for sm_90
as the launcher would take them, with the shared blocks decoded once and each column decoding
them on its own; printed and written as warp-instructions an event against the issue and DRAM
floors of the same model (132 SMs, 4 warp-instructions a clock, 1.98 GHz, 3.35 TB/s).

    python profiling/static_real.py [--dataset ml1m+features] [--columns item_id,genre,year,genres] [--json F]

Batches: ``B`` users drawn at random (seeded), each its whole history at the tier's version, cut
to the tenant's ``max_len``; no tails. ML-1M's histories are short (165 events on average), so
even the long tenant's windows are mostly partial blocks: a harder case for the kernels than the
bench's synthetic batches, whose windows run 128 events a block.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import pyarrow as pa

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

TENANTS = (("short", 256, 2048), ("long", 4096, 512))  # (name, max_len, users a batch)
COLUMNS = ("item_id", "genre", "year", "genres")


def planned(tier, max_len: int, users: int, seed: int = 0, columns=COLUMNS):
    """A host batch of ``users`` random users' whole histories, for a tenant of ``columns``."""
    from gpumat.core.tenant import Tenant
    from gpumat.host.examples import parse_examples
    from gpumat.host.planner import plan

    rng = np.random.default_rng(seed)
    live = np.sort(tier._reader.length_history().live_users(tier.version))
    u = rng.choice(live, min(users, len(live)), replace=False)
    v = np.full(len(u), tier.version)
    table = pa.table({"user_id": u, "version": v, "length": tier.length_at(u, v), "request_ts": np.full(len(u), 2**62)})
    ex = parse_examples(table, dict(tier.schema))
    return plan(tier, ex, Tenant("t", list(columns), max_len), check_leakage=True)


def main(argv=None) -> dict:
    import cpu_decode

    from gpumat.bench import static as S

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="ml1m+features")
    ap.add_argument("--workdir", default="/tmp/gpumat_static_real")
    ap.add_argument("--columns", default=",".join(COLUMNS), help="the tenant's columns (ts is staged for the check)")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    columns = [c for c in args.columns.split(",") if c]
    tier = cpu_decode.load(args.workdir, 1.0, args.dataset)[0]
    cases, jobs = [], []
    for name, L, B in TENANTS:
        staged = planned(tier, L, B, columns=columns)
        key = tuple((c.dtype, bool(c.project), check) for _, c, check in staged.passes())
        for borrow in (True, False):
            kname, wide, aux, tail_loop = S.staged_launch(staged, borrow)
            hist = (90, kname, key, False, False, wide, False, aux)
            tail = (90, "tail", key, False, False, False, tail_loop, S.aux_key(()))
            cases.append((name, L, staged, borrow, {n: staged.codes_of(n) for n, _, _ in staged.passes()}, len(jobs)))
            jobs += [hist, tail]
    compiled = S.compile_all(archs=(), extra=jobs)
    spills = sum(bool(c["local_bytes"] or c["stack_bytes"]) for c in compiled)
    out = {"dataset": args.dataset, "columns": columns, "arch": "sm_90", "spilling_configurations": spills,
           "triton": __import__("triton").__version__, "tenants": {}}
    print(f"{args.dataset}: tenant of {', '.join(columns)} (+ ts for the leakage check), sm_90, "
          f"triton {out['triton']}; {len(compiled)} configurations, {spills} spill")
    print(f"{'tenant':>7}{'users':>7}{'events':>9}{'tiles':>8}  {'decoded':<9}{'warp-instr/event':>18}{'issue/DRAM':>12}  shared blocks")
    for name, L, staged, borrow, lent, at in cases:
        cost = S.staged_cost(staged, compiled[at], compiled[at + 1])
        how = "once" if borrow else "each"
        out["tenants"].setdefault(name, {"max_len": L, "codes_of": {k: v for k, v in lent.items() if v}})[how] = {
            **cost, "history_config": {k: compiled[at][k] for k in ("kernel", "aux", "regs", "sass_instructions")}}
        print(f"{name:>7}{staged.batch_size:>7}{cost['events']:>9}{cost['tiles']:>8}  {how:<9}"
              f"{cost['warp_instructions_per_event']:>18.2f}{cost['issue_over_dram']:>12.2f}  "
              f"{', '.join(f'{k} <- {v}' for k, v in lent.items() if v) or '-'}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return out


if __name__ == "__main__":
    main()
