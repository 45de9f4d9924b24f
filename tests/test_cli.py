"""python -m cnncore train / evaluate: a short training run whose saved parameters evaluate reads."""
import contextlib
import io
import re
import subprocess
import sys
from unittest import mock

import numpy as np
import pytest

import cnncore
from cnncore import _config as cnncore_config
from cnncore import datasets
from cnncore._io import load_params_file, save_params_file
from cnncore.cli import evaluate_main, train_main
from cnncore.datasets import load_mnist
from cnncore.networks import SimpleConvNet

SHORT = ["--train-size", "1000", "--test-size", "500", "--epochs", "3", "--eval-samples", "500",
         "--seed", "0"]


def run(main, argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def trained(tmp_path_factory, mnist_dir):
    """One short training run (30 steps) of SimpleConvNet: its output and parameter file."""
    out_file = tmp_path_factory.mktemp("cli") / "params.npz"
    with mock.patch.dict(sys.modules, {"matplotlib": None}):  # as if matplotlib were missing
        code, out, err = run(train_main, ["--data", str(mnist_dir), "--out", str(out_file), *SHORT])
    assert code == 0, err
    return out, out_file


def test_train_prints_epochs_and_saves_params(trained, mnist_dir):
    out, out_file = trained
    lines = out.splitlines()
    assert lines[0].startswith("SimpleConvNet (float64) on mnist, 1000 training / 500 test "
                               "images, 3 epochs x 10 steps of 100, Adam lr 0.001")
    epochs = [line for line in lines if line.startswith("epoch ")]
    pattern = (r"epoch (\d)/3: train acc (0\.\d{4}), test acc (0\.\d{4}), loss ([\d.]+), "
               r"(\d+) images/s, elapsed ([\d.]+) s")
    matches = [re.fullmatch(pattern, line) for line in epochs]
    assert len(matches) == 3 and all(matches), epochs
    assert [int(m.group(1)) for m in matches] == [1, 2, 3]
    assert [float(m.group(6)) for m in matches] == sorted(float(m.group(6)) for m in matches)
    assert not any(line.startswith("train loss:") for line in lines)  # only with --verbose
    final = re.search(r"final test acc (0\.\d{4}) \((\d+)/500 images\)", out)
    assert final and float(final.group(1)) > 0.4  # 30 Adam steps; chance is 0.1
    assert f"parameters saved to {out_file}" in out
    assert "matplotlib is not installed: no plot" in out

    # the file holds exactly the network's parameters, and they reproduce the printed accuracy
    network = SimpleConvNet()
    params = load_params_file(out_file, {k: v.shape for k, v in network.params.items()})
    assert all(v.dtype == np.float64 for v in params.values())
    network.load_params(out_file)
    _, (x_test, t_test) = load_mnist(flatten=False, path=mnist_dir)
    acc = network.accuracy(x_test[:500], t_test[:500], exact=True)
    assert f"{acc:.4f}" == final.group(1)
    assert round(acc * 500) == int(final.group(2))


def test_evaluate_reads_the_trained_params(trained, mnist_dir):
    """Through ``python -m cnncore``, as a user runs it: all 10000 test images."""
    _, out_file = trained
    result = subprocess.run(
        [sys.executable, "-m", "cnncore", "evaluate", "--params", str(out_file),
         "--data", str(mnist_dir)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    found = re.search(r"SimpleConvNet \(float64\) .*params\.npz: test acc (0\.\d{4}) "
                      r"\((\d+)/10000 images", result.stdout)
    assert found, result.stdout
    assert float(found.group(1)) == int(found.group(2)) / 10000
    assert float(found.group(1)) > 0.4


def test_evaluate_textbook_pickle_needs_opt_in(trained, mnist_dir, tmp_path):
    _, out_file = trained
    pkl = tmp_path / "params.pkl"
    save_params_file(load_params_file(out_file, None), pkl, format="pickle")
    code, out, err = run(evaluate_main, ["--params", str(pkl), "--data", str(mnist_dir)])
    assert code == 1 and out == ""
    assert "params.pkl: is a pickle file; refusing to unpickle it" in err and "--pickle" in err
    code, out, err = run(evaluate_main, ["--params", str(pkl), "--data", str(mnist_dir),
                                         "--pickle", "--test-size", "500", "--threads", "1"])
    assert code == 0, err
    assert cnncore.get_num_threads() == 1
    cnncore.set_num_threads(None)
    # the same 500 images as the training run's final score: the same parameters came back
    final = re.search(r"final test acc (0\.\d{4}) \((\d+)/500 images\)", trained[0]).groups()
    assert re.search(rf"SimpleConvNet \(float64\) .*params\.pkl: test acc {final[0]} "
                     rf"\({final[1]}/500 images", out), out


def test_evaluate_errors(tmp_path, mnist_dir):
    code, _, err = run(evaluate_main, ["--params", str(tmp_path / "nope.npz"),
                                       "--data", str(mnist_dir)])
    assert code == 1 and "nope.npz" in err
    wrong = tmp_path / "wrong.npz"
    save_params_file({"W1": np.zeros((2, 2))}, wrong)
    code, _, err = run(evaluate_main, ["--params", str(wrong), "--data", str(mnist_dir)])
    assert code == 1 and "wrong.npz: parameter names do not match" in err


@pytest.mark.parametrize("network, name, dtype", [("lenet5", "LeNet5", "float32"),
                                                   ("deep", "DeepConvNet", "float64")])
def test_other_networks_short_run_with_a_plot(network, name, dtype, tmp_path, mnist_dir):
    """Two steps, textbook log lines (--verbose), and the curves drawn for real."""
    pytest.importorskip("matplotlib")
    out_file, png = tmp_path / "p.npz", tmp_path / "acc.png"
    code, out, err = run(train_main, [
        "--network", network, "--dtype", dtype, "--data", str(mnist_dir),
        "--train-size", "100", "--test-size", "50", "--epochs", "2", "--max-steps", "2",
        "--eval-samples", "0", "--batch-size", "50", "--out", str(out_file),
        "--plot", str(png), "--verbose"])
    assert code == 0, err
    assert out.startswith(f"{name} ({dtype}) on mnist, 100 training / 50 test images")
    assert out.count("train loss:") == 2
    assert re.search(r"=== epoch:1, train acc:[\d.]+, test acc:[\d.]+ ===", out)
    assert "epoch 1/2: train acc" in out and "epoch 2/2" not in out
    assert "stopped after 2 of 4 steps (--max-steps)" in out
    assert f"loss and accuracy curves written to {png}" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    params = load_params_file(out_file, None)
    assert all(v.dtype == dtype for v in params.values())
    assert len(params) == {"lenet5": 10, "deep": 16}[network]


def test_subset_is_the_course_demo(tmp_path, mnist_dir):
    code, out, err = run(train_main, [
        "--subset", "--epochs", "1", "--max-steps", "2", "--network", "lenet5", "--dtype", "float32",
        "--data", str(mnist_dir), "--out", str(tmp_path / "p.npz"), "--no-plot", "--shuffle"])
    assert code == 0, err
    assert out.startswith("LeNet5 (float32) on mnist, 5000 training / 1000 test images, "
                          "1 epochs x 50 steps")
    assert "stopped after 2 of 50 steps" in out
    assert re.search(r"final test acc 0\.\d{4} \(\d+/1000 images\)", out)
    assert "plot" not in out and (tmp_path / "p.npz").exists()


def test_compare_reference_times_both_and_leaves_the_run_unchanged(tmp_path, mnist_dir):
    common = ["--data", str(mnist_dir), "--no-plot", "--max-steps", "3", "--network", "deep",
              "--dtype", "float32", *SHORT]
    code, plain, err = run(train_main, [*common, "--out", str(tmp_path / "a.npz")])
    assert code == 0, err
    code, compared, err = run(train_main, [*common, "--out", str(tmp_path / "b.npz"),
                                           "--compare-reference", "2"])
    assert code == 0, err
    line = re.search(r"training step \(gradient \+ Adam, batch 100\), median of 2: reference "
                     r"\(NumPy\) ([\d.]+) ms, cnncore ([\d.]+) ms, ([\d.]+)x", compared)
    assert line and float(line.group(1)) > 0 and float(line.group(2)) > 0
    # same seed, same batches, same dropout masks: the comparison consumed no random numbers
    with np.load(tmp_path / "a.npz") as a, np.load(tmp_path / "b.npz") as b:
        assert sorted(a.files) == sorted(b.files) and all(np.array_equal(a[k], b[k]) for k in a)
    assert re.search(r"final test acc (0\.\d{4})", plain).group(1) == \
        re.search(r"final test acc (0\.\d{4})", compared).group(1)


def test_compare_reference_runs_the_textbook_adam_for_the_reference(monkeypatch, capsys):
    # The reference network's steps use Adam's NumPy statements, cnncore's the compiled pass.
    from cnncore import cli, optimizer
    seen = []
    update = optimizer.Adam.update
    monkeypatch.setattr(optimizer.Adam, "update",
                        lambda self, p, g: seen.append(self.compiled) or update(self, p, g))
    rng = np.random.default_rng(0)
    x = rng.random((8, 1, 28, 28)).astype(np.float32)
    t = rng.integers(0, 10, 8)
    cli.compare_with_reference(SimpleConvNet(dtype=np.float32), x, t, 4, 2)
    # each: untimed steps for bench.WARMUP_SECONDS (at least one), then the 2 timed steps
    first_cnncore = seen.index(True)
    assert seen == [False] * first_cnncore + [True] * (len(seen) - first_cnncore)
    assert first_cnncore >= 3 and len(seen) - first_cnncore >= 3
    assert "training step" in capsys.readouterr().out


@pytest.mark.parametrize("main", [train_main, evaluate_main])
def test_missing_data_says_where_to_put_it(main, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(datasets, "_fetch", mock.Mock(side_effect=OSError("no network")))
    out_file = tmp_path / "p.npz"
    with pytest.raises(SystemExit) as info:
        main(["--data", str(tmp_path / "data"), "--out" if main is train_main else "--params",
              str(out_file)])
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert f"into {tmp_path / 'data'}" in err and "train-images-idx3-ubyte.gz" in err
    assert not out_file.exists()


@pytest.mark.parametrize("argv, message", [
    (["--epochs", "0"], "--epochs must be >= 1"),
    (["--batch-size", "-5"], "--batch-size must be >= 1"),
    (["--eval-samples", "-1"], "--eval-samples must be >= 0"),
    (["--lr", "0"], "--lr must be > 0"),
    (["--compare-reference", "-1"], "--compare-reference must be >= 0"),
    (["--network", "resnet"], "invalid choice"),
])
def test_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        train_main(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("network", ["simple", "deep", "lenet5"])
def test_info_explain_names_an_algorithm_for_every_convolution(network):
    from cnncore._info import info_main

    code, out, _ = run(info_main, ["--explain", network, "--batch", "2"])
    assert code == 0
    blocks = [line for line in out.splitlines() if not line.startswith(" ")]
    n_conv = {"simple": 1, "deep": 6, "lenet5": 3}[network]
    assert len(blocks) == n_conv
    for line in out.splitlines():
        if line.startswith("  "):
            assert line.split()[1] in cnncore_config.CONV_ALGORITHMS[1:]


def test_info_describes_the_build_and_runtime(monkeypatch):
    from cnncore._info import info_main

    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    code, out, _ = run(info_main, [])
    assert code == 0
    fields = dict(line.split(None, 1) for line in out.splitlines())
    assert fields["cnncore"] == cnncore.__version__
    assert fields["compiled_kernels"] == "True" and fields["kernel_threads"] == "3"
    assert fields["cpu_features"] == ", ".join(
        f"{name}={'yes' if on else 'no'}" for name, on in cnncore.cpu_features().items())
    assert "conv_algorithm=auto" in fields["config"]
    # The Cython that generated the C code (setup requires >= 3.1), read from the build itself.
    built = tuple(int(part) for part in fields["built_with_cython"].split("."))
    assert len(built) == 3 and built >= (3, 1, 0)


# ------------------------------------------------------------- datasets, validation, hooks (issue 27)

@pytest.fixture
def cifar_dir(tmp_path, course_data):
    """Synthetic CIFAR-10 binary batches whose class shows in the red plane."""
    course_data.cifar10(tmp_path / "cifar", per_batch=40, learnable=True)
    return tmp_path / "cifar"


def test_train_cifar10_from_synthetic_files(cifar_dir, tmp_path):
    pytest.importorskip("matplotlib")
    out, best, png = tmp_path / "p.npz", tmp_path / "best.npz", tmp_path / "curves.png"
    code, text, err = run(train_main, [
        "--dataset", "cifar10", "--data", str(cifar_dir), "--network", "simple",
        "--dtype", "float32", "--epochs", "4", "--batch-size", "20", "--seed", "0",
        "--val-split", "0.2", "--augment", "--lr-schedule", "cosine", "--early-stop", "3",
        "--checkpoint", str(best), "--out", str(out), "--plot", str(png), "--lr", "0.003"])
    assert code == 0, err
    lines = text.splitlines()
    assert lines[0].startswith("SimpleConvNet (float32) on cifar10, 160 training / 40 "
                               "validation / 40 test images, 4 epochs x 8 steps of 20")
    assert "RandomCropFlip(pad=4, flip=True)" in lines[0] and "lr schedule cosine" in lines[0]
    epochs = [line for line in lines if re.match(r"epoch \d/4: train acc", line)]
    assert epochs and all(re.search(r"test acc 0\.\d{4}, val acc [01]\.\d{4}, loss", line)
                          for line in epochs), epochs
    assert "\r" not in text   # not a terminal: the progress display writes plain lines only
    network = SimpleConvNet(input_dim=(3, 32, 32), dtype=np.float32)
    network.load_params(out)
    network.load_params(best)
    assert network.params["W1"].shape == (30, 3, 5, 5)
    assert png.read_bytes()[:4] == b"\x89PNG"
    # evaluate writes the confusion matrix and the misclassified grid
    cm, wrong = tmp_path / "cm.png", tmp_path / "wrong.png"
    code, text, err = run(evaluate_main, [
        "--dataset", "cifar10", "--data", str(cifar_dir), "--params", str(out), "--dtype",
        "float32", "--confusion", str(cm), "--misclassified", str(wrong)])
    assert code == 0, err
    assert re.search(r"SimpleConvNet \(float32\) .*p\.npz: test acc 0\.\d{4} \(\d+/40 images", text)
    assert cm.read_bytes()[:4] == b"\x89PNG" and wrong.read_bytes()[:4] == b"\x89PNG"


def test_train_fashion_mnist(tmp_path, course_data):
    course_data.fashion_mnist(tmp_path / "f", 200, 50)
    code, text, err = run(train_main, [
        "--dataset", "fashion-mnist", "--data", str(tmp_path / "f"), "--network", "lenet5",
        "--epochs", "1", "--batch-size", "50", "--out", str(tmp_path / "p.npz"), "--no-plot",
        "--eval-samples", "0", "--augment"])
    assert code == 0, err
    assert text.startswith("LeNet5 (float64) on fashion-mnist, 200 training / 50 test images")
    assert "RandomCropFlip(pad=2, flip=True)" in text.splitlines()[0]


def test_unwritable_out_fails_before_training(tmp_path, mnist_dir, capsys):
    """Issue 26: an --out in a directory that does not exist was found after the whole run."""
    for option in ("--out", "--plot", "--checkpoint"):
        argv = ["--data", str(mnist_dir), "--train-size", "100", "--epochs", "1",
                "--val-split", "0.2", option, str(tmp_path / "missing" / "x.npz")]
        started = mock.Mock(side_effect=AssertionError("training started"))
        with mock.patch("cnncore.trainer.Trainer.train_step", started), \
                mock.patch("cnncore.datasets.load_mnist", started):
            with pytest.raises(SystemExit) as info:
                train_main(argv)
        assert info.value.code == 1
        err = capsys.readouterr().err
        assert f"{option} " in err and "does not exist" in err
    with pytest.raises(SystemExit):
        evaluate_main(["--params", "p.npz", "--confusion", str(tmp_path / "missing" / "c.png")])
    assert "--confusion" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--val-split", "1.5"], "--val-split must be a fraction in (0, 1), got 1.5"),
    (["--val-split", "0"], "--val-split must be a fraction in (0, 1)"),
    (["--early-stop", "3"], "--early-stop watches the validation accuracy: add --val-split"),
    (["--checkpoint", "b.npz"], "--checkpoint watches the validation accuracy"),
    (["--early-stop", "0", "--val-split", "0.1"], "--early-stop must be >= 1"),
    (["--lr-schedule", "linear"], "--lr-schedule must be none, step:N[:GAMMA] or cosine"),
    (["--lr-schedule", "step:x"], "--lr-schedule step:x"),
    (["--lr-schedule", "step:2:0"], "gamma must be in (0, 1]"),
    (["--dataset", "imagenet"], "invalid choice"),
])
def test_bad_training_options(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        train_main(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_empty_validation_set_fails_before_training(tmp_path, mnist_dir, capsys):
    with mock.patch("cnncore.trainer.Trainer.train_step",
                    mock.Mock(side_effect=AssertionError("training started"))):
        with pytest.raises(SystemExit) as info:
            train_main(["--data", str(mnist_dir), "--train-size", "20", "--val-split", "0.01",
                        "--out", str(tmp_path / "p.npz")])
    assert info.value.code == 1
    assert "--val-split: val_fraction=0.01 of 20 samples leaves no validation samples" in \
        capsys.readouterr().err


def test_train_the_course_cifar10_network(cifar_dir, tmp_path):
    """The lecture's CIFAR-10 CNN (the course-network registry) through --dataset cifar10."""
    code, text, err = run(train_main, [
        "--dataset", "cifar10", "--data", str(cifar_dir), "--network", "cifar10",
        "--dtype", "float32", "--epochs", "1", "--max-steps", "2", "--batch-size", "20",
        "--val-split", "0.2", "--early-stop", "1", "--out", str(tmp_path / "c.npz"), "--no-plot"])
    assert code == 0, err
    assert "on cifar10, 160 training / 40 validation / 40 test images" in text.splitlines()[0]
    assert "stopped after 2 of 8 steps (--max-steps)" in text and (tmp_path / "c.npz").exists()
