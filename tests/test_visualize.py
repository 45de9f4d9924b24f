"""cnncore.visualize renders for real (matplotlib's Agg backend through Figure) and writes PNGs."""
import sys

import numpy as np
import pytest

from cnncore import visualize
from cnncore.networks import SimpleConvNet

pytest.importorskip("matplotlib")

PNG = b"\x89PNG\r\n\x1a\n"


def png_size(path):
    data = path.read_bytes()
    assert data[:8] == PNG
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_filters_of_a_network_and_of_an_array(tmp_path):
    np.random.seed(0)
    net = SimpleConvNet(conv_param={"filter_num": 12, "filter_size": 5, "pad": 0, "stride": 1})
    fig = visualize.plot_filters(net, tmp_path / "f.png", ncols=6)
    images = [ax for ax in fig.axes if ax.images]
    assert len(images) == 12
    np.testing.assert_array_equal(images[3].images[0].get_array(), net.params["W1"][3, 0])
    assert fig._suptitle.get_text().startswith("W1: 12 filters 5x5")
    width, height = png_size(tmp_path / "f.png")
    assert width > height > 0
    colour = np.random.default_rng(0).normal(size=(5, 3, 3, 3))
    fig = visualize.plot_filters(colour, tmp_path / "rgb.png")
    assert fig.axes[0].images[0].get_array().shape == (3, 3, 3)   # shown in colour
    assert png_size(tmp_path / "rgb.png")[0] > 0
    with pytest.raises(ValueError, match="no such convolution weight; choose one of"):
        visualize.plot_filters(net, layer="W2")
    assert visualize.plot_filters(net, layer="Conv1").axes


def test_curves_from_a_trainer_history(tmp_path):
    history = {"epoch_loss_list": [2.0, 1.0, 0.7], "val_loss_list": [1.5, 1.1, 0.9],
               "train_acc_list": [0.3, 0.6, 0.8], "test_acc_list": [0.3, 0.5, 0.7],
               "val_acc_list": [0.3, 0.55, 0.75]}
    fig = visualize.plot_curves(history, tmp_path / "c.png")
    loss_ax, acc_ax = fig.axes
    assert [line.get_label() for line in loss_ax.lines] == ["train", "validation"]
    assert [line.get_label() for line in acc_ax.lines] == ["train", "test", "validation"]
    np.testing.assert_array_equal(acc_ax.lines[2].get_ydata(), [0.3, 0.55, 0.75])
    assert png_size(tmp_path / "c.png")[0] > 0
    with pytest.raises(ValueError, match="no epoch"):
        visualize.plot_curves({})


def test_confusion_matrix_counts_and_picture(tmp_path):
    t = np.array([0, 0, 1, 1, 2, 2, 2])
    p = np.array([0, 1, 1, 1, 2, 0, 2])
    expected = [[1, 1, 0], [0, 2, 0], [1, 0, 2]]
    assert visualize.confusion_matrix(t, p).tolist() == expected
    assert visualize.confusion_matrix(np.eye(3)[t], p, 3).tolist() == expected
    fig = visualize.plot_confusion_matrix(t, p, tmp_path / "m.png", class_names=["a", "b", "c"])
    ax = fig.axes[0]
    assert [tick.get_text() for tick in ax.get_xticklabels()] == ["a", "b", "c"]
    assert sorted(text.get_text() for text in ax.texts) == sorted(map(str, sum(expected, [])))
    assert "accuracy 0.7143" in ax.get_title()
    assert png_size(tmp_path / "m.png")[0] > 0
    with pytest.raises(ValueError, match="outside 0..2"):
        visualize.confusion_matrix(t, p + 1, 3)
    with pytest.raises(ValueError, match="same length"):
        visualize.confusion_matrix(t, p[:3])


def test_misclassified_grid(tmp_path):
    x = np.random.default_rng(0).random((10, 1, 8, 8))
    t = np.arange(10) % 3
    p = t.copy()
    p[[1, 4, 7]] = 0
    fig = visualize.plot_misclassified(x, t, p, tmp_path / "w.png", class_names=["x", "y", "z"])
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["y → x", "y → x", "y → x"]
    np.testing.assert_allclose(fig.axes[1].images[0].get_array(),
                               (x[4, 0] - x[4].min()) / (x[4].max() - x[4].min()))
    assert png_size(tmp_path / "w.png")[0] > 0
    colour = visualize.plot_misclassified(np.random.default_rng(1).random((4, 3, 6, 6)),
                                          [0, 1, 2, 3], [1, 1, 2, 3])
    assert colour.axes[0].images[0].get_array().shape == (6, 6, 3)
    none = visualize.plot_misclassified(x, t, t)
    assert "none" in none.texts[0].get_text()


def test_predict_labels_batches():
    np.random.seed(1)
    net = SimpleConvNet()
    x = np.random.default_rng(0).random((230, 1, 28, 28))
    np.testing.assert_array_equal(visualize.predict_labels(net, x, 100),
                                  net.predict(x).argmax(axis=1))


def test_a_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(OSError):
        visualize.plot_curves({"train_acc_list": [0.5]}, tmp_path / "missing" / "c.png")
    assert list(tmp_path.iterdir()) == []


def test_missing_matplotlib_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match="pip install matplotlib"):
        visualize.plot_curves({"train_acc_list": [0.5]})
