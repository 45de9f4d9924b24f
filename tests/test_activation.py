"""The compiled ReLU (cnncore.kernels.relu_forward / relu_backward) against its NumPy reference:
exact agreement on hand-picked and hypothesis arrays, special values, layouts, dtypes, threads and
bad input. ReLU only selects, so every comparison is bitwise."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import cnncore
from cnncore import kernels as K
from cnncore import reference as R
from cnncore._ext import activation as _activation

DTYPES = [np.float32, np.float64]
# Sizes around the kernel's parallel chunk (16384 elements) and odd shapes of every rank.
SHAPES = [(), (1,), (7,), (3, 5), (2, 3, 7, 9), (1, 1, 1, 1), (16383,), (16384,), (16385,),
          (5, 16384 + 3), (100, 16, 28, 28), (2, 3, 4, 5, 6)]


def same(a, b):
    """Equal values, NaN in the same places, same dtype and shape."""
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(a, b)


def check_against_reference(x, dout):
    out, mask = K.relu_forward(x)
    ref_out, ref_mask = R.relu_forward(x)
    same(out, ref_out)
    same(mask, ref_mask)
    assert out.flags.c_contiguous and mask.flags.c_contiguous
    dx = K.relu_backward(dout, mask)
    same(dx, R.relu_backward(dout, ref_mask))
    assert dx.flags.c_contiguous
    return out, mask, dx


AVX2 = [True, False] if cnncore.cpu_features()["avx2"] else [False]


@pytest.mark.parametrize("avx2", AVX2, ids=lambda a: "avx2" if a else "baseline")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_relu_matches_reference(shape, dtype, avx2, rng, config):
    config(use_avx2=avx2)
    x = rng.standard_normal(shape).astype(dtype)
    dout = rng.standard_normal(shape).astype(dtype)
    out, mask, dx = check_against_reference(x, dout)
    np.testing.assert_array_equal(mask, x <= 0)
    np.testing.assert_array_equal(out, np.maximum(x, 0))
    np.testing.assert_array_equal(dx, dout * (x > 0))


@pytest.mark.parametrize("dtype", DTYPES)
def test_special_values(dtype):
    x = np.array([np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-45, -1e-45, 3.0, -3.0], dtype)
    dout = np.array([1, 2, 3, 4, 5, 6, 7, 8, np.nan, np.nan], dtype)
    out, mask, dx = check_against_reference(x, dout)
    # NaN is not <= 0, so it passes through; -0.0 <= 0 becomes +0.0; a NaN gradient is zeroed only
    # where the mask is set.
    np.testing.assert_array_equal(mask, [0, 0, 0, 1, 1, 1, 0, 1, 0, 1])
    assert np.isnan(out[:2]).all() and out[2] == np.inf
    assert not np.signbit(out[3:6]).any()
    assert np.isnan(dx[8]) and dx[9] == 0 and dx[3] == 0 and dx[0] == 1


SPECIAL = [np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-45, -1e-45, 3.0, -3.0]


@pytest.mark.skipif(AVX2 == [False], reason="this CPU or compiler has no AVX2")
@given(st.integers(0, 200), st.sampled_from(DTYPES), st.sampled_from([1, 2]),
       st.integers(0, 2**32 - 1))
def test_avx2_forward_equals_the_baseline_loops(n, dtype, threads, seed):
    """The AVX2 forward (float32: 32 elements a step, the mask packed from the comparisons; float64:
    4 a step, the mask bytes from a table; the rest one by one) gives the baseline loops' out and
    mask to the bit: special values anywhere, every entry written, nothing past the arrays."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n).astype(dtype)
    special = rng.random(n) < 0.3
    x[special] = rng.choice(np.array(SPECIAL, dtype), n)[special]
    results = []
    for avx2 in (True, False):
        out, mask = np.full(n + 40, 5, dtype), np.full(n + 40, 7, np.uint8)
        _activation.relu_forward(x, out[:n], mask[:n], threads, avx2)
        assert (out[n:] == 5).all() and (mask[n:] == 7).all()
        results.append((out[:n].view(np.uint8), mask[:n]))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])
    np.testing.assert_array_equal(results[0][1], x <= 0)


@given(data=st.data(), dtype=st.sampled_from(DTYPES))
def test_relu_matches_reference_property(data, dtype):
    shape = data.draw(hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=9))
    values = hnp.from_dtype(np.dtype(dtype), allow_nan=True, allow_infinity=True)
    x = data.draw(hnp.arrays(dtype, shape, elements=values))
    dout = data.draw(hnp.arrays(dtype, shape, elements=values))
    x_before, dout_before = x.copy(), dout.copy()
    check_against_reference(x, dout)
    same(x, x_before)  # inputs untouched
    same(dout, dout_before)


@pytest.mark.parametrize("dtype", DTYPES)
def test_odd_layouts(dtype, rng):
    base = rng.standard_normal((6, 5, 8, 9)).astype(dtype)
    for x in (base[:, :, ::2, 1::3], base.transpose(0, 3, 1, 2), base[::-1], base[..., ::-2],
              np.asfortranarray(base), np.broadcast_to(base[:1], base.shape)):
        dout = rng.standard_normal(x.shape).astype(dtype)[::-1]
        out, mask, _ = check_against_reference(x, dout)
        ro = x.copy()
        ro.flags.writeable = False
        same(K.relu_forward(ro)[0], out)
        # a mask that is itself a strided view
        K.relu_backward(dout, np.asfortranarray(mask))


@pytest.mark.parametrize("dtype", [np.float16, np.int32, np.int64, np.uint8])
def test_other_dtypes_keep_their_dtype(dtype, rng):
    """float16 and integers run in NumPy (through cnncore.reference), so they are checked against
    values written out here, not against the reference they call."""
    x = (rng.standard_normal((3, 4, 5)) * 10).astype(dtype)
    x.flat[:3] = [0, 1, 2]
    dout = (rng.standard_normal((3, 4, 5)) * 10).astype(dtype)
    out, mask = K.relu_forward(x)
    dx = K.relu_backward(dout, mask)
    assert out.dtype == dx.dtype == dtype and mask.dtype == np.bool_
    np.testing.assert_array_equal(mask, [[[v <= 0 for v in row] for row in plane] for plane in x])
    np.testing.assert_array_equal(out, np.where(x > 0, x, np.zeros((), dtype)))
    np.testing.assert_array_equal(dx, np.where(x > 0, dout, np.zeros((), dtype)))
    assert out.flat[0] == 0 and out.flat[2] == 2 and (out >= 0).all()


def test_lists_are_accepted():
    out, mask = K.relu_forward([[1.0, -2.0], [0.0, 3.0]])
    np.testing.assert_array_equal(out, [[1, 0], [0, 3]])
    np.testing.assert_array_equal(K.relu_backward([[5.0, 5.0], [5.0, 5.0]], mask), [[5, 0], [0, 5]])


@pytest.mark.parametrize("dtype", DTYPES)
def test_one_and_two_threads_agree(dtype, rng):
    x = rng.standard_normal((4, 3, 100, 101)).astype(dtype)
    dout = rng.standard_normal(x.shape).astype(dtype)
    results = []
    try:
        for n in (1, 2):
            cnncore.set_num_threads(n)
            out, mask = K.relu_forward(x)
            results.append((out, mask, K.relu_backward(dout, mask)))
    finally:
        cnncore.set_num_threads(None)
    for a, b in zip(*results):
        same(a, b)


@pytest.mark.parametrize("module", [K, R], ids=["kernels", "reference"])
@pytest.mark.parametrize("call, error, message", [
    (lambda M: M.relu_forward(np.zeros(3, complex)), TypeError, "x must hold real numbers"),
    (lambda M: M.relu_forward(np.zeros(3, bool)), TypeError, "x must hold real numbers"),
    (lambda M: M.relu_forward(np.array(["a"])), TypeError, "x must hold real numbers"),
    (lambda M: M.relu_backward(np.zeros(3), np.zeros(3)), TypeError, "mask must be the bool array"),
    (lambda M: M.relu_backward(np.zeros(3), [True, False, True]), TypeError, "mask must be"),
    (lambda M: M.relu_backward(np.zeros(3), None), TypeError, "mask must be"),
    (lambda M: M.relu_backward(np.zeros(3), np.zeros(4, bool)), ValueError, "mask must have shape"),
    (lambda M: M.relu_backward(np.zeros((3, 1)), np.zeros(3, bool)), ValueError, "mask must have"),
    (lambda M: M.relu_backward(np.zeros(3, complex), np.zeros(3, bool)), TypeError,
     "dout must hold real numbers"),
])
def test_bad_input_is_refused(module, call, error, message):
    with pytest.raises(error, match=message):
        call(module)
