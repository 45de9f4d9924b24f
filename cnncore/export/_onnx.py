"""cnncore -> ONNX with the ``onnx`` package's builder API (imported only when used).

The graph computes ``predict(x, train_flg=False)``: input ``x`` (N, *input_dim), output ``scores``
(N, classes), in the network's dtype. Parameters are initializers named by their params keys (W1,
b1, gamma1, ...), BatchNorm statistics by their buffer keys (BatchNorm1.running_mean); nodes are
named after the layer keys. How each textbook rule is written:

- Affine: Flatten (when its input is a map), then Gemm with W as stored, (in, out), no transpose.
- Dropout: Mul by (1 - ratio), the textbook's test-time scaling.
- BatchNormalization (per activation): the arithmetic itself on the flattened input,
  (x - running_mean) / sqrt(running_var + 1e-6) * gamma + beta, reshaped back.
  SpatialBatchNormalization: the BatchNormalization operator (epsilon 1e-6) in float32; in float64
  the same arithmetic (the operator's epsilon attribute is a float32, 1e-6 is not one).
- Pooling: MaxPool with pads (a padded cell never wins); AvgPooling: AveragePool with
  count_include_pad=1; neither uses ceil_mode.
- ConvReLU: Conv then Relu; replicate padding: Pad(mode='edge') then an unpadded Conv.
- GELU: the tanh approximation as arithmetic, in cnncore's order of operations; LeakyReLU: the
  LeakyRelu operator in float32, Where(x <= 0, alpha * x, x) in float64.
"""
import numpy as np
import onnx
from onnx import helper, numpy_helper

from .. import __version__
from .._io import atomic_write
from ..functions import _GELU_C
from ..layers import (_BN_EPS, GELU, Affine, AvgPooling, BatchNormalization, Convolution, ConvReLU,
                      Dropout, Flatten, GlobalAvgPooling, LeakyReLU, Pooling, Relu, Sigmoid,
                      SpatialBatchNormalization)
from ._plan import network_dtype, plan

DEFAULT_OPSET = 17
MIN_OPSET = 13
ELEM = {np.dtype(np.float32): onnx.TensorProto.FLOAT, np.dtype(np.float64): onnx.TensorProto.DOUBLE}

SUPPORTED = {kind: (lambda step: None) for kind in (
    Convolution, ConvReLU, Affine, Relu, Sigmoid, LeakyReLU, GELU, Pooling, AvgPooling,
    GlobalAvgPooling, Flatten, Dropout, BatchNormalization, SpatialBatchNormalization)}


class _Graph:
    """Nodes and initializers under construction; every tensor name is unique."""

    def __init__(self, dtype):
        self.dtype = dtype
        self.nodes = []
        self.initializers = []
        self.names = set()

    def _fresh(self, name):
        base, n = name, 1
        while name in self.names:
            n += 1
            name = f"{base}_{n}"
        self.names.add(name)
        return name

    def const(self, name, value, dtype=None):
        """An initializer holding value (in the graph's dtype unless given); returns its name."""
        array = np.array(value, dtype=self.dtype if dtype is None else dtype)
        name = self._fresh(name)
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def op(self, op_type, inputs, key, **attrs):
        """One node named '<key>/<op_type>'; returns its output's name."""
        out = self._fresh(f"{key}/{op_type}")
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=out, **attrs))
        return out


def _conv(g, step, x):
    layer = step.layer
    FN, C, FH, FW = layer.W.shape
    pad = layer.pad
    if layer.padding_mode == "replicate" and pad > 0:
        pads = g.const(f"{step.key}.pads", [0, 0, pad, pad, 0, 0, pad, pad], np.int64)
        x = g.op("Pad", [x, pads], step.key, mode="edge")
        pad = 0
    W = g.const(step.param_name("W"), step.param("W", g.dtype))
    b = g.const(step.param_name("b"), step.param("b", g.dtype))
    x = g.op("Conv", [x, W, b], step.key, kernel_shape=[FH, FW], strides=[layer.stride] * 2,
             pads=[pad] * 4, dilations=[1, 1], group=1)
    if type(layer) is ConvReLU:
        x = g.op("Relu", [x], step.key)
    return x


def _flatten(g, step, x):
    return g.op("Flatten", [x], step.key, axis=1) if len(step.in_shape) != 1 else x


def _affine(g, step, x):
    x = _flatten(g, step, x)
    W = g.const(step.param_name("W"), step.param("W", g.dtype))
    b = g.const(step.param_name("b"), step.param("b", g.dtype))
    return g.op("Gemm", [x, W, b], step.key, alpha=1.0, beta=1.0, transA=0, transB=0)


def _bn_consts(g, step, shape):
    """gamma, beta, running_mean, running_var as initializers of the given shape."""
    key = step.key
    return [g.const(name, value.reshape(shape)) for name, value in (
        (step.param_name("gamma"), step.param("gamma", g.dtype)),
        (step.param_name("beta"), step.param("beta", g.dtype)),
        (f"{key}.running_mean", step.buffer("running_mean", g.dtype)),
        (f"{key}.running_var", step.buffer("running_var", g.dtype)))]


def _bn_arithmetic(g, key, x, gamma, beta, mean, var):
    """gamma * ((x - mean) / sqrt(var + eps)) + beta, in the layer's order of operations."""
    std = g.op("Sqrt", [g.op("Add", [var, g.const(f"{key}.eps", _BN_EPS)], key)], key)
    xn = g.op("Div", [g.op("Sub", [x, mean], key), std], key)
    return g.op("Add", [g.op("Mul", [gamma, xn], key), beta], key)


def _batch_norm(g, step, x):
    """The textbook's: statistics per activation, on the input flattened to (N, D)."""
    flat = _flatten(g, step, x)
    out = _bn_arithmetic(g, step.key, flat, *_bn_consts(g, step, (-1,)))
    if flat is x:
        return out
    shape = g.const(f"{step.key}.shape", [0, *step.in_shape], np.int64)  # 0: keep N
    return g.op("Reshape", [out, shape], step.key)


def _spatial_batch_norm(g, step, x):
    C = step.layer.gamma.shape[0]
    if g.dtype == np.float32:
        return g.op("BatchNormalization", [x, *_bn_consts(g, step, (C,))], step.key,
                    epsilon=_BN_EPS)
    shape = (C, 1, 1) if len(step.in_shape) == 3 else (C,)
    return _bn_arithmetic(g, step.key, x, *_bn_consts(g, step, shape))


def _pool(g, step, x):
    layer = step.layer
    attrs = dict(kernel_shape=[layer.pool_h, layer.pool_w], strides=[layer.stride] * 2,
                 pads=[layer.pad] * 4, ceil_mode=0)
    if type(layer) is AvgPooling:
        return g.op("AveragePool", [x], step.key, count_include_pad=1, **attrs)
    return g.op("MaxPool", [x], step.key, **attrs)


def _global_avg_pool(g, step, x):
    return g.op("Flatten", [g.op("GlobalAveragePool", [x], step.key)], step.key, axis=1)


def _leaky_relu(g, step, x):
    alpha = float(step.layer.alpha)
    if g.dtype == np.float32:
        return g.op("LeakyRelu", [x], step.key, alpha=alpha)
    key = step.key
    negative = g.op("LessOrEqual", [x, g.const(f"{key}.zero", 0.0)], key)
    return g.op("Where", [negative, g.op("Mul", [x, g.const(f"{key}.alpha", alpha)], key), x], key)


def _gelu(g, step, x):
    """0.5 * x * (1 + tanh(c * (x + 0.044715 x**3))), computed as cnncore.functions.gelu does."""
    key = step.key

    def c(name, value):
        return g.const(f"{key}.{name}", value)

    inner = g.op("Mul", [x, x], key)
    inner = g.op("Mul", [inner, c("k", 0.044715)], key)
    inner = g.op("Add", [inner, c("one", 1.0)], key)
    inner = g.op("Mul", [inner, x], key)
    inner = g.op("Mul", [inner, c("c", _GELU_C)], key)
    out = g.op("Add", [g.op("Tanh", [inner], key), c("one", 1.0)], key)
    out = g.op("Mul", [out, x], key)
    return g.op("Mul", [out, c("half", 0.5)], key)


def _dropout(g, step, x):
    scale = g.const(f"{step.key}.scale", 1.0 - step.layer.dropout_ratio)
    return g.op("Mul", [x, scale], step.key)


EMIT = {
    Convolution: _conv, ConvReLU: _conv, Affine: _affine, BatchNormalization: _batch_norm,
    SpatialBatchNormalization: _spatial_batch_norm, Pooling: _pool, AvgPooling: _pool,
    GlobalAvgPooling: _global_avg_pool, LeakyReLU: _leaky_relu, GELU: _gelu, Dropout: _dropout,
    Relu: lambda g, step, x: g.op("Relu", [x], step.key),
    Sigmoid: lambda g, step, x: g.op("Sigmoid", [x], step.key),
    Flatten: lambda g, step, x: g.op("Flatten", [x], step.key, axis=1),
}


def build_model(network, *, opset=DEFAULT_OPSET, input_dim=None, dtype=None):
    """The checked onnx.ModelProto of network (nothing is written)."""
    if isinstance(opset, bool) or not isinstance(opset, int) or not (
            MIN_OPSET <= opset <= onnx.defs.onnx_opset_version()):
        raise ValueError(f"opset must be an integer from {MIN_OPSET} to "
                         f"{onnx.defs.onnx_opset_version()} (this onnx package's newest), got "
                         f"{opset!r}")
    steps = plan(network, SUPPORTED, "ONNX", input_dim)
    dtype = network_dtype(network, dtype)
    g = _Graph(dtype)
    g.names.add("x")
    x = "x"
    for step in steps:
        x = EMIT[type(step.layer)](g, step, x)
    g.nodes[-1].output[0] = "scores"   # the last node made x: rename the graph's output
    elem = ELEM[dtype]
    graph = helper.make_graph(
        g.nodes, type(network).__name__,
        [helper.make_tensor_value_info("x", elem, ["N", *steps[0].in_shape])],
        [helper.make_tensor_value_info("scores", elem, ["N", *steps[-1].out_shape])],
        g.initializers)
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(graph, opset_imports=opsets, producer_name="cnncore",
                              producer_version=__version__,
                              ir_version=helper.find_min_ir_version_for(opsets))
    model.doc_string = (f"cnncore {type(network).__name__}: predict(x, train_flg=False), "
                        f"layers {', '.join(step.key for step in steps)}")
    onnx.checker.check_model(model, full_check=True)
    return model


def write_model(model, path):
    """Serialise first, then replace path atomically: a failure leaves no partial file."""
    data = model.SerializeToString()
    with atomic_write(path) as f:
        f.write(data)


def to_onnx(network, path, *, opset=DEFAULT_OPSET, input_dim=None, dtype=None):
    model = build_model(network, opset=opset, input_dim=input_dim, dtype=dtype)
    write_model(model, path)
    return model
