"""``gpumat bench kernels``: the fused decode-gather against its peers and the machine's ceilings.

In one run, on the same staged batches (short / mid / long tenants: max_len 256, 4096, 65536):

Every path runs through the one dispatcher, ``gpumat.ops.decode_gather``:

- ``triton``: the fused kernels (decode straight from compressed blocks into the windows)
- ``torch``: the strongest plain-PyTorch GPU peer, as a user without gpumat would write it: unpack
  every staged block with vectorized torch bit ops, then index-gather the windows and tails
- ``cupy``: the hand-written CUDA C twin, when cupy is installed (the ``cuda`` extra)
- ``cpu_ref+h2d``: the NumPy reference on the host plus the pinned host-to-device copy of its dense
  result (what the training step would otherwise wait for)
- ceilings: measured device-to-device copy bandwidth and pinned host-to-device bandwidth

Reported per tenant: events/s, bytes moved (compressed staged input + materialized output),
achieved GB/s and its fraction of the D2D copy bandwidth, speedup over each peer, the host's time
to issue one call, and the history kernel's launch tuned per length bucket. Device timings are
graph replays (:func:`time_device`: the host's launch overhead excluded, as in a training step
where the decode is queued ahead on a side stream), medians with 20/80% quantiles; every batch is
larger than L2.

The staged batches are synthetic (random encoded blocks, one user per example; a DICT column's
codes drawn as ``CODE_KINDS`` says, the tier's from ``host.workloads``' item draw) so the bench
needs no tier; ``bench_staged(name, staged)`` takes any host ``StagedBatch``, so batches planned
from a real tier plug in unchanged.
"""

from __future__ import annotations

import functools
import time

import numpy as np
import torch

from gpumat.bench.util import check_outputs, environment, report, require_matplotlib
from gpumat.core.errors import GpumatError
from gpumat.core.staged import StagedBatch, StagedColumn
from gpumat.host.workloads import zipf_items
from gpumat.ops import available, check_device, decode_gather, resolve_device

BS = 128
# (name, max_len, batch size): realistic per-GPU batch sizes, each ~2^23 events (~100 MB of
# output over the two projected columns), well past the 50 MB L2 of an H100.
TENANTS = (("short", 256, 32768), ("mid", 4096, 2048), ("long", 65536, 128))
# Synthetic columns: (name, dtype, bit width, slope, projected, PATCH exceptions[, DICT codes]), as
# the bench tier stores them: item ids as DICT blocks, 18-bit codes into one dictionary of 2^18 ids
# (its segment dictionary: 212k distinct ids; docs/DESIGN.md §1, §4); actions (0..4, 70% zeros) as
# PATCH blocks (host/pages.py: no low bits, a bitmap of the 30% non-zeros, their values as
# exceptions); ts staged only for the leakage check, as linear frame of reference (slope = mean
# gap) with 12-bit residuals.
COLUMNS = (("item_id", "int64", 18, 0, True, 0.0, True), ("action", "int32", 0, 0, True, 0.3),
           ("ts", "int64", 12, 1000, False, 0.0))
# The same with item ids as 24-bit frame of reference (no dictionary: a tier before segment DICT)
FOR_ITEM_COLUMNS = (("item_id", "int64", 24, 0, True, 0.0),) + COLUMNS[1:]
# ... and with every column as plain frame-of-reference blocks (action 3 bits: no PATCH, no DICT): the
# kernel's simplest path, against which the two others' costs are read
PLAIN_COLUMNS = (("item_id", "int64", 24, 0, True, 0.0), ("action", "int32", 3, 0, True, 0.0),
                 ("ts", "int64", 12, 1000, False, 0.0))
# ... and with ts as DELTA PATCH blocks (4 low bits of each step, 10% exceptions), as a tier stores
# timestamps whose steps pay for DELTA (ML-1M's, ML-100K's; the bench tier's ts stays LFOR)
DELTA_TS_COLUMNS = COLUMNS[:2] + (("ts", "int64", 4, 0, False, 0.1, False, True),)
# ... and with two item attributes (a genre, a release year: int32) that borrow item_id's codes
# (DESIGN §1 "Borrowed codes": the same blocks, a dictionary of their own), as ML-1M with its
# features stores them; the last field names the lender
FEATURE_COLUMNS = COLUMNS[:1] + (("genre", "int32", 18, 0, True, 0.0, True, False, "item_id"),
                                 ("year", "int32", 18, 0, True, 0.0, True, False, "item_id")) + COLUMNS[1:]


# How a DICT column's codes are drawn (``synthetic_staged``'s ``codes``): ``uniform``, random codes of
# the column's width (every entry of the dictionary equally often: the batches' default); ``tier``,
# the bench tier's item ids (``bench storage``'s workload: Zipf(1.05) over 10^7 ids, 785,455 events,
# about 220k distinct) coded into their sorted dictionary, as the tier stores them (popular ids
# scattered over it); ``frequency``, the same ids coded by popularity rank (a dictionary in frequency
# order: the popular ids in its first lines). The kernels' dictionary gather reads one 32-byte
# sector of L2 for each value that misses L1, which decides what the batch costs
# (``profiling/l2_model.py``).
CODE_KINDS = ("uniform", "tier", "frequency")
TIER_EVENTS = 785_455


# ----------------------------------------------------------------------------- synthetic data


def tier_codes(kind: str, rng: np.random.Generator, width: int = 18, events: int = TIER_EVENTS) -> np.ndarray:
    """The codes of a segment's ``events`` events as ``kind`` (``CODE_KINDS``); a batch's codes are
    drawn from them, so each code comes as often as in the segment.

    >>> c = tier_codes("frequency", np.random.default_rng(0), events=10_000)
    >>> int(c.min()), bool((np.bincount(c)[:-1] >= np.bincount(c)[1:]).all())  # rank 0 the most frequent
    (0, True)
    """
    if kind not in CODE_KINDS:
        raise ValueError(f"codes must be one of {CODE_KINDS}, not {kind!r}")
    if kind == "uniform":
        return rng.integers(0, 1 << width, size=events)
    ids = zipf_items(rng, events, 10**7, 1.05)
    uniq, inv, cnt = np.unique(ids, return_inverse=True, return_counts=True)
    if len(uniq) > 1 << width:
        raise ValueError(f"{len(uniq)} distinct ids do not fit {width}-bit codes")
    if kind == "tier":
        return inv
    rank = np.empty(len(uniq), np.int64)
    rank[np.argsort(-cnt, kind="stable")] = np.arange(len(uniq))
    return rank[inv]


def pack_codes(codes: np.ndarray, w: int) -> np.ndarray:
    """Blocks of ``BS`` codes (``[K, BS]``, each under ``2^w``) as the int64 words of their packed bits
    (``[K, BS * w / 64]``: code ``k`` at bit ``k w``, little-endian), the layout the kernels read.

    >>> wds = pack_codes(np.arange(BS).reshape(1, BS) % 5, 3).view(np.uint64)[0]
    >>> [int(wds[3 * k // 64] >> np.uint64(3 * k % 64) & np.uint64(7)) for k in range(6)]
    [0, 1, 2, 3, 4, 0]
    """
    K = codes.shape[0]
    out = np.empty((K, BS * w // 64), np.int64)
    for k0 in range(0, K, 4096):  # (in slices: the bits of a long batch's 60k blocks would be GBs at once)
        bits = ((codes[k0:k0 + 4096, :, None] >> np.arange(w)) & 1).astype(np.uint8)  # [k, BS, w], little-endian
        out[k0:k0 + 4096] = np.packbits(bits.reshape(-1, BS * w), axis=1, bitorder="little").view(np.int64)
    return out


def synthetic_staged(B: int, L: int, seed: int = 0, max_tail: int = 16, columns=COLUMNS,
                     codes: str = "uniform") -> StagedBatch:
    """A host ``StagedBatch`` of ``B`` examples for a tenant of ``max_len`` L, built vectorized.

    Each example is its own user with a history of ``n ~ U[L/2, 2L]`` events (so most windows
    are full and start mid-block) and a tail of ``U[0, max_tail]`` events; every staged block is
    full (128 values) with random packed bits of the column's width, but a DICT column's, whose
    codes are drawn as ``codes`` says (``CODE_KINDS``).
    """
    rng = np.random.default_rng(seed)
    n = rng.integers(max(L // 2, 0), 2 * L + 1, size=B)
    m = rng.integers(0, max_tail + 1, size=B)
    t = np.minimum(m, L)
    h = np.minimum(n, L - t)
    offsets = np.concatenate([[0], np.cumsum(h + t)]).astype(np.int64)
    a = n - h
    first = a // BS
    nb = np.where(h > 0, -(-n // BS) - first, 0)
    K = int(nb.sum())
    ex = np.repeat(np.arange(B), nb)
    j = first[ex] + (np.arange(K) - np.repeat(np.cumsum(nb) - nb, nb))
    lo_abs = np.maximum(a[ex], j * BS)
    hi_abs = np.minimum(n[ex], (j + 1) * BS)
    tiles = dict(
        tile_block=np.arange(K, dtype=np.int64),  # one user per example: no block is shared
        tile_lo=lo_abs - j * BS,
        tile_cnt=hi_abs - lo_abs,
        tile_out=offsets[ex] + lo_abs - a[ex],
        tile_ex=ex,
    )
    tail_total = int(m.sum())
    tail_src = (np.cumsum(m) - m) + (m - t)
    cols = {}
    for name, dtype, w, slope, project, exc, *more in columns:
        dict_blocks, delta, lender = tuple(more) + (False, False, None)[len(more):]
        base = rng.integers(0, 1 << 20, size=K) if dtype == "int32" else rng.integers(0, 1 << 40, size=K)
        dicts = None
        if lender is not None:  # the lender's blocks (its words, slopes and meta), a dictionary of its own
            src = cols[lender]
            hi = (1 << 20) if dtype == "int32" else (1 << 40)
            cols[name] = StagedColumn(name, dtype, src.hdr.copy(), src.words, rng.integers(0, hi, size=tail_total),
                                      project, rng.integers(0, hi, size=len(src.dicts), dtype=np.int64))
            continue
        if dict_blocks:  # codes 0 .. 2^w - 1 into one dictionary, from 0
            nwords = BS * w // 64
            words = rng.integers(-(2**63), 2**63 - 1, size=K * (nwords + 1) + 1, dtype=np.int64)
            start = np.arange(K) * (nwords + 1)
            if codes != "uniform":  # (uniform: the random bits are uniform codes)
                pool = tier_codes(codes, rng, w)
                words[start[:, None] + 1 + np.arange(nwords)] = pack_codes(pool[rng.integers(0, len(pool), (K, BS))], w)
            words[start], words[-1] = 3, 0  # aux word: kind DICT, the dictionary from entry 0
            meta = ((start + 1) << 8) | 0x80 | w
            base = np.zeros(K, np.int64)
            dicts = rng.integers(0, 1 << 40, size=1 << w, dtype=np.int64)
        elif exc:
            meta, words = _patch_blocks(rng, K, w, exc, 5 if delta else 1)
        else:
            nwords = BS * w // 64
            words = np.concatenate([rng.integers(-(2**63), 2**63 - 1, size=K * nwords, dtype=np.int64), [0]])
            meta = (np.arange(K) * nwords << 8) | w
        hdr = np.stack([base, np.full(K, slope), meta], axis=1).astype(np.int64)
        hi = (1 << 20) if dtype == "int32" else (1 << 40)
        tails = rng.integers(0, hi, size=tail_total, dtype=np.int64)
        cols[name] = StagedColumn(name, dtype, hdr, words, tails, project, dicts)
    return StagedBatch(
        BS, cols, offsets, h.astype(np.int64), tail_src.astype(np.int64), t.astype(np.int64),
        np.full(B, 2**62, dtype=np.int64),  # every ts is far below: the check runs, nothing leaks
        *(np.ascontiguousarray(tiles[f], dtype=np.int64) for f in
          ("tile_block", "tile_lo", "tile_cnt", "tile_out", "tile_ex")),
        check_leakage=True,
    )


def _patch_blocks(rng, K: int, w: int, density: float, kind: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """``K`` full PATCH blocks in the staged form (docs/DESIGN.md §4): ``w`` random low bits per value,
    a bitmap with ``density`` of its bits set, exceptions' high parts 1..4: ``(meta [K], words)``.
    ``kind`` 5: DELTA PATCH blocks (the same words, prefix-summed by the decoders)."""
    hit = rng.random((K, BS)) < density
    bm = np.packbits(hit, axis=1, bitorder="little").view(np.uint64)  # [K, BS / 64]
    e = hit.sum(axis=1)
    vw, bw, ew = BS * w // 64, BS // 64, (e + 1) // 2
    tot = 1 + vw + bw + ew
    start = np.cumsum(tot) - tot
    words = np.zeros(int(tot.sum()) + 1, np.uint64)
    col = np.arange(vw)
    words[(start + 1)[:, None] + col[None, :]] = rng.integers(0, 2**63, size=(K, vw)).astype(np.uint64)
    words[(start + 1 + vw)[:, None] + np.arange(bw)[None, :]] = bm
    w32 = words.view(np.uint32)
    slot = np.repeat(2 * (start + 1 + vw + bw), e) + (np.arange(int(e.sum())) - np.repeat(np.cumsum(e) - e, e))
    w32[slot] = rng.integers(1, 5, size=slot.size)
    pc = np.bitwise_count(bm.view(np.uint32)).astype(np.uint64)  # [K, 4]
    pre = np.cumsum(pc, axis=1) - pc
    aux = np.uint64(kind) | np.uint64(2 * vw << 8) | np.uint64(2 * (vw + bw) << 18)
    words[start] = aux | (pre << (np.uint64(32) + np.uint64(8) * np.arange(4, dtype=np.uint64))).sum(axis=1, dtype=np.uint64)
    return ((start + 1) << 8) | 0x80 | w, words.view(np.int64)


# ----------------------------------------------------------------------------- measuring


def _bench(fn, quantiles=(0.5, 0.2, 0.8)):
    from triton.testing import do_bench

    med, q20, q80 = do_bench(fn, warmup=25, rep=200, quantiles=list(quantiles))
    return {"median_ms": med, "p20_ms": q20, "p80_ms": q80}


def measure_ceilings(device, nbytes: int = 1 << 30) -> dict:
    """D2D copy bandwidth (read + write bytes / time) and pinned H2D bandwidth, in GB/s."""
    n = nbytes // 8
    src = torch.empty(n, dtype=torch.int64, device=device)
    dst = torch.empty_like(src)
    d2d = _bench(lambda: dst.copy_(src))
    host = torch.empty(n // 2, dtype=torch.int64).pin_memory()
    dev = torch.empty(n // 2, dtype=torch.int64, device=device)
    h2d = _bench(lambda: dev.copy_(host, non_blocking=True))
    return {
        "d2d_copy_GBps": 2 * nbytes / (d2d["median_ms"] * 1e-3) / 1e9,
        "h2d_pinned_GBps": (nbytes // 2) / (h2d["median_ms"] * 1e-3) / 1e9,
        "d2d": d2d,
        "h2d": h2d,
    }


def _cpu_time(fn, reps: int = 3) -> dict:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return {"median_ms": float(np.median(times)), "p20_ms": float(np.quantile(times, 0.2)), "p80_ms": float(np.quantile(times, 0.8))}

def device_peers(device) -> list[str]:
    """The device backends measured beside Triton: the torch peer always, the cupy twin when it can run."""

    return ["torch"] + (["cupy"] if available("cupy", device)[0] else [])


def time_device(fn, per_call_bytes: int = 0, target_ms: float = 10.0, replays: int = 7) -> dict:
    """Device time per call of ``fn``, without the host's launch overhead: ``n`` calls captured in
    one CUDA graph, the graph replayed ``replays`` times between events; median (and 20/80%
    quantiles) per call. ``n`` fills ``target_ms`` (at most 500 calls, and at most 8 GB of outputs
    were they all kept: ``per_call_bytes`` each; the graph's private pool reuses the blocks a call
    frees, so it holds far less). Every bench batch is several times the L2, so replays do not run
    from cache. Falls back to ``do_bench`` (events
    around each call, which include the host's launch time when it exceeds the kernel's) when ``fn``
    cannot be captured; ``timing`` says which."""
    try:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm up off the capture: compiles, allocator
            fn()
            fn()
        torch.cuda.current_stream().wait_stream(side)
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        for _ in range(5):
            fn()
        e1.record()
        torch.cuda.synchronize()
        est = max(e0.elapsed_time(e1) / 5, 1e-3)
        n = int(min(max(target_ms / est, 3), 500, max(3, 8e9 // max(per_call_bytes, 1))))
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            for _ in range(n):
                fn()
        g.replay()
        torch.cuda.synchronize()
        times = []
        for _ in range(replays):
            e0.record()
            g.replay()
            e1.record()
            torch.cuda.synchronize()
            times.append(e0.elapsed_time(e1) / n)
        del g
        torch.cuda.empty_cache()
        return {"median_ms": float(np.median(times)), "p20_ms": float(np.quantile(times, 0.2)),
                "p80_ms": float(np.quantile(times, 0.8)), "timing": "cuda_graph", "calls_per_graph": n}
    except Exception as e:  # noqa: BLE001 - a peer that cannot be captured is timed the plain way
        torch.cuda.synchronize()
        res = _bench(fn)
        res["timing"] = f"events per call (graph capture failed: {type(e).__name__}: {str(e)[:160]})"
        return res


def host_ms_per_call(fn, calls: int = 20) -> float:
    """The host's time to issue one call (Python, checks, launches), the device not waited for."""
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    t1 = time.perf_counter()
    torch.cuda.synchronize()
    return (t1 - t0) / calls * 1e3


def tune_launch(dev_staged, per_call_bytes: int, expect, rounds: int = 2) -> dict:
    """Tune the history kernel's launch for this batch's length bucket: time every ``(TP, SEQ,
    warps)`` of ``LAUNCH_CHOICES`` (graph-replayed, ``rounds`` interleaved rounds, best of them),
    keep the fastest in ``LAUNCH_BY_BUCKET`` for the rest of the run, and report them all (the table
    to put in ``kernels/triton_decode_gather.py``). Each launch's output is first compared with
    ``expect`` (the checked ``(values, violations)`` of the default launch)."""
    from gpumat.kernels import triton_decode_gather as tdg

    bucket = tdg.len_bucket(dev_staged)
    default = tdg.launch_for(bucket)
    choices = list(dict.fromkeys([tuple(default), *tdg.LAUNCH_CHOICES]))
    times = {c: float("inf") for c in choices}
    errors = {}  # a launch that fails or disagrees: reported (and the run fails at its end), never timed
    for r in range(rounds):
        for c in choices:
            if c in errors:
                continue
            # the launch named explicitly: GPUMAT_AUTOTUNE=1 must not pick its own instead
            run = functools.partial(tdg.materialize_staged_triton, dev_staged, launch=c)
            try:
                if r == 0:
                    values, viol = run()
                    if not (all(torch.equal(values[k], expect[0][k]) for k in expect[0])
                            and torch.equal(viol != 0, expect[1])):
                        raise GpumatError(f"launch (TP, SEQ, warps[, maxnreg]) = {c} disagrees with the default launch")
                    del values, viol
                t = time_device(run, per_call_bytes, target_ms=5, replays=3)
            except Exception as e:  # noqa: BLE001 - the other launches are still measured
                errors[c] = f"{type(e).__name__}: {str(e)[:300]}"
                print(f"launch {c}: {errors[c]}")
                continue
            times[c] = min(times[c], t["median_ms"])
    best = min(times, key=times.get)
    tdg.LAUNCH_BY_BUCKET[bucket] = best
    return {"len_bucket": bucket, "median_ms_by_tp_seq_warps": {",".join(map(str, c)): t for c, t in times.items()
                                                                if c not in errors},
            "best": list(best), "default": list(default),
            "errors": {",".join(map(str, c)): e for c, e in errors.items()}}


def bench_staged(name: str, staged: StagedBatch, device, ceilings: dict, cpu_reps: int = 3) -> dict:
    """Time every backend on one host ``StagedBatch`` (synthetic or planned from a real tier)."""
    total = staged.total
    dev_staged = staged.to(device)
    out_bytes = sum(total * (8 if c.dtype == "int64" else 4) for c in staged.columns.values() if c.project)
    in_bytes = staged.staged_bytes()
    moved = in_bytes + out_bytes
    peers = device_peers(device)

    # Correctness first: a fast wrong answer is not a result.
    tv, tviol = decode_gather(dev_staged, "triton")
    for peer in peers:  # (the default launch; tune_launch checks every other against it)
        pv, pviol = decode_gather(dev_staged, peer)
        for c in tv:
            if not torch.equal(tv[c], pv[c]):
                raise GpumatError(f"bench {name}: triton and the {peer} peer disagree on column {c!r}")
        if not torch.equal(tviol, pviol):
            raise GpumatError(f"bench {name}: triton and the {peer} peer disagree on the leakage flags")
        del pv

    res = {"tenant": name, "batch_size": staged.batch_size, "events": total, "tiles": staged.num_tiles,
           "bytes_in": in_bytes, "bytes_out": out_bytes, "bytes_moved": moved, "peers": peers}
    res["launch"] = tune_launch(dev_staged, out_bytes, (tv, tviol))
    del tv, tviol
    for backend in ("triton", *peers):
        res[backend] = time_device(lambda: decode_gather(dev_staged, backend), out_bytes)
    res["triton_host_ms_per_call"] = host_ms_per_call(lambda: decode_gather(dev_staged, "triton"))
    ref_values, _ = decode_gather(staged, "reference")
    res["cpu_ref"] = _cpu_time(lambda: decode_gather(staged, "reference"), cpu_reps)
    pinned = {c: v.pin_memory() for c, v in ref_values.items()}
    dev_bufs = {c: torch.empty_like(v, device=device) for c, v in pinned.items()}

    def h2d():
        for c in pinned:
            dev_bufs[c].copy_(pinned[c], non_blocking=True)

    res["h2d_result"] = _bench(h2d)
    res["cpu_ref+h2d"] = {"median_ms": res["cpu_ref"]["median_ms"] + res["h2d_result"]["median_ms"]}
    t_ms = res["triton"]["median_ms"]
    res["events_per_s"] = {k: total / (res[k]["median_ms"] * 1e-3) for k in ("triton", *peers, "cpu_ref+h2d")}
    res["triton_GBps"] = moved / (t_ms * 1e-3) / 1e9
    res["fraction_of_d2d"] = res["triton_GBps"] / ceilings["d2d_copy_GBps"]
    res["speedup_over"] = {k: res[k]["median_ms"] / t_ms for k in (*peers, "cpu_ref+h2d")}
    # What the bus alone would cost to ship the dense result: the floor of any host-side path.
    res["h2d_floor_ms_for_output"] = out_bytes / (ceilings["h2d_pinned_GBps"] * 1e9) * 1e3
    return res


def bench_borrowed(name: str, L: int, B: int, device, ceilings: dict, seed: int = 0) -> dict:
    """Tenant ``name``'s batch with two int32 attributes borrowing ``item_id``'s codes
    (``FEATURE_COLUMNS``): the Triton kernel decoding the shared blocks once (``borrow_plan``)
    against each column decoding them on its own, the same results (checked), device time each."""
    from gpumat.kernels.triton_decode_gather import materialize_staged_triton

    staged = synthetic_staged(B, L, seed=seed, columns=FEATURE_COLUMNS)
    dev = staged.to(device)
    total = staged.total
    once, own = (materialize_staged_triton(dev, total=total, borrow=b) for b in (True, False))
    for c in once[0]:
        if not torch.equal(once[0][c], own[0][c]):
            raise GpumatError(f"bench borrowed: column {c!r} differs decoded once and on its own")
    del once, own
    out_bytes = sum(total * (8 if c.dtype == "int64" else 4) for c in staged.columns.values() if c.project)
    moved = staged.staged_bytes() + out_bytes
    res = {"tenant": name, "columns": [c[0] for c in FEATURE_COLUMNS], "events": total, "bytes_moved": moved}
    for key, b in (("decoded_once", True), ("each_decoded", False)):
        res[key] = time_device(lambda: materialize_staged_triton(dev, total=total, borrow=b), out_bytes)
        res[key]["fraction_of_d2d"] = moved / (res[key]["median_ms"] * 1e-3) / 1e9 / ceilings["d2d_copy_GBps"]
    res["speedup"] = res["each_decoded"]["median_ms"] / res["decoded_once"]["median_ms"]
    print(f"{name} with genre and year borrowing item_id's codes: {res['decoded_once']['median_ms']:.3f} ms decoded "
          f"once ({100 * res['decoded_once']['fraction_of_d2d']:.0f}% D2D), {res['each_decoded']['median_ms']:.3f} ms "
          f"each decoded: {res['speedup']:.2f}x")
    return res


def bench_column_sets(name: str, L: int, B: int, device, ceilings: dict, seed: int = 0) -> dict:
    """Tenant ``name``'s batch stored several ways, each timed with the launch tuned for its length
    bucket: every column plain frame of reference (``PLAIN_COLUMNS``), item ids plain but actions as
    PATCH blocks (``FOR_ITEM_COLUMNS``), and the bench's (``COLUMNS``: item ids as DICT codes too);
    then the bench's with its codes drawn as the bench tier's (``tier``) and as a dictionary in
    frequency order would code them (``frequency``; ``CODE_KINDS``). What each block kind and each
    code distribution costs the kernel, as a fraction of the D2D copy on its own bytes."""
    from gpumat.kernels.triton_decode_gather import materialize_staged_triton

    res = {"tenant": name}
    sets = (("plain", PLAIN_COLUMNS, "uniform"), ("patch_action", FOR_ITEM_COLUMNS, "uniform"),
            ("bench", COLUMNS, "uniform"), ("tier_codes", COLUMNS, "tier"), ("frequency_codes", COLUMNS, "frequency"))
    for key, cols, codes in sets:
        staged = synthetic_staged(B, L, seed=seed, columns=cols, codes=codes)
        dev = staged.to(device)
        total = staged.total
        out_bytes = sum(total * (8 if c.dtype == "int64" else 4) for c in staged.columns.values() if c.project)
        moved = staged.staged_bytes() + out_bytes
        t = time_device(lambda: materialize_staged_triton(dev, total=total), out_bytes)
        t.update(bytes_moved=moved, codes=codes,
                 fraction_of_d2d=moved / (t["median_ms"] * 1e-3) / 1e9 / ceilings["d2d_copy_GBps"])
        res[key] = t
        del dev
        torch.cuda.empty_cache()
    print(f"{name} by block kind and codes: " + ", ".join(
        f"{k} {res[k]['median_ms']:.3f} ms ({100 * res[k]['fraction_of_d2d']:.0f}% D2D)" for k, *_ in sets))
    return res


def _environment() -> dict:
    env = environment(torch.cuda.get_device_name())
    env.update(gpu=env["device"], cuda=torch.version.cuda)
    return env


def _plot(results: list[dict], env: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["tenant"] for r in results]
    paths = ("triton", *results[0]["peers"], "cpu_ref+h2d")
    x = np.arange(len(names))
    w = 0.8 / len(paths)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, p in enumerate(paths):
        ax.bar(x + (i - (len(paths) - 1) / 2) * w, [r["events_per_s"][p] for r in results], w, label=p)
    ax.set_yscale("log")
    ax.set_xticks(x, [f"{r['tenant']}\nL={r.get('max_len', '?')} B={r['batch_size']}" for r in results])
    ax.set_ylabel("events / s (higher is better)")
    ax.legend()
    ax.set_title("materialize one staged batch")
    ax2.bar(x, [r["fraction_of_d2d"] for r in results], 0.5, color="tab:blue")
    ax2.axhline(1.0, color="gray", linestyle="--", label="D2D copy bandwidth")
    ax2.set_xticks(x, names)
    ax2.set_ylabel("fraction of measured D2D copy bandwidth")
    ax2.set_ylim(0, 1.1)
    ax2.legend()
    ax2.set_title("fused kernel: bytes moved / time")
    fig.suptitle(f"gpumat decode-gather on {env['gpu']} (commit {env['git_commit'][:10]})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def add_arguments(parser) -> None:
    """Options of ``gpumat bench kernels``."""
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON")
    parser.add_argument("--plot", metavar="PATH", help="write a PNG plot (needs matplotlib)")
    parser.add_argument("--tenants", default=",".join(t[0] for t in TENANTS),
                        help="comma-separated subset of short,mid,long (default: all)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every batch size (default 1.0)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--static", action="store_true",
                        help="no GPU: compile every kernel configuration for sm_90/sm_80 and report registers, "
                             "spills, SASS instructions per event and the issue and DRAM floors")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="only run the fused kernel N times per tenant, no timing (for ncu / profilers)")


def run(args) -> dict | None:
    """``gpumat bench kernels``: print a table, optionally write ``--json`` and ``--plot``."""
    if args.static:  # the compiler's view: no GPU needed
        from gpumat.bench.static import print_static, static_report

        check_outputs(args)
        wanted = [t.strip() for t in args.tenants.split(",") if t.strip()]
        result = static_report([(n, L, max(1, int(B * args.scale))) for n, L, B in TENANTS if n in wanted])
        report(result, args, print_static, lambda r, path: None, print)
        if result["static"]["spilling_configurations"]:
            raise GpumatError(f"{result['static']['spilling_configurations']} kernel configuration(s) spill registers")
        return result
    device = resolve_device("cuda")
    check_device(device)  # before any work: this benchmark needs a GPU
    ok, why = available("triton", device)
    if not ok:
        raise GpumatError(why)
    if args.plot:
        require_matplotlib("--plot")
    check_outputs(args)
    wanted = [t.strip() for t in args.tenants.split(",") if t.strip()]
    unknown = [t for t in wanted if t not in {n for n, _, _ in TENANTS}]
    if unknown:
        raise GpumatError(f"unknown tenant(s) {unknown}; choose from {[n for n, _, _ in TENANTS]}")
    cases = [(n, L, max(1, int(B * args.scale))) for n, L, B in TENANTS if n in wanted]

    if args.profile:
        for name, L, B in cases:
            staged = synthetic_staged(B, L, seed=args.seed)
            dev_staged = staged.to(device)
            for _ in range(args.profile):
                decode_gather(dev_staged, "triton")
            torch.cuda.synchronize()
            print(f"{name}: ran the fused kernel {args.profile} times on {staged.total} events")
        return None

    env = _environment()
    ceilings = measure_ceilings(device)
    torch.cuda.empty_cache()
    print(f"{env['gpu']}: D2D copy {ceilings['d2d_copy_GBps']:.0f} GB/s, pinned H2D {ceilings['h2d_pinned_GBps']:.1f} GB/s")
    results = []
    peers = device_peers(device)
    cols = "".join(f"{'x ' + p:>9}" for p in peers)
    print(f"{'tenant':>6} {'B':>6} {'events':>10} {'triton ms':>10} {'GB/s':>7} {'%D2D':>6} {'Mev/s':>8}{cols} "
          f"{'x cpu+h2d':>10} {'host ms':>8} {'TP,SEQ,warps':>13}")
    for name, L, B in cases:
        staged = synthetic_staged(B, L, seed=args.seed)
        r = bench_staged(name, staged, device, ceilings)
        torch.cuda.empty_cache()  # the previous tenant's buffers must not crowd the next one
        r["max_len"] = L
        results.append(r)
        speedups = "".join(f"{r['speedup_over'][p]:>9.1f}" for p in peers)
        print(f"{name:>6} {B:>6} {r['events']:>10} {r['triton']['median_ms']:>10.3f} {r['triton_GBps']:>7.0f} "
              f"{100 * r['fraction_of_d2d']:>5.0f}% {r['events_per_s']['triton'] / 1e6:>8.0f}{speedups} "
              f"{r['speedup_over']['cpu_ref+h2d']:>10.1f} {r['triton_host_ms_per_call']:>8.3f} "
              f"{'%d,%d,%d' % tuple(r['launch']['best']):>13}")
    table = {r["launch"]["len_bucket"]: tuple(r["launch"]["best"]) for r in results}
    print(f"device ms: CUDA-graph replays; launch tuned per length bucket: LAUNCH_BY_BUCKET = {table}")
    result = {"environment": env, "ceilings": ceilings, "results": results}
    failed = None
    if cases:  # the longest tenant asked for, with two attributes borrowing item_id's codes
        try:
            result["borrowed"] = bench_borrowed(*cases[-1], device, ceilings, args.seed)
        except Exception as e:  # (reported after the tenants' results are written, never instead of them)
            failed = e
            result["borrowed"] = {"error": f"{type(e).__name__}: {e}"}
        try:
            result["column_sets"] = bench_column_sets(*cases[-1], device, ceilings, args.seed)
        except Exception as e:  # noqa: BLE001 - as above
            failed = failed or e
            result["column_sets"] = {"error": f"{type(e).__name__}: {e}"}
    report(result, args, lambda r: None, lambda r, path: _plot(r["results"], r["environment"], path), print)
    bad = {r["tenant"]: r["launch"]["errors"] for r in results if r["launch"]["errors"]}
    if bad:
        raise GpumatError(f"bench kernels: launches that failed or disagreed (the others are reported): {bad}")
    if failed is not None:
        raise GpumatError(f"bench kernels: the borrowed-codes or column-set batch failed: {failed}") from failed
    return result
