"""ReLU forward and backward on flat contiguous arrays.

NumPy's ``np.where(mask, 0, x)`` branches on every element and mispredicts about half the time on
ReLU inputs; these loops are branch-free selects the compiler vectorises. The mask is ``x <= 0``
(bytes 0/1, a bool array's buffer), so NaN passes through as it does in the textbook.
"""
from cython cimport floating
from cython.parallel cimport prange

from _cpu cimport cnncore_cpu_avx2
from _openmp cimport CHUNK, chunk_length, n_chunks


cdef extern from "relu_avx2.h":
    void cnncore_relu_forward_avx2(const float* x, float* out, unsigned char* mask,
                                   Py_ssize_t n) nogil
    void cnncore_relu_forward_avx2_d(const double* x, double* out, unsigned char* mask,
                                     Py_ssize_t n) nogil


# Whether this CPU and compiler have AVX2: relu_forward takes its AVX2 loop only then, whatever its
# caller asks.
cdef bint _AVX2 = cnncore_cpu_avx2()


cdef inline void _relu_chunk(const floating* x, floating* out, unsigned char* mask,
                             Py_ssize_t n, bint avx2) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating v
    if avx2 and _AVX2:
        if floating is float:
            cnncore_relu_forward_avx2(x, out, mask, n)
        else:
            cnncore_relu_forward_avx2_d(x, out, mask, n)
        return
    for i in range(n):
        v = x[i]
        out[i] = 0 if v <= 0 else v
    # A second pass over the (cache-resident) chunk: with the byte store in the same loop GCC does
    # not vectorise the float64 version.
    for i in range(n):
        mask[i] = x[i] <= 0


cdef inline void _relu_grad_chunk(const floating* dout, const unsigned char* mask, floating* dx,
                                  Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating d
    for i in range(n):
        d = dout[i]  # loaded unconditionally, so the select compiles to a vector blend
        dx[i] = 0 if mask[i] else d


def relu_forward(const floating[::1] x,        # IN  (size,)
                 floating[::1] out,            # OUT (size,)
                 unsigned char[::1] mask,      # OUT (size,) 1 where x <= 0
                 int n_threads, bint avx2=False):
    """out = 0 where x <= 0 else x; mask = x <= 0. avx2: in one AVX2 pass where the CPU has AVX2
    (else ignored), with the same results."""
    cdef Py_ssize_t size = x.shape[0], chunks = n_chunks(size), k, start
    if size == 0:
        return
    with nogil:
        for k in prange(chunks, schedule="static", num_threads=n_threads):
            start = k * CHUNK
            _relu_chunk(&x[start], &out[start], &mask[start],
                        chunk_length(size, start), avx2)


def relu_backward(const floating[::1] dout,    # IN  (size,)
                  const unsigned char[::1] mask,  # IN  (size,) from relu_forward
                  floating[::1] dx,            # OUT (size,)
                  int n_threads):
    """dx = 0 where mask else dout."""
    cdef Py_ssize_t size = dout.shape[0], chunks = n_chunks(size), k, start
    if size == 0:
        return
    with nogil:
        for k in prange(chunks, schedule="static", num_threads=n_threads):
            start = k * CHUNK
            _relu_grad_chunk(&dout[start], &mask[start], &dx[start],
                             chunk_length(size, start))
