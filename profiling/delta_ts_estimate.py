"""The estimate that preceded format 3's DELTA blocks (built since: DESIGN.md §1): per 128-value block, the
differences of consecutive values (0 at each block's first position, whose value becomes a field of
its own) encoded by the writer's own encoder (``host.pages.encode_stripes``: FOR, LFOR, PATCH, RUN
per block), plus that start per block as a zigzag varint of its difference from where the previous
block of the stripe ended (as format 3 predicts bases; a stripe's first block: from 0), against the
tier's `ts` (rung F3) and the tuned store-once Parquet file's, per dataset.

    python profiling/delta_ts_estimate.py [bench] [ml1m] [ml100k] [--sass]

Random access to such a block needs prefix sums on the GPU (a warp scan); this measured whether
the bytes would pay (the built blocks differ: a block's start is its base field, predicted from
the previous block's line, and the encoder keeps them where they save 1/8), and with ``--sass``
what the scan costs: a one-warp probe kernel that loads a 128-value tile and stores it, with and
without ``tl.cumsum`` over it (int64 and int32), compiled for sm_90 (no GPU needed), its SASS
instructions counted as ``gpumat bench kernels --static`` counts them.
"""

from __future__ import annotations

import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import format_study as fs  # noqa: E402

from gpumat.host import pages  # noqa: E402


def estimate(name: str, bs: int = 128) -> dict:
    ds = fs.load_dataset(name, tempfile.mkdtemp(prefix=f"gpumat-delta-{name}-"))
    v, sc, seg = ds["values"]["ts"], ds["sc"], ds["seg"]
    n = len(v)
    pos = np.arange(n) - np.repeat(np.cumsum(sc) - sc, sc)
    first = pos % bs == 0
    d = np.empty_like(v)
    d[0] = v[0]
    d[1:] = v[1:] - v[:-1]
    d[pos == 0] = v[pos == 0]  # a stripe's first block: its start from 0
    start_bytes = pages.varint_len(pages.zigzag(d))  # each block's start field, predicted from the previous block's end
    d[first] = 0
    f3 = delta = 0
    for s in np.unique(seg):
        m = np.repeat(seg == s, sc)
        f3 += len(pages.encode_stripes(v[m], sc[seg == s], bs)[0])
        delta += len(pages.encode_stripes(d[m], sc[seg == s], bs)[0]) + int(start_bytes[m & first].sum())
    return {"events": n, "f3": f3 / n, "delta": delta / n, "parquet": ds["parquet_cols"]["ts"] / n}


def scan_sass() -> dict:
    """SASS instructions of the probe (one warp, a 128-value tile): ``{(dtype, scan): (instructions, SHFL)}``."""
    import re
    import subprocess

    import triton
    import triton.language as tl
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from gpumat.bench.static import _tools

    @triton.jit
    def probe(words, out, base, n, SCAN: tl.constexpr, WIDE: tl.constexpr):
        j = tl.arange(0, 128)
        v = tl.load(words + j, mask=j < n, other=0)
        if WIDE:
            v = v.to(tl.int64)
        if SCAN:
            v = tl.cumsum(v, axis=0)
        tl.store(out + j, v.to(tl.int64) + base, mask=j < n)

    got = {}
    for wide in (True, False):
        for scan in (False, True):
            sig = {"words": "*i32", "out": "*i64", "base": "i64", "n": "i32", "SCAN": "constexpr", "WIDE": "constexpr"}
            src = ASTSource(fn=probe, signature=sig, constexprs={(4,): scan, (5,): wide})
            ck = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 1})
            with tempfile.TemporaryDirectory() as d:
                path = os.path.join(d, "k.cubin")
                with open(path, "wb") as f:
                    f.write(ck.asm["cubin"])
                sass = subprocess.run([os.path.join(_tools(), "nvdisasm"), "-c", path], capture_output=True, text=True,
                                      check=True).stdout
            ops = [ln.split("*/", 1)[1].split(";")[0].split() for ln in sass.splitlines()
                   if re.match(r"\s+/\*[0-9a-f]{4}\*/", ln)]
            ops = [o[1] if o[0].startswith("@") else o[0] for o in ops if o]
            issued = [o for o in ops[: max(i for i, o in enumerate(ops) if o == "EXIT") + 1] if o != "NOP"]
            got[("int64" if wide else "int32", scan)] = (len(issued), sum(o.startswith("SHFL") for o in issued))
    return got


if __name__ == "__main__":
    if "--sass" in sys.argv:
        sys.argv.remove("--sass")
        import triton

        for (dt, scan), (n, shfl) in scan_sass().items():
            print(f"triton {triton.__version__}, sm_90, one warp, 128-value tile, {dt}: "
                  f"{'with' if scan else 'without'} tl.cumsum: {n} SASS instructions ({shfl} SHFL)", flush=True)
        if len(sys.argv) == 1:
            sys.exit(0)
    for name in sys.argv[1:] or ["bench", "ml1m", "ml100k"]:
        r = estimate(name)
        print(f"{name}: ts B/event: tier (F3) {r['f3']:.3f}, delta in blocks (estimate) {r['delta']:.3f}, "
              f"store-once Parquet {r['parquet']:.3f} ({r['events']:,} events)", flush=True)
