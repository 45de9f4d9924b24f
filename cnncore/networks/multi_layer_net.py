"""MultiLayerNet: the textbook's fully connected network (``common/multi_layer_net.py``)."""
from collections import OrderedDict

import numpy as np

from ..initializers import float_dtype, init_std
from ..layers import GELU, Affine, LeakyReLU, Relu, Sigmoid, SoftmaxWithLoss
from ._base import Network, check_weight_decay, init_params, weight_bindings

# The textbook has 'relu' and 'sigmoid'; the others are cnncore extensions.
ACTIVATIONS = {'relu': Relu, 'sigmoid': Sigmoid, 'leaky_relu': LeakyReLU, 'gelu': GELU}


class MultiLayerNet(Network):
    """Fully connected network: (affine - activation) x L - affine - softmax.

    Parameters
    ----------
    input_size : input features (784 for MNIST).
    hidden_size_list : units of each hidden layer, e.g. [100, 100, 100].
    output_size : number of classes.
    activation : 'relu' or 'sigmoid' (also 'leaky_relu', 'gelu'; any case).
    weight_init_std : a number (the std), 'relu'/'he' (sqrt(2/n)) or 'sigmoid'/'xavier' (sqrt(1/n)),
        n being the previous layer's size.
    weight_decay_lambda : strength of the L2 penalty 0.5*lambda*sum(W**2) added to the loss.
    dtype : (keyword) float64 (default) or float32 for every parameter.

    ``params``: W1, b1, ..., W{L+1}, b{L+1}; ``layers``: 'Affine{i}', 'Activation_function{i}', ...,
    'Affine{L+1}'; ``last_layer``. ``gradient`` adds lambda*W to each dW (new arrays), ``accuracy(x, t)``
    evaluates the whole batch at once.
    """

    def __init__(self, input_size, hidden_size_list, output_size, activation='relu',
                 weight_init_std='relu', weight_decay_lambda=0, *, dtype=np.float64):
        self.input_size = input_size
        self.input_dim = (input_size,)
        self.output_size = output_size
        self.hidden_size_list = hidden_size_list
        self.hidden_layer_num = len(hidden_size_list)
        self.weight_decay_lambda = check_weight_decay(weight_decay_lambda)
        key = str(activation).lower()
        if key not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        self._dtype = float_dtype(dtype)

        sizes = [input_size, *hidden_size_list, output_size]
        shapes = list(zip(sizes[:-1], sizes[1:]))
        self.params = init_params(shapes, [init_std(weight_init_std, s[0]) for s in shapes],
                                  self._dtype)

        self.layers = OrderedDict()
        self._bindings = []
        for idx in range(1, self.hidden_layer_num + 2):
            affine = Affine(self.params[f'W{idx}'], self.params[f'b{idx}'])
            self.layers[f'Affine{idx}'] = affine
            self._bindings += weight_bindings([(idx, affine)])
            if idx <= self.hidden_layer_num:
                self._add_hidden_block(idx, ACTIVATIONS[key])
        self.last_layer = SoftmaxWithLoss()

    def _add_hidden_block(self, idx, activation_layer):
        """The layers after hidden Affine{idx}."""
        self.layers[f'Activation_function{idx}'] = activation_layer()

    def accuracy(self, x, t):
        """Share of correct argmax predictions over the whole batch (t: labels or one-hot)."""
        t = self._accuracy_labels(x, t)
        y = np.argmax(self.predict(x), axis=1)
        return np.sum(y == t) / float(x.shape[0])
