"""Backward kernels against central-difference numerical gradients (float64)."""
import numpy as np
import pytest

from cnncore import kernels as K


def numerical_grad(f, x, h=1e-6):
    """d f / d x for a scalar function f of the array x (central differences)."""
    grad = np.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        up = f()
        flat[i] = old - h
        down = f()
        flat[i] = old
        gflat[i] = (up - down) / (2 * h)
    return grad


CONV_CASES = [
    (2, 2, 5, 6, 3, 2, 1, 0),
    (1, 3, 6, 5, 3, 3, 2, 1),
    (2, 1, 7, 7, 2, 3, 3, 2),
]


@pytest.mark.parametrize("fused", [False, True], ids=["conv", "conv_relu"])
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_gradients(case, fused, rng):
    N, C, H, W, FH, FW, s, p = case
    x = rng.standard_normal((N, C, H, W))
    Wt = rng.standard_normal((3, C, FH, FW))
    b = rng.standard_normal(3) * 0.1
    forward = K.conv_bias_relu_forward if fused else K.conv_forward
    g = rng.standard_normal(forward(x, Wt, b, s, p).shape)

    def loss():
        return float(np.sum(forward(x, Wt, b, s, p) * g))

    out = forward(x, Wt, b, s, p)
    if fused:
        # keep pre-activations away from the ReLU kink so finite differences are valid
        assume_far_from_kink = np.abs(K.conv_forward(x, Wt, b, s, p)) > 1e-4
        assert assume_far_from_kink.all()
        dx, dW, db = K.conv_bias_relu_backward(g, x, Wt, out, s, p)
    else:
        dx, dW, db = K.conv_backward(g, x, Wt, s, p)
    np.testing.assert_allclose(dx, numerical_grad(loss, x), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(dW, numerical_grad(loss, Wt), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(db, numerical_grad(loss, b), rtol=1e-6, atol=1e-7)


POOL_CASES = [
    (2, 2, 6, 6, 2, 2, 2, 0),
    (1, 2, 7, 5, 3, 3, 2, 1),   # overlapping windows with padding
    (2, 1, 5, 6, 2, 3, 1, 1),
]


@pytest.mark.parametrize("case", POOL_CASES)
def test_max_pool_gradient(case, rng):
    N, C, H, W, PH, PW, s, p = case
    # distinct values, well separated, so the arg max cannot flip under a small step
    x = rng.permutation(N * C * H * W).reshape(N, C, H, W).astype(float)
    out, arg = K.max_pool_forward(x, PH, PW, s, p)
    g = rng.standard_normal(out.shape)
    dx = K.max_pool_backward(g, arg, x.shape, PH, PW, s, p)
    num = numerical_grad(lambda: float(np.sum(K.max_pool_forward(x, PH, PW, s, p)[0] * g)), x,
                         h=1e-3)
    np.testing.assert_allclose(dx, num, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("case", POOL_CASES)
def test_avg_pool_gradient(case, rng):
    N, C, H, W, PH, PW, s, p = case
    x = rng.standard_normal((N, C, H, W))
    g = rng.standard_normal(K.avg_pool_forward(x, PH, PW, s, p).shape)
    dx = K.avg_pool_backward(g, x.shape, PH, PW, s, p)
    num = numerical_grad(lambda: float(np.sum(K.avg_pool_forward(x, PH, PW, s, p) * g)), x)
    np.testing.assert_allclose(dx, num, rtol=1e-6, atol=1e-8)
