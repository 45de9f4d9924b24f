"""Weight initialisation (Xavier, He) and parameter counting.

Initial weights are ``std * np.random.randn(*shape)``: one call on the global RNG per weight array, in
the textbook's order, so ``np.random.seed(k)`` reproduces a textbook network. Biases are zeros.
"""
import math
import numbers

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def xavier_std(fan_in):
    """Xavier (Glorot) standard deviation for sigmoid/tanh layers: sqrt(1 / fan_in)."""
    return math.sqrt(1.0 / fan_in)


def he_std(fan_in):
    """He standard deviation for ReLU layers: sqrt(2 / fan_in)."""
    return math.sqrt(2.0 / fan_in)


def fan_in(shape):
    """Inputs feeding one output unit: D for an Affine W (D, M), C*FH*FW for a conv W (FN, C, FH, FW)."""
    if len(shape) == 4:
        return shape[1] * shape[2] * shape[3]
    return shape[0]


def init_std(weight_init_std, fan_in):
    """Resolve a textbook ``weight_init_std``: a number is the std itself; 'relu'/'he' (any case) give
    he_std(fan_in), 'sigmoid'/'xavier' give xavier_std(fan_in)."""
    name = str(weight_init_std).lower()
    if name in ("relu", "he"):
        return he_std(fan_in)
    if name in ("sigmoid", "xavier"):
        return xavier_std(fan_in)
    if (isinstance(weight_init_std, (str, bool)) or not isinstance(weight_init_std, numbers.Real)
            or not math.isfinite(weight_init_std) or weight_init_std < 0):
        raise ValueError(f"weight_init_std must be a finite number >= 0, 'relu'/'he' or "
                         f"'sigmoid'/'xavier', got {weight_init_std!r}")
    return weight_init_std


def float_dtype(dtype):
    """Check a network's parameter dtype: float32 or float64."""
    dt = np.dtype(dtype)
    if dt not in FLOAT_DTYPES:
        raise TypeError(f"dtype must be float32 or float64, got {dt}")
    return dt


def gaussian(shape, std, dtype=np.float64):
    """std * np.random.randn(*shape) (one RNG call, computed in float64), as dtype."""
    return (std * np.random.randn(*shape)).astype(dtype, copy=False)


def count_params(network_or_params):
    """Number of scalar parameters of a network (anything with ``params``) or of a params dict."""
    params = getattr(network_or_params, "params", network_or_params)
    return int(sum(np.size(value) for value in params.values()))
