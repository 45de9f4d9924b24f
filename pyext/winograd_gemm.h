/* The 16 products of pyext/winograd.pyx's forward in float32, on AVX2 + FMA:
 * M[xi] (FN x T) = U[xi] (FN x C) @ V[xi] (C x T) for xi = 0..15 (and, further down, those of its
 * weight gradient).
 *
 * np.matmul hands these to OpenBLAS, which first zeroes M (beta = 0) and packs V into its own
 * layout before multiplying: with K = C of only 32-64, those two passes over M and V took a
 * ninth of the 32-channel 14x14 forward. Here V is read where the input transform wrote it: 4 rows
 * of U (filters) times 24 columns of V (tiles) in 12 vector accumulators, each step one row of the
 * V strip (3 loads) and 4 broadcast weights for 12 fused multiply-adds; the strip (C x 24) stays
 * in L1 across the blocks of filters.
 *
 * Compiled for AVX2 + FMA through a target attribute; cpu_features.h says at run
 * time whether this CPU (and compiler) has them. Elsewhere the function is empty and never called.
 * cnncore/_conv/winograd.py leaves the tile counts whose lines of V alias in L1 to np.matmul.
 */

/* Rows of U (filters) and vectors of 8 columns of V (tiles) per block: 4 x 3 keeps 12 accumulators
 * and the operands in the 16 AVX2 registers (the block sizes compared: docs/kernels.md). */
#define CNNCORE_WG_GEMM_R 4
#define CNNCORE_WG_GEMM_V 3
#define CNNCORE_WG_GEMM_COLS (8 * CNNCORE_WG_GEMM_V)

#include "cpu_features.h"

#if CNNCORE_X86_TARGETS

#include <immintrin.h>

/* R (1..4) rows of U times a strip of V's columns j0 .. j0 + 24 (the first n of them when
 * n < 24: masked loads and stores, so nothing past the strip is read or written). */
static inline __attribute__((always_inline, target("avx2,fma"))) void
cnncore_wg_gemm_block(const float* u, Py_ssize_t C, const float* v, Py_ssize_t T, float* m,
                      int R, Py_ssize_t n)
{
    __m256 acc[CNNCORE_WG_GEMM_R][CNNCORE_WG_GEMM_V];
    __m256i mask[CNNCORE_WG_GEMM_V];
    int r, k;
    Py_ssize_t c;
    const int whole = n == CNNCORE_WG_GEMM_COLS;
    for (k = 0; k < CNNCORE_WG_GEMM_V; k++)
        mask[k] = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n - 8 * k),
                                     _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    for (r = 0; r < R; r++)
        for (k = 0; k < CNNCORE_WG_GEMM_V; k++)
            acc[r][k] = _mm256_setzero_ps();
    for (c = 0; c < C; c++) {
        __m256 x[CNNCORE_WG_GEMM_V];
        const float* line = v + c * T;
        for (k = 0; k < CNNCORE_WG_GEMM_V; k++)
            x[k] = whole ? _mm256_loadu_ps(line + 8 * k) : _mm256_maskload_ps(line + 8 * k, mask[k]);
        for (r = 0; r < R; r++) {
            __m256 w = _mm256_broadcast_ss(u + r * C + c);
            for (k = 0; k < CNNCORE_WG_GEMM_V; k++)
                acc[r][k] = _mm256_fmadd_ps(w, x[k], acc[r][k]);
        }
    }
    for (r = 0; r < R; r++)
        for (k = 0; k < CNNCORE_WG_GEMM_V; k++) {
            if (whole)
                _mm256_storeu_ps(m + r * T + 8 * k, acc[r][k]);
            else
                _mm256_maskstore_ps(m + r * T + 8 * k, mask[k], acc[r][k]);
        }
}

#define CNNCORE_WG_GEMM_ROWS(R, n) \
    cnncore_wg_gemm_block(u + f * C, C, v + j, T, m + f * T + j, R, n)

/* For each xi: M[xi*xs_m + f*T + t] = sum over c of U[(xi*FN + f)*C + c] * V[xi*xs_v + c*T + t]. */
__attribute__((target("avx2,fma"))) static void
cnncore_winograd_gemm(const float* U, const float* V, Py_ssize_t xs_v, float* M, Py_ssize_t xs_m,
                      Py_ssize_t FN, Py_ssize_t C, Py_ssize_t T)
{
    Py_ssize_t xi, j, f, n;
    for (xi = 0; xi < 16; xi++) {
        const float* u = U + xi * FN * C;
        const float* v = V + xi * xs_v;
        float* m = M + xi * xs_m;
        for (j = 0; j < T; j += CNNCORE_WG_GEMM_COLS) {
            n = T - j < CNNCORE_WG_GEMM_COLS ? T - j : CNNCORE_WG_GEMM_COLS;
            for (f = 0; f + CNNCORE_WG_GEMM_R <= FN; f += CNNCORE_WG_GEMM_R) {
                if (n == CNNCORE_WG_GEMM_COLS)
                    CNNCORE_WG_GEMM_ROWS(CNNCORE_WG_GEMM_R, CNNCORE_WG_GEMM_COLS);
                else
                    CNNCORE_WG_GEMM_ROWS(CNNCORE_WG_GEMM_R, n);
            }
            switch (FN - f) {
            case 3: CNNCORE_WG_GEMM_ROWS(3, n); break;
            case 2: CNNCORE_WG_GEMM_ROWS(2, n); break;
            case 1: CNNCORE_WG_GEMM_ROWS(1, n); break;
            }
        }
    }
}

#undef CNNCORE_WG_GEMM_ROWS

/* The weight gradient's products, dU[xi] (C x FN) = V[xi] (C x T) @ dM[xi] (FN x T)^T: both operands
 * have the tiles contiguous, so each block of 4 rows of V (channels) and 3 of dM (filters) sums its
 * 12 products in vectors of 8 tiles (7 loads for 12 fused multiply-adds, as in the forward's), then
 * adds each vector's lanes. np.matmul hands this to OpenBLAS, which first packs both operands (a
 * third of its time here: K = T is long, the result only C x FN). */
#define CNNCORE_WG_NT_C 4
#define CNNCORE_WG_NT_F 3

static inline __attribute__((always_inline, target("avx2,fma"))) float
cnncore_wg_hsum(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* RC (1..4) rows of V from v (lines T apart) times RF (1..3) rows of dM from m: du[r*FN + q] for
 * r < RC, q < RF. The last T % 8 tiles come through masked loads (nothing read past a line). */
static inline __attribute__((always_inline, target("avx2,fma"))) void
cnncore_wg_gemm_nt_block(const float* v, const float* m, Py_ssize_t T, float* du, Py_ssize_t FN,
                         int RC, int RF)
{
    __m256 acc[CNNCORE_WG_NT_C][CNNCORE_WG_NT_F];
    __m256 a[CNNCORE_WG_NT_C], g;
    Py_ssize_t t;
    int r, q;
    const Py_ssize_t whole = T - T % 8;
    const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(T % 8)),
                                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    for (r = 0; r < RC; r++)
        for (q = 0; q < RF; q++)
            acc[r][q] = _mm256_setzero_ps();
    for (t = 0; t < whole; t += 8) {
        for (r = 0; r < RC; r++)
            a[r] = _mm256_loadu_ps(v + r * T + t);
        for (q = 0; q < RF; q++) {
            g = _mm256_loadu_ps(m + q * T + t);
            for (r = 0; r < RC; r++)
                acc[r][q] = _mm256_fmadd_ps(a[r], g, acc[r][q]);
        }
    }
    if (whole < T) {
        for (r = 0; r < RC; r++)
            a[r] = _mm256_maskload_ps(v + r * T + whole, mask);
        for (q = 0; q < RF; q++) {
            g = _mm256_maskload_ps(m + q * T + whole, mask);
            for (r = 0; r < RC; r++)
                acc[r][q] = _mm256_fmadd_ps(a[r], g, acc[r][q]);
        }
    }
    for (r = 0; r < RC; r++)
        for (q = 0; q < RF; q++)
            du[r * FN + q] = cnncore_wg_hsum(acc[r][q]);
}

#define CNNCORE_WG_NT_BLOCK(RC, RF) \
    cnncore_wg_gemm_nt_block(v + c * T, m + f * T, T, du + c * FN + f, FN, RC, RF)

/* For each xi: dU[(xi*C + c)*FN + f] = sum over t of V[xi*xs_v + c*T + t] * dM[xi*xs_m + f*T + t]. */
__attribute__((target("avx2,fma"))) static void
cnncore_winograd_gemm_nt(const float* V, Py_ssize_t xs_v, const float* dM, Py_ssize_t xs_m,
                         float* dU, Py_ssize_t C, Py_ssize_t FN, Py_ssize_t T)
{
    Py_ssize_t xi, c, f;
    for (xi = 0; xi < 16; xi++) {
        const float* v = V + xi * xs_v;
        const float* m = dM + xi * xs_m;
        float* du = dU + xi * C * FN;
        for (c = 0; c + CNNCORE_WG_NT_C <= C; c += CNNCORE_WG_NT_C) {
            for (f = 0; f + CNNCORE_WG_NT_F <= FN; f += CNNCORE_WG_NT_F)
                CNNCORE_WG_NT_BLOCK(CNNCORE_WG_NT_C, CNNCORE_WG_NT_F);
            switch (FN - f) {
            case 2: CNNCORE_WG_NT_BLOCK(CNNCORE_WG_NT_C, 2); break;
            case 1: CNNCORE_WG_NT_BLOCK(CNNCORE_WG_NT_C, 1); break;
            }
        }
        for (; c < C; c++) {
            for (f = 0; f + CNNCORE_WG_NT_F <= FN; f += CNNCORE_WG_NT_F)
                CNNCORE_WG_NT_BLOCK(1, CNNCORE_WG_NT_F);
            switch (FN - f) {
            case 2: CNNCORE_WG_NT_BLOCK(1, 2); break;
            case 1: CNNCORE_WG_NT_BLOCK(1, 1); break;
            }
        }
    }
}

#undef CNNCORE_WG_NT_BLOCK

#else

static void cnncore_winograd_gemm_nt(const float* V, Py_ssize_t xs_v, const float* dM,
                                     Py_ssize_t xs_m, float* dU, Py_ssize_t C, Py_ssize_t FN,
                                     Py_ssize_t T) {}

static void cnncore_winograd_gemm(const float* U, const float* V, Py_ssize_t xs_v, float* M,
                                  Py_ssize_t xs_m, Py_ssize_t FN, Py_ssize_t C, Py_ssize_t T) {}

#endif
