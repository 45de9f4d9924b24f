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

The constructor checks what would otherwise fail (or silently train nothing) later, raising
ValueError or TypeError naming the argument: ``epochs >= 0`` (an int; in the default mode also a
fraction, since the textbook computes ``int(epochs * iter_per_epoch)``), ``mini_batch_size >= 1``,
at least one training sample, and as many labels as images in the training and the test set.
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
                 *, exact_epochs=None, shuffle=False, epoch_callback=None):
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

    def _next_batch(self):
        if not self.shuffle:
            batch_mask = np.random.choice(self.train_size, self.batch_size)
            return self.x_train[batch_mask], self.t_train[batch_mask]
        if self.current_iter % self.iter_per_epoch == 0:
            self._epoch_batches = iterate_minibatches(self.x_train, self.t_train, self.batch_size)
        return next(self._epoch_batches)

    def train_step(self):
        x_batch, t_batch = self._next_batch()

        grads = self.network.gradient(x_batch, t_batch)
        self.optimizer.update(self.network.params, grads)

        loss = self.network.loss(x_batch, t_batch)
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

    def _evaluate_epoch(self):
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

        if self.verbose:
            print("=== epoch:" + str(self.current_epoch) + ", train acc:" + str(train_acc)
                  + ", test acc:" + str(test_acc) + " ===")
        if self.epoch_callback is not None:
            self.epoch_callback(self)

    def train(self):
        for _ in range(self.max_iter):
            self.train_step()

        test_acc = self.network.accuracy(self.x_test, self.t_test)
        self.final_test_acc = test_acc

        if self.verbose:
            print("=============== Final Test Accuracy ===============")
            print("test acc:" + str(test_acc))
