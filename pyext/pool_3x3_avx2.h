/* Max pooling over 3x3 windows at stride 2 (overlapping pooling), compiled for AVX2 through a
 * target attribute, for pyext/pooling.pyx: the forward 8 float32 or 4 float64 outputs of a row per
 * step, and (below) the float32 backward without padding.
 *
 * The same comparisons as pooling.pyx's _max_row_3x3, in the same scan order: a cell replaces the
 * best so far only when it is greater (so ties keep the first cell, and a NaN never wins here),
 * and bad[i] turns NaN when a NaN or an infinity went by (v - v), which sends the caller back to
 * the cell-by-cell path. The baseline build (SSE2) does 4 float32 outputs per step with shuffles
 * and float64 one at a time. A row shorter than one step stays on
 * it; a longer row's last step overlaps the one before. cnncore_cpu_avx2() (cpu_features.h) says at run time whether this may be called;
 * elsewhere (MSVC, other architectures) it is 0 and the function does nothing.
 */
/* Most steps of 8 windows in a row of the AVX2 backward (its carry buffers are sized by it). */
#define CNNCORE_POOL_BACKWARD_MAX_STEPS 64

#include "cpu_features.h"

#if CNNCORE_X86_TARGETS

#include <immintrin.h>
#include <string.h>

/* Columns 2i, 2i + 1 and 2i + 2 of one window row r, for i = 0..7: reads r[0..16] only. */
static inline __attribute__((always_inline, target("avx2"))) void
cnncore_pool_columns(const float* r, __m256* a, __m256* b, __m256* c)
{
    __m256 v0 = _mm256_loadu_ps(r), v1 = _mm256_loadu_ps(r + 8);
    /* per 128-bit half: (r0 r2 r8 r10 | r4 r6 r12 r14), then the 64-bit pairs put in order */
    __m256 even = _mm256_shuffle_ps(v0, v1, _MM_SHUFFLE(2, 0, 2, 0));
    __m256 odd = _mm256_shuffle_ps(v0, v1, _MM_SHUFFLE(3, 1, 3, 1));
    even = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(even), _MM_SHUFFLE(3, 1, 2, 0)));
    odd = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(odd), _MM_SHUFFLE(3, 1, 2, 0)));
    *a = even;
    *b = odd;
    /* (r2 r4 .. r14, r16): even moved down a lane, r16 into the last */
    *c = _mm256_blend_ps(_mm256_permutevar8x32_ps(even, _mm256_setr_epi32(1, 2, 3, 4, 5, 6, 7, 7)),
                         _mm256_broadcast_ss(r + 16), 0x80);
}

/* Outputs i .. i + 7 of one output row: window i covers columns 2i .. 2i + 2 of rows r0, r1, r2.
 * Writes out, arg (the window index, 0..8) and bad there. */
static inline __attribute__((always_inline, target("avx2"))) void
cnncore_max_3x3_step(const float* r0, const float* r1, const float* r2, float* out, int* arg,
                     float* bad, Py_ssize_t i)
{
    const float* rows[3] = {r0 + 2 * i, r1 + 2 * i, r2 + 2 * i};
    __m256 best = _mm256_setzero_ps(), sum = _mm256_setzero_ps(), win = _mm256_setzero_ps();
    __m256 v[3], gt;
    int ky, kx;
    for (ky = 0; ky < 3; ky++) {
        cnncore_pool_columns(rows[ky], &v[0], &v[1], &v[2]);
        for (kx = 0; kx < 3; kx++) {
            if (ky == 0 && kx == 0) {
                best = v[0];
                sum = _mm256_sub_ps(best, best);
                continue;
            }
            gt = _mm256_cmp_ps(v[kx], best, _CMP_GT_OQ);
            win = _mm256_blendv_ps(win, _mm256_castsi256_ps(_mm256_set1_epi32(3 * ky + kx)), gt);
            best = _mm256_blendv_ps(best, v[kx], gt);
            sum = _mm256_add_ps(sum, _mm256_sub_ps(v[kx], v[kx]));
        }
    }
    _mm256_storeu_ps(out + i, best);
    _mm256_storeu_si256((__m256i*)(arg + i), _mm256_castps_si256(win));
    _mm256_storeu_ps(bad + i, sum);
}

/* Outputs 0 .. n - 1 of one output row, when n >= 8 (the last step overlaps the one before it and
 * writes the same values again); returns the number done: n, or 0 when n < 8. */
static __attribute__((target("avx2"))) Py_ssize_t
cnncore_max_row_3x3_avx2(const float* r0, const float* r1, const float* r2, float* out, int* arg,
                         float* bad, Py_ssize_t n)
{
    Py_ssize_t i;
    if (n < 8)
        return 0;
    for (i = 0; i + 8 <= n; i += 8)
        cnncore_max_3x3_step(r0, r1, r2, out, arg, bad, i);
    if (i < n)
        cnncore_max_3x3_step(r0, r1, r2, out, arg, bad, n - 8);
    return n;
}

/* float64: columns 2i, 2i + 1 and 2i + 2 of one window row r, for i = 0..3: reads r[0..8] only. */
static inline __attribute__((always_inline, target("avx2"))) void
cnncore_pool_columns_d(const double* r, __m256d* a, __m256d* b, __m256d* c)
{
    __m256d v0 = _mm256_loadu_pd(r), v1 = _mm256_loadu_pd(r + 4);
    /* (r0 r4 r2 r6) and (r1 r5 r3 r7), then the middle two swapped */
    __m256d even = _mm256_permute4x64_pd(_mm256_unpacklo_pd(v0, v1), _MM_SHUFFLE(3, 1, 2, 0));
    __m256d odd = _mm256_permute4x64_pd(_mm256_unpackhi_pd(v0, v1), _MM_SHUFFLE(3, 1, 2, 0));
    *a = even;
    *b = odd;
    /* (r2 r4 r6, r8) */
    *c = _mm256_blend_pd(_mm256_permute4x64_pd(even, _MM_SHUFFLE(3, 3, 2, 1)),
                         _mm256_broadcast_sd(r + 8), 0x8);
}

/* float64 outputs i .. i + 3, as cnncore_max_3x3_step; arg holds the window index as Py_ssize_t. */
static inline __attribute__((always_inline, target("avx2"))) void
cnncore_max_3x3_step_d(const double* r0, const double* r1, const double* r2, double* out,
                       Py_ssize_t* arg, double* bad, Py_ssize_t i)
{
    const double* rows[3] = {r0 + 2 * i, r1 + 2 * i, r2 + 2 * i};
    __m256d best = _mm256_setzero_pd(), sum = _mm256_setzero_pd(), win = _mm256_setzero_pd();
    __m256d v[3], gt;
    int ky, kx;
    for (ky = 0; ky < 3; ky++) {
        cnncore_pool_columns_d(rows[ky], &v[0], &v[1], &v[2]);
        for (kx = 0; kx < 3; kx++) {
            if (ky == 0 && kx == 0) {
                best = v[0];
                sum = _mm256_sub_pd(best, best);
                continue;
            }
            gt = _mm256_cmp_pd(v[kx], best, _CMP_GT_OQ);
            win = _mm256_blendv_pd(win, _mm256_castsi256_pd(_mm256_set1_epi64x(3 * ky + kx)), gt);
            best = _mm256_blendv_pd(best, v[kx], gt);
            sum = _mm256_add_pd(sum, _mm256_sub_pd(v[kx], v[kx]));
        }
    }
    _mm256_storeu_pd(out + i, best);
    _mm256_storeu_si256((__m256i*)(arg + i), _mm256_castpd_si256(win));
    _mm256_storeu_pd(bad + i, sum);
}

/* cnncore_max_row_3x3_avx2 for float64, 4 outputs a step: n, or 0 when n < 4. */
static __attribute__((target("avx2"))) Py_ssize_t
cnncore_max_row_3x3_avx2_d(const double* r0, const double* r1, const double* r2, double* out,
                           Py_ssize_t* arg, double* bad, Py_ssize_t n)
{
    Py_ssize_t i;
    if (n < 4)
        return 0;
    for (i = 0; i + 4 <= n; i += 4)
        cnncore_max_3x3_step_d(r0, r1, r2, out, arg, bad, i);
    if (i < n)
        cnncore_max_3x3_step_d(r0, r1, r2, out, arg, bad, n - 4);
    return n;
}

/* Max-pooling backward over 3x3 windows at stride 2, no padding, float32: one plane.
 *
 * Adding each window's gradient at its winner's offset ran at about 12 cycles a window (plus the
 * zeroing of dx). Here each dx row is built in registers from the window row(s) over it: for the
 * dx row at ky of window row oy, its even cells 2j take what window j - 1 routes to column 2 and
 * then what window j routes to column 0, its odd cells 2j + 1 what window j routes to column 1,
 * each as d & (arg == 3*ky + kx), 8 windows a step; the row shared with the next window row (ky = 2)
 * is kept split (even, odd) until that row adds its ky = 0 share, then interleaved and stored. These
 * are the scatter's additions in the scatter's order (a window that did not pick a cell adds +0,
 * which changes no sum: each starts from +0, so none is -0), so dx is the same to the bit. Every
 * cell of the plane is written once. The caller has checked arg (0..8; only its low 32 bits are
 * read). Rows of more than 8 * CNNCORE_POOL_BACKWARD_MAX_STEPS - 1 windows stay on
 * the scatter (the caller's work buffer is sized by it). */

/* The first count (0..8) lanes as a mask. */
static inline __attribute__((always_inline, target("avx2"))) __m256i
cnncore_pool_lanes(Py_ssize_t count)
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)count), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* One dx row's share from one window row (n windows, d and arg): even/odd cells of 8 * steps
 * columns pairs, added onto (even, odd) in place. */
static inline __attribute__((always_inline, target("avx2"))) void
cnncore_pool_backward_share(const float* d, const Py_ssize_t* arg, Py_ssize_t n, int k0,
                            float* even, float* odd, Py_ssize_t steps)
{
    const __m256i c0 = _mm256_set1_epi32(k0), c1 = _mm256_set1_epi32(k0 + 1);
    const __m256i c2 = _mm256_set1_epi32(k0 + 2);
    const __m256i down = _mm256_setr_epi32(7, 0, 1, 2, 3, 4, 5, 6);
    __m256 last2 = _mm256_setzero_ps();   /* the previous step's column-2 share, lane 7 of it */
    Py_ssize_t j, s, count;
    for (s = 0, j = 0; s < steps; s++, j += 8) {
        count = n - j < 0 ? 0 : (n - j < 8 ? n - j : 8);
        __m256i lanes = cnncore_pool_lanes(count);
        __m256i k_lo = _mm256_maskload_epi64((const long long*)(arg + j),
                                             _mm256_cvtepi32_epi64(_mm256_castsi256_si128(lanes)));
        __m256i k_hi = _mm256_maskload_epi64((const long long*)(arg + j + 4),
                                             _mm256_cvtepi32_epi64(_mm256_extracti128_si256(lanes, 1)));
        /* the low 32 bits of the 8 indices, in order (as the forward's column split) */
        __m256i k = _mm256_castps_si256(_mm256_shuffle_ps(_mm256_castsi256_ps(k_lo),
                                                          _mm256_castsi256_ps(k_hi), 0x88));
        k = _mm256_permute4x64_epi64(k, 0xD8);
        __m256 v = _mm256_maskload_ps(d + j, lanes);       /* 0 past the row's windows */
        __m256 v0 = _mm256_and_ps(v, _mm256_castsi256_ps(_mm256_cmpeq_epi32(k, c0)));
        __m256 v1 = _mm256_and_ps(v, _mm256_castsi256_ps(_mm256_cmpeq_epi32(k, c1)));
        __m256 v2 = _mm256_and_ps(v, _mm256_castsi256_ps(_mm256_cmpeq_epi32(k, c2)));
        /* window j - 1's column 2 lands on even cell j: v2 moved up a lane, the last step's in front */
        __m256 from_left = _mm256_blend_ps(_mm256_permutevar8x32_ps(v2, down),
                                           _mm256_permutevar8x32_ps(last2, down), 0x01);
        last2 = v2;
        __m256 e = _mm256_loadu_ps(even + j);
        e = _mm256_add_ps(_mm256_add_ps(e, from_left), v0);
        _mm256_storeu_ps(even + j, e);
        _mm256_storeu_ps(odd + j, _mm256_add_ps(_mm256_loadu_ps(odd + j), v1));
    }
}

/* dx row (W cells) = the interleaved even, odd cells of 8 * steps column pairs, 2 * 8 * steps >= W. */
static inline __attribute__((always_inline, target("avx2"))) void
cnncore_pool_backward_store(const float* even, const float* odd, Py_ssize_t steps, float* row,
                            Py_ssize_t W)
{
    Py_ssize_t s, c, left;
    for (s = 0, c = 0; s < steps; s++, c += 16) {
        __m256 e = _mm256_loadu_ps(even + 8 * s), o = _mm256_loadu_ps(odd + 8 * s);
        __m256 a = _mm256_unpacklo_ps(e, o), b = _mm256_unpackhi_ps(e, o);
        __m256 lo = _mm256_permute2f128_ps(a, b, 0x20), hi = _mm256_permute2f128_ps(a, b, 0x31);
        left = W - c;
        if (left >= 16) {
            _mm256_storeu_ps(row + c, lo);
            _mm256_storeu_ps(row + c + 8, hi);
        } else {
            _mm256_maskstore_ps(row + c, cnncore_pool_lanes(left < 8 ? left : 8), lo);
            if (left > 8)
                _mm256_maskstore_ps(row + c + 8, cnncore_pool_lanes(left - 8), hi);
        }
    }
}

/* dx (H x W) of one plane from dout and arg (out_h x n). work: 4 * 8 * steps floats, steps =
 * n / 8 + 1 <= CNNCORE_POOL_BACKWARD_MAX_STEPS. */
static __attribute__((target("avx2"))) void
cnncore_max_backward_3x3_avx2(const float* dout, const Py_ssize_t* arg, float* dx, Py_ssize_t H,
                              Py_ssize_t W, Py_ssize_t out_h, Py_ssize_t n, float* work)
{
    const Py_ssize_t steps = n / 8 + 1, len = 8 * steps;
    float* carry_even = work;
    float* carry_odd = work + len;
    float* even = work + 2 * len;
    float* odd = work + 3 * len;
    Py_ssize_t oy, r;
    memset(carry_even, 0, 2 * len * sizeof(float));
    for (oy = 0; oy < out_h; oy++) {
        const float* d = dout + oy * n;
        const Py_ssize_t* a = arg + oy * n;
        /* ky = 0: the row the window row above left in carry */
        cnncore_pool_backward_share(d, a, n, 0, carry_even, carry_odd, steps);
        cnncore_pool_backward_store(carry_even, carry_odd, steps, dx + 2 * oy * W, W);
        /* ky = 1: a row of its own */
        memset(even, 0, 2 * len * sizeof(float));
        cnncore_pool_backward_share(d, a, n, 3, even, odd, steps);
        cnncore_pool_backward_store(even, odd, steps, dx + (2 * oy + 1) * W, W);
        /* ky = 2: shared with the next window row */
        memset(carry_even, 0, 2 * len * sizeof(float));
        cnncore_pool_backward_share(d, a, n, 6, carry_even, carry_odd, steps);
    }
    cnncore_pool_backward_store(carry_even, carry_odd, steps, dx + 2 * out_h * W, W);
    for (r = 2 * out_h + 1; r < H; r++)
        memset(dx + r * W, 0, W * sizeof(float));
}

#else

static void cnncore_max_backward_3x3_avx2(const float* dout, const Py_ssize_t* arg, float* dx,
                                          Py_ssize_t H, Py_ssize_t W, Py_ssize_t out_h,
                                          Py_ssize_t n, float* work) {}

static Py_ssize_t cnncore_max_row_3x3_avx2_d(const double* r0, const double* r1, const double* r2,
                                             double* out, Py_ssize_t* arg, double* bad,
                                             Py_ssize_t n)
{
    return 0;
}

static Py_ssize_t cnncore_max_row_3x3_avx2(const float* r0, const float* r1, const float* r2,
                                           float* out, int* arg, float* bad, Py_ssize_t n)
{
    return 0;
}

#endif
