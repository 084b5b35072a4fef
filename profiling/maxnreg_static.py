"""Registers, spills, SASS instructions and warps an SM of the history kernel under Triton's
``maxnreg`` (issue 10: could fewer registers hide more latency?), compiled for sm_90 with no GPU.

The long bench tenant's configuration (``gpumat.bench.static``: the bench column set, item ids as DICT
codes, actions as PATCH blocks, jagged, strict check, narrow blocks, unmasked loads) under each
launch ``(TP, SEQ, warps)`` and register cap. Warps an SM: ``gpumat.bench.static.warps_per_sm`` (the
register file's, 32 resident programs, at most 64).

    python profiling/maxnreg_static.py [--launches 1,1,1 1,2,1 2,1,2 4,1,4] [--caps 0 64 56 48 40 32]

``--caps``: 0 no cap (the launcher's three-element launches), else that cap (a fourth element,
``LAUNCH_CHOICES``' ``(1, 2, 1, 64)``).

Run it with the triton to study (the GPU image has 3.6: a venv with ``pip install triton==3.6.0``).
"""

from __future__ import annotations

import argparse


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--launches", nargs="+", default=["1,1,1", "1,2,1", "2,1,2", "4,1,4"])
    ap.add_argument("--caps", nargs="+", type=int, default=[0, 64, 56, 48, 40, 32], help="0: no cap")
    args = ap.parse_args()

    import triton

    import gpumat.bench.static as st

    cap = [0]
    compile_ = triton.compile

    def capped(src, target=None, options=None):  # (the static check's compile, with the cap)
        options = dict(options or {})
        options.pop("maxnreg", None)
        if cap[0]:
            options["maxnreg"] = cap[0]
        return compile_(src, target=target, options=options)

    triton.compile = capped
    job = (90, "history", st.BENCH_COLUMNS, False, False, False, False,
           (st.BENCH_PATCH, st.BENCH_RUN, st.BENCH_NOBITS, st.BENCH_DICT))
    print(f"triton {triton.__version__}, sm_90, the long bench tenant's history kernel")
    print(f"{'launch':>10}{'maxnreg':>9}{'regs':>6}{'stack B':>9}{'local B':>9}{'SASS':>7}{'SASS/tile':>11}{'warps/SM':>10}")
    for launch in args.launches:
        tp, seq, warps = (int(x) for x in launch.split(","))
        for c in args.caps:
            cap[0] = c
            info = st._compile_config(job + ((tp, seq, warps),))
            st._disassemble(90, [info])
            per_sm = st.warps_per_sm(info["regs"], warps)
            print(f"{launch:>10}{c or '-':>9}{info['regs']:>6}{info['stack_bytes']:>9}{info['local_bytes']:>9}"
                  f"{info['sass_instructions']:>7}{info['sass_instructions'] * warps / (tp * seq):>11.0f}{per_sm:>10}")


if __name__ == "__main__":
    main()
