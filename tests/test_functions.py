"""cnncore.functions and cnncore.util: the textbook's stateless helpers."""
import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from cnncore import functions as F
from cnncore import kernels, util
from cnncore.gradient import numerical_gradient

TEXTBOOK_FUNCTIONS = ["identity_function", "step_function", "sigmoid", "sigmoid_grad", "relu",
                      "relu_grad", "softmax", "sum_squared_error", "cross_entropy_error",
                      "softmax_loss"]


def test_star_import_surface():
    ns = {}
    exec("from cnncore.functions import *", ns)
    assert set(TEXTBOOK_FUNCTIONS) <= set(ns)
    assert ns["np"] is np
    ns = {}
    exec("from cnncore.util import *", ns)
    assert {"smooth_curve", "shuffle_dataset", "conv_output_size", "im2col", "col2im"} <= set(ns)


def test_identity_returns_the_object():
    x = np.arange(3.0)
    assert F.identity_function(x) is x


def test_step_function_gives_ints():
    out = F.step_function(np.array([-1.0, 0.0, 0.5, 2.0]))
    assert out.dtype.kind == "i"
    assert_array_equal(out, [0, 0, 1, 1])


def test_sigmoid_values_and_no_overflow_warning():
    x = np.array([-1000.0, -1.0, 0.0, 2.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = F.sigmoid(x)
    assert_allclose(y[1:], 1 / (1 + np.exp(-x[1:])))
    assert y[0] == 0.0
    assert F.sigmoid(np.float32(1.0)).dtype == np.float32


@pytest.mark.parametrize("func, grad", [(F.sigmoid, F.sigmoid_grad), (F.gelu, F.gelu_grad),
                                        (F.leaky_relu, F.leaky_relu_grad)])
def test_elementwise_gradients_match_numerical(func, grad, rng):
    x = rng.standard_normal(7) + np.sign(rng.standard_normal(7)) * 0.1  # away from the kink at 0
    numeric = numerical_gradient(lambda z: np.sum(func(z)), x.copy())
    assert_allclose(grad(x), numeric, rtol=1e-6, atol=1e-9)


def test_relu_and_relu_grad_is_one_at_zero():
    x = np.array([[-2.0, 0.0], [3.0, -0.5]])
    assert_array_equal(F.relu(x), [[0, 0], [3, 0]])
    g = F.relu_grad(x)
    assert g.dtype == x.dtype and g.shape == x.shape
    assert_array_equal(g, [[0, 1], [1, 0]])


def test_softmax_normalises_the_last_axis(rng):
    x = rng.standard_normal((2, 3, 5)) * 50
    y = F.softmax(x)
    assert_allclose(y.sum(axis=-1), 1.0)
    assert_allclose(F.softmax(x + 1000.0), y)  # shift invariant, no overflow
    assert_allclose(F.softmax(x[0, 1]), y[0, 1])  # 1-D agrees with the batched rows
    assert F.softmax(x.astype(np.float32)).dtype == np.float32


def test_sum_squared_error_is_half_a_sum_and_has_the_kr_alias(rng):
    y, t = rng.random((4, 3)), rng.random((4, 3))
    assert F.sum_squared_error(y, t) == pytest.approx(0.5 * ((y - t) ** 2).sum())
    assert F.mean_squared_error is F.sum_squared_error


def test_cross_entropy_labels_onehot_1d_and_delta(rng):
    y = F.softmax(rng.standard_normal((5, 4)))
    labels = np.array([0, 3, 1, 1, 2], dtype=np.uint8)
    onehot = np.eye(4)[labels]
    expected = -np.mean(np.log(y[np.arange(5), labels] + 1e-7))
    assert F.cross_entropy_error(y, labels) == pytest.approx(expected, rel=1e-12)
    assert F.cross_entropy_error(y, onehot) == pytest.approx(expected, rel=1e-12)
    assert F.cross_entropy_error(y, labels.reshape(5, 1)) == pytest.approx(expected, rel=1e-12)
    assert F.cross_entropy_error(y[2], onehot[2]) == pytest.approx(-np.log(y[2, 1] + 1e-7))
    assert F.cross_entropy_error(y[2], 1) == pytest.approx(-np.log(y[2, 1] + 1e-7))
    zero = np.array([[0.0, 1.0]])
    assert F.cross_entropy_error(zero, np.array([0])) == pytest.approx(-np.log(1e-7))


def test_softmax_loss_composes(rng):
    x, t = rng.standard_normal((3, 6)), np.array([5, 0, 2])
    assert F.softmax_loss(x, t) == F.cross_entropy_error(F.softmax(x), t)


def test_extension_activations():
    x = np.array([-2.0, 0.0, 3.0], dtype=np.float32)
    assert_allclose(F.leaky_relu(x), [-0.02, 0.0, 3.0], rtol=1e-6)
    assert F.leaky_relu(x).dtype == np.float32
    assert_array_equal(F.leaky_relu_grad(x, alpha=0.2), np.array([0.2, 0.2, 1.0], np.float32))
    g = F.gelu(np.array([-10.0, 0.0, 10.0]))
    assert_allclose(g, [0.0, 0.0, 10.0], atol=1e-12)
    assert F.gelu(np.float32(1.5)).dtype == np.float32
    # tanh approximation against the exact erf form: close but not equal
    from math import erf, sqrt
    for v in (-1.3, 0.4, 2.2):
        assert abs(F.gelu(v) - 0.5 * v * (1 + erf(v / sqrt(2)))) < 1e-3


# --------------------------------------------------------------------------------------- cnncore.util

def test_im2col_col2im_are_the_compiled_kernels():
    assert util.im2col is kernels.im2col
    assert util.col2im is kernels.col2im


def test_conv_output_size_is_the_unfloored_textbook_float():
    assert util.conv_output_size(28, 5, 2) == 12.5
    assert util.conv_output_size(28, 5, 2, 2) == 14.5
    assert util.conv_output_size(28, 5) == 24


@pytest.mark.parametrize("shape", [(6, 3), (6, 1, 2, 2), (6,)])
def test_shuffle_dataset_uses_one_permutation(shape, rng):
    x = rng.standard_normal(shape)
    t = np.arange(6)
    x0, t0 = x.copy(), t.copy()
    np.random.seed(3)
    xs, ts = util.shuffle_dataset(x, t)
    np.random.seed(3)
    perm = np.random.permutation(6)
    assert_array_equal(ts, perm)
    assert_array_equal(xs, x0[perm])
    assert_array_equal(x, x0)
    assert_array_equal(t, t0)


def test_shuffle_dataset_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="first dimension"):
        util.shuffle_dataset(np.zeros((4, 2)), np.zeros(5))


def _textbook_smooth(x):
    # As API.md 3.1 describes it: 10 reflected samples at each end, Kaiser(11, 2) 'valid', trim 5.
    s = np.r_[x[10:0:-1], x, x[-1:-11:-1]]
    w = np.kaiser(11, 2)
    y = np.convolve(w / w.sum(), s, mode="valid")
    return y[5:len(y) - 5]


@pytest.mark.parametrize("n", [11, 12, 40])
def test_smooth_curve_matches_the_textbook(n, rng):
    x = rng.standard_normal(n).cumsum()
    y = util.smooth_curve(list(x))
    assert y.shape == (n,)
    assert_allclose(y, _textbook_smooth(x), rtol=1e-12)


@pytest.mark.parametrize("n", [1, 2, 5, 10])
def test_smooth_curve_keeps_short_lengths(n):
    y = util.smooth_curve(np.full(n, 3.0))
    assert y.shape == (n,)
    assert_allclose(y, 3.0)
