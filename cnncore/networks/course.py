"""The course's networks (lecture notes, chapters 7-8), each a few lines of Sequential.

``cnncore train --network lenet5|flexible|cifar10`` builds these; the README shows the same lines.
"""
import numpy as np

from ..layers import Dropout, Pooling, Relu
from .sequential import Conv2d, Linear, Sequential


def lenet5(input_dim=(1, 28, 28), output_size=10, *, dtype=np.float64):
    """LeNet-5 as the lecture builds it: 156, 2,416, 48,120, 10,164 and 850 parameters."""
    return Sequential([
        Conv2d(6, 5, pad=2), Relu(), Pooling(2, 2),
        Conv2d(16, 5), Relu(), Pooling(2, 2),
        Conv2d(120, 5), Relu(),
        Linear(84), Relu(),
        Linear(output_size),
    ], input_dim=input_dim, dtype=dtype)


def flexible_cnn(input_dim=(1, 28, 28), output_size=10, *, dtype=np.float64):
    """The lecture's flexible CNN: conv3x3*32, conv3x3*64 (both padded: 28x28 maps), max pool,
    dropout, fc128 (from 64*14*14 = 12,544 inputs), dropout, fc."""
    return Sequential([
        Conv2d(32, 3, pad=1), Relu(),
        Conv2d(64, 3, pad=1), Relu(),
        Pooling(2, 2), Dropout(0.25),
        Linear(128), Relu(), Dropout(0.5),
        Linear(output_size),
    ], input_dim=input_dim, dtype=dtype)


def cifar10_cnn(input_dim=(3, 32, 32), output_size=10, *, dtype=np.float64):
    """The lecture's CIFAR-10 CNN: 3->32->32, pool, 32->64->64, pool, fc512, dropout, fc."""
    return Sequential([
        Conv2d(32, 3, pad=1), Relu(), Conv2d(32, 3, pad=1), Relu(), Pooling(2, 2),
        Conv2d(64, 3, pad=1), Relu(), Conv2d(64, 3, pad=1), Relu(), Pooling(2, 2),
        Linear(512), Relu(), Dropout(0.5),
        Linear(output_size),
    ], input_dim=input_dim, dtype=dtype)
