"""Replicate padding of image planes: edge pixels copied outward, and the gradient folded back.

Planes (one image channel each) are independent, so threads split the planes; within a plane the
backward adds in one fixed order, so results do not depend on the thread count.
"""
from cython cimport floating
from cython.parallel cimport prange


cdef inline Py_ssize_t _clamp(Py_ssize_t i, Py_ssize_t n) noexcept nogil:
    return 0 if i < 0 else (n - 1 if i >= n else i)


def replicate_pad(const floating[:, :, ::1] x,    # IN  (P, H, W)
                  floating[:, :, ::1] out,        # OUT (P, H + 2*pad, W + 2*pad)
                  Py_ssize_t pad, int n_threads):
    cdef Py_ssize_t P = x.shape[0], H = x.shape[1], W = x.shape[2]
    cdef Py_ssize_t p, i, j, si
    for p in prange(P, nogil=True, num_threads=n_threads, schedule="static"):
        for i in range(H + 2 * pad):
            si = _clamp(i - pad, H)
            for j in range(pad):
                out[p, i, j] = x[p, si, 0]
            for j in range(W):
                out[p, i, pad + j] = x[p, si, j]
            for j in range(pad):
                out[p, i, pad + W + j] = x[p, si, W - 1]


def replicate_pad_backward(const floating[:, :, ::1] dxp,   # IN  (P, H + 2*pad, W + 2*pad)
                           floating[:, :, ::1] dx,          # OUT (P, H, W)
                           Py_ssize_t pad, int n_threads):
    cdef Py_ssize_t P = dx.shape[0], H = dx.shape[1], W = dx.shape[2]
    cdef Py_ssize_t p, i, j, si
    cdef floating s
    for p in prange(P, nogil=True, num_threads=n_threads, schedule="static"):
        for i in range(H):
            for j in range(W):
                dx[p, i, j] = 0
        for i in range(H + 2 * pad):
            si = _clamp(i - pad, H)
            s = 0
            for j in range(pad + 1):
                s = s + dxp[p, i, j]
            dx[p, si, 0] += s
            for j in range(1, W - 1):
                dx[p, si, j] += dxp[p, i, pad + j]
            if W > 1:
                s = 0
                for j in range(pad + W - 1, W + 2 * pad):
                    s = s + dxp[p, i, j]
                dx[p, si, W - 1] += s
            else:
                for j in range(pad + 1, 1 + 2 * pad):
                    dx[p, si, 0] += dxp[p, i, j]
