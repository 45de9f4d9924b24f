"""cnncore's settings: get_config(), set_config(**kw), config_context(**kw).

The settings live in a context variable, so they are context-local: set_config and config_context
change them for the calling thread (or asyncio task) only, and a new thread starts from the
defaults. The defaults come from the environment (CNNCORE_<NAME>, read once at import), else from
the table below. Every numeric or named environment setting cnncore reads (these, OMP_NUM_THREADS,
CNNCORE_OUTPUT_CACHE_MB) goes through env_int or env_choice: a value that is not a plain decimal
integer in range (or not one of the names) is warned about (RuntimeWarning) and ignored.

Kernels read the settings in the calling thread and hand them down as arguments, so a
convolution's worker threads compute with the caller's settings.
"""
import contextlib
import contextvars
import os
import re
import warnings

from ._validate import check_int

CONV_ALGORITHMS = ("auto", "im2col", "winograd", "avx2_rows", "avx2_blocks", "avx512_blocks")

# Largest byte count a setting may hold (as _validate's element limit: far from 64-bit overflow).
_MAX_BYTES = 2**48

_DECIMAL = re.compile(r"[0-9]+")


def env_int(name, default, minimum, maximum, first_of_list=False):
    """The environment variable name as an int in [minimum, maximum], or default when it is unset.

    Only plain ASCII decimal digits (surrounding blanks allowed) count: '²', '1e3', '-1', '0x10' and
    out-of-range values are warned about and give default. first_of_list: only the text before the
    first comma counts (OMP_NUM_THREADS may list a count per nesting level).
    """
    raw = os.environ.get(name)
    if raw is None:
        return default
    text = (raw.split(",")[0] if first_of_list else raw).strip()
    if _DECIMAL.fullmatch(text) and minimum <= int(text) <= maximum:
        return int(text)
    warnings.warn(f"{name}={raw!r} ignored: it must be a whole number from {minimum} to {maximum}",
                  RuntimeWarning, stacklevel=2)
    return default


def env_choice(name, default, choices):
    """The environment variable name if it is one of choices, else default (warned when set)."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    if raw.strip() in choices:
        return raw.strip()
    warnings.warn(f"{name}={raw!r} ignored: it must be one of {', '.join(choices)}",
                  RuntimeWarning, stacklevel=2)
    return default


def _check_algorithm(value, name):
    if value not in CONV_ALGORITHMS:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, CONV_ALGORITHMS))}, "
                         f"got {value!r}")
    return value


def _check_bool(value, name):
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


def _positive(maximum):
    return lambda value, name: check_int(value, name, 1, maximum)


# name: (built-in default, check(value, name) -> value, environment default)
_SETTINGS = {
    # Which algorithm runs every convolution: 'auto' follows cnncore._conv.select's rules; any other
    # runs that algorithm wherever it can and raises ValueError where it cannot.
    "conv_algorithm": ("auto", _check_algorithm,
                       lambda d: env_choice("CNNCORE_CONV_ALGORITHM", d, CONV_ALGORITHMS)),
    # Whether kernels may take their AVX2 + FMA loops where the CPU has them (False: the baseline
    # build's loops everywhere, as on a CPU without AVX2).
    "use_avx2": (True, _check_bool, lambda d: bool(env_int("CNNCORE_USE_AVX2", int(d), 0, 1))),
    # Whether the convolutions may take their AVX-512F loops where the CPU has them (and use_avx2
    # allows vector loops at all); False: their AVX2 loops.
    "use_avx512": (True, _check_bool,
                   lambda d: bool(env_int("CNNCORE_USE_AVX512", int(d), 0, 1))),
    # Bytes of unfolded columns a convolution tile may hold: the batch is cut into tiles of at most
    # this much (at least one image each).
    "tile_bytes": (4 << 20, _positive(_MAX_BYTES),
                   lambda d: env_int("CNNCORE_TILE_BYTES", d, 1, _MAX_BYTES)),
    # Elements a thread should have to itself before a kernel wakes another (waking one costs tens
    # of microseconds).
    "work_per_thread": (1 << 15, _positive(_MAX_BYTES),
                        lambda d: env_int("CNNCORE_WORK_PER_THREAD", d, 1, _MAX_BYTES)),
    # Pieces a large matmul is cut into (a fixed count, so results never depend on threads), and
    # the multiply-adds a piece needs before the product is cut.
    "matmul_chunks": (2, _positive(1024), lambda d: env_int("CNNCORE_MATMUL_CHUNKS", d, 1, 1024)),
    "matmul_chunk_work": (1 << 22, _positive(_MAX_BYTES),
                          lambda d: env_int("CNNCORE_MATMUL_CHUNK_WORK", d, 1, _MAX_BYTES)),
}

_defaults = {name: env(default) for name, (default, _, env) in _SETTINGS.items()}
_config = contextvars.ContextVar("cnncore_config", default=_defaults)


def get_config():
    """The current settings as a new dict: conv_algorithm, use_avx2, use_avx512, tile_bytes,
    work_per_thread, matmul_chunks, matmul_chunk_work."""
    return dict(_config.get())


def current():
    """The current settings without a copy, for kernels (do not modify)."""
    return _config.get()


def _checked(changes):
    unknown = sorted(set(changes) - set(_SETTINGS))
    if unknown:
        raise TypeError(f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(_SETTINGS)}")
    return {name: (_defaults[name] if value is None else _SETTINGS[name][1](value, name))
            for name, value in changes.items()}


def set_config(**changes):
    """Change settings for this thread (or task); None puts a setting back to its default.

    conv_algorithm: 'auto' | 'im2col' | 'winograd' | 'avx2_rows' | 'avx2_blocks' | 'avx512_blocks'
    use_avx2, use_avx512: bool; tile_bytes, work_per_thread, matmul_chunks, matmul_chunk_work:
    ints >= 1.
    Raises TypeError for an unknown name or a wrong type, ValueError for a value out of range.
    """
    _config.set({**_config.get(), **_checked(changes)})


@contextlib.contextmanager
def config_context(**changes):
    """Settings changed inside the block only (as set_config), restored on leaving it:

        with cnncore.config_context(conv_algorithm="im2col"):
            out = layer.forward(x)
    """
    token = _config.set({**_config.get(), **_checked(changes)})
    try:
        yield get_config()
    finally:
        _config.reset(token)
