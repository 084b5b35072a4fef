/* The host codec's block decode in C (gpumat.host.native): the same values as host/codec.py's NumPy
 * decoder, for the CPU reference backend and the workers.
 *
 * A block of the frame-of-reference codec (docs/DESIGN.md §1) holds value j as
 *     base + slope * j + bits(words, 64 * word_off + j * w, w)        (wrapping uint64)
 * with the residuals bit-packed little-endian from word word_off. gm_decode writes values
 * [lo_k, lo_k + cnt_k) of block k to out[dst_k ...]: the padded [K, lanes] rows and the dense
 * output are both that (dst_k = k * lanes, or a running sum).
 *
 * Speed: a switch over the 65 widths calls one always-inlined body with w a compile-time constant.
 * For w <= 56, 8 values take exactly w bytes, so value 8g + i is one unaligned 8-byte load at byte
 * g * w + (i * w) / 8, a constant shift (i * w) % 8 and a constant mask: about 5 instructions a
 * value, no branches, no per-value index arithmetic. Wider values take the two words they span.
 * Head and tail values outside whole groups of 8, and blocks whose last group would load past the
 * end of `words`, take a bounds-checked path.
 *
 * Safety: each block's header (width, offset, value range) is checked against `nwords` before that
 * block is read; a block whose words would lie outside the buffer is reported (return value k + 1),
 * after the blocks before it were written. Sizes are bounded (GM_MAX_VALUES) so no index overflows.
 * The caller (host/native.py) checks the output positions. No Python API is used inside; a trivial module init makes the shared
 * object importable as an extension module as well as loadable with ctypes.
 */
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static inline uint64_t load64(const unsigned char *p) {
    uint64_t v;
    memcpy(&v, p, 8); /* one unaligned load on x86-64 and arm64 */
    return v;
}

/* bits [bit, bit + w) of the little-endian word stream, reading only words [0, nwords) */
static inline uint64_t bits_checked(const uint64_t *words, int64_t nwords, uint64_t bit, int w) {
    if (w == 0) return 0;
    uint64_t q = bit >> 6, s = bit & 63;
    uint64_t v = words[q] >> s;
    if (s + (uint64_t)w > 64 && (int64_t)(q + 1) < nwords) v |= words[q + 1] << (64 - s);
    return w == 64 ? v : v & ((UINT64_C(1) << w) - 1);
}

static inline __attribute__((always_inline)) void decode_block(const uint64_t *words, int64_t nwords, uint64_t off,
                                                               const int w, uint64_t base, uint64_t slope,
                                                               int64_t lo, int64_t hi, uint64_t *out) {
    const uint64_t mask = w == 64 ? ~UINT64_C(0) : ((UINT64_C(1) << w) - 1);
    const uint64_t bit0 = off * 64;
    int64_t j = lo;
    uint64_t acc = base + slope * (uint64_t)lo;
    if (w == 0) {
        for (; j < hi; j++, acc += slope) *out++ = acc;
        return;
    }
    /* whole groups of 8 values: [g_lo * 8, g_hi * 8) */
    int64_t g_lo = (lo + 7) >> 3, g_hi = hi >> 3;
    if (g_hi > g_lo) {
        /* the fast path's last load starts at byte 8 * off + g * w + (7 * w) / 8 and reads 8 bytes (16 for w > 56) */
        int64_t last_byte = (int64_t)(8 * off) + (g_hi - 1) * w + (7 * w) / 8 + (w > 56 ? 16 : 8); /* > 56: 2 words */
        if (last_byte > 8 * nwords) g_hi = g_lo; /* near the end of the buffer: checked path only */
    }
    for (; j < hi && j < g_lo * 8; j++, acc += slope) *out++ = acc + bits_checked(words, nwords, bit0 + (uint64_t)j * w, w);
    if (g_hi > g_lo) {
        const unsigned char *bytes = (const unsigned char *)words + 8 * off;
        if (w <= 56) {
            for (int64_t g = g_lo; g < g_hi; g++) {
                const unsigned char *p = bytes + g * w;
#define GM_V(i) (((load64(p + ((i) * w) / 8)) >> (((i) * w) % 8)) & mask)
                if (slope == 0) {
                    out[0] = acc + GM_V(0); out[1] = acc + GM_V(1); out[2] = acc + GM_V(2); out[3] = acc + GM_V(3);
                    out[4] = acc + GM_V(4); out[5] = acc + GM_V(5); out[6] = acc + GM_V(6); out[7] = acc + GM_V(7);
                } else {
                    out[0] = acc + GM_V(0);             out[1] = acc + slope + GM_V(1);
                    out[2] = acc + 2 * slope + GM_V(2); out[3] = acc + 3 * slope + GM_V(3);
                    out[4] = acc + 4 * slope + GM_V(4); out[5] = acc + 5 * slope + GM_V(5);
                    out[6] = acc + 6 * slope + GM_V(6); out[7] = acc + 7 * slope + GM_V(7);
                    acc += 8 * slope;
                }
#undef GM_V
                out += 8;
            }
        } else {
            for (int64_t g = g_lo * 8; g < g_hi * 8; g++, acc += slope) {
                uint64_t bit = bit0 + (uint64_t)g * w, q = bit >> 6, s = bit & 63;
                uint64_t v = (words[q] >> s) | ((words[q + 1] << 1) << (63 - s)); /* s == 0: nothing from q + 1 */
                *out++ = acc + (v & mask);
            }
        }
        j = g_hi * 8;
    }
    for (; j < hi; j++, acc += slope) *out++ = acc + bits_checked(words, nwords, bit0 + (uint64_t)j * w, w);
}

#define GM_MAX_VALUES (INT64_C(1) << 56) /* values per block, words per buffer: far above any real one */

int64_t gm_abi_version(void) { return 34; } /* host/native.py refuses a build of another version */

#define GM_CASE(W) case W: decode_block(words, nwords, (uint64_t)off, W, base, slope, a, hi, o); break;

/* Values [a, a + n) of a plain block of width w (the line base + slope * j, bits from word off) to o.
 * Returns 1 when its words lie outside the buffer; with clamp, those values take residual 0 instead. */
static int decode_plain(const uint64_t *words, int64_t nwords, int64_t off, int w, uint64_t base, uint64_t slope,
                        int64_t a, int64_t n, uint64_t *o, int clamp) {
    /* no overflow below: hi * 64 and off * 64 (bit positions) stay inside int64 */
    if (n > GM_MAX_VALUES - a || off > GM_MAX_VALUES) return 1;
    int64_t hi = a + n;
    if (w && off + ((hi * w + 63) >> 6) > nwords) {
        /* clamp (the padded rows' lanes past a block's count): residual 0 where no word is left */
        if (!clamp || off > nwords) return 1;
        int64_t fit = ((nwords - off) * 64) / w; /* values whose bits lie inside the buffer */
        if (fit < a) fit = a;
        if (fit > hi) fit = hi;
        uint64_t acc = base + slope * (uint64_t)fit;
        for (int64_t j = fit; j < hi; j++, acc += slope) o[j - a] = acc;
        hi = fit;
    }
    switch (w) {
        GM_CASE(0) GM_CASE(1) GM_CASE(2) GM_CASE(3) GM_CASE(4) GM_CASE(5) GM_CASE(6) GM_CASE(7) GM_CASE(8)
        GM_CASE(9) GM_CASE(10) GM_CASE(11) GM_CASE(12) GM_CASE(13) GM_CASE(14) GM_CASE(15) GM_CASE(16)
        GM_CASE(17) GM_CASE(18) GM_CASE(19) GM_CASE(20) GM_CASE(21) GM_CASE(22) GM_CASE(23) GM_CASE(24)
        GM_CASE(25) GM_CASE(26) GM_CASE(27) GM_CASE(28) GM_CASE(29) GM_CASE(30) GM_CASE(31) GM_CASE(32)
        GM_CASE(33) GM_CASE(34) GM_CASE(35) GM_CASE(36) GM_CASE(37) GM_CASE(38) GM_CASE(39) GM_CASE(40)
        GM_CASE(41) GM_CASE(42) GM_CASE(43) GM_CASE(44) GM_CASE(45) GM_CASE(46) GM_CASE(47) GM_CASE(48)
        GM_CASE(49) GM_CASE(50) GM_CASE(51) GM_CASE(52) GM_CASE(53) GM_CASE(54) GM_CASE(55) GM_CASE(56)
        GM_CASE(57) GM_CASE(58) GM_CASE(59) GM_CASE(60) GM_CASE(61) GM_CASE(62) GM_CASE(63) GM_CASE(64)
    }
    return 0;
}

/* A RADIX block's values [lo, hi) (docs/DESIGN.md §1; gpumat/core/staged.py decode_values): value k is
 * base + slope k + digit k mod g of code k div g (codes[q - q0]), digit j of a code its quotient by
 * R^j mod R. Digits are peeled off the code in turn, each division by R a multiply by ceil(2^32 / R)
 * and a shift (exact for codes under 2^16: a valid block's, R^g <= 2^16; an invalid one's wider
 * codes give other digits, never a read outside codes). */
static inline __attribute__((always_inline)) void gm_radix_code_digits(uint64_t c, uint64_t M, uint64_t R, int64_t g,
                                                                        uint64_t base, uint64_t slope, int64_t k,
                                                                        uint64_t *o) {
    for (int64_t j = 0; j < g; j++) { /* (g a constant where inlined below: unrolled) */
        const uint64_t next = (c * M) >> 32;
        o[j] = base + slope * (uint64_t)(k + j) + (c - next * R);
        c = next;
    }
}

static void gm_radix_expand(const uint64_t *codes, int64_t q0, uint64_t R, int64_t g, uint64_t base, uint64_t slope,
                            int64_t lo, int64_t hi, uint64_t *out) {
    if (R < 2) R = 2;
    if (g < 1) g = 1;
    const uint64_t M = (UINT64_C(0xFFFFFFFF) / R) + 1; /* ceil(2^32 / R) for R not a power of two; 2^32 / R + 1 else */
    int64_t q = lo / g, r = lo % g, k = lo;
    if (r) { /* the rest of a code begun before lo */
        uint64_t c = codes[q - q0] & 0xFFFFFFFFu;
        for (int64_t j = 0; j < r; j++) c = (c * M) >> 32;
        for (; r < g && k < hi; r++, k++) {
            const uint64_t next = (c * M) >> 32;
            out[k - lo] = base + slope * (uint64_t)k + (c - next * R);
            c = next;
        }
        q++;
    }
    /* whole codes: each one's digits apart from the next code's (their chains overlap) */
    const int64_t whole = (hi - k) / g;
    const uint64_t *cq = codes + (q - q0);
    uint64_t *o = out + (k - lo);
    switch (g) { /* the digits a code of a valid block (gm_radix_code): a constant each */
#define GM_RADIX_G(G) case G: { \
        for (int64_t i = 0; i < whole; i++) gm_radix_code_digits(cq[i] & 0xFFFFFFFFu, M, R, G, base, slope, k + G * i, o + G * i); \
    } break;
        GM_RADIX_G(2) GM_RADIX_G(3) GM_RADIX_G(4) GM_RADIX_G(5) GM_RADIX_G(6) GM_RADIX_G(7) GM_RADIX_G(8)
#undef GM_RADIX_G
        default:
            for (int64_t i = 0; i < whole; i++) gm_radix_code_digits(cq[i] & 0xFFFFFFFFu, M, R, g, base, slope, k + g * i, o + g * i);
    }
    k += g * whole;
    if (k < hi) { /* a last code, in part */
        uint64_t c = cq[whole] & 0xFFFFFFFFu;
        for (; k < hi; k++) {
            const uint64_t next = (c * M) >> 32;
            out[k - lo] = base + slope * (uint64_t)k + (c - next * R);
            c = next;
        }
    }
}

/* host/pages.py RADIX_G / RADIX_W (part of the format: a RADIX block stores only R): the digits g a
 * code and the code width w <= 16 with the fewest bits a digit (ties: fewer digits); g = w = 0 for an
 * R of no gain (R < 3, R > 256, powers of two). */
static void gm_radix_code(int64_t R, int64_t *g, int64_t *w) {
    *g = *w = 0;
    if (R < 3 || R > 256) return;
    int64_t bw = 64 - __builtin_clzll((uint64_t)(R - 1)), bg = 1;
    uint64_t p = (uint64_t)R;
    for (int64_t gg = 2; gg <= 16; gg++) {
        p *= (uint64_t)R;
        if (p > 65536) break;
        const int64_t ww = 64 - __builtin_clzll(p - 1);
        if (ww * bg < bw * gg) bw = ww, bg = gg;
    }
    if (bg > 1) *g = bg, *w = bw;
}

/* A PATCH or RUN block (meta bit 7, docs/DESIGN.md §4; gpumat/core/staged.py decode_values is the
 * definition): its aux word at words[off - 1] holds the kind, the bitmap's and exceptions' 32-bit
 * word offsets from 2 * off (an exception: one 32-bit word, its high part) and the bitmap's rank
 * prefix per 32 values. On the host, block by block rather than by lanes: PATCH decodes its low bits
 * as a plain block, then adds each exception at its bitmap bit (a count-trailing-zeros walk); RUN
 * decodes the runs it needs as a plain block into a small buffer, then expands them along the
 * bitmap. Reads outside `words` are errors (return 1), or with clamp (the padded rows' lanes past a
 * block's count) zeros. */
static inline uint32_t gm_w32(const uint32_t *w32, int64_t n32, int64_t i) { return i >= 0 && i < n32 ? w32[i] : 0; }

/* PATCH: add each exception of [lo, hi) at its bitmap bit (a count-trailing-zeros walk) to out[k - lo];
 * sgn (DELTA SIGNED): the exceptions' words are int32 */
static inline uint64_t gm_exc(uint32_t x, int sgn) { return sgn ? (uint64_t)(int64_t)(int32_t)x : (uint64_t)x; }

static int add_exceptions(const uint32_t *w32, int64_t n32, int64_t ex, const uint32_t *bw, const int64_t *pre, int w,
                          int64_t lo, int64_t hi, uint64_t *out, int clamp, int sgn) {
    for (int64_t g = lo >> 5; g <= (hi - 1) >> 5; g++) {
        uint32_t m = bw[g];
        if (g == lo >> 5) m &= ~(uint32_t)((UINT64_C(1) << (lo & 31)) - 1);
        if (g == (hi - 1) >> 5) m &= (uint32_t)((UINT64_C(2) << ((hi - 1) & 31)) - 1);
        if (!m) continue;
        int64_t rank = ex + pre[g] + __builtin_popcount(bw[g] & ((1u << __builtin_ctz(m)) - 1u));
        if (ex + pre[g] + __builtin_popcount(bw[g]) > n32) { /* (an exception word past the buffer) */
            if (!clamp) return 1;
            for (; m; m &= m - 1, rank++) out[32 * g + __builtin_ctz(m) - lo] += gm_exc(gm_w32(w32, n32, rank), sgn) << w;
            continue;
        }
        for (; m; m &= m - 1, rank++) out[32 * g + __builtin_ctz(m) - lo] += gm_exc(w32[rank], sgn) << w;
    }
    return 0;
}

static int decode_aux(const uint64_t *words, int64_t nwords, int64_t off, int w, uint64_t base, uint64_t slope,
                      int64_t lo, int64_t hi, uint64_t *out, int clamp) {
    if (off < 1 || lo >= hi || hi > 128) return lo < hi;
    const uint64_t aux = words[off - 1];
    const int kind = (int)(aux & 3);
    const int64_t bm = 2 * off + (int64_t)((aux >> 8) & 1023), ex = 2 * off + (int64_t)((aux >> 18) & 1023);
    const uint32_t *w32 = (const uint32_t *)words;
    const int64_t n32 = 2 * nwords;
    uint32_t bw[4];
    int64_t pre[4];
    for (int g = 0; g < 4; g++) { /* the bitmap's words: up to the exceptions (the padded lanes past a block's count) */
        bw[g] = g < ex - bm ? gm_w32(w32, n32, bm + g) : 0;
        pre[g] = (int64_t)((aux >> (32 + 8 * g)) & 255);
    }
    if (kind == 2) { /* RUN: value k is run rank(k + 1) - 1 */
        const int64_t g0 = lo >> 5, g1 = (hi - 1) >> 5;
        const int64_t i0 = pre[g0] + __builtin_popcount(bw[g0] & (uint32_t)((UINT64_C(2) << (lo & 31)) - 1)) - 1;
        const int64_t i1 = pre[g1] + __builtin_popcount(bw[g1] & (uint32_t)((UINT64_C(2) << ((hi - 1) & 31)) - 1)) - 1;
        if (i0 < 0 || i1 < i0 || i1 >= 128) return 1; /* a bitmap that disagrees with its prefixes */
        uint64_t runs[128];
        if (decode_plain(words, nwords, off, w, base, slope, i0, i1 - i0 + 1, runs, clamp)) return 1;
        int64_t i = i0;
        for (int64_t k = lo; k < hi; k++) {
            if (k > lo && ((bw[k >> 5] >> (k & 31)) & 1)) i++;
            if (i > i1) return 1;
            out[k - lo] = runs[i - i0];
        }
        return 0;
    }
    if ((aux & 31) == 16) { /* RADIX: its codes [lo / g, (hi - 1) / g] as a plain block (line 0), then their digits */
        const int64_t g = ((aux >> 18) & 1023) ? (int64_t)((aux >> 18) & 1023) : 1, q0 = lo / g, q1 = (hi - 1) / g;
        uint64_t codes[128];
        if (decode_plain(words, nwords, off, w, 0, 0, q0, q1 - q0 + 1, codes, clamp)) return 1;
        gm_radix_expand(codes, q0, (aux >> 8) & 1023, g, base, slope, lo, hi, out);
        return 0;
    }
    if ((aux & 4) && kind <= 1) { /* DELTA: the offsets of 0 .. hi - 1 (line 0), prefix-summed onto the line */
        uint64_t d[128];
        if (decode_plain(words, nwords, off, w, 0, 0, 0, hi, d, clamp)) return 1;
        if (kind == 1 && w < 64 && add_exceptions(w32, n32, ex, bw, pre, w, 0, hi, d, clamp, (aux & 8) != 0)) return 1;
        uint64_t acc = 0;
        for (int64_t k = 0; k < hi; k++) {
            acc += d[k];
            if (k >= lo) out[k - lo] = base + slope * (uint64_t)k + acc;
        }
        return 0;
    }
    if (decode_plain(words, nwords, off, w, base, slope, lo, hi - lo, out, clamp)) return 1;
    if (kind != 1 || w >= 64) return 0; /* kind 0 (or a reserved 3): the line and bits only */
    return add_exceptions(w32, n32, ex, bw, pre, w, lo, hi, out, clamp, 0);
}

/* A DICT block's values (gpumat/core/staged.py dict_lookup): its value lines, in place, become
 * dicts[min(line mod 2^32, D - 1)], or 0 with no dictionary. */
static void gm_dict_lookup(uint64_t *o, int64_t n, const int64_t *dicts, int64_t D) {
    for (int64_t j = 0; j < n; j++) {
        uint64_t i = o[j] & UINT64_C(0xFFFFFFFF);
        o[j] = D > 0 ? (uint64_t)dicts[i < (uint64_t)D ? i : (uint64_t)(D - 1)] : 0;
    }
}

/* a DICT block's aux word (gpumat/core/staged.py is_dict_kind): kind 3, or any with AUX_CODES (32) */
static inline int gm_is_dict(uint64_t a) { return (a & 3) == 3 || (a & 32); }

/* hdr: int64 [K, 3] (base, slope, meta = word_off << 8 | w); lo, cnt, dst: int64 [K]; dicts: the
 * column's D dictionary values, which its DICT blocks (aux kind 3) index (gm_dict_lookup).
 * Returns 0, or k + 1 for the first block whose header or words are out of range; with clamp, the
 * values of a block whose bits run past the buffer's end take residual 0 instead. */
int64_t gm_decode(const int64_t *hdr, const uint64_t *words, int64_t nwords, int64_t K, const int64_t *lo,
                  const int64_t *cnt, const int64_t *dst, uint64_t *out, int clamp, const int64_t *dicts, int64_t D) {
    for (int64_t k = 0; k < K; k++) {
        uint64_t base = (uint64_t)hdr[3 * k], slope = (uint64_t)hdr[3 * k + 1];
        int64_t meta = hdr[3 * k + 2];
        int w = (int)(meta & 127);
        int64_t off = meta >> 8;
        int64_t a = lo ? lo[k] : 0, n = cnt[k];
        if (w > 64 || off < 0 || a < 0 || n < 0) return k + 1;
        if (n == 0) continue;
        if (meta & 128) { /* PATCH / RUN: at most 128 values (AUX_MAX_BLOCK); with clamp, lanes past that read 0 */
            int64_t h = a + n, top = h;
            if (clamp && top > 128) top = a > 128 ? a : 128;
            if (off > nwords || decode_aux(words, nwords, off, w, base, slope, a, top, out + dst[k], clamp)) return k + 1;
            for (int64_t j = top; j < h; j++) out[dst[k] + j - a] = base;
            if (off >= 1 && gm_is_dict(words[off - 1])) gm_dict_lookup(out + dst[k], n, dicts, D);
            continue;
        }
        if (decode_plain(words, nwords, off, w, base, slope, a, n, out + dst[k], clamp)) return k + 1;
    }
    return 0;
}

/* splitmix64's output function (host/codec.py splitmix64) */
static inline uint64_t gm_mix(uint64_t z) {
    z += UINT64_C(0x9E3779B97F4A7C15);
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

/* host/codec.py block_hash: out[k] = sum_i splitmix64(word_i ^ (i * golden)) over base, slope, meta
 * and block k's packed words (i from 0), the K blocks' words back to back in `packed`. The caller
 * checks that `packed` holds sum(nwords) words. */
void gm_block_hash(const uint64_t *base, const uint64_t *slope, const uint64_t *meta, const uint64_t *packed,
                   const int64_t *nwords, int64_t K, uint64_t *out) {
    const uint64_t g = UINT64_C(0x9E3779B97F4A7C15);
    for (int64_t k = 0; k < K; k++) {
        uint64_t h = gm_mix(base[k]) + gm_mix(slope[k] ^ g) + gm_mix(meta[k] ^ (2 * g));
        uint64_t pos = 3 * g;
        for (int64_t i = 0; i < nwords[k]; i++, pos += g) h += gm_mix(packed[i] ^ pos);
        packed += nwords[k];
        out[k] = h;
    }
}

/* host/pages.py realign: bits [src_bit[k], src_bit[k] + nbits[k]) of the byte stream buf (n bytes)
 * to out[dst_word[k] ...] as whole little-endian words, zero past the block's bits: a format-3 block's
 * payload in format 2's word-aligned form. Returns 0, or k + 1 for the first block whose bits fall
 * outside buf (nothing written for it or after it). The caller checks the output positions. */
/* bits [b0, b0 + nb) of buf (n bytes; the caller checked they lie inside, nb > 0) to o as whole words */
static void gm_realign_one(const unsigned char *buf, int64_t n, int64_t b0, int64_t nb, uint64_t *o) {
    const unsigned char *p = buf + (b0 >> 3);
    unsigned sh = (unsigned)(b0 & 7);
    int64_t nw = (nb + 63) >> 6, full = nw - 1;
    /* every word but the last: its 9 bytes lie inside the block's bits (plus one), so inside buf */
    if (sh == 0) memcpy(o, p, (size_t)(8 * full));
    else
        for (int64_t i = 0; i < full; i++) o[i] = (load64(p + 8 * i) >> sh) | ((uint64_t)p[8 * i + 8] << (64 - sh));
    /* the last word: as the others where its 9 bytes lie inside buf, else the bytes that remain, one at a time */
    int64_t byte = (b0 >> 3) + 8 * full;
    uint64_t v = 0;
    if (byte + 9 <= n)
        v = (load64(buf + byte) >> sh) | (sh ? (uint64_t)buf[byte + 8] << (64 - sh) : 0);
    else
        for (int64_t t = 0; t < 9 && byte + t < n; t++) {
            int sft = 8 * (int)t - (int)sh;
            if (sft >= 64) break;
            uint64_t c = buf[byte + t];
            v |= sft >= 0 ? c << sft : c >> (-sft);
        }
    int64_t rem = nb - 64 * full;
    if (rem < 64) v &= (UINT64_C(1) << rem) - 1;
    o[full] = v;
}

int64_t gm_realign(const unsigned char *buf, int64_t n, const int64_t *src_bit, const int64_t *nbits,
                   const int64_t *dst_word, int64_t K, uint64_t *out) {
    for (int64_t k = 0; k < K; k++) {
        int64_t b0 = src_bit[k], nb = nbits[k];
        if (b0 < 0 || nb < 0 || nb > GM_MAX_VALUES || b0 > 8 * n - nb) return k + 1;
        if (nb) gm_realign_one(buf, n, b0, nb, out + dst_word[k]);
    }
    return 0;
}

/* bits [bit, bit + w) of the byte stream buf (n bytes; the caller checked they lie inside), w <= 56 */
static inline uint64_t gm_bits_at(const unsigned char *buf, int64_t n, int64_t bit, int w) {
    const int64_t byte = bit >> 3;
    uint64_t v = 0;
    if (byte + 8 <= n) v = load64(buf + byte);
    else memcpy(&v, buf + byte, (size_t)(n - byte)); /* the stream's last bytes */
    return (v >> (bit & 7)) & ((UINT64_C(1) << w) - 1);
}

static inline int64_t gm_unzigzag(uint64_t z) { return (int64_t)((z >> 1) ^ (UINT64_C(0) - (z & 1))); }

/* host/pages.py stage_blocks: a PATCH block's exceptions, e[k] values of w2[k] <= 31 bits from bit
 * src_bit[k] of buf (n bytes), staged as 32-bit words value + 1 (their high parts) from out32[dst[k]];
 * where sgn[k] (sgn may be NULL), a DELTA SIGNED block's, unzigzag(value + 1) as an int32. Returns
 * 0, or k + 1 for the first block whose bits fall outside buf (nothing written for it or after it).
 * The caller checks the output positions. */
int64_t gm_unpack_exceptions(const unsigned char *buf, int64_t n, const int64_t *src_bit, const int64_t *e,
                             const int64_t *w2, const int64_t *dst, int64_t K, const int64_t *sgn, uint32_t *out32) {
    for (int64_t k = 0; k < K; k++) {
        const int64_t b0 = src_bit[k], m = e[k], w = w2[k];
        if (b0 < 0 || m < 0 || w < 0 || w > 31 || m > GM_MAX_VALUES / 32 || b0 > 8 * n - m * w) return k + 1;
        if (sgn && sgn[k]) /* DELTA SIGNED: unzigzag(value + 1) as an int32 */
            for (int64_t i = 0; i < m; i++)
                out32[dst[k] + i] = (uint32_t)(int32_t)gm_unzigzag(gm_bits_at(buf, n, b0 + i * w, (int)w) + 1);
        else
            for (int64_t i = 0; i < m; i++) out32[dst[k] + i] = (uint32_t)(gm_bits_at(buf, n, b0 + i * w, (int)w) + 1);
    }
    return 0;
}

/* host/pages.py KIND_* (the staged aux word's kinds; LEVELS stored only) and position_bits */
enum { GM_KIND_PATCH = 1, GM_KIND_RUN = 2, GM_KIND_SIGNED = 13, GM_KIND_RADIX = 16, GM_KIND_STORED_LEVELS = 32 };

static inline int64_t gm_pos_bits(int64_t cnt) { return cnt > 1 ? 64 - __builtin_clzll((uint64_t)(cnt - 1)) : 0; }

/* host/pages.py parse_fields: the blocks of whole pages. Page p's fields are bytes [fstart[p], fend[p])
 * of fbuf; its blocks are the run of blocks with page_of == p (sorted), of tags tag and cnt values. Per
 * block: LEB128 zigzag(base - prediction); zigzag(slope) when tag & 0x80; then for a PATCH block (tag &
 * 0x7F == 65), a DELTA PATCH one (68) or a DELTA SIGNED one (69) w, w2, e, for a RUN block (66) w, runs,
 * for a DELTA one (67) w, for a RADIX one (70) R (as w2; its g, as e, and w from R, gm_radix_code; its
 * codes, nv, cnt / g rounded up).
 * The prediction is 0 for a page's first block, else
 * the previous block's base + slope * nv (nv: its runs for RUN, else cnt; a RADIX block's cnt, not its codes). Writes base, slope, w, nv, w2,
 * e per block (large field values saturate at 2^40; host/pages.py checks their ranges). Returns 0, or
 * p + 1 for the first page whose fields are not exactly its blocks' varints. */
static inline int gm_varint(const unsigned char *b, int64_t *pos, int64_t end, uint64_t *v) {
    uint64_t x = 0;
    for (int i = 0; i < 10; i++) {
        if (*pos >= end) return 1;
        unsigned char c = b[(*pos)++];
        if (i == 9 && c > 1) return 1;
        x |= (uint64_t)(c & 0x7F) << (7 * i);
        if (!(c & 0x80)) { *v = x; return 0; }
    }
    return 1;
}

static inline int64_t gm_sat(uint64_t v) { return v > (UINT64_C(1) << 40) ? (INT64_C(1) << 40) : (int64_t)v; }

/* FLAG tags (host/pages.py TAG_FLAG ..): sparse PATCH blocks, no low bits, no slope, based at the
 * prediction; e = tag - 75 with exceptions of 0 bits (no fields), tag - 93 with a w2 field. LEVELS
 * tags (TAG_LEVELS ..): L = 1 + (tag - 112) / 4 levels of bitmaps, a tail of wt = (tag - 112) % 4 bits,
 * no slope; fields the base and the payload's bits after the first level */
enum { GM_TAG_RUN_GAPS = 75, GM_TAG_FLAG = 76, GM_TAG_FLAG_W2 = 94, GM_TAG_LEVELS = 112, GM_TAG_LAST = 127,
       GM_KIND_LEVELS = 112, GM_KIND_STORED_CLASSES = 64 };
/* CLASSES tags (host/pages.py TAG_CLASSES ..): a LEVELS tag of no tail with bit 7 (which LEVELS never
 * has), L = 1 + (tag - 240) / 4 levels; fields the base, the payload's bits after the first level and
 * its shape (w_i in bits 4i .. 4i + 3 for i < L, the tail's wt from bit 4L), stored as a step (XOR)
 * from the shape of its page's CLASSES block before */
static inline int gm_is_classes(int64_t tag) { return tag >= 240 && tag <= 252 && !((tag - 240) & 3); }
/* BARE LEVELS tags (host/pages.py is_bare): a LEVELS tag with a tail of 1 .. 3 bits, with bit 7; no
 * fields (its base the prediction; its bits after the first level walked from its levels,
 * gm_bare_extra); only as its blob's one block */
static inline int gm_is_bare(int64_t tag) { return tag > 240 && tag <= 255 && ((tag - 240) & 3); }
static inline int gm_flag_e(int t) { return t >= GM_TAG_FLAG_W2 ? t - GM_TAG_FLAG_W2 + 1 : t - GM_TAG_FLAG + 1; }

/* a tag's kind without its bitmap's form: 71..74 (sparse bitmaps) as PATCH, RUN, DELTA PATCH, DELTA
 * SIGNED; 75 (a RUN block's starts as gaps) as RUN; FLAG tags as PATCH; LEVELS tags as GM_KIND_LEVELS */
static inline int gm_kind_tag(int t) {
    return t >= GM_TAG_LEVELS ? GM_KIND_LEVELS : t >= GM_TAG_FLAG ? 65 : t == GM_TAG_RUN_GAPS ? 66 : t >= 71 && t <= 74 ? (t == 71 ? 65 : t == 72 ? 66 : t - 5) : t;
}

/* a RUN block's run starts stored as gaps (each start less the one before less 1, the first after
 * position 0): `ones` gaps of gw bits from bit `at` of b, as bits of bm (bit 0 too); 1 when a start
 * reaches past the block's cnt values */
static int gm_gap_bitmap(const unsigned char *b, int64_t L, int64_t at, int64_t ones, int gw, int64_t cnt,
                         uint64_t *bm) {
    bm[0] = 1;
    bm[1] = 0;
    int64_t p = 0;
    for (int64_t i = 0; i < ones; i++) {
        p += (int64_t)gm_bits_at(b, L, at + i * gw, gw) + 1;
        if (p >= cnt) return 1;
        bm[p >> 6] |= UINT64_C(1) << (p & 63);
    }
    return 0;
}

/* a sparse bitmap: `ones` positions of pb bits from bit `at` of b, ascending inside the block's cnt
 * values, as bits of bm (zeroed; with run: bit 0 too); 1 when they do not ascend */
static int gm_sparse_bitmap(const unsigned char *b, int64_t L, int64_t at, int64_t ones, int pb, int64_t cnt, int run,
                            uint64_t *bm) {
    bm[0] = run ? 1 : 0;
    bm[1] = 0;
    int64_t prev = run ? 0 : -1;
    for (int64_t i = 0; i < ones; i++) {
        const int64_t p = (int64_t)gm_bits_at(b, L, at + i * pb, pb);
        if (p <= prev || p >= cnt) return 1;
        bm[p >> 6] |= UINT64_C(1) << (p & 63);
        prev = p;
    }
    return 0;
}

/* a LEVELS block of cnt <= 128 values from bit `at` of b (L bytes): lv levels of bitmaps (level i one
 * bit per value whose bits on the levels before are 1, in order), then a tail of wt bits per value past
 * them; value k is base + the first level whose bit for it is 0, or base + lv + its tail. gm_levels_ev
 * gives the first level (bm) and, per its set bit j, in order, that value less the base (ev[j]; *e1 of
 * them): each level is realigned to two words and walked by its set bits only, ev[j] gaining 1 per
 * level it passes. 1 when no first-level bit is set or the levels and the tail are not `extra` bits
 * after the first level (checked before each is read); the caller checked at + cnt + extra <= 8 L.
 * walked (a BARE LEVELS block's: no field says its size): where given, extra is only a bound, and
 * *walked the bits its levels and tail take after the first level (one walk for both) */
static int gm_levels_ev(const unsigned char *b, int64_t L, int64_t at, int64_t cnt, int lv, int wt, int64_t extra,
                        uint64_t *bm, uint8_t *ev, int64_t *e1, int64_t *walked) {
    uint64_t lw[2];
    uint8_t who[128];
    bm[0] = bm[1] = 0;
    gm_realign_one(b, L, at, cnt, bm);
    int64_t n = __builtin_popcountll(bm[0]) + __builtin_popcountll(bm[1]), pos = at + cnt;
    *e1 = n;
    if (n < 1) return 1;
    for (int64_t j = 0; j < n; j++) ev[j] = 1, who[j] = (uint8_t)j;
    for (int i = 1; i < lv && n; i++) { /* level i: n bits, one per entry who[0 .. n) */
        if (pos + n > at + cnt + extra) return 1;
        lw[1] = 0;
        gm_realign_one(b, L, pos, n, lw);
        pos += n;
        int64_t m = 0;
        for (int g = 0; g < 2; g++)
            for (uint64_t x = lw[g]; x; x &= x - 1) {
                const uint8_t j = who[64 * g + __builtin_ctzll(x)];
                ev[j]++;
                who[m++] = j; /* (m <= the set bit's index: who stays ahead of its reads) */
            }
        n = m;
    }
    const int64_t used = pos - at - cnt + n * wt;
    if (walked ? used > extra : used != extra) return 1;
    if (walked) *walked = used;
    if (wt)
        for (int64_t t = 0; t < n; t++) ev[who[t]] += (uint8_t)gm_bits_at(b, L, pos + t * wt, wt);
    return 0;
}

/* a BARE LEVELS block's bits after its first level (no field says it): its lv levels from bit `at` of b
 * (L bytes; cnt <= 128 values), level i a bit per set bit of level i - 1, then wt bits per set bit of
 * the last; 1 when a level or the tail runs past bit `limit` */
static int gm_bare_extra(const unsigned char *b, int64_t L, int64_t at, int64_t cnt, int lv, int wt, int64_t limit,
                         int64_t *extra) {
    int64_t pos = at, n = cnt;
    if (cnt < 0 || cnt > 128 || at < 0 || limit > 8 * L) return 1;
    for (int i = 0; i < lv; i++) {
        uint64_t w[2] = {0, 0};
        if (pos + n > limit) return 1;
        if (n) gm_realign_one(b, L, pos, n, w);
        pos += n;
        n = __builtin_popcountll(w[0]) + __builtin_popcountll(w[1]);
    }
    if (pos + n * wt > limit) return 1;
    *extra = pos - at - cnt + n * wt;
    return 0;
}

/* host/pages.py bare_mids: K BARE LEVELS blocks (block k from bit at[k] of buf, n bytes: cnt[k] values,
 * lv[k] levels, a tail of wt[k] bits, its blob ending at bit limit[k]): their bits after the first level
 * to mid[k]. Returns 0, or k + 1 for the first whose levels run past its limit */
int64_t gm_bare_mids(const unsigned char *buf, int64_t n, const int64_t *at, const int64_t *cnt, const int64_t *lv,
                     const int64_t *wt, const int64_t *limit, int64_t K, int64_t *mid) {
    for (int64_t k = 0; k < K; k++)
        if (at[k] < 0 || lv[k] < 1 || lv[k] > 4 || wt[k] < 0 || wt[k] > 3 ||
            gm_bare_extra(buf, n, at[k], cnt[k], (int)lv[k], (int)wt[k], limit[k], mid + k))
            return k + 1;
    return 0;
}

/* a CLASSES block's class widths (w[c], c <= lv: the tail's at lv) and starts (st[c]) from its shape */
static void gm_classes_shape(int lv, int64_t shape, int64_t *w, int64_t *st) {
    st[0] = 0;
    for (int c = 0; c <= lv; c++) {
        w[c] = c < lv ? (shape >> (4 * c)) & 15 : shape >> (4 * lv);
        if (w[c] > 62) w[c] = 62; /* (refused by gm_classes_bad) */
        st[c + 1] = st[c] + (INT64_C(1) << w[c]);
    }
}

/* host/pages.py parse_fields' checks of a CLASSES block: a shape of lv low widths and a tail of at most
 * 24 bits, and no more bits after the first level than its levels and widest class take */
static int gm_classes_bad(int64_t lv, int64_t shape, int64_t mid, int64_t cnt) {
    int64_t w[6] = {0}, st[7], wmax = 0;
    if (lv < 1 || lv > 4 || shape < 0 || (shape >> (4 * lv + 5))) return 1;
    gm_classes_shape((int)lv, shape, w, st);
    for (int c = 0; c <= lv; c++) wmax = w[c] > wmax ? w[c] : wmax;
    return w[lv] > 24 || mid > (lv - 1 + wmax) * cnt;
}

/* the low bits of src, one per set bit of m (both 2 words, 128 bits), deposited at those bits in order:
 * BMI2's pdep where the CPU has a fast one (gm_fast_pdep), else by the set bits (portable) */
static void gm_deposit2_bits(const uint64_t *src, const uint64_t *m, uint64_t *o) {
    int64_t j = 0;
    for (int g = 0; g < 2; g++) {
        uint64_t v = 0;
        for (uint64_t x = m[g]; x; x &= x - 1, j++)
            v |= (x & (0 - x)) & (0 - ((src[j >> 6] >> (j & 63)) & 1));
        o[g] = v;
    }
}

/* bits [bit, bit + n) of b (L bytes; n <= 128, the caller checked they lie inside) to o[0], o[1], zero past
 * n: two loads and a shift where 17 bytes from the first are readable (a level of a LEVELS or CLASSES
 * block, read once per level of every block; a PATCH or RUN block's bitmap), gm_realign_one otherwise */
static inline void gm_bits128(const unsigned char *b, int64_t L, int64_t bit, int64_t n, uint64_t *o) {
    const int64_t byte = bit >> 3;
    const unsigned sh = (unsigned)(bit & 7);
    if (byte + 17 <= L) {
        const uint64_t a = load64(b + byte), c = load64(b + byte + 8), h = b[byte + 16];
        uint64_t w0 = sh ? (a >> sh) | (c << (64 - sh)) : a, w1 = sh ? (c >> sh) | (h << (64 - sh)) : c;
        if (n < 64) w0 &= (UINT64_C(1) << n) - 1;
        w1 = n <= 64 ? 0 : n < 128 ? w1 & ((UINT64_C(1) << (n - 64)) - 1) : w1;
        o[0] = w0, o[1] = w1;
    } else {
        o[0] = o[1] = 0;
        if (n) gm_realign_one(b, L, bit, n, o);
    }
}

/* a CLASSES block's levels (gm_classes_r's first step; cnt <= 128 values from bit at of b, L bytes):
 * f[c] the values of class c or more (f[0] all cnt, f[lv + 1] none), each level deposited at the bits
 * of the values still walking by dep (a pdep of two words). 1 when no value is past class 0 or a
 * level runs past end (checked before each is read); *pos: the bit after the last level. Inlined
 * into each caller with its deposit (the AVX-512 path's pdep inline, not called per level) */
typedef void (*gm_deposit_fn)(const uint64_t *, const uint64_t *, uint64_t *);
static inline __attribute__((always_inline)) int gm_classes_levels(const unsigned char *b, int64_t L, int64_t at,
                                                                   int64_t cnt, int lv, int64_t end, uint64_t (*f)[2],
                                                                   int64_t *pos, gm_deposit_fn dep) {
    f[0][0] = cnt >= 64 ? ~UINT64_C(0) : (UINT64_C(1) << cnt) - 1;
    f[0][1] = cnt > 64 ? (cnt >= 128 ? ~UINT64_C(0) : (UINT64_C(1) << (cnt - 64)) - 1) : 0;
    gm_bits128(b, L, at, cnt, f[1]);
    int64_t n = __builtin_popcountll(f[1][0]) + __builtin_popcountll(f[1][1]), p = at + cnt;
    if (n < 1) return 1;
    for (int i = 1; i < lv; i++) { /* level i: a bit for each value still walking; a 0 ends it in class i */
        uint64_t lw[2];
        if (p + n > end) return 1;
        gm_bits128(b, L, p, n, lw);
        p += n;
        dep(lw, f[i], f[i + 1]);
        n = __builtin_popcountll(f[i + 1][0]) + __builtin_popcountll(f[i + 1][1]);
    }
    f[lv + 1][0] = f[lv + 1][1] = 0;
    *pos = p;
    return 0;
}

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__)) && !defined(GM_NO_PDEP) /* (GM_NO_PDEP: the portable path, for its tests) */
#include <immintrin.h>
__attribute__((target("bmi2,popcnt"))) static inline void gm_deposit2_pdep(const uint64_t *src, const uint64_t *m, uint64_t *o) {
    const int n0 = __builtin_popcountll(m[0]);
    o[0] = _pdep_u64(src[0], m[0]);
    /* (the bits past the first word's n0: src shifted right by n0 across its two words) */
    const uint64_t hi = n0 == 64 ? src[1] : n0 ? (src[0] >> n0) | (src[1] << (64 - n0)) : src[0];
    o[1] = _pdep_u64(hi, m[1]);
}

/* 1 where pdep is one instruction: BMI2, and not AMD's Zen 1 / 2 (microcoded there, hundreds of cycles);
 * GPUMAT_NO_PDEP=1 in the environment takes the portable path (its tests, on a machine with BMI2) */
/* 1 where the environment variable `name` is set to other than "0" (a path declined: its tests) */
static int gm_declined(const char *name) {
    const char *no = getenv(name);
    return no && *no && *no != '0';
}

static int gm_fast_pdep(void) {
    static int fast = -1;
    if (fast < 0) {
        __builtin_cpu_init();
        fast = !gm_declined("GPUMAT_NO_PDEP") && __builtin_cpu_supports("bmi2") && __builtin_cpu_supports("popcnt") &&
               !(__builtin_cpu_is("amd") && (__builtin_cpu_is("znver1") || __builtin_cpu_is("znver2")));
    }
    return fast;
}
#define GM_DEPOSIT_FN (gm_fast_pdep() ? gm_deposit2_pdep : gm_deposit2_bits)
#define GM_X512 1

/* 1 where the CPU has AVX-512 F, BW and VBMI (Intel from Ice Lake, AMD from Zen 4): a CLASSES block's
 * low bits unpacked 16 values at a time and expanded into their values' lanes (gm_classes_x512);
 * GPUMAT_NO_AVX512=1 in the environment takes the scalar path (its tests, on a machine with AVX-512) */
static int gm_fast_x512(void) {
    static int fast = -1;
    if (fast < 0) {
        __builtin_cpu_init();
        fast = !gm_declined("GPUMAT_NO_AVX512") && __builtin_cpu_supports("avx512f") &&
               __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vbmi");
    }
    return fast;
}

/* gm_blob's RADIX block with AVX-512 (gm_radix_expand's values [0, cnt) for q0 0; cnt <= 128, 2 <= g <= 10,
 * 3 <= R <= 256, codes below 2^16: a valid block's of w <= 16 bits, codes[128] readable, those past its
 * ceil(cnt / g) any value): 8 values a vector. Lane k's code, k / g, is taken from the 8 codes from the
 * vector's first by a permute; its digit j = k mod g is its quotient by R^j (a multiply by 2^32 / R^j + 1
 * and a shift: exact for codes below 2^16) less R times that quotient's by R: the digits gm_radix_expand's
 * chain gives, without its chain (a multiply and a shift per digit, one after the other) */
static uint64_t gm_radix_m[257][16]; /* [R][j]: 2^32 / R^j + 1 for R^j <= 2^16 (j >= 1; filled at load) */

__attribute__((constructor)) static void gm_radix_init(void) {
    for (uint64_t R = 3; R <= 256; R++)
        for (uint64_t j = 1, p = R; j < 16 && p <= 65536; j++, p *= R) gm_radix_m[R][j] = UINT64_C(0xFFFFFFFF) / p + 1;
}

__attribute__((target("avx512f,popcnt"))) static void gm_radix_x512(const uint64_t *codes, uint64_t R, int64_t g,
                                                                   uint64_t base, uint64_t slope, int64_t cnt,
                                                                   uint64_t *out) {
    uint64_t r0[8]; /* (j = 0 takes the code itself; a digit j < g has R^j < 2^16: its multiplier in the table) */
    for (int k = 0; k < 8; k++) r0[k] = base + slope * (uint64_t)k;
    const uint64_t *mt = gm_radix_m[R];
    const __m512i t0 = _mm512_loadu_si512(mt), t1 = _mm512_loadu_si512(mt + 8), zero = _mm512_setzero_si512();
    const __m512i lane = _mm512_setr_epi64(0, 1, 2, 3, 4, 5, 6, 7), lo32 = _mm512_set1_epi64(0xFFFFFFFF);
    const __m512i vg = _mm512_set1_epi64(g), vR = _mm512_set1_epi64((long long)R);
    const __m512i M1 = _mm512_set1_epi64((long long)(UINT64_C(0xFFFFFFFF) / R + 1));
    const __m512i Mg = _mm512_set1_epi64((long long)(UINT64_C(0xFFFFFFFF) / (uint64_t)g + 1)); /* (k / g, k < 2^16) */
    const __m512i step = _mm512_set1_epi64((long long)(slope * 8));
    __m512i ramp = _mm512_loadu_si512(r0);
    for (int64_t k = 0; k < cnt; k += 8, ramp = _mm512_add_epi64(ramp, step)) {
        const __m512i idx = _mm512_add_epi64(_mm512_set1_epi64(k), lane);
        const __m512i q = _mm512_srli_epi64(_mm512_mul_epu32(idx, Mg), 32);
        const __m512i j = _mm512_sub_epi64(idx, _mm512_mul_epu32(q, vg));
        const int64_t q0 = k / g; /* (its lanes' codes q0 .. q0 + 3: 8 readable from q0 <= 63) */
        const __m512i win = _mm512_and_si512(_mm512_loadu_si512(codes + q0), lo32);
        const __m512i c = _mm512_permutexvar_epi64(_mm512_sub_epi64(q, _mm512_set1_epi64(q0)), win);
        __m512i x = _mm512_srli_epi64(_mm512_mul_epu32(c, _mm512_permutex2var_epi64(t0, j, t1)), 32);
        x = _mm512_mask_mov_epi64(x, _mm512_cmpeq_epi64_mask(j, zero), c);
        const __m512i d = _mm512_sub_epi64(x, _mm512_mul_epu32(_mm512_srli_epi64(_mm512_mul_epu32(x, M1), 32), vR));
        const __m512i v = _mm512_add_epi64(ramp, d);
        if (k + 8 <= cnt) _mm512_storeu_si512(out + k, v);
        else _mm512_mask_storeu_epi64(out + k, (__mmask8)((1u << (cnt - k)) - 1), v);
    }
}

/* Values of w bits (1 .. 25) that lie back to back in a byte stream, 16 a vector: the 16 values'
 * 2 w bytes from one masked 64-byte load (no byte at or past the stream's end read); a byte permute
 * puts each value's 4 bytes in its 32-bit lane, a shift per lane and a mask take its w bits (a
 * value's bits and shift lie in its lane: (bit mod 8) + 15 w < 8 * 60, and at most 7 + 25 bits).
 * Every 16 values start at the same bit of a byte, so the permute and the shifts are made once
 * (gm_w16_of, for values from bit `bit`) and each 16 values taken with them (gm_w16_at, from byte p
 * with `room` bytes readable from it). gm_plain_x512, gm_plain_dict*_x512, gm_unpack32_x512 and
 * gm_classes_x512 unpack with them. */
typedef struct {
    __m512i idx, sh, mask;
} gm_w16;

static inline __attribute__((always_inline, target("avx512f,avx512bw,avx512vbmi"))) gm_w16 gm_w16_of(int64_t bit, int w) {
    const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512i q = _mm512_add_epi32(_mm512_mullo_epi32(lane, _mm512_set1_epi32(w)), _mm512_set1_epi32((int)(bit & 7)));
    const gm_w16 u = {_mm512_add_epi32(_mm512_mullo_epi32(_mm512_srli_epi32(q, 3), _mm512_set1_epi32(0x01010101)),
                                       _mm512_set1_epi32(0x03020100)), /* lane j: its value's bytes q_j / 8 + 0..3 */
                      _mm512_and_si512(q, _mm512_set1_epi32(7)), _mm512_set1_epi32((int)((UINT32_C(1) << w) - 1))};
    return u;
}

static inline __attribute__((always_inline, target("avx512f,avx512bw,avx512vbmi"))) __m512i
gm_w16_at(const gm_w16 *u, const unsigned char *p, int64_t room) {
    const __mmask64 km = room >= 64 ? ~(__mmask64)0 : room > 0 ? ((__mmask64)1 << room) - 1 : 0;
    return _mm512_and_si512(_mm512_srlv_epi32(_mm512_permutexvar_epi8(u->idx, _mm512_maskz_loadu_epi8(km, p)), u->sh), u->mask);
}

/* gm_classes_r with AVX-512: its levels (gm_classes_levels, pdep inline: every CPU with AVX-512 VBMI
 * has a fast one; first: as gm_classes_r's), then its classes (every width w[c] <= 24, so that a value
 * less the base, its class's start and low bits, is below 2^26 and a value's bits and their shift lie
 * in one 32-bit lane). The block's values less the base
 * are 8 vectors of 16 lanes; class c's nc values are unpacked 16 at a time (the 16 values' 2 w_c bytes
 * from one masked 64-byte load: a byte permute puts each value's 4 bytes in its lane, a shift per lane
 * and a mask take its bits; every 16 values start at the same bit of a byte) and expanded into the lanes
 * of its mask, 16 lanes at a time. Returns the bit its low bits end at, or -1 when they run past end
 * (each class's bits checked before they are read; nothing written on an error); *top: base + the
 * highest class's largest value less the base */
__attribute__((target("avx512f,avx512bw,avx512vbmi,bmi2,popcnt"))) static int64_t
gm_classes_x512(const unsigned char *b, int64_t L, int64_t at, int64_t end, int64_t cnt, int lv, const int64_t *w,
                const int64_t *st, uint64_t base, uint64_t *r, uint64_t *first, uint64_t *top) {
    uint64_t f[6][2]; /* f[c]: the values of class c or more */
    int64_t pos;
    if (gm_classes_levels(b, L, at, cnt, lv, end, f, &pos, gm_deposit2_pdep)) return -1;
    if (first) first[0] = f[1][0], first[1] = f[1][1];
    /* (the 8 vectors as 8 variables, each step written out for each: they stay in registers, where
     * an array indexed in a loop was kept on the stack, each expand a load and a store more) */
#define GM_R8(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7)
#define GM_K(i) ((__mmask16)(m[(i) >> 2] >> (16 * ((i) & 3))))
    uint32_t tmp[128 + 16];
    const __m512i fill = _mm512_set1_epi32((int)st[0]); /* (class 0 of no low bits: a fill) */
    /* (the vectors that hold the block's values: those past them not touched, a short block's most) */
    const int nvec = (int)((cnt + 15) >> 4);
#define GM_DECL(i) __m512i R##i = fill;
    GM_R8(GM_DECL)
    for (int c = 0; c <= lv; c++) {
        const uint64_t m[2] = {f[c][0] & ~f[c + 1][0], f[c][1] & ~f[c + 1][1]};
        const int64_t nc = __builtin_popcountll(m[0]) + __builtin_popcountll(m[1]);
        const int wc = (int)w[c];
        if (pos + nc * wc > end) return -1;
        if (!nc || (!c && !wc)) continue;
        const __m512i add = _mm512_set1_epi32((int)st[c]);
        if (!wc) {
#define GM_FILL(i) if ((i) < nvec) R##i = _mm512_mask_mov_epi32(R##i, GM_K(i), add);
            GM_R8(GM_FILL)
            continue;
        }
        const gm_w16 u = gm_w16_of(pos, wc);
        const unsigned char *p = b + (pos >> 3);
        int64_t room = L - (pos >> 3); /* (b's bytes from p: the load reads no byte past them) */
        for (int64_t t = 0; t < nc; t += 16, p += 2 * wc, room -= 2 * wc)
            _mm512_storeu_si512(tmp + t, _mm512_add_epi32(gm_w16_at(&u, p, room), add));
        pos += nc * wc;
        const uint32_t *s = tmp;
        /* (expanded from a register, loaded whole: tmp holds 16 entries past the last a class can read; a
         * memory-sourced expand is slow on AMD's Zen 4) */
#define GM_EXPAND(i) if ((i) < nvec) R##i = _mm512_mask_expand_epi32(R##i, GM_K(i), _mm512_loadu_si512(s)), s += __builtin_popcount(GM_K(i));
        GM_R8(GM_EXPAND)
    }
    const __m512i bv = _mm512_set1_epi64((long long)base);
    /* (whole vectors stored unmasked: a masked store's values cannot be forwarded to the loads that
     * read them next, a dictionary's lookup; the block's last vector masked, none past it) */
#define GM_STORE(i)                                                                                             \
    if ((i) < nvec) {                                                                                           \
        const int64_t left = cnt - 16 * (i);                                                                    \
        const __m512i lo = _mm512_add_epi64(_mm512_cvtepu32_epi64(_mm512_castsi512_si256(R##i)), bv);           \
        const __m512i hi = _mm512_add_epi64(_mm512_cvtepu32_epi64(_mm512_extracti64x4_epi64(R##i, 1)), bv);     \
        if (left >= 16) {                                                                                       \
            _mm512_storeu_si512(r + 16 * (i), lo);                                                              \
            _mm512_storeu_si512(r + 16 * (i) + 8, hi);                                                          \
        } else {                                                                                                \
            _mm512_mask_storeu_epi64(r + 16 * (i), left >= 8 ? 0xFF : (__mmask8)((1u << left) - 1), lo);        \
            if (left > 8) _mm512_mask_storeu_epi64(r + 16 * (i) + 8, (__mmask8)((1u << (left - 8)) - 1), hi);   \
        }                                                                                                       \
    }
    GM_R8(GM_STORE)
    if (top) { /* (the highest class: the last with a value; there is one past class 0) */
        int c = lv;
        while (c > 1 && !(f[c][0] | f[c][1])) c--;
        const uint64_t m[2] = {f[c][0] & ~f[c + 1][0], f[c][1] & ~f[c + 1][1]};
        __m512i mx = _mm512_setzero_si512(); /* (lanes past cnt: in no class's mask) */
#define GM_MAX(i) if ((i) < nvec) mx = _mm512_mask_max_epu32(mx, GM_K(i), mx, R##i);
        GM_R8(GM_MAX)
        *top = base + _mm512_reduce_max_epu32(mx);
    }
#undef GM_R8
#undef GM_K
#undef GM_DECL
#undef GM_FILL
#undef GM_EXPAND
#undef GM_STORE
#undef GM_MAX
    return pos;
}

/* gm_plain_bits with AVX-512 (w 1 .. 25): 16 values a vector, straight from b's bytes (gm_w16: no byte
 * at or past L read; every bit used is the caller's to have checked), widened to 64 bits and added to
 * the line base + slope j; values past n are not stored (a masked store: the block's last vector) */
__attribute__((target("avx512f,avx512bw,avx512vbmi"))) static void gm_plain_x512(const unsigned char *b, int64_t L,
                                                                                  int64_t bit, int w, uint64_t base,
                                                                                  uint64_t slope, int64_t n, uint64_t *o) {
    const gm_w16 u = gm_w16_of(bit, w);
    uint64_t r[16]; /* (the line's first 16 values; each vector's next 16 are 16 slope on) */
    for (int k = 0; k < 16; k++) r[k] = base + slope * (uint64_t)k;
    __m512i r0 = _mm512_loadu_si512(r), r1 = _mm512_loadu_si512(r + 8);
    const __m512i step = _mm512_set1_epi64((long long)(slope * 16));
    const unsigned char *p = b + (bit >> 3);
    int64_t room = L - (bit >> 3); /* (b's bytes from p) */
    for (int64_t k = 0; k < n; k += 16, p += 2 * w, room -= 2 * w) {
        const __m512i v = gm_w16_at(&u, p, room);
        const __m512i lo = _mm512_add_epi64(_mm512_cvtepu32_epi64(_mm512_castsi512_si256(v)), r0);
        const __m512i hi = _mm512_add_epi64(_mm512_cvtepu32_epi64(_mm512_extracti64x4_epi64(v, 1)), r1);
        const int64_t left = n - k;
        if (left >= 16) {
            _mm512_storeu_si512(o + k, lo);
            _mm512_storeu_si512(o + k + 8, hi);
        } else {
            _mm512_mask_storeu_epi64(o + k, left >= 8 ? 0xFF : (__mmask8)((1u << left) - 1), lo);
            if (left > 8) _mm512_mask_storeu_epi64(o + k + 8, (__mmask8)((1u << (left - 8)) - 1), hi);
        }
        r0 = _mm512_add_epi64(r0, step), r1 = _mm512_add_epi64(r1, step);
    }
}

/* gm_chunk_hash's sum over the first 8 m words of a chunk at p (all inside the buffer), word t's index
 * in the region w0 + t: 8 words a vector, the same splitmix64 per lane (64-bit lane multiplies:
 * AVX-512 DQ), the lanes' sums added at the end (a sum mod 2^64: the same as the scalar loop's) */
__attribute__((target("avx512f,avx512dq"))) static uint64_t gm_chunk_x512(const unsigned char *p, int64_t m,
                                                                             uint64_t w0) {
    const uint64_t g = UINT64_C(0x9E3779B97F4A7C15);
    const __m512i G = _mm512_set1_epi64((long long)g), C1 = _mm512_set1_epi64((long long)UINT64_C(0xBF58476D1CE4E5B9)),
                  C2 = _mm512_set1_epi64((long long)UINT64_C(0x94D049BB133111EB)),
                  step = _mm512_set1_epi64((long long)(8 * g));
    __m512i at = _mm512_mullo_epi64(_mm512_add_epi64(_mm512_set1_epi64((long long)w0), _mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0)), G);
    __m512i acc = _mm512_setzero_si512();
    for (int64_t i = 0; i < m; i++) {
        __m512i z = _mm512_add_epi64(_mm512_xor_si512(_mm512_loadu_si512((const void *)(p + 64 * i)), at), G);
        z = _mm512_mullo_epi64(_mm512_xor_si512(z, _mm512_srli_epi64(z, 30)), C1);
        z = _mm512_mullo_epi64(_mm512_xor_si512(z, _mm512_srli_epi64(z, 27)), C2);
        acc = _mm512_add_epi64(acc, _mm512_xor_si512(z, _mm512_srli_epi64(z, 31)));
        at = _mm512_add_epi64(at, step);
    }
    return (uint64_t)_mm512_reduce_add_epi64(acc);
}

/* 1 where the CPU has AVX-512 F and DQ (gm_chunk_x512's 64-bit lane multiplies: Intel from Skylake-SP,
 * AMD from Zen 4); GPUMAT_NO_AVX512=1 declines it as gm_fast_x512 */
static int gm_fast_x512dq(void) {
    static int fast = -1;
    if (fast < 0) {
        __builtin_cpu_init();
        fast = !gm_declined("GPUMAT_NO_AVX512") && __builtin_cpu_supports("avx512f") &&
               __builtin_cpu_supports("avx512dq");
    }
    return fast;
}
#else
#define GM_DEPOSIT_FN gm_deposit2_bits
#define GM_X512 0
#endif

/* host/segment.py chunk checksums: out[c] = low 32 bits of sum_t splitmix64(word_t ^ (i_t * golden))
 * over the 8-byte little-endian words of chunk c (bytes [c * chunk, (c + 1) * chunk) of buf, zero past
 * its n bytes), i_t the word's index in the blob region: ids[c] * chunk / 8 + t (ids: the chunks'
 * numbers in the region, so the chunks of several runs can be checked in one call). With pos (not
 * NULL), chunk c is at byte pos[c] of buf instead (0 <= pos[c] < n: the caller checked), the chunks
 * no read needs skipped. */
void gm_chunk_hash(const unsigned char *buf, int64_t n, int64_t chunk, const int64_t *ids, int64_t nchunks,
                   const int64_t *pos, uint32_t *out) {
    const uint64_t g = UINT64_C(0x9E3779B97F4A7C15);
#if GM_X512
    const int x512 = gm_fast_x512dq();
#endif
    for (int64_t c = 0; c < nchunks; c++) {
        uint64_t h = 0, w0 = (uint64_t)ids[c] * (uint64_t)(chunk / 8);
        const int64_t p0 = pos ? pos[c] : c * chunk;
        int64_t t = 0;
#if GM_X512
        if (x512 && chunk >= 64) { /* the whole groups of 8 words inside buf, 8 lanes at a time */
            const int64_t m = p0 + chunk <= n ? chunk / 64 : (n - p0) / 64;
            h = gm_chunk_x512(buf + p0, m, w0);
            t = 8 * m;
        }
#endif
        for (; t < chunk / 8; t++) {
            int64_t at = p0 + 8 * t;
            uint64_t v = 0;
            if (at + 8 <= n) v = load64(buf + at);
            else if (at < n) memcpy(&v, buf + at, (size_t)(n - at));
            h += gm_mix(v ^ ((w0 + (uint64_t)t) * g));
        }
        out[c] = (uint32_t)h;
    }
}

/* 1 when a block's bits after its first level (from bit `from`) do not end at `end`; walked: where given,
 * they may end before, and *walked is how many they are */
static inline int gm_classes_end(int64_t pos, int64_t from, int64_t end, int64_t *walked) {
    if (!walked) return pos != end;
    *walked = pos - from;
    return 0;
}

/* a CLASSES block of cnt <= 128 values from bit `at` of b (L bytes): lv levels of bitmaps (level 0 a bit
 * per value, set past class 0; level i a bit per value whose bits on the levels before are 1, in order),
 * then each class's low bits (w_c bits a value, its values in order; class 0 first, the tail's last):
 * r[k], value k less the base, is its class's start plus its low bits; base is added to each. Each
 * level is deposited at the bits of the values still walking, so that class c is a mask of two words
 * (the values of at least class c less those of at least c + 1), walked by its set bits; class 0 of no
 * low bits (often the most frequent value) is a fill. 1 when no value is past class 0 or the levels
 * and low bits are not `extra` bits after the first level (checked before each is read); walked: as
 * gm_levels_ev's (extra a bound, *walked the bits they take). *top (where given): the largest value,
 * the largest of its highest class (base + its start + its low bits: the block's largest where base +
 * the tail's end does not wrap; gm_blob's dictionary check) */
static int gm_classes_r(const unsigned char *b, int64_t L, int64_t at, int64_t cnt, int lv, int64_t shape,
                        int64_t extra, int64_t *walked, uint64_t base, uint64_t *r, uint64_t *first, uint64_t *top) {
    int64_t w[6], st[7], pos;
    uint64_t f[6][2]; /* f[c]: the values of class c or more */
    gm_classes_shape(lv, shape, w, st);
    const int64_t end = at + cnt + extra;
#if GM_X512
    int64_t wmax = 0;
    for (int c = 0; c <= lv; c++) wmax = w[c] > wmax ? w[c] : wmax;
    if (wmax <= 24 && gm_fast_x512()) {
        const int64_t p = gm_classes_x512(b, L, at, end, cnt, lv, w, st, base, r, first, top);
        return p < 0 || gm_classes_end(p, at + cnt, end, walked);
    }
#endif
    if (gm_classes_levels(b, L, at, cnt, lv, end, f, &pos, GM_DEPOSIT_FN)) return 1;
    if (first) first[0] = f[1][0], first[1] = f[1][1];
    for (int c = 0; c <= lv; c++) { /* each class's low bits, class 0 first (checked before any is read) */
        const uint64_t m0 = f[c][0] & ~f[c + 1][0], m1 = f[c][1] & ~f[c + 1][1];
        const int64_t nc = __builtin_popcountll(m0) + __builtin_popcountll(m1);
        const int wc = (int)w[c];
        if (pos + nc * wc > end) return 1;
        const uint64_t s0 = base + (uint64_t)st[c];
        if (!wc) {
            if (!c) /* (class 0 of no low bits: the most frequent value, often; the other classes overwrite) */
                for (int64_t k = 0; k < cnt; k++) r[k] = s0;
            else
                for (int g = 0; g < 2; g++)
                    for (uint64_t x = g ? m1 : m0; x; x &= x - 1) r[64 * g + __builtin_ctzll(x)] = s0;
        } else if (((pos + nc * wc) >> 3) + 8 <= L) { /* every load inside b: no byte-by-byte path */
            const uint64_t mask = (UINT64_C(1) << wc) - 1;
            for (int g = 0; g < 2; g++)
                for (uint64_t x = g ? m1 : m0; x; x &= x - 1, pos += wc)
                    r[64 * g + __builtin_ctzll(x)] = s0 + ((load64(b + (pos >> 3)) >> (pos & 7)) & mask);
        } else
            for (int g = 0; g < 2; g++)
                for (uint64_t x = g ? m1 : m0; x; x &= x - 1, pos += wc)
                    r[64 * g + __builtin_ctzll(x)] = s0 + gm_bits_at(b, L, pos, wc);
    }
    if (top) { /* (the highest class: the last with a value; class 0 has them all where no other has) */
        int c = lv;
        while (c > 0 && !(f[c][0] | f[c][1])) c--;
        uint64_t t = 0;
        for (int g = 0; g < 2; g++)
            for (uint64_t x = f[c][g] & ~f[c + 1][g]; x; x &= x - 1) {
                const uint64_t v = r[64 * g + __builtin_ctzll(x)];
                t = v > t ? v : t;
            }
        *top = t;
    }
    return gm_classes_end(pos, at + cnt, end, walked);
}

/* OR the w <= 64 low bits of v into the zeroed stream o at bit `bit` */
static inline void gm_put_bits(uint64_t *o, int64_t bit, uint64_t v, int64_t w) {
    if (!w) return;
    v &= w >= 64 ? ~UINT64_C(0) : (UINT64_C(1) << w) - 1;
    o[bit >> 6] |= v << (bit & 63);
    if ((bit & 63) + w > 64) o[(bit >> 6) + 1] |= v >> (64 - (bit & 63));
}

/* a writer of w-bit values (w <= 57) to a stream of words, in order from bit 0: the word being filled
 * in a register, each word stored once, whole (the stream need not be zeroed; gm_put_bits ORs each
 * value into memory, two words at a time) */
typedef struct {
    uint64_t *q, acc;
    int fill;
} gm_bitw;

static inline void gm_bitw_put(gm_bitw *b, uint64_t v, int w) { /* v below 2^w */
    b->acc |= v << b->fill;
    b->fill += w;
    if (b->fill >= 64) {
        *b->q++ = b->acc;
        b->fill -= 64;
        b->acc = b->fill ? v >> (w - b->fill) : 0;
    }
}

static inline void gm_bitw_end(gm_bitw *b) { /* (the last word's bits past the stream: 0) */
    if (b->fill) *b->q = b->acc;
}

/* host/codec.py _pack in C: block b's residuals r[b * lanes ..] (uint64, below 2^w[b], zero past its
 * count), w[b] <= 64 bits each, bit-packed into out[dst[b] ..], its first nw[b] words (w[b] == 0: none
 * written). Returns 0, or b + 1 for a block whose width, words or place are out of range (nothing
 * written for it or after it). */
int64_t gm_pack(const uint64_t *r, int64_t lanes, const int64_t *w, const int64_t *nw, const int64_t *dst, int64_t NB,
                uint64_t *out, int64_t nout) {
    for (int64_t b = 0; b < NB; b++) {
        const int64_t W = w[b], N = nw[b];
        if (!W) continue;
        if (W < 0 || W > 64 || N < 0 || N > (lanes * W + 63) / 64 || dst[b] < 0 || dst[b] > nout - N) return b + 1;
        const uint64_t *x = r + b * lanes, mask = W == 64 ? ~UINT64_C(0) : (UINT64_C(1) << W) - 1;
        uint64_t *o = out + dst[b], acc = 0;
        int64_t q = 0;
        int fill = 0;
        for (int64_t j = 0; j < lanes && q < N; j++) {
            const uint64_t v = x[j] & mask;
            acc |= v << fill;
            if (fill + W >= 64) {
                o[q++] = acc;
                acc = fill ? v >> (64 - fill) : 0;
                fill = (int)(fill + W - 64);
            } else
                fill += (int)W;
        }
        for (; q < N; q++, acc = 0) o[q] = acc;
    }
    return 0;
}

/* host/pages.py _patch_costs in C (the encoder's PATCH search; the same numbers): for blocks i < n of
 * residuals r[i * lanes ..] (zero past cnt[i]) and width w[i], the cheapest low width w1 < w[i]
 * (exceptions: the values of r >> w1 != 0, e of them, stored as (r >> w1) - 1 in w2 <= aux_max_w2
 * bits; ties: the smaller w1): its bits (the payload, a bitmap of cnt bits or e positions, and the
 * fields: 8 (2 + the varint of e); where flag[i] (flag may be NULL), w1 = 0 with e <= flag_max_e
 * exceptions stored as positions is a FLAG block: 8 (w2 > 0) - 8), or 2^60 where none holds.
 * From a histogram of the residuals' bit lengths: e(w1) is a suffix sum, w2(w1) the largest's. */
void gm_patch_costs(const uint64_t *r, int64_t lanes, const int64_t *cnt, const int64_t *w, const uint8_t *flag,
                    int64_t n, int64_t aux_max_w2, int64_t flag_max_e, int64_t *bits, int64_t *w1o, int64_t *w2o,
                    int64_t *eo) {
    for (int64_t i = 0; i < n; i++) {
        const uint64_t *x = r + i * lanes;
        int64_t hist[66] = {0}, e_of[66];
        uint64_t rmax = 0;
        for (int64_t j = 0; j < lanes; j++) {
            hist[x[j] ? 64 - __builtin_clzll(x[j]) : 0]++;
            rmax = x[j] > rmax ? x[j] : rmax;
        }
        e_of[65] = 0;
        for (int b = 64; b >= 0; b--) e_of[b] = e_of[b + 1] + hist[b + 1]; /* values longer than b bits */
        const int64_t c = cnt[i], pb = c > 1 ? 64 - __builtin_clzll((uint64_t)(c - 1)) : 0;
        int64_t best = INT64_C(1) << 60, bw1 = 0, bw2 = 0, be = 0;
        for (int64_t w1 = 0; w1 <= 64; w1++) {
            const uint64_t hi = rmax >> (w1 < 63 ? w1 : 63), hm = hi - 1;
            const int64_t w2 = hm ? 64 - __builtin_clzll(hm) : 0, e = e_of[w1];
            int64_t cost = INT64_C(1) << 60;
            if (w1 < w[i] && w2 <= aux_max_w2 && e > 0) {
                int64_t vl = 1;
                for (uint64_t v = (uint64_t)e >> 7; v; v >>= 7) vl++;
                int64_t fields = 8 * (2 + vl);
                if (!w1 && flag && flag[i] && e <= flag_max_e && e * pb < c) fields = 8 * (w2 > 0) - 8;
                cost = c * w1 + (c < e * pb ? c : e * pb) + e * w2 + fields;
            }
            if (w1 == 0 || cost < best) best = cost, bw1 = w1, bw2 = w2, be = e;
        }
        bits[i] = best, w1o[i] = bw1, w2o[i] = bw2, eo[i] = be;
    }
}

/* host/pages.py _Candidates._assemble_classes in C (the encoder): CLASSES block k's bits after its first
 * level, from its residuals r[k lanes ..] (cnt[k] <= lanes <= 128 of them; class c <= L[k] from
 * st[C k + c], of wd[C k + c] <= 62 bits): level i (1 .. L - 1), a bit per value of class i or more,
 * in order, set where it is of class i + 1 or more; then each class's values less its start, w_c bits
 * each, in order, class 0 first, the tail's last; to the zeroed stream o (nwords) from bit 64 woff[k],
 * inside its nw[k] words. Returns 0, or k + 1 for a block out of range or past its words (nothing
 * written for it) */
int64_t gm_classes_pack(const uint64_t *r, int64_t lanes, const int64_t *cnt, const int64_t *L, const int64_t *st,
                        const int64_t *wd, int64_t C, int64_t K, const int64_t *woff, const int64_t *nw, uint64_t *o,
                        int64_t nwords) {
    for (int64_t k = 0; k < K; k++) {
        const uint64_t *x = r + k * lanes;
        const int64_t n = cnt[k], lv = L[k], *s = st + C * k, *w = wd + C * k;
        uint8_t cls[128];
        int64_t in[8] = {0}, need = 0; /* in[c]: its values of class c */
        if (n < 0 || n > lanes || lanes > 128 || lv < 1 || lv >= C || C > 8 || woff[k] < 0 || nw[k] < 0 ||
            woff[k] > nwords - nw[k])
            return k + 1;
        for (int64_t c = 0; c <= lv; c++)
            if (w[c] < 0 || w[c] > 62) return k + 1;
        int64_t bit = 64 * woff[k];
        for (int64_t i = 0; i < n; i++) {
            int c = 0;
            for (int64_t j = 1; j <= lv; j++) c += x[i] >= (uint64_t)s[j];
            cls[i] = (uint8_t)c;
            in[c]++;
        }
        for (int64_t c = 0; c <= lv; c++) need += in[c] * (w[c] + (c < lv - 1 ? c : lv - 1)); /* (levels 1 .. min(c, L - 1)) */
        if (need > 64 * nw[k]) return k + 1;
        for (int64_t l = 1; l < lv; l++)
            for (int64_t i = 0; i < n; i++)
                if (cls[i] >= l) gm_put_bits(o, bit++, cls[i] > l, 1);
        for (int64_t c = 0; c <= lv; c++)
            if (w[c])
                for (int64_t i = 0; i < n; i++)
                    if (cls[i] == c) {
                        gm_put_bits(o, bit, x[i] - (uint64_t)s[c], w[c]);
                        bit += w[c];
                    }
    }
    return 0;
}

/* host/pages.py _classes_as_patch: K CLASSES blocks (block k from bit at[k] of buf, n bytes: cnt[k]
 * values, lv[k] levels, shape[k], extra[k] bits after its first level) as the PATCH blocks they stage
 * as, written back to back into o (uint64, any contents; room for sum cnt (w_0 + 26) bits and a word;
 * the words past the last block's bits are left as they were): w_0 low bits a value (less the base,
 * mod 2^w_0), the first level as the bitmap, the values past class 0 (their high parts less 1) as
 * exceptions of w2[k] bits, e[k] of them, from bit boff[k]. Returns 0, or k + 1 for the first bad block
 * (gm_classes_r; the caller checked at + cnt + extra <= 8 n) */
int64_t gm_classes_patch(const unsigned char *buf, int64_t n, const int64_t *at, const int64_t *cnt, const int64_t *lv,
                         const int64_t *shape, const int64_t *extra, int64_t K, int64_t *w2, int64_t *e, int64_t *boff,
                         uint64_t *o) {
    int64_t bit = 0;
    gm_bitw bw = {o, 0, 0};
    for (int64_t k = 0; k < K; k++) {
        uint64_t r[128], f1[2]; /* f1: its first level, the values past class 0: the bitmap */
        const int64_t c = cnt[k], w0 = shape[k] & 15;
        if (c < 1 || c > 128 || lv[k] < 1 || lv[k] > 4 || gm_classes_bad(lv[k], shape[k], extra[k], c) ||
            gm_classes_r(buf, n, at[k], c, (int)lv[k], shape[k], extra[k], NULL, 0, r, f1, NULL))
            return k + 1;
        uint64_t top = 0; /* (a value past class 0 is at least 2^w_0: its high part at least 1) */
        for (int g = 0; g < 2; g++)
            for (uint64_t x = f1[g]; x; x &= x - 1) {
                const uint64_t h = (r[64 * g + __builtin_ctzll(x)] >> w0) - 1;
                top = h > top ? h : top;
            }
        const int64_t wx = top ? 64 - __builtin_clzll(top) : 0; /* (<= 25: values below 2^25 past the base) */
        boff[k] = bit;
        w2[k] = wx;
        e[k] = __builtin_popcountll(f1[0]) + __builtin_popcountll(f1[1]);
        if (w0) {
            const uint64_t m0 = (UINT64_C(1) << w0) - 1;
            for (int64_t i = 0; i < c; i++) gm_bitw_put(&bw, r[i] & m0, (int)w0);
        }
        for (int64_t i = 0; i < c; i += 32) /* the bitmap (f1: no bit past c), 32 bits at a time */
            gm_bitw_put(&bw, (f1[i >> 6] >> (i & 63)) & UINT64_C(0xFFFFFFFF), c - i < 32 ? (int)(c - i) : 32);
        if (wx)
            for (int g = 0; g < 2; g++)
                for (uint64_t x = f1[g]; x; x &= x - 1) gm_bitw_put(&bw, (r[64 * g + __builtin_ctzll(x)] >> w0) - 1, (int)wx);
        bit += c * w0 + c + e[k] * wx;
    }
    gm_bitw_end(&bw);
    return 0;
}

/* host/pages.py stage_blocks: K LEVELS blocks (block k from bit at[k] of buf, n bytes: cnt[k] values,
 * lv[k] levels, a tail of wt[k] bits, extra[k] bits after its first level) as PATCH blocks of no low
 * bits: e1[k], its first level's set bits, and their values less the base (its exceptions' high
 * parts) as 32-bit words from x[xoff[k]]. Returns 0, or k + 1 for the first bad block (gm_levels_ev;
 * or cnt, lv, wt out of range). The caller checks that every block's bits lie inside buf and that x
 * has room for cnt[k] words from xoff[k]. */
int64_t gm_stage_levels(const unsigned char *buf, int64_t n, const int64_t *at, const int64_t *cnt, const int64_t *lv,
                        const int64_t *wt, const int64_t *extra, int64_t K, int64_t *e1, const int64_t *xoff,
                        uint32_t *x) {
    for (int64_t k = 0; k < K; k++) {
        uint64_t bm[2];
        uint8_t ev[128];
        if (cnt[k] < 1 || cnt[k] > 128 || lv[k] < 1 || lv[k] > 4 || wt[k] < 0 || wt[k] > 3 ||
            gm_levels_ev(buf, n, at[k], cnt[k], (int)lv[k], (int)wt[k], extra[k], bm, ev, e1 + k, NULL))
            return k + 1;
        for (int64_t j = 0; j < e1[k]; j++) x[xoff[k] + j] = ev[j];
    }
    return 0;
}

/* host/pages.py _expand_positions: K sparse bitmaps (block k: cnt[k] <= 128 values, ones[k] entries of
 * pb[k] bits from bit at[k] of buf, n bytes: positions, ascending, for mode 0 (a PATCH block); for
 * mode 1 (a RUN block) positions after 0, for mode 2 (a RUN block) gaps, each start the one before
 * plus its gap plus 1; a RUN block's bit 0 set too) ORed into 32-bit words from w32[dst32[k]] (zero,
 * (cnt[k] + 31) / 32 of them). Returns 0, or k + 1 for the first bad block (entries that do not
 * ascend inside it, or out of range, or bits outside buf). */
int64_t gm_stage_bitmaps(const unsigned char *buf, int64_t n, const int64_t *at, const int64_t *ones, const int64_t *pb,
                         const int64_t *cnt, const int64_t *mode, int64_t K, const int64_t *dst32, uint32_t *w32) {
    for (int64_t k = 0; k < K; k++) {
        uint64_t bm[2];
        if (cnt[k] < 1 || cnt[k] > 128 || ones[k] < 0 || ones[k] > cnt[k] || pb[k] < 0 || pb[k] > 32 || mode[k] < 0 ||
            mode[k] > 2 || at[k] < 0 || at[k] > 8 * n - ones[k] * pb[k]) /* (its bits inside buf: checked again) */
            return k + 1;
        if (mode[k] == 2 ? gm_gap_bitmap(buf, n, at[k], ones[k], (int)pb[k], cnt[k], bm)
                         : gm_sparse_bitmap(buf, n, at[k], ones[k], (int)pb[k], cnt[k], mode[k] == 1, bm))
            return k + 1;
        uint32_t *o = w32 + dst32[k];
        for (int64_t g = 0; g < (cnt[k] + 31) >> 5; g++) o[g] |= (uint32_t)(bm[g >> 1] >> (32 * (g & 1)));
    }
    return 0;
}

/* host/pages.py stage_blocks: the aux words of K extended blocks (a RADIX block's the caller writes
 * again): block k of kind[k] (kind & 3: 1 PATCH, 2 RUN, with a bitmap of cnt[k] <= 128 bits in
 * 32-bit words from w32[at32[k]]), vw[k] words of values and bw[k] of bitmap: kind | 2 vw << 8 |
 * 2 (vw + bw) << 18 | AUX_CODES (32) where coded[k], and at bit 32 + 8 g the bitmap's set bits before
 * its 32-lane group g (g < 4). Returns 0, or k + 1 for the first block whose bitmap disagrees with
 * its fields (a PATCH block's e[k] set bits, a RUN block's nv[k] with bit 0 set). */
int64_t gm_stage_aux(const uint32_t *w32, int64_t n32, const int64_t *at32, const int64_t *kind, const int64_t *cnt,
                     const int64_t *e, const int64_t *nv, const int64_t *vw, const int64_t *bw, const int64_t *coded,
                     int64_t K, uint64_t *aux) {
    for (int64_t k = 0; k < K; k++) {
        const int64_t ka = kind[k] & 3, ng = ka ? (cnt[k] + 31) >> 5 : 0;
        uint64_t pre = 0;
        int64_t ones = 0;
        for (int g = 0; g < 4; g++) {
            pre |= (uint64_t)ones << (32 + 8 * g);
            if (g < ng) {
                const int64_t i = at32[k] + g < n32 ? at32[k] + g : n32 - 1;
                ones += __builtin_popcount(w32[i]);
            }
        }
        const int64_t i0 = at32[k] < n32 ? at32[k] : n32 - 1;
        if ((ka == 1 && ones != e[k]) || (ka == 2 && (ones != nv[k] || !(w32[i0] & 1)))) return k + 1;
        aux[k] = (uint64_t)kind[k] | (uint64_t)(2 * vw[k]) << 8 | (uint64_t)(2 * (vw[k] + bw[k])) << 18 |
                 (coded[k] ? UINT64_C(32) : 0) | pre;
    }
    return 0;
}

/* host/pages.py stage_blocks in C, all of it but a RADIX block's aux word (the caller writes it): the
 * same layout, words and checks as its NumPy body, which stays the definition. f: int64 [10, K], rows
 * kind (as stored: KIND_LEVELS 32), w, nv, w2, e, cnt, sp, mid, src_bit, dict (a block of codes); pay:
 * n bytes. Called twice: with words NULL it works out each block's layout (lay: int64 [2, K], its
 * values' word off and, for a LEVELS block, its first level's set bits e1) and returns the words
 * needed (the buffer holds one more, zero, word); then with words (zeroed, that size + 1) it fills
 * them and writes each block's meta word (off << 8 | AUX_FLAG | w) to meta. Returns -(k + 1) for the
 * first block it cannot stage: out of range, bits outside pay, or a bitmap, positions, levels or
 * exceptions that disagree with the fields (the caller then runs the NumPy body, which raises the
 * error that block deserves). Every check of the NumPy body is made, and none other. */
int64_t gm_stage_blocks(const unsigned char *pay, int64_t n, const int64_t *f, int64_t K, int64_t *lay, uint64_t *words,
                        int64_t nwords, int64_t *meta) {
    const int64_t *kind0 = f, *w0 = f + K, *nv0 = f + 2 * K, *w20 = f + 3 * K, *e0 = f + 4 * K, *cnt = f + 5 * K,
                  *sp0 = f + 6 * K, *mid = f + 7 * K, *src = f + 8 * K, *dict = f + 9 * K;
    int64_t *off = lay, *e1 = lay + K, total = 0;
    const int64_t nbits = 8 * n;
    for (int64_t k = 0; k < K; k++) {
        const int lv = kind0[k] == GM_KIND_STORED_LEVELS;
        const int64_t c = cnt[k], at = src[k];
        uint64_t bm[2];
        uint8_t ev[128];
        if (c < 0 || c > GM_MAX_VALUES / 64) return -(k + 1);
        if (lv) { /* LEVELS: a PATCH block of no low bits, its first level the bitmap (pages._expand_levels) */
            if (at < 0 || mid[k] < 0 || mid[k] > GM_MAX_VALUES || at > nbits - c - mid[k] || c < 1 || c > 128 ||
                sp0[k] < 1 || sp0[k] > 4 || w20[k] < 0 || w20[k] > 3)
                return -(k + 1);
            if (gm_levels_ev(pay, n, at, c, (int)sp0[k], (int)w20[k], mid[k], bm, ev, e1 + k, NULL)) return -(k + 1);
        }
        const int64_t kind = lv ? GM_KIND_PATCH : kind0[k], w = lv ? 0 : w0[k], nv = lv ? c : nv0[k];
        const int64_t e = lv ? e1[k] : e0[k], w2 = lv ? 0 : w20[k], sp = lv ? 0 : sp0[k];
        if (w < 0 || w > 64 || nv < 0 || nv > GM_MAX_VALUES / 64 || e < 0 || e > GM_MAX_VALUES / 64 || w2 < 0 || w2 > 1024) /* (a RADIX block's w2: R <= 256) */
            return -(k + 1);
        const int ext = kind != 0, aux = ext || dict[k], bmp = (kind & 3) != 0;
        const int64_t vw = (nv * w + 63) >> 6, bw = bmp ? (c + 63) >> 6 : 0;
        const int64_t ne = (kind & 3) == GM_KIND_PATCH ? e : 0, ew = (ne + 1) >> 1;
        const int64_t o = total + aux;
        total += aux + vw + bw + ew;
        if (total > GM_MAX_VALUES) return -(k + 1);
        if (words == NULL) {
            off[k] = o;
            continue;
        }
        if (off[k] != o || total >= nwords) return -(k + 1); /* (not the layout of the first call) */
        const int64_t vbits = nv * w, ones = (kind & 3) == GM_KIND_RUN ? nv - 1 : e;
        const int gaps = sp == 2, run = (kind & 3) == GM_KIND_RUN;
        const int64_t pb = gaps ? w2 : gm_pos_bits(c);
        const int64_t mbits = bmp ? (gaps ? ones * w2 : sp ? ones * pb : c) : 0; /* pages.bitmap_bits */
        const int64_t dense = sp ? 0 : mbits;
        /* the values, then a dense bitmap (pages.realign: each range checked, empty ones too) */
        if (at < 0 || vbits > GM_MAX_VALUES || at > nbits - vbits) return -(k + 1);
        if (vbits) gm_realign_one(pay, n, at, vbits, words + o);
        if (at + vbits > nbits - dense) return -(k + 1);
        if (dense) gm_realign_one(pay, n, at + vbits, dense, words + o + vw);
        uint32_t *w32 = (uint32_t *)words;
        if (sp && bmp) { /* a sparse bitmap (pages._expand_positions, in C: gm_stage_bitmaps) */
            const int64_t a2 = at + vbits;
            if (ones < 0 || pb < 0 || pb > 32 || c < 1 || c > 128 || ones > c || a2 > nbits - ones * pb) return -(k + 1);
            if (gaps ? gm_gap_bitmap(pay, n, a2, ones, (int)pb, c, bm) : gm_sparse_bitmap(pay, n, a2, ones, (int)pb, c, run, bm))
                return -(k + 1);
            for (int64_t g = 0; g < (c + 31) >> 5; g++) w32[2 * (o + vw) + g] |= (uint32_t)(bm[g >> 1] >> (32 * (g & 1)));
        }
        if (aux && !ext) words[o - 1] = 3; /* AUX_DICT */
        if (!ext) continue;
        const int64_t x32 = 2 * (o + vw + bw);
        if (lv)
            for (int64_t j = 0; j < e; j++) w32[x32 + j] = ev[j];
        else if (ne > 0) { /* exceptions: (high part - 1) in w2 bits, staged as the high part (gm_unpack_exceptions) */
            const int64_t a3 = at + vbits + mbits;
            if (w2 > 31 || ne > GM_MAX_VALUES / 32 || a3 > nbits - ne * w2) return -(k + 1);
            for (int64_t i = 0; i < ne; i++) {
                const uint64_t x = gm_bits_at(pay, n, a3 + i * w2, (int)w2) + 1;
                w32[x32 + i] = kind == GM_KIND_SIGNED ? (uint32_t)(int32_t)gm_unzigzag(x) : (uint32_t)x;
            }
        }
        /* the aux word (gm_stage_aux): kind, offsets, the bitmap's set bits before each 32-lane group */
        if (c > 128) return -(k + 1);
        const int64_t ka = kind & 3, ng = ka ? (c + 31) >> 5 : 0;
        uint64_t pre = 0;
        int64_t set = 0;
        for (int g = 0; g < 4; g++) {
            pre |= (uint64_t)set << (32 + 8 * g);
            if (g < ng) set += __builtin_popcount(w32[2 * (o + vw) + g]);
        }
        if ((ka == 1 && set != e) || (ka == 2 && (set != nv || !(w32[2 * (o + vw)] & 1)))) return -(k + 1);
        words[o - 1] = (uint64_t)kind | (uint64_t)(2 * vw) << 8 | (uint64_t)(2 * (vw + bw)) << 18 |
                       (dict[k] ? UINT64_C(32) : 0) | pre;
    }
    if (words != NULL)
        for (int64_t k = 0; k < K; k++) {
            const int lv = kind0[k] == GM_KIND_STORED_LEVELS;
            const int aux = (lv || kind0[k] != 0) || dict[k];
            meta[k] = (off[k] << 8) | (aux ? 0x80 : 0) | (lv ? 0 : w0[k]);
        }
    return total;
}

/* gm_blob's LEVELS block: its values to o (walked: as gm_levels_ev's, a BARE LEVELS block's size) */
static int gm_levels(const unsigned char *b, int64_t L, int64_t at, int64_t cnt, int lv, int wt, int64_t extra,
                     int64_t *walked, uint64_t base, uint64_t *o) {
#if GM_X512
    /* (a LEVELS block is a CLASSES block of no low bits before its tail: class c < lv the value c, the
     * tail's from lv; its levels and tail the same bits. With AVX-512 that path fills and expands) */
    if (gm_fast_x512()) return gm_classes_r(b, L, at, cnt, lv, (int64_t)wt << (4 * lv), extra, walked, base, o, NULL, NULL);
#endif
    uint64_t bm[2];
    uint8_t ev[128];
    int64_t e1, j = 0;
    if (gm_levels_ev(b, L, at, cnt, lv, wt, extra, bm, ev, &e1, walked)) return 1;
    for (int64_t k = 0; k < cnt; k++) o[k] = base;
    for (int g = 0; g < 2; g++)
        for (uint64_t x = bm[g]; x; x &= x - 1) o[64 * g + __builtin_ctzll(x)] = base + ev[j++];
    return 0;
}

/* one block's fields from fbuf[*pos, end) (tag t, cnt values, pred: where the page's previous block's
 * line ended, updated); 1 when they run past end or a varint is bad */
static inline int gm_fields(const unsigned char *fbuf, int64_t *pos, int64_t end, int64_t tag, int64_t cnt,
                            uint64_t *pred, uint64_t *spred, int64_t *base, int64_t *slope, int64_t *w, int64_t *nv,
                            int64_t *w2, int64_t *e) {
    uint64_t d, z = 0, x1 = 0, x2 = 0, x3 = 0;
    const int64_t t = gm_kind_tag((int)(tag & 0x7F));
    if (gm_is_classes(tag)) { /* CLASSES: base, the bits after the first level (as e), the shape's step (w2) */
        if (gm_varint(fbuf, pos, end, &d) || gm_varint(fbuf, pos, end, &x1) || gm_varint(fbuf, pos, end, &x2)) return 1;
        *base = (int64_t)(*pred + (uint64_t)gm_unzigzag(d));
        *pred = (uint64_t)*base;
        *slope = 0;
        *w = 1;
        *nv = cnt;
        *spred ^= x2;
        *w2 = gm_sat(*spred);
        *e = gm_sat(x1);
        return 0;
    }
    if (gm_is_bare(tag)) { /* BARE LEVELS: no fields; its base the prediction, e -1 (walked as it is decoded: gm_blob; gm_bare_extra) */
        *base = (int64_t)*pred;
        *slope = 0;
        *w = 1;
        *nv = cnt;
        *w2 = (tag - GM_TAG_LEVELS) & 3;
        *e = -1;
        return 0;
    }
    if (t == GM_KIND_LEVELS) { /* LEVELS: base, the bits after the first level (as e); w 1, w2 the tail's */
        if ((tag & 0x80) || gm_varint(fbuf, pos, end, &d) || gm_varint(fbuf, pos, end, &x1)) return 1;
        *base = (int64_t)(*pred + (uint64_t)gm_unzigzag(d));
        *pred = (uint64_t)*base;
        *slope = 0;
        *w = 1;
        *nv = cnt;
        *w2 = ((tag & 0x7F) - GM_TAG_LEVELS) & 3;
        *e = gm_sat(x1);
        return 0;
    }
    if ((tag & 0x7F) >= GM_TAG_FLAG) { /* FLAG: its base the prediction, w 0, w2 its one field (or 0) */
        if ((tag & 0x80) || ((tag & 0x7F) >= GM_TAG_FLAG_W2 && gm_varint(fbuf, pos, end, &x2))) return 1;
        *base = (int64_t)*pred;
        *slope = *w = 0;
        *nv = cnt;
        *w2 = gm_sat(x2);
        *e = gm_flag_e((int)(tag & 0x7F));
        return 0; /* (the line goes on: pred unchanged) */
    }
    if (gm_varint(fbuf, pos, end, &d)) return 1;
    if ((tag & 0x80) && gm_varint(fbuf, pos, end, &z)) return 1;
    /* PATCH, DELTA PATCH, DELTA SIGNED: w, w2, e; RUN: w, runs (with gaps: their width too); DELTA, RADIX: one */
    const int three = t == 65 || t == 68 || t == 69, gaps = (tag & 0x7F) == GM_TAG_RUN_GAPS;
    if (t >= 65 && gm_varint(fbuf, pos, end, &x1)) return 1;
    if ((three || t == 66) && gm_varint(fbuf, pos, end, &x2)) return 1;
    if ((three || gaps) && gm_varint(fbuf, pos, end, &x3)) return 1;
    uint64_t b = *pred + (uint64_t)gm_unzigzag(d);
    int64_t sl = gm_unzigzag(z);
    *base = (int64_t)b;
    *slope = sl;
    *w = t >= 65 ? (x1 > 64 ? 65 : (int64_t)x1) : t;
    *nv = t == 66 ? gm_sat(x2) : cnt;
    *w2 = three ? gm_sat(x2) : gaps ? gm_sat(x3) : 0;
    *e = three ? gm_sat(x3) : 0;
    if (t == 70) { /* RADIX: R; g and w from it */
        gm_radix_code(gm_sat(x1), e, w);
        *w2 = gm_sat(x1);
        if (*e) *nv = (cnt + *e - 1) / *e;
    }
    *pred = b + (uint64_t)sl * (uint64_t)(t == 70 ? cnt : *nv); /* (RADIX: the line at its values, not codes) */
    return 0;
}

int64_t gm_parse_fields(const unsigned char *fbuf, int64_t n, const int64_t *fstart, const int64_t *fend, int64_t P,
                        const int64_t *tag, const int64_t *cnt, const int64_t *page_of, int64_t K, int64_t *base,
                        int64_t *slope, int64_t *w, int64_t *nv, int64_t *w2, int64_t *e, const int64_t *kind_of_tag,
                        int64_t *kind, int64_t *sp, int64_t *mid) {
    int64_t k = 0;
    for (int64_t p = 0; p < P; p++) {
        int64_t pos = fstart[p], end = fend[p];
        if (pos < 0 || end < pos || end > n) return p + 1;
        uint64_t pred = 0, spred = 0;
        for (; k < K && page_of[k] == p; k++)
            if (gm_fields(fbuf, &pos, end, tag[k], cnt[k], &pred, &spred, base + k, slope + k, w + k, nv + k, w2 + k, e + k))
                return p + 1;
        if (pos != end) return p + 1;
    }
    if (k != K) return P + 1;
    if (kind_of_tag == NULL) return 0;
    /* host/pages.py parse_fields' blocks (pages.Blocks): the kind of each tag, a bitmap's form (sp: a
     * LEVELS block's levels), a LEVELS block's field in mid (e 0); -(k + 1) for the first block whose
     * fields are out of range (the same checks) */
    int64_t bad = 0;
    for (k = 0; k < K; k++) {
        const int64_t t = tag[k] & 0x7F, cl = gm_is_classes(tag[k]), kd = cl ? GM_KIND_STORED_CLASSES : kind_of_tag[t];
        const int64_t c = cnt[k], lv = kd == GM_KIND_STORED_LEVELS || cl;
        const int64_t levels = 1 + ((t - GM_TAG_LEVELS) >> 2);
        kind[k] = kd;
        sp[k] = lv ? levels : t == GM_TAG_RUN_GAPS ? 2 : t >= 71;
        mid[k] = lv ? e[k] : 0;
        if (lv) e[k] = 0;
        const int pt = (kd & 3) == GM_KIND_PATCH, rn = kd == GM_KIND_RUN, ext = kd != 0;
        if (!bad && ((pt && (w[k] > 63 || w2[k] > 31 || w[k] + w2[k] > 64 || e[k] < 1 || e[k] > c)) ||
                     (rn && (nv[k] < 1 || nv[k] > c)) || (ext && (w[k] > 64 || c > 128)) ||
                     (sp[k] == 2 && !lv && (w2[k] > gm_pos_bits(c) || nv[k] < 2)) || (kd == GM_KIND_RADIX && e[k] < 2) ||
                     (lv && !cl && mid[k] > (levels - 1 + w2[k]) * c) ||
                     (cl && gm_classes_bad(levels, w2[k], mid[k], c))))
            bad = k + 1;
    }
    return -bad;
}

/* A plain run of n values of width w (the line base + slope * j) from bit `bit` of the byte stream b (L
 * bytes; the caller checked the bits lie inside) to o: with AVX-512 (w 1 .. 25) straight from b
 * (gm_plain_x512), else realigned to whole words in scratch, then decoded there (scratch: n * w / 64 +
 * 3 words). */
static void gm_plain_bits(const unsigned char *b, int64_t L, int64_t bit, int w, uint64_t base, uint64_t slope,
                          int64_t n, uint64_t *scratch, uint64_t *o) {
#if GM_X512
    if (w >= 1 && w <= 25 && gm_fast_x512()) {
        gm_plain_x512(b, L, bit, w, base, slope, n, o);
        return;
    }
#endif
    int64_t nbits = n * w, nw = (nbits + 63) >> 6;
    if (nbits) gm_realign_one(b, L, bit, nbits, scratch);
    scratch[nw] = scratch[nw + 1] = 0; /* (the fast path's loads may reach past the last word) */
    decode_plain(scratch, nw + 2, 0, w, base, slope, 0, n, o, 0);
}

static inline uint32_t gm_u32(const unsigned char *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* A dictionary as gm_blob reads it: D entries, entry i being lo + the unsigned w-byte integer p[i] (w 2
 * or 4: host/native.py narrowed, a large table whose entries span less than 2^16 / 2^32, so that its
 * lookups stay in the caches), or the 64-bit p[i] (w 8, lo 0). D 0: no dictionary. */
typedef struct {
    const void *p;
    int64_t D;
    uint64_t lo;
    int w;
    int64_t A; /* entries readable from p: at least D (a stripe table's buffer: more) */
} gm_dict;

/* gm_finish's lookups from a table of entries of type T: see gm_finish */
#define GM_FINISH_T(NAME, T)                                                                                   \
    static inline int NAME(uint64_t *o, int64_t cnt, int delta, uint64_t b0, uint64_t s0, const T *dict,      \
                           uint64_t lo, int64_t D, int below) {                                              \
        uint64_t bad = 0;                                                                                     \
        if (below && !delta) {                                                                                \
            _Pragma("GCC unroll 4") for (int64_t i = 0; i < cnt; i++) o[i] = lo + (uint64_t)dict[o[i]];        \
            return 0;                                                                                         \
        }                                                                                                     \
        if (delta) {                                                                                          \
            uint64_t acc = b0 - s0;                                                                           \
            for (int64_t i = 0; i < cnt; i++) {                                                               \
                const uint64_t v = acc += o[i] + s0;                                                          \
                bad |= v >= (uint64_t)D;                                                                      \
                o[i] = lo + (uint64_t)dict[v < (uint64_t)D ? v : 0];                                          \
            }                                                                                                 \
        } else                                                                                                \
            for (int64_t i = 0; i < cnt; i++) {                                                               \
                const uint64_t v = o[i];                                                                      \
                bad |= v >= (uint64_t)D;                                                                      \
                o[i] = lo + (uint64_t)dict[v < (uint64_t)D ? v : 0];                                          \
            }                                                                                                 \
        return bad != 0;                                                                                      \
    }
GM_FINISH_T(gm_finish64, int64_t)
GM_FINISH_T(gm_finish32, uint32_t)
GM_FINISH_T(gm_finish16, uint16_t)

#if GM_X512
/* the largest of o[0, cnt) (0 where cnt is 0), 8 a vector */
__attribute__((target("avx512f"))) static uint64_t gm_max_x512(const uint64_t *o, int64_t cnt) {
    __m512i mx = _mm512_setzero_si512();
    int64_t i = 0;
    for (; i + 8 <= cnt; i += 8) mx = _mm512_max_epu64(mx, _mm512_loadu_si512((const void *)(o + i)));
    if (i < cnt) mx = _mm512_max_epu64(mx, _mm512_maskz_loadu_epi64((__mmask8)((1u << (cnt - i)) - 1), (const void *)(o + i)));
    return (uint64_t)_mm512_reduce_max_epu64(mx);
}

/* a DELTA block's line and prefix sum, 8 values a vector: o[i] becomes b0 + s0 i + o[0] + .. + o[i]
 * (mod 2^64, as gm_finish's scalar chain) by three shifted adds within the vector and its carry from
 * the one before; returns the largest of them, so that codes proven below their dictionary's size
 * are looked up with no check (the scalar chain checks each code as it adds it). A timestamp
 * column's DELTA PATCH blocks take it too (ML-1M's `ts`: 0.954 of the C time) */
__attribute__((target("avx512f"))) static uint64_t gm_prefix_x512(uint64_t *o, int64_t cnt, uint64_t b0, uint64_t s0) {
    const __m512i z = _mm512_setzero_si512(), step = _mm512_set1_epi64((long long)s0), last = _mm512_set1_epi64(7);
    __m512i carry = _mm512_set1_epi64((long long)(b0 - s0)), mx = z;
    for (int64_t i = 0; i < cnt; i += 8) {
        const __mmask8 m = cnt - i >= 8 ? (__mmask8)0xFF : (__mmask8)((1u << (cnt - i)) - 1);
        __m512i x = _mm512_maskz_add_epi64(m, _mm512_maskz_loadu_epi64(m, (const void *)(o + i)), step);
        x = _mm512_add_epi64(x, _mm512_alignr_epi64(x, z, 7)); /* (lane k: x[k] + x[k - 1]) */
        x = _mm512_add_epi64(x, _mm512_alignr_epi64(x, z, 6));
        x = _mm512_add_epi64(x, _mm512_alignr_epi64(x, z, 4));
        const __m512i sum = _mm512_permutexvar_epi64(last, x); /* (the vector's sum: lanes past cnt add 0) */
        x = _mm512_add_epi64(x, carry);
        carry = _mm512_add_epi64(carry, sum); /* (the chain from vector to vector: one add) */
        mx = _mm512_max_epu64(mx, x);
        _mm512_mask_storeu_epi64((void *)(o + i), m, x);
    }
    return (uint64_t)_mm512_reduce_max_epu64(mx);
}

/* A FOR block of codes (no slope, w 1 .. 25) into a dictionary (dc: 64-bit entries, or a narrowed
 * copy's 16 / 32-bit ones plus its least, gm_dict): gm_plain_x512's unpacking, 16 codes a vector,
 * looked up as they are unpacked (codes past the dictionary clamped to its last entry; scalar loads:
 * this machine's AVX-512 gathers were slower, 0.969 of their time) while their largest is kept, so
 * that the codes are not written out, read back for their largest (gm_max_x512), then again for
 * their lookups (C time of hash_items+replay's item_id, whose stripe tables are such blocks: 0.957).
 * Returns 1 where a code is not below D (o then holds the clamped codes' entries), as gm_finish.
 * base < D (the caller checked) */
#define GM_PLAIN_DICT_T(NAME, T)                                                                                \
    __attribute__((target("avx512f,avx512bw,avx512vbmi"))) static int NAME(                                   \
        const unsigned char *b, int64_t L, int64_t bit, int w, uint64_t base, int64_t n, const gm_dict *dc,    \
        uint64_t *o) {                                                                                          \
        const gm_w16 u = gm_w16_of(bit, w);                                                                     \
        /* (offsets past the base below 2^25; the entries from the base on: D - base of them, clamped to      \
         * that less one, at most 2^25 - 1 past it) */                                                          \
        const uint64_t room_d = (uint64_t)dc->D - base, lo = dc->lo;                                            \
        const __m512i lim =                                                                                     \
            _mm512_set1_epi32((int)(room_d - 1 < (UINT64_C(1) << 25) ? room_d - 1 : (UINT64_C(1) << 25) - 1)); \
        const T *e = (const T *)dc->p + base;                                                                   \
        __m512i mx = _mm512_setzero_si512();                                                                    \
        const unsigned char *p = b + (bit >> 3);                                                                \
        int64_t room = L - (bit >> 3);                                                                          \
        for (int64_t k = 0; k < n; k += 16, p += 2 * w, room -= 2 * w) {                                        \
            const int64_t left = n - k;                                                                         \
            const __mmask16 live = left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);            \
            const __m512i v = gm_w16_at(&u, p, room);                                                           \
            mx = _mm512_mask_max_epu32(mx, live, mx, v);                                                        \
            uint32_t t[16];                                                                                     \
            _mm512_storeu_si512((void *)t, _mm512_min_epu32(v, lim));                                           \
            if (left >= 16) {                                                                                   \
                _Pragma("GCC unroll 16") for (int i = 0; i < 16; i++) o[k + i] = lo + (uint64_t)e[t[i]];        \
            } else                                                                                              \
                for (int64_t i = 0; i < left; i++) o[k + i] = lo + (uint64_t)e[t[i]];                           \
        }                                                                                                       \
        return (uint64_t)_mm512_reduce_max_epu32(mx) >= room_d;                                                 \
    }
GM_PLAIN_DICT_T(gm_plain_dict64_x512, uint64_t)
GM_PLAIN_DICT_T(gm_plain_dict32_x512, uint32_t)
GM_PLAIN_DICT_T(gm_plain_dict16_x512, uint16_t)

/* gm_finish's lookups in a dictionary of at most 16 int64 entries (a stripe table of ratings, a few
 * action types), without delta: the table in two vectors, 8 codes looked up a permute (each lane's
 * low 4 bits; a code not below D, or in the tail's lanes past cnt, takes a lane of any entry, and a
 * code not below D makes it return 1, as gm_finish64's check) */
__attribute__((target("avx512f"))) static int gm_finish_x512(uint64_t *o, int64_t cnt, const int64_t *dict, int64_t D,
                                                             int below) {
    const __mmask8 m0 = (__mmask8)(D >= 8 ? 0xFF : (1u << D) - 1), m1 = (__mmask8)(D > 8 ? (1u << (D - 8)) - 1 : 0);
    const __m512i t0 = _mm512_maskz_loadu_epi64(m0, dict), t1 = _mm512_maskz_loadu_epi64(m1, dict + 8),
                  lim = _mm512_set1_epi64(D);
    __mmask8 bad = 0;
    int64_t i = 0;
    for (; i + 8 <= cnt; i += 8) {
        const __m512i c = _mm512_loadu_si512((const void *)(o + i));
        bad |= _mm512_cmpge_epu64_mask(c, lim);
        _mm512_storeu_si512((void *)(o + i), _mm512_permutex2var_epi64(t0, c, t1));
    }
    if (i < cnt) {
        const __mmask8 m = (__mmask8)((1u << (cnt - i)) - 1);
        const __m512i c = _mm512_maskz_loadu_epi64(m, (const void *)(o + i));
        bad |= _mm512_mask_cmpge_epu64_mask(m, c, lim);
        _mm512_mask_storeu_epi64((void *)(o + i), m, _mm512_permutex2var_epi64(t0, c, t1));
    }
    return !below && bad != 0;
}
#endif

/* gm_blob's last pass over a block's cnt values in o: with delta, o[i] becomes b0 + s0 i + o[0] + ..
 * + o[i] (a prefix sum on the line); with a dictionary (dc->D > 0), each value (a code) the entry of
 * dc it indexes. One pass for both, no branch per value: a code not below D reads entry 0 and makes
 * it return 1 (the blob is bad; o is left partly written). Called with delta or D > 0. below: the
 * block's fields prove every code below D (gm_below), so that the lookup needs no check. */
static inline int gm_finish(uint64_t *o, int64_t cnt, int delta, uint64_t b0, uint64_t s0, const gm_dict *dc,
                            int below) {
    if (!dc->D) {
#if GM_X512
        if (gm_fast_x512()) {
            gm_prefix_x512(o, cnt, b0, s0);
            return 0;
        }
#endif
        uint64_t acc = b0 - s0; /* (the line's step is added with each value: one add on the chain) */
        for (int64_t i = 0; i < cnt; i++) o[i] = acc += o[i] + s0;
        return 0;
    }
#if GM_X512
    /* (codes whose fields prove nothing, a PATCH or RUN block's: proven below D by their largest, 8 a
     * vector, where that holds; the lookups then check nothing) */
    if (!below && !delta && dc->D > 16 && gm_fast_x512()) below = gm_max_x512(o, cnt) < (uint64_t)dc->D;
    /* (a DELTA block's codes, delta-coded where a table lists its values in their first order: the
     * prefix sum in vectors, then the lookups, unchecked where the largest is below D) */
    if (delta && gm_fast_x512()) {
        below = gm_prefix_x512(o, cnt, b0, s0) < (uint64_t)dc->D;
        delta = 0;
    }
#endif
    if (dc->w == 2) return gm_finish16(o, cnt, delta, b0, s0, (const uint16_t *)dc->p, dc->lo, dc->D, below);
    if (dc->w == 4) return gm_finish32(o, cnt, delta, b0, s0, (const uint32_t *)dc->p, dc->lo, dc->D, below);
#if GM_X512
    if (!delta && dc->D <= 16 && gm_fast_x512()) return gm_finish_x512(o, cnt, (const int64_t *)dc->p, dc->D, below);
#endif
    return gm_finish64(o, cnt, delta, b0, s0, (const int64_t *)dc->p, 0, dc->D, below);
}

/* entries [v, v + n) of dc to o (0 < n, v + n <= D: checked by the caller) */
static inline void gm_copy_entries(uint64_t *o, uint64_t v, int64_t n, const gm_dict *dc) {
    if (dc->w == 8) memcpy(o, (const uint64_t *)dc->p + v, 8 * (size_t)n);
    else if (dc->w == 4)
        for (int64_t i = 0; i < n; i++) o[i] = dc->lo + ((const uint32_t *)dc->p)[v + i];
    else
        for (int64_t i = 0; i < n; i++) o[i] = dc->lo + ((const uint16_t *)dc->p)[v + i];
}

/* gm_runs' exception positions: a bitmap's set bits, in order, to pos (returns how many) */
static inline int64_t gm_set_bits(const uint64_t *bm, uint32_t *pos) {
    int64_t r = 0;
    for (int g = 0; g < 2; g++)
        for (uint64_t m = bm[g]; m; m &= m - 1) pos[r++] = (uint32_t)(64 * g + __builtin_ctzll(m));
    return r;
}

/* 1 unless the e >= 1 positions of a sparse bitmap ascend below cnt (gm_sparse_bitmap's check) */
static inline int gm_unordered(const uint32_t *pos, int64_t e, int64_t cnt) {
    uint32_t bad = pos[e - 1] >= (uint64_t)cnt;
    for (int64_t r = 1; r < e; r++) bad |= pos[r] <= pos[r - 1];
    return bad != 0;
}

/* A DELTA PATCH / DELTA SIGNED block of codes with no low bits (w 0) whose line steps by 1: code i
 * is b0 + i + the block's exceptions at positions <= i (gm_finish's prefix sum), so between two
 * exceptions the codes step by one, and each such run is a copy of the dictionary's entries: no
 * zeros written, summed and looked up one by one. A stripe's codes into its table that lists its
 * items in their first order are such runs (a user replaying their items: runs of about 8 between
 * jumps). pos: the e exceptions' positions (ascending, below cnt: checked), exception r (XR: its
 * w2 bits at bit xat + r w2 of b, R bytes readable) plus one, zigzagged where sgn, its step past
 * the line's. Returns 1 where a code is not below dc->D, as gm_finish (o then partly written): a
 * run of n codes from v holds one exactly where v > D - n (its codes below D do not wrap). */
#define GM_RUNS_BODY(COPY, XR)                                                                                 \
    const uint64_t D = (uint64_t)dc->D;                                                                       \
    uint64_t v = b0; /* the code at q, the run's first position */                                           \
    int64_t q = 0;                                                                                            \
    for (int64_t r = 0; r <= e; r++) {                                                                        \
        const int64_t p = r < e ? pos[r] : cnt, n = p - q; /* (r e: the block's end) */                       \
        if (n) {                                                                                              \
            if ((uint64_t)n > D || v > D - (uint64_t)n) return 1;                                             \
            COPY;                                                                                             \
        }                                                                                                     \
        if (r == e) break;                                                                                    \
        const uint64_t x = (uint64_t)(XR) + 1;                                                                \
        v += (uint64_t)n + (sgn ? (uint64_t)gm_unzigzag(x) : x);                                              \
        q = p;                                                                                                \
    }                                                                                                         \
    return 0;

static int gm_runs(uint64_t *o, int64_t cnt, const uint32_t *pos, int64_t e, const unsigned char *b, int64_t R,
                   int64_t xat, int w2, int sgn, uint64_t b0, const gm_dict *dc) {
    GM_RUNS_BODY(gm_copy_entries(o + q, v, n, dc), gm_bits_at(b, R, xat + r * w2, w2))
}

#if GM_X512
/* gm_runs_x512's copy of a run of n entries from e to o: at most 16 as 16 entries, two unmasked loads
 * and stores where `whole` (the block and the entries readable reach that far: the runs after it
 * overwrite what lies past it), else masked (memcpy's call costs more than a run's copy) */
__attribute__((target("avx512f"))) static inline void gm_copy_x512(uint64_t *o, const uint64_t *e, int64_t n,
                                                                   int whole) {
    if (n <= 16 && whole) {
        _mm512_storeu_si512((void *)o, _mm512_loadu_si512((const void *)e));
        _mm512_storeu_si512((void *)(o + 8), _mm512_loadu_si512((const void *)(e + 8)));
        return;
    }
    int64_t i = 0;
    for (; n - i > 16; i += 8) _mm512_storeu_si512((void *)(o + i), _mm512_loadu_si512((const void *)(e + i)));
    const int64_t left = n - i; /* (1 .. 16: two masked moves, no branch on it) */
    const __mmask8 k0 = (__mmask8)(0xFFu >> (8 - (left < 8 ? left : 8))), k1 = (__mmask8)(0xFFu >> (left > 8 ? 16 - left : 8));
    _mm512_mask_storeu_epi64((void *)(o + i), k0, _mm512_maskz_loadu_epi64(k0, (const void *)(e + i)));
    _mm512_mask_storeu_epi64((void *)(o + i + 8), k1, _mm512_maskz_loadu_epi64(k1, (const void *)(e + i + 8)));
}

/* n values of w bits (1 .. 25) from bit `bit` of b (L bytes readable) to o (uint32, room for n rounded
 * up to 16), 16 a vector (gm_w16): a block's exceptions and their positions */
static inline __attribute__((always_inline, target("avx512f,avx512bw,avx512vbmi"))) void
gm_unpack32_x512(const unsigned char *b, int64_t L, int64_t bit, int w, int64_t n, uint32_t *o) {
    const gm_w16 u = gm_w16_of(bit, w);
    const unsigned char *p = b + (bit >> 3);
    int64_t room = L - (bit >> 3);
    for (int64_t k = 0; k < n; k += 16, p += 2 * w, room -= 2 * w) _mm512_storeu_si512((void *)(o + k), gm_w16_at(&u, p, room));
}

/* gm_runs with AVX-512 for a dictionary of 64-bit entries (a stripe table decoded in the cache): the
 * exceptions' positions (a sparse bitmap's pb bits each at bit pat, checked ascending below cnt: 2
 * where not; or bm's set bits) and values unpacked 16 a vector before the runs (not each read on its
 * own between two copies: 0.981 of the C time), then each run copied (gm_copy_x512) */
__attribute__((target("avx512f,avx512bw,avx512vbmi"))) static int gm_runs_x512(uint64_t *o, int64_t cnt, const unsigned char *b,
                                                                                int64_t R, int64_t pat, int pb, const uint64_t *bm,
                                                                                int64_t e, int64_t xat, int w2, int sgn, uint64_t b0,
                                                                                const gm_dict *dc) {
    uint32_t pos[128 + 16], xs[128 + 16];
    if (!bm) {
        if (pb) gm_unpack32_x512(b, R, pat, pb, e, pos);
        else memset(pos, 0, sizeof pos);
        if (gm_unordered(pos, e, cnt)) return 2;
    } else
        gm_set_bits(bm, pos);
    if (w2 >= 1 && w2 <= 25) gm_unpack32_x512(b, R, xat, w2, e, xs);
    else
        for (int64_t r = 0; r < e; r++) xs[r] = (uint32_t)gm_bits_at(b, R, xat + r * w2, w2);
    const uint64_t *t = (const uint64_t *)dc->p, A = (uint64_t)dc->A;
    GM_RUNS_BODY(gm_copy_x512(o + q, t + v, n, q + 16 <= cnt && v + 16 <= A), xs[r])
}
#endif

/* 1 where every value of a block lies in [lo, lo + span) with lo + span <= D (its codes need no check) */
static inline int gm_below(uint64_t lo, uint64_t span, int64_t D) {
    return lo <= (uint64_t)D && span <= (uint64_t)D - lo;
}

/* host/pages.py decode_blobs: whole format-3 blobs straight to values, one pass per blob, no staged
 * form. gm_blob decodes one blob of L bytes and `count` values in blocks of bs to out; with D > 0 its
 * values are codes into dict[0, D), replaced by the entries they index. It makes every check of
 * host/pages.py decode_blob: tags, anchors, each page's fields exactly its blocks' varints, PATCH /
 * RUN fields in range, the payload inside its bounds, a PATCH block's bitmap of e bits, a RUN block's
 * of nv bits with bit 0 set; and a code below D. Returns 0 or a GM_BLOB_* reason. scratch: at least
 * max(bs, 128) + 3 words. R >= L: the bytes readable from b (the rest of the caller's buffer), so
 * that a value's 8-byte load near the blob's end needs no byte-by-byte path (the bits it takes past
 * the blob are masked off; every bit used is checked to lie inside the blob). */
enum { GM_BLOB_OK, GM_BLOB_SHORT, GM_BLOB_TAG, GM_BLOB_ANCHORS, GM_BLOB_FIELDS, GM_BLOB_RANGE, GM_BLOB_PAYLOAD,
       GM_BLOB_BITMAP, GM_BLOB_CODE, GM_BLOB_DICT_EXT, GM_BLOB_EXT_BIG, GM_BLOB_TAGGED };

static int gm_blob(const unsigned char *b, int64_t L, int64_t R, int64_t count, int64_t bs, const gm_dict *dict,
                   uint64_t *scratch, uint64_t *out) {
    const int64_t D = dict->D;
    const int64_t nb = (count + bs - 1) / bs, npg = (nb + 15) / 16, head = nb + (npg > 1 ? 8 * npg : 0);
    if (L < head) return GM_BLOB_SHORT;
    if (!nb) return L ? GM_BLOB_FIELDS : GM_BLOB_OK; /* (no values: no bytes) */
    int ext = 0;
    int64_t plain_bits = 0;
    for (int64_t j = 0; j < nb; j++) {
        const int t = b[j] & 0x7F;
        if ((t > GM_TAG_LAST || (t >= GM_TAG_FLAG && (b[j] & 0x80))) && !gm_is_classes(b[j]) && !gm_is_bare(b[j]))
            return GM_BLOB_TAG;
        if (gm_is_bare(b[j]) && nb != 1) return GM_BLOB_FIELDS; /* (only as its blob's one block) */
        if (t >= 65) ext = 1;
        else plain_bits += (j + 1 < nb ? bs : count - j * bs) * t;
    }
    if (D && ext)
        for (int64_t j = 0; j < nb; j++) /* codes: any block kind but RADIX */
            if (gm_kind_tag(b[j] & 0x7F) == 70) return GM_BLOB_DICT_EXT;
    if (ext && bs > 128) return GM_BLOB_EXT_BIG; /* extended blocks only in tiers of blocks <= AUX_MAX_BLOCK */
    /* pay: the payload's first byte (one page with PATCH / RUN blocks: after its fields); limit: the bit
     * the payload must end by; [fpos, fend): the fields of the page at hand */
    int64_t pay = nb, limit = 8 * L, fpos = nb, fend = L;
    if (npg > 1) {
        pay = head;
        fpos = gm_u32(b + nb);
        if (fpos < pay || fpos > L) return GM_BLOB_ANCHORS;
        limit = 8 * fpos;
    } else if (!ext) {
        fpos = pay + ((plain_bits + 7) >> 3);
        if (fpos > L) return GM_BLOB_SHORT;
        limit = 8 * fpos;
    }
    int64_t P = 0; /* payload bits of the blocks before */
    for (int64_t p = 0; p < npg; p++) {
        const int64_t j0 = 16 * p, j1 = j0 + 16 < nb ? j0 + 16 : nb;
        if (npg > 1) {
            fpos = gm_u32(b + nb + 8 * p);
            fend = p + 1 < npg ? gm_u32(b + nb + 8 * (p + 1)) : L;
            if (fend < fpos || fend > L || gm_u32(b + nb + 8 * p + 4) != (uint64_t)P) return GM_BLOB_ANCHORS;
        }
        int64_t base[16], slope[16], w[16], nv[16], w2[16], e[16];
        uint64_t pred = 0, spred = 0;
        for (int64_t j = j0; j < j1; j++) {
            const int64_t cnt = j + 1 < nb ? bs : count - j * bs, k = j - j0;
            if (gm_fields(b, &fpos, fend, b[j], cnt, &pred, &spred, base + k, slope + k, w + k, nv + k, w2 + k, e + k))
                return GM_BLOB_FIELDS;
        }
        if (npg == 1 && ext) pay = fpos; /* its payload follows its fields */
        else if (fpos != fend) return GM_BLOB_FIELDS;
        for (int64_t j = j0; j < j1; j++) {
            const int64_t cnt = j + 1 < nb ? bs : count - j * bs, k = j - j0, t = gm_kind_tag(b[j] & 0x7F);
            const int sparse = (b[j] & 0x7F) >= 71, gaps = (b[j] & 0x7F) == GM_TAG_RUN_GAPS;
            const int64_t W = w[k], N = nv[k], E = e[k], W2 = w2[k];
            /* DELTA, DELTA PATCH, DELTA SIGNED: prefix-summed offsets; DELTA SIGNED: exceptions zigzagged */
            const int patch = t == 65 || t == 68 || t == 69, delta = t >= 67 && t <= 69, sgn = t == 69, radix = t == 70;
            if ((patch && (W2 > 31 || W + W2 > 64 || E < 1 || E > cnt || W > 63)) || (t == 66 && (N < 1 || N > cnt)) ||
                (t >= 65 && (W > 64 || cnt > 128)) || (radix && E < 2))
                return GM_BLOB_RANGE;
            const int pb = cnt > 1 ? 64 - __builtin_clzll((uint64_t)(cnt - 1)) : 0; /* a position's bits */
            if (gaps && (W2 > pb || N < 2)) return GM_BLOB_RANGE;
            const int64_t mbits = patch || t == 66 ? (sparse ? (patch ? E : N - 1) * (gaps ? W2 : pb) : cnt) : 0;
            const int64_t at = 8 * pay + P, bits = N * W + mbits + (patch ? E * W2 : 0);
            if (at + bits > limit) return GM_BLOB_PAYLOAD;
            uint64_t *o = out + j * bs;
            const uint64_t bv = delta ? 0 : (uint64_t)base[k], sl = delta ? 0 : (uint64_t)slope[k];
            if (gm_is_classes(b[j])) { /* CLASSES: each value its class's start and low bits past the base */
                const int64_t lvc = 1 + (((b[j] & 0x7F) - GM_TAG_LEVELS) >> 2), bits = cnt + E;
                if (cnt > 128 || gm_classes_bad(lvc, W2, E, cnt)) return GM_BLOB_RANGE;
                if (at + bits > limit) return GM_BLOB_PAYLOAD;
                uint64_t top = 0;
                if (gm_classes_r(b, R, at, cnt, (int)lvc, W2, E, NULL, (uint64_t)base[k], o, NULL, D ? &top : NULL))
                    return GM_BLOB_BITMAP;
                P += bits;
                int64_t cw[6], cst[7]; /* (its values: below the tail's end; all of them at most top where that
                                        * end does not wrap) */
                gm_classes_shape((int)lvc, W2, cw, cst);
                const uint64_t b0 = (uint64_t)base[k], end0 = (uint64_t)cst[lvc + 1];
                if (D && gm_finish(o, cnt, 0, 0, 0, dict,
                                   gm_below(b0, end0, D) || (b0 <= ~end0 && top < (uint64_t)D)))
                    return GM_BLOB_CODE;
                continue;
            }
            if (t == GM_KIND_LEVELS) {
                const int64_t lvl = 1 + (((b[j] & 0x7F) - GM_TAG_LEVELS) >> 2); /* (its values: below lv + 2^wt) */
                int64_t ex = E; /* (its field, the bits after the first level; BARE: walked from its levels as
                                 * they are decoded, bounded by the blob's end) */
                const int bare = gm_is_bare(b[j]);
                if (bare) {
                    if (at + cnt > limit) return GM_BLOB_PAYLOAD;
                    if (gm_levels(b, R, at, cnt, (int)lvl, (int)W2, limit - at - cnt, &ex, (uint64_t)base[k], o))
                        return GM_BLOB_PAYLOAD;
                } else {
                    if (ex > (lvl - 1 + W2) * cnt) return GM_BLOB_RANGE;
                    if (at + cnt + ex > limit) return GM_BLOB_PAYLOAD;
                    if (gm_levels(b, R, at, cnt, (int)lvl, (int)W2, ex, NULL, (uint64_t)base[k], o)) return GM_BLOB_BITMAP;
                }
                P += cnt + ex;
                if (D && gm_finish(o, cnt, 0, 0, 0, dict,
                                   W2 < 62 && gm_below((uint64_t)base[k], (uint64_t)lvl + (UINT64_C(1) << W2), D)))
                    return GM_BLOB_CODE;
                continue;
            }
#if GM_X512
            if (t < 65 && !sl && W >= 1 && W <= 25 && D && bv < (uint64_t)D && gm_fast_x512()) {
                /* (a FOR block of codes: unpacked and looked up in one pass) */
                if (dict->w == 8   ? gm_plain_dict64_x512(b, R, at, (int)W, bv, cnt, dict, o)
                    : dict->w == 4 ? gm_plain_dict32_x512(b, R, at, (int)W, bv, cnt, dict, o)
                                   : gm_plain_dict16_x512(b, R, at, (int)W, bv, cnt, dict, o))
                    return GM_BLOB_CODE;
                P += bits;
                continue;
            }
#endif
            if (t < 65 || t == 67) {
                gm_plain_bits(b, R, at, (int)W, bv, sl, cnt, scratch, o);
            } else if (radix) { /* RADIX: its N codes, then each value's digit */
                uint64_t codes[128];
                gm_plain_bits(b, R, at, (int)W, 0, 0, N, scratch, codes);
#if GM_X512
                if (gm_fast_x512() && E <= 10 && W2 >= 3 && W2 <= 256)
                    gm_radix_x512(codes, (uint64_t)W2, E, bv, sl, cnt, o);
                else
#endif
                    gm_radix_expand(codes, 0, (uint64_t)W2, E, bv, sl, 0, cnt, o);
            } else if (patch && delta && !W && D && slope[k] == 1) { /* codes in runs: gm_runs */
#if GM_X512
                if (dict->w == 8 && gm_fast_x512()) {
                    uint64_t bm[2];
                    if (!sparse) {
                        gm_bits128(b, R, at, cnt, bm);
                        if (__builtin_popcountll(bm[0]) + __builtin_popcountll(bm[1]) != E) return GM_BLOB_BITMAP;
                    }
                    const int r = gm_runs_x512(o, cnt, b, R, at, pb, sparse ? NULL : bm, E, at + mbits, (int)W2, sgn,
                                               (uint64_t)base[k], dict);
                    if (r) return r == 2 ? GM_BLOB_BITMAP : GM_BLOB_CODE;
                    P += bits;
                    continue;
                }
#endif
                uint32_t pos[128]; /* (the exceptions' positions: a sparse bitmap's as stored, then checked;
                                    * a bitmap's by its set bits) */
                if (sparse) {
                    for (int64_t r = 0; r < E; r++) pos[r] = (uint32_t)gm_bits_at(b, R, at + r * pb, pb);
                    if (gm_unordered(pos, E, cnt)) return GM_BLOB_BITMAP;
                } else {
                    uint64_t bm[2];
                    gm_bits128(b, R, at, cnt, bm);
                    if (__builtin_popcountll(bm[0]) + __builtin_popcountll(bm[1]) != E) return GM_BLOB_BITMAP;
                    gm_set_bits(bm, pos);
                }
                if (gm_runs(o, cnt, pos, E, b, R, at + mbits, (int)W2, sgn, (uint64_t)base[k], dict)) return GM_BLOB_CODE;
                P += bits;
                continue;
            } else {
                uint64_t bm[2] = {0, 0}; /* the bitmap: cnt <= 128 bits */
                const int64_t bm_at = at + N * W;
                if (gaps) {
                    if (gm_gap_bitmap(b, R, bm_at, N - 1, (int)W2, cnt, bm)) return GM_BLOB_BITMAP;
                } else if (sparse) {
                    if (gm_sparse_bitmap(b, R, bm_at, patch ? E : N - 1, pb, cnt, !patch, bm)) return GM_BLOB_BITMAP;
                } else {
                    gm_bits128(b, R, bm_at, cnt, bm);
                }
                const int64_t ones = __builtin_popcountll(bm[0]) + __builtin_popcountll(bm[1]);
                if (patch) { /* PATCH: low bits, then each exception at its bitmap bit */
                    if (ones != E) return GM_BLOB_BITMAP;
                    gm_plain_bits(b, R, at, (int)W, bv, sl, cnt, scratch, o);
                    int64_t r = 0;
                    for (int g = 0; g < 2; g++)
                        for (uint64_t m = bm[g]; m; m &= m - 1, r++) {
                            const uint64_t x = gm_bits_at(b, R, bm_at + mbits + r * W2, (int)W2) + 1;
                            o[64 * g + __builtin_ctzll(m)] += (sgn ? (uint64_t)gm_unzigzag(x) : x) << W;
                        }
                } else { /* RUN: the runs, then value i is run rank(i + 1) - 1 */
                    if (ones != N || !(bm[0] & 1)) return GM_BLOB_BITMAP;
                    uint64_t runs[128];
                    gm_plain_bits(b, R, at, (int)W, bv, sl, N, scratch, runs);
                    int64_t r = -1;
                    for (int64_t i = 0; i < cnt; i++) {
                        r += (bm[i >> 6] >> (i & 63)) & 1;
                        o[i] = runs[r];
                    }
                }
            }
            P += bits;
            /* (a FOR block's codes: below its base + 2^w) */
            if ((delta || D) && gm_finish(o, cnt, delta, (uint64_t)base[k], (uint64_t)slope[k], dict,
                                          t < 65 && !sl && W < 62 && gm_below(bv, UINT64_C(1) << W, D)))
                return GM_BLOB_CODE;
        }
    }
    return GM_BLOB_OK;
}

/* One blob of gm_decode_blobs: bytes [off, off + L) of buf (n bytes), cnt values to
 * o, codes into dc (dc->D 0: none); tag >= 0: a blob of one block whose tag is tag, not its first byte
 * (host/pages.py move_tags): copied after it into vbuf (nv bytes: at least the longest such blob + 9,
 * zeroed past it) and decoded there; a BARE LEVELS block so tagged is decoded where it lies instead. Returns 0 or a
 * GM_BLOB_* reason. */
static int gm_one_blob(const unsigned char *buf, int64_t n, int64_t off, int64_t L, int64_t cnt, int64_t bs,
                       const gm_dict *dc, int64_t tag, unsigned char *vbuf, int64_t nv, uint64_t *scratch, uint64_t *o) {
    if (off < 0 || L < 0 || off > n - L || cnt < 0 || bs < 1 || cnt > GM_MAX_VALUES) return GM_BLOB_SHORT;
    if (tag < 0) return gm_blob(buf + off, L, n - off, cnt, bs, dc, scratch, o);
    if (cnt > bs || tag > 255) return GM_BLOB_TAGGED;
    if (gm_is_bare(tag) && cnt >= 1 && bs <= 128) {
        /* a BARE LEVELS block (a short history's one block, its tag in the index): decoded in place, as
         * gm_blob decodes it after its tag (its payload from the blob's first bit, its base 0, no field),
         * with no copy and no parse */
        const int64_t lvl = 1 + (((tag & 0x7F) - GM_TAG_LEVELS) >> 2), w2 = (tag - GM_TAG_LEVELS) & 3;
        int64_t ex;
        if (cnt > 8 * L || gm_levels(buf + off, n - off, 0, cnt, (int)lvl, (int)w2, 8 * L - cnt, &ex, 0, o))
            return GM_BLOB_PAYLOAD;
        return dc->D && gm_finish(o, cnt, 0, 0, 0, dc, gm_below(0, (uint64_t)lvl + (UINT64_C(1) << w2), dc->D))
                   ? GM_BLOB_CODE
                   : GM_BLOB_OK;
    }
    if (L + 9 > nv) return GM_BLOB_SHORT;
    vbuf[0] = (unsigned char)tag; /* [tag][its bytes], then zeros: the blob's last loads read them */
    memcpy(vbuf + 1, buf + off, (size_t)L);
    memset(vbuf + 1 + L, 0, 8);
    return gm_blob(vbuf, L + 1, L + 9, cnt, bs, dc, scratch, o);
}

/* host/native.py decode_blobs: blob s, bytes [boff[s], + blen[s]) of buf (n bytes), count[s] values to out[dst[s] ...]
 * (nout values). Its dictionary, where dlen (not NULL) has dlen[s] > 0: dicts[dstart[s] ...][0, dlen[s]), of the nd
 * entries of dicts (NULL: none), each dw bytes: 8 (int64), or 2 / 4 (unsigned, each entry dlo + it: gm_dict). tags
 * (NULL: none) tags[s] >= 0: a blob of one block whose tag is tags[s] (gm_one_blob); tags[s] == GM_CONST_TAG: no
 * blob but a constant stripe's count[s] copies of the value boff[s] (its dictionary and table not read, their ranges
 * still checked; host/pages.py CONST_TAG: a plan's constant stripes among its blobs, host/reader.py _plan3). tab
 * (NULL: none) tab[s] >= 0: a
 * stripe table instead (DESIGN §1 "Stripe tables"), table t = tab[s] of the T, whose own blob is bytes [toff[t], +
 * tlen[t]) of tbuf (tn bytes) of tcnt[t] entries, itself codes into dicts[tdstart[t] ...][0, tdlen[t]) where tdlen[t] >
 * 0 (a table of codes into its segment dictionary) or values. A table's entries are decoded into a buffer of the
 * largest tcnt words (a few KB, in the core's cache) just before the blob, and its codes looked up there: no table is
 * written out whole and read again; a table named by consecutive blobs is decoded once.
 * Every position is checked first, nothing written: -1 where one is outside its array (why[0]: GM_ARG_*), -2 where
 * the buffers cannot be allocated. Then 0, or s + 1 for the first bad blob (why[0]: its GM_BLOB_* reason, why[1]: 1
 * where it was its table that is bad; the blobs before it are written). */
enum { GM_ARG_OUT = 1, GM_ARG_DICT, GM_ARG_TABLE, GM_ARG_TABLE_DICT };
#define GM_CONST_TAG (-2)
int64_t gm_decode_blobs(const unsigned char *buf, int64_t n, const int64_t *boff, const int64_t *blen,
                        const int64_t *count, const int64_t *dst, int64_t S, int64_t bs, const void *dicts, int64_t nd,
                        int64_t dw, uint64_t dlo, const int64_t *dstart, const int64_t *dlen, const int64_t *tags,
                        const int64_t *tab, const unsigned char *tbuf, int64_t tn, const int64_t *toff, const int64_t *tlen,
                        const int64_t *tcnt, const int64_t *tdstart, const int64_t *tdlen, int64_t T, uint64_t *out,
                        int64_t nout, int64_t *why) {
    int64_t longest = -1, most = 0; /* (the longest blob whose tag is given; the most entries of a table) */
    if (!dicts) nd = 0;
    for (int64_t s = 0; s < S; s++) { /* (no sum that can wrap) */
        if (count[s] < 0 || dst[s] < 0 || dst[s] > nout - count[s]) return why[0] = GM_ARG_OUT, -1;
        const int64_t D = dlen ? dlen[s] : 0;
        if (D < 0 || (D > 0 && (dstart[s] < 0 || dstart[s] > nd - D))) return why[0] = GM_ARG_DICT, -1;
        if (tab && tab[s] >= T) return why[0] = GM_ARG_TABLE, -1;
        if (tags && tags[s] >= 0 && blen[s] > longest) longest = blen[s] < n ? blen[s] : n;
    }
    for (int64_t t = 0; t < T; t++) {
        if (tdlen[t] < 0 || (tdlen[t] > 0 && (tdstart[t] < 0 || tdstart[t] > nd - tdlen[t])))
            return why[0] = GM_ARG_TABLE_DICT, -1;
        if (tcnt[t] > most) most = tcnt[t] < GM_MAX_VALUES ? tcnt[t] : GM_MAX_VALUES;
    }
    const int64_t ns = (bs > 128 ? bs : 128) + 3, nv = longest >= 0 ? longest + 9 : 0, ntv = most + 16;
    /* (16 entries past the largest table: a run of codes is copied 16 entries at a time, gm_runs_x512) */
    uint64_t *scratch = bs <= GM_MAX_VALUES ? malloc(8 * (size_t)ns) : NULL, *tv = T ? malloc(8 * (size_t)ntv) : NULL;
    unsigned char *vbuf = nv ? malloc((size_t)nv) : NULL;
    int64_t bad = 0;
    if (!scratch || (T && !tv) || (nv && !vbuf)) {
        bad = -2;
        goto done;
    }
    int64_t last = -1; /* (the table in tv) */
    for (int64_t s = 0; s < S; s++) {
        if (tags && tags[s] == GM_CONST_TAG) { /* (a constant stripe: its value, count times) */
            uint64_t *o = out + dst[s];
            const uint64_t v = (uint64_t)boff[s];
            for (int64_t i = 0; i < count[s]; i++) o[i] = v;
            continue;
        }
        const int64_t t = tab ? tab[s] : -1;
        int r;
        gm_dict dc;
        if (t >= 0) {
            if (tcnt[t] < 1 || tcnt[t] > ntv) {
                why[0] = GM_BLOB_SHORT, why[1] = 1, bad = s + 1;
                goto done;
            }
            if (t != last) {
                const int64_t D = tdlen[t];
                const gm_dict td = {D ? (const unsigned char *)dicts + dw * tdstart[t] : NULL, D, dw == 8 ? 0 : dlo, (int)dw, D};
                last = -1;
                r = gm_one_blob(tbuf, tn, toff[t], tlen[t], tcnt[t], bs, &td, -1, vbuf, nv, scratch, tv);
                if (r) {
                    why[0] = r, why[1] = 1, bad = s + 1;
                    goto done;
                }
                last = t;
            }
            dc = (gm_dict){tv, tcnt[t], 0, 8, ntv};
        } else {
            const int64_t D = dlen ? dlen[s] : 0;
            dc = (gm_dict){D ? (const unsigned char *)dicts + dw * dstart[s] : NULL, D, dw == 8 ? 0 : dlo, (int)dw, D};
        }
        r = gm_one_blob(buf, n, boff[s], blen[s], count[s], bs, &dc, tags ? tags[s] : -1, vbuf, nv, scratch, out + dst[s]);
        if (r) {
            why[0] = r, why[1] = 0, bad = s + 1;
            goto done;
        }
    }
done:
    free(scratch), free(tv), free(vbuf);
    return bad;
}

/* host/pages.py dictionary_heads: the heads of K dictionaries, dictionary k's stored bytes (head and
 * blob) buf[starts[k], + lens[k]) of buf (n bytes), its head in forms[k] (1: entries and the blob's
 * bytes as two u64; 2: entries as the shortest varint of at most 5 bytes, inside its bytes): its
 * entries (1 .. max_entries) and head bytes (at least one byte of blob after them). Returns 0, or
 * k + 1 for the first bad one (the caller names what is wrong). */
int64_t gm_dict_heads(const unsigned char *buf, int64_t n, const int64_t *starts, const int64_t *lens,
                      const int64_t *forms, int64_t K, int64_t max_entries, int64_t *entries, int64_t *head) {
    for (int64_t k = 0; k < K; k++) {
        const int64_t at = starts[k], len = lens[k];
        if (at < 0 || len < 2 || len > n - at) return k + 1;
        const unsigned char *b = buf + at;
        uint64_t v = 0;
        int64_t h = 0;
        if (forms[k] == 1) {
            if (len < 16 || load64(b + 8) != (uint64_t)(len - 16)) return k + 1;
            v = load64(b);
            h = 16;
        } else if (forms[k] == 2) {
            for (int64_t i = 0; i < 5 && i < len; i++) {
                v |= (uint64_t)(b[i] & 0x7F) << (7 * i);
                if (b[i] < 0x80) {
                    h = i + 1;
                    break;
                }
            }
            const int64_t bits = v ? 64 - __builtin_clzll(v) : 0;
            if (!h || h != (bits > 7 ? (bits + 6) / 7 : 1)) return k + 1; /* unterminated, or not the shortest */
        } else
            return k + 1;
        if (v < 1 || v > (uint64_t)max_entries || len - h < 1) return k + 1;
        entries[k] = (int64_t)v;
        head[k] = h;
    }
    return 0;
}

/* host/codec.py bit_length: out[i] = the bit length of v[i] (0 for 0, 64 for values >= 2^63) */
void gm_bit_length(const uint64_t *v, int64_t n, int64_t *out) {
    for (int64_t i = 0; i < n; i++) out[i] = v[i] ? 64 - __builtin_clzll(v[i]) : 0;
}

/* host/ranges.py ranges: out = the concatenation of arange(starts[i], starts[i] + counts[i]) over
 * i < K, n values. Returns 0, or 1 (nothing written) when a count is negative or they do not sum
 * to n. Values wrap as int64 (as NumPy's). */
int64_t gm_ranges(const int64_t *starts, const int64_t *counts, int64_t K, int64_t *out, int64_t n) {
    int64_t t = 0;
    for (int64_t i = 0; i < K; i++) {
        if (counts[i] < 0 || counts[i] > n - t) return 1;
        t += counts[i];
    }
    if (t != n) return 1;
    int64_t o = 0;
    for (int64_t i = 0; i < K; i++) {
        const uint64_t s = (uint64_t)starts[i];
        for (int64_t j = 0; j < counts[i]; j++) out[o++] = (int64_t)(s + (uint64_t)j);
    }
    return 0;
}

/* host/pages.py fields_end: for each i, where the nvar[i] varints from byte start[i] of buf end (one past
 * the nvar[i]-th byte under 0x80 from there; start[i] for none), to fe[i]. Returns 0, or i + 1 for the
 * first i whose varints are not all found before limit[i] (<= n) or whose start is outside buf. */
int64_t gm_fields_end(const unsigned char *buf, int64_t n, const int64_t *start, const int64_t *limit,
                      const int64_t *nvar, int64_t K, int64_t *fe) {
    for (int64_t i = 0; i < K; i++) {
        int64_t pos = start[i], left = nvar[i];
        const int64_t lim = limit[i] < n ? limit[i] : n;
        if (left <= 0) {
            if (pos > limit[i]) return i + 1;
            fe[i] = pos;
            continue;
        }
        if (pos < 0) pos = 0; /* (as NumPy's search: the bytes from the buffer's start) */
        for (; pos < lim && left; pos++) left -= buf[pos] < 0x80;
        if (left) return i + 1;
        fe[i] = pos;
    }
    return 0;
}

/* host/ranges.py copy_ranges: dst[dst_at[i] .. + lens[i]) = src[src_at[i] .. + lens[i]) for i < K,
 * elements of `size` bytes; a memmove per range (src and dst may be one array). Every range is
 * checked first against src's ns and dst's nd elements (an empty range copies nothing, wherever it
 * starts): returns 0, or i + 1 for the first range outside them, having copied nothing. The caller
 * (host/native.py) refuses object arrays. */
int64_t gm_copy_ranges(const unsigned char *src, int64_t ns, const int64_t *src_at, unsigned char *dst, int64_t nd,
                       const int64_t *dst_at, const int64_t *lens, int64_t K, int64_t size) {
    for (int64_t i = 0; i < K; i++) {
        const int64_t n = lens[i];
        if (n < 0 || (n > 0 && (src_at[i] < 0 || dst_at[i] < 0 || src_at[i] > ns - n || dst_at[i] > nd - n))) return i + 1;
    }
    for (int64_t i = 0; i < K; i++)
        if (lens[i] > 0) memmove(dst + dst_at[i] * size, src + src_at[i] * size, (size_t)(lens[i] * size));
    return 0;
}

/* host/pages.py literal_tables: each stripe (sc[s] values of x, in order) parsed greedily into literals
 * and copies against its own literal stream. At value i: among the last 8 places where the m literals
 * x[i .. i + m) were seen as literals (newest first; those more than `window` literals back skipped),
 * the longest run of x from i equal to the literals from there (ties: the oldest) is a copy when it is
 * at least m long (its values are those literals), else x[i] is a new literal. idx[i]: the literal
 * (index in its stripe's literals) value i is; lit: the literals, back to back; nlit[s]: per stripe.
 * Returns the literals in all, or -1 when out of memory. The Python twin is pages._literal_tables. */
static uint64_t gram_hash(const int64_t *g, int64_t m) {
    uint64_t h = 0x243F6A8885A308D3ULL;
    for (int64_t t = 0; t < m; t++) { h = (h ^ (uint64_t)g[t]) * 0x9E3779B97F4A7C15ULL; h ^= h >> 29; }
    return h;
}

int64_t gm_literal_tables(const int64_t *x, const int64_t *sc, int64_t S, int64_t m, int64_t window,
                          int64_t *idx, int64_t *lit, int64_t *nlit) {
    int64_t most = 0, total = 0, at = 0;
    for (int64_t s = 0; s < S; s++) most = sc[s] > most ? sc[s] : most;
    int64_t cap = 16;
    while (cap < 2 * most) cap <<= 1;
    int64_t *head = malloc(sizeof(int64_t) * (size_t)cap), *gen = malloc(sizeof(int64_t) * (size_t)cap);
    int64_t *prev = malloc(sizeof(int64_t) * (size_t)(most > 0 ? most : 1));
    if (!head || !gen || !prev) { free(head); free(gen); free(prev); return -1; }
    for (int64_t k = 0; k < cap; k++) gen[k] = -1;
    uint64_t mask = (uint64_t)cap - 1;
    for (int64_t s = 0; s < S; s++) {
        const int64_t *v = x + at;
        int64_t n = sc[s], nl = 0, *L = lit + total, *o = idx + at;
        for (int64_t i = 0; i < n;) {
            int64_t best = 0, src = 0;
            if (i + m <= n) {
                uint64_t k = gram_hash(v + i, m) & mask;
                for (; gen[k] == s; k = (k + 1) & mask) {
                    int64_t p = head[k];
                    if (memcmp(L + p, v + i, sizeof(int64_t) * (size_t)m) == 0) {  /* this gram's places */
                        for (int tried = 0; p >= 0 && tried < 8; p = prev[p], tried++) {
                            if (nl - p > window) continue;
                            int64_t len = m;
                            while (i + len < n && p + len < nl && L[p + len] == v[i + len]) len++;
                            if (len >= best) { best = len; src = p; }
                        }
                        break;
                    }
                }
            }
            if (best >= m) {
                for (int64_t j = 0; j < best; j++) o[i + j] = src + j;
                i += best;
                continue;
            }
            L[nl] = v[i];
            o[i++] = nl++;
            if (nl >= m) {  /* the gram ending at the new literal: its place first in its chain */
                int64_t p = nl - m;
                uint64_t k = gram_hash(L + p, m) & mask;
                for (; gen[k] == s && memcmp(L + head[k], L + p, sizeof(int64_t) * (size_t)m) != 0; k = (k + 1) & mask) {}
                prev[p] = gen[k] == s ? head[k] : -1;
                gen[k] = s;
                head[k] = p;
            }
        }
        nlit[s] = nl;
        total += nl;
        at += n;
    }
    free(head); free(gen); free(prev);
    return total;
}

static struct PyModuleDef gm_module = {PyModuleDef_HEAD_INIT, "_native", "gpumat C block decoder (loaded with ctypes)", -1, NULL, NULL, 0, 0, 0};

PyMODINIT_FUNC PyInit__native(void) { return PyModule_Create(&gm_module); }
