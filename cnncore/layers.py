"""Layers: a drop-in for the textbook's ``common/layers.py``, with compiled convolution and pooling.

A layer is a small class: ``__init__`` stores hyperparameters and sets the caches to None, ``forward``
computes and caches what ``backward`` needs, ``backward(dout)`` returns dx and stores parameter
gradients (``dW``, ``db``, ``dgamma``, ``dbeta``). One layer object belongs at one place in a network.

Parameters are held by reference and read at every call, never copied: a network's ``params[key]`` *is*
``layer.W``, optimizers update it in place, and ``load_params`` may rebind ``layer.W`` at any time.

dtype: layers with weights compute in float32 only when the input and the weights are both float32,
else in float64 (so textbook code, with float64 weights and float32 MNIST images, computes in float64
and gets the textbook's numbers). Elementwise layers keep the input's dtype. Outputs are C-contiguous.

Errors: ``backward`` before the first ``forward`` raises RuntimeError ("backward() called before
forward()") instead of failing somewhere inside (the textbook's AttributeError, or Relu's silently
unchanged ``dout``). An empty batch (N = 0) gives empty results of the right shapes.

``from cnncore.layers import *`` gives what ``from common.layers import *`` gives: the layer classes,
every name of cnncore.functions, im2col, col2im and np; plus cnncore's extension layers.
"""
import math

import numpy as np

from . import _validate
from . import kernels as _kernels
from ._validate import as_array as _as_array
from ._validate import check_int as _check_int
from ._validate import check_real as _check_real
from ._validate import compute_dtype as _compute_dtype
from ._validate import output_size as _output_size
from .functions import *  # noqa: F403  (re-exported, as the textbook's star import does)
from .functions import __all__ as _functions_all
from .functions import cross_entropy_error, gelu, gelu_grad, gelu_tanh, sigmoid, softmax
from .util import col2im, im2col

__all__ = [
    "Layer", "Relu", "Sigmoid", "Affine", "SoftmaxWithLoss", "Dropout", "BatchNormalization", "Convolution",
    "Pooling",
    # cnncore extensions
    "ConvReLU", "AvgPooling", "GlobalAvgPooling", "LeakyReLU", "GELU", "Flatten",
    "SpatialBatchNormalization",
    *_functions_all, "im2col", "col2im",
]

# The textbook writes this 10e-7, which is the same number.
_BN_EPS = 1e-6

PADDING_MODES = ("zeros", "replicate")


def _window_out(layer, input_shape, FH, FW):
    """(OH, OW) of a window sweep over a (C, H, W) sample, refusing sizes below 1."""
    _, H, W = input_shape
    OH = _output_size(H, FH, layer.stride, layer.pad)
    OW = _output_size(W, FW, layer.stride, layer.pad)
    if OH < 1 or OW < 1:
        raise _shape_error(layer, input_shape, f"a {FH}x{FW} window with stride {layer.stride} "
                                               f"and pad {layer.pad} leaves an output of {OH}x{OW}")
    return OH, OW


def _dtype_of(*arrays):
    """The compute dtype for these inputs: float32 if all are float32, else float64."""
    return _compute_dtype(*(np.asarray(a) for a in arrays))


def _rows(x):
    """x (N, ...) -> (N, D), as the textbook's ``x.reshape(N, -1)`` but also for N = 0."""
    return x.reshape(x.shape[0], math.prod(x.shape[1:]))


def _forward_done(layer, cache, forward="forward()"):
    """Raise RuntimeError when the cache backward needs is still None (no forward yet)."""
    if cache is None:
        raise RuntimeError(f"{type(layer).__name__}.backward() called before {forward}")


def _check_weight(W, name, ndim):
    """A layer's weight must be a real array of ndim axes (checked when the layer is made)."""
    if not isinstance(W, np.ndarray) or W.ndim != ndim or W.dtype.kind != "f":
        raise TypeError(f"{name} must be a float ndarray with {ndim} axes, got "
                        f"{type(W).__name__} {getattr(W, 'dtype', '')} of shape {np.shape(W)}")


def _check_bias(b, size, name, of):
    """A bias-like vector must hold one value per output (a scalar bias broadcasts, as in NumPy)."""
    shape = np.shape(b)
    if shape not in ((size,), ()):
        raise ValueError(f"{name} must have {size} entries (one per {of}), got shape {shape}")


def _shape_error(layer, input_shape, why):
    return ValueError(f"{type(layer).__name__} cannot take an input of shape {tuple(input_shape)} "
                      f"(one sample): {why}")


class Layer:
    """The contract every layer follows; networks, export and data parallelism rely on it.

    - ``forward(x, train_flg=True)`` and ``backward(dout)``; layers without a training mode ignore
      ``train_flg``.
    - ``param_names``: the attributes holding trained arrays; ``grad_names``: where ``backward``
      stores their gradients, in the same order (``("W", "b")`` and ``("dW", "db")``).
    - ``buffer_names``: state that is not trained but is needed to predict (BatchNorm's running
      statistics); a layer with buffers has ``init_buffers()`` (create them as its first forward
      would) and ``check_buffer(name, value, key)`` (refuse a value it cannot predict with).
    - ``output_shape(input_shape)``: the shape of one output sample for one input sample (no batch
      axis), raising ValueError when the layer cannot take that input.
    - ``config()``: the constructor's hyperparameters as plain JSON values (no arrays), so that
      ``type(layer)(**params, **config())`` builds the layer again.
    - ``key_prefix``: the textbook's key for the layer in a network (``Conv`` for ``Conv1``).
    """

    param_names = ()
    grad_names = ()
    buffer_names = ()
    key_prefix = None

    def output_shape(self, input_shape):
        return tuple(input_shape)

    def config(self):
        return {}


class Relu(Layer):
    """ReLU: x where x > 0, else 0.  Shape: any -> same; dtype of x.

    Attribute ``mask``: bool array ``x <= 0`` of the last forward; the gradient there is 0 (also at
    exactly 0, where ``relu_grad`` says 1). NaN passes through.

    ``backward`` returns a new array and leaves ``dout`` untouched. (The textbook zeroed ``dout`` in
    place and returned that same object; no textbook caller reuses its ``dout``, so only the object
    identity differs, and a caller may now pass a read-only or reused ``dout``.)
    float32 and float64 run the compiled kernels (``kernels`` as in Convolution).
    """

    kernels = _kernels

    key_prefix = "Relu"

    def __init__(self):
        self._mask = None
        self._fused_out = None   # set when a network ran this Relu fused with the conv before it

    @property
    def mask(self):
        if self._mask is None and self._fused_out is not None:
            self._mask = self._fused_out <= 0
        return self._mask

    @mask.setter
    def mask(self, value):
        self._mask, self._fused_out = value, None

    def forward(self, x, train_flg=True):
        out, self.mask = self.kernels.relu_forward(x)
        return out

    def backward(self, dout):
        _forward_done(self, self.mask)
        return self.kernels.relu_backward(dout, self.mask)


class Sigmoid(Layer):
    """Sigmoid: 1 / (1 + exp(-x)).  Shape: any -> same.  Attribute ``out``: the last output."""

    key_prefix = "Sigmoid"

    def __init__(self):
        self.out = None

    def forward(self, x, train_flg=True):
        self.out = sigmoid(x)
        return self.out

    def backward(self, dout):
        _forward_done(self, self.out)
        return dout * (1.0 - self.out) * self.out


class Affine(Layer):
    """Fully connected layer: x2d @ W + b.

    Shapes: x (N, ...) is flattened to x2d (N, D); W (D, M); b (M,); out (N, M). ``backward`` returns
    dx in the original shape, so a pooled (N, C, H, W) tensor goes straight in.
    Attributes: ``W``, ``b`` (references), ``x`` (x2d as computed with), ``original_x_shape``,
    ``dW`` (D, M), ``db`` (M,). x must hold real numbers (TypeError for complex, bool, object).
    The products run on ``kernels.matmul`` (``kernels`` as in Convolution), on cnncore's threads, so
    a network never wakes BLAS's own thread pool.
    """

    kernels = _kernels
    param_names = ("W", "b")
    grad_names = ("dW", "db")
    key_prefix = "Affine"

    def __init__(self, W, b):
        _check_weight(W, "W", 2)
        _check_bias(b, W.shape[1], "b", "W.shape[1]")
        self.W = W
        self.b = b
        self.x = None
        self.original_x_shape = None
        self.dW = None
        self.db = None

    def output_shape(self, input_shape):
        D = math.prod(input_shape)
        if D != self.W.shape[0]:
            raise _shape_error(self, input_shape, f"it flattens to {D} features but W has "
                                                  f"{self.W.shape[0]} rows")
        return (self.W.shape[1],)

    def forward(self, x, train_flg=True):
        x = _as_array(x, "x")
        if x.ndim == 0 or math.prod(x.shape[1:]) != self.W.shape[0]:
            raise ValueError(f"x must be (N, ...) with {self.W.shape[0]} values per sample (W is "
                             f"{self.W.shape}), got shape {x.shape}")
        self.original_x_shape = x.shape
        x = _rows(x)
        self.x = x.astype(_dtype_of(x, self.W), copy=False)
        out = self.kernels.matmul(self.x, self.W)
        out += self.b
        return out

    def backward(self, dout):
        _forward_done(self, self.x)
        dout = _as_array(dout, "dout")
        out_shape = (self.x.shape[0], self.W.shape[1])
        if dout.shape != out_shape:
            raise ValueError(f"dout must have the forward output's shape {out_shape}, got {dout.shape}")
        dx = self.kernels.matmul(dout, self.W.T)
        self.dW = self.kernels.matmul(self.x.T, dout)
        self.db = np.sum(dout, axis=0)
        return dx.reshape(self.original_x_shape)


class SoftmaxWithLoss(Layer):
    """Softmax followed by the cross-entropy loss (batch mean, 1e-7 inside the log).

    ``forward(x, t)``: x (N, K) scores; t one-hot (N, K) or integer labels (N,) of any integer dtype.
    Returns the loss (a NumPy scalar). Attributes: ``loss``, ``y`` (softmax output), ``t`` (as given).

    ``backward(dout=1)`` ignores ``dout``, as in the textbook (every caller passes 1; scaling by it now
    would silently change the results of anyone passing something else). Returns (y - onehot(t)) / N.
    """

    key_prefix = "SoftmaxWithLoss"

    def __init__(self):
        self.loss = None
        self.y = None
        self.t = None

    def forward(self, x, t):
        self.t = t
        self.y = softmax(x)
        self.loss = cross_entropy_error(self.y, self.t)
        return self.loss

    def backward(self, dout=1):
        _forward_done(self, self.y, "forward(x, t)")
        batch_size = self.t.shape[0]
        if self.t.size == self.y.size:  # one-hot
            return (self.y - np.asarray(self.t, self.y.dtype)) / batch_size
        t = self.t.reshape(batch_size) if self.t.ndim > 1 else self.t
        dx = self.y.copy()
        dx[np.arange(batch_size), t] -= 1
        return dx / batch_size


class Dropout(Layer):
    """Vanilla dropout (http://arxiv.org/abs/1207.0580): drop in training, scale at test time.

    ``forward(x, train_flg=True)``: training draws ``mask = np.random.rand(*x.shape) > dropout_ratio``
    (the global RNG, as the textbook) and returns ``x * mask`` without rescaling; inference returns
    ``x * (1 - dropout_ratio)``. This is not PyTorch's inverted dropout: the textbook's trained
    DeepConvNet weights expect this scaling. Shape: any -> same.
    """

    key_prefix = "Dropout"

    def __init__(self, dropout_ratio=0.5):
        self.dropout_ratio = _check_real(dropout_ratio, "dropout_ratio", 0, 1, below_high=True)
        self.mask = None

    def config(self):
        return {"dropout_ratio": self.dropout_ratio}

    def forward(self, x, train_flg=True):
        if train_flg:
            self.mask = np.random.rand(*x.shape) > self.dropout_ratio
            return x * self.mask
        return x * (1.0 - self.dropout_ratio)

    def backward(self, dout):
        _forward_done(self, self.mask, "forward(x, train_flg=True)")
        return dout * self.mask


class BatchNormalization(Layer):
    """Batch normalization (http://arxiv.org/abs/1502.03167), the textbook's version.

    Any input (N, ...) is flattened to (N, D) and normalised per feature, so for a conv activation
    (N, C, H, W) the statistics are per C*H*W element, not per channel, and ``gamma``/``beta`` have D
    elements (per-channel BN is ``SpatialBatchNormalization``). Output has the input's shape.

    Training: ``xn = (x - mean) / sqrt(var + 1e-6)`` with the batch's biased variance; running
    statistics ``running = momentum * running + (1 - momentum) * batch`` (momentum 0.9 keeps 90 % of the
    old value). Inference uses the running statistics; they start at zeros on the first forward, so
    before any training step inference divides by sqrt(1e-6), as in the textbook. An empty batch
    has no statistics: it is normalised with the running ones, which it leaves unchanged.
    Attributes: ``gamma``, ``beta`` (references), ``momentum``, ``input_shape``, ``running_mean``,
    ``running_var``, ``batch_size``, ``xc``, ``xn``, ``std``, ``dgamma``, ``dbeta``.
    """

    param_names = ("gamma", "beta")
    grad_names = ("dgamma", "dbeta")
    buffer_names = ("running_mean", "running_var")
    key_prefix = "BatchNorm"

    def __init__(self, gamma, beta, momentum=0.9, running_mean=None, running_var=None):
        _check_weight(gamma, "gamma", 1)
        _check_bias(beta, gamma.shape[0], "beta", "gamma")
        _check_real(momentum, "momentum", 0, 1)
        for name, stat in (("running_mean", running_mean), ("running_var", running_var)):
            if stat is not None and np.shape(stat) != gamma.shape:
                raise ValueError(f"{name} must have gamma's shape {gamma.shape}, got "
                                 f"{np.shape(stat)}")
        self.gamma = gamma
        self.beta = beta
        self.momentum = momentum
        self.input_shape = None
        self.running_mean = running_mean
        self.running_var = running_var
        self.batch_size = None
        self.xc = None
        self.xn = None
        self.std = None
        self.dgamma = None
        self.dbeta = None

    def config(self):
        return {"momentum": float(self.momentum)}

    def features(self, input_shape):
        """How many statistics (and gamma entries) an input of this per-sample shape needs."""
        return math.prod(input_shape)

    def output_shape(self, input_shape):
        D = self.features(input_shape)
        if D != self.gamma.shape[0]:
            raise _shape_error(self, input_shape, f"it needs {D} gamma entries, gamma has "
                                                  f"{self.gamma.shape[0]}")
        return tuple(input_shape)

    def check_buffer(self, name, value, key=None):
        """Refuse a running variance below zero (sqrt(var + eps) would be NaN), naming key."""
        if name == "running_var" and (np.asarray(value) < 0).any():
            raise ValueError(f"buffer {key or name!r} holds a negative variance "
                             f"({np.asarray(value).min()})")

    def init_buffers(self):
        """Zero running statistics (what the first forward would create), so that they exist,
        and are saved, before any forward."""
        if self.running_mean is None:
            self.running_mean = np.zeros(self.gamma.shape, self.gamma.dtype)
            self.running_var = np.zeros(self.gamma.shape, self.gamma.dtype)

    def _rows(self, a):
        """(N, ...) -> (rows, D): the samples over which statistics are taken, one column a feature."""
        if a.ndim < 2 or math.prod(a.shape[1:]) != self.gamma.shape[0]:
            raise ValueError(f"x of shape {a.shape} needs {math.prod(a.shape[1:])} gamma entries "
                             f"per sample, gamma has {self.gamma.shape[0]}")
        return _rows(a)

    def _unrows(self, a):
        return a.reshape(self.input_shape)

    def forward(self, x, train_flg=True):
        self.input_shape = x.shape
        x = self._rows(x)
        if self.running_mean is None:
            self.running_mean = np.zeros(x.shape[1], _dtype_of(x, self.gamma))
            self.running_var = np.zeros(x.shape[1], _dtype_of(x, self.gamma))
        if train_flg and x.shape[0] > 0:
            mu = x.mean(axis=0)
            xc = x - mu
            var = np.mean(xc ** 2, axis=0)
            self.std = np.sqrt(var + _BN_EPS)
            self.xc = xc
            self.xn = xc / self.std
            self.batch_size = x.shape[0]
            self.running_mean = self.momentum * self.running_mean + (1 - self.momentum) * mu
            self.running_var = self.momentum * self.running_var + (1 - self.momentum) * var
            xn = self.xn
        else:
            xc = x - self.running_mean
            std = np.sqrt(self.running_var + _BN_EPS)
            xn = xc / std
            if train_flg:  # an empty batch
                self.xc, self.xn, self.std, self.batch_size = xc, xn, std, 0
        return self._unrows(self.gamma * xn + self.beta)

    def backward(self, dout):
        _forward_done(self, self.xn, "forward(x, train_flg=True)")
        dout = self._rows(dout)
        self.dbeta = dout.sum(axis=0)
        self.dgamma = np.sum(self.xn * dout, axis=0)
        dxn = self.gamma * dout
        if dout.shape[0] == 0:  # the means below would be of nothing (NaN, with warnings)
            return self._unrows(dxn)
        # Through the batch mean and variance, in closed form (equal to the textbook's chain):
        dx = (dxn - dxn.mean(axis=0) - self.xn * np.mean(dxn * self.xn, axis=0)) / self.std
        return self._unrows(dx)


class SpatialBatchNormalization(BatchNormalization):
    """Per-channel batch normalization (PyTorch's BatchNorm2d), a cnncore extension.

    x (N, C, H, W): statistics over N, H, W for each channel; ``gamma``, ``beta``, running statistics of
    shape (C,). A 2-D (N, C) input is normalised per column like BatchNormalization. Same constructor,
    attributes and textbook conventions (eps 1e-6, momentum 0.9 keeps the old value, running
    statistics start at zeros). The layer caches x itself, the batch mean and ``std`` per
    channel; ``xc`` and ``xn`` are computed from them when read.

    ``kernels`` is the module that computes the layer (cnncore.kernels; cnncore.reference works too).
    """

    kernels = _kernels

    def features(self, input_shape):
        if len(input_shape) not in (1, 3):
            raise _shape_error(self, input_shape, "it needs (C, H, W) or (C,) samples")
        return input_shape[0]

    def _axes(self, x):
        """The axes statistics are taken over, and the shape that broadcasts a (C,) vector."""
        if x.ndim not in (2, 4) or x.shape[1] != self.gamma.shape[0]:
            raise ValueError(f"SpatialBatchNormalization needs (N, C, H, W) or (N, C) input with "
                             f"C = {self.gamma.shape[0]}, got shape {x.shape}")
        if x.ndim == 2:
            return (0,), (1, -1)
        return (0, 2, 3), (1, -1, 1, 1)

    def forward(self, x, train_flg=True):
        x = np.asarray(x, _dtype_of(x, self.gamma))
        self._axes(x)   # checks the shape
        self.input_shape = x.shape
        self.init_buffers()
        if train_flg and x.size > 0:
            mean, var = self.kernels.channel_stats(x)   # float64 (C,)
            std = np.sqrt(var + _BN_EPS)
            self.batch_size = x.shape[0]
            stat = self.running_mean.dtype
            self.running_mean = (self.momentum * self.running_mean
                                 + (1 - self.momentum) * mean).astype(stat, copy=False)
            self.running_var = (self.momentum * self.running_var
                                + (1 - self.momentum) * var).astype(stat, copy=False)
        else:
            mean = np.asarray(self.running_mean, np.float64)
            std = np.sqrt(np.asarray(self.running_var, np.float64) + _BN_EPS)
            if train_flg:  # an empty batch
                self.batch_size = 0
        if train_flg:   # backward needs x itself (not a copy), the mean and std
            self._x, self._mean, self._std64 = x, mean, std
            self.std = std.astype(x.dtype)
        return self.kernels.batchnorm2d_normalize(x, mean, self.gamma / std, self.beta)

    # The textbook's attributes xc = x - mean and xn = xc / std are computed when read.
    @property
    def xc(self):
        if self._x is None:
            return None
        return self._x - self._mean.astype(self._x.dtype).reshape(self._axes(self._x)[1])

    @xc.setter
    def xc(self, value):   # the base constructor's None; xc itself is never stored
        if value is not None:
            raise AttributeError("SpatialBatchNormalization.xc is computed from the cached x")
        self._x = self._mean = self._std64 = None

    @property
    def xn(self):
        xc = self.xc
        if xc is None:
            return None
        return xc / self.std.reshape(self._axes(xc)[1])

    @xn.setter
    def xn(self, value):   # the base constructor's None; xn itself is never stored
        if value is not None:
            raise AttributeError("SpatialBatchNormalization.xn is computed from x, mean and std")

    def backward(self, dout):
        _forward_done(self, self._x, "forward(x, train_flg=True)")
        x = self._x
        dout = np.asarray(dout)
        if dout.shape != x.shape:
            raise ValueError(f"dout must have the forward output's shape {x.shape}, got "
                             f"{dout.shape}")
        dx, self.dgamma, self.dbeta = self.kernels.batchnorm2d_backward(
            dout, x, self._mean, self._std64, self.gamma)
        return dx


class Convolution(Layer):
    """2-D convolution (cross-correlation) plus bias, computed by the compiled kernels.

    Shapes: x (N, C, H, W); W (FN, C, FH, FW); b (FN,) or a scalar; out (N, FN, OH, OW) with
    OH = (H + 2*pad - FH) // stride + 1 (likewise OW).
    Attributes: ``W``, ``b`` (references, read at every call), ``stride``, ``pad``, ``x`` (the last
    input itself), ``dW``, ``db``; ``col`` (the textbook's im2col matrix (N*OH*OW, C*FH*FW) of the last
    input: the kernels never build it for the whole batch, so it is computed when read) and ``col_W``
    (``W.reshape(FN, -1).T``, a view).

    ``padding_mode`` (a cnncore extension): ``'zeros'`` (the textbook's) or ``'replicate'``, which
    pads with copies of the edge pixels (the lecture's 복사 덧대기, PyTorch's ``padding_mode=
    'replicate'``); its gradient folds back onto the edge pixels.

    ``kernels`` is the module that computes the layer: cnncore.kernels by default. Any module with the
    same functions works (cnncore.reference is one); set it on an instance to swap one layer.
    """

    kernels = _kernels
    param_names = ("W", "b")
    grad_names = ("dW", "db")
    key_prefix = "Conv"

    def __init__(self, W, b, stride=1, pad=0, *, padding_mode="zeros"):
        _check_weight(W, "W", 4)
        _check_bias(b, W.shape[0], "b", "filter")
        _check_int(stride, "stride", 1)
        _check_int(pad, "pad", 0)
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
        self.W = W
        self.b = b
        self.stride = stride
        self.pad = pad
        self.padding_mode = padding_mode
        self.x = None
        self.dW = None
        self.db = None

    def config(self):
        return {"stride": int(self.stride), "pad": int(self.pad), "padding_mode": self.padding_mode}

    def output_shape(self, input_shape):
        FN, C, FH, FW = self.W.shape
        if len(input_shape) != 3 or input_shape[0] != C:
            raise _shape_error(self, input_shape, f"W {self.W.shape} needs (C, H, W) samples with "
                                                  f"C = {C}")
        return (FN, *_window_out(self, input_shape, FH, FW))

    def _padded(self, x):
        """(x, pad) for the kernels: replicate padding is applied here, zero padding by the kernels."""
        if self.padding_mode == "replicate" and self.pad > 0:
            return self.kernels.pad_replicate(x, self.pad), 0
        return x, self.pad

    def _unpadded(self, dx):
        if dx is not None and self.padding_mode == "replicate" and self.pad > 0:
            return self.kernels.pad_replicate_backward(dx, self.pad)
        return dx

    @property
    def col(self):
        if self.x is None:
            return None
        FN, C, FH, FW = self.W.shape
        x, pad = self._padded(np.asarray(self.x, _dtype_of(self.x, self.W)))
        return self.kernels.im2col(x, FH, FW, self.stride, pad)

    @property
    def col_W(self):
        return self.W.reshape(self.W.shape[0], -1).T

    def forward(self, x, train_flg=True):
        xp, pad = self._padded(x)
        out = self.kernels.conv_forward(xp, self.W, self.b, self.stride, pad)
        self.x, self._xp = x, xp
        return out

    def backward(self, dout, *, need_dx=True):
        """-> dx (N, C, H, W); sets dW and db. need_dx=False (a cnncore extension, used for a
        network's first layer) skips computing dx and returns None."""
        _forward_done(self, self.x)
        xp, pad = self._xp, (0 if self._xp is not self.x else self.pad)
        dx, self.dW, self.db = self.kernels.conv_backward(dout, xp, self.W, self.stride, pad,
                                                          need_dx=need_dx)
        return self._unpadded(dx)


class ConvReLU(Convolution):
    """Convolution followed by ReLU in one layer (a cnncore extension), using the fused kernels.

    Same constructor, shapes and attributes as Convolution (``W``, ``b``, ``dW``, ``db``, ``x``,
    ``col``, ``col_W``), plus ``out``: the last output, whose zeros are the ReLU mask for backward (do
    not modify it in place). Gives the same numbers as Convolution followed by Relu.
    """

    def __init__(self, W, b, stride=1, pad=0, *, padding_mode="zeros"):
        super().__init__(W, b, stride, pad, padding_mode=padding_mode)
        self.out = None

    def forward(self, x, train_flg=True):
        xp, pad = self._padded(x)
        self.out = self.kernels.conv_bias_relu_forward(xp, self.W, self.b, self.stride, pad)
        self.x, self._xp = x, xp
        return self.out

    def backward(self, dout, *, need_dx=True):
        _forward_done(self, self.out)
        xp, pad = self._xp, (0 if self._xp is not self.x else self.pad)
        dx, self.dW, self.db = self.kernels.conv_bias_relu_backward(dout, xp, self.W, self.out,
                                                                    self.stride, pad,
                                                                    need_dx=need_dx)
        return self._unpadded(dx)


def fusible(conv, relu):
    """Whether a network may run conv then relu as one fused step: a Convolution (not a subclass)
    followed by a Relu, both on the default kernels (a swapped kernels module keeps its own path)."""
    return (type(conv) is Convolution and type(relu) is Relu and conv.kernels is _kernels
            and relu.kernels is _kernels)


def conv_relu_forward(conv, relu, x):
    """relu.forward(conv.forward(x)) in one fused kernel pass, leaving both layers' textbook
    attributes as the two calls would (conv.x; relu.mask, computed when read)."""
    xp, pad = conv._padded(x)
    out = conv.kernels.conv_bias_relu_forward(xp, conv.W, conv.b, conv.stride, pad)
    conv.x, conv._xp = x, xp
    relu._mask, relu._fused_out = None, out
    return out


def conv_relu_backward(conv, relu, dout, need_dx=True):
    """conv.backward(relu.backward(dout)) in one fused kernel pass; sets conv.dW and conv.db."""
    _forward_done(relu, relu._fused_out, "a fused forward")
    xp, pad = conv._xp, (0 if conv._xp is not conv.x else conv.pad)
    dx, conv.dW, conv.db = conv.kernels.conv_bias_relu_backward(dout, xp, conv.W, relu._fused_out,
                                                                conv.stride, pad, need_dx=need_dx)
    return conv._unpadded(dx)


class _WindowPooling(Layer):
    """Shared constructor of the pooling layers; ``kernels`` as in Convolution."""

    kernels = _kernels

    def __init__(self, pool_h, pool_w, stride=2, pad=0):
        _validate.window_params(pool_h, pool_w, stride, pad, names=("pool_h", "pool_w"))
        self.pool_h = pool_h
        self.pool_w = pool_w
        self.stride = stride
        self.pad = pad
        self.x = None

    def config(self):
        return {"pool_h": int(self.pool_h), "pool_w": int(self.pool_w), "stride": int(self.stride),
                "pad": int(self.pad)}

    def output_shape(self, input_shape):
        if len(input_shape) != 3:
            raise _shape_error(self, input_shape, "it needs (C, H, W) samples")
        return (input_shape[0], *_window_out(self, input_shape, self.pool_h, self.pool_w))


class Pooling(_WindowPooling):
    """Max pooling.  x (N, C, H, W) -> (N, C, OH, OW), OH = (H + 2*pad - pool_h) // stride + 1.

    The default stride is 2, as in both editions today (the Japanese edition changed it from 1 in
    2020-09, the Korean one in 2024-12; first-edition code and the course's own class used 1).
    ``pad`` works (the textbook's Pooling crashed for pad > 0): padded cells never win the max, so
    negative inputs are not replaced by a padding zero (PyTorch's behaviour); pad < pool size.
    Ties go to the first cell in the window.
    ``arg_max``: the winners in the textbook's flat layout, shape (N*OH*OW*C,), rows over (n, oy, ox, c),
    value ky*pool_w + kx; computed from the kernel's (N, C, OH, OW) array when read.
    """

    key_prefix = "Pool"

    def __init__(self, pool_h, pool_w, stride=2, pad=0):
        super().__init__(pool_h, pool_w, stride, pad)
        self._arg_max = None

    @property
    def arg_max(self):
        if self._arg_max is None:
            return None
        return self._arg_max.transpose(0, 2, 3, 1).ravel()

    def forward(self, x, train_flg=True):
        out, self._arg_max = self.kernels.max_pool_forward(x, self.pool_h, self.pool_w, self.stride,
                                                           self.pad)
        self.x = x
        return out

    def backward(self, dout):
        _forward_done(self, self.x)
        return self.kernels.max_pool_backward(dout, self._arg_max, self.x.shape, self.pool_h,
                                              self.pool_w, self.stride, self.pad)


class AvgPooling(_WindowPooling):
    """Average pooling (a cnncore extension): same constructor, defaults and output size as Pooling.

    Padding counts as zeros in a full-size window (PyTorch's ``count_include_pad=True``).
    """

    key_prefix = "AvgPool"

    def forward(self, x, train_flg=True):
        out = self.kernels.avg_pool_forward(x, self.pool_h, self.pool_w, self.stride, self.pad)
        self.x = x
        return out

    def backward(self, dout):
        _forward_done(self, self.x)
        return self.kernels.avg_pool_backward(dout, self.x.shape, self.pool_h, self.pool_w,
                                              self.stride, self.pad)


class GlobalAvgPooling(Layer):
    """Global average pooling (a cnncore extension): x (N, C, H, W) -> (N, C), the mean of each map."""

    key_prefix = "GlobalAvgPool"

    def __init__(self):
        self.input_shape = None

    def output_shape(self, input_shape):
        if len(input_shape) != 3:
            raise _shape_error(self, input_shape, "it needs (C, H, W) samples")
        return (input_shape[0],)

    def forward(self, x, train_flg=True):
        if x.ndim != 4:
            raise ValueError(f"GlobalAvgPooling needs (N, C, H, W) input, got shape {x.shape}")
        self.input_shape = x.shape
        return np.asarray(x, _dtype_of(x)).mean(axis=(2, 3))

    def backward(self, dout):
        _forward_done(self, self.input_shape)
        N, C, H, W = self.input_shape
        return np.ascontiguousarray(np.broadcast_to((dout / (H * W))[:, :, None, None],
                                                    self.input_shape))


class LeakyReLU(Layer):
    """Leaky ReLU (a cnncore extension): x where x > 0, else alpha * x; gradient alpha at x <= 0.

    Shape: any -> same.  Attribute ``mask``: ``x <= 0`` of the last forward.
    """

    key_prefix = "LeakyRelu"

    def __init__(self, alpha=0.01):
        self.alpha = _check_real(alpha, "alpha")
        self.mask = None

    def config(self):
        return {"alpha": float(self.alpha)}

    def forward(self, x, train_flg=True):
        self.mask = x <= 0
        return np.where(self.mask, self.alpha * x, x)

    def backward(self, dout):
        _forward_done(self, self.mask)
        return np.where(self.mask, self.alpha * dout, dout)


class GELU(Layer):
    """GELU (a cnncore extension), tanh approximation (cnncore.functions.gelu). Shape: any -> same.

    The forward keeps tanh(...) for the backward, so the gradient costs no second tanh.
    """

    key_prefix = "Gelu"

    def __init__(self):
        self.x = None
        self._tanh = None

    def forward(self, x, train_flg=True):
        self.x = x
        self._tanh = gelu_tanh(x)
        return gelu(x, self._tanh)

    def backward(self, dout):
        _forward_done(self, self.x)
        return dout * gelu_grad(self.x, self._tanh)


class Flatten(Layer):
    """(N, ...) -> (N, D) (a cnncore extension; Affine already flattens its input by itself)."""

    key_prefix = "Flatten"

    def __init__(self):
        self.input_shape = None

    def output_shape(self, input_shape):
        return (math.prod(input_shape),)

    def forward(self, x, train_flg=True):
        self.input_shape = x.shape
        return np.ascontiguousarray(_rows(x))

    def backward(self, dout):
        _forward_done(self, self.input_shape)
        return dout.reshape(self.input_shape)
