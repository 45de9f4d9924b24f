# OpenMP declarations that also compile without OpenMP (then: one thread, openmp_enabled() == 0).
cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    static int cnncore_openmp_enabled(void) { return 1; }
    static int cnncore_omp_max_threads(void) { return omp_get_max_threads(); }
    #else
    static int cnncore_openmp_enabled(void) { return 0; }
    static int cnncore_omp_max_threads(void) { return 1; }
    #endif
    """
    int cnncore_openmp_enabled() noexcept nogil
    int cnncore_omp_max_threads() noexcept nogil

# Elements per parallel chunk of the elementwise kernels (ReLU, Adam): large enough that a chunk's
# loop amortises its start, small enough that every thread gets many chunks.
cdef enum:
    CHUNK = 16384


cdef inline Py_ssize_t n_chunks(Py_ssize_t size) noexcept nogil:
    # Chunks of CHUNK elements covering size elements (the last one shorter).
    return (size + CHUNK - 1) // CHUNK


cdef inline Py_ssize_t chunk_length(Py_ssize_t size, Py_ssize_t start) noexcept nogil:
    # Elements of the chunk starting at start.
    return CHUNK if size - start > CHUNK else size - start
