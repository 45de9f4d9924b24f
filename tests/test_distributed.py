"""cnncore.distributed: data-parallel training over MPI.

The MPI tests start ``mpirun -n 2`` and ``-n 3`` (tests/mpi_worker.py) and compare what the ranks
trained with the same training in this one process: parameters equal to 1e-10 (float64) relative to
each array's largest entry, identical bits on every rank, the same loss and accuracy lists. They need
mpi4py and an MPI launcher (``pip install cnncore[mpi]``); without them they skip, except under
.ci/run (CNNCORE_REQUIRE_MPI=1), where that fails.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from cnncore import distributed
from cnncore.datasets import load_mnist
from cnncore.distributed import (DataParallelNetwork, DistributedTrainer, SerialCommunicator,
                                 get_communicator, launched_by_mpi, shard_bounds)
from cnncore.networks import MultiLayerNet, SimpleConvNet
from cnncore.optimizer import SGD
from cnncore.trainer import Trainer

WORKER = Path(__file__).with_name("mpi_worker.py")
sys.path.insert(0, str(WORKER.parent))
import mpi_worker as worker  # noqa: E402  (the cases, seeds and networks both sides use)

sys.path.remove(str(WORKER.parent))

TIMEOUT = 600   # a hung job fails the test instead of hanging CI


def relative_error(a, b):
    """max |a - b| over max |b|: the error relative to the array's scale (biases start at 0)."""
    scale = np.abs(b).max()
    return np.abs(a - b).max() / (scale if scale else 1.0)


# ------------------------------------------------------------------------------ without MPI

def test_shard_bounds_cover_every_sample_once():
    for n in range(0, 40):
        for size in range(1, 6):
            bounds = [shard_bounds(n, r, size) for r in range(size)]
            assert bounds[0][0] == 0 and bounds[-1][1] == n
            assert all(bounds[r][1] == bounds[r + 1][0] for r in range(size - 1))
            sizes = [hi - lo for lo, hi in bounds]
            assert max(sizes) - min(sizes) <= 1


def test_launcher_detection(monkeypatch):
    for name in distributed._LAUNCHER_VARIABLES + ("CNNCORE_MPI",):
        monkeypatch.delenv(name, raising=False)
    assert not launched_by_mpi()
    assert isinstance(get_communicator(), SerialCommunicator)
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
    assert launched_by_mpi()
    monkeypatch.setenv("CNNCORE_MPI", "0")
    assert not launched_by_mpi()


def test_missing_mpi4py_names_the_extra(monkeypatch):
    monkeypatch.setattr(distributed, "_world", None)
    monkeypatch.setenv("CNNCORE_MPI", "1")
    monkeypatch.setitem(sys.modules, "mpi4py", None)   # import mpi4py now raises ImportError
    with pytest.raises(ImportError, match=r"cnncore\[mpi\]"):
        get_communicator()


def test_single_process_never_imports_mpi4py(mnist_dir, tmp_path):
    code = textwrap.dedent(f"""
        import sys
        from cnncore.cli import train_main
        from cnncore.distributed import DistributedTrainer
        assert train_main(["--data", {str(mnist_dir)!r}, "--train-size", "200", "--test-size",
                           "100", "--epochs", "1", "--no-plot", "--out", {str(tmp_path / "p.npz")!r}]) == 0
        assert "mpi4py" not in sys.modules, "a single-process run imported mpi4py"
    """)
    env = {k: v for k, v in os.environ.items() if k not in distributed._LAUNCHER_VARIABLES}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=TIMEOUT,
                   stdout=subprocess.DEVNULL)


def mnist_data(mnist_dir):
    return load_mnist(flatten=False, path=mnist_dir)


def test_one_process_distributed_trainer_is_the_trainer(mnist_dir):
    """With one process the DistributedTrainer trains exactly as the Trainer (same bits)."""
    (x, t), (xt, tt) = mnist_data(mnist_dir)
    runs = []
    for cls in (Trainer, DistributedTrainer):
        np.random.seed(3)
        net = SimpleConvNet()
        np.random.seed(4)
        trainer = cls(net, x[:300], t[:300], xt[:100], tt[:100], epochs=1, mini_batch_size=50,
                      optimizer="Adam", verbose=False, exact_epochs=True)
        trainer.train()
        runs.append((net.params, trainer.train_loss_list, trainer.test_acc_list,
                     trainer.final_test_acc))
    (p1, *rest1), (p2, *rest2) = runs
    for key in p1:
        np.testing.assert_array_equal(p1[key], p2[key])
    assert rest1 == rest2


def test_reduce_gradients_weights_the_shard():
    net = MultiLayerNet(4, [3], 2)
    dp = DataParallelNetwork(net, SerialCommunicator())
    grads = {key: np.full_like(value, 2.0) for key, value in net.params.items()}
    reduced = dp.reduce_gradients(grads, 25, 100)
    assert set(reduced) == set(net.params)
    for value in reduced.values():
        np.testing.assert_array_equal(value, 0.5)
    with pytest.raises(ValueError, match="global_n"):
        dp.reduce_gradients(grads, 0, 0)
    with pytest.raises(ValueError, match="local_n"):
        dp.reduce_gradients(grads, 101, 100)
    with pytest.raises(ValueError, match=r"missing \['W1'\]"):
        dp.reduce_gradients({k: v for k, v in grads.items() if k != "W1"}, 25, 100)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="rank"):
        shard_bounds(10, 3, 3)
    with pytest.raises(ValueError, match="n must be >= 0"):
        shard_bounds(-1, 0, 2)
    with pytest.raises(TypeError, match="comm must be an mpi4py intracommunicator"):
        get_communicator("COMM_WORLD")
    with pytest.raises(TypeError, match="network must have a params dict"):
        DataParallelNetwork(object(), SerialCommunicator())


def test_hostile_arguments_of_the_helpers_are_refused():
    """Found by fuzzing the argument checks: local_size 0 or -3 gave a thread count, '2' a bare
    TypeError from a comparison; the one-process communicator took a list, a read-only or a strided
    buffer and any root, all of which MPI refuses (a script that ran alone failed under mpirun)."""
    for bad, error in ((0, ValueError), (-3, ValueError), ("2", TypeError), (2.0, TypeError)):
        with pytest.raises(error, match="local_size"):
            distributed.default_rank_threads(bad)
    assert distributed.default_rank_threads(1) >= 1
    comm = SerialCommunicator()
    read_only = np.ones(3)
    read_only.flags.writeable = False
    for buf in ([1.0, 2.0], read_only, np.ones(6)[::2], np.float64(1)):
        with pytest.raises(TypeError, match="buf must be a C-contiguous writeable numpy array"):
            comm.allreduce_sum(buf)
        with pytest.raises(TypeError, match="buf must be"):
            comm.bcast_array(buf)
    for root, error in ((1, ValueError), (-1, ValueError), (0.0, TypeError), (None, TypeError)):
        with pytest.raises(error, match="root"):
            comm.bcast_array(np.ones(3), root=root)
        with pytest.raises(error, match="root"):
            comm.bcast_object({}, root=root)
    buf = np.ones(3)
    assert comm.allreduce_sum(buf) is buf and comm.bcast_array(buf, root=0) is buf


def test_distributed_accuracy_refuses_a_bad_batch_size():
    """With more than one rank, accuracy() replaced a bad batch_size (0, 2.5, '10') by 100 to split
    the batches, unlike the network's accuracy, which refuses it."""
    class TwoRanks(SerialCommunicator):   # rank 0 of two, the other rank's network the same
        size = 2

        def allgather_object(self, obj):
            return [obj, obj]

    dp = DataParallelNetwork(MultiLayerNet(4, [3], 2), TwoRanks())
    x, t = np.ones((10, 4)), np.zeros(10, int)
    for bad in (0, -5, 2.5, "10", True):
        with pytest.raises((ValueError, TypeError), match="batch_size"):
            dp.accuracy(x, t, batch_size=bad)
        with pytest.raises((ValueError, TypeError), match="batch_size"):
            dp.network.accuracy(x, t, batch_size=bad)


def test_networks_that_differ_are_refused():
    class TwoRanks(SerialCommunicator):   # what allgather returns when rank 1 built another network
        def allgather_object(self, obj):
            other = MultiLayerNet(4, [5], 2).params
            return [obj, (distributed._signature(other), [])]

    with pytest.raises(ValueError, match="rank 1 differs from rank 0"):
        DataParallelNetwork(MultiLayerNet(4, [3], 2), TwoRanks())


# ------------------------------------------------------------------------------ under mpirun

def mpirun_command():
    """[mpirun, options...] or None when no MPI launcher/mpi4py is installed."""
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return None
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    launcher = shutil.which("mpirun", path=path) or shutil.which("mpiexec", path=path)
    if launcher is None:
        return None
    version = subprocess.run([launcher, "--version"], capture_output=True, text=True).stdout
    # Open MPI refuses more ranks than cores (this machine may have 2) unless told to oversubscribe.
    return [launcher, "--oversubscribe"] if "Open MPI" in version else [launcher]


@pytest.fixture(scope="module")
def mpirun():
    command = mpirun_command()
    if command is None:
        message = "mpi4py and an MPI launcher are needed (pip install 'cnncore[mpi]')"
        if os.environ.get("CNNCORE_REQUIRE_MPI") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return command


def mpi_env():
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    # Open MPI refuses to run as root (CI and containers are root) unless both are set.
    env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    return env


def run_mpi(mpirun, args, timeout=TIMEOUT):
    """Run mpirun ... in its own process group; return (returncode, seconds, stdout, stderr)."""
    start = time.monotonic()
    proc = subprocess.Popen(mpirun + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=mpi_env(), start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"mpirun {' '.join(args)} still running after {timeout} s\n{out}\n{err}")
    return proc.returncode, time.monotonic() - start, out, err


@pytest.fixture(scope="module", params=[2, 3], ids=["np2", "np3"])
def mpi_runs(request, mpirun, mnist_dir, tmp_path_factory):
    """The worker's "train" case under mpirun -n P: (P, directory of its files)."""
    size = request.param
    out = tmp_path_factory.mktemp(f"mpi{size}")
    code, _, stdout, stderr = run_mpi(mpirun, ["-n", str(size), sys.executable, str(WORKER),
                                               "train", str(out), str(mnist_dir)])
    assert code == 0, f"mpirun -n {size} failed:\n{stdout}\n{stderr}"
    return size, out


def rank_files(out, name, size):
    files = [dict(np.load(out / f"{name}_rank{r}.npz")) for r in range(size)]
    for r, other in enumerate(files[1:], 1):   # every rank holds the same bits
        assert other.keys() == files[0].keys()
        for key in files[0]:
            np.testing.assert_array_equal(other[key], files[0][key], err_msg=f"rank {r} {key}")
    return files[0]


@pytest.fixture(scope="module")
def mnist(mnist_dir):
    return mnist_data(mnist_dir)


def one_process_trainer(name, mnist, cls=Trainer, **extra):
    """The worker's case `name` trained in this process (seeded as the worker's rank 0)."""
    factory, n, kwargs = worker.CASES[name]
    (x, t), (xt, tt) = mnist
    np.random.seed(worker.NETWORK_SEED)
    net = factory()
    np.random.seed(worker.SAMPLE_SEED)
    trainer = cls(net, x[:n], t[:n], xt[:worker.TEST_SIZE], tt[:worker.TEST_SIZE], epochs=1,
                  optimizer="Adam", optimizer_param={"lr": 0.001}, verbose=False, **kwargs, **extra)
    trainer.train()
    return net, trainer


@pytest.mark.parametrize("name, tol", [("simple64", 1e-10), ("simple32_shuffle", 1e-4)])
def test_mpi_training_equals_one_process_trainer(mpi_runs, mnist, name, tol):
    """SimpleConvNet, one epoch on 1000 MNIST images, against the textbook Trainer in one process:
    batches drawn with replacement (batch 100: 50+50, 33+33+34) and shuffled epochs (batch 96, the
    last of 40), float64 to 1e-10 and float32 to float tolerance."""
    size, out = mpi_runs
    got = rank_files(out, name, size)
    net, trainer = one_process_trainer(name, mnist)
    for key, value in net.params.items():
        assert relative_error(got[f"param.{key}"], value) <= tol, key
    np.testing.assert_allclose(got["loss"], np.asarray(trainer.train_loss_list, np.float64),
                               rtol=100 * tol)
    assert list(got["test_acc"]) == [float(a) for a in trainer.test_acc_list]
    assert list(got["train_acc"]) == [float(a) for a in trainer.train_acc_list]
    assert got["final"][0] == float(trainer.final_test_acc)


@pytest.mark.parametrize("name, tol", [("deep32", 1e-4), ("deep64", 1e-10)])
def test_mpi_deepconvnet_equals_one_process(mpi_runs, mnist, name, tol):
    """DeepConvNet (Dropout at 0) against the one-process DistributedTrainer (the Trainer draws its
    batches from the RNG Dropout also draws from, so it is not the reference here): float32 500
    images, float64 300."""
    size, out = mpi_runs
    got = rank_files(out, name, size)
    net, trainer = one_process_trainer(name, mnist, DistributedTrainer, comm=SerialCommunicator())
    for key, value in net.params.items():
        assert relative_error(got[f"param.{key}"], value) <= tol, key
    np.testing.assert_allclose(got["loss"], np.asarray(trainer.train_loss_list, np.float64),
                               rtol=tol)
    assert list(got["test_acc"]) == [float(a) for a in trainer.test_acc_list]


def test_mpi_dropout_leaves_batch_sampling_in_step(mpi_runs):
    """DeepConvNet with its Dropout on, shards of 50/50 or 33/33/34: each rank draws masks for its
    own shard, from its own stream, so the global RNG that picks the batches ends in the same state
    on every rank (and so do the parameters)."""
    size, out = mpi_runs
    got = rank_files(out, "deep_dropout", size)   # checks every rank's arrays, rng_state included
    assert got["rng_state"].shape == (624,)


@pytest.mark.parametrize("name", sorted(worker.BATCHNORM))
def test_mpi_batchnorm_running_statistics_stay_in_sync(mpi_runs, mnist, name):
    """MultiLayerNetExtend (per-feature) and a Sequential with BatchNorm2d (per-channel): the first
    BatchNorm's running mean after one step is the one-process one (batch-weighted average of the
    shards' means; later layers see inputs normalised per shard, the variances lack the spread of
    the shard means); after four steps every rank still holds the same statistics and parameters."""
    size, out = mpi_runs
    one = rank_files(out, f"{name}_one_step", size)
    four = rank_files(out, f"{name}_four_steps", size)
    factory, shape = worker.BATCHNORM[name]
    (x, t), _ = mnist
    np.random.seed(worker.NETWORK_SEED)
    net = factory()
    np.random.seed(worker.SAMPLE_SEED)
    xs = x[:300].reshape(shape).astype(np.float64)
    batch = np.random.choice(300, 120)
    SGD(0.1).update(net.params, net.gradient(xs[batch], t[batch]))
    buffers = net.buffers()
    first = next(iter(buffers)).split(".")[0]
    assert {k for k in one if k.startswith("buffer.")} == {f"buffer.{k}" for k in buffers}
    assert relative_error(one[f"buffer.{first}.running_mean"],
                          buffers[f"{first}.running_mean"]) <= 1e-12
    assert 0 < relative_error(one[f"buffer.{first}.running_var"],
                              buffers[f"{first}.running_var"]) < 0.5
    assert not np.array_equal(four[f"buffer.{first}.running_mean"], one[f"buffer.{first}.running_mean"])


def test_mpi_batch_smaller_than_ranks(mpi_runs, mnist):
    """A global batch of P - 1 samples: rank 0 has none, and its BatchNorm layers, whose running
    statistics appear at the first forward, have never run; it contributes nothing and still ends
    with the one-process parameters and statistics."""
    size, out = mpi_runs
    got = rank_files(out, "bn_tiny_batch", size)
    (x, t), _ = mnist
    np.random.seed(worker.NETWORK_SEED)
    net = worker.lazy_batchnorm_mlp()
    np.random.seed(worker.SAMPLE_SEED)
    xs = x[:300].reshape(300, -1).astype(np.float64)
    batch = np.random.choice(300, size - 1)
    SGD(0.1).update(net.params, net.gradient(xs[batch], t[batch]))
    if size == 2:   # one sample on one rank: exactly the one-process step
        for key, value in {**net.params, **net.buffers()}.items():
            prefix = "param" if key in net.params else "buffer"
            assert relative_error(got[f"{prefix}.{key}"], value) <= 1e-12, key
    assert relative_error(got["buffer.BatchNorm1.running_mean"],
                          net.buffers()["BatchNorm1.running_mean"]) <= 1e-12


def test_mpi_hand_written_loop(mpi_runs, mnist):
    size, out = mpi_runs
    got = rank_files(out, "hand_loop", size)
    (x, t), _ = mnist
    xs = x[:300].reshape(300, -1).astype(np.float64)
    np.random.seed(worker.NETWORK_SEED)
    net = MultiLayerNet(784, [50], 10, weight_decay_lambda=0.01)
    sampler, optimizer, losses = np.random.RandomState(worker.SAMPLE_SEED), SGD(0.1), []
    for _ in range(5):
        idx = sampler.choice(300, 101)
        optimizer.update(net.params, net.gradient(xs[idx], t[idx]))
        losses.append(net.loss(xs[idx], t[idx]))
    for key, value in net.params.items():
        assert relative_error(got[f"param.{key}"], value) <= 1e-10, key
    np.testing.assert_allclose(got["loss"], losses, rtol=1e-10)


def test_mpi_ranks_share_the_cores(mpi_runs):
    """Without OMP_NUM_THREADS each rank takes cores // ranks-on-this-node threads (at least 1)."""
    size, out = mpi_runs
    for r in range(size):
        report = json.loads((out / f"threads_rank{r}.json").read_text())
        assert report["size"] == size and report["local_size"] == size
        assert report["threads"] == report["expected"]
        assert report["threads"] == max(1, min(report["threads"], report["cpu_count"] // size))


def test_mpi_cli_saves_the_one_process_file(mpirun, mnist_dir, tmp_path):
    """mpirun -n 2 cnncore train writes the file one process writes (float64, to 1e-10); only rank 0
    prints."""
    args = ["-m", "cnncore", "train", "--data", str(mnist_dir), "--train-size", "400",
            "--test-size", "100", "--epochs", "1", "--seed", "5", "--no-plot"]
    code, _, stdout, stderr = run_mpi(mpirun, ["-n", "2", sys.executable, *args, "--out",
                                               str(tmp_path / "mpi.npz")])
    assert code == 0, stdout + stderr
    assert stdout.count("parameters saved to") == 1 and "data-parallel: 2 ranks" in stdout
    subprocess.run([sys.executable, *args, "--out", str(tmp_path / "one.npz")], check=True,
                   stdout=subprocess.DEVNULL, timeout=TIMEOUT,
                   env={k: v for k, v in os.environ.items()
                        if k not in distributed._LAUNCHER_VARIABLES})
    mpi, one = np.load(tmp_path / "mpi.npz"), np.load(tmp_path / "one.npz")
    assert sorted(mpi.files) == sorted(one.files)
    for key in one.files:
        assert relative_error(mpi[key], one[key]) <= 1e-10, key


# ------------------------------------------------------------------------------ failures end the job

@pytest.mark.parametrize("how", ["raise", "kill"])
def test_mpi_failing_rank_ends_the_job(mpirun, mnist_dir, tmp_path, how):
    """Rank 1 raises (or is killed) in its third step while rank 0 waits in the all-reduce: the
    job ends with an error, and a raised error is shown with the rank that failed."""
    code, seconds, stdout, stderr = run_mpi(
        mpirun, ["-n", "2", sys.executable, str(WORKER), how, str(tmp_path), str(mnist_dir)],
        timeout=300)
    assert code != 0, stdout + stderr
    if how == "raise":
        assert "RuntimeError: injected failure on rank 1" in stderr
        assert re.search(r"rank 1 of 2 failed .*aborting", stderr)


def test_mpi_bad_data_path_on_one_rank_ends_the_job(mpirun, mnist_dir, tmp_path):
    """One rank of `cnncore train` cannot read its data: the error is shown and the job ends."""
    common = [sys.executable, "-m", "cnncore", "train", "--train-size", "500", "--epochs", "2",
              "--no-plot", "--out", str(tmp_path / "p.npz")]
    (tmp_path / "a_file").write_text("not a directory")   # nothing can be downloaded into it
    code, _, stdout, stderr = run_mpi(
        mpirun, ["-n", "1", *common, "--data", str(mnist_dir), ":",
                 "-n", "1", *common, "--data", str(tmp_path / "a_file" / "mnist")], timeout=300)
    assert code != 0
    assert "error:" in stderr and "rank 1 of 2 exited with 1" in stderr


def test_mpi_cli_with_validation_augmentation_and_callbacks(mpirun, mnist_dir, tmp_path):
    """The course options under mpirun: the ranks split, augment and stop alike (no seed given:
    rank 0's seed is shared), only rank 0 writes the checkpoint, and the job ends cleanly."""
    args = ["-m", "cnncore", "train", "--data", str(mnist_dir), "--train-size", "300",
            "--test-size", "100", "--epochs", "2", "--val-split", "0.2", "--augment",
            "--lr-schedule", "cosine", "--early-stop", "1", "--no-plot",
            "--checkpoint", str(tmp_path / "best.npz"), "--out", str(tmp_path / "mpi.npz")]
    code, _, stdout, stderr = run_mpi(mpirun, ["-n", "2", sys.executable, *args])
    assert code == 0, stdout + stderr
    assert stdout.count("parameters saved to") == 1 and "val acc" in stdout
    assert (tmp_path / "best.npz").exists() and (tmp_path / "mpi.npz").exists()
