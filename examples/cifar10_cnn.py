"""The lecture's CIFAR-10 CNN: 3->32->32, pool, 32->64->64, pool, fc512, dropout, fc10.

    python examples/cifar10_cnn.py        # on random CIFAR-shaped data unless cnncore can load CIFAR-10
"""
import numpy as np

from cnncore.layers import Dropout, Pooling, Relu
from cnncore.networks import Conv2d, Linear, Sequential
from cnncore.trainer import Trainer

net = Sequential([
    Conv2d(32, 3, pad=1), Relu(), Conv2d(32, 3, pad=1), Relu(), Pooling(2, 2),
    Conv2d(64, 3, pad=1), Relu(), Conv2d(64, 3, pad=1), Relu(), Pooling(2, 2),
    Linear(512), Relu(), Dropout(0.5),
    Linear(10),
], input_dim=(3, 32, 32), dtype=np.float32)
net.summary()

try:
    from cnncore.datasets import load_cifar10
    (x_train, t_train), (x_test, t_test) = load_cifar10()
except (ImportError, OSError):
    print("CIFAR-10 not available: training on random CIFAR-shaped data")
    rng = np.random.default_rng(0)
    x_train, t_train = rng.random((500, 3, 32, 32), np.float32), rng.integers(0, 10, 500)
    x_test, t_test = x_train[:100], t_train[:100]
Trainer(net, x_train[:5000], t_train[:5000], x_test[:1000], t_test[:1000], epochs=1,
        mini_batch_size=100, optimizer='Adam', optimizer_param={'lr': 0.001},
        verbose=False, exact_epochs=True).train()
print("test accuracy", net.accuracy(x_test, t_test, exact=True))
