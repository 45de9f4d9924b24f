# The direct convolutions' zero-padded image buffer (conv_avx2, conv_avx512).
from cython cimport floating
from libc.string cimport memcpy


cdef inline void copy_into_padded(const floating* image, floating* xp, Py_ssize_t C, Py_ssize_t H,
                                  Py_ssize_t W, Py_ssize_t pad, Py_ssize_t PW) noexcept nogil:
    # The interior of xp (C, H + 2*pad, PW), PW >= W + 2*pad, whose borders stay zero, from image
    # (C, H, W).
    cdef Py_ssize_t c, y, PH = H + 2 * pad
    for c in range(C):
        for y in range(H):
            memcpy(xp + (c * PH + y + pad) * PW + pad, image + (c * H + y) * W,
                   W * sizeof(floating))
