"""SimpleConvNet: the textbook's ch07 network."""
from collections import OrderedDict

import numpy as np

from .. import _validate
from ..initializers import fan_in, float_dtype, init_std
from ..layers import Affine, Pooling, Relu, SoftmaxWithLoss
from ._base import (Network, add_conv_relu, check_conv_param, check_input_dim, init_params,
                    weight_bindings)


class SimpleConvNet(Network):
    """A simple ConvNet: conv - relu - pool - affine - relu - affine - softmax.

    Parameters
    ----------
    input_dim : (C, H, W) of one image, (1, 28, 28) for MNIST.
    conv_param : dict with 'filter_num', 'filter_size', 'pad', 'stride'.
    hidden_size : units of the hidden Affine layer.
    output_size : number of classes.
    weight_init_std : std of the Gaussian initial weights, or 'relu'/'he', 'sigmoid'/'xavier'.
    dtype : (keyword) float64 (default, the textbook) or float32 for every parameter.
    use_fused : (keyword) replace Conv1 + Relu1 by one ConvReLU layer 'Conv1' (same numbers).

    ``params`` (in this order): W1 (FN, C, FS, FS), b1 (FN,), W2 (FN*(OH//2)*(OW//2), hidden_size), b2,
    W3 (hidden_size, output_size), b3, where OH x OW is the conv output. ``layers``: 'Conv1', 'Relu1',
    'Pool1' (2x2, stride 2), 'Affine1', 'Relu2', 'Affine2'; ``last_layer``: SoftmaxWithLoss. The default
    network has 433,890 parameters. ``np.random.seed(k)`` before construction gives the textbook's
    initial weights.

    Unlike the textbook, W2 is sized from the pooled map's real height and width, so odd conv outputs
    and non-square inputs work (the textbook used the float conv size and H only, and crashed there);
    nothing changes for the sizes that worked.
    """

    def __init__(self, input_dim=(1, 28, 28),
                 conv_param={'filter_num': 30, 'filter_size': 5, 'pad': 0, 'stride': 1},
                 hidden_size=100, output_size=10, weight_init_std=0.01, *, dtype=np.float64,
                 use_fused=False):
        input_dim = check_input_dim(input_dim)
        filter_num, filter_size, pad, stride = check_conv_param(conv_param)
        conv_h = _validate.output_size(input_dim[1], filter_size, stride, pad)
        conv_w = _validate.output_size(input_dim[2], filter_size, stride, pad)
        if conv_h < 2 or conv_w < 2:
            raise ValueError(f"input_dim {input_dim} is too small for a {filter_size}x{filter_size} "
                             f"filter with pad {pad} and stride {stride} followed by 2x2 pooling "
                             f"(the convolution gives {conv_h}x{conv_w})")
        pool_output_size = filter_num * (conv_h // 2) * (conv_w // 2)

        shapes = [(filter_num, input_dim[0], filter_size, filter_size),
                  (pool_output_size, hidden_size), (hidden_size, output_size)]
        self.params = init_params(shapes, [init_std(weight_init_std, fan_in(s)) for s in shapes],
                                  float_dtype(dtype))
        p = self.params
        self.input_dim = input_dim

        self.layers = OrderedDict()
        add_conv_relu(self.layers, 1, p['W1'], p['b1'], stride, pad, use_fused)
        self.layers['Pool1'] = Pooling(pool_h=2, pool_w=2, stride=2)
        self.layers['Affine1'] = Affine(p['W2'], p['b2'])
        self.layers['Relu2'] = Relu()
        self.layers['Affine2'] = Affine(p['W3'], p['b3'])
        self.last_layer = SoftmaxWithLoss()
        self._bindings = weight_bindings(
            enumerate([self.layers['Conv1'], self.layers['Affine1'], self.layers['Affine2']], 1))
