"""Fuzz the textbook-level API: layers, networks, optimizers, Trainer.

- odd-but-valid inputs (non-contiguous, negative-stride, broadcast, read-only, other dtypes, NaN/Inf,
  empty batches) give what the same call gives on a plain contiguous copy, and the convolution and
  pooling layers agree with the same layer running on cnncore.reference; inputs are never modified;
- bad inputs raise ValueError or TypeError (naming the argument where it reaches the kernels);
- backward before forward and out-of-range labels raise instead of answering something.

Set CNNCORE_FUZZ_STATS=path for example counts.
"""
import collections
import json
import os

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from cnncore import layers, networks, optimizer, trainer
from cnncore import reference as R

STATS = collections.Counter()
FUZZ = settings(max_examples=settings.default.max_examples)


@pytest.fixture(scope="module", autouse=True)
def _write_stats():
    yield
    path = os.environ.get("CNNCORE_FUZZ_STATS")
    if path:
        with open(path, "a") as f:
            for (entry, outcome), n in sorted(STATS.items()):
                f.write(json.dumps({"file": "api", "entry": entry, "outcome": outcome,
                                    "cases": n}) + "\n")


# ------------------------------------------------------------------------------------------- layers

def conv_layer(rng, C, cls=layers.Convolution, pad=1, stride=1):
    return cls(rng.standard_normal((3, C, 3, 3)), rng.standard_normal(3), stride, pad)


# name -> (make(rng, C) -> layer, input ndim, needs a 4-D image, goes through the kernels)
LAYERS = {
    "Convolution": (lambda rng, C: conv_layer(rng, C), 4, True),
    "ConvReLU": (lambda rng, C: conv_layer(rng, C, layers.ConvReLU, 2, 2), 4, True),
    "Pooling": (lambda rng, C: layers.Pooling(2, 2, 2, 1), 4, True),
    "AvgPooling": (lambda rng, C: layers.AvgPooling(3, 2, 1, 1), 4, True),
    "Affine": (lambda rng, C: layers.Affine(rng.standard_normal((C * 36, 4)),
                                            rng.standard_normal(4)), 4, False),
    "Relu": (lambda rng, C: layers.Relu(), 4, False),
    "Sigmoid": (lambda rng, C: layers.Sigmoid(), 4, False),
    "BatchNormalization": (lambda rng, C: layers.BatchNormalization(
        rng.standard_normal(C * 36), rng.standard_normal(C * 36)), 4, False),
    "Dropout": (lambda rng, C: layers.Dropout(0.3), 4, False),
}


def run_layer(layer, x, dout_of=None, seed=0):
    """forward then backward (dout: dout_of(out), else the output itself): -> (out, dx)."""
    np.random.seed(seed)  # Dropout's mask
    out = layer.forward(x)
    dout = dout_of(out) if dout_of else np.asarray(out).copy()
    return out, layer.backward(dout)


def variant(a, how):
    """The values of a in another form (same values unless the form changes them)."""
    if how == "strided":
        big = np.zeros(tuple(2 * s + 1 for s in a.shape), a.dtype)
        view = big[tuple(slice(1, None, 2) for _ in a.shape)]
        view[...] = a
        return view
    if how == "reversed":
        flip = (slice(None, None, -1),) * a.ndim
        return np.ascontiguousarray(a[flip])[flip]
    if how == "fortran":
        return np.asfortranarray(a)
    if how == "broadcast":
        return np.broadcast_to(a[:1], a.shape)
    if how == "readonly":
        a = a.copy()
        a.flags.writeable = False
        return a
    if how in ("float32", "float16", "int32", "uint8"):
        return (a * (1 if how.startswith("float") else 20)).astype(how)
    if how == "nan/inf":
        a = a.copy()
        flat = a.reshape(-1)
        flat[::3], flat[1::5], flat[2::7] = np.nan, np.inf, -np.inf
        return a
    raise AssertionError(how)


VARIANTS = ["strided", "reversed", "fortran", "broadcast", "readonly", "float32", "float16",
            "int32", "uint8", "nan/inf"]


def assert_same(got, want, dtype_tol):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape and got.dtype == want.dtype, (got.dtype, want.dtype)
    np.testing.assert_allclose(got, want, rtol=dtype_tol, atol=dtype_tol, equal_nan=True)


def tolerance(*arrays):
    return 2e-4 if any(np.asarray(a).dtype == np.float32 for a in arrays) else 1e-10


@pytest.mark.parametrize("name", list(LAYERS))
@FUZZ
@given(N=st.integers(1, 3), C=st.integers(1, 3), how=st.sampled_from(VARIANTS),
       seed=st.integers(0, 2**32 - 1))
def test_layer_variants_match_plain_inputs(name, N, C, how, seed):
    make, ndim, image = LAYERS[name]
    if name == "BatchNormalization" and N < 2:
        N = 2   # batch statistics of fewer than two samples are NaN or undefined
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C, 6, 6))
    xv = variant(x, how)
    snapshot = np.array(xv, copy=True)
    plain = np.array(xv)  # contiguous, writable, same dtype and values
    layer_seed = int(rng.integers(2**31))
    got = run_layer(make(np.random.default_rng(layer_seed), C), xv)
    want = run_layer(make(np.random.default_rng(layer_seed), C), plain)
    STATS[(name, f"works:{how}")] += 1
    for g, w in zip(got, want):
        assert_same(g, w, tolerance(g, w))
    np.testing.assert_array_equal(xv, snapshot)  # the input was not modified
    if name in ("Convolution", "ConvReLU", "Pooling", "AvgPooling"):
        ref = make(np.random.default_rng(layer_seed), C)
        ref.kernels = R
        for g, w in zip(got, run_layer(ref, plain)):
            assert_same(g, w, tolerance(g, w))


@pytest.mark.parametrize("name", list(LAYERS))
def test_layer_empty_batch(name, rng):
    layer = LAYERS[name][0](rng, 2)
    out, dx = run_layer(layer, np.zeros((0, 2, 6, 6)))
    assert out.shape[0] == 0 and dx.shape == (0, 2, 6, 6)


KERNEL_LAYERS = ["Convolution", "ConvReLU", "Pooling", "AvgPooling"]


@pytest.mark.parametrize("name", KERNEL_LAYERS)
@FUZZ
@given(C=st.integers(1, 3), bad=st.sampled_from(
    ["3-D", "5-D", "bool", "complex", "object", "str", "channels", "dout shape", "dout 3-D",
     "dout complex", "window larger than input"]), seed=st.integers(0, 2**32 - 1))
def test_layer_bad_inputs_raise_naming_the_argument(names_argument, name, C, bad, seed):
    rng = np.random.default_rng(seed)
    layer = LAYERS[name][0](rng, C)
    x = rng.standard_normal((2, C, 6, 6))
    expected = (ValueError, TypeError)
    names = ("x",)
    if bad == "3-D":
        x = x[0]
    elif bad == "5-D":
        x = x[None]
    elif bad in ("bool", "complex", "object", "str"):
        x = x.astype({"bool": bool, "complex": complex, "object": object, "str": str}[bad])
    elif bad == "channels":
        assume(name.startswith("Conv"))
        x = rng.standard_normal((2, C + 1, 6, 6))
        names = ("channels",)
    elif bad == "window larger than input":
        layer.pad = 0
        if name.endswith("Pooling"):
            layer.pool_h = layer.pool_w = 3
        x = x[:, :, :2, :2]
        names = ("larger than the padded input",)
    STATS[(name, f"raises:{bad}")] += 1
    if bad.startswith("dout"):
        out = layer.forward(x)
        dout = {"dout shape": np.ones(out.shape[:3] + (out.shape[3] + 1,)),
                "dout 3-D": np.ones(out.shape[1:]),
                "dout complex": out.astype(complex)}[bad]
        names = ("dout",)
        with pytest.raises(expected) as info:
            layer.backward(dout)
    else:
        with pytest.raises(expected) as info:
            layer.forward(x)
    assert any(names_argument(str(info.value), n) for n in names), str(info.value)


def test_names_argument_wants_the_whole_word(names_argument):
    numpy_message = "could not broadcast input array from shape (3,) into shape (4,)"
    assert "b" in numpy_message and "x" not in numpy_message
    assert not names_argument(numpy_message, "b") and not names_argument("max(x)", "max")
    assert names_argument("b must have 4 entries (one per filter), got (3,)", "b")
    assert names_argument("x must be a 4-D array (N, C, H, W)", "x")
    assert names_argument("the window is larger than the padded input", "larger than the padded input")


@pytest.mark.parametrize("name", list(LAYERS) + ["SoftmaxWithLoss"])
def test_backward_before_forward_raises(name, rng):
    if name == "SoftmaxWithLoss":
        layer = layers.SoftmaxWithLoss()
        call = layer.backward
    else:
        layer = LAYERS[name][0](rng, 2)
        dout = np.ones((2, 4) if name == "Affine" else (2, 2, 6, 6))  # shaped like an output
        call = lambda: layer.backward(dout)  # noqa: E731
    with pytest.raises(RuntimeError, match=r"backward\(\) called before forward"):
        call()


@pytest.mark.parametrize("labels", [
    pytest.param([1, 10], id="label == K"),
    pytest.param([1, -1], id="negative label"),
    pytest.param([1.0, 2.0], id="float labels"),
    pytest.param([1, 2, 3], id="too many labels"),
    pytest.param(["1", "2"], id="strings"),
    pytest.param(np.ones((2, 9)), id="one-hot of the wrong width"),
])
def test_softmax_with_loss_refuses_bad_labels(labels, rng):
    with pytest.raises(ValueError, match=r"\bt must"):
        layers.SoftmaxWithLoss().forward(rng.standard_normal((2, 10)), np.asarray(labels))


def test_softmax_with_loss_nan_and_inf_propagate(rng):
    scores = rng.standard_normal((3, 10))
    scores[0, 2] = np.nan
    scores[1, 3] = np.inf
    layer = layers.SoftmaxWithLoss()
    loss = layer.forward(scores, np.array([1, 2, 3]))
    assert np.isnan(loss)
    assert np.isnan(layer.backward()[:2]).any()


# ----------------------------------------------------------------------------------------- networks

TINY = {"filter_num": 3, "filter_size": 3, "pad": 1, "stride": 1}


def simple(dtype=np.float64):
    np.random.seed(3)
    return networks.SimpleConvNet(input_dim=(1, 8, 8), conv_param=TINY, hidden_size=6,
                                  dtype=dtype)


def deep():
    np.random.seed(3)
    return networks.DeepConvNet()


NETWORKS = {"SimpleConvNet": (simple, (1, 8, 8)), "DeepConvNet": (deep, (1, 28, 28))}


@pytest.mark.parametrize("name", list(NETWORKS))
@settings(max_examples=max(8, settings.default.max_examples // 8))
@given(N=st.integers(1, 3), how=st.sampled_from(VARIANTS[:-1]), seed=st.integers(0, 2**32 - 1))
def test_network_variants_match_plain_inputs(name, N, how, seed):
    make, shape = NETWORKS[name]
    rng = np.random.default_rng(seed)
    x = variant(rng.random((N,) + shape), how)
    t = rng.integers(0, 10, N)
    net_a, net_b = make(), make()
    plain = np.array(x)
    STATS[(name, f"works:{how}")] += 1
    assert_same(net_a.predict(x), net_b.predict(plain), 1e-10)
    np.random.seed(seed % 2**31)
    ga = net_a.gradient(x, t)
    np.random.seed(seed % 2**31)
    gb = net_b.gradient(plain, t)
    for key in gb:
        assert_same(ga[key], gb[key], 1e-10)


@pytest.mark.parametrize("name", list(NETWORKS))
@pytest.mark.parametrize("bad", ["flattened (N, 784)", "channels", "3-D", "bool", "complex",
                                 "object", "empty"])
def test_network_bad_inputs(name, bad):
    make, (C, H, W) = NETWORKS[name]
    net = make()
    x = np.random.default_rng(0).random((2, C, H, W))
    x = {"flattened (N, 784)": x.reshape(2, -1), "channels": np.concatenate([x, x], axis=1),
         "3-D": x[0], "bool": x > 0.5, "complex": x.astype(complex), "object": x.astype(object),
         "empty": x[:0]}[bad]
    STATS[(name, f"raises:{bad}")] += 1
    if bad == "empty":  # an empty batch predicts nothing
        assert net.predict(x).shape == (0, 10)
        return
    with pytest.raises((ValueError, TypeError)):
        net.predict(x)
    with pytest.raises((ValueError, TypeError)):
        net.gradient(x, np.array([1, 2]))


# --------------------------------------------------------------------------------------- optimizers

OPTIMIZERS = ["SGD", "Momentum", "Nesterov", "AdaGrad", "RMSprop", "Adam"]


@pytest.mark.parametrize("name", OPTIMIZERS)
@FUZZ
@given(dtype=st.sampled_from([np.float32, np.float64]), grad_dtype=st.sampled_from(
    [np.float32, np.float64, np.float16, np.int64]), special=st.booleans(),
    how=st.sampled_from(["strided", "reversed", "broadcast", "readonly", "plain"]),
    seed=st.integers(0, 2**32 - 1))
def test_optimizer_updates(name, dtype, grad_dtype, special, how, seed):
    """Any real gradient layout/dtype updates in place, keeping the parameter's dtype and object;
    NaN/Inf gradients propagate; matches the same update on plain copies."""
    rng = np.random.default_rng(seed)
    params = {"W": rng.standard_normal((3, 4)).astype(dtype), "b": rng.standard_normal(4).astype(dtype)}
    grads = {k: (rng.standard_normal(v.shape) * 3).astype(grad_dtype) for k, v in params.items()}
    if special and grad_dtype != np.int64:
        grads["W"][0, 0], grads["W"][1, 1] = np.nan, np.inf
    gv = {k: (v if how == "plain" else variant(v, how)) for k, v in grads.items()}
    twin = {k: v.copy() for k, v in params.items()}
    objects = {k: v for k, v in params.items()}
    opt_a, opt_b = getattr(optimizer, name)(), getattr(optimizer, name)()
    for _ in range(2):
        opt_a.update(params, gv)
        opt_b.update(twin, {k: np.array(v) for k, v in gv.items()})
    STATS[(name, f"works:{how}")] += 1
    for key in params:
        assert params[key] is objects[key] and params[key].dtype == dtype
        np.testing.assert_array_equal(params[key], twin[key])


BAD_GRADIENTS = {
    "transposed": ({"W": np.ones((4, 3)), "b": np.zeros(4)}, (ValueError, TypeError)),
    "complex": ({"W": np.ones((3, 4), complex), "b": np.zeros(4)}, (ValueError, TypeError)),
    "b missing": ({"W": np.ones((3, 4))}, (KeyError, ValueError)),
    "b wrong shape": ({"W": np.ones((3, 4)), "b": np.zeros(5)}, (ValueError, TypeError)),
}


@pytest.mark.parametrize("name", OPTIMIZERS)
@pytest.mark.parametrize("bad", list(BAD_GRADIENTS))
def test_optimizer_bad_gradients(name, bad):
    params = {"W": np.ones((3, 4)), "b": np.zeros(4)}
    grads, expected = BAD_GRADIENTS[bad]
    with pytest.raises(expected):
        getattr(optimizer, name)().update(params, grads)
    with pytest.raises((ValueError, TypeError)):
        getattr(optimizer, name)(lr=-1.0)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_failed_optimizer_update_changes_nothing(name):
    params = {"W": np.ones((3, 4)), "b": np.zeros(4)}
    opt = getattr(optimizer, name)()
    opt.update(params, {"W": np.ones((3, 4)), "b": np.ones(4)})
    before = {k: v.copy() for k, v in params.items()}
    for grads, expected in BAD_GRADIENTS.values():
        with pytest.raises(expected):
            opt.update(params, grads)
        for key in params:
            np.testing.assert_array_equal(params[key], before[key])
    opt.update(params, {"W": np.ones((3, 4)), "b": np.ones(4)})  # still usable


# ------------------------------------------------------------------------------------------ Trainer

@pytest.mark.parametrize("change, expected", [
    ({"mini_batch_size": 0}, ValueError),
    ({"mini_batch_size": -5}, ValueError),
    ({"mini_batch_size": 2.5}, TypeError),
    ({"epochs": -1}, ValueError),
    ({"epochs": float("nan")}, ValueError),
    ({"optimizer": "adamw"}, ValueError),
    ({"optimizer": object()}, TypeError),
    ({"t_train": np.zeros(3, int)}, ValueError),
    ({"t_test": np.zeros(5, int)}, ValueError),
    ({"x_train": np.zeros((0, 1, 8, 8)), "t_train": np.zeros(0, int)}, ValueError),
], ids=["batch 0", "batch -5", "batch 2.5", "epochs -1", "epochs nan", "unknown optimizer",
        "optimizer object", "t_train too short", "t_test too long", "empty training set"])
def test_trainer_bad_arguments(change, expected):
    rng = np.random.default_rng(0)
    kwargs = dict(x_train=rng.random((10, 1, 8, 8)), t_train=rng.integers(0, 10, 10),
                  x_test=rng.random((4, 1, 8, 8)), t_test=rng.integers(0, 10, 4),
                  epochs=1, mini_batch_size=5, verbose=False)
    kwargs.update(change)
    STATS[("Trainer", f"raises:{sorted(change)}")] += 1
    with pytest.raises(expected):  # in the constructor, before any training
        trainer.Trainer(simple(), **kwargs)
