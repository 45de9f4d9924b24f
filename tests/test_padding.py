"""Replicate padding: the compiled kernels against the NumPy reference (and PyTorch), and the
Convolution layer's padding_mode='replicate' built on them."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import cnncore
from cnncore import kernels, reference
from cnncore.layers import Convolution, ConvReLU

DTYPES = [np.float32, np.float64]
SHAPES = [(1, 1, 1, 1), (2, 3, 5, 7), (1, 2, 1, 6), (3, 1, 6, 1), (4, 8, 14, 14), (0, 2, 3, 3)]


def _rand(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("pad", [0, 1, 2, 5])
def test_kernels_match_the_reference(shape, pad, dtype, rng):
    x = _rand(rng, shape, dtype)
    out = kernels.pad_replicate(x, pad)
    assert out.dtype == dtype and out.flags.c_contiguous
    assert np.array_equal(out, reference.pad_replicate(x, pad))   # copies: exact
    dxp = _rand(rng, out.shape, dtype)
    dx = kernels.pad_replicate_backward(dxp, pad)
    assert dx.shape == shape and dx.dtype == dtype
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(dx, reference.pad_replicate_backward(dxp, pad), rtol=rtol, atol=rtol)


@given(st.integers(0, 3), st.integers(1, 4), st.integers(1, 9), st.integers(1, 9),
       st.integers(0, 4), st.sampled_from(DTYPES), st.integers(0, 2**32 - 1))
def test_kernels_match_the_reference_property(N, C, H, W, pad, dtype, seed):
    rng = np.random.default_rng(seed)
    x = _rand(rng, (N, C, H, W), dtype)
    assert np.array_equal(kernels.pad_replicate(x, pad), reference.pad_replicate(x, pad))
    dxp = _rand(rng, (N, C, H + 2 * pad, W + 2 * pad), dtype)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(kernels.pad_replicate_backward(dxp, pad),
                               reference.pad_replicate_backward(dxp, pad), rtol=rtol, atol=rtol)


def test_backward_is_the_adjoint_of_forward(rng):
    """<pad(x), y> == <x, pad_backward(y)> for every x, y: the fold is the forward's transpose."""
    x = rng.standard_normal((2, 3, 4, 5))
    y = rng.standard_normal((2, 3, 10, 11))
    assert np.isclose(np.sum(kernels.pad_replicate(x, 3) * y),
                      np.sum(x * kernels.pad_replicate_backward(y, 3)), rtol=1e-12)


def test_matches_pytorch(rng, torch):
    x = rng.standard_normal((2, 3, 5, 4))
    xt = torch.from_numpy(x).requires_grad_(True)
    yt = torch.nn.functional.pad(xt, (2, 2, 2, 2), mode="replicate")
    dy = rng.standard_normal(tuple(yt.shape))
    yt.backward(torch.from_numpy(dy))
    assert np.array_equal(kernels.pad_replicate(x, 2), yt.detach().numpy())
    np.testing.assert_allclose(kernels.pad_replicate_backward(dy, 2), xt.grad.numpy(), rtol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
def test_one_and_two_threads_agree(dtype, rng):
    dxp = _rand(rng, (4, 16, 20, 20), dtype)
    results = []
    try:
        for n in (1, 2):
            cnncore.set_num_threads(n)
            results.append(kernels.pad_replicate_backward(dxp, 3))
    finally:
        cnncore.set_num_threads(None)
    assert np.array_equal(results[0], results[1])


def test_other_dtypes_compute_in_float64(rng):
    x = rng.integers(0, 9, (1, 1, 3, 3))
    assert kernels.pad_replicate(x, 1).dtype == np.float64
    assert kernels.pad_replicate(x.astype(np.float16), 1).dtype == np.float64


@pytest.mark.parametrize("call, error, message", [
    (lambda m: m.pad_replicate(np.zeros((2, 3, 4)), 1), ValueError, "x must be 4-D"),
    (lambda m: m.pad_replicate(np.zeros((1, 1, 2, 2)), -1), ValueError, "pad must be"),
    (lambda m: m.pad_replicate(np.zeros((1, 1, 2, 2)), 1.5), (ValueError, TypeError), "pad"),
    (lambda m: m.pad_replicate(np.zeros((1, 0, 2, 2)), 1), ValueError, "C, H, W >= 1"),
    (lambda m: m.pad_replicate_backward(np.zeros((1, 1, 4, 4)), 2), ValueError,
     "dx_padded must be"),
    (lambda m: m.pad_replicate_backward(np.zeros((1, 1, 4)), 1), ValueError, "dx_padded"),
    # found by the kernel fuzz campaign: an empty batch took any pad below 2**48 (a plane of
    # 2**50 elements), where every other kernel refuses the padded plane
    (lambda m: m.pad_replicate(np.zeros((0, 1, 1, 1)), 2**24), ValueError,
     "pad=16777216 makes the padded input 33554433x33554433 .*too large"),
])
@pytest.mark.parametrize("module", [kernels, reference])
def test_bad_input_is_refused(module, call, error, message):
    with pytest.raises(error, match=message):
        call(module)


@pytest.mark.parametrize("pad", [0, 2])
@pytest.mark.parametrize("module", [kernels, reference])
def test_outputs_are_c_contiguous_copies_for_fortran_inputs(module, pad):
    """The reference's np.pad kept a Fortran input's layout (and pad 0 returned a Fortran copy),
    unlike the kernels' C-contiguous outputs (found by the kernel fuzz campaign)."""
    x = np.asfortranarray(np.arange(24.0).reshape(1, 2, 3, 4))
    out = module.pad_replicate(x, pad)
    d = module.pad_replicate_backward(np.asfortranarray(out), pad)
    for a in (out, d):
        assert a.flags.c_contiguous and not np.shares_memory(a, x)
    np.testing.assert_array_equal(out, np.pad(x, [(0, 0), (0, 0), (pad, pad), (pad, pad)], "edge"))


@pytest.mark.parametrize("layer_class", [Convolution, ConvReLU])
@pytest.mark.parametrize("stride, pad", [(1, 1), (2, 2), (1, 3)])
def test_convolution_with_replicate_padding_is_conv_of_the_padded_input(layer_class, stride, pad,
                                                                         rng):
    x = rng.standard_normal((2, 3, 7, 6))
    W, b = rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)
    layer = layer_class(W, b, stride, pad, padding_mode="replicate")
    plain = layer_class(W, b, stride, 0)
    xp = np.pad(x, [(0, 0), (0, 0), (pad, pad), (pad, pad)], mode="edge")
    out = layer.forward(x)
    np.testing.assert_allclose(out, plain.forward(xp), rtol=1e-12)
    assert layer.col.shape == plain.col.shape
    dout = rng.standard_normal(out.shape)
    dx = layer.backward(dout)
    dxp = plain.backward(dout)
    np.testing.assert_allclose(layer.dW, plain.dW, rtol=1e-12)
    np.testing.assert_allclose(dx, reference.pad_replicate_backward(dxp, pad), rtol=1e-12)
    assert layer.backward(dout, need_dx=False) is None


def test_padding_mode_is_checked():
    with pytest.raises(ValueError, match="padding_mode"):
        Convolution(np.zeros((1, 1, 3, 3)), np.zeros(1), 1, 1, padding_mode="reflect")
