"""Compiled kernels against their NumPy references: hand-picked shapes and hypothesis shapes,
forward and backward, float32 and float64, plus the exact textbook layout and the adjoint identity."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import cnncore
from cnncore._conv import tiling
from cnncore._ext import pooling as _pooling
from cnncore import kernels as K
from cnncore import reference as R

DTYPES = [np.float32, np.float64]

# (N, C, H, W, FH, FW, stride, pad): N=1, C=1 and 3, odd and non-square images and windows,
# strides 1-3, pads 0-2, sizes the stride does not divide, windows as large as the padded input.
CASES = [
    (1, 1, 5, 5, 3, 3, 1, 0),
    (2, 3, 7, 9, 3, 2, 1, 1),
    (1, 3, 8, 6, 2, 3, 2, 0),
    (3, 2, 9, 7, 3, 3, 2, 1),
    (2, 1, 10, 11, 4, 3, 3, 2),
    (1, 3, 6, 6, 5, 5, 1, 2),
    (2, 2, 7, 5, 7, 5, 1, 0),
    (1, 1, 4, 4, 1, 1, 1, 0),
    (2, 3, 13, 8, 3, 5, 3, 1),
    (1, 2, 3, 3, 2, 2, 1, 1),
]
# Pooling needs pad < window.
POOL_CASES = [c for c in CASES if c[7] < min(c[4], c[5])] + [
    (2, 3, 24, 24, 2, 2, 2, 0),
    (1, 2, 9, 9, 3, 3, 2, 1),   # overlapping windows
    # 3-wide windows at stride 2 (their own backward row pass): without padding, odd widths, whose
    # last column lies in one window, even ones, whose last lies in none, a single window; with
    # padding 1 and 2, odd and even widths
    (2, 2, 9, 11, 3, 3, 2, 0),
    (1, 3, 10, 8, 3, 3, 2, 0),
    (1, 1, 3, 3, 3, 3, 2, 0),
    (1, 2, 5, 8, 3, 3, 2, 1),
    (1, 2, 7, 9, 4, 3, 2, 2),
    (2, 1, 6, 6, 3, 3, 2, 2),
    (2, 1, 8, 7, 3, 2, 1, 1),
    # windows that tile the plane (stride == window, no pad), with rows and columns left over
    (2, 2, 7, 9, 2, 2, 2, 0),
    (1, 3, 10, 8, 3, 3, 3, 0),
    (1, 1, 1, 1, 1, 1, 1, 0),
    (1, 2, 12, 11, 9, 8, 2, 1),  # more cells (72) than max pooling backward's offset table holds
]

# Rows wider than one of the max-pool kernel's runs (64 output cells), at strides 2, 1, 2 (3x3) and 3.
WIDE_POOL_CASES = [
    (1, 2, 5, 203, 2, 2, 2, 0),
    (1, 1, 4, 131, 3, 3, 1, 1),
    (1, 2, 7, 205, 3, 3, 2, 1),
    (2, 1, 6, 400, 3, 2, 3, 1),
]


POOL_AVX2 = [True, False] if cnncore.cpu_features()["avx2"] else [False]


@pytest.fixture(params=POOL_AVX2, ids=lambda a: "avx2" if a else "baseline")
def pool_avx2(request, config):
    """Max pooling forward with the AVX2 3x3 stride-2 loop (where the CPU has it) and without."""
    config(use_avx2=request.param)
    return request.param


def tol(dtype, scale=1.0):
    if np.dtype(dtype) == np.float32:
        return dict(rtol=2e-4, atol=2e-5 * scale)
    return dict(rtol=1e-10, atol=1e-12 * scale)


def make(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


def case_id(case):
    return "N{}C{}_{}x{}_f{}x{}_s{}p{}".format(*case)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_im2col_col2im_match_reference(case, dtype, rng):
    N, C, H, W, FH, FW, s, p = case
    x = make(rng, (N, C, H, W), dtype)
    col = K.im2col(x, FH, FW, s, p)
    expected = R.im2col(x, FH, FW, s, p)
    assert col.dtype == expected.dtype == dtype
    np.testing.assert_array_equal(col, expected)  # pure copies: exact
    dcol = make(rng, col.shape, dtype)
    dx = K.col2im(dcol, x.shape, FH, FW, s, p)
    assert dx.dtype == dtype and dx.shape == x.shape and dx.flags.c_contiguous
    np.testing.assert_allclose(dx, R.col2im(dcol, x.shape, FH, FW, s, p), **tol(dtype))


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_im2col_textbook_layout(case, rng):
    N, C, H, W, FH, FW, s, p = case
    x = rng.standard_normal((N, C, H, W))
    col = K.im2col(x, FH, FW, s, p)
    xp = np.pad(x, [(0, 0), (0, 0), (p, p), (p, p)])
    out_h, out_w = (H + 2 * p - FH) // s + 1, (W + 2 * p - FW) // s + 1
    assert col.shape == (N * out_h * out_w, C * FH * FW)
    for n in range(N):
        for i in range(out_h):
            for j in range(out_w):
                window = xp[n, :, i * s:i * s + FH, j * s:j * s + FW]
                np.testing.assert_array_equal(col[(n * out_h + i) * out_w + j], window.ravel())


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_col2im_is_the_adjoint_of_im2col(case, rng):
    N, C, H, W, FH, FW, s, p = case
    x = rng.standard_normal((N, C, H, W))
    col = K.im2col(x, FH, FW, s, p)
    c = rng.standard_normal(col.shape)
    np.testing.assert_allclose(np.vdot(col, c), np.vdot(x, K.col2im(c, x.shape, FH, FW, s, p)),
                               rtol=1e-10)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", POOL_CASES + WIDE_POOL_CASES, ids=case_id)
def test_max_pool_matches_reference(case, dtype, rng, pool_avx2):
    N, C, H, W, PH, PW, s, p = case
    x = make(rng, (N, C, H, W), dtype)
    out, arg = K.max_pool_forward(x, PH, PW, s, p)
    out_r, arg_r = R.max_pool_forward(x, PH, PW, s, p)
    assert out.dtype == dtype and arg.dtype == np.intp
    np.testing.assert_array_equal(out, out_r)
    np.testing.assert_array_equal(arg, arg_r)
    dout = make(rng, out.shape, dtype)
    dx = K.max_pool_backward(dout, arg, x.shape, PH, PW, s, p)
    np.testing.assert_allclose(dx, R.max_pool_backward(dout, arg_r, x.shape, PH, PW, s, p),
                               **tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", POOL_CASES, ids=case_id)
def test_avg_pool_matches_reference(case, dtype, rng):
    N, C, H, W, PH, PW, s, p = case
    x = make(rng, (N, C, H, W), dtype)
    out = K.avg_pool_forward(x, PH, PW, s, p)
    assert out.dtype == dtype
    np.testing.assert_allclose(out, R.avg_pool_forward(x, PH, PW, s, p), **tol(dtype))
    dout = make(rng, out.shape, dtype)
    dx = K.avg_pool_backward(dout, x.shape, PH, PW, s, p)
    np.testing.assert_allclose(dx, R.avg_pool_backward(dout, x.shape, PH, PW, s, p), **tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("stride", [2, 1])   # tiled windows, overlapping windows
def test_max_pool_backward_gives_positive_zeros_like_the_reference(stride, dtype, rng):
    x = rng.permutation(2 * 9 * 11).astype(dtype).reshape(1, 2, 9, 11)   # odd sizes, no ties
    out, arg = K.max_pool_forward(x, 2, 2, stride, 0)
    assert set(np.unique(arg)) == {0, 1, 2, 3}
    dout = np.full(out.shape, -0.0, dtype)
    got = K.max_pool_backward(dout, arg, x.shape, 2, 2, stride, 0)
    want = R.max_pool_backward(dout, R.max_pool_forward(x, 2, 2, stride, 0)[1], x.shape, 2, 2,
                               stride, 0)
    np.testing.assert_array_equal(np.signbit(got), np.signbit(want))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("window, stride", [(2, 2), (3, 3), (2, 1), (3, 2)])  # tiling; overlapping
def test_avg_pool_backward_gives_positive_zeros_like_the_reference(window, stride, dtype):
    dout = np.full((1, 2, 3, 3), -0.0, dtype)
    left_over = 1 if stride == window else 0    # a row no tiling window covers
    shape = (1, 2, (3 - 1) * stride + window + left_over, (3 - 1) * stride + window)
    got = K.avg_pool_backward(dout, shape, window, window, stride, 0)
    want = R.avg_pool_backward(dout, shape, window, window, stride, 0)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(np.signbit(got), np.signbit(want))


def test_max_pool_ties_go_to_the_first_cell_and_padding_never_wins():
    x = np.full((1, 1, 4, 4), -5.0)
    out, arg = K.max_pool_forward(x, 2, 2, 2, 1)  # every window mixes padding and -5s
    np.testing.assert_array_equal(out, -5.0)
    # the first real cell of each window: (1,1) for corner windows that start in the padding
    assert arg[0, 0, 0, 0] == 3 and arg[0, 0, 1, 1] == 0
    x = np.zeros((1, 1, 2, 2))
    assert K.max_pool_forward(x, 2, 2, 2, 0)[1][0, 0, 0, 0] == 0


def test_max_pool_nan_propagates_like_numpy():
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    x[0, 0, 0, 1] = np.nan
    out, arg = K.max_pool_forward(x, 2, 2, 2, 0)
    assert np.isnan(out[0, 0, 0, 0]) and arg[0, 0, 0, 0] == 1
    assert out[0, 0, 1, 1] == 15.0
    out_r, arg_r = R.max_pool_forward(x, 2, 2, 2, 0)
    np.testing.assert_array_equal(arg, arg_r)
    np.testing.assert_array_equal(out, out_r)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", POOL_CASES + WIDE_POOL_CASES, ids=case_id)
@pytest.mark.parametrize("special", [None, np.nan, np.inf, -np.inf])
def test_max_pool_ties_and_non_finite_values_match_the_reference(case, dtype, special, rng, pool_avx2):
    N, C, H, W, PH, PW, s, p = case
    check_max_pool_on_ties(rng, (N, C, H, W), dtype, special, PH, PW, s, p)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows", [1, 3])
def test_max_pool_2x2_every_window_of_ties_and_non_finite_values(dtype, rows):
    # The 2x2 stride-2 kernel compares row pairs first: every window drawn from a few values with
    # ties, signed zeros, NaN and infinities, side by side in rows of 2401 windows (several runs).
    values = np.array([-1.0, -0.0, 0.0, 1.0, np.nan, np.inf, -np.inf], dtype)
    a, b, c, d = (v.ravel() for v in np.meshgrid(values, values, values, values, indexing="ij"))
    x = np.empty((1, 1, 2, 2 * a.size), dtype)
    x[0, 0, 0, 0::2], x[0, 0, 0, 1::2], x[0, 0, 1, 0::2], x[0, 0, 1, 1::2] = a, b, c, d
    x = np.concatenate([x, x[..., ::-1]] * rows, axis=2)[:, :, :2 * rows]
    out, arg = K.max_pool_forward(x, 2, 2, 2, 0)
    out_r, arg_r = R.max_pool_forward(x, 2, 2, 2, 0)
    np.testing.assert_array_equal(arg, arg_r)
    np.testing.assert_array_equal(out, out_r)
    np.testing.assert_array_equal(np.signbit(out), np.signbit(out_r))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("pad", [0, 1])
def test_max_pool_3x3_stride_2_ties_signed_zeros_and_non_finite_values(dtype, pad, rng, pool_avx2):
    # The 3x3 stride-2 pass compares the nine cells in registers: windows drawn from a few values
    # with ties, signed zeros, NaN and infinities (rare enough that most runs stay on that pass).
    values = np.array([-1.0, -0.0, 0.0, 1.0, np.nan, np.inf, -np.inf], dtype)
    x = rng.choice(values[:4], size=(2, 3, 21, 141)).astype(dtype)
    rare = rng.random(x.shape) < 0.002
    x[rare] = rng.choice(values[4:], size=rare.sum())
    out, arg = K.max_pool_forward(x, 3, 3, 2, pad)
    out_r, arg_r = R.max_pool_forward(x, 3, 3, 2, pad)
    np.testing.assert_array_equal(arg, arg_r)
    np.testing.assert_array_equal(out, out_r)
    np.testing.assert_array_equal(np.signbit(out), np.signbit(out_r))


@pytest.mark.skipif(POOL_AVX2 == [False], reason="this CPU or compiler has no AVX2")
@given(st.integers(1, 2), st.integers(1, 3), st.integers(3, 20), st.integers(3, 60),
       st.integers(0, 2), st.sampled_from([None, np.nan, np.inf, -np.inf]), st.sampled_from(DTYPES),
       st.integers(0, 2**32 - 1))
def test_avx2_3x3_max_pool_matches_the_baseline_loop(N, C, H, W, pad, special, dtype, seed):
    """The AVX2 loops take 8 (float32) or 4 (float64) outputs a step, the last step overlapping the
    one before: outputs, window indices and the non-finite fallback must equal the baseline
    loop's exactly."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-2, 3, (N, C, H, W)).astype(dtype)
    if special is not None:
        x[rng.random(x.shape) < 0.01] = special
    results = []
    for avx2 in (True, False):
        OH, OW = (H + 2 * pad - 3) // 2 + 1, (W + 2 * pad - 3) // 2 + 1
        out = np.full((N, C, OH, OW), 7.5, dtype)
        arg = np.full((N, C, OH, OW), -1, np.intp)
        _pooling.max_pool_forward(x, out, arg, 3, 3, 2, pad, 1, avx2)
        results.append((out, arg))
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(results[0][1], R.max_pool_forward(x, 3, 3, 2, pad)[1])


@pytest.mark.skipif(POOL_AVX2 == [False], reason="this CPU or compiler has no AVX2")
@given(st.integers(1, 2), st.integers(1, 3), st.integers(3, 20), st.integers(3, 60),
       st.sampled_from([None, np.nan, np.inf, -np.inf, -0.0]), st.integers(0, 2**32 - 1))
def test_avx2_3x3_max_pool_backward_matches_the_baseline_loop(N, C, H, W, special, seed):
    """The float32 AVX2 backward (3x3, stride 2, no padding) builds each dx row from the windows over
    it, 8 windows a step, the row shared by two window rows kept until both have added: dx must
    equal the baseline scatter's to the bit (NaN, infinities and signed zeros in dout included),
    every cell written."""
    rng = np.random.default_rng(seed)
    OH, OW = (H - 3) // 2 + 1, (W - 3) // 2 + 1
    dout = rng.integers(-3, 4, (N, C, OH, OW)).astype(np.float32) / 4
    if special is not None:
        dout[rng.random(dout.shape) < 0.05] = special
    arg = rng.integers(0, 9, (N, C, OH, OW)).astype(np.intp)
    results = []
    for avx2 in (True, False):
        dx = np.full((N, C, H, W), np.nan, np.float32)
        _pooling.max_pool_backward(dout, arg, dx, 3, 3, 2, 0, 1, avx2)
        results.append(dx)
    np.testing.assert_array_equal(results[0], results[1])
    np.testing.assert_array_equal(np.signbit(results[0]), np.signbit(results[1]))
    np.testing.assert_allclose(results[0], R.max_pool_backward(dout, arg, (N, C, H, W), 3, 3, 2, 0),
                               rtol=1e-6, atol=0)


def test_max_pool_backward_3x3_rows_wider_than_the_avx2_loop(rng, pool_avx2):
    # Rows of more windows than the AVX2 loop's carry holds (64 steps of 8) take the scatter.
    dout = make(rng, (1, 2, 2, 600), np.float32)
    arg = rng.integers(0, 9, dout.shape).astype(np.intp)
    np.testing.assert_allclose(K.max_pool_backward(dout, arg, (1, 2, 5, 1201), 3, 3, 2, 0),
                               R.max_pool_backward(dout, arg, (1, 2, 5, 1201), 3, 3, 2, 0),
                               rtol=1e-6, atol=0)


def check_max_pool_on_ties(rng, shape, dtype, special, PH, PW, s, p):
    # Few distinct values, so most windows hold ties; a sprinkling of NaN or +-inf
    # sends some of the float32 kernel's runs down the cell-by-cell path.
    x = rng.integers(-2, 3, shape).astype(dtype)
    if special is not None:
        x[rng.random(x.shape) < 0.02] = special
    out, arg = K.max_pool_forward(x, PH, PW, s, p)
    out_r, arg_r = R.max_pool_forward(x, PH, PW, s, p)
    np.testing.assert_array_equal(arg, arg_r)
    np.testing.assert_array_equal(out, out_r)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fused", [False, True])
def test_conv_inf_weight_times_padding_is_nan_like_the_reference(dtype, fused):
    # A window wholly in the padding unfolds to zeros; 0 * inf must give NaN, as the reference's @
    # does (found by the fuzz campaign: np.dot's small-product BLAS path skipped the zeros).
    x = np.full((1, 1, 1, 1), 0.5, dtype)
    W = np.array([np.inf, 0.64], dtype).reshape(2, 1, 1, 1)
    b = np.array([0.1, 0.36], dtype)
    conv = K.conv_bias_relu_forward if fused else K.conv_forward
    ref = R.conv_bias_relu_forward if fused else R.conv_forward
    with np.errstate(invalid="ignore"):
        out, expected = conv(x, W, b, 3, 1), ref(x, W, b, 3, 1)
    assert np.isnan(expected[0, 0, 0, 0])
    np.testing.assert_array_equal(out, expected)


def conv_operands(rng, case, FN, dtype):
    N, C, H, W, FH, FW, s, p = case
    x = make(rng, (N, C, H, W), dtype)
    Wt = make(rng, (FN, C, FH, FW), dtype)
    b = make(rng, (FN,), dtype)
    return x, Wt, b, s, p


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_conv_matches_reference(case, dtype, rng):
    x, Wt, b, s, p = conv_operands(rng, case, 4, dtype)
    out = K.conv_forward(x, Wt, b, s, p)
    assert out.dtype == dtype and out.flags.c_contiguous
    scale = np.abs(out).max()
    np.testing.assert_allclose(out, R.conv_forward(x, Wt, b, s, p), **tol(dtype, scale))
    dout = make(rng, out.shape, dtype)
    for got, want in zip(K.conv_backward(dout, x, Wt, s, p), R.conv_backward(dout, x, Wt, s, p)):
        assert got.dtype == dtype and got.shape == want.shape
        np.testing.assert_allclose(got, want, **tol(dtype, np.abs(want).max()))


# Stride 1 with filter_w == 2*pad + 1 keeps the width (out_w == W): unfold's block-copy path. Rows of
# one pixel, filters taller than the image, wide pads and a non-square filter reach its clipping.
SAME_WIDTH_CASES = [
    (1, 1, 1, 1, 3, 3, 1, 1), (2, 3, 1, 5, 1, 3, 1, 1), (1, 2, 4, 1, 3, 3, 1, 1),
    (3, 2, 7, 6, 3, 3, 1, 1), (2, 1, 5, 9, 5, 5, 1, 2), (1, 2, 2, 3, 5, 5, 1, 2),
    (2, 3, 6, 4, 2, 1, 1, 0), (1, 1, 3, 3, 7, 7, 1, 3), (4, 5, 8, 8, 3, 5, 1, 2),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", SAME_WIDTH_CASES, ids=case_id)
def test_same_width_conv_matches_reference(case, dtype, rng):
    x, Wt, b, s, p = conv_operands(rng, case, 3, dtype)
    out = K.conv_forward(x, Wt, b, s, p)
    assert out.shape[3] == x.shape[3]
    np.testing.assert_allclose(out, R.conv_forward(x, Wt, b, s, p), **tol(dtype, np.abs(out).max()))
    np.testing.assert_array_equal(K.im2col(x, Wt.shape[2], Wt.shape[3], s, p),
                                  R.im2col(x, Wt.shape[2], Wt.shape[3], s, p))
    dout = make(rng, out.shape, dtype)
    for got, want in zip(K.conv_backward(dout, x, Wt, s, p), R.conv_backward(dout, x, Wt, s, p)):
        np.testing.assert_allclose(got, want, **tol(dtype, np.abs(want).max()))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_fused_conv_relu_matches_reference(case, dtype, rng):
    x, Wt, b, s, p = conv_operands(rng, case, 3, dtype)
    out = K.conv_bias_relu_forward(x, Wt, b, s, p)
    want = R.conv_bias_relu_forward(x, Wt, b, s, p)
    np.testing.assert_allclose(out, want, **tol(dtype, np.abs(want).max()))
    assert (out >= 0).all()
    dout = make(rng, out.shape, dtype)
    got = K.conv_bias_relu_backward(dout, x, Wt, out, s, p)
    for g, w in zip(got, R.conv_bias_relu_backward(dout, x, Wt, want, s, p)):
        np.testing.assert_allclose(g, w, **tol(dtype, np.abs(w).max()))


@pytest.mark.parametrize("module", [K, R], ids=["kernels", "reference"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_need_dx_false_skips_only_dx(module, dtype, rng):
    x, Wt, b, s, p = conv_operands(rng, (7, 3, 9, 8, 3, 3, 2, 1), 5, dtype)
    out = module.conv_bias_relu_forward(x, Wt, b, s, p)
    dout = make(rng, out.shape, dtype)
    for full, part in [(module.conv_backward(dout, x, Wt, s, p),
                        module.conv_backward(dout, x, Wt, s, p, need_dx=False)),
                       (module.conv_bias_relu_backward(dout, x, Wt, out, s, p),
                        module.conv_bias_relu_backward(dout, x, Wt, out, s, p, need_dx=False))]:
        assert part[0] is None
        np.testing.assert_array_equal(part[1], full[1])
        np.testing.assert_array_equal(part[2], full[2])


def test_fused_equals_conv_then_relu(rng):
    x, Wt, b, s, p = conv_operands(rng, (3, 3, 9, 8, 3, 3, 1, 1), 5, np.float64)
    plain = K.conv_forward(x, Wt, b, s, p)
    np.testing.assert_array_equal(K.conv_bias_relu_forward(x, Wt, b, s, p), np.maximum(plain, 0))


def test_conv_tiles_give_the_same_result(rng):
    # Force one image per tile and a partial last tile; compare with one big tile.
    x, Wt, b, s, p = conv_operands(rng, (5, 3, 9, 8, 3, 3, 1, 1), 4, np.float64)
    dout = rng.standard_normal(K.conv_forward(x, Wt, b, s, p).shape)
    with cnncore.config_context(tile_bytes=1 << 30):
        big = (K.conv_forward(x, Wt, b, s, p),) + K.conv_backward(dout, x, Wt, s, p)
    # K = 3*3*3 = 27 column rows, L = 9*8 = 72 outputs per image, 8 bytes each
    for tile_bytes in (1, 2 * 27 * 72 * 8):  # 1 image, then 2 images per tile (5 = 2+2+1)
        with cnncore.config_context(tile_bytes=tile_bytes):
            small = (K.conv_forward(x, Wt, b, s, p),) + K.conv_backward(dout, x, Wt, s, p)
        # >= MIN_TILES
        assert len(tiling.tiles(5, 27 * 72 * 8, tile_bytes)) == (5 if tile_bytes == 1 else 4)
        for a, c in zip(big, small):
            np.testing.assert_allclose(a, c, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("N,row_bytes,tile_bytes", [
    (0, 8, 64), (1, 8, 64), (3, 8, 64), (100, 8, 64), (100, 1000, 64), (7, 8, 8), (1000, 3, 1 << 20),
])
def test_tiles_cover_the_batch_evenly(N, row_bytes, tile_bytes):
    tiles = tiling.tiles(N, row_bytes, tile_bytes)
    if N == 0:
        assert tiles == []
        return
    sizes = [t.stop - t.start for t in tiles]
    assert [t.start for t in tiles] == [0] + [t.stop for t in tiles[:-1]]
    assert tiles[-1].stop == N and sum(sizes) == N
    assert max(sizes) - min(sizes) <= 1                          # even, so threads finish together
    assert max(sizes) <= max(1, tile_bytes // row_bytes)         # within the byte budget
    assert len(tiles) >= min(N, tiling.MIN_TILES)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("M,Kd,N", [(1, 1, 1), (7, 3, 5), (100, 1024, 50), (257, 33, 1), (0, 4, 3),
                                    (5, 0, 3)])
def test_matmul_matches_the_reference(M, Kd, N, dtype, rng):
    a = rng.standard_normal((M, Kd)).astype(dtype)
    b = rng.standard_normal((Kd, N)).astype(dtype)
    got = K.matmul(a, b)
    assert got.dtype == dtype and got.shape == (M, N)
    np.testing.assert_allclose(got, R.matmul(a, b), **tol(dtype, max(1.0, np.sqrt(Kd))))
    # transposed (Fortran-ordered) views, as Affine.backward passes them
    np.testing.assert_allclose(K.matmul(b.T, a.T), got.T, **tol(dtype, max(1.0, np.sqrt(Kd))))


def test_matmul_chunks_give_the_same_result_and_keep_ieee_products(rng):
    a = rng.standard_normal((37, 20))
    b = rng.standard_normal((20, 9))
    a[3, 4] = np.inf          # inf * 0 is NaN, as with @ (np.dot's small-product path gave 0)
    b[4, :] = 0
    whole = K.matmul(a, b)
    np.testing.assert_array_equal(np.isnan(whole), np.isnan(a @ b))
    for chunks in (2, 3, 37, 100):   # rows of a in pieces, down to one row each
        with cnncore.config_context(matmul_chunks=chunks, matmul_chunk_work=1):
            np.testing.assert_allclose(K.matmul(a, b), whole, rtol=1e-13, atol=1e-13)
            np.testing.assert_allclose(K.matmul(b.T, a.T), whole.T, rtol=1e-13, atol=1e-13)


def test_matmul_dtype_rule(rng):
    a32 = rng.standard_normal((4, 3)).astype(np.float32)
    assert K.matmul(a32, a32.T).dtype == np.float32
    assert K.matmul(a32, a32.T.astype(np.float64)).dtype == np.float64
    assert K.matmul(np.ones((2, 2), np.int64), np.ones((2, 2), np.int64)).dtype == np.float64


def test_scalar_bias_is_broadcast(rng):
    x, Wt, _, s, p = conv_operands(rng, (2, 3, 6, 6, 3, 3, 1, 0), 4, np.float64)
    np.testing.assert_allclose(K.conv_forward(x, Wt, 0.5, s, p),
                               K.conv_forward(x, Wt, np.full(4, 0.5), s, p), rtol=1e-14)
    np.testing.assert_allclose(K.conv_forward(x, Wt, 0.5, s, p),
                               R.conv_forward(x, Wt, 0.5, s, p), rtol=1e-10)


# ----------------------------------------------------------------------------------------- hypothesis

@st.composite
def window_case(draw, pool=False):
    N = draw(st.integers(1, 3))
    C = draw(st.integers(1, 4))
    FH = draw(st.integers(1, 5))
    FW = draw(st.integers(1, 5))
    limit = min(FH, FW) - 1 if pool else 2
    pad = draw(st.integers(0, max(0, limit)))
    H = draw(st.integers(max(1, FH - 2 * pad), 12))
    W = draw(st.integers(max(1, FW - 2 * pad), 12))
    stride = draw(st.integers(1, 3))
    dtype = draw(st.sampled_from(DTYPES))
    seed = draw(st.integers(0, 2**32 - 1))
    return (N, C, H, W, FH, FW, stride, pad), dtype, np.random.default_rng(seed)


@given(window_case())
def test_im2col_col2im_property(args):
    (N, C, H, W, FH, FW, s, p), dtype, rng = args
    x = make(rng, (N, C, H, W), dtype)
    col = K.im2col(x, FH, FW, s, p)
    np.testing.assert_array_equal(col, R.im2col(x, FH, FW, s, p))
    dcol = make(rng, col.shape, dtype)
    np.testing.assert_allclose(K.col2im(dcol, x.shape, FH, FW, s, p),
                               R.col2im(dcol, x.shape, FH, FW, s, p), **tol(dtype))


@given(window_case(pool=True))
def test_pooling_property(args):
    (N, C, H, W, PH, PW, s, p), dtype, rng = args
    x = make(rng, (N, C, H, W), dtype)
    out, arg = K.max_pool_forward(x, PH, PW, s, p)
    out_r, arg_r = R.max_pool_forward(x, PH, PW, s, p)
    np.testing.assert_array_equal(out, out_r)
    np.testing.assert_array_equal(arg, arg_r)
    dout = make(rng, out.shape, dtype)
    np.testing.assert_allclose(K.max_pool_backward(dout, arg, x.shape, PH, PW, s, p),
                               R.max_pool_backward(dout, arg, x.shape, PH, PW, s, p), **tol(dtype))
    np.testing.assert_allclose(K.avg_pool_forward(x, PH, PW, s, p),
                               R.avg_pool_forward(x, PH, PW, s, p), **tol(dtype))
    np.testing.assert_allclose(K.avg_pool_backward(dout, x.shape, PH, PW, s, p),
                               R.avg_pool_backward(dout, x.shape, PH, PW, s, p), **tol(dtype))


@given(st.integers(1, 4), st.integers(1, 4), st.integers(1, 3), st.integers(0, 3),
       st.integers(1, 6), st.integers(1, 300), st.sampled_from(DTYPES),
       st.sampled_from([None, np.nan, np.inf, -np.inf]), st.integers(0, 2**32 - 1))
def test_max_pool_wide_rows_property(PH, PW, s, p, H, W, dtype, special, seed):
    # Rows of up to 300 cells: the float32 kernel's 64-cell runs, their ends and the border windows.
    p = min(p, min(PH, PW) - 1)
    H, W = max(H, PH - 2 * p), max(W, PW - 2 * p)
    check_max_pool_on_ties(np.random.default_rng(seed), (1, 2, H, W), dtype, special, PH, PW, s, p)


@given(window_case(), st.integers(1, 5), st.booleans())
def test_conv_property(args, FN, fused):
    case, dtype, rng = args
    x, Wt, b, s, p = conv_operands(rng, case, FN, dtype)
    fwd, bwd = ((K.conv_bias_relu_forward, K.conv_bias_relu_backward) if fused
                else (K.conv_forward, K.conv_backward))
    rfwd, rbwd = ((R.conv_bias_relu_forward, R.conv_bias_relu_backward) if fused
                  else (R.conv_forward, R.conv_backward))
    out, want = fwd(x, Wt, b, s, p), rfwd(x, Wt, b, s, p)
    np.testing.assert_allclose(out, want, **tol(dtype, np.abs(want).max() + 1))
    dout = make(rng, out.shape, dtype)
    extra = (out,) if fused else ()
    extra_r = (want,) if fused else ()
    for g, w in zip(bwd(dout, x, Wt, *extra, s, p), rbwd(dout, x, Wt, *extra_r, s, p)):
        np.testing.assert_allclose(g, w, **tol(dtype, np.abs(w).max() + 1))
