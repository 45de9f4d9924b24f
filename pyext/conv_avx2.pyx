"""Direct float32 convolution on AVX2 + FMA, for layers with few input channels.

Each output is summed in registers from the zero-padded image (see conv_avx2.h) instead of
going through unfolded columns and a GEMM. forward keeps 16 filters in a pair of registers, any
stride; forward_rows keeps 8 neighbouring outputs of one filter in a register, stride 1, for filters
of few weights, and backward_rows takes that layout's gradients. forward's filters come packed in
blocks of 16:

    w[k, ((c*FH + ky)*FW + kx)*16 + j] = W[16*k + j, c, ky, kx]   (0 past the last filter)

Threads own (image, block) pairs (forward_rows: images), so writes never race and results do not
depend on the thread count. Neither kernel is to be called where the CPU or the
compiler lacks AVX2 + FMA (cnncore._cpu says).
"""
from cython.parallel cimport prange, threadid
from _padded cimport copy_into_padded

cdef extern from "conv_avx2.h":
    void cnncore_avx2_image(const float* xp, Py_ssize_t C, Py_ssize_t PH, Py_ssize_t PW,
                            const float* w, Py_ssize_t FH, Py_ssize_t FW, Py_ssize_t s,
                            const float* bias, int relu,
                            float* out, Py_ssize_t nf, Py_ssize_t OH, Py_ssize_t OW) noexcept nogil
    void cnncore_avx2_rows_image(const float* xp, Py_ssize_t C, Py_ssize_t PH, Py_ssize_t PW,
                                 const float* w, Py_ssize_t FH, Py_ssize_t FW,
                                 const float* bias, int relu,
                                 float* out, Py_ssize_t FN, Py_ssize_t OH, Py_ssize_t OW) noexcept nogil
    void cnncore_avx2_rows_wgrad_image(const float* xp, Py_ssize_t PW, const Py_ssize_t* tap,
                                       Py_ssize_t K, const float* d, Py_ssize_t drow,
                                       Py_ssize_t plane, Py_ssize_t FN, Py_ssize_t OH,
                                       Py_ssize_t n_vec, float* sums) noexcept nogil
    void cnncore_avx2_rows_grad_lines(const float* dout, const float* out, int relu,
                                      Py_ssize_t FN, Py_ssize_t OH, Py_ssize_t OW,
                                      Py_ssize_t n_vec, float* d, Py_ssize_t drow,
                                      Py_ssize_t plane, float* db) noexcept nogil
    void cnncore_avx2_rows_dx_image(const float* d, Py_ssize_t drow, Py_ssize_t plane,
                                    Py_ssize_t pad, const float* w, Py_ssize_t C,
                                    Py_ssize_t FN, Py_ssize_t FH, Py_ssize_t FW,
                                    float* dx, Py_ssize_t H, Py_ssize_t W) noexcept nogil
    enum: CNNCORE_AVX2_ROWS_MAX_VECTORS


def forward(const float[:, :, :, ::1] x,      # IN  (n, C, H, W)
            const float[:, ::1] w,            # IN  (n_blocks, C*FH*FW*16), packed as above
            const float[::1] b,               # IN  (FN,)
            float[:, :, :, ::1] out,          # OUT (n, FN, OH, OW)
            float[:, ::1] padded,             # scratch (n_threads, C*(H + 2*pad)*(W + 2*pad)), zeros
            Py_ssize_t filter_h, Py_ssize_t filter_w,
            Py_ssize_t stride, Py_ssize_t pad, bint relu, int n_threads):
    """out[i, f] = act(conv(x_padded[i], W[f]) + b[f]), act = ReLU (x <= 0 -> 0, NaN kept) or identity.

    padded's borders must be zero: only each image's interior is copied in.
    """
    cdef Py_ssize_t n = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t FN = out.shape[1], OH = out.shape[2], OW = out.shape[3]
    cdef Py_ssize_t PH = H + 2 * pad, PW = W + 2 * pad
    cdef Py_ssize_t n_blocks = w.shape[0], task, i, k, nf
    cdef float* xp
    if n == 0 or FN == 0 or OH == 0 or OW == 0:
        return
    with nogil:
        for task in prange(n * n_blocks, schedule="guided", num_threads=n_threads):
            i = task // n_blocks
            k = task % n_blocks
            xp = &padded[threadid(), 0]
            copy_into_padded(&x[i, 0, 0, 0], xp, C, H, W, pad, PW)
            nf = FN - 16 * k
            if nf > 16:
                nf = 16
            cnncore_avx2_image(xp, C, PH, PW, &w[k, 0], filter_h, filter_w, stride,
                               &b[16 * k], relu, &out[i, 16 * k, 0, 0], nf, OH, OW)


ROWS_MAX_WIDTH = 8 * CNNCORE_AVX2_ROWS_MAX_VECTORS


def forward_rows(const float[:, :, :, ::1] x,      # IN  (n, C, H, W)
                 const float[:, ::1] w,            # IN  (FN, C*FH*FW), W reshaped
                 const float[::1] b,               # IN  (FN,)
                 float[:, :, :, ::1] out,          # OUT (n, FN, OH, OW), 8 <= OW <= ROWS_MAX_WIDTH
                 float[:, ::1] padded,             # scratch (n_threads, C*(H + 2*pad)*(W + 2*pad)), zeros
                 Py_ssize_t filter_h, Py_ssize_t filter_w, Py_ssize_t pad, bint relu,
                 int n_threads):
    """forward for stride 1 with the outputs, not the filters, in the vector registers (see
    conv_avx2.h): for filters of few weights. Threads own whole images."""
    cdef Py_ssize_t n = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t FN = out.shape[1], OH = out.shape[2], OW = out.shape[3]
    cdef Py_ssize_t PH = H + 2 * pad, PW = W + 2 * pad
    cdef Py_ssize_t i
    cdef float* xp
    if n == 0 or FN == 0 or OH == 0:
        return
    with nogil:
        for i in prange(n, schedule="guided", num_threads=n_threads):
            xp = &padded[threadid(), 0]
            copy_into_padded(&x[i, 0, 0, 0], xp, C, H, W, pad, PW)
            cnncore_avx2_rows_image(xp, C, PH, PW, &w[0, 0], filter_h, filter_w, &b[0], relu,
                                    &out[i, 0, 0, 0], FN, OH, OW)


def backward_rows(const float[:, :, :, ::1] x,      # IN  (N, C, H, W)
                  const float[:, :, :, ::1] dout,   # IN  (N, FN, OH, OW), stride 1, 8 <= OW <= ROWS_MAX_WIDTH
                  const float[:, :, :, ::1] out,    # IN  (N, FN, OH, OW), read when relu
                  const float[:, ::1] w,            # IN  (C, FN*FH*FW): W with FN and C swapped; None: no dx
                  const Py_ssize_t[::1] tiles,      # IN  (n_tiles + 1,) first image of each tile, then N
                  const Py_ssize_t[::1] tap,        # IN  (C*FH*FW,) offset of (c, ky, kx) in a padded image
                  float[:, :, ::1] sums,            # OUT (n_tiles, FN*C*FH*FW + FN, 8), zeros
                  float[:, :, :, ::1] dx,           # OUT (N, C, H, W), 8 <= W <= ROWS_MAX_WIDTH; None: no dx
                  float[:, ::1] padded,             # scratch (n_threads, C*(H + 2*pad)*PW), zeros
                  float[:, ::1] d_padded,           # scratch (n_threads, FN*DH*DW), zeros
                  Py_ssize_t FH, Py_ssize_t FW, Py_ssize_t pad, Py_ssize_t PW,
                  Py_ssize_t top, Py_ssize_t left, Py_ssize_t DH, Py_ssize_t DW,
                  bint relu, int n_threads):
    """Gradients of forward_rows, as in conv_avx2.h. Per tile of images, the lane sums of dW
    (FN, C*FH*FW) then of db (FN): dW[f, (c, ky, kx)] = sum of d[i, f, oy, ox] * x_padded[i, c, oy + ky,
    ox + kx] over the tile, d = dout masked where out <= 0 when relu; and, unless dx is None, each
    image's dx.

    n_vec = ceil(OW / 8); a padded image's rows are PW = n_vec*8 + FW - 1 long and its borders must be
    zero. Each image's d is copied into a zero plane of DH x DW at row top, column left, with at
    least n_vec*8 - OW zero columns right of it; for dx, top and left at least max(0, FH - 1 - pad)
    and max(0, FW - 1 - pad), as many rows below it and columns right of it. Threads own whole
    tiles, so the sums do not depend on the thread count. Unchecked, like every kernel here: the
    row widths are cnncore._conv.select's CAN_RUN to ensure."""
    cdef Py_ssize_t C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t FN = dout.shape[1], OH = dout.shape[2], OW = dout.shape[3]
    cdef Py_ssize_t K = tap.shape[0], n_vec = (OW + 7) // 8, plane = DH * DW
    cdef Py_ssize_t n_tiles = tiles.shape[0] - 1, t, i
    cdef bint need_dx = dx is not None
    cdef float* xp
    cdef float* d
    if FN == 0 or OH == 0 or OW == 0 or K == 0 or C == 0:
        return
    with nogil:
        for t in prange(n_tiles, schedule="dynamic", num_threads=n_threads):
            xp = &padded[threadid(), 0]
            d = &d_padded[threadid(), 0] + top * DW + left
            for i in range(tiles[t], tiles[t + 1]):
                copy_into_padded(&x[i, 0, 0, 0], xp, C, H, W, pad, PW)
                cnncore_avx2_rows_grad_lines(&dout[i, 0, 0, 0], &out[i, 0, 0, 0], relu, FN, OH, OW,
                                             n_vec, d, DW, plane, &sums[t, FN * K, 0])
                cnncore_avx2_rows_wgrad_image(xp, PW, &tap[0], K, d, DW, plane, FN, OH, n_vec,
                                              &sums[t, 0, 0])
                if need_dx:
                    cnncore_avx2_rows_dx_image(d, DW, plane, pad, &w[0, 0], C, FN, FH, FW,
                                               &dx[i, 0, 0, 0], H, W)
