"""DeepConvNet: the textbook's ch08 network (over 99 % on MNIST)."""
import numpy as np

from ..initializers import float_dtype, he_std
from ..layers import Affine, Dropout, Pooling, Relu, SoftmaxWithLoss
from ._base import (Network, check_conv_param, check_input_dim, conv_relu_layers, init_params,
                    weight_bindings)


class DeepConvNet(Network):
    """conv-relu-conv-relu-pool x 3, then affine-relu-dropout-affine-dropout-softmax.

    ``layers`` is a plain list of 20 layers, as in the textbook; the parameter layers sit at indices
    0, 2, 5, 7, 10, 12 (Convolution, 3x3), 15, 18 (Affine), the Pooling layers (2x2, stride 2) at 4, 9,
    14 and the Dropout(0.5) layers at 17 and 19 (the final one after the last Affine is part of the
    trained model). For a 28x28 input the maps are 28 -> 14 -> 16 (conv_param_4 pads by 2) -> 8 -> 4.
    ``params``: W1..W6 (conv), W7 (64*4*4, hidden_size), W8 (hidden_size, output_size) with biases,
    123,552 parameters for the defaults. He initialisation with the textbook's hard-coded fan-ins
    (9, 144, 144, 288, 288, 576, 1024, hidden_size) and hard-coded W7 rows: only the channel count of
    input_dim is honoured, as in the textbook.

    ``predict(x, train_flg=False)``; ``loss(x, t)`` runs in training mode (dropout active), as in the
    textbook; ``accuracy`` in inference mode. ``numerical_gradient`` (a cnncore extension) holds the
    dropout masks fixed by replaying the global RNG state for every loss.

    Keywords: ``dtype`` float64 (default) or float32 for every parameter; ``use_fused`` replaces each
    Convolution + Relu pair by one ConvReLU (same numbers; the list then has 14 layers).
    """

    def __init__(self, input_dim=(1, 28, 28),
                 conv_param_1={'filter_num': 16, 'filter_size': 3, 'pad': 1, 'stride': 1},
                 conv_param_2={'filter_num': 16, 'filter_size': 3, 'pad': 1, 'stride': 1},
                 conv_param_3={'filter_num': 32, 'filter_size': 3, 'pad': 1, 'stride': 1},
                 conv_param_4={'filter_num': 32, 'filter_size': 3, 'pad': 2, 'stride': 1},
                 conv_param_5={'filter_num': 64, 'filter_size': 3, 'pad': 1, 'stride': 1},
                 conv_param_6={'filter_num': 64, 'filter_size': 3, 'pad': 1, 'stride': 1},
                 hidden_size=50, output_size=10, *, dtype=np.float64, use_fused=False):
        conv_params = [conv_param_1, conv_param_2, conv_param_3, conv_param_4, conv_param_5,
                       conv_param_6]
        for i, cp in enumerate(conv_params, 1):
            check_conv_param(cp, f"conv_param_{i}")
        self.input_dim = check_input_dim(input_dim)
        pre_node_nums = [1 * 3 * 3, 16 * 3 * 3, 16 * 3 * 3, 32 * 3 * 3, 32 * 3 * 3, 64 * 3 * 3,
                         64 * 4 * 4, hidden_size]
        shapes = []
        pre_channel_num = input_dim[0]
        for cp in conv_params:
            shapes.append((cp['filter_num'], pre_channel_num, cp['filter_size'], cp['filter_size']))
            pre_channel_num = cp['filter_num']
        shapes += [(64 * 4 * 4, hidden_size), (hidden_size, output_size)]
        self.params = init_params(shapes, [he_std(n) for n in pre_node_nums], float_dtype(dtype))
        p = self.params

        self.layers = []
        for i, cp in enumerate(conv_params, 1):
            self.layers += conv_relu_layers(p[f'W{i}'], p[f'b{i}'], cp['stride'], cp['pad'],
                                            use_fused)
            if i % 2 == 0:
                self.layers.append(Pooling(pool_h=2, pool_w=2, stride=2))
        self.layers += [Affine(p['W7'], p['b7']), Relu(), Dropout(0.5),
                        Affine(p['W8'], p['b8']), Dropout(0.5)]
        self.last_layer = SoftmaxWithLoss()
        self._bindings = weight_bindings(
            enumerate([layer for layer in self.layers if hasattr(layer, 'W')], 1))

    def loss(self, x, t, train_flg=True):
        """Loss in training mode (dropout active) by default, as in the textbook."""
        return super().loss(x, t, train_flg)
