"""What this CPU offers the kernels, from the one probe in cpu_features.h (see cnncore._cpu)."""
from _cpu cimport CNNCORE_X86_TARGETS, cnncore_cpu_avx2, cnncore_cpu_avx512f, cnncore_cpu_fma


def features():
    """{'x86_targets': the AVX2 loops were compiled in, 'avx2', 'fma', 'avx512f': this CPU has it}.

    Each CPU flag is False where x86_targets is (other compilers and architectures)."""
    return {"x86_targets": bool(CNNCORE_X86_TARGETS), "avx2": bool(cnncore_cpu_avx2()),
            "fma": bool(cnncore_cpu_fma()), "avx512f": bool(cnncore_cpu_avx512f())}
