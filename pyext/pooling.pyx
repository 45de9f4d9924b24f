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
from cython.parallel cimport prange, threadid
from libc.string cimport memset

from _cpu cimport cnncore_cpu_avx2
from _window cimport window_hi, window_lo

cdef extern from "pooling_2x2.h":
    void cnncore_max_backward_row_2x2_float(const float* d, const Py_ssize_t* arg,
                                            float* q0, float* q1, Py_ssize_t n) noexcept nogil
    void cnncore_max_backward_row_2x2_double(const double* d, const Py_ssize_t* arg,
                                             double* q0, double* q1, Py_ssize_t n) noexcept nogil


cdef extern from "pool_3x3_avx2.h":
    enum: CNNCORE_POOL_BACKWARD_MAX_STEPS
    void cnncore_max_backward_3x3_avx2(const float* dout, const Py_ssize_t* arg, float* dx,
                                       Py_ssize_t H, Py_ssize_t W, Py_ssize_t out_h, Py_ssize_t n,
                                       float* work) noexcept nogil
    Py_ssize_t cnncore_max_row_3x3_avx2(const float* r0, const float* r1, const float* r2,
                                        float* out, int* arg, float* bad,
                                        Py_ssize_t n) noexcept nogil
    Py_ssize_t cnncore_max_row_3x3_avx2_d(const double* r0, const double* r1, const double* r2,
                                          double* out, Py_ssize_t* arg, double* bad,
                                          Py_ssize_t n) noexcept nogil


cdef struct Window:
    Py_ssize_t H, W, out_h, out_w, pool_h, pool_w, stride, pad
    bint avx2       # 3x3 stride-2 max pooling may take pool_3x3_avx2.h


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


cdef inline void _max_window(const floating* x, floating* out, Py_ssize_t* arg_max, Window g,
                             Py_ssize_t oy, Py_ssize_t ox) noexcept nogil:
    # One output cell, its window clipped to the image.
    cdef Py_ssize_t ky, kx, arg
    cdef Py_ssize_t y0 = oy * g.stride - g.pad, x0 = ox * g.stride - g.pad
    cdef Py_ssize_t ky_lo = window_lo(y0, g.pool_h), ky_hi = window_hi(y0, g.pool_h, g.H)
    cdef Py_ssize_t kx_lo = window_lo(x0, g.pool_w), kx_hi = window_hi(x0, g.pool_w, g.W)
    cdef floating best = x[(y0 + ky_lo) * g.W + x0 + kx_lo], v
    cdef bint gt, nan = False
    arg = ky_lo * g.pool_w + kx_lo
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


# Output cells of a row that _max_run takes at a time (its buffers live on the stack).
cdef enum:
    RUN = 64


cdef inline void _max_cell_pass(float* best, int* arg, float* bad, const float* row, int k,
                                Py_ssize_t n, Py_ssize_t stride) noexcept nogil:
    # Where row[i*stride] > best[i]: best[i], arg[i] = row[i*stride], k. bad[i] turns NaN once a
    # NaN or an infinity went by (v - v). Written as a bit select on a same-width int and without
    # a reduction: the form GCC vectorises with plain SSE2. The common strides get their own
    # loops, vectorised with the stride as a constant.
    cdef Py_ssize_t i
    cdef float v, b
    cdef int gt
    if stride == 2:
        for i in range(n):
            v, b = row[2 * i], best[i]
            gt = -<int>(v > b)
            arg[i] = (arg[i] & ~gt) | (k & gt)
            best[i] = v if v > b else b
            bad[i] += v - v
    elif stride == 1:
        for i in range(n):
            v, b = row[i], best[i]
            gt = -<int>(v > b)
            arg[i] = (arg[i] & ~gt) | (k & gt)
            best[i] = v if v > b else b
            bad[i] += v - v
    else:
        for i in range(n):
            v, b = row[i * stride], best[i]
            gt = -<int>(v > b)
            arg[i] = (arg[i] & ~gt) | (k & gt)
            best[i] = v if v > b else b
            bad[i] += v - v


cdef inline void _max_run(const float* x, float* out, Py_ssize_t* arg_max, Window g,
                          Py_ssize_t oy, Py_ssize_t ox0, Py_ssize_t n) noexcept nogil:
    # Output cells (oy, ox0 .. ox0+n-1), n <= RUN, whose windows lie inside the image horizontally:
    # one vectorised pass per window cell, in the scan order of _max_window (same ties, same
    # results). A NaN or an infinity anywhere sends the run back to _max_window.
    cdef float best[RUN]
    cdef float bad[RUN]
    cdef int arg[RUN]
    cdef Py_ssize_t i, j, ky, kx
    cdef Py_ssize_t y0 = oy * g.stride - g.pad
    cdef Py_ssize_t ky_lo = window_lo(y0, g.pool_h), ky_hi = window_hi(y0, g.pool_h, g.H)
    cdef const float* row = x + (y0 + ky_lo) * g.W + ox0 * g.stride - g.pad
    for i in range(n):
        best[i] = row[i * g.stride]
        arg[i] = ky_lo * g.pool_w
        bad[i] = best[i] - best[i]
    for ky in range(ky_lo, ky_hi):
        row = x + (y0 + ky) * g.W + ox0 * g.stride - g.pad
        for kx in range(1 if ky == ky_lo else 0, g.pool_w):
            _max_cell_pass(best, arg, bad, row + kx, ky * g.pool_w + kx, n, g.stride)
    for i in range(n):
        if bad[i] != 0:
            for j in range(n):
                _max_window(x, out, arg_max, g, oy, ox0 + j)
            return
    for i in range(n):
        out[oy * g.out_w + ox0 + i] = best[i]
        arg_max[oy * g.out_w + ox0 + i] = arg[i]


# The textbook's pooling (2x2 windows, stride 2, no padding) gets one fused pass per output row.
# The first maximum of a, b, c, d in scan order is the first maximum of the two row pairs' maxima
# (exact for all but NaN, which sends the row back to _max_window). The winner's index is a bit
# select on a mask as wide as the value: no branches (random data defeats branch prediction), and
# for float32 the form GCC vectorises with plain SSE2 (float64 stays scalar, and still gains).

ctypedef fused window_index:
    int             # float32: as wide as the value, so that GCC vectorises the selects
    Py_ssize_t      # float64 (stays scalar)


cdef inline void _max_row_2x2(const floating* r0, const floating* r1, floating* out,
                              window_index* arg, floating* bad, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating a, b, c, d, top, bottom
    cdef window_index right_top, right_bottom, lower
    for i in range(n):
        a, b, c, d = r0[2 * i], r0[2 * i + 1], r1[2 * i], r1[2 * i + 1]
        right_top, right_bottom = -<window_index>(b > a), -<window_index>(d > c)
        top = b if b > a else a
        bottom = d if d > c else c
        lower = -<window_index>(bottom > top)
        out[i] = bottom if bottom > top else top
        arg[i] = ((2 | (right_bottom & 1)) & lower) | (right_top & 1 & ~lower)
        bad[i] = (a - a) + (b - b) + (c - c) + (d - d)


cdef inline void _run_done(const floating* x, floating* out, Py_ssize_t* arg_max, Window g,
                           Py_ssize_t oy, Py_ssize_t ox0, Py_ssize_t n, const int* arg,
                           const floating* bad) noexcept nogil:
    # After a fused pass over outputs (oy, ox0 .. ox0+n-1): float32's window indices (C ints) into
    # arg_max, or, where a NaN or an infinity went by (bad), the whole run again cell by cell.
    cdef Py_ssize_t i, k
    for i in range(n):
        if bad[i] != 0:
            for k in range(n):
                _max_window(x, out, arg_max, g, oy, ox0 + k)
            return
    if floating is float:
        for i in range(n):
            arg_max[oy * g.out_w + ox0 + i] = arg[i]


cdef inline void _max_plane_2x2(const floating* x, floating* out, Py_ssize_t* arg_max,
                                Window g) noexcept nogil:
    # Rows go RUN output cells at a time; bad[i] turned NaN if a NaN or an infinity went by.
    cdef Py_ssize_t oy, ox0, n
    cdef floating bad[RUN]
    cdef int arg[RUN]
    cdef const floating* r0
    for oy in range(g.out_h):
        ox0 = 0
        while ox0 < g.out_w:
            n = RUN if g.out_w - ox0 > RUN else g.out_w - ox0
            r0 = x + 2 * oy * g.W + 2 * ox0
            if floating is float:
                _max_row_2x2(r0, r0 + g.W, out + oy * g.out_w + ox0, arg, bad, n)
            else:
                _max_row_2x2(r0, r0 + g.W, out + oy * g.out_w + ox0, arg_max + oy * g.out_w + ox0,
                             bad, n)
            _run_done(x, out, arg_max, g, oy, ox0, n, arg, bad)
            ox0 += RUN


# 3x3 windows at stride 2 (overlapping pooling) get the same treatment for output rows whose
# windows lie inside the image vertically: the nine cells compared in scan order in registers,
# instead of nine passes through best/arg buffers in memory.

cdef inline void _take(floating v, window_index k, floating* best, window_index* arg,
                       floating* bad) noexcept nogil:
    # One cell of a window in scan order: the later of equal values never wins.
    cdef window_index gt = -<window_index>(v > best[0])
    arg[0] = (arg[0] & ~gt) | (k & gt)
    best[0] = v if v > best[0] else best[0]
    bad[0] += v - v


cdef inline void _max_row_3x3(const floating* r0, const floating* r1, const floating* r2,
                              floating* out, window_index* arg, floating* bad,
                              Py_ssize_t n) noexcept nogil:
    # Window i covers columns 2i .. 2i+2 of rows r0, r1, r2.
    cdef Py_ssize_t i
    cdef floating best, b
    cdef window_index a
    for i in range(n):
        best, a = r0[2 * i], 0
        b = best - best
        _take(r0[2 * i + 1], 1, &best, &a, &b)
        _take(r0[2 * i + 2], 2, &best, &a, &b)
        _take(r1[2 * i], 3, &best, &a, &b)
        _take(r1[2 * i + 1], 4, &best, &a, &b)
        _take(r1[2 * i + 2], 5, &best, &a, &b)
        _take(r2[2 * i], 6, &best, &a, &b)
        _take(r2[2 * i + 1], 7, &best, &a, &b)
        _take(r2[2 * i + 2], 8, &best, &a, &b)
        out[i] = best
        arg[i] = a
        bad[i] = b


cdef inline void _max_run_3x3(const floating* x, floating* out, Py_ssize_t* arg_max, Window g,
                              Py_ssize_t oy, Py_ssize_t ox0, Py_ssize_t n) noexcept nogil:
    # _max_run for 3x3 windows at stride 2 lying wholly inside the image.
    cdef floating bad[RUN]
    cdef int arg[RUN]
    cdef const floating* r0 = x + (oy * 2 - g.pad) * g.W + ox0 * 2 - g.pad
    cdef Py_ssize_t done = 0
    if floating is float:
        if g.avx2:
            done = cnncore_max_row_3x3_avx2(r0, r0 + g.W, r0 + 2 * g.W, out + oy * g.out_w + ox0,
                                            arg, bad, n)
        _max_row_3x3(r0 + 2 * done, r0 + g.W + 2 * done, r0 + 2 * g.W + 2 * done,
                     out + oy * g.out_w + ox0 + done, arg + done, bad + done, n - done)
    else:
        if g.avx2:
            done = cnncore_max_row_3x3_avx2_d(r0, r0 + g.W, r0 + 2 * g.W,
                                              out + oy * g.out_w + ox0,
                                              arg_max + oy * g.out_w + ox0, bad, n)
        _max_row_3x3(r0 + 2 * done, r0 + g.W + 2 * done, r0 + 2 * g.W + 2 * done,
                     out + oy * g.out_w + ox0 + done, arg_max + oy * g.out_w + ox0 + done,
                     bad + done, n - done)
    _run_done(x, out, arg_max, g, oy, ox0, n, arg, bad)


cdef inline void _max_plane(const floating* x, floating* out, Py_ssize_t* arg_max,
                            Window g) noexcept nogil:
    # Border columns (windows clipped by the padding) cell by cell, the interior in runs: 3x3
    # stride-2 windows inside the image in one pass (faster than the runs, both dtypes), other
    # float32 windows cell pass by cell pass. Other float64 windows go cell by cell: GCC vectorises
    # no float64 form of the runs' pass with plain SSE2 (the wheels' baseline), and unvectorised
    # runs gain nothing.
    cdef Py_ssize_t oy, ox, ox_a, ox_b, n, i
    cdef bint three = g.pool_h == 3 and g.pool_w == 3 and g.stride == 2
    if g.pool_h == 2 and g.pool_w == 2 and g.stride == 2 and g.pad == 0:
        _max_plane_2x2(x, out, arg_max, g)
        return
    _interior(g, &ox_a, &ox_b)
    if g.pool_h * g.pool_w > (1 << 30):   # (the runs' window indices are C ints)
        ox_b = ox_a
    for oy in range(g.out_h):
        for ox in range(ox_a):
            _max_window(x, out, arg_max, g, oy, ox)
        ox = ox_a
        while ox < ox_b:
            n = RUN if ox_b - ox > RUN else ox_b - ox
            if three and 0 <= oy * 2 - g.pad <= g.H - 3:
                _max_run_3x3(x, out, arg_max, g, oy, ox, n)
            elif floating is float:
                _max_run(x, out, arg_max, g, oy, ox, n)
            else:
                for i in range(ox, ox + n):
                    _max_window(x, out, arg_max, g, oy, i)
            ox += RUN
        for ox in range(ox_b, g.out_w):
            _max_window(x, out, arg_max, g, oy, ox)


# Windows of at most this many cells get a table of their cells' offsets in the plane.
cdef enum:
    MAX_TABLE = 64


cdef inline void _max_plane_backward_2x2(const floating* dout, const Py_ssize_t* arg_max,
                                         floating* dx, Window g) noexcept nogil:
    # 2x2 windows, stride 2, no padding: each output row's two dx rows in one pass (pooling_2x2.h),
    # every cell written once. An odd last column or row lies in no window.
    cdef Py_ssize_t oy
    cdef floating* q0
    for oy in range(g.out_h):
        q0 = dx + 2 * oy * g.W
        if floating is float:
            cnncore_max_backward_row_2x2_float(dout + oy * g.out_w, arg_max + oy * g.out_w,
                                               q0, q0 + g.W, g.out_w)
        else:
            cnncore_max_backward_row_2x2_double(dout + oy * g.out_w, arg_max + oy * g.out_w,
                                                q0, q0 + g.W, g.out_w)
        if g.W > 2 * g.out_w:
            q0[g.W - 1] = 0
            q0[2 * g.W - 1] = 0
    memset(dx + 2 * g.out_h * g.W, 0, (g.H - 2 * g.out_h) * g.W * sizeof(floating))


cdef inline void _max_plane_backward(const floating* dout, const Py_ssize_t* arg_max,
                                     floating* dx, Window g) noexcept nogil:
    # The window index k of each winner becomes an offset through a table (ky*W + kx for each k)
    # instead of a division and a remainder by pool_w per cell.
    cdef Py_ssize_t oy, ox, k, base
    cdef Py_ssize_t offset[MAX_TABLE]
    cdef const floating* d
    cdef const Py_ssize_t* arg
    cdef float work[4 * 8 * CNNCORE_POOL_BACKWARD_MAX_STEPS]
    if g.pool_h == 2 and g.pool_w == 2 and g.stride == 2 and g.pad == 0:
        _max_plane_backward_2x2(dout, arg_max, dx, g)
        return
    if (floating is float and g.avx2 and g.pool_h == 3 and g.pool_w == 3 and g.stride == 2
            and g.pad == 0 and g.out_w // 8 + 1 <= CNNCORE_POOL_BACKWARD_MAX_STEPS):
        cnncore_max_backward_3x3_avx2(dout, arg_max, dx, g.H, g.W, g.out_h, g.out_w, work)
        return
    memset(dx, 0, g.H * g.W * sizeof(floating))
    if g.pool_h * g.pool_w <= MAX_TABLE:
        for k in range(g.pool_h * g.pool_w):
            offset[k] = (k // g.pool_w) * g.W + k % g.pool_w
        if g.pool_h <= g.stride and g.pool_w <= g.stride:
            # Windows that do not overlap: each cell gets at most one gradient, so it is stored
            # rather than added (the + 0 turns -0.0 into +0.0 as adding into zero does).
            for oy in range(g.out_h):
                base = (oy * g.stride - g.pad) * g.W - g.pad
                d = dout + oy * g.out_w
                arg = arg_max + oy * g.out_w
                for ox in range(g.out_w):
                    dx[base + ox * g.stride + offset[arg[ox]]] = d[ox] + 0
            return
        for oy in range(g.out_h):
            base = (oy * g.stride - g.pad) * g.W - g.pad
            d = dout + oy * g.out_w
            arg = arg_max + oy * g.out_w
            for ox in range(g.out_w):
                dx[base + ox * g.stride + offset[arg[ox]]] += d[ox]
        return
    for oy in range(g.out_h):
        for ox in range(g.out_w):
            k = arg_max[oy * g.out_w + ox]
            dx[(oy * g.stride - g.pad + k // g.pool_w) * g.W
               + ox * g.stride - g.pad + k % g.pool_w] += dout[oy * g.out_w + ox]


cdef inline void _interior(Window g, Py_ssize_t* ox_a, Py_ssize_t* ox_b) noexcept nogil:
    # Output columns [ox_a, ox_b) whose windows lie wholly inside the image horizontally.
    cdef Py_ssize_t a = (g.pad + g.stride - 1) // g.stride
    cdef Py_ssize_t b = 0 if g.W + g.pad < g.pool_w else (g.W + g.pad - g.pool_w) // g.stride + 1
    a = a if a < g.out_w else g.out_w
    b = b if b < g.out_w else g.out_w
    ox_a[0] = a
    ox_b[0] = b if b > a else a


cdef inline void _add_strided(floating* acc, const floating* row, Py_ssize_t n,
                              Py_ssize_t stride) noexcept nogil:
    # acc[i] += row[i*stride]; the common strides get their own loops, which the compiler
    # vectorises with the stride as a constant.
    cdef Py_ssize_t i
    if stride == 2:
        for i in range(n):
            acc[i] += row[2 * i]
    elif stride == 1:
        for i in range(n):
            acc[i] += row[i]
    else:
        for i in range(n):
            acc[i] += row[i * stride]


cdef inline void _add_spread(floating* row, const floating* share, Py_ssize_t n,
                             Py_ssize_t stride) noexcept nogil:
    # row[i*stride] += share[i], specialised like _add_strided.
    cdef Py_ssize_t i
    if stride == 2:
        for i in range(n):
            row[2 * i] += share[i]
    elif stride == 1:
        for i in range(n):
            row[i] += share[i]
    else:
        for i in range(n):
            row[i * stride] += share[i]


cdef inline void _add_3_2(floating* o, const floating* col, Py_ssize_t n) noexcept nogil:
    # o[i] += col[2i], col[2i+1], col[2i+2] in that order (3-wide windows at stride 2): the three
    # passes of _add_strided in one.
    cdef Py_ssize_t i
    for i in range(n):
        o[i] = ((o[i] + col[2 * i]) + col[2 * i + 1]) + col[2 * i + 2]


cdef inline void _avg_border_cell(const floating* row, floating* o, Window g,
                                  Py_ssize_t ox) noexcept nogil:
    # o[ox] += the cells of one window row that lie inside the image.
    cdef Py_ssize_t kx, x0 = ox * g.stride - g.pad
    for kx in range(window_lo(x0, g.pool_w), window_hi(x0, g.pool_w, g.W)):
        o[ox] += row[x0 + kx]


cdef inline void _avg_plane_2x2(const floating* x, floating* out, Window g) noexcept nogil:
    # 2x2 windows, stride 2, no padding, one fused pass per output row; the sum's order and the
    # first + 0 (zeros into which _avg_plane adds) are _avg_plane's, so results are the same bits.
    cdef Py_ssize_t oy, i
    cdef const floating* r0
    cdef const floating* r1
    cdef floating* o
    cdef floating zero = 0, quarter = 0.25
    for oy in range(g.out_h):
        r0 = x + 2 * oy * g.W
        r1 = r0 + g.W
        o = out + oy * g.out_w
        for i in range(g.out_w):
            o[i] = ((((zero + r0[2 * i]) + r0[2 * i + 1]) + r1[2 * i]) + r1[2 * i + 1]) * quarter


cdef inline void _add_windows_of_row(floating* o, const floating* row, Window g, Py_ssize_t ox_a,
                                     Py_ssize_t ox_b) noexcept nogil:
    # o[ox] += the cells of window ox in row (interior windows [ox_a, ox_b) pass by pass, 3-wide
    # windows at stride 2 in one pass, the clipped border windows cell by cell).
    cdef Py_ssize_t ox, kx
    if g.pool_w == 3 and g.stride == 2 and ox_b > ox_a:
        _add_3_2(o + ox_a, row + 2 * ox_a - g.pad, ox_b - ox_a)
    else:
        for kx in range(g.pool_w if ox_b > ox_a else 0):  # (no pointer past the row)
            _add_strided(o + ox_a, row + ox_a * g.stride - g.pad + kx, ox_b - ox_a, g.stride)
    for ox in range(ox_a):
        _avg_border_cell(row, o, g, ox)
    for ox in range(ox_b, g.out_w):
        _avg_border_cell(row, o, g, ox)


cdef inline void _avg_plane(const floating* x, floating* out, Window g,
                            floating* col) noexcept nogil:
    # Separable, output row by output row: col (W) = the sum of the window's rows inside the image
    # (whole rows, contiguous), then each output sums pool_w cells of col; only the border columns,
    # whose windows are clipped, go cell by cell. 2x2 stride-2 windows take _avg_plane_2x2. 3-wide
    # windows at stride 2 add each row's triples straight into the outputs instead: reading col
    # right after writing it, at offsets 1 and 2, stalls on store forwarding.
    cdef Py_ssize_t oy, ox, ky, y0, ky_lo, ky_hi, i, ox_a, ox_b
    cdef floating scale = 1.0 / (g.pool_h * g.pool_w), zero = 0
    cdef const floating* row
    cdef floating* o
    if g.pool_h == 2 and g.pool_w == 2 and g.stride == 2 and g.pad == 0:
        _avg_plane_2x2(x, out, g)
        return
    _interior(g, &ox_a, &ox_b)
    for oy in range(g.out_h):
        y0 = oy * g.stride - g.pad
        ky_lo, ky_hi = window_lo(y0, g.pool_h), window_hi(y0, g.pool_h, g.H)
        o = out + oy * g.out_w
        # (loops, not memset: in the backward, libc calls on rows this short took a quarter of
        # the time)
        for ox in range(g.out_w):
            o[ox] = zero
        if g.pool_w == 3 and g.stride == 2:
            for ky in range(ky_lo, ky_hi):
                _add_windows_of_row(o, x + (y0 + ky) * g.W, g, ox_a, ox_b)
        else:
            for i in range(g.W):
                col[i] = zero
            for ky in range(ky_lo, ky_hi):
                row = x + (y0 + ky) * g.W
                for i in range(g.W):
                    col[i] += row[i]
            _add_windows_of_row(o, col, g, ox_a, ox_b)
        for ox in range(g.out_w):
            o[ox] = o[ox] * scale


cdef inline void _avg_border_spread(floating* row, floating share, Window g,
                                    Py_ssize_t ox) noexcept nogil:
    # Adds share to the cells of one window row that lie inside the image.
    cdef Py_ssize_t kx, x0 = ox * g.stride - g.pad
    for kx in range(window_lo(x0, g.pool_w), window_hi(x0, g.pool_w, g.W)):
        row[x0 + kx] += share


cdef inline void _fill_strided(floating* row, const floating* d, floating scale, Py_ssize_t n,
                               Py_ssize_t stride) noexcept nogil:
    # row[i*stride + k] = d[i] * scale for k < stride: each window's share, written once. The + 0
    # turns -0.0 into +0.0, as adding into zeros does (and the reference does).
    cdef Py_ssize_t i, k
    cdef floating v
    if stride == 2:
        for i in range(n):
            v = d[i] * scale + 0
            row[2 * i] = v
            row[2 * i + 1] = v
    else:
        for i in range(n):
            v = d[i] * scale + 0
            for k in range(stride):
                row[i * stride + k] = v


cdef inline void _avg_plane_backward_2x2(const floating* dout, floating* dx,
                                         Window g) noexcept nogil:
    # 2x2 windows, stride 2, no padding: _avg_plane_backward_tiled with both rows of a window in
    # one pass. An odd last column or row lies in no window.
    cdef Py_ssize_t oy, i
    cdef floating v, zero = 0, quarter = 0.25
    cdef floating* q0
    cdef floating* q1
    cdef const floating* d
    for oy in range(g.out_h):
        q0 = dx + 2 * oy * g.W
        q1 = q0 + g.W
        d = dout + oy * g.out_w
        for i in range(g.out_w):
            v = d[i] * quarter + zero
            q0[2 * i] = v
            q0[2 * i + 1] = v
            q1[2 * i] = v
            q1[2 * i + 1] = v
        if g.W > 2 * g.out_w:
            q0[g.W - 1] = 0
            q1[g.W - 1] = 0
    memset(dx + 2 * g.out_h * g.W, 0, (g.H - 2 * g.out_h) * g.W * sizeof(floating))


cdef inline void _avg_plane_backward_tiled(const floating* dout, floating* dx,
                                           Window g) noexcept nogil:
    # _avg_plane_backward for windows that tile the plane (pool_h == pool_w == stride, no
    # padding): every cell lies in at most one window, so each is written once, without zeroing
    # the plane first and without reading it back. Rows and columns no window covers get zeros.
    cdef Py_ssize_t oy, ky, s = g.stride, covered_w = g.out_w * g.stride
    cdef floating scale = 1.0 / (g.pool_h * g.pool_w)
    cdef floating* row
    for oy in range(g.out_h):
        for ky in range(s):
            row = dx + (oy * s + ky) * g.W
            _fill_strided(row, dout + oy * g.out_w, scale, g.out_w, s)
            memset(row + covered_w, 0, (g.W - covered_w) * sizeof(floating))
    memset(dx + g.out_h * s * g.W, 0, (g.H - g.out_h * s) * g.W * sizeof(floating))


cdef inline void _covering(Py_ssize_t t, Py_ssize_t window, Py_ssize_t stride, Py_ssize_t n,
                           Py_ssize_t* lo, Py_ssize_t* hi) noexcept nogil:
    # The windows o in [lo, hi), 0 <= o < n, that cover position t of the padded input:
    # o*stride <= t < o*stride + window.
    cdef Py_ssize_t h = t // stride + 1
    lo[0] = 0 if t < window else (t - window) // stride + 1
    hi[0] = h if h < n else n


cdef inline void _spread_3_2(floating* row, const floating* col, Py_ssize_t n) noexcept nogil:
    # n cells of a dx row in 3-wide windows at stride 2, starting at an even padded column 2m:
    # col[j] = the share of window m + j - 1. Column 2(m + j) lies in windows m + j - 1 and m + j,
    # column 2(m + j) + 1 in window m + j only.
    cdef Py_ssize_t j
    cdef floating zero = 0
    for j in range(n // 2):
        row[2 * j] = zero + col[j] + col[j + 1]
        row[2 * j + 1] = zero + col[j + 1]
    if n % 2:
        row[n - 1] = zero + col[n // 2] + col[n // 2 + 1]


cdef inline void _avg_plane_backward(const floating* dout, floating* dx, Window g,
                                     floating* col) noexcept nogil:
    # The adjoint of _avg_plane, gathered one dx row at a time, so that each cell is written once:
    # col[1 + ox] = the shares of the windows covering the row, summed down each output column
    # (col[0] and col[out_w + 1] stay zero: the windows before the first and after the last), then
    # spread along the row.
    cdef Py_ssize_t y, oy, oy_lo, oy_hi, ox, kx, i, ox_a, ox_b
    cdef floating scale = 1.0 / (g.pool_h * g.pool_w), zero = 0
    cdef floating* row
    cdef floating* share = col + 1
    cdef const floating* d
    if g.pool_h == 2 and g.pool_w == 2 and g.stride == 2 and g.pad == 0:
        _avg_plane_backward_2x2(dout, dx, g)
        return
    if g.pool_h == g.stride and g.pool_w == g.stride and g.pad == 0:
        _avg_plane_backward_tiled(dout, dx, g)
        return
    _interior(g, &ox_a, &ox_b)
    col[0] = 0
    col[g.out_w + 1] = 0
    for y in range(g.H):
        row = dx + y * g.W
        _covering(y + g.pad, g.pool_h, g.stride, g.out_h, &oy_lo, &oy_hi)
        if oy_hi <= oy_lo:
            for i in range(g.W):
                row[i] = 0
            continue
        d = dout + oy_lo * g.out_w
        for ox in range(g.out_w):
            share[ox] = d[ox] * scale
        for oy in range(oy_lo + 1, oy_hi):
            d = dout + oy * g.out_w
            for ox in range(g.out_w):
                share[ox] += d[ox] * scale
        if g.pool_w == 3 and g.stride == 2:   # padded column x + pad; an odd one starts alone
            if g.pad % 2:
                row[0] = zero + col[(g.pad + 1) // 2]
                _spread_3_2(row + 1, col + (g.pad + 1) // 2, g.W - 1)
            else:
                _spread_3_2(row, col + g.pad // 2, g.W)
            continue
        for i in range(g.W):
            row[i] = zero
        for kx in range(g.pool_w if ox_b > ox_a else 0):
            _add_spread(row + ox_a * g.stride - g.pad + kx, share + ox_a, ox_b - ox_a, g.stride)
        for ox in range(ox_a):
            _avg_border_spread(row, share[ox], g, ox)
        for ox in range(ox_b, g.out_w):
            _avg_border_spread(row, share[ox], g, ox)


cdef inline Window _window(Py_ssize_t H, Py_ssize_t W, Py_ssize_t out_h, Py_ssize_t out_w,
                           Py_ssize_t pool_h, Py_ssize_t pool_w,
                           Py_ssize_t stride, Py_ssize_t pad) noexcept nogil:
    cdef Window g
    g.H, g.W, g.out_h, g.out_w = H, W, out_h, out_w
    g.pool_h, g.pool_w, g.stride, g.pad = pool_h, pool_w, stride, pad
    g.avx2 = False
    return g


# Whether this CPU and compiler have AVX2: max_pool_forward takes its AVX2 loops only then, whatever
# its caller asks (they would stop the process with an illegal instruction).
cdef bint _AVX2 = cnncore_cpu_avx2()


def max_pool_forward(const floating[:, :, :, ::1] x,     # IN  (N, C, H, W)
                     floating[:, :, :, ::1] out,         # OUT (N, C, OH, OW)
                     Py_ssize_t[:, :, :, ::1] arg_max,   # OUT (N, C, OH, OW) index in window
                     Py_ssize_t pool_h, Py_ssize_t pool_w,
                     Py_ssize_t stride, Py_ssize_t pad, int n_threads, bint avx2):
    """avx2: 3x3 stride-2 windows take the AVX2 loops where the CPU has AVX2 (else ignored)."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], nc
    cdef Window g = _window(x.shape[2], x.shape[3], out.shape[2], out.shape[3],
                            pool_h, pool_w, stride, pad)
    g.avx2 = avx2 and _AVX2
    if N * C == 0:
        return
    with nogil:
        for nc in prange(N * C, schedule="guided", num_threads=n_threads):
            _max_plane(&x[nc // C, nc % C, 0, 0], &out[nc // C, nc % C, 0, 0],
                       &arg_max[nc // C, nc % C, 0, 0], g)


def max_pool_backward(const floating[:, :, :, ::1] dout,      # IN  (N, C, OH, OW)
                      const Py_ssize_t[:, :, :, ::1] arg_max,  # IN  (N, C, OH, OW)
                      floating[:, :, :, ::1] dx,              # OUT (N, C, H, W), overwritten
                      Py_ssize_t pool_h, Py_ssize_t pool_w,
                      Py_ssize_t stride, Py_ssize_t pad, int n_threads, bint avx2):
    """avx2: float32 3x3 stride-2 windows take the AVX2 loop where the CPU has AVX2 (else
    ignored)."""
    cdef Py_ssize_t N = dx.shape[0], C = dx.shape[1], nc
    cdef Window g = _window(dx.shape[2], dx.shape[3], dout.shape[2], dout.shape[3],
                            pool_h, pool_w, stride, pad)
    g.avx2 = avx2 and _AVX2
    if N * C == 0:
        return
    with nogil:
        for nc in prange(N * C, schedule="guided", num_threads=n_threads):
            _max_plane_backward(&dout[nc // C, nc % C, 0, 0], &arg_max[nc // C, nc % C, 0, 0],
                                &dx[nc // C, nc % C, 0, 0], g)


def avg_pool_forward(const floating[:, :, :, ::1] x,     # IN  (N, C, H, W)
                     floating[:, :, :, ::1] out,         # OUT (N, C, OH, OW)
                     floating[:, ::1] scratch,           # (n_threads, W)
                     Py_ssize_t pool_h, Py_ssize_t pool_w,
                     Py_ssize_t stride, Py_ssize_t pad, int n_threads):
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], nc
    cdef Window g = _window(x.shape[2], x.shape[3], out.shape[2], out.shape[3],
                            pool_h, pool_w, stride, pad)
    if N * C == 0:
        return
    with nogil:
        for nc in prange(N * C, schedule="guided", num_threads=n_threads):
            _avg_plane(&x[nc // C, nc % C, 0, 0], &out[nc // C, nc % C, 0, 0], g,
                       &scratch[threadid(), 0])


def avg_pool_backward(const floating[:, :, :, ::1] dout,  # IN  (N, C, OH, OW)
                      floating[:, :, :, ::1] dx,          # OUT (N, C, H, W), overwritten
                      floating[:, ::1] scratch,           # (n_threads, >= OW + 2)
                      Py_ssize_t pool_h, Py_ssize_t pool_w,
                      Py_ssize_t stride, Py_ssize_t pad, int n_threads):
    cdef Py_ssize_t N = dx.shape[0], C = dx.shape[1], nc
    cdef Window g = _window(dx.shape[2], dx.shape[3], dout.shape[2], dout.shape[3],
                            pool_h, pool_w, stride, pad)
    if N * C == 0:
        return
    with nogil:
        for nc in prange(N * C, schedule="guided", num_threads=n_threads):
            _avg_plane_backward(&dout[nc // C, nc % C, 0, 0], &dx[nc // C, nc % C, 0, 0], g,
                                &scratch[threadid(), 0])
