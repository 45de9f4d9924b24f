"""cnncore <-> PyTorch (imported only when used: it imports torch).

How each textbook rule is carried over (eval mode gives cnncore's ``predict`` numbers):

- Affine keeps W as (in, out); ``nn.Linear.weight`` is (out, in): W is transposed both ways. Affine
  flattens its input, so an ``nn.Flatten`` named '<key>_flatten' goes before a Linear fed a map.
- The textbook's Dropout drops without rescaling in training and multiplies by (1 - ratio) at test
  time; ``nn.Dropout`` rescales in training and is the identity in eval. ``TextbookDropout`` is the
  textbook's rule as a torch module; an ``nn.Dropout`` read by from_torch becomes nothing (that is
  what it computes in eval).
- BatchNormalization normalises each of the C*H*W activations: Flatten, ``BatchNorm1d(C*H*W)``,
  Unflatten. SpatialBatchNormalization is ``BatchNorm2d``. cnncore's eps is 1e-6 (torch's default
  1e-5) and its momentum keeps the old value (torch's weighs the new one): eps=1e-6,
  momentum = 1 - cnncore's momentum.
- Max pooling: torch pads with -inf, so a padded cell never wins, as in cnncore; average pooling
  with ``count_include_pad=True``. torch accepts padding of at most half the window only.
- ConvReLU is a Conv2d and a ReLU named '<key>_relu'; replicate padding is Conv2d's
  ``padding_mode='replicate'``; GELU is ``nn.GELU(approximate='tanh')``.

from_torch reads an nn.Sequential's modules in order, or a module class's forward through torch.fx
(each call must take the previous call's output: a chain); it recognises the groups to_torch makes
(Flatten + BatchNorm1d + Unflatten, AdaptiveAvgPool2d(1) + Flatten, '<key>_relu', '<key>_flatten').
"""
import operator
from collections import OrderedDict

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..layers import (GELU, Affine, AvgPooling, BatchNormalization, Convolution, ConvReLU, Dropout,
                      Flatten, GlobalAvgPooling, LeakyReLU, Pooling, Relu, Sigmoid,
                      SpatialBatchNormalization)
from .._io import atomic_write
from ._plan import network_dtype, plan

BN_EPS = 1e-6          # cnncore's (the textbook's 10e-7)
TORCH_DTYPES = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}


class TextbookDropout(nn.Module):
    """The textbook's Dropout as a torch module: training zeroes each value with probability p and
    does not rescale; eval multiplies by (1 - p). (``nn.Dropout`` rescales by 1/(1 - p) in training
    and is the identity in eval: weights trained with one give other numbers with the other.)"""

    def __init__(self, p=0.5):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"p must be in [0, 1), got {p!r}")
        self.p = float(p)

    def forward(self, x):
        if self.training:
            return x * (torch.rand_like(x) > self.p)
        return x * (1.0 - self.p)

    def extra_repr(self):
        return f"p={self.p}"


TextbookDropout.__module__ = "cnncore.export"   # its public home: a saved model unpickles from there


def _pool_check(step):
    layer = step.layer
    if 2 * layer.pad > min(layer.pool_h, layer.pool_w):
        return (f"pad {layer.pad} is more than half the {layer.pool_h}x{layer.pool_w} window, "
                f"which torch's pooling refuses")
    return None


def _ok(step):
    return None


SUPPORTED = {Convolution: _ok, ConvReLU: _ok, Affine: _ok, Relu: _ok, Sigmoid: _ok, LeakyReLU: _ok,
             GELU: _ok, Pooling: _pool_check, AvgPooling: _pool_check, GlobalAvgPooling: _ok,
             Flatten: _ok, Dropout: _ok, BatchNormalization: _ok, SpatialBatchNormalization: _ok}


def _tensor(array, dtype):
    return torch.from_numpy(np.array(array, dtype=dtype, copy=True))


def _set(module, dtype, **values):
    """Copy arrays into a module's parameters and buffers (no autograd record)."""
    with torch.no_grad():
        for name, value in values.items():
            getattr(module, name).copy_(_tensor(value, dtype))


def _batch_norm(step, dtype, tdtype, features, cls):
    layer = step.layer
    bn = cls(features, eps=BN_EPS, momentum=1.0 - float(layer.momentum), dtype=tdtype)
    _set(bn, dtype, weight=step.param("gamma", dtype), bias=step.param("beta", dtype),
         running_mean=step.buffer("running_mean", dtype),
         running_var=step.buffer("running_var", dtype))
    return bn


def _modules(step, dtype):
    """[(name, module)] for one step, the layer's key naming its main module."""
    layer, key, tdtype = step.layer, step.key, TORCH_DTYPES[dtype]
    kind = type(layer)
    if kind in (Convolution, ConvReLU):
        FN, C, FH, FW = layer.W.shape
        conv = nn.Conv2d(C, FN, (FH, FW), stride=layer.stride, padding=layer.pad,
                         padding_mode=layer.padding_mode, dtype=tdtype)
        _set(conv, dtype, weight=step.param("W", dtype), bias=step.param("b", dtype))
        return [(key, conv)] + ([(f"{key}_relu", nn.ReLU())] if kind is ConvReLU else [])
    if kind is Affine:
        D, M = layer.W.shape
        linear = nn.Linear(D, M, dtype=tdtype)
        _set(linear, dtype, weight=step.param("W", dtype).T, bias=step.param("b", dtype))
        flatten = [(f"{key}_flatten", nn.Flatten())] if len(step.in_shape) != 1 else []
        return flatten + [(key, linear)]
    if kind is BatchNormalization:
        bn = _batch_norm(step, dtype, tdtype, layer.gamma.shape[0], nn.BatchNorm1d)
        if len(step.in_shape) == 1:
            return [(key, bn)]
        return [(f"{key}_flatten", nn.Flatten()), (key, bn),
                (f"{key}_unflatten", nn.Unflatten(1, step.in_shape))]
    if kind is SpatialBatchNormalization:
        cls = nn.BatchNorm2d if len(step.in_shape) == 3 else nn.BatchNorm1d
        return [(key, _batch_norm(step, dtype, tdtype, layer.gamma.shape[0], cls))]
    if kind is Pooling:
        return [(key, nn.MaxPool2d((layer.pool_h, layer.pool_w), layer.stride, layer.pad))]
    if kind is AvgPooling:
        return [(key, nn.AvgPool2d((layer.pool_h, layer.pool_w), layer.stride, layer.pad,
                                   count_include_pad=True))]
    if kind is GlobalAvgPooling:
        return [(key, nn.AdaptiveAvgPool2d(1)), (f"{key}_flatten", nn.Flatten())]
    if kind is Dropout:
        return [(key, TextbookDropout(layer.dropout_ratio))]
    simple = {Relu: nn.ReLU, Sigmoid: nn.Sigmoid, Flatten: nn.Flatten}
    if kind in simple:
        return [(key, simple[kind]())]
    if kind is LeakyReLU:
        return [(key, nn.LeakyReLU(float(layer.alpha)))]
    if kind is GELU:
        return [(key, nn.GELU(approximate="tanh"))]
    raise AssertionError(kind)  # plan() admits only the types above


def to_torch(network, *, input_dim=None, dtype=None):
    steps = plan(network, SUPPORTED, "PyTorch", input_dim)
    dtype = network_dtype(network, dtype)
    modules = OrderedDict()
    for step in steps:
        for name, module in _modules(step, dtype):
            modules[name] = module
    return nn.Sequential(modules).eval()


# ------------------------------------------------------------------ weights into a user's own model

_PARAM_MODULES = (nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d)


def torch_state_dict(network, module=None, *, input_dim=None, dtype=None):
    if module is None:
        return to_torch(network, input_dim=input_dim, dtype=dtype).state_dict()
    if dtype is not None:
        raise ValueError("dtype is for module=None; a module's own dtypes are kept")
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    steps = plan(network, SUPPORTED, "PyTorch", input_dim)
    ours = [step for step in steps if step.layer.param_names]
    theirs = [(name, m) for name, m in module.named_modules() if isinstance(m, _PARAM_MODULES)]
    if len(ours) != len(theirs):
        raise ValueError(f"the network has {len(ours)} layers with parameters "
                         f"({', '.join(s.key for s in ours)}), the module {len(theirs)} "
                         f"({', '.join(n for n, _ in theirs)})")
    dropouts = [s.key for s in steps if type(s.layer) is Dropout and s.layer.dropout_ratio > 0]
    plain = [name for name, m in module.named_modules() if type(m) is nn.Dropout and m.p > 0]
    if dropouts and plain:
        raise ValueError(f"the module's nn.Dropout ({', '.join(plain)}) is the identity in eval, "
                         f"the network's Dropout ({', '.join(dropouts)}) multiplies by "
                         f"1 - ratio: these weights would give other numbers. Use "
                         f"cnncore.export.TextbookDropout there, or to_torch(network)")
    state = OrderedDict((k, v.clone()) for k, v in module.state_dict().items())
    for step, (name, target) in zip(ours, theirs):
        values = _values_for(step, name, target)
        for attr, value in values.items():
            full = f"{name}.{attr}" if name else attr
            if full not in state:   # bias=False / affine=False: fine while the values are neutral
                neutral = 1.0 if (attr == "weight" and value.ndim == 1) else 0.0
                if np.all(value == neutral):
                    continue
                raise ValueError(f"{step.key}: the module has no {full} (bias=False or "
                                 f"affine=False) but the network's values are not all {neutral:g}")
            old = state[full]
            if tuple(old.shape) != value.shape:
                raise ValueError(f"{step.key}: {full} has shape {tuple(old.shape)}, the "
                                 f"network's needs {value.shape}")
            state[full] = torch.from_numpy(np.ascontiguousarray(value)).to(old.dtype)
    return state


def _values_for(step, name, target):
    """{torch attribute: array} for one parameter layer placed into the module ``target``."""
    layer, kind = step.layer, type(step.layer)
    label = f"{step.key} ({kind.__name__}) -> {name} ({type(target).__name__})"
    dtype = np.float64
    if kind in (Convolution, ConvReLU):
        if not isinstance(target, nn.Conv2d):
            raise ValueError(f"{label}: a convolution needs an nn.Conv2d")
        want = ((layer.stride,) * 2, (layer.pad,) * 2, layer.padding_mode)
        have = (tuple(target.stride), tuple(target.padding) if not isinstance(target.padding, str)
                else target.padding, target.padding_mode)
        if want != have or target.groups != 1 or tuple(target.dilation) != (1, 1):
            raise ValueError(f"{label}: stride, padding, padding_mode {have} differ from the "
                             f"layer's {want}")
        return {"weight": step.param("W", dtype), "bias": step.param("b", dtype)}
    if kind is Affine:
        if not isinstance(target, nn.Linear):
            raise ValueError(f"{label}: an Affine layer needs an nn.Linear")
        return {"weight": step.param("W", dtype).T, "bias": step.param("b", dtype)}
    cls = (nn.BatchNorm2d if kind is SpatialBatchNormalization and len(step.in_shape) == 3
           else nn.BatchNorm1d)
    if type(target) is not cls:
        raise ValueError(f"{label}: needs an nn.{cls.__name__}")
    if target.running_var is None:
        raise ValueError(f"{label}: the module keeps no running statistics "
                         f"(track_running_stats=False)")
    running_var = fold_eps(step.buffer("running_var", dtype), BN_EPS, target.eps, label)
    return {"weight": step.param("gamma", dtype), "bias": step.param("beta", dtype),
            "running_mean": step.buffer("running_mean", dtype), "running_var": running_var}


def fold_eps(running_var, eps_from, eps_to, label):
    """running_var for a batch norm with eps ``eps_to`` that divides by the same sqrt(var + eps)
    as one with ``eps_from``: var + eps_from - eps_to. Refused where that would be negative."""
    if eps_from == eps_to:
        return running_var
    folded = running_var + (eps_from - eps_to)
    if np.any(folded < 0):
        raise ValueError(f"{label}: its eps {eps_to:g} differs from {eps_from:g} by more than "
                         f"the smallest running variance ({running_var.min():g}); set eps="
                         f"{eps_from:g}")
    return folded


# ---------------------------------------------------------------------------- from PyTorch modules

def _leaves(module, prefix=""):
    """[(qualified name, module)] with nested nn.Sequential containers opened."""
    out = []
    for name, child in module.named_children():
        full = f"{prefix}{name}"
        if type(child) is nn.Sequential:
            out += _leaves(child, full + ".")
        else:
            out.append((full, child))
    return out


# Functions a forward may call, as the modules they equal (argument names after the input, in order).
_FUNCTIONS = {
    F.relu: (nn.ReLU, ()), torch.relu: (nn.ReLU, ()),
    F.sigmoid: (nn.Sigmoid, ()), torch.sigmoid: (nn.Sigmoid, ()),
    F.leaky_relu: (nn.LeakyReLU, ("negative_slope",)),
    F.gelu: (nn.GELU, ()),
    torch.flatten: (nn.Flatten, ("start_dim", "end_dim")),
    F.max_pool2d: (nn.MaxPool2d, ("kernel_size", "stride", "padding", "dilation", "ceil_mode",
                                  "return_indices")),
    F.avg_pool2d: (nn.AvgPool2d, ("kernel_size", "stride", "padding", "ceil_mode",
                                  "count_include_pad", "divisor_override")),
    F.adaptive_avg_pool2d: (nn.AdaptiveAvgPool2d, ("output_size",)),
}
_METHODS = {"relu": (nn.ReLU, ()), "sigmoid": (nn.Sigmoid, ()),
            "flatten": (nn.Flatten, ("start_dim", "end_dim"))}
_IDENTITIES = {F.dropout, torch.dropout, "contiguous"}   # the identity in eval


def _equivalent(cls, names, node):
    """The module equal to a function call: its arguments after the input, by name."""
    kwargs = dict(zip(names, node.args[1:]), **node.kwargs)
    kwargs.pop("inplace", None)
    if cls is nn.Flatten:   # torch.flatten and Tensor.flatten start at dim 0 by default
        kwargs.setdefault("start_dim", 0)
    return cls(**kwargs)


def _traced_leaves(module):
    """[(name, module)] for a module whose forward is a chain of layers (each call taking the
    previous one's output), read with torch.fx; functions (F.relu, torch.flatten, x.view(N, -1),
    ...) become the modules they equal."""
    import torch.fx

    what = type(module).__name__
    try:
        graph = torch.fx.symbolic_trace(module).graph
    except Exception as exc:   # fx raises many kinds (TraceError, TypeError, ...) on dynamic code
        raise ValueError(f"from_torch cannot read {what}.forward as a chain of layers (torch.fx: "
                         f"{exc}); put its layers in an nn.Sequential") from None
    modules = dict(module.named_modules())
    leaves, current, scalars, used = [], None, set(), set()

    def refuse(node, why):
        return ValueError(f"from_torch: {what}.forward, at {node.format_node()}: {why}")

    for node in graph.nodes:
        if node.op == "placeholder":
            if current is not None:
                raise refuse(node, "a second input; cnncore networks take one")
            current = node
            continue
        if node.op == "output":
            if node.args[0] is not current:
                raise refuse(node, "returns something other than the last layer's output")
            break
        if (node.op == "call_method" and node.target == "size"
                or node.op == "call_function" and node.target is getattr
                and node.args[1:] == ("shape",)
                or node.op == "call_function" and node.target is operator.getitem
                and node.args[0] in scalars):
            scalars.add(node)   # the batch size, for x.view(x.size(0), -1)
            continue
        if not node.args or node.args[0] is not current or any(
                isinstance(a, torch.fx.Node) and a not in scalars
                for a in (*node.args[1:], *node.kwargs.values())):
            raise refuse(node, "not a chain of layers (each call must take the previous "
                               "output, and only it)")
        current = node
        if node.op == "call_module":
            m = modules[node.target]
            if any(True for _ in m.parameters()) and node.target in used:
                raise refuse(node, f"{node.target!r} is called twice; cnncore layers share no "
                                   f"weights")
            used.add(node.target)
            leaves.append((node.target, m))
        elif node.target in _IDENTITIES:
            continue
        elif node.op == "call_function" and node.target in _FUNCTIONS:
            leaves.append((node.name, _equivalent(*_FUNCTIONS[node.target], node)))
        elif node.op == "call_method" and node.target in _METHODS:
            leaves.append((node.name, _equivalent(*_METHODS[node.target], node)))
        elif node.op == "call_method" and node.target in ("view", "reshape"):
            dims = node.args[1:]
            if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
                dims = tuple(dims[0])
            batch = [d == -1 or d in scalars for d in dims]
            if len(dims) != 2 or not batch[0] or not (dims[1] == -1 or isinstance(dims[1], int)):
                raise refuse(node, "only a view / reshape to (N, -1) or (N, D) has a cnncore layer")
            flatten = nn.Flatten()
            flatten.cnncore_size = None if dims[1] == -1 else dims[1]
            leaves.append((node.name, flatten))
        else:
            target = getattr(node.target, "__name__", node.target)
            raise refuse(node, f"{target} has no cnncore layer")
    return leaves


def _pair(value, label, what):
    """An int from an int or an (a, a) pair; refuses unequal pairs (cnncore has one value)."""
    if isinstance(value, int):
        return value
    a, b = value
    if a != b:
        raise ValueError(f"{label}: {what} {tuple(value)} differs between height and width; "
                         f"cnncore's layers have one value")
    return int(a)


def _array(tensor, dtype):
    return tensor.detach().cpu().numpy().astype(dtype, copy=True)


def _conv(name, m, dtype, label):
    if m.groups != 1 or tuple(m.dilation) != (1, 1):
        raise ValueError(f"{label}: groups and dilation must be 1 (cnncore has neither)")
    if m.padding_mode not in ("zeros", "replicate"):
        raise ValueError(f"{label}: padding_mode {m.padding_mode!r}; cnncore has 'zeros' and "
                         f"'replicate'")
    kh, kw = m.kernel_size
    stride = _pair(m.stride, label, "stride")
    if m.padding == "valid":
        pad = 0
    elif m.padding == "same":
        if kh != kw or kh % 2 == 0 or stride != 1:
            raise ValueError(f"{label}: padding='same' with kernel {m.kernel_size} pads unevenly")
        pad = (kh - 1) // 2
    else:
        pad = _pair(m.padding, label, "padding")
    W = _array(m.weight, dtype)
    b = _array(m.bias, dtype) if m.bias is not None else np.zeros(W.shape[0], dtype)
    return Convolution(W, b, stride, pad, padding_mode=m.padding_mode)


def _pool(m, cls, label):
    if m.ceil_mode:
        raise ValueError(f"{label}: ceil_mode=True; cnncore's pooling floors the output size")
    kh, kw = (m.kernel_size,) * 2 if isinstance(m.kernel_size, int) else m.kernel_size
    stride = _pair(m.stride if m.stride is not None else m.kernel_size, label, "stride")
    pad = _pair(m.padding, label, "padding")
    return cls(kh, kw, stride, pad)


def _bn(m, cls, dtype, label):
    if m.running_mean is None:
        raise ValueError(f"{label}: track_running_stats=False normalises with the batch's own "
                         f"statistics in eval; cnncore's batch norm uses running statistics")
    C = m.num_features
    gamma = _array(m.weight, dtype) if m.weight is not None else np.ones(C, dtype)
    beta = _array(m.bias, dtype) if m.bias is not None else np.zeros(C, dtype)
    running_var = fold_eps(_array(m.running_var, np.float64), m.eps, BN_EPS, label).astype(dtype)
    momentum = 0.9 if m.momentum is None else 1.0 - float(m.momentum)
    return cls(gamma, beta, momentum, _array(m.running_mean, dtype), running_var)


def from_torch(module, input_dim, *, dtype=None):
    from ..networks import Sequential
    from ..networks._base import check_input_dim

    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    input_dim = check_input_dim(input_dim, (1, 3))
    named = type(module) is nn.Sequential   # a traced forward's names are fx's: textbook keys
    leaves = _leaves(module) if named else _traced_leaves(module)
    if dtype is None:
        dtypes = {p.dtype for p in module.parameters()}
        dtype = np.float32 if dtypes == {torch.float32} else np.float64
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    shape = input_dim
    layers = []      # [(key, layer)]
    i = 0
    while i < len(leaves):
        name, m = leaves[i]
        nxt = leaves[i + 1] if i + 1 < len(leaves) else (None, None)
        label = f"module {name!r} ({type(m).__name__})"
        taken = 1
        if type(m) is nn.Flatten and (m.start_dim, m.end_dim) != (1, -1):
            raise ValueError(f"{label}: only Flatten(1, -1) has a cnncore layer")
        if getattr(m, "cnncore_size", None) not in (None, int(np.prod(shape))):
            raise ValueError(f"{label}: a view to (N, {m.cnncore_size}) of {shape} samples "
                             f"changes the batch; cnncore flattens to (N, {int(np.prod(shape))})")
        if type(m) in (nn.Dropout, nn.Identity):
            i += 1    # the identity in eval (nn.Dropout rescales in training only)
            continue
        if type(m) is nn.Conv2d:
            layer = _conv(name, m, dtype, label)
            if type(nxt[1]) is nn.ReLU and nxt[0] == f"{name}_relu":
                layer, taken = ConvReLU(layer.W, layer.b, layer.stride, layer.pad,
                                        padding_mode=layer.padding_mode), 2
        elif type(m) is nn.Flatten and type(nxt[1]) is nn.Linear and name == f"{nxt[0]}_flatten":
            shape = (int(np.prod(shape)),)   # Affine flattens by itself: this is the Flatten
            i += 1                             # to_torch put before it
            continue
        elif type(m) is nn.Linear:
            if len(shape) != 1:
                raise ValueError(f"{label}: applied to a {shape} tensor it acts on the last axis "
                                 f"only; cnncore's Affine flattens (put an nn.Flatten before it)")
            W = np.ascontiguousarray(_array(m.weight, dtype).T)
            b = _array(m.bias, dtype) if m.bias is not None else np.zeros(W.shape[1], dtype)
            layer = Affine(W, b)
        elif (type(m) is nn.Flatten and type(nxt[1]) is nn.BatchNorm1d and len(shape) == 3
              and i + 2 < len(leaves) and type(leaves[i + 2][1]) is nn.Unflatten
              and tuple(leaves[i + 2][1].unflattened_size) == shape):
            # Flatten, BatchNorm1d(C*H*W), Unflatten: the textbook's per-activation batch norm
            name, label = nxt[0], f"module {nxt[0]!r} (BatchNorm1d)"
            layer, taken = _bn(nxt[1], BatchNormalization, dtype, label), 3
        elif type(m) is nn.BatchNorm1d:
            if len(shape) != 1:
                raise ValueError(f"{label}: cnncore normalises (N, D) input only")
            layer = _bn(m, BatchNormalization, dtype, label)
        elif type(m) is nn.BatchNorm2d:
            layer = _bn(m, SpatialBatchNormalization, dtype, label)
        elif type(m) is nn.MaxPool2d:
            if m.return_indices or _pair(m.dilation, label, "dilation") != 1:
                raise ValueError(f"{label}: dilation and return_indices are not cnncore's")
            layer = _pool(m, Pooling, label)
        elif type(m) is nn.AvgPool2d:
            if not m.count_include_pad or m.divisor_override is not None:
                raise ValueError(f"{label}: cnncore's average pooling counts the padding "
                                 f"(count_include_pad=True, no divisor_override)")
            layer = _pool(m, AvgPooling, label)
        elif type(m) is nn.AdaptiveAvgPool2d:
            if m.output_size not in (1, (1, 1)):
                raise ValueError(f"{label}: only AdaptiveAvgPool2d(1) has a cnncore layer")
            if len(shape) != 3:
                raise ValueError(f"{label}: needs (C, H, W) input, got {shape}")
            if type(nxt[1]) is nn.Flatten and (nxt[1].start_dim, nxt[1].end_dim) == (1, -1):
                layer, taken = GlobalAvgPooling(), 2
            else:
                layer = AvgPooling(shape[1], shape[2], stride=1)
        elif type(m) is TextbookDropout:
            layer = Dropout(m.p)
        elif type(m) is nn.LeakyReLU:
            layer = LeakyReLU(float(m.negative_slope))
        elif type(m) is nn.GELU:
            if m.approximate != "tanh":
                raise ValueError(f"{label}: approximate={m.approximate!r}; cnncore's GELU is the "
                                 f"tanh approximation (nn.GELU(approximate='tanh'))")
            layer = GELU()
        elif type(m) in (nn.ReLU, nn.Sigmoid, nn.Flatten):
            layer = {nn.ReLU: Relu, nn.Sigmoid: Sigmoid, nn.Flatten: Flatten}[type(m)]()
        else:
            raise ValueError(f"{label} has no cnncore layer; from_torch takes Conv2d, Linear, "
                             f"ReLU, LeakyReLU, GELU(approximate='tanh'), Sigmoid, MaxPool2d, "
                             f"AvgPool2d, AdaptiveAvgPool2d(1), BatchNorm1d, BatchNorm2d, "
                             f"Dropout, Flatten")
        try:
            shape = tuple(layer.output_shape(shape))
        except ValueError as exc:
            raise ValueError(f"{label} cannot take an input of shape {shape}: {exc}") from None
        layers.append((name.rpartition(".")[2], layer))
        i += taken
    if not layers:
        raise ValueError("the module holds no layer with a cnncore counterpart")
    keys = [key for key, _ in layers]
    if named and all(not key.isdigit() for key in keys) and len(set(keys)) == len(keys):
        return Sequential(OrderedDict(layers), input_dim=input_dim, dtype=dtype)
    return Sequential([layer for _, layer in layers], input_dim=input_dim, dtype=dtype)


def save_state_dict(state, path):
    """torch.save(state, path), atomically (a failure leaves no partial file)."""
    with atomic_write(path) as f:
        torch.save(state, f)
