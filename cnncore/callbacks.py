"""Trainer callbacks: learning-rate schedules, early stopping, checkpoints and a progress display.

    from cnncore.callbacks import CosineLR, EarlyStopping, ModelCheckpoint, ProgressBar, StepLR
    trainer = Trainer(network, x_train, t_train, x_test, t_test, epochs=30, exact_epochs=True,
                      x_val=x_val, t_val=t_val,
                      callbacks=[CosineLR(), EarlyStopping(patience=5),
                                 ModelCheckpoint("best.npz"), ProgressBar()])
    trainer.train()

A callback is any object with some of these methods, each called with the trainer:

``on_train_begin``    before the first step; raise here for a bad setting (nothing trained yet)
``on_step_end``       after every step (``trainer.current_iter`` = steps done)
``on_evaluate_begin`` before each epoch's evaluation and its printed line
``on_epoch_end``      after each epoch's evaluation (the ``*_acc_list`` / ``*_loss_list`` are
                      up to date), beside the Trainer's ``epoch_callback``
``on_train_end``      after the last step (or a stop), before the final test accuracy

``trainer.stop(reason)`` ends training cleanly after the current step. Epoch-based callbacks
follow the Trainer's epochs; in its default (textbook) mode those are fractional and the first
is "evaluated" after one step, so pass ``exact_epochs=True`` for schedules and early stopping.
"""
import math
import os
import sys
import tempfile
import time

import numpy as np

from ._validate import check_int


class Callback:
    """Base class with every hook doing nothing; subclass and override what you need."""

    def on_train_begin(self, trainer):
        pass

    def on_step_end(self, trainer):
        pass

    def on_evaluate_begin(self, trainer):
        pass

    def on_epoch_end(self, trainer):
        pass

    def on_train_end(self, trainer):
        pass


def check_writable_file(path, what="path"):
    """Fail now, naming ``what``, if ``path`` could not be written later: its directory must exist
    and accept a new file, and ``path`` itself must not be a directory."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise IsADirectoryError(f"{what} {path!r} is a directory, not a file")
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{what} {path!r}: directory {directory!r} does not exist")
    try:
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as exc:
        raise PermissionError(f"{what} {path!r}: cannot write in {directory!r} ({exc})") from None


def _optimizer_lr(trainer, who):
    lr = getattr(trainer.optimizer, "lr", None)
    if not isinstance(lr, (int, float, np.floating)):
        raise TypeError(f"{who} needs an optimizer with a numeric lr attribute, got "
                        f"{trainer.optimizer!r}")
    return float(lr)


class StepLR(Callback):
    """Multiply the learning rate by ``gamma`` every ``step_size`` epochs:
    ``lr = lr0 * gamma ** (epoch // step_size)``, set after each epoch's evaluation. ``lr_list``
    records the rate each epoch's last step used."""

    def __init__(self, step_size, gamma=0.1):
        self.step_size = check_int(step_size, "step_size", 1)
        if not 0 < gamma <= 1:
            raise ValueError(f"gamma must be in (0, 1], got {gamma!r}")
        self.gamma = float(gamma)
        self.lr_list = []

    def on_train_begin(self, trainer):
        self.base_lr = _optimizer_lr(trainer, "StepLR")

    def on_epoch_end(self, trainer):
        self.lr_list.append(trainer.optimizer.lr)
        trainer.optimizer.lr = self.base_lr * self.gamma ** (trainer.current_epoch // self.step_size)


class CosineLR(Callback):
    """Cosine annealing per step from the optimizer's lr down to ``eta_min`` over ``t_max`` steps
    (default: the whole run, ``trainer.max_iter``): ``lr = eta_min + (lr0 - eta_min) *
    (1 + cos(pi * t / t_max)) / 2`` after step t. ``lr_list`` records the rate each epoch's last
    step used."""

    def __init__(self, eta_min=0.0, t_max=None):
        if not eta_min >= 0:
            raise ValueError(f"eta_min must be >= 0, got {eta_min!r}")
        self.eta_min = float(eta_min)
        self.t_max = None if t_max is None else check_int(t_max, "t_max", 1)
        self.lr_list = []

    def on_train_begin(self, trainer):
        self.base_lr = _optimizer_lr(trainer, "CosineLR")
        if self.eta_min > self.base_lr:
            raise ValueError(f"eta_min {self.eta_min} is above the optimizer's lr {self.base_lr}")
        self.steps = self.t_max or max(trainer.max_iter, 1)

    def on_step_end(self, trainer):
        t = min(trainer.current_iter, self.steps)
        trainer.optimizer.lr = self.eta_min + (self.base_lr - self.eta_min) * (
            1 + math.cos(math.pi * t / self.steps)) / 2

    def on_epoch_end(self, trainer):
        self.lr_list.append(trainer.optimizer.lr)


class _BestOf(Callback):
    """Follows ``monitor`` (``val_acc``, ``val_loss``, ``train_acc``, ``test_acc``, ``epoch_loss``:
    the Trainer list ``<monitor>_list``); losses improve downwards, accuracies upwards."""

    def __init__(self, monitor, min_delta):
        if monitor not in ("val_acc", "val_loss", "train_acc", "test_acc", "epoch_loss"):
            raise ValueError(f"monitor must be val_acc, val_loss, train_acc, test_acc or "
                             f"epoch_loss, got {monitor!r}")
        if not min_delta >= 0:
            raise ValueError(f"min_delta must be >= 0, got {min_delta!r}")
        self.monitor, self.min_delta = monitor, float(min_delta)
        self.sign = -1.0 if monitor.endswith("loss") else 1.0
        self.best, self.best_epoch = None, None

    def on_train_begin(self, trainer):
        if self.monitor.startswith("val") and getattr(trainer, "x_val", None) is None:
            raise ValueError(f"{type(self).__name__} monitors {self.monitor} but the Trainer has "
                             f"no validation set (pass x_val, t_val)")
        self.best, self.best_epoch = None, None

    def _improved(self, trainer):
        value = float(getattr(trainer, self.monitor + "_list")[-1])
        if self.best is None or self.sign * (value - self.best) > self.min_delta:
            self.best, self.best_epoch = value, trainer.current_epoch
            return True
        return False


def _snapshot(network):
    if hasattr(network, "state_dict"):
        return network.state_dict()
    return {key: np.array(value, copy=True) for key, value in network.params.items()}


def _restore(network, state):
    if hasattr(network, "load_state_dict"):
        network.load_state_dict(state)
    else:
        for key, value in state.items():
            network.params[key][...] = value


class EarlyStopping(_BestOf):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs;
    with ``restore_best_weights`` the network gets the weights of its best epoch back at the end
    (``network.state_dict()`` / ``load_state_dict``), so the final test accuracy is the best
    model's. Attributes: ``best``, ``best_epoch``, ``stopped_epoch`` (None if it never fired)."""

    def __init__(self, patience=5, monitor="val_acc", min_delta=0.0, restore_best_weights=True):
        super().__init__(monitor, min_delta)
        self.patience = check_int(patience, "patience", 1)
        self.restore_best_weights = bool(restore_best_weights)
        self.stopped_epoch = None

    def on_train_begin(self, trainer):
        super().on_train_begin(trainer)
        self.wait, self.stopped_epoch, self._state = 0, None, None

    def on_epoch_end(self, trainer):
        if self._improved(trainer):
            self.wait = 0
            if self.restore_best_weights:
                self._state = _snapshot(trainer.network)
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = trainer.current_epoch
            trainer.stop(f"early stopping: {self.monitor} has not improved for {self.patience} "
                         f"epochs (best {self.best:.4f} at epoch {self.best_epoch})")

    def on_train_end(self, trainer):
        if self.restore_best_weights and self._state is not None:
            _restore(trainer.network, self._state)


class ModelCheckpoint(_BestOf):
    """Save the network (``network.save_params(path)``, atomic) whenever ``monitor`` improves.
    The path is checked for writability before training starts."""

    def __init__(self, path, monitor="val_acc", min_delta=0.0):
        super().__init__(monitor, min_delta)
        self.path = os.fspath(path)
        self.saved_epochs = []

    def on_train_begin(self, trainer):
        super().on_train_begin(trainer)
        if not callable(getattr(trainer.network, "save_params", None)):
            raise TypeError(f"ModelCheckpoint needs network.save_params, missing on "
                            f"{type(trainer.network).__name__}")
        check_writable_file(self.path, "ModelCheckpoint path")

    def on_epoch_end(self, trainer):
        if self._improved(trainer):
            trainer.network.save_params(self.path)
            self.saved_epochs.append(trainer.current_epoch)


def _clock(seconds):
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


class ProgressBar(Callback):
    """A progress line during training: epoch, steps done in it, images/s, loss, time left.

    On a terminal (``stream.isatty()``, and the Trainer not printing its per-step loss lines) one
    line is redrawn about every ``interval`` seconds (default 1); otherwise a plain line is written
    every ``interval`` seconds (default 10), which suits log files. images/s and the loss are over
    the steps since the previous update; the time left assumes the pace of the run so far.

    cnncore's own rather than tqdm: no dependency, and it has to leave the textbook's epoch lines
    intact (before each epoch's evaluation it clears its line and shows a short "evaluating" note
    that the epoch line then overwrites).
    """

    def __init__(self, stream=None, interval=None):
        self.stream = stream
        if interval is not None and not interval > 0:
            raise ValueError(f"interval must be > 0 seconds, got {interval!r}")
        self.interval = interval
        self.clock = time.monotonic

    def on_train_begin(self, trainer):
        self.out = self.stream if self.stream is not None else sys.stdout
        isatty = getattr(self.out, "isatty", None)
        self.live = bool(isatty and isatty()) and not trainer.verbose
        self.every = self.interval or (1.0 if self.live else 10.0)
        self.last_time = self.start = self.clock()
        self.last_iter = self.first_iter = trainer.current_iter
        self.width = 0

    def line(self, trainer, now):
        """The text of one update (also used for the plain lines)."""
        done = trainer.current_iter
        per_epoch = max(math.ceil(trainer.iter_per_epoch), 1)
        epoch = (done - 1) // per_epoch + 1 if done else 1
        in_epoch = done - (epoch - 1) * per_epoch
        epochs = math.ceil(trainer.max_iter / per_epoch)
        steps = max(done - self.last_iter, 1)
        rate = steps / max(now - self.last_time, 1e-9)
        losses = trainer.train_loss_list[-steps:]
        loss = f"{float(np.mean(losses)):.4f}" if losses else "-"
        # the time left from the whole run's pace (steady), the rate from the last interval
        pace = (now - self.start) / max(done - self.first_iter, 1)
        left = (trainer.max_iter - done) * pace
        return (f"epoch {epoch}/{epochs} step {in_epoch}/{per_epoch} | "
                f"{rate * trainer.batch_size:.0f} images/s | loss {loss} | "
                f"elapsed {_clock(now - self.start)}, left {_clock(left)}")

    def _draw(self, trainer, now):
        text = self.line(trainer, now)
        if self.live:
            self.out.write("\r" + text.ljust(self.width))
            self.width = len(text)
        else:
            self.out.write(text + "\n")
        self.out.flush()
        self.last_time, self.last_iter = now, trainer.current_iter

    def on_step_end(self, trainer):
        now = self.clock()
        if now - self.last_time >= self.every:
            self._draw(trainer, now)

    def _clear(self):
        if self.live and self.width:
            self.out.write("\r" + " " * self.width + "\r")
            self.out.flush()
            self.width = 0

    def on_evaluate_begin(self, trainer):
        self._clear()
        if self.live:   # short, and the cursor back at column 0: the epoch line overwrites it
            text = f"epoch {trainer.current_epoch + 1}: evaluating ..."
            self.out.write(text + "\r")
            self.out.flush()
            self.width = len(text)

    def on_epoch_end(self, trainer):
        # the evaluation's time is not training: measure the next rate from here
        self.last_time, self.last_iter = self.clock(), trainer.current_iter + 1

    def on_train_end(self, trainer):
        self._clear()
