"""cnncore.export: cnncore -> PyTorch -> cnncore and cnncore -> ONNX give predict()'s numbers.

Compared everywhere: the target's output against ``network.predict(x)`` with RTOL[dtype] relative
to the output's largest magnitude (float32 1e-5, float64 1e-12). ONNX float32 runs on onnxruntime;
onnxruntime has no float64 convolution, so float64 graphs run on onnx's reference evaluator.
The extras are optional: without them these tests skip, except under .ci/run
(CNNCORE_REQUIRE_EXPORT=1), where a missing package fails the run.
"""
import os
import re
import subprocess
import sys
from collections import OrderedDict

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cnncore.layers import (GELU, Affine, AvgPooling, BatchNormalization, Convolution, ConvReLU,
                            Dropout, Flatten, GlobalAvgPooling, LeakyReLU, Pooling, Relu, Sigmoid,
                            SpatialBatchNormalization)
from cnncore.networks import (DeepConvNet, LeNet5, MultiLayerNet, MultiLayerNetExtend, Sequential,
                              SimpleConvNet, cifar10_cnn, flexible_cnn, lenet5)

RTOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}


def _need(name):
    if os.environ.get("CNNCORE_REQUIRE_EXPORT") == "1":
        return __import__(name)
    return pytest.importorskip(name)


torch = _need("torch")
onnx = _need("onnx")
ort = _need("onnxruntime")
from onnx.reference import ReferenceEvaluator  # noqa: E402

from cnncore.export import (TextbookDropout, from_torch, to_onnx, to_torch,  # noqa: E402
                            torch_state_dict)

nn = torch.nn
F = nn.functional


def assert_close(got, want):
    want = np.asarray(want)
    assert got.dtype == want.dtype and got.shape == want.shape
    rtol = RTOL[want.dtype]
    scale = max(float(np.abs(want).max(initial=0.0)), 1.0)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * scale)


def run_torch(model, x):
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def run_onnx(path, x):
    if x.dtype == np.float32:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(["scores"], {"x": x})[0]
    return ReferenceEvaluator(str(path)).run(["scores"], {"x": x})[0]


def random_state(network, rng):
    """Random BatchNorm parameters and running statistics (a trained network's are not 1 and 0)."""
    for layer in network._layer_list():
        if isinstance(layer, BatchNormalization):
            n, dtype = layer.gamma.shape[0], layer.gamma.dtype
            layer.gamma[...] = rng.uniform(0.5, 1.5, n)
            layer.beta[...] = rng.normal(0, 0.5, n)
            layer.running_mean = rng.normal(0, 0.3, n).astype(dtype)
            layer.running_var = rng.uniform(0.3, 2.0, n).astype(dtype)
    for value in network.params.values():
        if value.ndim == 1 and not value.any():
            value[...] = rng.normal(0, 0.1, value.shape)   # biases start at zero
    return network


def check_everything(network, tmp_path, rng, batch=3):
    """torch eval, the round trip through torch, and ONNX all give predict()'s numbers."""
    dtype = next(iter(network.params.values())).dtype
    x = rng.standard_normal((batch, *network.input_dim)).astype(dtype)
    want = network.predict(x)

    model = to_torch(network)
    assert not model.training
    assert_close(run_torch(model, x), want)

    back = from_torch(model, network.input_dim)
    assert sorted(back.params) == sorted(network.params)   # MultiLayerNetExtend lists gammas last
    for key, value in network.params.items():
        assert back.params[key].dtype == value.dtype
        np.testing.assert_array_equal(back.params[key], value)
    for key, value in network.buffers().items():
        np.testing.assert_array_equal(back.buffers()[key], value)
    assert_close(back.predict(x), want)

    path = tmp_path / "model.onnx"
    model_proto = to_onnx(network, path)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    assert model_proto.graph.output[0].name == "scores"
    assert_close(run_onnx(path, x), want)
    return model, back


# ------------------------------------------------------------------------------ built-in networks

BUILT_IN = {
    "SimpleConvNet": lambda d: SimpleConvNet(dtype=d),
    "SimpleConvNet fused": lambda d: SimpleConvNet(dtype=d, use_fused=True),
    "DeepConvNet": lambda d: DeepConvNet(dtype=d),
    "LeNet5": lambda d: LeNet5(dtype=d),
    "LeNet5 avg fused": lambda d: LeNet5(dtype=d, pool="avg", use_fused=True),
    "lenet5": lambda d: lenet5(dtype=d),
    "flexible_cnn": lambda d: flexible_cnn(dtype=d),
    "cifar10_cnn": lambda d: cifar10_cnn(dtype=d),
    "MultiLayerNet gelu": lambda d: MultiLayerNet(784, [40, 30], 10, "gelu", dtype=d),
    "MultiLayerNet sigmoid": lambda d: MultiLayerNet(784, [40], 10, "sigmoid", dtype=d),
    "MultiLayerNet leaky_relu": lambda d: MultiLayerNet(784, [40], 10, "leaky_relu", dtype=d),
    "MultiLayerNetExtend": lambda d: MultiLayerNetExtend(784, [40, 30], 10, use_dropout=True,
                                                         use_batchnorm=True, dtype=d),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(BUILT_IN))
def test_built_in_networks(name, dtype, tmp_path, rng):
    network = random_state(BUILT_IN[name](dtype), rng)
    model, back = check_everything(network, tmp_path, rng)
    if isinstance(network.layers, dict):
        assert list(back.layers) == list(network.layers)
        assert [type(layer) for layer in back.layers.values()] == \
            [type(layer) for layer in network.layers.values()]
    else:   # DeepConvNet's list: positions as torch names, the textbook's keys coming back
        assert [type(layer) for layer in back.layers.values()] == \
            [type(layer) for layer in network.layers]


# ------------------------------------------------------------------------------- random stacks

def _map_layer(rng, kind, shape, dtype):
    C = shape[0]
    if kind in ("conv", "convrelu"):
        FN, k = int(rng.integers(1, 5)), int(rng.integers(1, 4))
        W = rng.normal(0, 0.5, (FN, C, k, int(rng.integers(1, 4)))).astype(dtype)
        cls = Convolution if kind == "conv" else ConvReLU
        return cls(W, rng.normal(0, 0.1, FN).astype(dtype), int(rng.integers(1, 3)),
                   int(rng.integers(0, 3)),
                   padding_mode=str(rng.choice(["zeros", "replicate"])))
    if kind in ("max", "avg"):
        ph, pw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        cls = Pooling if kind == "max" else AvgPooling
        return cls(ph, pw, int(rng.integers(1, 3)), int(rng.integers(0, min(ph, pw) // 2 + 1)))
    if kind == "bn":
        n = int(np.prod(shape))
        return BatchNormalization(np.ones(n, dtype), np.zeros(n, dtype), momentum=0.8)
    if kind == "sbn":
        return SpatialBatchNormalization(np.ones(C, dtype), np.zeros(C, dtype))
    return _activation(rng, kind)


def _activation(rng, kind):
    return {"relu": Relu, "sigmoid": Sigmoid, "gelu": GELU,
            "leaky": lambda: LeakyReLU(float(rng.uniform(0.01, 0.3))),
            "dropout": lambda: Dropout(float(rng.uniform(0, 0.9)))}[kind]()


MAP_KINDS = ["conv", "convrelu", "max", "avg", "bn", "sbn", "relu", "sigmoid", "gelu", "leaky",
             "dropout"]
FLAT_KINDS = ["affine", "bn", "sbn", "relu", "sigmoid", "gelu", "leaky", "dropout"]


def random_stack(seed, dtype):
    """A random Sequential using every exportable layer type somewhere over the examples."""
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(1, 4)), int(rng.integers(5, 11)), int(rng.integers(5, 11)))
    layers = []
    current = shape
    for _ in range(int(rng.integers(1, 6))):
        layer = _map_layer(rng, str(rng.choice(MAP_KINDS)), current, dtype)
        try:
            out = layer.output_shape(current)
        except ValueError:
            continue
        layers.append(layer)
        current = out
    end = str(rng.choice(["gap", "flatten", "none"]))
    if end == "gap":
        layers.append(GlobalAvgPooling())
    elif end == "flatten":
        layers.append(Flatten())
    current = (int(np.prod(current)) if end != "gap" else current[0],)
    for i in range(int(rng.integers(0, 4))):
        kind = "affine" if end == "none" and i == 0 else str(rng.choice(FLAT_KINDS))
        D = current[0]
        if kind == "affine":
            M = int(rng.integers(2, 9))
            layers.append(Affine(rng.normal(0, 0.5, (D, M)).astype(dtype),
                                 rng.normal(0, 0.1, M).astype(dtype)))
            current = (M,)
        elif kind in ("bn", "sbn"):
            cls = BatchNormalization if kind == "bn" else SpatialBatchNormalization
            layers.append(cls(np.ones(D, dtype), np.zeros(D, dtype)))
        else:
            layers.append(_activation(rng, kind))
    layers.append(Affine(rng.normal(0, 0.5, (current[0], 4)).astype(dtype),
                         np.zeros(4, dtype)))
    network = Sequential(layers, input_dim=shape, dtype=dtype)
    return random_state(network, rng)


@settings(max_examples=int(os.environ.get("EXPORT_EXAMPLES", 40)))
@given(seed=st.integers(0, 2**32 - 1), dtype=st.sampled_from([np.float32, np.float64]))
def test_random_stacks(seed, dtype, tmp_path_factory):
    network = random_stack(seed, dtype)
    rng = np.random.default_rng(seed)
    check_everything(network, tmp_path_factory.mktemp("stack"), rng, batch=4)


# ------------------------------------------------------------------------------ the textbook rules

def test_affine_weight_is_transposed_for_linear():
    net = Sequential([Affine(np.arange(12.0).reshape(3, 4), np.zeros(4))], input_dim=(3,))
    linear = to_torch(net).Affine1
    assert tuple(linear.weight.shape) == (4, 3)
    np.testing.assert_array_equal(linear.weight.detach().numpy(), net.params["W1"].T)


def test_textbook_dropout_scales_at_test_time_and_nn_dropout_is_dropped(rng):
    x = rng.standard_normal((5, 6))
    net = Sequential([Affine(rng.standard_normal((6, 3)), rng.standard_normal(3)), Dropout(0.4)],
                     input_dim=(6,))
    model = to_torch(net)
    assert type(model.Dropout1) is TextbookDropout
    assert_close(run_torch(model, x), net.predict(x))          # = (x W + b) * 0.6
    assert_close(run_torch(model, x), (x @ net.params["W1"] + net.params["b1"]) * 0.6)
    model.train()   # training: dropped values are zero, the others unscaled
    y = run_torch(model, x)
    plain = x @ net.params["W1"] + net.params["b1"]
    assert np.all((y == 0) | np.isclose(y, plain))

    # PyTorch's own dropout is the identity in eval: it becomes no layer (a cnncore Dropout would
    # scale by 1 - p).
    torch_model = nn.Sequential(nn.Linear(6, 3).double(), nn.Dropout(0.5)).eval()
    back = from_torch(torch_model, (6,))
    assert [type(layer) for layer in back.layers.values()] == [Affine]
    assert_close(back.predict(x), run_torch(torch_model, x))


def test_a_saved_torch_model_loads_back(tmp_path, rng):
    net = DeepConvNet(dtype=np.float32)
    torch.save(to_torch(net), tmp_path / "deep.pt")     # TextbookDropout pickles as cnncore.export's
    model = torch.load(tmp_path / "deep.pt", weights_only=False)
    assert type(model[-1]).__module__ == "cnncore.export"
    x = rng.standard_normal((2, 1, 28, 28)).astype(np.float32)
    assert_close(run_torch(model, x), net.predict(x))


def test_per_activation_batch_norm_is_exported_as_its_arithmetic(tmp_path, rng):
    net = random_state(Sequential([Convolution(rng.standard_normal((2, 1, 3, 3)), np.zeros(2)),
                                   BatchNormalization(np.ones(2 * 4 * 4), np.zeros(32))],
                                  input_dim=(1, 6, 6)), rng)
    model = to_torch(net)
    assert isinstance(model.BatchNorm1, nn.BatchNorm1d) and model.BatchNorm1.num_features == 32
    assert model.BatchNorm1.eps == 1e-6
    proto = to_onnx(net, tmp_path / "bn.onnx")
    ops = [node.op_type for node in proto.graph.node]
    assert "BatchNormalization" not in ops and ops[-1] == "Reshape"
    x = rng.standard_normal((3, 1, 6, 6))
    assert_close(run_onnx(tmp_path / "bn.onnx", x), net.predict(x))
    # Per channel would be another function: the torch model is not a BatchNorm2d in disguise.
    per_channel = SpatialBatchNormalization(np.ones(2), np.zeros(2))
    assert not np.allclose(per_channel.forward(net.layers["Conv1"].forward(x), False),
                           net.predict(x))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_pooling_never_picks_padding(dtype, tmp_path):
    net = Sequential([Pooling(3, 3, stride=2, pad=1)], input_dim=(2, 5, 5))
    x = -1.0 - np.arange(2 * 2 * 25, dtype=dtype).reshape(2, 2, 5, 5)   # every value below 0
    want = net.predict(x)
    assert np.all(want < 0)
    assert_close(run_torch(to_torch(net, dtype=dtype), x), want)
    to_onnx(net, tmp_path / "pool.onnx", dtype=dtype)
    assert_close(run_onnx(tmp_path / "pool.onnx", x), want)


def test_average_pooling_counts_padding(tmp_path):
    net = Sequential([AvgPooling(2, 2, stride=2, pad=1)], input_dim=(1, 4, 4), dtype=np.float32)
    x = np.ones((1, 1, 4, 4), np.float32)
    want = net.predict(x)
    assert want[0, 0, 0, 0] == 0.25          # one real cell of four
    assert_close(run_torch(to_torch(net), x), want)
    to_onnx(net, tmp_path / "avg.onnx", dtype=np.float32)   # no parameters: float64 by default
    assert_close(run_onnx(tmp_path / "avg.onnx", x), want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_replicate_padding(dtype, tmp_path, rng):
    W = rng.standard_normal((3, 2, 3, 3)).astype(dtype)
    net = Sequential([Convolution(W, np.zeros(3, dtype), 1, 2, padding_mode="replicate")],
                     input_dim=(2, 5, 5))
    assert to_torch(net).Conv1.padding_mode == "replicate"
    proto = to_onnx(net, tmp_path / "rep.onnx")
    assert [node.op_type for node in proto.graph.node] == ["Pad", "Conv"]
    x = rng.standard_normal((2, 2, 5, 5)).astype(dtype)
    assert_close(run_onnx(tmp_path / "rep.onnx", x), net.predict(x))


def test_fused_conv_relu_is_conv_then_relu(tmp_path):
    net = LeNet5(use_fused=True, dtype=np.float32)
    ops = [node.op_type for node in to_onnx(net, tmp_path / "f.onnx").graph.node]
    assert ops[:3] == ["Conv", "Relu", "MaxPool"]
    assert [name for name, _ in to_torch(net).named_children()][:3] == ["Conv1", "Conv1_relu",
                                                                       "Pool1"]


def test_onnx_names_parameters_by_their_keys(tmp_path):
    net = MultiLayerNetExtend(20, [8], 3, use_batchnorm=True)
    names = {init.name for init in to_onnx(net, tmp_path / "n.onnx").graph.initializer}
    assert {"W1", "b1", "W2", "b2", "gamma1", "beta1", "BatchNorm1.running_mean",
            "BatchNorm1.running_var"} <= names


def test_onnx_opsets(tmp_path, rng):
    net = random_state(SimpleConvNet(dtype=np.float32), rng)
    x = rng.standard_normal((2, 1, 28, 28)).astype(np.float32)
    for opset in (13, 17, 20):   # 20: the newest of the oldest onnx / onnxruntime the extra allows
        proto = to_onnx(net, tmp_path / f"o{opset}.onnx", opset=opset)
        assert proto.opset_import[0].version == opset
        assert_close(run_onnx(tmp_path / f"o{opset}.onnx", x), net.predict(x))
    for bad in (12, True, "17", onnx.defs.onnx_opset_version() + 1):
        with pytest.raises(ValueError, match="opset"):
            to_onnx(net, tmp_path / "bad.onnx", opset=bad)
    assert not (tmp_path / "bad.onnx").exists()


def test_export_in_another_dtype(tmp_path, rng):
    net = random_state(SimpleConvNet(), rng)                     # float64
    x = rng.standard_normal((2, 1, 28, 28))
    to_onnx(net, tmp_path / "f32.onnx", dtype="float32")
    got = run_onnx(tmp_path / "f32.onnx", x.astype(np.float32))
    np.testing.assert_allclose(got, net.predict(x), rtol=1e-4, atol=1e-4)
    assert to_torch(net, dtype=np.float32).Conv1.weight.dtype == torch.float32


# ----------------------------------------------------------------------------------- from PyTorch

def test_from_torch_lecture_style_sequential(rng):
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2, 2),
        nn.Conv2d(6, 16, 5), nn.BatchNorm2d(16), nn.LeakyReLU(0.1), nn.AvgPool2d(2, 2),
        nn.Conv2d(16, 32, 3, padding=1, padding_mode="replicate"), nn.GELU(approximate="tanh"),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(32, 20), nn.BatchNorm1d(20), nn.Sigmoid(), nn.Dropout(0.3), nn.Linear(20, 10))
    with torch.no_grad():           # running statistics as after training
        for bn in (model[4], model[12]):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.5, 0.5)
    model.eval()
    net = from_torch(model, (1, 28, 28))
    assert net.params["W1"].dtype == np.float32
    assert [type(layer).__name__ for layer in net.layers.values()] == [
        "Convolution", "Relu", "Pooling", "Convolution", "SpatialBatchNormalization", "LeakyReLU",
        "AvgPooling", "Convolution", "GELU", "GlobalAvgPooling", "Affine", "BatchNormalization",
        "Sigmoid", "Affine"]
    x = rng.standard_normal((4, 1, 28, 28)).astype(np.float32)
    assert_close(net.predict(x), run_torch(model, x))   # eps 1e-5 folded into running_var


def test_from_torch_nested_and_named(rng):
    model = nn.Sequential(OrderedDict(
        features=nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU()),
        head=nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 5)))).double().eval()
    net = from_torch(model, (2, 6, 6))
    assert list(net.layers) == ["Conv1", "Relu1", "Flatten1", "Affine1"]   # digits: textbook keys
    x = rng.standard_normal((2, 2, 6, 6))
    assert_close(net.predict(x), run_torch(model, x))
    named = nn.Sequential(OrderedDict(conv=nn.Conv2d(2, 3, 3), act=nn.ReLU())).double()
    assert list(from_torch(named, (2, 6, 6)).layers) == ["conv", "act"]


@pytest.mark.parametrize("module, message", [
    (nn.Sequential(nn.Tanh()), "'0' \\(Tanh\\) has no cnncore layer"),
    (nn.Sequential(nn.Conv2d(2, 2, 3, groups=2)), "groups"),
    (nn.Sequential(nn.Conv2d(2, 2, 3, padding_mode="circular")), "padding_mode"),
    (nn.Sequential(nn.Conv2d(2, 2, 3, stride=(1, 2))), "stride"),
    (nn.Sequential(nn.MaxPool2d(2, ceil_mode=True)), "ceil_mode"),
    (nn.Sequential(nn.AvgPool2d(2, padding=1, count_include_pad=False)), "count_include_pad"),
    (nn.Sequential(nn.GELU()), "tanh approximation"),
    (nn.Sequential(nn.Linear(6, 3)), "last axis"),
    (nn.Sequential(nn.BatchNorm2d(2, track_running_stats=False)), "track_running_stats"),
    (nn.Sequential(nn.AdaptiveAvgPool2d(2)), "AdaptiveAvgPool2d\\(1\\)"),
    (nn.Sequential(nn.Flatten(2)), "Flatten\\(1, -1\\)"),
])
def test_from_torch_refuses_what_cnncore_cannot_compute(module, message):
    with pytest.raises(ValueError, match=message):
        from_torch(module, (2, 6, 6))


def test_from_torch_checks_its_arguments():
    with pytest.raises(ValueError, match="input_dim"):
        from_torch(nn.Sequential(nn.ReLU()), None)
    with pytest.raises(ValueError, match="input_dim"):
        from_torch(nn.Sequential(nn.ReLU()), (1, 2))
    with pytest.raises(TypeError, match="torch.nn.Module"):
        from_torch("model.pt", (1, 28, 28))
    with pytest.raises(ValueError, match="dtype"):
        from_torch(nn.Sequential(nn.ReLU()), (3,), dtype=np.int32)
    with pytest.raises(ValueError, match="no layer"):
        from_torch(nn.Sequential(nn.Dropout()), (3,))


def test_from_torch_batch_norm_eps(rng):
    bn = nn.BatchNorm2d(2, eps=1e-3).eval()
    with torch.no_grad():
        bn.running_var.copy_(torch.tensor([0.2, 3.0]))
    net = from_torch(nn.Sequential(bn).double(), (2, 3, 3))
    x = rng.standard_normal((2, 2, 3, 3))
    assert_close(net.predict(x), run_torch(nn.Sequential(bn).double(), x))
    np.testing.assert_allclose(net.buffers()["BatchNorm1.running_var"],
                               [0.2 + 1e-3 - 1e-6, 3.0 + 1e-3 - 1e-6], rtol=1e-7)
    tiny = nn.BatchNorm2d(2, eps=1e-8).eval()
    tiny.running_var.zero_()
    with pytest.raises(ValueError, match="eps"):
        from_torch(nn.Sequential(tiny), (2, 3, 3))


def _torch_map_module(rng, kind, C):
    k = int(rng.integers(1, 4))
    if kind == "conv":
        return nn.Conv2d(C, int(rng.integers(1, 5)), k, stride=int(rng.integers(1, 3)),
                         padding=int(rng.integers(0, 3)),
                         padding_mode=str(rng.choice(["zeros", "replicate"])))
    if kind == "max":
        return nn.MaxPool2d(k, int(rng.integers(1, 3)), int(rng.integers(0, k // 2 + 1)))
    if kind == "avg":
        return nn.AvgPool2d(k, int(rng.integers(1, 3)), int(rng.integers(0, k // 2 + 1)))
    if kind == "bn":
        return _torch_bn(nn.BatchNorm2d(C, eps=float(rng.choice([1e-5, 1e-3, 1e-6])),
                                        momentum=float(rng.uniform(0.05, 0.5))), rng)
    return _torch_activation(rng, kind)


def _torch_bn(bn, rng):
    n = bn.num_features
    with torch.no_grad():
        bn.weight.copy_(torch.from_numpy(rng.uniform(0.5, 1.5, n)))
        bn.bias.copy_(torch.from_numpy(rng.normal(0, 0.5, n)))
        bn.running_mean.copy_(torch.from_numpy(rng.normal(0, 0.3, n)))
        bn.running_var.copy_(torch.from_numpy(rng.uniform(0.3, 2.0, n)))
    return bn


def _torch_activation(rng, kind):
    return {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "identity": nn.Identity,
            "gelu": lambda: nn.GELU(approximate="tanh"),
            "leaky": lambda: nn.LeakyReLU(float(rng.uniform(0.01, 0.3))),
            "dropout": lambda: nn.Dropout(float(rng.uniform(0, 0.9))),
            "textbook": lambda: TextbookDropout(float(rng.uniform(0, 0.9)))}[kind]()


TORCH_ACTIVATIONS = ["relu", "sigmoid", "identity", "gelu", "leaky", "dropout", "textbook"]


def random_torch_stack(seed):
    """A random nn.Sequential of the modules from_torch takes (not shaped by to_torch)."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    shape = (int(rng.integers(1, 4)), int(rng.integers(5, 11)), int(rng.integers(5, 11)))
    modules = []
    probe = torch.zeros(1, *shape)
    for _ in range(int(rng.integers(1, 6))):
        kind = str(rng.choice(["conv", "max", "avg", "bn", *TORCH_ACTIVATIONS]))
        module = _torch_map_module(rng, kind, probe.shape[1])
        try:
            out = module.eval()(probe)
        except RuntimeError:       # the window no longer fits
            continue
        modules.append(module)
        probe = out
    modules += ([nn.AdaptiveAvgPool2d(1), nn.Flatten()] if rng.random() < 0.3 else [nn.Flatten()])
    D = int(np.prod(modules[-2](probe).shape[1:])) if len(modules) > 1 and isinstance(
        modules[-2], nn.AdaptiveAvgPool2d) else int(np.prod(probe.shape[1:]))
    for _ in range(int(rng.integers(0, 4))):
        kind = str(rng.choice(["linear", "bn", *TORCH_ACTIVATIONS]))
        if kind == "linear":
            M = int(rng.integers(2, 9))
            modules.append(nn.Linear(D, M))
            D = M
        elif kind == "bn":
            modules.append(_torch_bn(nn.BatchNorm1d(D, eps=float(rng.choice([1e-5, 1e-6]))), rng))
        else:
            modules.append(_torch_activation(rng, kind))
    modules.append(nn.Linear(D, 3))
    return nn.Sequential(*modules).eval(), shape


@settings(max_examples=int(os.environ.get("EXPORT_EXAMPLES", 40)))
@given(seed=st.integers(0, 2**32 - 1), dtype=st.sampled_from([np.float32, np.float64]))
def test_random_torch_stacks(seed, dtype):
    model, shape = random_torch_stack(seed)
    model = model.to(torch.float64 if dtype == np.float64 else torch.float32)
    net = from_torch(model, shape)
    assert {value.dtype for value in net.params.values()} == {np.dtype(dtype)}
    x = np.random.default_rng(seed).standard_normal((4, *shape)).astype(dtype)
    assert_close(net.predict(x), run_torch(model, x))


# ------------------------------------------------------------------ weights into the user's module

class LectureLeNet(nn.Module):
    """The lecture's PyTorch LeNet-5, written as a class with F.relu in forward."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.conv3 = nn.Conv2d(16, 120, 5)
        self.pool = nn.MaxPool2d(2, 2)
        self.fc1 = nn.Linear(120, 84)
        self.fc2 = nn.Linear(84, 10)

    def forward(self, x):
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = F.relu(self.conv3(x))
        x = F.relu(self.fc1(torch.flatten(x, 1)))
        return self.fc2(x)


def test_from_torch_reads_the_lecture_class(rng):
    torch.manual_seed(1)
    model = LectureLeNet().eval()
    net = from_torch(model, (1, 28, 28))
    assert list(net.layers) == ["Conv1", "Relu1", "Pool1", "Conv2", "Relu2", "Pool2", "Conv3",
                                "Relu3", "Flatten1", "Affine1", "Relu4", "Affine2"]
    x = rng.standard_normal((3, 1, 28, 28)).astype(np.float32)
    assert_close(net.predict(x), run_torch(model, x))


class FunctionalNet(nn.Module):
    """Functions instead of modules: F.max_pool2d, x.view(x.size(0), -1), F.dropout, x.relu()."""

    def __init__(self, view):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 3 * 3, 5)
        self.drop = nn.Dropout(0.5)
        self.view = view

    def forward(self, x):
        x = F.max_pool2d(F.leaky_relu(self.conv(x), 0.2), 2)
        x = self.view(x)
        x = F.dropout(self.drop(x), 0.3, training=self.training)
        return torch.sigmoid(self.fc(x).relu())



@pytest.mark.parametrize("view", [lambda x: x.view(x.size(0), -1), lambda x: x.reshape(-1, 36),
                                  lambda x: x.view(x.shape[0], 36), lambda x: torch.flatten(x, 1),
                                  lambda x: x.flatten(1)])
def test_from_torch_reads_functions_in_forward(view, rng):
    model = FunctionalNet(view).double().eval()
    net = from_torch(model, (2, 6, 6))
    assert [type(layer).__name__ for layer in net.layers.values()] == [
        "Convolution", "LeakyReLU", "Pooling", "Flatten", "Affine", "Relu", "Sigmoid"]
    x = rng.standard_normal((4, 2, 6, 6))
    assert_close(net.predict(x), run_torch(model, x))


class _Skip(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, x):
        return self.conv(x) + x


class _Shared(_Skip):
    def forward(self, x):
        return self.conv(self.conv(x))


class _Branchy(_Skip):
    def forward(self, x):
        return self.conv(x) if x.sum() > 0 else x


class _Tanh(_Skip):
    def forward(self, x):
        return torch.tanh(self.conv(x))


class _BadView(_Skip):
    def forward(self, x):
        return self.conv(x).view(-1, 18)


@pytest.mark.parametrize("module, message", [
    (_Skip(), "not a chain of layers"), (_Shared(), "called twice"), (_Branchy(), "torch.fx"),
    (_Tanh(), "tanh has no cnncore layer"), (_BadView(), "changes the batch"),
])
def test_from_torch_refuses_forwards_that_are_no_chain(module, message):
    with pytest.raises(ValueError, match=message):
        from_torch(module, (1, 3, 3))


def test_torch_state_dict_into_the_lecture_lenet(rng):
    net = random_state(lenet5(dtype=np.float32), rng)
    model = LectureLeNet().eval()
    model.load_state_dict(torch_state_dict(net, model))        # strict
    x = rng.standard_normal((3, 1, 28, 28)).astype(np.float32)
    assert_close(run_torch(model, x), net.predict(x))
    assert set(torch_state_dict(net)) == set(to_torch(net).state_dict())


def test_torch_state_dict_refusals(rng):
    net = flexible_cnn()
    lecture = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),
                            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                            nn.Dropout(0.25), nn.Flatten(),
                            nn.Linear(12544, 128), nn.ReLU(), nn.Dropout(0.5), nn.Linear(128, 10))
    with pytest.raises(ValueError, match="nn.Dropout .* identity in eval"):
        torch_state_dict(net, lecture)
    lecture[5], lecture[9] = TextbookDropout(0.25), TextbookDropout(0.5)
    lecture = lecture.double().eval()
    lecture.load_state_dict(torch_state_dict(net, lecture))
    x = rng.standard_normal((2, 1, 28, 28))
    assert_close(run_torch(lecture, x), net.predict(x))
    with pytest.raises(ValueError, match="padding"):
        torch_state_dict(net, nn.Sequential(nn.Conv2d(1, 32, 3), nn.Conv2d(32, 64, 3, padding=1),
                                            nn.Linear(12544, 128), nn.Linear(128, 10)))
    with pytest.raises(ValueError, match="4 layers with parameters"):
        torch_state_dict(net, nn.Sequential(nn.Linear(2, 2)))


def test_torch_state_dict_into_modules_without_bias(rng):
    net = Sequential([Convolution(rng.standard_normal((3, 1, 3, 3)), np.zeros(3)),
                      BatchNormalization(np.ones(3 * 3 * 3), np.zeros(27)), Flatten(),
                      Affine(rng.standard_normal((27, 2)), np.zeros(2))], input_dim=(1, 5, 5))
    theirs = nn.Sequential(nn.Conv2d(1, 3, 3, bias=False), nn.Flatten(),
                           nn.BatchNorm1d(27, eps=1e-6, affine=False), nn.Linear(27, 2, bias=False))
    theirs = theirs.double().eval()
    theirs.load_state_dict(torch_state_dict(net, theirs))
    x = rng.standard_normal((2, 1, 5, 5))
    assert_close(run_torch(theirs, x), net.predict(x))
    net.params["b2"][0] = 1.0
    with pytest.raises(ValueError, match="no 3.bias .* not all 0"):
        torch_state_dict(net, theirs)


def test_torch_state_dict_folds_eps_into_a_default_batch_norm(rng):
    net = random_state(Sequential([Convolution(rng.standard_normal((3, 1, 3, 3)), np.zeros(3)),
                                   SpatialBatchNormalization(np.ones(3), np.zeros(3))],
                                  input_dim=(1, 5, 5)), rng)
    theirs = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3)).double().eval()   # eps 1e-5
    theirs.load_state_dict(torch_state_dict(net, theirs))
    x = rng.standard_normal((2, 1, 5, 5))
    assert_close(run_torch(theirs, x), net.predict(x))


# ------------------------------------------------------------------------- refusals, no file left

class Square(Relu):
    """A user's own layer: a subclass computes something else, so it is not exported."""

    def forward(self, x, train_flg=True):
        return x * x


def test_unexportable_layer_is_refused_before_writing(tmp_path):
    net = Sequential([Affine(np.ones((4, 3)), np.zeros(3)), Square(), Affine(np.ones((3, 2)),
                                                                           np.zeros(2))],
                     input_dim=(4,))
    path = tmp_path / "model.onnx"
    with pytest.raises(ValueError, match="layer 'Relu1' \\(Square\\) cannot be exported to ONNX"):
        to_onnx(net, path)
    assert os.listdir(tmp_path) == []
    path.write_bytes(b"old")
    with pytest.raises(ValueError, match="Square"):
        to_onnx(net, path)
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["model.onnx"]
    with pytest.raises(ValueError, match="'Relu1' \\(Square\\) cannot be exported to PyTorch"):
        to_torch(net)


def test_torch_refuses_pooling_padded_beyond_half_the_window(tmp_path, rng):
    net = Sequential([Pooling(3, 3, stride=1, pad=2)], input_dim=(1, 5, 5))
    with pytest.raises(ValueError, match="layer 'Pool1' .* more than half"):
        to_torch(net)
    to_onnx(net, tmp_path / "p.onnx")      # ONNX takes any pad below the window
    x = -rng.uniform(1, 2, (2, 1, 5, 5))
    assert_close(run_onnx(tmp_path / "p.onnx", x), net.predict(x))


def test_network_without_input_dim_needs_one(tmp_path, rng):
    net = Sequential([Affine(rng.standard_normal((4, 3)), np.zeros(3))])
    with pytest.raises(ValueError, match="input_dim"):
        to_onnx(net, tmp_path / "m.onnx")
    model = to_torch(net, input_dim=(4,))
    x = rng.standard_normal((2, 4))
    assert_close(run_torch(model, x), net.predict(x))


# ------------------------------------------------------------------------------- optional extras

def test_importing_cnncore_imports_no_torch_or_onnx():
    code = ("import sys, cnncore, cnncore.layers, cnncore.networks, cnncore.export, cnncore.cli\n"
            "import cnncore.__main__\n"
            "print(sorted(m for m in ('torch', 'onnx', 'onnxruntime') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("package, call, extra", [
    ("torch", lambda: to_torch(lenet5()), "cnncore[torch]"),
    ("torch", lambda: from_torch(None, (1,)), "cnncore[torch]"),
    ("onnx", lambda: to_onnx(lenet5(), "never.onnx"), "cnncore[onnx]"),
])
def test_missing_extra_is_named(monkeypatch, package, call, extra):
    monkeypatch.setitem(sys.modules, package, None)     # makes `import package` fail
    with pytest.raises(ImportError, match=re.escape(f"pip install '{extra}'")):
        call()
    assert not os.path.exists("never.onnx")


# ------------------------------------------------------------------------------------------ the CLI

def _cli(argv, capsys):
    from cnncore.__main__ import main

    code = main(["export", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_export_params_with_network(tmp_path, capsys, rng):
    net = random_state(SimpleConvNet(dtype=np.float32), rng)
    net.save_params(tmp_path / "params.npz")
    onnx_path, pt_path = tmp_path / "m.onnx", tmp_path / "m.pt"
    code, out, err = _cli(["--params", str(tmp_path / "params.npz"), "--network", "simple",
                           "--dtype", "float32", "--onnx", str(onnx_path), "--torch", str(pt_path)],
                          capsys)
    assert code == 0, err
    assert "SimpleConvNet -> " in out
    x = rng.standard_normal((3, 1, 28, 28)).astype(np.float32)
    assert_close(run_onnx(onnx_path, x), net.predict(x))
    model = to_torch(SimpleConvNet(dtype=np.float32))
    model.load_state_dict(torch.load(pt_path, weights_only=True))
    assert_close(run_torch(model, x), net.predict(x))


def test_cli_export_saved_network_and_textbook_pickle(tmp_path, capsys, rng):
    net = random_state(flexible_cnn(dtype=np.float32), rng)
    net.save(tmp_path / "net.npz")
    code, out, err = _cli(["--params", str(tmp_path / "net.npz"), "--onnx",
                           str(tmp_path / "m.onnx")], capsys)
    assert code == 0, err
    x = rng.standard_normal((2, 1, 28, 28)).astype(np.float32)
    assert_close(run_onnx(tmp_path / "m.onnx", x), net.predict(x))

    simple = random_state(SimpleConvNet(), rng)
    simple.save_params(tmp_path / "params.pkl", format="pickle")
    argv = ["--params", str(tmp_path / "params.pkl"), "--network", "simple", "--onnx",
            str(tmp_path / "p.onnx")]
    code, _, err = _cli(argv, capsys)
    assert code == 1 and "--pickle" in err
    code, _, err = _cli(argv + ["--pickle"], capsys)
    assert code == 0, err
    x = rng.standard_normal((2, 1, 28, 28))
    assert_close(run_onnx(tmp_path / "p.onnx", x), simple.predict(x))   # float64: the reference


def test_cli_export_errors_leave_no_file(tmp_path, capsys):
    net = Sequential([Pooling(3, 3, stride=1, pad=2), Flatten(), Affine(np.ones((49, 2)),
                                                                        np.zeros(2))],
                     input_dim=(1, 5, 5))
    net.save(tmp_path / "net.npz")
    code, _, err = _cli(["--params", str(tmp_path / "net.npz"), "--onnx", str(tmp_path / "m.onnx"),
                         "--torch", str(tmp_path / "m.pt")], capsys)
    assert code == 1 and "'Pool1'" in err
    assert sorted(os.listdir(tmp_path)) == ["net.npz"]      # not even the ONNX file
    SimpleConvNet().save_params(tmp_path / "params.npz")
    code, _, err = _cli(["--params", str(tmp_path / "params.npz"), "--onnx",
                         str(tmp_path / "m.onnx")], capsys)
    assert code == 1 and "--network" in err
    with pytest.raises(SystemExit):
        _cli(["--params", str(tmp_path / "params.npz")], capsys)


# ------------------------------------------------------------------------ trained on real MNIST

def _train(network, x, t, steps, seed):
    from cnncore.optimizer import Adam

    rng = np.random.default_rng(seed)
    optimizer = Adam(lr=0.001)
    for _ in range(steps):
        batch = rng.integers(0, len(x), 100)
        optimizer.update(network.params, network.gradient(x[batch], t[batch]))
    return network


@pytest.fixture(scope="module")
def mnist_trained(mnist_dir, tmp_path_factory):
    """SimpleConvNet (300 steps) and DeepConvNet (80 steps) trained in float32 on MNIST, saved as
    the textbook's pickle and loaded back with the explicit opt-in (the published params.pkl and
    deep_convnet_params.pkl are not reachable from the test machines)."""
    from cnncore.datasets import load_mnist

    (x_train, t_train), (x_test, t_test) = load_mnist(flatten=False, path=mnist_dir)
    folder = tmp_path_factory.mktemp("published")
    np.random.seed(0)
    out = {}
    for name, make, steps in (("simple", lambda: SimpleConvNet(dtype=np.float32), 300),
                              ("deep", lambda: DeepConvNet(dtype=np.float32), 80)):
        trained = _train(make(), x_train, t_train, steps, seed=1)
        trained.save_params(folder / f"{name}.pkl", format="pickle")
        network = make()
        network.load_params(folder / f"{name}.pkl", allow_pickle=True)
        out[name] = network
    return out, x_test, t_test


@pytest.mark.parametrize("name", ["simple", "deep"])
def test_trained_networks_on_all_mnist_test_images(mnist_trained, name, tmp_path):
    networks, x_test, t_test = mnist_trained
    network = networks[name]
    assert x_test.dtype == np.float32 and len(x_test) == 10000
    batches = range(0, len(x_test), 1000)
    want = np.concatenate([network.predict(x_test[i:i + 1000]) for i in batches])
    model = to_torch(network)
    to_onnx(network, tmp_path / "model.onnx")
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        from_torch_ = np.concatenate([model(torch.from_numpy(x_test[i:i + 1000])).numpy()
                                      for i in batches])
    from_onnx = np.concatenate([session.run(["scores"], {"x": x_test[i:i + 1000]})[0]
                                for i in batches])
    accuracy = np.mean(want.argmax(axis=1) == t_test)
    assert accuracy > 0.85
    for got in (from_torch_, from_onnx):
        assert_close(got, want)                                   # 1e-5 relative, float32
        np.testing.assert_array_equal(got.argmax(axis=1), want.argmax(axis=1))
        assert np.mean(got.argmax(axis=1) == t_test) == accuracy


def test_random_stacks_cover_every_exportable_layer():
    """The generator above reaches every layer type the exporters take (so the property test can
    fail for any of them)."""
    from cnncore.export._onnx import SUPPORTED as ONNX_TYPES
    from cnncore.export._torch import SUPPORTED as TORCH_TYPES

    seen = set()
    for seed in range(40):
        seen |= {type(layer) for layer in random_stack(seed, np.float64).layers.values()}
    assert set(ONNX_TYPES) == set(TORCH_TYPES) == seen


def test_exporters_check_their_arguments(tmp_path):
    with pytest.raises(TypeError, match="cnncore network"):
        to_onnx(nn.Sequential(), tmp_path / "m.onnx")
    with pytest.raises(TypeError, match="cnncore network"):
        to_torch({"W1": np.ones(2)})
    with pytest.raises(ValueError, match="dtype must be float32 or float64"):
        to_onnx(lenet5(), tmp_path / "m.onnx", dtype=np.float16)
    with pytest.raises(ValueError, match="dtype is for module=None"):
        torch_state_dict(lenet5(), LectureLeNet(), dtype=np.float32)
    assert os.listdir(tmp_path) == []
