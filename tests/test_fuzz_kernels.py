"""Fuzz campaign for the kernel boundary: every function of cnncore.kernels and cnncore.reference.

Each example builds a valid call on a small random geometry (empty batches included), then applies one
mutation drawn from a catalogue:

- odd-but-valid inputs (non-contiguous, negative-stride, Fortran, broadcast and read-only arrays,
  lists, float16/integer/big-endian dtypes, NaN and Inf values, NumPy integer parameters, a scalar
  bias): the call must work and match cnncore.reference on plain contiguous copies, in the dtype the
  README promises;
- bad inputs (wrong ndim, refused dtypes, bad strides/pads/windows, mismatched shapes, bad arg_max,
  sizes past the limits): the call must raise ValueError or TypeError whose message names the
  argument. Huge sizes must be refused before anything is allocated (traced with tracemalloc).

Every call runs in a worker process (a crash fails the example instead of killing the test run),
and every array cnncore allocates there (outputs from the output cache, convolution tiles, scratch)
sits between guard zones that are checked after the call, so an out-of-bounds write fails the
example even when it does not crash (this found the im2col overrun for windows lying wholly in the
left padding). The worker also notes any array a compiled kernel changed outside the guards:
test_every_output_is_guarded fails on such an output. Convolutions force each algorithm of
cnncore._conv.select through the configuration (on geometries it can run: Winograd's 3x3 with up to
40 channels, the AVX2 rows and 16-filter blocks in float32) and check in a trace that it ran.

Set CNNCORE_FUZZ_STATS=path to get the number of cases run per entry point and mutation (JSON
lines). ``HYPOTHESIS_PROFILE=thorough`` runs about 17x more examples.
"""
import collections
import ctypes
import json
import os
import pickle
import select
import signal
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import cnncore
from cnncore import _cpu
from cnncore import kernels as K
from cnncore import reference as R
from cnncore._conv import select as conv_select
from cnncore._conv.avx2_rows import ROWS_MAX_WIDTH

pytestmark = pytest.mark.skipif(os.name != "posix", reason="the worker process needs POSIX pipes")

# name -> (family, parameter names in call order)
ENTRY_POINTS = {
    "im2col": ("unfold", ("input_data", "filter_h", "filter_w", "stride", "pad")),
    "col2im": ("unfold", ("col", "input_shape", "filter_h", "filter_w", "stride", "pad")),
    "max_pool_forward": ("pool", ("x", "pool_h", "pool_w", "stride", "pad")),
    "max_pool_backward": ("pool", ("dout", "arg_max", "input_shape", "pool_h", "pool_w", "stride",
                                   "pad")),
    "avg_pool_forward": ("pool", ("x", "pool_h", "pool_w", "stride", "pad")),
    "avg_pool_backward": ("pool", ("dout", "input_shape", "pool_h", "pool_w", "stride", "pad")),
    "conv_forward": ("conv", ("x", "W", "b", "stride", "pad")),
    "conv_backward": ("conv", ("dout", "x", "W", "stride", "pad")),
    "conv_bias_relu_forward": ("conv", ("x", "W", "b", "stride", "pad")),
    "conv_bias_relu_backward": ("conv", ("dout", "x", "W", "out", "stride", "pad")),
    "pad_replicate": ("pad", ("x", "pad")),
    "pad_replicate_backward": ("pad", ("dx_padded", "pad")),
}
WINDOW = {"filter_h", "filter_w", "pool_h", "pool_w"}
SCALARS = WINDOW | {"stride", "pad"}
IMAGES = {"input_data", "x"}           # (N, C, H, W) inputs
FLOAT_ARRAYS = {"input_data", "x", "col", "dout", "W", "b", "out", "dx_padded"}
LIMIT = 2**48                           # cnncore._validate._MAX_ELEMENTS
STATS = collections.Counter()

# Examples per entry point: twice the profile's count for the compiled kernels (120 in the default
# profile, 2000 in the thorough one), the profile's count for the references. Each example checks
# one odd-but-valid variant and one bad input.
FUZZ_KERNELS = settings(max_examples=2 * settings.default.max_examples)
FUZZ_REFERENCE = settings(max_examples=settings.default.max_examples)


# ------------------------------------------------------------------------- the isolated worker
# Every fuzzed call runs in a child process, so a crashing kernel fails one example (and hypothesis
# shrinks it) instead of killing the test run. The child limits its address space (unless it runs
# under AddressSanitizer, which needs a huge one), so an attempt to allocate a huge array fails fast,
# and traces allocations with tracemalloc when asked to check that nothing big was allocated.
# Arrays cross as their raw memory plus shape, strides and flags, so that strided, negative-stride,
# broadcast and read-only inputs arrive as they are (pickle would hand over contiguous copies).
WORKER = r"""
import faulthandler, os, pickle, resource, struct, sys, tracemalloc, importlib
import numpy as np
faulthandler.enable()


def unpack(v):
    if isinstance(v, tuple) and len(v) == 7 and v[0] == "__array__":
        _, raw, dtype, shape, strides, offset, writeable = v
        v = np.ndarray(shape, dtype, buffer=bytearray(raw), offset=offset, strides=strides)
        v.flags.writeable = writeable
    return v


if "asan" not in os.environ.get("LD_PRELOAD", ""):
    try:
        resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))
    except (ValueError, OSError):  # not settable everywhere (and not enforced on macOS)
        pass


class GuardedNumpy:
    # Every array cnncore allocates during a call (outputs from cnncore._memory, scratch and tiles
    # from np.empty/np.zeros in any cnncore module) sits between two guard zones of a byte pattern,
    # checked after the call. The output cache is off here (CNNCORE_OUTPUT_CACHE_MB=0), and install()
    # rebinds every name a cnncore module holds for numpy or the cache's empty/zeros.
    GUARD, BYTE = 4096, 0xA5

    def __init__(self):
        self.buffers = []

    def __getattr__(self, name):
        return getattr(np, name)

    def empty(self, shape, dtype=float, order="C"):
        shape = tuple(int(s) for s in shape) if np.iterable(shape) else (int(shape),)
        n = int(np.prod(shape, dtype=np.int64))
        buf = np.empty(n + 2 * self.GUARD, dtype)
        buf.view(np.uint8)[...] = self.BYTE
        self.buffers.append(buf)
        return buf[self.GUARD:self.GUARD + n].reshape(shape)

    def zeros(self, shape, dtype=float, order="C"):
        a = self.empty(shape, dtype)
        a[...] = 0
        return a

    def guarded(self, a):
        return any(np.may_share_memory(a, b[self.GUARD:-self.GUARD]) for b in self.buffers)

    def damaged(self):
        return [b.shape for b in self.buffers
                if (b[:self.GUARD].view(np.uint8) != self.BYTE).any()
                or (b[-self.GUARD:].view(np.uint8) != self.BYTE).any()]


WATCHED = ("activation", "adam", "conv", "conv_avx2", "im2col", "padding", "pooling", "winograd")


def install(guard, info):
    # Rebind numpy and the cache's allocators in every loaded cnncore module, and wrap the compiled
    # kernels (cnncore._ext.*) to note every call and any array a kernel changed outside the
    # guarded allocations (info["unguarded"]): -> undo list.
    import cnncore.kernels
    from cnncore import _ext
    from cnncore._ext import output_cache
    swap = {id(np): guard, id(output_cache.empty): guard.empty, id(output_cache.zeros): guard.zeros}
    undo = []
    for mod_name, mod in list(sys.modules.items()):
        if mod_name.split(".")[0] != "cnncore" or mod is None:
            continue
        for attr, value in list(vars(mod).items()):
            if id(value) in swap:
                undo.append((mod, attr, value))
                setattr(mod, attr, swap[id(value)])
    for mod in (getattr(_ext, m) for m in WATCHED):
        for attr, value in list(vars(mod).items()):
            if callable(value) and not isinstance(value, type) and not attr.startswith("_"):
                undo.append((mod, attr, value))
                setattr(mod, attr, watch(value, attr, guard, info))
    return undo


def watch(fn, name, guard, info):
    def call(*args):
        info["kernel_calls"] += 1
        before = [(i, a, a.tobytes()) for i, a in enumerate(args) if isinstance(a, np.ndarray)
                  and a.flags.writeable and not guard.guarded(a)]
        try:
            return fn(*args)
        finally:
            info["unguarded"] += [(name, i) for i, a, raw in before if a.tobytes() != raw]
    return call


rd, wr = sys.stdin.buffer, sys.stdout.buffer
while True:
    head = rd.read(8)
    if len(head) < 8:
        break
    module, name, args, trace, config = pickle.loads(rd.read(struct.unpack("<Q", head)[0]))
    import cnncore
    from cnncore._conv import select as conv_select
    guard = GuardedNumpy() if module.split(".")[0] == "cnncore" and not trace else None
    args = [guard.empty(a[1], a[2]) if isinstance(a, tuple) and a[:1] == ("__guarded__",)
            else unpack(a) for a in args]
    info = {"guarded": 0, "unguarded": [], "ran": [], "kernel_calls": 0}
    undo = install(guard, info) if guard is not None else []
    fn = getattr(importlib.import_module(module), name)
    if trace:
        tracemalloc.start()
    try:
        with cnncore.config_context(**config), conv_select.trace() as steps:
            reply = ("ok", fn(*args))
        info["ran"] = [(r.step, r.algorithm) for r in steps]
        if guard is not None:
            info["guarded"] = len(guard.buffers)
            if guard.damaged():
                reply = ("raise", AssertionError(
                    f"{name} wrote outside the arrays it allocated: {guard.damaged()}"))
    except BaseException as exc:
        reply = ("raise", exc)
    for mod, attr, value in undo:
        setattr(mod, attr, value)
    peak = tracemalloc.get_traced_memory()[1] if trace else 0
    tracemalloc.stop()
    data = pickle.dumps(reply + (peak, info))
    wr.write(struct.pack("<Q", len(data)) + data)
    wr.flush()
"""
CALL_TIMEOUT = 120


def pack(value):
    """An array as (raw bytes of the memory it spans, dtype, shape, strides, offset, writeable)."""
    if not isinstance(value, np.ndarray) or value.dtype.hasobject:
        return value
    lo = sum(s * (n - 1) for s, n in zip(value.strides, value.shape) if s < 0)
    hi = sum(s * (n - 1) for s, n in zip(value.strides, value.shape) if s > 0) + value.itemsize
    if value.size == 0:  # (pickle would even lose an empty array's byte order)
        lo = hi = 0
    raw = ctypes.string_at(value.ctypes.data + lo, hi - lo)
    return ("__array__", raw, value.dtype, value.shape, value.strides, -lo,
            value.flags.writeable)


class KernelCrashed(AssertionError):
    """The child process died (a signal) or hung while running a kernel."""


class Worker:
    def __init__(self):
        self.proc = None

    def _start(self):
        env = dict(os.environ, CNNCORE_OUTPUT_CACHE_MB="0")   # guarded allocations instead
        self.proc = subprocess.Popen([sys.executable, "-c", WORKER], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env=env)

    def call(self, module, name, args, trace=False, config=None):
        """-> (result or None, exception or None, peak traced bytes, info): info["ran"] lists the
        convolution steps (step, algorithm) that ran, info["guarded"] counts the guarded
        allocations, info["kernel_calls"] the calls of compiled kernels and info["unguarded"] the
        (kernel, argument index) of arrays a kernel changed outside the guarded allocations. An argument
        ("__guarded__", shape, dtype) becomes a guarded np.empty in the worker."""
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        data = pickle.dumps((module, name, tuple(pack(a) for a in args), trace, config or {}))
        try:
            self.proc.stdin.write(len(data).to_bytes(8, "little") + data)
            self.proc.stdin.flush()
            ready, _, _ = select.select([self.proc.stdout], [], [], CALL_TIMEOUT)
            head = self.proc.stdout.read(8) if ready else b""
        except BrokenPipeError:
            head = b""
        if len(head) < 8:
            self.proc.kill()
            code = self.proc.wait()
            self.proc = None
            what = (f"signal {signal.Signals(-code).name}" if code < 0 else
                    f"exit code {code}" if ready else f"no answer within {CALL_TIMEOUT} s")
            raise KernelCrashed(f"{module}.{name} killed its process ({what})")
        status, value, peak, info = pickle.loads(
            self.proc.stdout.read(int.from_bytes(head, "little")))
        return (value, None, peak, info) if status == "ok" else (None, value, peak, info)

    def close(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)


WORKER_PROCESS = Worker()


NAMES_ARGUMENT = []    # conftest's names_argument, set by _write_stats


@pytest.fixture(scope="module", autouse=True)
def _write_stats(names_argument):
    NAMES_ARGUMENT.append(names_argument)
    yield
    WORKER_PROCESS.close()
    path = os.environ.get("CNNCORE_FUZZ_STATS")
    if path:
        with open(path, "a") as f:
            for (module, name, outcome), n in sorted(STATS.items()):
                f.write(json.dumps({"file": "kernels", "module": module, "entry": name,
                                    "outcome": outcome, "cases": n}) + "\n")


# ------------------------------------------------------------------------------------ valid calls

# The convolution's algorithms (cnncore._conv.select): each example forces one through the
# configuration (or lets "auto" choose) on a geometry it can run, and checks that it ran. Winograd
# needs 3x3 stride 1 (and C >= 32 under "auto"), the AVX2 paths float32 (rows: stride 1 and rows of
# 8 to ROWS_MAX_WIDTH outputs; blocks: any, 16 filters at a time, so up to 40 filters).
CONV_PATHS = ("auto", "im2col", "winograd", "avx2_rows", "avx2_blocks")
AVX2 = _cpu.usable(cnncore.get_config())["avx2_fma"]


@st.composite
def geometries(draw, family):
    # Strides up to 6 and pads larger than the window reach windows lying wholly in the padding.
    g = dict(N=draw(st.integers(0, 3)), C=draw(st.integers(1, 3)), H=draw(st.integers(1, 9)),
             W=draw(st.integers(1, 9)), stride=draw(st.integers(1, 6)), FN=draw(st.integers(1, 4)),
             path="auto", use_avx2=draw(st.booleans()))
    g["dtype"] = draw(st.sampled_from([np.float32, np.float64]))
    path = draw(st.sampled_from(CONV_PATHS if AVX2 else CONV_PATHS[:3])) if family == "conv" else ""
    if family == "pad":    # replicate padding: any pad, wider than the image too
        g.update(pad=draw(st.integers(0, 12)), fh=1, fw=1, stride=1)
    elif family == "pool" and draw(st.booleans()):  # the 2x2 and 3x3 stride-2 loops (AVX2 for 3x3)
        g["fh"] = g["fw"] = k = draw(st.sampled_from([2, 3]))
        g["pad"], g["stride"] = draw(st.integers(0, k - 1)), 2
        g["H"], g["W"] = draw(st.integers(k, 13)), draw(st.integers(k, 13))
    elif family == "pool":  # max pooling needs pad < window
        g["pad"] = pad = draw(st.integers(0, 2))
        g["fh"] = draw(st.integers(pad + 1, min(pad + 4, g["H"] + 2 * pad)))
        g["fw"] = draw(st.integers(pad + 1, min(pad + 4, g["W"] + 2 * pad)))
    elif path == "winograd" or (path == "auto" and draw(st.booleans())):
        g["fh"] = g["fw"] = 3
        g["pad"] = pad = draw(st.integers(0, 2))
        g["stride"] = 1
        g["H"] = draw(st.integers(max(1, 3 - 2 * pad), 11))
        g["W"] = draw(st.integers(max(1, 3 - 2 * pad), 11))
        g["C"] = draw(st.sampled_from([1, 2, 3, 32, 33, 40]))
        g["FN"] = draw(st.sampled_from([1, 3, 16, 32, 35]))
    elif path == "avx2_rows":
        g["dtype"], g["use_avx2"], g["stride"] = np.float32, True, 1
        g["pad"] = pad = draw(st.integers(0, 2))
        g["W"] = draw(st.integers(8, min(ROWS_MAX_WIDTH, 20)))
        g["fh"] = draw(st.integers(1, min(5, g["H"] + 2 * pad)))
        g["fw"] = draw(st.integers(1, min(5, g["W"] + 2 * pad - 7)))
        g["FN"] = draw(st.integers(1, 20))
    elif draw(st.booleans()):
        g["pad"] = pad = draw(st.integers(0, 3))
        g["fh"] = draw(st.integers(1, min(5, g["H"] + 2 * pad)))
        g["fw"] = draw(st.integers(1, min(5, g["W"] + 2 * pad)))
    else:  # pad larger than the window, large strides: windows wholly inside the padding
        g["fh"], g["fw"] = draw(st.integers(1, 2)), draw(st.integers(1, 2))
        g["pad"] = pad = draw(st.integers(max(g["fh"], g["fw"]) + 1, 4))
        g["stride"] = draw(st.integers(3, 9))
    if path in ("avx2_blocks", "auto") and family == "conv" and draw(st.booleans()):
        g["FN"] = draw(st.integers(1, 40))      # full and partial 16-filter blocks
        g["C"] = draw(st.integers(1, 8))        # up to 200 taps: the blocks' rule from 64
    if path == "avx2_blocks":
        g["dtype"], g["use_avx2"] = np.float32, True
    g["path"] = path or "auto"
    g["OH"] = (g["H"] + 2 * g["pad"] - g["fh"]) // g["stride"] + 1
    g["OW"] = (g["W"] + 2 * g["pad"] - g["fw"]) // g["stride"] + 1
    return g


def valid_call(name, g, rng):
    """A valid call of `name` on geometry g: {parameter name: value} in call order."""
    def rand(*shape):
        return rng.standard_normal(shape).astype(g["dtype"])

    N, C, H, W, fh, fw, s, p = (g[k] for k in ("N", "C", "H", "W", "fh", "fw", "stride", "pad"))
    x = rand(N, C, H, W)
    window = {"filter_h": fh, "filter_w": fw, "pool_h": fh, "pool_w": fw, "stride": s, "pad": p}
    values = {"input_data": x, "x": x, "input_shape": (N, C, H, W),
              "col": rand(N * g["OH"] * g["OW"], C * fh * fw), **window}
    if name == "max_pool_backward":
        out, values["arg_max"] = R.max_pool_forward(x, fh, fw, s, p)
        values["dout"] = rand(*out.shape)
    elif name == "avg_pool_backward":
        values["dout"] = rand(N, C, g["OH"], g["OW"])
    elif ENTRY_POINTS[name][0] == "conv":
        values["W"] = rand(g["FN"], C, fh, fw)
        values["b"] = rand(g["FN"])
        values["dout"] = rand(N, g["FN"], g["OH"], g["OW"])
        values["out"] = R.conv_bias_relu_forward(x, values["W"], values["b"], s, p)
    elif name == "pad_replicate_backward":
        values["dx_padded"] = rand(N, C, H + 2 * p, W + 2 * p)
    return {k: values[k] for k in ENTRY_POINTS[name][1]}


# ----------------------------------------------------------------------------------- expectations

class Works:
    """The mutated call must work and match the reference on plain copies."""


class Raises:
    def __init__(self, types, *names, no_alloc=False):
        self.types, self.names, self.no_alloc = types, names, no_alloc


def plain(value):
    """What the oracle gets: a contiguous writable copy (same dtype), or a Python int."""
    if isinstance(value, (np.ndarray, list)):
        return np.array(value)
    if isinstance(value, tuple):
        return tuple(int(v) for v in value)
    if isinstance(value, (int, np.integer)) or (isinstance(value, np.ndarray) and value.ndim == 0):
        return int(value)
    return value


def expected_dtype(name, call):
    """float32 only when every deciding input is float32 (the convolution: x and W decide)."""
    deciding = ("x", "W") if ENTRY_POINTS[name][0] == "conv" else FLOAT_ARRAYS
    floats = [np.asarray(call[k]) for k in call if k in deciding]
    if all(a.dtype == np.float32 for a in floats):
        return np.dtype(np.float32)
    return np.dtype(np.float64)


def run(module, name, call, trace=False, config=None):
    """Call module.name(*call) in the worker: -> (result, exception, peak traced bytes, info)."""
    return WORKER_PROCESS.call(module.__name__, name, call.values(), trace, config)


def conv_plan(name, call, config):
    """(config, the algorithm expected to run first) of a convolution call: a forced algorithm
    that cannot run the (mutated) call is replaced by "auto"."""
    x, W = np.asarray(call["x"]), np.asarray(call["W"])
    args = (x.shape, W.shape, int(call["stride"]), int(call["pad"]), expected_dtype(name, call))
    try:
        plan = conv_select.select(*args, config={**cnncore.get_config(), **config})
    except ValueError:
        config = dict(config, conv_algorithm="auto")
        plan = conv_select.select(*args, config={**cnncore.get_config(), **config})
    if name.endswith("forward"):
        return config, ("forward", plan.forward)
    if plan.weight_grad == "avx2_rows" and not np.isfinite(W).all():
        return config, None    # the row layout's dx needs finite filters: the rules' next one
    return config, ("gradients", plan.weight_grad)


def check_works(module, name, call, config=None):
    expect_ran = None
    if module is K and ENTRY_POINTS[name][0] == "conv":
        config, expect_ran = conv_plan(name, call, config)
    got, error, _, info = run(module, name, call, config=config)
    if error is not None:
        raise error
    if module is K:
        assert not info["unguarded"], f"kernels wrote unguarded arrays: {info['unguarded']}"
        if expect_ran is not None:
            assert info["ran"][:1] == [expect_ran], (info["ran"], expect_ran, config)
        for step, algorithm in info["ran"]:
            STATS[("kernels", name, f"ran {step} {algorithm}")] += 1
    want = getattr(R, name)(*(plain(v) for v in call.values()))
    got = got if isinstance(got, tuple) else (got,)
    want = want if isinstance(want, tuple) else (want,)
    assert len(got) == len(want)
    dtype = expected_dtype(name, call)
    for a, b in zip(got, want):
        assert type(a) is np.ndarray and a.shape == b.shape and a.flags.c_contiguous
        if name == "max_pool_forward" and a.dtype.kind == "i":   # arg_max
            np.testing.assert_array_equal(a, b)
            continue
        assert a.dtype == b.dtype == dtype, (a.dtype, b.dtype, dtype)
        tol = 2e-4 if dtype == np.float32 else 1e-10
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol, equal_nan=True)


def check_raises(module, name, call, expect, config=None):
    got, error, peak, _ = run(module, name, call, trace=expect.no_alloc, config=config)
    assert error is not None, f"no error; returned {got!r}"
    message = f"{type(error).__name__}({str(error)!r})"
    assert isinstance(error, expect.types), f"{message} is not a {expect.types}"
    assert any(NAMES_ARGUMENT[0](str(error), n) for n in expect.names), \
        f"{message} names none of {expect.names}"
    assert peak < 16 << 20, f"{peak} bytes allocated before refusing a huge size"


# ---------------------------------------------------------------------------------------- mutations
# Each mutation: (applies(name, call) -> bool, mutate(name, call, g, data, rng) -> Works | Raises).
# Every example checks one odd-but-valid variant and one bad input on the same geometry.
MUTATIONS = {"valid": {}, "bad": {}}


def mutation(applies, kind="bad"):
    def register(fn):
        MUTATIONS[kind][fn.__name__] = (applies, fn)
        return fn
    return register


def valid_mutation(applies):
    return mutation(applies, "valid")


def arrays_of(call, kinds=FLOAT_ARRAYS | {"arg_max"}):
    return [k for k, v in call.items() if k in kinds and isinstance(v, np.ndarray)]


def pick(data, options):
    return data.draw(st.sampled_from(sorted(options)))


@valid_mutation(lambda name, call: True)
def unchanged(name, call, g, data, rng):
    return Works()


@valid_mutation(lambda name, call: True)
def odd_layout(name, call, g, data, rng):
    """Same values in a non-contiguous, reversed, Fortran, read-only or list form."""
    key = pick(data, arrays_of(call))
    a = call[key]
    how = data.draw(st.sampled_from(["strided", "reversed", "fortran", "readonly", "transposed"]
                                    + ["list"] * (a.size > 0)))  # [].tolist() loses the shape
    if how == "strided":      # every other element of a bigger buffer
        big = np.zeros(tuple(2 * s + 1 for s in a.shape), a.dtype)
        view = big[tuple(slice(1, None, 2) for _ in a.shape)]
        view[...] = a
        call[key] = view
    elif how == "reversed":   # negative strides on every axis
        call[key] = np.ascontiguousarray(a[(slice(None, None, -1),) * a.ndim])[
            (slice(None, None, -1),) * a.ndim]
    elif how == "fortran":
        call[key] = np.asfortranarray(a)
    elif how == "transposed":  # a transposed view of a transposed copy: same values, odd strides
        call[key] = np.ascontiguousarray(a.T).T
    elif how == "readonly":
        a = a.copy()
        a.flags.writeable = False
        call[key] = a
    else:
        call[key] = a.tolist()
    return Works()


@valid_mutation(lambda name, call: any(a.ndim and a.shape[0] for a in
                                 (call[k] for k in arrays_of(call))))
def broadcast(name, call, g, data, rng):
    """A zero-stride (broadcast) array: the first entry repeated along axis 0."""
    key = pick(data, [k for k in arrays_of(call) if call[k].ndim and call[k].shape[0]])
    a = call[key]
    call[key] = np.broadcast_to(a[:1], a.shape)
    return Works()


@valid_mutation(lambda name, call: True)
def other_dtype(name, call, g, data, rng):
    """float16, integers, big-endian floats: computed in float64 (arg_max: any integer dtype)."""
    key = pick(data, arrays_of(call))
    if key == "arg_max":
        dtype = data.draw(st.sampled_from(["i1", "u1", "i2", "u4", ">i8", "i4"]))
    else:
        dtype = data.draw(st.sampled_from(["f2", "i4", "u1", "i8", ">f8", ">f4", "f4", "f8"]))
    call[key] = (call[key] * (1 if key == "arg_max" or dtype[-2] == "f" else 10)).astype(dtype)
    return Works()


@valid_mutation(lambda name, call: bool(arrays_of(call, FLOAT_ARRAYS)))
def special_values(name, call, g, data, rng):
    """NaN and +-Inf propagate as NumPy would (max pooling: NaN wins, as np.argmax)."""
    key = pick(data, arrays_of(call, FLOAT_ARRAYS))
    a = call[key].copy()
    if a.size:
        flat = a.reshape(-1)
        idx = rng.choice(a.size, size=max(1, a.size // 5), replace=False)
        flat[idx] = rng.choice([np.nan, np.inf, -np.inf], size=idx.size)
    call[key] = a
    return Works()


@valid_mutation(lambda name, call: True)
def numpy_scalar_params(name, call, g, data, rng):
    """NumPy integers and 0-d integer arrays are integers; input_shape may be a list or array."""
    key = pick(data, [k for k in call if k in SCALARS or k == "input_shape"])
    value = call[key]
    if key == "input_shape":
        call[key] = data.draw(st.sampled_from([list, np.array]))(value)
    else:
        call[key] = data.draw(st.sampled_from([np.int64, np.uint16, np.int8, np.array]))(value)
    return Works()


@valid_mutation(lambda name, call: "b" in call)
def scalar_bias(name, call, g, data, rng):
    """A scalar or one-element bias is broadcast over the filters, as the textbook allows."""
    b = call["b"]
    call["b"] = data.draw(st.sampled_from([float(b[0]), b[:1], b[:1].reshape(1, 1, 1), np.float32(b[0])]))
    return Works()


# -- bad inputs

@mutation(lambda name, call: bool(arrays_of(call, FLOAT_ARRAYS - {"col", "b"} | {"arg_max"})))
def wrong_ndim(name, call, g, data, rng):
    key = pick(data, arrays_of(call, FLOAT_ARRAYS - {"col", "b"} | {"arg_max"}))
    a = call[key]
    call[key] = data.draw(st.sampled_from([a[None], a[..., None], a[..., 0], np.float64(1.0)]))
    if key == "arg_max":  # a float scalar arg_max fails the dtype check first
        return Raises((ValueError, TypeError), "arg_max")
    return Raises(ValueError, key)


@mutation(lambda name, call: "b" in call)
def wrong_bias(name, call, g, data, rng):
    FN = g["FN"]
    call["b"] = data.draw(st.sampled_from([np.zeros(FN + 1), np.zeros((2, FN)), np.zeros(0)]))
    return Raises(ValueError, "b")


@mutation(lambda name, call: bool(arrays_of(call)))
def refused_dtype(name, call, g, data, rng):
    """bool, complex, object, strings, bytes, datetimes, long double, records: TypeError."""
    key = pick(data, arrays_of(call))
    a = call[key]
    kind = data.draw(st.sampled_from(["?", "c8", "c16", "O", "U", "S", "M8[s]", "g", "record",
                                      "f8" if key == "arg_max" else "strings"]))
    if kind == "strings":
        call[key] = np.full(a.shape, "0.5")
    elif kind == "record":
        call[key] = np.zeros(a.shape, [("a", "f8"), ("b", "f8")])
    elif kind == "g" and np.dtype("g").itemsize <= 8:
        call[key] = a.astype(np.complex128)   # no long double on this platform
    elif kind in ("U", "S"):
        call[key] = a.astype(np.int64).astype(kind)
    elif kind == "M8[s]":
        call[key] = a.astype(np.int64).astype(kind)
    else:
        call[key] = a.astype(kind)
    return Raises(TypeError, key)


@mutation(lambda name, call: True)
def bad_scalar_param(name, call, g, data, rng):
    key = pick(data, [k for k in call if k in SCALARS])
    value = data.draw(st.sampled_from([0, -1, -7, 1.5, 2.0, True, None, "2", 1 + 0j, np.float64(2),
                                       np.array([1, 2])]))
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        if key == "pad" and value == 0:
            value = -1
        call[key] = value
        return Raises(ValueError, key)
    call[key] = value
    return Raises(TypeError, key)


@mutation(lambda name, call: any(k in WINDOW for k in call))
def window_too_large(name, call, g, data, rng):
    key = pick(data, [k for k in call if k in WINDOW])
    size = g["H"] if key.endswith("_h") else g["W"]
    call[key] = size + 2 * call["pad"] + data.draw(st.integers(1, 3))  # still > pad
    return Raises(ValueError, "larger than the padded input")


@mutation(lambda name, call: "W" in call)
def conv_window_too_large(name, call, g, data, rng):
    Wt = call["W"]
    extra = data.draw(st.integers(1, 3))
    call["W"] = np.zeros(Wt.shape[:2] + (g["H"] + 2 * g["pad"] + extra, Wt.shape[3]), Wt.dtype)
    return Raises(ValueError, "larger than the padded input")


@mutation(lambda name, call: ENTRY_POINTS[name][0] == "pool")
def pool_pad_not_smaller_than_window(name, call, g, data, rng):
    call["pad"] = min(call["pool_h"], call["pool_w"]) + data.draw(st.integers(0, 2))
    return Raises(ValueError, "pad")


@mutation(lambda name, call: "W" in call)
def channel_mismatch(name, call, g, data, rng):
    Wt = call["W"]
    C = data.draw(st.sampled_from([c for c in range(1, 5) if c != g["C"]]))
    call["W"] = np.zeros((Wt.shape[0], C) + Wt.shape[2:], Wt.dtype)
    return Raises(ValueError, "channels")


@mutation(lambda name, call: bool(arrays_of(call, IMAGES | {"W"})))
def zero_sized_axis(name, call, g, data, rng):
    key = pick(data, arrays_of(call, IMAGES | {"W"}))
    axis = data.draw(st.integers(0 if key == "W" else 1, 3))
    shape = list(call[key].shape)
    shape[axis] = 0
    call[key] = np.zeros(shape, call[key].dtype)
    return Raises(ValueError, key)


@mutation(lambda name, call: bool(arrays_of(call, {"dout", "out", "arg_max"})))
def mismatched_shape(name, call, g, data, rng):
    """dout / out / arg_max one off in some axis."""
    key = pick(data, arrays_of(call, {"dout", "out", "arg_max"}))
    a = call[key]
    axis = data.draw(st.integers(0, a.ndim - 1))
    shape = list(a.shape)
    shape[axis] += data.draw(st.sampled_from([-1, 1, 2])) if shape[axis] else 1
    call[key] = np.zeros(shape, a.dtype)
    return Raises(ValueError, key)


@mutation(lambda name, call: "col" in call)
def col_wrong_size(name, call, g, data, rng):
    col = call["col"]
    call["col"] = np.zeros(col.size + data.draw(st.sampled_from([-1, 1, 7])) if col.size else 3)
    return Raises(ValueError, "col")


@mutation(lambda name, call: "out" in call)
def out_missing(name, call, g, data, rng):
    call["out"] = None
    return Raises(TypeError, "out")


@mutation(lambda name, call: "arg_max" in call and call["arg_max"].size > 0)
def arg_max_out_of_range(name, call, g, data, rng):
    """Indices outside the window, or (with pad > 0) on padded cells: the kernel would write
    outside dx without the boundary's check."""
    a = call["arg_max"].copy()
    ph, pw = call["pool_h"], call["pool_w"]
    how = data.draw(st.sampled_from(["negative", "too big", "huge"]
                                    + ["padding"] * (call["pad"] > 0)))
    i = tuple(rng.integers(0, s) for s in a.shape)
    if how == "negative":
        a[i] = -1 - rng.integers(0, 1000)
    elif how == "too big":
        a[i] = ph * pw + rng.integers(0, 1000)
    elif how == "huge":
        a[i] = np.iinfo(np.intp).max
    else:
        a[0, 0, 0, 0] = 0   # the top-left cell of the top-left window is padding
    call["arg_max"] = a
    return Raises(ValueError, "arg_max")


@mutation(lambda name, call: "input_shape" in call)
def bad_input_shape(name, call, g, data, rng):
    N, C, H, W = call["input_shape"]
    value = data.draw(st.sampled_from([
        (N, C, H), (N, C, H, W, 1), (N, 0, H, W), (N, C, -H, W), (-1, C, H, W), (N, C, H, 2.0),
        (N, C, H, None), (N, "3", H, W), None, 7, "abcd", (N, True, H, W),
    ]))
    call["input_shape"] = value
    return Raises((ValueError, TypeError), "input_shape")


@mutation(lambda name, call: True)
def huge_scalar(name, call, g, data, rng):
    """Window, stride or pad past the limits: refused before any allocation, never an
    OverflowError from the C conversion or a garbage result."""
    key = pick(data, [k for k in call if k in SCALARS])
    call[key] = data.draw(st.sampled_from([LIMIT + 1, 2**62, 2**63 - 1, 2**63, 2**64, 10**30]))
    if key == "pad" and ENTRY_POINTS[name][0] == "pool":
        return Raises(ValueError, "pad", no_alloc=True)
    return Raises(ValueError, key, "larger than the padded input", "too large", no_alloc=True)


@mutation(lambda name, call: True)
def huge_pad_and_stride(name, call, g, data, rng):
    """A pad so large that H + 2*pad overflows 64 bits in C, with a stride that keeps the output
    tiny (this returned uninitialised memory from im2col before the limit on pad)."""
    if ENTRY_POINTS[name][0] == "pad":
        changed = dict(pad=data.draw(st.sampled_from([2**24, 2**40, 2**47])))
    elif ENTRY_POINTS[name][0] == "pool":
        big = data.draw(st.sampled_from([2**40, 2**61]))
        changed = dict(pool_h=big + 1, pool_w=big + 1, pad=big, stride=big)
    else:
        big = data.draw(st.sampled_from([2**40, 2**61, 2**62]))
        changed = dict(stride=big, pad=big)
    call.update(changed)
    return Raises(ValueError, *changed, "too large", no_alloc=True)


@mutation(lambda name, call: name == "pad_replicate_backward")
def pad_eats_the_image(name, call, g, data, rng):
    """dx_padded must be larger than the border on both sides."""
    call["pad"] = (min(call["dx_padded"].shape[2:]) + 1 + data.draw(st.integers(0, 3))) // 2
    return Raises(ValueError, "dx_padded")


@mutation(lambda name, call: bool(arrays_of(call, FLOAT_ARRAYS - {"b"})))
def huge_broadcast_array(name, call, g, data, rng):
    """A zero-stride array with more than 2**48 elements (no memory behind it)."""
    key = pick(data, arrays_of(call, FLOAT_ARRAYS - {"b"}))
    a = call[key]
    shape = (2**25, 2**25) + a.shape[2:]
    call[key] = np.broadcast_to(np.ones((1,) * len(shape), a.dtype), shape)
    return Raises(ValueError, key, "too large", no_alloc=True)


@mutation(lambda name, call: "input_shape" in call)
def huge_input_shape(name, call, g, data, rng):
    N, C, H, W = call["input_shape"]
    call["input_shape"] = data.draw(st.sampled_from([
        (2**40, 2**20, H, W), (N, C, 2**62, 2**62), (0, C, 2**62, W), (N, 2**63, H, W),
        (2**64, C, H, W),
    ]))
    return Raises(ValueError, "input_shape", "too large", "larger than the padded input",
                  no_alloc=True)


# ---------------------------------------------------------------------------------------- the tests

@pytest.mark.parametrize("name", list(ENTRY_POINTS))
@FUZZ_KERNELS
@given(data=st.data())
def test_fuzz_kernels(name, data):
    fuzz_one(K, name, data)


@pytest.mark.parametrize("name", list(ENTRY_POINTS))
@FUZZ_REFERENCE
@given(data=st.data())
def test_fuzz_reference(name, data):
    fuzz_one(R, name, data)


def fuzz_one(module, name, data):
    g = data.draw(geometries(ENTRY_POINTS[name][0]), label="geometry")
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    for kind in ("valid", "bad"):
        rng = np.random.default_rng(seed)
        call = valid_call(name, g, rng)
        options = sorted(m for m, (applies, _) in MUTATIONS[kind].items() if applies(name, call))
        chosen = data.draw(st.sampled_from(options), label=f"{kind} mutation")
        expect = MUTATIONS[kind][chosen][1](name, call, g, data, rng)
        STATS[(module.__name__.split(".")[-1], name, chosen)] += 1
        STATS[(module.__name__.split(".")[-1], name, "path " + g["path"])] += kind == "valid"
        config = dict(conv_algorithm=g["path"], use_avx2=g["use_avx2"])
        if isinstance(expect, Works):
            check_works(module, name, call, config)
        else:
            check_raises(module, name, call, expect, config)


def test_every_mutation_is_reachable():
    """Each mutation applies to at least one entry point (a typo in `applies` would hide it)."""
    rng = np.random.default_rng(0)
    g = dict(N=2, C=2, H=5, W=6, stride=1, FN=3, pad=1, fh=2, fw=3, OH=6, OW=6, dtype=np.float64)
    for kind, mutations in MUTATIONS.items():
        reached = {m for name in ENTRY_POINTS for m, (applies, _) in mutations.items()
                   if applies(name, valid_call(name, g, rng))}
        assert reached == set(mutations), kind


# ------------------------------------------------------------------------------ the guards guard

GUARD_CASES = [(name, path) for name in ENTRY_POINTS
               for path in (CONV_PATHS if ENTRY_POINTS[name][0] == "conv" else ("auto",))
               if AVX2 or not path.startswith("avx2")]
GUARD_GEOMETRY = dict(N=2, C=32, H=9, W=10, stride=1, FN=17, pad=1, fh=3, fw=3, OH=9, OW=10,
                      dtype=np.float32)


@pytest.mark.parametrize("name, path", GUARD_CASES)
def test_every_output_is_guarded(name, path):
    """Every array a compiled kernel writes (outputs, tiles, scratch) comes from the worker's
    guarded allocator, on every convolution path (forced, and checked that it ran): the output
    cache's allocator is rebound too. Geometry: 3x3 stride 1 with 32 channels and 17 filters (a
    full and a partial 16-filter block) runs on every path."""
    g = dict(GUARD_GEOMETRY)
    if ENTRY_POINTS[name][0] == "pool":
        g.update(stride=2, pad=0, OH=4, OW=4)
    call = valid_call(name, g, np.random.default_rng(1))
    config, expect_ran = (conv_plan(name, call, dict(conv_algorithm=path))
                          if ENTRY_POINTS[name][0] == "conv" else ({}, None))
    assert config.get("conv_algorithm", "auto") == path
    got, error, _, info = run(K, name, call, config=config)
    assert error is None, error
    assert info["kernel_calls"] > 0 and info["guarded"] > 0, info
    assert info["unguarded"] == [], info
    if expect_ran is not None:
        assert info["ran"][:1] == [expect_ran], info["ran"]


def test_an_unguarded_output_is_reported():
    """The check behind test_every_output_is_guarded fails for an output the guard did not make:
    a compiled kernel called with plain arrays as out and mask."""
    x = np.linspace(-1, 1, 50)
    args = (x, np.full(50, 7.0), np.full(50, 7, np.uint8), 1, False)
    _, error, _, info = WORKER_PROCESS.call("cnncore._ext.activation", "relu_forward", args)
    assert error is None and info["unguarded"] == [("relu_forward", 1), ("relu_forward", 2)]
    _, error, _, info = WORKER_PROCESS.call("cnncore.kernels", "relu_forward", (x,))
    assert error is None and info["unguarded"] == [] and info["guarded"] >= 2


@pytest.mark.parametrize("short", [1, 0])
def test_a_write_one_past_an_output_is_caught(short):
    """The mutation proof: a compiled kernel handed an output one element short of what it writes
    (as a kernel miscounting its output would be) writes one element into the guard zone; the
    worker reports it as an AssertionError and survives. With the right size nothing is reported."""
    x = np.random.default_rng(0).standard_normal(1000)
    args = (x, ("__guarded__", (x.size - short,), np.float64), ("__guarded__", (x.size,), np.uint8),
            1, False)
    _, error, _, _ = WORKER_PROCESS.call("cnncore._ext.activation", "relu_forward", args)
    if short:
        assert isinstance(error, AssertionError) and "wrote outside" in str(error), error
    else:
        assert error is None
    assert WORKER_PROCESS.proc.poll() is None     # the same worker lives on: no crash
