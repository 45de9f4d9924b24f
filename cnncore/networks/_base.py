"""What the textbook's networks share: backprop over a layer sequence, batched accuracy, gradient
collection, parameter files and state dicts.

A network sets ``params`` (a dict in the textbook's insertion order), ``layers`` (an OrderedDict, or a
plain list for DeepConvNet), ``last_layer`` and ``_bindings``: (param key, layer, attribute) triples in
the order ``gradient`` reports them. A layer's gradient for attribute ``W`` is ``dW`` (``gamma`` ->
``dgamma``), and ``layer.<attribute> is params[key]`` at all times.
"""
import numbers

import numpy as np

from .._io import load_params_file, save_params_file
from ..gradient import numerical_gradient
from ..initializers import gaussian
from ..layers import ConvReLU, Convolution, Relu


def init_params(shapes, stds, dtype):
    """{'W1': std_1 * randn(*shape_1), 'b1': zeros, 'W2': ...} in this order: one randn per weight,
    in the textbook's order. A bias has FN entries for a conv weight (FN, C, FH, FW), M for (D, M)."""
    params = {}
    for i, (shape, std) in enumerate(zip(shapes, stds), 1):
        params[f"W{i}"] = gaussian(shape, std, dtype)
        params[f"b{i}"] = np.zeros(shape[0] if len(shape) == 4 else shape[1], dtype)
    return params


def weight_bindings(numbered_layers):
    """[(f'W{i}', layer, 'W'), (f'b{i}', layer, 'b'), ...] for (i, layer) pairs."""
    return [(f"{attr}{i}", layer, attr) for i, layer in numbered_layers for attr in ("W", "b")]


def conv_relu_layers(W, b, stride, pad, use_fused):
    """[Convolution, Relu], or [ConvReLU] (same numbers, one fused pass) when use_fused."""
    if use_fused:
        return [ConvReLU(W, b, stride, pad)]
    return [Convolution(W, b, stride, pad), Relu()]


def add_conv_relu(layers, idx, W, b, stride, pad, use_fused):
    """Add 'Conv{idx}' and 'Relu{idx}' to an OrderedDict of layers ('Conv{idx}' alone when fused)."""
    names = [f"Conv{idx}"] if use_fused else [f"Conv{idx}", f"Relu{idx}"]
    layers.update(zip(names, conv_relu_layers(W, b, stride, pad, use_fused)))


def _batch_size(batch_size):
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    return int(batch_size)


class Network:
    """Base of the textbook networks (see the module docstring for what a subclass provides)."""

    def _layer_list(self):
        layers = self.layers
        return list(layers.values()) if isinstance(layers, dict) else list(layers)

    def predict(self, x):
        """Scores (N, output_size) for x, through every layer in order."""
        for layer in self.layers.values():
            x = layer.forward(x)
        return x

    def loss(self, x, t):
        """Loss of x against labels t (integer labels (N,) or one-hot)."""
        return self.last_layer.forward(self.predict(x), t)

    def _train_loss(self, x, t):
        """The loss that gradient() differentiates."""
        return self.loss(x, t)

    def gradient(self, x, t):
        """Gradients by backpropagation: a dict keyed like params, holding the layers' own dW/db arrays
        (not copies: the next call overwrites them)."""
        self._train_loss(x, t)
        dout = self.last_layer.backward(1)
        first, *rest = self._layer_list()
        for layer in reversed(rest):
            dout = layer.backward(dout)
        if isinstance(first, Convolution):   # nobody wants the gradient of the input: skip it
            first.backward(dout, need_dx=False)
        else:
            first.backward(dout)
        return {key: getattr(layer, "d" + attr) for key, layer, attr in self._bindings}

    def accuracy(self, x, t, batch_size=100, *, exact=False):
        """Share of correct argmax predictions (t: labels or one-hot), batch_size samples at a time.

        By default this is the textbook's: only the int(N / batch_size) full batches are evaluated but
        the sum is divided by N, so remainder samples count as wrong (and N < batch_size gives 0.0);
        Trainer logs depend on it. exact=True evaluates every sample.
        """
        batch_size = _batch_size(batch_size)
        if t.ndim != 1:
            t = np.argmax(t, axis=1)
        n = x.shape[0]
        stop = n if exact else (n // batch_size) * batch_size
        acc = 0.0
        for i in range(0, stop, batch_size):
            y = np.argmax(self.predict(x[i:i + batch_size]), axis=1)
            acc += np.sum(y == t[i:i + batch_size])
        return acc / n

    # ------------------------------------------------------------------------- parameters and files

    def _rebind(self):
        for key, layer, attr in self._bindings:
            setattr(layer, attr, self.params[key])

    def _checked_arrays(self, values, what):
        """Convert {key: array} to the current params' dtypes, checking keys and shapes; nothing is
        assigned, so a bad input leaves the network as it was."""
        missing = [key for key in self.params if key not in values]
        extra = [key for key in values if key not in self.params]
        if missing or extra:
            raise ValueError(f"{what} must have exactly the keys {list(self.params)}; "
                             f"missing {missing}, unexpected {extra}")
        out = {}
        for key, param in self.params.items():
            value = np.asarray(values[key])
            if value.shape != param.shape:
                raise ValueError(f"{what}[{key!r}] must have shape {param.shape}, got {value.shape}")
            if value.dtype.kind not in "fiu":
                raise TypeError(f"{what}[{key!r}] must hold real numbers, got dtype {value.dtype}")
            out[key] = value.astype(param.dtype, copy=False)
        return out

    def save_params(self, file_name="params.npz", format=None):
        """Write params to file_name: .npz by default; format="pickle" writes the textbook's pickle
        (a plain dict of ndarrays) for round trips with the textbook code. The write is atomic."""
        save_params_file(dict(self.params), file_name, format=format)

    def load_params(self, file_name="params.npz", allow_pickle=False):
        """Read parameters saved by save_params (or the textbook's pickle, with allow_pickle=True).

        Keys and shapes must match this network; values are cast to its dtype. The loaded arrays
        replace the entries of ``params`` and the layers are rebound to them. If the file is bad
        nothing changes. Pickle can run code: only allow it for files you trust (cnncore._io also
        refuses pickles that hold anything but arrays).
        """
        expected = {key: tuple(val.shape) for key, val in self.params.items()}
        loaded = load_params_file(file_name, expected, allow_pickle=allow_pickle)  # fresh arrays
        self.params.update(self._checked_arrays(loaded, "the file"))
        self._rebind()

    def state_dict(self):
        """A copy of every parameter, keyed like params (BatchNormalization's running statistics
        are not parameters and are not included, as in the textbook's parameter files)."""
        return {key: val.copy() for key, val in self.params.items()}

    def load_state_dict(self, state):
        """Copy the values of state into the parameters, in place (the arrays, and hence the layers'
        references and any optimizer state, stay the same objects). Keys and shapes must match."""
        for key, value in self._checked_arrays(state, "state").items():
            self.params[key][...] = value


class NumericalGradientMixin:
    """``numerical_gradient`` for networks whose training loss is deterministic (not DeepConvNet)."""

    def numerical_gradient(self, x, t):
        """Gradients by central differences (slow: two losses per parameter element), keyed like
        gradient(). Use float64 parameters; the check of ch05/ch07 compares the two."""
        def loss_w(w):
            return self._train_loss(x, t)

        return {key: numerical_gradient(loss_w, self.params[key]) for key, _, _ in self._bindings}
