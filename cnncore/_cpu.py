"""The CPU features the kernels use, read once from the compiled probe (pyext/cpu_features.h).

FEATURES: {'x86_targets', 'avx2', 'fma', 'avx512f'} -> bool. usable(config) is what the kernels may
take under a configuration: the CPU's AVX2, AVX2 + FMA and AVX-512F; none of them when config
use_avx2 is False, no AVX-512F when use_avx512 is False.
"""
from ._ext import cpu as _cpu

FEATURES = _cpu.features()


def usable(config, features=None):
    """{'avx2': AVX2 loops may run, 'avx2_fma': AVX2 + FMA loops may run, 'avx512': AVX-512F loops
    may run} under config, on a CPU with features (default: this one's)."""
    f = FEATURES if features is None else features
    on = bool(config["use_avx2"] and f.get("x86_targets", True))
    return {"avx2": on and bool(f["avx2"]), "avx2_fma": on and bool(f["avx2"] and f["fma"]),
            "avx512": on and bool(config["use_avx512"] and f.get("avx512f", False))}
