"""Winograd F(2x2, 3x3): the transforms of a 3x3 stride-1 convolution with 16 products per 2x2 outputs.

Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks" (CVPR 2016). The output plane is
cut into 2x2 tiles, numbered t = (i*TH + ty)*TW + tx over (image, tile row, tile column) with
TH = ceil(OH/2), TW = ceil(OW/2). Tile (ty, tx) reads the 4x4 patch d of the zero-padded input at
(2*ty, 2*tx), and with xi = 4*row + column of a 4x4 transform:

    V[xi, c, t] = (B^T d B)[xi]                      input_transform   (16, C, T)
    U[xi, f, c] = (G w[f, c] G^T)[xi]                 weight_transform  (16, FN, C)
    M[xi]       = U[xi] @ V[xi]                       16 GEMMs, gemm    (16, FN, T)
    out tile    = A^T M[:, f, t] A  (+ b[f], ReLU)    output_transform  2x2 outputs

and backward, for the weights' gradient, from the output gradient g (2x2 per tile):

    dM[xi, f, t] = (A g A^T)[xi]                      grad_transform    (16, FN, T)
    dU[xi]       = V[xi] @ dM[xi]^T                   16 GEMMs, gemm_nt (16, C, FN)
    dW[f, c]     = G^T dU[:, c, f] G                  weight_grad_transform

    B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]
    A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]
    G   = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]

Both transforms are separable: one pass along a whole tile row (contiguous, so it vectorises), then
one across each tile. Threads own whole (image, channel) planes, so writes never race. The GEMMs run
on gemm and gemm_nt (float32, AVX2 + FMA, winograd_gemm.h) or else on NumPy's BLAS, as
cnncore/_conv/winograd.py chooses.
"""
from cython cimport floating
from cython.parallel cimport prange, threadid
from libc.string cimport memset

from _cpu cimport cnncore_cpu_avx2, cnncore_cpu_fma

# Elements the AVX2 input transform reads past the end of its split plane (see winograd_loops.h).
cdef enum:
    VECTOR_SLACK = 8


cdef inline void _split_line(const floating* src, Py_ssize_t w, Py_ssize_t pad,
                             floating* even, floating* odd, Py_ssize_t half) noexcept nogil:
    # even[j] = padded[2j], odd[j] = padded[2j + 1] for j < half, where padded is the line src[:w]
    # with pad zeros before it and zeros after it.
    cdef Py_ssize_t j, x
    # the j whose two columns are both inside src[:w]: x = 2j - pad in [0, w - 1)
    cdef Py_ssize_t lo = (pad + 1) // 2, hi = (w - 2 + pad) // 2 + 1 if w - 2 + pad >= 0 else 0
    if hi > half:
        hi = half
    if hi < lo:
        hi = lo
    if lo > half:
        lo = hi = half
    for j in range(lo):
        x = 2 * j - pad
        even[j] = src[x] if 0 <= x < w else 0
        odd[j] = src[x + 1] if 0 <= x + 1 < w else 0
    for j in range(lo, hi):
        even[j] = src[2 * j - pad]
        odd[j] = src[2 * j + 1 - pad]
    for j in range(hi, half):
        x = 2 * j - pad
        even[j] = src[x] if 0 <= x < w else 0
        odd[j] = src[x + 1] if 0 <= x + 1 < w else 0


cdef inline void _split_plane(const floating* plane, Py_ssize_t H, Py_ssize_t W, Py_ssize_t pad,
                              floating* even, floating* odd,
                              Py_ssize_t PH, Py_ssize_t half) noexcept nogil:
    # The zero-padded plane's first PH lines, cut at 2*half columns, split by column parity:
    # even[r*half + j] = padded[r, 2j], odd[r*half + j] = padded[r, 2j + 1], read straight from the
    # plane (no padded copy of each line), so the split plane is all the scratch there is.
    cdef Py_ssize_t r, iy
    for r in range(PH):
        iy = r - pad
        if iy < 0 or iy >= H:
            memset(even + r * half, 0, half * sizeof(floating))
            memset(odd + r * half, 0, half * sizeof(floating))
        else:
            _split_line(plane + iy * W, W, pad, even + r * half, odd + r * half, half)


cdef extern from *:
    """
    #define WG_T float
    #define WG_NAME(x) cnncore_winograd_##x##_f
    #include "winograd_loops.h"
    #undef WG_T
    #undef WG_NAME
    #define WG_T double
    #define WG_NAME(x) cnncore_winograd_##x##_d
    #include "winograd_loops.h"
    #undef WG_T
    #undef WG_NAME
    static inline void cnncore_winograd_prefetch(const void* p, Py_ssize_t bytes)
    {
    #if defined(__GNUC__) || defined(__clang__)
        Py_ssize_t k;
        for (k = 0; k < bytes; k += 64)
            __builtin_prefetch((const char*)p + k);
    #endif
    }
    """
    void _prefetch "cnncore_winograd_prefetch"(const void* p, Py_ssize_t bytes) nogil
    void _in_row_f "cnncore_winograd_in_row_f"(const float* e, const float* o, Py_ssize_t half,
                                               float* v, Py_ssize_t xs, Py_ssize_t TW) nogil
    void _in_row_d "cnncore_winograd_in_row_d"(const double* e, const double* o, Py_ssize_t half,
                                               double* v, Py_ssize_t xs, Py_ssize_t TW) nogil
    void _grad_row_f "cnncore_winograd_grad_row_f"(const float* e, const float* o, Py_ssize_t half,
                                                   float* v, Py_ssize_t xs, Py_ssize_t TW) nogil
    void _grad_row_d "cnncore_winograd_grad_row_d"(const double* e, const double* o,
                                                   Py_ssize_t half, double* v, Py_ssize_t xs,
                                                   Py_ssize_t TW) nogil
    float _out_plane_f "cnncore_winograd_out_plane_f"(const float* m, Py_ssize_t xs,
                                                      Py_ssize_t Tp, float bias, int relu,
                                                      float* y) nogil
    double _out_plane_d "cnncore_winograd_out_plane_d"(const double* m, Py_ssize_t xs,
                                                       Py_ssize_t Tp, double bias, int relu,
                                                       double* y) nogil
    void _in_plane_avx2_f "cnncore_winograd_in_plane_avx2_f"(const float* e, const float* o,
                                                             Py_ssize_t half, float* v,
                                                             Py_ssize_t xs, Py_ssize_t TH,
                                                             Py_ssize_t TW, Py_ssize_t after) nogil
    void _in_plane_avx2_d "cnncore_winograd_in_plane_avx2_d"(const double* e, const double* o,
                                                             Py_ssize_t half, double* v,
                                                             Py_ssize_t xs, Py_ssize_t TH,
                                                             Py_ssize_t TW, Py_ssize_t after) nogil
    float _out_plane_avx2_f "cnncore_winograd_out_plane_avx2_f"(const float* m, Py_ssize_t xs,
                                                                Py_ssize_t TH, Py_ssize_t TW,
                                                                float bias, int relu, float* y,
                                                                Py_ssize_t OH, Py_ssize_t OW) nogil
    double _out_plane_avx2_d "cnncore_winograd_out_plane_avx2_d"(const double* m, Py_ssize_t xs,
                                                                 Py_ssize_t TH, Py_ssize_t TW,
                                                                 double bias, int relu, double* y,
                                                                 Py_ssize_t OH, Py_ssize_t OW) nogil
    void _split_plane_avx2_f "cnncore_winograd_split_plane_avx2_f"(
        const float* plane, Py_ssize_t H, Py_ssize_t W, Py_ssize_t pad, float* even, float* odd,
        Py_ssize_t PH, Py_ssize_t half, Py_ssize_t stride) nogil
    void _split_plane_avx2_d "cnncore_winograd_split_plane_avx2_d"(
        const double* plane, Py_ssize_t H, Py_ssize_t W, Py_ssize_t pad, double* even,
        double* odd, Py_ssize_t PH, Py_ssize_t half, Py_ssize_t stride) nogil
    void _interleave_f "cnncore_winograd_interleave_f"(const float* left, const float* right,
                                                       Py_ssize_t OW, float* dst) nogil
    void _interleave_d "cnncore_winograd_interleave_d"(const double* left, const double* right,
                                                       Py_ssize_t OW, double* dst) nogil


cdef inline void _in_row(const floating* e, const floating* o, Py_ssize_t half, floating* v,
                         Py_ssize_t xs, Py_ssize_t TW) noexcept nogil:
    if floating is float:
        _in_row_f(e, o, half, v, xs, TW)
    else:
        _in_row_d(e, o, half, v, xs, TW)


cdef inline void _grad_row(const floating* e, const floating* o, Py_ssize_t half, floating* v,
                           Py_ssize_t xs, Py_ssize_t TW) noexcept nogil:
    if floating is float:
        _grad_row_f(e, o, half, v, xs, TW)
    else:
        _grad_row_d(e, o, half, v, xs, TW)


cdef inline void _in_plane_avx2(const floating* e, const floating* o, Py_ssize_t half,
                                floating* v, Py_ssize_t xs, Py_ssize_t TH, Py_ssize_t TW,
                                Py_ssize_t after) noexcept nogil:
    if floating is float:
        _in_plane_avx2_f(e, o, half, v, xs, TH, TW, after)
    else:
        _in_plane_avx2_d(e, o, half, v, xs, TH, TW, after)


cdef inline void _split_plane_avx2(const floating* plane, Py_ssize_t H, Py_ssize_t W,
                                   Py_ssize_t pad, floating* even, floating* odd, Py_ssize_t PH,
                                   Py_ssize_t half, Py_ssize_t stride) noexcept nogil:
    if floating is float:
        _split_plane_avx2_f(plane, H, W, pad, even, odd, PH, half, stride)
    else:
        _split_plane_avx2_d(plane, H, W, pad, even, odd, PH, half, stride)


# Whether this CPU and compiler have AVX2: input_transform takes its AVX2 loops only then, whatever
# its caller asks (they would stop the process with an illegal instruction, or do nothing).
cdef bint _AVX2 = cnncore_cpu_avx2()


cdef inline floating _out_plane(const floating* m, Py_ssize_t xs, Py_ssize_t Tp, floating bias,
                                bint relu, floating* y) noexcept nogil:
    if floating is float:
        return _out_plane_f(m, xs, Tp, bias, relu, y)
    else:
        return _out_plane_d(m, xs, Tp, bias, relu, y)


cdef inline floating _out_plane_avx2(const floating* m, Py_ssize_t xs, Py_ssize_t TH,
                                     Py_ssize_t TW, floating bias, bint relu, floating* y,
                                     Py_ssize_t OH, Py_ssize_t OW) noexcept nogil:
    if floating is float:
        return _out_plane_avx2_f(m, xs, TH, TW, bias, relu, y, OH, OW)
    else:
        return _out_plane_avx2_d(m, xs, TH, TW, bias, relu, y, OH, OW)


cdef inline void _interleave(const floating* left, const floating* right, Py_ssize_t OW,
                             floating* dst) noexcept nogil:
    if floating is float:
        _interleave_f(left, right, OW, dst)
    else:
        _interleave_d(left, right, OW, dst)


def input_transform(const floating[::1] x,            # IN  n images of C planes H x W (see below)
                    Py_ssize_t n, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                    Py_ssize_t image_stride, Py_ssize_t channel_stride,
                    floating[:, ::1] V,                 # OUT (16, >= C*T), T = n*TH*TW
                    floating[:, ::1] work,              # scratch (n_threads, input_work_size(...))
                    Py_ssize_t pad, int n_threads, bint avx2):
    """V[xi, c*T + t] = (B^T d B)[xi], d the 4x4 patch of tile t of channel c (zero padding pad).

    Plane (i, c) is the H*W elements of x from i*image_stride + c*channel_stride: an (n, C, H, W)
    array has strides C*H*W and H*W; a (C, n*H*W) one has H*W and n*H*W. avx2: take the AVX2
    loops where the CPU has AVX2 (else ignored).
    """
    cdef Py_ssize_t ic
    if n == 0 or C == 0 or (H + 2 * pad - 1) // 2 <= 0 or (W + 2 * pad - 1) // 2 <= 0:
        return
    with nogil:
        if n_threads == 1:
            _input_planes(&x[0], n, C, H, W, image_stride, channel_stride, &V[0, 0], V.shape[1],
                          &work[0, 0], pad, 0, n * C, avx2)
        else:
            for ic in prange(n * C, schedule="guided", num_threads=n_threads):
                _input_planes(&x[0], n, C, H, W, image_stride, channel_stride, &V[0, 0],
                              V.shape[1], &work[threadid(), 0], pad, ic, ic + 1, avx2)


cdef void _input_planes(const floating* x, Py_ssize_t n, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                        Py_ssize_t image_stride, Py_ssize_t channel_stride, floating* V,
                        Py_ssize_t xs, floating* work, Py_ssize_t pad, Py_ssize_t first,
                        Py_ssize_t stop, bint avx2) noexcept nogil:
    # input_transform's planes ic = first .. stop - 1 (channel c = ic // n, image i = ic % n) on
    # this thread, with work its scratch.
    # Planes go in V's order (channel by channel, image by image), so that V's 16 rows are written
    # front to back, and each plane prefetches the next one's input. The AVX2 loop's spare lanes at
    # a plane's end may then write the next plane's first tiles, which this call writes again.
    cdef Py_ssize_t TH = (H + 2 * pad - 1) // 2, TW = (W + 2 * pad - 1) // 2
    cdef Py_ssize_t PH = 2 * TH + 2, half = TW + 1, T = n * TH * TW
    cdef Py_ssize_t stride = _split_stride(half)
    cdef Py_ssize_t ic, i, c, ty
    cdef floating* even = work
    cdef floating* odd
    for ic in range(first, stop):
        c = ic // n
        i = ic % n
        if avx2 and _AVX2:
            if ic + 1 < stop:
                _prefetch(x + ((ic + 1) % n) * image_stride + ((ic + 1) // n) * channel_stride,
                          H * W * sizeof(floating))
            odd = even + PH * stride
            _split_plane_avx2(x + i * image_stride + c * channel_stride, H, W, pad, even, odd, PH,
                              half, stride)
            memset(odd + PH * stride, 0, VECTOR_SLACK * sizeof(floating))
            _in_plane_avx2(even, odd, stride, V + c * T + i * TH * TW, xs, TH, TW,
                           TH * TW if ic + 1 < stop else 0)
        else:
            odd = even + PH * half
            _split_plane(x + i * image_stride + c * channel_stride, H, W, pad, even, odd, PH, half)
            for ty in range(TH):
                _in_row(even + 2 * ty * half, odd + 2 * ty * half, half,
                        V + c * T + (i * TH + ty) * TW, xs, TW)


cdef inline Py_ssize_t _split_stride(Py_ssize_t half) noexcept nogil:
    # The AVX2 loops' split lines: half elements rounded up to whole registers (8 float32, 4 float64)
    return (half + 7) // 8 * 8


def input_work_size(Py_ssize_t H, Py_ssize_t W, Py_ssize_t pad):
    """Scratch elements input_transform needs per thread: the padded plane split by column parity
    (in lines of whole AVX2 registers), and what the AVX2 loops read past it."""
    cdef Py_ssize_t TH = (H + 2 * pad - 1) // 2, TW = (W + 2 * pad - 1) // 2
    return 2 * (2 * TH + 2) * _split_stride(TW + 1) + VECTOR_SLACK


def output_transform(const floating[:, ::1] M,        # IN  (16, >= FN*T) the GEMMs' results
                     const floating[::1] b,            # IN  (FN,)
                     floating[:, :, :, ::1] out,       # OUT (n, FN, OH, OW), C-contiguous
                     floating[:, ::1] work,            # scratch (n_threads, output_work_size(...))
                     bint relu, int n_threads, bint avx2):
    """out[i, f] = act(A^T M[:, f*T + t] A + b[f]) tile by tile, T = n*TH*TW; act = ReLU (x <= 0 -> 0)
    or identity. avx2: take the AVX2 loop where the CPU has AVX2 and tile rows fill half a register
    or more (else ignored; work is then unused).

    Returns the number of (image, filter) planes whose 2x2 tiles hold a value that is not finite
    before the activation, counting a tile's outputs past an odd edge (the caller then computes
    those planes directly).
    """
    cdef Py_ssize_t n = out.shape[0], FN = out.shape[1], OH = out.shape[2], OW = out.shape[3]
    cdef Py_ssize_t jf
    cdef Py_ssize_t n_bad = 0
    if n == 0 or FN == 0 or OH == 0 or OW == 0:
        return 0
    with nogil:
        if n_threads == 1:
            n_bad = _output_planes(&M[0, 0], M.shape[1], &b[0], relu, &out[0, 0, 0, 0], n, FN, OH,
                                   OW, &work[0, 0], 0, n * FN, avx2)
        else:
            for jf in prange(n * FN, schedule="guided", num_threads=n_threads):
                n_bad += _output_planes(&M[0, 0], M.shape[1], &b[0], relu, &out[0, 0, 0, 0], n, FN,
                                        OH, OW, &work[threadid(), 0], jf, jf + 1, avx2)
    return n_bad


cdef Py_ssize_t _output_planes(const floating* M, Py_ssize_t xs, const floating* b, bint relu,
                               floating* out, Py_ssize_t n, Py_ssize_t FN, Py_ssize_t OH,
                               Py_ssize_t OW, floating* work, Py_ssize_t first, Py_ssize_t stop,
                               bint avx2) noexcept nogil:
    # output_transform's planes jf = first .. stop - 1 (filter f = jf // n, image j = jf % n) on
    # this thread, in M's order (as in _input_planes); -> how many hold a value that is not finite.
    cdef Py_ssize_t TH = (OH + 1) // 2, TW = (OW + 1) // 2, Tp = TH * TW, T = n * Tp
    cdef Py_ssize_t jf, j, f, ty, k
    cdef floating* y
    cdef floating bad
    cdef Py_ssize_t n_bad = 0
    # Tile rows of 4 float32 tiles or fewer would leave half of each AVX2 register idle: they keep
    # the baseline loop, which is as fast there.
    cdef bint wide_rows = avx2 and _AVX2 and 2 * TW > <Py_ssize_t>(32 // sizeof(floating))
    for jf in range(first, stop):
        f = jf // n
        j = jf % n
        y = out + (j * FN + f) * OH * OW
        # The check covers the whole tiles, also their outputs past an odd edge: a value there
        # that is not finite only sends the plane to the direct path.
        if wide_rows:
            bad = _out_plane_avx2(M + f * T + j * Tp, xs, TH, TW, b[f], relu, y, OH, OW)
        else:
            bad = _out_plane(M + f * T + j * Tp, xs, Tp, b[f], relu, work)
            for ty in range(TH):
                for k in range(2):
                    if 2 * ty + k < OH:
                        _interleave(work + 2 * k * Tp + ty * TW, work + (2 * k + 1) * Tp + ty * TW,
                                    OW, y + (2 * ty + k) * OW)
        if bad != 0:
            n_bad += 1
    return n_bad


cdef extern from "winograd_gemm.h":
    void cnncore_winograd_gemm(const float* U, const float* V, Py_ssize_t xs_v, float* M,
                               Py_ssize_t xs_m, Py_ssize_t FN, Py_ssize_t C, Py_ssize_t T) nogil
    void cnncore_winograd_gemm_nt(const float* V, Py_ssize_t xs_v, const float* dM,
                                  Py_ssize_t xs_m, float* dU, Py_ssize_t C, Py_ssize_t FN,
                                  Py_ssize_t T) nogil


cdef bint _GEMM = cnncore_cpu_avx2() and cnncore_cpu_fma()


def _check_products(function, operands, rows, Py_ssize_t T, bint fit, lengths):
    # gemm's and gemm_nt's checks: the CPU, 16 rows in each operand, T >= 0, rows long enough (fit)
    if not _GEMM:
        raise RuntimeError(f"{function} needs AVX2 and FMA")
    if any(r != 16 for r in rows):
        raise ValueError(f"{operands} must have 16 rows")
    if T < 0 or not fit:
        raise ValueError(lengths)


def gemm(const float[:, :, ::1] U,       # IN  (16, FN, C)
         const float[:, ::1] V,          # IN  (16, >= C*T)
         float[:, ::1] M,                # OUT (16, >= FN*T)
         Py_ssize_t T):
    """M[xi, f*T + t] = sum over c of U[xi, f, c] * V[xi, c*T + t], float32, on AVX2 + FMA: the
    forward's 16 products without BLAS's zeroing of M and packing of V. Only where the CPU has AVX2
    and FMA."""
    cdef Py_ssize_t FN = U.shape[1], C = U.shape[2]
    _check_products("gemm", "U, V and M", (U.shape[0], V.shape[0], M.shape[0]), T,
                    V.shape[1] >= C * T and M.shape[1] >= FN * T,
                    "V must hold C*T and M FN*T elements per row")
    if FN == 0 or C == 0 or T == 0:
        if FN and T:
            for xi in range(16):
                M[xi, :FN * T] = 0
        return
    with nogil:
        cnncore_winograd_gemm(&U[0, 0, 0], &V[0, 0], V.shape[1], &M[0, 0], M.shape[1], FN, C, T)


def gemm_nt(const float[:, ::1] V,      # IN  (16, >= C*T)
            const float[:, ::1] dM,     # IN  (16, >= FN*T)
            float[:, :, ::1] dU,        # OUT (16, C, FN)
            Py_ssize_t T):
    """dU[xi, c, f] = sum over t of V[xi, c*T + t] * dM[xi, f*T + t], float32, on AVX2 + FMA: the
    weight gradient's 16 products without BLAS's packing of both operands. Only where
    the CPU has AVX2 and FMA."""
    cdef Py_ssize_t C = dU.shape[1], FN = dU.shape[2]
    _check_products("gemm_nt", "V, dM and dU", (V.shape[0], dM.shape[0], dU.shape[0]), T,
                    V.shape[1] >= C * T and dM.shape[1] >= FN * T,
                    "V must hold C*T and dM FN*T elements per row")
    if C == 0 or FN == 0:
        return
    with nogil:
        cnncore_winograd_gemm_nt(&V[0, 0], V.shape[1], &dM[0, 0], dM.shape[1], &dU[0, 0, 0], C, FN,
                                 T)


def forward_tiles(const float[::1] x,              # IN  (N, C, H, W), C-contiguous
                  Py_ssize_t C, Py_ssize_t H, Py_ssize_t W, Py_ssize_t pad,
                  const float[:, :, ::1] U,          # IN  (16, FN, C) from weight_transform
                  const float[::1] b,                # IN  (FN,)
                  float[:, :, :, ::1] out,           # OUT (N, FN, OH, OW)
                  const Py_ssize_t[::1] starts,      # IN  tile k is images starts[k] .. starts[k+1]-1
                  float[:, ::1] V, float[:, ::1] M,  # scratch (n_threads, 16 * xi_stride(C or FN * nT))
                  float[:, ::1] work_in,             # scratch (n_threads, input_work_size(...))
                  float[:, ::1] work_out,            # scratch (n_threads, output_work_size(...))
                  unsigned char[::1] bad,            # OUT (n_tiles,) 1 where a result is not finite
                  bint relu, int n_threads, bint avx2):
    """The float32 forward, tile by tile of images, on n_threads threads: for each tile the input
    transform, gemm and the output transform, as cnncore._conv.winograd.tile does them one call at a
    time (the same results), without going back to Python between tiles. A tile whose output holds
    a value that is not finite gets bad[k] = 1 (the caller computes it directly). Only where
    the CPU has AVX2 and FMA; V's and M's rows are xi_stride(...) apart, as the caller laid them out."""
    cdef Py_ssize_t n_tiles = starts.shape[0] - 1, FN = U.shape[1]
    cdef Py_ssize_t OH = out.shape[2], OW = out.shape[3]
    cdef Py_ssize_t Tp = ((H + 2 * pad - 1) // 2) * ((W + 2 * pad - 1) // 2)
    cdef Py_ssize_t k, n, nT, xs_v, xs_m, worker
    if not _GEMM:
        raise RuntimeError("forward_tiles needs AVX2 and FMA")
    if (pad < 0 or U.shape[0] != 16 or U.shape[2] != C or b.shape[0] != FN or out.shape[1] != FN
            or bad.shape[0] < n_tiles or n_tiles < 0 or starts[0] < 0
            or starts[n_tiles] > out.shape[0] or x.shape[0] < out.shape[0] * C * H * W
            or OH != H + 2 * pad - 2 or OW != W + 2 * pad - 2):
        raise ValueError("forward_tiles: operands do not match")
    for k in range(n_tiles):
        n = starts[k + 1] - starts[k]
        if (n < 0 or V.shape[1] < 16 * xi_stride(C * n * Tp, 4)
                or M.shape[1] < 16 * xi_stride(FN * n * Tp, 4)):
            raise ValueError("forward_tiles: a tile does not fit the scratch")
    if n_threads < 1 or V.shape[0] < n_threads or M.shape[0] < n_threads \
            or work_in.shape[0] < n_threads or work_out.shape[0] < n_threads:
        raise ValueError("forward_tiles: n_threads must be >= 1, with scratch for each thread")
    if (work_in.shape[1] < input_work_size(H, W, pad)
            or work_out.shape[1] < output_work_size(OH, OW)):
        raise ValueError("forward_tiles: work_in and work_out shorter than input_work_size and "
                         "output_work_size")
    if n_tiles == 0 or C == 0 or FN == 0 or Tp == 0:
        return
    with nogil:
        for k in prange(n_tiles, schedule="dynamic", chunksize=1, num_threads=n_threads):
            worker = threadid()
            n = starts[k + 1] - starts[k]
            nT = n * Tp
            xs_v = xi_stride(C * nT, 4)
            xs_m = xi_stride(FN * nT, 4)
            bad[k] = 0
            if n == 0:
                continue
            _input_planes(&x[starts[k] * C * H * W], n, C, H, W, C * H * W, H * W, &V[worker, 0],
                          xs_v, &work_in[worker, 0], pad, 0, n * C, avx2)
            cnncore_winograd_gemm(&U[0, 0, 0], &V[worker, 0], xs_v, &M[worker, 0], xs_m, FN, C, nT)
            if _output_planes(&M[worker, 0], xs_m, &b[0], relu, &out[starts[k], 0, 0, 0], n, FN,
                              OH, OW, &work_out[worker, 0], 0, n * FN, avx2):
                bad[k] = 1


cpdef Py_ssize_t xi_stride(Py_ssize_t size, Py_ssize_t itemsize) noexcept nogil:
    """Elements between the 16 rows of V or M holding size each: an odd number of 64-byte lines.

    Rows a power of two apart (a 4 KiB multiple, as at 32 channels x 1600 tiles) put the
    transforms' 16 streams on one set of the L1 cache, which stalls the input transform.
    """
    cdef Py_ssize_t line = 64 // itemsize
    return (((size + line - 1) // line) | 1) * line


def output_work_size(Py_ssize_t OH, Py_ssize_t OW):
    """Scratch elements output_transform needs per thread: a plane's 2x2 outputs."""
    cdef Py_ssize_t TH = (OH + 1) // 2, TW = (OW + 1) // 2
    return 4 * TH * TW


def grad_transform(const floating[::1] d,             # IN  n images of FN planes OH x OW
                   Py_ssize_t n, Py_ssize_t FN, Py_ssize_t OH, Py_ssize_t OW,
                   Py_ssize_t image_stride, Py_ssize_t channel_stride,
                   floating[:, ::1] dM,                 # OUT (16, >= FN*T), T = n*TH*TW
                   floating[:, ::1] work,               # scratch (n_threads, output_work_size(OH, OW))
                   int n_threads):
    """dM[xi, f*T + t] = (A g A^T)[xi], g the 2x2 output gradient of tile t of plane f (zero past the
    plane's edge): the gradient of M, the transposed output transform. Planes as in input_transform.
    """
    cdef Py_ssize_t TH = (OH + 1) // 2, TW = (OW + 1) // 2, T = n * TH * TW
    cdef Py_ssize_t jf, j, f, ty
    cdef floating* even
    cdef floating* odd
    if n == 0 or FN == 0 or TH == 0 or TW == 0:
        return
    with nogil:
        for jf in prange(n * FN, schedule="guided", num_threads=n_threads):
            even = &work[threadid(), 0]
            odd = even + 2 * TH * TW
            f = jf // n   # in dM's order, as in input_transform
            j = jf % n
            _split_plane(&d[j * image_stride + f * channel_stride], OH, OW, 0, even, odd, 2 * TH,
                         TW)
            for ty in range(TH):
                _grad_row(even + 2 * ty * TW, odd + 2 * ty * TW, TW,
                          &dM[0, f * T + (j * TH + ty) * TW], dM.shape[1], TW)


def weight_transform(const floating[:, :, :, ::1] W,  # IN  (FN, C, 3, 3)
                     floating[:, :, ::1] U,             # OUT (16, FN, C), or (16, C, FN) if flip
                     bint flip):
    """U[xi, f, c] = (G W[f, c] G^T)[xi], computed in double. flip: the filters of the input
    gradient instead, W[f, c] turned by 180 degrees, stored at U[xi, c, f]."""
    cdef Py_ssize_t FN = W.shape[0], C = W.shape[1], f, c, a, b, at, j, xi, n
    cdef Py_ssize_t xs = U.shape[1] * U.shape[2], total = FN * C
    cdef double g[3][3]
    cdef double t[4][3]
    # 16 filters' transforms, stored row by row of U: U's 16 rows are often a multiple of 4 KiB
    # apart (32 x 32 filters), so storing each filter's 16 entries in turn hit one set of the L1
    # cache 16 times.
    cdef floating block[16][16]
    cdef const floating* w
    cdef floating* u
    if total == 0:
        return
    u = &U[0, 0, 0]
    f = 0
    c = 0
    with nogil:
        for at in range(0, total, 16):
            n = total - at if total - at < 16 else 16
            for j in range(n):
                # entry at + j of U's rows: filter (f, c), c fastest (f fastest when flip)
                w = &W[f, c, 0, 0]
                for a in range(3):
                    for b in range(3):
                        g[a][b] = w[8 - 3 * a - b] if flip else w[3 * a + b]
                for b in range(3):   # G down the columns
                    t[0][b] = g[0][b]
                    t[1][b] = (g[0][b] + g[1][b] + g[2][b]) / 2
                    t[2][b] = (g[0][b] - g[1][b] + g[2][b]) / 2
                    t[3][b] = g[2][b]
                for a in range(4):   # G^T across the rows
                    block[4 * a][j] = <floating>t[a][0]
                    block[4 * a + 1][j] = <floating>((t[a][0] + t[a][1] + t[a][2]) / 2)
                    block[4 * a + 2][j] = <floating>((t[a][0] - t[a][1] + t[a][2]) / 2)
                    block[4 * a + 3][j] = <floating>t[a][2]
                if flip:
                    f += 1
                    if f == FN:
                        f = 0
                        c += 1
                else:
                    c += 1
                    if c == C:
                        c = 0
                        f += 1
            for xi in range(16):
                for j in range(n):
                    u[xi * xs + at + j] = block[xi][j]


def weight_grad_transform(const floating[:, :, ::1] dU,   # IN  (16, C, FN)
                          floating[:, :, :, ::1] dW):      # OUT (FN, C, 3, 3)
    """dW[f, c] = G^T dU[:, c, f] G (dU's 16 entries as a 4x4, xi = 4*row + column), computed in
    double: the gradient of the filters from the gradient of their transform U."""
    cdef Py_ssize_t FN = dW.shape[0], C = dW.shape[1], f, c, a, b
    cdef double u[4][4]
    cdef double t[4][3]
    with nogil:
        for f in range(FN):
            for c in range(C):
                for a in range(4):
                    for b in range(4):
                        u[a][b] = dU[4 * a + b, c, f]
                for a in range(4):   # G across the rows
                    t[a][0] = u[a][0] + (u[a][1] + u[a][2]) / 2
                    t[a][1] = (u[a][1] - u[a][2]) / 2
                    t[a][2] = (u[a][1] + u[a][2]) / 2 + u[a][3]
                for b in range(3):   # G^T down the columns
                    dW[f, c, 0, b] = <floating>(t[0][b] + (t[1][b] + t[2][b]) / 2)
                    dW[f, c, 1, b] = <floating>((t[1][b] - t[2][b]) / 2)
                    dW[f, c, 2, b] = <floating>((t[1][b] + t[2][b]) / 2 + t[3][b])
