"""Shared fixtures. The tests import the installed cnncore (``--import-mode=importlib``, no
tests/__init__.py), so they check the wheel, not the source tree."""
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "default", deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "thorough", deadline=None, max_examples=1000, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

# Relative tolerances per dtype for kernel-vs-reference comparisons (sums in a different order).
RTOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}
ATOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}


def mnist_path():
    """The real MNIST idx .gz files: $CNNCORE_TEST_DATA, else ../shared/data/mnist beside the repo."""
    env = os.environ.get("CNNCORE_TEST_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


@pytest.fixture(scope="session")
def mnist_dir():
    """The MNIST directory. Missing files fail the run under .ci/run (CNNCORE_REQUIRE_DATA=1) and skip
    the tests that need them elsewhere (e.g. a wheel tested on a build farm without the data)."""
    path = mnist_path()
    if not (path / "train-images-idx3-ubyte.gz").exists():
        message = f"MNIST idx files not found in {path} (set CNNCORE_TEST_DATA)"
        if os.environ.get("CNNCORE_REQUIRE_DATA") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session", autouse=True)
def run_outside_the_checkout(tmp_path_factory):
    """Run every test, and every subprocess a test starts, from an empty directory: a child started
    with ``python -c`` or ``-m`` puts its working directory first on sys.path, and the checkout's
    ``cnncore/`` (no compiled modules) would shadow the installed package."""
    old = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))
    yield
    os.chdir(old)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture
def config():
    """set_config for this test only: the settings it found are put back afterwards."""
    import cnncore

    saved = cnncore.get_config()
    yield cnncore.set_config
    cnncore.set_config(**saved)
