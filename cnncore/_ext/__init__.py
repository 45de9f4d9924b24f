"""Compiled kernels, built from pyext/*.pyx (see setup.py). Use them through cnncore.kernels."""
