"""How much freed output memory cnncore keeps for reuse.

The kernels' outputs (and the convolution's scratch tiles) take their data from a NumPy memory
handler (pyext/output_cache.h) that keeps freed blocks of 128 KiB or more, up to a limit, and hands
one out again for an array of exactly its size. A training loop allocates the same sizes at every
step, so its outputs reuse pages already mapped instead of faulting in new ones (a first touch
costs far more than a write to a mapped page). The limit is CNNCORE_OUTPUT_CACHE_MB when it is set (0 turns
the cache off), else DEFAULT_LIMIT_MB; set_output_cache_limit overrides it.
"""
from ._config import env_int
from ._ext import output_cache as _cache
from ._validate import check_int

DEFAULT_LIMIT_MB = 256


# The most CNNCORE_OUTPUT_CACHE_MB may ask for: 2**48 bytes, set_output_cache_limit's maximum.
MAX_LIMIT_MB = 2**28


def _default_limit():
    return env_int("CNNCORE_OUTPUT_CACHE_MB", DEFAULT_LIMIT_MB, 0, MAX_LIMIT_MB) << 20


def set_output_cache_limit(nbytes):
    """Keep at most nbytes of freed output memory for reuse (0: none; None: the default).
    Blocks over the new limit are released at once."""
    _cache.set_limit(_default_limit() if nbytes is None else check_int(nbytes, "nbytes", 0))


def get_output_cache_limit():
    """Bytes of freed output memory cnncore may keep for reuse."""
    return _cache.limit()


def output_cache_bytes():
    """Bytes of freed output memory kept for reuse right now."""
    return _cache.held()


empty = _cache.empty
zeros = _cache.zeros

set_output_cache_limit(None)
