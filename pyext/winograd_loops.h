/* The inner loops of pyext/winograd.pyx, included there once per element type: WG_T is float or
 * double and WG_NAME(x) gives the function's name for that type.
 *
 * They are C for one reason: to tell the compiler that their many pointers never overlap
 * (restrict, and `omp simd` where the stores go through one pointer at run-time distances), so that
 * it vectorises the loops over tiles; with this many possibly-aliased pointers it does not try.
 * Without OpenMP the pragma is ignored and the loop runs as written.
 */

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

/* A plane's Tp tiles: m[xi*xs + q] -> y[k*Tp + q] = (A^T m A)[k], k = 2*row + column of the 2x2
 * output tile. */
static void WG_NAME(out_plane)(const WG_T* __restrict m, Py_ssize_t xs, Py_ssize_t Tp,
                               WG_T* __restrict y)
{
    Py_ssize_t q;
    for (q = 0; q < Tp; q++) {
        /* A across each row a of m: s_a0 = m_a0 + m_a1 + m_a2, s_a1 = m_a1 - m_a2 - m_a3 */
        WG_T s00 = m[0 * xs + q] + m[1 * xs + q] + m[2 * xs + q], s01 = m[1 * xs + q] - m[2 * xs + q] - m[3 * xs + q];
        WG_T s10 = m[4 * xs + q] + m[5 * xs + q] + m[6 * xs + q], s11 = m[5 * xs + q] - m[6 * xs + q] - m[7 * xs + q];
        WG_T s20 = m[8 * xs + q] + m[9 * xs + q] + m[10 * xs + q], s21 = m[9 * xs + q] - m[10 * xs + q] - m[11 * xs + q];
        WG_T s30 = m[12 * xs + q] + m[13 * xs + q] + m[14 * xs + q], s31 = m[13 * xs + q] - m[14 * xs + q] - m[15 * xs + q];
        /* A^T down */
        y[q] = s00 + s10 + s20;
        y[Tp + q] = s01 + s11 + s21;
        y[2 * Tp + q] = s10 - s20 - s30;
        y[3 * Tp + q] = s11 - s21 - s31;
    }
}

/* line[2*tx] = left[tx], line[2*tx + 1] = right[tx]. */
static void WG_NAME(interleave)(const WG_T* __restrict left, const WG_T* __restrict right,
                                Py_ssize_t TW, WG_T* __restrict line)
{
    Py_ssize_t tx;
    for (tx = 0; tx < TW; tx++) {
        line[2 * tx] = left[tx];
        line[2 * tx + 1] = right[tx];
    }
}
