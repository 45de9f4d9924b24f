"""Trainer extensions (opt-in): validation data, hooks and clean stops, learning-rate schedules,
early stopping with the best weights restored, checkpoints, the progress display, augmentation."""
import io
import math

import numpy as np
import pytest

from cnncore.augment import RandomCropFlip, random_crop_flip
from cnncore.callbacks import (Callback, CosineLR, EarlyStopping, ModelCheckpoint, ProgressBar,
                               StepLR, check_writable_file)
from cnncore.networks import MultiLayerNet
from cnncore.trainer import Trainer, evaluate


class ScriptedNet:
    """SGD with lr 1 and gradient -1 raises W by one a step; predict makes the validation accuracy
    VAL_ACC[int(W)] (labels are all 0; the first k samples get class 0)."""

    VAL_ACC = [0.0, 0.2, 0.5, 0.4, 0.3, 0.6, 0.1, 0.1, 0.1, 0.1, 0.1]

    def __init__(self):
        self.params = {"W": np.zeros(1)}
        self.saved = []

    def gradient(self, x, t):
        return {"W": -np.ones(1)}

    def loss(self, x, t):
        return np.float64(1.0) / (1 + self.params["W"][0])

    def predict(self, x):
        k = round(self.VAL_ACC[int(self.params["W"][0])] * len(x))
        scores = np.zeros((len(x), 2))
        scores[:k, 0] = 1
        scores[k:, 1] = 1
        return scores

    def accuracy(self, x, t):
        return np.float64(0.5)

    def state_dict(self):
        return {"W": self.params["W"].copy()}

    def load_state_dict(self, state):
        self.params["W"][...] = state["W"]

    def save_params(self, path):
        self.saved.append(float(self.params["W"][0]))
        open(path, "w").write(str(self.params["W"][0]))


def scripted_trainer(epochs=10, **kw):
    x = np.zeros((10, 1))
    t = np.zeros(10, np.int64)
    kw = {"x_val": x, "t_val": t, **kw}
    return Trainer(ScriptedNet(), x, t, x, t, epochs=epochs, mini_batch_size=10, optimizer="sgd",
                   optimizer_param={"lr": 1.0}, exact_epochs=True, verbose=False, **kw)


class Recorder(Callback):
    def __init__(self):
        self.events = []

    def on_train_begin(self, trainer):
        self.events.append(("begin", trainer.current_iter))

    def on_step_end(self, trainer):
        self.events.append(("step", trainer.current_iter))

    def on_evaluate_begin(self, trainer):
        self.events.append(("evaluate", trainer.current_epoch))

    def on_epoch_end(self, trainer):
        self.events.append(("epoch", trainer.current_epoch))

    def on_train_end(self, trainer):
        self.events.append(("end", trainer.current_iter))


def test_hooks_run_in_order():
    recorder = Recorder()
    trainer = scripted_trainer(epochs=2, callbacks=[recorder])
    trainer.train()
    assert recorder.events == [("begin", 0), ("evaluate", 0), ("epoch", 1), ("step", 1),
                               ("evaluate", 1), ("epoch", 2), ("step", 2), ("end", 2)]
    with pytest.raises(TypeError, match="has none of the hooks"):
        scripted_trainer(callbacks=[object()])


def test_validation_data_is_scored_exactly_and_printed(capsys):
    trainer = scripted_trainer(epochs=3)
    trainer.verbose = True
    trainer.train()
    assert trainer.val_acc_list == [0.2, 0.5, 0.4]
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("===")]
    assert lines[0] == "=== epoch:1, train acc:0.5, test acc:0.5, val acc:0.2 ==="
    assert len(trainer.val_loss_list) == 3 and trainer.epoch_loss_list == [0.5, 1 / 3, 0.25]
    with pytest.raises(ValueError, match="both x_val and t_val"):
        scripted_trainer(t_val=None)
    with pytest.raises(ValueError, match=r"x_val samples must have the shape of x_train's, "
                                         r"\(1,\); got \(2,\)"):
        Trainer(ScriptedNet(), np.zeros((5, 1)), np.zeros(5), np.zeros((5, 1)), np.zeros(5),
                x_val=np.zeros((3, 2)), t_val=np.zeros(3))
    with pytest.raises(ValueError, match="x_val must hold at least one sample"):
        Trainer(ScriptedNet(), np.zeros((5, 1)), np.zeros(5), np.zeros((5, 1)), np.zeros(5),
                x_val=np.zeros((0, 1)), t_val=np.zeros(0))


def test_evaluate_matches_a_direct_computation():
    rng = np.random.default_rng(0)
    np.random.seed(0)
    net = MultiLayerNet(input_size=6, hidden_size_list=[5], output_size=3)
    x, t = rng.normal(size=(250, 6)), rng.integers(0, 3, 250)
    acc, loss = evaluate(net, x, t, batch_size=100)
    y = net.predict(x)
    p = np.exp(y - y.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    assert acc == np.mean(y.argmax(1) == t)   # every sample, the remainder batch included
    assert loss == pytest.approx(-np.mean(np.log(p[np.arange(250), t])), rel=1e-12)
    one_hot = np.eye(3)[t]
    assert evaluate(net, x, one_hot) == pytest.approx((acc, loss))


def test_stop_ends_training_cleanly(capsys):
    class StopAtThree(Callback):
        def on_step_end(self, trainer):
            if trainer.current_iter == 3:
                trainer.stop("enough")

    trainer = scripted_trainer(epochs=10, callbacks=[StopAtThree()])
    trainer.verbose = True
    trainer.train()
    out = capsys.readouterr().out.splitlines()
    assert trainer.current_iter == 3 and trainer.stop_reason == "enough"
    assert "training stopped after 3 of 10 steps: enough" in out
    assert out[-2:] == ["=============== Final Test Accuracy ===============", "test acc:0.5"]


def test_step_and_cosine_schedules():
    step = StepLR(step_size=2, gamma=0.5)
    trainer = scripted_trainer(epochs=6, callbacks=[step])
    trainer.optimizer.lr = 0.8
    trainer.train()
    assert step.lr_list == [0.8, 0.8, 0.4, 0.4, 0.2, 0.2]
    cosine = CosineLR(eta_min=0.1)
    trainer = scripted_trainer(epochs=4, callbacks=[cosine])
    trainer.train()
    expected = [0.1 + 0.9 * (1 + math.cos(math.pi * k / 4)) / 2 for k in range(4)]
    assert cosine.lr_list == pytest.approx(expected) and trainer.optimizer.lr == pytest.approx(0.1)
    with pytest.raises(ValueError, match="gamma"):
        StepLR(2, gamma=0)
    with pytest.raises(ValueError, match="eta_min .* above"):
        scripted_trainer(callbacks=[CosineLR(eta_min=5.0)]).train()


def test_early_stopping_restores_the_best_weights():
    """Validation accuracy 0.2, 0.5, 0.4, 0.3: with patience 2 training stops after epoch 4 and
    the network gets the weights of epoch 2 back (W == 2), before the final test accuracy."""
    stopper = EarlyStopping(patience=2)
    trainer = scripted_trainer(epochs=10, callbacks=[stopper])
    trainer.train()
    assert trainer.current_epoch == 4 and stopper.stopped_epoch == 4
    assert stopper.best == 0.5 and stopper.best_epoch == 2
    assert trainer.network.params["W"][0] == 2.0
    assert "early stopping: val_acc has not improved for 2 epochs" in trainer.stop_reason
    # without restoring, the weights stay those of the last step
    trainer = scripted_trainer(epochs=10, callbacks=[EarlyStopping(2, restore_best_weights=False)])
    trainer.train()
    assert trainer.network.params["W"][0] == 4.0
    # monitoring a loss: lower is better; val loss needs validation data
    with pytest.raises(ValueError, match="monitor"):
        EarlyStopping(monitor="val_accuracy")
    x = np.zeros((10, 1))
    plain = Trainer(ScriptedNet(), x, np.zeros(10, int), x, np.zeros(10, int), exact_epochs=True,
                    callbacks=[EarlyStopping(monitor="val_loss")], verbose=False)
    with pytest.raises(ValueError, match="no validation set"):
        plain.train()
    assert plain.current_iter == 0


def test_checkpoint_saves_the_best_and_checks_its_path_first(tmp_path):
    path = tmp_path / "best.npz"
    checkpoint = ModelCheckpoint(path)
    trainer = scripted_trainer(epochs=6, callbacks=[checkpoint])
    trainer.train()
    assert checkpoint.saved_epochs == [1, 2, 5] and trainer.network.saved == [1.0, 2.0, 5.0]
    assert path.read_text() == "5.0"
    for bad, error in ((tmp_path / "missing" / "best.npz", FileNotFoundError),
                       (tmp_path, IsADirectoryError)):
        trainer = scripted_trainer(callbacks=[ModelCheckpoint(bad)])
        with pytest.raises(error, match="ModelCheckpoint path"):
            trainer.train()
        assert trainer.current_iter == 0


def test_check_writable_file_on_a_read_only_directory(tmp_path):
    import os

    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as a user who can write anywhere (root)")
        with pytest.raises(PermissionError, match="cannot write"):
            check_writable_file(locked / "x.npz", "--out")
    finally:
        locked.chmod(0o700)


class FakeClock:
    def __init__(self, step):
        self.now, self.step = 0.0, step

    def __call__(self):
        self.now += self.step
        return self.now


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_plain_lines_when_not_a_terminal():
    stream = io.StringIO()
    bar = ProgressBar(stream=stream, interval=1.0)
    bar.clock = FakeClock(0.6)   # an update every second step
    trainer = scripted_trainer(epochs=2, callbacks=[bar])
    trainer.iter_per_epoch, trainer.max_iter = 4, 8   # 4 steps an epoch, 10 images a step
    trainer.train()
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue() and len(lines) >= 3
    assert lines[0].startswith("epoch 1/2 step 2/4 | ")
    assert "images/s | loss " in lines[0] and "left" in lines[0]
    assert any(line.startswith("epoch 2/2") for line in lines)


def test_progress_redraws_one_line_on_a_terminal_and_clears_it_for_the_epoch_line():
    stream = Terminal()
    bar = ProgressBar(stream=stream)
    bar.clock = FakeClock(0.6)
    trainer = scripted_trainer(epochs=2, callbacks=[bar])
    trainer.iter_per_epoch, trainer.max_iter = 4, 8
    trainer.train()
    text = stream.getvalue()
    assert "\n" not in text and text.count("\repoch ") >= 2
    assert text.count("epoch 1: evaluating ...\r") == 1 and "epoch 2: evaluating" in text
    assert text.endswith("\r") and text.rstrip("\r").endswith(" " * 10)  # cleared at the end
    # a Trainer printing its per-step lines gets plain lines instead
    stream = Terminal()
    trainer = scripted_trainer(epochs=1, callbacks=[ProgressBar(stream=stream, interval=1e-9)])
    trainer.verbose = True
    trainer.train()
    assert "\r" not in stream.getvalue() and stream.getvalue().endswith("\n")


# ------------------------------------------------------------------------------- augmentation

def shift_reference(image, dy, dx, pad, flip):
    """One image by loops: the crop at offset (dy, dx) of the zero-padded image, then the flip."""
    c, h, w = image.shape
    out = np.zeros_like(image)
    for y in range(h):
        for x in range(w):
            sy, sx = y + dy - pad, x + dx - pad
            if 0 <= sy < h and 0 <= sx < w:
                out[:, y, x] = image[:, sy, sx]
    return out[:, :, ::-1] if flip else out


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint8])
def test_random_crop_flip_matches_a_per_image_reference(dtype):
    x = (np.random.default_rng(1).random((16, 3, 7, 9)) * 200).astype(dtype)
    out = random_crop_flip(x, pad=2, flip=True, rng=np.random.default_rng(5))
    rng = np.random.default_rng(5)   # the same draws, in the documented order
    oy, ox = rng.integers(0, 5, 16), rng.integers(0, 5, 16)
    flips = rng.random(16) < 0.5
    assert out.dtype == x.dtype and out.shape == x.shape
    for i in range(16):
        expected = shift_reference(x[i], oy[i], ox[i], 2, flips[i])
        np.testing.assert_array_equal(out[i], expected)
    assert 0 < flips.sum() < 16
    np.testing.assert_array_equal(random_crop_flip(x, pad=0, flip=False), x)


def test_augmenter_is_seeded_and_leaves_the_global_rng_alone():
    x = np.random.default_rng(0).random((20, 1, 8, 8))
    a, b = RandomCropFlip(pad=2, seed=3), RandomCropFlip(pad=2, seed=3)
    np.testing.assert_array_equal(a(x), b(x))
    assert not np.array_equal(a(x), a(x))
    with pytest.raises(ValueError, match="N, C, H, W"):
        a(x[0])
    with pytest.raises(ValueError, match="pad must be >= 0"):
        RandomCropFlip(pad=-1)
    # the Trainer's batches (global np.random) are the same with augmentation on and off
    seen = {}
    for augment in (None, RandomCropFlip(pad=1, seed=0)):
        batches = []

        class Spy(ScriptedNet):
            def gradient(self, x, t, batches=batches):
                batches.append(x.copy())
                return super().gradient(x, t)

        np.random.seed(11)
        xs = np.arange(40, dtype=float).reshape(10, 1, 2, 2)
        Trainer(Spy(), xs, np.zeros(10, int), xs, np.zeros(10, int), epochs=3,
                mini_batch_size=4, optimizer_param={"lr": 1.0}, verbose=False,
                augment=augment).train()
        seen[augment is None] = batches
    assert len(seen[True]) == len(seen[False])
    for plain, augmented in zip(seen[True], seen[False]):
        # same samples drawn: every augmented image is a shift/flip of the plain one (same max)
        np.testing.assert_array_equal(plain.max(axis=(1, 2, 3)) >= augmented.max(axis=(1, 2, 3)),
                                      True)
    with pytest.raises(TypeError, match="augment must be a function"):
        scripted_trainer(augment=3)


def test_chapter_6_example_runs(mnist_dir, capsys):
    """examples/ch6_hyperparameter_search.py, shortened: validation accuracies, then one test score."""
    import runpy
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "examples" / "ch6_hyperparameter_search.py"
    module = runpy.run_path(str(script))
    module["main"](["--data", str(mnist_dir), "--trials", "2", "--epochs", "2"])
    out = capsys.readouterr().out
    assert out.count("val acc") == 4 and "Best-2 (val acc:" in out
    assert out.count("test acc of the best trial") == 1
