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
    """The real MNIST idx .gz files: $CNNCORE_TEST_DATA, else ../shared/data/mnist beside the repo,
    else cnncore's own data directory (where load_mnist() downloads them: release wheels' tests)."""
    env = os.environ.get("CNNCORE_TEST_DATA")
    if env:
        return Path(env)
    shared = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
    if shared.exists():
        return shared
    from cnncore.datasets import default_data_dir

    return default_data_dir()


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


@pytest.fixture(scope="session")
def torch():
    """PyTorch, for the tests that compare with it: they skip without it, except under .ci/run
    (CNNCORE_REQUIRE_EXPORT=1, which installs it), where a missing torch fails them."""
    if os.environ.get("CNNCORE_REQUIRE_EXPORT") == "1":
        import torch

        return torch
    return pytest.importorskip("torch")


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


# ---------------------------------------------------------------- synthetic course datasets (issue 27)

def write_idx_gz(path, array, magic):
    """An idx .gz file in MNIST's format (big-endian header: magic, then each dimension)."""
    import gzip

    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + np.ascontiguousarray(array, np.uint8).tobytes())


def write_fashion_mnist(directory, n_train=60, n_test=20, seed=0):
    """The four Fashion-MNIST files (MNIST's names and format) with n_train / n_test samples;
    returns the arrays written."""
    gen = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = gen.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        write_idx_gz(directory / f"{prefix}-images-idx3-ubyte.gz", images, 2051)
        write_idx_gz(directory / f"{prefix}-labels-idx1-ubyte.gz", labels, 2049)
        arrays[prefix] = (images, labels)
    return arrays


def write_cifar10(directory, per_batch=20, seed=0, learnable=False, zeros=False):
    """CIFAR-10's binary layout: cifar-10-batches-bin/data_batch_1..5.bin and test_batch.bin, each
    per_batch records of 1 label byte + 3072 pixel bytes, and batches.meta.txt. learnable=True makes
    the class visible in the pixels (the red plane's mean grows with the label); zeros=True writes
    black images (they compress to almost nothing)."""
    gen = np.random.default_rng(seed)
    place = directory / "cifar-10-batches-bin"
    place.mkdir(parents=True, exist_ok=True)
    batches = {}
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        labels = gen.integers(0, 10, per_batch, dtype=np.uint8)
        images = gen.integers(0, 256, (per_batch, 3, 32, 32), dtype=np.uint8)
        if zeros:
            images[...] = 0
        if learnable:
            images[:, 0] = (labels[:, None, None] * 25 + gen.integers(0, 10, (per_batch, 32, 32)))
        records = np.concatenate([labels[:, None], images.reshape(per_batch, -1)], axis=1)
        (place / name).write_bytes(records.astype(np.uint8).tobytes())
        batches[name] = (images, labels)
    (place / "batches.meta.txt").write_text(
        "airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n\n")
    return batches


def _names_argument(message, name):
    """Whether message names name: an argument (x, b, dout) as a whole word, so that NumPy's
    "could not broadcast ..." does not count for b; a phrase anywhere."""
    import re

    if not name.isidentifier():
        return name in message
    return re.search(rf"(?<![\w.]){re.escape(name)}(?![\w(])", message) is not None


@pytest.fixture(scope="session")
def names_argument():
    """_names_argument, for the checks that an error names its argument (session-scoped: usable
    in hypothesis tests)."""
    return _names_argument


@pytest.fixture
def course_data():
    """The synthetic-file writers above, for tests (conftest is not importable in importlib mode)."""
    import types

    return types.SimpleNamespace(idx_gz=write_idx_gz, fashion_mnist=write_fashion_mnist,
                                 cifar10=write_cifar10)


@pytest.fixture
def config():
    """set_config for this test only: the settings it found are put back afterwards."""
    import cnncore

    saved = cnncore.get_config()
    yield cnncore.set_config
    cnncore.set_config(**saved)


@pytest.fixture
def at_thread_counts():
    """run(compute) -> [compute() on 1, 2 and 3 threads]; the thread count is put back after."""
    import cnncore

    def run(compute, counts=(1, 2, 3)):
        previous = cnncore.get_num_threads()
        try:
            results = []
            for n in counts:
                cnncore.set_num_threads(n)
                results.append(compute())
            return results
        finally:
            cnncore.set_num_threads(previous)
    return run
