/* The 16 products of pyext/winograd.pyx's forward in float32, on AVX2 + FMA:
 * M[xi] (FN x T) = U[xi] (FN x C) @ V[xi] (C x T) for xi = 0..15.
 *
 * np.matmul hands these to OpenBLAS, which first zeroes M (beta = 0) and packs V into its own
 * layout before multiplying: with K = C of only 32-64, those two passes over M and V took a
 * ninth of the 32-channel 14x14 forward. Here V is read where the input transform wrote it: 4 rows
 * of U (filters) times 24 columns of V (tiles) in 12 vector accumulators, each step one row of the
 * V strip (3 loads) and 4 broadcast weights for 12 fused multiply-adds; the strip (C x 24) stays
 * in L1 across the blocks of filters.
 *
 * Compiled for AVX2 + FMA through a target attribute; cnncore_winograd_gemm_supported() says at run
 * time whether this CPU (and compiler) has them. Elsewhere the function is empty and never called.
 * cnncore/kernels.py leaves the tile counts whose lines of V alias in L1 to np.matmul.
 */

/* Rows of U (filters) and vectors of 8 columns of V (tiles) per block. Measured here, one thread,
 * the 16 products of 32 filters x 32 channels x 1225 tiles: 4 x 3 0.52 ms, 6 x 2 0.54, 5 x 2 0.54,
 * 3 x 4 0.55, 2 x 6 0.77 (np.matmul 0.61); prefetching the next strip gained nothing. */
#define CNNCORE_WG_GEMM_R 4
#define CNNCORE_WG_GEMM_V 3
#define CNNCORE_WG_GEMM_COLS (8 * CNNCORE_WG_GEMM_V)

#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))

#include <immintrin.h>

static int cnncore_winograd_gemm_supported(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

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

#else

static int cnncore_winograd_gemm_supported(void) { return 0; }

static void cnncore_winograd_gemm(const float* U, const float* V, Py_ssize_t xs_v, float* M,
                                  Py_ssize_t xs_m, Py_ssize_t FN, Py_ssize_t C, Py_ssize_t T) {}

#endif
