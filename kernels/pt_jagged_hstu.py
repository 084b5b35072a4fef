"""Jagged HSTU attention in plain PyTorch: the twin of ``kernels/jagged_hstu.py`` and the CPU path.

What it computes, per row ``b`` (events ``[offsets[b], offsets[b + 1])``, ``n_b`` of them), head
``h`` and positions ``0 <= j <= i < n_b`` (the layer of ``gpumat/models/hstu.py``)::

    s[i, j] = q[i, h] . k[j, h] + pos_w[i - j, h] + time_w[bucket(|tq[i] - ts[j]|), h]
    o[i, h] = sum_j silu(s[i, j]) / max_len * v[j, h]

Inputs: ``q, k, v`` ``[N, H, dh]`` jagged values (any strides), ``ts`` int64 ``[N]`` (or None: no
time bias), ``offsets`` int64 ``[B + 1]``, ``pos_w`` ``[P >= max(n_b), H]``, ``time_w``
``[num_buckets, H]`` (or None), ``ts_query`` int64 ``[N]`` (the queries' times ``tq``; default
``ts``: generative-recommenders times query ``i`` at the next event instead). Output ``o``
``[N, H, dh]``. Time buckets are
``floor(log(max(|ts_i - ts_j|, 1)) / 0.301)`` clamped to ``num_buckets - 1``, the difference taken
in float64 (:func:`time_bucket_index`).

Two implementations of the same contract:

- :func:`pt_jagged_hstu_attention` (the twin): rows are grouped by their number of ``block``-sized
  query blocks and padded only to the longest row of their group; each query block attends to the
  keys before its end, so the largest tensor is ``[G, H, block, W]`` (``O(W x block)`` per row,
  never ``[W, W]``), and under autograd every block is checkpointed (recomputed in backward).
- :func:`dense_hstu_attention` (the reference): the padded ``[B, H, W, W]`` formulation of the
  original dense layer, for tests and for comparison where it still fits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from gpumat.core.errors import SchemaError

# Width of one log bucket of |ts_i - ts_j| (natural log units, as in generative-recommenders):
# one bucket per factor e^0.301 ~ 1.35, so 128 buckets cover deltas up to e^38 in any time unit.
LOG_BUCKET_WIDTH = 0.301
# Elements of the largest per-block tensor ([G, H, block, W]) the twin lets one group hold: 2^23
# fp32 is 32 MiB, and the block's float64 time deltas ([G, block, W]) stay within 64 MiB.
GROUP_ELEMENTS = 1 << 23


def time_bucket_index(tq: torch.Tensor, tk: torch.Tensor, num_buckets: int) -> torch.Tensor:
    """``bucket(|tq[..., i] - tk[..., j]|)``: ``[..., M]`` and ``[..., N]`` int64 -> ``[..., M, N]`` int64.

    Deltas of 0 and 1 share bucket 0; the difference is taken in float64, so extreme int64
    timestamps cannot wrap around.
    """
    dt = (tq.to(torch.float64).unsqueeze(-1) - tk.to(torch.float64).unsqueeze(-2)).abs_().clamp_(min=1.0)
    return (dt.log_() / LOG_BUCKET_WIDTH).clamp_(max=num_buckets - 1).to(torch.int64)


class BucketBias(torch.autograd.Function):
    """``table [nb, H]`` gathered at ``idx [B, M, N]`` -> ``[B, H, M, N]``.

    Only for CPU: there the default embedding backward sorts all ``B * M * N`` indices and
    dominates the step; a ``scatter_add_`` into ``H * nb`` bins is ~20x faster (measured on a
    2-core CPU at B=128, W=200). On CUDA we keep the built-in sort-based backward, which avoids
    atomics contending on so few bins.
    """

    @staticmethod
    def forward(ctx, table, idx):
        ctx.save_for_backward(idx)
        ctx.num_buckets = table.shape[0]
        return F.embedding(idx, table).permute(0, 3, 1, 2)

    @staticmethod
    def backward(ctx, grad):
        (idx,) = ctx.saved_tensors
        H = grad.shape[1]
        g = grad.transpose(0, 1).reshape(H, -1)  # [H, B*M*N], same element order as idx
        out = grad.new_zeros(H, ctx.num_buckets).scatter_add_(1, idx.reshape(1, -1).expand(H, -1), g)
        return out.T, None


def bucket_bias(table: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``table [nb, H]`` at ``idx [B, M, N]`` -> ``[B, H, M, N]`` (:class:`BucketBias` on CPU under autograd)."""
    if table.device.type == "cpu" and torch.is_grad_enabled() and table.requires_grad:
        return BucketBias.apply(table, idx)
    return F.embedding(idx, table).permute(0, 3, 1, 2)


def check_inputs(q, k, v, ts, offsets, pos_w, time_w, max_len, ts_query=None) -> None:
    """The contract of both implementations, checked at their boundary (``SchemaError``)."""
    if q.dim() != 3 or k.shape != q.shape or v.shape != q.shape:
        raise SchemaError(f"jagged HSTU attention: q, k, v must be [N, H, dh] of one shape, got "
                          f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if offsets.dim() != 1 or offsets.numel() < 1 or offsets.dtype != torch.int64:
        raise SchemaError(f"jagged HSTU attention: offsets must be int64 [B + 1], got {offsets.dtype} {tuple(offsets.shape)}")
    H = q.shape[1]
    if pos_w.dim() != 2 or pos_w.shape[1] != H:
        raise SchemaError(f"jagged HSTU attention: pos_w must be [P, H={H}], got {tuple(pos_w.shape)}")
    if (ts is None) != (time_w is None):
        raise SchemaError("jagged HSTU attention: ts and time_w go together (both or neither)")
    if time_w is not None and (time_w.dim() != 2 or time_w.shape[1] != H or time_w.shape[0] < 1):
        raise SchemaError(f"jagged HSTU attention: time_w must be [num_buckets >= 1, H={H}], got {tuple(time_w.shape)}")
    if ts is not None and (ts.shape != (q.shape[0],) or ts.dtype != torch.int64):
        raise SchemaError(f"jagged HSTU attention: ts must be int64 [N={q.shape[0]}], got {ts.dtype} {tuple(ts.shape)}")
    if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1:
        raise SchemaError(f"jagged HSTU attention: max_len must be an integer >= 1, got {max_len!r}")
    if ts_query is not None and (ts is None or ts_query.shape != ts.shape or ts_query.dtype != torch.int64):
        raise SchemaError(f"jagged HSTU attention: ts_query needs ts and must be int64 [N={q.shape[0]}], got "
                          f"{ts_query.dtype} {tuple(ts_query.shape)}")


def _no_events(q, *inputs):
    """The ``[0, H, dh]`` output of a batch without events, still attached to every input (zero
    gradients, so ``backward`` and optimizers see each parameter as they do otherwise)."""
    zero = sum(t.sum() * 0 for t in (q, *inputs) if t is not None)
    return q.new_zeros(q.shape) + zero


def attend_block(q, k, v, tq, tk, q0: int, pos_w, time_w, inv_max_len: float):
    """One query block against the keys before its end, padded rows: the twin's unit of work.

    ``q [G, H, M, dh]`` holds positions ``q0 .. q0 + M - 1``, ``k, v [G, H, J, dh]`` positions
    ``0 .. J - 1`` (``J = q0 + M``), ``tq [G, M]``, ``tk [G, J]`` (None without time bias).
    -> ``[G, H, M, dh]``. Padded positions compute finite values that the caller drops.
    """
    M, J = q.shape[2], k.shape[2]
    dev = q.device
    i = torch.arange(q0, q0 + M, device=dev).unsqueeze(1)
    j = torch.arange(J, device=dev).unsqueeze(0)
    rel = (i - j).clamp_(0, pos_w.shape[0] - 1)  # i - j; j > i is masked anyway
    s = q @ k.transpose(-1, -2) + F.embedding(rel, pos_w).permute(2, 0, 1)
    if time_w is not None:
        s = s + bucket_bias(time_w, time_bucket_index(tq, tk, time_w.shape[0]))
    # Multiplying by the mask keeps masked weights exactly 0 (as the dense layer does).
    causal = (j <= i).to(s.dtype) * inv_max_len
    return (F.silu(s) * causal) @ v


def _groups(lengths: list[int], block: int, group_elements: int, heads: int):
    """Rows (longest first) in groups padded to their longest row: same number of query blocks,
    at most ``group_elements`` per ``[G, H, block, W]`` block tensor. -> [(rows, W)]."""
    order = sorted((b for b, n in enumerate(lengths) if n > 0), key=lambda b: -lengths[b])
    out, cur, width = [], [], 0
    for b in order:
        n = lengths[b]
        same = cur and -(-n // block) == -(-width // block)
        if same and (len(cur) + 1) * heads * min(block, width) * width <= group_elements:
            cur.append(b)
            continue
        if cur:
            out.append((cur, width))
        cur, width = [b], n
    if cur:
        out.append((cur, width))
    return out


def pt_jagged_hstu_attention(q, k, v, ts, offsets, pos_w, time_w, max_len: int, *, block: int = 256,
                             use_checkpoint: bool | None = None, group_elements: int = GROUP_ELEMENTS, ts_query=None):
    """Blocked jagged HSTU attention (module docstring). -> ``o [N, H, dh]``.

    ``block``: query positions per block (any integer >= 1). ``use_checkpoint``: recompute each
    block in backward instead of keeping its ``[G, H, block, W]`` intermediates (default: when
    autograd records). Reads ``offsets`` on the host once (a device sync off the CPU).
    """
    check_inputs(q, k, v, ts, offsets, pos_w, time_w, max_len, ts_query)
    if isinstance(block, bool) or not isinstance(block, int) or block < 1:
        raise SchemaError(f"jagged HSTU attention: block must be an integer >= 1, got {block!r}")
    N, H, dh = q.shape
    lengths = (offsets[1:] - offsets[:-1]).tolist()
    if max(lengths, default=0) > pos_w.shape[0]:
        raise SchemaError(f"jagged HSTU attention: a row of {max(lengths)} events exceeds the position table ({pos_w.shape[0]})")
    if use_checkpoint is None:
        use_checkpoint = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (q, k, v, pos_w, time_w))
    inv = 1.0 / max_len
    dev = q.device
    starts = offsets[:-1]
    dst, pieces = [], []
    for rows, W in _groups(lengths, block, group_elements, H):
        r = torch.tensor(rows, device=dev)
        pos = torch.arange(W, device=dev)
        n = (offsets[r + 1] - starts[r]).unsqueeze(1)
        valid = pos < n  # [G, W]
        idx = torch.where(valid, starts[r].unsqueeze(1) + pos, torch.zeros_like(pos))  # padding reads event 0
        qp, kp, vp = (t[idx].permute(0, 2, 1, 3) for t in (q, k, v))  # [G, H, W, dh]
        tp = ts[idx] if ts is not None else None
        tpq = ts_query[idx] if ts_query is not None else tp
        outs = []
        for q0 in range(0, W, block):
            q1 = min(q0 + block, W)
            args = (qp[:, :, q0:q1], kp[:, :, :q1], vp[:, :, :q1],
                    tpq[:, q0:q1] if tp is not None else None, tp[:, :q1] if tp is not None else None,
                    q0, pos_w, time_w, inv)
            outs.append(checkpoint(attend_block, *args, use_reentrant=False) if use_checkpoint else attend_block(*args))
        o = torch.cat(outs, dim=2).permute(0, 2, 1, 3)  # [G, W, H, dh]
        dst.append(idx[valid])
        pieces.append(o[valid])
    if not pieces:
        return _no_events(q, k, v, pos_w, time_w)
    return q.new_empty(N, H, dh).index_copy(0, torch.cat(dst), torch.cat(pieces))


def dense_hstu_attention(q, k, v, ts, offsets, pos_w, time_w, max_len: int, *, ts_query=None):
    """The dense reference: rows padded to the longest, ``[B, H, W, W]`` scores and time buckets,
    exactly the arithmetic of the original dense layer. -> ``o [N, H, dh]``."""
    check_inputs(q, k, v, ts, offsets, pos_w, time_w, max_len, ts_query)
    N, H, dh = q.shape
    B = offsets.numel() - 1
    lengths = offsets[1:] - offsets[:-1]
    W = int(lengths.max()) if B > 0 else 0
    if W == 0:
        return _no_events(q, k, v, pos_w, time_w)
    dev = q.device
    pos = torch.arange(W, device=dev)
    valid = pos < lengths.unsqueeze(1)
    idx = torch.where(valid, offsets[:-1].unsqueeze(1) + pos, torch.zeros_like(pos))
    qp, kp, vp = (t[idx].masked_fill(~valid[..., None, None], 0).transpose(1, 2) for t in (q, k, v))
    rel = (pos.unsqueeze(1) - pos.unsqueeze(0)).clamp_(min=0)
    causal = torch.ones(W, W, dtype=q.dtype, device=dev).tril_() / max_len
    qk = qp @ kp.transpose(-1, -2) + F.embedding(rel, pos_w).permute(2, 0, 1)
    if time_w is not None:
        tp = ts[idx].masked_fill(~valid, 0)
        tpq = ts_query[idx].masked_fill(~valid, 0) if ts_query is not None else tp
        qk = qk + bucket_bias(time_w, time_bucket_index(tpq, tp, time_w.shape[0]))
    o = (F.silu(qk) * causal) @ vp  # [B, H, W, dh]
    return o.transpose(1, 2)[valid]
