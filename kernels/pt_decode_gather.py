"""The plain-PyTorch peer of the fused decode-gather: decode every staged block whole, then gather.

What a user without gpumat would write with vectorized torch ops: unpack all ``K x block_size``
values of every staged block (bit ops on ``[K, block_size]``), then index-gather the windows and
the tails. Same contract as ``materialize_staged_triton`` (jagged output only); it runs on any
torch device, so it is also a CPU backend. It exists as the benchmark's strongest simple peer and
as a third implementation the tests compare with the NumPy twin.
"""

from __future__ import annotations

import torch

def _lshr(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Logical right shift of int64 by s in [0, 63] (torch's >> on int64 is arithmetic)."""
    keep = torch.where(s == 0, torch.full_like(s, -1), (torch.ones_like(s) << (64 - s).clamp(max=63)) - 1)
    return (x >> s) & keep


def materialize_staged_torch(staged, total: int | None = None, n_hist: int | None = None):
    """The plain-PyTorch peer: decode all ``K x block_size`` values of every staged block, then gather.

    Same contract as ``materialize_staged_triton`` (jagged only). ``total`` and ``n_hist`` (history
    events) default to the sizes the host carried with the batch, so it makes no host sync either.
    """
    dev = staged.offsets.device
    B = staged.offsets.numel() - 1
    total = staged.total if total is None else int(total)
    n_hist = staged.history_events if n_hist is None else int(n_hist)
    n_tail = total - n_hist
    T = staged.tile_block.numel()
    # Index plan, shared by the columns: (source, destination, example) of every output event.
    tile_of = torch.repeat_interleave(torch.arange(T, device=dev), staged.tile_cnt, output_size=n_hist)
    r = torch.arange(n_hist, device=dev) - (torch.cumsum(staged.tile_cnt, 0) - staged.tile_cnt)[tile_of]
    h_src = staged.tile_block[tile_of] * int(staged.block_size) + staged.tile_lo[tile_of] + r
    h_dst = staged.tile_out[tile_of] + r
    h_ex = staged.tile_ex[tile_of]
    t_ex = torch.repeat_interleave(torch.arange(B, device=dev), staged.tail_len, output_size=n_tail)
    tr = torch.arange(n_tail, device=dev) - (torch.cumsum(staged.tail_len, 0) - staged.tail_len)[t_ex]
    t_src = staged.tail_src[t_ex] + tr
    t_dst = staged.offsets[t_ex] + staged.hist_len[t_ex] + tr
    bs = int(staged.block_size)
    k = torch.arange(bs, device=dev)
    viol = torch.zeros(B, dtype=torch.int32, device=dev)
    leaks = torch.gt if staged.inclusive else torch.ge  # inclusive: ts == request_ts is allowed
    values = {}
    for name, col, check in staged.passes():
        base, slope, meta = col.hdr[:, 0:1], col.hdr[:, 1:2], col.hdr[:, 2:3]
        w, word_off = meta & 0xFF, meta >> 8
        bit = k * w  # [K, BS]
        last = col.words.numel() - 1
        q = word_off + (bit >> 6)
        s = bit & 63
        lo = col.words[q.clamp(max=last)]
        hi = col.words[(q + 1).clamp(max=last)]
        bits = _lshr(lo, s) | torch.where(s == 0, torch.zeros_like(hi), hi << (64 - s).clamp(max=63))
        wmask = torch.where(w >= 64, torch.full_like(w, -1), (torch.ones_like(w) << w.clamp(max=63)) - 1)
        dense = (base + slope * k + (bits & wmask)).reshape(-1)
        hv = dense[h_src]
        tv = col.tail_values[t_src]
        if col.project:
            out = torch.empty(total, dtype=getattr(torch, col.dtype), device=dev)
            out[h_dst] = hv.to(out.dtype)
            out[t_dst] = tv.to(out.dtype)
            values[name] = out
        if check:
            viol.scatter_reduce_(0, h_ex, leaks(hv, staged.request_ts[h_ex]).to(torch.int32), "amax")
            viol.scatter_reduce_(0, t_ex, leaks(tv, staged.request_ts[t_ex]).to(torch.int32), "amax")
    return values, viol
