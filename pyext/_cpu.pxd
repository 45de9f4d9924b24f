# The CPU feature probe (cpu_features.h), for the kernels that guard their AVX2 loops with it.
cdef extern from "cpu_features.h":
    int cnncore_cpu_avx2() noexcept nogil
    int cnncore_cpu_fma() noexcept nogil
    int cnncore_cpu_avx512f() noexcept nogil
    enum: CNNCORE_X86_TARGETS
