"""How many threads cnncore uses, and how it runs its matrix products on them.

The default is OMP_NUM_THREADS when it is set, else the CPUs this process may run on;
set_num_threads overrides it. The OpenMP kernels (im2col, pooling, ReLU, ...) start that many
threads. The convolution and matmul run their tiles on that many Python threads (run_tasks: every
heavy call in a tile releases the GIL), each tile calling NumPy's BLAS single-threaded while
single_threaded_blas holds BLAS's own pool at one thread. Results never depend on the count.

A process forked after a kernel started threads runs every kernel on one thread: GNU OpenMP's
threads do not survive fork, and a team started in the child waits for them forever.
"""
import contextlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor

from ._config import env_int
from ._config import current as _current_config

_num_threads = None


# Largest team a kernel starts. GNU OpenMP puts per-thread start-up data on the calling thread's
# stack, so a team of 100000 crashed the process; results never depend on the thread count, so
# asking for more simply runs with this many.
MAX_THREADS = 1024

# Whether a kernel may have started OpenMP threads in this process (threads_for gave more than
# one), and whether this process was forked after that: then its kernels run on one thread.
_threads_started = False
_forked_after_threads = False


def _default_num_threads():
    env = env_int("OMP_NUM_THREADS", None, 1, 2**31 - 1, first_of_list=True)
    if env is not None:
        return env
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def get_num_threads():
    """Threads the kernels run with (set_num_threads, else OMP_NUM_THREADS, else usable CPUs)."""
    return _num_threads if _num_threads is not None else _default_num_threads()


def threads_for(work=None):
    """Threads for a kernel call touching about work elements: get_num_threads(), at most
    MAX_THREADS, and at most one per config work_per_thread elements (results never depend on it)."""
    global _threads_started
    if _forked_after_threads:
        return 1
    n = min(get_num_threads(), MAX_THREADS)
    if work is not None:
        n = max(1, min(n, work // _current_config()["work_per_thread"]))
    _threads_started = _threads_started or n > 1
    return n


def set_num_threads(n):
    """Run the kernels with n threads (n >= 1); None goes back to the default.

    Results never depend on the thread count: threads own disjoint parts of every output.
    """
    global _num_threads
    if n is None:
        _num_threads = None
        return
    from ._validate import check_int

    _num_threads = check_int(n, "n", 1)


# ------------------------------------------------------------------------------ BLAS inside our threads
# The convolution runs its tiles on several threads, each calling a single-threaded GEMM. BLAS's own
# pool must then be held at one thread: with both pools running, OpenBLAS's idle workers spin while
# our threads unfold, and take the cores those threads need (docs/kernels.md, Threads). threadpoolctl
# is how NumPy's BLAS is reached (OpenBLAS, MKL, BLIS, FlexiBLAS alike). Calls from several Python
# threads at once share one limit: the first in sets it, the last out restores what it found.

_blas_lock = threading.Lock()
_blas_users = 0
_blas_saved = None
_blas_libraries = None


def _blas():
    """[(name, get, set)]: name and thread-count functions of each BLAS library loaded here."""
    global _blas_libraries
    if _blas_libraries is None:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:   # a dependency, but cnncore still computes right without it
            _blas_libraries = []
            return _blas_libraries
        libs = ThreadpoolController().select(user_api="blas").lib_controllers
        # threadpoolctl >= 3.6 lets only one Python thread set OpenBLAS's limit (its other threads'
        # calls are ignored); cnncore's calls come from any thread and are counted here, so they
        # go to the library itself.
        _blas_libraries = [(f"{lib.internal_api} {lib.version}", lib.get_num_threads,
                            getattr(lib, "_real_set_num_threads", lib.set_num_threads))
                           for lib in libs]
    return _blas_libraries


def blas_held():
    """The BLAS libraries single_threaded_blas holds at one thread, e.g. ['openblas 0.3.31'];
    empty when threadpoolctl is missing or finds none (then BLAS keeps its own threads: slower,
    still correct)."""
    return [name for name, _, _ in _blas()]


@contextlib.contextmanager
def single_threaded_blas():
    """Hold NumPy's BLAS at one thread inside the block (re-entrant, shared across threads)."""
    global _blas_users, _blas_saved
    with _blas_lock:
        if _blas_users == 0:
            _blas_saved = [get() for _, get, _ in _blas()]
            for _, _, set_threads in _blas():
                set_threads(1)
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0:
                for (_, _, set_threads), n in zip(_blas(), _blas_saved):
                    set_threads(n)


# --------------------------------------------------------------------------------------- worker threads

_pool = None
_pool_size = 0
_pool_lock = threading.Lock()


def _executor(n):
    """A pool of at least n threads, kept for the life of the process."""
    global _pool, _pool_size
    with _pool_lock:
        if _pool is None or _pool_size < n:
            old, _pool, _pool_size = _pool, ThreadPoolExecutor(n, thread_name_prefix="cnncore"), n
            if old is not None:
                old.shutdown(wait=False)
        return _pool


def run_tasks(task, n_tasks, n_workers):
    """Call task(worker, i) for i in range(n_tasks) on n_workers threads, this one included.

    Tasks are handed out in order as workers come free; worker (0 .. n_workers-1) names the thread,
    so a task can use that worker's scratch buffers. If a task raises, no further task starts, and
    the first exception is raised once every started task has returned.
    """
    n_workers = max(1, min(n_workers, n_tasks))
    if n_workers == 1:
        for i in range(n_tasks):
            task(0, i)
        return
    lock = threading.Lock()
    state = {"next": 0, "failed": False}

    def work(worker):
        while True:
            with lock:
                i = state["next"]
                if i >= n_tasks or state["failed"]:
                    return
                state["next"] = i + 1
            try:
                task(worker, i)
            except BaseException:
                state["failed"] = True
                raise

    pool = _executor(n_workers - 1)
    helpers = [pool.submit(work, w) for w in range(1, n_workers)]
    error = None
    try:
        work(0)
    except BaseException as e:
        error = e
    for f in helpers:
        if not f.cancel():          # a helper that never started has nothing to finish
            helper_error = f.exception()   # waits for it
            error = error or helper_error
    if error is not None:
        raise error


def _after_fork_in_child():
    # Threads do not survive fork: forget the pool and any limit a now-vanished thread held, and
    # run on one thread if OpenMP's may have started (see the module's docstring).
    global _pool, _pool_size, _pool_lock, _blas_lock, _blas_users, _forked_after_threads
    _forked_after_threads = _forked_after_threads or _threads_started
    _pool, _pool_size, _pool_lock, _blas_lock = None, 0, threading.Lock(), threading.Lock()
    if _blas_users:
        for (_, _, set_threads), n in zip(_blas(), _blas_saved):
            set_threads(n)
        _blas_users = 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
