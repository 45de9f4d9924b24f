"""LeNet-5 as the lecture builds it, trained on MNIST (the course demo subset).

    python examples/lenet5.py [MNIST_DIR]     # default: ../shared/data/mnist, else $CNNCORE_DATA
"""
import sys

import numpy as np

from cnncore.datasets import load_mnist
from cnncore.layers import Pooling, Relu
from cnncore.networks import Conv2d, Linear, Sequential
from cnncore.trainer import Trainer

net = Sequential([
    Conv2d(6, 5, pad=2), Relu(), Pooling(2, 2),      # C1, S2
    Conv2d(16, 5), Relu(), Pooling(2, 2),            # C3, S4
    Conv2d(120, 5), Relu(),                          # C5
    Linear(84), Relu(),                              # F6
    Linear(10),                                      # output
], input_dim=(1, 28, 28), dtype=np.float32)
net.summary()

(x_train, t_train), (x_test, t_test) = load_mnist(flatten=False, path=(sys.argv[1:] or [None])[0])
Trainer(net, x_train[:5000], t_train[:5000], x_test[:1000], t_test[:1000], epochs=5,
        mini_batch_size=100, optimizer='Adam', optimizer_param={'lr': 0.001},
        verbose=False, exact_epochs=True).train()
print("test accuracy", net.accuracy(x_test, t_test, exact=True))
net.save("lenet5.npz")
