"""Jagged HSTU attention in Triton, forward and backward, never materializing ``[B, H, W, W]``.

What it computes (the contract of ``kernels/pt_jagged_hstu.py``, its twin), per row ``b`` of
``n_b`` events, head ``h``, positions ``0 <= j <= i < n_b``::

    s[i, j] = q[i, h] . k[j, h] + pos_w[i - j, h] + time_w[bucket(|tq[i] - ts[j]|), h]
    o[i, h] = sum_j silu(s[i, j]) / max_len * v[j, h]

Inputs: ``q, k, v`` ``[N, H, dh]`` (rows strided, heads and dims contiguous: the column slices of
the layer's fused ``uvqk`` projection), ``ts`` int64 ``[N]`` or None, ``offsets`` int64 ``[B + 1]``,
``pos_w [P, H]``, ``time_w [num_buckets, H]`` or None, and ``ts_query`` int64 ``[N]`` (the time
each query is taken at; default ``ts``, so ``tq = ts``). Output ``o [N, H, dh]`` and, in backward,
``dq, dk, dv`` and the gradients of both bias tables.

Design:

- **Grid over a work list, not over ``B x max_len``.** Program ``(p, h)`` takes work item ``p``:
  one ``BLOCK_M`` query block of one row (``BLOCK_N`` key block in the dK/dV kernel), listed on the
  device without a host sync (``_plan``: an upper bound ``N // block + B`` of items, the extra ones
  exit at once). Rows are listed longest first and, inside a row, the costliest block first (the
  last query block sees the whole row), so one 10^5-event row does not run last.
- **A tile is ``[BLOCK_M, BLOCK_N]`` in registers**: ``q`` (or ``k``, ``v``) stay resident, the other
  side streams. Causal masking skips every key tile past the block's last query; tiles wholly at
  or before its first query run without a mask.
- **Biases are computed inside the tile.** ``pos_w[i - j]`` is a gather from a ``P x H`` table (L1
  resident). The time bucket needs ``floor(log(dt) / 0.301)`` bit-exact with the float64
  reference: the kernel takes ``dt`` in float64 (one subtraction: ``ts`` is converted per row and
  column, not per element), estimates the bucket with a float32 ``log2`` biased 0.01 low (its error
  is below 1e-4 buckets), and corrects it with one compare against a table of the exact float64
  bucket thresholds (:func:`bucket_thresholds`), so no float64 ``log`` runs per element.
- **Backward without softmax statistics** (HSTU has none): ``ds = dO v^T * silu'(s) / max_len``.
  One kernel per key block accumulates ``dK, dV`` over the query blocks at and after it; one
  kernel per query block accumulates ``dQ`` and owns the bias gradients (each ``(i, j)`` pair is
  visited once there; that kernel holds three ``[BLOCK_M, dh]`` tiles where the other holds four,
  so the reductions fit its registers). Both recompute ``s``; ``dQ, dK, dV`` need no atomics
  (deterministic); the bias tables' sums do (their order, hence last bits, may vary run to run).
- **Bias gradients are reduced in registers before their atomics**: a tile's ``pos`` gradient is
  the sum along each of its ``BLOCK_M + BLOCK_N - 1`` diagonals (a register ``gather`` skews the
  tile), one atomic per diagonal; its ``time`` gradient is one atomic when the tile has a single
  bucket (far tiles of a time-sorted history), else one atomic pair per run of equal buckets along
  each query row (prefix sums: a run's end adds the running sum to its bucket and subtracts it
  from the next run's), so contention on the few bins stays low.

All row and element addresses are int64 (10^6-event histories, ``N x 4D`` strides).
"""

from __future__ import annotations

import functools
import math
import os

import torch

from gpumat.core.errors import GpumatError, SchemaError
from gpumat.kernels.pt_jagged_hstu import check_inputs

try:  # triton is a Linux-only dependency; without it the kernels are unavailable
    import triton
    import triton.language as tl

    _TRITON_IMPORT_ERROR = None
except ImportError as e:  # pragma: no cover - depends on the platform
    triton = None
    tl = None
    _TRITON_IMPORT_ERROR = e

# triton.jit decides once, when the decorator runs, whether the kernels are interpreted.
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"

LOG_BUCKET_WIDTH = 0.301  # must equal pt_jagged_hstu.LOG_BUCKET_WIDTH (the tests compare)
# Launch shapes on a GPU, read from the sm_90 compiler (tests/test_jagged_hstu.py): the per-element
# work (float64 time delta, two table gathers, silu) dominates the two small dots, so what limits a
# tile is registers. 32 x 32 tiles over 8 warps (4 elements per thread) compile with no spill for
# dh <= 64 in all three kernels (~150-230 registers); 64 x 64 tiles spill at 4 or 8 warps, and
# software pipelining (num_stages 2) adds spills without a large tile to hide.
GPU_BLOCK_M = 32
GPU_BLOCK_N = 32
NUM_WARPS = 8
NUM_STAGES = 1
# The interpreter pays per program and per op, not per element: far larger tiles.
INTERP_BLOCK_M = 128
INTERP_BLOCK_N = 128


if triton is not None:
    _LOG2_PER_BUCKET = tl.constexpr(math.log(2.0) / LOG_BUCKET_WIDTH)

    @triton.jit
    def _scores(q, k, tq, tk, delta, h, POS_W, TIME_W, THR, num_pos, H: tl.constexpr, BLOCK_M: tl.constexpr,
                BLOCK_N: tl.constexpr, NUM_BUCKETS: tl.constexpr, PRECISION: tl.constexpr):
        """The tile at query block start - key block start = ``delta``: -> ``(s, i - j, buckets)``,
        ``s = q k^T + pos_w[i - j] + time_w[bucket]`` fp32 ``[BLOCK_M, BLOCK_N]``, the others int32."""
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION)
        # int32 in the tile (rows are < 2^31 events): half the registers of int64 offsets.
        rel = delta + (tl.arange(0, BLOCK_M)[:, None] - tl.arange(0, BLOCK_N)[None, :])
        # i - j clamped into the table: j > i and padded rows read a valid entry, masked later.
        s += tl.load(POS_W + tl.minimum(tl.maximum(rel, 0), num_pos - 1) * H + h)
        bkt = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.int32)
        if NUM_BUCKETS > 0:
            dt = tl.maximum(tl.abs(tq[:, None] - tk[None, :]), 1.0)  # float64, as the reference
            est = tl.log2(dt.to(tl.float32)) * _LOG2_PER_BUCKET - 0.01  # the bucket or 1 below
            b0 = tl.minimum(tl.maximum(est, 0.0).to(tl.int32), NUM_BUCKETS - 1)
            bkt = b0 + (dt >= tl.load(THR + b0 + 1)).to(tl.int32)
            s += tl.load(TIME_W + bkt * H + h)
        return s, rel, bkt

    @triton.jit
    def _load_rows(PTR, row0, offs, stride, h, offs_d, rmask, DH: tl.constexpr):
        """``[len(offs), BLOCK_D]`` slice of head ``h`` at rows ``row0 + offs`` (zeros off the mask)."""
        ptrs = PTR + (row0 + offs)[:, None] * stride + h * DH + offs_d[None, :]
        return tl.load(ptrs, mask=rmask[:, None] & (offs_d < DH)[None, :], other=0.0)

    @triton.jit
    def _load_ts(TS, row0, offs, rmask, NUM_BUCKETS: tl.constexpr):
        t = tl.zeros([offs.shape[0]], dtype=tl.float64)
        if NUM_BUCKETS > 0:
            t = tl.load(TS + row0 + offs, mask=rmask, other=0).to(tl.float64)
        return t

    @triton.jit
    def _fwd_tile(acc, q, tq, qs, ks, n, start, h, K, V, TS, POS_W, TIME_W, THR, stride_k, stride_v,
                  num_pos, inv_max_len, H: tl.constexpr, DH: tl.constexpr, BLOCK_D: tl.constexpr,
                  BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, NUM_BUCKETS: tl.constexpr, PRECISION: tl.constexpr,
                  MASKED: tl.constexpr):
        offs_n = ks + tl.arange(0, BLOCK_N)
        offs_d = tl.arange(0, BLOCK_D)
        nmask = offs_n < n
        k = _load_rows(K, start, offs_n, stride_k, h, offs_d, nmask, DH)
        v = _load_rows(V, start, offs_n, stride_v, h, offs_d, nmask, DH)
        tk = _load_ts(TS, start, offs_n, nmask, NUM_BUCKETS)
        s, rel, _ = _scores(q, k, tq, tk, (qs - ks).to(tl.int32), h, POS_W, TIME_W, THR, num_pos, H,
                            BLOCK_M, BLOCK_N, NUM_BUCKETS, PRECISION)
        a = s * tl.sigmoid(s) * inv_max_len
        if MASKED:
            a = tl.where((rel >= 0) & nmask[None, :], a, 0.0)
        return acc + tl.dot(a.to(v.dtype), v, input_precision=PRECISION)

    @triton.jit
    def _hstu_fwd_kernel(Q, K, V, TS, TSQ, OFFSETS, PLAN_ROW, PLAN_BLK, POS_W, TIME_W, THR, O,
                         stride_q, stride_k, stride_v, stride_o, num_pos, inv_max_len,
                         H: tl.constexpr, DH: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr,
                         BLOCK_N: tl.constexpr, NUM_BUCKETS: tl.constexpr, PRECISION: tl.constexpr):
        pid = tl.program_id(0).to(tl.int64)
        h = tl.program_id(1)
        row = tl.load(PLAN_ROW + pid)
        if row >= 0:
            start = tl.load(OFFSETS + row)
            n = tl.load(OFFSETS + row + 1) - start
            qs = tl.load(PLAN_BLK + pid) * BLOCK_M
            offs_m = qs + tl.arange(0, BLOCK_M)
            offs_d = tl.arange(0, BLOCK_D)
            mmask = offs_m < n
            q = _load_rows(Q, start, offs_m, stride_q, h, offs_d, mmask, DH)
            tq = _load_ts(TSQ, start, offs_m, mmask, NUM_BUCKETS)
            acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
            # Key tiles wholly at or before the first query need no mask; the rest up to the last
            # query do; tiles past it are skipped (causal).
            n_full = (qs + 1) // BLOCK_N
            for t in range(0, n_full):
                acc = _fwd_tile(acc, q, tq, qs, t * BLOCK_N, n, start, h, K, V, TS, POS_W, TIME_W, THR,
                                stride_k, stride_v, num_pos, inv_max_len, H, DH, BLOCK_D, BLOCK_M, BLOCK_N, NUM_BUCKETS,
                                PRECISION, False)
            for ks in range(n_full * BLOCK_N, tl.minimum(qs + BLOCK_M, n), BLOCK_N):
                acc = _fwd_tile(acc, q, tq, qs, ks, n, start, h, K, V, TS, POS_W, TIME_W, THR,
                                stride_k, stride_v, num_pos, inv_max_len, H, DH, BLOCK_D, BLOCK_M, BLOCK_N, NUM_BUCKETS,
                                PRECISION, True)
            ptrs = O + (start + offs_m)[:, None] * stride_o + h * DH + offs_d[None, :]
            tl.store(ptrs, acc, mask=mmask[:, None] & (offs_d < DH)[None, :])

    @triton.jit
    def _ds_tile(q, k, v, do, tq, tk, delta, mmask, nmask, h, POS_W, TIME_W, THR, num_pos, inv_max_len,
                 H: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, NUM_BUCKETS: tl.constexpr,
                 PRECISION: tl.constexpr):
        """-> (a = silu(s) / max_len, ds = dL/ds, buckets), zero (buckets -1) off the causal, row mask."""
        s, rel, bkt = _scores(q, k, tq, tk, delta, h, POS_W, TIME_W, THR, num_pos, H, BLOCK_M, BLOCK_N,
                              NUM_BUCKETS, PRECISION)
        mask = (rel >= 0) & mmask[:, None] & nmask[None, :]
        sig = tl.sigmoid(s)
        a = tl.where(mask, s * sig * inv_max_len, 0.0)
        da = tl.dot(do, tl.trans(v), input_precision=PRECISION)
        ds = tl.where(mask, da * sig * (1.0 + s * (1.0 - sig)) * inv_max_len, 0.0)
        return a, ds, tl.where(mask, bkt, -1)

    @triton.jit
    def _pos_grad(ds, delta, h, DPOS, num_pos, H: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
        """Sum ``ds`` along each diagonal ``i - j = delta + d`` of the tile: one atomic per diagonal.

        The ``BLOCK_M + BLOCK_N - 1`` diagonals go in chunks of ``BLOCK_N``: chunk ``c`` gathers
        ``ds[i, i - d]`` for its diagonals into a ``[BLOCK_M, BLOCK_N]`` tile (a register skew)
        and sums its columns."""
        ii = tl.arange(0, BLOCK_M)[:, None]
        for c in tl.static_range(0, (BLOCK_M + 2 * BLOCK_N - 2) // BLOCK_N):
            p = c * BLOCK_N + tl.arange(0, BLOCK_N)  # diagonal d = p - (BLOCK_N - 1)
            jj = ii - p[None, :] + (BLOCK_N - 1)
            g = tl.gather(ds, tl.minimum(tl.maximum(jj, 0), BLOCK_N - 1), axis=1)
            sums = tl.sum(tl.where((jj >= 0) & (jj < BLOCK_N), g, 0.0), axis=0)
            rel = delta + p - (BLOCK_N - 1)
            tl.atomic_add(DPOS + rel * H + h, sums, mask=(rel >= 0) & (rel < num_pos) & (sums != 0.0))

    @triton.jit
    def _time_grad(ds, bkt, h, DTIME, H: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
        """Add ``ds`` into ``DTIME[bkt, h]`` (``bkt == -1``: masked): one atomic for a single-bucket
        tile, else one pair per run of equal buckets along each row (prefix-sum differences)."""
        lo = tl.min(tl.where(bkt >= 0, bkt, 1 << 30))
        hi = tl.max(bkt)
        if lo == hi:
            tl.atomic_add(DTIME + lo * H + h, tl.sum(ds))
        elif hi >= 0:
            jj = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.int32) + tl.arange(0, BLOCK_N)[None, :]
            nxt = tl.gather(bkt, tl.minimum(jj + 1, BLOCK_N - 1), axis=1)
            last = jj == BLOCK_N - 1
            end = (bkt != nxt) | last
            cs = tl.cumsum(ds, axis=1)
            tl.atomic_add(DTIME + bkt * H + h, cs, mask=end & (bkt >= 0))
            tl.atomic_add(DTIME + nxt * H + h, -cs, mask=end & (~last) & (nxt >= 0))

    @triton.jit
    def _hstu_bwd_dkdv_kernel(Q, K, V, TS, TSQ, DO, OFFSETS, PLAN_ROW, PLAN_BLK, POS_W, TIME_W, THR,
                              DK, DV,
                              stride_q, stride_k, stride_v, stride_do, stride_dk, stride_dv, num_pos, inv_max_len,
                              H: tl.constexpr, DH: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr,
                              BLOCK_N: tl.constexpr, NUM_BUCKETS: tl.constexpr, PRECISION: tl.constexpr):
        pid = tl.program_id(0).to(tl.int64)
        h = tl.program_id(1)
        row = tl.load(PLAN_ROW + pid)
        if row >= 0:
            start = tl.load(OFFSETS + row)
            n = tl.load(OFFSETS + row + 1) - start
            ks = tl.load(PLAN_BLK + pid) * BLOCK_N
            offs_n = ks + tl.arange(0, BLOCK_N)
            offs_d = tl.arange(0, BLOCK_D)
            nmask = offs_n < n
            k = _load_rows(K, start, offs_n, stride_k, h, offs_d, nmask, DH)
            v = _load_rows(V, start, offs_n, stride_v, h, offs_d, nmask, DH)
            tk = _load_ts(TS, start, offs_n, nmask, NUM_BUCKETS)
            dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
            dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
            # Query blocks that hold a query >= ks (causal), to the end of the row.
            for qs in range((ks // BLOCK_M) * BLOCK_M, n, BLOCK_M):
                offs_m = qs + tl.arange(0, BLOCK_M)
                mmask = offs_m < n
                q = _load_rows(Q, start, offs_m, stride_q, h, offs_d, mmask, DH)
                do = _load_rows(DO, start, offs_m, stride_do, h, offs_d, mmask, DH)
                tq = _load_ts(TSQ, start, offs_m, mmask, NUM_BUCKETS)
                a, ds, _ = _ds_tile(q, k, v, do, tq, tk, (qs - ks).to(tl.int32), mmask, nmask, h, POS_W, TIME_W,
                                    THR, num_pos, inv_max_len, H, BLOCK_M, BLOCK_N, NUM_BUCKETS, PRECISION)
                dv += tl.dot(tl.trans(a).to(do.dtype), do, input_precision=PRECISION)
                dk += tl.dot(tl.trans(ds).to(q.dtype), q, input_precision=PRECISION)
            out = nmask[:, None] & (offs_d < DH)[None, :]
            tl.store(DK + (start + offs_n)[:, None] * stride_dk + h * DH + offs_d[None, :], dk, mask=out)
            tl.store(DV + (start + offs_n)[:, None] * stride_dv + h * DH + offs_d[None, :], dv, mask=out)

    @triton.jit
    def _hstu_bwd_dq_kernel(Q, K, V, TS, TSQ, DO, OFFSETS, PLAN_ROW, PLAN_BLK, POS_W, TIME_W, THR, DQ, DPOS, DTIME,
                            stride_q, stride_k, stride_v, stride_do, stride_dq, num_pos, inv_max_len,
                            H: tl.constexpr, DH: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr,
                            BLOCK_N: tl.constexpr, NUM_BUCKETS: tl.constexpr, PRECISION: tl.constexpr,
                            POS_GRAD: tl.constexpr, TIME_GRAD: tl.constexpr):
        pid = tl.program_id(0).to(tl.int64)
        h = tl.program_id(1)
        row = tl.load(PLAN_ROW + pid)
        if row >= 0:
            start = tl.load(OFFSETS + row)
            n = tl.load(OFFSETS + row + 1) - start
            qs = tl.load(PLAN_BLK + pid) * BLOCK_M
            offs_m = qs + tl.arange(0, BLOCK_M)
            offs_d = tl.arange(0, BLOCK_D)
            mmask = offs_m < n
            q = _load_rows(Q, start, offs_m, stride_q, h, offs_d, mmask, DH)
            do = _load_rows(DO, start, offs_m, stride_do, h, offs_d, mmask, DH)
            tq = _load_ts(TSQ, start, offs_m, mmask, NUM_BUCKETS)
            dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
            for ks in range(0, tl.minimum(qs + BLOCK_M, n), BLOCK_N):
                offs_n = ks + tl.arange(0, BLOCK_N)
                nmask = offs_n < n
                k = _load_rows(K, start, offs_n, stride_k, h, offs_d, nmask, DH)
                v = _load_rows(V, start, offs_n, stride_v, h, offs_d, nmask, DH)
                tk = _load_ts(TS, start, offs_n, nmask, NUM_BUCKETS)
                _, ds, bkt = _ds_tile(q, k, v, do, tq, tk, (qs - ks).to(tl.int32), mmask, nmask, h, POS_W, TIME_W,
                                      THR, num_pos, inv_max_len, H, BLOCK_M, BLOCK_N, NUM_BUCKETS, PRECISION)
                dq += tl.dot(ds.to(k.dtype), k, input_precision=PRECISION)
                if POS_GRAD:
                    _pos_grad(ds, (qs - ks).to(tl.int32), h, DPOS, num_pos, H, BLOCK_M, BLOCK_N)
                if TIME_GRAD:
                    _time_grad(ds, bkt, h, DTIME, H, BLOCK_M, BLOCK_N)
            ptrs = DQ + (start + offs_m)[:, None] * stride_dq + h * DH + offs_d[None, :]
            tl.store(ptrs, dq, mask=mmask[:, None] & (offs_d < DH)[None, :])


@functools.lru_cache(maxsize=16)
def _thresholds_cpu(num_buckets: int) -> torch.Tensor:
    """float64 ``[num_buckets + 1]``: entry ``b`` (1 <= b < num_buckets) is the smallest float64
    ``dt >= 1`` with ``log(dt) / 0.301 >= b`` as torch computes it; entry ``num_buckets`` is +inf.

    Found by bisection over the bit patterns of positive doubles (ordered like the integers), so
    ``bucket(dt) = #{b >= 1: dt >= thr[b]}`` reproduces the float64 reference exactly.
    """
    b = torch.arange(1, max(num_buckets, 1), dtype=torch.float64)
    lo = torch.full_like(b, 1.0).view(torch.int64)  # f(lo) < b for every b >= 1 (log(1) = 0)
    hi = torch.full_like(b, float("inf")).view(torch.int64)  # f(hi) >= b
    for _ in range(64):
        mid = lo + (hi - lo) // 2
        ok = (mid.view(torch.float64).log() / LOG_BUCKET_WIDTH) >= b
        hi = torch.where(ok, mid, hi)
        lo = torch.where(ok, lo, mid)
    out = torch.empty(num_buckets + 1, dtype=torch.float64)
    out[0] = 0.0
    out[1:num_buckets] = hi.view(torch.float64)
    out[num_buckets] = float("inf")
    return out


def bucket_thresholds(num_buckets: int, device) -> torch.Tensor:
    """The exact time-bucket thresholds (see ``_thresholds_cpu``) on ``device``. -> float64 ``[num_buckets + 1]``."""
    return _thresholds_cpu(int(num_buckets)).to(device)


def _plan(lengths: torch.Tensor, total: int, block: int, heavy_last_block: bool):
    """Work items ``(row, block)`` for every ``block``-sized block of every non-empty row, on the
    device and without a host sync: ``total // block + B`` items (an upper bound), rows longest
    first, unused items with ``row = -1``. ``heavy_last_block``: a row's last block first (causal
    query blocks), else its first (key blocks). -> ``(row, blk)`` int64 ``[G]``."""
    B = lengths.numel()
    G = total // block + B
    dev = lengths.device
    order = torch.argsort(lengths, descending=True, stable=True)
    cnt = (lengths[order] + block - 1) // block
    cum = torch.cumsum(cnt, 0)
    pid = torch.arange(G, device=dev)
    j = torch.searchsorted(cum, pid, right=True)
    jc = j.clamp(max=max(B - 1, 0))
    local = pid - (cum[jc] - cnt[jc])
    blk = cnt[jc] - 1 - local if heavy_last_block else local
    row = torch.where(j < B, order[jc], torch.full_like(jc, -1))
    return row.contiguous(), blk.contiguous()


def _heads_view(t: torch.Tensor) -> torch.Tensor:
    """``[N, H, dh]`` with heads and dims contiguous (row stride free), copying only if needed."""
    N, H, dh = t.shape
    if t.stride(2) == 1 and (t.stride(1) == dh or H == 1):
        return t
    return t.contiguous()


def _blocks(block_m, block_n):
    bm = block_m or (INTERP_BLOCK_M if INTERPRETED else GPU_BLOCK_M)
    bn = block_n or (INTERP_BLOCK_N if INTERPRETED else GPU_BLOCK_N)
    for name, b in (("block_m", bm), ("block_n", bn)):
        if isinstance(b, bool) or not isinstance(b, int) or b < 16 or b & (b - 1):
            raise SchemaError(f"triton jagged HSTU attention: {name} must be a power of two >= 16, got {b!r}")
    return bm, bn


def _precision(q: torch.Tensor) -> str:
    # Same choice as torch's own fp32 matmuls on the device: TF32 only where torch allows it.
    return "tf32" if q.is_cuda and torch.backends.cuda.matmul.allow_tf32 else "ieee"


class _Launch:
    """Everything the three kernels share for one call: shapes, tables, plans (built lazily)."""

    def __init__(self, q, ts, offsets, pos_w, time_w, max_len, block_m, block_n, ts_query=None):
        self.N, self.H, self.dh = q.shape
        self.block_d = max(16, triton.next_power_of_2(self.dh))
        self.bm, self.bn = block_m, block_n
        self.offsets = offsets.contiguous()
        self.lengths = self.offsets[1:] - self.offsets[:-1]
        self.pos_w = pos_w.contiguous()
        self.nb = 0 if time_w is None else time_w.shape[0]
        self.time_w = self.pos_w if time_w is None else time_w.contiguous()
        self.ts = ts.contiguous() if ts is not None else self.offsets  # never read without time bias
        self.tsq = ts_query.contiguous() if ts_query is not None else self.ts  # the queries' times
        self.thr = bucket_thresholds(self.nb, q.device) if self.nb else self.pos_w
        self.inv = 1.0 / max_len
        self.precision = _precision(q)

    def plan(self, block, heavy_last):
        return _plan(self.lengths, self.N, block, heavy_last)

    def common(self):
        return dict(H=self.H, DH=self.dh, BLOCK_D=self.block_d, BLOCK_M=self.bm, BLOCK_N=self.bn,
                    NUM_BUCKETS=self.nb, PRECISION=self.precision, num_warps=NUM_WARPS, num_stages=NUM_STAGES)


def _output(L: _Launch, like: torch.Tensor, dtype) -> torch.Tensor:
    """A tensor every element of which a kernel writes: NaN-poisoned under the interpreter (tests),
    so an element left unwritten fails the comparison instead of passing as stale memory."""
    out = torch.empty(L.N, L.H, L.dh, dtype=dtype, device=like.device)
    return out.fill_(float("nan")) if INTERPRETED else out


def _forward(L: _Launch, q, k, v, plan=None):
    o = _output(L, q, q.dtype)
    row, blk = plan if plan is not None else L.plan(L.bm, True)
    if row.numel() == 0 or L.N == 0:
        return o
    _hstu_fwd_kernel[(row.numel(), L.H)](
        q, k, v, L.ts, L.tsq, L.offsets, row, blk, L.pos_w, L.time_w, L.thr, o,
        q.stride(0), k.stride(0), v.stride(0), o.stride(0), L.pos_w.shape[0], L.inv, **L.common())
    return o


def _backward(L: _Launch, q, k, v, do, need_pos: bool, need_time: bool, plans=(None, None)):
    dq, dk, dv = (_output(L, q, torch.float32) for _ in range(3))
    dpos = torch.zeros(L.pos_w.shape, dtype=torch.float32, device=q.device)
    dtime = torch.zeros(L.time_w.shape, dtype=torch.float32, device=q.device)
    if L.N == 0:
        return dq, dk, dv, dpos, dtime
    row, blk = plans[0] if plans[0] is not None else L.plan(L.bn, False)
    if row.numel():
        _hstu_bwd_dkdv_kernel[(row.numel(), L.H)](
            q, k, v, L.ts, L.tsq, do, L.offsets, row, blk, L.pos_w, L.time_w, L.thr, dk, dv,
            q.stride(0), k.stride(0), v.stride(0), do.stride(0), dk.stride(0), dv.stride(0),
            L.pos_w.shape[0], L.inv, **L.common())
    row, blk = plans[1] if plans[1] is not None else L.plan(L.bm, True)
    if row.numel():
        _hstu_bwd_dq_kernel[(row.numel(), L.H)](
            q, k, v, L.ts, L.tsq, do, L.offsets, row, blk, L.pos_w, L.time_w, L.thr, dq, dpos, dtime,
            q.stride(0), k.stride(0), v.stride(0), do.stride(0), dq.stride(0), L.pos_w.shape[0], L.inv,
            POS_GRAD=need_pos, TIME_GRAD=need_time and L.nb > 0, **L.common())
    return dq, dk, dv, dpos, dtime


class _JaggedHSTUAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, pos_w, time_w, ts, offsets, max_len, block_m, block_n, ts_query):
        q, k, v = _heads_view(q), _heads_view(k), _heads_view(v)
        L = _Launch(q, ts, offsets, pos_w, time_w, max_len, block_m, block_n, ts_query)
        o = _forward(L, q, k, v)
        ctx.save_for_backward(q, k, v)
        ctx.launch = L
        ctx.has_time = time_w is not None
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v = ctx.saved_tensors
        L = ctx.launch
        need_pos, need_time = ctx.needs_input_grad[3], ctx.needs_input_grad[4]
        dq, dk, dv, dpos, dtime = _backward(L, q, k, v, _heads_view(do.contiguous()), need_pos, need_time)
        return (dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), dpos.to(L.pos_w.dtype) if need_pos else None,
                dtime.to(L.time_w.dtype) if need_time and ctx.has_time else None, None, None, None, None, None, None)


def triton_available(device) -> tuple[bool, str]:
    """Whether these kernels can run on torch ``device``, and if not, why. Never touches CUDA."""
    dev = torch.device(device)
    if triton is None:
        return False, f"triton is not installed ({_TRITON_IMPORT_ERROR})"
    if dev.type == "cuda":
        return True, "triton on CUDA"
    if dev.type == "cpu" and INTERPRETED and os.environ.get("TRITON_INTERPRET") == "1":
        return True, "triton interpreter on CPU (slow: for tests)"
    return False, (f"the triton jagged HSTU attention needs a CUDA device, or TRITON_INTERPRET=1 set before "
                   f"gpumat.kernels.jagged_hstu is imported (device {dev})")


def triton_jagged_hstu_attention(q, k, v, ts, offsets, pos_w, time_w, max_len: int, *,
                                 block_m: int | None = None, block_n: int | None = None, ts_query=None):
    """Jagged HSTU attention with the Triton kernels (module docstring), differentiable in ``q, k, v,
    pos_w, time_w``. -> ``o [N, H, dh]``. No host sync: shapes come from the tensors.

    ``block_m``/``block_n``: query/key tile sizes (powers of two >= 16; default 32 on a GPU).
    ``ts_query``: int64 ``[N]``, the time each query is taken at for the time bias (default ``ts``).
    """
    check_inputs(q, k, v, ts, offsets, pos_w, time_w, max_len, ts_query)
    ok, why = triton_available(q.device)
    if not ok:
        raise GpumatError(why)
    if q.shape[2] > 256:
        raise SchemaError(f"triton jagged HSTU attention: head dim {q.shape[2]} > 256 is not supported")
    bm, bn = _blocks(block_m, block_n)
    return _JaggedHSTUAttention.apply(q, k, v, pos_w, time_w, ts, offsets, max_len, bm, bn, ts_query)
