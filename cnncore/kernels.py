"""The compiled kernels behind a validating boundary.

Each function checks its arguments (cnncore._validate), picks the compute dtype (float32 stays float32,
float64 stays float64, float16 / integers / mixed become float64), makes inputs C-contiguous (copying only
when needed), allocates the outputs and hands them to a kernel in cnncore._ext. cnncore.reference has
the same functions, with the same signatures, in plain NumPy.

Shapes: x (N, C, H, W); W (FN, C, FH, FW); b (FN,) or a scalar; OH = (H + 2*pad - FH) // stride + 1.
"""
import functools

import numpy as np

from . import _validate as v
from . import reference as _reference
from ._memory import empty as _output
from ._memory import zeros as _output_zeros
from ._ext import activation as _activation
from ._ext import adam as _adam
from ._ext import conv as _conv
from ._ext import conv_avx2 as _conv_avx2
from ._ext import im2col as _im2col
from ._ext import padding as _padding
from ._ext import pooling as _pooling
from ._ext import winograd as _winograd
from ._threads import get_num_threads as _requested_threads
from ._threads import run_tasks, single_threaded_blas

# Bytes of unfolded columns a convolution tile may hold: the convolution never unfolds the whole batch,
# only as many images at a time as fit here (at least one). Sized so a tile written by unfold is still
# in cache (2 x 2 MiB of L2 here) when the GEMM reads it. Measured here (gradient of the network,
# batch 100, float32, medians): DeepConvNet 96-99 ms with 2-4 MiB tiles against 123-135 ms with 16 MiB;
# SimpleConvNet 22.5 ms with 4 MiB, 25-29 ms with 2 MiB (more, smaller BLAS calls), 20 ms with 16 MiB.
TILE_BYTES = 4 << 20

# Tiles a convolution is cut into at least (when the batch has that many images), so that its
# threads, each working a tile at a time, finish together.
MIN_TILES = 4

# Largest OpenMP team a kernel starts. GNU OpenMP puts per-thread start-up data on the calling
# thread's stack, so set_num_threads(100000) crashed the process (SIGSEGV); results never depend on
# the thread count, so asking for more than this simply runs with this many.
MAX_THREADS = 1024

# Elements a thread should have to itself before another one is woken: waking an OpenMP worker costs
# tens of microseconds, and far more when the machine is busy, so small calls run on one thread.
WORK_PER_THREAD = 1 << 15


def get_num_threads(work=None):
    """Threads for a call touching about ``work`` elements: cnncore.get_num_threads(), at most
    MAX_THREADS, and at most one per WORK_PER_THREAD elements (results never depend on it)."""
    n = min(_requested_threads(), MAX_THREADS)
    if work is not None:
        n = max(1, min(n, work // WORK_PER_THREAD))
    return n


def im2col(input_data, filter_h, filter_w, stride=1, pad=0):
    """Unfold windows into rows: (N, C, H, W) -> (N*OH*OW, C*FH*FW), the textbook's exact layout.

    Row (n*OH + oy)*OW + ox holds the window at (oy*stride, ox*stride) of the zero-padded image, with
    columns ordered (c, ky, kx): the flattening order of a (FN, C, FH, FW) weight.
    """
    x = v.image_batch(input_data, "input_data")
    filter_h, filter_w, stride, pad = v.window_params(filter_h, filter_w, stride, pad)
    N, C, H, W = x.shape
    out_h, out_w = v.output_hw(H, W, filter_h, filter_w, stride, pad, arg="input_data")
    shape = (N * out_h * out_w, C * filter_h * filter_w)
    v.check_total_size(shape, "the im2col matrix")
    dtype = v.compute_dtype(x)
    col = _output(shape, dtype)
    _im2col.im2col(v.as_kernel_input(x, dtype), col, filter_h, filter_w, stride, pad,
                   get_num_threads(col.size))
    return col


def col2im(col, input_shape, filter_h, filter_w, stride=1, pad=0):
    """Adjoint of im2col: (N*OH*OW, C*FH*FW) -> (N, C, H, W), overlapping windows summed.

    Not the inverse: each pixel of col2im(im2col(x)) is x times the number of windows covering it.
    Gradients that fall on the padding are dropped. col may be any array with the right number of
    elements (as in the textbook, which reshapes it).
    """
    N, C, H, W = v.input_shape4(input_shape)
    filter_h, filter_w, stride, pad = v.window_params(filter_h, filter_w, stride, pad)
    out_h, out_w = v.output_hw(H, W, filter_h, filter_w, stride, pad, arg="input_shape")
    col = v.as_array(col, "col")
    shape = (N * out_h * out_w, C * filter_h * filter_w)
    if col.size != shape[0] * shape[1]:
        raise ValueError(
            f"col must have shape {shape} (from input_shape {(N, C, H, W)}, filter "
            f"{filter_h}x{filter_w}, stride={stride}, pad={pad}), got {col.shape}"
        )
    dtype = v.compute_dtype(col)
    x = _output((N, C, H, W), dtype)
    _im2col.col2im(v.as_kernel_input(col, dtype).reshape(shape), x, filter_h, filter_w, stride,
                   pad, get_num_threads(col.size))
    return x


# ---------------------------------------------------------------------------------------------- pooling

# Max pooling over 3x3 windows at stride 2 in AVX2 registers of 8 float32 (4 float64) outputs where
# the CPU has them (pyext/pool_3x3_avx2.h). Measured here, (128,64,32,32) forward, alternating
# processes, two threads: float32 4.91 -> 3.09 ms (9.6 -> 5.9 on one), float64 7.95 -> 4.18 ms.
# The float32 backward (no padding) likewise, each dx row built from the windows over it instead of
# added into at each winner's offset: 4.98 -> 3.66 ms on two threads, 8.9 -> 6.4 ms on one.
POOL_AVX2 = _pooling.avx2_supported()


def max_pool_forward(x, pool_h, pool_w, stride=2, pad=0):
    """Max over each window: x (N, C, H, W) -> (out (N, C, OH, OW), arg_max (N, C, OH, OW)).

    arg_max is the winner's index ky*pool_w + kx inside its window (first on ties; NaN wins).
    Padded cells never win; pad must be smaller than the window.
    """
    x, params, out_shape = v.pool_setup(x, pool_h, pool_w, stride, pad)
    dtype = v.compute_dtype(x)
    out = _output(out_shape, dtype)
    arg_max = _output(out_shape, np.intp)
    _pooling.max_pool_forward(v.as_kernel_input(x, dtype), out, arg_max, *params,
                              get_num_threads(x.size), POOL_AVX2)
    return out, arg_max


def max_pool_backward(dout, arg_max, input_shape, pool_h, pool_w, stride=2, pad=0):
    """Route each dout to its window's max cell: -> dx (N, C, H, W); overlaps add up."""
    dout, shape, params = v.pool_backward_setup(dout, input_shape, pool_h, pool_w, stride, pad)
    arg_max = v.pool_arg_max(arg_max, dout.shape, shape, params)
    dtype = v.compute_dtype(dout)
    dx = _output(shape, dtype)
    _pooling.max_pool_backward(v.as_kernel_input(dout, dtype), arg_max, dx, *params,
                               get_num_threads(dx.size), POOL_AVX2)
    return dx


def _row_per_thread(n_threads, width, dtype):
    """(n_threads, >= width) scratch rows at least a cache line apart: threads writing rows that
    shared a line ran 1.5-3x slower than one thread (measured, average pooling)."""
    line = 64 // dtype.itemsize
    return np.empty((n_threads, -(-width // line) * line + line), dtype)


def avg_pool_forward(x, pool_h, pool_w, stride=2, pad=0):
    """Mean over each window, padding counted as zeros: x (N, C, H, W) -> (N, C, OH, OW)."""
    x, params, out_shape = v.pool_setup(x, pool_h, pool_w, stride, pad)
    dtype = v.compute_dtype(x)
    out = _output(out_shape, dtype)
    n_threads = get_num_threads(x.size)
    scratch = _row_per_thread(n_threads, x.shape[3], dtype)     # the window sums of a row
    _pooling.avg_pool_forward(v.as_kernel_input(x, dtype), out, scratch, *params, n_threads)
    return out


def avg_pool_backward(dout, input_shape, pool_h, pool_w, stride=2, pad=0):
    """Spread each dout evenly over its window: -> dx (N, C, H, W); overlaps add up."""
    dout, shape, params = v.pool_backward_setup(dout, input_shape, pool_h, pool_w, stride, pad)
    dtype = v.compute_dtype(dout)
    dx = _output(shape, dtype)
    n_threads = get_num_threads(dx.size)
    scratch = _row_per_thread(n_threads, dout.shape[3] + 2, dtype)  # shares of a row's windows
    _pooling.avg_pool_backward(v.as_kernel_input(dout, dtype), dx, scratch, *params, n_threads)
    return dx


# ------------------------------------------------------------------------------------------ activation

# ReLU forward in one AVX2 pass (out and the mask from one load of x) where the CPU has it, instead
# of the baseline build's two passes (4-wide, 2-wide in float64). Measured here, (100,30,24,24),
# alternating processes: float32 0.70-0.72 -> 0.38-0.39 ms on one thread, 0.34-0.35 -> 0.22 ms on
# two (torch.relu took 0.26 ms on two); float64 1.67-1.76 -> 0.93-0.95 ms on one thread, 0.98 ->
# 0.68-0.74 ms on two.
RELU_AVX2 = _activation.avx2_supported()


def relu_forward(x):
    """ReLU: -> (out, mask), out = 0 where x <= 0 else x (NaN kept), mask = x <= 0; shapes of x.

    Elementwise, so the dtype of x is kept: float32 and float64 run compiled, other real dtypes
    (float16, integers) in NumPy.
    """
    x = v.as_array(x, "x")
    if x.dtype not in v.FLOAT_DTYPES:
        return _reference.relu_forward(x)
    out = _output(x.shape, x.dtype)
    mask = _output(x.shape, np.bool_)
    _activation.relu_forward(v.as_kernel_input(x, x.dtype).reshape(-1), out.reshape(-1),
                             mask.reshape(-1).view(np.uint8), get_num_threads(x.size), RELU_AVX2)
    return out, mask


def relu_backward(dout, mask):
    """Gradient of relu_forward: dx = 0 where mask else dout; shape and dtype of dout."""
    dout = v.as_array(dout, "dout")
    mask = v.relu_mask(mask, dout.shape)
    if dout.dtype not in v.FLOAT_DTYPES:
        return _reference.relu_backward(dout, mask)
    dx = _output(dout.shape, dout.dtype)
    _activation.relu_backward(v.as_kernel_input(dout, dout.dtype).reshape(-1),
                              np.ascontiguousarray(mask).reshape(-1).view(np.uint8),
                              dx.reshape(-1), get_num_threads(dx.size))
    return dx


# ------------------------------------------------------------------------------------------- optimizer

_FLOAT_DTYPES = v.FLOAT_DTYPES    # (adam_fits's v is the second moment)


def adam_fits(param, grad, m, v):
    """Whether adam_update takes these arrays: ndarrays of one shape and one dtype (float32 or
    float64), C-contiguous, param, m and v writeable, and no two of them sharing memory."""
    arrays = (param, grad, m, v)
    if not all(type(a) is np.ndarray for a in arrays):
        return False
    if param.dtype not in _FLOAT_DTYPES or any(a.dtype != param.dtype or a.shape != param.shape
                                         or not a.flags.c_contiguous for a in arrays):
        return False
    if not (param.flags.writeable and m.flags.writeable and v.flags.writeable):
        return False
    return not any(np.may_share_memory(a, b) for i, a in enumerate(arrays) for b in arrays[i + 1:])


def adam_update(param, grad, m, v, lr_t, beta1, beta2):
    """One step of cnncore.optimizer.Adam on one parameter, in place, in one compiled pass:

    m += (1 - beta1)*(grad - m); v += (1 - beta2)*(grad**2 - v); param -= lr_t * m / (sqrt(v) + 1e-7)

    with NumPy's results to the bit. The arrays must pass adam_fits (else ValueError).
    """
    if not adam_fits(param, grad, m, v):
        raise ValueError("adam_update needs param, grad, m and v as separate C-contiguous arrays of "
                         "one shape and one float dtype (float32 or float64), param, m, v writeable")
    _adam_pass(param, grad, m, v, lr_t, beta1, beta2)


def _adam_pass(param, grad, m, v, lr_t, beta1, beta2):
    """adam_update without the check, for callers that ran adam_fits (optimizer.Adam)."""
    _adam.adam_update(param.reshape(-1), grad.reshape(-1), m.reshape(-1), v.reshape(-1),
                      float(lr_t), float(beta1), float(beta2), get_num_threads(param.size))


# -------------------------------------------------------------------------------------- matrix product

def _even_slices(size, n):
    """n slices covering range(size) in order, their lengths differing by at most one ([] if n is 0)."""
    edges = [size * k // n for k in range(n + 1)] if n else []
    return [slice(a, b) for a, b in zip(edges, edges[1:])]


# A matrix product is cut into MATMUL_CHUNKS pieces along the longer side of its result when it
# has at least MATMUL_WORK_PER_CHUNK multiply-adds per piece. The count is fixed (not the thread
# count) so results never depend on threads. Measured here, float32, one BLAS thread per piece on 2
# threads: SimpleConvNet's Affine products (100 x 4320 x 100) took 0.60-0.71 ms in 2 pieces,
# 0.64-1.19 in 4 (each piece packs the shared operand again), 0.96-1.15 ms in one.
MATMUL_CHUNKS = 2
MATMUL_WORK_PER_CHUNK = 1 << 22


def matmul(a, b):
    """a @ b: a (M, K), b (K, N) -> (M, N), on cnncore's threads.

    Computed in float32 when both are float32, else float64. Large products are cut into
    MATMUL_CHUNKS pieces (rows of a or columns of b, whichever side of the result is longer), each
    a single-threaded BLAS call on its own thread; NumPy's BLAS is held at one thread meanwhile
    (see _threads), so it never spins beside cnncore's kernels.
    """
    a, b = v.matmul_operands(a, b)
    (M, K), N = a.shape, b.shape[1]
    out = _output((M, N), a.dtype)
    n_chunks = MATMUL_CHUNKS if M * N * K >= MATMUL_CHUNKS * MATMUL_WORK_PER_CHUNK else 1
    n_chunks = max(1, min(n_chunks, max(M, N)))
    along_rows = M >= N
    parts = _even_slices(M if along_rows else N, n_chunks)

    def chunk(worker, i):
        if along_rows:
            np.matmul(a[parts[i]], b, out=out[parts[i]])
        else:
            np.matmul(a, b[:, parts[i]], out=out[:, parts[i]])

    with single_threaded_blas():
        run_tasks(chunk, n_chunks, _requested_threads())
    return out


# ------------------------------------------------------------------------------------------ convolution

def _tiles(N, row_bytes):
    """Even slices covering range(N): at most TILE_BYTES // row_bytes images each (at least one), and at
    least MIN_TILES of them when N allows, so that threads share the work. They depend on the shapes
    only, never on the thread count: the backward pass sums its weight gradient tile by tile."""
    most = max(1, TILE_BYTES // max(1, row_bytes))
    return _even_slices(N, max(-(-N // most), min(N, MIN_TILES)))


class _Scratch:
    """Each worker's tile buffers: (rows, n*L) arrays for a tile of n images, one per entry of rows,
    allocated on the worker's first tile with room for the largest tile."""

    def __init__(self, n_workers, rows, tiles, L, dtype):
        self.buffers = [None] * n_workers
        self.rows, self.L, self.dtype = rows, L, dtype
        self.most = max((t.stop - t.start for t in tiles), default=0)

    def get(self, worker, n):
        if self.buffers[worker] is None:
            self.buffers[worker] = [_output(r * self.most * self.L, self.dtype) for r in self.rows]
        return [b[:r * n * self.L].reshape(r, n * self.L) for b, r in zip(self.buffers[worker], self.rows)]


def _conv_workers(tiles, cols):
    """Threads for a convolution unfolding cols elements in all: at most one per tile."""
    return min(len(tiles), get_num_threads(cols))


def _forward(x, W, b, stride, pad, relu):
    x, W, stride, pad, out_shape, dtype = v.conv_setup(x, W, stride, pad)
    N, FN, out_h, out_w = out_shape
    b = v.bias_vector(b, FN, dtype)
    x = v.as_kernel_input(x, dtype)
    W = v.as_kernel_input(W, dtype)
    out = _output(out_shape, dtype)
    if _winograd_fits(W.shape, stride, pad, W.shape[1]):
        _winograd_forward(x, W, b, pad, relu, out)
    elif _avx2_rows_fits(dtype, W.shape, stride, out_shape[3]):
        _avx2_rows_forward(x, W, b, pad, relu, out)
    elif _avx2_fits(dtype, W.shape):
        _avx2_forward(x, W, b, stride, pad, relu, out)
    else:
        _direct_forward(x, W, b, stride, pad, relu, out)
    return out


def _direct_forward(x, W, b, stride, pad, relu, out):
    """out = act(conv(x, W) + b) through unfold + one GEMM per tile of images."""
    N, FN, out_h, out_w = out.shape
    FH, FW = W.shape[2], W.shape[3]
    W2 = W.reshape(FN, -1)
    K, L = W2.shape[1], out_h * out_w
    tiles = _tiles(N, K * L * x.dtype.itemsize)
    n_workers = _conv_workers(tiles, N * K * L)
    scratch = _Scratch(n_workers, (K, FN), tiles, L, x.dtype)

    def tile(worker, i):
        t = tiles[i]
        n = t.stop - t.start
        cols, y = scratch.get(worker, n)
        _conv.unfold(x[t], cols, FH, FW, stride, pad, 1)
        # np.matmul, not np.dot: for small products np.dot's BLAS call skips zero entries, so an inf
        # weight times a padded (zero) column gave 0 where the reference's @ gives NaN.
        np.matmul(W2, cols, out=y)
        _conv.bias_act(y, b, out[t].reshape(n, FN, L), relu, 1)

    with single_threaded_blas():
        run_tasks(tile, len(tiles), n_workers)


# ------------------------------------------------------------- direct convolution on AVX2 + FMA
# float32 forward (pyext/conv_avx2.pyx): each output summed in vector registers from the padded
# image, with no columns and no GEMM, in one of two layouts. When the CPU has AVX2 and FMA:
#
# Filters of fewer than AVX2_MIN_TAPS weights (C*FH*FW), stride 1, output rows of 8 to
# _conv_avx2.ROWS_MAX_WIDTH: 8 neighbouring outputs of a filter per register (forward_rows).
# Measured here, float32, batch 100, fused forward, against im2col + GEMM (1 thread; 2 threads,
# medians of 3 alternating): SimpleConvNet's conv (1 -> 30, 5x5) 1.98x; 1.92x, DeepConvNet conv1
# (1 -> 16, 3x3) 1.68x; 2.11x, 3 -> 16 at 32x32 1.70x; 1.96x, 3 -> 64 1.48x; 1.60x, 1 -> 64 1.13x;
# 1.21x, 7x7 filters (49 taps) 1.26x; 1.47x, 1 filter 6.2x; 6.9x. With more weights the kernel
# below is as fast or faster: DeepConvNet conv2 (144 taps) 0.95-0.98x of it.
#
# The others with AVX2_MIN_FILTERS to AVX2_MAX_FILTERS filters: 16 filters per pair of registers
# (forward), any stride. Measured here, float32, batch 100, forward, against im2col + GEMM
# (2 threads; 1 thread): 16 -> 16 channels 28x28 (DeepConvNet conv2) 1.47-1.52x; 1.31x, 16 -> 32 at
# 14x14 (conv3) 1.16-1.37x; 1.10x, 5x5 filters 1.6x, stride 2 1.5-1.6x. Short filters gain nothing:
# 3-4 channels of 3x3 (27-36 taps) 1.02-1.07x, SimpleConvNet's 25 taps 0.87-1.11x; 0.78x, DeepConvNet
# conv1's 9 taps 0.72x; 0.54x. Nor do 64 filters (0.9-1.1x), where the GEMM's M = FN is large enough
# for OpenBLAS. Fewer than 16 filters leave part of each 16-wide block idle: 8 filters 1.14-1.27x;
# 1.02x, 4 filters 1.0x, 1 filter 0.65x.
AVX2_KERNEL = _conv_avx2.supported()
AVX2_MIN_TAPS = 64
AVX2_MIN_FILTERS = 8
AVX2_MAX_FILTERS = 32

# The row layout's backward (dW, db and dx summed in registers, no columns) for any stride-1 float32
# layer with few filters, whichever kernel runs its forward: with M = FN of 8-16, im2col + GEMM moves
# as many bytes as it multiplies. Measured here, float32, batch 100, 3x3, pad 1, two threads, whole
# backward, against im2col + GEMM: 8 filters 1.3-2.9x faster for 8-64 channels of 8x8 to 32x32;
# 16 filters 1.08-1.62x for 8-16 channels (DeepConvNet conv2, 16 of 28x28: 1.28x), 0.97-1.33x for 32,
# 0.85-0.96x for 64; 32 or more filters 0.34-1.21x, mostly slower.
ROWS_BACKWARD_MAX_TAPS = 144


def _avx2_fits(dtype, W_shape):
    FN, C, FH, FW = W_shape
    return (AVX2_KERNEL and dtype == np.float32 and C * FH * FW >= AVX2_MIN_TAPS
            and AVX2_MIN_FILTERS <= FN <= AVX2_MAX_FILTERS)


def _avx2_rows_layer(dtype, stride, out_w):
    """Whether the row layout can run a layer at all: float32, stride 1, output rows of 8 to
    ROWS_MAX_WIDTH, on a CPU with AVX2 + FMA."""
    return (AVX2_KERNEL and dtype == np.float32 and stride == 1
            and 8 <= out_w <= _conv_avx2.ROWS_MAX_WIDTH)


def _avx2_rows_fits(dtype, W_shape, stride, out_w):
    FN, C, FH, FW = W_shape
    return _avx2_rows_layer(dtype, stride, out_w) and C * FH * FW < AVX2_MIN_TAPS


def _avx2_rows_backward_fits(dtype, W_shape, stride, out_w):
    """Whether a layer's gradients take the row layout's backward: the layers whose forward runs in
    that layout, and the stride-1 float32 layers with few filters for their weights (FN <= 8, or
    FN <= 16 with at most ROWS_BACKWARD_MAX_TAPS weights per filter), whatever their forward."""
    FN, C, FH, FW = W_shape
    taps = C * FH * FW
    few_filters = FN <= 8 or (FN <= 16 and taps <= ROWS_BACKWARD_MAX_TAPS)
    return _avx2_rows_layer(dtype, stride, out_w) and (taps < AVX2_MIN_TAPS or few_filters)


def _avx2_rows_dx_fits(W, in_w):
    """Whether the row layout's backward (for a layer _avx2_rows_backward_fits) also takes dx: rows
    of 8 to ROWS_MAX_WIDTH cells, and finite filters. The sums multiply the zeros around d by the
    weights too, which an infinite weight would make NaN where the reference adds nothing."""
    return 8 <= in_w <= _conv_avx2.ROWS_MAX_WIDTH and bool(np.isfinite(W).all())


def _avx2_rows_backward(x, dout, out, W, pad, need_dx):
    """(dx, dW, db) of a stride-1 float32 layer by pyext/conv_avx2.pyx's backward_rows, dW and db
    summed tile by tile (out: the forward's output when fused with ReLU, else None; dx None unless
    need_dx). None when dW or db is not finite: the zero lanes past a row's last output meet image
    cells outside its windows, so an infinity there gives NaN where the reference has none; im2col +
    GEMM then computes the gradients again."""
    N, C, H, Wd = x.shape
    FN, FH, FW = W.shape[0], W.shape[2], W.shape[3]
    OH, OW = dout.shape[2:]
    n_vec = -(-OW // 8)
    PH, PW, K = H + 2 * pad, n_vec * 8 + FW - 1, C * FH * FW
    # d's planes: rows of n_vec*8 (zeros past OW) for dW; dx also reads the zeros around d
    top, left = (max(0, FH - 1 - pad), max(0, FW - 1 - pad)) if need_dx else (0, 0)
    DH, DW = OH + 2 * top, left + max(n_vec * 8, OW + left)
    tap = ((np.arange(C, dtype=np.intp)[:, None, None] * PH + np.arange(FH)[:, None]) * PW
           + np.arange(FW)).reshape(-1)
    tiles = _tiles(N, K * OH * OW * x.dtype.itemsize)
    starts = np.array([t.start for t in tiles] + [N], np.intp)
    n_threads = _conv_workers(tiles, N * K * OH * OW)
    sums = _output_zeros((len(tiles), FN * K + FN, 8), np.float32)
    dx = _output(x.shape, np.float32) if need_dx else None
    w = np.ascontiguousarray(W.transpose(1, 0, 2, 3)).reshape(C, -1) if need_dx else None
    if tiles:
        _conv_avx2.backward_rows(x, dout, dout if out is None else out, w, starts, tap, sums, dx,
                                 _output_zeros((n_threads, C * PH * PW), np.float32),
                                 _output_zeros((n_threads, FN * DH * DW), np.float32),
                                 FH, FW, pad, PW, top, left, DH, DW, out is not None, n_threads)
    total = sums.sum(axis=2).sum(axis=0)
    if not np.isfinite(total).all():
        return None
    return dx, total[:FN * K].reshape(W.shape), total[FN * K:]


def _padded_images(n_threads, x_shape, pad):
    """The AVX2 kernels' scratch: one zero-padded float32 image per thread (its borders stay zero)."""
    N, C, H, W = x_shape
    return _output_zeros((n_threads, C * (H + 2 * pad) * (W + 2 * pad)), np.float32)


def _avx2_rows_forward(x, W, b, pad, relu, out):
    """out = act(conv(x, W) + b), stride 1, by pyext/conv_avx2.pyx's forward_rows: one zero-padded
    image buffer per thread."""
    N, FN = x.shape[0], W.shape[0]
    n_threads = min(get_num_threads(N * FN * out.shape[2] * out.shape[3]), N)
    _conv_avx2.forward_rows(x, W.reshape(FN, -1), b, out, _padded_images(n_threads, x.shape, pad),
                            W.shape[2], W.shape[3], pad, relu, n_threads)


def _avx2_forward(x, W, b, stride, pad, relu, out):
    """out = act(conv(x, W) + b) by pyext/conv_avx2.pyx: the filters packed in blocks of 16, one
    zero-padded image buffer per thread."""
    N, C = x.shape[:2]
    FN = W.shape[0]
    n_blocks = -(-FN // 16)
    w = np.zeros((n_blocks * 16, C * W.shape[2] * W.shape[3]), np.float32)
    w[:FN] = W.reshape(FN, -1)
    w = np.ascontiguousarray(w.reshape(n_blocks, 16, -1).transpose(0, 2, 1)).reshape(n_blocks, -1)
    n_threads = min(get_num_threads(N * FN * out.shape[2] * out.shape[3]), N * n_blocks)
    _conv_avx2.forward(x, w, b, out, _padded_images(n_threads, x.shape, pad), W.shape[2],
                       W.shape[3], stride, pad, relu, n_threads)


# ------------------------------------------------------------------- Winograd F(2x2, 3x3) convolution
# A 3x3 stride-1 convolution computed tile by tile as in pyext/winograd.pyx: 16 multiplies per 2x2
# outputs instead of 36, so its GEMMs do 4/9 of the direct path's work; the transforms around them
# move about as many bytes as unfold does. Rounding differs from the direct path in the last bits
# (float32: about 1e-6 of the inputs' scale). Any tile whose result is not finite is computed again by
# the direct path, so infinities and NaN come out exactly as the reference's.

# Input channels a Winograd convolution needs to be faster than the direct one: its 16 GEMMs have
# K = C. Measured here, forward, float32, batch 100, one thread: DeepConvNet's C = 32 and 64 layers
# 1.37-1.77x faster (1.31-1.62x on two threads), C = 16 1.02-1.08x (28x28, 14x14), C = 1 16x slower.
WINOGRAD_MIN_CHANNELS = 32


# The backward pass (input and weight gradients) takes the Winograd path only when the layer's
# input channels and planes are this large as well. Measured here (float32, batch 100, whole backward,
# direct vs Winograd input gradient): one thread 0.99-1.32x faster everywhere; two threads 1.13x
# (DeepConvNet conv4, 32 channels of 14x14) and 1.30x (64 of 32x32), but 0.85x for 16 channels of
# 14x14 and 0.88-0.99x for 8x8 planes, where the small transforms and GEMMs run beside the weight
# gradient's GEMM. The weight gradient alike: 1.35-1.41x on conv4 and 1.18-1.42x on 64 channels of
# 32x32, but 0.8-1.0x on 8x8 planes when the input gradient is direct. With the AVX2 transforms and
# products of 4fb1d73 and fd2a8b3, 8x8 planes gained too (whole backward, two threads, the Winograd
# gradients against the direct ones): float32 32 -> 64 channels 3.9 -> 3.6 ms, 64 -> 64 7.3 -> 5.9 ms, 128 -> 128
# 26 -> 21 ms; float64 64 -> 64 15.6 -> 11.1 ms, 128 -> 128 56 -> 44 ms; DeepConvNet's training
# step float32 51.9 -> 50.0 ms, float64 107 -> 104 ms. 9x9 planes (81 pixels) went 3.05 -> 3.2 ms in
# float32 but 7.0 -> 6.6 ms in float64; 7x7 planes were not faster.
WINOGRAD_BACKWARD_MIN_PIXELS = 64

# The input transform in vectors of 8 tiles (AVX2) where the CPU has it; the baseline build's 4-wide
# vectors leave 3 of a 7-tile row (14x14 planes) to scalar code. Measured here together with
# output_transform's vectorised finiteness check (float32 fused forward, batch 100, alternating
# processes): 32 channels of 14x14 5.45 -> 4.81 ms on one thread, 2.98 -> 2.60 ms on two; 64 of 7x7
# 3.2 -> 2.8 ms; 64 of 32x32 about the same (43-44 ms).
# The output transform likewise, each register's 2x2 outputs interleaved in registers and stored
# straight into out (the baseline goes through a buffer and a scalar interleave); tile rows of 4
# float32 tiles or fewer keep the baseline loop. Measured here (alternating processes): float32 32
# channels of 14x14 2.55 -> 2.36 ms on two threads, 4.76 -> 4.39 ms on one; float64 8.8 -> 8.4 ms,
# 64 of 8x8 8.5 -> 8.1 ms (one thread); float32 64 of 32x32 75.8 -> 73.4 ms (one thread).
# And the input transform's split of each padded line by column parity, from masked loads and one
# deinterleave per pair of registers instead of a scalar loop branching at both edges: float32 32
# channels of 14x14 2.36 -> 2.18 ms on two threads; float64 5.37 -> 5.15 ms; 64 of 8x8 5.0 ->
# 4.6 ms (one thread); 64 of 32x32 about the same.
# And the three transforms taking planes in the order of V and M's columns (the 16 rows then
# written, or read, front to back instead of a plane's worth in each of C places in turn), each
# plane prefetching the next one's input, and the spare lanes at a plane's end writing the next
# plane instead of a buffer (alternating processes, fused forward): float32 32 channels of 14x14
# 3.53 -> 3.26 ms on one thread, 1.96-2.03 -> 1.81-1.94 ms on two; 64 of 7x7 4.3 -> 3.8 ms, 64 of 8x8
# 4.28 -> 3.82 ms; float64 32 of 14x14 7.65 -> 6.96 ms (one thread); 64 of 32x32 about the same.
# DeepConvNet's float32 training step 49.4-52.4 -> 46.7-49.8 ms.
WINOGRAD_AVX2 = _winograd.avx2_supported()

# The forward's 16 float32 products by pyext/winograd_gemm.h (AVX2 + FMA) instead of np.matmul,
# whose OpenBLAS zeroes M and packs V first. Measured here (alternating processes, two threads):
# 32 channels of 14x14 2.25 -> 2.02 ms, 64 of 8x8 2.97 -> 2.55 ms. It reads V's lines (nT tiles
# apart) in place, a strip of 24 tiles from each of C lines, so where those strips crowd into a few
# sets of the L1 cache it keeps np.matmul (64 channels of 32x32, nT = 1024: 38 -> 55 ms; copying
# each strip of V out first still left that layer 4 % slower than OpenBLAS). Measured here, one
# thread, the 16 products against np.matmul: 32 channels, at most WINOGRAD_GEMM_MAX_SET_LOAD cache
# lines of a strip in one set (see _strip_set_load) 0.82-0.91x the time (nT = 520-2056, 1600 for
# DeepConvNet's 16x16 outputs among them), 16 or more lines 1.04-1.21x (nT = 512, 1024, 1536,
# 2048); 64 channels, up to 8 lines 0.88-1.00x, 16 or more 1.05-1.37x.
# The weight gradient's 16 products, dU[xi] = V[xi] @ dM[xi]^T, likewise (gemm_nt: both operands
# read in place, where OpenBLAS packs both). Whole backward, float32, batch 100, two threads,
# alternating processes: DeepConvNet's conv4 (32 channels of 14x14, pad 2) 5.2-6.1 -> 4.7 ms, pad 1
# 4.55 -> 4.28 ms; about the same for 64 channels of 8x8 (6.27-6.36 against 6.27-6.29 ms) and of
# 32x32 (batch 32, 22.1-24.1 against 22.2-22.5 ms), 128 of 8x8 16.9-17.1 against 17.1-17.5 ms.
WINOGRAD_GEMM = _winograd.gemm_supported()
WINOGRAD_GEMM_MAX_SET_LOAD = 8


def _own_gemm_fits(dtype, T, C):
    """Whether the forward's 16 products over T tiles of C channels take the own GEMM."""
    return (WINOGRAD_GEMM and dtype == np.float32
            and _strip_set_load(T, C) <= WINOGRAD_GEMM_MAX_SET_LOAD)


@functools.lru_cache(maxsize=256)
def _strip_set_load(T, C):
    """The most 64-byte lines that one strip of V read by the own GEMM (24 float32 tiles from each
    of C lines T tiles apart) puts in one set of an L1 cache of 64 sets (32-48 KiB, 8-12 ways, as
    on current x86), over the strip's alignments."""
    start = (np.arange(C)[:, None] * T + np.arange(16)) * 4   # bytes, (C, 16 alignments)
    first, last = start // 64, (start + 95) // 64
    worst = 0
    for j in range(16):
        lines = np.concatenate([first[:, j], first[:, j] + 1,
                                first[last[:, j] > first[:, j] + 1, j] + 2])
        worst = max(worst, int(np.bincount(lines % 64, minlength=64).max()))
    return worst


def _winograd_fits(W_shape, stride, pad, channels):
    """Whether a convolution with weights of W_shape takes the Winograd path: 3x3, stride 1, pad <= 2
    (so that its input gradient, a 3x3 convolution with pad 2 - pad, fits too), and at least
    WINOGRAD_MIN_CHANNELS channels going into the transform."""
    return (W_shape[2] == 3 and W_shape[3] == 3 and stride == 1 and pad <= 2
            and channels >= WINOGRAD_MIN_CHANNELS)


def _winograd_weights(W, flip=False):
    """(FN, C, 3, 3) -> U (16, FN, C): G w G^T of each filter w (computed in double). flip=True gives
    the input gradient's: the filters turned by 180 degrees, C and FN swapped, (16, C, FN)."""
    FN, C = W.shape[:2]
    U = np.empty((16, C, FN) if flip else (16, FN, C), W.dtype)
    _winograd.weight_transform(W, U, flip)
    return U


def _winograd_tiles(H, W, pad):
    """(TH, TW): 2x2 output tiles of a 3x3 stride-1 convolution over an H x W input."""
    return (H + 2 * pad - 1) // 2, (W + 2 * pad - 1) // 2


class _WinogradScratch:
    """Each worker's buffers for Winograd tiles of at most `most` images of C input and FN output
    planes: V, M (rows _winograd.xi_stride apart) and the transforms' scratch, allocated on the
    worker's first tile."""

    def __init__(self, n_workers, most, C, FN, H, W, pad, dtype):
        TH, TW = _winograd_tiles(H, W, pad)
        OH, OW = H + 2 * pad - 2, W + 2 * pad - 2
        self.C, self.FN, self.tiles_per_image, self.dtype = C, FN, TH * TW, dtype
        self.sizes = (16 * _winograd.xi_stride(C * most * TH * TW, dtype.itemsize),
                      16 * _winograd.xi_stride(FN * most * TH * TW, dtype.itemsize),
                      _winograd.input_work_size(H, W, pad), _winograd.output_work_size(OH, OW))
        self.buffers = [None] * n_workers

    def get(self, worker, n):
        """For n images: nT (their tiles), V (16, >= C*nT), M (16, >= FN*nT) and the transforms'
        scratch, (1, input_work_size) and (1, output_work_size)."""
        if self.buffers[worker] is None:
            self.buffers[worker] = [_output(size, self.dtype) for size in self.sizes]
        v_buf, m_buf, work_in, work_out = self.buffers[worker]
        nT, itemsize = n * self.tiles_per_image, self.dtype.itemsize
        V = v_buf[:16 * _winograd.xi_stride(self.C * nT, itemsize)].reshape(16, -1)
        M = m_buf[:16 * _winograd.xi_stride(self.FN * nT, itemsize)].reshape(16, -1)
        return nT, V, M, work_in[None], work_out[None]


def _winograd_tile(planes, n, C, H, W, U, b, pad, relu, out, scratch):
    """out (n, FN, OH, OW) = act(conv(x, w) + b) for n images x of C planes H x W read from
    planes = (flat, image_stride, channel_stride) as in input_transform; U (16, FN, C) from the 3x3
    filters w; scratch: this worker's (nT, V, M, work_in, work_out) from _WinogradScratch.get.
    Returns False when a result is not finite (out is then to be computed directly)."""
    flat, image_stride, channel_stride = planes
    FN = U.shape[1]
    nT, V, M, work_in, work_out = scratch
    _winograd.input_transform(flat, n, C, H, W, image_stride, channel_stride, V, work_in, pad, 1,
                              WINOGRAD_AVX2)
    if _own_gemm_fits(U.dtype, nT, C):
        _winograd.gemm(U, V, M, nT)
    else:
        np.matmul(U, V[:, :C * nT].reshape(16, C, nT), out=M[:, :FN * nT].reshape(16, FN, nT))
    return _winograd.output_transform(M, b, out, work_out, relu, 1, WINOGRAD_AVX2) == 0


def _winograd_forward(x, W, b, pad, relu, out):
    N, C, H, Wd = x.shape
    U = _winograd_weights(W)
    TH, TW = _winograd_tiles(H, Wd, pad)
    tiles = _tiles(N, 16 * C * TH * TW * x.dtype.itemsize)
    n_workers = _conv_workers(tiles, N * 16 * C * TH * TW)
    most = max((t.stop - t.start for t in tiles), default=0)
    scratch = _WinogradScratch(n_workers, most, C, W.shape[0], H, Wd, pad, x.dtype)
    if tiles and all(_own_gemm_fits(x.dtype, (t.stop - t.start) * TH * TW, C) for t in tiles):
        # All tiles in one compiled loop (see _winograd.forward_tiles): the same results as the
        # loop below, without Python between tiles and without the pool's hand-off. Measured here
        # (alternating processes, float32 fused forward): 32 channels of 14x14 3.21-3.26 ->
        # 3.12-3.17 ms on one thread, 1.81-1.83 -> 1.76-1.77 ms on two (pairs the host did not
        # throttle; 1.98-2.04 both ways in those it did); 64 of 7x7 3.80 -> 3.60 ms (one thread),
        # 64 of 8x8 2.11-2.20 -> 2.00 ms (two).
        V, M, work_in, work_out = (_output((n_workers, size), x.dtype) for size in scratch.sizes)
        starts = np.array([t.start for t in tiles] + [N], np.intp)
        bad = np.empty(len(tiles), np.uint8)
        _winograd.forward_tiles(x.reshape(-1), C, H, Wd, pad, U, b, out, starts, V, M, work_in,
                                work_out, bad, relu, n_workers, WINOGRAD_AVX2)
        for i in np.flatnonzero(bad):
            _direct_forward(x[tiles[i]], W, b, 1, pad, relu, out[tiles[i]])
        return

    def tile(worker, i):
        t = tiles[i]
        planes = (x[t].reshape(-1), C * H * Wd, H * Wd)
        n = t.stop - t.start
        if not _winograd_tile(planes, n, C, H, Wd, U, b, pad, relu, out[t], scratch.get(worker, n)):
            _direct_forward(x[t], W, b, 1, pad, relu, out[t])

    with single_threaded_blas():
        run_tasks(tile, len(tiles), n_workers)


def _winograd_weight_grad(x_planes, d_planes, n, C, FN, H, W, pad, dUT, scratch):
    """dUT (16, C, FN) = the gradient of U (see _winograd_tile) for n images x of C planes H x W and
    their output gradients d, both read as (flat, image_stride, channel_stride); scratch as for
    _winograd_tile. Returns False when a value is not finite (this tile's dW is then to be computed
    directly)."""
    nT, V, dM, work_in, work_out = scratch
    _winograd.input_transform(x_planes[0], n, C, H, W, x_planes[1], x_planes[2], V, work_in, pad, 1,
                              WINOGRAD_AVX2)
    _winograd.grad_transform(d_planes[0], n, FN, H + 2 * pad - 2, W + 2 * pad - 2, d_planes[1],
                             d_planes[2], dM, work_out, 1)
    if WINOGRAD_GEMM and V.dtype == np.float32:
        _winograd.gemm_nt(V, dM, dUT, nT)
    else:
        dMT = dM[:, :FN * nT].reshape(16, FN, nT).transpose(0, 2, 1)
        np.matmul(V[:, :C * nT].reshape(16, C, nT), dMT, out=dUT)
    return bool(np.isfinite(dUT).all())


def _backward(dout, x, W, out, stride, pad, need_dx):
    dout, x, W, out, stride, pad, out_shape, dtype = v.conv_backward_setup(dout, x, W, out,
                                                                          stride, pad)
    relu = out is not None
    N, FN, out_h, out_w = out_shape
    C, H, Wd = x.shape[1:]
    FH, FW = W.shape[2], W.shape[3]
    x = v.as_kernel_input(x, dtype)
    dout = v.as_kernel_input(dout, dtype)
    out = v.as_kernel_input(out, dtype) if relu else dout   # read only when relu
    W = v.as_kernel_input(W, dtype)
    # Layers the forward runs in the AVX2 row layout, and stride-1 float32 layers with few filters,
    # take their gradients from that layout.
    if (_avx2_rows_backward_fits(dtype, W.shape, stride, out_w)
            and (not need_dx or _avx2_rows_dx_fits(W, Wd))):
        grads = _avx2_rows_backward(x, dout, out if relu else None, W, pad, need_dx)
        if grads is not None:
            return grads
    W2T = np.ascontiguousarray(W.reshape(FN, -1).T)
    K, L = W2T.shape[0], out_h * out_w
    dx = _output(x.shape, dtype) if need_dx else None
    tiles = _tiles(N, K * L * dtype.itemsize)
    most = max((t.stop - t.start for t in tiles), default=0)
    dWT = _output_zeros((len(tiles), K, FN), dtype)     # per tile, summed in tile order at the end
    db = np.zeros((len(tiles), FN), dtype)
    n_workers = _conv_workers(tiles, N * K * L)
    scratch = _Scratch(n_workers, (K, FN), tiles, L, dtype)
    # The Winograd path for dW (per tile the gradient of U, summed in tile order, then G^T dU G) and
    # for dx, the 3x3 convolution of dout with the filters turned by 180 degrees, C and FN swapped,
    # padded by 2 - pad (reading dout's planes from d).
    winograd = (_winograd_fits(W.shape, stride, pad, C) and FN >= WINOGRAD_MIN_CHANNELS
                and H * Wd >= WINOGRAD_BACKWARD_MIN_PIXELS)
    direct_dw = []     # tiles whose Winograd dW was not finite, computed directly instead
    if winograd:
        dUT = _output_zeros((len(tiles), 16, C, FN), dtype)
        wino_dw = _WinogradScratch(n_workers, most, C, FN, H, Wd, pad, dtype)
    if winograd and need_dx:
        U = _winograd_weights(W, flip=True)
        zeros = np.zeros(C, dtype)
        wino_dx = _WinogradScratch(n_workers, most, FN, C, out_h, out_w, 2 - pad, dtype)

    def tile(worker, i):
        t = tiles[i]
        n = t.stop - t.start
        cols, d = scratch.get(worker, n)
        _conv.gather_grad(dout[t].reshape(n, FN, L), out[t].reshape(n, FN, L), d, relu, 1)
        np.sum(d, axis=1, out=db[i])
        d_planes = (d.reshape(-1), L, n * L)
        if not (winograd and _winograd_weight_grad((x[t].reshape(-1), C * H * Wd, H * Wd),
                                                   d_planes, n, C, FN, H, Wd, pad, dUT[i],
                                                   wino_dw.get(worker, n))):
            if winograd:
                dUT[i] = 0
                direct_dw.append(i)
            _conv.unfold(x[t], cols, FH, FW, stride, pad, 1)
            # dW^T = cols @ d^T: OpenBLAS took 30-70x longer on d @ cols^T, whose long inner
            # dimension n*L is the wrong way round for it (measured here, float32 and float64).
            np.matmul(cols, d.T, out=dWT[i])
        if not need_dx:
            return
        if winograd and _winograd_tile(d_planes, n, FN, out_h, out_w, U, zeros, 2 - pad, False,
                                       dx[t], wino_dx.get(worker, n)):
            return
        np.matmul(W2T, d, out=cols)  # the columns are spent (or unused): reuse them for dcols
        _conv.fold(cols, dx[t], FH, FW, stride, pad, 1)

    with single_threaded_blas():
        run_tasks(tile, len(tiles), n_workers)
    dW = None
    if winograd:
        dW = np.empty(W.shape, dtype)
        _winograd.weight_grad_transform(dUT.sum(axis=0), dW)
    if not winograd or direct_dw:
        dW_direct = np.ascontiguousarray(dWT.sum(axis=0).T).reshape(W.shape)
        dW = dW_direct if dW is None else dW + dW_direct
    return dx, dW, db.sum(axis=0)


def conv_forward(x, W, b, stride=1, pad=0):
    """Convolution (cross-correlation) plus bias: x (N, C, H, W), W (FN, C, FH, FW) -> (N, FN, OH, OW).

    Works tile by tile (TILE_BYTES of unfolded columns at a time), never on the whole batch's im2col;
    3x3 stride-1 layers with at least WINOGRAD_MIN_CHANNELS input channels use Winograd F(2x2, 3x3),
    float32 layers with few channels the AVX2 kernel when the CPU has it (see _avx2_fits).
    """
    return _forward(x, W, b, stride, pad, relu=False)


def conv_backward(dout, x, W, stride=1, pad=0, *, need_dx=True):
    """Gradients of conv_forward: dout (N, FN, OH, OW) -> (dx (N, C, H, W), dW (FN, C, FH, FW), db (FN,)).

    need_dx=False skips dx (returned as None): a network's first layer has no use for it. dW and dx
    take the Winograd path when the layer is 3x3, stride 1, pad <= 2 with C and FN >=
    WINOGRAD_MIN_CHANNELS and H*W >= WINOGRAD_BACKWARD_MIN_PIXELS. Float32 layers that the forward
    runs in the AVX2 row layout, and stride-1 float32 layers with few filters, take dW, db and dx
    from that layout (see _avx2_rows_backward_fits; dx when _avx2_rows_dx_fits).
    """
    return _backward(dout, x, W, None, stride, pad, need_dx)


def conv_bias_relu_forward(x, W, b, stride=1, pad=0):
    """relu(conv_forward(x, W, b)) in one pass over each tile: -> (N, FN, OH, OW)."""
    return _forward(x, W, b, stride, pad, relu=True)


def conv_bias_relu_backward(dout, x, W, out, stride=1, pad=0, *, need_dx=True):
    """Gradients of conv_bias_relu_forward, given its output out (the ReLU mask is out > 0).

    -> (dx (N, C, H, W), dW (FN, C, FH, FW), db (FN,)); dx is None when need_dx=False.
    """
    if out is None:
        raise TypeError("out must be the array conv_bias_relu_forward returned, got None")
    return _backward(dout, x, W, out, stride, pad, need_dx)


# ------------------------------------------------------------------------------------ replicate padding

def pad_replicate(x, pad):
    """(N, C, H, W) -> (N, C, H + 2*pad, W + 2*pad), the border copied from the nearest edge pixel
    (``np.pad(mode='edge')``; PyTorch's ``padding_mode='replicate'``). dtype as im2col's."""
    x, pad = v.replicate_pad_setup(x, pad)
    N, C, H, W = x.shape
    dtype = v.compute_dtype(x)
    out = _output((N, C, H + 2 * pad, W + 2 * pad), dtype)
    _padding.replicate_pad(v.as_kernel_input(x, dtype).reshape(N * C, H, W),
                           out.reshape(N * C, H + 2 * pad, W + 2 * pad), pad,
                           get_num_threads(out.size))
    return out


def pad_replicate_backward(dx_padded, pad):
    """Gradient of pad_replicate: (N, C, H + 2*pad, W + 2*pad) -> (N, C, H, W), each border cell's
    gradient added to the edge pixel it was copied from."""
    d, pad = v.replicate_pad_backward_setup(dx_padded, pad)
    N, C, HP, WP = d.shape
    dtype = v.compute_dtype(d)
    dx = _output((N, C, HP - 2 * pad, WP - 2 * pad), dtype)
    _padding.replicate_pad_backward(v.as_kernel_input(d, dtype).reshape(N * C, HP, WP),
                                    dx.reshape(N * C, HP - 2 * pad, WP - 2 * pad), pad,
                                    get_num_threads(d.size))
    return dx
