"""``python -m cnncore info``: what this installation runs with."""
import argparse
import os
import platform


def info():
    """A dict describing the build and runtime: version, kernels, OpenMP, threads, BLAS."""
    import numpy as np

    import cnncore
    from cnncore._ext import conv_avx2, parallel
    from cnncore._threads import blas_held

    result = {
        "cnncore": cnncore.__version__,
        "location": os.path.dirname(cnncore.__file__),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "compiled_kernels": True,
        "built_with_cython": parallel.cython_version(),
        "openmp": parallel.openmp_enabled(),
        "avx2_conv": conv_avx2.supported(),
        "omp_max_threads": parallel.omp_max_threads(),
        "kernel_threads": cnncore.get_num_threads(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
        "blas": _blas_description(np),
        "blas_held_at_1": ", ".join(blas_held()) or "none found (BLAS keeps its threads: slower)",
    }
    return result


def _blas_description(np):
    try:
        config = np.show_config(mode="dicts")
        blas = config["Build Dependencies"]["blas"]
        return f"{blas.get('name')} {blas.get('version', '')}".strip()
    except Exception:  # older NumPy without mode="dicts"
        return "unknown"


def info_main(argv):
    argparse.ArgumentParser(prog="python -m cnncore info", description=__doc__).parse_args(argv)
    for key, value in info().items():
        print(f"{key:18s} {value}")
    return 0
