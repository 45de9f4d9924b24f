"""The cases that crashed, or could crash, the interpreter, each run in a child process: a segfault
or an abort is a failed test here, not a dead test run.

Every child limits its address space to 4 GiB (except under AddressSanitizer), so a call that tried
to allocate a huge array would fail with MemoryError instead of eating the machine; the checks expect
ValueError naming the argument, raised before any allocation.
"""
import os
import signal
import subprocess
import sys
import textwrap

import pytest

# The children rely on RLIMIT_AS, which only Linux enforces, to fail fast instead of eating memory.
pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="needs Linux (RLIMIT_AS)")

PRELUDE = """
import os, resource
if "asan" not in os.environ.get("LD_PRELOAD", ""):
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
import numpy as np
import pytest
import cnncore
from cnncore import kernels as K, reference as R


def refused(fn, *args, match, error=ValueError):
    with pytest.raises(error, match=match):
        fn(*args)
"""


def run_isolated(code, env=None, timeout=300):
    """Run PRELUDE + code in a fresh interpreter; fail on a signal, a timeout or a non-zero exit."""
    child_env = dict(os.environ, **(env or {}))
    try:
        proc = subprocess.run([sys.executable, "-X", "faulthandler", "-c",
                               PRELUDE + textwrap.dedent(code)],
                              env=child_env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the child did not finish within {timeout} s")
    if proc.returncode < 0:
        pytest.fail(f"the child was killed by {signal.Signals(-proc.returncode).name}:\n"
                    f"{proc.stderr[-3000:]}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_im2col_windows_wholly_in_the_left_padding():
    """pad > filter width and a large stride: the last window of a row lies wholly in the left
    padding. The compiled im2col wrote pad - filter_w zeros past the row (past the end of col for
    the last row: heap corruption; with pad = 2**20, a segfault)."""
    run_isolated("""
    from cnncore._ext import im2col as ext

    # Directly: col is a view into a bigger buffer whose tail must stay untouched.
    x = np.arange(1.0, 6.0).reshape(1, 1, 5, 1)
    big = np.full(8, 7.0)
    col = big[:2].reshape(2, 1)                         # OH = 2, OW = 1 (stride 7, pad 3)
    ext.im2col(x, col, 1, 1, 7, 3, 1)
    assert (big[2:] == 7.0).all(), big
    np.testing.assert_array_equal(col, R.im2col(x, 1, 1, 7, 3))

    # Through the boundary, with a pad large enough to have overrun the whole heap.
    x = np.arange(1.0, 4.0).reshape(1, 1, 3, 1)
    col = K.im2col(x, 1, 1, stride=2**20, pad=2**20)    # 3 x 3 windows, only the middle one real
    expected = np.zeros((9, 1))
    expected[4, 0] = 1.0
    np.testing.assert_array_equal(col, expected)
    dx = K.col2im(np.ones((9, 1)), (1, 1, 3, 1), 1, 1, stride=2**20, pad=2**20)
    np.testing.assert_array_equal(dx.ravel(), [1.0, 0.0, 0.0])
    """)


@pytest.mark.parametrize("how", ["set_num_threads", "OMP_NUM_THREADS"])
def test_absurd_thread_counts(how):
    """set_num_threads(100000) segfaulted inside GNU OpenMP (per-thread start-up data on the
    caller's stack); the kernels now cap their team at cnncore._threads.MAX_THREADS."""
    env = {"OMP_NUM_THREADS": "100000"} if how == "OMP_NUM_THREADS" else {}
    run_isolated(f"""
    if "{how}" == "set_num_threads":
        cnncore.set_num_threads(100000)
    assert cnncore.get_num_threads() == 100000
    x = np.random.default_rng(0).standard_normal((2, 3, 9, 9))
    out, arg = K.max_pool_forward(x, 2, 2)
    np.testing.assert_array_equal(out, R.max_pool_forward(x, 2, 2)[0])
    np.testing.assert_allclose(K.conv_forward(x, np.ones((2, 3, 3, 3)), 0, 1, 1),
                               R.conv_forward(x, np.ones((2, 3, 3, 3)), 0, 1, 1), rtol=1e-12)
    refused(cnncore.set_num_threads, 2**60, match="n must be <=")
    """, env=env)


def test_huge_sizes_are_refused_before_allocating():
    """Sizes whose products overflow 64 bits, or pass 2**48 elements: ValueError naming the
    argument, never an OverflowError from the C conversion, a MemoryError, or garbage."""
    run_isolated("""
    x = np.ones((1, 1, 3, 3))
    Wt = np.ones((1, 1, 1, 1))
    for M in (K, R):
        # stride/pad past 2**63 used to raise OverflowError; 2**62 returned uninitialised memory
        refused(M.im2col, x, 1, 1, 2**62, 2**62, match="stride must be <=")
        refused(M.im2col, x, 1, 1, 1, 2**63, match="pad must be <=")
        refused(M.avg_pool_forward, x, 2, 2, 2**63, match="stride must be <=")
        refused(M.col2im, np.ones((9, 1)), (1, 1, 3, 3), 1, 1, 2**40, 2**40,
                match="padded input .* too large")
        # outputs past 2**48 elements (numpy said "array is too big" or tried 32 TiB)
        wide = np.broadcast_to(np.ones((1, 1, 1, 1)), (2**20, 1, 2**8, 2**8))
        refused(M.conv_forward, wide, np.ones((2**13, 1, 1, 1)), 0,
                match="convolution output .* too large")
        full = np.broadcast_to(np.ones((1, 1, 1, 1)), (2**20, 2**8, 2**10, 2**10))  # 2**48
        refused(M.max_pool_forward, full, 2, 2, 1, 1, match="pooling output .* too large")
        refused(M.conv_forward, x, Wt, 0, 1, 2**24, match="pad=.* too large")
        refused(M.conv_forward, np.broadcast_to(np.ones((1, 1, 1, 1)), (1, 1, 2**16, 2**16)),
                np.broadcast_to(np.ones((1, 1, 1, 1)), (1, 1, 2**15, 2**15)), 0,
                match="unfolded columns .* too large")
        # inputs past 2**48 elements, with no memory behind them
        huge = np.broadcast_to(np.ones((1, 1, 1, 1)), (2**25, 2**25, 2, 2))
        refused(M.max_pool_forward, huge, 2, 2, match="x is too large")
        refused(M.im2col, huge, 2, 2, match="input_data is too large")
        refused(M.col2im, np.ones((9, 1)), (2**40, 2**20, 3, 3), 1, 1, match="input_shape")
        refused(M.col2im, np.ones((0, 1)), (0, 1, 2**62, 2**62), 1, 1, match="input_shape")
        refused(M.max_pool_backward, np.ones((1, 1, 1, 1)), np.zeros((1, 1, 1, 1), int),
                (1, 2**63, 2, 2), 2, 2, match="input_shape")
    """)


def test_hand_made_arg_max_cannot_write_outside_dx():
    run_isolated("""
    dout = np.ones((1, 1, 2, 2))
    for M in (K, R):
        for bad in (-1, 4, 2**62, np.iinfo(np.int64).max):
            arg = np.zeros((1, 1, 2, 2), np.int64)
            arg[0, 0, 1, 1] = bad
            refused(M.max_pool_backward, dout, arg, (1, 1, 4, 4), 2, 2, match="arg_max values")
        # with padding, index 0 of the top-left window is a padded cell
        refused(M.max_pool_backward, np.ones((1, 1, 3, 3)), np.zeros((1, 1, 3, 3), np.uint8),
                (1, 1, 4, 4), 2, 2, 2, 1, match="arg_max points at padded cells")
        refused(M.max_pool_backward, dout, np.zeros((1, 1, 2, 2), np.float64), (1, 1, 4, 4), 2, 2,
                match="arg_max must hold integers", error=TypeError)
        refused(M.max_pool_backward, dout, np.zeros((1, 1, 2, 3), np.int64), (1, 1, 4, 4), 2, 2,
                match="arg_max must have shape")
    """)


def test_every_kernel_on_odd_shapes_in_a_child():
    """A smoke run of every kernel on padded, strided, odd shapes and both dtypes (what the
    sanitizer runs cover), compared with the references."""
    run_isolated("""
    rng = np.random.default_rng(1)
    for dtype in (np.float32, np.float64):
        tol = dict(rtol=2e-4, atol=2e-4) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)
        for (N, C, H, W, f, s, p) in [(2, 3, 7, 5, 3, 2, 1), (1, 2, 5, 1, 2, 6, 3), (3, 1, 9, 4, 1, 3, 0),
                                      (0, 2, 4, 4, 3, 1, 2), (1, 1, 1, 1, 1, 9, 4)]:
            x = rng.standard_normal((N, C, H, W)).astype(dtype)
            Wt = rng.standard_normal((4, C, f, f)).astype(dtype)
            b = rng.standard_normal(4).astype(dtype)
            col = K.im2col(x, f, f, s, p)
            np.testing.assert_array_equal(col, R.im2col(x, f, f, s, p))
            np.testing.assert_allclose(K.col2im(col, x.shape, f, f, s, p),
                                       R.col2im(col, x.shape, f, f, s, p), **tol)
            out = K.conv_bias_relu_forward(x, Wt, b, s, p)
            np.testing.assert_allclose(out, R.conv_bias_relu_forward(x, Wt, b, s, p), **tol)
            for a, e in zip(K.conv_bias_relu_backward(out, x, Wt, out, s, p),
                            R.conv_bias_relu_backward(out, x, Wt, out, s, p)):
                np.testing.assert_allclose(a, e, **tol)
            if p < f and f <= min(H, W) + 2 * p:
                pooled, arg = K.max_pool_forward(x, f, f, s, p)
                np.testing.assert_array_equal(arg, R.max_pool_forward(x, f, f, s, p)[1])
                np.testing.assert_allclose(K.max_pool_backward(pooled, arg, x.shape, f, f, s, p),
                                           R.max_pool_backward(pooled, arg, x.shape, f, f, s, p),
                                           **tol)
                avg = K.avg_pool_forward(x, f, f, s, p)
                np.testing.assert_allclose(K.avg_pool_backward(avg, x.shape, f, f, s, p),
                                           R.avg_pool_backward(avg, x.shape, f, f, s, p), **tol)
    """)
