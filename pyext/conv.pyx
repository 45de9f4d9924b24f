"""Pieces of the tiled convolution: unfold/fold and the fused epilogues.

The convolution (cnncore/_conv/im2col_gemm.py, gradients.py) runs over tiles of n images at a time,
with one GEMM per step:

    forward:  cols = unfold(x[tile])                      (K, n*L)   K = C*FH*FW, L = OH*OW
              y = W2d @ cols                              (FN, n*L)  BLAS, through NumPy
              out[tile] = bias_act(y, b, relu)            (n, FN, L) one pass: + b, ReLU, to NCHW
    backward: d = gather_grad(dout[tile], out[tile])      (FN, n*L)  ReLU mask, to GEMM layout
              dW += d @ cols^T,  dcols = W2d^T @ d        BLAS
              dx[tile] = fold(dcols)

unfold is im2col transposed ("Caffe" layout, image after image along the columns): rows over
(c, ky, kx), columns over (i, oy, ox). Putting the tile's images side by side makes every step a
single large GEMM instead of one small GEMM per image: BLAS runs faster on it, and each BLAS call
costs a thread hand-off, which on a busy machine can take milliseconds. fold is unfold's adjoint.
Threads own whole (image, channel) planes or (image, filter) rows, so sums never race.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.string cimport memcpy, memset

from _window cimport out_range, output_size


cdef inline void _shifted_block(Py_ssize_t H, Py_ssize_t W, Py_ssize_t oy_lo, Py_ssize_t oy_hi,
                                Py_ssize_t s, Py_ssize_t* a, Py_ssize_t* b) noexcept nogil:
    # For a "same"-width row shifted by s against the plane: the block [a, b) of the row's lines
    # oy_lo..oy_hi-1, clipped so that [a + s, b + s) lies inside the H*W plane (empty: a = b).
    a[0] = oy_lo * W
    b[0] = oy_hi * W
    if a[0] + s < 0:
        a[0] = -s
    if b[0] + s > H * W:
        b[0] = H * W - s
    if b[0] < a[0]:
        a[0] = oy_lo * W
        b[0] = a[0]


cdef inline void _zero_wrapped(floating* row, Py_ssize_t W, Py_ssize_t oy_lo, Py_ssize_t oy_hi,
                               Py_ssize_t ox_lo, Py_ssize_t ox_hi) noexcept nogil:
    # Zero the cells of lines oy_lo..oy_hi-1 outside columns [ox_lo, ox_hi): in a block copy they
    # come from the neighbouring lines of the plane. Column by column: written line by line, the
    # compiler turned each line's one or two cells into a call to memset (7-12 % of a convolution).
    cdef Py_ssize_t oy, ox
    for ox in range(ox_lo):
        for oy in range(oy_lo, oy_hi):
            row[oy * W + ox] = 0
    for ox in range(ox_hi, W):
        for oy in range(oy_lo, oy_hi):
            row[oy * W + ox] = 0


cdef inline void _unfold_channel_same(const floating* plane, floating* rows, Py_ssize_t row_stride,
                                      Py_ssize_t H, Py_ssize_t W,
                                      Py_ssize_t filter_h, Py_ssize_t filter_w,
                                      Py_ssize_t out_h, Py_ssize_t pad) noexcept nogil:
    # _unfold_channel for stride 1 and out_w == W ("same" width): row (ky, kx) is the plane shifted
    # by s = (ky - pad)*W + kx - pad, so its valid lines are one block copy; the cells it brings in
    # from the neighbouring lines are zeroed after it.
    cdef Py_ssize_t ky, kx, oy_lo, oy_hi, ox_lo, ox_hi, s, a, b
    cdef floating* dst
    for ky in range(filter_h):
        out_range(ky, H, out_h, 1, pad, &oy_lo, &oy_hi)
        for kx in range(filter_w):
            dst = rows + (ky * filter_w + kx) * row_stride
            out_range(kx, W, W, 1, pad, &ox_lo, &ox_hi)
            s = (ky - pad) * W + kx - pad
            _shifted_block(H, W, oy_lo, oy_hi, s, &a, &b)
            memset(dst, 0, a * sizeof(floating))
            if b > a:
                memcpy(dst + a, plane + a + s, (b - a) * sizeof(floating))
            memset(dst + b, 0, (out_h * W - b) * sizeof(floating))
            _zero_wrapped(dst, W, oy_lo, oy_hi, ox_lo, ox_hi)


cdef inline void _unfold_channel(const floating* plane, floating* rows, Py_ssize_t row_stride,
                                 Py_ssize_t H, Py_ssize_t W,
                                 Py_ssize_t filter_h, Py_ssize_t filter_w,
                                 Py_ssize_t out_h, Py_ssize_t out_w,
                                 Py_ssize_t stride, Py_ssize_t pad) noexcept nogil:
    # Write one channel's filter_h*filter_w rows: rows[(ky*fw + kx)*row_stride + oy*out_w + ox].
    cdef Py_ssize_t ky, kx, oy, ox, iy, ox_lo, ox_hi
    cdef floating* dst
    cdef const floating* line
    if stride == 1 and out_w == W:
        _unfold_channel_same(plane, rows, row_stride, H, W, filter_h, filter_w, out_h, pad)
        return
    for ky in range(filter_h):
        for kx in range(filter_w):
            dst = rows + (ky * filter_w + kx) * row_stride
            out_range(kx, W, out_w, stride, pad, &ox_lo, &ox_hi)
            for oy in range(out_h):
                iy = oy * stride - pad + ky
                if iy < 0 or iy >= H:
                    for ox in range(out_w):
                        dst[ox] = 0
                else:
                    line = plane + iy * W - pad + kx
                    for ox in range(ox_lo):
                        dst[ox] = 0
                    if stride == 1:
                        for ox in range(ox_lo, ox_hi):
                            dst[ox] = line[ox]
                    else:
                        for ox in range(ox_lo, ox_hi):
                            dst[ox] = line[ox * stride]
                    for ox in range(ox_hi, out_w):
                        dst[ox] = 0
                dst += out_w


cdef inline void _fold_channel_same(floating* rows, Py_ssize_t row_stride, floating* plane,
                                    Py_ssize_t H, Py_ssize_t W,
                                    Py_ssize_t filter_h, Py_ssize_t filter_w,
                                    Py_ssize_t out_h, Py_ssize_t pad) noexcept nogil:
    # _fold_channel for stride 1 and out_w == W, the adjoint of _unfold_channel_same: the cells of
    # row (ky, kx) that would wrap into a neighbouring line are zeroed in rows first (rows is spent
    # scratch), then the valid lines are added to the plane as one block.
    cdef Py_ssize_t ky, kx, oy_lo, oy_hi, ox_lo, ox_hi, s, a, b, j
    cdef floating* src
    cdef floating* dst
    for ky in range(filter_h):
        out_range(ky, H, out_h, 1, pad, &oy_lo, &oy_hi)
        for kx in range(filter_w):
            src = rows + (ky * filter_w + kx) * row_stride
            out_range(kx, W, W, 1, pad, &ox_lo, &ox_hi)
            s = (ky - pad) * W + kx - pad
            _shifted_block(H, W, oy_lo, oy_hi, s, &a, &b)
            if b == a:
                continue
            _zero_wrapped(src, W, oy_lo, oy_hi, ox_lo, ox_hi)
            dst = plane + a + s
            src = src + a
            for j in range(b - a):
                dst[j] += src[j]


cdef inline void _fold_channel(floating* rows, Py_ssize_t row_stride, floating* plane,
                               Py_ssize_t H, Py_ssize_t W,
                               Py_ssize_t filter_h, Py_ssize_t filter_w,
                               Py_ssize_t out_h, Py_ssize_t out_w,
                               Py_ssize_t stride, Py_ssize_t pad) noexcept nogil:
    # Adjoint of _unfold_channel: add the rows of one channel back into its (zeroed) plane.
    cdef Py_ssize_t ky, kx, oy, ox, iy, ox_lo, ox_hi
    cdef const floating* src
    cdef floating* line
    # float32 only: float64 was no faster through the block copies (docs/kernels.md), so it keeps
    # the loop below.
    if floating is float and stride == 1 and out_w == W:
        _fold_channel_same(rows, row_stride, plane, H, W, filter_h, filter_w, out_h, pad)
        return
    for ky in range(filter_h):
        for kx in range(filter_w):
            src = rows + (ky * filter_w + kx) * row_stride
            out_range(kx, W, out_w, stride, pad, &ox_lo, &ox_hi)
            for oy in range(out_h):
                iy = oy * stride - pad + ky
                if 0 <= iy < H:
                    line = plane + iy * W - pad + kx
                    if stride == 1:
                        for ox in range(ox_lo, ox_hi):
                            line[ox] += src[ox]
                    else:
                        for ox in range(ox_lo, ox_hi):
                            line[ox * stride] += src[ox]
                src += out_w


def unfold(const floating[:, :, :, ::1] x,     # IN  (n, C, H, W)
           floating[:, ::1] cols,              # OUT (C*filter_h*filter_w, n*out_h*out_w)
           Py_ssize_t filter_h, Py_ssize_t filter_w,
           Py_ssize_t stride, Py_ssize_t pad, int n_threads):
    """cols[(c*FH + ky)*FW + kx, (i*OH + oy)*OW + ox] = x_padded[i, c, oy*stride + ky, ox*stride + kx]."""
    cdef Py_ssize_t n = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t out_h = output_size(H, filter_h, stride, pad)
    cdef Py_ssize_t out_w = output_size(W, filter_w, stride, pad)
    cdef Py_ssize_t ic, i, c, KK = filter_h * filter_w, L = out_h * out_w
    if n == 0 or C == 0:
        return
    with nogil:
        for ic in prange(n * C, schedule="guided", num_threads=n_threads):
            i = ic // C
            c = ic % C
            _unfold_channel(&x[i, c, 0, 0], &cols[c * KK, i * L], n * L, H, W,
                            filter_h, filter_w, out_h, out_w, stride, pad)


def fold(floating[:, ::1] cols,                # IN  (C*filter_h*filter_w, n*out_h*out_w), scratch
         floating[:, :, :, ::1] x,             # OUT (n, C, H, W), overwritten
         Py_ssize_t filter_h, Py_ssize_t filter_w,
         Py_ssize_t stride, Py_ssize_t pad, int n_threads):
    """Adjoint of unfold: x[i, c] = sum of every window of channel c of image i added back in place.

    cols is scratch: cells that fall outside the image may be zeroed.
    """
    cdef Py_ssize_t n = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t out_h = output_size(H, filter_h, stride, pad)
    cdef Py_ssize_t out_w = output_size(W, filter_w, stride, pad)
    cdef Py_ssize_t ic, i, c, KK = filter_h * filter_w, L = out_h * out_w
    if n == 0 or C == 0:
        return
    with nogil:
        for ic in prange(n * C, schedule="guided", num_threads=n_threads):
            i = ic // C
            c = ic % C
            memset(&x[i, c, 0, 0], 0, H * W * sizeof(floating))
            _fold_channel(&cols[c * KK, i * L], n * L, &x[i, c, 0, 0], H, W,
                          filter_h, filter_w, out_h, out_w, stride, pad)


def bias_act(const floating[:, ::1] y,         # IN  (FN, n*L) the GEMM's result
             const floating[::1] b,            # IN  (FN,)
             floating[:, :, ::1] out,          # OUT (n, FN, L)
             bint relu, int n_threads):
    """out[i, f, p] = act(y[f, i*L + p] + b[f]), act = ReLU (x <= 0 -> 0, NaN kept) or identity."""
    cdef Py_ssize_t n = out.shape[0], FN = out.shape[1], L = out.shape[2]
    cdef Py_ssize_t jf, j, f, p
    cdef floating bias, v
    cdef const floating* src
    cdef floating* dst
    if n == 0 or FN == 0 or L == 0:
        return
    with nogil:
        for jf in prange(n * FN, schedule="guided", num_threads=n_threads):
            j = jf // FN
            f = jf % FN
            bias = b[f]
            src = &y[f, j * L]
            dst = &out[j, f, 0]
            if relu:
                for p in range(L):
                    v = src[p] + bias
                    dst[p] = 0 if v <= 0 else v
            else:
                for p in range(L):
                    dst[p] = src[p] + bias


def gather_grad(const floating[:, :, ::1] dout,  # IN  (n, FN, L) upstream gradient
                const floating[:, :, ::1] out,   # IN  (n, FN, L) forward output (read if relu)
                floating[:, ::1] d,              # OUT (FN, n*L)
                bint relu, int n_threads):
    """d[f, i*L + p] = dout[i, f, p], zeroed where out <= 0 when relu (the textbook Relu's mask)."""
    cdef Py_ssize_t n = dout.shape[0], FN = dout.shape[1], L = dout.shape[2]
    cdef Py_ssize_t jf, j, f, p
    cdef const floating* g
    cdef const floating* o
    cdef floating* dst
    cdef floating v
    if n == 0 or FN == 0 or L == 0:
        return
    with nogil:
        for jf in prange(n * FN, schedule="guided", num_threads=n_threads):
            j = jf // FN
            f = jf % FN
            g = &dout[j, f, 0]
            dst = &d[f, j * L]
            if relu:
                o = &out[j, f, 0]
                # g read whatever the mask: read only where kept, it was a branch per value (20x
                # slower than the plain copy on a random mask); read always, the loop vectorises.
                for p in range(L):
                    v = g[p]
                    dst[p] = 0 if o[p] <= 0 else v
            else:
                for p in range(L):
                    dst[p] = g[p]
