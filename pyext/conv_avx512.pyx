"""Direct convolution on AVX-512F (see conv_avx512.h): N filters per register (16 in float32, 8
in float64), up to 2N filters times 12 outputs of a row summed in registers from a zero-padded
image; and the float32 gradients of stride-1 layers. The filters come packed in blocks of N, as
for conv_avx2.forward with N = 16:

    w[k, ((c*FH + ky)*FW + kx)*N + j] = W[N*k + j, c, ky, kx]   (0 past the last filter)

Threads own (image, pair of blocks) tasks, so writes never race and results do not depend on the
thread count. Not to be called where the CPU or the compiler lacks AVX-512F (cnncore._cpu says).
"""
from cython.parallel cimport prange, threadid

from _padded cimport copy_into_padded

from cython cimport floating

cdef extern from "conv_avx512.h":
    void cnncore_avx512_copy_into_padded(const float* src, const float* mask, float* dst, Py_ssize_t C,
                                         Py_ssize_t H, Py_ssize_t W, Py_ssize_t pad,
                                         Py_ssize_t PW) noexcept nogil
    void cnncore_avx512_image_float(const float* xp, Py_ssize_t C, Py_ssize_t PH, Py_ssize_t PW,
                                    const float* w, Py_ssize_t w_next, Py_ssize_t FH,
                                    Py_ssize_t FW, Py_ssize_t s, const float* bias, int relu,
                                    float* out, Py_ssize_t nf, Py_ssize_t OH,
                                    Py_ssize_t OW) noexcept nogil
    void cnncore_avx512_image_double(const double* xp, Py_ssize_t C, Py_ssize_t PH, Py_ssize_t PW,
                                     const double* w, Py_ssize_t w_next, Py_ssize_t FH,
                                     Py_ssize_t FW, Py_ssize_t s, const double* bias, int relu,
                                     double* out, Py_ssize_t nf, Py_ssize_t OH,
                                     Py_ssize_t OW) noexcept nogil
    void cnncore_avx512_grad_lines(const float* dout, const float* out, int relu,
                                   Py_ssize_t nf, Py_ssize_t L, int FV, float* dT,
                                   float* db) noexcept nogil
    void cnncore_avx512_wgrad_image(const float* xp, Py_ssize_t C, Py_ssize_t PH,
                                    Py_ssize_t PW, Py_ssize_t FH, Py_ssize_t FW,
                                    const float* dT, int FV, Py_ssize_t OH, Py_ssize_t OW,
                                    float* sums, Py_ssize_t sum_row) noexcept nogil


def forward(const floating[:, :, :, ::1] x,      # IN  (n, C, H, W)
            const floating[:, :, :, ::1] mask,   # IN  (n, C, H, W) or None (float32 only)
            const floating[:, ::1] w,            # IN  (n_blocks, C*FH*FW*N), packed as above
            const floating[::1] b,               # IN  (n_blocks*N,) the biases, zeros past FN
            floating[:, :, :, ::1] out,          # OUT (n, FN, OH, OW)
            floating[:, ::1] padded,             # scratch (n_threads, C*(H + 2*pad)*(W + 2*pad)), zeros
            Py_ssize_t filter_h, Py_ssize_t filter_w,
            Py_ssize_t stride, Py_ssize_t pad, bint relu, int n_threads):
    """out[i, f] = act(conv(x_padded[i], W[f]) + b[f]), act = ReLU (x <= 0 -> 0, NaN kept) or
    identity; with mask, x is first zeroed where mask <= 0 (a ReLU's gradient mask). N, the
    filters of a block, is 16 in float32 and 8 in float64.

    padded's borders must be zero: only each image's interior is copied in.
    """
    cdef Py_ssize_t n = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t FN = out.shape[1], OH = out.shape[2], OW = out.shape[3]
    cdef Py_ssize_t PH = H + 2 * pad, PW = W + 2 * pad, N = 16 if floating is float else 8
    cdef Py_ssize_t n_blocks = w.shape[0], n_pairs = (n_blocks + 1) // 2
    cdef Py_ssize_t task, i, k, nf, w_next = w.shape[1]
    cdef bint masked = mask is not None
    cdef const float* m = NULL
    cdef floating* xp
    if n == 0 or FN == 0 or OH == 0 or OW == 0:
        return
    if masked and floating is double:
        raise TypeError("mask is for float32 only")
    with nogil:
        for task in prange(n * n_pairs, schedule="guided", num_threads=n_threads):
            i = task // n_pairs
            k = 2 * (task % n_pairs)
            xp = &padded[threadid(), 0]
            nf = FN - N * k
            if nf > 2 * N:
                nf = 2 * N
            if floating is float:
                m = NULL
                if masked:
                    m = &mask[i, 0, 0, 0]
                cnncore_avx512_copy_into_padded(&x[i, 0, 0, 0], m, xp, C, H, W, pad, PW)
                cnncore_avx512_image_float(xp, C, PH, PW, &w[k, 0], w_next, filter_h, filter_w,
                                           stride, &b[N * k], relu, &out[i, N * k, 0, 0], nf,
                                           OH, OW)
            else:
                copy_into_padded(&x[i, 0, 0, 0], xp, C, H, W, pad, PW)
                cnncore_avx512_image_double(xp, C, PH, PW, &w[k, 0], w_next, filter_h, filter_w,
                                            stride, &b[N * k], relu, &out[i, N * k, 0, 0], nf,
                                            OH, OW)


def weight_grad(const float[:, :, :, ::1] x,      # IN  (N, C, H, W)
                const float[:, :, :, ::1] dout,   # IN  (N, FN, OH, OW), stride 1
                const float[:, :, :, ::1] out,    # IN  (N, FN, OH, OW), read when relu
                const Py_ssize_t[::1] tiles,      # IN  (n_tiles + 1,) first image of each tile, then N
                float[:, :, ::1] sums,            # OUT (n_tiles, C*FH*FW + 1, n_blocks*16), zeros
                float[:, ::1] padded,             # scratch (n_threads, C*(H + 2*pad)*(W + 2*pad)), zeros
                float[:, ::1] d_lines,            # scratch (n_threads, OH*OW*32)
                Py_ssize_t FH, Py_ssize_t FW, Py_ssize_t pad, bint relu, int n_threads):
    """Per tile of images, dW^T and db of a stride-1 layer with FW 3 or 5 (see conv_avx512.h):
    sums[t, (c*FH + ky)*FW + kx, f] = sum over the tile of d[i, f, oy, ox] * x_padded[i, c, oy + ky,
    ox + kx], and sums[t, C*FH*FW, f] = the sum of d[i, f] over the tile, d = dout masked where
    out <= 0 when relu. Threads own whole tiles, so the sums do not depend on the thread count."""
    cdef Py_ssize_t C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t FN = dout.shape[1], OH = dout.shape[2], OW = dout.shape[3], L = OH * OW
    cdef Py_ssize_t PH = H + 2 * pad, PW = W + 2 * pad, K = C * FH * FW
    cdef Py_ssize_t sum_row = sums.shape[2], n_tiles = tiles.shape[0] - 1, t, i, k, nf
    cdef int fv
    cdef float* xp
    cdef float* dT
    if FN == 0 or L == 0 or C == 0:
        return
    with nogil:
        for t in prange(n_tiles, schedule="dynamic", num_threads=n_threads):
            xp = &padded[threadid(), 0]
            dT = &d_lines[threadid(), 0]
            for i in range(tiles[t], tiles[t + 1]):
                cnncore_avx512_copy_into_padded(&x[i, 0, 0, 0], NULL, xp, C, H, W, pad, PW)
                for k in range(0, FN, 32):
                    nf = FN - k
                    if nf > 32:
                        nf = 32
                    fv = 2 if nf > 16 else 1
                    cnncore_avx512_grad_lines(&dout[i, k, 0, 0], &out[i, k, 0, 0], relu, nf, L,
                                              fv, dT, &sums[t, K, k])
                    cnncore_avx512_wgrad_image(xp, C, PH, PW, FH, FW, dT, fv, OH, OW,
                                               &sums[t, 0, k], sum_row)
