"""MultiLayerNetExtend: MultiLayerNet with dropout and batch norm (``common/multi_layer_net_extend.py``)."""
import numpy as np

from ..layers import BatchNormalization, Dropout
from .multi_layer_net import MultiLayerNet


class MultiLayerNetExtend(MultiLayerNet):
    """MultiLayerNet plus weight decay, Dropout and BatchNormalization options.

    The first six parameters are MultiLayerNet's; then ``use_dropout``, ``dropout_ration`` (sic: the
    textbook's spelling, which ch06 scripts pass by name; ``dropout_ratio=`` is accepted as an alias)
    and ``use_batchnorm``.

    Hidden block i: 'Affine{i}', ['BatchNorm{i}'], 'Activation_function{i}', ['Dropout{i}'].
    With batch norm, ``params`` gets gamma{i} (ones) and beta{i} (zeros) for each hidden layer, after all
    the W/b entries; ``gradient`` reports W{i}, b{i}, gamma{i}, beta{i} per layer.
    ``predict(x, train_flg=False)`` passes train_flg to every layer (the textbook passed it to the
    layers whose key contains "Dropout" or "BatchNorm"; the others ignore it). ``loss(x, t,
    train_flg=False)``;
    ``accuracy`` runs in inference mode; ``gradient`` and ``numerical_gradient`` in training mode.
    """

    def __init__(self, input_size, hidden_size_list, output_size, activation='relu',
                 weight_init_std='relu', weight_decay_lambda=0, use_dropout=False,
                 dropout_ration=0.5, use_batchnorm=False, *, dropout_ratio=None,
                 dtype=np.float64):
        self.use_dropout = use_dropout
        self.dropout_ration = dropout_ration if dropout_ratio is None else dropout_ratio
        self.use_batchnorm = use_batchnorm
        super().__init__(input_size, hidden_size_list, output_size, activation, weight_init_std,
                         weight_decay_lambda, dtype=dtype)

    def _add_hidden_block(self, idx, activation_layer):
        if self.use_batchnorm:
            size = self.hidden_size_list[idx - 1]
            self.params[f'gamma{idx}'] = np.ones(size, self._dtype)
            self.params[f'beta{idx}'] = np.zeros(size, self._dtype)
            bn = BatchNormalization(self.params[f'gamma{idx}'], self.params[f'beta{idx}'])
            bn.init_buffers()  # so that save_params and state_dict carry them from the start
            self.layers[f'BatchNorm{idx}'] = bn
            self._bindings += [(f'gamma{idx}', bn, 'gamma'), (f'beta{idx}', bn, 'beta')]
        super()._add_hidden_block(idx, activation_layer)
        if self.use_dropout:
            self.layers[f'Dropout{idx}'] = Dropout(self.dropout_ration)

