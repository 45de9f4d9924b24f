"""The direct convolution on AVX-512F (cnncore/kernels.py, pyext/conv_avx512.pyx) against the
NumPy references: plain and fused forward (any stride, float32 and float64), and its float32
gradients (stride 1, square 3x3
and 5x5 filters: dW and db from d laid out 16 filters per register, dx as a forward of the flipped
filters over d), over many shapes, non-finite values, thread independence, and which layers take
them by default. The algorithm is forced (conv_algorithm='avx512_blocks') and what ran recorded;
on a CPU without AVX-512F the tests are skipped and one checks that the rules never take it."""
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import cnncore
from cnncore import kernels as K
from cnncore import reference as R
from cnncore._conv import select
from cnncore._conv.select import trace

AVX512 = cnncore.cpu_features()["avx512f"] and cnncore.cpu_features()["x86_targets"]
needs_avx512 = pytest.mark.skipif(not AVX512, reason="this CPU or build has no AVX-512F")


def tol(scale):
    """float32 rounding relative to the result's scale (as test_kernels.tol)."""
    return dict(rtol=2e-4, atol=2e-5 * scale)


def ran(steps, step):
    return [r.algorithm for r in steps if r.step == step]


# (N, C, H, W, FN, FH, FW, stride, pad): one channel, 1 / 15 / 16 / 17 / 33 / 40 / 64 filters (a
# partial block, one, a pair, a pair and a partial block, two pairs), odd non-square planes, 1x1,
# 2x3 and 5x5 filters, strides 1-3, pads 0-4 (beyond the filter's reach too), rows of 1-13 outputs
# (every block size, more than one block) and of 97 and 200 (more than one staged stretch).
CASES = [
    (1, 1, 5, 5, 1, 3, 3, 1, 0),
    (2, 3, 7, 9, 15, 3, 3, 1, 1),
    (3, 16, 6, 8, 16, 3, 3, 1, 2),
    (1, 4, 11, 4, 17, 5, 5, 1, 2),
    (2, 5, 13, 10, 33, 3, 3, 2, 1),
    (1, 3, 9, 17, 8, 2, 3, 3, 0),
    (2, 6, 4, 4, 64, 1, 1, 1, 0),
    (1, 2, 3, 97, 20, 3, 3, 1, 1),
    (2, 2, 3, 200, 40, 3, 3, 1, 1),
    (2, 16, 28, 28, 16, 3, 3, 1, 1),
    (2, 20, 9, 9, 32, 5, 5, 1, 4),
    (2, 17, 6, 6, 24, 3, 3, 1, 3),
] + [(1, 2, 3, w + 2, 16, 3, 3, 1, 0) for w in range(1, 14)]

# Gradient cases: stride 1, square 3x3 / 5x5 filters, pad <= FH - 1; channels 1-31 (dx's 16 lanes
# partly and wholly used, several blocks of rows of the filters), filters 1-70 (partial blocks,
# pairs), 11 images (tiles of several images whose sums carry from one image to the next).
GRAD_CASES = [
    (2, 16, 28, 28, 16, 3, 3, 1, 1),
    (11, 5, 7, 13, 17, 3, 3, 1, 1),
    (3, 31, 9, 11, 33, 3, 3, 1, 2),
    (2, 1, 28, 28, 16, 3, 3, 1, 1),
    (2, 6, 14, 14, 16, 5, 5, 1, 0),
    (1, 20, 8, 8, 70, 3, 3, 1, 0),
    (2, 3, 5, 9, 1, 5, 5, 1, 4),
    (1, 18, 1, 1, 20, 3, 3, 1, 1),
]


def case_id(case):
    return "N{}C{}_{}x{}_FN{}_{}x{}s{}p{}".format(*case)


def operands(rng, case):
    N, C, H, W, FN, FH, FW, stride, pad = case
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    Wt = (rng.standard_normal((FN, C, FH, FW)) / np.sqrt(C * FH * FW)).astype(np.float32)
    b = rng.standard_normal(FN).astype(np.float32)
    return x, Wt, b, stride, pad


def check_forward(rng, case, fused, dtype=np.float32):
    x, Wt, b, stride, pad = (a.astype(dtype) if isinstance(a, np.ndarray) else a
                             for a in operands(rng, case))
    fwd, rfwd = ((K.conv_bias_relu_forward, R.conv_bias_relu_forward) if fused
                 else (K.conv_forward, R.conv_forward))
    with cnncore.config_context(conv_algorithm="avx512_blocks"), trace() as steps:
        out = fwd(x, Wt, b, stride, pad)
    want = rfwd(x, Wt, b, stride, pad)
    assert ran(steps, "forward") == ["avx512_blocks"]
    assert out.dtype == dtype and out.flags.c_contiguous and out.shape == want.shape
    scale = np.abs(want).max() + 1
    np.testing.assert_allclose(out, want, **(tol(scale) if dtype == np.float32 else
                                             dict(rtol=1e-12, atol=1e-13 * scale)))


def check_gradients(rng, case, fused, need_dx, special=None, where=None):
    """The gradients forced to avx512_blocks against the reference's (special put at where first:
    NaN, +inf and -inf exactly where the reference has them). Returns the algorithms that ran."""
    x, Wt, b, stride, pad = operands(rng, case)
    out = R.conv_bias_relu_forward(x, Wt, b, stride, pad) if fused else None
    dout = rng.standard_normal(R.conv_forward(x, Wt, b, stride, pad).shape).astype(np.float32)
    if special is not None:
        target = {"x": x, "W": Wt, "dout": dout, "out": out}[where]
        target[-1, -1].flat[target[-1, -1].size // 2] = special
    with cnncore.config_context(conv_algorithm="avx512_blocks"), trace() as steps:
        got = (K.conv_bias_relu_backward(dout, x, Wt, out, stride, pad, need_dx=need_dx) if fused
               else K.conv_backward(dout, x, Wt, stride, pad, need_dx=need_dx))
    want = (R.conv_bias_relu_backward(dout, x, Wt, out, stride, pad, need_dx=need_dx) if fused
            else R.conv_backward(dout, x, Wt, stride, pad, need_dx=need_dx))
    for g, w in zip(got, want):
        if w is None:
            assert g is None
            continue
        assert g.dtype == np.float32 and g.shape == w.shape
        np.testing.assert_array_equal(np.isnan(g), np.isnan(w))
        np.testing.assert_array_equal(np.isposinf(g), np.isposinf(w))
        np.testing.assert_array_equal(np.isneginf(g), np.isneginf(w))
        finite = np.isfinite(w)
        np.testing.assert_allclose(g[finite], w[finite], **tol(np.abs(w[finite]).max() + 1))
    return ran(steps, "gradients")


@needs_avx512
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("fused", [False, True], ids=["conv", "fused"])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_forward_matches_reference(case, fused, dtype, rng):
    check_forward(rng, case, fused, dtype)


@needs_avx512
@given(st.integers(1, 3), st.integers(1, 20), st.integers(1, 12), st.integers(1, 30),
       st.integers(1, 70), st.integers(1, 5), st.integers(1, 5), st.integers(1, 3),
       st.integers(0, 3), st.booleans(), st.sampled_from([np.float32, np.float64]),
       st.integers(0, 2**32 - 1))
def test_forward_property(N, C, H, W, FN, FH, FW, stride, pad, fused, dtype, seed):
    assume(FH <= H + 2 * pad and FW <= W + 2 * pad)
    check_forward(np.random.default_rng(seed), (N, C, H, W, FN, FH, FW, stride, pad), fused,
                  dtype)


@needs_avx512
@pytest.mark.parametrize("need_dx", [False, True], ids=["dW", "dx_dW"])
@pytest.mark.parametrize("fused", [False, True], ids=["conv", "fused"])
@pytest.mark.parametrize("case", GRAD_CASES, ids=case_id)
def test_gradients_match_reference(case, fused, need_dx, rng):
    assert check_gradients(rng, case, fused, need_dx) == ["avx512_blocks"]


@needs_avx512
@given(st.integers(1, 3), st.integers(1, 24), st.integers(1, 10), st.integers(1, 20),
       st.integers(1, 40), st.sampled_from([3, 5]), st.integers(0, 4), st.booleans(),
       st.booleans(), st.integers(0, 2**32 - 1))
def test_gradients_property(N, C, H, W, FN, F, pad, fused, need_dx, seed):
    assume(pad <= F - 1 and F <= H + 2 * pad and F <= W + 2 * pad)
    steps = check_gradients(np.random.default_rng(seed), (N, C, H, W, FN, F, F, 1, pad), fused,
                            need_dx)
    assert steps == ["avx512_blocks"]


@needs_avx512
@pytest.mark.parametrize("need_dx", [False, True], ids=["dW", "dx_dW"])
@pytest.mark.parametrize("fused", [False, True], ids=["conv", "fused"])
@pytest.mark.parametrize("special", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", ["x", "W", "dout", "out"])
def test_gradients_non_finite_like_the_reference(where, special, fused, need_dx, rng):
    """An infinity in x meets d and the padding's zeros as in the reference; NaN in out keeps the
    gradient (the textbook's mask); dx sums the zeros around d times every weight, so a layer whose
    weights are not all finite takes another algorithm for its gradients."""
    if where == "out" and not fused:
        return
    steps = check_gradients(rng, (2, 16, 6, 7, 20, 3, 3, 1, 1), fused, need_dx, special, where)
    if need_dx and where == "W":
        assert len(steps) == 1 and steps[0] != "avx512_blocks"
    else:
        assert steps == ["avx512_blocks"]


@needs_avx512
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_forward_non_finite_like_the_reference(dtype, rng):
    x, Wt, b, stride, pad = (a.astype(dtype) if isinstance(a, np.ndarray) else a
                             for a in operands(rng, (2, 16, 6, 7, 20, 3, 3, 1, 1)))
    x[1, 3, 2, 2], Wt[5, 2, 1, 1], b[7] = np.inf, np.nan, -np.inf
    with cnncore.config_context(conv_algorithm="avx512_blocks"):
        got = K.conv_bias_relu_forward(x, Wt, b, stride, pad)
    want = R.conv_bias_relu_forward(x, Wt, b, stride, pad)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))


@needs_avx512
def test_results_do_not_depend_on_threads(rng, config, at_thread_counts):
    config(conv_algorithm="avx512_blocks")
    x, Wt, b, stride, pad = operands(rng, (9, 17, 12, 11, 40, 3, 3, 1, 1))
    out = K.conv_bias_relu_forward(x, Wt, b, stride, pad)
    dout = rng.standard_normal(out.shape).astype(np.float32)
    results = at_thread_counts(lambda: (K.conv_bias_relu_forward(x, Wt, b, stride, pad),
                                        *K.conv_bias_relu_backward(dout, x, Wt, out, stride, pad)))
    for r in results[1:]:
        for got, first in zip(r, results[0]):
            np.testing.assert_array_equal(got, first)


@pytest.mark.parametrize("C, FN, FH, H, need_dx, forward, gradients", [
    (16, 16, 3, 28, True, True, True),     # DeepConvNet conv2
    (16, 32, 3, 14, True, True, True),     # DeepConvNet conv3
    (1, 16, 3, 28, False, False, True),    # DeepConvNet conv1: 9 taps (rows), no dx
    (1, 16, 3, 28, True, False, False),    # its dx would use 1 of 16 lanes
    (6, 16, 5, 14, True, True, False),     # LeNet-5 conv2: 150 taps; dx with 6 of 16 lanes
    (32, 32, 3, 14, True, False, False),   # Winograd
    (16, 64, 3, 14, True, True, True),     # 64 filters
    (16, 130, 3, 14, True, False, True),   # 130 filters: GEMM forward
])
def test_default_rules(C, FN, FH, H, need_dx, forward, gradients, rng):
    x = rng.standard_normal((2, C, H, H)).astype(np.float32)
    Wt = (rng.standard_normal((FN, C, FH, FH)) / np.sqrt(C * FH * FH)).astype(np.float32)
    b = np.zeros(FN, np.float32)
    with trace() as steps:
        out = K.conv_bias_relu_forward(x, Wt, b, 1, FH // 2)
        dout = np.ones_like(out)
        got = K.conv_bias_relu_backward(dout, x, Wt, out, 1, FH // 2, need_dx=need_dx)
    want = R.conv_bias_relu_backward(dout, x, Wt, out, 1, FH // 2, need_dx=need_dx)
    for g, w in zip(got, want):
        if w is not None:
            np.testing.assert_allclose(g, w, **tol(np.abs(w).max() + 1))
    assert (ran(steps, "forward") == ["avx512_blocks"]) == (forward and AVX512)
    assert (ran(steps, "gradients") == ["avx512_blocks"]) == (gradients and AVX512)
    plan = select.select(x.shape, Wt.shape, 1, FH // 2, np.float32, need_dx=need_dx)
    assert (plan.forward == "avx512_blocks") == (forward and AVX512)


def test_use_avx512_false_takes_the_avx2_kernels(rng, config):
    config(use_avx512=False)
    x = rng.standard_normal((2, 16, 9, 9)).astype(np.float32)
    Wt = rng.standard_normal((16, 16, 3, 3)).astype(np.float32)
    with trace() as steps:
        out = K.conv_bias_relu_forward(x, Wt, np.zeros(16, np.float32), 1, 1)
        K.conv_bias_relu_backward(np.ones_like(out), x, Wt, out, 1, 1)
    assert "avx512_blocks" not in [r.algorithm for r in steps]
    with pytest.raises(ValueError, match="'avx512_blocks' cannot run the forward"):
        with cnncore.config_context(conv_algorithm="avx512_blocks"):
            K.conv_forward(x, Wt, np.zeros(16, np.float32), 1, 1)
