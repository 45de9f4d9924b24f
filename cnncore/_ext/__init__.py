"""Compiled kernels, built from pyext/*.pyx (see setup.py). Use them through cnncore.kernels."""
import os

# The convolution alternates OpenMP kernels with BLAS calls that run on BLAS's own threads. GNU OpenMP
# threads spin for a long while after each parallel region by default, and the two pools then fight
# over the cores (measured here: a tile of unfold + GEMM took 20x longer). Sleeping OpenMP workers
# avoid that. Only a default: a value the user set wins, and it must be set before the OpenMP runtime
# loads (that is, before this package's kernels are first imported).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
