# Window bounds shared by the kernels that sweep windows over a padded plane (im2col, conv,
# pooling): which window offsets, and which outputs, touch the unpadded plane.

cdef inline Py_ssize_t window_lo(Py_ssize_t start, Py_ssize_t window) noexcept nogil:
    # The first offset k (at most window) of a window starting at start with 0 <= start + k.
    cdef Py_ssize_t lo = -start if start < 0 else 0
    return lo if lo < window else window


cdef inline Py_ssize_t window_hi(Py_ssize_t start, Py_ssize_t window,
                                 Py_ssize_t size) noexcept nogil:
    # One past the last offset k (at least window_lo) of that window with start + k < size.
    cdef Py_ssize_t hi = size - start if size - start < window else window
    cdef Py_ssize_t lo = window_lo(start, window)
    return hi if hi > lo else lo


cdef inline void out_range(Py_ssize_t k, Py_ssize_t size, Py_ssize_t out_size,
                           Py_ssize_t stride, Py_ssize_t pad,
                           Py_ssize_t* lo, Py_ssize_t* hi) noexcept nogil:
    # Output positions o in [lo, hi) whose input position o*stride - pad + k lies inside
    # [0, size); lo <= hi <= out_size.
    cdef Py_ssize_t first = 0, last
    if pad > k:
        first = (pad - k + stride - 1) // stride
    last = size - 1 + pad - k            # o*stride <= last
    if last < 0:
        hi[0] = first
    else:
        hi[0] = last // stride + 1
        if hi[0] > out_size:
            hi[0] = out_size
        if hi[0] < first:
            hi[0] = first
    if first > out_size:
        first = out_size
        hi[0] = out_size
    lo[0] = first


cdef inline Py_ssize_t output_size(Py_ssize_t size, Py_ssize_t window, Py_ssize_t stride,
                                   Py_ssize_t pad) noexcept nogil:
    # Windows in a sweep of size + 2*pad cells: as cnncore._validate.output_size.
    return (size + 2 * pad - window) // stride + 1
