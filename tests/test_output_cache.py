"""The output cache (cnncore._memory, pyext/output_cache.h): kernels' outputs reuse freed blocks of
their size, never more than the limit is kept, and reused memory never leaks old values into results."""
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import cnncore
from cnncore import _memory
from cnncore import kernels as K
from cnncore import reference as R
from cnncore._ext import output_cache

BLOCK = (256, 1024)          # 1 MiB of float32: above the cache's smallest block


@pytest.fixture
def limit():
    """Run with a 64 MiB cache, emptied first; the default limit comes back afterwards."""
    cnncore.set_output_cache_limit(0)
    cnncore.set_output_cache_limit(64 << 20)
    yield 64 << 20
    cnncore.set_output_cache_limit(None)


def handler_name(a):
    return np._core.multiarray.get_handler_name(a)


def test_a_freed_block_is_reused_for_the_same_size_only(limit):
    a = _memory.empty(BLOCK, np.float32)
    address = a.ctypes.data
    del a
    assert cnncore.output_cache_bytes() == 1 << 20
    b = _memory.empty((1024, 256), np.float32)          # same bytes, other shape: reused
    assert b.ctypes.data == address and cnncore.output_cache_bytes() == 0
    c = _memory.empty((257, 1024), np.float32)          # another size: a new block
    assert c.ctypes.data != address


def test_zeros_from_a_reused_block_are_zeros(limit):
    a = _memory.empty(BLOCK, np.float64)
    a.fill(7.0)
    address = a.ctypes.data
    del a
    z = _memory.zeros(BLOCK, np.float64)
    assert z.ctypes.data == address and not z.any()


def test_small_blocks_are_left_to_the_c_library(limit):
    a = _memory.empty(output_cache.MIN_BYTES // 4 - 1, np.float32)
    del a
    assert cnncore.output_cache_bytes() == 0


def test_the_cache_keeps_at_most_the_limit_oldest_first(limit):
    cnncore.set_output_cache_limit(3 << 20)
    blocks = [_memory.empty(BLOCK, np.float32) for _ in range(5)]
    addresses = [b.ctypes.data for b in blocks]
    while blocks:
        del blocks[0]                                   # freed in allocation order
    assert cnncore.output_cache_bytes() == 3 << 20
    again = [_memory.empty(BLOCK, np.float32) for _ in range(3)]
    assert sorted(b.ctypes.data for b in again) == sorted(addresses[2:])   # the newest three
    big = _memory.empty((4 << 20) // 4, np.float32)     # larger than the limit: never kept
    del big
    assert cnncore.output_cache_bytes() == 0


def test_lowering_the_limit_releases_blocks_now(limit):
    blocks = [_memory.empty(BLOCK, np.float32) for _ in range(4)]
    del blocks
    assert cnncore.output_cache_bytes() == 4 << 20
    cnncore.set_output_cache_limit(2 << 20)
    assert cnncore.output_cache_bytes() == 2 << 20
    cnncore.set_output_cache_limit(0)
    assert cnncore.output_cache_bytes() == 0 and cnncore.get_output_cache_limit() == 0


def test_the_number_of_blocks_is_bounded(limit):
    blocks = [_memory.empty(output_cache.MIN_BYTES // 8, np.float64)
              for _ in range(output_cache.SLOTS + 10)]
    del blocks
    assert cnncore.output_cache_bytes() == output_cache.SLOTS * output_cache.MIN_BYTES


@pytest.mark.parametrize("value, error", [(-1, ValueError), (1.5, TypeError), ("64", TypeError),
                                          (True, TypeError)])
def test_a_bad_limit_is_refused_naming_it(value, error, limit):
    with pytest.raises(error, match="nbytes"):
        cnncore.set_output_cache_limit(value)
    assert cnncore.get_output_cache_limit() == 64 << 20


def test_kernel_outputs_come_from_the_cache_and_reuse_never_shows_old_values(limit, rng):
    x = rng.standard_normal((8, 16, 32, 32)).astype(np.float32)
    W = rng.standard_normal((16, 16, 3, 3)).astype(np.float32)
    b = rng.standard_normal(16).astype(np.float32)
    out = K.conv_forward(x, W, b, 1, 1)
    assert handler_name(out) == "cnncore_output_cache"
    assert handler_name(x) != "cnncore_output_cache"
    for _ in range(3):   # each round's outputs land on blocks the previous round filled
        pooled, arg = K.max_pool_forward(x, 2, 2, 2)
        np.testing.assert_array_equal(pooled, R.max_pool_forward(x, 2, 2, 2)[0])
        dx = K.max_pool_backward(pooled, arg, x.shape, 2, 2, 2)
        np.testing.assert_array_equal(dx, R.max_pool_backward(pooled, R.max_pool_forward(
            x, 2, 2, 2)[1], x.shape, 2, 2, 2))
        got = K.conv_backward(out, x, W, 1, 1)
        want = R.conv_backward(out, x, W, 1, 1)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-3, atol=1e-2)
        relu, mask = K.relu_forward(out)
        np.testing.assert_array_equal(relu, np.maximum(out, 0))
        del pooled, arg, dx, got, relu, mask
    assert cnncore.output_cache_bytes() > 0


def test_an_output_can_be_resized_and_freed(limit):
    a = K.im2col(np.ones((4, 8, 16, 16), np.float32), 3, 3, 1, 1)
    a.resize((a.shape[0] * 2, a.shape[1]), refcheck=False)
    a[-1] = 1.0
    del a
    b = _memory.empty(BLOCK, np.float32)
    b.fill(2.0)
    assert (b == 2.0).all()


def test_threads_allocating_and_freeing_at_once_get_their_own_blocks(limit, rng):
    x = rng.standard_normal((4, 8, 64, 64))
    want = R.avg_pool_forward(x, 2, 2, 2)
    errors = []

    def work(seed):
        local = np.random.default_rng(seed)
        for _ in range(50):
            kept = [_memory.empty(BLOCK, np.float32) for _ in range(local.integers(1, 4))]
            for i, k in enumerate(kept):
                k.fill(seed * 10 + i)
            for i, k in enumerate(kept):
                if not (k == seed * 10 + i).all():
                    errors.append("a block was shared between live arrays")
            got = K.avg_pool_forward(x, 2, 2, 2)
            if not np.allclose(got, want):
                errors.append("wrong pooling result")

    threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert cnncore.output_cache_bytes() <= limit


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_can_use_the_cache(limit):
    blocks = [_memory.empty(BLOCK, np.float32) for _ in range(2)]
    del blocks
    code = ("import os, numpy as np, cnncore\nfrom cnncore import kernels as K, _memory\n"
            "_memory.set_output_cache_limit(8 << 20)\n"
            "a = _memory.empty((256, 1024), np.float32); del a\n"
            "pid = os.fork()\n"
            "if pid == 0:\n"
            "    b = _memory.empty((256, 1024), np.float32); b.fill(1); del b\n"
            "    x = np.ones((2, 3, 8, 8)); ok = (K.avg_pool_forward(x, 2, 2) == 1).all()\n"
            "    os._exit(0 if ok else 3)\n"
            "_, status = os.waitpid(pid, 0)\n"
            "raise SystemExit(os.waitstatus_to_exitcode(status))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("env, limit_bytes, warns", [("0", 0, False), ("12", 12 << 20, False),
                                                     ("lots", _memory.DEFAULT_LIMIT_MB << 20, True)])
def test_the_limit_comes_from_the_environment(env, limit_bytes, warns):
    code = ("import warnings, cnncore\nwarnings.simplefilter('always')\n"
            "print(cnncore.get_output_cache_limit())\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "CNNCORE_OUTPUT_CACHE_MB": env}, timeout=120)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) == limit_bytes
    assert ("CNNCORE_OUTPUT_CACHE_MB" in result.stderr) == warns
