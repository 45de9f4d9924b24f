/* The forward of pyext/conv_avx512.h, written once for float32 and float64: the includer defines
 * CNNCORE_T (the element type), CNNCORE_N (its lanes in 512 bits: 16 or 8), CNNCORE_NAME(name)
 * (name with the type's suffix) and CNNCORE_KEEP(v) (v with the lanes where v <= 0 zeroed, NaN
 * kept: the ReLU, a compare into a mask register). A block of filters is CNNCORE_N of them. */

typedef CNNCORE_T CNNCORE_NAME(cnncore_avx512_vec) __attribute__((vector_size(64), aligned(sizeof(CNNCORE_T))));
#define CNNCORE_VEC CNNCORE_NAME(cnncore_avx512_vec)

/* PB outputs of one row at x (the padded image at the first output's window, inputs S apart; S = 0:
 * s apart) times FV blocks of CNNCORE_N filters, the second block's weights w_next elements after
 * the first's, each laid out (C, FH, FW, CNNCORE_N). Writes act(sum + bias) to
 * staged[p*2N + N*v + j], bias holding N*FV values. FV, PB and S are constants at each call site. */
static inline __attribute__((always_inline, target("avx512f"))) void
CNNCORE_NAME(cnncore_avx512_block)(const CNNCORE_T* x, Py_ssize_t PHW, Py_ssize_t PW,
                                   const CNNCORE_T* w, Py_ssize_t w_next, Py_ssize_t C,
                                   Py_ssize_t FH, Py_ssize_t FW, Py_ssize_t s,
                                   const CNNCORE_T* bias, int relu, CNNCORE_T* staged,
                                   int FV, int PB, int S)
{
    CNNCORE_VEC acc[2][CNNCORE_AVX512_MAX_PB], w0, w1 = {0}, v;
    Py_ssize_t c, ky, kx, step = S ? S : s;
    int f, p;
    for (p = 0; p < PB; p++) {
        acc[0][p] = (CNNCORE_VEC){0};
        acc[1][p] = (CNNCORE_VEC){0};
    }
    for (c = 0; c < C; c++) {
        for (ky = 0; ky < FH; ky++) {
            const CNNCORE_T* line = x + c * PHW + ky * PW;
            for (kx = 0; kx < FW; kx++, w += CNNCORE_N) {
                w0 = *(const CNNCORE_VEC*)w;
                if (FV == 2)
                    w1 = *(const CNNCORE_VEC*)(w + w_next);
                for (p = 0; p < PB; p++) {
                    CNNCORE_T in = line[kx + p * step];
                    acc[0][p] += in * w0;
                    if (FV == 2)
                        acc[1][p] += in * w1;
                }
            }
        }
    }
    for (f = 0; f < FV; f++) {
        for (p = 0; p < PB; p++) {
            v = acc[f][p] + *(const CNNCORE_VEC*)(bias + CNNCORE_N * f);
            if (relu)
                v = CNNCORE_KEEP(v);
            *(CNNCORE_VEC*)(staged + 2 * CNNCORE_N * p + CNNCORE_N * f) = v;
        }
    }
}

#define CNNCORE_AVX512_BLOCK(FV, PB, S) \
    CNNCORE_NAME(cnncore_avx512_block)(line + ox * s, PHW, PW, w, w_next, C, FH, FW, s, bias, \
                                       relu, staged + 2 * CNNCORE_N * (ox - start), FV, PB, S)

#define CNNCORE_AVX512_SIZES(FV, S) \
    switch (PB) { \
    case 12: CNNCORE_AVX512_BLOCK(FV, 12, S); break; \
    case 11: CNNCORE_AVX512_BLOCK(FV, 11, S); break; \
    case 10: CNNCORE_AVX512_BLOCK(FV, 10, S); break; \
    case 9: CNNCORE_AVX512_BLOCK(FV, 9, S); break; \
    case 8: CNNCORE_AVX512_BLOCK(FV, 8, S); break; \
    case 7: CNNCORE_AVX512_BLOCK(FV, 7, S); break; \
    case 6: CNNCORE_AVX512_BLOCK(FV, 6, S); break; \
    case 5: CNNCORE_AVX512_BLOCK(FV, 5, S); break; \
    case 4: CNNCORE_AVX512_BLOCK(FV, 4, S); break; \
    case 3: CNNCORE_AVX512_BLOCK(FV, 3, S); break; \
    case 2: CNNCORE_AVX512_BLOCK(FV, 2, S); break; \
    default: CNNCORE_AVX512_BLOCK(FV, 1, S); break; \
    }

/* out (nf, OH, OW) = act(conv(xp, w) + bias) for one zero-padded image xp (C, PH, PW) and nf
 * (1..2N) filters: the first N packed at w, the next N (when nf > N) w_next elements after, as
 * (C, FH, FW, N) blocks, and their biases (2N values, zeros past nf). Rows are done
 * CNNCORE_AVX512_ROW outputs at a time, cut into blocks of at most CNNCORE_AVX512_MAX_PB whose
 * sizes differ by at most one. act: ReLU (v <= 0 -> 0, NaN kept) when relu, else identity. */
__attribute__((target("avx512f")))
static void CNNCORE_NAME(cnncore_avx512_image)(const CNNCORE_T* xp, Py_ssize_t C, Py_ssize_t PH,
                                               Py_ssize_t PW, const CNNCORE_T* w,
                                               Py_ssize_t w_next, Py_ssize_t FH, Py_ssize_t FW,
                                               Py_ssize_t s, const CNNCORE_T* bias, int relu,
                                               CNNCORE_T* out, Py_ssize_t nf, Py_ssize_t OH,
                                               Py_ssize_t OW)
{
    CNNCORE_T staged[2 * CNNCORE_N * CNNCORE_AVX512_ROW];
    Py_ssize_t PHW = PH * PW, L = OH * OW, oy, start, width, n_blocks, k, ox, PB, f, p;
    for (oy = 0; oy < OH; oy++) {
        const CNNCORE_T* line = xp + oy * s * PW;
        for (start = 0; start < OW; start += width) {
            width = OW - start < CNNCORE_AVX512_ROW ? OW - start : CNNCORE_AVX512_ROW;
            n_blocks = (width + CNNCORE_AVX512_MAX_PB - 1) / CNNCORE_AVX512_MAX_PB;
            for (k = 0, ox = start; k < n_blocks; k++, ox += PB) {
                PB = (width * (k + 1)) / n_blocks - (width * k) / n_blocks;
                if (nf > CNNCORE_N && s == 1) { CNNCORE_AVX512_SIZES(2, 1) }
                else if (nf > CNNCORE_N) { CNNCORE_AVX512_SIZES(2, 0) }
                else if (s == 1) { CNNCORE_AVX512_SIZES(1, 1) }
                else { CNNCORE_AVX512_SIZES(1, 0) }
            }
            for (f = 0; f < nf; f++) {
                CNNCORE_T* o = out + f * L + oy * OW + start;
                for (p = 0; p < width; p++)
                    o[p] = staged[2 * CNNCORE_N * p + f];
            }
        }
    }
}

#undef CNNCORE_AVX512_SIZES
#undef CNNCORE_AVX512_BLOCK
#undef CNNCORE_VEC
