"""Results do not depend on the thread count, and the thread setting is respected."""
import multiprocessing
import threading
import time

import numpy as np
import pytest

import cnncore
from cnncore import _threads
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
        K.matmul(col, col.T), K.matmul(col.T, col),
    ]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_same_results_with_one_and_two_threads(dtype, restore_threads):
    # small arrays would otherwise run on one thread
    with cnncore.config_context(work_per_thread=1, matmul_chunk_work=1):
        cnncore.set_num_threads(1)
        one = all_kernels(np.random.default_rng(7), dtype)
        cnncore.set_num_threads(2)
        two = all_kernels(np.random.default_rng(7), dtype)
    # OpenMP kernels partition outputs, so they are bitwise equal; the convolution and matmul cut
    # their work into tiles fixed by the shapes, one single-threaded BLAS call each, and sum the
    # weight gradient tile by tile in order, whichever thread computed a tile.
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a, b)


def test_small_calls_run_on_one_thread(restore_threads):
    cnncore.set_num_threads(2)
    assert _threads.threads_for(10) == 1
    assert _threads.threads_for(10 * cnncore.get_config()["work_per_thread"]) == 2
    assert _threads.threads_for() == 2
    with cnncore.config_context(work_per_thread=5):
        assert _threads.threads_for(10) == 2


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


def test_run_tasks_runs_every_task_once_on_named_workers():
    seen, lock = [], threading.Lock()

    def task(worker, i):
        time.sleep(0.001)
        with lock:
            seen.append((worker, i))

    _threads.run_tasks(task, 50, 3)
    assert sorted(i for _, i in seen) == list(range(50))
    assert {w for w, _ in seen} <= {0, 1, 2}


@pytest.mark.parametrize("failing", [0, 7])
def test_run_tasks_raises_once_the_started_tasks_returned(failing):
    lock = threading.Lock()
    started, finished = set(), set()

    def task(worker, i):
        with lock:
            started.add(i)
        time.sleep(0.002)
        with lock:
            finished.add(i)
        if i == failing:
            raise ZeroDivisionError(f"task {i}")

    with pytest.raises(ZeroDivisionError, match=f"task {failing}"):
        _threads.run_tasks(task, 20, 2)
    assert failing in started and started == finished   # nothing still running on return
    assert len(started) < 20                              # no task starts after the failure
    started.clear()
    _threads.run_tasks(lambda worker, i: started.add(i), 20, 2)
    assert started == set(range(20))                      # the pool still works


def blas_threads():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    return [lib["num_threads"] for lib in threadpoolctl.threadpool_info()
            if lib["user_api"] == "blas"]


def test_single_threaded_blas_holds_blas_at_one_and_restores_it():
    from threadpoolctl import threadpool_limits

    with threadpool_limits(2, user_api="blas"):
        assert set(blas_threads()) == {2}
        with _threads.single_threaded_blas():
            assert set(blas_threads()) == {1}
            with _threads.single_threaded_blas():      # re-entrant
                assert set(blas_threads()) == {1}
            assert set(blas_threads()) == {1}
        assert set(blas_threads()) == {2}


def test_single_threaded_blas_from_overlapping_threads_restores_the_setting():
    # Two threads whose blocks overlap: the second must not save the first one's limit of 1.
    from threadpoolctl import threadpool_limits

    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()

    def first():
        with _threads.single_threaded_blas():
            first_in.set()
            second_in.wait(10)
        first_out.set()

    def second():
        first_in.wait(10)
        with _threads.single_threaded_blas():
            second_in.set()
            first_out.wait(10)
            assert set(blas_threads()) == {1}   # still held: the second block is open

    with threadpool_limits(2, user_api="blas"):
        threads = [threading.Thread(target=f) for f in (first, second)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        assert set(blas_threads()) == {2}


def _kernels_in_child(queue):
    x = np.random.default_rng(3).standard_normal((16, 16, 12, 12)).astype(np.float32)
    Wt = np.random.default_rng(4).standard_normal((16, 16, 3, 3)).astype(np.float32)
    out = K.conv_bias_relu_forward(x, Wt, np.zeros(16, np.float32), 1, 1)
    queue.put((out, K.max_pool_forward(out, 2, 2)[0], cnncore.kernels.relu_forward(x)[0]))


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork")
def test_openmp_kernels_work_in_a_child_forked_after_they_ran(restore_threads):
    # GNU OpenMP's threads do not survive fork and a team started in the child would wait for them
    # forever: such a child runs its kernels on one thread (same results).
    cnncore.set_num_threads(2)
    with cnncore.config_context(work_per_thread=1):
        ctx = multiprocessing.get_context("fork")
        queue = ctx.Queue()
        _kernels_in_child(queue)                      # the parent's OpenMP threads start here
        expected = queue.get(timeout=60)
        child = ctx.Process(target=_kernels_in_child, args=(queue,))
        child.start()
        got = queue.get(timeout=60)
        child.join(60)
    assert child.exitcode == 0
    for g, e in zip(got, expected):
        np.testing.assert_array_equal(g, e)


def _conv_in_child(queue):
    x = np.random.default_rng(3).standard_normal((8, 3, 12, 12))
    Wt = np.random.default_rng(4).standard_normal((4, 3, 3, 3))
    queue.put(K.conv_forward(x, Wt, 0.0, 1, 1))


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork")
def test_convolution_works_in_a_forked_child(restore_threads):
    # The parent's worker threads do not exist in a forked child: the child must start its own
    # (the child inherits the forking thread's settings).
    cnncore.set_num_threads(2)
    with cnncore.config_context(work_per_thread=1):
        x = np.random.default_rng(3).standard_normal((8, 3, 12, 12))
        Wt = np.random.default_rng(4).standard_normal((4, 3, 3, 3))
        expected = K.conv_forward(x, Wt, 0.0, 1, 1)      # starts the pool in the parent
        ctx = multiprocessing.get_context("fork")
        queue = ctx.Queue()
        child = ctx.Process(target=_conv_in_child, args=(queue,))
        child.start()
        got = queue.get(timeout=60)
        child.join(60)
    assert child.exitcode == 0
    np.testing.assert_array_equal(got, expected)


def test_blas_held_names_each_blas_library_threadpoolctl_finds():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    found = [lib["internal_api"] for lib in threadpoolctl.threadpool_info()
             if lib["user_api"] == "blas"]
    assert [name.split()[0] for name in _threads.blas_held()] == found
    blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]["name"]
    if "openblas" in blas:   # NumPy's wheels: threadpoolctl >= 3.5 must find the bundled OpenBLAS
        assert found == ["openblas"]


def test_without_threadpoolctl_the_convolution_still_computes(monkeypatch, rng):
    import sys

    monkeypatch.setitem(sys.modules, "threadpoolctl", None)   # import fails
    monkeypatch.setattr(_threads, "_blas_libraries", None)
    assert _threads.blas_held() == []
    x = rng.standard_normal((6, 2, 9, 9))
    Wt = rng.standard_normal((3, 2, 3, 3))
    from cnncore import reference as R
    np.testing.assert_allclose(K.conv_forward(x, Wt, 0.0, 1, 1), R.conv_forward(x, Wt, 0.0, 1, 1),
                               rtol=1e-10, atol=1e-12)
