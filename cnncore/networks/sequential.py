"""Sequential: any CNN from a list of layers, with the textbook's network interface.

    from cnncore.layers import Relu, Pooling, Dropout
    from cnncore.networks import Sequential, Conv2d, Linear

    net = Sequential([Conv2d(32, 3), Relu(), Conv2d(64, 3), Relu(), Pooling(2, 2), Dropout(0.25),
                      Linear(128), Relu(), Dropout(0.5), Linear(10)],
                     input_dim=(1, 28, 28), dtype=np.float32)

The list may hold ready textbook layers (``Convolution(W, b, stride, pad)``, ``Affine(W, b)``, ``Relu()``,
``Pooling(2, 2)``, ``BatchNormalization(gamma, beta)``, ``Dropout(0.5)``, ...) and size-only layers that
the network creates weights for from ``input_dim``: ``Conv2d``, ``Linear``, ``BatchNorm``,
``BatchNorm2d``. Each size-only layer builds the textbook layer object of the same role, so
``net.layers['Conv1']`` is a ``Convolution`` and ``net.params['W1'] is net.layers['Conv1'].W``.
"""
import math
from collections import OrderedDict

import numpy as np

from .._io import load_architecture, load_params_file
from .._validate import check_int
from ..initializers import float_dtype, gaussian, init_std
from ..layers import (GELU, Affine, AvgPooling, BatchNormalization, Convolution, ConvReLU, Dropout,
                      Flatten, GlobalAvgPooling, LeakyReLU, Pooling, Relu, Sigmoid,
                      SoftmaxWithLoss, SpatialBatchNormalization)
from ._base import Network, check_input_dim, check_weight_decay

# The layer types a saved network may name; nothing else is ever constructed from a file.
LAYER_TYPES = {cls.__name__: cls for cls in (
    Relu, Sigmoid, LeakyReLU, GELU, Affine, Convolution, ConvReLU, Pooling, AvgPooling,
    GlobalAvgPooling, Flatten, Dropout, BatchNormalization, SpatialBatchNormalization)}
LOSS_TYPES = {"SoftmaxWithLoss": SoftmaxWithLoss}
FILE_FORMAT = "cnncore-network"
FILE_VERSION = 1


# --------------------------------------------------------------------------------- size-only layers

class Conv2d:
    """A convolution given its size only; Sequential makes its ``Convolution`` layer.

    ``Conv2d(filter_num, filter_size, stride=1, pad=0)``: the textbook's ``conv_param`` keys
    (PyTorch's ``out_channels``, ``kernel_size``, ``stride``, ``padding``); the input channels come from
    the previous layer. Keywords: ``padding_mode`` 'zeros' or 'replicate'; ``weight_init_std``
    overrides the network's for this layer. W is (filter_num, C, filter_size, filter_size), drawn
    ``std * randn``; b zeros.
    """

    def __init__(self, filter_num, filter_size, stride=1, pad=0, *, padding_mode="zeros",
                 weight_init_std=None):
        self.filter_num = check_int(filter_num, "filter_num", 1)
        self.filter_size = check_int(filter_size, "filter_size", 1)
        self.stride = check_int(stride, "stride", 1)
        self.pad = check_int(pad, "pad", 0)
        self.padding_mode = padding_mode
        self.weight_init_std = weight_init_std

    def build(self, input_shape, dtype, weight_init_std):
        if len(input_shape) != 3:
            raise ValueError(f"Conv2d needs (C, H, W) samples, got {tuple(input_shape)}")
        shape = (self.filter_num, input_shape[0], self.filter_size, self.filter_size)
        std = init_std(_first(self.weight_init_std, weight_init_std), math.prod(shape[1:]))
        return Convolution(gaussian(shape, std, dtype), np.zeros(self.filter_num, dtype),
                           self.stride, self.pad, padding_mode=self.padding_mode)


class Linear:
    """A fully connected layer given its output size only; Sequential makes its ``Affine`` layer.

    ``Linear(output_size)``: W is (D, output_size) for the flattened input size D (no user computes
    it), drawn ``std * randn``; b zeros. ``weight_init_std`` overrides the network's for this layer.
    """

    def __init__(self, output_size, *, weight_init_std=None):
        self.output_size = check_int(output_size, "output_size", 1)
        self.weight_init_std = weight_init_std

    def build(self, input_shape, dtype, weight_init_std):
        D = math.prod(input_shape)
        std = init_std(_first(self.weight_init_std, weight_init_std), D)
        return Affine(gaussian((D, self.output_size), std, dtype), np.zeros(self.output_size, dtype))


class BatchNorm:
    """The textbook's batch normalization given nothing but its momentum: statistics per activation
    (each of the C*H*W values of a conv map); Sequential makes a ``BatchNormalization`` with gamma
    ones and beta zeros of the input's size."""

    layer = BatchNormalization

    def __init__(self, momentum=0.9):
        self.momentum = momentum

    def build(self, input_shape, dtype, weight_init_std):
        size = math.prod(input_shape) if self.layer is BatchNormalization else input_shape[0]
        layer = self.layer(np.ones(size, dtype), np.zeros(size, dtype), self.momentum)
        layer.output_shape(input_shape)   # refuses an input this kind cannot take
        return layer


class BatchNorm2d(BatchNorm):
    """Per-channel batch normalization (PyTorch's BatchNorm2d) given only its momentum; Sequential
    makes a ``SpatialBatchNormalization`` with gamma ones and beta zeros of the channel count."""

    layer = SpatialBatchNormalization


SIZE_ONLY = (Conv2d, Linear, BatchNorm)


def _first(value, default):
    return default if value is None else value


# ---------------------------------------------------------------------------------------- Sequential

class Sequential(Network):
    """A network from a list of layers, in order, followed by a loss layer.

    Parameters
    ----------
    layers : list of layers (ready textbook layer objects and size-only ``Conv2d``, ``Linear``,
        ``BatchNorm``, ``BatchNorm2d``), or an OrderedDict ``{key: layer}`` to choose the keys. A
        ``SoftmaxWithLoss`` may close the list (it becomes ``last_layer``); anywhere else it is refused.
    input_dim : (keyword) shape of one sample, (C, H, W) or (D,). Needed for size-only layers; with it
        every layer's input is checked when the network is built.
    loss : (keyword) the loss layer; ``SoftmaxWithLoss()`` by default.
    dtype : (keyword) float64 (default) or float32 for the created parameters; ready layers whose
        arrays have another float dtype are converted to it.
    weight_init_std : (keyword) for created weights: 'he' (default, sqrt(2/fan_in), for ReLU),
        'xavier' (sqrt(1/fan_in)) or a number (the std itself).
    weight_decay_lambda : (keyword) the textbook's L2 penalty 0.5*lambda*sum(W**2) over every
        Convolution and Affine weight, in loss and gradient.

    The interface is the textbook networks': ``params`` ('W1', 'b1', ... for Convolution and Affine
    layers in order; 'gamma1', 'beta1', ... for batch norm), ``layers`` (an OrderedDict keyed
    'Conv1', 'Relu1', 'Pool1', 'Affine1', 'BatchNorm1', 'Dropout1', ...), ``last_layer``,
    ``predict(x, train_flg=False)``, ``loss(x, t, train_flg=False)``, ``accuracy``, ``gradient``,
    ``numerical_gradient``, ``save_params``/``load_params``, ``state_dict``/``load_state_dict``; plus
    ``summary()``, ``save(path)`` and ``Sequential.load(path)`` (architecture, weights and BatchNorm
    statistics in one .npz, no pickle).

    Shape: x (N, *input_dim) -> scores (N, classes).
    """

    def __init__(self, layers, *, input_dim=None, loss=None, dtype=None, weight_init_std="he",
                 weight_decay_lambda=0):
        self.weight_decay_lambda = check_weight_decay(weight_decay_lambda)
        dtype = None if dtype is None else float_dtype(dtype)
        init_std("he" if weight_init_std is None else weight_init_std, 1)  # checks the value early
        items = _items(layers)
        if items and isinstance(items[-1][1], tuple(LOSS_TYPES.values())):
            if loss is not None:
                raise ValueError("give the loss either as the last layer or as loss=, not both")
            loss = items.pop()[1]
        self.last_layer = SoftmaxWithLoss() if loss is None else _check_loss(loss)
        self.input_dim = None if input_dim is None else check_input_dim(input_dim, (1, 3))
        self.layers = OrderedDict()
        self.params = {}
        self._bindings = []
        shape = self.input_dim
        counters = {}
        seen = set()
        for position, (key, item) in enumerate(items):
            layer = self._make_layer(position, key, item, shape, dtype, weight_init_std, seen)
            key = key or _next_key(layer, counters)
            if key in self.layers:
                raise ValueError(f"layer {position}: the key {key!r} is used twice")
            if shape is not None:
                shape = _output_shape(position, key, layer, shape)
                if hasattr(layer, "init_buffers"):   # statistics exist (and are saved) from the start
                    layer.init_buffers()
            self.layers[key] = layer
            self._bind(layer, counters)
        if not self.layers:
            raise ValueError("layers must hold at least one layer")

    def _make_layer(self, position, key, item, shape, dtype, weight_init_std, seen):
        """The layer object for one list item, checked."""
        if isinstance(item, type):
            raise TypeError(f"layer {position}: got the class {item.__name__}; give an instance "
                            f"({item.__name__}(...))")
        if isinstance(item, SIZE_ONLY):
            if shape is None:
                raise ValueError(f"layer {position} ({type(item).__name__}) is given by its size "
                                 f"only: Sequential needs input_dim to create its weights")
            try:
                return item.build(shape, dtype or np.float64, weight_init_std)
            except ValueError as exc:
                raise ValueError(f"layer {position} ({type(item).__name__}) cannot take an input "
                                 f"of shape {shape}: {exc}") from None
        if isinstance(item, tuple(LOSS_TYPES.values())):
            raise ValueError(f"layer {position}: a {type(item).__name__} must be the last layer "
                             f"(it is the loss)")
        if not (callable(getattr(item, "forward", None)) and callable(getattr(item, "backward", None))):
            raise TypeError(f"layer {position}: {item!r} is not a layer (needs forward and backward)")
        if id(item) in seen:
            raise ValueError(f"layer {position}: the same {type(item).__name__} object appears twice; "
                             f"a layer object belongs at one place (make a new one)")
        seen.add(id(item))
        if dtype is not None:
            for attr in getattr(item, "param_names", ()):
                value = getattr(item, attr)
                if value.dtype != dtype:
                    setattr(item, attr, value.astype(dtype))
        return item

    def _bind(self, layer, counters):
        """Give the layer's parameters their textbook keys: W/b numbered over Convolution and
        Affine layers, gamma/beta over batch norm layers."""
        names = tuple(getattr(layer, "param_names", ()))
        if not names:
            return
        group = names[0]
        counters[group] = index = counters.get(group, 0) + 1
        for attr in names:
            key = f"{attr}{index}"
            self.params[key] = getattr(layer, attr)
            self._bindings.append((key, layer, attr))

    @classmethod
    def load(cls, path):
        """A network rebuilt from a file written by ``save``: same layers, keys, parameters, buffers.
        The file is read as data (JSON and arrays; nothing in it runs); anything but the layer
        types cnncore has is refused, naming the file and the layer."""
        return build_from_file(cls, path)


def architecture(network):
    """The JSON-able description ``save`` writes: layers with their types, keys, hyperparameters
    and parameter keys; the input shape, dtype, weight decay and loss."""
    owned = {}
    for key, layer, attr in network._bindings:
        owned.setdefault(id(layer), {})[attr] = key
    layers = []
    for key, layer in network._layer_items():
        name = type(layer).__name__
        if LAYER_TYPES.get(name) is not type(layer):
            raise ValueError(f"layer {key!r} is a {name}, which cnncore cannot save as data (only "
                             f"{', '.join(LAYER_TYPES)})")
        layers.append({"key": key, "type": name, "config": layer.config(),
                       "params": owned.get(id(layer), {})})
    loss = type(network.last_layer).__name__
    if loss not in LOSS_TYPES:
        raise ValueError(f"the loss {loss} cannot be saved as data (only {', '.join(LOSS_TYPES)})")
    dtypes = {str(value.dtype) for value in network.params.values()}
    return {"format": FILE_FORMAT, "version": FILE_VERSION, "class": type(network).__name__,
            "input_dim": None if network.input_dim is None else list(network.input_dim),
            "dtype": dtypes.pop() if len(dtypes) == 1 else None,
            "weight_decay_lambda": float(network.weight_decay_lambda),
            "loss": loss, "params": list(network.params), "layers": layers}


def build_from_file(cls, path):
    arch = load_architecture(path)

    def bad(why):
        return ValueError(f"{path}: {why}")

    if arch.get("format") != FILE_FORMAT or arch.get("version") != FILE_VERSION:
        raise bad(f"not a {FILE_FORMAT} file of version {FILE_VERSION} (format "
                  f"{arch.get('format')!r}, version {arch.get('version')!r})")
    specs = arch.get("layers")
    if not isinstance(specs, list) or not specs:
        raise bad("the architecture lists no layers")
    arrays = load_params_file(path, None)
    layers = OrderedDict()
    bindings = []
    for position, spec in enumerate(specs):
        if not isinstance(spec, dict):
            raise bad(f"layer {position} is not described by an object")
        kind, key = spec.get("type"), spec.get("key")
        if kind not in LAYER_TYPES:
            raise bad(f"layer {position} has type {kind!r}, which is not a cnncore layer "
                      f"({', '.join(LAYER_TYPES)})")
        if not isinstance(key, str) or key in layers:
            raise bad(f"layer {position} has a missing or repeated key {key!r}")
        config, owned = spec.get("config", {}), spec.get("params", {})
        if not isinstance(config, dict) or not all(
                isinstance(v, (str, int, float, bool)) for v in config.values()):
            raise bad(f"layer {key!r}: its config must map names to plain values")
        if not isinstance(owned, dict) or set(owned) != set(LAYER_TYPES[kind].param_names):
            raise bad(f"layer {key!r}: a {kind} needs the parameters "
                      f"{list(LAYER_TYPES[kind].param_names)}, the file names {owned}")
        missing = [name for name in owned.values() if name not in arrays]
        if missing:
            raise bad(f"layer {key!r}: the file holds no array {missing}")
        try:
            layer = LAYER_TYPES[kind](**{attr: arrays[name] for attr, name in owned.items()},
                                      **config)
        except (TypeError, ValueError) as exc:
            raise bad(f"layer {key!r} ({kind}) cannot be rebuilt: {exc}") from None
        layers[key] = layer
        bindings += [(name, layer, attr) for attr, name in owned.items()]
    order = arch.get("params")
    names = [name for name, _, _ in bindings]
    if not isinstance(order, list) or sorted(order) != sorted(names):
        raise bad("the parameter list does not match the layers' parameters")
    net = cls.__new__(cls)
    net.layers = layers
    if arch.get("loss") not in LOSS_TYPES:
        raise bad(f"the loss {arch.get('loss')!r} is not one cnncore saves ({', '.join(LOSS_TYPES)})")
    net.last_layer = LOSS_TYPES[arch["loss"]]()
    net.input_dim = (None if arch.get("input_dim") is None
                     else check_input_dim(arch["input_dim"], (1, 3)))
    net.weight_decay_lambda = check_weight_decay(arch.get("weight_decay_lambda", 0))
    lookup = {name: (layer, attr) for name, layer, attr in bindings}
    net.params = {name: getattr(*lookup[name]) for name in order}
    net._bindings = [(name, *lookup[name]) for name in order]
    if net.input_dim is not None:
        try:
            net.output_shape()
        except ValueError as exc:
            raise bad(f"the layers do not fit together: {exc}") from None
    for layer in layers.values():
        if hasattr(layer, "init_buffers"):
            layer.init_buffers()
    buffers = {k: v for k, v in arrays.items() if k not in net.params}
    net.load_buffers(buffers)
    return net


# ------------------------------------------------------------------------------------------- checks

def _items(layers):
    """[(key or None, layer)] from a list, a tuple or an OrderedDict of layers."""
    if isinstance(layers, dict):
        for key in layers:
            if not isinstance(key, str) or not key:
                raise ValueError(f"layer keys must be non-empty strings, got {key!r}")
        return list(layers.items())
    if not isinstance(layers, (list, tuple)):
        raise TypeError(f"layers must be a list of layers (or an OrderedDict), got "
                        f"{type(layers).__name__}")
    return [(None, layer) for layer in layers]


def _next_key(layer, counters):
    prefix = getattr(layer, "key_prefix", None) or type(layer).__name__
    counters["key:" + prefix] = index = counters.get("key:" + prefix, 0) + 1
    return f"{prefix}{index}"


def _output_shape(position, key, layer, shape):
    if not callable(getattr(layer, "output_shape", None)):
        raise TypeError(f"layer {position} ({key}, {type(layer).__name__}) has no "
                        f"output_shape(input_shape): give input_dim=None to skip the shape checks")
    try:
        out = tuple(layer.output_shape(shape))
    except ValueError as exc:
        raise ValueError(f"layer {position} ({key}, {type(layer).__name__}) cannot take an input of "
                         f"shape {shape}: {exc}") from None
    if any(s < 1 for s in out):
        raise ValueError(f"layer {position} ({key}, {type(layer).__name__}) would output shape {out}")
    return out


def _check_loss(loss):
    if loss is None or not callable(getattr(loss, "forward", None)) or not callable(
            getattr(loss, "backward", None)):
        raise TypeError(f"loss must be a loss layer such as SoftmaxWithLoss(), got {loss!r}")
    return loss


