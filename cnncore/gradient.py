"""Numerical gradients by central differences: the textbook's ``common/gradient.py``.

These exist to check backpropagation. They perturb ``x`` *in place*, one element at a time, and call
``f(x)``; network closures ignore their argument and read the (perturbed) parameters, which are the very
arrays being perturbed. Every element is restored afterwards, even if ``f`` raises.

Use float64 arrays: with h = 1e-4 a float32 difference is only good to about 1e-3 relative.
"""
import numpy as np

_H = 1e-4


def numerical_gradient(f, x):
    """Gradient of the scalar function f at x, for an x of any shape.

    grad[i] = (f(x + h*e_i) - f(x - h*e_i)) / (2*h) with h = 1e-4. x must be a writable float ndarray;
    its values are restored exactly. Returns a float64 array of x's shape.
    """
    if not isinstance(x, np.ndarray) or x.dtype.kind != "f":
        got = f"dtype {x.dtype}" if isinstance(x, np.ndarray) else type(x).__name__
        raise TypeError(f"x must be a float ndarray (it is perturbed in place), got {got}")
    grad = np.zeros(x.shape, np.float64)
    it = np.nditer(x, flags=["multi_index"], op_flags=["readwrite"])
    while not it.finished:
        idx = it.multi_index
        tmp_val = x[idx]
        try:
            x[idx] = tmp_val + _H
            fxh1 = f(x)
            x[idx] = tmp_val - _H
            fxh2 = f(x)
        finally:
            x[idx] = tmp_val
        grad[idx] = (fxh1 - fxh2) / (2 * _H)
        it.iternext()
    return grad


def _numerical_gradient_1d(f, x):
    """numerical_gradient for a 1-D x (the textbook's ch04 helper)."""
    return numerical_gradient(f, x)


def numerical_gradient_2d(f, X):
    """Row by row: f is called with one row of X at a time (ch04's gradient_2d.py relies on it).

    X (D,) or (N, D) -> gradient of the same shape (float64).
    """
    if X.ndim == 1:
        return _numerical_gradient_1d(f, X)
    grad = np.zeros(X.shape, np.float64)
    for idx, x in enumerate(X):
        grad[idx] = _numerical_gradient_1d(f, x)
    return grad
