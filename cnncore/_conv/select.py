"""Which algorithm runs a convolution: one pure function over one table of rules.

select() takes the layer's shapes, stride, pad and compute dtype, the configuration and the CPU's
features, and returns a Plan: the algorithm of the forward, of the weight gradient and of the input
gradient, each with its reason. With conv_algorithm='auto' the first rule of a table that applies
wins; a forced algorithm runs wherever it can (see CAN_RUN) and raises ValueError where it cannot.
The measurements behind the rules are in BENCHMARKS.md and docs/kernels.md.

Two choices depend on values, not shapes, and stay with the kernels (kernels.py): the row layout's
input gradient needs finite filters, and a gradient or Winograd tile that comes out non-finite is
computed again by the next rule (its sums would make NaN where the reference has none).
"""
import contextlib
import contextvars
from typing import NamedTuple

import numpy as np

from .. import _config, _cpu
from .._validate import output_size
from .avx2_rows import ROWS_MAX_WIDTH

# The rules' thresholds (docs/kernels.md gives the measurements that set them).
AVX2_MIN_TAPS = 64                  # weights per filter (C*FH*FW) from which the block kernel wins
AVX2_MIN_FILTERS = 8                # the block kernel's 16-wide filter blocks, at least half full
AVX2_MAX_FILTERS = 32               # beyond, the GEMM's M = FN is large enough for BLAS
AVX512_MAX_FILTERS = 128            # the AVX-512 blocks' forward still as fast as the GEMM
ROWS_BACKWARD_MAX_TAPS = 144        # 16-filter layers take the row layout's gradients up to this
WINOGRAD_MIN_CHANNELS = 32          # the 16 products' K = C must be this large to pay off
WINOGRAD_BACKWARD_MIN_PIXELS = 64   # smaller planes: transforms too small beside the other GEMM
AVX512_GRAD_MIN_PIXELS = 64         # smaller output planes: d's 16-output blocks mostly idle


class Layer(NamedTuple):
    """What the rules look at: input (C, H, W), filters (FN, FH, FW), stride, pad, compute dtype,
    output height and width, whether the input gradient is wanted."""
    C: int
    H: int
    W: int
    FN: int
    FH: int
    FW: int
    stride: int
    pad: int
    dtype: np.dtype
    out_h: int
    out_w: int
    need_dx: bool

    @property
    def taps(self):
        return self.C * self.FH * self.FW

    @property
    def float32(self):
        return self.dtype == np.float32


class Settings(NamedTuple):
    """What the algorithms are told: tile size, and whether AVX2 (avx2_fma: AVX2 + FMA) and
    AVX-512F loops may run."""
    tile_bytes: int
    avx2: bool
    avx2_fma: bool
    avx512: bool


class Plan(NamedTuple):
    """Algorithms of the forward, the weight gradient and the input gradient (None when not
    wanted), and the reasons of the forward's and the gradients' choices."""
    forward: str
    weight_grad: str
    input_grad: str
    forward_reason: str
    gradient_reason: str


class Rule(NamedTuple):
    algorithm: str
    applies: object     # (Layer, Settings) -> bool
    reason: str


def describe(x_shape, W_shape, stride, pad, dtype, need_dx=True):
    """The Layer of a convolution of an (N, C, H, W) input with (FN, C, FH, FW) filters."""
    C, H, W = x_shape[1:]
    FN, _, FH, FW = W_shape
    out_h, out_w = output_size(H, FH, stride, pad), output_size(W, FW, stride, pad)
    return Layer(C, H, W, FN, FH, FW, stride, pad, np.dtype(dtype), out_h, out_w, bool(need_dx))


def settings(config=None, features=None):
    """The Settings of a configuration (default: the current one) on a CPU (default: this one)."""
    config = _config.current() if config is None else config
    use = _cpu.usable(config, features)
    return Settings(config["tile_bytes"], use["avx2"], use["avx2_fma"], use["avx512"])


# ------------------------------------------------------------------------ what each algorithm can run

def _winograd_shape(L, s):
    return L.FH == 3 and L.FW == 3 and L.stride == 1 and L.pad <= 2


def _rows_shape(L, s):
    return s.avx2_fma and L.float32 and L.stride == 1 and 8 <= L.out_w <= ROWS_MAX_WIDTH


def _rows_gradients(L, s):
    return _rows_shape(L, s) and (not L.need_dx or 8 <= L.W <= ROWS_MAX_WIDTH)


def _blocks_shape(L, s):
    return s.avx2_fma and L.float32


def _blocks512_shape(L, s):
    return s.avx512


def _blocks512_gradients(L, s):
    return (s.avx512 and L.float32 and L.stride == 1 and L.FH == L.FW and L.FH in (3, 5)
            and L.pad <= L.FH - 1)


def _anything(L, s):
    return True


# algorithm: (forward can run, gradients can run (None: no gradients of its own), what it needs)
CAN_RUN = {
    "im2col": (_anything, _anything, "nothing"),
    "winograd": (_winograd_shape, _winograd_shape, "3x3 filters, stride 1 and pad <= 2"),
    "avx2_rows": (_rows_shape, _rows_gradients,
                  f"AVX2 + FMA, float32, stride 1 and output rows of 8 to {ROWS_MAX_WIDTH} "
                  f"(input rows too for the input gradient)"),
    "avx2_blocks": (_blocks_shape, None, "AVX2 + FMA and float32"),
    "avx512_blocks": (_blocks512_shape, _blocks512_gradients,
                      "AVX-512F (gradients: float32, stride 1, square 3x3 or 5x5 filters and "
                      "pad < the filter's size)"),
}


# ---------------------------------------------------------------------------------------- the rules

def _few_filters(L):
    return L.FN <= 8 or (L.FN <= 16 and L.taps <= ROWS_BACKWARD_MAX_TAPS)


FORWARD_RULES = (
    Rule("winograd",
         lambda L, s: _winograd_shape(L, s) and L.C >= WINOGRAD_MIN_CHANNELS,
         f"3x3 stride 1 with >= {WINOGRAD_MIN_CHANNELS} input channels: 16 multiplies per 2x2 "
         f"outputs instead of 36, in GEMMs with K = C large enough to pay for the transforms"),
    Rule("avx2_rows",
         lambda L, s: _rows_shape(L, s) and L.taps < AVX2_MIN_TAPS,
         f"float32 stride 1, fewer than {AVX2_MIN_TAPS} weights per filter: im2col + GEMM would "
         f"move as many bytes as it multiplies; 8 outputs of a row per register"),
    Rule("avx512_blocks",
         lambda L, s: (_blocks512_shape(L, s) and L.FN <= AVX512_MAX_FILTERS
                       and (not L.float32 or (L.taps >= AVX2_MIN_TAPS
                                              and L.FN >= AVX2_MIN_FILTERS))),
         f"AVX-512F, up to {AVX512_MAX_FILTERS} filters (float32: >= {AVX2_MIN_FILTERS} of "
         f">= {AVX2_MIN_TAPS} weights): 16 filters per register (float64: 8) and up to 2 x 12 "
         f"blocks of outputs in registers beat im2col + GEMM's columns"),
    Rule("avx2_blocks",
         lambda L, s: (_blocks_shape(L, s) and L.taps >= AVX2_MIN_TAPS
                       and AVX2_MIN_FILTERS <= L.FN <= AVX2_MAX_FILTERS),
         f"float32, {AVX2_MIN_FILTERS}-{AVX2_MAX_FILTERS} filters: a GEMM with M = FN this small "
         f"loses to sums in registers, 16 filters at a time"),
    Rule("im2col", _anything, "the general algorithm: unfold a tile of images, one GEMM"),
)

GRADIENT_RULES = (
    Rule("avx512_blocks",
         lambda L, s: (_blocks512_gradients(L, s) and L.FN >= 16
                       and L.C < WINOGRAD_MIN_CHANNELS and (L.C >= 16 or not L.need_dx)
                       and L.out_h * L.out_w >= AVX512_GRAD_MIN_PIXELS),
         f"AVX-512F, float32, stride 1, >= 16 filters, fewer than {WINOGRAD_MIN_CHANNELS} input "
         f"channels (>= 16 when the input gradient is wanted: its 16 lanes are the channels) and "
         f">= {AVX512_GRAD_MIN_PIXELS} outputs per plane: 16 filters per register for dW, dx as "
         f"a forward of the flipped filters over d"),
    Rule("avx2_rows",
         lambda L, s: _rows_gradients(L, s) and (L.taps < AVX2_MIN_TAPS or _few_filters(L)),
         f"float32 stride 1, the forward's row layout or few filters (<= 8, or <= 16 of "
         f"<= {ROWS_BACKWARD_MAX_TAPS} weights): M = FN too small for a GEMM"),
    Rule("winograd",
         lambda L, s: (_winograd_shape(L, s) and L.C >= WINOGRAD_MIN_CHANNELS
                       and L.FN >= WINOGRAD_MIN_CHANNELS
                       and L.H * L.W >= WINOGRAD_BACKWARD_MIN_PIXELS),
         f"3x3 stride 1 with >= {WINOGRAD_MIN_CHANNELS} input and output channels and planes of "
         f">= {WINOGRAD_BACKWARD_MIN_PIXELS} pixels: smaller transforms lose beside the other "
         f"gradient's GEMM"),
    Rule("im2col", _anything, "the general algorithm: unfold a tile of images, GEMMs"),
)


def choose(which, layer, s, algorithm="auto", exclude=()):
    """(algorithm, reason) of a layer's forward (which='forward') or gradients ('gradients'), under
    Settings s, with conv_algorithm algorithm. Algorithms in exclude are passed over (the kernels'
    fallbacks after non-finite results; a forced one then follows the rules)."""
    forward = which == "forward"
    note = ""
    if algorithm != "auto" and algorithm not in exclude:
        can_forward, can_gradients, needs = CAN_RUN[algorithm]
        can = can_forward if forward else can_gradients
        if can is None:
            note = f"{algorithm} has no {which} of its own; by the rules: "
        elif can(layer, s):
            return algorithm, f"forced by conv_algorithm={algorithm!r}"
        else:
            raise ValueError(f"conv_algorithm={algorithm!r} cannot run the {which} of this layer "
                             f"({_layer_text(layer)}): it needs {needs}")
    for rule in FORWARD_RULES if forward else GRADIENT_RULES:
        if rule.algorithm not in exclude and rule.applies(layer, s):
            return rule.algorithm, note + rule.reason
    raise AssertionError("the last rule applies to every layer")


def _layer_text(L):
    return (f"{L.C}x{L.H}x{L.W} input, {L.FN} filters {L.FH}x{L.FW}, stride {L.stride}, "
            f"pad {L.pad}, {L.dtype}")


def select(x_shape, W_shape, stride=1, pad=0, dtype=np.float32, *, need_dx=True, config=None,
           features=None):
    """The Plan of a convolution: x_shape (N, C, H, W), W_shape (FN, C, FH, FW), stride, pad, the
    compute dtype; config a dict as get_config() returns (default: the current one); features as
    cnncore.cpu_features() (default: this CPU's). Raises ValueError when a forced algorithm cannot
    run the layer."""
    config = _config.current() if config is None else config
    layer = describe(x_shape, W_shape, stride, pad, dtype, need_dx)
    s = settings(config, features)
    forward, forward_reason = choose("forward", layer, s, config["conv_algorithm"])
    grads, gradient_reason = choose("gradients", layer, s, config["conv_algorithm"])
    return Plan(forward, grads, grads if need_dx else None, forward_reason, gradient_reason)


# ---------------------------------------------------------------------------- what ran, and why

class Ran(NamedTuple):
    """One convolution step that ran: step 'forward' or 'gradients', the algorithm, redone (tiles
    or calls whose non-finite result the next rule computed again), the input's shape, the
    filters' shape, stride, pad, and W as the caller passed it."""
    step: str
    algorithm: str
    redone: int
    x_shape: tuple
    W_shape: tuple
    stride: int
    pad: int
    W: object


_trace = contextvars.ContextVar("cnncore_conv_trace", default=None)


def ran(step, algorithm, redone, x_shape, W_shape, stride, pad, W):
    """Called by kernels.py after each convolution step: noted while a trace() is open."""
    calls = _trace.get()
    if calls is not None:
        calls.append(Ran(step, algorithm, redone, tuple(x_shape), tuple(W_shape), stride, pad, W))


@contextlib.contextmanager
def trace():
    """Within the block, record every convolution step this thread runs: yields the list of Ran.

        with trace() as steps:
            network.gradient(x, t)
        [(r.step, r.algorithm) for r in steps]
    """
    steps = []
    token = _trace.set(steps)
    try:
        yield steps
    finally:
        _trace.reset(token)


def explain(model, input_shape=None, dtype=None):
    """Which algorithm each convolution of model takes, and why: a list of dicts (layer, input,
    filters, stride, pad, dtype, forward, gradients, and the reasons).

    model is a network (its predict runs once on zeros of input_shape (N, C, H, W), default one
    image of its input_dim) or a Convolution layer (input_shape required). dtype: the input's
    dtype (default: the network's parameters' dtype). Gradients are listed with the input gradient
    wanted, except for a network's first convolution, whose input gradient networks skip.
    """
    if hasattr(model, "layers"):
        layers = model.layers
        named = list(layers.items()) if hasattr(layers, "items") else [
            (f"{type(layer).__name__}{i}", layer) for i, layer in enumerate(layers)]
        if input_shape is None:
            input_shape = (1, *getattr(model, "input_dim", (1, 28, 28)))
        if dtype is None:
            dtype = next(iter(model.params.values())).dtype
        with _config.config_context(conv_algorithm="auto"), trace() as steps:
            model.predict(np.zeros(input_shape, dtype))      # the shapes each convolution sees
        names = {id(getattr(layer, "W", None)): name for name, layer in named}
        rows = []
        for i, step in enumerate(steps):
            both32 = np.dtype(dtype) == np.float32 and np.asarray(step.W).dtype == np.float32
            rows.append((names.get(id(step.W), f"convolution {i + 1}"), step.x_shape, step.W_shape,
                         step.stride, step.pad, np.dtype(np.float32 if both32 else np.float64),
                         i > 0))
    else:
        if input_shape is None:
            raise ValueError("input_shape (N, C, H, W) is needed to explain a single layer")
        x_dtype = np.dtype(model.W.dtype if dtype is None else dtype)
        both32 = x_dtype == np.float32 and model.W.dtype == np.float32
        dt = np.dtype(np.float32 if both32 else np.float64)    # as _validate.compute_dtype
        rows = [(type(model).__name__, tuple(input_shape), model.W.shape, model.stride, model.pad,
                 dt, True)]
    result = []
    for name, x_shape, W_shape, stride, pad, dt, need_dx in rows:
        entry = {"layer": name, "input": tuple(x_shape[1:]), "filters": tuple(W_shape),
                 "stride": stride, "pad": pad, "dtype": str(np.dtype(dt))}
        layer = describe(x_shape, W_shape, stride, pad, dt, need_dx)
        s = settings()
        algorithm = _config.current()["conv_algorithm"]
        for which in ("forward", "gradients"):
            try:
                entry[which], entry[f"{which}_reason"] = choose(which, layer, s, algorithm)
            except ValueError as e:
                entry[which], entry[f"{which}_reason"] = "error", str(e)
        if not need_dx:
            entry["gradients_reason"] += " (no input gradient: first layer)"
        result.append(entry)
    return result


def explain_text(model, input_shape=None, dtype=None):
    """explain() as lines of text, one block per convolution."""
    lines = []
    for e in explain(model, input_shape, dtype):
        lines.append(f"{e['layer']}: input {e['input']}, filters {e['filters']}, stride "
                     f"{e['stride']}, pad {e['pad']}, {e['dtype']}")
        lines.append(f"  forward    {e['forward']:12s} {e['forward_reason']}")
        lines.append(f"  gradients  {e['gradients']:12s} {e['gradients_reason']}")
    return "\n".join(lines)
