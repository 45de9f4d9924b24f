"""The export plan: a network's layers in order with their per-sample shapes, checked before
anything is built or written. Imports neither torch nor onnx.

Every exporter walks the same plan, so "which layers can be exported" and "what shape does each
layer see" are answered in one place. A layer is exportable when its exact type is in the target's
table: a user's subclass may compute something else, so it is refused like any unknown layer.
"""
import importlib

import numpy as np

from ..networks._base import check_input_dim

# The extras that hold the optional packages (pyproject.toml [project.optional-dependencies]).
EXTRAS = {"torch": "torch", "onnx": "onnx", "onnxruntime": "onnx"}


def require(package, what):
    """Import an optional package, or raise ImportError naming the extra that installs it."""
    try:
        return importlib.import_module(package)
    except ImportError as exc:
        extra = EXTRAS.get(package, package)
        raise ImportError(f"{what} needs the {package!r} package, which is not installed: "
                          f"pip install 'cnncore[{extra}]'") from exc


class Step:
    """One layer of a network with its key, the per-sample shape it takes and the one it gives,
    and the textbook keys of its parameters ({attribute: params key})."""

    __slots__ = ("key", "layer", "in_shape", "out_shape", "names")

    def __init__(self, key, layer, in_shape, out_shape, names):
        self.key, self.layer, self.in_shape, self.out_shape, self.names = (
            key, layer, in_shape, out_shape, names)

    def param(self, attr, dtype):
        """The layer's parameter ``attr`` as an array of dtype (a scalar bias broadcast to its
        length, as the layer broadcasts it)."""
        value = np.asarray(getattr(self.layer, attr))
        if attr == "b" and value.ndim == 0:
            size = self.layer.W.shape[0 if self.layer.W.ndim == 4 else 1]
            value = np.broadcast_to(value, (size,))
        return np.array(value, dtype=dtype)

    def buffer(self, name, dtype):
        """A BatchNorm running statistic as an array of dtype; zeros where the layer has not made
        it yet (its first forward would, with zeros)."""
        value = getattr(self.layer, name)
        if value is None:
            return np.zeros(self.layer.gamma.shape, dtype)
        return np.array(value, dtype=dtype)

    def param_name(self, attr):
        """The initializer / tensor name of a parameter: its params key ('W1'), else key.attr."""
        return self.names.get(attr, f"{self.key}.{attr}")


def network_dtype(network, dtype=None):
    """The dtype an export computes in: ``dtype`` when given (float32 or float64), else float32 if
    every parameter is float32, else float64 (cnncore's compute rule)."""
    if dtype is not None:
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64, got {dtype}")
        return dtype
    dtypes = {np.dtype(value.dtype) for value in network.params.values()}
    return np.dtype(np.float32) if dtypes == {np.dtype(np.float32)} else np.dtype(np.float64)


def plan(network, supported, target, input_dim=None):
    """[Step] for every layer of network, or ValueError naming the first layer ``target`` cannot
    take (its type is not in ``supported``, a dict {layer class: check(step) -> None or why}).

    input_dim: one sample's shape; the network's own ``input_dim`` by default.
    """
    if not hasattr(network, "_layer_items") or not hasattr(network, "params"):
        raise TypeError(f"network must be a cnncore network (cnncore.networks), got "
                        f"{type(network).__name__}")
    shape = input_dim if input_dim is not None else getattr(network, "input_dim", None)
    if shape is None:
        raise ValueError("the network has no input_dim: pass input_dim=(C, H, W) or (D,)")
    shape = check_input_dim(shape, (1, 3))
    names = {}
    for key, layer, attr in getattr(network, "_bindings", ()):
        names.setdefault(id(layer), {})[attr] = key
    steps = []
    for key, layer in network._layer_items():
        check = supported.get(type(layer))
        if check is None:
            raise ValueError(f"layer {key!r} ({type(layer).__name__}) cannot be exported to "
                             f"{target}: only {', '.join(sorted(c.__name__ for c in supported))}")
        try:
            out_shape = tuple(int(d) for d in layer.output_shape(shape))
        except ValueError as exc:
            raise ValueError(f"layer {key!r} ({type(layer).__name__}) cannot take the input of "
                             f"shape {shape}: {exc}") from None
        step = Step(key, layer, shape, out_shape, names.get(id(layer), {}))
        why = check(step)
        if why:
            raise ValueError(f"layer {key!r} ({type(layer).__name__}) cannot be exported to "
                             f"{target}: {why}")
        steps.append(step)
        shape = out_shape
    return steps
