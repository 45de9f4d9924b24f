"""Sequential, the size-only layers, the course networks, and the layer contract they rest on."""
import io
import subprocess
import sys
import textwrap
import warnings
from collections import OrderedDict

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cnncore.layers import (GELU, Affine, AvgPooling, BatchNormalization, Convolution, Dropout,
                            Flatten, GlobalAvgPooling, LeakyReLU, Pooling, Relu, Sigmoid,
                            SoftmaxWithLoss, SpatialBatchNormalization)
from cnncore.networks import (BatchNorm, BatchNorm2d, Conv2d, DeepConvNet, LeNet5, Linear,
                              MultiLayerNetExtend,
                              Sequential, SimpleConvNet, cifar10_cnn, flexible_cnn, lenet5)
from cnncore.networks._base import Network
from cnncore.trainer import Trainer


def _rel_err(a, b):
    """Relative error of two arrays as wholes (a gradient that is zero, e.g. a bias before batch
    norm, compares against the 1e-6 floor instead of its rounding noise)."""
    return np.linalg.norm(a - b) / max(np.linalg.norm(a) + np.linalg.norm(b), 1e-6)


# ------------------------------------------------------------------------------------ course networks

def test_lenet5_has_the_lectures_parameter_counts():
    net = lenet5()
    counts = [net.params[f"W{i}"].size + net.params[f"b{i}"].size for i in range(1, 6)]
    assert counts == [156, 2416, 48120, 10164, 850]
    assert list(net.layers) == ["Conv1", "Relu1", "Pool1", "Conv2", "Relu2", "Pool2", "Conv3",
                                "Relu3", "Affine1", "Relu4", "Affine2"]
    assert net.output_shape() == (10,)


def test_flexible_and_cifar_networks_have_the_lectures_sizes():
    flex = flexible_cnn(dtype=np.float32)
    assert flex.params["W3"].shape == (12544, 128)        # 64 * 14 * 14 inputs, no hand computation
    assert all(p.dtype == np.float32 for p in flex.params.values())
    assert [type(la).__name__ for la in flex.layers.values()].count("Dropout") == 2
    cifar = cifar10_cnn()
    assert cifar.input_dim == (3, 32, 32)
    assert [cifar.params[f"W{i}"].shape[0] for i in range(1, 5)] == [32, 32, 64, 64]
    assert cifar.params["W5"].shape == (64 * 8 * 8, 512)


def test_summary_lists_shapes_counts_and_totals(capsys):
    text = lenet5().summary()
    assert capsys.readouterr().out.strip() == text.strip()
    for row in ("Conv1", "(6, 28, 28)", "156", "(16, 10, 10)", "2,416", "48,120", "10,164", "850",
                "Total params: 61,706"):
        assert row in text
    bn = Sequential([Conv2d(4, 3), BatchNorm2d(), Relu(), Linear(3)], input_dim=(1, 5, 5))
    assert "Buffers (not trained): 8" in bn.summary(file=None)


# ----------------------------------------------------------------------------------- building rules

def test_keys_and_params_follow_the_textbook():
    net = Sequential([Conv2d(3, 3, pad=1), BatchNorm2d(), Relu(), Pooling(2, 2), Dropout(0.3),
                      Flatten(), Linear(5), BatchNorm(), Relu(), Linear(2)], input_dim=(2, 6, 6))
    assert list(net.layers) == ["Conv1", "BatchNorm1", "Relu1", "Pool1", "Dropout1", "Flatten1",
                                "Affine1", "BatchNorm2", "Relu2", "Affine2"]
    assert list(net.params) == ["W1", "b1", "gamma1", "beta1", "W2", "b2", "gamma2", "beta2",
                                "W3", "b3"]
    assert net.layers["Conv1"].W is net.params["W1"]
    assert isinstance(net.layers["BatchNorm1"], SpatialBatchNormalization)
    assert type(net.layers["BatchNorm2"]) is BatchNormalization
    assert isinstance(net.last_layer, SoftmaxWithLoss)
    assert set(net.buffers()) == {f"BatchNorm{i}.{s}" for i in (1, 2)
                                  for s in ("running_mean", "running_var")}


def test_ready_layers_and_an_ordered_dict_keep_their_objects_and_keys():
    rng = np.random.default_rng(0)
    conv = Convolution(rng.standard_normal((4, 1, 3, 3)), np.zeros(4))
    affine = Affine(rng.standard_normal((4 * 2 * 2, 3)), np.zeros(3))
    net = Sequential(OrderedDict(c=conv, r=Relu(), p=Pooling(2, 2), a=affine), input_dim=(1, 6, 6))
    assert list(net.layers) == ["c", "r", "p", "a"] and net.params["W1"] is conv.W
    assert net.params["W2"] is affine.W


def test_the_same_seed_draws_the_same_network():
    np.random.seed(3)
    a = flexible_cnn()
    np.random.seed(3)
    b = flexible_cnn()
    assert all(np.array_equal(a.params[k], b.params[k]) for k in a.params)


@pytest.mark.parametrize("layers, input_dim, match", [
    ([Conv2d(4, 3), Relu(), Convolution(np.zeros((2, 3, 3, 3)), np.zeros(2))], (1, 8, 8),
     r"layer 2 \(Conv2, Convolution\).*\(4, 6, 6\).*C = 3"),
    ([Conv2d(4, 5), Pooling(2, 2), Conv2d(4, 5)], (1, 8, 8),
     r"layer 2 \(Conv2, Convolution\).*\(4, 2, 2\).*5x5 window.*-2x-2"),
    ([Conv2d(4, 9)], (1, 8, 8), r"layer 0 \(Conv1, Convolution\).*0x0"),
    ([Linear(3), Affine(np.zeros((4, 2)), np.zeros(2))], (5,),
     r"layer 1 \(Affine2, Affine\).*flattens to 3 features but W has 4 rows"),
    ([SoftmaxWithLoss(), Linear(3)], (5,), "must be the last layer"),
    ([Linear(3)], None, "needs input_dim"),
    ([Relu, Linear(3)], (5,), "give an instance"),
    ([], (5,), "at least one layer"),
    ([SpatialBatchNormalization(np.ones(3), np.zeros(3))], (2, 4, 4),
     r"layer 0 \(BatchNorm1, SpatialBatchNormalization\).*needs 2 gamma entries"),
    ([Conv2d(2, 3), BatchNorm(), Linear(2), BatchNorm2d(), Conv2d(1, 1)], (1, 4, 4),
     r"layer 4 \(Conv2d\).*\(2,\)"),
    ([Linear(3)], (1, 28), "input_dim must be"),
])
def test_stacks_that_cannot_work_are_refused_when_built(layers, input_dim, match):
    with pytest.raises((ValueError, TypeError), match=match):
        Sequential(layers, input_dim=input_dim)


def test_a_layer_object_used_twice_is_refused():
    relu = Relu()
    with pytest.raises(ValueError, match="appears twice"):
        Sequential([Linear(4), relu, Linear(4), relu, Linear(2)], input_dim=(3,))


@pytest.mark.parametrize("bad", [1.0, 1.5, -1, float("nan"), float("inf"), "0.5", True])
def test_dropout_ratio_outside_0_1_is_refused(bad):
    with pytest.raises(ValueError, match="dropout_ratio"):
        Dropout(bad)


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf"), "he2", True])
def test_bad_init_scales_are_refused(bad):
    with pytest.raises(ValueError, match="weight_init_std"):
        Sequential([Linear(3)], input_dim=(4,), weight_init_std=bad)
    with pytest.raises(ValueError, match="weight_init_std"):
        Sequential([Linear(3, weight_init_std=bad)], input_dim=(4,))


@pytest.mark.parametrize("kwargs, match", [
    (dict(weight_decay_lambda=-1), "weight_decay_lambda"),
    (dict(weight_decay_lambda=float("nan")), "weight_decay_lambda"),
    (dict(dtype=np.float16), "dtype"),
])
def test_bad_network_options_are_refused(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        Sequential([Linear(3)], input_dim=(4,), **kwargs)


def test_accuracy_refuses_labels_outside_the_classes_and_wrong_lengths():
    net = Sequential([Linear(3)], input_dim=(4,))
    x = np.ones((4, 4))
    with pytest.raises(ValueError, match=r"t must hold class labels in \[0, 3\)"):
        net.accuracy(x, np.array([0, 1, 2, 3]), batch_size=2)
    with pytest.raises(ValueError, match="4 labels"):
        net.accuracy(x, np.array([0, 1, 2]), batch_size=2)
    with pytest.raises(ValueError, match="one-hot with 4 columns"):
        net.accuracy(x, np.eye(4), batch_size=2)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):   # even when no full batch is evaluated
        net.accuracy(x, np.array([0, 1, 2, 7]), batch_size=100)
    assert 0 <= net.accuracy(x, np.array([0, 1, 2, 2]), batch_size=2) <= 1


# --------------------------------------------------------------------------- modes: the subclass trap

def test_inference_is_deterministic_with_dropout_and_batchnorm():
    np.random.seed(0)
    net = Sequential([Linear(16), BatchNorm(), Relu(), Dropout(0.5), Linear(3)], input_dim=(8,))
    x = np.random.rand(32, 8)
    net.gradient(x, np.random.randint(0, 3, 32))      # one training pass moves the statistics
    assert np.array_equal(net.predict(x), net.predict(x))
    assert not np.array_equal(net.predict(x, train_flg=True), net.predict(x, train_flg=True))


def test_a_network_subclass_runs_dropout_in_inference_mode():
    class MyNet(Network):      # what the course writes: a layer dict, the base does the rest
        def __init__(self):
            self.W = np.random.randn(6, 3)
            self.b = np.zeros(3)
            self.layers = OrderedDict(Dropout1=Dropout(0.5), Affine1=Affine(self.W, self.b))
            self.params = {"W1": self.W, "b1": self.b}
            self._bindings = [("W1", self.layers["Affine1"], "W"), ("b1", self.layers["Affine1"], "b")]
            self.last_layer = SoftmaxWithLoss()

    net, x = MyNet(), np.random.rand(5, 6)
    assert np.allclose(net.predict(x), (x * 0.5) @ net.W)


# ------------------------------------------------------------------- gradients: every layer type

def _random_stack(draw):
    """A float64 Sequential of every layer type, its input and labels, from hypothesis draws."""
    C = draw(st.integers(1, 3))
    size = draw(st.integers(5, 8))
    stride = draw(st.integers(1, 2))
    pad = draw(st.integers(0, 2))
    mode = draw(st.sampled_from(["zeros", "replicate"]))
    pool = draw(st.sampled_from([Pooling, AvgPooling]))
    bn = draw(st.sampled_from([BatchNorm, BatchNorm2d]))
    act = draw(st.sampled_from([Relu, LeakyReLU, GELU, Sigmoid]))
    head = draw(st.sampled_from(["flatten", "gap"]))
    layers = [Conv2d(3, 3, stride, pad, padding_mode=mode, weight_init_std=0.5), bn(), act(),
              pool(2, 2, 1, draw(st.integers(0, 1)))]
    layers += [Flatten()] if head == "flatten" else [GlobalAvgPooling()]
    layers += [Linear(5, weight_init_std=0.3), BatchNorm(), GELU(), Dropout(0.3),
               Linear(3, weight_init_std=0.3)]
    N = draw(st.integers(4, 6))   # batch norm over 2 samples is too curved for central differences
    return layers, (C, size, size), N


def _prepared(layers, input_dim, N, seed):
    rng = np.random.default_rng(seed)
    np.random.seed(seed % 1000)
    net = Sequential(layers, input_dim=input_dim, weight_decay_lambda=0.01)
    for key in net.params:
        net.params[key][...] += rng.uniform(-0.2, 0.2, net.params[key].shape)  # gammas, betas, biases
    return net, rng.standard_normal((N, *input_dim)), rng.integers(0, 3, N), rng


@settings(max_examples=25)
@given(st.data())
def test_gradient_agrees_with_directional_differences_on_random_stacks(data):
    """Along a random direction v of each parameter, (L(p + eps*v) - L(p - eps*v)) / (2*eps) must
    equal grad . v: every layer type, both paddings, both poolings, both batch norms, Dropout with
    its masks held fixed (the RNG replayed), weight decay."""
    layers, input_dim, N = _random_stack(data.draw)
    net, x, t, rng = _prepared(layers, input_dim, N, data.draw(st.integers(0, 2**31 - 1)))
    state = np.random.get_state()
    grads = {key: g.copy() for key, g in net.gradient(x, t).items()}
    eps = 1e-6
    for key, param in net.params.items():
        v = rng.standard_normal(param.shape)
        losses = []
        for sign in (1, -1):
            param += sign * eps * v
            np.random.set_state(state)
            losses.append(net._train_loss(x, t))
            param -= sign * eps * v
        numerical = (losses[0] - losses[1]) / (2 * eps)
        analytic = np.sum(grads[key] * v)
        # A wrong gradient errs by about |grad| |v|; differencing errs by 1e-6 of that at most
        # (curvature), plus the losses' rounding (1e-16 / eps).
        scale = abs(analytic) + 1e-2 * np.linalg.norm(grads[key]) * np.linalg.norm(v)
        assert abs(numerical - analytic) < 1e-3 * scale + 1e-8, key


def test_gradient_agrees_with_numerical_gradient():
    """The textbook's check (ch05/ch07), element by element, on a smooth stack of every kind."""
    layers = [Conv2d(3, 3, 2, 1, padding_mode="replicate", weight_init_std=0.5), BatchNorm2d(),
              GELU(), AvgPooling(2, 2, 1, 1), Conv2d(2, 2, weight_init_std=0.5), BatchNorm(),
              Sigmoid(), Flatten(), Linear(5, weight_init_std=0.3), Dropout(0.3),
              LeakyReLU(0.2), Linear(3, weight_init_std=0.3)]
    net, x, t, _ = _prepared(layers, (2, 7, 7), 6, 11)
    state = np.random.get_state()
    numerical = net.numerical_gradient(x, t)
    np.random.set_state(state)
    analytic = net.gradient(x, t)
    for key in net.params:
        assert _rel_err(analytic[key], numerical[key]) < 1e-6, key


def test_weight_decay_is_in_loss_and_gradient():
    np.random.seed(1)
    net = Sequential([Conv2d(2, 3), Relu(), Linear(3)], input_dim=(1, 5, 5), weight_decay_lambda=0.1)
    x, t = np.random.rand(2, 1, 5, 5), np.array([0, 2])
    plain = net.last_layer.forward(net.predict(x), t)
    decay = 0.05 * (np.sum(net.params["W1"] ** 2) + np.sum(net.params["W2"] ** 2))
    assert np.isclose(net.loss(x, t), plain + decay)
    grads = net.gradient(x, t)
    dW1 = net.layers["Conv1"].dW
    assert np.allclose(grads["W1"], dW1 + 0.1 * net.params["W1"])
    assert grads["b1"] is net.layers["Conv1"].db


# -------------------------------------------------------------------------------- against PyTorch

def test_predict_and_gradient_match_pytorch_for_the_same_weights(torch):
    nn = torch.nn
    np.random.seed(5)
    net = Sequential([Conv2d(4, 3, 1, 1, padding_mode="replicate", weight_init_std=0.3),
                      BatchNorm2d(), LeakyReLU(0.1), Pooling(2, 2), Conv2d(5, 3, pad=1),
                      GELU(), AvgPooling(2, 2, 1, 1), Flatten(), Linear(6), Relu(), Linear(3)],
                     input_dim=(2, 8, 8))
    net.layers["BatchNorm1"].gamma[...] = np.random.rand(4) + 0.5
    p = net.params
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3, 1, 1, padding_mode="replicate"), nn.BatchNorm2d(4, eps=1e-6, momentum=0.1),
        nn.LeakyReLU(0.1), nn.MaxPool2d(2, 2), nn.Conv2d(4, 5, 3, padding=1),
        nn.GELU(approximate="tanh"), nn.AvgPool2d(2, 1, 1, count_include_pad=True), nn.Flatten(),
        nn.Linear(5 * 5 * 5, 6), nn.ReLU(), nn.Linear(6, 3)).double()
    with torch.no_grad():
        for module, (w, b) in zip([model[0], model[4], model[8], model[10]],
                                  [("W1", "b1"), ("W2", "b2"), ("W3", "b3"), ("W4", "b4")]):
            weight = p[w] if p[w].ndim == 4 else p[w].T
            module.weight.copy_(torch.from_numpy(np.ascontiguousarray(weight)))
            module.bias.copy_(torch.from_numpy(p[b]))
        model[1].weight.copy_(torch.from_numpy(p["gamma1"]))
    x = np.random.rand(3, 2, 8, 8)
    t = np.array([0, 2, 1])
    model.train()
    xt = torch.from_numpy(x).requires_grad_(False)
    loss = nn.functional.cross_entropy(model(xt), torch.from_numpy(t))
    loss.backward()
    grads = net.gradient(x, t)
    assert np.isclose(net.last_layer.loss, loss.item(), rtol=1e-6)   # the textbook's 1e-7 in the log
    assert _rel_err(grads["W1"], model[0].weight.grad.numpy()) < 1e-8
    assert _rel_err(grads["W3"], model[8].weight.grad.numpy().T) < 1e-8
    assert _rel_err(grads["gamma1"], model[1].weight.grad.numpy()) < 1e-8
    # running statistics: torch's momentum 0.1 is the textbook's 0.9 kept; torch's running_var is the
    # unbiased variance, the textbook's the biased one
    mean = net.layers["BatchNorm1"].running_mean
    assert np.allclose(mean, model[1].running_mean.numpy(), rtol=1e-10)
    model.eval()
    bn = net.layers["BatchNorm1"]
    model[1].running_var.copy_(torch.from_numpy(bn.running_var))
    with torch.no_grad():
        assert _rel_err(net.predict(x), model(xt).numpy()) < 1e-10


# ----------------------------------------------------------------------------------- save and load

def _bn_network(dtype=np.float64):
    np.random.seed(2)
    net = Sequential([Conv2d(4, 3, pad=1, padding_mode="replicate"), BatchNorm2d(), Relu(),
                      Pooling(2, 2), Dropout(0.2), Linear(8), BatchNorm(), LeakyReLU(0.05),
                      Linear(3)], input_dim=(1, 6, 6), dtype=dtype, weight_decay_lambda=0.001)
    x = np.random.rand(10, 1, 6, 6).astype(dtype)
    for _ in range(3):
        net.gradient(x, np.random.randint(0, 3, 10))   # moves the running statistics
    return net, x


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_save_then_load_in_a_fresh_process_predicts_identically(tmp_path, dtype):
    net, x = _bn_network(dtype)
    path, xs = tmp_path / "net.npz", tmp_path / "x.npy"
    net.save(path)
    np.save(xs, x)
    code = textwrap.dedent(f"""
        import sys, numpy as np
        from cnncore.networks import Sequential
        net = Sequential.load({str(path)!r})
        np.save({str(tmp_path / 'y.npy')!r}, net.predict(np.load({str(xs)!r})))
        print(list(net.layers), net.weight_decay_lambda, net.input_dim)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert str(list(net.layers)) in out.stdout and "0.001 (1, 6, 6)" in out.stdout
    assert np.array_equal(np.load(tmp_path / "y.npy"), net.predict(x))


def test_loaded_network_keeps_keys_params_buffers_and_layer_settings(tmp_path):
    net, x = _bn_network()
    net.save(tmp_path / "a.npz")
    again = Sequential.load(tmp_path / "a.npz")
    assert list(again.params) == list(net.params)
    assert all(np.array_equal(again.params[k], net.params[k]) for k in net.params)
    assert all(np.array_equal(again.buffers()[k], v) for k, v in net.buffers().items())
    assert again.layers["Conv1"].padding_mode == "replicate"
    assert again.layers["Dropout1"].dropout_ratio == 0.2
    assert again.layers["LeakyRelu1"].alpha == 0.05
    assert again.layers["Conv1"].W is again.params["W1"]


def test_a_textbook_network_saves_and_loads_as_a_sequential(tmp_path):
    np.random.seed(0)
    net = SimpleConvNet(input_dim=(1, 10, 10), conv_param={"filter_num": 3, "filter_size": 3,
                                                           "pad": 0, "stride": 1}, hidden_size=5)
    net.save(tmp_path / "s.npz")
    again = Sequential.load(tmp_path / "s.npz")
    x = np.random.rand(2, 1, 10, 10)
    assert list(again.layers) == list(net.layers)
    assert np.array_equal(again.predict(x), net.predict(x))


def test_save_params_keeps_batchnorm_statistics():
    """The issue's MultiLayerNetExtend: after a reload the running statistics are the trained ones."""
    np.random.seed(0)
    net = MultiLayerNetExtend(20, [10, 10], 3, use_batchnorm=True)
    x = np.random.rand(50, 20)
    for _ in range(5):
        net.gradient(x, np.random.randint(0, 3, 50))
    state = net.state_dict()
    assert "BatchNorm1.running_mean" in state
    fresh = MultiLayerNetExtend(20, [10, 10], 3, use_batchnorm=True)
    fresh.load_state_dict(state)
    assert np.array_equal(fresh.predict(x), net.predict(x))


def test_a_file_without_statistics_loads_its_weights_and_warns(tmp_path):
    from cnncore._io import save_params_file

    np.random.seed(0)
    net = MultiLayerNetExtend(6, [4], 2, use_batchnorm=True)
    save_params_file(net.params, tmp_path / "old.npz")    # what cnncore wrote before
    fresh = MultiLayerNetExtend(6, [4], 2, use_batchnorm=True)
    with pytest.warns(UserWarning, match="BatchNorm1.running_mean, BatchNorm1.running_var"):
        fresh.load_params(tmp_path / "old.npz")
    assert all(np.array_equal(fresh.params[k], net.params[k]) for k in net.params)


def test_networks_without_buffers_load_files_silently(tmp_path):
    net = lenet5()
    net.save_params(tmp_path / "p.npz")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lenet5().load_params(tmp_path / "p.npz")


def test_unsavable_layers_are_refused_before_writing(tmp_path):
    class Twice:
        def forward(self, x, train_flg=True):
            return 2 * x

        def backward(self, dout):
            return 2 * dout

    net = Sequential([Affine(np.ones((4, 3)), np.zeros(3)), Twice(),
                      Affine(np.ones((3, 2)), np.zeros(2))])
    with pytest.raises(ValueError, match="Twice"):
        net.save(tmp_path / "x.npz")
    assert not list(tmp_path.iterdir())
    assert net.predict(np.ones((1, 4))).shape == (1, 2)   # a user's duck-typed layer runs


@pytest.mark.parametrize("mutate, match", [
    (lambda a: a["layers"][0].update(type="Evil"), "not a cnncore layer"),
    (lambda a: a["layers"][0].update(config={"stride": [1]}), "plain values"),
    (lambda a: a["layers"][0].update(config={"stride": 0}), "cannot be rebuilt"),
    (lambda a: a["layers"][0].update(params={"W": "W9", "b": "b1"}), "no array"),
    (lambda a: a.update(version=99), "version 1"),
    (lambda a: a["layers"][1].update(key="Conv1"), "repeated key"),
    (lambda a: a.update(input_dim=[2, 6, 6]), "do not fit together"),
    (lambda a: a.update(loss="MeanSquaredError"), "not one cnncore saves"),
])
def test_a_tampered_architecture_is_refused_naming_the_file(tmp_path, mutate, match):
    from cnncore._io import load_params_file, save_params_file
    from cnncore.networks.sequential import architecture

    net, _ = _bn_network()
    arch = architecture(net)
    mutate(arch)
    path = tmp_path / "t.npz"
    save_params_file(load_params_file(_saved(net, tmp_path), None), path, architecture=arch)
    with pytest.raises(ValueError, match=match) as info:
        Sequential.load(path)
    assert "t.npz" in str(info.value)


def _saved(net, tmp_path):
    path = tmp_path / "orig.npz"
    net.save(path)
    return path


def test_a_negative_running_variance_is_refused():
    """Found by tampering with saved files: a negative running_var loaded, and every prediction of
    the BatchNorm layer became NaN (sqrt of a negative variance)."""
    net, _ = _bn_network()
    key = next(k for k in net.buffers() if k.endswith("running_var"))
    before = net.buffers()[key].copy()
    bad = -np.ones_like(before)
    with pytest.raises(ValueError, match="negative variance"):
        net.load_buffers({key: bad})
    with pytest.raises(ValueError, match="negative variance"):
        net.load_state_dict({**net.state_dict(), key: bad})
    np.testing.assert_array_equal(net.buffers()[key], before)
    net.load_buffers({key: np.zeros_like(before)})        # zero is a variance


def test_a_params_file_is_not_an_architecture(tmp_path):
    lenet5().save_params(tmp_path / "p.npz")
    with pytest.raises(ValueError, match="no architecture"):
        Sequential.load(tmp_path / "p.npz")


# ----------------------------------------------------------------------------------- training

def test_course_networks_train_with_the_trainer():
    np.random.seed(0)
    x = np.random.rand(40, 3, 32, 32).astype(np.float32)
    t = np.random.randint(0, 10, 40)
    net = cifar10_cnn(dtype=np.float32)
    before = net.loss(x, t)
    trainer = Trainer(net, x, t, x[:20], t[:20], epochs=2, mini_batch_size=20, optimizer="Adam",
                      optimizer_param={"lr": 0.001}, verbose=False, exact_epochs=True)
    trainer.train()
    assert len(trainer.test_acc_list) == 2 and net.loss(x, t) < before


def test_flexible_cnn_learns_mnist(mnist_dir):
    from cnncore.datasets import load_mnist

    (x, t), (xt, tt) = load_mnist(flatten=False, path=mnist_dir)
    np.random.seed(0)
    net = flexible_cnn(dtype=np.float32)
    Trainer(net, x[:1000], t[:1000], xt[:500], tt[:500], epochs=1, mini_batch_size=50,
            optimizer="Adam", optimizer_param={"lr": 0.001}, verbose=False,
            exact_epochs=True).train()
    assert net.accuracy(xt[:500], tt[:500], exact=True) > 0.7   # chance is 0.1


@pytest.mark.parametrize("name", ["lenet5", "flexible", "cifar10"])
def test_cnncore_train_takes_the_course_networks(name, mnist_dir, tmp_path):
    out = tmp_path / f"{name}.npz"
    proc = subprocess.run(
        [sys.executable, "-m", "cnncore", "train", "--network", name, "--data", str(mnist_dir),
         "--train-size", "200", "--test-size", "100", "--epochs", "1", "--batch-size", "50",
         "--dtype", "float32", "--no-plot", "--out", str(out)],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "final test acc" in proc.stdout and out.exists()


def test_conv_then_relu_runs_fused_with_the_textbook_attributes():
    """Convolution + Relu pairs run as one fused kernel step: the same numbers as the two layers
    one after the other, and the layers keep their attributes (Relu.mask, Convolution.dW ...)."""
    import types

    import cnncore.kernels

    np.random.seed(4)
    net = Sequential([Conv2d(4, 3, pad=1, padding_mode="replicate"), Relu(), Conv2d(3, 3), Relu(),
                      Pooling(2, 2), Linear(3)], input_dim=(2, 7, 7))
    x, t = np.random.rand(3, 2, 7, 7), np.array([0, 1, 2])
    fused = {k: v.copy() for k, v in net.gradient(x, t).items()}
    masks = [net.layers[k].mask.copy() for k in ("Relu1", "Relu2")]
    own = types.SimpleNamespace(**{k: getattr(cnncore.kernels, k) for k in dir(cnncore.kernels)})
    for key in ("Conv1", "Conv2"):
        net.layers[key].kernels = own         # not the default module: no fusion
    assert all(len(step) == 1 for step in net._steps())
    plain = net.gradient(x, t)
    for key in plain:
        np.testing.assert_allclose(fused[key], plain[key], rtol=1e-12, atol=1e-15, err_msg=key)
    for key, mask in zip(("Relu1", "Relu2"), masks):
        assert np.array_equal(mask, net.layers[key].mask)
    assert np.array_equal(masks[0], net.layers["Conv1"].forward(x) <= 0)


_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True)
    | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children,
                                                                    max_size=3),
    max_leaves=6)


def _paths(value, prefix=()):
    """Every path into a JSON value, the root included."""
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _paths(child, prefix + (key,))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            yield from _paths(child, prefix + (i,))


_HOSTILE_ARRAYS = {
    "0-d": lambda a: np.float64(1.0), "one more axis": lambda a: a[None], "empty": lambda a: a[:0],
    "one longer": lambda a: np.concatenate([a.reshape(-1), [1.0]]), "float16": lambda a: a.astype(
        np.float16), "int": lambda a: a.astype(np.int32), "complex": lambda a: a.astype(complex),
    "negative": lambda a: -np.abs(a) - 1, "NaN": lambda a: np.full_like(a, np.nan),
    "Fortran": lambda a: np.asfortranarray(a), "big-endian": lambda a: a.astype(">f8"),
    "text": lambda a: np.full(a.shape, "1.0"),
}


@settings(max_examples=150)
@given(data=st.data())
def test_hostile_architectures_give_clear_errors(data, tmp_path_factory):
    """Any value anywhere in a saved architecture (NaN, huge, wrong types, nesting, 100000 levels
    deep), and any one parameter or buffer array swapped for a hostile one (wrong shape, 0-d,
    empty, other dtypes, negative, NaN), is either rebuilt into a working network or refused with
    ValueError/TypeError, never anything else."""
    import json
    import zipfile

    from cnncore.networks.sequential import architecture

    tmp = tmp_path_factory.mktemp("arch")
    np.random.seed(0)
    net = Sequential([Conv2d(2, 3, pad=1), BatchNorm2d(), Relu(), Pooling(2, 2), Dropout(0.2),
                      Linear(3)], input_dim=(1, 4, 4))
    path = tmp / "net.npz"
    net.save(path)
    arch = architecture(net)
    target = data.draw(st.sampled_from(list(_paths(arch))))
    value = data.draw(_JSON_VALUES)
    if target:
        holder = arch
        for key in target[:-1]:
            holder = holder[key]
        holder[target[-1]] = value
    else:
        arch = value
    text = json.dumps(arch, allow_nan=True).encode()     # NaN and Infinity tokens included
    depth = data.draw(st.sampled_from([0, 0, 0, 2, 100_000]), label="nesting")
    text = b"[" * depth + text + b"]" * depth            # (deep: RecursionError in json before)
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    # and one parameter or buffer array replaced by a hostile one (or none)
    victim = data.draw(st.sampled_from([None] + [n for n in names
                                                 if not n.startswith("__architecture__")]))
    tamper = data.draw(st.sampled_from(sorted(_HOSTILE_ARRAYS)), label="array")
    rebuilt = tmp / "hostile.npz"                        # the file again, its architecture replaced
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(rebuilt, "w") as dst:
        for name in names:
            array = None
            if name.startswith("__architecture__"):
                array = np.frombuffer(text, np.uint8)
            elif name == victim:
                array = _HOSTILE_ARRAYS[tamper](np.load(io.BytesIO(src.read(name))))
            if array is None:
                dst.writestr(name, src.read(name))
            else:
                buffer = io.BytesIO()
                np.lib.format.write_array(buffer, array, allow_pickle=False)
                dst.writestr(name, buffer.getvalue())
    try:
        loaded = Sequential.load(rebuilt)
    except (ValueError, TypeError):
        return
    if loaded.input_dim is not None and np.prod(loaded.input_dim) <= 10_000:
        try:
            loaded.predict(np.zeros((2, *loaded.input_dim)))
        except (ValueError, TypeError):
            pass


@pytest.mark.parametrize("make", [
    lambda **kw: SimpleConvNet(input_dim=(1, 8, 8), conv_param={"filter_num": 2, "filter_size": 3,
                                                                "pad": 0, "stride": 1},
                               hidden_size=4, output_size=3, **kw),
    lambda **kw: LeNet5(**kw),
    lambda **kw: DeepConvNet(**kw),
], ids=["simple", "lenet5", "deep"])
def test_weight_decay_on_the_textbook_conv_networks(make):
    np.random.seed(0)
    plain = make()
    np.random.seed(0)
    decayed = make(weight_decay_lambda=0.5)
    x = np.random.rand(2, *plain.input_dim)
    t = np.array([0, 1])
    weights = [key for key, _, attr in plain._bindings if attr == "W"]
    penalty = sum(0.25 * np.sum(plain.params[key] ** 2) for key in weights)
    np.random.seed(1)
    base = plain.loss(x, t)
    np.random.seed(1)
    assert np.isclose(decayed.loss(x, t), base + penalty)
    with pytest.raises(ValueError, match="weight_decay_lambda"):
        make(weight_decay_lambda=-1)


@pytest.mark.parametrize("bad", ["abc", (1, 4.5, 4), (1, -4, 4), (True, 4, 4), (2, 4), 7])
def test_export_plans_refuse_a_bad_input_dim(bad):
    """Found by fuzzing cnncore.export: input_dim='abc' raised "invalid literal for int()" and
    (1, 4.5, 4) was truncated to (1, 4, 4); the exporters' plan now checks it as the networks do
    (cnncore.export._plan runs before torch or onnx is imported)."""
    from cnncore.export._plan import plan

    net = Sequential([Conv2d(2, 3, pad=1), Relu(), Pooling(2, 2), Linear(3)], input_dim=(1, 4, 4))
    supported = {Convolution: None, Relu: None, Pooling: None, Affine: None}
    supported = {cls: (lambda step: None) for cls in supported}
    assert len(plan(net, supported, "test")) == 4
    with pytest.raises(ValueError, match="input_dim must be"):
        plan(net, supported, "test", input_dim=bad)
