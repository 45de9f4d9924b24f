"""Threads, beyond tests/test_threads.py: the kernels release the GIL, the thread settings reach
OpenMP, and layers and networks called from several Python threads give the serial results.

    python tests/test_concurrency.py      # prints the wall-time overlap of two threads (for reports)
"""
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import cnncore
from cnncore import kernels as K
from cnncore import layers, networks


@pytest.fixture
def one_thread():
    cnncore.set_num_threads(1)
    yield
    cnncore.set_num_threads(None)


def big_inputs(rng):
    x = rng.standard_normal((8, 16, 64, 64))
    return x, rng.standard_normal((8, 16, 3, 3))


KERNEL_CALLS = {
    "max_pool_forward": lambda x, Wt: K.max_pool_forward(x, 3, 3, 1, 1),
    "avg_pool_backward": lambda x, Wt: K.avg_pool_backward(x, x.shape, 3, 3, 1, 1),
    "im2col": lambda x, Wt: K.im2col(x, 3, 3, 1, 1),
    "conv_forward": lambda x, Wt: K.conv_forward(x[:8], Wt, 0, 1, 1),
}


@pytest.mark.parametrize("kernel", list(KERNEL_CALLS))
def test_kernels_release_the_gil(kernel, one_thread, rng):
    """While one thread is inside a kernel, another Python thread keeps running.

    The spinner gives the GIL back at every step (sleep(0)), so it advances exactly when it can
    take the GIL: a kernel holding it for the whole call would let it advance by a step or two per
    call. Each sample repeats the call for at least 50 ms, so that on a machine whose cores are busy
    with other processes the spinner still gets scheduled within the sample (with 3 ms calls it
    once did not)."""
    x, Wt = big_inputs(rng)
    if kernel == "avg_pool_backward":
        # The fastest of these: about 1 ms per call here once its output came from the output
        # cache, too short for the spinner to pass 10 steps a call. 8x the input, 8x the call.
        x = np.tile(x, (2, 1, 2, 2))
    call = KERNEL_CALLS[kernel]
    call(x, Wt)  # warm-up
    counter = [0]
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            counter[0] += 1
            time.sleep(0)

    spinner = threading.Thread(target=spin)
    spinner.start()
    try:
        time.sleep(0.05)
        progress = []
        for _ in range(3):
            before, calls = counter[0], 0
            start = time.perf_counter()
            while calls == 0 or time.perf_counter() - start < 0.05:
                call(x, Wt)
                calls += 1
            progress.append((counter[0] - before, calls))
    finally:
        stop.set()
        spinner.join()
    assert any(steps > 10 * calls for steps, calls in progress), progress


def overlap(n_threads=2, repeat=3):
    """Wall time of n_threads Python threads each running one big max-pool (set_num_threads(1)),
    divided by the time of one: ~1 when the kernels overlap on free cores, ~n_threads when not."""
    x, _ = big_inputs(np.random.default_rng(0))
    cnncore.set_num_threads(1)
    try:
        K.max_pool_forward(x, 3, 3, 1, 1)

        def timed(k):
            threads = [threading.Thread(target=K.max_pool_forward, args=(x, 3, 3, 1, 1))
                       for _ in range(k)]
            start = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            return time.perf_counter() - start

        single = min(timed(1) for _ in range(repeat))
        double = min(timed(n_threads) for _ in range(repeat))
    finally:
        cnncore.set_num_threads(None)
    return single, double


@pytest.mark.skipif(not os.environ.get("CNNCORE_TIMING_TESTS"),
                    reason="a timing test (set CNNCORE_TIMING_TESTS=1): on a busy machine even the "
                           "np.sort control can overlap while the kernels do not; the GIL release "
                           "itself is asserted by test_kernels_release_the_gil")
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two CPUs")
def test_two_python_threads_overlap_in_wall_time():
    """Two threads take clearly less than twice one thread's time, unless the machine is too busy
    to give us two cores (then NumPy's own GIL-free sort does not overlap either, and we skip)."""
    single, double = overlap()
    if double / single < 1.6:
        return
    a = np.random.default_rng(0).standard_normal(4_000_000)
    start = time.perf_counter()
    np.sort(a)
    one = time.perf_counter() - start
    threads = [threading.Thread(target=np.sort, args=(a,)) for _ in range(2)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if (time.perf_counter() - start) / one > 1.6:
        pytest.skip("the machine is too busy for two threads to overlap (np.sort does not either)")
    pytest.fail(f"two kernel threads took {double / single:.2f}x one thread's time "
                f"({single:.3f} s -> {double:.3f} s) while np.sort overlapped")


THREAD_COUNT_CODE = r"""
import os, sys
import numpy as np
import cnncore
from cnncore import kernels as K
from cnncore import layers, networks
from cnncore._ext import parallel
tasks = lambda: len(os.listdir("/proc/self/task"))
if len(sys.argv) > 1:
    cnncore.set_num_threads(int(sys.argv[1]))
before = tasks()
K.max_pool_forward(np.ones((8, 4, 64, 64)), 2, 2)  # big enough for 4 threads (WORK_PER_THREAD)
print(cnncore.get_num_threads(), parallel.omp_max_threads(), tasks() - before)
"""


@pytest.mark.parametrize("env,arg,expected", [
    ({"OMP_NUM_THREADS": "1"}, None, (1, 1, 0)),       # no OpenMP worker thread is started
    ({"OMP_NUM_THREADS": "3"}, None, (3, 3, 2)),
    ({"OMP_NUM_THREADS": "3"}, "1", (1, 3, 0)),        # set_num_threads wins over the environment
    ({"OMP_NUM_THREADS": "1"}, "4", (4, 1, 3)),
])
@pytest.mark.skipif(sys.platform != "linux", reason="counts threads in /proc/self/task")
def test_omp_num_threads_and_set_num_threads_are_respected(env, arg, expected):
    from cnncore._ext import parallel

    if not parallel.openmp_enabled():
        pytest.skip("built without OpenMP")
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", **env)
    proc = subprocess.run([sys.executable, "-c", THREAD_COUNT_CODE] + ([arg] if arg else []),
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert tuple(map(int, proc.stdout.split())) == expected


def test_layers_and_networks_in_threads_match_serial(rng):
    """Separate networks (and layers) used from four Python threads at once give the serial
    results. (One network object is not meant to be shared: layers cache their last input.)"""
    x = rng.standard_normal((6, 1, 12, 12))
    t = rng.integers(0, 10, 6)
    conv_param = {"filter_num": 5, "filter_size": 3, "pad": 1, "stride": 1}

    def work(seed):
        np.random.seed(seed)  # (weights drawn before any thread starts work below)
        return networks.SimpleConvNet(input_dim=(1, 12, 12), conv_param=conv_param, hidden_size=16)

    nets = [work(s) for s in range(4)]

    def run(net, pool):
        grads = net.gradient(x, t)
        out = pool.forward(x)
        return {k: v.copy() for k, v in grads.items()}, out, pool.backward(out)

    expected = [run(n, layers.Pooling(3, 3, 2, 1)) for n in nets]
    results = [None] * 4

    def target(i):
        for _ in range(3):
            results[i] = run(nets[i], layers.Pooling(3, 3, 2, 1))

    threads = [threading.Thread(target=target, args=(i,)) for i in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for got, want in zip(results, expected):
        for key in want[0]:
            np.testing.assert_array_equal(got[0][key], want[0][key])
        np.testing.assert_array_equal(got[1], want[1])
        np.testing.assert_array_equal(got[2], want[2])


if __name__ == "__main__":
    single, double = overlap()
    print(f"one thread {single:.3f} s, two threads {double:.3f} s: ratio {double / single:.2f}")
