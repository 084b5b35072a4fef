/* The lookup loops alone, on the bench's category codes (753,607 codes into item_id's segment
 * dictionary; gather_codes.py writes them and category's 212,106-entry table): scalar loads against
 * AVX-512 gathers, from the int64 table, its uint16 copy, and a 4,096-entry int64 table (codes mod
 * 3,706), block by block of 128 values as gm_finish does; the best of 30 runs, three times.
 * gcc -O3 -o /tmp/gather_bench docs/results/cpu-2026-12-04c/gather_bench.c && /tmp/gather_bench DIR */
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }
__attribute__((target("avx512f"))) static void g64(uint64_t *o, long n, const int64_t *t) {
    for (long i = 0; i + 8 <= n; i += 8)
        _mm512_storeu_si512(o + i, _mm512_i64gather_epi64(_mm512_loadu_si512(o + i), (const void *)t, 8));
}
__attribute__((target("avx512f"))) static void g16(uint64_t *o, long n, const uint16_t *t) {
    const __m512i m = _mm512_set1_epi64(0xFFFF);
    for (long i = 0; i + 8 <= n; i += 8) {
        __m256i v = _mm512_i64gather_epi32(_mm512_loadu_si512(o + i), (const void *)t, 2);
        _mm512_storeu_si512(o + i, _mm512_and_si512(_mm512_cvtepu32_epi64(v), m));
    }
}
static int64_t *load(const char *dir, const char *name, long *n) {
    char p[4096]; snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "rb"); if (!f) { perror(p); exit(1); }
    fseek(f, 0, SEEK_END); *n = ftell(f) / 8; rewind(f);
    int64_t *a = malloc(8 * *n); if (fread(a, 8, *n, f) != (size_t)*n) exit(1); fclose(f); return a;
}
int main(int argc, char **argv) {
    long n, D;
    int64_t *c = load(argc > 1 ? argv[1] : ".", "codes.bin", &n), *t64 = load(argc > 1 ? argv[1] : ".", "cdict.bin", &D);
    uint16_t *t16 = malloc(2 * D + 8);
    for (long i = 0; i < D; i++) t16[i] = (uint16_t)t64[i];
    int64_t *s64 = malloc(8 * 4096);
    for (int i = 0; i < 4096; i++) s64[i] = 7 * i;
    uint64_t *o = malloc(8 * n);
    for (int rep = 0; rep < 3; rep++) {
        double best[6] = {1e9, 1e9, 1e9, 1e9, 1e9, 1e9};
        for (int it = 0; it < 30; it++)
            for (int m = 0; m < 6; m++) {
                for (long i = 0; i < n; i++) o[i] = m >= 4 ? (uint64_t)(c[i] % 3706) : (uint64_t)c[i];
                double a = now();
                for (long b = 0; b < n; b += 128) {
                    long k = b + 128 < n ? 128 : n - b;
                    uint64_t *ob = o + b;
                    if (m == 0) for (long i = 0; i < k; i++) ob[i] = (uint64_t)t64[ob[i]];
                    else if (m == 1) g64(ob, k, t64);
                    else if (m == 2) for (long i = 0; i < k; i++) ob[i] = t16[ob[i]];
                    else if (m == 3) g16(ob, k, t16);
                    else if (m == 4) for (long i = 0; i < k; i++) ob[i] = (uint64_t)s64[ob[i]];
                    else g64(ob, k, s64);
                }
                double d = now() - a;
                if (d < best[m]) best[m] = d;
            }
        printf("int64 table: scalar %.3f gather %.3f | uint16 copy: scalar %.3f gather %.3f | 4,096 entries: scalar %.3f gather %.3f ms\n",
               1e3 * best[0], 1e3 * best[1], 1e3 * best[2], 1e3 * best[3], 1e3 * best[4], 1e3 * best[5]);
    }
    return (int)(o[3] & 1);
}
