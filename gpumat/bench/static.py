"""``gpumat bench kernels --static``: what the decode-gather kernels cost, read from the compiler, no GPU.

Every kernel configuration the launcher uses (``kernels/triton_decode_gather.py``: decode and tail
kernels, int64 and int32 outputs, store / check / both, strict and inclusive) is compiled ahead of
time with ``triton.compile`` for a ``GPUTarget`` (sm_90 and sm_80); the wheel's ``cuobjdump`` and
``nvdisasm`` give registers, local memory (spills) and the SASS. Per bench tenant (the batches of
``gpumat bench kernels``) it then counts the warp-instructions a launch issues:

    warp-instructions = sum over launches of programs x warps per program x instructions per program

with every SASS instruction of a kernel counted once per warp (both kernels are straight-line code
for the bench batches: 128-event blocks need no chunk loop, and tails of at most 16 events take one
pass of the tail loop), and compares the issue time that implies (at 4 warp-instructions per clock
per SM, 132 SMs, 1.98 GHz: an H100/H200 SXM) with the DRAM time of the bytes the batch must move
(staged input plus materialized output, at 3.35 TB/s). The issue floor above the DRAM floor means
the kernel is limited by instructions, not by memory.
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import tempfile


SMS, IPC, CLOCK_HZ, DRAM_BPS = 132, 4, 1.98e9, 3.35e12
ARCHS = (90, 80)


def _tools():
    import triton

    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")


def _compile(fn, arch: int, pointers: dict, scalars: list, consts: dict, num_warps: int) -> dict:
    """Compile one configuration; ``{"regs", "local_bytes", "stack_bytes", "sass": [opcodes]}``."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    sig = {}
    for name in fn.arg_names:
        if name in pointers:
            sig[name] = pointers[name]
        elif name in scalars:
            sig[name] = "i64"
        else:
            sig[name] = "constexpr"
    src = ASTSource(fn=fn, signature=sig, constexprs={(fn.arg_names.index(n),): v for n, v in consts.items()})
    ck = triton.compile(src, target=GPUTarget("cuda", arch, 32), options={"num_warps": num_warps})
    bin_dir = _tools()
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "k.cubin")
        with open(path, "wb") as f:
            f.write(ck.asm["cubin"])
        usage = subprocess.run([os.path.join(bin_dir, "cuobjdump"), "-res-usage", path], capture_output=True,
                               text=True, check=True).stdout
        sass = subprocess.run([os.path.join(bin_dir, "nvdisasm"), "-c", path], capture_output=True, text=True,
                              check=True).stdout
    m = re.search(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)", usage)
    ops = [line.split("*/", 1)[1].split(";")[0].split()
           for line in sass.splitlines() if re.match(r"\s+/\*[0-9a-f]{4}\*/", line)]
    ops = [o[1] if o[0].startswith("@") else o[0] for o in ops if o]  # opcode, past a predicate
    # the stream up to the last EXIT: the branch to self after it and the NOP padding never issue
    last_exit = max(i for i, o in enumerate(ops) if o == "EXIT")
    issued = [o for o in ops[: last_exit + 1] if o != "NOP"]
    return {"regs": int(m.group(1)), "stack_bytes": int(m.group(2)), "local_bytes": int(m.group(4)),
            "sass_instructions": len(issued), "sass_by_kind": _kinds(issued)}


def _kinds(ops: list[str]) -> dict:
    out = {"load": 0, "store": 0, "int64_emulation": 0, "other": 0}
    for o in ops:
        base = o.split(".")[0]
        if base in ("LDG", "LD", "LDS", "LDC", "ULDC"):
            out["load"] += 1
        elif base in ("STG", "ST", "STS", "RED", "ATOMG"):
            out["store"] += 1
        elif base in ("IADD3", "IMAD", "SHF", "LEA", "ISETP", "SEL") and o.count(".X") + o.count(".HI") + o.count(".WIDE"):
            out["int64_emulation"] += 1
        else:
            out["other"] += 1
    return out


def kernel_configs():
    """Every configuration the launcher compiles: ``(kernel name, dtype, store, check, inclusive)``."""
    for kernel, dtype, (store, check), inclusive in itertools.product(
            ("decode_gather", "gather_tail"), ("int64", "int32"), ((True, False), (False, True), (True, True)), (False, True)):
        if inclusive and not check:
            continue
        yield kernel, dtype, store, check, inclusive


def compile_all(archs=ARCHS) -> list[dict]:
    """Compile every configuration for every arch; raise if one fails to compile."""
    import gpumat.kernels.triton_decode_gather as k

    if k.INTERPRETED:
        raise RuntimeError("the kernels were defined under TRITON_INTERPRET=1: run the static check without it")
    tp, epp, tail_block = k.GPU_TILES_PER_PROG, k.GPU_EX_PER_PROG, k.GPU_TAIL_BLOCK
    out = []
    for arch in archs:
        for kernel, dtype, store, check, inclusive in kernel_configs():
            ptr = {"int64": "*i64", "int32": "*i32"}[dtype]
            if kernel == "decode_gather":
                fn = k._decode_gather_kernel
                pointers = {n: "*i64" for n in fn.arg_names if n.endswith("_ptr")}
                consts = {"BLOCK_SIZE": 128, "TILES_PER_PROG": tp, "LOOP": False}
            else:
                fn = k._gather_tail_kernel
                pointers = {n: "*i64" for n in fn.arg_names if n.endswith("_ptr")}
                consts = {"EX_PER_PROG": epp, "TAIL_BLOCK": tail_block}
            pointers.update(out_ptr=ptr, viol_ptr="*i32")
            scalars = [n for n in fn.arg_names if n.startswith("n_") or n == "width"]
            consts.update(STORE=store, CHECK=check, INCLUSIVE=inclusive, PADDED=False)
            info = _compile(fn, arch, pointers, scalars, consts, k.NUM_WARPS)
            info.update(kernel=kernel, arch=f"sm_{arch}", dtype=dtype, store=store, check=check, inclusive=inclusive,
                        num_warps=k.NUM_WARPS, per_program=tp if kernel == "decode_gather" else epp)
            out.append(info)
    return out


def tenant_costs(configs: list[dict], arch: str, tenants) -> dict:
    """Warp-instructions per event, issue floor and DRAM floor of each bench tenant's batch."""
    from gpumat.bench.kernels import synthetic_staged

    table = {(c["kernel"], c["dtype"], c["store"], c["check"], c["inclusive"]): c for c in configs if c["arch"] == arch}
    out = {}
    for name, L, B in tenants:
        staged = synthetic_staged(B, L)
        T = staged.num_tiles
        wi = 0
        for _, col, check in staged.passes():
            for kernel, items in (("decode_gather", T), ("gather_tail", B)):
                c = table[(kernel, col.dtype, col.project, check, False)]
                wi += -(-items // c["per_program"]) * c["num_warps"] * c["sass_instructions"]
        events = staged.total
        out_bytes = sum(events * (8 if c.dtype == "int64" else 4) for c in staged.columns.values() if c.project)
        moved = staged.staged_bytes() + out_bytes
        out[name] = {"max_len": L, "batch_size": B, "events": events, "tiles": T,
                     "warp_instructions": int(wi), "warp_instructions_per_event": wi / events,
                     "issue_floor_us": wi / (IPC * SMS * CLOCK_HZ) * 1e6, "bytes_moved": int(moved),
                     "dram_floor_us": moved / DRAM_BPS * 1e6}
        out[name]["issue_over_dram"] = out[name]["issue_floor_us"] / out[name]["dram_floor_us"]
    return out


def static_report(tenants) -> dict:
    import triton

    configs = compile_all()
    spills = [c for c in configs if c["local_bytes"] or c["stack_bytes"]]
    return {"static": {"arch": "sm_90", "triton": triton.__version__, "kernels": configs,
                       "spilling_configurations": len(spills),
                       "tenants": tenant_costs(configs, "sm_90", tenants),
                       "tenants_sm_80": tenant_costs(configs, "sm_80", tenants),
                       "model": {"sms": SMS, "warp_instructions_per_clock_per_sm": IPC, "clock_hz": CLOCK_HZ,
                                 "dram_bytes_per_s": DRAM_BPS}}}


def print_static(r: dict) -> None:
    s = r["static"]
    print(f"triton {s['triton']}: {len(s['kernels'])} kernel configurations compiled "
          f"(sm_90, sm_80), {s['spilling_configurations']} spill")
    regs = sorted({(c['kernel'], c['arch'], c['regs']) for c in s["kernels"]})
    by = {}
    for kname, arch, n in regs:
        by.setdefault((kname, arch), []).append(n)
    for (kname, arch), ns in sorted(by.items()):
        sass = [c["sass_instructions"] for c in s["kernels"] if c["kernel"] == kname and c["arch"] == arch]
        print(f"  {kname:<14}{arch}: {min(ns)}-{max(ns)} registers, {min(sass)}-{max(sass)} SASS instructions")
    print(f"\n{'tenant':>7}{'events':>11}{'warp-instr/event':>18}{'issue floor us':>16}{'DRAM floor us':>15}{'issue/DRAM':>12}")
    for name, t in s["tenants"].items():
        print(f"{name:>7}{t['events']:>11}{t['warp_instructions_per_event']:>18.2f}{t['issue_floor_us']:>16.1f}"
              f"{t['dram_floor_us']:>15.1f}{t['issue_over_dram']:>12.2f}")
