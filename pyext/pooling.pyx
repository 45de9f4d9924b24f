"""Max and average pooling, forward and backward, on NCHW planes.

Windows start at (oy*stride - pad, ox*stride - pad). Max pooling never picks a padded cell (the caller
guarantees pad < window, so every window holds at least one real cell); average pooling counts
padding as zeros in a full pool_h*pool_w window. arg_max holds the winning cell's index inside its
window, ky*pool_w + kx, as the textbook's np.argmax over an im2col row does: ties go to the first cell,
and NaN wins (np.max and np.argmax propagate NaN).

Each kernel hands whole (n, c) planes to the threads, so no two threads write the same cell. The work
on one plane lives in a helper taking plain values: inside an OpenMP region, scalars read from the
enclosing function are shared variables the compiler must reload after every store.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.string cimport memset


cdef struct Window:
    Py_ssize_t H, W, out_h, out_w, pool_h, pool_w, stride, pad


# Window offsets k in [_lo(start), _hi(start, ...)) satisfy 0 <= start + k < size.
cdef inline Py_ssize_t _lo(Py_ssize_t start) noexcept nogil:
    return -start if start < 0 else 0


cdef inline Py_ssize_t _hi(Py_ssize_t start, Py_ssize_t window, Py_ssize_t size) noexcept nogil:
    cdef Py_ssize_t hi = size - start if size - start < window else window
    return hi if hi > _lo(start) else _lo(start)


cdef Py_ssize_t _first_nan(const floating* x, Window g, Py_ssize_t y0, Py_ssize_t x0,
                           Py_ssize_t ky_lo, Py_ssize_t ky_hi,
                           Py_ssize_t kx_lo, Py_ssize_t kx_hi) noexcept nogil:
    # Index in its window of the window's first NaN (np.argmax returns the first NaN).
    cdef Py_ssize_t ky, kx
    for ky in range(ky_lo, ky_hi):
        for kx in range(kx_lo, kx_hi):
            if x[(y0 + ky) * g.W + x0 + kx] != x[(y0 + ky) * g.W + x0 + kx]:
                return ky * g.pool_w + kx
    return ky_lo * g.pool_w + kx_lo


cdef inline void _max_plane(const floating* x, floating* out, Py_ssize_t* arg_max,
                            Window g) noexcept nogil:
    cdef Py_ssize_t oy, ox, ky, kx, y0, x0, ky_lo, ky_hi, kx_lo, kx_hi, arg
    cdef floating best, v
    cdef bint gt, nan
    for oy in range(g.out_h):
        y0 = oy * g.stride - g.pad
        ky_lo = _lo(y0)
        ky_hi = _hi(y0, g.pool_h, g.H)
        for ox in range(g.out_w):
            x0 = ox * g.stride - g.pad
            kx_lo = _lo(x0)
            kx_hi = _hi(x0, g.pool_w, g.W)
            best = x[(y0 + ky_lo) * g.W + x0 + kx_lo]
            arg = ky_lo * g.pool_w + kx_lo
            nan = False
            for ky in range(ky_lo, ky_hi):
                for kx in range(kx_lo, kx_hi):
                    # Selects, not branches (random data defeats branch prediction); a NaN is only
                    # noted here and handled after the loop, which keeps this loop branch-free.
                    v = x[(y0 + ky) * g.W + x0 + kx]
                    gt = v > best
                    best = v if gt else best
                    arg = ky * g.pool_w + kx if gt else arg
                    nan = nan | (v != v)
            if nan and best == best:
                arg = _first_nan(x, g, y0, x0, ky_lo, ky_hi, kx_lo, kx_hi)
                best = x[(y0 + arg // g.pool_w) * g.W + x0 + arg % g.pool_w]
            out[oy * g.out_w + ox] = best
            arg_max[oy * g.out_w + ox] = arg


cdef inline void _max_plane_backward(const floating* dout, const Py_ssize_t* arg_max,
                                     floating* dx, Window g) noexcept nogil:
    cdef Py_ssize_t oy, ox, k
    memset(dx, 0, g.H * g.W * sizeof(floating))
    for oy in range(g.out_h):
        for ox in range(g.out_w):
            k = arg_max[oy * g.out_w + ox]
            dx[(oy * g.stride - g.pad + k // g.pool_w) * g.W
               + ox * g.stride - g.pad + k % g.pool_w] += dout[oy * g.out_w + ox]


cdef inline void _avg_plane(const floating* x, floating* out, Window g) noexcept nogil:
    cdef Py_ssize_t oy, ox, ky, kx, y0, x0, ky_lo, ky_hi, kx_lo, kx_hi
    cdef floating total
    cdef floating scale = 1.0 / (g.pool_h * g.pool_w)
    for oy in range(g.out_h):
        y0 = oy * g.stride - g.pad
        ky_lo = _lo(y0)
        ky_hi = _hi(y0, g.pool_h, g.H)
        for ox in range(g.out_w):
            x0 = ox * g.stride - g.pad
            kx_lo = _lo(x0)
            kx_hi = _hi(x0, g.pool_w, g.W)
            total = 0
            for ky in range(ky_lo, ky_hi):
                for kx in range(kx_lo, kx_hi):
                    total += x[(y0 + ky) * g.W + x0 + kx]
            out[oy * g.out_w + ox] = total * scale


cdef inline void _avg_plane_backward(const floating* dout, floating* dx, Window g) noexcept nogil:
    cdef Py_ssize_t oy, ox, ky, kx, y0, x0, ky_lo, ky_hi, kx_lo, kx_hi
    cdef floating share
    cdef floating scale = 1.0 / (g.pool_h * g.pool_w)
    memset(dx, 0, g.H * g.W * sizeof(floating))
    for oy in range(g.out_h):
        y0 = oy * g.stride - g.pad
        ky_lo = _lo(y0)
        ky_hi = _hi(y0, g.pool_h, g.H)
        for ox in range(g.out_w):
            x0 = ox * g.stride - g.pad
            kx_lo = _lo(x0)
            kx_hi = _hi(x0, g.pool_w, g.W)
            share = dout[oy * g.out_w + ox] * scale
            for ky in range(ky_lo, ky_hi):
                for kx in range(kx_lo, kx_hi):
                    dx[(y0 + ky) * g.W + x0 + kx] += share


cdef inline Window _window(Py_ssize_t H, Py_ssize_t W, Py_ssize_t out_h, Py_ssize_t out_w,
                           Py_ssize_t pool_h, Py_ssize_t pool_w,
                           Py_ssize_t stride, Py_ssize_t pad) noexcept nogil:
    cdef Window g
    g.H, g.W, g.out_h, g.out_w = H, W, out_h, out_w
    g.pool_h, g.pool_w, g.stride, g.pad = pool_h, pool_w, stride, pad
    return g


def max_pool_forward(const floating[:, :, :, ::1] x,     # IN  (N, C, H, W)
                     floating[:, :, :, ::1] out,         # OUT (N, C, OH, OW)
                     Py_ssize_t[:, :, :, ::1] arg_max,   # OUT (N, C, OH, OW) index in window
                     Py_ssize_t pool_h, Py_ssize_t pool_w,
                     Py_ssize_t stride, Py_ssize_t pad, int n_threads):
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], nc
    cdef Window g = _window(x.shape[2], x.shape[3], out.shape[2], out.shape[3],
                            pool_h, pool_w, stride, pad)
    if N * C == 0:
        return
    with nogil:
        for nc in prange(N * C, schedule="guided", num_threads=n_threads):
            _max_plane(&x[nc // C, nc % C, 0, 0], &out[nc // C, nc % C, 0, 0],
                       &arg_max[nc // C, nc % C, 0, 0], g)


def max_pool_backward(const floating[:, :, :, ::1] dout,      # IN  (N, C, OH, OW)
                      const Py_ssize_t[:, :, :, ::1] arg_max, # IN  (N, C, OH, OW)
                      floating[:, :, :, ::1] dx,              # OUT (N, C, H, W), overwritten
                      Py_ssize_t pool_h, Py_ssize_t pool_w,
                      Py_ssize_t stride, Py_ssize_t pad, int n_threads):
    cdef Py_ssize_t N = dx.shape[0], C = dx.shape[1], nc
    cdef Window g = _window(dx.shape[2], dx.shape[3], dout.shape[2], dout.shape[3],
                            pool_h, pool_w, stride, pad)
    if N * C == 0:
        return
    with nogil:
        for nc in prange(N * C, schedule="guided", num_threads=n_threads):
            _max_plane_backward(&dout[nc // C, nc % C, 0, 0], &arg_max[nc // C, nc % C, 0, 0],
                                &dx[nc // C, nc % C, 0, 0], g)


def avg_pool_forward(const floating[:, :, :, ::1] x,     # IN  (N, C, H, W)
                     floating[:, :, :, ::1] out,         # OUT (N, C, OH, OW)
                     Py_ssize_t pool_h, Py_ssize_t pool_w,
                     Py_ssize_t stride, Py_ssize_t pad, int n_threads):
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], nc
    cdef Window g = _window(x.shape[2], x.shape[3], out.shape[2], out.shape[3],
                            pool_h, pool_w, stride, pad)
    if N * C == 0:
        return
    with nogil:
        for nc in prange(N * C, schedule="guided", num_threads=n_threads):
            _avg_plane(&x[nc // C, nc % C, 0, 0], &out[nc // C, nc % C, 0, 0], g)


def avg_pool_backward(const floating[:, :, :, ::1] dout,  # IN  (N, C, OH, OW)
                      floating[:, :, :, ::1] dx,          # OUT (N, C, H, W), overwritten
                      Py_ssize_t pool_h, Py_ssize_t pool_w,
                      Py_ssize_t stride, Py_ssize_t pad, int n_threads):
    cdef Py_ssize_t N = dx.shape[0], C = dx.shape[1], nc
    cdef Window g = _window(dx.shape[2], dx.shape[3], dout.shape[2], dout.shape[3],
                            pool_h, pool_w, stride, pad)
    if N * C == 0:
        return
    with nogil:
        for nc in prange(N * C, schedule="guided", num_threads=n_threads):
            _avg_plane_backward(&dout[nc // C, nc % C, 0, 0], &dx[nc // C, nc % C, 0, 0], g)
