"""The textbook's ``Trainer``: mini-batch training with per-epoch accuracy.

    from cnncore.trainer import Trainer           # instead of: from common.trainer import Trainer
    trainer = Trainer(network, x_train, t_train, x_test, t_test, epochs=20, mini_batch_size=100,
                      optimizer='Adam', optimizer_param={'lr': 0.001},
                      evaluate_sample_num_per_epoch=1000)
    trainer.train()

By default it behaves like ``common/trainer.py`` (API.md §8), quirks included, so that
``np.random.seed(k)`` reproduces a textbook run:

- each step draws ``np.random.choice(train_size, batch_size)`` (with replacement, global RNG),
  computes ``network.gradient``, updates, then runs an extra ``network.loss`` forward for the
  printed loss;
- ``iter_per_epoch = max(train_size / mini_batch_size, 1)`` is a float; an "epoch" is evaluated when
  ``current_iter % iter_per_epoch == 0``, i.e. after the first step and then every
  ``iter_per_epoch`` steps (rarely, when that is fractional), never after the last step;
- the printed lines are ``train loss:<loss>``, ``=== epoch:<e>, train acc:<a>, test acc:<b> ===`` and,
  after ``train()``, the ``Final Test Accuracy`` banner and ``test acc:<acc>`` (``str()`` of the
  NumPy scalars).

Opt-in fixes (keyword-only):

- ``exact_epochs=True``: ``iter_per_epoch = ceil(train_size / batch_size)`` (an int),
  ``max_iter = epochs * iter_per_epoch``, and the accuracies are measured *after* the last step of
  every epoch, so each list has exactly ``epochs`` entries.
- ``shuffle=True``: every epoch visits each training sample once, in an order drawn with
  ``np.random.permutation`` (the last batch may be smaller); implies ``exact_epochs=True``.

Extensions: ``optimizer`` may also be an optimizer instance (anything with ``update(params,
grads)``); ``'rmsprpo'`` (the Korean edition's spelling) is accepted; ``train()`` keeps the final
accuracy in ``final_test_acc``; ``epoch_callback(trainer)`` runs after each epoch's evaluation.

More opt-in keywords (none changes the default run, its printed lines or its ``np.random`` calls):

- ``loss_after_update=False``: record (and print) the loss that ``gradient`` computed before the
  update, in training mode, instead of the textbook's extra forward pass after it: one forward less
  per step (about a fifth of a step's time). ``cnncore train`` uses it.

- ``x_val, t_val``: a validation set (see ``cnncore.datasets.split_validation``). After every epoch
  it is scored exactly (every sample, inference mode) into ``val_acc_list`` and ``val_loss_list``
  (the data loss, without weight decay), and the epoch line gains ``, val acc:<v>``. Tune on it,
  not on the test set (chapter 6).
- ``augment``: a function applied to every training batch before the step (e.g.
  ``cnncore.augment.RandomCropFlip``); the extra loss forward sees the same augmented batch.
- ``callbacks``: objects with any of the hooks of :class:`cnncore.callbacks.Callback`:
  ``on_train_begin(trainer)`` (before the first step: check settings here, so that a bad one
  fails before any training), ``on_step_end(trainer)`` (after every step; ``current_iter`` then
  counts the steps done), ``on_evaluate_begin(trainer)`` (before each epoch's evaluation and
  line), ``on_epoch_end(trainer)`` (after each epoch's evaluation, beside ``epoch_callback``) and
  ``on_train_end(trainer)`` (after the last step, before the final test accuracy). Ready-made:
  learning-rate schedules, early stopping that restores the best weights, a checkpoint of the best
  model and a progress display, in ``cnncore.callbacks``.
- ``trainer.stop(reason)`` (from a callback, or any code that holds the trainer) ends ``train()``
  cleanly after the current step: the final test accuracy is still measured and printed.
- Every epoch also appends the mean training loss of its steps to ``epoch_loss_list`` (for
  loss curves per epoch).

The constructor checks what would otherwise fail (or silently train nothing) later, raising
ValueError or TypeError naming the argument: ``epochs >= 0`` (an int; in the default mode also a
fraction, since the textbook computes ``int(epochs * iter_per_epoch)``), ``mini_batch_size >= 1``,
at least one training and one test sample, as many labels as images in each set,
``evaluate_sample_num_per_epoch`` None or an int >= 1 (the textbook's ``[:t]`` silently drops the
last sample for -1 and divides by zero for 0), a non-empty validation set given as both ``x_val``
and ``t_val`` with samples shaped like the training set's; then every callback's
``on_train_begin`` runs before the first step.
"""
import math
import numbers

import numpy as np

from ._validate import check_int
from .datasets import iterate_minibatches
from .optimizer import SGD, AdaGrad, Adam, Momentum, Nesterov, RMSprop

OPTIMIZERS = {
    "sgd": SGD,
    "momentum": Momentum,
    "nesterov": Nesterov,
    "adagrad": AdaGrad,
    "rmsprop": RMSprop,
    "rmsprpo": RMSprop,  # the Korean edition's key
    "adam": Adam,
}


def make_optimizer(optimizer, optimizer_param):
    """An optimizer from a case-insensitive name (see OPTIMIZERS) or an instance (returned as is)."""
    if not isinstance(optimizer, str):
        if not callable(getattr(optimizer, "update", None)):
            raise TypeError(f"optimizer must be a name or have an update(params, grads) method, "
                            f"got {optimizer!r}")
        return optimizer
    try:
        cls = OPTIMIZERS[optimizer.lower()]
    except KeyError:
        names = ", ".join(sorted(set(OPTIMIZERS) - {"rmsprpo"}))
        raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {names}") from None
    return cls(**(optimizer_param or {}))


def _epochs(epochs, exact):
    """epochs >= 0: an int, or in the default mode also a fraction (the textbook allows 0.5)."""
    if exact or not isinstance(epochs, numbers.Real) or isinstance(epochs, numbers.Integral):
        return check_int(epochs, "epochs", 0)
    if not 0 <= epochs < math.inf:
        raise ValueError(f"epochs must be >= 0 and finite, got {epochs!r}")
    return epochs


_HOOKS = ("on_train_begin", "on_step_end", "on_evaluate_begin", "on_epoch_end", "on_train_end")


def evaluate(network, x, t, batch_size=100):
    """Exact accuracy and mean cross-entropy loss of ``network`` on (x, t), ``batch_size`` samples
    at a time, in inference mode (``predict(x)``): ``(acc, loss)`` as floats. ``t``: labels or
    one-hot. The loss is the data loss only (no weight decay term)."""
    batch_size = check_int(batch_size, "batch_size", 1)
    if len(x) == 0:
        raise ValueError("evaluate needs at least one sample, got none")
    labels = np.argmax(t, axis=1) if np.ndim(t) != 1 else np.asarray(t)
    correct, total_loss = 0, 0.0
    for start in range(0, len(x), batch_size):
        y = np.asarray(network.predict(x[start:start + batch_size]), dtype=np.float64)
        tb = labels[start:start + batch_size]
        correct += int(np.sum(np.argmax(y, axis=1) == tb))
        y = y - y.max(axis=1, keepdims=True)
        log_p = y - np.log(np.exp(y).sum(axis=1, keepdims=True))
        total_loss -= float(log_p[np.arange(len(tb)), tb].sum())
    return correct / len(x), total_loss / len(x)


def _same_length(x, t, x_name, t_name):
    if len(x) != len(t):
        raise ValueError(f"{t_name} must have one label per sample of {x_name}: {x_name} has "
                         f"{len(x)}, {t_name} has {len(t)}")


class Trainer:
    """Train ``network`` (``gradient``, ``loss``, ``accuracy``, ``params``) with mini-batches.

    Attributes (as in the textbook): ``network, verbose, x_train, t_train, x_test, t_test, epochs,
    batch_size, evaluate_sample_num_per_epoch, optimizer`` (the instance), ``train_size,
    iter_per_epoch, max_iter, current_iter, current_epoch, train_loss_list, train_acc_list,
    test_acc_list``. See the module docstring for the default (textbook) epoch accounting and the
    ``exact_epochs`` / ``shuffle`` modes.
    """

    def __init__(self, network, x_train, t_train, x_test, t_test,
                 epochs=20, mini_batch_size=100,
                 optimizer='SGD', optimizer_param={'lr': 0.01},
                 evaluate_sample_num_per_epoch=None, verbose=True,
                 *, exact_epochs=None, shuffle=False, epoch_callback=None,
                 x_val=None, t_val=None, augment=None, callbacks=(), loss_after_update=True):
        if shuffle and exact_epochs is False:
            raise ValueError("shuffle=True visits every sample once per epoch, which needs "
                             "exact_epochs=True")
        exact_epochs = bool(exact_epochs or shuffle)
        epochs = _epochs(epochs, exact_epochs)
        mini_batch_size = check_int(mini_batch_size, "mini_batch_size", 1)
        _same_length(x_train, t_train, "x_train", "t_train")
        _same_length(x_test, t_test, "x_test", "t_test")
        if len(x_train) == 0:
            raise ValueError("x_train must hold at least one sample, got none")
        if len(x_test) == 0:
            raise ValueError("x_test must hold at least one sample, got none (accuracy would "
                             "divide by zero after the first step)")
        if evaluate_sample_num_per_epoch is not None:
            evaluate_sample_num_per_epoch = check_int(
                evaluate_sample_num_per_epoch, "evaluate_sample_num_per_epoch", 1)
        if (x_val is None) != (t_val is None):
            raise ValueError("give both x_val and t_val, or neither")
        if x_val is not None:
            _same_length(x_val, t_val, "x_val", "t_val")
            if len(x_val) == 0:
                raise ValueError("x_val must hold at least one sample, got none")
            if np.shape(x_val)[1:] != np.shape(x_train)[1:]:
                raise ValueError(f"x_val samples must have the shape of x_train's, "
                                 f"{np.shape(x_train)[1:]}; got {np.shape(x_val)[1:]}")
        if augment is not None and not callable(augment):
            raise TypeError(f"augment must be a function of a batch, got {augment!r}")
        callbacks = list(callbacks or ())
        for callback in callbacks:
            if not any(callable(getattr(callback, hook, None)) for hook in _HOOKS):
                raise TypeError(f"callbacks: {callback!r} has none of the hooks {', '.join(_HOOKS)}")
        self.network = network
        self.verbose = verbose
        self.x_train = x_train
        self.t_train = t_train
        self.x_test = x_test
        self.t_test = t_test
        self.epochs = epochs
        self.batch_size = mini_batch_size
        self.evaluate_sample_num_per_epoch = evaluate_sample_num_per_epoch
        self.optimizer = make_optimizer(optimizer, optimizer_param)
        self.exact_epochs = exact_epochs
        self.shuffle = bool(shuffle)
        self.epoch_callback = epoch_callback
        self.x_val = x_val
        self.t_val = t_val
        self.augment = augment
        self.callbacks = callbacks
        if not loss_after_update and not hasattr(network, "gradient_loss"):
            raise TypeError("loss_after_update=False records the loss of the gradient pass, which "
                            "needs a network with gradient_loss (cnncore's networks have it)")
        self.loss_after_update = bool(loss_after_update)

        self.train_size = x_train.shape[0]
        if self.exact_epochs:
            self.iter_per_epoch = max(math.ceil(self.train_size / mini_batch_size), 1)
            self.max_iter = epochs * self.iter_per_epoch
        else:
            self.iter_per_epoch = max(self.train_size / mini_batch_size, 1)
            self.max_iter = int(epochs * self.iter_per_epoch)
        self.current_iter = 0
        self.current_epoch = 0

        self.train_loss_list = []
        self.train_acc_list = []
        self.test_acc_list = []
        self.final_test_acc = None
        self._epoch_batches = None
        self.val_acc_list = []
        self.val_loss_list = []
        self.epoch_loss_list = []
        self.stop_training = False
        self.stop_reason = None
        self._epoch_first_iter = 0

    def stop(self, reason="stopped"):
        """End train() after the current step (the final test accuracy is still measured)."""
        self.stop_training = True
        self.stop_reason = reason

    def _hook(self, name):
        for callback in self.callbacks:
            method = getattr(callback, name, None)
            if method is not None:
                method(self)

    def _next_batch(self):
        if not self.shuffle:
            batch_mask = np.random.choice(self.train_size, self.batch_size)
            return self.x_train[batch_mask], self.t_train[batch_mask]
        if self.current_iter % self.iter_per_epoch == 0:
            self._epoch_batches = iterate_minibatches(self.x_train, self.t_train, self.batch_size)
        return next(self._epoch_batches)

    def train_step(self):
        x_batch, t_batch = self._next_batch()
        if self.augment is not None:
            x_batch = self.augment(x_batch)

        grads = self.network.gradient(x_batch, t_batch)
        self.optimizer.update(self.network.params, grads)

        if self.loss_after_update:
            loss = self.network.loss(x_batch, t_batch)
        else:
            loss = self.network.gradient_loss
        self.train_loss_list.append(loss)
        if self.verbose:
            print("train loss:" + str(loss))

        if self.exact_epochs:
            epoch_done = (self.current_iter + 1) % self.iter_per_epoch == 0
        else:
            epoch_done = self.current_iter % self.iter_per_epoch == 0
        if epoch_done:
            self._evaluate_epoch()
        self.current_iter += 1
        if self.callbacks:
            self._hook("on_step_end")

    def _evaluate_epoch(self):
        if self.callbacks:
            self._hook("on_evaluate_begin")
        self.current_epoch += 1

        x_train_sample, t_train_sample = self.x_train, self.t_train
        x_test_sample, t_test_sample = self.x_test, self.t_test
        if self.evaluate_sample_num_per_epoch is not None:
            t = self.evaluate_sample_num_per_epoch
            x_train_sample, t_train_sample = self.x_train[:t], self.t_train[:t]
            x_test_sample, t_test_sample = self.x_test[:t], self.t_test[:t]

        train_acc = self.network.accuracy(x_train_sample, t_train_sample)
        test_acc = self.network.accuracy(x_test_sample, t_test_sample)
        self.train_acc_list.append(train_acc)
        self.test_acc_list.append(test_acc)
        losses = self.train_loss_list[self._epoch_first_iter:]
        self.epoch_loss_list.append(float(np.mean(losses)))
        self._epoch_first_iter = len(self.train_loss_list)
        val = ""
        if self.x_val is not None:
            x_val, t_val = self.x_val, self.t_val
            if self.evaluate_sample_num_per_epoch is not None:
                x_val = x_val[:self.evaluate_sample_num_per_epoch]
                t_val = t_val[:self.evaluate_sample_num_per_epoch]
            val_acc, val_loss = evaluate(self.network, x_val, t_val)
            self.val_acc_list.append(val_acc)
            self.val_loss_list.append(val_loss)
            val = ", val acc:" + str(val_acc)

        if self.verbose:
            print("=== epoch:" + str(self.current_epoch) + ", train acc:" + str(train_acc)
                  + ", test acc:" + str(test_acc) + val + " ===")
        if self.epoch_callback is not None:
            self.epoch_callback(self)
        if self.callbacks:
            self._hook("on_epoch_end")

    def fit(self, max_steps=None):
        """The training loop of train() without the final test accuracy: the hooks'
        ``on_train_begin``, up to ``max_iter`` steps (or ``max_steps``, if fewer) ending early at
        ``stop()``, then ``on_train_end``. Returns the number of steps run."""
        steps = self.max_iter if max_steps is None else min(
            check_int(max_steps, "max_steps", 0), self.max_iter)
        if self.callbacks:
            self._hook("on_train_begin")
        done = 0
        for _ in range(steps):
            self.train_step()
            done += 1
            if self.stop_training:
                break
        if self.callbacks:
            self._hook("on_train_end")
        if self.stop_training and self.verbose:
            print(f"training stopped after {self.current_iter} of {self.max_iter} steps: "
                  f"{self.stop_reason}")
        return done

    def train(self):
        self.fit()

        test_acc = self.network.accuracy(self.x_test, self.t_test)
        self.final_test_acc = test_acc

        if self.verbose:
            print("=============== Final Test Accuracy ===============")
            print("test acc:" + str(test_acc))
