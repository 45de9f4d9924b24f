"""What the compiled kernels were built with: OpenMP or not, and how many threads it offers."""
from _openmp cimport cnncore_openmp_enabled, cnncore_omp_max_threads


def openmp_enabled():
    """True when the kernels were compiled with OpenMP."""
    return bool(cnncore_openmp_enabled())


def omp_max_threads():
    """The OpenMP runtime's default thread count (1 without OpenMP)."""
    return cnncore_omp_max_threads()
