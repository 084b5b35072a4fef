"""CUDA C twin of the fused decode-gather (``kernels/triton_decode_gather.py``), via ``cupy.RawKernel``.

Same inputs, outputs and semantics as ``materialize_staged_triton``; it exists as a second,
independently written GPU implementation (a hand-written peer for the benchmark and a cross-check
of the Triton code), not as a backend. One CUDA block of 128 threads per tile: thread ``r``
decodes values ``tile_lo + r, tile_lo + r + 128, ...`` of the tile's block; one block per example for
the tail. Only importable where ``cupy`` is installed (the ``cuda`` extra); nothing here touches
CUDA at import time: the module is compiled on first use.

PATCH and RUN blocks (``meta & 0x80``, docs/DESIGN.md §4, ``gpumat.core.staged.decode_values``)
take a branch that is uniform across a CUDA block (all its threads share the tile's block): the
aux word, then per value its bitmap word, a rank (prefix byte + ``__popc``) and the run's index
(RUN) or an exception's 32-bit high part (PATCH). Every load is bounds-checked against
``n_words``, as the plain path's are: a bad header reads zeros, never outside the words. A DICT
block (aux kind 3) then looks its value line up in the column's dictionaries, clamped to
``n_dicts - 1`` (0 for a column without them), as the contract defines. A RADIX block (aux low bits
16) reads code ``k div g`` and takes its digit ``k mod g``. A DELTA block (aux kind 4
or 5; a DELTA SIGNED one's exceptions, aux bit 8 too, are int32) has thread ``q`` take position
``q`` of the block and prefix-sums the offsets of the positions up to the tile's last in shared
memory.
"""

from __future__ import annotations

import torch

from gpumat.core.batch import TORCH_DTYPES
from gpumat.core.errors import GpumatError

try:
    import cupy as cp
except ImportError as e:  # pragma: no cover - depends on the optional extra
    raise ImportError("kernels.cuda_decode_gather needs cupy: pip install 'gpumat[cuda]'") from e

_SOURCE = r"""
typedef long long i64;
typedef unsigned long long u64;

// Bits [bit, bit + w) of the stream from 64-bit word q0 (w in 0..64), 0 where they lie outside
// words[0, n_words).
__device__ __forceinline__ u64 read_bits(const i64* words, i64 n_words, i64 q0, i64 bit, i64 w) {
    if (w <= 0) return 0ull;
    const i64 q = q0 + (bit >> 6);
    const unsigned s = (unsigned)(bit & 63);
    u64 bits = (q >= 0 && q < n_words) ? (u64)words[q] >> s : 0ull;
    if (s != 0 && s + w > 64 && q + 1 >= 0 && q + 1 < n_words) bits |= (u64)words[q + 1] << (64 - s);
    if (w < 64) bits &= (1ull << w) - 1ull;
    return bits;
}

// 32-bit word j of the stream (half j & 1, low first, of 64-bit word j >> 1), 0 outside words.
__device__ __forceinline__ unsigned word32(const i64* words, i64 n_words, i64 j) {
    return (j >= 0 && (j >> 1) < n_words) ? (unsigned)((u64)words[j >> 1] >> (32 * (j & 1))) : 0u;
}

// The offset of value k of a block from its line (its bits, plus a PATCH exception) and, in *idx,
// the position its line and bits are read at (the run's index in a RUN block). a: the aux word (0
// for a plain block).
__device__ __forceinline__ u64 offset_at(const i64* words, i64 n_words, i64 meta, u64 a, i64 k, i64* idx) {
    const i64 w = meta & 0x7F, word_off = meta >> 8;
    const unsigned kind = (unsigned)(a & 3ull);
    u64 patch = 0ull;  // what a PATCH exception adds
    *idx = k;
    if ((meta & 0x80) && (a & 31ull) == 16ull) {
        // RADIX: code k div g of the block's bits, its digit k mod g (R, g in the bm and ex fields)
        const u64 R = ((a >> 8) & 1023ull) < 2ull ? 2ull : ((a >> 8) & 1023ull);
        const i64 g = ((a >> 18) & 1023ull) ? (i64)((a >> 18) & 1023ull) : 1;
        const u64 code = read_bits(words, n_words, word_off, (k / g) * w, w);
        u64 d = 1ull;
        for (i64 j = k % g; j > 0; j--) d *= R;
        return d ? code / d % R : 0ull;
    }
    if (meta & 0x80) {
        // aux word: kind | bm << 8 | ex << 18, high 32 bits a rank prefix byte per 32 values; bitmap
        // and exceptions (one 32-bit word each, x + 1) at 32-bit words 2 word_off + bm, 2 word_off + ex
        const i64 g = k >> 5;
        const unsigned sk = (unsigned)(k & 31);
        const unsigned bmw = word32(words, n_words, 2 * word_off + (i64)((a >> 8) & 1023ull) + g);
        const i64 rank = (i64)((a >> (32 + 8 * (g & 3))) & 255ull) + __popc(bmw & ((1u << sk) - 1u));
        const i64 hit = (bmw >> sk) & 1u;
        if (kind == 2) {  // RUN
            *idx = rank + hit - 1;
        } else if (kind == 1 && hit) {  // PATCH (DELTA SIGNED, aux bits 4 and 8: an int32 word)
            const unsigned x = word32(words, n_words, 2 * word_off + (i64)((a >> 18) & 1023ull) + rank);
            patch = ((a & 12ull) == 12ull ? (u64)(i64)(int)x : (u64)x) << (w & 63);
        }
    }
    return read_bits(words, n_words, word_off, *idx * w, w) + patch;
}

template <typename T>
__device__ __forceinline__ void emit(T* out, int* viol, const i64* offsets, const i64* request_ts, i64 t, i64 ex,
                                     i64 out0, i64 r, i64 v, i64 n_out, i64 width, int store, int check, int inclusive,
                                     int padded) {
    if (store) {
        if (padded) {
            const i64 col = out0 - offsets[ex] + r;
            if (col < width) out[ex * width + col] = (T)v;
        } else {
            const i64 pos = out0 + r;
            if (pos < n_out) out[pos] = (T)v;
        }
    }
    if (check && (inclusive ? v > request_ts[ex] : v >= request_ts[ex])) viol[ex] = 1;
}

template <typename T>
__device__ void decode_gather(const i64* hdr, const i64* words, const i64* tile_block, const i64* tile_lo,
                              const i64* tile_cnt, const i64* tile_out, const i64* tile_ex, const i64* offsets,
                              const i64* request_ts, const i64* dicts, i64 n_dicts, T* out, int* viol, i64 n_tiles,
                              i64 n_words, i64 n_out, i64 width, int store, int check, int inclusive, int padded) {
    const i64 t = (i64)blockIdx.x;
    if (t >= n_tiles) return;
    const i64 cnt = tile_cnt[t], lo = tile_lo[t];
    if (cnt <= 0) return;  // (a dead tile reads no header)
    const i64 blk = tile_block[t], ex = tile_ex[t], out0 = tile_out[t];
    const u64 base = (u64)hdr[blk * 3], slope = (u64)hdr[blk * 3 + 1];
    const i64 meta = hdr[blk * 3 + 2];
    const i64 word_off = meta >> 8;
    const u64 a = (meta & 0x80) && word_off >= 1 && word_off - 1 < n_words ? (u64)words[word_off - 1] : 0ull;
    const unsigned kind = (unsigned)(a & 3ull);
    if ((a & 4ull) && kind <= 1u && lo + cnt <= (i64)blockDim.x) {
        // DELTA (kind 4, 5): thread q takes position q of the block; the offsets of 0 .. lo + cnt - 1
        // are prefix-summed in shared memory (the branch is uniform: every thread shares the tile)
        __shared__ u64 scan[128];
        const i64 q = threadIdx.x;
        i64 idx;
        scan[q] = q < lo + cnt ? offset_at(words, n_words, meta, a, q, &idx) : 0ull;
        __syncthreads();
        for (unsigned d = 1; d < blockDim.x; d <<= 1) {
            const u64 x = q >= d ? scan[q - d] : 0ull;
            __syncthreads();
            scan[q] += x;
            __syncthreads();
        }
        if (q >= lo && q < lo + cnt)
            emit<T>(out, viol, offsets, request_ts, t, ex, out0, q - lo, (i64)(base + slope * (u64)q + scan[q]), n_out,
                    width, store, check, inclusive, padded);
        return;
    }
    for (i64 r = threadIdx.x; r < cnt; r += blockDim.x) {
        i64 idx;
        const u64 o = offset_at(words, n_words, meta, a, lo + r, &idx);
        i64 v = (i64)(base + slope * (u64)idx + o);
        if (kind == 3 || (a & 32ull)) {  // DICT (kind 3, or PATCH / RUN / DELTA of codes, AUX_CODES):
            // the value line's low 32 bits (code + dictionary start) index the dictionaries
            const u64 di = (u64)v & 0xFFFFFFFFull;
            v = n_dicts > 0 ? dicts[di < (u64)(n_dicts - 1) ? di : (u64)(n_dicts - 1)] : 0;
        }
        emit<T>(out, viol, offsets, request_ts, t, ex, out0, r, v, n_out, width, store, check, inclusive, padded);
    }
}

template <typename T>
__device__ void gather_tail(const i64* tail, const i64* tail_src, const i64* tail_len, const i64* hist_len,
                            const i64* offsets, const i64* request_ts, T* out, int* viol, i64 n_ex, i64 n_tail,
                            i64 n_out, i64 width, int store, int check, int inclusive, int padded) {
    const i64 e = (i64)blockIdx.x;
    if (e >= n_ex) return;
    const i64 m = tail_len[e], src = tail_src[e], h = hist_len[e];
    const i64 dst = padded ? e * width + h : offsets[e] + h;
    for (i64 r = threadIdx.x; r < m; r += blockDim.x) {
        if (src + r >= n_tail) break;
        const i64 v = tail[src + r];
        if (store && (padded ? h + r < width : dst + r < n_out)) out[dst + r] = (T)v;
        if (check && (inclusive ? v > request_ts[e] : v >= request_ts[e])) viol[e] = 1;
    }
}

#define DG_ARGS const i64* hdr, const i64* words, const i64* tile_block, const i64* tile_lo, const i64* tile_cnt, \
    const i64* tile_out, const i64* tile_ex, const i64* offsets, const i64* request_ts, const i64* dicts, i64 n_dicts
#define DG_PASS hdr, words, tile_block, tile_lo, tile_cnt, tile_out, tile_ex, offsets, request_ts, dicts, n_dicts
#define DG_SIZES int* viol, i64 n_tiles, i64 n_words, i64 n_out, i64 width, int store, int check, int inclusive, int padded
#define DG_SIZES_PASS viol, n_tiles, n_words, n_out, width, store, check, inclusive, padded
extern "C" __global__ void decode_gather_i64(DG_ARGS, i64* out, DG_SIZES) { decode_gather<i64>(DG_PASS, out, DG_SIZES_PASS); }
extern "C" __global__ void decode_gather_i32(DG_ARGS, int* out, DG_SIZES) { decode_gather<int>(DG_PASS, out, DG_SIZES_PASS); }

#define GT_ARGS const i64* tail, const i64* tail_src, const i64* tail_len, const i64* hist_len, const i64* offsets, \
    const i64* request_ts
#define GT_PASS tail, tail_src, tail_len, hist_len, offsets, request_ts
#define GT_SIZES int* viol, i64 n_ex, i64 n_tail, i64 n_out, i64 width, int store, int check, int inclusive, int padded
#define GT_SIZES_PASS viol, n_ex, n_tail, n_out, width, store, check, inclusive, padded
extern "C" __global__ void gather_tail_i64(GT_ARGS, i64* out, GT_SIZES) { gather_tail<i64>(GT_PASS, out, GT_SIZES_PASS); }
extern "C" __global__ void gather_tail_i32(GT_ARGS, int* out, GT_SIZES) { gather_tail<int>(GT_PASS, out, GT_SIZES_PASS); }
"""

_MODULE = None
_SUFFIX = {"int64": "i64", "int32": "i32"}
TAIL_THREADS = 128
TILE_THREADS = 128  # threads per tile; tier blocks larger than this loop


def _module():
    global _MODULE
    if _MODULE is None:  # compiled on first use, never at import
        _MODULE = cp.RawModule(code=_SOURCE, options=("--std=c++14",))
    return _MODULE


def _cp(t: torch.Tensor):
    return cp.asarray(t)  # zero-copy through __cuda_array_interface__


def materialize_staged_cuda(staged, padded_width=None, pad_value=0, total=None):
    """Same contract as ``materialize_staged_triton`` (device ``StagedBatch`` -> ``(values, violations)``)."""
    dev = staged.offsets.device
    if dev.type != "cuda":
        raise GpumatError(f"the CUDA twin needs a staged batch on a CUDA device, got {dev}")
    B = staged.offsets.numel() - 1
    shape = (staged.total if total is None else int(total),) if padded_width is None else (B, int(padded_width))
    width = 0 if padded_width is None else int(padded_width)
    viol = torch.zeros(B, dtype=torch.int32, device=dev)
    values = {}
    mod = _module()
    stream = cp.cuda.ExternalStream(torch.cuda.current_stream(dev).cuda_stream)
    i64 = cp.int64
    with stream:
        for name, col, check in staged.passes():
            dt = TORCH_DTYPES[col.dtype]
            buf = torch.full(shape, pad_value, dtype=dt, device=dev) if col.project else torch.empty(1, dtype=dt, device=dev)
            if col.project:
                values[name] = buf
            flags = (cp.int32(col.project), cp.int32(check), cp.int32(check and staged.inclusive),
                     cp.int32(padded_width is not None))
            T = staged.tile_block.numel()
            if T and (buf.numel() or check):
                mod.get_function("decode_gather_" + _SUFFIX[col.dtype])(
                    (T,), (min(int(staged.block_size), TILE_THREADS),),
                    (_cp(col.hdr), _cp(col.words), *(_cp(getattr(staged, f)) for f in
                     ("tile_block", "tile_lo", "tile_cnt", "tile_out", "tile_ex", "offsets", "request_ts")),
                     *((_cp(col.dicts), i64(col.dicts.numel())) if col.dicts is not None and col.dicts.numel()
                       else (_cp(col.words), i64(0))), _cp(buf), _cp(viol), i64(T), i64(col.words.numel()), i64(buf.numel()), i64(width), *flags),
                )
            if B and col.tail_values.numel() and (buf.numel() or check):
                mod.get_function("gather_tail_" + _SUFFIX[col.dtype])(
                    (B,), (TAIL_THREADS,),
                    (_cp(col.tail_values), *(_cp(getattr(staged, f)) for f in
                     ("tail_src", "tail_len", "hist_len", "offsets", "request_ts")),
                     _cp(buf), _cp(viol), i64(B), i64(col.tail_values.numel()), i64(buf.numel()), i64(width), *flags),
                )
    return values, viol
