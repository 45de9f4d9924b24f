"""What the compiled kernels were built with: OpenMP or not, and how many threads it offers."""
from _openmp cimport cnncore_openmp_enabled, cnncore_omp_max_threads

cdef extern from *:
    # Defined by the C file Cython generates: 0xMMmmppRS (major, minor, patch, release level).
    const unsigned long CYTHON_HEX_VERSION


def openmp_enabled():
    """True when the kernels were compiled with OpenMP."""
    return bool(cnncore_openmp_enabled())


def omp_max_threads():
    """The OpenMP runtime's default thread count (1 without OpenMP)."""
    return cnncore_omp_max_threads()


def cython_version():
    """The version of Cython that generated the kernels' C code, e.g. '3.3.1'."""
    cdef unsigned long v = CYTHON_HEX_VERSION
    return f"{v >> 24}.{(v >> 16) & 0xFF}.{(v >> 8) & 0xFF}"
