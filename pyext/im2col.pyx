"""im2col and col2im in the textbook's exact layout.

    col[(n*out_h + oy)*out_w + ox, (c*filter_h + ky)*filter_w + kx]
        = x_padded[n, c, oy*stride + ky, ox*stride + kx]

col2im is the adjoint (transpose) of im2col: every window adds itself back, padding is dropped.
The caller (cnncore/kernels.py) has checked every shape and allocated every output; nothing here
checks, allocates Python objects or raises. Rows of col never overlap between threads, and col2im
gives each thread whole images, so results do not depend on the thread count.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.string cimport memset


cdef inline void _window_to_row(const floating* img, floating* row,
                                Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                                Py_ssize_t filter_h, Py_ssize_t filter_w,
                                Py_ssize_t y0, Py_ssize_t x0) noexcept nogil:
    # Copy the window whose top-left corner is (y0, x0) (unpadded coordinates, may be negative)
    # into one row of col, writing zeros where the window covers padding.
    cdef Py_ssize_t c, ky, kx, iy
    cdef Py_ssize_t kx_lo = -x0 if x0 < 0 else 0
    cdef Py_ssize_t kx_hi = W - x0 if W - x0 < filter_w else filter_w
    cdef const floating* line
    if kx_lo > filter_w:    # the window lies wholly in the left padding (pad > filter_w)
        kx_lo = filter_w
    if kx_hi < kx_lo:
        kx_hi = kx_lo
    if y0 >= 0 and y0 + filter_h <= H and kx_lo == 0 and kx_hi == filter_w:
        # the window lies inside the image (the common case): plain copies, no padding logic
        for c in range(C):
            for ky in range(filter_h):
                line = img + (c * H + y0 + ky) * W + x0
                for kx in range(filter_w):
                    row[kx] = line[kx]
                row += filter_w
        return
    for c in range(C):
        for ky in range(filter_h):
            iy = y0 + ky
            if iy < 0 or iy >= H:
                for kx in range(filter_w):
                    row[kx] = 0
            else:
                line = img + (c * H + iy) * W
                for kx in range(kx_lo):
                    row[kx] = 0
                for kx in range(kx_lo, kx_hi):
                    row[kx] = line[x0 + kx]
                for kx in range(kx_hi, filter_w):
                    row[kx] = 0
            row += filter_w


cdef inline void _row_to_window(const floating* row, floating* img,
                                Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                                Py_ssize_t filter_h, Py_ssize_t filter_w,
                                Py_ssize_t y0, Py_ssize_t x0) noexcept nogil:
    # Adjoint of _window_to_row: add one row of col into its window, skipping padding.
    cdef Py_ssize_t c, ky, kx, iy
    cdef Py_ssize_t kx_lo = -x0 if x0 < 0 else 0
    cdef Py_ssize_t kx_hi = W - x0 if W - x0 < filter_w else filter_w
    cdef floating* line
    for c in range(C):
        for ky in range(filter_h):
            iy = y0 + ky
            if 0 <= iy < H:
                line = img + (c * H + iy) * W
                for kx in range(kx_lo, kx_hi):
                    line[x0 + kx] += row[kx]
            row += filter_w


def im2col(const floating[:, :, :, ::1] x,    # IN  (N, C, H, W)
           floating[:, ::1] col,               # OUT (N*out_h*out_w, C*filter_h*filter_w)
           Py_ssize_t filter_h, Py_ssize_t filter_w,
           Py_ssize_t stride, Py_ssize_t pad, int n_threads):
    """Fill col with the windows of x (textbook layout). Threads split the (n, oy) rows."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t out_h = (H + 2 * pad - filter_h) // stride + 1
    cdef Py_ssize_t out_w = (W + 2 * pad - filter_w) // stride + 1
    cdef Py_ssize_t n_oy, n, oy, ox
    if N == 0 or col.shape[0] == 0:
        return
    with nogil:
        for n_oy in prange(N * out_h, schedule="guided", num_threads=n_threads):
            n = n_oy // out_h
            oy = n_oy % out_h
            for ox in range(out_w):
                _window_to_row(&x[n, 0, 0, 0], &col[n_oy * out_w + ox, 0], C, H, W,
                               filter_h, filter_w, oy * stride - pad, ox * stride - pad)


def col2im(const floating[:, ::1] col,         # IN  (N*out_h*out_w, C*filter_h*filter_w)
           floating[:, :, :, ::1] x,           # OUT (N, C, H, W), overwritten
           Py_ssize_t filter_h, Py_ssize_t filter_w,
           Py_ssize_t stride, Py_ssize_t pad, int n_threads):
    """Sum every row of col back into its window of x. Threads split the images."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t out_h = (H + 2 * pad - filter_h) // stride + 1
    cdef Py_ssize_t out_w = (W + 2 * pad - filter_w) // stride + 1
    cdef Py_ssize_t n, oy, ox
    if N == 0 or x.shape[1] == 0:
        return
    with nogil:
        for n in prange(N, schedule="guided", num_threads=n_threads):
            memset(&x[n, 0, 0, 0], 0, C * H * W * sizeof(floating))
            for oy in range(out_h):
                for ox in range(out_w):
                    _row_to_window(&col[(n * out_h + oy) * out_w + ox, 0], &x[n, 0, 0, 0],
                                   C, H, W, filter_h, filter_w,
                                   oy * stride - pad, ox * stride - pad)
