"""Max and average pooling, forward and backward, at cnncore.bench.POOL_SHAPES."""


def test_max_pool_forward(case, impl, run_case):
    run_case(case, impl)


def test_max_pool_backward(case, impl, run_case):
    run_case(case, impl)


def test_avg_pool_forward(case, impl, run_case):
    run_case(case, impl)


def test_avg_pool_backward(case, impl, run_case):
    run_case(case, impl)
