"""Results do not depend on the thread count, and the thread setting is respected."""
import threading

import numpy as np
import pytest

import cnncore
from cnncore import kernels as K


@pytest.fixture
def restore_threads():
    yield
    cnncore.set_num_threads(None)


def all_kernels(rng, dtype):
    x = rng.standard_normal((3, 4, 11, 9)).astype(dtype)
    Wt = rng.standard_normal((5, 4, 3, 3)).astype(dtype)
    b = rng.standard_normal(5).astype(dtype)
    col = K.im2col(x, 3, 2, 2, 1)
    out, arg = K.max_pool_forward(x, 3, 3, 2, 1)
    conv = K.conv_forward(x, Wt, b, 1, 1)
    fused = K.conv_bias_relu_forward(x, Wt, b, 1, 1)
    return [
        col,
        K.col2im(col * 2, x.shape, 3, 2, 2, 1),
        out, arg,
        K.max_pool_backward(out, arg, x.shape, 3, 3, 2, 1),
        K.avg_pool_forward(x, 3, 3, 2, 1),
        K.avg_pool_backward(out, x.shape, 3, 3, 2, 1),
        conv, *K.conv_backward(conv, x, Wt, 1, 1),
        fused, *K.conv_bias_relu_backward(conv, x, Wt, fused, 1, 1),
    ]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_same_results_with_one_and_two_threads(dtype, restore_threads, monkeypatch):
    monkeypatch.setattr(K, "WORK_PER_THREAD", 1)  # small arrays would otherwise run on one thread
    cnncore.set_num_threads(1)
    one = all_kernels(np.random.default_rng(7), dtype)
    cnncore.set_num_threads(2)
    two = all_kernels(np.random.default_rng(7), dtype)
    # OpenMP kernels partition outputs, so they are bitwise equal; the GEMM goes through BLAS,
    # whose own threading does not change the summation order either.
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a, b)


def test_small_calls_run_on_one_thread(restore_threads):
    cnncore.set_num_threads(2)
    assert K.get_num_threads(10) == 1
    assert K.get_num_threads(10 * K.WORK_PER_THREAD) == 2
    assert K.get_num_threads() == 2


def test_set_num_threads_validates_and_resets(restore_threads, monkeypatch):
    cnncore.set_num_threads(3)
    assert cnncore.get_num_threads() == 3
    with pytest.raises(ValueError, match="n must be >= 1"):
        cnncore.set_num_threads(0)
    with pytest.raises(TypeError, match="n must be an integer"):
        cnncore.set_num_threads(1.5)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    cnncore.set_num_threads(None)
    assert cnncore.get_num_threads() == 1


def test_python_threads_calling_kernels_at_once_match_serial_calls(rng):
    x = rng.standard_normal((8, 6, 20, 20))
    Wt = rng.standard_normal((7, 6, 3, 3))
    b = rng.standard_normal(7)

    def work():
        out = K.conv_bias_relu_forward(x, Wt, b, 1, 1)
        pooled, arg = K.max_pool_forward(out, 2, 2, 2, 0)
        return out, pooled, K.max_pool_backward(pooled, arg, out.shape, 2, 2, 2, 0)

    expected = work()
    results = [None] * 4

    def run(i):
        results[i] = work()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got in results:
        for a, e in zip(got, expected):
            np.testing.assert_array_equal(a, e)
