"""The boundary: bad input raises ValueError/TypeError naming the argument; odd-but-valid input
(non-contiguous, read-only, empty batch, other dtypes) works and matches the reference."""
import numpy as np
import pytest

from cnncore import kernels as K
from cnncore import reference as R

x4 = np.zeros((2, 3, 8, 8))
W4 = np.zeros((4, 3, 3, 3))
b4 = np.zeros(4)
out4 = np.zeros((2, 4, 6, 6))
pool_out = np.zeros((2, 3, 4, 4))
arg_ok = np.zeros((2, 3, 4, 4), np.intp)

BAD_CALLS = [
    # (function name, args, kwargs, error, message fragment)
    ("im2col", (np.zeros((3, 8, 8)), 3, 3), {}, ValueError, "input_data must be 4-D"),
    ("im2col", (x4, 0, 3), {}, ValueError, "filter_h must be >= 1"),
    ("im2col", (x4, 3, 3), {"stride": 0}, ValueError, "stride must be >= 1"),
    ("im2col", (x4, 3, 3), {"stride": -1}, ValueError, "stride must be >= 1"),
    ("im2col", (x4, 3, 3), {"pad": -1}, ValueError, "pad must be >= 0"),
    ("im2col", (x4, 3, 3), {"stride": 1.5}, TypeError, "stride must be an integer"),
    ("im2col", (x4, 3, 3), {"pad": True}, TypeError, "pad must be an integer"),
    ("im2col", (x4, 11, 3), {"pad": 1}, ValueError, "larger than the padded input"),
    ("im2col", (x4.astype(complex), 3, 3), {}, TypeError, "input_data must hold real numbers"),
    ("im2col", (x4.astype(bool), 3, 3), {}, TypeError, "input_data must hold real numbers"),
    ("im2col", (x4.astype(object), 3, 3), {}, TypeError, "input_data must hold real numbers"),
    ("im2col", (np.zeros((2, 0, 8, 8)), 3, 3), {}, ValueError, "C, H, W >= 1"),
    ("col2im", (np.zeros((72, 26)), (2, 3, 8, 8), 3, 3), {}, ValueError, "col must have shape"),
    ("col2im", (np.zeros((72, 27)), (2, 3, 8), 3, 3), {}, ValueError, "input_shape must have 4"),
    ("col2im", (np.zeros((72, 27)), (2, -3, 8, 8), 3, 3), {}, ValueError, "input_shape"),
    ("col2im", (np.zeros((72, 27)), (2**40, 2**20, 8, 8), 3, 3), {}, ValueError, "too large"),
    ("max_pool_forward", (x4, 2, 2), {"pad": 2}, ValueError, "pad must be smaller"),
    ("max_pool_forward", (x4, 9, 2), {}, ValueError, "pooling window 9x2 is larger"),
    ("max_pool_forward", (x4, 2, 2), {"stride": 0}, ValueError, "stride must be >= 1"),
    ("max_pool_forward", (x4, 2, 0), {}, ValueError, "pool_w must be >= 1"),
    ("avg_pool_forward", (np.zeros((8, 8)), 2, 2), {}, ValueError, "x must be 4-D"),
    ("max_pool_backward", (np.zeros((2, 3, 4, 5)), arg_ok, x4.shape, 2, 2), {}, ValueError,
     "dout must have shape"),
    ("max_pool_backward", (pool_out, arg_ok[:1], x4.shape, 2, 2), {}, ValueError,
     "arg_max must have shape"),
    ("max_pool_backward", (pool_out, arg_ok + 4, x4.shape, 2, 2), {}, ValueError,
     "arg_max values must lie in"),
    ("max_pool_backward", (pool_out, arg_ok - 1, x4.shape, 2, 2), {}, ValueError,
     "arg_max values must lie in"),
    ("max_pool_backward", (pool_out, arg_ok.astype(float), x4.shape, 2, 2), {}, TypeError,
     "arg_max must hold integers"),
    ("max_pool_backward", (np.zeros((2, 3, 5, 5)), np.zeros((2, 3, 5, 5), int), x4.shape, 2, 2),
     {"pad": 1}, ValueError, "arg_max points at padded cells"),
    ("avg_pool_backward", (np.zeros((2, 3, 4, 4)), (2, 3, 8, 8), 2, 2), {"stride": 1}, ValueError,
     "dout must have shape"),
    ("conv_forward", (x4, np.zeros((4, 2, 3, 3)), b4), {}, ValueError, "input channels"),
    ("conv_forward", (x4, np.zeros((4, 3, 3)), b4), {}, ValueError, "W must be 4-D"),
    ("conv_forward", (x4, W4, np.zeros(3)), {}, ValueError, "b must be a scalar or have shape"),
    ("conv_forward", (x4, W4, b4), {"stride": 0}, ValueError, "stride must be >= 1"),
    ("conv_forward", (x4, W4, b4), {"pad": -2}, ValueError, "pad must be >= 0"),
    ("conv_forward", (x4, np.zeros((4, 3, 9, 3)), b4), {}, ValueError, "larger than the padded"),
    ("conv_forward", (x4, W4.astype(complex), b4), {}, TypeError, "W must hold real numbers"),
    ("conv_forward", ("abc", W4, b4), {}, TypeError, "x must hold real numbers"),
    ("conv_backward", (np.zeros((2, 4, 5, 6)), x4, W4), {}, ValueError, "dout must have shape"),
    ("conv_bias_relu_backward", (out4, x4, W4, None), {}, TypeError, "out must be"),
    ("conv_bias_relu_backward", (out4, x4, W4, out4[:, :2]), {}, ValueError, "out must have shape"),
    ("matmul", (np.zeros((3, 4)), np.zeros((5, 2))), {}, ValueError, "a and b do not chain"),
    ("matmul", (np.zeros(4), np.zeros((4, 2))), {}, ValueError, "a must be 2-D"),
    ("matmul", (np.zeros((3, 4)), np.zeros((4, 2, 1))), {}, ValueError, "b must be 2-D"),
    ("matmul", (np.zeros((3, 4), complex), np.zeros((4, 2))), {}, TypeError,
     "a must hold real numbers"),
]


@pytest.mark.parametrize("module", [K, R], ids=["kernels", "reference"])
@pytest.mark.parametrize("name,args,kwargs,error,match", BAD_CALLS,
                         ids=[f"{c[0]}-{c[4]}" for c in BAD_CALLS])
def test_bad_input_raises_clear_error(module, name, args, kwargs, error, match):
    with pytest.raises(error, match=match):
        getattr(module, name)(*args, **kwargs)


@pytest.mark.parametrize("dtype,expected", [
    (np.float16, np.float64), (np.int32, np.float64), (np.uint8, np.float64),
    (np.float32, np.float32), (np.float64, np.float64),
])
def test_dtype_rule(dtype, expected, rng):
    x = (rng.standard_normal((2, 3, 6, 6)) * 10).astype(dtype)
    col = K.im2col(x, 3, 3)
    assert col.dtype == expected
    np.testing.assert_array_equal(col, R.im2col(x.astype(np.float64), 3, 3).astype(expected))
    assert K.max_pool_forward(x, 2, 2)[0].dtype == expected
    assert K.avg_pool_forward(x, 2, 2).dtype == expected
    assert K.conv_forward(x, np.ones((2, 3, 3, 3), np.float32), 0).dtype == expected


def test_conv_mixed_dtypes_compute_in_float64(rng):
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)   # MNIST-style float32 images
    Wt = rng.standard_normal((4, 3, 3, 3))                      # textbook float64 weights
    out = K.conv_forward(x, Wt, np.zeros(4))
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, R.conv_forward(x.astype(float), Wt, np.zeros(4)), rtol=1e-12)
    dx, dW, db = K.conv_backward(out, x, Wt)
    assert dx.dtype == dW.dtype == db.dtype == np.float64


def test_non_contiguous_and_negative_stride_inputs(rng):
    base = rng.standard_normal((3, 5, 12, 14))
    views = [base[:, ::2, ::-1, 1::2], base.transpose(0, 1, 3, 2), base[::-1],
             np.broadcast_to(base[:1], (3, 5, 12, 14))]
    Wt = rng.standard_normal((4, 3, 3, 3))
    for v in views:
        assert not v.flags.c_contiguous
        c = np.ascontiguousarray(v)
        np.testing.assert_array_equal(K.im2col(v, 3, 2, 2, 1), R.im2col(c, 3, 2, 2, 1))
        np.testing.assert_array_equal(K.max_pool_forward(v, 2, 2)[0],
                                      R.max_pool_forward(c, 2, 2)[0])
        if v.shape[1] == 3:
            np.testing.assert_allclose(K.conv_forward(v, Wt, 0, 1, 1),
                                       R.conv_forward(c, Wt, 0, 1, 1), rtol=1e-10)
    # a non-contiguous weight and dout
    x = rng.standard_normal((2, 3, 8, 8))
    Wt_nc = rng.standard_normal((3, 3, 3, 4)).transpose(3, 0, 1, 2)
    out = K.conv_forward(x, Wt_nc, 0)
    np.testing.assert_allclose(out, R.conv_forward(x, np.ascontiguousarray(Wt_nc), 0), rtol=1e-10)
    dout = np.asfortranarray(rng.standard_normal(out.shape))
    for a, b in zip(K.conv_backward(dout, x, Wt_nc), R.conv_backward(dout, x, Wt_nc)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_read_only_inputs(rng):
    x = rng.standard_normal((2, 3, 8, 8))
    Wt = rng.standard_normal((4, 3, 3, 3))
    b = np.zeros(4)
    for a in (x, Wt, b):
        a.flags.writeable = False
    out, arg = K.max_pool_forward(x, 2, 2)
    arg.flags.writeable = False
    out.flags.writeable = False
    K.max_pool_backward(out, arg, x.shape, 2, 2)
    K.avg_pool_backward(out, x.shape, 2, 2)
    col = K.im2col(x, 3, 3)
    col.flags.writeable = False
    K.col2im(col, x.shape, 3, 3)
    conv = K.conv_bias_relu_forward(x, Wt, b)
    conv.flags.writeable = False
    K.conv_bias_relu_backward(conv, x, Wt, conv)


def test_empty_batch(rng):
    x = np.zeros((0, 3, 8, 8))
    Wt = rng.standard_normal((4, 3, 3, 3))
    assert K.im2col(x, 3, 3).shape == (0, 27)
    assert K.col2im(np.zeros((0, 27)), x.shape, 3, 3).shape == x.shape
    out, arg = K.max_pool_forward(x, 2, 2)
    assert out.shape == arg.shape == (0, 3, 4, 4)
    assert K.max_pool_backward(out, arg, x.shape, 2, 2).shape == x.shape
    assert K.avg_pool_backward(out, x.shape, 2, 2).shape == x.shape
    conv = K.conv_forward(x, Wt, 0, 1, 1)
    assert conv.shape == (0, 4, 8, 8)
    dx, dW, db = K.conv_backward(conv, x, Wt, 1, 1)
    assert dx.shape == x.shape and not dW.any() and not db.any()


def test_col2im_accepts_any_shape_with_the_right_size(rng):
    x = rng.standard_normal((2, 3, 6, 6))
    col = K.im2col(x, 3, 3)
    np.testing.assert_array_equal(K.col2im(col.reshape(-1), x.shape, 3, 3),
                                  K.col2im(col, x.shape, 3, 3))


def test_lists_are_accepted(rng):
    x = rng.standard_normal((1, 1, 4, 4))
    np.testing.assert_array_equal(K.im2col(x.tolist(), 2, 2), K.im2col(x, 2, 2))
