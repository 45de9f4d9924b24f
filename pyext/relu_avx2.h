/* ReLU forward in float32 (and float64) on AVX2, for pyext/activation.pyx: out = 0 where x <= 0 else x, and the
 * mask byte x <= 0, from one load of x (the baseline build's loops are 4-wide SSE2 and go over x
 * twice, once for out and once, as bytes, for the mask). The same results as those loops.
 *
 * Compiled for AVX2 through a target attribute; cnncore_cpu_avx2() (cpu_features.h) says at run time whether this
 * CPU (and compiler) has it. Elsewhere the function is empty and never called.
 */
#include "cpu_features.h"

#if CNNCORE_X86_TARGETS

#include <immintrin.h>
#include <stdint.h>
#include <string.h>

__attribute__((target("avx2"))) static void
cnncore_relu_forward_avx2(const float* x, float* out, unsigned char* mask, Py_ssize_t n)
{
    const __m256 zero = _mm256_setzero_ps();
    /* packs_epi32 then packs_epi16 leave the four 4-byte groups of each 128-bit lane in the order
     * 0 2 4 6 | 1 3 5 7; this puts them back */
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    const __m256i one = _mm256_set1_epi8(1);
    Py_ssize_t i = 0;
    int k;
    for (; i + 32 <= n; i += 32) {
        __m256 a[4], le[4];
        for (k = 0; k < 4; k++) {
            a[k] = _mm256_loadu_ps(x + i + 8 * k);
            le[k] = _mm256_cmp_ps(a[k], zero, _CMP_LE_OQ);   /* NaN: false, so it passes */
            _mm256_storeu_ps(out + i + 8 * k, _mm256_andnot_ps(le[k], a[k]));
        }
        __m256i words = _mm256_packs_epi32(_mm256_castps_si256(le[0]), _mm256_castps_si256(le[1]));
        __m256i more = _mm256_packs_epi32(_mm256_castps_si256(le[2]), _mm256_castps_si256(le[3]));
        __m256i bytes = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(words, more), order);
        _mm256_storeu_si256((__m256i*)(mask + i), _mm256_and_si256(bytes, one));
    }
    for (; i < n; i++) {
        float v = x[i];
        out[i] = v <= 0 ? 0 : v;
        mask[i] = v <= 0;
    }
}

/* The 4 mask bytes (0 or 1) of 4 doubles from their comparison's 4 sign bits: byte k = bit k. */
static const uint32_t cnncore_relu_nibble_bytes[16] = {
    0x00000000u, 0x00000001u, 0x00000100u, 0x00000101u, 0x00010000u, 0x00010001u,
    0x00010100u, 0x00010101u, 0x01000000u, 0x01000001u, 0x01000100u, 0x01000101u,
    0x01010000u, 0x01010001u, 0x01010100u, 0x01010101u
};

/* The same for float64: 4 doubles a load, each register's 4 mask bytes from its comparison's
 * sign bits through a 16-entry table. */
__attribute__((target("avx2"))) static void
cnncore_relu_forward_avx2_d(const double* x, double* out, unsigned char* mask, Py_ssize_t n)
{
    const __m256d zero = _mm256_setzero_pd();
    Py_ssize_t i = 0;
    for (; i + 4 <= n; i += 4) {
        __m256d a = _mm256_loadu_pd(x + i);
        __m256d le = _mm256_cmp_pd(a, zero, _CMP_LE_OQ);
        _mm256_storeu_pd(out + i, _mm256_andnot_pd(le, a));
        memcpy(mask + i, &cnncore_relu_nibble_bytes[_mm256_movemask_pd(le)], 4);
    }
    for (; i < n; i++) {
        double v = x[i];
        out[i] = v <= 0 ? 0 : v;
        mask[i] = v <= 0;
    }
}

#else

static void cnncore_relu_forward_avx2(const float* x, float* out, unsigned char* mask,
                                      Py_ssize_t n) {}

static void cnncore_relu_forward_avx2_d(const double* x, double* out, unsigned char* mask,
                                        Py_ssize_t n) {}

#endif
