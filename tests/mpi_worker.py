"""Run under mpirun by tests/test_distributed.py: ``mpirun -n P python mpi_worker.py CASE OUT MNIST``.

CASE "train": data-parallel runs that the test compares with one-process runs; every rank writes
``<name>_rank<r>.npz`` (parameters, buffers, loss and accuracy lists) and ``threads_rank<r>.json``.
CASE "raise" / "kill": rank 1 fails on its third gradient (an exception, or SIGKILL); the job must end.
"""
import json
import os
import signal
import sys
from pathlib import Path

import numpy as np

from cnncore import get_num_threads
from cnncore.datasets import load_mnist
from cnncore.distributed import (DataParallelNetwork, DistributedTrainer, default_rank_threads,
                                 get_communicator)
from cnncore.layers import Dropout, Pooling, Relu
from cnncore.networks import (BatchNorm2d, Conv2d, DeepConvNet, Linear, MultiLayerNet,
                              MultiLayerNetExtend, Sequential, SimpleConvNet)
from cnncore.optimizer import SGD

# The settings the test repeats in one process: name -> (network factory, Trainer keywords, sizes)
TRAIN_SIZE, TEST_SIZE = 1000, 200
NETWORK_SEED, SAMPLE_SEED = 100, 7


def simple64():
    return SimpleConvNet()


def simple32():
    return SimpleConvNet(dtype=np.float32)


def deep_without_dropout(dtype):
    """DeepConvNet with its Dropout ratios at 0: the masks are then all ones on every rank."""
    net = DeepConvNet(dtype=dtype)
    for layer in net.layers:
        if isinstance(layer, Dropout):
            layer.dropout_ratio = 0.0
    return net


def deep32():
    return deep_without_dropout(np.float32)


def deep64():
    return deep_without_dropout(np.float64)


CASES = {
    # name: (factory, train size, Trainer keywords)
    "simple64": (simple64, TRAIN_SIZE, dict(mini_batch_size=100, exact_epochs=True)),
    "simple32_shuffle": (simple32, TRAIN_SIZE, dict(mini_batch_size=96, shuffle=True)),
    "deep32": (deep32, 500, dict(mini_batch_size=100, exact_epochs=True)),
    "deep64": (deep64, 300, dict(mini_batch_size=100, exact_epochs=True)),
}


def batchnorm_mlp():
    """The textbook's MultiLayerNetExtend with batch norm (statistics per feature)."""
    return MultiLayerNetExtend(784, [40, 30], 10, use_batchnorm=True)


def batchnorm_cnn():
    """A Sequential with per-channel batch norm after a convolution."""
    return Sequential([Conv2d(4, 3), BatchNorm2d(), Relu(), Pooling(2, 2), Linear(10)],
                      input_dim=(1, 28, 28))


def lazy_batchnorm_mlp():
    """batchnorm_mlp with the textbook's lazy running statistics: none until the first forward."""
    net = batchnorm_mlp()
    for key, layer in net.layers.items():
        if key.startswith("BatchNorm"):
            layer.running_mean = layer.running_var = None
    assert not net.buffers()
    return net


BATCHNORM = {"bn_mlp": (batchnorm_mlp, (-1, 784)), "bn_cnn": (batchnorm_cnn, (-1, 1, 28, 28))}


def seeded(factory, rank):
    """A network built from a rank-dependent seed (the broadcast must make them equal), then the
    global RNG left in a rank-dependent state (its broadcast must make the batches equal)."""
    np.random.seed(NETWORK_SEED if rank == 0 else 1000 + rank)
    net = factory()
    np.random.seed(SAMPLE_SEED if rank == 0 else 2000 + rank)
    return net


def save(out, name, rank, net, **lists):
    arrays = {f"param.{k}": v for k, v in net.params.items()}
    arrays.update({f"buffer.{k}": v for k, v in net.buffers().items()})
    arrays.update({k: np.asarray(v, np.float64) for k, v in lists.items()})
    np.savez(out / f"{name}_rank{rank}.npz", **arrays)


def train(out, data):
    comm = get_communicator()
    rank = comm.rank
    (x_train, t_train), (x_test, t_test) = data
    with open(out / f"threads_rank{rank}.json", "w") as f:
        json.dump({"threads": get_num_threads(), "local_size": comm.local_size,
                   "expected": default_rank_threads(comm.local_size), "size": comm.size,
                   "cpu_count": os.cpu_count()}, f)

    for name, (factory, n, kwargs) in CASES.items():
        net = seeded(factory, rank)
        trainer = DistributedTrainer(net, x_train[:n], t_train[:n], x_test[:TEST_SIZE],
                                     t_test[:TEST_SIZE], epochs=1, optimizer="Adam",
                                     optimizer_param={"lr": 0.001}, verbose=False, **kwargs)
        trainer.train()
        save(out, name, rank, net, loss=trainer.train_loss_list, train_acc=trainer.train_acc_list,
             test_acc=trainer.test_acc_list, final=[trainer.final_test_acc])

    # Dropout on: masks differ per rank, but the batches must not (the global RNG stays shared).
    net = seeded(lambda: DeepConvNet(dtype=np.float32), rank)
    trainer = DistributedTrainer(net, x_train[:300], t_train[:300], x_test[:100], t_test[:100],
                                 epochs=1, mini_batch_size=100, verbose=False, exact_epochs=True)
    trainer.train()
    save(out, "deep_dropout", rank, net, rng_state=np.random.get_state()[1])

    # Batch norm: one step from equal parameters, then three more (running statistics in sync).
    for name, (factory, shape) in BATCHNORM.items():
        net = seeded(factory, rank)
        dp = DataParallelNetwork(net)
        x = x_train[:300].reshape(shape).astype(np.float64)
        batch = np.random.choice(300, 120)
        SGD(0.1).update(dp.params, dp.gradient(x[batch], t_train[batch]))
        save(out, f"{name}_one_step", rank, net)
        for _ in range(3):
            batch = np.random.choice(300, 120)
            SGD(0.1).update(dp.params, dp.gradient(x[batch], t_train[batch]))
        save(out, f"{name}_four_steps", rank, net)

    # Fewer samples than ranks: rank 0's shard is empty and its BatchNorm has never run.
    net = seeded(lazy_batchnorm_mlp, rank)
    dp = DataParallelNetwork(net)
    x = x_train[:300].reshape(300, -1).astype(np.float64)
    batch = np.random.choice(300, comm.size - 1)
    SGD(0.1).update(dp.params, dp.gradient(x[batch], t_train[batch]))
    save(out, "bn_tiny_batch", rank, net)


    # A hand-written loop: own RNG for the indices, the shard's gradient, reduce_gradients.
    np.random.seed(NETWORK_SEED if rank == 0 else 1000 + rank)
    net = MultiLayerNet(784, [50], 10, weight_decay_lambda=0.01)
    dp = DataParallelNetwork(net)
    sampler = np.random.RandomState(SAMPLE_SEED)
    optimizer = SGD(0.1)
    losses = []
    for _ in range(5):
        idx = sampler.choice(300, 101)
        lo, hi = dp.local_bounds(len(idx))
        grads = net.gradient(x[idx[lo:hi]], t_train[idx[lo:hi]])
        optimizer.update(net.params, dp.reduce_gradients(grads, hi - lo, len(idx)))
        losses.append(dp.loss(x[idx], t_train[idx]))
    save(out, "hand_loop", rank, net, loss=losses)


class FailingNet(SimpleConvNet):
    """Fails on rank 1's third gradient, by raising or by killing its own process."""

    def __init__(self, how, rank):
        super().__init__()
        self.how, self.rank, self.calls = how, rank, 0

    def gradient(self, x, t):
        self.calls += 1
        if self.rank == 1 and self.calls == 3:
            if self.how == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise RuntimeError("injected failure on rank 1")
        return super().gradient(x, t)


def fail(how, data):
    comm = get_communicator()
    (x_train, t_train), (x_test, t_test) = data
    net = FailingNet(how, comm.rank)
    trainer = DistributedTrainer(net, x_train[:1000], t_train[:1000], x_test[:100], t_test[:100],
                                 epochs=2, mini_batch_size=100, verbose=False)
    trainer.train()   # rank 0 waits in the all-reduce of step 3 until the job is ended


if __name__ == "__main__":
    case, out, mnist = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    data = load_mnist(flatten=False, path=mnist)
    if case == "train":
        train(out, data)
    else:
        fail(case, data)
