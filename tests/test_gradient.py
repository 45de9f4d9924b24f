"""cnncore.gradient: central-difference gradients."""
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from cnncore.gradient import _numerical_gradient_1d, numerical_gradient, numerical_gradient_2d


@pytest.mark.parametrize("shape", [(), (5,), (3, 4), (2, 3, 2, 2)])
def test_any_ndim_matches_the_analytic_gradient(shape, rng):
    x = rng.standard_normal(shape)
    a = rng.standard_normal(shape)
    grad = numerical_gradient(lambda z: np.sum(a * z ** 3), x)
    assert grad.shape == x.shape and grad.dtype == np.float64
    # central difference error of a cubic is exactly a*h**2 per element
    assert_allclose(grad, 3 * a * x ** 2, atol=1e-7)


def test_values_are_restored_and_f_sees_the_perturbation(rng):
    x = rng.standard_normal((2, 3))
    x0 = x.copy()
    seen = []

    def f(z):
        assert z is x  # f is called with the array itself, perturbed in place
        seen.append(np.abs(z - x0).max())
        return float(np.sum(z))

    numerical_gradient(f, x)
    assert_array_equal(x, x0)
    assert_allclose(seen, 1e-4, rtol=1e-8)


def test_value_restored_when_f_raises():
    x = np.array([1.0, 2.0])

    def f(z):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        numerical_gradient(f, x)
    assert_array_equal(x, [1.0, 2.0])


def test_float32_input_gives_float64_gradient():
    x = np.array([0.5, -1.5], dtype=np.float32)
    grad = numerical_gradient(lambda z: np.sum(z.astype(np.float64) ** 2), x)
    assert grad.dtype == np.float64
    assert_allclose(grad, 2 * x, rtol=1e-3)


@pytest.mark.parametrize("bad", [np.array([1, 2]), [1.0, 2.0]])
def test_rejects_what_cannot_be_perturbed(bad):
    with pytest.raises(TypeError, match="float ndarray"):
        numerical_gradient(lambda z: 0.0, bad)


def _function_2(x):
    # ch04's f(x0, x1) = x0**2 + x1**2, row-wise for 2-D input
    return np.sum(x ** 2) if x.ndim == 1 else np.sum(x ** 2, axis=1)


def test_textbook_2d_and_1d_helpers():
    X = np.array([[3.0, 4.0], [0.0, 2.0], [-1.0, 0.5]])
    assert_allclose(numerical_gradient_2d(_function_2, X), 2 * X, atol=1e-8)
    assert_allclose(numerical_gradient_2d(_function_2, X[0].copy()), 2 * X[0], atol=1e-8)
    assert_allclose(_numerical_gradient_1d(_function_2, np.array([3.0, 4.0])), [6.0, 8.0])
