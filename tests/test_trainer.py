"""Trainer: the textbook's printed lines, attributes, RNG call order and epoch accounting (default),
the opt-in exact/shuffled epochs, and real learning on MNIST (including an unchanged textbook script)."""
import re
import runpy
import textwrap

import numpy as np
import pytest

from cnncore.datasets import load_mnist
from cnncore.networks import MultiLayerNet
from cnncore.optimizer import SGD, Adam, AdaGrad, Momentum, Nesterov, RMSprop
from cnncore.trainer import Trainer

FLOAT = r"[0-9.e+-]+"


class RecordingNet:
    """A stand-in network that logs every call; x_train[i] == i, so batches reveal their indices."""

    def __init__(self):
        self.params = {"W": np.zeros(1)}
        self.calls = []
        self.batches = []

    def gradient(self, x, t):
        self.calls.append("gradient")
        self.batches.append(x[:, 0].astype(int).tolist())
        return {"W": np.ones(1)}

    def loss(self, x, t):
        self.calls.append("loss")
        return np.float64(0.5) + self.params["W"][0]

    def accuracy(self, *args):
        assert len(args) == 2  # the Trainer calls accuracy(x, t) positionally
        x, t = args
        self.calls.append(("accuracy", len(x)))
        return np.float64(len(x) / 1000)


def indexed_data(n_train, n_test=50):
    x = np.arange(n_train, dtype=np.float64)[:, None]
    return x, np.zeros(n_train, np.uint8), np.zeros((n_test, 1)), np.zeros(n_test, np.uint8)


def test_textbook_lines_attributes_and_call_order(capsys):
    net = RecordingNet()
    trainer = Trainer(net, *indexed_data(1000), epochs=2, mini_batch_size=100,
                      optimizer="sgd", optimizer_param={"lr": 0.25},
                      evaluate_sample_num_per_epoch=30)
    assert isinstance(trainer.optimizer, SGD) and trainer.optimizer.lr == 0.25
    assert (trainer.train_size, trainer.batch_size, trainer.epochs) == (1000, 100, 2)
    assert trainer.iter_per_epoch == 10.0 and isinstance(trainer.iter_per_epoch, float)
    assert trainer.max_iter == 20 and trainer.current_iter == 0 and trainer.current_epoch == 0
    assert trainer.verbose is True and trainer.network is net
    assert trainer.evaluate_sample_num_per_epoch == 30
    trainer.train()

    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 20 + 2 + 2
    losses = [line for line in lines if line.startswith("train loss:")]
    assert losses == ["train loss:" + str(v) for v in trainer.train_loss_list]
    assert len(losses) == 20
    assert losses[0] == "train loss:0.25"  # str() of the NumPy scalar after one update
    # epochs are evaluated after the 1st and the 11th step, never after the last
    assert lines[1] == "=== epoch:1, train acc:0.03, test acc:0.03 ==="
    assert lines[12] == "=== epoch:2, train acc:0.03, test acc:0.03 ==="
    assert lines[-2:] == ["=============== Final Test Accuracy ===============", "test acc:0.05"]
    assert trainer.current_iter == 20 and trainer.current_epoch == 2
    assert trainer.train_acc_list == trainer.test_acc_list == [0.03, 0.03]
    assert trainer.final_test_acc == 0.05
    # per step: gradient, update (params changed in place), then the extra loss forward
    assert net.calls[:4] == ["gradient", "loss", ("accuracy", 30), ("accuracy", 30)]
    assert net.calls[4:6] == ["gradient", "loss"]
    assert net.calls[-1] == ("accuracy", 50)
    assert net.params["W"][0] == pytest.approx(-0.25 * 20)


def test_batches_follow_the_global_rng_like_the_textbook():
    np.random.seed(7)
    expected = [np.random.choice(1000, 100).tolist() for _ in range(20)]
    np.random.seed(7)
    net = RecordingNet()
    Trainer(net, *indexed_data(1000), epochs=2, verbose=False).train()
    assert net.batches == expected  # with replacement, same call order


def test_fractional_iter_per_epoch_quirk():
    net = RecordingNet()
    trainer = Trainer(net, *indexed_data(1000), epochs=3, mini_batch_size=300, verbose=False)
    assert trainer.iter_per_epoch == pytest.approx(1000 / 300) and trainer.max_iter == 10
    trainer.train()
    assert len(trainer.train_acc_list) == 1 and trainer.current_epoch == 1  # textbook: 1 entry
    small = Trainer(RecordingNet(), *indexed_data(50), epochs=3, mini_batch_size=100, verbose=False)
    assert small.iter_per_epoch == 1 and small.max_iter == 3


def test_exact_epochs():
    net = RecordingNet()
    trainer = Trainer(net, *indexed_data(1000), epochs=3, mini_batch_size=300, verbose=False,
                      exact_epochs=True)
    assert trainer.iter_per_epoch == 4 and trainer.max_iter == 12
    seen = []
    trainer.epoch_callback = lambda tr: seen.append((tr.current_epoch, tr.current_iter))
    trainer.train()
    assert len(trainer.train_acc_list) == len(trainer.test_acc_list) == 3
    assert seen == [(1, 3), (2, 7), (3, 11)]  # after the last step of each epoch
    assert all(len(b) == 300 for b in net.batches)  # still drawn with replacement


def test_shuffled_epochs_visit_every_sample_once():
    np.random.seed(0)
    net = RecordingNet()
    trainer = Trainer(net, *indexed_data(1000), epochs=2, mini_batch_size=300, verbose=False,
                      shuffle=True)
    assert trainer.exact_epochs and trainer.max_iter == 8
    trainer.train()
    assert [len(b) for b in net.batches] == [300, 300, 300, 100] * 2
    for epoch in (net.batches[:4], net.batches[4:]):
        assert sorted(sum(epoch, [])) == list(range(1000))
    assert net.batches[:4] != net.batches[4:]
    assert len(trainer.test_acc_list) == 2
    with pytest.raises(ValueError, match="exact_epochs"):
        Trainer(net, *indexed_data(10), shuffle=True, exact_epochs=False)


@pytest.mark.parametrize("name, cls", [
    ("SGD", SGD), ("sgd", SGD), ("Momentum", Momentum), ("Nesterov", Nesterov),
    ("AdaGrad", AdaGrad), ("RMSprop", RMSprop), ("rmsprop", RMSprop), ("rmsprpo", RMSprop),
    ("Adam", Adam), ("ADAM", Adam),
])
def test_optimizer_names(name, cls):
    trainer = Trainer(RecordingNet(), *indexed_data(10), optimizer=name,
                      optimizer_param={"lr": 0.5}, verbose=False)
    assert type(trainer.optimizer) is cls and trainer.optimizer.lr == 0.5


def test_optimizer_errors_and_instances():
    with pytest.raises(ValueError, match="unknown optimizer 'AdamW'.*adagrad, adam"):
        Trainer(RecordingNet(), *indexed_data(10), optimizer="AdamW")
    mine = Momentum(lr=0.3)
    assert Trainer(RecordingNet(), *indexed_data(10), optimizer=mine).optimizer is mine
    with pytest.raises(TypeError, match="update"):
        Trainer(RecordingNet(), *indexed_data(10), optimizer=42)


@pytest.fixture(scope="module")
def mnist_small(mnist_dir):
    (x_train, t_train), (x_test, t_test) = load_mnist(path=mnist_dir)
    return x_train[:3000], t_train[:3000], x_test[:1000], t_test[:1000]


def test_a_small_network_learns(mnist_small, capsys):
    np.random.seed(1)
    net = MultiLayerNet(input_size=784, hidden_size_list=[50], output_size=10)
    trainer = Trainer(net, *mnist_small, epochs=5, mini_batch_size=100, optimizer="SGD",
                      optimizer_param={"lr": 0.2}, evaluate_sample_num_per_epoch=500,
                      verbose=False)
    trainer.train()
    assert trainer.max_iter == 150 and len(trainer.train_acc_list) == 5
    assert trainer.train_acc_list[0] < 0.5 < 0.8 < trainer.train_acc_list[-1]  # after 1 / 121 steps
    assert trainer.final_test_acc > 0.8  # chance is 0.1
    assert np.mean(trainer.train_loss_list[-20:]) < 0.5 * np.mean(trainer.train_loss_list[:20])
    assert capsys.readouterr().out == ""  # verbose=False prints nothing


TEXTBOOK_SCRIPT = """
# coding: utf-8
# ch07/train_convnet.py as a reader would write it, imports pointed at cnncore
import numpy as np
from cnncore.layers import *
from cnncore.optimizer import *
from cnncore.trainer import Trainer
from cnncore.datasets import load_mnist
from cnncore.networks import SimpleConvNet

(x_train, t_train), (x_test, t_test) = load_mnist(flatten=False)

x_train, t_train = x_train[:1000], t_train[:1000]
x_test, t_test = x_test[:500], t_test[:500]

max_epochs = 5

network = SimpleConvNet(input_dim=(1,28,28),
                        conv_param = {'filter_num': 30, 'filter_size': 5, 'pad': 0, 'stride': 1},
                        hidden_size=100, output_size=10, weight_init_std=0.01)

trainer = Trainer(network, x_train, t_train, x_test, t_test,
                  epochs=max_epochs, mini_batch_size=100,
                  optimizer='Adam', optimizer_param={'lr': 0.001},
                  evaluate_sample_num_per_epoch=1000)
trainer.train()

network.save_params("params.pkl")
print("Saved Network Parameters!")

x = np.arange(max_epochs)
"""


def test_textbook_script_runs_unchanged(tmp_path, monkeypatch, mnist_dir, capsys):
    script = tmp_path / "train_convnet.py"
    script.write_text(textwrap.dedent(TEXTBOOK_SCRIPT))
    monkeypatch.setenv("CNNCORE_DATA", str(mnist_dir))
    monkeypatch.chdir(tmp_path)
    np.random.seed(0)
    namespace = runpy.run_path(str(script), run_name="__main__")

    out = capsys.readouterr().out.splitlines()
    assert sum(line.startswith("train loss:") for line in out) == 50
    epochs = [line for line in out if line.startswith("=== epoch:")]
    assert len(epochs) == 5
    assert all(re.fullmatch(rf"=== epoch:\d, train acc:{FLOAT}, test acc:{FLOAT} ===", e)
               for e in epochs)
    assert out[-3:-1] == ["=============== Final Test Accuracy ===============",
                          "test acc:" + str(namespace["trainer"].final_test_acc)]
    assert out[-1] == "Saved Network Parameters!"
    trainer = namespace["trainer"]
    assert trainer.final_test_acc > 0.6  # after 50 Adam steps; chance is 0.1
    assert trainer.test_acc_list[-1] > trainer.test_acc_list[0]
    assert (tmp_path / "params.pkl").exists()
    for name in ("Convolution", "Pooling", "softmax", "im2col", "SGD", "Adam", "np"):
        assert name in namespace  # the textbook's star-import surface


# ------------------------------------------------------- issue 26: fail before training, not after


@pytest.mark.parametrize("value, error, message", [
    (-1, ValueError, "evaluate_sample_num_per_epoch must be >= 1, got -1"),
    (0, ValueError, "evaluate_sample_num_per_epoch must be >= 1, got 0"),
    (2.5, TypeError, "evaluate_sample_num_per_epoch must be an integer"),
])
def test_evaluate_sample_num_is_checked_in_the_constructor(value, error, message):
    """The textbook slices [:t]: -1 silently drops the last sample, 0 divides by zero after the
    first step. Both are refused before any training."""
    net = RecordingNet()
    with pytest.raises(error, match=message):
        Trainer(net, *indexed_data(100), evaluate_sample_num_per_epoch=value, verbose=False)
    assert net.calls == []


def test_empty_test_set_is_refused_before_training():
    x, t, _, _ = indexed_data(100)
    net = RecordingNet()
    with pytest.raises(ValueError, match="x_test must hold at least one sample"):
        Trainer(net, x, t, np.zeros((0, 1)), np.zeros(0, np.uint8), verbose=False)
    assert net.calls == []


def test_loss_after_update_false_records_the_gradient_pass_loss_and_skips_a_forward():
    """One forward pass less per step: the recorded loss is the one gradient() differentiated."""
    import cnncore.networks

    def run(loss_after_update):
        np.random.seed(0)
        net = cnncore.networks.lenet5()
        calls = []
        original = net.predict
        net.predict = lambda x, train_flg=False: calls.append(train_flg) or original(x, train_flg)
        x = np.random.rand(40, 1, 28, 28)
        t = np.random.randint(0, 10, 40)
        trainer = Trainer(net, x, t, x[:10], t[:10], epochs=1, mini_batch_size=20, verbose=False,
                          exact_epochs=True, evaluate_sample_num_per_epoch=10,
                          loss_after_update=loss_after_update)
        steps = []
        for _ in range(2):
            trainer.train_step()
            steps.append(net.gradient_loss)
        return trainer, calls, steps

    textbook, calls_textbook, _ = run(True)
    fast, calls_fast, losses = run(False)
    assert calls_textbook.count(False) - calls_fast.count(False) == 2   # one forward a step saved
    assert fast.train_loss_list == losses
    assert fast.train_loss_list[0] != textbook.train_loss_list[0]      # before vs after the update
    assert all(np.array_equal(a, b) for a, b in zip(textbook.network.params.values(),
                                                    fast.network.params.values()))
    with pytest.raises(TypeError, match="gradient_loss"):
        Trainer(object(), x_train=np.zeros((2, 1)), t_train=np.zeros(2, int), x_test=np.zeros((2, 1)),
                t_test=np.zeros(2, int), loss_after_update=False)
