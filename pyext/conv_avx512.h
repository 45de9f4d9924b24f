/* Direct convolution of one image on AVX-512F, for pyext/conv_avx512.pyx: the forward in float32
 * and float64 (conv_avx512_forward.h), the gradients of stride-1 layers in float32.
 *
 * The AVX2 block kernel (conv_avx2.h) keeps 16 filters in a pair of 8-lane registers and 6
 * outputs at a time: 12 accumulators, and each step loads 2 weight vectors and 6 inputs for 12
 * multiply-adds. With 16 lanes and 32 registers, one register holds 16 filters and a block keeps
 * FV (1 or 2) such vectors times up to 12 outputs of a row: each step loads FV weight vectors and
 * PB inputs (broadcast) for FV*PB multiply-adds, half the loads per multiply-add at FV = 2 (in
 * float64, 8 filters per register).
 *
 * The sums, with the bias and the ReLU, go to a staging row, 2 blocks of filters per output, and
 * from there to the output planes. Compiled for AVX-512F through a target attribute; cpu_features.h says
 * at run time whether this CPU has it. Elsewhere the kernel is an empty function nothing calls.
 */
#include <string.h>

#include "cpu_features.h"

/* Outputs of a row computed before they are copied to the planes, and the most outputs of a block. */
#define CNNCORE_AVX512_ROW 96
#define CNNCORE_AVX512_MAX_PB 12

#if CNNCORE_X86_TARGETS

#include <immintrin.h>

typedef float cnncore_v16f __attribute__((vector_size(64), aligned(4)));

/* dst (C, H + 2*pad, PW) interior = src (C, H, W), or, with mask, src where !(mask <= 0) and 0
 * elsewhere (the ReLU's gradient mask: NaN in mask keeps the value), 16 values at a time under
 * a lane mask (no branch on the data). The borders of dst stay as they are: zeros the caller keeps. */
__attribute__((target("avx512f")))
static void cnncore_avx512_copy_into_padded(const float* src, const float* mask, float* dst,
                                            Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                                            Py_ssize_t pad, Py_ssize_t PW)
{
    Py_ssize_t c, y, x, PH = H + 2 * pad;
    for (c = 0; c < C; c++) {
        for (y = 0; y < H; y++) {
            const float* s = src + (c * H + y) * W;
            float* d = dst + (c * PH + y + pad) * PW + pad;
            if (mask == NULL) {
                memcpy(d, s, W * sizeof(float));
                continue;
            }
            const float* m = mask + (c * H + y) * W;
            for (x = 0; x < W; x += 16) {
                __mmask16 lanes = W - x >= 16 ? 0xFFFF : (__mmask16)((1u << (W - x)) - 1);
                __m512 mv = _mm512_maskz_loadu_ps(lanes, m + x);
                __mmask16 drop = _mm512_cmp_ps_mask(mv, _mm512_setzero_ps(), _CMP_LE_OQ);
                _mm512_mask_storeu_ps(d + x, lanes, _mm512_maskz_loadu_ps(lanes & ~drop, s + x));
            }
        }
    }
}

/* The forward, for float32 (16 lanes) and float64 (8 lanes): conv_avx512_forward.h. */
#define CNNCORE_T float
#define CNNCORE_N 16
#define CNNCORE_NAME(name) name##_float
#define CNNCORE_KEEP(v) ((__typeof__(v))_mm512_maskz_mov_ps( \
    _mm512_cmp_ps_mask((__m512)(v), _mm512_setzero_ps(), _CMP_NLE_UQ), (__m512)(v)))
#include "conv_avx512_forward.h"
#undef CNNCORE_KEEP
#undef CNNCORE_NAME
#undef CNNCORE_N
#undef CNNCORE_T

#define CNNCORE_T double
#define CNNCORE_N 8
#define CNNCORE_NAME(name) name##_double
#define CNNCORE_KEEP(v) ((__typeof__(v))_mm512_maskz_mov_pd( \
    _mm512_cmp_pd_mask((__m512d)(v), _mm512_setzero_pd(), _CMP_NLE_UQ), (__m512d)(v)))
#include "conv_avx512_forward.h"
#undef CNNCORE_KEEP
#undef CNNCORE_NAME
#undef CNNCORE_N
#undef CNNCORE_T

/* The gradients of a stride-1 layer, per image. d is first laid out (L, 16*FV): 16 or 32 filters'
 * values of each output side by side (cnncore_avx512_grad_lines), so that one register holds d of 16
 * filters at one output. Then dW[f, (c, ky, kx)] = sum over outputs (oy, ox) of d[f, oy, ox] *
 * xp[c, oy + ky, ox + kx] is summed FV (1 or 2) filter vectors times RB rows (c, ky) of the
 * filters times FW taps at a time: each output loads FV vectors of d and RB*FW inputs (broadcast)
 * for FV*RB*FW multiply-adds. */

/* r[k] = column k of the 16 x 16 block whose rows were r[0..15]: pairs of rows interleaved, then
 * pairs of pairs, then 128-bit lanes twice. */
static inline __attribute__((always_inline, target("avx512f"))) void
cnncore_avx512_transpose16(__m512 r[16])
{
    __m512 t[16];
    int i, j;
    for (i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (i = 0; i < 4; i++) {
        __m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 1]);
        __m512d c = _mm512_castps_pd(t[4 * i + 2]), d = _mm512_castps_pd(t[4 * i + 3]);
        r[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
        r[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
        r[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
        r[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
    }
    for (i = 0; i < 2; i++) {
        for (j = 0; j < 4; j++) {
            t[8 * i + j] = _mm512_shuffle_f32x4(r[8 * i + j], r[8 * i + j + 4], 0x88);
            t[8 * i + j + 4] = _mm512_shuffle_f32x4(r[8 * i + j], r[8 * i + j + 4], 0xdd);
        }
    }
    for (j = 0; j < 8; j++) {
        r[j] = _mm512_shuffle_f32x4(t[j], t[j + 8], 0x88);
        r[j + 8] = _mm512_shuffle_f32x4(t[j], t[j + 8], 0xdd);
    }
}

/* dT (L, 16*FV) = one image's d for filters 0..nf-1 (nf <= 16*FV) of dout (nf, L): dout zeroed
 * where out <= 0 when relu (NaN in out keeps the gradient, as the textbook's mask); columns past
 * nf zero. 16 filters x 16 outputs are loaded, masked and transposed in registers at a time;
 * db[f] += the sum of d[f]. */
__attribute__((target("avx512f")))
static void cnncore_avx512_grad_lines(const float* dout, const float* out, int relu,
                                      Py_ssize_t nf, Py_ssize_t L, int FV, float* dT, float* db)
{
    __m512 r[16];
    float t[16];
    Py_ssize_t p, n, f, S = 16 * FV;
    int v, j;
    for (v = 0; v < FV; v++) {
        __m512 sum = _mm512_setzero_ps();
        for (p = 0; p < L; p += 16) {
            n = L - p < 16 ? L - p : 16;
            __mmask16 lanes = (__mmask16)((1u << n) - 1);
            for (j = 0; j < 16; j++) {
                f = 16 * v + j;
                r[j] = _mm512_setzero_ps();
                if (f < nf) {
                    r[j] = _mm512_maskz_loadu_ps(lanes, dout + f * L + p);
                    if (relu)
                        r[j] = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(
                            _mm512_maskz_loadu_ps(lanes, out + f * L + p), _mm512_setzero_ps(),
                            _CMP_NLE_UQ), r[j]);
                }
            }
            cnncore_avx512_transpose16(r);
            for (j = 0; j < n; j++) {
                sum = _mm512_add_ps(sum, r[j]);
                _mm512_storeu_ps(dT + (p + j) * S + 16 * v, r[j]);
            }
        }
        _mm512_storeu_ps(t, sum);
        for (j = 0; j < 16 && 16 * v + j < nf; j++)
            db[16 * v + j] += t[j];
    }
}

/* sums[(r0 + r)*FW + kx][16*v + j] += sum over outputs of dT[p, 16*v + j] * the input at tap
 * (row r0 + r, kx) of output p, for r < RB, kx < FW, v < FV; rows[r] the padded image's row
 * (c, ky) = divmod(r0 + r, FH) at output (0, 0). sums' rows are sum_row floats apart. FV, RB and
 * FW are constants at each call site. */
static inline __attribute__((always_inline, target("avx512f"))) void
cnncore_avx512_wgrad_block(const float* const* rows, Py_ssize_t PW, const float* dT,
                           Py_ssize_t OH, Py_ssize_t OW, float* sums, Py_ssize_t sum_row,
                           int FV, int RB, int FW)
{
    cnncore_v16f acc[2][8][5], d0, d1 = {0};
    const float* line[8];
    Py_ssize_t oy, ox;
    int v, r, kx;
    for (v = 0; v < FV; v++)
        for (r = 0; r < RB; r++)
            for (kx = 0; kx < FW; kx++)
                acc[v][r][kx] = (cnncore_v16f){0};
    for (oy = 0; oy < OH; oy++) {
        for (r = 0; r < RB; r++)
            line[r] = rows[r] + oy * PW;
        const float* d = dT + oy * OW * 16 * FV;
        for (ox = 0; ox < OW; ox++, d += 16 * FV) {
            d0 = *(const cnncore_v16f*)d;
            if (FV == 2)
                d1 = *(const cnncore_v16f*)(d + 16);
            for (r = 0; r < RB; r++) {
                for (kx = 0; kx < FW; kx++) {
                    float x = line[r][ox + kx];
                    acc[0][r][kx] += x * d0;
                    if (FV == 2)
                        acc[1][r][kx] += x * d1;
                }
            }
        }
    }
    for (r = 0; r < RB; r++)
        for (kx = 0; kx < FW; kx++)
            for (v = 0; v < FV; v++)
                *(cnncore_v16f*)(sums + (r * FW + kx) * sum_row + 16 * v) += acc[v][r][kx];
}

#define CNNCORE_AVX512_WGRAD_BLOCK(FV, RB, FW) \
    cnncore_avx512_wgrad_block(rows, PW, dT, OH, OW, sums + r0 * FW * sum_row, sum_row, FV, RB, FW)

#define CNNCORE_AVX512_WGRAD_ROWS8(FV, FW) \
    switch (RB) { \
    case 8: CNNCORE_AVX512_WGRAD_BLOCK(FV, 8, FW); break; \
    case 7: CNNCORE_AVX512_WGRAD_BLOCK(FV, 7, FW); break; \
    case 6: CNNCORE_AVX512_WGRAD_BLOCK(FV, 6, FW); break; \
    case 5: CNNCORE_AVX512_WGRAD_BLOCK(FV, 5, FW); break; \
    CNNCORE_AVX512_WGRAD_ROWS4(FV, FW) \
    }

#define CNNCORE_AVX512_WGRAD_ROWS4(FV, FW) \
    case 4: CNNCORE_AVX512_WGRAD_BLOCK(FV, 4, FW); break; \
    case 3: CNNCORE_AVX512_WGRAD_BLOCK(FV, 3, FW); break; \
    CNNCORE_AVX512_WGRAD_ROWS2(FV, FW)

#define CNNCORE_AVX512_WGRAD_ROWS2(FV, FW) \
    case 2: CNNCORE_AVX512_WGRAD_BLOCK(FV, 2, FW); break; \
    default: CNNCORE_AVX512_WGRAD_BLOCK(FV, 1, FW); break;

/* sums (C*FH*FW, sum_row) += one image's dW^T for the filters of dT (16*FV of them, see above),
 * stride 1, FW 3 or 5: xp the zero-padded image (C, PH, PW), dT (OH*OW, 16*FV). The C*FH filter rows
 * go in blocks of at most 24 / (FV*FW) (8 at most) whose sizes differ by at most one: the most
 * accumulators that stay in the 32 registers beside d and the input. */
__attribute__((target("avx512f")))
static void cnncore_avx512_wgrad_image(const float* xp, Py_ssize_t C, Py_ssize_t PH,
                                       Py_ssize_t PW, Py_ssize_t FH, Py_ssize_t FW,
                                       const float* dT, int FV, Py_ssize_t OH, Py_ssize_t OW,
                                       float* sums, Py_ssize_t sum_row)
{
    const float* rows[8];
    Py_ssize_t R = C * FH, most = 24 / (FV * FW), n_blocks, b, r0, RB, r;
    if (most > 8)
        most = 8;
    n_blocks = (R + most - 1) / most;
    for (b = 0, r0 = 0; b < n_blocks; b++, r0 += RB) {
        RB = (R * (b + 1)) / n_blocks - (R * b) / n_blocks;
        for (r = 0; r < RB; r++)
            rows[r] = xp + ((r0 + r) / FH) * PH * PW + ((r0 + r) % FH) * PW;
        if (FW == 3 && FV == 1) { CNNCORE_AVX512_WGRAD_ROWS8(1, 3) }
        else if (FW == 3) { switch (RB) { CNNCORE_AVX512_WGRAD_ROWS4(2, 3) } }
        else if (FV == 1) { switch (RB) { CNNCORE_AVX512_WGRAD_ROWS4(1, 5) } }
        else { switch (RB) { CNNCORE_AVX512_WGRAD_ROWS2(2, 5) } }
    }
}

#else

static void cnncore_avx512_copy_into_padded(const float* src, const float* mask, float* dst,
                                            Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                                            Py_ssize_t pad, Py_ssize_t PW)
{
}

static void cnncore_avx512_image_float(const float* xp, Py_ssize_t C, Py_ssize_t PH,
                                       Py_ssize_t PW, const float* w, Py_ssize_t w_next,
                                       Py_ssize_t FH, Py_ssize_t FW, Py_ssize_t s,
                                       const float* bias, int relu, float* out, Py_ssize_t nf,
                                       Py_ssize_t OH, Py_ssize_t OW)
{
}

static void cnncore_avx512_image_double(const double* xp, Py_ssize_t C, Py_ssize_t PH,
                                        Py_ssize_t PW, const double* w, Py_ssize_t w_next,
                                        Py_ssize_t FH, Py_ssize_t FW, Py_ssize_t s,
                                        const double* bias, int relu, double* out, Py_ssize_t nf,
                                        Py_ssize_t OH, Py_ssize_t OW)
{
}

static void cnncore_avx512_grad_lines(const float* dout, const float* out, int relu,
                                      Py_ssize_t nf, Py_ssize_t L, int FV, float* dT, float* db)
{
}

static void cnncore_avx512_wgrad_image(const float* xp, Py_ssize_t C, Py_ssize_t PH,
                                       Py_ssize_t PW, Py_ssize_t FH, Py_ssize_t FW,
                                       const float* dT, int FV, Py_ssize_t OH, Py_ssize_t OW,
                                       float* sums, Py_ssize_t sum_row)
{
}

#endif
