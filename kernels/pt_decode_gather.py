"""The plain-PyTorch peer of the fused decode-gather: decode every staged block whole, then gather.

What a user without gpumat would write with vectorized torch ops: unpack all ``K x block_size``
values of every staged block (bit ops on ``[K, block_size]``), then index-gather the windows and
the tails. Same contract as ``materialize_staged_triton`` (jagged output only); it runs on any
torch device, so it is also a CPU backend. It exists as the benchmark's strongest simple peer and
as a third implementation the tests compare with the NumPy twin.

PATCH and RUN blocks (docs/DESIGN.md §4, ``gpumat.core.staged.decode_values``) are decoded by the
same lane formula, still over the whole ``[K, block_size]``: per value a bitmap word, a rank, and
for RUN the run's index in place of the position, for PATCH an exception's high part; a DELTA
block's offsets are prefix-summed along its row (``torch.cumsum``). A column
that stages none of a kind (``staged.aux``, known on the host) skips that kind's work. DICT
blocks' codes are looked up in the column's dictionaries after the gather, for the gathered values.
"""

from __future__ import annotations

import torch

from gpumat.core.staged import AUX_CODES, AUX_DELTA, AUX_DICT, AUX_FLAG, AUX_PATCH, AUX_RADIX, AUX_RUN, AUX_SIGNED, WIDTH_MASK


def _lshr(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Logical right shift of int64 by s in [0, 63] (torch's >> on int64 is arithmetic)."""
    keep = torch.where(s == 0, torch.full_like(s, -1), (torch.ones_like(s) << (64 - s).clamp(max=63)) - 1)
    return (x >> s) & keep


def _bits(words: torch.Tensor, q0: torch.Tensor, bit: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Bits ``[bit, bit + w)`` of the stream from 64-bit word ``q0`` (``w`` in 0..64). A read past
    the end lands on the column's last word, the +1 zero word of the contract, so it gives 0."""
    last = words.numel() - 1
    q = q0 + (bit >> 6)
    s = bit & 63
    lo = words[q.clamp(0, last)]
    hi = words[(q + 1).clamp(0, last)]
    bits = _lshr(lo, s) | torch.where(s == 0, torch.zeros_like(hi), hi << (64 - s).clamp(max=63))
    return bits & torch.where(w >= 64, torch.full_like(w, -1), (torch.ones_like(w) << w.clamp(max=63)) - 1)


def _popcount32(x: torch.Tensor) -> torch.Tensor:
    """Set bits of int64 values in ``[0, 2**32)`` (torch has no popcount): the SWAR count, exact
    in int64 because every intermediate stays below ``2**57``."""
    x = x - ((x >> 1) & 0x55555555)
    x = (x & 0x33333333) + ((x >> 2) & 0x33333333)
    x = (x + (x >> 4)) & 0x0F0F0F0F
    return ((x * 0x01010101) >> 24) & 0xFF


def _word32(words: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
    """32-bit word ``j`` of the column (half ``j & 1``, low first, of 64-bit word ``j >> 1``), as a
    non-negative int64; past the end it is half of the +1 zero word, so 0."""
    return (words[(j >> 1).clamp(0, words.numel() - 1)] >> (32 * (j & 1))) & 0xFFFFFFFF


def _aux(words: torch.Tensor, meta: torch.Tensor, word_off: torch.Tensor, w: torch.Tensor, k: torch.Tensor,
         kinds: int):
    """``(idx, patch, delta)`` of PATCH / RUN / DELTA blocks: ``[K, BS]`` the position each value's
    line and bits are read at (the run's index for RUN, ``k`` otherwise) and what a PATCH exception
    adds (0 elsewhere); ``[K, 1]`` whether the block is a DELTA one (kind 4 or 5). Every block is
    computed and the rest masked by its meta: no sync to find them.
    ``kinds`` (``staged.aux``: bit 0 PATCH, bit 1 RUN) skips the part of a kind the column lacks.

    The aux word ``words[word_off - 1]``: low 32 bits ``kind | bm << 8 | ex << 18``, high 32 the
    rank prefix byte of each 32-lane group; ``bm`` and ``ex`` are 32-bit word offsets from
    ``2 word_off`` of the bitmap and of the exceptions (one 32-bit word each, the high part ``x + 1``;
    with ``AUX_SIGNED`` on a DELTA PATCH block, an int32).
    """
    a = words[(word_off - 1).clamp(0, words.numel() - 1)]  # [K, 1]
    kind = torch.where((meta & AUX_FLAG) != 0, a & 3, torch.zeros_like(a))
    delta = ((meta & AUX_FLAG) != 0) & ((a & AUX_DELTA) != 0) & (kind <= AUX_PATCH)
    g, s = k >> 5, k & 31  # [BS]
    bmw = _word32(words, 2 * word_off + ((a >> 8) & 1023) + g)  # [K, BS]: each value's bitmap word
    rank = ((a >> (32 + 8 * (g & 3))) & 0xFF) + _popcount32(bmw & ((1 << s) - 1))
    hit = (bmw >> s) & 1
    idx = torch.where(kind == AUX_RUN, rank + hit - 1, k) if kinds & AUX_RUN else k
    patch = 0
    if kinds & AUX_PATCH:
        x = _word32(words, 2 * word_off + ((a >> 18) & 1023) + rank)
        sgn = (a & (AUX_DELTA | AUX_SIGNED)) == (AUX_DELTA | AUX_SIGNED)  # DELTA SIGNED: int32 words
        x = torch.where(sgn & (x >= 1 << 31), x - (1 << 32), x)
        patch = torch.where((kind == AUX_PATCH) & (hit == 1), x << (w & 63), torch.zeros_like(x))
    return idx, patch, delta


def _radix(words: torch.Tensor, meta: torch.Tensor, word_off: torch.Tensor):
    """``(rad, R, g)`` ``[K, 1]`` each: which blocks are RADIX ones (aux word's low 5 bits exactly
    ``AUX_RADIX``) and their alphabet and digits a code (2 and 1 elsewhere: no division by 0)."""
    a = words[(word_off - 1).clamp(0, words.numel() - 1)]
    rad = ((meta & AUX_FLAG) != 0) & ((a & 31) == AUX_RADIX)
    R = torch.where(rad, ((a >> 8) & 1023).clamp(min=2), 2)
    g = torch.where(rad, ((a >> 18) & 1023).clamp(min=1), 1)
    return rad, R, g


def _dict_values(col, meta: torch.Tensor, word_off: torch.Tensor, blk: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``v`` (values of blocks ``blk``) with each DICT block's codes replaced by their dictionary
    values: ``dicts[min(v mod 2^32, D - 1)]`` (0 for an empty ``dicts``)."""
    a = col.words[(word_off - 1).clamp(0, col.words.numel() - 1)].reshape(-1)  # [K]
    isd = ((meta.reshape(-1) & AUX_FLAG) != 0) & (((a & 3) == AUX_DICT) | ((a & AUX_CODES) != 0))
    d = col.dicts if col.dicts is not None and col.dicts.numel() else torch.zeros(1, dtype=torch.int64, device=v.device)
    i = torch.clamp(v & 0xFFFFFFFF, max=d.numel() - 1)
    return torch.where(isd[blk], d[i], v)


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
        w, word_off = meta & WIDTH_MASK, meta >> 8
        kinds = staged.aux(name)
        if kinds:
            idx, patch, delta = _aux(col.words, meta, word_off, w, k, kinds)
            if kinds & 16:  # RADIX blocks: the bits of code k div g, then its digit k mod g
                rad, R, g = _radix(col.words, meta, word_off)
                o = _bits(col.words, word_off, torch.where(rad, k // g, idx) * w, w)
                r = torch.where(rad, k % g, 0)
                o = torch.where(rad, o // R.pow(r) % R, o) + patch
            else:
                o = _bits(col.words, word_off, idx * w, w) + patch
            if kinds & 8:  # DELTA blocks: their offsets prefix-summed along the block (int64 wraps)
                o = torch.where(delta, torch.cumsum(o, 1), o)
            dense = base + slope * idx + o
        else:
            dense = base + slope * k + _bits(col.words, word_off, k * w, w)  # [K, BS]
        dense = dense.reshape(-1)
        hv = dense[h_src]
        if kinds & 4:
            hv = _dict_values(col, meta, word_off, h_src // bs, hv)
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
