"""Checks at the boundary between users and the unchecked kernels.

Every public kernel wrapper (cnncore/kernels.py) and every reference (cnncore/reference.py) calls these
before touching data. They raise TypeError for a wrong type or dtype and ValueError for a wrong shape
or parameter, naming the argument; they never let a bad array reach compiled code.
"""
import math
import numbers
import operator

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

# Largest element count we accept for one array: keeps every index product inside Py_ssize_t with room
# to spare, so a bad shape fails here instead of overflowing inside a kernel.
_MAX_ELEMENTS = 2**48


def output_size(input_size, filter_size, stride=1, pad=0):
    """Output length of a convolution or pooling window sweep: (size + 2*pad - filter) // stride + 1.

    The one place output sizes are computed (layers, kernels and references all call it). Unlike the
    textbook's ``util.conv_output_size`` this floors, as the layers themselves do.
    """
    return (input_size + 2 * pad - filter_size) // stride + 1


def check_int(value, name, minimum, maximum=_MAX_ELEMENTS):
    """Return value as a Python int, checking it is an integer (not bool) in [minimum, maximum].

    The default maximum (2**48) keeps every size, stride and pad far from 64-bit overflow in the
    kernels' index arithmetic (``H + 2*pad``, ``oy*stride``) and in the conversion to C.
    """
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if not isinstance(value, (numbers.Integral, np.integer)):
        try:
            value = operator.index(value)
        except TypeError:
            raise TypeError(f"{name} must be an integer, got {value!r}") from None
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}: too large")
    return value


def check_real(value, name, low=-math.inf, high=math.inf, *, below_high=False):
    """Return value as a float, checking it is a finite real number (not bool) in [low, high], or
    in [low, high) with below_high; anything else is a ValueError naming the argument."""
    is_real = isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
    if (not is_real or not math.isfinite(value) or value < low or value > high
            or (below_high and value == high)):
        bounds = f"[{low}, {high}{')' if below_high else ']'}".replace("-inf", "-∞").replace("inf", "∞")
        raise ValueError(f"{name} must be a finite number in {bounds}, got {value!r}")
    return float(value)


def compute_dtype(*arrays):
    """The dtype a kernel computes in: float32 if every input is float32, else float64.

    float32 in -> float32 out and float64 in -> float64 out; float16, integer and mixed inputs are
    computed in float64, as the textbook does. (Only the arrays' dtypes are looked at.)
    """
    if all(a.dtype == np.float32 for a in arrays):
        return np.dtype(np.float32)
    return np.dtype(np.float64)


def as_array(value, name, ndim=None):
    """Turn value into an ndarray of a real numeric dtype and check its ndim."""
    if not isinstance(value, np.ndarray):
        try:
            value = np.asarray(value)
        except Exception as exc:  # ragged lists and the like
            raise TypeError(f"{name} must be an array of numbers: {exc}") from None
    kind = value.dtype.kind
    if kind not in "fiu" or value.dtype.itemsize > 8:
        raise TypeError(
            f"{name} must hold real numbers (float32/float64, or float16/integers computed as "
            f"float64), got dtype {value.dtype}"
        )
    if ndim is not None and value.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got {value.ndim}-D with shape {value.shape}")
    if value.size > _MAX_ELEMENTS:
        raise ValueError(f"{name} is too large ({value.size} elements)")
    return value


def as_kernel_input(array, dtype):
    """C-contiguous array of dtype: no copy when array already is one."""
    return np.ascontiguousarray(array, dtype=dtype)


def check_total_size(shape, name):
    """Raise before allocating an array whose element count would overflow or exhaust memory."""
    total = 1
    for s in shape:
        total *= int(s)
    if total > _MAX_ELEMENTS:
        raise ValueError(f"{name} would have {total} elements (shape {tuple(shape)}): too large")


def window_params(filter_h, filter_w, stride, pad, names=("filter_h", "filter_w")):
    """Check window sizes (>= 1), stride (>= 1) and pad (>= 0); return them as ints."""
    return (
        check_int(filter_h, names[0], 1),
        check_int(filter_w, names[1], 1),
        check_int(stride, "stride", 1),
        check_int(pad, "pad", 0),
    )


def output_hw(H, W, filter_h, filter_w, stride, pad, what="filter", arg="x"):
    """(out_h, out_w) for a window sweep, raising when the window is larger than the padded input."""
    if filter_h > H + 2 * pad or filter_w > W + 2 * pad:
        raise ValueError(
            f"{what} {filter_h}x{filter_w} is larger than the padded input "
            f"{H + 2 * pad}x{W + 2 * pad} ({arg} is {H}x{W}, pad={pad})"
        )
    check_padded_plane(H, W, pad, arg)
    return output_size(H, filter_h, stride, pad), output_size(W, filter_w, stride, pad)


def check_padded_plane(H, W, pad, arg="x"):
    """Refuse a padded plane past the element limit, even for an empty batch."""
    if (H + 2 * pad) * (W + 2 * pad) > _MAX_ELEMENTS:
        raise ValueError(f"pad={pad} makes the padded input {H + 2 * pad}x{W + 2 * pad} "
                         f"({arg} is {H}x{W}): too large")


def input_shape4(input_shape, name="input_shape"):
    """Check a 4-tuple (N, C, H, W) of non-negative ints (C, H, W >= 1)."""
    try:
        shape = tuple(input_shape)
    except TypeError:
        raise TypeError(f"{name} must be a tuple (N, C, H, W), got {input_shape!r}") from None
    if len(shape) != 4:
        raise ValueError(f"{name} must have 4 entries (N, C, H, W), got {shape}")
    N = check_int(shape[0], f"{name}[0] (N)", 0)
    C, H, W = (check_int(s, f"{name}[{i}]", 1) for i, s in zip((1, 2, 3), shape[1:]))
    check_total_size((N, C, H, W), name)
    return N, C, H, W


def image_batch(x, name="x"):
    """Check a 4-D (N, C, H, W) batch with C, H, W >= 1 (N may be 0)."""
    x = as_array(x, name, ndim=4)
    if min(x.shape[1:]) < 1:
        raise ValueError(f"{name} must have C, H, W >= 1, got shape {x.shape}")
    return x


def replicate_pad_setup(x, pad, name="x"):
    """(x, pad) checked for replicate padding: a 4-D batch, an integer pad >= 0."""
    x = image_batch(x, name)
    pad = check_int(pad, "pad", 0)
    check_padded_plane(x.shape[2], x.shape[3], pad, name)
    check_total_size((*x.shape[:2], x.shape[2] + 2 * pad, x.shape[3] + 2 * pad), "the padded batch")
    return x, pad


def replicate_pad_backward_setup(dx_padded, pad):
    """(dx_padded, pad) checked: a 4-D batch whose H and W exceed 2*pad."""
    dx_padded = as_array(dx_padded, "dx_padded", ndim=4)
    pad = check_int(pad, "pad", 0)
    if min(dx_padded.shape[1:]) < 1 or min(dx_padded.shape[2:]) <= 2 * pad:
        raise ValueError(f"dx_padded must be (N, C, H + 2*pad, W + 2*pad) with C, H, W >= 1; got "
                         f"shape {dx_padded.shape} for pad {pad}")
    return dx_padded, pad


def matching_shape(array, expected, name, why):
    """Raise ValueError unless array.shape == expected."""
    if tuple(array.shape) != tuple(expected):
        raise ValueError(f"{name} must have shape {tuple(expected)} ({why}), got {array.shape}")


def pool_setup(x, pool_h, pool_w, stride, pad, name="x"):
    """Check a pooling call: -> (x, (pool_h, pool_w, stride, pad), output shape (N, C, OH, OW))."""
    x = image_batch(x, name)
    pool_h, pool_w, stride, pad = window_params(pool_h, pool_w, stride, pad,
                                                names=("pool_h", "pool_w"))
    if pad >= pool_h or pad >= pool_w:
        raise ValueError(
            f"pad must be smaller than the pooling window, got pad={pad} for a "
            f"{pool_h}x{pool_w} window (a window could then lie entirely in the padding)"
        )
    out_h, out_w = output_hw(x.shape[2], x.shape[3], pool_h, pool_w, stride, pad,
                             what="pooling window", arg=name)
    out_shape = (x.shape[0], x.shape[1], out_h, out_w)
    check_total_size(out_shape, f"the pooling output (from {name} {x.shape}, pad={pad}, "
                                f"stride={stride})")
    return x, (pool_h, pool_w, stride, pad), out_shape


def pool_backward_setup(dout, input_shape, pool_h, pool_w, stride, pad):
    """Check a pooling backward call: -> (dout, input shape, (pool_h, pool_w, stride, pad))."""
    shape = input_shape4(input_shape)
    probe = np.empty((0, 1, shape[2], shape[3]))  # only its H, W are looked at
    _, params, (_, _, out_h, out_w) = pool_setup(probe, pool_h, pool_w, stride, pad,
                                                 name="input_shape")
    dout = as_array(dout, "dout", ndim=4)
    matching_shape(dout, (shape[0], shape[1], out_h, out_w), "dout", "the pooling output shape")
    return dout, shape, params


def pool_arg_max(arg_max, dout_shape, shape, params):
    """Check an arg_max from max_pool_forward against dout and the window; return it as C intp."""
    arg_max = np.asarray(arg_max)
    if arg_max.dtype.kind not in "iu":
        raise TypeError(f"arg_max must hold integers, got dtype {arg_max.dtype}")
    matching_shape(arg_max, dout_shape, "arg_max", "the same shape as dout")
    pool_h, pool_w = params[0], params[1]
    arg_max = np.ascontiguousarray(arg_max, dtype=np.intp)
    # One pass: seen as unsigned, a negative index (or a uint64 beyond intp, wrapped by the cast)
    # is larger than any window.
    if arg_max.size and arg_max.view(np.uintp).max() >= pool_h * pool_w:
        raise ValueError(f"arg_max values must lie in [0, {pool_h * pool_w}) for a "
                         f"{pool_h}x{pool_w} window")
    _check_max_cells_inside(arg_max, shape, params)
    return arg_max


def _check_max_cells_inside(arg_max, shape, params):
    # With padding, a window index can point at a padded cell; max_pool_forward never produces one,
    # but a hand-made arg_max could, and the kernel would write outside dx.
    pool_h, pool_w, stride, pad = params
    if pad == 0 or arg_max.size == 0:
        return
    out_h, out_w = arg_max.shape[2], arg_max.shape[3]
    iy = (np.arange(out_h) * stride - pad)[:, None] + arg_max // pool_w
    ix = (np.arange(out_w) * stride - pad)[None, :] + arg_max % pool_w
    if iy.min() < 0 or iy.max() >= shape[2] or ix.min() < 0 or ix.max() >= shape[3]:
        raise ValueError("arg_max points at padded cells; it must come from max_pool_forward "
                         "with the same input_shape, window, stride and pad")


def conv_setup(x, W, stride, pad):
    """Check a convolution call: -> (x, W, stride, pad, output shape (N, FN, OH, OW), compute dtype)."""
    x = image_batch(x, "x")
    W = as_array(W, "W", ndim=4)
    if min(W.shape) < 1:
        raise ValueError(f"W must have FN, C, FH, FW >= 1, got shape {W.shape}")
    if W.shape[1] != x.shape[1]:
        raise ValueError(f"W has {W.shape[1]} input channels (shape {W.shape}) but x has "
                         f"{x.shape[1]} (shape {x.shape})")
    _, _, stride, pad = window_params(W.shape[2], W.shape[3], stride, pad,
                                      names=("W.shape[2]", "W.shape[3]"))
    out_h, out_w = output_hw(x.shape[2], x.shape[3], W.shape[2], W.shape[3], stride, pad)
    out_shape = (x.shape[0], W.shape[0], out_h, out_w)
    check_total_size(out_shape, f"the convolution output (from x {x.shape}, W {W.shape}, "
                                f"pad={pad}, stride={stride})")
    # one image's unfolded columns (C*FH*FW, OH*OW): what a convolution tile holds at least
    check_total_size((W.size // W.shape[0], out_h * out_w),
                     "one image's unfolded columns (C*FH*FW x OH*OW)")
    dtype = compute_dtype(x, W)
    return x, W, stride, pad, out_shape, dtype


def bias_vector(b, FN, dtype, name="b"):
    """A bias as a C-contiguous (FN,) vector of dtype; a scalar or 1-element bias is broadcast."""
    b = as_array(b, name)
    if b.size == 1:
        return np.full(FN, b.reshape(()), dtype)  # a scalar bias, as the textbook allows
    if b.ndim != 1 or b.shape[0] != FN:
        raise ValueError(f"{name} must be a scalar or have shape ({FN},) (one per filter), "
                         f"got shape {b.shape}")
    return np.ascontiguousarray(b, dtype=dtype)


def conv_backward_setup(dout, x, W, out, stride, pad):
    """Check a convolution backward call (out: the fused forward's output, or None).

    -> (dout, x, W, out, stride, pad, output shape, compute dtype).
    """
    x, W, stride, pad, out_shape, dtype = conv_setup(x, W, stride, pad)
    dout = as_array(dout, "dout", ndim=4)
    matching_shape(dout, out_shape, "dout", "the convolution output shape")
    if out is not None:
        out = as_array(out, "out", ndim=4)
        matching_shape(out, out_shape, "out", "the forward output this gradient belongs to")
    return dout, x, W, out, stride, pad, out_shape, dtype


def matmul_operands(a, b):
    """Check a (M, K) and b (K, N) chain; -> (a, b) in their compute dtype (layout kept)."""
    a = as_array(a, "a", ndim=2)
    b = as_array(b, "b", ndim=2)
    if a.shape[1] != b.shape[0]:
        raise ValueError(f"a and b do not chain: a is {a.shape}, b is {b.shape} "
                         f"(a.shape[1] must equal b.shape[0])")
    dtype = compute_dtype(a, b)
    return a.astype(dtype, copy=False), b.astype(dtype, copy=False)


def relu_mask(mask, shape):
    """Check the mask relu_backward gets: a bool ndarray of dout's shape (as relu_forward returned)."""
    if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_:
        got = f"dtype {mask.dtype}" if isinstance(mask, np.ndarray) else type(mask).__name__
        raise TypeError(f"mask must be the bool array relu_forward returned, got {got}")
    matching_shape(mask, shape, "mask", "the shape of dout")
    return mask


def channel_batch(x, name="x"):
    """Check an (N, C, H, W) or (N, C) batch for per-channel batch normalization (C >= 1)."""
    x = as_array(x, name)
    if x.ndim not in (2, 4) or x.shape[1] < 1:
        raise ValueError(f"{name} must be (N, C, H, W) or (N, C) with C >= 1, got shape {x.shape}")
    return x


def channel_vector(value, C, name):
    """A per-channel (C,) vector as a C-contiguous float64 array (the kernels' statistics dtype)."""
    value = as_array(value, name)
    if value.shape != (C,):
        raise ValueError(f"{name} must have shape ({C},) (one value per channel), got {value.shape}")
    return np.ascontiguousarray(value, dtype=np.float64)


def channel_stats_input(x):
    """x for channel_stats: a channel batch with at least one value per channel."""
    x = channel_batch(x)
    if x.size == 0:
        raise ValueError(f"x must have at least one value per channel for batch statistics, got "
                         f"shape {x.shape}")
    return x


def batchnorm_normalize_setup(x, mean, scale, shift):
    """(x, mean, scale, shift) checked: a channel batch and three float64 (C,) vectors."""
    x = channel_batch(x)
    C = x.shape[1]
    return (x, channel_vector(mean, C, "mean"), channel_vector(scale, C, "scale"),
            channel_vector(shift, C, "shift"))


def batchnorm_backward_setup(dout, x, mean, std, gamma):
    """(dout, x, mean, std, gamma) checked: dout of x's shape and three float64 (C,) vectors."""
    x = channel_batch(x)
    dout = as_array(dout, "dout")
    matching_shape(dout, x.shape, "dout", "the shape of x")
    C = x.shape[1]
    return (dout, x, channel_vector(mean, C, "mean"), channel_vector(std, C, "std"),
            channel_vector(gamma, C, "gamma"))
