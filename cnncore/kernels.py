"""The kernels behind a validating boundary: validate, select, run.

Each function checks its arguments (cnncore._validate), picks the compute dtype (float32 stays float32,
float64 stays float64, float16 / integers / mixed become float64), makes inputs C-contiguous (copying only
when needed), allocates the outputs and hands them to a kernel in cnncore._ext. cnncore.reference has
the same functions, with the same signatures, in plain NumPy. The convolutions choose their algorithm
through cnncore._conv.select (see cnncore.explain) and run it from cnncore._conv; settings come from
cnncore.get_config(), read here in the calling thread.

Shapes: x (N, C, H, W); W (FN, C, FH, FW); b (FN,) or a scalar; OH = (H + 2*pad - FH) // stride + 1.
"""
import numpy as np

from . import _validate as check
from . import reference as _reference
from ._config import current as _current_config
from ._conv import avx2_blocks, avx2_rows, avx512_blocks, gradients, im2col_gemm, winograd
from ._conv import select as _select
from ._conv.tiling import even_slices as _even_slices
from ._cpu import usable as _usable
from ._ext import activation as _activation
from ._ext import adam as _adam
from ._ext import batchnorm as _batchnorm
from ._ext import im2col as _im2col
from ._ext import padding as _padding
from ._ext import pooling as _pooling
from ._memory import empty as _output
from ._threads import get_num_threads as _requested_threads
from ._threads import run_tasks, single_threaded_blas
from ._threads import threads_for as _threads_for


def _avx2():
    """Whether AVX2 loops may run now (the CPU has them and config use_avx2 allows)."""
    return _usable(_current_config())["avx2"]


def im2col(input_data, filter_h, filter_w, stride=1, pad=0):
    """Unfold windows into rows: (N, C, H, W) -> (N*OH*OW, C*FH*FW), the textbook's exact layout.

    Row (n*OH + oy)*OW + ox holds the window at (oy*stride, ox*stride) of the zero-padded image, with
    columns ordered (c, ky, kx): the flattening order of a (FN, C, FH, FW) weight.
    """
    x = check.image_batch(input_data, "input_data")
    filter_h, filter_w, stride, pad = check.window_params(filter_h, filter_w, stride, pad)
    N, C, H, W = x.shape
    out_h, out_w = check.output_hw(H, W, filter_h, filter_w, stride, pad, arg="input_data")
    shape = (N * out_h * out_w, C * filter_h * filter_w)
    check.check_total_size(shape, "the im2col matrix")
    dtype = check.compute_dtype(x)
    col = _output(shape, dtype)
    _im2col.im2col(check.as_kernel_input(x, dtype), col, filter_h, filter_w, stride, pad,
                   _threads_for(col.size))
    return col


def col2im(col, input_shape, filter_h, filter_w, stride=1, pad=0):
    """Adjoint of im2col: (N*OH*OW, C*FH*FW) -> (N, C, H, W), overlapping windows summed.

    Not the inverse: each pixel of col2im(im2col(x)) is x times the number of windows covering it.
    Gradients that fall on the padding are dropped. col may be any array with the right number of
    elements (as in the textbook, which reshapes it).
    """
    N, C, H, W = check.input_shape4(input_shape)
    filter_h, filter_w, stride, pad = check.window_params(filter_h, filter_w, stride, pad)
    out_h, out_w = check.output_hw(H, W, filter_h, filter_w, stride, pad, arg="input_shape")
    col = check.as_array(col, "col")
    shape = (N * out_h * out_w, C * filter_h * filter_w)
    if col.size != shape[0] * shape[1]:
        raise ValueError(
            f"col must have shape {shape} (from input_shape {(N, C, H, W)}, filter "
            f"{filter_h}x{filter_w}, stride={stride}, pad={pad}), got {col.shape}"
        )
    dtype = check.compute_dtype(col)
    x = _output((N, C, H, W), dtype)
    _im2col.col2im(check.as_kernel_input(col, dtype).reshape(shape), x, filter_h, filter_w, stride,
                   pad, _threads_for(col.size))
    return x


# ---------------------------------------------------------------------------------------------- pooling

# Max pooling over 3x3 windows at stride 2 runs in AVX2 registers where allowed (pyext/pool_3x3_avx2.h):
# the forward in any float dtype, the float32 backward without padding.

def max_pool_forward(x, pool_h, pool_w, stride=2, pad=0):
    """Max over each window: x (N, C, H, W) -> (out (N, C, OH, OW), arg_max (N, C, OH, OW)).

    arg_max is the winner's index ky*pool_w + kx inside its window (first on ties; NaN wins).
    Padded cells never win; pad must be smaller than the window.
    """
    x, params, out_shape = check.pool_setup(x, pool_h, pool_w, stride, pad)
    dtype = check.compute_dtype(x)
    out = _output(out_shape, dtype)
    arg_max = _output(out_shape, np.intp)
    _pooling.max_pool_forward(check.as_kernel_input(x, dtype), out, arg_max, *params,
                              _threads_for(x.size), _avx2())
    return out, arg_max


def max_pool_backward(dout, arg_max, input_shape, pool_h, pool_w, stride=2, pad=0):
    """Route each dout to its window's max cell: -> dx (N, C, H, W); overlaps add up."""
    dout, shape, params = check.pool_backward_setup(dout, input_shape, pool_h, pool_w, stride, pad)
    arg_max = check.pool_arg_max(arg_max, dout.shape, shape, params)
    dtype = check.compute_dtype(dout)
    dx = _output(shape, dtype)
    _pooling.max_pool_backward(check.as_kernel_input(dout, dtype), arg_max, dx, *params,
                               _threads_for(dx.size), _avx2())
    return dx


def _row_per_thread(n_threads, width, dtype):
    """(n_threads, >= width) scratch rows at least a cache line apart, so that threads never write
    to one line."""
    line = 64 // dtype.itemsize
    return np.empty((n_threads, -(-width // line) * line + line), dtype)


def avg_pool_forward(x, pool_h, pool_w, stride=2, pad=0):
    """Mean over each window, padding counted as zeros: x (N, C, H, W) -> (N, C, OH, OW)."""
    x, params, out_shape = check.pool_setup(x, pool_h, pool_w, stride, pad)
    dtype = check.compute_dtype(x)
    out = _output(out_shape, dtype)
    n_threads = _threads_for(x.size)
    scratch = _row_per_thread(n_threads, x.shape[3], dtype)     # the window sums of a row
    _pooling.avg_pool_forward(check.as_kernel_input(x, dtype), out, scratch, *params, n_threads)
    return out


def avg_pool_backward(dout, input_shape, pool_h, pool_w, stride=2, pad=0):
    """Spread each dout evenly over its window: -> dx (N, C, H, W); overlaps add up."""
    dout, shape, params = check.pool_backward_setup(dout, input_shape, pool_h, pool_w, stride, pad)
    dtype = check.compute_dtype(dout)
    dx = _output(shape, dtype)
    n_threads = _threads_for(dx.size)
    scratch = _row_per_thread(n_threads, dout.shape[3] + 2, dtype)  # shares of a row's windows
    _pooling.avg_pool_backward(check.as_kernel_input(dout, dtype), dx, scratch, *params, n_threads)
    return dx


# ------------------------------------------------------------------------------------------ activation

# ReLU forward in one AVX2 pass (out and the mask from one load of x) where allowed, instead of the
# baseline build's two passes.

def relu_forward(x):
    """ReLU: -> (out, mask), out = 0 where x <= 0 else x (NaN kept), mask = x <= 0; shapes of x.

    Elementwise, so the dtype of x is kept: float32 and float64 run compiled, other real dtypes
    (float16, integers) in NumPy.
    """
    x = check.as_array(x, "x")
    if x.dtype not in check.FLOAT_DTYPES:
        return _reference.relu_forward(x)
    out = _output(x.shape, x.dtype)
    mask = _output(x.shape, np.bool_)
    _activation.relu_forward(check.as_kernel_input(x, x.dtype).reshape(-1), out.reshape(-1),
                             mask.reshape(-1).view(np.uint8), _threads_for(x.size), _avx2())
    return out, mask


def relu_backward(dout, mask):
    """Gradient of relu_forward: dx = 0 where mask else dout; shape and dtype of dout."""
    dout = check.as_array(dout, "dout")
    mask = check.relu_mask(mask, dout.shape)
    if dout.dtype not in check.FLOAT_DTYPES:
        return _reference.relu_backward(dout, mask)
    dx = _output(dout.shape, dout.dtype)
    _activation.relu_backward(check.as_kernel_input(dout, dout.dtype).reshape(-1),
                              np.ascontiguousarray(mask).reshape(-1).view(np.uint8),
                              dx.reshape(-1), _threads_for(dx.size))
    return dx


# ------------------------------------------------------------------------------------------- optimizer

def adam_fits(param, grad, m, v):
    """Whether adam_update takes these arrays: ndarrays of one shape and one dtype (float32 or
    float64), C-contiguous, param, m and v writeable, and no two of them sharing memory."""
    arrays = (param, grad, m, v)
    if not all(type(a) is np.ndarray for a in arrays):
        return False
    if param.dtype not in check.FLOAT_DTYPES or any(a.dtype != param.dtype or a.shape != param.shape
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
                      float(lr_t), float(beta1), float(beta2), _threads_for(param.size))


# -------------------------------------------------------------------------------------- matrix product

def matmul(a, b):
    """a @ b: a (M, K), b (K, N) -> (M, N), on cnncore's threads.

    Computed in float32 when both are float32, else float64. A product of at least config
    matmul_chunks * matmul_chunk_work multiply-adds is cut into matmul_chunks pieces (rows of a or
    columns of b, whichever side of the result is longer; a fixed count, so results never depend
    on threads), each a single-threaded BLAS call on its own thread; NumPy's BLAS is held at one
    thread meanwhile (see _threads), so it never spins beside cnncore's kernels.
    """
    a, b = check.matmul_operands(a, b)
    (M, K), N = a.shape, b.shape[1]
    out = _output((M, N), a.dtype)
    config = _current_config()
    chunks = config["matmul_chunks"]
    n_chunks = chunks if M * N * K >= chunks * config["matmul_chunk_work"] else 1
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

def _forward(x, W, b, stride, pad, relu):
    W_given = W
    x, W, stride, pad, out_shape, dtype = check.conv_setup(x, W, stride, pad)
    b = check.bias_vector(b, out_shape[1], dtype)
    config = _current_config()
    s = _select.settings(config)
    layer = _select.describe(x.shape, W.shape, stride, pad, dtype)
    algorithm, _ = _select.choose("forward", layer, s, config["conv_algorithm"])
    x = check.as_kernel_input(x, dtype)
    W = check.as_kernel_input(W, dtype)
    out = _output(out_shape, dtype)
    redone = 0
    if algorithm == "winograd":
        redone = winograd.forward(x, W, b, pad, relu, out, s.tile_bytes, s.avx2, s.avx2_fma)
    elif algorithm == "avx2_rows":
        avx2_rows.forward(x, W, b, pad, relu, out)
    elif algorithm == "avx2_blocks":
        avx2_blocks.forward(x, W, b, stride, pad, relu, out)
    elif algorithm == "avx512_blocks":
        avx512_blocks.forward(x, W, b, stride, pad, relu, out)
    else:
        im2col_gemm.forward(x, W, b, stride, pad, relu, out, s.tile_bytes)
    _select.ran("forward", algorithm, redone, x.shape, W.shape, stride, pad, W_given)
    return out


def _backward(dout, x, W, out, stride, pad, need_dx):
    W_given = W
    dout, x, W, out, stride, pad, out_shape, dtype = check.conv_backward_setup(dout, x, W, out,
                                                                              stride, pad)
    relu = out is not None
    x = check.as_kernel_input(x, dtype)
    dout = check.as_kernel_input(dout, dtype)
    out = check.as_kernel_input(out, dtype) if relu else dout   # read only when relu
    W = check.as_kernel_input(W, dtype)
    config = _current_config()
    s = _select.settings(config)
    forced = config["conv_algorithm"]
    layer = _select.describe(x.shape, W.shape, stride, pad, dtype, need_dx)
    algorithm, _ = _select.choose("gradients", layer, s, forced)
    excluded = ()
    if algorithm == "avx2_rows":
        # The row layout's input gradient sums the zeros around d times the weights too, which an
        # infinite weight would make NaN; and its dW or db come out non-finite where an infinity
        # meets the zero lanes past a row. Either way the next rule computes the gradients.
        if not need_dx or np.isfinite(W).all():
            grads = avx2_rows.backward(x, dout, out if relu else None, W, pad, need_dx,
                                       s.tile_bytes)
            _select.ran("gradients", "avx2_rows", int(grads is None), x.shape, W.shape, stride,
                        pad, W_given)
            if grads is not None:
                return grads
        excluded = ("avx2_rows",)
        algorithm, _ = _select.choose("gradients", layer, s, forced, exclude=excluded)
    if algorithm == "avx512_blocks":
        # The input gradient sums the zeros around d times the (flipped) weights too: an infinite
        # weight would make NaN there, so a rule without that need computes such a layer's.
        if not need_dx or np.isfinite(W).all():
            dW, db = avx512_blocks.weight_grad(x, dout, out if relu else None, W, pad, s.tile_bytes)
            dx = None
            if need_dx:
                dx = _output(x.shape, dtype)
                avx512_blocks.input_grad(dout, out if relu else None, W, pad, dx)
            _select.ran("gradients", "avx512_blocks", 0, x.shape, W.shape, stride, pad, W_given)
            return dx, dW, db
        excluded += ("avx512_blocks", "avx2_rows")
        algorithm, _ = _select.choose("gradients", layer, s, forced, exclude=excluded)
    dx, dW, db, redone = gradients.backward(x, dout, out, W, stride, pad, relu, need_dx, algorithm,
                                            algorithm if need_dx else None, s)
    _select.ran("gradients", algorithm, redone, x.shape, W.shape, stride, pad, W_given)
    return dx, dW, db


def conv_forward(x, W, b, stride=1, pad=0):
    """Convolution (cross-correlation) plus bias: x (N, C, H, W), W (FN, C, FH, FW) -> (N, FN, OH, OW).

    The algorithm is chosen by cnncore._conv.select (cnncore.explain shows which and why) or forced
    by config conv_algorithm; all work tile by tile, never on the whole batch's im2col.
    """
    return _forward(x, W, b, stride, pad, relu=False)


def conv_backward(dout, x, W, stride=1, pad=0, *, need_dx=True):
    """Gradients of conv_forward: dout (N, FN, OH, OW) -> (dx (N, C, H, W), dW (FN, C, FH, FW), db (FN,)).

    need_dx=False skips dx (returned as None): a network's first layer has no use for it. The
    algorithm is chosen as for conv_forward, by the gradient rules.
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
    x, pad = check.replicate_pad_setup(x, pad)
    N, C, H, W = x.shape
    dtype = check.compute_dtype(x)
    out = _output((N, C, H + 2 * pad, W + 2 * pad), dtype)
    _padding.replicate_pad(check.as_kernel_input(x, dtype).reshape(N * C, H, W),
                           out.reshape(N * C, H + 2 * pad, W + 2 * pad), pad,
                           _threads_for(out.size))
    return out


def pad_replicate_backward(dx_padded, pad):
    """Gradient of pad_replicate: (N, C, H + 2*pad, W + 2*pad) -> (N, C, H, W), each border cell's
    gradient added to the edge pixel it was copied from."""
    d, pad = check.replicate_pad_backward_setup(dx_padded, pad)
    N, C, HP, WP = d.shape
    dtype = check.compute_dtype(d)
    dx = _output((N, C, HP - 2 * pad, WP - 2 * pad), dtype)
    _padding.replicate_pad_backward(check.as_kernel_input(d, dtype).reshape(N * C, HP, WP),
                                    dx.reshape(N * C, HP - 2 * pad, WP - 2 * pad), pad,
                                    _threads_for(d.size))
    return dx


# ------------------------------------------------------------------------------ per-channel batch norm

# x is viewed as (N, C, L), L = H*W (1 for an (N, C) input); statistics are float64 per channel.

def _planes(x, dtype):
    return check.as_kernel_input(x, dtype).reshape(x.shape[0], x.shape[1], int(np.prod(x.shape[2:])))


def channel_stats(x):
    """Per channel mean and biased variance of x (N, C, H, W) or (N, C) over N, H, W: float64 (C,).

    Accumulated in double (two passes: the mean, then squared deviations from it)."""
    x = check.channel_stats_input(x)
    C = x.shape[1]
    mean, var = np.empty(C), np.empty(C)
    _batchnorm.channel_stats(_planes(x, check.compute_dtype(x)), mean, var,
                             _threads_for(x.size))
    return mean, var


def batchnorm2d_normalize(x, mean, scale, shift):
    """out = (x - mean[c]) * scale[c] + shift[c] per channel c; shape of x, dtype as compute_dtype(x).

    With scale = gamma / sqrt(var + eps) and shift = beta this is BatchNorm's forward."""
    x, mean, scale, shift = check.batchnorm_normalize_setup(x, mean, scale, shift)
    dtype = check.compute_dtype(x)
    out = _output(x.shape, dtype)
    if x.size:
        _batchnorm.normalize(_planes(x, dtype), mean, scale, shift,
                             _planes(out, dtype), _threads_for(x.size))
    return out


def batchnorm2d_backward(dout, x, mean, std, gamma):
    """Gradients of out = gamma * (x - mean) / std + beta, mean and std being x's batch statistics
    (std = sqrt(var + eps)): -> (dx, dgamma, dbeta); dtype as compute_dtype(dout, x)."""
    dout, x, mean, std, gamma = check.batchnorm_backward_setup(dout, x, mean, std, gamma)
    dtype = check.compute_dtype(dout, x)
    N, C = x.shape[:2]
    dx = _output(x.shape, dtype)
    dbeta, dot = np.zeros(C), np.zeros(C)
    M = x.size // C
    if x.size:
        d3, x3 = _planes(dout, dtype), _planes(x, dtype)
        threads = _threads_for(x.size)
        _batchnorm.backward_sums(d3, x3, mean, dbeta, dot, threads)
        # dx = gamma/std * (dout - dbeta/M - (x - mean) * dot / (M * std**2))
        p = gamma / std
        _batchnorm.backward_dx(d3, x3, mean, dbeta / M, p, -p * dot / (M * std * std),
                               _planes(dx, dtype), threads)
    return dx, (dot / std).astype(dtype), dbeta.astype(dtype)
