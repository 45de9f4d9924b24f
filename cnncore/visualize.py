"""Pictures of a network and its training: filters, curves, a confusion matrix, mistakes.

    from cnncore import visualize
    visualize.plot_filters(network, "filters.png")                  # ch07 visualize_filter.py
    visualize.plot_curves(trainer, "curves.png")                    # loss and accuracy per epoch
    pred = visualize.predict_labels(network, x_test)
    visualize.plot_confusion_matrix(t_test, pred, "confusion.png", class_names=names)
    visualize.plot_misclassified(x_test, t_test, pred, "mistakes.png", class_names=names)

Each function draws a ``matplotlib.figure.Figure`` (without pyplot, so nothing opens a window or
keeps global state), writes it as a PNG when given a path (atomically: a failed write leaves no
half-written file) and returns it. matplotlib is optional for cnncore; these functions raise an
ImportError saying how to install it when it is missing. :func:`confusion_matrix` and
:func:`predict_labels` need NumPy only.
"""
import math

import numpy as np

from ._io import atomic_write
from ._validate import check_int


def _figure(**kw):
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("cnncore.visualize needs matplotlib, which is not installed: "
                          "pip install matplotlib (or: pip install 'cnncore[plot]')") from None
    return Figure(**kw)


def _save(fig, path):
    if path is not None:
        with atomic_write(path) as f:
            fig.savefig(f, format="png")
    return fig


def _labels(t, name):
    t = np.asarray(t)
    if t.ndim == 2:
        t = t.argmax(axis=1)
    if t.ndim != 1 or (t.size and t.dtype.kind not in "iu"):
        raise ValueError(f"{name} must be integer labels (N,) or one-hot (N, K), got shape "
                         f"{t.shape} dtype {t.dtype}")
    return t.astype(np.int64)


def predict_labels(network, x, batch_size=100):
    """argmax of ``network.predict`` (inference mode) over x, ``batch_size`` samples at a time."""
    batch_size = check_int(batch_size, "batch_size", 1)
    out = [np.argmax(network.predict(x[i:i + batch_size]), axis=1)
           for i in range(0, len(x), batch_size)]
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def confusion_matrix(t_true, t_pred, n_classes=None):
    """Counts ``C[i, j]`` of samples with true class i predicted as j (labels or one-hot)."""
    t_true, t_pred = _labels(t_true, "t_true"), _labels(t_pred, "t_pred")
    if t_true.shape != t_pred.shape:
        raise ValueError(f"t_true and t_pred must have the same length, got {len(t_true)} and "
                         f"{len(t_pred)}")
    if n_classes is None:
        n_classes = int(max(t_true.max(initial=-1), t_pred.max(initial=-1))) + 1
    n_classes = check_int(n_classes, "n_classes", 1)
    for name, t in (("t_true", t_true), ("t_pred", t_pred)):
        if t.size and (t.min() < 0 or t.max() >= n_classes):
            raise ValueError(f"{name} holds labels outside 0..{n_classes - 1}")
    matrix = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(matrix, (t_true, t_pred), 1)
    return matrix


def _filter_weights(source, layer):
    """(weights, label) for plot_filters: the array itself, or a network's weight by key."""
    if isinstance(source, np.ndarray):
        return source, ""
    params = getattr(source, "params", None)
    if params is None:
        raise TypeError(f"plot_filters takes a weight array (FN, C, FH, FW) or a network with "
                        f"params, got {type(source).__name__}")
    if layer is None:
        layer = "W1"
    key = layer if layer in params else "W" + str(layer).removeprefix("Conv")
    if key not in params or np.ndim(params[key]) != 4:
        convs = [k for k, v in params.items() if np.ndim(v) == 4]
        raise ValueError(f"layer {layer!r}: no such convolution weight; choose one of {convs}")
    return params[key], key + ": "


def plot_filters(source, path=None, layer=None, ncols=8, channel=None, max_filters=64):
    """The filters of one convolution layer as a grid of small images (ch07's visualize_filter.py).

    source : a weight array ``(FN, C, FH, FW)`` or a network (its ``params``); ``layer`` picks the
        weight: ``'W1'`` (default), ``'W3'``, ``3`` or ``'Conv3'``.
    channel : which input channel to show; by default colour (C == 3) filters are shown in RGB,
        each scaled to [0, 1] on its own, others by channel 0 in gray (white = low, as the textbook).
    """
    W, label = _filter_weights(source, layer)
    W = np.asarray(W, dtype=np.float64)
    if W.ndim != 4:
        raise ValueError(f"filter weights must have shape (FN, C, FH, FW), got {W.shape}")
    ncols = check_int(ncols, "ncols", 1)
    count = min(len(W), check_int(max_filters, "max_filters", 1))
    rgb = channel is None and W.shape[1] == 3
    channel = 0 if channel is None else check_int(channel, "channel", 0, W.shape[1] - 1)
    nrows = math.ceil(count / ncols)
    fig = _figure(figsize=(ncols * 0.9, nrows * 0.9 + 0.4))
    fig.subplots_adjust(left=0, right=1, bottom=0, top=1 - 0.4 / (nrows * 0.9 + 0.4),
                        hspace=0.05, wspace=0.05)
    for i in range(count):
        ax = fig.add_subplot(nrows, ncols, i + 1, xticks=[], yticks=[])
        if rgb:
            w = W[i].transpose(1, 2, 0)
            span = w.max() - w.min()
            ax.imshow((w - w.min()) / (span if span > 0 else 1), interpolation="nearest")
        else:
            ax.imshow(W[i, channel], cmap="gray_r", interpolation="nearest")
    fig.suptitle(f"{label}{count} filters {W.shape[2]}x{W.shape[3]}"
                 + ("" if rgb else f", channel {channel}"), fontsize=9)
    return _save(fig, path)


def _history(source):
    names = ("epoch_loss_list", "val_loss_list", "train_acc_list", "test_acc_list", "val_acc_list")
    if isinstance(source, dict):
        return {name: list(source.get(name, [])) for name in names}
    return {name: list(getattr(source, name, [])) for name in names}


def plot_curves(source, path=None):
    """Loss (left) and accuracy (right) per epoch from a Trainer (or a dict of its lists):
    ``epoch_loss_list`` (mean training loss of each epoch), ``val_loss_list``, ``train_acc_list``,
    ``test_acc_list``, ``val_acc_list``; empty lists are left out."""
    history = _history(source)
    if not any(history.values()):
        raise ValueError("plot_curves: no epoch has been recorded yet (train first)")
    fig = _figure(figsize=(9, 3.6))
    from matplotlib.ticker import MaxNLocator
    loss_ax, acc_ax = fig.subplots(1, 2)
    styles = {"epoch_loss_list": ("train", "o-"), "val_loss_list": ("validation", "s--"),
              "train_acc_list": ("train", "o-"), "test_acc_list": ("test", "^:"),
              "val_acc_list": ("validation", "s--")}
    for ax, keys, ylabel in ((loss_ax, ("epoch_loss_list", "val_loss_list"), "loss"),
                             (acc_ax, ("train_acc_list", "test_acc_list", "val_acc_list"),
                              "accuracy")):
        for key in keys:
            values = np.asarray(history[key], dtype=np.float64)
            if values.size:
                label, style = styles[key]
                ax.plot(np.arange(1, values.size + 1), values, style, label=label, markersize=4)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
    acc_ax.set_ylim(0, 1.0)
    fig.tight_layout()
    return _save(fig, path)


def plot_confusion_matrix(t_true, t_pred, path=None, class_names=None, normalize=False):
    """The confusion matrix as a heat map with the count (or, with ``normalize``, the share of
    each true class) in every cell; rows are true classes, columns predictions."""
    n = len(class_names) if class_names is not None else None
    matrix = confusion_matrix(t_true, t_pred, n)
    n = len(matrix)
    names = [str(c) for c in (class_names if class_names is not None else range(n))]
    shown = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1) if normalize else matrix
    size = max(4.0, 0.55 * n + 2)
    fig = _figure(figsize=(size + 1, size))
    ax = fig.add_subplot()
    image = ax.imshow(shown, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(n), names, rotation=45, ha="right")
    ax.set_yticks(range(n), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    top = shown.max() if shown.size else 0
    for i in range(n):
        for j in range(n):
            text = f"{shown[i, j]:.2f}" if normalize else str(matrix[i, j])
            ax.text(j, i, text, ha="center", va="center", fontsize=7,
                    color="white" if shown[i, j] > top / 2 else "black")
    accuracy = np.trace(matrix) / max(matrix.sum(), 1)
    ax.set_title(f"confusion matrix ({matrix.sum()} samples, accuracy {accuracy:.4f})")
    fig.tight_layout()
    return _save(fig, path)


def _as_image(x):
    """(C, H, W) or (H*W,) -> something imshow takes, scaled to [0, 1]."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        side = math.isqrt(x.size)
        if side * side != x.size:
            raise ValueError(f"flat images must be square, got {x.size} pixels")
        x = x.reshape(1, side, side)
    if x.ndim != 3 or x.shape[0] not in (1, 3):
        raise ValueError(f"images must be (N, 1|3, H, W) or flat (N, H*W), got {x.shape}")
    span = x.max() - x.min()
    x = (x - x.min()) / (span if span > 0 else 1)
    return (x[0], "gray") if x.shape[0] == 1 else (x.transpose(1, 2, 0), None)


def plot_misclassified(x, t_true, t_pred, path=None, class_names=None, max_images=25, ncols=5):
    """A grid of the first ``max_images`` misclassified images, each titled ``true → predicted``
    (the textbook's misclassified_mnist.py, with labels)."""
    t_true, t_pred = _labels(t_true, "t_true"), _labels(t_pred, "t_pred")
    if not len(x) == len(t_true) == len(t_pred):
        raise ValueError(f"x, t_true and t_pred must have the same length, got {len(x)}, "
                         f"{len(t_true)}, {len(t_pred)}")
    wrong = np.flatnonzero(t_true != t_pred)[:check_int(max_images, "max_images", 1)]
    if not len(wrong):
        fig = _figure(figsize=(5, 1))
        fig.text(0.5, 0.5, f"misclassified: none of {len(t_true)}", ha="center", va="center")
        return _save(fig, path)
    ncols = min(check_int(ncols, "ncols", 1), len(wrong))
    nrows = math.ceil(len(wrong) / ncols)
    fig = _figure(figsize=(ncols * 1.6, nrows * 1.8 + 0.4))

    def name(label):
        return str(class_names[label]) if class_names is not None else str(label)

    for k, i in enumerate(wrong):
        ax = fig.add_subplot(nrows, ncols, k + 1, xticks=[], yticks=[])
        image, cmap = _as_image(x[i])
        ax.imshow(image, cmap=cmap, interpolation="nearest")
        ax.set_title(f"{name(t_true[i])} → {name(t_pred[i])}", fontsize=8, color="firebrick")
    total = int(np.sum(t_true != t_pred))
    fig.suptitle(f"misclassified: {total} of {len(t_true)} (true → predicted)", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)
