"""The textbook's ``common/util.py``: im2col/col2im (compiled), output size, shuffling, smoothing.

``im2col`` and ``col2im`` are the compiled kernels of cnncore.kernels (the textbook's exact layout; see
their docstrings). Unlike the textbook's, they keep float32 as float32.
"""
import numpy as np

from .kernels import col2im, im2col

__all__ = ["smooth_curve", "shuffle_dataset", "conv_output_size", "im2col", "col2im", "np"]


def smooth_curve(x):
    """Smooth a loss curve for plotting: a Kaiser-window (length 11, beta 2) moving average.

    x (L,) -> (L,). The ends are padded by reflection as the textbook does (mirror without the edge
    sample on the left, with it on the right), so for L >= 11 the numbers are the textbook's.
    """
    x = np.asarray(x, dtype=float)
    if x.size == 0:
        return x.copy()
    half = 5  # window_len // 2
    s = np.concatenate([np.pad(x, (half, 0), mode="reflect")[:half], x,
                        np.pad(x, (0, half), mode="symmetric")[-half:]])
    w = np.kaiser(2 * half + 1, 2)
    return np.convolve(w / w.sum(), s, mode="valid")


def shuffle_dataset(x, t):
    """Shuffle x and t with one ``np.random.permutation(len(x))`` (the textbook's RNG call).

    x: (N, ...) data (the textbook handled 2-D and 4-D; any ndim works here), t: (N, ...) labels.
    Returns new arrays; the inputs are untouched.
    """
    x, t = np.asarray(x), np.asarray(t)
    if x.ndim == 0 or t.ndim == 0 or x.shape[0] != t.shape[0]:
        raise ValueError(f"x and t must have the same first dimension, got shapes {x.shape} and "
                         f"{t.shape}")
    permutation = np.random.permutation(x.shape[0])
    return x[permutation], t[permutation]


def conv_output_size(input_size, filter_size, stride=1, pad=0):
    """(input_size + 2*pad - filter_size) / stride + 1 with true division, as in the textbook.

    Returns a float that is NOT floored: conv_output_size(28, 5, 2) == 12.5, while the layers produce
    12. Kept for compatibility; ``cnncore.output_size`` gives the floored size the layers use.
    """
    return (input_size + 2 * pad - filter_size) / stride + 1
