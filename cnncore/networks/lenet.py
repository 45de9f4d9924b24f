"""LeNet5: LeCun et al.'s LeNet-5 for 28x28 MNIST from the textbook's layers (a cnncore extension)."""
from collections import OrderedDict

import numpy as np

from .. import _validate
from ..initializers import fan_in, float_dtype, init_std
from ..layers import Affine, AvgPooling, Pooling, Relu, SoftmaxWithLoss
from ._base import Network, add_conv_relu, check_input_dim, init_params, weight_bindings

_POOLS = {'max': Pooling, 'avg': AvgPooling}


class LeNet5(Network):
    """LeNet-5: C-P-C-P-C-FC-FC, with ReLU and (by default) max pooling.

    The classic layout on a 28x28 input: C1 pads by 2, standing in for the original 32x32 input, so the
    rest has the paper's sizes and parameter counts (the course's counts 156 / 2,416 / ... / 11,014 FC).

    layer keys                      params              output (batch N)   parameters
    Conv1 (6 5x5, pad 2), Relu1     W1 (6, 1, 5, 5), b1  (N, 6, 28, 28)           156
    Pool1 (2x2, stride 2)                                (N, 6, 14, 14)
    Conv2 (16 5x5), Relu2           W2 (16, 6, 5, 5), b2 (N, 16, 10, 10)        2,416
    Pool2 (2x2, stride 2)                                (N, 16, 5, 5)
    Conv3 (120 5x5), Relu3          W3 (120, 16, 5, 5)   (N, 120, 1, 1)        48,120
    Affine1 (120 -> 84), Relu4      W4 (120, 84), b4     (N, 84)               10,164
    Affine2 (84 -> 10)              W5 (84, 10), b5      (N, 10)                  850

    61,706 parameters for (1, 28, 28) and 10 classes. Other input sizes work (W4's rows follow the
    Conv3 output). ``last_layer`` is SoftmaxWithLoss; methods as SimpleConvNet's.

    Parameters: ``input_dim`` (C, H, W); ``output_size``; ``weight_init_std`` 'he' (default; He per
    layer), 'xavier' or a number. Keywords: ``pool`` 'max' (Pooling) or 'avg' (AvgPooling, closer to the
    paper's subsampling); ``dtype`` float64 or float32; ``use_fused`` replaces each Conv + Relu pair by
    one ConvReLU named 'Conv{i}' (same numbers).
    """

    def __init__(self, input_dim=(1, 28, 28), output_size=10, weight_init_std='he', *,
                 pool='max', dtype=np.float64, use_fused=False):
        if pool not in _POOLS:
            raise ValueError(f"pool must be 'max' or 'avg', got {pool!r}")
        C, H, W = self.input_dim = check_input_dim(input_dim)
        h, w = H // 2, W // 2  # Conv1 (5x5 with pad 2 keeps the size), Pool1
        h, w = _validate.output_size(h, 5) // 2, _validate.output_size(w, 5) // 2  # Conv2, Pool2
        h, w = _validate.output_size(h, 5), _validate.output_size(w, 5)  # Conv3
        if h < 1 or w < 1:
            raise ValueError(f"input_dim {tuple(input_dim)} is too small for LeNet5 (needs H, W >= 28)")
        shapes = [(6, C, 5, 5), (16, 6, 5, 5), (120, 16, 5, 5), (120 * h * w, 84), (84, output_size)]
        self.params = init_params(shapes, [init_std(weight_init_std, fan_in(s)) for s in shapes],
                                  float_dtype(dtype))
        p = self.params

        self.layers = OrderedDict()
        for i, pad in ((1, 2), (2, 0), (3, 0)):
            add_conv_relu(self.layers, i, p[f'W{i}'], p[f'b{i}'], 1, pad, use_fused)
            if i < 3:
                self.layers[f'Pool{i}'] = _POOLS[pool](pool_h=2, pool_w=2, stride=2)
        self.layers['Affine1'] = Affine(p['W4'], p['b4'])
        self.layers['Relu4'] = Relu()
        self.layers['Affine2'] = Affine(p['W5'], p['b5'])
        self.last_layer = SoftmaxWithLoss()
        param_layers = [self.layers[k] for k in ('Conv1', 'Conv2', 'Conv3', 'Affine1', 'Affine2')]
        self._bindings = weight_bindings(enumerate(param_layers, 1))
