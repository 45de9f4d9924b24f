"""Per-channel batch normalization on x viewed as (N, C, L), L = H*W (L = 1 for an (N, C) input).

Statistics and gradient sums are per channel, each in one fixed order (threads split the channels),
so results do not depend on the thread count. Sums are accumulated in double with several
independent accumulators: the compiler can vectorise them without reassociating (-ffast-math), and
float32 inputs keep their digits. The elementwise passes split the (n, c) planes between threads
and compute in the array's dtype, differences first so that equal values cancel exactly.
"""
from cython cimport floating
from cython.parallel cimport prange


# Independent accumulators per sum: a fixed split, so the result is the same on every machine.
cdef enum:
    LANES = 8


cdef inline double _plane_sum(const floating* x, Py_ssize_t L) noexcept nogil:
    # Sum of x[0:L] in double.
    cdef double acc[LANES]
    cdef Py_ssize_t i, j, k, body = L - L % LANES
    for k in range(LANES):
        acc[k] = 0
    for j in range(body // LANES):
        i = j * LANES
        for k in range(LANES):
            acc[k] += x[i + k]
    for i in range(body, L):
        acc[0] += x[i]
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))


cdef inline double _plane_centered_dot(const floating* a, double ma, const floating* b, double mb,
                                       Py_ssize_t L) noexcept nogil:
    # Sum of (a[i] - ma) * (b[i] - mb) over [0:L] in double: the squared deviations (a = b) and the
    # gradient's sum of dout * (x - mean) (ma = 0).
    cdef double acc[LANES]
    cdef Py_ssize_t i, j, k, body = L - L % LANES
    for k in range(LANES):
        acc[k] = 0
    for j in range(body // LANES):
        i = j * LANES
        for k in range(LANES):
            acc[k] += (a[i + k] - ma) * (b[i + k] - mb)
    for i in range(body, L):
        acc[0] += (a[i] - ma) * (b[i] - mb)
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))


def channel_stats(const floating[:, :, ::1] x,   # IN  (N, C, L), N*L >= 1
                  double[::1] mean,              # OUT (C,)
                  double[::1] var,               # OUT (C,) biased (divided by N*L)
                  int n_threads):
    """Per channel mean, then the mean of squared deviations from it (two passes, for accuracy)."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], L = x.shape[2], c, n
    cdef double s, m, M = <double>(N * L)
    if N * L == 0:
        return
    for c in prange(C, nogil=True, num_threads=n_threads, schedule="static"):
        s = 0
        for n in range(N):
            s = s + _plane_sum(&x[n, c, 0], L)
        m = s / M
        s = 0
        for n in range(N):
            s = s + _plane_centered_dot(&x[n, c, 0], m, &x[n, c, 0], m, L)
        mean[c] = m
        var[c] = s / M


def normalize(const floating[:, :, ::1] x,     # IN  (N, C, L)
              const double[::1] mean,          # IN  (C,)
              const double[::1] scale,         # IN  (C,)
              const double[::1] shift,         # IN  (C,)
              floating[:, :, ::1] out,         # OUT (N, C, L)
              int n_threads):
    """out = (x - mean[c]) * scale[c] + shift[c], in x's dtype."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], L = x.shape[2], p, n, c, i
    cdef floating m, a, b
    for p in prange(N * C, nogil=True, num_threads=n_threads, schedule="static"):
        n = p // C
        c = p % C
        m = <floating>mean[c]
        a = <floating>scale[c]
        b = <floating>shift[c]
        for i in range(L):
            out[n, c, i] = (x[n, c, i] - m) * a + b


def backward_sums(const floating[:, :, ::1] dout,   # IN  (N, C, L)
                  const floating[:, :, ::1] x,      # IN  (N, C, L)
                  const double[::1] mean,           # IN  (C,)
                  double[::1] dbeta,                # OUT (C,) sum of dout
                  double[::1] dot,                  # OUT (C,) sum of dout * (x - mean)
                  int n_threads):
    """The two per channel sums the BatchNorm gradient needs, in one pass over dout and x."""
    cdef Py_ssize_t N = dout.shape[0], C = dout.shape[1], L = dout.shape[2], c, n
    cdef double s, t
    for c in prange(C, nogil=True, num_threads=n_threads, schedule="static"):
        s = 0
        t = 0
        for n in range(N):
            s = s + _plane_sum(&dout[n, c, 0], L)
            t = t + _plane_centered_dot(&dout[n, c, 0], 0, &x[n, c, 0], mean[c], L)
        dbeta[c] = s
        dot[c] = t


def backward_dx(const floating[:, :, ::1] dout,   # IN  (N, C, L)
                const floating[:, :, ::1] x,      # IN  (N, C, L)
                const double[::1] mean,           # IN  (C,)
                const double[::1] dout_mean,      # IN  (C,) mean of dout per channel
                const double[::1] p,              # IN  (C,) coefficient of dout - dout_mean
                const double[::1] q,              # IN  (C,) coefficient of x - mean
                floating[:, :, ::1] dx,           # OUT (N, C, L)
                int n_threads):
    """dx = (dout - dout_mean[c]) * p[c] + (x - mean[c]) * q[c], in dout's dtype."""
    cdef Py_ssize_t N = dout.shape[0], C = dout.shape[1], L = dout.shape[2], k, n, c, i
    cdef floating m, md, a, b
    for k in prange(N * C, nogil=True, num_threads=n_threads, schedule="static"):
        n = k // C
        c = k % C
        m = <floating>mean[c]
        md = <floating>dout_mean[c]
        a = <floating>p[c]
        b = <floating>q[c]
        for i in range(L):
            dx[n, c, i] = (dout[n, c, i] - md) * a + (x[n, c, i] - m) * b
