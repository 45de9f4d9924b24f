"""cnncore's kernels and networks against the NumPy references, with pytest-benchmark.

    pytest benchmarks/                 # every shape (under 15 minutes on this 2-core machine)
    pytest benchmarks/ --quick         # the small shapes with short timings (under 2 minutes)
    pytest benchmarks/bench_pooling.py -k max_pool

Shapes, inputs and the agreement check come from cnncore.bench, which `python -m cnncore bench` runs
too. A test function ``test_<group>`` is parametrised over that group's cases (shape x dtype) and the
implementations ``cython`` (cnncore.kernels) and ``numpy`` (cnncore.reference); each case is checked
(cnncore == reference, else AgreementError) before it is timed. Tables are grouped by kernel (the
benchmark group) and case.
"""
import functools
import time

import pytest

from cnncore import bench

BUDGET_SECONDS = {False: 0.5, True: 0.15}   # timing per benchmark, full / --quick
MIN_SAMPLE_SECONDS = {False: 0.01, True: 0.002}
WARMUP_SECONDS = {False: bench.WARMUP_SECONDS, True: bench.WARMUP_SECONDS / 4}


def pytest_addoption(parser):
    parser.addoption("--quick", action="store_true", default=False,
                     help="cnncore benchmarks: the small shapes only, with short timings")


def pytest_generate_tests(metafunc):
    if "case" not in metafunc.fixturenames:
        return
    group = metafunc.function.__name__[len("test_"):]
    pairs = [(case, impl)
             for case in bench.cases(quick=metafunc.config.getoption("quick"), groups=[group])
             for impl in ("cython", "numpy")]
    metafunc.parametrize("case, impl", pairs,
                         ids=[f"{c.shape.name}-{c.dtype.name}-{impl}" for c, impl in pairs])


@functools.lru_cache(maxsize=1)   # cases arrive in order, each with its two implementations
def _checked(case):
    prepared = case.prepare()
    prepared.check()
    return prepared


@pytest.fixture
def run_case(benchmark, request):
    """run_case(case, impl): check the case once, then time impl on its inputs."""
    quick = request.config.getoption("quick")

    def run(case, impl):
        prepared = _checked(case)
        rounds, iterations = bench.plan(prepared.seconds[impl], BUDGET_SECONDS[quick],
                                        MIN_SAMPLE_SECONDS[quick])
        benchmark.group = case.group.name
        benchmark.extra_info.update(shape=case.shape.label, dtype=case.dtype.name, impl=impl)
        runner = prepared.runner(impl)
        time.sleep(bench.SETTLE_SECONDS)   # let the previous benchmark's thread pools go idle
        if prepared.seconds[impl] < 0.2:   # a longer call is its own warm-up
            bench.warm_up(runner, WARMUP_SECONDS[quick])
        benchmark.pedantic(runner, rounds=rounds, iterations=iterations)
    return run
