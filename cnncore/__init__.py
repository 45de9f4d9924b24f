"""cnncore: the CNN code of 'Deep Learning from Scratch', with compiled kernels.

    from cnncore.layers import *          # instead of: from common.layers import *

Kernels: cnncore.kernels (compiled, validated) and cnncore.reference (pure NumPy, same signatures).
Settings: get_config(), set_config(**kw), config_context(**kw); explain(network) shows which
algorithm each convolution takes and why.
"""
from ._config import config_context, get_config, set_config
from ._conv.select import explain
from ._cpu import FEATURES as _FEATURES
from ._memory import get_output_cache_limit, output_cache_bytes, set_output_cache_limit
from ._threads import get_num_threads, set_num_threads
from ._validate import output_size
from .kernels import col2im, im2col

__version__ = "0.1.0"   # the one place; pyproject.toml reads it


def cpu_features():
    """The CPU features the kernels may use, from the compiled probe: {'x86_targets': the AVX2
    loops were compiled in, 'avx2', 'fma', 'avx512f'}."""
    return dict(_FEATURES)


__all__ = ["im2col", "col2im", "output_size", "get_num_threads", "set_num_threads",
           "set_output_cache_limit", "get_output_cache_limit", "output_cache_bytes",
           "get_config", "set_config", "config_context", "explain", "cpu_features", "__version__"]
