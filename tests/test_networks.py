"""cnncore.networks (and cnncore.initializers): the textbook's structure and quirks, gradients,
seeded runs against the NumPy reference kernels, float32, fused layers, parameter files."""
import inspect
import types

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from cnncore import reference
from cnncore.initializers import count_params, fan_in, float_dtype, he_std, init_std, xavier_std
from cnncore.layers import (Affine, AvgPooling, ConvReLU, Convolution, Dropout, Pooling, Relu,
                            Sigmoid, SoftmaxWithLoss)
from cnncore.networks import DeepConvNet, LeNet5, MultiLayerNet, MultiLayerNetExtend, SimpleConvNet
from cnncore.optimizer import SGD, Adam

TINY_CONV = {'filter_num': 10, 'filter_size': 3, 'pad': 0, 'stride': 1}


def layer_list(net):
    return list(net.layers.values()) if isinstance(net.layers, dict) else list(net.layers)


def use_kernels(net, module):
    """Run every kernel-backed layer of net on module's kernels (e.g. cnncore.reference)."""
    for layer in layer_list(net):
        if hasattr(layer, "kernels"):
            layer.kernels = module
    return net


def seeded(seed, make):
    np.random.seed(seed)
    return make()


def tiny_simple(**kw):
    """ch07/gradient_check.py's network: 1x10x10 input, 10 filters 3x3, hidden 10."""
    kw = {'input_dim': (1, 10, 10), 'conv_param': TINY_CONV, 'hidden_size': 10, **kw}
    return SimpleConvNet(**kw)


def mnist_like(n, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, 28, 28)).astype(dtype), rng.integers(0, 10, n).astype(np.uint8)


def assert_aliased(net):
    for key, layer, attr in net._bindings:
        assert getattr(layer, attr) is net.params[key], key


# ------------------------------------------------------------------------------------ structure

def test_simple_convnet_matches_the_textbook_layout():
    net = SimpleConvNet()
    assert list(net.params) == ['W1', 'b1', 'W2', 'b2', 'W3', 'b3']
    assert {k: v.shape for k, v in net.params.items()} == {
        'W1': (30, 1, 5, 5), 'b1': (30,), 'W2': (4320, 100), 'b2': (100,), 'W3': (100, 10),
        'b3': (10,)}
    assert all(v.dtype == np.float64 for v in net.params.values())
    assert count_params(net) == 433_890
    assert list(net.layers) == ['Conv1', 'Relu1', 'Pool1', 'Affine1', 'Relu2', 'Affine2']
    assert [type(v) for v in net.layers.values()] == [Convolution, Relu, Pooling, Affine, Relu, Affine]
    assert (net.layers['Pool1'].pool_h, net.layers['Pool1'].stride) == (2, 2)
    assert isinstance(net.last_layer, SoftmaxWithLoss)
    assert net.layers['Conv1'].W is net.params['W1']
    assert_aliased(net)


def test_deep_convnet_matches_the_textbook_layout():
    net = DeepConvNet()
    assert isinstance(net.layers, list) and len(net.layers) == 20
    for i, idx in enumerate((0, 2, 5, 7, 10, 12, 15, 18), 1):
        assert net.layers[idx].W is net.params[f'W{i}'] and net.layers[idx].b is net.params[f'b{i}']
    assert [i for i, la in enumerate(net.layers) if isinstance(la, Pooling)] == [4, 9, 14]
    assert [i for i, la in enumerate(net.layers) if isinstance(la, Dropout)] == [17, 19]
    assert list(net.params) == [f'{p}{i}' for i in range(1, 9) for p in 'Wb']
    assert net.params['W4'].shape == (32, 32, 3, 3) and net.layers[7].pad == 2
    assert net.params['W7'].shape == (1024, 50)
    assert count_params(net) == 123_552
    assert net.input_dim == (1, 28, 28) and net.output_shape() == (10,)


def test_lenet5_architecture_and_parameter_count():
    net = LeNet5()
    assert count_params(net) == 61_706
    assert [net.params[f'W{i}'].shape for i in range(1, 6)] == [
        (6, 1, 5, 5), (16, 6, 5, 5), (120, 16, 5, 5), (120, 84), (84, 10)]
    shapes = []
    x = np.zeros((2, 1, 28, 28))
    for key, layer in net.layers.items():
        x = layer.forward(x)
        shapes.append((key, x.shape[1:]))
    assert shapes == [('Conv1', (6, 28, 28)), ('Relu1', (6, 28, 28)), ('Pool1', (6, 14, 14)),
                      ('Conv2', (16, 10, 10)), ('Relu2', (16, 10, 10)), ('Pool2', (16, 5, 5)),
                      ('Conv3', (120, 1, 1)), ('Relu3', (120, 1, 1)), ('Affine1', (84,)),
                      ('Relu4', (84,)), ('Affine2', (10,))]
    assert_aliased(net)
    assert isinstance(LeNet5(pool='avg').layers['Pool2'], AvgPooling)
    assert LeNet5(input_dim=(3, 32, 32)).params['W4'].shape == (480, 84)
    with pytest.raises(ValueError, match="too small"):
        LeNet5(input_dim=(1, 20, 20))
    with pytest.raises(ValueError, match="pool"):
        LeNet5(pool='min')


def test_multi_layer_net_extend_layout_and_keywords():
    net = MultiLayerNetExtend(6, [5, 4], 3, use_batchnorm=True, use_dropout=True, dropout_ration=0.3)
    assert list(net.params) == ['W1', 'b1', 'W2', 'b2', 'W3', 'b3', 'gamma1', 'beta1', 'gamma2',
                                'beta2']
    assert list(net.layers) == ['Affine1', 'BatchNorm1', 'Activation_function1', 'Dropout1',
                                'Affine2', 'BatchNorm2', 'Activation_function2', 'Dropout2',
                                'Affine3']
    assert net.layers['Dropout1'].dropout_ratio == 0.3
    assert MultiLayerNetExtend(6, [5], 3, use_dropout=True, dropout_ratio=0.2) \
        .layers['Dropout1'].dropout_ratio == 0.2
    assert net.layers['BatchNorm2'].gamma is net.params['gamma2']
    assert net.params['gamma1'].shape == (5,)
    assert_array_equal(net.params['gamma1'], 1)
    plain = MultiLayerNet(6, [5, 4], 3, activation='sigmoid')
    assert list(plain.layers) == ['Affine1', 'Activation_function1', 'Affine2',
                                  'Activation_function2', 'Affine3']
    assert isinstance(plain.layers['Activation_function1'], Sigmoid)
    with pytest.raises(ValueError, match="activation"):
        MultiLayerNet(6, [5], 3, activation='tanh')


def test_multi_layer_net_extend_dispatches_train_flg_by_key():
    x, t = np.random.default_rng(1).standard_normal((8, 6)), np.arange(8) % 3
    net = MultiLayerNetExtend(6, [5], 3, use_batchnorm=True, use_dropout=True)
    net.predict(x, train_flg=True)
    running = net.layers['BatchNorm1'].running_mean.copy()
    state = np.random.get_state()[1].copy()
    assert_array_equal(net.predict(x), net.predict(x))  # inference: no dropout, no RNG
    assert_array_equal(np.random.get_state()[1], state)
    assert_array_equal(net.layers['BatchNorm1'].running_mean, running)
    assert 0 <= net.accuracy(x, t) <= 1


def test_simple_convnet_fixes_odd_and_non_square_sizes(rng):
    net = SimpleConvNet(input_dim=(1, 9, 12),
                        conv_param={'filter_num': 3, 'filter_size': 4, 'pad': 0, 'stride': 1},
                        hidden_size=5)
    assert net.params['W2'].shape == (3 * 3 * 4, 5)  # conv 6x9 -> pool 3x4
    assert net.predict(rng.random((2, 1, 9, 12))).shape == (2, 10)


# -------------------------------------------------------------------------------- seeded RNG order

def test_seed_reproduces_the_textbook_initial_weights():
    net = seeded(7, SimpleConvNet)
    np.random.seed(7)
    for key, shape in [('W1', (30, 1, 5, 5)), ('W2', (4320, 100)), ('W3', (100, 10))]:
        assert_array_equal(net.params[key], 0.01 * np.random.randn(*shape))

    deep = seeded(8, DeepConvNet)
    np.random.seed(8)
    fan = [9, 144, 144, 288, 288, 576, 1024, 50]
    for i, key in enumerate(f'W{j}' for j in range(1, 9)):
        shape = deep.params[key].shape
        assert_array_equal(deep.params[key], np.sqrt(2.0 / fan[i]) * np.random.randn(*shape))
    assert all(not deep.params[f'b{j}'].any() for j in range(1, 9))

    mlp = seeded(9, lambda: MultiLayerNet(6, [5, 4], 3, weight_init_std='Sigmoid'))
    np.random.seed(9)
    for key, (n, m) in zip(['W1', 'W2', 'W3'], [(6, 5), (5, 4), (4, 3)]):
        assert_array_equal(mlp.params[key], np.sqrt(1.0 / n) * np.random.randn(n, m))


# ---------------------------------------------------------------------- gradient vs numerical

# Central differences are wrong where h = 1e-4 moves a value across a ReLU kink or changes a pooling
# window's winner; the fixed seeds pick points where that does not happen, as ch07's check does.

def test_simple_convnet_gradient_check():
    net = seeded(0, lambda: tiny_simple(weight_init_std=0.1))
    x = np.random.rand(100).reshape((1, 1, 10, 10))
    t = np.array([1]).reshape((1, 1))  # as in ch07/gradient_check.py
    numeric = net.numerical_gradient(x, t)
    grads = net.gradient(x, t)
    assert list(grads) == list(numeric) == list(net.params)
    for key in grads:
        assert np.abs(grads[key] - numeric[key]).mean() < 1e-6, key
    assert grads['W1'] is net.layers['Conv1'].dW and grads['b3'] is net.layers['Affine2'].db


@pytest.mark.parametrize("make", [
    lambda: MultiLayerNet(6, [5, 4], 3, weight_decay_lambda=0.1),
    lambda: MultiLayerNet(6, [5], 3, activation='sigmoid', weight_init_std=0.5),
    lambda: MultiLayerNetExtend(6, [5, 4], 3, weight_decay_lambda=0.05, use_batchnorm=True),
], ids=["relu-decay", "sigmoid", "batchnorm"])
def test_multi_layer_gradient_check(make):
    net = seeded(1, make)
    x, t = np.random.randn(4, 6), np.eye(3)[[0, 2, 1, 2]]
    numeric = net.numerical_gradient(x, t)
    grads = net.gradient(x, t)
    assert list(grads) == list(numeric)
    for key in grads:
        assert np.abs(grads[key] - numeric[key]).mean() < 1e-6, key


def _sampled_gradient_check(net, x, t, per_param=10, h=1e-6):
    """Compare gradient() with central differences on a strided sample of each parameter.

    The step is smaller than numerical_gradient's 1e-4: these nets have so many ReLUs and pooling
    windows that a 1e-4 step moves some of them across a kink, which costs ~1 % accuracy.
    """
    grads = {k: v.copy() for k, v in net.gradient(x, t).items()}
    for key, param in net.params.items():
        flat = param.reshape(-1)  # a view
        idx = np.arange(0, flat.size, max(1, flat.size // per_param))
        numeric = np.empty(idx.size)
        for j, i in enumerate(idx):
            value = flat[i]
            flat[i] = value + h
            plus = net.loss(x, t)
            flat[i] = value - h
            numeric[j] = (plus - net.loss(x, t)) / (2 * h)
            flat[i] = value
        assert np.abs(grads[key].reshape(-1)[idx] - numeric).mean() < 1e-6, key


def test_deep_convnet_gradient_check():
    net = seeded(2, DeepConvNet)
    for layer in net.layers:
        if isinstance(layer, Dropout):
            layer.dropout_ratio = 0.0  # keeps everything: the training loss becomes deterministic
    x, t = mnist_like(1, seed=3, dtype=np.float64)
    _sampled_gradient_check(net, x, t, per_param=6)


def test_lenet5_gradient_check():
    net = seeded(3, LeNet5)
    x, t = mnist_like(2, seed=4, dtype=np.float64)
    _sampled_gradient_check(net, x, t)


# ------------------------------------------------------- seeded equivalence with the NumPy kernels

@pytest.mark.parametrize("make, n", [(SimpleConvNet, 20), (LeNet5, 10), (DeepConvNet, 4)],
                         ids=["simple", "lenet5", "deep"])
def test_compiled_and_reference_kernels_train_the_same(make, n):
    x, t = mnist_like(n)
    nets = [seeded(4, make), use_kernels(seeded(4, make), reference)]
    assert_array_equal(nets[0].params['W1'], nets[1].params['W1'])
    losses = [[], []]
    for net, log in zip(nets, losses):
        opt = Adam()
        for step in range(4):
            np.random.seed(100 + step)  # the same dropout masks in both runs
            grads = net.gradient(x, t)
            log.append(net.last_layer.loss)
            opt.update(net.params, grads)
    assert_allclose(losses[0], losses[1], rtol=1e-9)
    assert losses[0][-1] < losses[0][0]


# ---------------------------------------------------------------------------------- training

def test_training_updates_are_seen_by_the_layers():
    net = seeded(5, tiny_simple)
    x = np.random.rand(8, 1, 10, 10)
    t = np.arange(8) % 10
    W1 = net.params['W1']
    loss0 = net.loss(x, t)
    opt = SGD(lr=0.5)
    for _ in range(10):
        opt.update(net.params, net.gradient(x, t))
    assert net.params['W1'] is W1 and net.layers['Conv1'].W is W1
    assert_aliased(net)
    assert net.loss(x, t) < loss0


def test_accuracy_keeps_the_textbook_remainder_quirk():
    net = seeded(6, tiny_simple)
    x = np.random.rand(25, 1, 10, 10)
    t = np.argmax(net.predict(x), axis=1)  # every prediction right
    assert net.accuracy(x, t, batch_size=10) == pytest.approx(20 / 25)  # 5 left over count as wrong
    assert net.accuracy(x, t, batch_size=10, exact=True) == pytest.approx(1.0)
    assert net.accuracy(x, np.eye(10)[t], batch_size=5) == pytest.approx(1.0)
    assert net.accuracy(x, t) == 0.0  # fewer samples than the default batch of 100
    wrong = (t + 1) % 10
    assert net.accuracy(x, wrong, batch_size=7, exact=True) == 0.0
    with pytest.raises(ValueError, match="batch_size"):
        net.accuracy(x, t, batch_size=0)


def test_deep_convnet_modes():
    net = seeded(7, DeepConvNet)
    x, t = mnist_like(3)
    state = np.random.get_state()[1].copy()
    assert_array_equal(net.predict(x), net.predict(x))  # inference by default: no RNG used
    assert_array_equal(np.random.get_state()[1], state)
    np.random.seed(1)
    a = net.loss(x, t)
    np.random.seed(1)
    assert net.loss(x, t) == a  # training mode: dropout masks from the global RNG
    np.random.seed(2)
    assert net.loss(x, t) != a
    assert 0.0 <= net.accuracy(x, t, batch_size=3) <= 1.0


# ------------------------------------------------------------------------------ dtype and fused

def _images(n, side):
    return mnist_like(n)[0][:, :, :side, :side]


@pytest.mark.parametrize("make, x", [
    (tiny_simple, _images(4, 10)), (LeNet5, _images(4, 28)), (DeepConvNet, _images(4, 28)),
    (lambda **kw: MultiLayerNetExtend(100, [8], 10, use_batchnorm=True, **kw),
     _images(4, 10).reshape(4, 100))], ids=["simple", "lenet5", "deep", "mlp-bn"])
def test_float32_network_runs_in_float32(make, x):
    t = np.array([3, 1, 4, 1])
    net32, net64 = seeded(8, lambda: make(dtype=np.float32)), seeded(8, make)
    assert all(v.dtype == np.float32 for v in net32.params.values())
    np.random.seed(0)
    grads = net32.gradient(x, t)
    assert net32.last_layer.loss.dtype == np.float32
    assert all(g.dtype == np.float32 for g in grads.values())
    np.random.seed(0)
    net64.gradient(x, t)  # the same training-mode loss (and dropout masks) in float64
    assert_allclose(net32.last_layer.loss, net64.last_layer.loss, rtol=1e-4)
    Adam().update(net32.params, grads)
    assert all(v.dtype == np.float32 for v in net32.params.values())
    with pytest.raises(TypeError, match="dtype"):
        make(dtype=np.int32)


@pytest.mark.parametrize("make, n_fused_layers", [(SimpleConvNet, 5), (LeNet5, 8), (DeepConvNet, 14)],
                         ids=["simple", "lenet5", "deep"])
def test_use_fused_gives_the_same_numbers(make, n_fused_layers):
    plain, fused = seeded(9, make), seeded(9, lambda: make(use_fused=True))
    assert not any(isinstance(la, ConvReLU) for la in layer_list(plain))
    assert len(layer_list(fused)) == n_fused_layers
    assert isinstance(layer_list(fused)[0], ConvReLU)
    assert_aliased(fused)
    x, t = mnist_like(3, dtype=np.float64)
    np.random.seed(0)
    g_plain = plain.gradient(x, t)
    np.random.seed(0)
    g_fused = fused.gradient(x, t)
    assert fused.last_layer.loss == pytest.approx(plain.last_layer.loss, rel=1e-13)
    for key in g_plain:
        assert_allclose(g_fused[key], g_plain[key], rtol=1e-10, atol=1e-14, err_msg=key)


# --------------------------------------------------------------------------------------- files

def test_save_and_load_params_round_trip_and_rebind(tmp_path):
    src, dst = seeded(10, tiny_simple), seeded(11, tiny_simple)
    path = tmp_path / "params.npz"
    assert inspect.signature(SimpleConvNet.save_params).parameters['file_name'].default == "params.npz"
    src.save_params(str(path))
    old_W1 = dst.params['W1']
    dst.load_params(str(path))
    for key in src.params:
        assert_array_equal(dst.params[key], src.params[key])
    assert dst.params['W1'] is not old_W1
    assert dst.layers['Conv1'].W is dst.params['W1']
    assert_aliased(dst)
    x = np.random.rand(2, 1, 10, 10)
    assert_array_equal(dst.predict(x), src.predict(x))


def test_textbook_pickle_needs_opt_in_and_bad_files_change_nothing(tmp_path):
    src, dst = seeded(12, tiny_simple), seeded(13, tiny_simple)
    pkl = tmp_path / "params.pkl"
    src.save_params(str(pkl), format="pickle")
    before = {k: (v, v.copy()) for k, v in dst.params.items()}

    def unchanged():
        for key, (obj, values) in before.items():
            assert dst.params[key] is obj and np.array_equal(obj, values)
        assert_aliased(dst)

    with pytest.raises(ValueError):
        dst.load_params(str(pkl))  # pickle without allow_pickle
    unchanged()
    other = tmp_path / "other.npz"
    tiny_simple(conv_param={**TINY_CONV, 'filter_num': 4}).save_params(str(other))
    with pytest.raises(ValueError):
        dst.load_params(str(other))  # wrong shapes
    unchanged()
    dst.load_params(str(pkl), allow_pickle=True)
    assert_array_equal(dst.params['W2'], src.params['W2'])
    assert_aliased(dst)


def test_load_params_keeps_the_network_dtype_and_rebinds_lists_and_batchnorm(tmp_path):
    path = tmp_path / "deep.npz"
    seeded(14, DeepConvNet).save_params(str(path))
    deep32 = DeepConvNet(dtype=np.float32)
    deep32.load_params(str(path))
    assert all(v.dtype == np.float32 for v in deep32.params.values())
    assert deep32.layers[18].W is deep32.params['W8']
    bn_path = tmp_path / "bn.npz"
    src = seeded(15, lambda: MultiLayerNetExtend(6, [5], 3, use_batchnorm=True))
    src.params['gamma1'] += 1
    src.save_params(str(bn_path))
    dst = MultiLayerNetExtend(6, [5], 3, use_batchnorm=True)
    dst.load_params(str(bn_path))
    assert dst.layers['BatchNorm1'].gamma is dst.params['gamma1']
    assert_array_equal(dst.params['gamma1'], 2)


def test_state_dict_copies_and_load_state_dict_assigns_in_place():
    net = seeded(16, tiny_simple)
    state = net.state_dict()
    assert list(state) == list(net.params)
    assert all(state[k] is not net.params[k] for k in state)
    W1 = net.params['W1']
    net.params['W1'] += 1.0
    net.load_state_dict(state)
    assert net.params['W1'] is W1 and net.layers['Conv1'].W is W1
    assert_array_equal(W1, state['W1'])
    with pytest.raises(ValueError, match="shape"):
        net.load_state_dict({**state, 'W1': state['W1'] + 5, 'b1': np.zeros(3)})  # nothing assigned
    with pytest.raises(ValueError, match="missing"):
        net.load_state_dict({k: v for k, v in state.items() if k != 'b3'})
    assert_array_equal(W1, state['W1'])


# -------------------------------------------------------------------------------- initializers

def test_initializer_helpers():
    assert he_std(8) == pytest.approx(0.5) and xavier_std(4) == pytest.approx(0.5)
    assert init_std('ReLU', 8) == he_std(8) and init_std('XAVIER', 4) == xavier_std(4)
    assert init_std(0.01, 100) == 0.01
    with pytest.raises(ValueError, match="weight_init_std"):
        init_std('lecun', 3)
    assert fan_in((30, 3, 5, 5)) == 75 and fan_in((4320, 100)) == 4320
    assert float_dtype('float32') == np.float32
    assert count_params({'a': np.zeros((2, 3)), 'b': np.zeros(4)}) == 10
    assert count_params(MultiLayerNet(6, [5], 3)) == 6 * 5 + 5 + 5 * 3 + 3


@pytest.mark.parametrize("fused", [True, False], ids=["conv+relu fused", "plain conv"])
def test_gradient_skips_the_input_gradient_of_a_first_convolution(fused, monkeypatch):
    import cnncore.kernels

    net = SimpleConvNet(input_dim=(1, 10, 10), conv_param={"filter_num": 3, "filter_size": 3,
                                                           "pad": 0, "stride": 1},
                        hidden_size=5, output_size=3)
    rng = np.random.default_rng(0)
    x, t = rng.standard_normal((4, 1, 10, 10)), np.array([0, 1, 2, 1])
    calls = []
    name = "conv_bias_relu_backward" if fused else "conv_backward"
    original = getattr(cnncore.kernels, name)

    def spy(*args, **kw):
        calls.append(kw)
        return original(*args, **kw)

    monkeypatch.setattr(cnncore.kernels, name, spy)
    if not fused:   # a kernels module of its own keeps the layer out of the fused step
        net.layers["Conv1"].kernels = types.SimpleNamespace(
            **{k: getattr(cnncore.kernels, k) for k in dir(cnncore.kernels) if not k.startswith("_")})
    grads = {k: v.copy() for k, v in net.gradient(x, t).items()}
    assert calls == [{"need_dx": False}]
    monkeypatch.undo()
    first = net.layers["Conv1"]
    net.loss(x, t)                                   # the textbook's loop, dx of Conv1 included
    dout = net.last_layer.backward(1)
    for layer in reversed(list(net.layers.values())):
        dout = layer.backward(dout)
    assert dout.shape == x.shape and first.dW is not None
    for key, layer, attr in net._bindings:
        assert_allclose(grads[key], getattr(layer, "d" + attr), rtol=1e-12, atol=1e-15)
