"""Whole networks: one training step (gradient + Adam update) at batch 100, and inference at batch 100
and 1000, for SimpleConvNet and DeepConvNet; ``numpy`` is the same network with every layer on
cnncore.reference (cnncore.bench.use_reference)."""


def test_train_step(case, impl, run_case):
    run_case(case, impl)


def test_predict(case, impl, run_case):
    run_case(case, impl)
