"""Convolution forward, forward + backward, and the fused conv + bias + ReLU forward, at
cnncore.bench.CONV_SHAPES."""


def test_conv_forward(case, impl, run_case):
    run_case(case, impl)


def test_conv_forward_backward(case, impl, run_case):
    run_case(case, impl)


def test_conv_bias_relu_forward(case, impl, run_case):
    run_case(case, impl)
