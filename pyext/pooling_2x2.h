/* Max-pooling backward for 2x2 windows, stride 2, no padding (the textbook's pooling), for
 * pyext/pooling.pyx: both dx rows of an output row written in one pass, each cell once.
 *
 * Output i's gradient d[i] goes to the cell arg[i] of its window (0, 1 on the upper row, 2, 3 on
 * the lower) and the window's other three cells get zero. With SSE2 (the x86-64 baseline) each
 * cell is d[i] & (arg[i] == its index): compares and masks, no branches (random winners defeat
 * branch prediction; the table-and-scatter form ran at 14 cycles per output). d + 0 turns -0.0
 * into +0.0, as adding into zeros (the reference) does. The caller has checked arg (0..3); the
 * SIMD loops compare its low 32 bits only, and whatever it holds, nothing is written outside the
 * window.
 */
#if defined(__SSE2__) || defined(_M_X64)
#include <emmintrin.h>
#define CNNCORE_POOL_SSE2 1
#else
#define CNNCORE_POOL_SSE2 0
#endif

/* q0, q1: the window rows' first cells (dx + 2*oy*W and the row below); n outputs. */
static inline void
cnncore_max_backward_row_2x2_float(const float* d, const Py_ssize_t* arg,
                                   float* q0, float* q1, Py_ssize_t n)
{
    Py_ssize_t i = 0;
#if CNNCORE_POOL_SSE2
    /* Two outputs per step: lanes (0, 1) are output i's cells, lanes (2, 3) output i+1's. */
    const __m128i upper = _mm_set_epi32(1, 0, 1, 0);
    const __m128i lower = _mm_set_epi32(3, 2, 3, 2);
    const __m128 zero = _mm_setzero_ps();
    for (; i + 2 <= n; i += 2) {
        __m128i k = _mm_loadu_si128((const __m128i*)(arg + i));        /* (k0, -, k1, -) as int32 */
        k = _mm_shuffle_epi32(k, _MM_SHUFFLE(2, 2, 0, 0));              /* (k0, k0, k1, k1) */
        __m128 v = _mm_castpd_ps(_mm_load_sd((const double*)(d + i)));  /* (d0, d1, 0, 0) */
        v = _mm_add_ps(_mm_unpacklo_ps(v, v), zero);                    /* (d0, d0, d1, d1) */
        _mm_storeu_ps(q0 + 2 * i, _mm_and_ps(_mm_castsi128_ps(_mm_cmpeq_epi32(k, upper)), v));
        _mm_storeu_ps(q1 + 2 * i, _mm_and_ps(_mm_castsi128_ps(_mm_cmpeq_epi32(k, lower)), v));
    }
#endif
    for (; i < n; i++) {
        float v = d[i] + 0.0f;
        Py_ssize_t k = arg[i];
        q0[2 * i] = k == 0 ? v : 0.0f;
        q0[2 * i + 1] = k == 1 ? v : 0.0f;
        q1[2 * i] = k == 2 ? v : 0.0f;
        q1[2 * i + 1] = k == 3 ? v : 0.0f;
    }
}

static inline void
cnncore_max_backward_row_2x2_double(const double* d, const Py_ssize_t* arg,
                                    double* q0, double* q1, Py_ssize_t n)
{
    Py_ssize_t i = 0;
#if CNNCORE_POOL_SSE2
    /* One output per step: 64-bit lane j is cell j of the row, compared as two int32 halves. */
    const __m128i upper = _mm_set_epi32(1, 1, 0, 0);
    const __m128i lower = _mm_set_epi32(3, 3, 2, 2);
    const __m128d zero = _mm_setzero_pd();
    for (; i < n; i++) {
        __m128i k = _mm_set1_epi32((int)arg[i]);
        __m128d v = _mm_add_pd(_mm_set1_pd(d[i]), zero);
        _mm_storeu_pd(q0 + 2 * i, _mm_and_pd(_mm_castsi128_pd(_mm_cmpeq_epi32(k, upper)), v));
        _mm_storeu_pd(q1 + 2 * i, _mm_and_pd(_mm_castsi128_pd(_mm_cmpeq_epi32(k, lower)), v));
    }
#endif
    for (; i < n; i++) {
        double v = d[i] + 0.0;
        Py_ssize_t k = arg[i];
        q0[2 * i] = k == 0 ? v : 0.0;
        q0[2 * i + 1] = k == 1 ? v : 0.0;
        q1[2 * i] = k == 2 ? v : 0.0;
        q1[2 * i + 1] = k == 3 ? v : 0.0;
    }
}
