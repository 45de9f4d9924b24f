"""The Adam update of cnncore.optimizer.Adam in one pass over each parameter.

The textbook's update takes about ten NumPy passes (each a temporary array) over every parameter.
Here each element goes through the same operations in the same order and precision:

    m += (1 - beta1) * (g - m);  v += (1 - beta2) * (g*g - v);  p -= lr_t * m / (sqrt(v) + 1e-7)

with the constants rounded to the arrays' dtype first, as NumPy does with Python floats, so the
results are NumPy's to the bit (built with -ffp-contract=off: no fused multiply-adds).
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport sqrt, sqrtf

from _openmp cimport CHUNK, chunk_length, n_chunks


cdef inline void _adam_chunk(floating* p, const floating* g, floating* m, floating* v,
                             floating lr_t, floating a, floating b, floating eps,
                             Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating gi, mi, vi, root
    for i in range(n):
        gi = g[i]
        mi = m[i] + a * (gi - m[i])
        vi = v[i] + b * (gi * gi - v[i])
        if floating is float:
            root = sqrtf(vi)
        else:
            root = sqrt(vi)
        m[i] = mi
        v[i] = vi
        p[i] = p[i] - lr_t * mi / (root + eps)


def adam_update(floating[::1] p,            # IN/OUT (size,) the parameter
                const floating[::1] g,      # IN     (size,) its gradient
                floating[::1] m,            # IN/OUT (size,) first moment
                floating[::1] v,            # IN/OUT (size,) second moment
                double lr_t, double beta1, double beta2, int n_threads):
    """One Adam step on flat arrays of one dtype; lr_t holds the bias correction (see Adam)."""
    cdef Py_ssize_t size = p.shape[0], chunks = n_chunks(size), k, start
    cdef floating lr = lr_t, a = 1.0 - beta1, b = 1.0 - beta2, eps = 1e-7
    if size == 0:
        return
    with nogil:
        for k in prange(chunks, schedule="static", num_threads=n_threads):
            start = k * CHUNK
            _adam_chunk(&p[start], &g[start], &m[start], &v[start], lr, a, b, eps,
                        chunk_length(size, start))
