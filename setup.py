"""Build the compiled kernels in ``pyext/`` into ``cnncore._ext``.

Metadata lives in pyproject.toml; this file only describes the extensions and picks compiler flags.

Environment switches:
  CNNCORE_OPENMP=0         build without OpenMP (kernels run serially)
  CNNCORE_CYTHON_DEBUG=1   turn Cython bounds/wraparound checks back on (slow; for hunting bugs)
  CNNCORE_ANNOTATE=1       write Cython's HTML annotation next to each .pyx
"""
import os
import sys
import tempfile
import textwrap

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

KERNELS = ["im2col", "pooling", "conv", "parallel"]


def _env_flag(name, default):
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() not in ("0", "false", "no", "off", "")


def _openmp_flags(compiler):
    """Return (compile_args, link_args) for OpenMP, or None when the compiler cannot do it."""
    if compiler.compiler_type == "msvc":
        return ["/openmp"], []
    if sys.platform == "darwin":
        candidates = [(["-Xpreprocessor", "-fopenmp"], ["-lomp"]), (["-fopenmp"], ["-fopenmp"])]
    else:
        candidates = [(["-fopenmp"], ["-fopenmp"])]
    source = textwrap.dedent(
        """
        #include <omp.h>
        int main(void) { int n = 0;
        #pragma omp parallel reduction(+:n)
          n += 1;
          return n > 0 ? 0 : 1; }
        """
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "probe.c")
        with open(path, "w") as f:
            f.write(source)
        for cflags, lflags in candidates:
            try:
                objects = compiler.compile([path], output_dir=tmp, extra_postargs=cflags)
                compiler.link_executable(objects, "probe", output_dir=tmp, extra_postargs=lflags)
            except Exception:  # any compile or link failure means: not with these flags
                continue
            return cflags, lflags
    return None


class BuildExt(build_ext):
    def build_extensions(self):
        use_openmp = _env_flag("CNNCORE_OPENMP", True)
        flags = _openmp_flags(self.compiler) if use_openmp else None
        if use_openmp and flags is None:
            print("cnncore: the compiler does not support OpenMP; building serial kernels")
        if self.compiler.compiler_type == "msvc":
            opt = ["/O2"]
        else:
            opt = ["-O3"]
        for ext in self.extensions:
            ext.extra_compile_args += opt
            if flags is not None:
                ext.extra_compile_args += flags[0]
                ext.extra_link_args += flags[1]
        super().build_extensions()


def extensions():
    from Cython.Build import cythonize

    debug = _env_flag("CNNCORE_CYTHON_DEBUG", False)
    directives = {
        "language_level": 3,
        "boundscheck": debug,
        "wraparound": debug,
        "initializedcheck": debug,
        "nonecheck": False,
        "cdivision": True,
        "embedsignature": True,
    }
    # Kernels use typed memoryviews only (no ``cimport numpy``): no NumPy headers at build time.
    modules = [Extension(f"cnncore._ext.{name}", [f"pyext/{name}.pyx"]) for name in KERNELS]
    return cythonize(
        modules,
        compiler_directives=directives,
        annotate=_env_flag("CNNCORE_ANNOTATE", False),
    )


setup(ext_modules=extensions(), cmdclass={"build_ext": BuildExt})
