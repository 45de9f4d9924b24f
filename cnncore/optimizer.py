"""Optimizers: a drop-in for the textbook's ``common/optimizer.py``.

Each has ``update(params, grads)``, which walks ``params.keys()`` and updates every ``params[key]``
*in place* (augmented assignment), so the layers holding those arrays see the new values. State
(``v``, ``h``, ``m``) is created on the first call, keyed like ``params``. Values may also be Python
floats (as in ch06's naive comparison), which augmented assignment rebinds. The formulas are the
textbook's, down to the order of operations; float32 parameters stay float32. Hyperparameters are
checked on construction (ValueError naming the argument).

``update`` is all or nothing: every gradient is checked first (present, the parameter's shape, real
numbers) and every parameter array (writeable), so a bad one raises (KeyError, ValueError,
TypeError) with no parameter or state changed.
"""
import math
import numbers

import numpy as np

from . import kernels as _kernels


def _real(value, name):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return value


def _positive(value, name):
    if _real(value, name) <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return value


def _fraction(value, name):
    """A decay factor: 0 <= value < 1."""
    if not 0 <= _real(value, name) < 1:
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")
    return value


def _check_grads(params, grads):
    for key, param in params.items():
        if key not in grads:
            raise KeyError(f"grads has no entry for parameter {key!r}")
        grad = np.asarray(grads[key])
        if grad.shape != np.shape(param):
            raise ValueError(f"grads[{key!r}] must have the shape of params[{key!r}] "
                             f"{np.shape(param)}, got {grad.shape}")
        if grad.dtype.kind not in "fiu":
            raise TypeError(f"grads[{key!r}] must hold real numbers, got dtype {grad.dtype}")
        if isinstance(param, np.ndarray) and not param.flags.writeable:
            raise ValueError(f"params[{key!r}] is read-only: it cannot be updated in place")


def _zeros_like_each(params):
    return {key: np.zeros_like(val) for key, val in params.items()}


class SGD:
    """Stochastic gradient descent: p -= lr * g."""

    def __init__(self, lr=0.01):
        self.lr = _positive(lr, "lr")

    def update(self, params, grads):
        _check_grads(params, grads)
        for key in params.keys():
            params[key] -= self.lr * grads[key]


class Momentum:
    """Momentum SGD: v = momentum*v - lr*g; p += v."""

    def __init__(self, lr=0.01, momentum=0.9):
        self.lr = _positive(lr, "lr")
        self.momentum = _fraction(momentum, "momentum")
        self.v = None

    def update(self, params, grads):
        _check_grads(params, grads)
        if self.v is None:
            self.v = _zeros_like_each(params)
        for key in params.keys():
            self.v[key] = self.momentum * self.v[key] - self.lr * grads[key]
            params[key] += self.v[key]


class Nesterov:
    """Nesterov's accelerated gradient (http://arxiv.org/abs/1212.0901), in the Japanese edition's order.

    Default (Japanese edition since 2021): p += momentum**2 * v - (1 + momentum)*lr*g with the *old* v,
    then v = momentum*v - lr*g. ``legacy=True`` gives the earlier order, which the Korean edition still
    has: v is updated first and the parameter step uses the new v (different numbers).
    """

    def __init__(self, lr=0.01, momentum=0.9, legacy=False):
        self.lr = _positive(lr, "lr")
        self.momentum = _fraction(momentum, "momentum")
        self.legacy = bool(legacy)
        self.v = None

    def update(self, params, grads):
        _check_grads(params, grads)
        if self.v is None:
            self.v = _zeros_like_each(params)
        for key in params.keys():
            if self.legacy:
                self._update_v(key, grads)
            params[key] += self.momentum * self.momentum * self.v[key]
            params[key] -= (1 + self.momentum) * self.lr * grads[key]
            if not self.legacy:
                self._update_v(key, grads)

    def _update_v(self, key, grads):
        self.v[key] *= self.momentum
        self.v[key] -= self.lr * grads[key]


class AdaGrad:
    """AdaGrad: h += g*g; p -= lr * g / (sqrt(h) + 1e-7)."""

    def __init__(self, lr=0.01):
        self.lr = _positive(lr, "lr")
        self.h = None

    def update(self, params, grads):
        _check_grads(params, grads)
        if self.h is None:
            self.h = _zeros_like_each(params)
        for key in params.keys():
            self.h[key] += grads[key] * grads[key]
            params[key] -= self.lr * grads[key] / (np.sqrt(self.h[key]) + 1e-7)


class RMSprop:
    """RMSprop: h = decay_rate*h + (1 - decay_rate)*g*g; p -= lr * g / (sqrt(h) + 1e-7)."""

    def __init__(self, lr=0.01, decay_rate=0.99):
        self.lr = _positive(lr, "lr")
        self.decay_rate = _fraction(decay_rate, "decay_rate")
        self.h = None

    def update(self, params, grads):
        _check_grads(params, grads)
        if self.h is None:
            self.h = _zeros_like_each(params)
        for key in params.keys():
            self.h[key] *= self.decay_rate
            self.h[key] += (1 - self.decay_rate) * grads[key] * grads[key]
            params[key] -= self.lr * grads[key] / (np.sqrt(self.h[key]) + 1e-7)


class Adam:
    """Adam (http://arxiv.org/abs/1412.6980v8), exactly as the textbook computes it.

    iter += 1; lr_t = lr * sqrt(1 - beta2**iter) / (1 - beta1**iter);
    m += (1 - beta1)*(g - m); v += (1 - beta2)*(g**2 - v); p -= lr_t * m / (sqrt(v) + 1e-7).
    The bias correction is folded into lr_t and the 1e-7 is added after the square root of the
    *uncorrected* v, so results differ slightly from the paper's placement of epsilon (kept on purpose:
    textbook runs reproduce). Attributes: ``iter`` (steps taken), ``m``, ``v``.

    Parameters that are float32 or float64 arrays with gradients of their own dtype (what the
    networks hold) are updated by one compiled pass each (kernels.adam_update, the same numbers to
    the bit); anything else, and every parameter when ``compiled`` is set to False, by the textbook's
    NumPy statements.
    """

    compiled = True

    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999):
        self.lr = _positive(lr, "lr")
        self.beta1 = _fraction(beta1, "beta1")
        self.beta2 = _fraction(beta2, "beta2")
        self.iter = 0
        self.m = None
        self.v = None

    def update(self, params, grads):
        _check_grads(params, grads)
        if self.m is None:
            self.m = _zeros_like_each(params)
            self.v = _zeros_like_each(params)
        self.iter += 1
        # A Python float, so float32 parameters are updated in float32.
        lr_t = self.lr * math.sqrt(1.0 - self.beta2 ** self.iter) / (1.0 - self.beta1 ** self.iter)
        for key in params.keys():
            if self.compiled and _kernels.adam_fits(params[key], grads[key], self.m[key],
                                                    self.v[key]):
                _kernels._adam_pass(params[key], grads[key], self.m[key], self.v[key], lr_t,
                                    self.beta1, self.beta2)
                continue
            self.m[key] += (1 - self.beta1) * (grads[key] - self.m[key])
            self.v[key] += (1 - self.beta2) * (grads[key] ** 2 - self.v[key])
            params[key] -= lr_t * self.m[key] / (np.sqrt(self.v[key]) + 1e-7)
