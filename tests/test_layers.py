"""cnncore.layers: backward vs numerical gradients, textbook semantics, dtypes, kernel swapping."""
import inspect

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from cnncore import kernels, reference
from cnncore.gradient import numerical_gradient
from cnncore.layers import (GELU, Affine, AvgPooling, BatchNormalization, ConvReLU, Convolution,
                            Dropout, Flatten, GlobalAvgPooling, LeakyReLU, Pooling, Relu, Sigmoid,
                            SoftmaxWithLoss, SpatialBatchNormalization)

TEXTBOOK_NAMES = {
    "Relu", "Sigmoid", "Affine", "SoftmaxWithLoss", "Dropout", "BatchNormalization", "Convolution",
    "Pooling", "identity_function", "step_function", "sigmoid", "sigmoid_grad", "relu", "relu_grad",
    "softmax", "sum_squared_error", "cross_entropy_error", "softmax_loss", "im2col", "col2im", "np",
}


def test_star_import_gives_the_textbook_surface():
    ns = {}
    exec("from cnncore.layers import *", ns)
    assert TEXTBOOK_NAMES <= set(ns)
    assert ns["np"] is np
    assert ns["im2col"] is kernels.im2col
    assert {"ConvReLU", "AvgPooling", "GlobalAvgPooling", "LeakyReLU", "GELU", "Flatten",
            "SpatialBatchNormalization", "mean_squared_error"} <= set(ns)


# ------------------------------------------------------------------ backward vs numerical gradient

def _away_from_zero(rng, shape):
    """Normal samples pushed at least 0.05 away from 0, so h = 1e-4 never crosses a ReLU kink."""
    x = rng.standard_normal(shape)
    return x + np.sign(x) * 0.05


def _seeded(layer, seed=5):
    """layer.forward with the global RNG reseeded each call (fixed dropout mask)."""
    def forward(x):
        np.random.seed(seed)
        return layer.forward(x)
    return forward


def _case(name, rng):
    """-> (layer, x, names of parameter attributes, forward function)."""
    r = rng.standard_normal
    if name == "Relu":
        return Relu(), _away_from_zero(rng, (3, 4)), (), None
    if name == "Sigmoid":
        return Sigmoid(), r((3, 4)), (), None
    if name == "Affine":
        return Affine(r((12, 5)), r(5)), r((2, 3, 2, 2)), ("W", "b"), None
    if name == "Dropout":
        layer = Dropout(0.3)
        return layer, r((4, 5)), (), _seeded(layer)
    if name == "BatchNormalization-2d":
        return BatchNormalization(r(5), r(5)), r((6, 5)), ("gamma", "beta"), None
    if name == "BatchNormalization-4d":
        return BatchNormalization(r(12), r(12)), r((4, 3, 2, 2)), ("gamma", "beta"), None
    if name == "SpatialBatchNormalization":
        return SpatialBatchNormalization(r(3), r(3)), r((2, 3, 3, 2)), ("gamma", "beta"), None
    if name == "Convolution":
        return Convolution(r((4, 2, 3, 2)), r(4), stride=2, pad=1), r((2, 2, 5, 6)), ("W", "b"), None
    if name == "ConvReLU":
        W, x = r((3, 2, 2, 2)), r((2, 2, 4, 5))
        layer = ConvReLU(W, r(3), stride=1, pad=1)
        while np.abs(layer.kernels.conv_forward(x, W, layer.b, 1, 1)).min() < 0.01:  # no kinks
            layer.b += 0.0137
        return layer, x, ("W", "b"), None
    if name == "Pooling":
        return Pooling(3, 2, stride=1, pad=1), r((2, 2, 4, 5)), (), None
    if name == "AvgPooling":
        return AvgPooling(2, 3, stride=1, pad=1), r((2, 2, 4, 5)), (), None
    if name == "GlobalAvgPooling":
        return GlobalAvgPooling(), r((2, 3, 2, 4)), (), None
    if name == "LeakyReLU":
        return LeakyReLU(0.1), _away_from_zero(rng, (3, 4)), (), None
    if name == "GELU":
        return GELU(), r((3, 4)), (), None
    if name == "Flatten":
        return Flatten(), r((2, 3, 2)), (), None
    raise KeyError(name)


CASES = ["Relu", "Sigmoid", "Affine", "Dropout", "BatchNormalization-2d", "BatchNormalization-4d",
         "SpatialBatchNormalization", "Convolution", "ConvReLU", "Pooling", "AvgPooling",
         "GlobalAvgPooling", "LeakyReLU", "GELU", "Flatten"]


@pytest.mark.parametrize("name", CASES)
def test_backward_matches_numerical_gradient(name, rng):
    layer, x, param_names, forward = _case(name, rng)
    forward = forward or layer.forward
    weights = rng.standard_normal(forward(x).shape)  # loss = sum(out * weights)

    def loss(_):
        return np.sum(forward(x) * weights)

    forward(x)
    dx = layer.backward(weights.copy())
    analytic = {p: getattr(layer, "d" + p).copy() for p in param_names}
    assert dx.shape == x.shape
    assert_allclose(dx, numerical_gradient(loss, x), rtol=1e-6, atol=1e-8)
    for p in param_names:
        assert_allclose(analytic[p], numerical_gradient(loss, getattr(layer, p)), rtol=1e-6,
                        atol=1e-8, err_msg=p)


def test_softmax_with_loss_backward_matches_numerical_gradient(rng):
    layer = SoftmaxWithLoss()
    x, t = rng.standard_normal((4, 3)), np.array([2, 0, 1, 1], dtype=np.uint8)
    layer.forward(x, t)
    dx = layer.backward()
    assert_allclose(dx, numerical_gradient(lambda _: layer.forward(x, t), x), rtol=1e-6, atol=1e-9)


# ------------------------------------------------------------- textbook-style conv and pooling (oracle)

def _textbook_conv(x, W, b, stride, pad, dout):
    """API.md 5.7 with cnncore.reference's im2col/col2im: -> out, dx, dW, db, col, col_W."""
    FN, C, FH, FW = W.shape
    N, _, H, Wd = x.shape
    out_h, out_w = (H + 2 * pad - FH) // stride + 1, (Wd + 2 * pad - FW) // stride + 1
    col = reference.im2col(x, FH, FW, stride, pad)
    col_W = W.reshape(FN, -1).T
    out = (col @ col_W + b).reshape(N, out_h, out_w, -1).transpose(0, 3, 1, 2)
    d = dout.transpose(0, 2, 3, 1).reshape(-1, FN)
    dW = (col.T @ d).T.reshape(W.shape)
    dx = reference.col2im(d @ col_W.T, x.shape, FH, FW, stride, pad)
    return out, dx, dW, d.sum(axis=0), col, col_W


def _textbook_pool(x, ph, pw, stride, dout):
    """API.md 5.8 (pad 0): -> out, flat arg_max, dx."""
    N, C, H, W = x.shape
    out_h, out_w = (H - ph) // stride + 1, (W - pw) // stride + 1
    col = reference.im2col(x, ph, pw, stride, 0).reshape(-1, ph * pw)
    arg_max = np.argmax(col, axis=1)
    out = np.max(col, axis=1).reshape(N, out_h, out_w, C).transpose(0, 3, 1, 2)
    d = dout.transpose(0, 2, 3, 1)
    dmax = np.zeros((d.size, ph * pw))
    dmax[np.arange(arg_max.size), arg_max] = d.ravel()
    dx = reference.col2im(dmax.reshape(N * out_h * out_w, -1), x.shape, ph, pw, stride, 0)
    return out, arg_max, dx


@pytest.mark.parametrize("stride, pad", [(1, 0), (2, 1), (3, 2)])
def test_convolution_matches_the_textbook_computation(stride, pad, rng):
    x, W, b = (rng.standard_normal(s) for s in [(3, 2, 7, 6), (4, 2, 3, 2), 4])
    layer = Convolution(W, b, stride, pad)
    out = layer.forward(x)
    dout = rng.standard_normal(out.shape)
    t_out, t_dx, t_dW, t_db, t_col, t_col_W = _textbook_conv(x, W, b, stride, pad, dout)
    dx = layer.backward(dout)
    assert out.flags.c_contiguous and out.dtype == np.float64
    for got, want in [(out, t_out), (dx, t_dx), (layer.dW, t_dW), (layer.db, t_db),
                      (layer.col, t_col), (layer.col_W, t_col_W)]:
        assert got.shape == want.shape
        assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    assert layer.x is x


def test_convolution_attributes_before_forward_and_scalar_bias(rng):
    W = rng.standard_normal((1, 1, 5, 5))
    layer = Convolution(W, 0)  # ch07 apply_filter.py passes b=0
    assert layer.x is None and layer.col is None and layer.dW is None and layer.db is None
    assert layer.W is W and layer.stride == 1 and layer.pad == 0
    img = rng.random((1, 1, 9, 8)).astype(np.float32)
    out = layer.forward(img)
    assert out.shape == (1, 1, 5, 4)
    assert_allclose(out, _textbook_conv(img.astype(np.float64), W, 0, 1, 0, np.zeros(out.shape))[0],
                    rtol=1e-12)


@pytest.mark.parametrize("pool_h, pool_w, stride", [(2, 2, 2), (3, 2, 1), (2, 3, 2)])
def test_pooling_matches_the_textbook_computation(pool_h, pool_w, stride, rng):
    x = rng.standard_normal((2, 3, 6, 7))
    x[0, 0, :2, :2] = 1.5  # a tie: the first cell wins, as in the textbook
    layer = Pooling(pool_h, pool_w, stride)
    out = layer.forward(x)
    dout = rng.standard_normal(out.shape)
    t_out, t_arg_max, t_dx = _textbook_pool(x, pool_h, pool_w, stride, dout)
    assert_array_equal(out, t_out)
    assert layer.arg_max.shape == t_arg_max.shape
    assert_array_equal(layer.arg_max, t_arg_max)
    assert_allclose(layer.backward(dout), t_dx, rtol=1e-12, atol=1e-15)
    assert out.flags.c_contiguous


def test_pooling_defaults_and_padding(rng):
    assert inspect.signature(Pooling).parameters["stride"].default == 2
    layer = Pooling(2, 2)
    assert layer.arg_max is None and layer.x is None
    x = -rng.random((1, 2, 5, 5)) - 0.5  # all negative
    out = Pooling(2, 2, stride=2, pad=1).forward(x)
    assert out.shape == (1, 2, 3, 3)  # the output size uses pad
    assert (out < 0).all()  # a padded cell never wins the max
    assert_allclose(out[:, :, 0, 0], x[:, :, 0, 0])


def test_avg_and_global_avg_pooling_values(rng):
    x = rng.standard_normal((2, 3, 4, 6))
    assert_allclose(AvgPooling(2, 2).forward(x), x.reshape(2, 3, 2, 2, 3, 2).mean(axis=(3, 5)))
    g = GlobalAvgPooling()
    out = g.forward(x)
    assert out.shape == (2, 3)
    assert_allclose(out, x.mean(axis=(2, 3)))
    with pytest.raises(ValueError, match="N, C, H, W"):
        g.forward(x[0])


def test_conv_relu_equals_convolution_then_relu(rng):
    x, W, b = (rng.standard_normal(s) for s in [(2, 3, 6, 6), (4, 3, 3, 3), 4])
    conv, relu, fused = Convolution(W, b, 1, 1), Relu(), ConvReLU(W, b, 1, 1)
    out = fused.forward(x)
    assert_array_equal(out, relu.forward(conv.forward(x)))
    dout = rng.standard_normal(out.shape)
    assert_allclose(fused.backward(dout), conv.backward(relu.backward(dout)), rtol=1e-13, atol=1e-13)
    assert_allclose(fused.dW, conv.dW, rtol=1e-13)
    assert_allclose(fused.db, conv.db, rtol=1e-13)
    assert fused.W is W and fused.out is out and fused.x is x
    assert_array_equal(fused.col, conv.col)


# ------------------------------------------------------------------------- aliasing and kernel swaps

def test_layers_read_their_parameters_at_every_call(rng):
    W, b = rng.standard_normal((2, 1, 3, 3)), np.zeros(2)
    x = rng.standard_normal((1, 1, 4, 4))
    conv = Convolution(W, b)
    out1 = conv.forward(x)
    W *= 2  # an optimizer's in-place update
    assert_allclose(conv.forward(x), 2 * out1)
    conv.W = np.zeros_like(W)  # load_params rebinds
    assert_array_equal(conv.forward(x), 0)
    affine = Affine(rng.standard_normal((4, 2)), np.zeros(2))
    y1 = affine.forward(x.reshape(1, 16)[:, :4])
    affine.b += 1
    assert_allclose(affine.forward(x.reshape(1, 16)[:, :4]), y1 + 1)


@pytest.mark.parametrize("cls, args", [(Convolution, "conv"), (ConvReLU, "conv"), (Pooling, "pool"),
                                       (AvgPooling, "pool")])
def test_kernels_module_can_be_swapped_per_instance(cls, args, rng):
    x = rng.standard_normal((2, 2, 6, 5))
    params = (rng.standard_normal((3, 2, 3, 3)), rng.standard_normal(3), 1, 1) if args == "conv" \
        else (3, 2, 2, 1)
    compiled, numpy = cls(*params), cls(*params)
    numpy.kernels = reference
    assert cls.kernels is kernels and compiled.kernels is kernels
    out = compiled.forward(x)
    assert_allclose(out, numpy.forward(x), rtol=1e-12, atol=1e-12)
    dout = rng.standard_normal(out.shape)
    assert_allclose(compiled.backward(dout), numpy.backward(dout), rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------------------------- dtypes

def test_conv_and_pool_dtype_rule(rng):
    x32 = rng.standard_normal((2, 2, 5, 5)).astype(np.float32)
    W32 = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    conv = Convolution(W32, np.zeros(3, np.float32))
    out = conv.forward(x32)
    assert out.dtype == np.float32
    conv.backward(np.ones_like(out))
    assert conv.dW.dtype == np.float32 and conv.db.dtype == np.float32 and conv.col.dtype == np.float32
    conv.W = W32.astype(np.float64)  # mixed: computed in float64, as the textbook
    assert conv.forward(x32).dtype == np.float64 and conv.col.dtype == np.float64
    assert Convolution(W32, 0).forward(x32.astype(np.float16)).dtype == np.float64
    pool = Pooling(2, 2)
    assert pool.forward(x32).dtype == np.float32
    assert pool.backward(np.ones((2, 2, 2, 2), np.float32)).dtype == np.float32


def test_affine_bn_and_loss_stay_float32(rng):
    x = rng.standard_normal((4, 3)).astype(np.float32)
    affine = Affine(rng.standard_normal((3, 2)).astype(np.float32), np.zeros(2, np.float32))
    y = affine.forward(x)
    assert y.dtype == np.float32 and y.flags.c_contiguous
    affine.W = affine.W.astype(np.float64)
    assert affine.forward(x).dtype == np.float64
    bn = BatchNormalization(np.ones(3, np.float32), np.zeros(3, np.float32))
    assert bn.forward(x).dtype == np.float32 and bn.running_var.dtype == np.float32
    loss = SoftmaxWithLoss()
    loss.forward(x, np.eye(3)[[0, 1, 2, 0]])  # one-hot labels are float64, as load_mnist's
    assert loss.backward().dtype == np.float32


# --------------------------------------------------------------------------- textbook semantics

def test_relu_semantics(rng):
    layer = Relu()
    assert layer.mask is None
    x = np.array([[-1.0, 0.0, 2.0, np.nan]])
    out = layer.forward(x)
    assert_array_equal(out, [[0.0, 0.0, 2.0, np.nan]])
    assert_array_equal(layer.mask, [[True, True, False, False]])
    dout = np.ones((1, 4))
    dout.flags.writeable = False  # a read-only dout works: it is not modified
    dx = layer.backward(dout)
    assert dx is not dout
    assert_array_equal(dx, [[0.0, 0.0, 1.0, 1.0]])  # gradient 0 at exactly 0
    assert_array_equal(dout, 1.0)


def test_affine_flattens_and_restores_shape(rng):
    layer = Affine(rng.standard_normal((12, 2)), rng.standard_normal(2))
    x = rng.standard_normal((3, 3, 2, 2))
    assert layer.forward(x).shape == (3, 2)
    assert layer.x.shape == (3, 12) and layer.original_x_shape == (3, 3, 2, 2)
    assert layer.backward(np.ones((3, 2))).shape == x.shape
    assert layer.dW.shape == (12, 2) and layer.db.shape == (2,)


@pytest.mark.parametrize("shape", [(3, 3), (2, 2), (3,), (3, 2, 1)])
def test_affine_backward_names_a_dout_of_the_wrong_shape(shape, rng):
    layer = Affine(rng.standard_normal((4, 2)), rng.standard_normal(2))
    layer.forward(rng.standard_normal((3, 4)))
    with pytest.raises(ValueError, match=r"dout must have the forward output's shape \(3, 2\)"):
        layer.backward(np.ones(shape))


def test_softmax_with_loss_semantics(rng):
    x = rng.standard_normal((3, 4))
    labels = np.array([3, 0, 1], dtype=np.uint8)
    a, b, c = SoftmaxWithLoss(), SoftmaxWithLoss(), SoftmaxWithLoss()
    loss = a.forward(x, labels)
    assert a.t is labels and a.loss == loss and a.y.shape == (3, 4)
    assert b.forward(x, np.eye(4)[labels]) == pytest.approx(loss, rel=1e-12)
    assert c.forward(x, labels.reshape(3, 1)) == pytest.approx(loss, rel=1e-12)
    assert_array_equal(a.backward(5), a.backward())  # dout is ignored
    assert_allclose(b.backward(), a.backward(), rtol=1e-12)
    assert_allclose(c.backward(), a.backward(), rtol=1e-12)


def test_dropout_is_vanilla_and_uses_the_global_rng(rng):
    x = rng.standard_normal((5, 6))
    layer = Dropout(0.4)
    np.random.seed(11)
    out = layer.forward(x)
    np.random.seed(11)
    mask = np.random.rand(5, 6) > 0.4
    assert_array_equal(layer.mask, mask)
    assert_array_equal(out, x * mask)  # no rescaling while training
    assert_allclose(layer.forward(x, False), x * 0.6)  # scaled at test time
    assert_array_equal(layer.backward(np.ones_like(x)), mask.astype(float))


def test_batch_normalization_textbook_conventions(rng):
    x = rng.standard_normal((8, 2, 2, 3)) * 3 + 1
    gamma, beta = rng.standard_normal(12), rng.standard_normal(12)
    fresh = BatchNormalization(gamma, beta)
    # running statistics start at zeros: inference before training divides by sqrt(1e-6)
    assert_allclose(fresh.forward(x, train_flg=False),
                    gamma.reshape(2, 2, 3) * x / np.sqrt(1e-6) + beta.reshape(2, 2, 3))
    assert_array_equal(fresh.running_var, 0)

    bn = BatchNormalization(gamma, beta, momentum=0.9)
    out = bn.forward(x)
    x2 = x.reshape(8, -1)
    mu, var = x2.mean(axis=0), x2.var(axis=0)
    assert out.shape == x.shape
    assert_allclose(out.reshape(8, -1), gamma * (x2 - mu) / np.sqrt(var + 1e-6) + beta, rtol=1e-12)
    assert_allclose(bn.running_mean, 0.1 * mu, rtol=1e-12)  # per C*H*W feature
    assert_allclose(bn.running_var, 0.1 * var, rtol=1e-12)
    assert bn.running_mean.shape == (12,) and bn.batch_size == 8
    bn.backward(np.ones_like(x))
    assert bn.dgamma.shape == (12,) and bn.dbeta.shape == (12,)


def test_spatial_batch_normalization_is_per_channel(rng):
    x = rng.standard_normal((4, 3, 2, 5)) * np.array([1.0, 5.0, 0.2])[:, None, None] + 2
    gamma, beta = np.array([1.0, 2.0, 0.5]), np.array([0.0, -1.0, 3.0])
    bn = SpatialBatchNormalization(gamma, beta)
    out = bn.forward(x)
    assert out.shape == x.shape and out.flags.c_contiguous
    normed = (out - beta[:, None, None]) / gamma[:, None, None]
    assert_allclose(normed.mean(axis=(0, 2, 3)), 0, atol=1e-12)
    assert_allclose(normed.var(axis=(0, 2, 3)), x.var(axis=(0, 2, 3)) / (x.var(axis=(0, 2, 3)) + 1e-6))
    assert_allclose(bn.running_mean, 0.1 * x.mean(axis=(0, 2, 3)))
    assert bn.running_var.shape == (3,)
    inference = bn.forward(x, train_flg=False)
    assert_allclose(inference, gamma[:, None, None] * (x - bn.running_mean[:, None, None])
                    / np.sqrt(bn.running_var[:, None, None] + 1e-6) + beta[:, None, None])


def test_leaky_relu_gelu_flatten_semantics(rng):
    x = np.array([[-2.0, 0.0, 3.0]])
    leaky = LeakyReLU(alpha=0.1)
    assert_allclose(leaky.forward(x), [[-0.2, 0.0, 3.0]])
    assert_allclose(leaky.backward(np.ones((1, 3))), [[0.1, 0.1, 1.0]])
    tanh_form = 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))
    assert_allclose(GELU().forward(x), tanh_form)
    flat = Flatten()
    y = rng.standard_normal((2, 3, 4))[:, ::2]  # non-contiguous input
    out = flat.forward(y)
    assert out.shape == (2, 8) and out.flags.c_contiguous
    assert flat.backward(out).shape == y.shape


def test_affine_refuses_inputs_of_the_wrong_width():
    """A scalar raised IndexError and a sample of the wrong size came out as "a and b do not chain"
    from the matrix product (naming neither x nor W); SimpleConvNet on 30x30 images did the same."""
    layer = Affine(np.ones((4, 3)), np.zeros(3))
    for x in (np.float64(1.0), np.ones(4), np.ones((2, 5)), np.ones((2, 2, 3))):
        with pytest.raises(ValueError, match=r"x must be \(N, \.\.\.\) with 4 values per sample"):
            layer.forward(x)
    assert layer.forward(np.ones((2, 2, 2))).shape == (2, 3)       # (N, ...) flattened, as before
    assert layer.forward(np.ones((0, 4))).shape == (0, 3)
