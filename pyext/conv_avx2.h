/* Direct convolution of one float32 image, for pyext/conv_avx2.pyx: 16 filters at a time
 * (cnncore_avx2_image), or 8 neighbouring outputs at a time (cnncore_avx2_rows_image, below, with
 * that layout's gradients after it).
 *
 * With few input channels, im2col + GEMM moves as many bytes as it multiplies: the columns are
 * written, packed by the BLAS and read again for a product with M = FN of 8-32 and K = C*FH*FW of
 * only 64-288 (the layers cnncore._conv.select sends here). Here each output is summed in registers
 * straight from the zero-padded image: 6 outputs of a row times 16 filters in 12 vector
 * accumulators, each step one input value broadcast times two vectors of 8 weights (fused
 * multiply-add).
 *
 * Written with GCC/clang vector extensions and compiled for AVX2 + FMA through a target attribute,
 * so the rest of the build stays baseline x86-64; cpu_features.h says at run time
 * whether this CPU (and compiler) has it. Elsewhere (MSVC, other architectures) it is 0 and the
 * kernel is an empty function that nothing calls: the caller then takes im2col + GEMM.
 */
#include <string.h>

/* Most vectors of 8 outputs in an output row of cnncore_avx2_rows_image: 32 * 8 = 256 outputs. */
#define CNNCORE_AVX2_ROWS_MAX_VECTORS 32

#include "cpu_features.h"

#if CNNCORE_X86_TARGETS

#include <immintrin.h>

typedef float cnncore_v8f __attribute__((vector_size(32), aligned(4)));

/* PB (1..6) outputs of one row, at x (the padded image at the first output's window), for the
 * block of 16 filters whose weights start at w, laid out (C, FH, FW, 16). Writes filters 0..nf-1
 * to o[f*L + p], with bias and (relu) ReLU; NaN stays NaN. PB is a constant at each call site. */
static inline __attribute__((always_inline)) void
cnncore_avx2_block(const float* x, Py_ssize_t PHW, Py_ssize_t PW, const float* w,
                   Py_ssize_t C, Py_ssize_t FH, Py_ssize_t FW, Py_ssize_t s,
                   float* o, Py_ssize_t L, int PB, Py_ssize_t nf, const float* bias, int relu)
{
    cnncore_v8f lo[6], hi[6];
    float t[16], v;
    Py_ssize_t c, ky, kx, f;
    int p;
    for (p = 0; p < PB; p++) {
        lo[p] = (cnncore_v8f){0};
        hi[p] = (cnncore_v8f){0};
    }
    for (c = 0; c < C; c++) {
        for (ky = 0; ky < FH; ky++) {
            const float* line = x + c * PHW + ky * PW;
            for (kx = 0; kx < FW; kx++) {
                cnncore_v8f w_lo = *(const cnncore_v8f*)w;
                cnncore_v8f w_hi = *(const cnncore_v8f*)(w + 8);
                w += 16;
                for (p = 0; p < PB; p++) {
                    v = line[kx + p * s];
                    lo[p] += v * w_lo;
                    hi[p] += v * w_hi;
                }
            }
        }
    }
    for (p = 0; p < PB; p++) {
        memcpy(t, &lo[p], sizeof lo[p]);
        memcpy(t + 8, &hi[p], sizeof hi[p]);
        for (f = 0; f < nf; f++) {
            v = t[f] + bias[f];
            o[f * L + p] = (relu && v <= 0) ? 0 : v;
        }
    }
}

/* Outputs of one row a block of filters computes before copying them out: stored at a distance of
 * CNNCORE_AVX2_ROW floats per filter, not the output planes' OH*OW: at 32x32 outputs the planes
 * are 4 KiB apart, and the 16 filters' stores would all fall on one set of the L1 cache. */
#define CNNCORE_AVX2_ROW 96

#define CNNCORE_AVX2_BLOCK(PB) \
    cnncore_avx2_block(line + ox * s, PHW, PW, w, C, FH, FW, s, staged + ox - start, \
                       CNNCORE_AVX2_ROW, PB, nf, bias, relu)

/* out (nf, OH, OW) = act(conv(xp, w) + bias) for one zero-padded image xp (C, PH, PW) and one block
 * of 16 filters w (C, FH, FW, 16), of which the first nf are real. Rows are done CNNCORE_AVX2_ROW
 * outputs at a time, cut into blocks of at most 6 whose sizes differ by at most one (14 = 5 + 5 + 4,
 * not 6 + 6 + 2: a block of few outputs loads its weights for few multiply-adds). */
__attribute__((target("avx2,fma")))
static void cnncore_avx2_image(const float* xp, Py_ssize_t C, Py_ssize_t PH, Py_ssize_t PW,
                               const float* w, Py_ssize_t FH, Py_ssize_t FW, Py_ssize_t s,
                               const float* bias, int relu,
                               float* out, Py_ssize_t nf, Py_ssize_t OH, Py_ssize_t OW)
{
    float staged[16 * CNNCORE_AVX2_ROW];
    Py_ssize_t PHW = PH * PW, L = OH * OW, oy, start, width, n_blocks, k, ox, PB, f;
    for (oy = 0; oy < OH; oy++) {
        const float* line = xp + oy * s * PW;
        for (start = 0; start < OW; start += width) {
            width = OW - start < CNNCORE_AVX2_ROW ? OW - start : CNNCORE_AVX2_ROW;
            n_blocks = (width + 5) / 6;
            for (k = 0, ox = start; k < n_blocks; k++, ox += PB) {
                PB = (width * (k + 1)) / n_blocks - (width * k) / n_blocks;
                switch (PB) {
                case 6: CNNCORE_AVX2_BLOCK(6); break;
                case 5: CNNCORE_AVX2_BLOCK(5); break;
                case 4: CNNCORE_AVX2_BLOCK(4); break;
                case 3: CNNCORE_AVX2_BLOCK(3); break;
                case 2: CNNCORE_AVX2_BLOCK(2); break;
                default: CNNCORE_AVX2_BLOCK(1); break;
                }
            }
            for (f = 0; f < nf; f++)
                memcpy(out + f * L + oy * OW + start, staged + f * CNNCORE_AVX2_ROW,
                       width * sizeof(float));
        }
    }
}

/* The kernel above keeps 16 filters in each register, so each output costs a scalar store and
 * each block loads C*FH*FW*16 weights: with very few weights per filter (SimpleConvNet's 25,
 * DeepConvNet conv1's 9) the stores and loads outweigh the multiply-adds. The kernel below keeps
 * 8 neighbouring outputs of one filter in each register instead (stride 1): each step is one
 * weight broadcast times PV vectors of the input row, and the outputs go to their planes as whole
 * vectors. PV (1..3) vectors of outputs starting at o (the output row, each vector at pos[v]) for
 * the FB (1..4) filters whose weights start at w, laid out (FB, C*FH*FW); x is the padded image at
 * the row's first window. PV and FB are constants at each call site. */
typedef int cnncore_v8i __attribute__((vector_size(32), aligned(4)));

static inline __attribute__((always_inline)) void
cnncore_avx2_rows_block(const float* x, Py_ssize_t PHW, Py_ssize_t PW, const float* w,
                        Py_ssize_t C, Py_ssize_t FH, Py_ssize_t FW, const Py_ssize_t* pos,
                        float* o, Py_ssize_t L, int PV, int FB, const float* bias, int relu)
{
    cnncore_v8f acc[4][3], in[3], v;
    cnncore_v8i keep;
    Py_ssize_t c, ky, kx, K = C * FH * FW, k = 0;
    int f, p;
    for (f = 0; f < FB; f++)
        for (p = 0; p < PV; p++)
            acc[f][p] = (cnncore_v8f){0};
    for (c = 0; c < C; c++) {
        for (ky = 0; ky < FH; ky++) {
            const float* line = x + c * PHW + ky * PW;
            for (kx = 0; kx < FW; kx++, k++) {
                for (p = 0; p < PV; p++)
                    in[p] = *(const cnncore_v8f*)(line + pos[p] + kx);
                for (f = 0; f < FB; f++) {
                    float weight = w[f * K + k];
                    for (p = 0; p < PV; p++)
                        acc[f][p] += weight * in[p];
                }
            }
        }
    }
    for (f = 0; f < FB; f++) {
        for (p = 0; p < PV; p++) {
            v = acc[f][p] + bias[f];
            if (relu) {   /* keep v > 0 and NaN, zero the rest */
                keep = (v > 0) | (v != v);
                v = (cnncore_v8f)((cnncore_v8i)v & keep);
            }
            *(cnncore_v8f*)(o + f * L + pos[p]) = v;
        }
    }
}

#define CNNCORE_AVX2_ROWS_BLOCK(PV, FB) \
    cnncore_avx2_rows_block(line, PHW, PW, w + f * K, C, FH, FW, pos + v, \
                            out + f * L + oy * OW, L, PV, FB, bias + f, relu)

#define CNNCORE_AVX2_ROWS_FILTERS(PV) \
    for (f = 0; f < FN; f += 4) { \
        switch (FN - f < 4 ? FN - f : 4) { \
        case 4: CNNCORE_AVX2_ROWS_BLOCK(PV, 4); break; \
        case 3: CNNCORE_AVX2_ROWS_BLOCK(PV, 3); break; \
        case 2: CNNCORE_AVX2_ROWS_BLOCK(PV, 2); break; \
        default: CNNCORE_AVX2_ROWS_BLOCK(PV, 1); break; \
        } \
    }

/* out (FN, OH, OW) = act(conv(xp, w) + bias), stride 1, for one zero-padded image xp (C, PH, PW)
 * and the filters w (FN, C*FH*FW), 8 <= OW <= 8 * CNNCORE_AVX2_ROWS_MAX_VECTORS. A row's vectors
 * start at 0, 8, 16, ... and the last at OW - 8, overlapping its neighbour when 8 does not divide
 * OW: the shared outputs are computed twice, the same way, so they are written twice alike. */
__attribute__((target("avx2,fma")))
static void cnncore_avx2_rows_image(const float* xp, Py_ssize_t C, Py_ssize_t PH, Py_ssize_t PW,
                                    const float* w, Py_ssize_t FH, Py_ssize_t FW,
                                    const float* bias, int relu,
                                    float* out, Py_ssize_t FN, Py_ssize_t OH, Py_ssize_t OW)
{
    Py_ssize_t pos[CNNCORE_AVX2_ROWS_MAX_VECTORS];
    Py_ssize_t PHW = PH * PW, L = OH * OW, K = C * FH * FW, n_vec = (OW + 7) / 8, oy, v, f;
    for (v = 0; v < n_vec; v++)
        pos[v] = 8 * v < OW - 8 ? 8 * v : OW - 8;
    for (oy = 0; oy < OH; oy++) {
        const float* line = xp + oy * PW;
        for (v = 0; v < n_vec; v += 3) {
            switch (n_vec - v < 3 ? n_vec - v : 3) {
            case 3: CNNCORE_AVX2_ROWS_FILTERS(3); break;
            case 2: CNNCORE_AVX2_ROWS_FILTERS(2); break;
            default: CNNCORE_AVX2_ROWS_FILTERS(1); break;
            }
        }
    }
}

/* The weight gradient in the same layout (stride 1): dW[f, k] = sum over outputs (oy, ox) of
 * d[f, oy, ox] * x[tap k + (oy, ox)], with tap k = (c, ky, kx). im2col + GEMM writes the unfolded
 * columns and gathers d into the GEMM's layout, then the BLAS packs both again for a product whose
 * inner dimension (n*OH*OW) is long and whose result is small (FN x K). Here FB filters times KB
 * taps are summed in FB*KB vector accumulators over an image's outputs, 8 neighbouring outputs per
 * vector: each step loads FB vectors of d and KB of the image for FB*KB multiply-adds.
 *
 * d comes as rows of at least n_vec*8 (the outputs, then zeros), drow apart, and the padded image
 * as rows of PW = n_vec*8 + FW - 1 (zeros past the padded image), so that every vector is whole. The zero
 * lanes of d meet cells outside the row's windows: finite, they add nothing; an infinity there
 * makes NaN, and the caller computes a result that is not finite again by im2col + GEMM. */
static inline __attribute__((always_inline)) void
cnncore_avx2_rows_wgrad_block(const float* xp, Py_ssize_t PW, const Py_ssize_t* tap,
                              const float* d, Py_ssize_t drow, Py_ssize_t plane, Py_ssize_t OH,
                              Py_ssize_t n_vec, cnncore_v8f* sums, Py_ssize_t K, int FB, int KB)
{
    cnncore_v8f acc[4][3], dv[4], xv;
    Py_ssize_t oy, p, row = n_vec * 8;
    int f, k;
    for (f = 0; f < FB; f++)
        for (k = 0; k < KB; k++)
            acc[f][k] = (cnncore_v8f){0};
    for (oy = 0; oy < OH; oy++) {
        const float* x_line = xp + oy * PW;
        const float* d_line = d + oy * drow;
        for (p = 0; p < row; p += 8) {
            for (f = 0; f < FB; f++)
                dv[f] = *(const cnncore_v8f*)(d_line + f * plane + p);
            for (k = 0; k < KB; k++) {
                xv = *(const cnncore_v8f*)(x_line + tap[k] + p);
                for (f = 0; f < FB; f++)
                    acc[f][k] += dv[f] * xv;
            }
        }
    }
    for (f = 0; f < FB; f++)
        for (k = 0; k < KB; k++)
            sums[f * K + k] += acc[f][k];
}

#define CNNCORE_AVX2_WGRAD_BLOCK(FB, KB) \
    cnncore_avx2_rows_wgrad_block(xp, PW, tap + k, d + f * plane, drow, plane, OH, n_vec, \
                                  sums + f * K + k, K, FB, KB)

#define CNNCORE_AVX2_WGRAD_TAPS(FB) \
    for (b = 0, k = 0; b < n_blocks; b++, k += KB) { \
        KB = (K * (b + 1)) / n_blocks - (K * b) / n_blocks; \
        switch (KB) { \
        case 3: CNNCORE_AVX2_WGRAD_BLOCK(FB, 3); break; \
        case 2: CNNCORE_AVX2_WGRAD_BLOCK(FB, 2); break; \
        default: CNNCORE_AVX2_WGRAD_BLOCK(FB, 1); break; \
        } \
    }

/* sums (FN, K) vectors += the lane sums of one image's dW (see above): xp the padded image, rows of
 * PW, tap[k] the offset of tap k in it; d (FN, OH, n_vec*8) at row and plane strides drow, plane. Filters go in blocks of 4, taps in
 * blocks of at most 3 whose sizes differ by at most one (a block of one tap loads as much as it
 * multiplies); 4 x 3 keeps the most accumulators in registers without spilling (docs/kernels.md). */
__attribute__((target("avx2,fma")))
static void cnncore_avx2_rows_wgrad_image(const float* xp, Py_ssize_t PW, const Py_ssize_t* tap,
                                          Py_ssize_t K, const float* d, Py_ssize_t drow,
                                          Py_ssize_t plane, Py_ssize_t FN, Py_ssize_t OH,
                                          Py_ssize_t n_vec, float* sums_)
{
    cnncore_v8f* sums = (cnncore_v8f*)sums_;
    Py_ssize_t n_blocks = (K + 2) / 3, f, k, b, KB;
    for (f = 0; f + 4 <= FN; f += 4)
        CNNCORE_AVX2_WGRAD_TAPS(4)
    switch (FN - f) {
    case 3: CNNCORE_AVX2_WGRAD_TAPS(3); break;
    case 2: CNNCORE_AVX2_WGRAD_TAPS(2); break;
    case 1: CNNCORE_AVX2_WGRAD_TAPS(1); break;
    }
}

/* d (FN, OH, OW) at row and plane strides drow, plane = one image's dout (FN, OH, OW), OW >= 8,
 * zeroed where out <= 0 when relu (NaN in out keeps the gradient, as the textbook's mask); db (FN)
 * vectors += the lane sums of d's rows taken n_vec*8 wide. Only the outputs are written: the cells
 * around them (each row's n_vec*8 - OW past its end included) are zeros the caller keeps. A row's
 * last vector starts at OW - 8, as in the forward: it writes the cells its neighbour wrote, alike.
 * Loads are whole vectors: written as a conditional read of dout, the compiler made masked loads
 * of it (vmaskmovps), which took 28 % of the time. */
__attribute__((target("avx2,fma")))
static void cnncore_avx2_rows_grad_lines(const float* dout, const float* out, int relu,
                                         Py_ssize_t FN, Py_ssize_t OH, Py_ssize_t OW,
                                         Py_ssize_t n_vec, float* d, Py_ssize_t drow,
                                         Py_ssize_t plane, float* db_)
{
    cnncore_v8f* db = (cnncore_v8f*)db_;
    cnncore_v8f sum, g;
    cnncore_v8i drop;
    Py_ssize_t f, oy, ox, p;
    for (f = 0; f < FN; f++) {
        sum = (cnncore_v8f){0};
        for (oy = 0; oy < OH; oy++) {
            const float* g_line = dout + (f * OH + oy) * OW;
            const float* o_line = out + (f * OH + oy) * OW;
            float* line = d + f * plane + oy * drow;
            for (ox = 0; ox < OW; ox += 8) {
                p = ox < OW - 8 ? ox : OW - 8;
                g = *(const cnncore_v8f*)(g_line + p);
                if (relu) {
                    drop = *(const cnncore_v8f*)(o_line + p) <= 0;
                    g = (cnncore_v8f)((cnncore_v8i)g & ~drop);
                }
                *(cnncore_v8f*)(line + p) = g;
            }
            for (ox = 0; ox < n_vec * 8; ox += 8)
                sum += *(const cnncore_v8f*)(line + ox);
        }
        db[f] += sum;
    }
}

/* The input gradient in the row layout (stride 1): dx[c, y, x] = sum over f, ky, kx of
 * W[f, c, ky, kx] * d[f, y + pad - ky, x + pad - kx], d taken as zero outside its OH x OW cells.
 * im2col + GEMM multiplies d by the filters into columns (C*FH*FW of them per output) and then adds
 * the columns into dx; here 8 neighbouring cells of dx are summed in each vector register, R rows
 * times V vectors of them at once, each step one weight broadcast times R*V vectors of d. With a
 * single input channel (SimpleConvNet's layer) the forward's blocking, over filters, would leave one
 * chain of dependent multiply-adds per vector. */
static inline __attribute__((always_inline)) void
cnncore_avx2_rows_dx_block(const float* d, Py_ssize_t drow, Py_ssize_t plane, const float* w,
                           Py_ssize_t FN, Py_ssize_t FH, Py_ssize_t FW, const Py_ssize_t* pos,
                           float* o, Py_ssize_t W, int R, int V)
{
    cnncore_v8f acc[4][3];
    Py_ssize_t f, ky, kx;
    int r, v;
    for (r = 0; r < R; r++)
        for (v = 0; v < V; v++)
            acc[r][v] = (cnncore_v8f){0};
    for (f = 0; f < FN; f++) {
        for (ky = 0; ky < FH; ky++) {
            const float* line = d + f * plane - ky * drow;
            for (kx = 0; kx < FW; kx++) {
                float weight = *w++;
                for (r = 0; r < R; r++)
                    for (v = 0; v < V; v++)
                        acc[r][v] += weight * *(const cnncore_v8f*)(line + r * drow + pos[v] - kx);
            }
        }
    }
    for (r = 0; r < R; r++)
        for (v = 0; v < V; v++)
            *(cnncore_v8f*)(o + r * W + pos[v]) = acc[r][v];
}

/* The same sums for filters of FH rows (a constant: 3 or 5) and V (1..2) vectors: each row of d
 * loaded once serves every (output row, filter row) pair it meets, instead of being loaded again for
 * each (5x5, 4 rows x 2 vectors: 16 loads of d and 5 broadcasts per 40 multiply-adds, against 40
 * and 5 above). The loops are unrolled whole, so that acc's indices are constants and acc stays in
 * registers; the weights are broadcast with vbroadcastss (written as a vector of 8 copies, GCC built
 * it with 7 inserts, which cost what the saved loads gained). */
static inline __attribute__((always_inline, target("avx2,fma"))) void
cnncore_avx2_rows_dx_reuse(const float* d, Py_ssize_t drow, Py_ssize_t plane, const float* w,
                           Py_ssize_t FN, int FH, Py_ssize_t FW, const Py_ssize_t* pos,
                           float* o, Py_ssize_t W, int R, int V)
{
    cnncore_v8f acc[4][2], wv[5], in[2];
    const Py_ssize_t p0 = pos[0], p1 = pos[V - 1];
    Py_ssize_t f, kx;
    int r, v, ky, j;
    for (r = 0; r < R; r++)
        for (v = 0; v < V; v++)
            acc[r][v] = (cnncore_v8f){0};
    for (f = 0; f < FN; f++) {
        for (kx = 0; kx < FW; kx++) {
            const float* line = d + f * plane - (FH - 1) * drow - kx;
#pragma GCC unroll 5
            for (ky = 0; ky < FH; ky++)
                wv[ky] = (cnncore_v8f)_mm256_broadcast_ss(w + (f * FH + ky) * FW + kx);
#pragma GCC unroll 8
            for (j = 0; j < R + FH - 1; j++, line += drow) {   /* row j of d: output r, filter row ky */
                in[0] = *(const cnncore_v8f*)(line + p0);
                if (V == 2)
                    in[1] = *(const cnncore_v8f*)(line + p1);
#pragma GCC unroll 5
                for (ky = 0; ky < FH; ky++) {
                    r = j + ky - (FH - 1);
                    if (r >= 0 && r < R) {
                        acc[r][0] += wv[ky] * in[0];
                        if (V == 2)
                            acc[r][1] += wv[ky] * in[1];
                    }
                }
            }
        }
    }
    for (r = 0; r < R; r++)
        for (v = 0; v < V; v++)
            *(cnncore_v8f*)(o + r * W + pos[v]) = acc[r][v];
}

#define CNNCORE_AVX2_DX_REUSE(KH, R, V) \
    cnncore_avx2_rows_dx_reuse(d + (y + pad) * drow + pad, drow, plane, w + c * FN * FH * FW, \
                               FN, KH, FW, pos + v, dx + (c * H + y) * W, W, R, V)

#define CNNCORE_AVX2_DX_BLOCK(R, V) \
    cnncore_avx2_rows_dx_block(d + (y + pad) * drow + pad, drow, plane, w + c * FN * FH * FW, \
                               FN, FH, FW, pos + v, dx + (c * H + y) * W, W, R, V)

#define CNNCORE_AVX2_DX_ROWS(V) \
    switch (R) { \
    case 4: CNNCORE_AVX2_DX_BLOCK(4, V); break; \
    case 3: CNNCORE_AVX2_DX_BLOCK(3, V); break; \
    case 2: CNNCORE_AVX2_DX_BLOCK(2, V); break; \
    default: CNNCORE_AVX2_DX_BLOCK(1, V); break; \
    }

#define CNNCORE_AVX2_DX_REUSE_ROWS(KH, V) \
    switch (R) { \
    case 4: CNNCORE_AVX2_DX_REUSE(KH, 4, V); break; \
    case 3: CNNCORE_AVX2_DX_REUSE(KH, 3, V); break; \
    case 2: CNNCORE_AVX2_DX_REUSE(KH, 2, V); break; \
    default: CNNCORE_AVX2_DX_REUSE(KH, 1, V); break; \
    }

/* dx (C, H, W) of one image, 8 <= W <= 8 * CNNCORE_AVX2_ROWS_MAX_VECTORS, from d (FN, OH, OW) at row
 * and plane strides drow, plane, with at least max(0, FH - 1 - pad) rows and max(0, FW - 1 - pad)
 * columns of zeros around it (the cells the sums read outside d), and the filters w (C, FN, FH, FW).
 * Rows go in blocks of at most 4 and vectors in strips of at most 3 (2 for 3x3 and 5x5 filters),
 * both of sizes differing by at most one. The last vector of a row starts at W - 8, as in the
 * forward. Blocks without reuse are bound by their loads (about one multiply-add per cycle); each
 * loaded vector of d now serves every row of a block. */
__attribute__((target("avx2,fma")))
static void cnncore_avx2_rows_dx_image(const float* d, Py_ssize_t drow, Py_ssize_t plane,
                                       Py_ssize_t pad, const float* w, Py_ssize_t C,
                                       Py_ssize_t FN, Py_ssize_t FH, Py_ssize_t FW,
                                       float* dx, Py_ssize_t H, Py_ssize_t W)
{
    Py_ssize_t pos[CNNCORE_AVX2_ROWS_MAX_VECTORS];
    int reuse = FH == 3 || FH == 5;
    Py_ssize_t n_vec = (W + 7) / 8, n_row_blocks = (H + 3) / 4;
    Py_ssize_t n_strips = reuse ? (n_vec + 1) / 2 : (n_vec + 2) / 3;
    Py_ssize_t c, y, v, i, j, R, V;
    for (v = 0; v < n_vec; v++)
        pos[v] = 8 * v < W - 8 ? 8 * v : W - 8;
    for (c = 0; c < C; c++) {
        for (i = 0, y = 0; i < n_row_blocks; i++, y += R) {
            R = (H * (i + 1)) / n_row_blocks - (H * i) / n_row_blocks;
            for (j = 0, v = 0; j < n_strips; j++, v += V) {
                V = (n_vec * (j + 1)) / n_strips - (n_vec * j) / n_strips;
                if (reuse) {
                    if (FH == 3 && V == 2) { CNNCORE_AVX2_DX_REUSE_ROWS(3, 2) }
                    else if (FH == 3) { CNNCORE_AVX2_DX_REUSE_ROWS(3, 1) }
                    else if (V == 2) { CNNCORE_AVX2_DX_REUSE_ROWS(5, 2) }
                    else { CNNCORE_AVX2_DX_REUSE_ROWS(5, 1) }
                    continue;
                }
                switch (V) {
                case 3: CNNCORE_AVX2_DX_ROWS(3); break;
                case 2: CNNCORE_AVX2_DX_ROWS(2); break;
                default: CNNCORE_AVX2_DX_ROWS(1); break;
                }
            }
        }
    }
}

#else

static void cnncore_avx2_image(const float* xp, Py_ssize_t C, Py_ssize_t PH, Py_ssize_t PW,
                               const float* w, Py_ssize_t FH, Py_ssize_t FW, Py_ssize_t s,
                               const float* bias, int relu,
                               float* out, Py_ssize_t nf, Py_ssize_t OH, Py_ssize_t OW)
{
}

static void cnncore_avx2_rows_image(const float* xp, Py_ssize_t C, Py_ssize_t PH, Py_ssize_t PW,
                                    const float* w, Py_ssize_t FH, Py_ssize_t FW,
                                    const float* bias, int relu,
                                    float* out, Py_ssize_t FN, Py_ssize_t OH, Py_ssize_t OW)
{
}

static void cnncore_avx2_rows_wgrad_image(const float* xp, Py_ssize_t PW, const Py_ssize_t* tap,
                                          Py_ssize_t K, const float* d, Py_ssize_t drow,
                                          Py_ssize_t plane, Py_ssize_t FN, Py_ssize_t OH,
                                          Py_ssize_t n_vec, float* sums_)
{
}

static void cnncore_avx2_rows_grad_lines(const float* dout, const float* out, int relu,
                                         Py_ssize_t FN, Py_ssize_t OH, Py_ssize_t OW,
                                         Py_ssize_t n_vec, float* d, Py_ssize_t drow,
                                         Py_ssize_t plane, float* db_)
{
}

static void cnncore_avx2_rows_dx_image(const float* d, Py_ssize_t drow, Py_ssize_t plane,
                                       Py_ssize_t pad, const float* w, Py_ssize_t C,
                                       Py_ssize_t FN, Py_ssize_t FH, Py_ssize_t FW,
                                       float* dx, Py_ssize_t H, Py_ssize_t W)
{
}

#endif
