"""Max and average pooling, forward and backward, on NCHW planes.

Windows start at (oy*stride - pad, ox*stride - pad). Max pooling never picks a padded cell (the caller
guarantees pad < window, so every window holds at least one real cell); average pooling counts
padding as zeros in a full pool_h*pool_w window. arg_max holds the winning cell's index inside its
window, ky*pool_w + kx, as the textbook's np.argmax over an im2col row does: ties go to the first cell,
and NaN wins (np.max and np.argmax propagate NaN). Threads own whole (n, c) planes.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.string cimport memset


# Window offsets k in [_lo(start), _hi(start, ...)) satisfy 0 <= start + k < size. (Plain return values,
# not pointers: prange makes a variable thread-private only when it sees it assigned.)
cdef inline Py_ssize_t _lo(Py_ssize_t start) noexcept nogil:
    return -start if start < 0 else 0


cdef inline Py_ssize_t _hi(Py_ssize_t start, Py_ssize_t window, Py_ssize_t size) noexcept nogil:
    cdef Py_ssize_t hi = size - start if size - start < window else window
    return hi if hi > _lo(start) else _lo(start)


def max_pool_forward(const floating[:, :, :, ::1] x,     # IN  (N, C, H, W)
                     floating[:, :, :, ::1] out,         # OUT (N, C, OH, OW)
                     Py_ssize_t[:, :, :, ::1] arg_max,   # OUT (N, C, OH, OW) index in window
                     Py_ssize_t pool_h, Py_ssize_t pool_w,
                     Py_ssize_t stride, Py_ssize_t pad, int n_threads):
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t out_h = out.shape[2], out_w = out.shape[3]
    cdef Py_ssize_t nc, n, c, oy, ox, ky, kx, y0, x0, ky_lo, ky_hi, kx_lo, kx_hi, arg
    cdef const floating* plane
    cdef floating best, v
    if N * C == 0:
        return
    with nogil:
        for nc in prange(N * C, schedule="static", num_threads=n_threads):
            n = nc // C
            c = nc % C
            plane = &x[n, c, 0, 0]
            for oy in range(out_h):
                y0 = oy * stride - pad
                ky_lo = _lo(y0)
                ky_hi = _hi(y0, pool_h, H)
                for ox in range(out_w):
                    x0 = ox * stride - pad
                    kx_lo = _lo(x0)
                    kx_hi = _hi(x0, pool_w, W)
                    best = plane[(y0 + ky_lo) * W + x0 + kx_lo]
                    arg = ky_lo * pool_w + kx_lo
                    for ky in range(ky_lo, ky_hi):
                        for kx in range(kx_lo, kx_hi):
                            v = plane[(y0 + ky) * W + x0 + kx]
                            # v > best, or the first NaN (after which nothing replaces it)
                            if v > best or (v != v and best == best):
                                best = v
                                arg = ky * pool_w + kx
                    out[n, c, oy, ox] = best
                    arg_max[n, c, oy, ox] = arg


def max_pool_backward(const floating[:, :, :, ::1] dout,      # IN  (N, C, OH, OW)
                      const Py_ssize_t[:, :, :, ::1] arg_max, # IN  (N, C, OH, OW)
                      floating[:, :, :, ::1] dx,              # OUT (N, C, H, W), overwritten
                      Py_ssize_t pool_h, Py_ssize_t pool_w,
                      Py_ssize_t stride, Py_ssize_t pad, int n_threads):
    cdef Py_ssize_t N = dx.shape[0], C = dx.shape[1], H = dx.shape[2], W = dx.shape[3]
    cdef Py_ssize_t out_h = dout.shape[2], out_w = dout.shape[3]
    cdef Py_ssize_t nc, n, c, oy, ox, k
    cdef floating* plane
    if N * C == 0:
        return
    with nogil:
        for nc in prange(N * C, schedule="static", num_threads=n_threads):
            n = nc // C
            c = nc % C
            plane = &dx[n, c, 0, 0]
            memset(plane, 0, H * W * sizeof(floating))
            for oy in range(out_h):
                for ox in range(out_w):
                    k = arg_max[n, c, oy, ox]
                    plane[(oy * stride - pad + k // pool_w) * W
                          + ox * stride - pad + k % pool_w] += dout[n, c, oy, ox]


def avg_pool_forward(const floating[:, :, :, ::1] x,     # IN  (N, C, H, W)
                     floating[:, :, :, ::1] out,         # OUT (N, C, OH, OW)
                     Py_ssize_t pool_h, Py_ssize_t pool_w,
                     Py_ssize_t stride, Py_ssize_t pad, int n_threads):
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t out_h = out.shape[2], out_w = out.shape[3]
    cdef Py_ssize_t nc, n, c, oy, ox, ky, kx, y0, x0, ky_lo, ky_hi, kx_lo, kx_hi
    cdef const floating* plane
    cdef floating total
    cdef floating scale = 1.0 / (pool_h * pool_w)
    if N * C == 0:
        return
    with nogil:
        for nc in prange(N * C, schedule="static", num_threads=n_threads):
            n = nc // C
            c = nc % C
            plane = &x[n, c, 0, 0]
            for oy in range(out_h):
                y0 = oy * stride - pad
                ky_lo = _lo(y0)
                ky_hi = _hi(y0, pool_h, H)
                for ox in range(out_w):
                    x0 = ox * stride - pad
                    kx_lo = _lo(x0)
                    kx_hi = _hi(x0, pool_w, W)
                    total = 0
                    for ky in range(ky_lo, ky_hi):
                        for kx in range(kx_lo, kx_hi):
                            total = total + plane[(y0 + ky) * W + x0 + kx]
                    out[n, c, oy, ox] = total * scale


def avg_pool_backward(const floating[:, :, :, ::1] dout,  # IN  (N, C, OH, OW)
                      floating[:, :, :, ::1] dx,          # OUT (N, C, H, W), overwritten
                      Py_ssize_t pool_h, Py_ssize_t pool_w,
                      Py_ssize_t stride, Py_ssize_t pad, int n_threads):
    cdef Py_ssize_t N = dx.shape[0], C = dx.shape[1], H = dx.shape[2], W = dx.shape[3]
    cdef Py_ssize_t out_h = dout.shape[2], out_w = dout.shape[3]
    cdef Py_ssize_t nc, n, c, oy, ox, ky, kx, y0, x0, ky_lo, ky_hi, kx_lo, kx_hi
    cdef floating* plane
    cdef floating g
    cdef floating scale = 1.0 / (pool_h * pool_w)
    if N * C == 0:
        return
    with nogil:
        for nc in prange(N * C, schedule="static", num_threads=n_threads):
            n = nc // C
            c = nc % C
            plane = &dx[n, c, 0, 0]
            memset(plane, 0, H * W * sizeof(floating))
            for oy in range(out_h):
                y0 = oy * stride - pad
                ky_lo = _lo(y0)
                ky_hi = _hi(y0, pool_h, H)
                for ox in range(out_w):
                    x0 = ox * stride - pad
                    kx_lo = _lo(x0)
                    kx_hi = _hi(x0, pool_w, W)
                    g = dout[n, c, oy, ox] * scale
                    for ky in range(ky_lo, ky_hi):
                        for kx in range(kx_lo, kx_hi):
                            plane[(y0 + ky) * W + x0 + kx] += g
