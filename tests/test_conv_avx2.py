"""The direct float32 convolution on AVX2 + FMA (cnncore/kernels.py, pyext/conv_avx2.pyx) against
the NumPy references: plain and fused forward, and the row layout's gradients (dx, dW, db), over many
shapes, non-finite values, thread independence, and which layers take them by default.

Most tests force the algorithm (config_context(conv_algorithm='avx2_blocks' or 'avx2_rows')) so that
every float32 forward takes the kernel, and record what ran (cnncore._conv.select.trace); on a CPU
without AVX2 and FMA they are skipped, and one test checks that im2col + GEMM is taken instead. The
AVX-512 loops are off here (config use_avx512): the rules tested are those of an AVX2 CPU, and
test_conv_avx512.py tests the AVX-512 kernels."""
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import cnncore
from cnncore import kernels as K
from cnncore import reference as R
from cnncore._conv import select
from cnncore._conv.select import trace

AVX2_FMA = cnncore.cpu_features()["avx2"] and cnncore.cpu_features()["fma"]
needs_avx2 = pytest.mark.skipif(not AVX2_FMA, reason="this CPU or build has no AVX2 + FMA")


@pytest.fixture(autouse=True)
def _avx2_rules(config):
    config(use_avx512=False)


def tol(scale):
    """As test_kernels.tol for float32: rounding relative to the result's scale."""
    return dict(rtol=2e-4, atol=2e-5 * scale)


@pytest.fixture
def avx2_everywhere(config):
    """Every float32 forward takes the AVX2 block kernel (forced); the forwards that ran it are
    listed."""
    config(conv_algorithm="avx2_blocks")
    with trace() as steps:
        yield Ran(steps, "forward", "avx2_blocks")


class Ran:
    """The steps of one kind (forward or gradients) of one algorithm in a trace, as a list of
    booleans: True where the step's result stood, False where it was computed again."""

    def __init__(self, steps, step, algorithm):
        self.steps, self.step, self.algorithm = steps, step, algorithm

    def calls(self):
        return [r.redone == 0 for r in self.steps
                if r.step == self.step and r.algorithm == self.algorithm]

    def __bool__(self):
        return bool(self.calls())

    def __eq__(self, other):
        return self.calls() == other

    def __len__(self):
        return len(self.calls())

    def __repr__(self):
        return repr(self.calls())


# (N, C, H, W, FN, FH, FW, stride, pad): N = 1, C = 1, odd and non-square planes and filters, 1x1,
# stride 2 and 3, pads 0-2, 1 / 15 / 16 / 17 / 33 filters (partial and several blocks of 16), rows
# of 1-6 outputs (every block size), and rows of 96, 97 and 200 outputs (more than one staged
# stretch of a row)
CASES = [
    (1, 1, 5, 5, 1, 3, 3, 1, 0),
    (2, 3, 7, 9, 15, 3, 3, 1, 1),
    (3, 2, 6, 8, 16, 3, 3, 1, 2),
    (1, 4, 11, 4, 17, 5, 5, 1, 2),
    (2, 5, 13, 10, 33, 3, 3, 2, 1),
    (1, 3, 9, 17, 8, 2, 3, 3, 0),
    (2, 6, 4, 4, 16, 1, 1, 1, 0),
    (1, 2, 1, 1, 3, 3, 3, 1, 1),
    (1, 2, 3, 96, 5, 3, 3, 1, 1),
    (1, 1, 2, 97, 20, 1, 2, 1, 0),
    (2, 2, 3, 200, 16, 3, 3, 1, 1),
    (1, 16, 28, 28, 16, 3, 3, 1, 1),
]
for _width in range(1, 7):
    CASES.append((1, 2, 3, _width + 2, 16, 3, 3, 1, 0))


def case_id(case):
    return "N{}C{}_{}x{}_FN{}_{}x{}s{}p{}".format(*case)


def operands(rng, case):
    N, C, H, W, FN, FH, FW, stride, pad = case
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    Wt = rng.standard_normal((FN, C, FH, FW)).astype(np.float32)
    b = rng.standard_normal(FN).astype(np.float32)
    return x, Wt, b, stride, pad


def check(rng, case, fused):
    x, Wt, b, stride, pad = operands(rng, case)
    fwd, rfwd = ((K.conv_bias_relu_forward, R.conv_bias_relu_forward) if fused
                 else (K.conv_forward, R.conv_forward))
    out, want = fwd(x, Wt, b, stride, pad), rfwd(x, Wt, b, stride, pad)
    assert out.dtype == np.float32 and out.flags.c_contiguous and out.shape == want.shape
    np.testing.assert_allclose(out, want, **tol(np.abs(want).max() + 1))


@needs_avx2
@pytest.mark.parametrize("fused", [False, True], ids=["conv", "fused"])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_avx2_matches_reference(case, fused, rng, avx2_everywhere):
    check(rng, case, fused)
    assert avx2_everywhere, "the AVX2 kernel was not called"


@needs_avx2
@given(st.integers(1, 3), st.integers(1, 5), st.integers(1, 12), st.integers(1, 30),
       st.integers(1, 40), st.integers(1, 4), st.integers(1, 4), st.integers(1, 3),
       st.integers(0, 2), st.booleans(), st.integers(0, 2**32 - 1))
def test_avx2_property(N, C, H, W, FN, FH, FW, stride, pad, fused, seed):
    assume(FH <= H + 2 * pad and FW <= W + 2 * pad)
    with cnncore.config_context(conv_algorithm="avx2_blocks"):
        check(np.random.default_rng(seed), (N, C, H, W, FN, FH, FW, stride, pad), fused)


@needs_avx2
@pytest.mark.parametrize("fused", [False, True], ids=["conv", "fused"])
@pytest.mark.parametrize("special", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", ["x", "W", "b"])
def test_avx2_non_finite_like_the_reference(where, special, fused, rng, avx2_everywhere):
    """An inf in x or W meets the padding's zeros (NaN there), NaN spreads, ReLU keeps NaN."""
    check_non_finite(rng, (2, 3, 6, 7, 17, 3, 3, 1, 1), where, special, fused)
    assert avx2_everywhere


def check_non_finite(rng, case, where, special, fused):
    """special put in x, in the last filter's weights, or in a bias: out is NaN, +inf and -inf
    exactly where the reference's is, and close elsewhere."""
    x, Wt, b, stride, pad = operands(rng, case)
    {"x": x[-1, -1], "W": Wt[-1, 1 % Wt.shape[1]], "b": b[3:4]}[where].flat[0] = special
    fwd, rfwd = ((K.conv_bias_relu_forward, R.conv_bias_relu_forward) if fused
                 else (K.conv_forward, R.conv_forward))
    assert_like_reference(fwd(x, Wt, b, stride, pad), rfwd(x, Wt, b, stride, pad))


def assert_like_reference(got, want):
    """NaN, +inf and -inf exactly where want has them, the finite values close."""
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isposinf(got), np.isposinf(want))
    np.testing.assert_array_equal(np.isneginf(got), np.isneginf(want))
    finite = np.isfinite(want)
    np.testing.assert_allclose(got[finite], want[finite], **tol(np.abs(want[finite]).max() + 1))


@needs_avx2
def test_avx2_results_do_not_depend_on_threads(rng, avx2_everywhere):
    check_thread_independence(rng, (7, 5, 12, 11, 40, 3, 3, 1, 1))
    assert avx2_everywhere


def check_thread_independence(rng, case):
    x, Wt, b, stride, pad = operands(rng, case)
    previous = cnncore.get_num_threads()
    try:
        results = []
        for n in (1, 2, 3):
            cnncore.set_num_threads(n)
            results.append(K.conv_bias_relu_forward(x, Wt, b, stride, pad))
    finally:
        cnncore.set_num_threads(previous)
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])


@pytest.mark.parametrize("dtype, C, FN, FH, taken", [
    (np.float32, 16, 16, 3, True),     # DeepConvNet conv2
    (np.float32, 16, 32, 3, True),     # DeepConvNet conv3
    (np.float32, 1, 30, 5, False),     # SimpleConvNet's 25 taps
    (np.float32, 8, 16, 3, True),      # 72 taps
    (np.float32, 1, 16, 3, False),     # DeepConvNet conv1: 9 taps
    (np.float32, 16, 64, 3, False),    # 64 filters: im2col + GEMM
    (np.float32, 16, 8, 3, True),      # 8 filters: half of the 16-wide block idle, still faster
    (np.float32, 16, 4, 3, False),     # 4 filters: three quarters idle
    (np.float32, 32, 32, 3, False),    # Winograd
    (np.float64, 16, 16, 3, False),    # float32 only
])
def test_default_rule(dtype, C, FN, FH, taken, rng):
    x = rng.standard_normal((2, C, 10, 10)).astype(dtype)
    Wt = rng.standard_normal((FN, C, FH, FH)).astype(dtype)
    b = np.zeros(FN, dtype)
    with trace() as steps:
        out = K.conv_forward(x, Wt, b, 1, 1)
    np.testing.assert_allclose(out, R.conv_forward(x, Wt, b, 1, 1), rtol=2e-4, atol=2e-4)
    assert bool(Ran(steps, "forward", "avx2_blocks")) == (taken and AVX2_FMA)
    assert (select.select(x.shape, Wt.shape, 1, 1, dtype).forward == "avx2_blocks") == (
        taken and AVX2_FMA)


def test_without_avx2_the_gemm_path_is_taken(rng, config):
    config(use_avx2=False)
    x = rng.standard_normal((2, 16, 9, 9)).astype(np.float32)
    Wt = rng.standard_normal((16, 16, 3, 3)).astype(np.float32)
    b = rng.standard_normal(16).astype(np.float32)
    with trace() as steps:
        np.testing.assert_allclose(K.conv_forward(x, Wt, b, 1, 1), R.conv_forward(x, Wt, b, 1, 1),
                                   **tol(50))
    assert [(r.step, r.algorithm) for r in steps] == [("forward", "im2col")]
    for algorithm in ("avx2_blocks", "avx2_rows"):
        with cnncore.config_context(conv_algorithm=algorithm):
            with pytest.raises(ValueError, match=f"conv_algorithm='{algorithm}' cannot run"):
                K.conv_forward(x, Wt, b, 1, 1)


# ---------------------------------------------------------------- outputs in the registers (rows)

@pytest.fixture
def rows_everywhere(config):
    """Every float32 stride-1 forward with rows of 8 to ROWS_MAX_WIDTH outputs takes forward_rows
    (forced); the forwards that ran it are listed."""
    config(conv_algorithm="avx2_rows")
    with trace() as steps:
        yield Ran(steps, "forward", "avx2_rows")


# (N, C, H, W, FN, FH, FW, stride, pad): output rows of 8 (one vector), 9, 15, 17 (a last vector
# overlapping its neighbour), 16, 24 (whole vectors), 25, 26 (a second block of vectors), 100 and
# 256 (the widest); 1-5 and 9 filters (every block of 1-4 filters); C = 1-4, pads 0-3, 1x1, 5x5,
# 7x7 and non-square filters; N = 1; SimpleConvNet's and DeepConvNet's first layers
ROWS_CASES = [
    (1, 1, 3, 8, 1, 1, 1, 1, 0),
    (2, 1, 5, 11, 2, 3, 3, 1, 0),
    (1, 2, 6, 15, 3, 3, 3, 1, 1),
    (2, 3, 4, 18, 4, 2, 3, 1, 1),
    (1, 1, 7, 16, 5, 1, 1, 1, 0),
    (1, 4, 5, 24, 9, 3, 3, 1, 1),
    (1, 1, 9, 25, 4, 5, 5, 1, 2),
    (2, 2, 6, 30, 3, 5, 3, 1, 0),
    (1, 1, 4, 98, 2, 3, 3, 1, 1),
    (1, 1, 3, 256, 3, 1, 1, 1, 0),
    (1, 1, 9, 12, 2, 7, 7, 1, 3),
    (3, 1, 28, 28, 30, 5, 5, 1, 0),
    (2, 1, 28, 28, 16, 3, 3, 1, 1),
]


@needs_avx2
@pytest.mark.parametrize("fused", [False, True], ids=["conv", "fused"])
@pytest.mark.parametrize("case", ROWS_CASES, ids=case_id)
def test_rows_match_reference(case, fused, rng, rows_everywhere):
    check(rng, case, fused)
    assert rows_everywhere, "forward_rows was not called"


@needs_avx2
@given(st.integers(1, 3), st.integers(1, 4), st.integers(1, 9), st.integers(8, 70),
       st.integers(1, 11), st.integers(1, 5), st.integers(1, 5), st.integers(0, 2),
       st.booleans(), st.integers(0, 2**32 - 1))
def test_rows_property(N, C, H, W, FN, FH, FW, pad, fused, seed):
    assume(FH <= H + 2 * pad and W + 2 * pad - FW + 1 >= 8)
    with cnncore.config_context(conv_algorithm="avx2_rows"):
        check(np.random.default_rng(seed), (N, C, H, W, FN, FH, FW, 1, pad), fused)


@needs_avx2
@pytest.mark.parametrize("fused", [False, True], ids=["conv", "fused"])
@pytest.mark.parametrize("special", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", ["x", "W", "b"])
def test_rows_non_finite_like_the_reference(where, special, fused, rng, rows_everywhere):
    """As for the other layout, on rows whose last vector overlaps its neighbour."""
    check_non_finite(rng, (2, 3, 6, 13, 6, 3, 3, 1, 1), where, special, fused)
    assert rows_everywhere


@needs_avx2
def test_rows_results_do_not_depend_on_threads(rng, rows_everywhere):
    check_thread_independence(rng, (7, 2, 12, 19, 9, 3, 3, 1, 1))
    assert rows_everywhere


@pytest.mark.parametrize("dtype, C, FN, FH, H, stride, taken", [
    (np.float32, 1, 30, 5, 28, 1, True),     # SimpleConvNet's conv: 25 taps
    (np.float32, 1, 16, 3, 28, 1, True),     # DeepConvNet conv1: 9 taps
    (np.float32, 3, 64, 3, 32, 1, True),     # 27 taps, 64 filters
    (np.float32, 16, 16, 3, 28, 1, False),   # DeepConvNet conv2, 144 taps: the 16-filter layout
    (np.float32, 1, 16, 3, 28, 2, False),    # stride 2
    (np.float32, 1, 16, 3, 7, 1, False),     # rows of 7 outputs, shorter than a vector
    (np.float32, 1, 4, 3, 300, 1, False),    # rows of 300, wider than ROWS_MAX_WIDTH
    (np.float64, 1, 16, 3, 28, 1, False),    # float32 only
])
def test_rows_default_rule(dtype, C, FN, FH, H, stride, taken, rng):
    x = rng.standard_normal((1, C, H, H)).astype(dtype)
    Wt = rng.standard_normal((FN, C, FH, FH)).astype(dtype)
    b = np.zeros(FN, dtype)
    with trace() as steps:
        out = K.conv_forward(x, Wt, b, stride, 1)
    np.testing.assert_allclose(out, R.conv_forward(x, Wt, b, stride, 1), rtol=2e-4, atol=2e-4)
    assert bool(Ran(steps, "forward", "avx2_rows")) == (taken and AVX2_FMA)


# ------------------------------------------------------- gradients in the row layout

@pytest.fixture
def rows_grad_calls():
    """The calls of the row layout's backward (by the rules): True where its result stood, False
    where it came out non-finite and was computed again."""
    with trace() as steps:
        yield Ran(steps, "gradients", "avx2_rows")


def check_backward(rng, case, fused, need_dx, special=None, where=None):
    """conv_backward (conv_bias_relu_backward when fused) against the reference: dx, dW and db
    close, and NaN / +inf / -inf exactly where the reference's are. special is put in x (its first or
    last cell), W (its first or last weight), dout or, when fused, out."""
    x, Wt, b, stride, pad = operands(rng, case)
    out = R.conv_bias_relu_forward(x, Wt, b, stride, pad)
    dout = rng.standard_normal(out.shape).astype(np.float32)
    if special is not None:
        {"x first": x, "x last": x[::-1, ::-1, ::-1, ::-1], "W first": Wt,
         "W last": Wt[::-1, ::-1, ::-1, ::-1], "dout": dout[-1, -1, ::-1],
         "out": out[-1, -1, ::-1]}[where].flat[0] = special
    if fused:
        got = K.conv_bias_relu_backward(dout, x, Wt, out, stride, pad, need_dx=need_dx)
        want = R.conv_bias_relu_backward(dout, x, Wt, out, stride, pad, need_dx=need_dx)
    else:
        got = K.conv_backward(dout, x, Wt, stride, pad, need_dx=need_dx)
        want = R.conv_backward(dout, x, Wt, stride, pad, need_dx=need_dx)
    assert (got[0] is None) == (not need_dx)
    for g, w in zip(got, want):
        if w is None:
            continue
        assert g.dtype == np.float32 and g.shape == w.shape and g.flags.c_contiguous
        assert_like_reference(g, w)


# ROWS_CASES (every block of 1-4 filters, tap blocks of 1-3, overlapping last vectors; dx rows of 8
# to 256, blocks of 1-4 rows and 1-3 vectors), 11 images (tiles of several images, whose sums carry
# from one image to the next), and pads larger than the filter's reach (pad > FH - 1: no zero rows
# or columns around d)
BACKWARD_CASES = ROWS_CASES + [
    (11, 2, 7, 13, 6, 3, 3, 1, 1),
    (2, 2, 5, 12, 3, 1, 3, 1, 1),
    (1, 1, 4, 10, 2, 3, 3, 1, 3),
    (1, 3, 13, 35, 7, 2, 5, 1, 0),
]

# Layers whose forward is not in the row layout but whose gradients are (few filters, many weights
# per filter): DeepConvNet conv2 (16 -> 16, 144 taps, the most the rule takes for 16 filters), 8
# filters of 64 channels (576 taps, several hundred tap blocks), 5x5 filters of 5 channels (125
# taps) with 11 filters, odd non-square planes, pads 0-2, N = 1 and tiles of several images
WIDE_BACKWARD_CASES = [
    (2, 16, 28, 28, 16, 3, 3, 1, 1),
    (3, 64, 9, 11, 8, 3, 3, 1, 1),
    (1, 5, 13, 17, 11, 5, 5, 1, 2),
    (11, 8, 7, 10, 16, 3, 2, 1, 0),
    (1, 16, 3, 8, 1, 3, 3, 1, 1),
]


@needs_avx2
@pytest.mark.parametrize("need_dx", [False, True], ids=["dW", "dx_dW"])
@pytest.mark.parametrize("fused", [False, True], ids=["conv", "fused"])
@pytest.mark.parametrize("case", BACKWARD_CASES + WIDE_BACKWARD_CASES, ids=case_id)
def test_rows_backward_matches_reference(case, fused, need_dx, rng, rows_grad_calls):
    check_backward(rng, case, fused, need_dx)
    assert rows_grad_calls == [True]


@needs_avx2
@given(st.integers(1, 3), st.integers(1, 4), st.integers(1, 9), st.integers(8, 70),
       st.integers(1, 11), st.integers(1, 5), st.integers(1, 5), st.integers(0, 3),
       st.booleans(), st.booleans(), st.integers(0, 2**32 - 1))
def test_rows_backward_property(N, C, H, W, FN, FH, FW, pad, fused, need_dx, seed):
    assume(FH <= H + 2 * pad and W + 2 * pad - FW + 1 >= 8)
    check_backward(np.random.default_rng(seed), (N, C, H, W, FN, FH, FW, 1, pad), fused, need_dx)


@needs_avx2
@given(st.integers(1, 3), st.integers(1, 40), st.integers(1, 9), st.integers(8, 40),
       st.integers(1, 17), st.integers(1, 3), st.integers(1, 3), st.integers(0, 2),
       st.booleans(), st.booleans(), st.integers(0, 2**32 - 1))
def test_wide_rows_backward_property(N, C, H, W, FN, FH, FW, pad, fused, need_dx, seed):
    """Any number of channels: the layers with few filters take the row layout's gradients whatever
    their taps (FN <= 8, or FN <= 16 with at most ROWS_BACKWARD_MAX_TAPS), the others im2col + GEMM;
    either way the reference's results."""
    OW = W + 2 * pad - FW + 1
    assume(FH <= H + 2 * pad and OW >= 8)
    with trace() as steps:
        check_backward(np.random.default_rng(seed), (N, C, H, W, FN, FH, FW, 1, pad), fused,
                       need_dx)
    few_filters = FN <= 8 or (FN <= 16 and C * FH * FW <= select.ROWS_BACKWARD_MAX_TAPS)
    rows = Ran(steps, "gradients", "avx2_rows")
    assert bool(rows) == (few_filters or C * FH * FW < select.AVX2_MIN_TAPS)


@needs_avx2
@pytest.mark.parametrize("need_dx", [False, True], ids=["dW", "dx_dW"])
@pytest.mark.parametrize("fused", [False, True], ids=["conv", "fused"])
@pytest.mark.parametrize("special", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", ["x first", "x last", "W first", "W last", "dout", "out"])
def test_rows_backward_non_finite_like_the_reference(where, special, fused, need_dx, rng,
                                                     rows_grad_calls):
    """Rows of 13 outputs: the second vector's 3 lanes past the row meet the image's last columns, so
    an infinity there makes NaN in the fast sums where the reference has none: the call returns None
    and im2col + GEMM computes the gradients again. dx's sums multiply the zeros around d by every
    weight, so a layer whose weights are not all finite takes im2col + GEMM for dx."""
    if where == "out" and not fused:
        return
    check_backward(rng, (2, 3, 6, 15, 6, 3, 3, 1, 0), fused, need_dx, special, where)
    if need_dx and where.startswith("W"):
        assert rows_grad_calls == []
    elif where == "x last":
        assert rows_grad_calls == [False]
    else:
        assert len(rows_grad_calls) == 1


@needs_avx2
@pytest.mark.parametrize("need_dx", [False, True], ids=["dW", "dx_dW"])
def test_rows_backward_does_not_depend_on_threads(need_dx, rng, rows_grad_calls,
                                                  at_thread_counts):
    x, Wt, b, stride, pad = operands(rng, (9, 2, 12, 19, 9, 3, 3, 1, 1))
    out = K.conv_bias_relu_forward(x, Wt, b, stride, pad)
    dout = rng.standard_normal(out.shape).astype(np.float32)
    results = at_thread_counts(lambda: K.conv_bias_relu_backward(dout, x, Wt, out, stride, pad,
                                                                 need_dx=need_dx))
    for r in results[1:]:
        for got, first in zip(r, results[0]):
            if first is not None:
                np.testing.assert_array_equal(got, first)
    assert rows_grad_calls == [True] * 3


@pytest.mark.parametrize("need_dx", [False, True], ids=["dW", "dx_dW"])
@pytest.mark.parametrize("dtype, C, FN, FH, H, stride, pad, taken", [
    (np.float32, 1, 30, 5, 28, 1, 0, True),     # SimpleConvNet's conv
    (np.float32, 1, 16, 3, 28, 1, 1, True),     # DeepConvNet conv1
    (np.float32, 16, 16, 3, 28, 1, 1, True),    # DeepConvNet conv2: 16 filters of 144 taps
    (np.float32, 17, 16, 3, 14, 1, 1, False),   # 16 filters of 153 taps: im2col + GEMM
    (np.float32, 64, 8, 3, 14, 1, 1, True),     # 8 filters, any taps
    (np.float32, 17, 9, 3, 14, 1, 1, False),    # 9 filters of 153 taps: im2col + GEMM
    (np.float32, 8, 32, 3, 14, 1, 1, False),    # 32 filters: im2col + GEMM
    (np.float32, 1, 16, 3, 28, 2, 1, False),    # stride 2
    (np.float32, 1, 16, 3, 7, 1, 1, False),     # rows of 7 outputs
    (np.float32, 1, 4, 1, 6, 1, 1, "dW"),       # rows of 8 outputs but of 6 input cells: dx by GEMM
    (np.float32, 1, 2, 5, 260, 1, 0, "dW"),     # rows of 256 outputs but of 260 input cells: likewise
    (np.float64, 1, 16, 3, 28, 1, 1, False),    # float32 only
])
def test_rows_backward_default_rule(dtype, C, FN, FH, H, stride, pad, taken, need_dx, rng,
                                    rows_grad_calls):
    x = rng.standard_normal((2, C, H, H)).astype(dtype)
    Wt = rng.standard_normal((FN, C, FH, FH)).astype(dtype)
    dout = rng.standard_normal(R.conv_forward(x, Wt, np.zeros(FN), stride, pad).shape).astype(dtype)
    got = K.conv_backward(dout, x, Wt, stride, pad, need_dx=need_dx)
    want = R.conv_backward(dout, x, Wt, stride, pad, need_dx=need_dx)
    for g, w in zip(got, want):
        if w is not None:
            np.testing.assert_allclose(g, w, rtol=2e-4, atol=2e-3)
    if taken == "dW":
        taken = not need_dx
    assert bool(rows_grad_calls) == (taken and AVX2_FMA)
