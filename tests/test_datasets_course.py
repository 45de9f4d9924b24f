"""Fashion-MNIST and CIFAR-10 from synthetic files in the exact published formats (the real files'
checksums where present), the validation split, and bad input: each error names the file."""
import gzip
import hashlib
import io
import os
import tarfile

import numpy as np
import pytest

from cnncore import datasets
from cnncore.datasets import (CIFAR10_CLASSES, load_cifar10, load_fashion_mnist,
                              split_validation)


@pytest.fixture(autouse=True)
def no_download(monkeypatch, tmp_path):
    """Never touch the network: every mirror is a file:// directory that does not exist, and the
    caches live under tmp_path."""
    monkeypatch.setattr(datasets, "FASHION_MNIST_MIRRORS", ((tmp_path / "nowhere").as_uri(),))
    monkeypatch.setattr(datasets, "CIFAR10_MIRRORS", ((tmp_path / "nowhere").as_uri(),))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    for env in ("CNNCORE_FASHION_MNIST_DATA", "CNNCORE_CIFAR10_DATA"):
        monkeypatch.delenv(env, raising=False)
    monkeypatch.setattr(datasets, "_cifar_memo", {})


# ------------------------------------------------------------------------------------ Fashion-MNIST

def test_fashion_mnist_synthetic_files_load_like_mnist(tmp_path, course_data):
    written = course_data.fashion_mnist(tmp_path / "f", 30, 10)
    (x_train, t_train), (x_test, t_test) = load_fashion_mnist(path=tmp_path / "f")
    assert x_train.shape == (30, 784) and x_test.shape == (10, 784) and x_train.dtype == np.float32
    expected = written["train"][0].reshape(30, 784).astype(np.float32)
    expected /= 255.0
    assert np.array_equal(x_train, expected)
    assert np.array_equal(t_train, written["train"][1]) and t_test.dtype == np.uint8
    assert x_train.flags.writeable and t_train.flags.writeable
    (x, t), _ = load_fashion_mnist(normalize=False, flatten=False, one_hot_label=True,
                                   path=tmp_path / "f")
    assert x.shape == (30, 1, 28, 28) and x.dtype == np.uint8 and t.shape == (30, 10)
    assert np.array_equal(t.argmax(1), written["train"][1])
    assert datasets.FASHION_MNIST_CLASSES[9] == "Ankle boot"


def test_fashion_mnist_env_var_and_offline_message(tmp_path, monkeypatch, course_data):
    course_data.fashion_mnist(tmp_path / "env", 20, 10)
    monkeypatch.setenv("CNNCORE_FASHION_MNIST_DATA", str(tmp_path / "env"))
    assert load_fashion_mnist()[0][0].shape == (20, 784)
    monkeypatch.delenv("CNNCORE_FASHION_MNIST_DATA")
    with pytest.raises(FileNotFoundError) as info:
        load_fashion_mnist()   # the cache is empty and the mirror unreachable
    message = str(info.value)
    assert "t10k-labels-idx1-ubyte.gz" in message
    assert str(tmp_path / "cache" / "cnncore" / "fashion-mnist") in message
    assert not list((tmp_path / "cache").rglob("*.gz"))    # nothing half-written


def test_fashion_mnist_download_is_verified_and_atomic(tmp_path, monkeypatch, course_data):
    mirror = tmp_path / "mirror"
    course_data.fashion_mnist(mirror, 20, 10)
    sums = {name: hashlib.md5((mirror / name).read_bytes()).hexdigest()
            for name in datasets.key_file.values()}
    monkeypatch.setattr(datasets, "FASHION_MNIST_MIRRORS", (mirror.as_uri(),))
    # a mirror serving other bytes than the published ones is refused, nothing kept
    wrong = dict(sums, **{"train-images-idx3-ubyte.gz": "0" * 32})
    monkeypatch.setattr(datasets, "FASHION_MNIST_MD5", wrong)
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte.gz"):
        load_fashion_mnist()
    cache = tmp_path / "cache" / "cnncore" / "fashion-mnist"
    assert not (cache / "train-images-idx3-ubyte.gz").exists()
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]   # no temporary file left
    monkeypatch.setattr(datasets, "FASHION_MNIST_MD5", sums)
    assert load_fashion_mnist()[1][0].shape == (10, 784)
    assert sorted(p.name for p in cache.iterdir()) == sorted(sums)


def test_fashion_mnist_published_size_needs_published_md5(tmp_path, course_data):
    """A file declaring the published 10000 test labels is checked against the published MD5, so an
    MNIST file (same format, same size) in the Fashion-MNIST directory is refused by name."""
    course_data.fashion_mnist(tmp_path, 20, 10)
    labels = (np.arange(10000) % 10).astype(np.uint8)
    course_data.idx_gz(tmp_path / "t10k-labels-idx1-ubyte.gz", labels, 2049)
    images = np.zeros((10000, 28, 28), np.uint8)
    course_data.idx_gz(tmp_path / "t10k-images-idx3-ubyte.gz", images, 2051)
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte.gz: has the published file's "
                                         r"size but md5 .* expected bef4ecab"):
        load_fashion_mnist(path=tmp_path)


def test_real_mnist_files_are_not_fashion_mnist(tmp_path, mnist_dir):
    for name in datasets.key_file.values():
        os.symlink(mnist_dir / name, tmp_path / name)
    with pytest.raises(ValueError, match="md5 .* expected 8d4fb7e6"):
        load_fashion_mnist(path=tmp_path)


IMAGES, LABELS = "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"


def _idx(magic_low, dims, payload):
    return gzip.compress(b"\x00\x00\x08" + bytes([magic_low]) +
                         b"".join(d.to_bytes(4, "big") for d in dims) + payload)


@pytest.mark.parametrize("victim, damage, message", [
    (IMAGES, lambda b: b[:-20], "corrupted or truncated gzip"),
    (IMAGES, lambda b: b"not a gzip file", "corrupted or truncated gzip"),
    (LABELS, lambda b: _idx(1, (5,), b"\x01"), "truncated"),
    (IMAGES, lambda b: _idx(3, (2, 8, 8), bytes(128)), "expected magic 2051"),
    (IMAGES, lambda b: _idx(3, (70000, 28, 28), bytes(10)), "declares 70000 samples, more than"),
])
def test_fashion_mnist_damaged_files_are_named(tmp_path, course_data, victim, damage, message):
    course_data.fashion_mnist(tmp_path, 20, 10)
    path = tmp_path / victim
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(ValueError, match=message) as info:
        load_fashion_mnist(path=tmp_path)
    assert str(path) in str(info.value)


def test_fashion_mnist_labels_outside_the_classes_and_count_mismatch(tmp_path, course_data):
    course_data.fashion_mnist(tmp_path, 20, 10)
    course_data.idx_gz(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([1] * 9 + [10]), 2049)
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte.gz: label 10 at index 9 is "
                                         r"outside the 10 classes"):
        load_fashion_mnist(path=tmp_path)
    course_data.idx_gz(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(7), 2049)
    with pytest.raises(ValueError, match="7 labels for 10 images"):
        load_fashion_mnist(path=tmp_path)


# ------------------------------------------------------------------------------------ CIFAR-10

def test_cifar10_binary_layout(tmp_path, course_data):
    batches = course_data.cifar10(tmp_path, per_batch=12)
    (x_train, t_train), (x_test, t_test) = load_cifar10(path=tmp_path)
    assert x_train.shape == (60, 3, 32, 32) and x_test.shape == (12, 3, 32, 32)
    assert x_train.dtype == np.float32 and 0 <= x_train.min() and x_train.max() <= 1
    images = np.concatenate([batches[f"data_batch_{i}.bin"][0] for i in range(1, 6)])
    labels = np.concatenate([batches[f"data_batch_{i}.bin"][1] for i in range(1, 6)])
    assert np.array_equal(load_cifar10(normalize=False, path=tmp_path)[0][0], images)
    assert np.array_equal(t_train, labels) and np.array_equal(t_test, batches["test_batch.bin"][1])
    # the red plane of record 0 is its bytes 1..1024, row-major
    raw = (tmp_path / "cifar-10-batches-bin" / "data_batch_1.bin").read_bytes()
    assert np.array_equal(images[0, 0].ravel(), np.frombuffer(raw[1:1025], np.uint8))
    (flat, onehot), _ = load_cifar10(flatten=True, one_hot_label=True, path=tmp_path)
    assert flat.shape == (60, 3072) and onehot.shape == (60, 10) and x_train.flags.writeable
    assert CIFAR10_CLASSES[0] == "airplane" and len(CIFAR10_CLASSES) == 10


def _archive(tmp_path, course_data):
    """A tar.gz with the real archive's member names (of synthetic, full-size batches)."""
    source = tmp_path / "src"
    course_data.cifar10(source, per_batch=10000, zeros=True)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=1) as tar:
        tar.add(source / "cifar-10-batches-bin", arcname="cifar-10-batches-bin")
    return buffer.getvalue()


def test_cifar10_archive_is_checked_against_the_published_md5(tmp_path, monkeypatch, course_data):
    data = _archive(tmp_path, course_data)
    home = tmp_path / "home"
    home.mkdir()
    (home / datasets.CIFAR10_ARCHIVE).write_bytes(data)
    with pytest.raises(ValueError, match=r"cifar-10-binary.tar.gz: md5 .* differs from the "
                                         r"published c32a1d4ab5d03f1284b67883e8d87530"):
        load_cifar10(path=home)
    # with that archive's md5 standing in for the published one, it is read without extracting
    monkeypatch.setattr(datasets, "CIFAR10_MD5", hashlib.md5(data).hexdigest())
    (x_train, _), (x_test, t_test) = load_cifar10(path=home, normalize=False)
    assert x_train.shape == (50000, 3, 32, 32) and x_test.shape == (10000, 3, 32, 32)
    assert sorted(p.name for p in home.iterdir()) == [datasets.CIFAR10_ARCHIVE]


def test_cifar10_download_into_cache(tmp_path, monkeypatch, course_data):
    data = _archive(tmp_path, course_data)
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / datasets.CIFAR10_ARCHIVE).write_bytes(data)
    monkeypatch.setattr(datasets, "CIFAR10_MIRRORS", (mirror.as_uri(),))
    with pytest.raises(FileNotFoundError, match="md5 .* differs from the published"):
        load_cifar10()
    cache = tmp_path / "cache" / "cnncore" / "cifar10"
    assert list(cache.iterdir()) == []     # the refused download left nothing behind
    monkeypatch.setattr(datasets, "CIFAR10_MD5", hashlib.md5(data).hexdigest())
    assert load_cifar10()[1][0].shape == (10000, 3, 32, 32)
    assert (cache / datasets.CIFAR10_ARCHIVE).read_bytes() == data


def test_cifar10_offline_says_where(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        load_cifar10(path=tmp_path)
    assert str(tmp_path) in str(info.value) and "cifar-10-binary.tar.gz" in str(info.value)
    assert "data_batch_1.bin" in str(info.value)


REAL_FASHION = os.environ.get("CNNCORE_FASHION_MNIST_REAL")


@pytest.mark.skipif(not REAL_FASHION, reason="set CNNCORE_FASHION_MNIST_REAL to a directory "
                                             "holding the four real Fashion-MNIST files")
def test_real_fashion_mnist_files():
    """The published files: their MD5s are checked, and the known class balance comes out."""
    (x_train, t_train), (x_test, t_test) = load_fashion_mnist(path=REAL_FASHION)
    assert x_train.shape == (60000, 784) and x_test.shape == (10000, 784)
    assert np.bincount(t_train).tolist() == [6000] * 10
    assert np.bincount(t_test).tolist() == [1000] * 10


REAL_CIFAR = os.environ.get("CNNCORE_CIFAR10_REAL")


@pytest.mark.skipif(not REAL_CIFAR, reason="set CNNCORE_CIFAR10_REAL to a directory holding the "
                                           "real cifar-10-binary.tar.gz")
def test_real_cifar10_archive():
    (x_train, t_train), (x_test, _) = load_cifar10(path=REAL_CIFAR)
    assert x_train.shape == (50000, 3, 32, 32) and x_test.shape == (10000, 3, 32, 32)
    assert np.bincount(t_train).tolist() == [5000] * 10


@pytest.mark.parametrize("damage, message", [
    (lambda b: b[:-100], "not a whole number of 3073-byte CIFAR-10 records"),
    (lambda b: b"", "0 bytes is not a whole number"),
    (lambda b: bytes([10]) + b[1:], "data_batch_3.bin: label 10 at index 0 is outside"),
])
def test_cifar10_damaged_batch_is_named(tmp_path, course_data, damage, message):
    course_data.cifar10(tmp_path, per_batch=4)
    victim = tmp_path / "cifar-10-batches-bin" / "data_batch_3.bin"
    victim.write_bytes(damage(victim.read_bytes()))
    with pytest.raises(ValueError, match=message) as info:
        load_cifar10(path=tmp_path)
    assert "data_batch_3.bin" in str(info.value)


def test_cifar10_foreign_meta_file(tmp_path, course_data):
    course_data.cifar10(tmp_path, per_batch=4)
    (tmp_path / "cifar-10-batches-bin" / "batches.meta.txt").write_text("apple\nbanana\n")
    with pytest.raises(ValueError, match="batches.meta.txt: lists classes"):
        load_cifar10(path=tmp_path)


# ------------------------------------------------------------------------------------ validation

def test_split_validation_is_chapter_6s_recipe():
    x = np.arange(100)[:, None] * np.ones((1, 3))
    t = np.arange(100)
    np.random.seed(3)
    order = np.random.permutation(100)
    np.random.seed(3)
    (x_train, t_train), (x_val, t_val) = split_validation(x, t, 0.2)
    assert np.array_equal(t_val, order[:20]) and np.array_equal(t_train, order[20:])
    assert np.array_equal(x_val[:, 0], t_val) and len(x_train) == 80
    (_, a), (_, b) = split_validation(x, t, 0.3, rng=5)
    (_, c), (_, d) = split_validation(x, t, 0.3, rng=5)
    assert np.array_equal(a, c) and np.array_equal(b, d) and len(b) == 30
    (_, t2), (_, v2) = split_validation(x, t, 0.1, shuffle=False)
    assert v2.tolist() == list(range(10))


@pytest.mark.parametrize("fraction, error, message", [
    (0, ValueError, r"in \(0, 1\)"), (1, ValueError, r"in \(0, 1\)"), (-0.1, ValueError, "in"),
    (1.5, ValueError, "in"), (float("nan"), ValueError, "in"), ("0.2", TypeError, "number"),
    (0.001, ValueError, "no validation samples"),
])
def test_split_validation_rejects(fraction, error, message):
    with pytest.raises(error, match=message):
        split_validation(np.zeros((100, 2)), np.zeros(100), fraction)
    with pytest.raises(ValueError, match="same number"):
        split_validation(np.zeros((10, 2)), np.zeros(9), 0.5)


# ------------------------------------------------------------------------------ CIFAR-10, Python

def write_python_batches(directory, per_batch=8, seed=0):
    """cifar-10-batches-py/ as torchvision leaves it: protocol-2 pickles of dicts."""
    import pickle

    gen = np.random.default_rng(seed)
    place = directory / "cifar-10-batches-py"
    place.mkdir(parents=True)
    written = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = gen.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in gen.integers(0, 10, per_batch)]
        batch = {b"batch_label": b"synthetic", b"labels": labels, b"data": data,
                 b"filenames": [b"x.png"] * per_batch}
        (place / name).write_bytes(pickle.dumps(batch, protocol=2))
        written[name] = (data, labels)
    return place, written


def test_cifar10_python_distribution(tmp_path):
    place, written = write_python_batches(tmp_path)
    (x_train, t_train), (x_test, t_test) = load_cifar10(path=tmp_path, normalize=False)
    assert x_train.shape == (40, 3, 32, 32) and x_test.shape == (8, 3, 32, 32)
    assert np.array_equal(x_test.reshape(8, -1), written["test_batch"][0])
    assert t_test.tolist() == written["test_batch"][1] and t_test.dtype == np.uint8
    assert x_train.flags.writeable


def test_cifar10_python_batches_run_no_code(tmp_path):
    place, _ = write_python_batches(tmp_path)
    marker = tmp_path / "ran"
    # a pickle that would call os.system when loaded by pickle.load
    (place / "data_batch_2").write_bytes(
        b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR.")
    with pytest.raises(ValueError, match=r"data_batch_2: refused to unpickle, not a CIFAR-10 "
                                         r"batch: .*os\.system"):
        load_cifar10(path=tmp_path)
    assert not marker.exists()


@pytest.mark.parametrize("content, message", [
    (lambda pickle: pickle.dumps([1, 2, 3], protocol=2), "expected a CIFAR-10 batch"),
    (lambda pickle: pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [1, 12]}),
     "label 12 at index 1 is outside"),
    (lambda pickle: pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [1, -1]}),
     "label -1 is outside"),
    # found by fuzzing: a label past int64 raised OverflowError naming no file
    (lambda pickle: pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [1, 2**70]}),
     "label 1180591620717411303424 at index 1 is outside"),
    (lambda pickle: pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [1, -2**70]}),
     "is outside"),
    (lambda pickle: pickle.dumps({"data": np.zeros((2, 100), np.uint8), "labels": [1, 2]}),
     "expected a CIFAR-10 batch"),
    (lambda pickle: pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [1]}),
     "expected a CIFAR-10 batch"),
    (lambda pickle: pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [1, 2]})[:-9],
     "corrupted or truncated pickle"),
    (lambda pickle: pickle.dumps({"data": np.zeros((10000, 3072), np.uint8),
                                  "labels": [0] * 10000}), "published batch's size but md5"),
])
def test_cifar10_python_bad_batches_are_named(tmp_path, content, message):
    import pickle

    place, _ = write_python_batches(tmp_path)
    (place / "test_batch").write_bytes(content(pickle))
    with pytest.raises(ValueError, match=message) as info:
        load_cifar10(path=tmp_path)
    assert str(place / "test_batch") in str(info.value)
