"""The Relu layer's kernels, forward then backward, at cnncore.bench.RELU_SHAPES."""


def test_relu_forward_backward(case, impl, run_case):
    run_case(case, impl)
