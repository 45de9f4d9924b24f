"""The lecture's flexible CNN on MNIST or Fashion-MNIST: conv3x3*32, conv3x3*64, max pool, dropout,
fc128, dropout, fc10.

    python examples/flexible_cnn.py [MNIST_DIR]
"""
import sys

import numpy as np

from cnncore.datasets import load_mnist
from cnncore.layers import Dropout, Pooling, Relu
from cnncore.networks import Conv2d, Linear, Sequential
from cnncore.trainer import Trainer

net = Sequential([
    Conv2d(32, 3, pad=1), Relu(),
    Conv2d(64, 3, pad=1), Relu(),
    Pooling(2, 2), Dropout(0.25),
    Linear(128), Relu(), Dropout(0.5),
    Linear(10),
], input_dim=(1, 28, 28), dtype=np.float32)
net.summary()

(x_train, t_train), (x_test, t_test) = load_mnist(flatten=False, path=(sys.argv[1:] or [None])[0])
Trainer(net, x_train[:5000], t_train[:5000], x_test[:1000], t_test[:1000], epochs=2,
        mini_batch_size=100, optimizer='Adam', optimizer_param={'lr': 0.001},
        verbose=False, exact_epochs=True).train()
print("test accuracy", net.accuracy(x_test, t_test, exact=True))
net.save("flexible_cnn.npz")
