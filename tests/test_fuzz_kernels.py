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
and the arrays cnncore.kernels allocates there (outputs, convolution tiles) sit between guard zones
that are checked after the call, so an out-of-bounds write fails the example even when it does not
crash. (This found the im2col overrun for windows lying wholly in the left padding.)

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

from cnncore import kernels as K
from cnncore import reference as R

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
}
WINDOW = {"filter_h", "filter_w", "pool_h", "pool_w"}
SCALARS = WINDOW | {"stride", "pad"}
IMAGES = {"input_data", "x"}           # (N, C, H, W) inputs
FLOAT_ARRAYS = {"input_data", "x", "col", "dout", "W", "b", "out"}
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
    # Stands in for cnncore.kernels.np: every array the wrapper allocates (outputs, tiles) sits
    # between two guard zones of a byte pattern, checked after the call.
    GUARD, BYTE = 4096, 0xA5

    def __init__(self):
        self.buffers = []

    def __getattr__(self, name):
        return getattr(np, name)

    def empty(self, shape, dtype=float):
        shape = tuple(shape) if np.iterable(shape) else (shape,)
        n = int(np.prod(shape, dtype=np.int64))
        buf = np.empty(n + 2 * self.GUARD, dtype)
        buf.view(np.uint8)[...] = self.BYTE
        self.buffers.append(buf)
        return buf[self.GUARD:self.GUARD + n].reshape(shape)

    def zeros(self, shape, dtype=float):
        a = self.empty(shape, dtype)
        a[...] = 0
        return a

    def damaged(self):
        return [b.shape for b in self.buffers
                if (b[:self.GUARD].view(np.uint8) != self.BYTE).any()
                or (b[-self.GUARD:].view(np.uint8) != self.BYTE).any()]


rd, wr = sys.stdin.buffer, sys.stdout.buffer
while True:
    head = rd.read(8)
    if len(head) < 8:
        break
    module, name, args, trace = pickle.loads(rd.read(struct.unpack("<Q", head)[0]))
    args = [unpack(a) for a in args]
    fn = getattr(importlib.import_module(module), name)
    if trace:
        tracemalloc.start()
    target = sys.modules[fn.__module__]
    guarded = target.np = GuardedNumpy() if module == "cnncore.kernels" and not trace else np
    try:
        reply = ("ok", fn(*args))
        if guarded is not np and guarded.damaged():
            reply = ("raise", AssertionError(
                f"{name} wrote outside the arrays it allocated: {guarded.damaged()}"))
    except BaseException as exc:
        reply = ("raise", exc)
    target.np = np
    peak = tracemalloc.get_traced_memory()[1] if trace else 0
    tracemalloc.stop()
    data = pickle.dumps(reply + (peak,))
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
        self.proc = subprocess.Popen([sys.executable, "-c", WORKER], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE)

    def call(self, module, name, args, trace=False):
        """-> (result or None, exception or None, peak traced bytes)."""
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        data = pickle.dumps((module, name, tuple(pack(a) for a in args), trace))
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
        status, value, peak = pickle.loads(self.proc.stdout.read(int.from_bytes(head, "little")))
        return (value, None, peak) if status == "ok" else (None, value, peak)

    def close(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)


WORKER_PROCESS = Worker()


@pytest.fixture(scope="module", autouse=True)
def _write_stats():
    yield
    WORKER_PROCESS.close()
    path = os.environ.get("CNNCORE_FUZZ_STATS")
    if path:
        with open(path, "a") as f:
            for (module, name, outcome), n in sorted(STATS.items()):
                f.write(json.dumps({"file": "kernels", "module": module, "entry": name,
                                    "outcome": outcome, "cases": n}) + "\n")


# ------------------------------------------------------------------------------------ valid calls

@st.composite
def geometries(draw, family):
    # Strides up to 6 and pads larger than the window reach windows lying wholly in the padding.
    g = dict(N=draw(st.integers(0, 3)), C=draw(st.integers(1, 3)), H=draw(st.integers(1, 9)),
             W=draw(st.integers(1, 9)), stride=draw(st.integers(1, 6)), FN=draw(st.integers(1, 4)))
    if family == "pool":  # max pooling needs pad < window
        g["pad"] = pad = draw(st.integers(0, 2))
        g["fh"] = draw(st.integers(pad + 1, min(pad + 4, g["H"] + 2 * pad)))
        g["fw"] = draw(st.integers(pad + 1, min(pad + 4, g["W"] + 2 * pad)))
    elif draw(st.booleans()):
        g["pad"] = pad = draw(st.integers(0, 3))
        g["fh"] = draw(st.integers(1, min(5, g["H"] + 2 * pad)))
        g["fw"] = draw(st.integers(1, min(5, g["W"] + 2 * pad)))
    else:  # pad larger than the window, large strides: windows wholly inside the padding
        g["fh"], g["fw"] = draw(st.integers(1, 2)), draw(st.integers(1, 2))
        g["pad"] = pad = draw(st.integers(max(g["fh"], g["fw"]) + 1, 4))
        g["stride"] = draw(st.integers(3, 9))
    g["OH"] = (g["H"] + 2 * pad - g["fh"]) // g["stride"] + 1
    g["OW"] = (g["W"] + 2 * pad - g["fw"]) // g["stride"] + 1
    g["dtype"] = draw(st.sampled_from([np.float32, np.float64]))
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


def run(module, name, call, trace=False):
    """Call module.name(*call) in the worker: -> (result, exception, peak traced bytes)."""
    return WORKER_PROCESS.call(module.__name__, name, call.values(), trace)


def check_works(module, name, call):
    got, error, _ = run(module, name, call)
    if error is not None:
        raise error
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


def check_raises(module, name, call, expect):
    got, error, peak = run(module, name, call, trace=expect.no_alloc)
    assert error is not None, f"no error; returned {got!r}"
    message = f"{type(error).__name__}({str(error)!r})"
    assert isinstance(error, expect.types), f"{message} is not a {expect.types}"
    assert any(n in str(error) for n in expect.names), f"{message} names none of {expect.names}"
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
    if ENTRY_POINTS[name][0] == "pool":
        big = data.draw(st.sampled_from([2**40, 2**61]))
        changed = dict(pool_h=big + 1, pool_w=big + 1, pad=big, stride=big)
    else:
        big = data.draw(st.sampled_from([2**40, 2**61, 2**62]))
        changed = dict(stride=big, pad=big)
    call.update(changed)
    return Raises(ValueError, *changed, "too large", no_alloc=True)


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
        if isinstance(expect, Works):
            check_works(module, name, call)
        else:
            check_raises(module, name, call, expect)


def test_every_mutation_is_reachable():
    """Each mutation applies to at least one entry point (a typo in `applies` would hide it)."""
    rng = np.random.default_rng(0)
    g = dict(N=2, C=2, H=5, W=6, stride=1, FN=3, pad=1, fh=2, fw=3, OH=6, OW=6, dtype=np.float64)
    for kind, mutations in MUTATIONS.items():
        reached = {m for name in ENTRY_POINTS for m, (applies, _) in mutations.items()
                   if applies(name, valid_call(name, g, rng))}
        assert reached == set(mutations), kind
