"""Pure-NumPy versions of every kernel in cnncore.kernels: same names, signatures, checks and dtypes.

Written for clarity, following the textbook's algorithms (im2col + one matrix product for the
convolution, pooling over im2col windows). The tests use them as the oracle, the benchmarks as the
baseline. Shapes: x (N, C, H, W); W (FN, C, FH, FW); OH = (H + 2*pad - FH) // stride + 1.
"""
import numpy as np

from . import _validate as v


def _padded(x, pad, value=0.0):
    return np.pad(x, [(0, 0), (0, 0), (pad, pad), (pad, pad)], mode="constant", constant_values=value)


def _windows(xp, filter_h, filter_w, stride, out_h, out_w):
    """(N, C, H', W') padded input -> (N, C, FH, FW, OH, OW): element [.., ky, kx, oy, ox]."""
    N, C = xp.shape[:2]
    win = np.empty((N, C, filter_h, filter_w, out_h, out_w), xp.dtype)
    for ky in range(filter_h):
        for kx in range(filter_w):
            win[:, :, ky, kx] = xp[:, :, ky:ky + stride * out_h:stride, kx:kx + stride * out_w:stride]
    return win


def _add_windows(win, shape, stride, pad):
    """Adjoint of _windows: sum (N, C, FH, FW, OH, OW) back into an (N, C, H, W) image."""
    N, C, H, W = shape
    filter_h, filter_w, out_h, out_w = win.shape[2:]
    # stride - 1 spare rows/columns keep every strided slice inside the buffer
    img = np.zeros((N, C, H + 2 * pad + stride - 1, W + 2 * pad + stride - 1), win.dtype)
    for ky in range(filter_h):
        for kx in range(filter_w):
            img[:, :, ky:ky + stride * out_h:stride, kx:kx + stride * out_w:stride] += win[:, :, ky, kx]
    return img[:, :, pad:H + pad, pad:W + pad]


def im2col(input_data, filter_h, filter_w, stride=1, pad=0):
    """(N, C, H, W) -> (N*OH*OW, C*FH*FW): rows over (n, oy, ox), columns over (c, ky, kx)."""
    x = v.image_batch(input_data, "input_data")
    filter_h, filter_w, stride, pad = v.window_params(filter_h, filter_w, stride, pad)
    N, C, H, W = x.shape
    out_h, out_w = v.output_hw(H, W, filter_h, filter_w, stride, pad, arg="input_data")
    x = x.astype(v.compute_dtype(x), copy=False)
    win = _windows(_padded(x, pad), filter_h, filter_w, stride, out_h, out_w)
    col = win.transpose(0, 4, 5, 1, 2, 3).reshape(N * out_h * out_w, C * filter_h * filter_w)
    return np.ascontiguousarray(col)


def col2im(col, input_shape, filter_h, filter_w, stride=1, pad=0):
    """Adjoint of im2col: (N*OH*OW, C*FH*FW) -> (N, C, H, W), overlapping windows summed."""
    N, C, H, W = v.input_shape4(input_shape)
    filter_h, filter_w, stride, pad = v.window_params(filter_h, filter_w, stride, pad)
    out_h, out_w = v.output_hw(H, W, filter_h, filter_w, stride, pad, arg="input_shape")
    col = v.as_array(col, "col")
    if col.size != N * out_h * out_w * C * filter_h * filter_w:
        raise ValueError(f"col must have shape {(N * out_h * out_w, C * filter_h * filter_w)}, "
                         f"got {col.shape}")
    col = col.astype(v.compute_dtype(col), copy=False)
    win = col.reshape(N, out_h, out_w, C, filter_h, filter_w).transpose(0, 3, 4, 5, 1, 2)
    return np.ascontiguousarray(_add_windows(win, (N, C, H, W), stride, pad))


def max_pool_forward(x, pool_h, pool_w, stride=2, pad=0):
    """-> (out, arg_max), both (N, C, OH, OW); arg_max = ky*pool_w + kx of the window's max."""
    x, (pool_h, pool_w, stride, pad), (N, C, out_h, out_w) = v.pool_setup(x, pool_h, pool_w,
                                                                          stride, pad)
    x = x.astype(v.compute_dtype(x), copy=False)
    win = _windows(_padded(x, pad, -np.inf), pool_h, pool_w, stride, out_h, out_w)
    win = win.reshape(N, C, pool_h * pool_w, out_h, out_w)
    arg_max = np.argmax(win, axis=2)
    # A padded cell (-inf) can only tie for the lead when every real cell is -inf: take the first
    # real cell then, as the kernel does.
    real = _windows(_padded(np.ones((1, 1) + x.shape[2:], bool), pad, False), pool_h, pool_w,
                    stride, out_h, out_w).reshape(1, 1, pool_h * pool_w, out_h, out_w)
    chose_pad = ~np.take_along_axis(np.broadcast_to(real, win.shape), arg_max[:, :, None], 2)[:, :, 0]
    arg_max = np.where(chose_pad, np.argmax(real, axis=2), arg_max)
    out = np.take_along_axis(win, arg_max[:, :, None], axis=2)[:, :, 0]
    return np.ascontiguousarray(out), np.ascontiguousarray(arg_max.astype(np.intp))


def max_pool_backward(dout, arg_max, input_shape, pool_h, pool_w, stride=2, pad=0):
    """Route each dout to its window's max cell -> dx (N, C, H, W)."""
    dout, shape, params = v.pool_backward_setup(dout, input_shape, pool_h, pool_w, stride, pad)
    arg_max = v.pool_arg_max(arg_max, dout.shape, shape, params)
    pool_h, pool_w, stride, pad = params
    dout = dout.astype(v.compute_dtype(dout), copy=False)
    N, C, out_h, out_w = dout.shape
    win = np.zeros((N, C, pool_h * pool_w, out_h, out_w), dout.dtype)
    np.put_along_axis(win, arg_max[:, :, None], dout[:, :, None], axis=2)
    win = win.reshape(N, C, pool_h, pool_w, out_h, out_w)
    return np.ascontiguousarray(_add_windows(win, shape, stride, pad))


def avg_pool_forward(x, pool_h, pool_w, stride=2, pad=0):
    """Mean of each window, padding counted as zeros -> (N, C, OH, OW)."""
    x, (pool_h, pool_w, stride, pad), (N, C, out_h, out_w) = v.pool_setup(x, pool_h, pool_w,
                                                                          stride, pad)
    x = x.astype(v.compute_dtype(x), copy=False)
    win = _windows(_padded(x, pad), pool_h, pool_w, stride, out_h, out_w)
    return np.ascontiguousarray(win.mean(axis=(2, 3)))


def avg_pool_backward(dout, input_shape, pool_h, pool_w, stride=2, pad=0):
    """Spread each dout evenly over its window -> dx (N, C, H, W)."""
    dout, shape, (pool_h, pool_w, stride, pad) = v.pool_backward_setup(dout, input_shape, pool_h,
                                                                       pool_w, stride, pad)
    dout = dout.astype(v.compute_dtype(dout), copy=False)
    N, C, out_h, out_w = dout.shape
    win = np.broadcast_to((dout / (pool_h * pool_w))[:, :, None, None],
                          (N, C, pool_h, pool_w, out_h, out_w))
    return np.ascontiguousarray(_add_windows(win, shape, stride, pad))


def relu_forward(x):
    """-> (out, mask): mask = x <= 0, out = x with the masked cells set to 0 (the textbook's Relu)."""
    x = v.as_array(x, "x")
    mask = np.asarray(x <= 0)
    out = x.copy()
    out[mask] = 0
    return out, mask


def relu_backward(dout, mask):
    """dx = dout with the masked cells set to 0 (dout itself is not modified)."""
    dout = v.as_array(dout, "dout")
    mask = v.relu_mask(mask, dout.shape)
    dx = dout.copy()
    dx[mask] = 0
    return dx


def matmul(a, b):
    """a (M, K) @ b (K, N) -> (M, N), in float32 when both are float32, else float64."""
    a, b = v.matmul_operands(a, b)
    return a @ b


def conv_forward(x, W, b, stride=1, pad=0):
    """im2col(x) @ W.reshape(FN, -1).T + b, reshaped to (N, FN, OH, OW)."""
    x, W, stride, pad, (N, FN, out_h, out_w), dtype = v.conv_setup(x, W, stride, pad)
    b = v.bias_vector(b, FN, dtype)
    col = im2col(x.astype(dtype, copy=False), W.shape[2], W.shape[3], stride, pad)
    out = col @ W.astype(dtype, copy=False).reshape(FN, -1).T + b
    return np.ascontiguousarray(out.reshape(N, out_h, out_w, FN).transpose(0, 3, 1, 2))


def conv_backward(dout, x, W, stride=1, pad=0, *, need_dx=True):
    """-> (dx (N, C, H, W), dW (FN, C, FH, FW), db (FN,)) for conv_forward; dx None if not need_dx."""
    dout, x, W, _, stride, pad, (N, FN, out_h, out_w), dtype = v.conv_backward_setup(
        dout, x, W, None, stride, pad)
    W = W.astype(dtype, copy=False)
    d = dout.astype(dtype, copy=False).transpose(0, 2, 3, 1).reshape(-1, FN)
    col = im2col(x.astype(dtype, copy=False), W.shape[2], W.shape[3], stride, pad)
    db = d.sum(axis=0)
    dW = (col.T @ d).T.reshape(W.shape)
    dx = col2im(d @ W.reshape(FN, -1), x.shape, W.shape[2], W.shape[3], stride, pad) if need_dx \
        else None
    return dx, np.ascontiguousarray(dW), db


def conv_bias_relu_forward(x, W, b, stride=1, pad=0):
    """relu(conv_forward(x, W, b)), with the textbook Relu's rule (x <= 0 -> 0, NaN kept)."""
    out = conv_forward(x, W, b, stride, pad)
    out[out <= 0] = 0
    return out


def conv_bias_relu_backward(dout, x, W, out, stride=1, pad=0, *, need_dx=True):
    """Gradients of conv_bias_relu_forward given its output: dout is masked where out <= 0."""
    if out is None:
        raise TypeError("out must be the array conv_bias_relu_forward returned, got None")
    dout, x, W, out, stride, pad, _, dtype = v.conv_backward_setup(dout, x, W, out, stride, pad)
    d = np.where(out <= 0, 0, dout).astype(dtype, copy=False)
    return conv_backward(d, x, W, stride, pad, need_dx=need_dx)


def pad_replicate(x, pad):
    """(N, C, H, W) -> (N, C, H + 2*pad, W + 2*pad), the border copied from the nearest edge pixel."""
    x, pad = v.replicate_pad_setup(x, pad)
    x = x.astype(v.compute_dtype(x), copy=False)
    # (np.pad keeps a Fortran input's layout; the kernels promise C-contiguous outputs)
    return np.ascontiguousarray(np.pad(x, [(0, 0), (0, 0), (pad, pad), (pad, pad)], mode="edge"))


def pad_replicate_backward(dx_padded, pad):
    """Gradient of pad_replicate: each border cell's gradient added to the edge pixel it copied."""
    d, pad = v.replicate_pad_backward_setup(dx_padded, pad)
    d = d.astype(v.compute_dtype(d), order="C", copy=True)
    if pad == 0:
        return d
    d[..., pad] += d[..., :pad].sum(axis=-1)           # columns first, over every padded row
    d[..., -pad - 1] += d[..., -pad:].sum(axis=-1)
    d = d[..., pad:-pad]
    d[..., pad, :] += d[..., :pad, :].sum(axis=-2)     # then rows
    d[..., -pad - 1, :] += d[..., -pad:, :].sum(axis=-2)
    return np.ascontiguousarray(d[..., pad:-pad, :])


# --------------------------------------------------------------------------- per-channel batch norm

def _planes(x, dtype):
    """(N, C, H, W) or (N, C) -> (N, C, L) of dtype, L = H*W (1 for a 2-D input)."""
    return x.astype(dtype, copy=False).reshape(x.shape[0], x.shape[1], int(np.prod(x.shape[2:])))


def channel_stats(x):
    """Per channel mean and biased variance of x (N, C, H, W) or (N, C) over N, H, W: float64 (C,)."""
    x = v.channel_stats_input(x)
    x3 = _planes(x, np.float64)
    mean = x3.mean(axis=(0, 2))
    var = ((x3 - mean[:, None]) ** 2).mean(axis=(0, 2))
    return mean, var


def batchnorm2d_normalize(x, mean, scale, shift):
    """out = (x - mean[c]) * scale[c] + shift[c] per channel c, computed in float64; shape of x, dtype as
    compute_dtype(x)."""
    x, mean, scale, shift = v.batchnorm_normalize_setup(x, mean, scale, shift)
    dtype = v.compute_dtype(x)
    out = (_planes(x, np.float64) - mean[:, None]) * scale[:, None] + shift[:, None]
    return np.ascontiguousarray(out.reshape(x.shape), dtype=dtype)


def batchnorm2d_backward(dout, x, mean, std, gamma):
    """Gradients of out = gamma * (x - mean) / std + beta, mean and std being x's batch statistics
    (std = sqrt(var + eps)): -> (dx, dgamma, dbeta); dtype as compute_dtype(dout, x)."""
    dout, x, mean, std, gamma = v.batchnorm_backward_setup(dout, x, mean, std, gamma)
    dtype = v.compute_dtype(dout, x)
    d3, x3 = _planes(dout, np.float64), _planes(x, np.float64)
    M = d3.shape[0] * d3.shape[2]
    xc = x3 - mean[:, None]
    dbeta = d3.sum(axis=(0, 2))
    dot = (d3 * xc).sum(axis=(0, 2))
    dgamma = dot / std
    if M == 0:
        dx = np.zeros(x.shape, dtype)
    else:
        dx = (gamma / std)[:, None] * (d3 - (dbeta / M)[:, None] - xc * (dot / (M * std**2))[:, None])
    return (np.ascontiguousarray(dx.reshape(x.shape), dtype=dtype), dgamma.astype(dtype),
            dbeta.astype(dtype))
