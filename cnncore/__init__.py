"""cnncore: the CNN code of 'Deep Learning from Scratch', with compiled kernels.

    from cnncore.layers import *          # instead of: from common.layers import *

Kernels: cnncore.kernels (compiled, validated) and cnncore.reference (pure NumPy, same signatures).
"""
from ._memory import get_output_cache_limit, output_cache_bytes, set_output_cache_limit
from ._threads import get_num_threads, set_num_threads
from ._validate import output_size
from .kernels import col2im, im2col

__version__ = "0.1.0"

__all__ = ["im2col", "col2im", "output_size", "get_num_threads", "set_num_threads",
           "set_output_cache_limit", "get_output_cache_limit", "output_cache_bytes", "__version__"]
