"""Build the compiled kernels in ``pyext/`` into ``cnncore._ext``.

Metadata lives in pyproject.toml; this file only describes the extensions and picks compiler flags.

Environment switches:
  CNNCORE_OPENMP=0         build without OpenMP (kernels run serially)
  CNNCORE_CYTHON_DEBUG=1   turn Cython bounds/wraparound checks back on (slow; for hunting bugs)
  CNNCORE_ANNOTATE=1       write Cython's HTML annotation next to each .pyx
  CNNCORE_LIMITED_API=1    build for CPython's Limited API / stable ABI: one cp311-abi3 wheel that
                           installs on CPython >= 3.11 (needs Python >= 3.11 to build; opt-in)
"""
import glob
import os
import re
import shlex
import sys
import sysconfig
import tempfile
import textwrap

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

KERNELS = ["im2col", "pooling", "conv", "winograd", "conv_avx2", "conv_avx512", "activation", "adam",
           "parallel", "padding", "cpu", "batchnorm"]

# Typed memoryviews need the buffer protocol in the Limited API: Python 3.11 (0x030B0000).
LIMITED_API_HEX, LIMITED_API_TAG = "0x030B0000", "cp311"


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
                # The extensions' link line carries LDFLAGS (e.g. -L to Homebrew's libomp);
                # distutils' executable linker does not, so the probe adds them.
                compiler.link_executable(objects, "probe", output_dir=tmp,
                                         extra_preargs=shlex.split(os.environ.get("LDFLAGS", "")),
                                         extra_postargs=lflags)
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
            if ext.name.endswith(".adam") and self.compiler.compiler_type != "msvc":
                # NumPy's results to the bit: no fused multiply-adds (GCC contracts by default where
                # the target has FMA); no errno, so the square root vectorises.
                ext.extra_compile_args += ["-ffp-contract=off", "-fno-math-errno"]
            if flags is not None:
                ext.extra_compile_args += flags[0]
                ext.extra_link_args += flags[1]
        super().build_extensions()


def _limited_api():
    """CNNCORE_LIMITED_API=1: check that this interpreter can build the abi3 kernels."""
    if not _env_flag("CNNCORE_LIMITED_API", False):
        return False
    if sys.implementation.name != "cpython" or sys.version_info < (3, 11):
        sys.exit("cnncore: CNNCORE_LIMITED_API=1 needs CPython >= 3.11 (memoryviews in the Limited API)")
    if sysconfig.get_config_var("Py_GIL_DISABLED"):
        sys.exit("cnncore: CNNCORE_LIMITED_API=1 is not available on free-threaded CPython")
    import Cython

    if tuple(map(int, re.match(r"(\d+)\.(\d+)", Cython.__version__).groups())) < (3, 1):
        sys.exit(f"cnncore: CNNCORE_LIMITED_API=1 needs Cython >= 3.1, found {Cython.__version__}")
    return True


def _limited_api_kwargs():
    if not LIMITED_API:
        return {}
    return {"define_macros": [("Py_LIMITED_API", LIMITED_API_HEX)], "py_limited_api": True}


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
    # Kernels use typed memoryviews only (no ``cimport numpy``): no NumPy headers for them.
    modules = [
        Extension(f"cnncore._ext.{name}", [f"pyext/{name}.pyx"],
                  depends=glob.glob("pyext/*.h"),   # rebuild when a C header changes
                  **_limited_api_kwargs())
        for name in KERNELS
    ]
    # The output cache is a NumPy memory handler: it needs NumPy's C API (PyDataMem_SetHandler).
    import numpy

    kwargs = _limited_api_kwargs()
    kwargs["define_macros"] = kwargs.get("define_macros", []) + [
        ("NPY_NO_DEPRECATED_API", "NPY_1_22_API_VERSION"), ("NPY_TARGET_VERSION", "NPY_1_22_API_VERSION")]
    modules.append(Extension("cnncore._ext.output_cache", ["pyext/output_cache.pyx"],
                             include_dirs=[numpy.get_include()],
                             depends=["pyext/output_cache.h"], **kwargs))
    return cythonize(
        modules,
        compiler_directives=directives,
        annotate=_env_flag("CNNCORE_ANNOTATE", False),
    )


LIMITED_API = _limited_api()
setup(
    ext_modules=extensions(),
    cmdclass={"build_ext": BuildExt},
    options={"bdist_wheel": {"py_limited_api": LIMITED_API_TAG}} if LIMITED_API else {},
)
