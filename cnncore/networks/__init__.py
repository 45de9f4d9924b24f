"""The textbook's networks, LeNet5, the course's networks, and Sequential for any other.

    from cnncore.networks import SimpleConvNet     # instead of: from simple_convnet import SimpleConvNet
    from cnncore.networks import Sequential, Conv2d, Linear, BatchNorm, BatchNorm2d
"""
from .course import cifar10_cnn, flexible_cnn, lenet5
from .deep_convnet import DeepConvNet
from .lenet import LeNet5
from .multi_layer_net import MultiLayerNet
from .multi_layer_net_extend import MultiLayerNetExtend
from .sequential import BatchNorm, BatchNorm2d, Conv2d, Linear, Sequential
from .simple_convnet import SimpleConvNet

__all__ = ["SimpleConvNet", "DeepConvNet", "MultiLayerNet", "MultiLayerNetExtend", "LeNet5",
           "Sequential", "Conv2d", "Linear", "BatchNorm", "BatchNorm2d",
           "lenet5", "flexible_cnn", "cifar10_cnn"]
