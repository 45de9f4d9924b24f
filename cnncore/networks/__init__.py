"""The textbook's networks, plus LeNet5: one module each, all importable from here.

    from cnncore.networks import SimpleConvNet     # instead of: from simple_convnet import SimpleConvNet
"""
from .deep_convnet import DeepConvNet
from .lenet import LeNet5
from .multi_layer_net import MultiLayerNet
from .multi_layer_net_extend import MultiLayerNetExtend
from .simple_convnet import SimpleConvNet

__all__ = ["SimpleConvNet", "DeepConvNet", "MultiLayerNet", "MultiLayerNetExtend", "LeNet5"]
