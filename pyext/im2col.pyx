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
from libc.string cimport memcpy, memset

from _window cimport out_range, output_size, window_hi, window_lo


cdef inline void _window_to_row(const floating* img, floating* row,
                                Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                                Py_ssize_t filter_h, Py_ssize_t filter_w,
                                Py_ssize_t y0, Py_ssize_t x0) noexcept nogil:
    # Copy the window whose top-left corner is (y0, x0) (unpadded coordinates, may be negative)
    # into one row of col, writing zeros where the window covers padding.
    cdef Py_ssize_t c, ky, kx, iy
    cdef Py_ssize_t kx_lo = window_lo(x0, filter_w), kx_hi = window_hi(x0, filter_w, W)
    cdef const floating* line
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


cdef inline void _inside_window_to_row(const floating* img, floating* row, Py_ssize_t C,
                                       Py_ssize_t H, Py_ssize_t W, Py_ssize_t filter_h,
                                       Py_ssize_t filter_w, Py_ssize_t y0,
                                       Py_ssize_t x0) noexcept nogil:
    # _window_to_row for a window wholly inside the image. memcpy of a constant width (filter_w
    # is a literal at the call sites below) is one or two moves per line.
    cdef Py_ssize_t _c, ky
    cdef const floating* line = img + y0 * W + x0
    for _c in range(C):
        for ky in range(filter_h):
            memcpy(row, line + ky * W, filter_w * sizeof(floating))
            row += filter_w
        line += H * W


cdef inline void _image_to_rows(const floating* img, floating* col, Py_ssize_t C, Py_ssize_t H,
                                Py_ssize_t W, Py_ssize_t filter_h, Py_ssize_t filter_w,
                                Py_ssize_t oy, Py_ssize_t out_w, Py_ssize_t stride,
                                Py_ssize_t pad) noexcept nogil:
    # The out_w rows of col for output row oy of one image. The windows wholly inside the image,
    # ox in [inside_lo, inside_hi), take the copy without padding logic (about twice as fast as
    # _window_to_row's checks and element-by-element copy).
    cdef Py_ssize_t ox, K = C * filter_h * filter_w
    cdef Py_ssize_t y0 = oy * stride - pad
    cdef Py_ssize_t inside_lo = out_w, inside_hi = out_w
    if y0 >= 0 and y0 + filter_h <= H and W >= filter_w:
        inside_lo = (pad + stride - 1) // stride
        inside_hi = (W - filter_w + pad) // stride + 1
        if inside_hi > out_w:
            inside_hi = out_w
        if inside_lo > inside_hi:
            inside_lo = inside_hi
    for ox in range(inside_lo):
        _window_to_row(img, col + ox * K, C, H, W, filter_h, filter_w, y0, ox * stride - pad)
    for ox in range(inside_lo, inside_hi):
        _inside_window_to_row(img, col + ox * K, C, H, W, filter_h, filter_w, y0,
                              ox * stride - pad)
    for ox in range(inside_hi, out_w):
        _window_to_row(img, col + ox * K, C, H, W, filter_h, filter_w, y0, ox * stride - pad)


cdef inline void _add_column(floating* line, Py_ssize_t offset, const floating* src, Py_ssize_t K,
                             Py_ssize_t stride, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    # line[ox*stride + offset] += src[ox*K] for ox in [lo, hi) (offset may be negative; the caller's
    # lo keeps every index inside the line)
    cdef Py_ssize_t ox
    if stride == 1:
        for ox in range(lo, hi):
            line[ox + offset] += src[ox * K]
    else:
        for ox in range(lo, hi):
            line[ox * stride + offset] += src[ox * K]


cdef inline void _add_rows_by_column(const floating* col, floating* img, Py_ssize_t C,
                                     Py_ssize_t H, Py_ssize_t W, Py_ssize_t filter_h,
                                     Py_ssize_t filter_w, Py_ssize_t out_h, Py_ssize_t out_w,
                                     Py_ssize_t stride, Py_ssize_t pad) noexcept nogil:
    # Add all out_h*out_w rows of one image's col into img (zeroed by the caller). For each output
    # row oy and each column (c, ky, kx) of col, the out_w values go into one image line at once:
    # consecutive additions hit different pixels, where adding window by window updates each pixel
    # filter_w times in a row (a chain of dependent loads and stores).
    cdef Py_ssize_t oy, c, ky, kx, iy, j, lo, hi, K = C * filter_h * filter_w
    cdef const floating* rows
    cdef floating* line
    for oy in range(out_h):
        rows = col + oy * out_w * K
        for c in range(C):
            for ky in range(filter_h):
                iy = oy * stride - pad + ky
                if iy < 0 or iy >= H:
                    continue
                line = img + (c * H + iy) * W
                j = (c * filter_h + ky) * filter_w
                for kx in range(filter_w):
                    out_range(kx, W, out_w, stride, pad, &lo, &hi)
                    _add_column(line, kx - pad, rows + j + kx, K, stride, lo, hi)


cdef inline void _row_to_window(const floating* row, floating* img,
                                Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                                Py_ssize_t filter_h, Py_ssize_t filter_w,
                                Py_ssize_t y0, Py_ssize_t x0) noexcept nogil:
    # Adjoint of _window_to_row: add one row of col into its window, skipping padding.
    cdef Py_ssize_t c, ky, kx, iy
    cdef Py_ssize_t kx_lo = window_lo(x0, filter_w), kx_hi = window_hi(x0, filter_w, W)
    cdef floating* line
    for c in range(C):
        for ky in range(filter_h):
            iy = y0 + ky
            if 0 <= iy < H:
                line = img + (c * H + iy) * W
                for kx in range(kx_lo, kx_hi):
                    line[x0 + kx] += row[kx]
            row += filter_w


cdef inline void _add_rows_by_window(const floating* col, floating* img, Py_ssize_t C,
                                     Py_ssize_t H, Py_ssize_t W, Py_ssize_t filter_h,
                                     Py_ssize_t filter_w, Py_ssize_t out_h, Py_ssize_t out_w,
                                     Py_ssize_t stride, Py_ssize_t pad) noexcept nogil:
    # The same sum, one row of col (one window) at a time: col is read in order.
    cdef Py_ssize_t oy, ox, K = C * filter_h * filter_w
    for oy in range(out_h):
        for ox in range(out_w):
            _row_to_window(col + (oy * out_w + ox) * K, img, C, H, W, filter_h, filter_w,
                           oy * stride - pad, ox * stride - pad)


cdef inline floating _pixel_sum(const floating* base, Py_ssize_t K, Py_ssize_t x, Py_ssize_t pad,
                                Py_ssize_t kx_lo, Py_ssize_t kx_hi) noexcept nogil:
    # sum over kx in [kx_lo, kx_hi) of base[(x + pad - kx)*K + kx]: the terms of pixel x
    cdef Py_ssize_t kx
    cdef floating total = 0
    for kx in range(kx_lo, kx_hi):
        total = total + base[(x + pad - kx) * K + kx]
    return total


cdef inline void _add_rows_by_pixel(const floating* col, floating* img, Py_ssize_t C,
                                    Py_ssize_t H, Py_ssize_t W, Py_ssize_t filter_h,
                                    Py_ssize_t filter_w, Py_ssize_t out_h, Py_ssize_t out_w,
                                    Py_ssize_t pad) noexcept nogil:
    # The same sum for stride 1, pixel by pixel: for each output row oy and each (c, ky), pixel x
    # of the image line gets its terms (kx, from window ox = x + pad - kx) summed in a register,
    # then one add to memory. Adding window by window instead chains filter_w dependent
    # load-add-stores on each pixel (docs/kernels.md compares the two).
    cdef Py_ssize_t oy, c, ky, iy, x, K = C * filter_h * filter_w
    # pixels in [x_lo, x_hi) are reached by every kx: a sum of constant width
    cdef Py_ssize_t x_lo = min(max(filter_w - 1 - pad, 0), W)
    cdef Py_ssize_t x_hi = max(min(out_w - pad, W), x_lo)
    cdef const floating* base
    cdef floating* line
    for oy in range(out_h):
        for c in range(C):
            for ky in range(filter_h):
                iy = oy - pad + ky
                if iy < 0 or iy >= H:
                    continue
                line = img + (c * H + iy) * W
                # base[ox*K + kx] is col's entry for window ox, column (c, ky, kx)
                base = col + oy * out_w * K + (c * filter_h + ky) * filter_w
                for x in range(x_lo):
                    line[x] += _pixel_sum(base, K, x, pad, max(x + pad - out_w + 1, 0),
                                          min(x + pad + 1, filter_w))
                for x in range(x_lo, x_hi):
                    line[x] += _pixel_sum(base, K, x, pad, 0, filter_w)
                for x in range(x_hi, W):
                    line[x] += _pixel_sum(base, K, x, pad, max(x + pad - out_w + 1, 0),
                                          min(x + pad + 1, filter_w))


cdef inline void _rows_to_image(const floating* col, floating* img, Py_ssize_t C, Py_ssize_t H,
                                Py_ssize_t W, Py_ssize_t filter_h, Py_ssize_t filter_w,
                                Py_ssize_t out_h, Py_ssize_t out_w, Py_ssize_t stride,
                                Py_ssize_t pad) noexcept nogil:
    # Any stride (col2im takes _add_rows_by_pixel for stride 1).
    # float32 goes by column, float64 by window: column order reads col with a stride of K, which
    # costs more than the dependency chain it removes once the values are 8 bytes wide.
    if floating is float:
        _add_rows_by_column(col, img, C, H, W, filter_h, filter_w, out_h, out_w, stride, pad)
    else:
        _add_rows_by_window(col, img, C, H, W, filter_h, filter_w, out_h, out_w, stride, pad)


# The textbook's windows are 3 or 5 wide: im2col and col2im's pixel sums take their inline helpers
# with a literal width, which lets the compiler unroll the innermost loops (filter_w elements).
# _rows_to_image does not: unrolled, the window path's float64 adds became 16-byte vectors
# overlapping the previous window's stores, which stalls on store forwarding.

def im2col(const floating[:, :, :, ::1] x,    # IN  (N, C, H, W)
           floating[:, ::1] col,               # OUT (N*out_h*out_w, C*filter_h*filter_w)
           Py_ssize_t filter_h, Py_ssize_t filter_w,
           Py_ssize_t stride, Py_ssize_t pad, int n_threads):
    """Fill col with the windows of x (textbook layout). Threads split the (n, oy) rows."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t out_h = output_size(H, filter_h, stride, pad)
    cdef Py_ssize_t out_w = output_size(W, filter_w, stride, pad)
    cdef Py_ssize_t n_oy, n, oy
    if N == 0 or col.shape[0] == 0:
        return
    with nogil:
        for n_oy in prange(N * out_h, schedule="guided", num_threads=n_threads):
            n = n_oy // out_h
            oy = n_oy % out_h
            if filter_w == 3:
                _image_to_rows(&x[n, 0, 0, 0], &col[n_oy * out_w, 0], C, H, W, filter_h, 3,
                               oy, out_w, stride, pad)
            elif filter_w == 5:
                _image_to_rows(&x[n, 0, 0, 0], &col[n_oy * out_w, 0], C, H, W, filter_h, 5,
                               oy, out_w, stride, pad)
            else:
                _image_to_rows(&x[n, 0, 0, 0], &col[n_oy * out_w, 0], C, H, W, filter_h,
                               filter_w, oy, out_w, stride, pad)


def col2im(const floating[:, ::1] col,         # IN  (N*out_h*out_w, C*filter_h*filter_w)
           floating[:, :, :, ::1] x,           # OUT (N, C, H, W), overwritten
           Py_ssize_t filter_h, Py_ssize_t filter_w,
           Py_ssize_t stride, Py_ssize_t pad, int n_threads):
    """Sum every row of col back into its window of x. Threads split the images."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t out_h = output_size(H, filter_h, stride, pad)
    cdef Py_ssize_t out_w = output_size(W, filter_w, stride, pad)
    cdef Py_ssize_t n
    if N == 0 or x.shape[1] == 0:
        return
    with nogil:
        for n in prange(N, schedule="guided", num_threads=n_threads):
            memset(&x[n, 0, 0, 0], 0, C * H * W * sizeof(floating))
            if stride != 1:
                _rows_to_image(&col[n * out_h * out_w, 0], &x[n, 0, 0, 0], C, H, W, filter_h,
                               filter_w, out_h, out_w, stride, pad)
            elif filter_w == 3:
                _add_rows_by_pixel(&col[n * out_h * out_w, 0], &x[n, 0, 0, 0], C, H, W, filter_h,
                                   3, out_h, out_w, pad)
            elif filter_w == 5:
                _add_rows_by_pixel(&col[n * out_h * out_w, 0], &x[n, 0, 0, 0], C, H, W, filter_h,
                                   5, out_h, out_w, pad)
            else:
                _add_rows_by_pixel(&col[n * out_h * out_w, 0], &x[n, 0, 0, 0], C, H, W, filter_h,
                                   filter_w, out_h, out_w, pad)
