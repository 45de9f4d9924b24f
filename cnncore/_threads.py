"""How many OpenMP threads the compiled kernels use.

The default is OMP_NUM_THREADS when it is set, else the CPUs this process may run on. BLAS (the GEMM
inside the convolution) keeps its own pool: set OPENBLAS_NUM_THREADS / MKL_NUM_THREADS, or use
threadpoolctl, to limit it too.
"""
import os

_num_threads = None


def _default_num_threads():
    env = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def get_num_threads():
    """Threads the kernels run with (set_num_threads, else OMP_NUM_THREADS, else usable CPUs)."""
    return _num_threads if _num_threads is not None else _default_num_threads()


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
