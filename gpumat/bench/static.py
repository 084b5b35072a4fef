"""``gpumat bench kernels --static``: what the decode-gather kernels cost, read from the compiler, no GPU.

Every kernel configuration the launcher uses (``kernels/triton_decode_gather.py``: the history
kernel and the tail kernel, each one launch for all of a tenant's columns; the bench tenants'
column set in every mode: strict / inclusive, jagged / padded, narrow / wide blocks, looped tiles or
tails; and every single-column case) is compiled ahead of time with ``triton.compile`` for a
``GPUTarget`` (sm_90 and sm_80); the wheel's ``cuobjdump`` and ``nvdisasm`` give registers, local
memory (spills) and the SASS. Per bench tenant (the batches of ``gpumat bench kernels``) it then
counts the warp-instructions the two launches issue:

    warp-instructions = sum over launches of programs x warps per program x instructions per program

with every SASS instruction of a kernel counted once per warp (both kernels are straight-line code
for the bench batches: 128-event blocks need no chunk loop, and tails of at most 16 events fit one
row), and compares the issue time that implies (at 4 warp-instructions per clock per SM, 132 SMs,
1.98 GHz: an H100/H200 SXM) with the DRAM time of the bytes the batch must move (staged input plus
materialized output, at 3.35 TB/s). The issue floor above the DRAM floor means the kernel is
limited by instructions, not by memory. Per tenant it also gives the history configuration's
registers and the warps an SM then holds (``warps_per_sm``: one-warp programs at most 32, the
resident-program limit, and fewer past 64 registers). Configurations compile in parallel, one
process per core.
"""

from __future__ import annotations

import bisect
import itertools
import os
import re
import struct
import subprocess
import tempfile


SMS, IPC, CLOCK_HZ, DRAM_BPS = 132, 4, 1.98e9, 3.35e12
ARCHS = (90, 80)


def _tools():
    import triton

    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")


def _compile(fn, arch: int, sig: dict, consts: dict, options: dict) -> dict:
    """Compile one configuration; ``{"regs", "local_bytes", "stack_bytes", "text"}``, ``text`` the
    kernel's machine code (``_disassemble`` reads it, for all configurations of an arch at once).

    ``sig``: the type of every non-constexpr argument (``"*i64"``, ``"i64"``, or a tuple of them for a
    tuple argument, ``"constexpr"`` for an element Triton makes a constant); ``consts``: the
    constexpr values, by name or, for a tuple's element, by ``(name, index)``; ``options``: the
    compile options the launcher passes (``num_warps``, and ``maxnreg`` where it caps registers)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    full = {name: sig.get(name, "constexpr") for name in fn.arg_names}
    path = lambda n: (fn.arg_names.index(n[0]), n[1]) if isinstance(n, tuple) else (fn.arg_names.index(n),)  # noqa: E731
    src = ASTSource(fn=fn, signature=full, constexprs={path(n): v for n, v in consts.items()})
    ck = triton.compile(src, target=GPUTarget("cuda", arch, 32), options=dict(options))
    cubin = ck.asm["cubin"]
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "k.cubin")
        with open(path, "wb") as f:
            f.write(cubin)
        usage = subprocess.run([os.path.join(_tools(), "cuobjdump"), "-res-usage", path], capture_output=True,
                               text=True, check=True).stdout
    m = re.search(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)", usage)
    return {"regs": int(m.group(1)), "stack_bytes": int(m.group(2)), "local_bytes": int(m.group(4)),
            "text": _elf_text(cubin)}


def _elf_text(cubin: bytes) -> bytes:
    """The one kernel's code in a cubin (an ELF64): its ``.text.<kernel>`` section."""
    shoff, = struct.unpack_from("<Q", cubin, 0x28)
    entsize, num, names = struct.unpack_from("<HHH", cubin, 0x3A)
    heads = [struct.unpack_from("<IIQQQQ", cubin, shoff + i * entsize) for i in range(num)]
    strs = heads[names][4]
    texts = [cubin[h[4]:h[4] + h[5]] for h in heads
             if cubin[strs + h[0]:cubin.index(b"\0", strs + h[0])].startswith(b".text.")]
    if len(texts) != 1:
        raise RuntimeError(f"a cubin with {len(texts)} code sections: expected one kernel")
    return texts[0]


def _disassemble(arch: int, infos: list[dict]) -> None:
    """Fill in each configuration's SASS counts (``sass_instructions``, ``sass_by_kind``,
    ``branches``) from its ``text`` (removed), one ``nvdisasm`` of the codes laid end to end: its
    start-up (~0.5 s, its tables) is most of one kernel's disassembly."""
    offsets, at = [], 0
    for info in infos:
        offsets.append(at)
        at += len(info["text"])
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "k.bin")
        with open(path, "wb") as f:
            f.write(b"".join(info["text"] for info in infos))
        sass = subprocess.run([os.path.join(_tools(), "nvdisasm"), "-b", f"SM{arch}", path], capture_output=True,
                              text=True, check=True).stdout
    ops = [[] for _ in infos]
    for line in sass.splitlines():
        m = re.match(r"\s+/\*([0-9a-f]{4,})\*/\s+([^;]*)", line)
        if m and m.group(2).split():
            o = m.group(2).split()
            ops[bisect.bisect_right(offsets, int(m.group(1), 16)) - 1].append(o[1] if o[0].startswith("@") else o[0])
    for info, kops in zip(infos, ops):
        del info["text"]
        # the stream up to the last EXIT: the branch to self after it and the NOP padding never issue
        last_exit = max(i for i, o in enumerate(kops) if o == "EXIT")
        issued = [o for o in kops[: last_exit + 1] if o != "NOP"]
        info.update(sass_instructions=len(issued), sass_by_kind=_kinds(issued),
                    branches=sum(o.split(".")[0] == "BRA" for o in issued))


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


# The bench tenants' columns (gpumat/bench/kernels.py COLUMNS): item_id int64 stored (DICT blocks, as
# the bench tier stores it), action int32 stored (PATCH blocks), ts int64 staged only for the check.
BENCH_COLUMNS = (("int64", True, False), ("int32", True, False), ("int64", False, True))
# PATCH_MASK / RUN_MASK / NOBITS_MASK of the bench batches: action's PATCH blocks have no low bits
BENCH_PATCH, BENCH_RUN, BENCH_NOBITS = 0b010, 0b000, 0b010
BENCH_DICT = 0b001  # DICT_MASK of the bench batches: item_id's DICT blocks
# The bench batches with ts as DELTA PATCH blocks (``DELTA_TS_COLUMNS``), as a tier stores timestamps
# whose steps pay for DELTA (ML-1M, ML-100K; not the bench tier's, which stays LFOR): the cost of the scan
BENCH_DELTA_TS = (BENCH_PATCH | 0b100, BENCH_RUN, BENCH_NOBITS, BENCH_DICT, 0b100)
# The bench batches with two item attributes (int32) that borrow item_id's codes (``FEATURE_COLUMNS``:
# item_id, genre, year, action, ts), decoded once for the three (LENDER 0: aux entry 7 is LENDER + 1)
# or each on its own (as before ``borrow_plan``)
FEATURE_KEY = (("int64", True, False), ("int32", True, False), ("int32", True, False), ("int32", True, False),
               ("int64", False, True))
FEATURE_AUX = (0b01000, 0, 0b01000, 0b00111, 0, 0)
FEATURE_BORROW = FEATURE_AUX + (1, 0b00110)


def aux_key(aux) -> tuple:
    """``(PATCH_MASK, RUN_MASK, NOBITS_MASK, DICT_MASK, DELTA_MASK, RADIX_MASK, LENDER + 1,
    BORROW_MASK)`` of a configuration's ``aux`` (shorter tuples padded with 0); NOBITS only matters
    beside PATCH / RUN / DICT / DELTA / RADIX (the plain configuration is compiled without it)."""
    p, r, nb, d, dl, rx, ln, bm = (tuple(aux) + (0,) * 8)[:8]
    return (p, r, nb, d, dl, rx, ln, bm) if p or r or d or dl or rx else (0,) * 6 + (ln, bm)


def kernel_configs():
    """Every configuration counted or checked: ``(kernel, columns, inclusive, padded, wide, loop, aux)``.

    ``columns``: ``(dtype, store, check)`` per staged column; ``aux``: the ``(PATCH_MASK, RUN_MASK[,
    NOBITS_MASK[, DICT_MASK[, DELTA_MASK[, RADIX_MASK[, LENDER + 1, BORROW_MASK]]]]]])`` of the
    history kernel (``aux_key``). The bench tenants'
    column set in every mode the launcher has (strict / inclusive, jagged / padded, narrow / wide
    blocks, looped tiles and tails), without PATCH blocks, with the bench tier's (``action``) and
    with ts as DELTA PATCH blocks too; the same with two attributes borrowing ``item_id``'s codes
    (``FEATURE_KEY``), decoded once and each on its own; every single-column case (each dtype stored, checked, or
    both; with PATCH, RUN, DICT, DELTA or RADIX blocks and some of their mixes: RUN beside DICT is
    a dictionary's codes in RUN blocks). ``kernel`` "history" is the history kernel as the launcher
    takes it for a packed batch of long windows (``SLACK``: unmasked value loads; masked in the
    looping path), "history_masked" the same with masked loads (shorter windows, or a batch without
    the room ``StagedBatch.pack`` leaves)."""
    single = [((dtype, store, check),) for dtype in ("int64", "int32")
              for store, check in ((True, False), (False, True), (True, True))]
    for kernel in ("history", "tail"):
        for inclusive, padded, wide, loop in itertools.product((False, True), repeat=4):
            if kernel == "tail" and wide:
                continue
            yield kernel, BENCH_COLUMNS, inclusive, padded, wide, loop, (0, 0)
            if kernel == "history" and not loop:
                for kname in ("history", "history_masked"):
                    if kname == "history_masked":
                        yield kname, BENCH_COLUMNS, inclusive, padded, wide, loop, (0, 0)
                    yield kname, BENCH_COLUMNS, inclusive, padded, wide, loop, (BENCH_PATCH, BENCH_RUN, BENCH_NOBITS)
                    yield kname, BENCH_COLUMNS, inclusive, padded, wide, loop, (BENCH_PATCH, BENCH_RUN, BENCH_NOBITS, BENCH_DICT)
                    yield kname, BENCH_COLUMNS, inclusive, padded, wide, loop, BENCH_DELTA_TS
        for kname in ("history", "history_masked") if kernel == "history" else (kernel,):
            for aux in ((FEATURE_AUX, FEATURE_BORROW) if kernel == "history" else ((0, 0),)):
                yield kname, FEATURE_KEY, False, False, False, False, aux
        for cols in single:
            for kname in (kernel, "history_masked") if kernel == "history" else (kernel,):
                yield kname, cols, False, False, False, False, (0, 0)
                if kernel == "history":
                    for aux in ((1, 0), (0, 1), (1, 1), (1, 0, 1), (0, 0, 0, 1), (0, 1, 0, 1), (1, 1, 0, 1), (0, 0, 0, 0, 1),
                                (1, 0, 0, 0, 1),
                                (1, 1, 0, 1, 1), (0, 0, 0, 0, 0, 1), (1, 1, 0, 0, 0, 1), (1, 0, 0, 1, 1, 1)):
                        yield kname, cols, False, False, False, False, aux


def _masks(cols, wide: bool) -> dict:
    store = sum(1 << c for c, (_, st, _) in enumerate(cols) if st)
    check = next((c for c, (_, _, ch) in enumerate(cols) if ch), -1)
    out64 = sum(1 << c for c, (dt, _, ch) in enumerate(cols) if dt == "int64" or ch)
    return {"NCOL": len(cols), "STORE_MASK": store, "CHECK_COL": check, "OUT64_MASK": out64,
            "WIDE_MASK": out64 if wide else 0}


def _compile_config(job) -> dict:
    """Compile one ``(arch, kernel, columns, inclusive, padded, wide, loop, aux)`` configuration."""
    import gpumat.kernels.triton_decode_gather as k

    arch, kernel, cols, inclusive, padded, wide, loop, aux, *launch = job
    n = len(cols)
    outs = tuple({"int64": "*i64", "int32": "*i32"}[dt] for dt, _, _ in cols)
    masks = _masks(cols, wide)
    consts = {"NCOL": n, "STORE_MASK": masks["STORE_MASK"], "CHECK_COL": masks["CHECK_COL"],
              "INCLUSIVE": inclusive and masks["CHECK_COL"] >= 0, "PADDED": padded}
    if kernel in ("history", "history_masked"):
        fn = k._history_kernel
        # (the counts travel as ``opaque_count``: odd int32s, which Triton never specializes)
        sig = {"hdrs": ("*i64",) * n, "words": ("*i32",) * n, "outs": outs, "nwords": ("i32",) * n,
               "dicts": ("*i64",) * n, "ndicts": ("i32",) * n}
        patch, run, nobits, dict_mask, delta, radix, lender, borrow = aux_key(aux)
        tp, seq, warps, maxnreg = (*launch[0], 0)[:4] if launch else (k.GPU_TILES_PER_PROG, k.GPU_TILES_SEQ,
                                                                    k.HISTORY_WARPS, 0)
        consts.update(OUT64_MASK=masks["OUT64_MASK"], WIDE_MASK=masks["WIDE_MASK"], PATCH_MASK=patch,
                      RUN_MASK=run, NOBITS_MASK=nobits, DICT_MASK=dict_mask, DELTA_MASK=delta, RADIX_MASK=radix,
                      LENDER=lender - 1, BORROW_MASK=borrow,
                      LANES=32, STEPS=4,
                      TILES_PER_PROG=tp, SEQ=seq, LOOP=loop,
                      # what the launcher takes for a packed batch (WORDS_SLACK after every column's
                      # words) of long windows (SLACK_MIN_BUCKET) outside the looping path;
                      # "history_masked": shorter windows, or a batch without that room
                      SLACK=kernel == "history" and not loop)
        per_program = tp * seq
    else:
        fn = k._tail_kernel
        sig = {"tails": ("*i64",) * n, "outs": outs}
        epp, tb, tail_loop = k.tail_shape(128 if loop else 16, k.GPU_TAIL_LANES)
        consts.update(EX_PER_PROG=epp, TAIL_BLOCK=tb, TAIL_LOOP=tail_loop)
        per_program, warps = epp, k.TAIL_WARPS
    sig.update({a: "*i64" for a in fn.arg_names if a.endswith("_ptr")}, viol_ptr="*i32")
    # sizes below 2^31 reach the kernel as i32 (Triton types a Python int by its value)
    sig.update({a: "i32" for a in fn.arg_names if a.startswith("n_") or a in ("width", "len_bucket")})
    info = _compile(fn, arch, sig, consts, k.history_options(warps, maxnreg, wide) if kernel != "tail" else {"num_warps": warps})
    info.update(kernel=kernel, arch=f"sm_{arch}", columns=[list(c) for c in cols], inclusive=inclusive,
                padded=padded, wide=wide, loop=loop, aux=list(aux), num_warps=warps, per_program=per_program)
    if kernel != "tail":
        info["launch"] = [tp, seq, warps] + ([maxnreg] if maxnreg else [])
    return info


def candidate_jobs() -> list[tuple]:
    """The history kernel under every launch ``gpumat bench kernels`` may tune to (``LAUNCH_CHOICES``),
    sm_90, the bench column set, narrow and wide blocks."""
    import gpumat.kernels.triton_decode_gather as k

    return [(90, kname, BENCH_COLUMNS, False, False, wide, False, (BENCH_PATCH, BENCH_RUN, BENCH_NOBITS, BENCH_DICT), tuple(c))
            for c in k.LAUNCH_CHOICES for wide in (False, True) for kname in ("history", "history_masked")]


def compile_all(archs=ARCHS, extra=()) -> list[dict]:
    """Compile every configuration for every arch (and the ``extra`` jobs), one process per core;
    raise if one fails to compile."""
    import multiprocessing

    import gpumat.kernels.triton_decode_gather as k

    if k.INTERPRETED:
        raise RuntimeError("the kernels were defined under TRITON_INTERPRET=1: run the static check without it")
    jobs = [(arch, *cfg) for arch in archs for cfg in kernel_configs()] + list(extra)
    procs = min(len(jobs), os.cpu_count() or 1)
    if procs <= 1:
        out = [_compile_config(j) for j in jobs]
    else:
        with multiprocessing.get_context("fork").Pool(procs, initializer=_default_sigterm) as pool:
            out = pool.map(_compile_config, jobs)
    for arch in sorted({j[0] for j in jobs}):
        _disassemble(arch, [c for c, j in zip(out, jobs) if j[0] == arch])
    return out


def _default_sigterm() -> None:
    """A forked compile worker dies on SIGTERM (the pool's ``terminate`` when it is done), rather than
    raising the CLI's cleanup exception it inherited (a traceback per worker)."""
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def staged_launch(staged, borrow: bool = True) -> tuple:
    """The configuration the launcher takes for host batch ``staged`` (``column_masks``), jagged,
    strict check: ``(history kernel name, wide, aux, tail loop)``, as ``kernel_configs`` and
    ``_compile_config`` name a configuration; columns that share their blocks decoded once
    (``borrow_plan``), or each on its own (``borrow`` False)."""
    import gpumat.kernels.triton_decode_gather as tdg

    masks = tdg.column_masks(staged)
    lender, bmask = tdg.borrow_plan(staged, masks) if borrow else (-1, 0)
    aux = aux_key(masks[2:] + ((lender + 1, bmask) if bmask else (0, 0)))
    # (the launcher's choice: unmasked value loads for long windows, tdg.SLACK_MIN_BUCKET)
    bucket = max(int(staged.total // max(staged.batch_size, 1)).bit_length() - 1, 0)  # len_bucket of the batch moved by .to()
    kname = "history" if bucket >= tdg.SLACK_MIN_BUCKET else "history_masked"
    return kname, masks[1] != 0, aux, staged.max_tail > 16


def warps_per_sm(regs: int, warps: int) -> int:
    """Warps an SM holds of programs of ``warps`` warps and ``regs`` registers a thread (sm_90): the
    least of what the register file holds (65,536, a warp's allocated 256 at a time, whole
    programs), 32 resident programs (compute capability 9.0's limit) and 64 warps.

    >>> warps_per_sm(64, 1), warps_per_sm(66, 1), warps_per_sm(40, 2), warps_per_sm(128, 4)
    (32, 28, 50, 16)
    """
    per_warp = -(-regs * 32 // 256) * 256
    return min(64, 65536 // (per_warp * warps) * warps, 32 * warps)


def staged_cost(staged, hist: dict, tail: dict) -> dict:
    """Warp-instructions (an event too), issue floor and DRAM floor of host batch ``staged`` under the
    compiled history and tail configurations ``hist`` and ``tail``."""
    T, B = staged.num_tiles, staged.batch_size
    wi = (-(-T // hist["per_program"]) * hist["num_warps"] * hist["sass_instructions"]
          + -(-B // tail["per_program"]) * tail["num_warps"] * tail["sass_instructions"])
    events = staged.total
    out_bytes = sum(events * (8 if c.dtype == "int64" else 4) for c in staged.columns.values() if c.project)
    moved = staged.staged_bytes() + out_bytes
    out = {"batch_size": B, "events": events, "tiles": T,
           "warp_instructions": int(wi), "warp_instructions_per_event": wi / events,
           "issue_floor_us": wi / (IPC * SMS * CLOCK_HZ) * 1e6, "bytes_moved": int(moved),
           "dram_floor_us": moved / DRAM_BPS * 1e6}
    out["issue_over_dram"] = out["issue_floor_us"] / out["dram_floor_us"]
    out["history_registers"] = hist["regs"]
    out["history_warps_per_sm"] = warps_per_sm(hist["regs"], hist["num_warps"])
    return out


def tenant_costs(configs: list[dict], arch: str, tenants, columns=None, key=BENCH_COLUMNS, borrow=True,
                 l2_rates=None) -> dict:
    """Warp-instructions per event, issue floor and DRAM floor of each bench tenant's batch: one
    history launch and one tail launch over all its columns (``columns``: synthetic specs, ``key``:
    their configurations' ``(dtype, store, check)``), jagged, strict check, narrow blocks; columns that
    share their blocks decoded once (``borrow_plan``), or each on its own (``borrow`` False). With
    ``l2_rates`` (``gpumat.bench.l2.l2_rates``), the L2 floor too (``tenant_l2``)."""
    from gpumat.bench.kernels import COLUMNS, synthetic_staged

    table = {(c["kernel"], tuple(map(tuple, c["columns"])), c["inclusive"], c["padded"], c["wide"], c["loop"],
              aux_key(c["aux"])): c for c in configs if c["arch"] == arch}
    out = {}
    for name, L, B in tenants:
        staged = synthetic_staged(B, L, columns=columns or COLUMNS)
        kname, wide, aux, tail_loop = staged_launch(staged, borrow)
        out[name] = {"max_len": L, **staged_cost(staged, table[(kname, key, False, False, wide, False, aux)],
                                                  table[("tail", key, False, False, False, tail_loop, aux_key(()))])}
        if l2_rates is not None:
            out[name].update(tenant_l2(staged, l2_rates))
            out[name]["l2_over_dram"] = out[name]["l2_floor_us"] / out[name]["dram_floor_us"]
    return out


L2_SMS = 1  # SMs whose share of a batch's tiles the L2 model walks (each ~1/132 of the batch)


def tenant_l2(staged, rates: dict) -> dict:
    """L2 sectors and requests an event of host batch ``staged`` and its L2 floors
    (``gpumat.bench.l2``: the default launch's programs, an SM's L1 of 224 KiB)."""
    from gpumat.bench import l2
    import gpumat.kernels.triton_decode_gather as k

    r = l2.simulate(staged, L2_SMS, l2.L1_KIB, k.GPU_TILES_SEQ)
    return {"l2_sectors_per_event": r["l2_sectors_per_event"], "l2_requests_per_event": r["l2_requests_per_event"],
            **l2.l2_floor_us(r, int(staged.tile_cnt.sum()), rates)}


def l2_calibration(tenants) -> dict:
    """``gpumat.bench.l2.l2_rates`` from the long tenant's bench batch (at the scale asked; per event)."""
    from gpumat.bench import l2
    from gpumat.bench.kernels import synthetic_staged
    import gpumat.kernels.triton_decode_gather as k

    name, L, B = next((t for t in tenants if t[0] == "long"), ("long", 65536, 1))
    return l2.l2_rates(l2.simulate(synthetic_staged(B, L), L2_SMS, l2.L1_KIB, k.GPU_TILES_SEQ))


def static_report(tenants) -> dict:
    import triton

    import gpumat.kernels.triton_decode_gather as k

    from gpumat.bench.kernels import DELTA_TS_COLUMNS, FEATURE_COLUMNS, FOR_ITEM_COLUMNS, PLAIN_COLUMNS

    extra = candidate_jobs()
    compiled = compile_all(extra=extra)
    configs, cands = compiled[:len(compiled) - len(extra)], compiled[len(compiled) - len(extra):]
    spills = [c for c in compiled if c["local_bytes"] or c["stack_bytes"]]
    tails = [c for c in configs if c["kernel"] == "tail"]
    candidates = []
    for launch in k.LAUNCH_CHOICES:
        hist = [c for c in cands if tuple(c["launch"]) == tuple(launch)]
        costs = tenant_costs(hist + tails, "sm_90", tenants)
        candidates.append({"launch": list(launch), "regs": max(c["regs"] for c in hist),
                           "spills": any(c["local_bytes"] or c["stack_bytes"] for c in hist),
                           "sass_instructions": max(c["sass_instructions"] for c in hist),
                           "tenants": {n: {"warp_instructions_per_event": v["warp_instructions_per_event"],
                                           "issue_over_dram": v["issue_over_dram"],
                                           "history_registers": v["history_registers"],
                                           "warps_per_sm": v["history_warps_per_sm"]} for n, v in costs.items()}})
    from gpumat.bench import l2

    rates = l2_calibration(tenants)
    return {"static": {"arch": "sm_90", "triton": triton.__version__, "kernels": configs,
                       "launch_candidates": candidates,
                       "default_launch": [k.GPU_TILES_PER_PROG, k.GPU_TILES_SEQ, k.HISTORY_WARPS],
                       "spilling_configurations": len(spills),
                       "tenants": tenant_costs(configs, "sm_90", tenants, l2_rates=rates),
                       "tenants_sm_80": tenant_costs(configs, "sm_80", tenants),
                       # the same batches with item_id and action as plain frame of reference (no aux path)
                       "tenants_without_patch": tenant_costs(configs, "sm_90", tenants, PLAIN_COLUMNS),
                       # and with item_id as 24-bit frame of reference (no segment dictionary)
                       "tenants_item_for": tenant_costs(configs, "sm_90", tenants, FOR_ITEM_COLUMNS),
                       # and with ts as DELTA PATCH blocks (a warp scan per tile; not the bench tier's ts)
                       "tenants_delta_ts": tenant_costs(configs, "sm_90", tenants, DELTA_TS_COLUMNS),
                       # and with two int32 item attributes borrowing item_id's codes: decoded once for
                       # the three columns, and (as before it) each on its own
                       "tenants_borrowed": tenant_costs(configs, "sm_90", tenants, FEATURE_COLUMNS, FEATURE_KEY,
                                                        l2_rates=rates),
                       "tenants_borrowed_decoded": tenant_costs(configs, "sm_90", tenants, FEATURE_COLUMNS, FEATURE_KEY,
                                                                borrow=False),
                       "model": {"sms": SMS, "warp_instructions_per_clock_per_sm": IPC, "clock_hz": CLOCK_HZ,
                                 "dram_bytes_per_s": DRAM_BPS,
                                 # L2's rates at 100%, fitted to an H200's profile of the long bench batch
                                 "l2": {"sectors_per_s": rates["sectors_per_s"], "requests_per_s": rates["requests_per_s"],
                                        "l1_kib": l2.L1_KIB, "simulated_sms": L2_SMS, "fitted_to": l2.NCU_LONG}}}}


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
        print(f"  {kname:<16}{arch}: {min(ns)}-{max(ns)} registers, {min(sass)}-{max(sass)} SASS instructions")
    print("\nhistory launch candidates (TP, SEQ, warps[, maxnreg]), sm_90: registers (the most of any batch), the bench"
          " batches' registers and warps an SM; warp-instr/event and issue/DRAM per tenant")
    for c in s.get("launch_candidates", []):
        per = "  ".join(f"{n} {t['warp_instructions_per_event']:.2f} / {t['issue_over_dram']:.2f}" for n, t in c["tenants"].items())
        occ = "/".join(sorted({f"{t['history_registers']} regs {t['warps_per_sm']} warps" for t in c["tenants"].values()}))
        mark = " (default)" if c["launch"] == s.get("default_launch") else ""
        print(f"  {tuple(c['launch'])!s:<14}{c['regs']:>4} regs{' SPILLS' if c['spills'] else ''} ({occ})  {per}{mark}")
    print(f"\n{'tenant':>7}{'events':>11}{'warp-instr/event':>18}{'issue floor us':>16}{'DRAM floor us':>15}{'issue/DRAM':>12}"
          f"{'regs':>6}{'warps/SM':>10}{'L2 sectors/event':>18}{'L2 floor us':>13}{'L2/DRAM':>9}")
    for name, t in s["tenants"].items():
        l2 = (f"{t['l2_sectors_per_event']:>18.3f}{t['l2_floor_us']:>13.1f}{t['l2_over_dram']:>9.2f}"
              if "l2_floor_us" in t else "")
        print(f"{name:>7}{t['events']:>11}{t['warp_instructions_per_event']:>18.2f}{t['issue_floor_us']:>16.1f}"
              f"{t['dram_floor_us']:>15.1f}{t['issue_over_dram']:>12.2f}{t.get('history_registers', 0):>6}"
              f"{t.get('history_warps_per_sm', 0):>10}{l2}")
    if "l2" in s.get("model", {}):
        m = s["model"]["l2"]
        print(f"  L2 floor: the sectors that reach L2 (gpumat.bench.l2: an SM's {m['l1_kib']} KiB L1, {m['simulated_sms']} SM's"
              f" share of the tiles walked) at {m['sectors_per_s'] * 32 / 1e12:.2f} TB/s, L2's rate fitted to an H200's profile"
              f" ({m['fitted_to']['source']}); over 1: L2, not DRAM, bounds the batch")
    if "tenants_without_patch" in s:
        print("  without DICT or PATCH blocks (item_id 24-bit, action 3-bit FOR): " + ", ".join(
            f"{n} {t['warp_instructions_per_event']:.2f} ({t['issue_over_dram']:.2f})" for n, t in s["tenants_without_patch"].items()))
    if "tenants_item_for" in s:
        print("  without DICT blocks (item_id 24-bit FOR): " + ", ".join(
            f"{n} {t['warp_instructions_per_event']:.2f} ({t['issue_over_dram']:.2f})" for n, t in s["tenants_item_for"].items()))
    if "tenants_delta_ts" in s:
        print("  with ts as DELTA PATCH blocks (not the bench tier's): " + ", ".join(
            f"{n} {t['warp_instructions_per_event']:.2f} ({t['issue_over_dram']:.2f})" for n, t in s["tenants_delta_ts"].items()))
    if "tenants_borrowed" in s:
        for k, what in (("tenants_borrowed", "decoded once"), ("tenants_borrowed_decoded", "each decoded")):
            print(f"  with genre and year (int32) borrowing item_id's codes, {what}: " + ", ".join(
                f"{n} {t['warp_instructions_per_event']:.2f} ({t['issue_over_dram']:.2f})"
                + (f", L2 floor {t['l2_floor_us']:.1f} us" if "l2_floor_us" in t else "") for n, t in s[k].items()))
