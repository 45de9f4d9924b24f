/* The inner loops of pyext/winograd.pyx, included there once per element type: WG_T is float or
 * double and WG_NAME(x) gives the function's name for that type.
 *
 * They are C for one reason: to tell the compiler that their many pointers never overlap
 * (restrict, and `omp simd` where the stores go through one pointer at run-time distances), so that
 * it vectorises the loops over tiles; with this many possibly-aliased pointers it does not try.
 * Without OpenMP the pragma is ignored and the loop runs as written.
 */
#include <string.h>

/* The 16 rows of a transform's output, xi = 0..15, each its own restrict pointer v0..v15. */
#ifndef CNNCORE_WG_ROWS
#define CNNCORE_WG_ROWS(v, xs) \
    WG_T* __restrict v##0 = (v);            WG_T* __restrict v##1 = (v) + (xs);      \
    WG_T* __restrict v##2 = (v) + 2 * (xs);  WG_T* __restrict v##3 = (v) + 3 * (xs);  \
    WG_T* __restrict v##4 = (v) + 4 * (xs);  WG_T* __restrict v##5 = (v) + 5 * (xs);  \
    WG_T* __restrict v##6 = (v) + 6 * (xs);  WG_T* __restrict v##7 = (v) + 7 * (xs);  \
    WG_T* __restrict v##8 = (v) + 8 * (xs);  WG_T* __restrict v##9 = (v) + 9 * (xs);  \
    WG_T* __restrict v##10 = (v) + 10 * (xs); WG_T* __restrict v##11 = (v) + 11 * (xs); \
    WG_T* __restrict v##12 = (v) + 12 * (xs); WG_T* __restrict v##13 = (v) + 13 * (xs); \
    WG_T* __restrict v##14 = (v) + 14 * (xs); WG_T* __restrict v##15 = (v) + 15 * (xs);
#endif

/* One tile row from the 4 patch lines' even columns e and odd columns o (line stride half):
 * v[xi*xs + tx] = (B^T d B)[xi] for the TW tiles of the row, xi = 4*row + column. */
static void WG_NAME(in_row)(const WG_T* __restrict e, const WG_T* __restrict o, Py_ssize_t half,
                            WG_T* __restrict v, Py_ssize_t xs, Py_ssize_t TW)
{
    const WG_T* __restrict e0 = e;
    const WG_T* __restrict e1 = e + half;
    const WG_T* __restrict e2 = e + 2 * half;
    const WG_T* __restrict e3 = e + 3 * half;
    const WG_T* __restrict o0 = o;
    const WG_T* __restrict o1 = o + half;
    const WG_T* __restrict o2 = o + 2 * half;
    const WG_T* __restrict o3 = o + 3 * half;
    CNNCORE_WG_ROWS(v, xs)
    Py_ssize_t tx;
    #pragma omp simd
    for (tx = 0; tx < TW; tx++) {
        /* B^T down the columns: row r of B^T d, at the tile's columns 0..3 */
        WG_T a00 = e0[tx] - e2[tx], a01 = o0[tx] - o2[tx], a02 = e0[tx + 1] - e2[tx + 1], a03 = o0[tx + 1] - o2[tx + 1];
        WG_T a10 = e1[tx] + e2[tx], a11 = o1[tx] + o2[tx], a12 = e1[tx + 1] + e2[tx + 1], a13 = o1[tx + 1] + o2[tx + 1];
        WG_T a20 = e2[tx] - e1[tx], a21 = o2[tx] - o1[tx], a22 = e2[tx + 1] - e1[tx + 1], a23 = o2[tx + 1] - o1[tx + 1];
        WG_T a30 = e1[tx] - e3[tx], a31 = o1[tx] - o3[tx], a32 = e1[tx + 1] - e3[tx + 1], a33 = o1[tx + 1] - o3[tx + 1];
        /* B across: columns 0..3 of (B^T d) B */
        v0[tx] = a00 - a02;  v1[tx] = a01 + a02;  v2[tx] = a02 - a01;  v3[tx] = a01 - a03;
        v4[tx] = a10 - a12;  v5[tx] = a11 + a12;  v6[tx] = a12 - a11;  v7[tx] = a11 - a13;
        v8[tx] = a20 - a22;  v9[tx] = a21 + a22;  v10[tx] = a22 - a21; v11[tx] = a21 - a23;
        v12[tx] = a30 - a32; v13[tx] = a31 + a32; v14[tx] = a32 - a31; v15[tx] = a31 - a33;
    }
}

/* in_row for a whole plane of TH tile rows (even and odd hold its 2*TH + 2 lines, stride half), in
 * AVX2 registers of WG_LANES tiles (8 float32, 4 float64). A float32 tile row of 7 (DeepConvNet's
 * 14x14 planes) gives `omp simd` one 4-wide vector and 3 tiles one by one; here it is one register
 * with a spare lane. A register's spare lanes write the next tile row's first tiles, which that row
 * then writes again, or past the plane's last tile row the first of the `after` tiles that follow
 * it in v (the caller writes them afterwards); where neither has room, the register goes through a
 * buffer. They also read up to 8 elements past the end of odd (the caller's scratch has them,
 * zeroed).
 * cnncore_cpu_avx2() (cpu_features.h) says at run time whether this may be called. */
#include "cpu_features.h"

#if CNNCORE_X86_TARGETS

#include <immintrin.h>

/* One AVX2 register: 8 floats or 4 doubles (8 doubles, two registers per value, spill). */
#define WG_LANES (32 / (Py_ssize_t)sizeof(WG_T))
typedef WG_T WG_NAME(vec) __attribute__((vector_size(32), aligned(sizeof(WG_T))));

static inline __attribute__((always_inline, target("avx2"))) void
WG_NAME(in_vector)(const WG_T* e, const WG_T* o, Py_ssize_t half, WG_T* v, Py_ssize_t xs)
{
    typedef WG_NAME(vec) vec;
    #define WG_AT(p, k) (*(const vec*)((p) + (k)))
    vec e0 = WG_AT(e, 0), e1 = WG_AT(e, half), e2 = WG_AT(e, 2 * half), e3 = WG_AT(e, 3 * half);
    vec f0 = WG_AT(e, 1), f1 = WG_AT(e, half + 1), f2 = WG_AT(e, 2 * half + 1), f3 = WG_AT(e, 3 * half + 1);
    vec o0 = WG_AT(o, 0), o1 = WG_AT(o, half), o2 = WG_AT(o, 2 * half), o3 = WG_AT(o, 3 * half);
    vec p0 = WG_AT(o, 1), p1 = WG_AT(o, half + 1), p2 = WG_AT(o, 2 * half + 1), p3 = WG_AT(o, 3 * half + 1);
    #undef WG_AT
    /* as in in_row: columns 0..3 of the patch are e, o, f, p (even, odd, next even, next odd) */
    vec a00 = e0 - e2, a01 = o0 - o2, a02 = f0 - f2, a03 = p0 - p2;
    vec a10 = e1 + e2, a11 = o1 + o2, a12 = f1 + f2, a13 = p1 + p2;
    vec a20 = e2 - e1, a21 = o2 - o1, a22 = f2 - f1, a23 = p2 - p1;
    vec a30 = e1 - e3, a31 = o1 - o3, a32 = f1 - f3, a33 = p1 - p3;
    *(vec*)(v + 0 * xs) = a00 - a02;  *(vec*)(v + 1 * xs) = a01 + a02;
    *(vec*)(v + 2 * xs) = a02 - a01;  *(vec*)(v + 3 * xs) = a01 - a03;
    *(vec*)(v + 4 * xs) = a10 - a12;  *(vec*)(v + 5 * xs) = a11 + a12;
    *(vec*)(v + 6 * xs) = a12 - a11;  *(vec*)(v + 7 * xs) = a11 - a13;
    *(vec*)(v + 8 * xs) = a20 - a22;  *(vec*)(v + 9 * xs) = a21 + a22;
    *(vec*)(v + 10 * xs) = a22 - a21; *(vec*)(v + 11 * xs) = a21 - a23;
    *(vec*)(v + 12 * xs) = a30 - a32; *(vec*)(v + 13 * xs) = a31 + a32;
    *(vec*)(v + 14 * xs) = a32 - a31; *(vec*)(v + 15 * xs) = a31 - a33;
}

__attribute__((target("avx2"))) static void
WG_NAME(in_plane_avx2)(const WG_T* e, const WG_T* o, Py_ssize_t half, WG_T* v, Py_ssize_t xs,
                       Py_ssize_t TH, Py_ssize_t TW, Py_ssize_t after)
{
    WG_T buf[16 * 8];
    Py_ssize_t ty, tx, lanes, spare, xi;
    for (ty = 0; ty < TH; ty++) {
        const WG_T* er = e + 2 * ty * half;
        const WG_T* orow = o + 2 * ty * half;
        WG_T* vr = v + ty * TW;
        for (tx = 0; tx < TW; tx += WG_LANES) {
            lanes = TW - tx < WG_LANES ? TW - tx : WG_LANES;
            spare = WG_LANES - lanes;
            if (spare <= (TH - 1 - ty) * TW + after) {
                WG_NAME(in_vector)(er + tx, orow + tx, half, vr + tx, xs);
            } else {
                WG_NAME(in_vector)(er + tx, orow + tx, half, buf, WG_LANES);
                for (xi = 0; xi < 16; xi++)
                    memcpy(vr + xi * xs + tx, buf + WG_LANES * xi, lanes * sizeof(WG_T));
            }
        }
    }
}

/* One zero-padded line split by column parity, in registers: even[j] = padded[2j] and
 * odd[j] = padded[2j + 1] for j < half rounded up to whole registers (the caller's lines have room),
 * padded being src[0..w) with pad zeros before it and zeros after it. Each register pair comes from
 * two masked loads of src (lanes outside src[0..w) read as 0 and touch no memory, so the address
 * may lie before src) and one deinterleave. The scalar split, branching at both edges of 14-element
 * lines, took more time than the transform it feeds. */
static inline __attribute__((always_inline, target("avx2"))) void
WG_NAME(split_line_avx2)(const WG_T* src, Py_ssize_t w, Py_ssize_t pad, WG_T* even, WG_T* odd,
                         Py_ssize_t half)
{
    typedef WG_NAME(vec) vec;
    const vec zero = {0};
    typedef __typeof__(zero <= zero) ivec;
    ivec lane;
    typedef __typeof__(lane[0]) elem;   /* int32 for float, int64 for double */
    vec a, b;
    Py_ssize_t j, x, k;
    for (k = 0; k < WG_LANES; k++)
        lane[k] = k;
    for (j = 0; j < half; j += WG_LANES) {
        x = 2 * j - pad;   /* src's index of padded[2j] */
        ivec pa = lane + (elem)x, pb = lane + (elem)(x + WG_LANES);
        ivec ma = (pa >= 0) & (pa < (elem)w), mb = (pb >= 0) & (pb < (elem)w);
        if (sizeof(WG_T) == 4) {
            __m256 fa = _mm256_maskload_ps((const float*)src + x, (__m256i)ma);
            __m256 fb = _mm256_maskload_ps((const float*)src + x + WG_LANES, (__m256i)mb);
            /* per 128-bit half: a0 a2 b0 b2 | a4 a6 b4 b6, then its 64-bit pairs in order 0 2 1 3 */
            a = (vec)_mm256_permute4x64_pd((__m256d)_mm256_shuffle_ps(fa, fb, 0x88), 0xD8);
            b = (vec)_mm256_permute4x64_pd((__m256d)_mm256_shuffle_ps(fa, fb, 0xDD), 0xD8);
        } else {
            __m256d da = _mm256_maskload_pd((const double*)src + x, (__m256i)ma);
            __m256d db = _mm256_maskload_pd((const double*)src + x + WG_LANES, (__m256i)mb);
            /* a0 b0 a2 b2, then in order 0 2 1 3 */
            a = (vec)_mm256_permute4x64_pd(_mm256_unpacklo_pd(da, db), 0xD8);
            b = (vec)_mm256_permute4x64_pd(_mm256_unpackhi_pd(da, db), 0xD8);
        }
        *(vec*)(even + j) = a;
        *(vec*)(odd + j) = b;
    }
}

/* The zero-padded plane's first PH lines split by column parity (as pyext/winograd.pyx's
 * _split_plane) into lines stride apart, a multiple of 8 at least half: even[r*stride + j] =
 * padded[r, 2j], odd[r*stride + j] = padded[r, 2j + 1]. */
__attribute__((target("avx2"))) static void
WG_NAME(split_plane_avx2)(const WG_T* plane, Py_ssize_t H, Py_ssize_t W, Py_ssize_t pad,
                          WG_T* even, WG_T* odd, Py_ssize_t PH, Py_ssize_t half, Py_ssize_t stride)
{
    Py_ssize_t r, iy;
    for (r = 0; r < PH; r++) {
        iy = r - pad;
        if (iy < 0 || iy >= H) {
            memset(even + r * stride, 0, stride * sizeof(WG_T));
            memset(odd + r * stride, 0, stride * sizeof(WG_T));
        } else {
            WG_NAME(split_line_avx2)(plane + iy * W, W, pad, even + r * stride, odd + r * stride,
                                     half);
        }
    }
}

/* The first count (1..WG_LANES) lanes at p; the others read as 0 and are never touched, so that a
 * tile row's last register neither reads past M nor writes past the output line. */
static inline __attribute__((always_inline, target("avx2"))) WG_NAME(vec)
WG_NAME(load_first)(const WG_T* p, Py_ssize_t count)
{
    if (count == WG_LANES)
        return *(const WG_NAME(vec)*)p;
    if (sizeof(WG_T) == 4)
        return (WG_NAME(vec))_mm256_maskload_ps((const float*)p, _mm256_cmpgt_epi32(
            _mm256_set1_epi32((int)count), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)));
    return (WG_NAME(vec))_mm256_maskload_pd((const double*)p, _mm256_cmpgt_epi64(
        _mm256_set1_epi64x(count), _mm256_setr_epi64x(0, 1, 2, 3)));
}

static inline __attribute__((always_inline, target("avx2"))) void
WG_NAME(store_first)(WG_T* p, WG_NAME(vec) v, Py_ssize_t count)
{
    if (count >= WG_LANES)
        *(WG_NAME(vec)*)p = v;
    else if (sizeof(WG_T) == 4)
        _mm256_maskstore_ps((float*)p, _mm256_cmpgt_epi32(_mm256_set1_epi32((int)count),
                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)), (__m256)v);
    else
        _mm256_maskstore_pd((double*)p, _mm256_cmpgt_epi64(_mm256_set1_epi64x(count),
                            _mm256_setr_epi64x(0, 1, 2, 3)), (__m256d)v);
}

/* line[0..count) = left[0], right[0], left[1], right[1], ... (count <= 2 * WG_LANES). */
static inline __attribute__((always_inline, target("avx2"))) void
WG_NAME(store_pairs)(WG_T* line, WG_NAME(vec) left, WG_NAME(vec) right, Py_ssize_t count)
{
    WG_NAME(vec) lo, hi;
    if (sizeof(WG_T) == 4) {
        __m256 a = _mm256_unpacklo_ps((__m256)left, (__m256)right);   /* l0 r0 l1 r1 | l4 r4 l5 r5 */
        __m256 b = _mm256_unpackhi_ps((__m256)left, (__m256)right);   /* l2 r2 l3 r3 | l6 r6 l7 r7 */
        lo = (WG_NAME(vec))_mm256_permute2f128_ps(a, b, 0x20);
        hi = (WG_NAME(vec))_mm256_permute2f128_ps(a, b, 0x31);
    } else {
        __m256d a = _mm256_unpacklo_pd((__m256d)left, (__m256d)right); /* l0 r0 | l2 r2 */
        __m256d b = _mm256_unpackhi_pd((__m256d)left, (__m256d)right); /* l1 r1 | l3 r3 */
        lo = (WG_NAME(vec))_mm256_permute2f128_pd(a, b, 0x20);
        hi = (WG_NAME(vec))_mm256_permute2f128_pd(a, b, 0x31);
    }
    WG_NAME(store_first)(line, lo, count);
    if (count > WG_LANES)
        WG_NAME(store_first)(line + WG_LANES, hi, count - WG_LANES);
}

/* The lanes a register stores at y + at: count outputs, or when the plane has room, all
 * 2 * WG_LANES, the outputs past the line's end landing on lines that registers still to come write
 * afterwards. That holds for a tile row's odd line (the next tile
 * row's lines come later), and for its even line only when one register covers the tile row (with
 * more, the odd line's first registers are written before the even line's last). Masked stores
 * (vmaskmovps) took a third of out_plane_avx2's time on 14x14 planes. */
#define WG_STORE_COUNT(at, count, later) \
    ((later) && (at) + 2 * WG_LANES <= OH * OW ? 2 * WG_LANES : (count))

/* out_plane in AVX2 registers of WG_LANES tiles of one tile row, with the same sums in the same
 * order (so the same results), each register's outputs interleaved in registers and stored straight
 * into the plane y (OH x OW, C-contiguous) instead of through a buffer and a scalar
 * interleave. A register whose tile row has fewer tiles left reads the next row's first tiles too
 * (masked at the plane's end, so never past the plane's tiles). Returns what out_plane returns: 0,
 * or NaN if a value before act is not finite (a tile's outputs past an odd edge included). */
__attribute__((target("avx2"))) static WG_T
WG_NAME(out_plane_avx2)(const WG_T* m, Py_ssize_t xs, Py_ssize_t TH, Py_ssize_t TW, WG_T bias,
                        int relu, WG_T* y, Py_ssize_t OH, Py_ssize_t OW)
{
    typedef WG_NAME(vec) vec;
    const vec zero = {0}, b = zero + bias;
    typedef __typeof__(zero <= zero) ivec;   /* lanes of 0 / -1, as wide as WG_T */
    const Py_ssize_t Tp = TH * TW;
    vec bad = zero, r[16];
    WG_T lane_sum = 0;
    Py_ssize_t ty, tx, lanes, loaded, count, at, k;
    for (ty = 0; ty < TH; ty++) {
        for (tx = 0; tx < TW; tx += WG_LANES) {
            lanes = TW - tx < WG_LANES ? TW - tx : WG_LANES;
            loaded = Tp - (ty * TW + tx) < WG_LANES ? Tp - (ty * TW + tx) : WG_LANES;
            for (k = 0; k < 16; k++)
                r[k] = WG_NAME(load_first)(m + k * xs + ty * TW + tx, loaded);
            vec s00 = r[0] + r[1] + r[2], s01 = r[1] - r[2] - r[3];
            vec s10 = r[4] + r[5] + r[6], s11 = r[5] - r[6] - r[7];
            vec s20 = r[8] + r[9] + r[10], s21 = r[9] - r[10] - r[11];
            vec s30 = r[12] + r[13] + r[14], s31 = r[13] - r[14] - r[15];
            vec y0 = s00 + s10 + s20 + b, y1 = s01 + s11 + s21 + b;
            vec y2 = s10 - s20 - s30 + b, y3 = s11 - s21 - s31 + b;
            bad += ((y0 - y0) + (y1 - y1)) + ((y2 - y2) + (y3 - y3));
            if (relu) {   /* v <= 0 -> 0; NaN compares false and stays */
                y0 = (vec)((ivec)y0 & ~(y0 <= zero));
                y1 = (vec)((ivec)y1 & ~(y1 <= zero));
                y2 = (vec)((ivec)y2 & ~(y2 <= zero));
                y3 = (vec)((ivec)y3 & ~(y3 <= zero));
            }
            count = OW - 2 * tx < 2 * lanes ? OW - 2 * tx : 2 * lanes;
            at = 2 * ty * OW + 2 * tx;
            WG_NAME(store_pairs)(y + at, y0, y1, WG_STORE_COUNT(at, count, TW <= WG_LANES));
            if (2 * ty + 1 < OH) {
                at += OW;
                WG_NAME(store_pairs)(y + at, y2, y3, WG_STORE_COUNT(at, count, 1));
            }
        }
    }
    for (k = 0; k < WG_LANES; k++)
        lane_sum += bad[k];
    return lane_sum;
}

#undef WG_STORE_COUNT

#else

static void WG_NAME(in_plane_avx2)(const WG_T* e, const WG_T* o, Py_ssize_t half, WG_T* v,
                                   Py_ssize_t xs, Py_ssize_t TH, Py_ssize_t TW,
                                   Py_ssize_t after) {}

static void WG_NAME(split_plane_avx2)(const WG_T* plane, Py_ssize_t H, Py_ssize_t W,
                                      Py_ssize_t pad, WG_T* even, WG_T* odd, Py_ssize_t PH,
                                      Py_ssize_t half, Py_ssize_t stride) {}

static WG_T WG_NAME(out_plane_avx2)(const WG_T* m, Py_ssize_t xs, Py_ssize_t TH, Py_ssize_t TW,
                                    WG_T bias, int relu, WG_T* y, Py_ssize_t OH,
                                    Py_ssize_t OW) { return 0; }

#endif

/* One tile row of an output gradient, from its 2 lines' even columns e and odd columns o (line
 * stride half): v[xi*xs + tx] = (A g A^T)[xi] for the 2x2 gradients g of the TW tiles of the row. */
static void WG_NAME(grad_row)(const WG_T* __restrict e, const WG_T* __restrict o, Py_ssize_t half,
                              WG_T* __restrict v, Py_ssize_t xs, Py_ssize_t TW)
{
    const WG_T* __restrict e0 = e;
    const WG_T* __restrict e1 = e + half;
    const WG_T* __restrict o0 = o;
    const WG_T* __restrict o1 = o + half;
    CNNCORE_WG_ROWS(v, xs)
    Py_ssize_t tx;
    #pragma omp simd
    for (tx = 0; tx < TW; tx++) {
        /* A across each row a of g: h_a = (g_a0, g_a0 + g_a1, g_a0 - g_a1, -g_a1) */
        WG_T g00 = e0[tx], g01 = o0[tx], g10 = e1[tx], g11 = o1[tx];
        WG_T h01 = g00 + g01, h02 = g00 - g01, h11 = g10 + g11, h12 = g10 - g11;
        /* A down: rows h_0, h_0 + h_1, h_0 - h_1, -h_1 */
        v0[tx] = g00;        v1[tx] = h01;        v2[tx] = h02;        v3[tx] = -g01;
        v4[tx] = g00 + g10;  v5[tx] = h01 + h11;  v6[tx] = h02 + h12;  v7[tx] = -g01 - g11;
        v8[tx] = g00 - g10;  v9[tx] = h01 - h11;  v10[tx] = h02 - h12; v11[tx] = g11 - g01;
        v12[tx] = -g10;      v13[tx] = -h11;      v14[tx] = -h12;      v15[tx] = g11;
    }
}

/* A plane's Tp tiles: m[xi*xs + q] -> y[k*Tp + q] = act((A^T m A)[k] + bias), k = 2*row + column
 * of the 2x2 output tile, act = ReLU (v <= 0 -> 0, NaN stays NaN) or identity. Returns the sum of
 * (v - v) over the v before act: 0, or NaN if one is not finite. That sum is only compared with 0,
 * so its order does not matter, and `reduction` lets it run in vectors: summed in order, element by
 * element, it was a third of output_transform's time. */
static WG_T WG_NAME(out_plane)(const WG_T* __restrict m, Py_ssize_t xs, Py_ssize_t Tp, WG_T bias,
                               int relu, WG_T* __restrict y)
{
    WG_T bad = 0;
    Py_ssize_t q;
    #pragma omp simd reduction(+:bad)
    for (q = 0; q < Tp; q++) {
        /* A across each row a of m: s_a0 = m_a0 + m_a1 + m_a2, s_a1 = m_a1 - m_a2 - m_a3 */
        WG_T s00 = m[0 * xs + q] + m[1 * xs + q] + m[2 * xs + q], s01 = m[1 * xs + q] - m[2 * xs + q] - m[3 * xs + q];
        WG_T s10 = m[4 * xs + q] + m[5 * xs + q] + m[6 * xs + q], s11 = m[5 * xs + q] - m[6 * xs + q] - m[7 * xs + q];
        WG_T s20 = m[8 * xs + q] + m[9 * xs + q] + m[10 * xs + q], s21 = m[9 * xs + q] - m[10 * xs + q] - m[11 * xs + q];
        WG_T s30 = m[12 * xs + q] + m[13 * xs + q] + m[14 * xs + q], s31 = m[13 * xs + q] - m[14 * xs + q] - m[15 * xs + q];
        /* A^T down, then the bias */
        WG_T y0 = s00 + s10 + s20 + bias, y1 = s01 + s11 + s21 + bias;
        WG_T y2 = s10 - s20 - s30 + bias, y3 = s11 - s21 - s31 + bias;
        bad += ((y0 - y0) + (y1 - y1)) + ((y2 - y2) + (y3 - y3));
        if (relu) {
            y0 = y0 <= 0 ? 0 : y0;
            y1 = y1 <= 0 ? 0 : y1;
            y2 = y2 <= 0 ? 0 : y2;
            y3 = y3 <= 0 ? 0 : y3;
        }
        y[q] = y0;
        y[Tp + q] = y1;
        y[2 * Tp + q] = y2;
        y[3 * Tp + q] = y3;
    }
    return bad;
}

/* dst[2*tx] = left[tx], dst[2*tx + 1] = right[tx]: the OW outputs of one line. */
static void WG_NAME(interleave)(const WG_T* __restrict left, const WG_T* __restrict right,
                                Py_ssize_t OW, WG_T* __restrict dst)
{
    Py_ssize_t tx, pairs = OW / 2;
    for (tx = 0; tx < pairs; tx++) {
        dst[2 * tx] = left[tx];
        dst[2 * tx + 1] = right[tx];
    }
    if (OW % 2)
        dst[OW - 1] = left[pairs];
}
