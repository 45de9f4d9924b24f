"""What every network shares, built on the layer contract (cnncore.layers.Layer): backprop over a
layer sequence, training and inference modes, weight decay, batched accuracy, gradient collection,
parameter files, state dicts and a summary.

A network sets ``params`` (a dict in the textbook's insertion order), ``layers`` (an OrderedDict, or a
plain list for DeepConvNet), ``last_layer``, ``input_dim`` (one sample's shape) and ``_bindings``:
(param key, layer, attribute) triples in the order ``gradient`` reports them, with
``layer.<attribute> is params[key]`` at all times. Which attributes are parameters, where their
gradients go and which state is saved beside them, each layer declares itself.
"""
import functools
import inspect
import numbers
import warnings

import numpy as np

from .._io import load_params_file, save_params_file
from .._validate import check_int, check_real
from ..functions import _check_labels
from ..gradient import numerical_gradient
from ..initializers import gaussian
from ..layers import (ConvReLU, Convolution, Relu, conv_relu_backward, conv_relu_forward,
                      fusible)


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


def check_input_dim(input_dim, ndims=(3,)):
    """input_dim as a tuple of positive integers, (C, H, W) or (where ndims allows) (D,)."""
    dims = tuple(input_dim) if isinstance(input_dim, (tuple, list)) else None
    if (dims is None or len(dims) not in ndims
            or any(isinstance(d, bool) or not isinstance(d, numbers.Integral) or d < 1 for d in dims)):
        what = " or ".join({3: "(C, H, W)", 1: "(D,)"}[n] for n in ndims)
        raise ValueError(f"input_dim must be {what} of positive integers, got {input_dim!r}")
    return tuple(int(d) for d in dims)


def check_weight_decay(value):
    """weight_decay_lambda: a finite number >= 0."""
    return check_real(value, "weight_decay_lambda", 0)


def check_conv_param(conv_param, name="conv_param"):
    """(filter_num, filter_size, pad, stride) from a textbook conv_param dict, each checked."""
    if not isinstance(conv_param, dict):
        raise TypeError(f"{name} must be a dict, got {type(conv_param).__name__}")
    values = []
    for key, low in (("filter_num", 1), ("filter_size", 1), ("pad", 0), ("stride", 1)):
        if key not in conv_param:
            raise ValueError(f"{name} needs the key {key!r}; it has {sorted(conv_param)}")
        values.append(check_int(conv_param[key], f"{name}[{key!r}]", low))
    return tuple(values)


@functools.cache
def _takes_train_flg(forward):
    """Whether a forward function accepts train_flg (a user's own textbook-style layer may not)."""
    try:
        parameters = inspect.signature(forward).parameters
    except (TypeError, ValueError):
        return True
    return "train_flg" in parameters or any(p.kind == p.VAR_KEYWORD for p in parameters.values())


def forward(layer, x, train_flg):
    """layer.forward(x, train_flg=...), or layer.forward(x) for a layer without modes."""
    if _takes_train_flg(type(layer).forward):
        return layer.forward(x, train_flg=train_flg)
    return layer.forward(x)


def grad_attribute(layer, attr):
    """Where layer's backward stores the gradient of its parameter attribute attr."""
    names = tuple(getattr(layer, "param_names", ()))
    if attr not in names:
        raise AttributeError(f"{type(layer).__name__} does not declare {attr!r} among its "
                             f"param_names {names}")
    return layer.grad_names[names.index(attr)]


class Network:
    """Base of every network (see the module docstring for what a subclass provides)."""

    weight_decay_lambda = 0
    input_dim = None
    gradient_loss = None   # the training-mode loss the last gradient() call differentiated

    def _layer_items(self):
        """[(key, layer)] in order; a list of layers is keyed by position ('0', '1', ...)."""
        layers = self.layers
        if isinstance(layers, dict):
            return list(layers.items())
        return [(str(i), layer) for i, layer in enumerate(layers)]

    def _layer_list(self):
        return [layer for _, layer in self._layer_items()]

    def _steps(self):
        """The layers in order as steps: (layer,), or (conv, relu) where a Convolution is directly
        followed by a Relu, which run as one fused kernel (the same numbers, one pass less). The
        layer objects, keys and attributes stay the textbook's."""
        layers, steps, i = self._layer_list(), [], 0
        while i < len(layers):
            if i + 1 < len(layers) and fusible(layers[i], layers[i + 1]):
                steps.append((layers[i], layers[i + 1]))
                i += 2
            else:
                steps.append((layers[i],))
                i += 1
        return steps

    # ------------------------------------------------------------------------------ forward, backward

    def predict(self, x, train_flg=False):
        """Scores (N, classes) for x, through every layer in order. Dropout and BatchNorm run in
        inference mode unless train_flg."""
        for step in self._steps():
            x = conv_relu_forward(*step, x) if len(step) == 2 else forward(step[0], x, train_flg)
        return x

    def loss(self, x, t, train_flg=False):
        """Loss of x against labels t (integer labels (N,) or one-hot), plus the L2 weight decay
        when ``weight_decay_lambda`` is set; in inference mode unless train_flg."""
        return self._with_decay(self.last_layer.forward(self.predict(x, train_flg), t))

    def _train_loss(self, x, t):
        """The loss that gradient() differentiates: in training mode."""
        return self._with_decay(self.last_layer.forward(self.predict(x, train_flg=True), t))

    def _decayed(self):
        """The param keys the L2 penalty covers: the weights W of Convolution and Affine layers."""
        return [key for key, _, attr in self._bindings if attr == "W"]

    def _with_decay(self, loss):
        if not self.weight_decay_lambda:
            return loss
        decay = 0
        for key in self._decayed():   # summed layer by layer, as the textbook's MultiLayerNet
            decay += 0.5 * self.weight_decay_lambda * np.sum(self.params[key] ** 2)
        return loss + decay

    def gradient(self, x, t):
        """Gradients by backpropagation in training mode: a dict keyed like params, holding the
        layers' own gradient arrays (not copies: the next call overwrites them). With weight decay,
        each weight's entry is a new array dW + weight_decay_lambda * W. The loss it differentiated
        (training mode, weight decay included) is kept in ``gradient_loss``."""
        self.gradient_loss = self._train_loss(x, t)
        dout = self.last_layer.backward(1)
        first, *rest = self._steps()
        for step in reversed(rest):
            dout = conv_relu_backward(*step, dout) if len(step) == 2 else step[0].backward(dout)
        if len(first) == 2:   # nobody wants the gradient of the input: skip it
            conv_relu_backward(*first, dout, need_dx=False)
        elif isinstance(first[0], Convolution):
            first[0].backward(dout, need_dx=False)
        else:
            first[0].backward(dout)
        grads = {key: getattr(layer, grad_attribute(layer, attr))
                 for key, layer, attr in self._bindings}
        if self.weight_decay_lambda:
            for key in self._decayed():
                grads[key] = grads[key] + self.weight_decay_lambda * self.params[key]
        return grads

    def numerical_gradient(self, x, t):
        """Gradients by central differences (slow: two losses per parameter element), keyed like
        gradient(). Use float64 parameters. Every loss is computed from the same global RNG state,
        so Dropout draws the same masks each time; the state is left as one loss leaves it."""
        state = np.random.get_state()

        def loss_w(w):
            np.random.set_state(state)
            return self._train_loss(x, t)

        grads = {key: numerical_gradient(loss_w, self.params[key]) for key, _, _ in self._bindings}
        loss_w(None)
        return grads

    def accuracy(self, x, t, batch_size=100, *, exact=False):
        """Share of correct argmax predictions (t: labels or one-hot), batch_size samples at a time.

        By default this is the textbook's: only the int(N / batch_size) full batches are evaluated but
        the sum is divided by N, so remainder samples count as wrong (and N < batch_size gives 0.0);
        Trainer logs depend on it. exact=True evaluates every sample. Labels outside the classes or
        a label array of the wrong length raise ValueError, as in loss.
        """
        batch_size = check_int(batch_size, "batch_size", 1)
        t = self._accuracy_labels(x, t)
        n = x.shape[0]
        stop = n if exact else (n // batch_size) * batch_size
        acc = 0.0
        for i in range(0, stop, batch_size):
            y = np.argmax(self.predict(x[i:i + batch_size]), axis=1)
            acc += np.sum(y == t[i:i + batch_size])
        return acc / n

    def _accuracy_labels(self, x, t):
        """t as (N,) integer labels, checked against x's length and the number of classes."""
        t = np.asarray(t)
        n = len(x)
        classes = self._classes()
        if t.ndim == 2 and t.shape[1] != 1:          # one-hot
            if classes is not None and t.shape[1] != classes:
                raise ValueError(f"t is one-hot with {t.shape[1]} columns, the network has "
                                 f"{classes} classes")
            t = np.argmax(t, axis=1)
        elif t.ndim == 2:                            # labels shaped (N, 1)
            t = t.reshape(-1)
        _check_labels(t, (n, classes if classes is not None else np.iinfo(np.int64).max))
        return t

    def _classes(self):
        """The number of output classes, or None where a layer cannot tell its output shape."""
        try:
            shape = self.output_shape()
        except (AttributeError, TypeError, ValueError):
            return None
        return shape[-1] if shape else None

    def output_shape(self, input_dim=None):
        """The shape of one output sample for one input sample of ``input_dim`` (default: the
        network's own)."""
        shape = tuple(self.input_dim if input_dim is None else input_dim)
        for layer in self._layer_list():
            shape = tuple(layer.output_shape(shape))
        return shape

    # ---------------------------------------------------------------------------------------- state

    def _rebind(self):
        for key, layer, attr in self._bindings:
            setattr(layer, attr, self.params[key])

    def _buffer_slots(self):
        """[(key, layer, name)] of every buffer, keyed '<layer key>.<name>' ('BatchNorm1.running_mean')."""
        return [(f"{key}.{name}", layer, name) for key, layer in self._layer_items()
                for name in getattr(layer, "buffer_names", ())]

    def buffers(self):
        """{key: array} of the state that is not a parameter but is needed to predict (BatchNorm's
        running statistics), keyed '<layer key>.<name>'; the current arrays, not copies. A buffer
        that does not exist yet (no forward, no init) is left out."""
        return {key: getattr(layer, name) for key, layer, name in self._buffer_slots()
                if getattr(layer, name) is not None}

    def load_buffers(self, values):
        """Assign copies of values (keys as buffers()) to the layers; shapes must match where a
        buffer exists. Checked first: on a bad input nothing changes."""
        slots = {key: (layer, name) for key, layer, name in self._buffer_slots()}
        checked = {}
        for key, value in values.items():
            if key not in slots:
                raise ValueError(f"unexpected buffer {key!r}; this network has {list(slots)}")
            layer, name = slots[key]
            current = getattr(layer, name)
            value = np.asarray(value)
            if value.dtype.kind not in "fiu":
                raise TypeError(f"buffer {key!r} must hold real numbers, got dtype {value.dtype}")
            want = self._buffer_shape(layer, current)
            if want is not None and value.shape != want:
                raise ValueError(f"buffer {key!r} must have shape {want}, got {value.shape}")
            if hasattr(layer, "check_buffer"):
                layer.check_buffer(name, value, key)
            dtype = current.dtype if current is not None else self._buffer_dtype(layer)
            checked[key] = np.array(value, dtype=dtype, copy=True)
        for key, value in checked.items():
            layer, name = slots[key]
            setattr(layer, name, value)

    @staticmethod
    def _buffer_shape(layer, current):
        """A buffer's shape: its own, or before it exists its layer's parameters' (gamma's)."""
        if current is not None:
            return current.shape
        gamma = getattr(layer, "gamma", None)
        return None if gamma is None else gamma.shape

    @staticmethod
    def _buffer_dtype(layer):
        gamma = getattr(layer, "gamma", None)
        return np.float64 if gamma is None else gamma.dtype

    def _buffer_shapes(self):
        """{key: shape} of every buffer slot whose shape is known."""
        shapes = {}
        for key, layer, name in self._buffer_slots():
            shape = self._buffer_shape(layer, getattr(layer, name))
            if shape is not None:
                shapes[key] = shape
        return shapes

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

    def _split_state(self, state, what):
        """(params part, buffers part) of a dict holding both; warns naming missing buffers."""
        slots = [key for key, _, _ in self._buffer_slots()]
        params = {k: v for k, v in state.items() if k not in slots}
        buffers = {k: v for k, v in state.items() if k in slots}
        missing = [k for k in slots if k not in buffers]
        if missing:
            warnings.warn(f"{what} holds no {', '.join(missing)}: those keep their current values "
                          f"(a file or state written before cnncore saved BatchNorm statistics)",
                          UserWarning, stacklevel=3)
        return params, buffers

    def save_params(self, file_name="params.npz", format=None):
        """Write params and the layers' buffers (BatchNorm running statistics, as
        '<layer key>.running_mean') to file_name: .npz by default; format="pickle" writes the
        textbook's pickle (a plain dict of ndarrays; the textbook's load_params ignores the extra
        entries). The write is atomic."""
        save_params_file({**self.params, **self.buffers()}, file_name, format=format)

    def load_params(self, file_name="params.npz", allow_pickle=False):
        """Read parameters (and buffers) saved by save_params, or the textbook's pickle with
        allow_pickle=True.

        Keys and shapes must match this network; values are cast to its dtype. The loaded arrays
        replace the entries of ``params`` and the layers are rebound to them. A file without the
        buffers (older files, the textbook's) loads its weights, and a UserWarning names what it
        lacked. If the file is bad nothing changes. Pickle can run code: only allow it for files you
        trust (cnncore._io also refuses pickles that hold anything but arrays).
        """
        expected = {key: tuple(val.shape) for key, val in self.params.items()}
        loaded = load_params_file(file_name, expected, allow_pickle=allow_pickle,
                                  optional=self._buffer_shapes())
        params, buffers = self._split_state(loaded, f"{file_name}")
        params = self._checked_arrays(params, "the file")
        self.load_buffers(buffers)
        self.params.update(params)
        self._rebind()

    def state_dict(self):
        """A copy of every parameter, keyed like params, and of every buffer (BatchNorm running
        statistics, keyed '<layer key>.running_mean')."""
        state = {key: val.copy() for key, val in self.params.items()}
        state.update({key: val.copy() for key, val in self.buffers().items()})
        return state

    def load_state_dict(self, state):
        """Copy the values of state into the parameters, in place (the arrays, and hence the layers'
        references and any optimizer state, stay the same objects), and into the buffers. Keys and
        shapes must match; missing buffers are warned about and keep their values."""
        params, buffers = self._split_state(dict(state), "state")
        checked = self._checked_arrays(params, "state")
        self.load_buffers(buffers)
        for key, value in checked.items():
            self.params[key][...] = value

    def save(self, path):
        """Write the architecture (as JSON data), every parameter and every buffer to one .npz,
        atomically; ``Sequential.load(path)`` rebuilds the network from the file alone (as a
        Sequential with the same layer keys, parameters and buffers)."""
        from .sequential import architecture

        save_params_file({**self.params, **self.buffers()}, path, architecture=architecture(self))

    # -------------------------------------------------------------------------------------- summary

    def summary(self, file=None):
        """Print each layer's key, type, output shape and parameter count, then the totals; returns
        the text. Shapes are per sample (N omitted), from ``input_dim``."""
        rows = [("Layer", "Type", "Output shape", "Params")]
        shape = tuple(self.input_dim) if self.input_dim is not None else None
        rows.append(("(input)", "", _shape_text(shape), ""))
        owned = {}
        for key, layer, _ in self._bindings:
            owned[id(layer)] = owned.get(id(layer), 0) + self.params[key].size
        for key, layer in self._layer_items():
            if shape is not None:
                shape = tuple(layer.output_shape(shape))
            rows.append((key, type(layer).__name__, _shape_text(shape),
                         f"{owned.get(id(layer), 0):,}"))
        rows.append((getattr(self, "last_layer_key", "Loss"), type(self.last_layer).__name__,
                     _shape_text(shape), "0"))
        total = sum(value.size for value in self.params.values())
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        line = "-" * (sum(widths) + 6)
        text = [line]
        for i, row in enumerate(rows):
            text.append("  ".join(cell.ljust(w) if j < 3 else cell.rjust(w)
                                  for j, (cell, w) in enumerate(zip(row, widths))))
            if i == 0:
                text.append(line)
        n_buffers = sum(value.size for value in self.buffers().values())
        text += [line, f"Total params: {total:,}",
                 f"Buffers (not trained): {n_buffers:,}",
                 f"dtype: {_params_dtype(self.params)}"]
        out = "\n".join(text)
        print(out, file=file)
        return out


def _shape_text(shape):
    return "?" if shape is None else str(tuple(shape))


def _params_dtype(params):
    dtypes = sorted({str(value.dtype) for value in params.values()})
    return "/".join(dtypes) if dtypes else "-"

