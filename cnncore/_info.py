"""``python -m cnncore info``: what this installation runs with.

``python -m cnncore info --explain simple|deep|lenet5 [--dtype float32] [--batch N]`` shows which
algorithm each convolution of that network takes, and why (cnncore.explain).
"""
import argparse
import os
import platform


def info():
    """A dict describing the build and runtime: version, kernels, OpenMP, threads, BLAS."""
    import numpy as np

    import cnncore
    from cnncore._ext import parallel
    from cnncore._threads import blas_held

    result = {
        "cnncore": cnncore.__version__,
        "location": os.path.dirname(cnncore.__file__),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "compiled_kernels": True,
        "built_with_cython": parallel.cython_version(),
        "openmp": parallel.openmp_enabled(),
        "cpu_features": ", ".join(f"{name}={'yes' if on else 'no'}"
                                  for name, on in cnncore.cpu_features().items()),
        "config": ", ".join(f"{key}={value}" for key, value in cnncore.get_config().items()),
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


NETWORKS = {"simple": "SimpleConvNet", "deep": "DeepConvNet", "lenet5": "LeNet5"}


def explain_network(name, dtype="float32", batch=100):
    """The text of cnncore.explain for one of the built-in networks on a batch of MNIST images."""
    import numpy as np

    from cnncore import networks
    from cnncore._conv.select import explain_text

    network = getattr(networks, NETWORKS[name])(dtype=np.dtype(dtype))
    return explain_text(network, (batch, 1, 28, 28), np.dtype(dtype))


def info_main(argv):
    parser = argparse.ArgumentParser(prog="python -m cnncore info", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--explain", choices=sorted(NETWORKS),
                        help="which algorithm each convolution of this network takes, and why")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                        help="the network's dtype (with --explain; default float32)")
    parser.add_argument("--batch", type=int, default=100, help="images per batch (with --explain)")
    args = parser.parse_args(argv)
    if args.explain:
        print(explain_network(args.explain, args.dtype, args.batch))
        return 0
    for key, value in info().items():
        print(f"{key:18s} {value}")
    return 0
