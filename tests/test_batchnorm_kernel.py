"""Per-channel batch normalization: the compiled kernels against the NumPy reference, float32 accuracy
against float64, thread-count independence, bad input, and SpatialBatchNormalization built on them."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import cnncore
from cnncore import kernels, reference
from cnncore.layers import SpatialBatchNormalization

DTYPES = [np.float32, np.float64]
RTOL = {np.float32: 2e-5, np.float64: 1e-12}
SHAPES = [(1, 1, 1, 1), (2, 3, 5, 7), (1, 1, 13, 9), (5, 4, 1, 1), (3, 7, 9, 11), (8, 16, 14, 14),
          (7, 5), (1, 1), (64, 3), (2, 2, 31, 1), (0, 3, 4, 4), (0, 5)]


def _inputs(rng, shape, dtype, offset=0.0):
    x = (rng.standard_normal(shape) * 2 + offset).astype(dtype)
    dout = rng.standard_normal(shape).astype(dtype)
    C = shape[1]
    gamma = rng.uniform(0.5, 2, C).astype(dtype)
    beta = rng.standard_normal(C).astype(dtype)
    return x, dout, gamma, beta


def _close(a, b, dtype, size=1.0):
    """a == b up to rounding; size: the magnitude of the terms a's elements are sums of (float32
    elementwise passes round x - mean at |x|, so their absolute error scales with it)."""
    assert a.shape == b.shape and a.dtype == b.dtype
    np.testing.assert_allclose(a, b, rtol=RTOL[dtype], atol=RTOL[dtype] * max(1.0, size))


def _top(a):
    return float(np.abs(a).max()) if np.size(a) else 0.0


def _check_against_reference(x, dout, gamma, beta, dtype):
    if x.size:
        mean, var = kernels.channel_stats(x)
        rmean, rvar = reference.channel_stats(x)
        assert mean.dtype == var.dtype == np.float64
        np.testing.assert_allclose(mean, rmean, rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(var, rvar, rtol=1e-12, atol=1e-13)
    else:   # an empty batch is normalised with other statistics (the layer's running ones)
        mean, var = np.zeros(x.shape[1]), np.ones(x.shape[1])
    std = np.sqrt(var + 1e-6)
    scale = gamma / std
    out = kernels.batchnorm2d_normalize(x, mean, scale, beta)
    assert out.flags.c_contiguous
    _close(out, reference.batchnorm2d_normalize(x, mean, scale, beta), dtype,
           _top(x) * _top(scale) + _top(beta))
    got = kernels.batchnorm2d_backward(dout, x, mean, std, gamma)
    want = reference.batchnorm2d_backward(dout, x, mean, std, gamma)
    M = max(x.size // x.shape[1], 1)
    q = scale * want[1] / (M * std)   # the coefficient of x - mean in dx
    _close(got[0], want[0], dtype, _top(x) * _top(q) + _top(dout) * _top(scale))
    for a, b in zip(got[1:], want[1:]):
        _close(a, b, dtype)   # double sums in both
    return out, got


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_kernels_match_the_reference(shape, dtype, rng):
    _check_against_reference(*_inputs(rng, shape, dtype, offset=3.0), dtype)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 5), st.integers(1, 6), st.integers(1, 12), st.integers(1, 12),
       st.booleans(), st.sampled_from(DTYPES), st.floats(-100, 100), st.integers(0, 2**32 - 1))
def test_kernels_match_the_reference_property(N, C, H, W, flat, dtype, offset, seed):
    shape = (N, C) if flat else (N, C, H, W)
    _check_against_reference(*_inputs(np.random.default_rng(seed), shape, dtype, offset), dtype)


def test_empty_batch_gives_empty_dx_and_zero_parameter_gradients():
    x = np.zeros((0, 3, 4, 4), np.float32)
    dx, dgamma, dbeta = kernels.batchnorm2d_backward(x, x, np.zeros(3), np.ones(3), np.ones(3))
    assert dx.shape == x.shape and dx.dtype == np.float32
    assert np.array_equal(dgamma, np.zeros(3)) and np.array_equal(dbeta, np.zeros(3))


def test_statistics_of_known_values():
    x = np.arange(2 * 2 * 3, dtype=np.float64).reshape(2, 2, 3)[..., None]   # (N, C, H, 1)
    mean, var = kernels.channel_stats(x)
    flat = x.transpose(1, 0, 2, 3).reshape(2, -1)
    np.testing.assert_array_equal(mean, flat.mean(axis=1))
    np.testing.assert_allclose(var, flat.var(axis=1), rtol=1e-15)


def test_float32_keeps_its_digits_against_float64(rng):
    # A large offset over many values: a float32 running sum would lose about 4 digits here.
    x64 = rng.standard_normal((64, 3, 32, 32)) * 0.01 + 1000.0
    x32 = x64.astype(np.float32)
    mean, var = kernels.channel_stats(x32)
    want_mean, want_var = reference.channel_stats(x32.astype(np.float64))
    np.testing.assert_allclose(mean, want_mean, rtol=1e-14)
    np.testing.assert_allclose(var, want_var, rtol=1e-9)
    dout = rng.standard_normal(x32.shape).astype(np.float32)
    gamma = np.ones(3, np.float32)
    std = np.sqrt(var + 1e-6)
    dx, dgamma, dbeta = kernels.batchnorm2d_backward(dout, x32, mean, std, gamma)
    ref = reference.batchnorm2d_backward(dout.astype(np.float64), x32.astype(np.float64), mean, std,
                                         gamma)
    np.testing.assert_allclose(dbeta, ref[2], rtol=1e-6, atol=1e-3)
    np.testing.assert_allclose(dgamma, ref[1], rtol=1e-6, atol=1e-3)
    np.testing.assert_allclose(dx, ref[0], rtol=1e-4, atol=1e-4 * np.abs(ref[0]).max())
    out = kernels.batchnorm2d_normalize(x32, mean, gamma / std, np.zeros(3))
    np.testing.assert_allclose(out, (x32 - mean[:, None, None]) / std[:, None, None],
                               atol=1e-3 * np.abs(out).max())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(16, 3, 64, 64), (4096, 40)])
def test_one_and_two_threads_agree(shape, dtype, rng):
    x, dout, gamma, beta = _inputs(rng, shape, dtype, offset=1.0)
    results = []
    try:
        for n in (1, 2):
            cnncore.set_num_threads(n)
            mean, var = kernels.channel_stats(x)
            std = np.sqrt(var + 1e-6)
            results.append((mean, var, kernels.batchnorm2d_normalize(x, mean, gamma / std, beta),
                            *kernels.batchnorm2d_backward(dout, x, mean, std, gamma)))
    finally:
        cnncore.set_num_threads(None)
    for a, b in zip(*results):
        assert np.array_equal(a, b)


def test_mixed_and_other_dtypes_compute_in_float64(rng):
    x = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    d = rng.standard_normal((2, 3, 4, 4))
    v = np.ones(3)
    assert kernels.batchnorm2d_backward(d, x, v, v, v)[0].dtype == np.float64
    assert kernels.batchnorm2d_normalize(x.astype(np.float16), v, v, v).dtype == np.float64
    assert kernels.batchnorm2d_normalize(x, v, v, v).dtype == np.float32
    xi = np.arange(24).reshape(2, 3, 4)[..., None]
    np.testing.assert_allclose(kernels.channel_stats(xi)[0], reference.channel_stats(xi)[0])


def test_non_contiguous_and_read_only_inputs(rng):
    x = rng.standard_normal((3, 4, 6, 10))[:, :, :, ::2]
    x.flags.writeable = False
    v = np.ones(4)
    for mod in (kernels, reference):
        mod.channel_stats(x)
    np.testing.assert_allclose(kernels.batchnorm2d_normalize(x, v, v, v),
                               reference.batchnorm2d_normalize(x, v, v, v))
    np.testing.assert_allclose(kernels.batchnorm2d_backward(x, x, v, v, v)[0],
                               reference.batchnorm2d_backward(x, x, v, v, v)[0], atol=1e-12)


@pytest.mark.parametrize("mod", [kernels, reference])
def test_bad_input_names_the_argument(mod):
    x = np.zeros((2, 3, 4, 4))
    v = np.ones(3)
    with pytest.raises(ValueError, match="x must be"):
        mod.channel_stats(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="x must be"):
        mod.channel_stats(np.zeros((2, 0)))
    with pytest.raises(ValueError, match="at least one value"):
        mod.channel_stats(np.zeros((0, 3, 4, 4)))
    with pytest.raises(TypeError, match="x must hold real numbers"):
        mod.channel_stats(x.astype(complex))
    with pytest.raises(ValueError, match="scale must have shape"):
        mod.batchnorm2d_normalize(x, v, np.ones(4), v)
    with pytest.raises(ValueError, match="mean must have shape"):
        mod.batchnorm2d_normalize(x, np.ones((3, 1)), v, v)
    with pytest.raises(TypeError, match="shift must hold"):
        mod.batchnorm2d_normalize(x, v, v, np.array(["a", "b", "c"]))
    with pytest.raises(ValueError, match="dout must have shape"):
        mod.batchnorm2d_backward(np.zeros((2, 3, 4, 5)), x, v, v, v)
    with pytest.raises(ValueError, match="gamma must have shape"):
        mod.batchnorm2d_backward(x, x, v, v, np.ones(2))
    with pytest.raises(ValueError, match="std must have shape"):
        mod.batchnorm2d_backward(x, x, v, np.ones(()), v)


# ------------------------------------------------------------------------------------ the layer

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(4, 3, 5, 5), (6, 4), (0, 3, 2, 2)])
def test_layer_on_kernels_matches_layer_on_reference(shape, dtype, rng):
    x, dout, gamma, beta = _inputs(rng, shape, dtype, offset=2.0)
    layers = [SpatialBatchNormalization(gamma, beta, momentum=0.8) for _ in range(2)]
    layers[1].kernels = reference
    outs = []
    for layer in layers:
        for _ in range(2):
            out = layer.forward(x, train_flg=True)
        outs.append((out, layer.backward(dout), layer.dgamma, layer.dbeta, layer.running_mean,
                     layer.running_var, layer.std, layer.xc, layer.xn,
                     layer.forward(x, train_flg=False)))
    for a, b in zip(*outs):
        _close(a, b, dtype)
    layer = layers[0]
    assert layer.running_mean.dtype == layer.running_var.dtype == dtype
    assert layer.batch_size == shape[0]


def test_layer_caches_x_itself_not_a_copy(rng):
    x = rng.standard_normal((4, 3, 5, 5)).astype(np.float32)
    layer = SpatialBatchNormalization(np.ones(3, np.float32), np.zeros(3, np.float32))
    layer.forward(x)
    assert layer._x is x
    np.testing.assert_allclose(layer.xc, x - x.mean(axis=(0, 2, 3), keepdims=True), atol=1e-5)
