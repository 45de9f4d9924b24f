"""im2col and col2im at the convolution shapes of cnncore.bench.CONV_SHAPES."""


def test_im2col(case, impl, run_case):
    run_case(case, impl)


def test_col2im(case, impl, run_case):
    run_case(case, impl)
