"""Activation and loss functions: a drop-in for the textbook's ``common/functions.py``.

Stateless NumPy functions. Results follow NumPy's dtype promotion of the inputs (float32 stays float32).
Textbook functions come first, then cnncore's extensions (leaky ReLU, GELU) with their gradients.
"""
import math

import numpy as np

# ``from common.functions import *`` also hands out ``np``; code in the wild relies on it.
__all__ = [
    "identity_function", "step_function", "sigmoid", "sigmoid_grad", "relu", "relu_grad", "softmax",
    "sum_squared_error", "mean_squared_error", "cross_entropy_error", "softmax_loss",
    "leaky_relu", "leaky_relu_grad", "gelu", "gelu_grad", "np",
]


def identity_function(x):
    """Return x itself (the output activation of a regression network)."""
    return x


def step_function(x):
    """1 where x > 0, else 0, as an int array of x's shape."""
    return np.array(x > 0, dtype=int)


def sigmoid(x):
    """1 / (1 + exp(-x)), elementwise.

    Very negative x overflows exp(-x) to inf and gives exactly 0, as in the textbook; the overflow
    warning is silenced since the result is right.
    """
    with np.errstate(over="ignore"):
        return 1 / (1 + np.exp(-x))


def sigmoid_grad(x):
    """Derivative of sigmoid at x: (1 - sigmoid(x)) * sigmoid(x)."""
    s = sigmoid(x)
    return (1.0 - s) * s


def relu(x):
    """max(0, x), elementwise."""
    return np.maximum(0, x)


def relu_grad(x):
    """Derivative of relu: 1 where x >= 0 (note: 1 at 0, unlike the Relu layer), else 0; x's dtype."""
    grad = np.zeros_like(x)
    grad[x >= 0] = 1
    return grad


def softmax(x):
    """Softmax over the last axis (max subtracted first, so large inputs do not overflow).

    x (..., K) -> (..., K), each slice along the last axis summing to 1.
    """
    x = x - np.max(x, axis=-1, keepdims=True)
    e = np.exp(x)
    return e / np.sum(e, axis=-1, keepdims=True)


def sum_squared_error(y, t):
    """0.5 * sum((y - t)**2) over all elements: a sum, not a mean."""
    return 0.5 * np.sum((y - t) ** 2)


# The Korean edition's name for the same function (still 0.5 * a sum, not a mean).
mean_squared_error = sum_squared_error


def cross_entropy_error(y, t):
    """Batch mean of -log(y[n, t_n] + 1e-7).

    y: (N, K) probabilities, or (K,) for one sample. t: one-hot (same size as y) or integer labels
    (N,) of any integer dtype (uint8 MNIST labels work). The 1e-7 inside the log keeps log(0) finite.
    Labels shaped (N, 1) are flattened (the textbook only handled them for N = 1 and silently
    broadcast to an N x N index otherwise). Labels must be integers in [0, K), one per row of y
    (ValueError naming ``t`` otherwise; the textbook read -1 as the last class).
    """
    t = np.asarray(t)
    if y.ndim == 1:
        t = t.reshape(1, t.size)
        y = y.reshape(1, y.size)
    if t.size == y.size:  # one-hot
        t = t.argmax(axis=1)
    batch_size = y.shape[0]
    if t.ndim > 1 and t.size == batch_size:
        t = t.reshape(batch_size)
    _check_labels(t, y.shape)
    return -np.sum(np.log(y[np.arange(batch_size), t] + 1e-7)) / batch_size


def _check_labels(t, y_shape):
    N, K = y_shape[0], y_shape[-1]
    if t.shape != (N,):
        raise ValueError(f"t must be one-hot like y {tuple(y_shape)} or hold {N} labels, got "
                         f"shape {t.shape}")
    if t.dtype.kind not in "iu":
        raise ValueError(f"t must hold integer class labels, got dtype {t.dtype}")
    if N and (t.min() < 0 or t.max() >= K):
        raise ValueError(f"t must hold class labels in [0, {K}), got values from {t.min()} to "
                         f"{t.max()}")


def softmax_loss(X, t):
    """cross_entropy_error(softmax(X), t)."""
    return cross_entropy_error(softmax(X), t)


# ------------------------------------------------------------------------------ cnncore extensions

def leaky_relu(x, alpha=0.01):
    """x where x > 0, else alpha * x."""
    return np.where(x > 0, x, alpha * x)


def leaky_relu_grad(x, alpha=0.01):
    """Derivative of leaky_relu: 1 where x > 0, else alpha (alpha at 0, like the layers), x's dtype."""
    x = np.asarray(x)
    return np.where(x > 0, 1, alpha).astype(np.result_type(x, 1.0), copy=False)


_GELU_C = math.sqrt(2.0 / math.pi)


def gelu_tanh(x):
    """tanh(sqrt(2/pi)*(x + 0.044715*x**3)), the inner term of gelu and gelu_grad (x*x*x, not x**3:
    NumPy's float32 power is a slow generic path)."""
    x = _float_array(x)
    inner = np.multiply(x, x, out=np.empty_like(x))
    inner *= 0.044715
    inner += 1
    inner *= x
    inner *= _GELU_C
    return np.tanh(inner, out=inner)


def gelu(x, tanh=None):
    """GELU, tanh approximation: 0.5*x*(1 + tanh(sqrt(2/pi)*(x + 0.044715*x**3))).

    This is PyTorch's ``gelu(approximate='tanh')``; it differs from the exact erf form by < 1e-3.
    ``tanh``: gelu_tanh(x) when already computed.
    """
    x = _float_array(x)
    th = gelu_tanh(x) if tanh is None else tanh
    out = np.add(th, 1, out=np.empty_like(x))
    out *= x
    out *= 0.5
    return out[()] if out.ndim == 0 else out


def gelu_grad(x, tanh=None):
    """Derivative of the tanh-approximated gelu at x (``tanh``: gelu_tanh(x) when known)."""
    x = _float_array(x)
    th = gelu_tanh(x) if tanh is None else tanh
    # 0.5*(1 + th) + 0.5*x*(1 - th**2)*c*(1 + 3*0.044715*x**2)
    inner = np.multiply(x, x, out=np.empty_like(x))
    inner *= 3 * 0.044715
    inner += 1
    inner *= x
    inner *= 0.5 * _GELU_C
    sech2 = th * th
    np.subtract(1, sech2, out=sech2)
    inner *= sech2
    inner += 0.5
    inner += 0.5 * th
    return inner[()] if inner.ndim == 0 else inner


def _float_array(x):
    """x as an array of its float dtype (other dtypes in float64, as the textbook computes)."""
    x = np.asarray(x)
    return x if x.dtype.kind == "f" else x.astype(np.float64)
