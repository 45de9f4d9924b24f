"""To PyTorch and ONNX and back, keeping every number.

    from cnncore.export import to_torch, to_onnx, from_torch
    model = to_torch(network)                 # nn.Sequential, eval mode, same weights and outputs
    to_onnx(network, "model.onnx")            # onnxruntime gives predict()'s scores
    network = from_torch(model, input_dim=(1, 28, 28))

torch, onnx and onnxruntime are optional: ``pip install 'cnncore[torch]'`` / ``'cnncore[onnx]'``.
Importing cnncore (or this module) imports none of them; each function imports what it needs and
names the extra when it is missing.

The textbook's rules that a hand-written converter gets wrong, and how they are carried over:
Affine's W is (in, out), ``nn.Linear.weight`` (out, in); the textbook's Dropout scales by
(1 - ratio) at test time, ``nn.Dropout`` rescales in training instead (``TextbookDropout`` is the
textbook's rule as a torch module; ONNX gets a Mul); BatchNormalization normalises each C*H*W
activation, not each channel (torch: Flatten, BatchNorm1d, Unflatten; ONNX: the arithmetic), with
eps 1e-6. Details in ``cnncore/export/_torch.py`` and ``_onnx.py``.

Every exporter checks the whole network first: a layer it cannot export raises ValueError naming the
layer's key and type before anything is built or written, and files are written atomically.
"""
from ._plan import require

__all__ = ["to_torch", "torch_state_dict", "from_torch", "to_onnx", "TextbookDropout"]


def _load_torch():
    require("torch", "cnncore.export's PyTorch conversion")
    from . import _torch

    return _torch


def _load_onnx():
    require("onnx", "cnncore.export.to_onnx")
    from . import _onnx

    return _onnx


def to_torch(network, *, input_dim=None, dtype=None):
    """A ``torch.nn.Sequential`` in eval mode computing ``network.predict(x)`` with the same weights
    and BatchNorm statistics.

    Modules are named by the layer keys ('Conv1', 'Relu1', 'Affine1', ...; DeepConvNet's list
    positions '0', '1', ...); modules cnncore's layers need besides are named '<key>_flatten',
    '<key>_unflatten', '<key>_relu'. ``input_dim`` (one sample's shape) defaults to the network's;
    ``dtype`` (float32 or float64) defaults to the parameters'. Raises ValueError naming the first
    layer torch cannot take (a layer type cnncore does not export, or pooling padded by more than
    half its window).
    """
    return _load_torch().to_torch(network, input_dim=input_dim, dtype=dtype)


def torch_state_dict(network, module=None, *, input_dim=None, dtype=None):
    """The network's weights as a torch state dict.

    module None: keyed as ``to_torch(network)`` names them (``dtype`` as there). A module of
    your own (the lecture's LeNet-5 class, say): its Conv2d / Linear / BatchNorm1d / BatchNorm2d
    modules are matched, in order, to the network's parameter layers, checked (types, shapes,
    stride and padding), and the result holds every entry of ``module.state_dict()`` (so
    ``module.load_state_dict(sd)`` is strict), in the module's dtype. Affine's W is transposed; a
    BatchNorm eps other than 1e-6 is folded into running_var (var + 1e-6 - eps: the same
    sqrt(var + eps)), refused where that would be negative. Refused too: an ``nn.Dropout`` in the
    module when the network has a Dropout (the numbers would differ: the textbook's scales at test
    time; use ``TextbookDropout``).
    """
    return _load_torch().torch_state_dict(network, module, input_dim=input_dim, dtype=dtype)


def from_torch(module, input_dim, *, dtype=None):
    """A ``cnncore.networks.Sequential`` computing what ``module`` computes in eval mode.

    ``module``: an ``nn.Sequential`` (nested ones are opened) of Conv2d (zeros or replicate
    padding), Linear, ReLU, LeakyReLU, GELU(approximate='tanh'), Sigmoid, MaxPool2d, AvgPool2d
    (count_include_pad=True), AdaptiveAvgPool2d(1), BatchNorm1d, BatchNorm2d, Dropout, Flatten,
    Identity and ``TextbookDropout``; or a module class of your own (the lecture's ``class
    LeNet(nn.Module)``) whose forward is a chain of those, read with torch.fx: functions such as
    ``F.relu``, ``F.max_pool2d``, ``torch.flatten(x, 1)``, ``x.view(x.size(0), -1)`` and
    ``F.dropout`` count as their modules. Anything else (another layer, a branch, a skip
    connection) is refused with ValueError naming the module or the call.
    ``input_dim``: one sample's shape, (C, H, W) or (D,). ``dtype``: float32 when every torch
    parameter is float32, else float64, unless given.

    - ``nn.Dropout`` becomes no layer: in eval it is the identity, and cnncore's Dropout would
      scale by (1 - p). ``TextbookDropout(p)`` becomes ``Dropout(p)``.
    - BatchNorm eps other than cnncore's 1e-6 is folded into running_var (var + eps - 1e-6, the
      same sqrt(var + eps); refused where negative); momentum m becomes cnncore's 1 - m (None:
      0.9). BatchNorm1d on flattened maps followed by Unflatten is one BatchNormalization.
    - AdaptiveAvgPool2d(1) followed by Flatten is one GlobalAvgPooling.
    - Layer keys are an nn.Sequential's module names when none is a bare number and none repeats
      (to_torch's output comes back with its keys), else the textbook's Conv1, Relu1, ...
    """
    return _load_torch().from_torch(module, input_dim, dtype=dtype)


def to_onnx(network, path, *, opset=17, input_dim=None, dtype=None):
    """Write the network as an ONNX model to ``path`` (atomically) and return the ModelProto.

    Input ``x`` (N, *input_dim), output ``scores``: ``network.predict(x)``. ``opset`` from 13 to the
    installed onnx package's newest; ``dtype`` float32 or float64 (default: the parameters'; note
    that onnxruntime has no float64 convolution, so serve float32). The model passes
    ``onnx.checker.check_model(full_check=True)`` before anything is written; a layer that cannot be
    exported raises ValueError naming it, and no file is created.
    """
    return _load_onnx().to_onnx(network, path, opset=opset, input_dim=input_dim, dtype=dtype)


def __getattr__(name):
    if name == "TextbookDropout":
        return _load_torch().TextbookDropout
    raise AttributeError(f"module 'cnncore.export' has no attribute {name!r}")
