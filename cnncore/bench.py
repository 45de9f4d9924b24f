"""``python -m cnncore bench``: the compiled kernels against the NumPy references, timed in one run.

This module is the one place that knows what is benchmarked; the pytest-benchmark suite in
benchmarks/ imports it. The pieces:

- ``CONV_SHAPES``, ``POOL_SHAPES``, ``NET_SHAPES``: the workloads (``quick=True`` marks the --quick subset);
- ``GROUPS``: one group per kernel or network workload, each knowing how to build its inputs, call an
  implementation, and count its FLOPs or bytes;
- ``cases(quick, filters)``: every (group, shape, dtype) to run, as ``Case`` objects;
- ``Case.prepare()`` builds the inputs, ``Prepared.check()`` runs cnncore and the reference on them and
  raises ``AgreementError`` if they differ (so a fast wrong kernel never gets a time), and
  ``Prepared.runner(impl)`` gives the zero-argument callable that is timed.

Implementations: ``"cython"`` is cnncore.kernels (functions looked up at call time, so a monkeypatched
kernel is what runs and is checked), ``"numpy"`` is cnncore.reference, and ``"torch"`` (only if torch
imports; never a dependency) is torch.nn.functional / aten on the same arrays.

Derived columns: a convolution's GFLOP/s (2*M*N*K per GEMM: one for forward, three for forward +
backward) as a fraction of NumPy's matmul on one GEMM of the same M, N, K measured in the same run;
a memory-bound kernel's time as a multiple of its bandwidth floor, (bytes read + bytes written) at the
copy bandwidth of a large ``np.copyto`` measured in the same run (counted as 2 * nbytes / time).
"""
import argparse
import copy
import gc
import inspect
import json
import math
import os
import platform
import statistics
import sys
import time
import tracemalloc
from dataclasses import dataclass

import numpy as np

from . import kernels, reference
from ._threads import get_num_threads
from ._validate import output_size

IMPLS = ("numpy", "cython")
DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
# Largest error allowed, relative to the largest magnitude of the reference output.
TOLERANCE = {np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-10}


class AgreementError(AssertionError):
    """cnncore and the reference disagree on a benchmark's inputs."""


# ------------------------------------------------------------------------------------------- workloads

@dataclass(frozen=True)
class _Window:
    """A k x k window moved by stride over x (N, C, H, W) padded by pad."""
    name: str
    N: int
    C: int
    H: int
    W: int
    k: int
    stride: int
    pad: int = 0
    quick: bool = False

    @property
    def out_hw(self):
        return (output_size(self.H, self.k, self.stride, self.pad),
                output_size(self.W, self.k, self.stride, self.pad))


@dataclass(frozen=True)
class PoolShape(_Window):
    """A pooling window over x (N, C, H, W)."""

    @property
    def label(self):
        return f"({self.N},{self.C},{self.H},{self.W}) {self.k}x{self.k} s{self.stride}"


@dataclass(frozen=True)
class ConvShape(_Window):
    """A convolution: x (N, C, H, W), W (FN, C, k, k)."""
    FN: int = 1

    @property
    def label(self):
        return (f"({self.N},{self.C},{self.H},{self.W}) k{self.k} s{self.stride} p{self.pad} "
                f"FN{self.FN}")

    def gemm(self):
        """(M, N, K) of the convolution as one GEMM: (FN, C*k*k) @ (C*k*k, N*OH*OW)."""
        out_h, out_w = self.out_hw
        return self.FN, self.N * out_h * out_w, self.C * self.k * self.k


@dataclass(frozen=True)
class ArrayShape:
    """An (N, C, H, W) activation for elementwise kernels."""
    name: str
    N: int
    C: int
    H: int
    W: int
    quick: bool = False

    @property
    def label(self):
        return f"({self.N},{self.C},{self.H},{self.W})"


@dataclass(frozen=True)
class MatShape:
    """A fully connected layer: N samples of D features to M outputs."""
    name: str
    N: int
    D: int
    M: int
    quick: bool = False

    @property
    def label(self):
        return f"({self.N},{self.D})x({self.D},{self.M})"

    def gemm(self):
        """(M, N, K) of the forward product, for the %matmul column."""
        return self.N, self.M, self.D


@dataclass(frozen=True)
class NetShape:
    """A network (cnncore.networks class name) at a batch size."""
    name: str
    net: str
    batch: int
    quick: bool = False

    @property
    def label(self):
        return f"{self.net} batch {self.batch}"


CONV_SHAPES = (
    ConvShape("simple", 100, 1, 28, 28, 5, 1, 0, FN=30, quick=True),    # SimpleConvNet conv
    ConvShape("deep16", 100, 16, 28, 28, 3, 1, 1, FN=16),                # DeepConvNet conv 2
    ConvShape("deep32", 100, 32, 14, 14, 3, 1, 1, FN=32, quick=True),    # DeepConvNet conv 3
    ConvShape("cifar", 128, 64, 32, 32, 3, 1, 1, FN=64),                 # a CIFAR-sized layer
)
POOL_SHAPES = (
    PoolShape("simple", 100, 30, 24, 24, 2, 2, quick=True),           # SimpleConvNet pool
    PoolShape("cifar", 128, 64, 32, 32, 2, 2),
    PoolShape("cifar3x3", 128, 64, 32, 32, 3, 2),                     # overlapping windows
)
RELU_SHAPES = (
    ArrayShape("simple", 100, 30, 24, 24, quick=True),                # SimpleConvNet's ReLU
    ArrayShape("deep16", 100, 16, 28, 28),                            # DeepConvNet's first two
    ArrayShape("cifar", 128, 64, 32, 32),
)
# The course networks' layers that have no kernel of their own, against straightforward NumPy.
LAYER_SHAPES = (
    ArrayShape("deep32", 100, 32, 14, 14, quick=True),                # DeepConvNet conv 3's maps
    ArrayShape("cifar", 100, 64, 16, 16),                             # the CIFAR-10 CNN's conv 3-4
)
AFFINE_SHAPES = (
    MatShape("flexible", 100, 12544, 128, quick=True),                # the flexible CNN's fc128
    MatShape("cifar", 100, 4096, 512),                                # the CIFAR-10 CNN's fc512
)
TRAIN_SHAPES = (
    NetShape("simple100", "SimpleConvNet", 100, quick=True),
    NetShape("deep100", "DeepConvNet", 100, quick=True),
    NetShape("lenet100", "lenet5", 100),
    NetShape("flexible100", "flexible_cnn", 100),
    NetShape("cifar100", "cifar10_cnn", 100),
)
PREDICT_SHAPES = TRAIN_SHAPES + (
    NetShape("simple1000", "SimpleConvNet", 1000),
    NetShape("deep1000", "DeepConvNet", 1000),
)
# Peak extra memory of one conv forward at batch 1000 (DeepConvNet layer 2).
MEMORY_SHAPE = ConvShape("deep16x1000", 1000, 16, 28, 28, 3, 1, 1, FN=16)


# ---------------------------------------------------------------------------------------------- groups

def _randn(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


def _conv_inputs(s, dtype, rng, dout=False):
    inputs = {
        "x": _randn(rng, (s.N, s.C, s.H, s.W), dtype),
        "W": _randn(rng, (s.FN, s.C, s.k, s.k), dtype) * np.sqrt(2.0 / (s.C * s.k * s.k)).astype(dtype),
        "b": _randn(rng, (s.FN,), dtype),
    }
    if dout:
        inputs["dout"] = _randn(rng, (s.N, s.FN) + s.out_hw, dtype)
    return inputs


def _pool_inputs(s, dtype, rng):
    x = _randn(rng, (s.N, s.C, s.H, s.W), dtype)
    _, arg_max = reference.max_pool_forward(x, s.k, s.k, s.stride, s.pad)
    return {"x": x, "arg_max": arg_max, "dout": _randn(rng, (s.N, s.C) + s.out_hw, dtype)}


def _relu_inputs(s, dtype, rng):
    shape = (s.N, s.C, s.H, s.W)
    return {"x": _randn(rng, shape, dtype), "dout": _randn(rng, shape, dtype)}


def _matrix_inputs(s, dtype, rng):
    return {"x": _randn(rng, (s.N, s.D), dtype),
            "W": _randn(rng, (s.D, s.M), dtype) * np.sqrt(2.0 / s.D).astype(dtype),
            "b": _randn(rng, (s.M,), dtype), "dout": _randn(rng, (s.N, s.M), dtype)}


def _channel_inputs(s, dtype, rng):
    inputs = _relu_inputs(s, dtype, rng)
    inputs["gamma"] = (1 + 0.1 * _randn(rng, (s.C,), dtype)).astype(dtype)
    inputs["beta"] = _randn(rng, (s.C,), dtype)
    return inputs


def _gelu_forward_backward(m, s, i):
    """The GELU layer against the tanh formula written plainly in NumPy (x*x*x)."""
    x, dout = i["x"], i["dout"]
    if _impl_of(m) == "cython":
        from .layers import GELU

        layer = GELU()
        return layer.forward(x), layer.backward(dout)
    c = np.sqrt(2 / np.pi).astype(x.dtype)
    th = np.tanh(c * (x + 0.044715 * x * x * x))
    grad = 0.5 * (1 + th) + 0.5 * x * (1 - th * th) * c * (1 + 3 * 0.044715 * x * x)
    return 0.5 * x * (1 + th), dout * grad


def _batchnorm2d_forward_backward(m, s, i):
    """Per-channel batch norm in training mode, forward and backward, against plain NumPy."""
    x, dout, gamma, beta = i["x"], i["dout"], i["gamma"], i["beta"]
    if _impl_of(m) == "cython":
        from .layers import SpatialBatchNormalization

        layer = SpatialBatchNormalization(gamma, beta)
        out = layer.forward(x, train_flg=True)
        return out, layer.backward(dout), layer.dgamma, layer.dbeta
    axes, vec = (0, 2, 3), (1, -1, 1, 1)
    mu = x.mean(axis=axes, keepdims=True)
    xc = x - mu
    std = np.sqrt((xc * xc).mean(axis=axes, keepdims=True) + 1e-6)
    xn = xc / std
    dbeta, dgamma = dout.sum(axis=axes), (xn * dout).sum(axis=axes)
    dxn = gamma.reshape(vec) * dout
    dx = (dxn - dxn.mean(axis=axes, keepdims=True)
          - xn * (dxn * xn).mean(axis=axes, keepdims=True)) / std
    return gamma.reshape(vec) * xn + beta.reshape(vec), dx, dgamma, dbeta


def _affine_forward_backward(m, s, i):
    """The Affine layer (kernels.matmul on cnncore's threads) against NumPy's dot products."""
    x, W, b, dout = i["x"], i["W"], i["b"], i["dout"]
    if _impl_of(m) == "cython":
        from .layers import Affine

        layer = Affine(W, b)
        out = layer.forward(x)
        return out, layer.backward(dout), layer.dW, layer.db
    return x @ W + b, dout @ W.T, x.T @ dout, dout.sum(axis=0)


def _relu_forward_backward(m, s, i):
    out, mask = m.relu_forward(i["x"])
    return out, mask, m.relu_backward(i["dout"], mask)


def _im2col_inputs(s, dtype, rng):
    inputs = _conv_inputs(s, dtype, rng)
    out_h, out_w = s.out_hw
    inputs["col"] = _randn(rng, (s.N * out_h * out_w, s.C * s.k * s.k), dtype)
    return inputs


def _nbytes(*arrays):
    return sum(int(a.nbytes) for a in arrays)


@dataclass(frozen=True)
class Group:
    """One benchmark group: a kernel (or network workload) and how to feed it.

    inputs(shape, dtype, rng) -> dict; run(module, shape, inputs) -> tuple of output arrays;
    flops(shape) -> FLOPs of one call, or None; traffic(shape, inputs, outputs) -> bytes one call must
    read and write at least, or None; torch: (prepare(shape, inputs) -> dict of tensors,
    call(shape, tensors) -> result, first(result) -> NumPy array comparable to run(...)[0]) or None.
    """
    name: str
    kind: str           # "conv", "pool", "elementwise", "matrix" or "network"
    shapes: tuple
    inputs: object
    run: object
    flops: object = None
    traffic: object = None
    torch: tuple = None
    check: object = None    # check(prepared) -> None or AgreementError, instead of comparing outputs


def _conv_flops(n_gemms):
    def flops(s):
        M, N, K = s.gemm()
        return 2 * M * N * K * n_gemms
    return flops


def _conv_forward_backward(m, s, i):
    out = m.conv_forward(i["x"], i["W"], i["b"], s.stride, s.pad)
    return (out,) + tuple(m.conv_backward(i["dout"], i["x"], i["W"], s.stride, s.pad))


# torch equivalents (only used when torch imports). Each returns (prepare, call, first).
def _t_inputs(keys):
    def prepare(s, i):
        import torch
        return {k: torch.from_numpy(i[k]) for k in keys}
    return prepare


def _t_im2col():
    def call(s, t):
        import torch.nn.functional as F
        return F.unfold(t["x"], s.k, padding=s.pad, stride=s.stride)   # (N, K, L): its own layout

    def first(r):
        return r.numpy().transpose(0, 2, 1).reshape(-1, r.shape[1])
    return _t_inputs(["x"]), call, first


def _t_col2im():
    def prepare(s, i):
        import torch
        out_h, out_w = s.out_hw
        col = i["col"].reshape(s.N, out_h * out_w, -1).transpose(0, 2, 1)
        return {"col": torch.from_numpy(np.ascontiguousarray(col))}

    def call(s, t):
        import torch.nn.functional as F
        return F.fold(t["col"], (s.H, s.W), s.k, padding=s.pad, stride=s.stride)
    return prepare, call, lambda r: r.numpy()


def _t_pool(kind, backward):
    def prepare(s, i):
        import torch
        import torch.nn.functional as F
        t = {k: torch.from_numpy(i[k]) for k in ("x", "dout")}
        if kind == "max":
            t["indices"] = F.max_pool2d(t["x"], s.k, s.stride, s.pad, return_indices=True)[1]
        return t

    def call(s, t):
        import torch
        import torch.nn.functional as F
        k, st, p = [s.k, s.k], [s.stride, s.stride], [s.pad, s.pad]
        if kind == "max" and backward:
            return torch.ops.aten.max_pool2d_with_indices_backward(t["dout"], t["x"], k, st, p, [1, 1],
                                                                   False, t["indices"])
        if kind == "max":
            return F.max_pool2d(t["x"], s.k, s.stride, s.pad, return_indices=True)
        if backward:
            return torch.ops.aten.avg_pool2d_backward(t["dout"], t["x"], k, st, p, False, True, None)
        return F.avg_pool2d(t["x"], s.k, s.stride, s.pad, count_include_pad=True)

    def first(r):
        return (r[0] if isinstance(r, tuple) else r).numpy()
    return prepare, call, first


def _t_conv(relu=False, backward=False):
    def call(s, t):
        import torch
        import torch.nn.functional as F
        out = F.conv2d(t["x"], t["W"], t["b"], s.stride, s.pad)
        if relu:
            out = F.relu(out)
        if backward:
            grads = torch.ops.aten.convolution_backward(
                t["dout"], t["x"], t["W"], [s.FN], [s.stride] * 2, [s.pad] * 2, [1, 1], False,
                [0, 0], 1, [True, True, True])
            return out, grads
        return out

    def first(r):
        return (r[0] if isinstance(r, tuple) else r).numpy()
    keys = ["x", "W", "b"] + (["dout"] if backward else [])
    return _t_inputs(keys), call, first


def _t_relu():
    def call(s, t):
        import torch
        import torch.nn.functional as F
        out = F.relu(t["x"])
        return out, torch.ops.aten.threshold_backward(t["dout"], out, 0)
    return _t_inputs(["x", "dout"]), call, lambda r: r[0].numpy()


GROUPS = {g.name: g for g in (
    Group("im2col", "conv", CONV_SHAPES, _im2col_inputs,
          lambda m, s, i: (m.im2col(i["x"], s.k, s.k, s.stride, s.pad),),
          traffic=lambda s, i, o: _nbytes(i["x"], o[0]), torch=_t_im2col()),
    Group("col2im", "conv", CONV_SHAPES, _im2col_inputs,
          lambda m, s, i: (m.col2im(i["col"], i["x"].shape, s.k, s.k, s.stride, s.pad),),
          traffic=lambda s, i, o: _nbytes(i["col"], o[0]), torch=_t_col2im()),
    Group("max_pool_forward", "pool", POOL_SHAPES, _pool_inputs,
          lambda m, s, i: m.max_pool_forward(i["x"], s.k, s.k, s.stride, s.pad),
          traffic=lambda s, i, o: _nbytes(i["x"], *o), torch=_t_pool("max", False)),
    Group("max_pool_backward", "pool", POOL_SHAPES, _pool_inputs,
          lambda m, s, i: (m.max_pool_backward(i["dout"], i["arg_max"], i["x"].shape, s.k, s.k,
                                               s.stride, s.pad),),
          traffic=lambda s, i, o: _nbytes(i["dout"], i["arg_max"], o[0]), torch=_t_pool("max", True)),
    Group("avg_pool_forward", "pool", POOL_SHAPES, _pool_inputs,
          lambda m, s, i: (m.avg_pool_forward(i["x"], s.k, s.k, s.stride, s.pad),),
          traffic=lambda s, i, o: _nbytes(i["x"], o[0]), torch=_t_pool("avg", False)),
    Group("avg_pool_backward", "pool", POOL_SHAPES, _pool_inputs,
          lambda m, s, i: (m.avg_pool_backward(i["dout"], i["x"].shape, s.k, s.k, s.stride, s.pad),),
          traffic=lambda s, i, o: _nbytes(i["dout"], o[0]), torch=_t_pool("avg", True)),
    Group("conv_forward", "conv", CONV_SHAPES, _conv_inputs,
          lambda m, s, i: (m.conv_forward(i["x"], i["W"], i["b"], s.stride, s.pad),),
          flops=_conv_flops(1), torch=_t_conv()),
    Group("conv_forward_backward", "conv", CONV_SHAPES,
          lambda s, dtype, rng: _conv_inputs(s, dtype, rng, dout=True), _conv_forward_backward,
          flops=_conv_flops(3), torch=_t_conv(backward=True)),
    Group("conv_bias_relu_forward", "conv", CONV_SHAPES, _conv_inputs,
          lambda m, s, i: (m.conv_bias_relu_forward(i["x"], i["W"], i["b"], s.stride, s.pad),),
          flops=_conv_flops(1), torch=_t_conv(relu=True)),
    # The Relu layer (no issue target): x -> out, mask; dout, mask -> dx.
    Group("relu_forward_backward", "elementwise", RELU_SHAPES, _relu_inputs, _relu_forward_backward,
          traffic=lambda s, i, o: _nbytes(i["x"], i["dout"], *o, o[1]), torch=_t_relu()),
    # Layers without kernels of their own: "numpy" is the straightforward NumPy version.
    Group("gelu_forward_backward", "elementwise", LAYER_SHAPES, _relu_inputs,
          _gelu_forward_backward, traffic=lambda s, i, o: _nbytes(i["x"], i["dout"], *o)),
    Group("batchnorm2d_train", "elementwise", LAYER_SHAPES, _channel_inputs,
          _batchnorm2d_forward_backward, traffic=lambda s, i, o: _nbytes(i["x"], i["dout"], *o)),
    Group("affine_forward_backward", "matrix", AFFINE_SHAPES, _matrix_inputs,
          _affine_forward_backward, flops=lambda s: 6 * s.N * s.D * s.M),
)}


# ----------------------------------------------------------------------------------------------- cases

@dataclass(frozen=True)
class Case:
    group: Group
    shape: object
    dtype: np.dtype

    @property
    def id(self):
        return f"{self.group.name}-{self.shape.name}-{self.dtype.name}"

    def __str__(self):
        return f"{self.shape.label} {self.dtype.name}"

    def prepare(self, seed=0):
        return Prepared(self, self.group.inputs(self.shape, self.dtype, np.random.default_rng(seed)))


def _matches(name, filters):
    return not filters or any(f in name for f in filters)


def cases(quick=False, filters=None, shapes=None, groups=None):
    """Every Case to run, in order: the groups whose name contains one of filters (all without),
    each over its shapes (only the quick ones with quick=True) and both dtypes.

    shapes: optional {group kind ("conv", "pool", "elementwise", "matrix", "network"): shapes} replacing the
    standard ones.
    groups: optional exact group names to keep.
    """
    out = []
    for name, group in all_groups().items():
        if not _matches(name, filters) or (groups is not None and name not in groups):
            continue
        for shape in (shapes or {}).get(group.kind, group.shapes):
            if quick and not shape.quick:
                continue
            for dtype in DTYPES:
                out.append(Case(group, shape, dtype))
    return out


def compare(got, want, dtype, what="output"):
    """Raise AgreementError unless got matches want (tuples of arrays) within TOLERANCE[dtype]."""
    if len(got) != len(want):
        raise AgreementError(f"{what}: {len(got)} outputs, reference has {len(want)}")
    for j, (a, b) in enumerate(zip(got, want)):
        a, b = np.asarray(a), np.asarray(b)
        name = f"{what}[{j}]"
        if a.shape != b.shape:
            raise AgreementError(f"{name}: shape {a.shape}, reference {b.shape}")
        if b.dtype.kind in "biu":   # indices and masks: exact
            if not np.array_equal(a, b):
                bad = int(np.count_nonzero(a != b))
                raise AgreementError(f"{name}: {bad} of {b.size} entries differ from the reference")
            continue
        if a.dtype != b.dtype:
            raise AgreementError(f"{name}: dtype {a.dtype}, reference {b.dtype}")
        if b.size == 0:
            continue
        scale = float(np.max(np.abs(b)))
        err = float(np.max(np.abs(a.astype(np.float64) - b))) if np.all(np.isfinite(a)) else math.inf
        if not err <= TOLERANCE[np.dtype(dtype)] * max(scale, 1e-30):
            raise AgreementError(f"{name}: max |value - reference| = {err:.3g} "
                                 f"(reference max |value| {scale:.3g}, dtype {np.dtype(dtype).name})")


class Prepared:
    """A Case with its inputs built; check() and runner(impl) use the same inputs."""

    def __init__(self, case, inputs):
        self.case = case
        self.inputs = inputs
        self.seconds = {}   # impl -> seconds of the call made by check()
        self._torch = None

    def module(self, impl):
        return {"cython": kernels, "numpy": reference}[impl]

    def runner(self, impl):
        """A zero-argument callable doing one call of impl ("cython", "numpy" or "torch")."""
        g, s = self.case.group, self.case.shape
        if impl == "torch":
            _, call, _ = g.torch
            tensors = self._torch_inputs()
            return lambda: call(s, tensors)
        module = self.module(impl)
        return lambda: g.run(module, s, self.inputs)

    def _torch_inputs(self):
        if self._torch is None:
            self._torch = self.case.group.torch[0](self.case.shape, self.inputs)
        return self._torch

    def check(self, torch=False):
        """Run cnncore and the reference once each; raise AgreementError if they differ.

        Returns the reference's outputs. With torch=True, torch's first output is checked too.
        """
        results = {}
        for impl in IMPLS:
            start = time.perf_counter()
            results[impl] = self.runner(impl)()
            self.seconds[impl] = time.perf_counter() - start
        dtype = self.case.dtype
        if self.case.group.check is not None:
            self.case.group.check(self)
        else:
            compare(results["cython"], results["numpy"], dtype, f"{self.case.id} cnncore")
        if torch and self.case.group.torch is not None:
            start = time.perf_counter()
            got = self.runner("torch")()
            self.seconds["torch"] = time.perf_counter() - start
            compare((self.case.group.torch[2](got),), results["numpy"][:1], dtype,
                    f"{self.case.id} torch")
        return results["numpy"]

    def flops(self):
        f = self.case.group.flops
        return f(self.case.shape) if f else None

    def traffic(self, outputs):
        t = self.case.group.traffic
        return t(self.case.shape, self.inputs, outputs) if t else None


# ---------------------------------------------------------------------------------------------- timing

def plan(seconds, budget, min_sample=0.005):
    """(rounds, iterations) for a call taking about `seconds`: each sample lasts >= min_sample and
    all samples together about `budget`, with 3 to 50 rounds."""
    seconds = max(seconds, 1e-7)
    iterations = max(1, math.ceil(min_sample / seconds))
    rounds = int(budget / (seconds * iterations))
    return min(50, max(3, rounds)), iterations


# Seconds to wait before timing an implementation. After a call, a thread pool keeps its workers
# spinning for a while (OpenBLAS's for up to about 0.2 s); timed right after the reference, cnncore
# would pay for the reference's spinning BLAS threads (BENCHMARKS.md, Reproduce).
SETTLE_SECONDS = 0.25

# Seconds of untimed calls after the pause: after a pause, calls of a few milliseconds run slower
# for tens of milliseconds while the cores come back up to speed, so one warm-up call is not enough.
WARMUP_SECONDS = 0.2


def warm_up(fn, seconds=WARMUP_SECONDS):
    """Call fn once, then again until `seconds` have passed since the first call started."""
    start = time.perf_counter()
    fn()
    while time.perf_counter() - start < seconds:
        fn()


def time_blocks(runners, repeat, iterations, settle=SETTLE_SECONDS, warmup=WARMUP_SECONDS):
    """Median seconds per call of each runner (dict name -> callable): for each in turn, wait settle
    seconds, call it untimed for warmup seconds (at least once), then take repeat samples of
    iterations[name] calls each.

    Each case takes a second or two, far shorter than this machine's throttling swings (tens of
    seconds), so timing in blocks compares the implementations under the same conditions.
    """
    samples = {name: [] for name in runners}
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for name, fn in runners.items():
            time.sleep(settle)
            warm_up(fn, warmup)
            n = iterations[name]
            for _ in range(repeat):
                start = time.perf_counter()
                for _ in range(n):
                    fn()
                samples[name].append((time.perf_counter() - start) / n)
    finally:
        if gc_was_enabled:
            gc.enable()
    return {name: statistics.median(v) for name, v in samples.items()}, samples


def copy_bandwidth(nbytes=256 << 20, repeat=5):
    """Bytes per second of np.copyto between two large arrays, counting read + write."""
    src = np.ones(nbytes // 8)
    dst = np.empty_like(src)
    np.copyto(dst, src)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        np.copyto(dst, src)
        times.append(time.perf_counter() - start)
    return 2 * src.nbytes / statistics.median(times)


def matmul_gflops(M, N, K, dtype, repeat=5, seed=0):
    """GFLOP/s of np.matmul((M, K), (K, N)) in dtype, median of repeat calls."""
    rng = np.random.default_rng(seed)
    a = _randn(rng, (M, K), dtype)
    b = _randn(rng, (K, N), dtype)
    c = np.empty((M, N), dtype)
    np.matmul(a, b, out=c)
    times = []
    for _ in range(max(1, repeat)):
        start = time.perf_counter()
        np.matmul(a, b, out=c)
        times.append(time.perf_counter() - start)
    return 2.0 * M * N * K / statistics.median(times) / 1e9


def peak_memory(impl, dtype, shape=MEMORY_SHAPE, seed=0):
    """Peak bytes allocated (tracemalloc) during one conv_forward of impl, above what existed before."""
    inputs = _conv_inputs(shape, np.dtype(dtype), np.random.default_rng(seed))
    module = {"cython": kernels, "numpy": reference}[impl]
    gc.collect()
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        out = module.conv_forward(inputs["x"], inputs["W"], inputs["b"], shape.stride, shape.pad)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        if started:
            tracemalloc.stop()
    return peak, out.nbytes


# ------------------------------------------------------------------------------------- network groups

def use_reference(network, module=reference):
    """Make every layer of network compute with module (cnncore.reference by default): the layers look
    their kernels up on their ``kernels`` attribute. Returns the network."""
    layers = network.layers.values() if isinstance(network.layers, dict) else network.layers
    for layer in list(layers) + [network.last_layer]:
        if hasattr(layer, "kernels"):
            layer.kernels = module
    return network


def _net_inputs(s, dtype, rng):
    """Two copies of the network with the same parameters: cnncore's and the reference one."""
    from . import networks, optimizer

    cls = getattr(networks, s.net)
    nets = {impl: cls(dtype=dtype) for impl in IMPLS}
    for key, value in nets["cython"].params.items():
        nets["numpy"].params[key][...] = value      # in place: the layers hold these arrays
    use_reference(nets["numpy"])
    x = rng.random((s.batch, *nets["cython"].input_dim)).astype(dtype)
    t = rng.integers(0, 10, s.batch)
    predict_kw = {"train_flg": False} if "train_flg" in inspect.signature(cls.predict).parameters else {}
    # Dropout draws from the global RNG: every step starts from the same state, so both networks see
    # the same masks (restoring a state costs microseconds).
    optimizers = {impl: optimizer.Adam() for impl in IMPLS}
    optimizers["numpy"].compiled = False    # the textbook's NumPy statements
    return {"x": x, "t": t, "nets": nets, "predict_kw": predict_kw, "rng_state": np.random.get_state(),
            "optimizers": optimizers}


def _impl_of(module):
    return "numpy" if module is reference else "cython"


def _train_step(m, s, i):
    """net.gradient(x, t) then Adam.update: one training step. Returns the gradients."""
    impl = _impl_of(m)
    net = i["nets"][impl]
    np.random.set_state(i["rng_state"])
    grads = net.gradient(i["x"], i["t"])
    i["optimizers"][impl].update(net.params, grads)
    return tuple(grads[key] for key in net.params)


def _layer_forward(layer, x, t=None):
    if t is not None:
        return layer.forward(x, t)
    return layer.forward(x, True) if "train_flg" in inspect.signature(layer.forward).parameters \
        else layer.forward(x)


def _check_layer_by_layer(prepared):
    """The train_step check: one training pass of cnncore's network in which every layer that has
    kernels is compared with a twin on the reference kernels, given the same input (forward) and the
    same dout (backward: dx and the parameter gradients).

    Comparing the two networks' gradients end to end does not work in float32: a pre-activation within
    rounding of zero, or two near-equal max-pool candidates, go either way in two correct
    implementations, and the gradient path behind them switches on or off. In DeepConvNet float32, 21
    of 100 random initialisations put the largest gradient difference above 1e-4 of the largest
    gradient (up to 1.3e-2; the median 5e-6), with the compiled convolution on im2col + GEMM as with
    the AVX2 kernel.
    """
    i, dtype, what = prepared.inputs, prepared.case.dtype, prepared.case.id
    net = i["nets"]["cython"]
    layers = net._layer_list() + [net.last_layer]
    twins = []
    x = i["x"]
    for k, layer in enumerate(layers):
        t = i["t"] if layer is net.last_layer else None
        twin = None
        if hasattr(layer, "kernels"):
            twin = copy.copy(layer)
            twin.kernels = reference
            want = _layer_forward(twin, x, t)
        x = _layer_forward(layer, x, t)
        if twin is not None:
            compare((x,), (want,), dtype, f"{what} layer {k} ({type(layer).__name__}) forward")
        twins.append(twin)
    dout = 1
    for k, (layer, twin) in reversed(list(enumerate(zip(layers, twins)))):
        d_in = dout
        dout = layer.backward(d_in)
        if twin is None:
            continue
        got, want = [dout], [twin.backward(d_in)]
        for attr in ("dW", "db", "dgamma", "dbeta"):
            if getattr(layer, attr, None) is not None:
                got.append(getattr(layer, attr))
                want.append(getattr(twin, attr))
        compare(got, want, dtype, f"{what} layer {k} ({type(layer).__name__}) backward")


def _predict(m, s, i):
    return (i["nets"][_impl_of(m)].predict(i["x"], **i["predict_kw"]),)


def _network_groups():
    """train_step and predict groups (need cnncore.networks and cnncore.optimizer)."""
    return {
        "train_step": Group("train_step", "network", TRAIN_SHAPES, _net_inputs, _train_step,
                            check=_check_layer_by_layer),
        "predict": Group("predict", "network", PREDICT_SHAPES, _net_inputs, _predict),
    }


def networks_available():
    try:
        import cnncore.networks  # noqa: F401
        import cnncore.optimizer  # noqa: F401
    except ImportError:
        return False
    return True


def all_groups():
    """Kernel groups, then the network groups when cnncore.networks is importable."""
    groups = dict(GROUPS)
    if networks_available():
        groups.update(_network_groups())
    return groups


# --------------------------------------------------------------------------------------------- targets

# Issue 4's targets (medians, same run): the least speed-up over the reference, by group (pooling:
# every pooling group; networks: by class, training step and inference alike) and dtype; pooling within
# MAX_X_FLOOR of its bandwidth floor; a convolution at MIN_MATMUL_FRACTION of NumPy's matmul; peak
# memory of the batch-1000 conv forward at most MAX_MEMORY_RATIO of the reference's.
SPEEDUP_TARGETS = {
    "pool": {"float32": 10, "float64": 10},
    "im2col": {"float32": 3, "float64": 3},
    "col2im": {"float32": 4, "float64": 4},
    "conv_forward_backward": {"float32": 4, "float64": 2},
    "conv_bias_relu_forward": {"float32": 8, "float64": 3},
    "SimpleConvNet": {"float32": 4, "float64": 3},
    "DeepConvNet": {"float32": 6, "float64": 2.5},
}
MAX_X_FLOOR = 3.0
MIN_MATMUL_FRACTION = 0.6
MAX_MEMORY_RATIO = 0.25


def _target_key(row):
    if row["group"] in ("train_step", "predict"):
        return row["shape"].split()[0]          # the network's class name
    return "pool" if "pool" in row["group"] else row["group"]


def missed_targets(row):
    """The targets a table row misses, as short strings ('10x': speed-up, '3fl': bandwidth floor,
    '60%mm': matmul fraction); [] when it meets them all (or has none)."""
    key = _target_key(row)
    missed = []
    speedup = SPEEDUP_TARGETS.get(key, {}).get(row["dtype"])
    if speedup and row["speedup"] < speedup:
        missed.append(f"{speedup:g}x")
    if key == "pool" and row.get("x_floor", 0) > MAX_X_FLOOR:
        missed.append(f"{MAX_X_FLOOR:g}fl")
    if row.get("matmul_fraction") is not None and row["matmul_fraction"] < MIN_MATMUL_FRACTION:
        missed.append(f"{MIN_MATMUL_FRACTION:.0%}mm")
    return missed


def _target_cell(row):
    has_target = _target_key(row) in SPEEDUP_TARGETS or row.get("matmul_fraction") is not None
    missed = missed_targets(row)
    return ("MISS " + ",".join(missed)) if missed else ("ok" if has_target else "-")


# ----------------------------------------------------------------------------------------------- table

def _torch_module():
    if os.environ.get("CNNCORE_BENCH_TORCH", "1") == "0":
        return None
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(get_num_threads())
    return torch


def machine_info():
    """What the numbers depend on: CPU, cores, versions, BLAS, thread settings."""
    from ._info import info

    result = info()
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    result["cpu"] = cpu
    result["cpus"] = os.cpu_count()
    result["OMP_WAIT_POLICY"] = os.environ.get("OMP_WAIT_POLICY")
    result["OPENBLAS_NUM_THREADS"] = os.environ.get("OPENBLAS_NUM_THREADS")
    return result


def run(quick=False, repeat=None, filters=None, torch=None, memory=True, shapes=None, log=None):
    """Time every selected case; return a dict with 'machine', 'rows' and 'memory'.

    shapes: optional {group kind: tuple of shapes} to replace the standard ones (tests use tiny ones).
    log: a callable given progress lines (None: quiet).
    """
    repeat = repeat or (3 if quick else 7)
    min_sample = 0.002 if quick else 0.01
    warmup = WARMUP_SECONDS / 4 if quick else WARMUP_SECONDS
    torch_mod = _torch_module() if torch is None or torch else None
    say = log or (lambda line: None)
    result = {"machine": machine_info(), "settings": {"quick": quick, "repeat": repeat,
                                                      "threads": get_num_threads(), "warmup_s": warmup,
                                                      "torch": getattr(torch_mod, "__version__", None)}}
    bw = copy_bandwidth(64 << 20 if quick else 256 << 20)
    result["copy_bandwidth_GBs"] = bw / 1e9
    result["matmul_2048_GFLOPs"] = {} if quick else {
        d.name: matmul_gflops(2048, 2048, 2048, d) for d in DTYPES}
    gemm_cache = {}
    rows = []
    for case in cases(quick, filters, shapes):
        say(f"{case.id} ...")
        prepared = case.prepare()
        use_torch = torch_mod is not None and case.group.torch is not None
        ref_out = prepared.check(torch=use_torch)
        runners = {impl: prepared.runner(impl) for impl in IMPLS + (("torch",) if use_torch else ())}
        iterations = {impl: plan(prepared.seconds[impl], 0, min_sample)[1] for impl in runners}
        med, samples = time_blocks(runners, repeat, iterations, warmup=warmup)
        row = {"group": case.group.name, "shape": case.shape.label, "dtype": case.dtype.name,
               "numpy_ms": med["numpy"] * 1e3, "cython_ms": med["cython"] * 1e3,
               "speedup": med["numpy"] / med["cython"],
               "torch_ms": med["torch"] * 1e3 if "torch" in med else None,
               "samples_ms": {k: [x * 1e3 for x in v] for k, v in samples.items()}}
        flops = prepared.flops()
        if flops:
            key = case.shape.gemm() + (case.dtype.name,)
            if key not in gemm_cache:
                gemm_cache[key] = matmul_gflops(*case.shape.gemm(), case.dtype, repeat=repeat)
            row["gflops"] = flops / med["cython"] / 1e9
            row["matmul_gflops"] = gemm_cache[key]
            row["matmul_fraction"] = row["gflops"] / gemm_cache[key]
        traffic = prepared.traffic(ref_out)
        if traffic:
            row["floor_ms"] = traffic / bw * 1e3
            row["x_floor"] = med["cython"] / (traffic / bw)
        rows.append(row)
        del prepared, ref_out
    result["rows"] = rows
    if memory and _matches("memory", filters):
        result["memory"] = []
        for dtype in DTYPES:
            say(f"memory {dtype.name} ...")
            mem = {impl: peak_memory(impl, dtype) for impl in ("cython", "numpy")}
            result["memory"].append({
                "shape": MEMORY_SHAPE.label, "dtype": dtype.name, "output_MB": mem["cython"][1] / 1e6,
                "numpy_MB": mem["numpy"][0] / 1e6, "cython_MB": mem["cython"][0] / 1e6,
                "ratio": mem["cython"][0] / mem["numpy"][0]})
    return result


def _fmt(value, spec, width):
    return f"{value:{width}{spec}}" if value is not None else " " * (width - 1) + "-"


def _warmup_text(settings):
    warmup = settings.get("warmup_s")   # absent from runs before the timed warm-up: one call
    return "one untimed call" if warmup is None else f"{warmup:g} s of untimed calls"


def format_table(result):
    """The result of run() as text: a header on the machine, the timing table, the memory table."""
    m = result["machine"]
    lines = [
        f"machine: {m['cpu']}, {m['cpus']} CPUs; Python {m['python']}, NumPy {m['numpy']} "
        f"({m['blas']}), Cython {m['built_with_cython']}, cnncore {m['cnncore']}",
        f"threads: kernels {result['settings']['threads']}, OMP_NUM_THREADS={m['OMP_NUM_THREADS']}, "
        f"OMP_WAIT_POLICY={m['OMP_WAIT_POLICY']}, OPENBLAS_CORETYPE={m['OPENBLAS_CORETYPE']}, "
        f"OPENBLAS_NUM_THREADS={m['OPENBLAS_NUM_THREADS']}; torch {result['settings']['torch']}",
        f"medians of {result['settings']['repeat']} samples, timed in blocks after a {SETTLE_SECONDS} s "
        f"pause and {_warmup_text(result['settings'])}; copy bandwidth "
        f"{result['copy_bandwidth_GBs']:.1f} GB/s (np.copyto, read + write)"
        + "".join(f"; matmul 2048^3 {d} {g:.0f} GFLOP/s"
                  for d, g in result.get("matmul_2048_GFLOPs", {}).items()),
        "",
    ]
    has_torch = any(r.get("torch_ms") is not None for r in result["rows"])
    head = (f"{'group':24s} {'shape':34s} {'dtype':7s} {'numpy ms':>9s} {'cnncore ms':>10s} "
            f"{'speed-up':>8s} {'GFLOP/s':>8s} {'matmul':>7s} {'%matmul':>7s} {'floor ms':>8s} "
            f"{'x floor':>7s}" + (f" {'torch ms':>9s}" if has_torch else "") + "  targets")
    lines += [head, "-" * len(head)]
    for r in result["rows"]:
        frac = r.get("matmul_fraction")
        lines.append(
            f"{r['group']:24s} {r['shape']:34s} {r['dtype']:7s} {r['numpy_ms']:9.2f} "
            f"{r['cython_ms']:10.2f} {r['speedup']:7.1f}x {_fmt(r.get('gflops'), '.1f', 8)} "
            f"{_fmt(r.get('matmul_gflops'), '.0f', 7)} {_fmt(frac * 100 if frac else None, '.0f', 7)} "
            f"{_fmt(r.get('floor_ms'), '.2f', 8)} {_fmt(r.get('x_floor'), '.1f', 7)}"
            + (f" {_fmt(r.get('torch_ms'), '.2f', 9)}" if has_torch else "") + f"  {_target_cell(r)}")
    lines.append(f"targets: speed-up (Nx), pooling within {MAX_X_FLOOR:g}x its bandwidth floor (fl), "
                 f"convolution at {MIN_MATMUL_FRACTION:.0%} of matmul GFLOP/s on the same M,N,K (mm)")
    if result.get("memory"):
        lines += ["", "peak extra memory of one conv_forward (tracemalloc; includes the output)",
                  f"{'shape':34s} {'dtype':7s} {'output MB':>9s} {'numpy MB':>9s} {'cnncore MB':>10s} "
                  f"{'cnncore/numpy':>13s}  target <= {MAX_MEMORY_RATIO:g}"]
        for r in result["memory"]:
            lines.append(f"{r['shape']:34s} {r['dtype']:7s} {r['output_MB']:9.1f} {r['numpy_MB']:9.1f} "
                         f"{r['cython_MB']:10.1f} {r['ratio']:13.3f}  "
                         + ("ok" if r["ratio"] <= MAX_MEMORY_RATIO else "MISS"))
    return "\n".join(lines)


def bench_main(argv):
    parser = argparse.ArgumentParser(
        prog="python -m cnncore bench",
        description="Time cnncore's compiled kernels against the NumPy references (same inputs, "
                    "agreement checked first, each timed in a block after a pause, medians).")
    parser.add_argument("--quick", action="store_true", help="small shapes only, 3 samples each")
    parser.add_argument("--repeat", type=int, default=None, metavar="N",
                        help="timed samples per implementation (default 7, --quick 3)")
    parser.add_argument("--filter", action="append", default=None, metavar="GROUP",
                        help="only groups whose name contains GROUP (repeatable; 'memory' selects "
                             "the peak-memory measurement). Groups: "
                             + ", ".join(list(GROUPS) + ["train_step", "predict"]))
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--no-torch", action="store_true", help="skip the torch column")
    parser.add_argument("-v", "--verbose", action="store_true", help="print progress to stderr")
    args = parser.parse_args(argv)
    if args.repeat is not None and args.repeat < 1:
        parser.error("--repeat must be >= 1")
    if args.filter and not cases(filters=args.filter) and not _matches("memory", args.filter):
        parser.error(f"--filter {' '.join(args.filter)} matches no group; groups: "
                     + ", ".join(all_groups()) + ", memory")
    log = (lambda line: print(line, file=sys.stderr, flush=True)) if args.verbose else None
    result = run(quick=args.quick, repeat=args.repeat, filters=args.filter,
                 torch=False if args.no_torch else None, log=log)
    print(format_table(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0
