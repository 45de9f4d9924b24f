"""load_mnist on the real idx files, its checks on damaged files, and the (offline) download path."""
import gzip
import io
import re
import shutil

import numpy as np
import pytest

from cnncore import datasets
from cnncore.datasets import iterate_minibatches, load_mnist

FILES = list(datasets.key_file.values())


@pytest.fixture
def no_memo(monkeypatch):
    """Start from an empty in-process cache so every file is read and checked again."""
    monkeypatch.setattr(datasets, "_memo", {})


@pytest.fixture
def mnist_copy(tmp_path, mnist_dir, no_memo):
    """A writable copy of the four files."""
    for name in FILES:
        shutil.copy(mnist_dir / name, tmp_path / name)
    return tmp_path


def test_default_format(mnist_dir):
    (x_train, t_train), (x_test, t_test) = load_mnist(path=mnist_dir)
    assert x_train.shape == (60000, 784) and x_test.shape == (10000, 784)
    assert x_train.dtype == np.float32 and x_test.dtype == np.float32
    assert t_train.shape == (60000,) and t_test.shape == (10000,)
    assert t_train.dtype == np.uint8 and t_test.dtype == np.uint8
    assert x_train.min() == 0.0 and x_train.max() == 1.0
    # the textbook's normalisation, bit for bit: astype(float32) then /= 255.0
    (raw, _), _ = load_mnist(normalize=False, path=mnist_dir)
    expected = raw.astype(np.float32)
    expected /= 255.0
    assert np.array_equal(x_train, expected)
    # known class frequencies of the standard MNIST training and test sets
    assert np.bincount(t_train).tolist() == [5923, 6742, 5958, 6131, 5842,
                                             5421, 5918, 6265, 5851, 5949]
    assert np.bincount(t_test).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert t_train[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]


def test_options(mnist_dir):
    (x_train, t_train), (x_test, t_test) = load_mnist(
        normalize=False, flatten=False, one_hot_label=True, path=mnist_dir)
    assert x_train.shape == (60000, 1, 28, 28) and x_test.shape == (10000, 1, 28, 28)
    assert x_train.dtype == np.uint8 and x_train.max() == 255
    assert t_train.shape == (60000, 10) and t_test.shape == (10000, 10)
    assert t_train.dtype == np.float64
    assert set(np.unique(t_train)) == {0.0, 1.0} and (t_train.sum(axis=1) == 1).all()
    (_, labels), (_, test_labels) = load_mnist(path=mnist_dir)
    np.testing.assert_array_equal(t_train.argmax(axis=1), labels)
    np.testing.assert_array_equal(t_test.argmax(axis=1), test_labels)
    (flat, _), _ = load_mnist(normalize=False, path=mnist_dir)
    assert np.array_equal(x_train.reshape(60000, 784), flat)


def test_arrays_are_writable_and_independent(mnist_dir):
    (x_train, t_train), _ = load_mnist(normalize=False, path=mnist_dir)
    assert x_train.flags.writeable and t_train.flags.writeable
    np.random.shuffle(t_train)  # raised on the textbook's read-only arrays
    x_train[:] = 0
    (x_again, t_again), _ = load_mnist(normalize=False, path=mnist_dir)
    assert x_again.max() == 255
    assert t_again[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]


def test_environment_variable(monkeypatch, mnist_dir):
    monkeypatch.setenv("CNNCORE_DATA", str(mnist_dir))
    assert datasets.default_data_dir() == mnist_dir
    _, (_, t_test) = load_mnist()
    assert t_test.shape == (10000,)


def test_default_cache_dir_honours_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv("CNNCORE_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert datasets.default_data_dir() == tmp_path / "cnncore" / "mnist"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert datasets.default_data_dir() == tmp_path / "home" / ".cache" / "cnncore" / "mnist"


def _gzip(data):
    return gzip.compress(data, compresslevel=1)


def _change_one_label(raw):
    data = bytearray(gzip.decompress(raw))
    data[100] = (data[100] + 1) % 10  # still a valid label: only the checksum can tell
    return _gzip(bytes(data))


def _flip_compressed_byte(raw):
    raw = bytearray(raw)
    raw[len(raw) // 2] ^= 0xFF
    return bytes(raw)


@pytest.mark.parametrize("name, damage, message", [
    ("t10k-labels-idx1-ubyte.gz", _change_one_label, "differ from the standard MNIST file"),
    ("train-labels-idx1-ubyte.gz", _flip_compressed_byte, "corrupted or truncated gzip"),
    ("t10k-images-idx3-ubyte.gz", lambda raw: raw[:50000], "corrupted or truncated gzip"),
    ("t10k-images-idx3-ubyte.gz", lambda raw: _gzip(gzip.decompress(raw)[:-784]),
     r": truncated: 7839216 data bytes"),
])
def test_damaged_file_is_named(mnist_copy, name, damage, message):
    target = mnist_copy / name
    target.write_bytes(damage(target.read_bytes()))
    with pytest.raises(ValueError, match=re.escape(str(target)) + ".*" + message):
        load_mnist(path=mnist_copy, download=False)


def test_swapped_files_fail_on_header(mnist_copy):
    train, test = mnist_copy / "train-labels-idx1-ubyte.gz", mnist_copy / "t10k-labels-idx1-ubyte.gz"
    shutil.copy(test, train)
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte\.gz: idx header says .*10000"):
        load_mnist(path=mnist_copy, download=False)
    shutil.copy(mnist_copy / "t10k-images-idx3-ubyte.gz", test)
    with pytest.raises(ValueError, match="magic 2051"):
        datasets._read_file(mnist_copy, "test_label")


def test_parse_idx_rejects_bad_headers():
    with pytest.raises(ValueError, match="too short"):
        datasets.parse_idx(b"\x00\x00")
    with pytest.raises(ValueError, match="not an unsigned-byte idx file"):
        datasets.parse_idx(b"PK\x03\x04" + bytes(20))
    with pytest.raises(ValueError, match="trailing bytes"):
        datasets.parse_idx(b"\x00\x00\x08\x01" + (2).to_bytes(4, "big") + b"\x01\x02\x03")
    # found by fuzzing the loaders: dimensions whose product overflows int64 gave a negative size
    # and "has trailing bytes" for a header with no data at all
    with pytest.raises(ValueError, match=r"truncated: 0 data bytes .* \(36893488130239234050 exp"):
        datasets.parse_idx(b"\x00\x00\x08\x03" + (2).to_bytes(4, "big") + b"\xff" * 8)
    ok = datasets.parse_idx(b"\x00\x00\x08\x02" + (2).to_bytes(4, "big") + (3).to_bytes(4, "big")
                            + bytes(range(6)))
    assert ok.shape == (2, 3) and ok[1].tolist() == [3, 4, 5]


def test_missing_files_and_failing_mirrors(monkeypatch, tmp_path, no_memo):
    calls = []

    def failing_fetch(url, out):
        calls.append(url)
        raise OSError("HTTP Error 403: Forbidden")

    monkeypatch.setattr(datasets, "_fetch", failing_fetch)
    target = tmp_path / "data"
    with pytest.raises(FileNotFoundError) as info:
        load_mnist(path=target)
    message = str(info.value)
    assert f"into {target}" in message
    assert all(name in message for name in FILES)
    assert "403" in message
    assert len(calls) == 4 * len(datasets.MIRRORS)
    assert not any(target.glob("*.gz"))  # no partial files left behind

    with pytest.raises(FileNotFoundError, match="Put the four standard idx"):
        load_mnist(path=target, download=False)
    assert len(calls) == 4 * len(datasets.MIRRORS)


def test_download_verifies_checksums(monkeypatch, tmp_path, mnist_dir, no_memo):
    """The first mirror serves damaged data, the second the real files: only the real ones stay."""
    served = []

    def fake_fetch(url, out):
        served.append(url)
        name = url.rsplit("/", 1)[1]
        data = (mnist_dir / name).read_bytes()
        if url.startswith("https://bad.example/"):
            if "labels" in name:  # same header, one label changed: only the checksum tells
                data = _change_one_label(data)
            else:  # cut short
                data = data[:len(data) // 3]
        out.write(data)

    monkeypatch.setattr(datasets, "_fetch", fake_fetch)
    target = tmp_path / "cache"
    datasets.download_mnist(target, mirrors=["https://bad.example/", "https://good.example/"],
                            verbose=False)
    assert sorted(p.name for p in target.iterdir()) == sorted(FILES)  # no temporary files left
    assert len(served) == 8
    for name in FILES:
        assert gzip.decompress((target / name).read_bytes()) == \
            gzip.decompress((mnist_dir / name).read_bytes())
    _, (_, t_test) = load_mnist(path=target, download=False)
    assert t_test.shape == (10000,)


def test_download_from_file_url_into_cache(monkeypatch, tmp_path, mnist_dir, no_memo, capsys):
    """The real _fetch, reading a local file:// mirror; downloads land in the per-user cache."""
    monkeypatch.delenv("CNNCORE_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(datasets, "MIRRORS", ("file:///nonexistent-mirror/", mnist_dir.as_uri()))
    (x_train, _), _ = load_mnist()
    assert x_train.shape == (60000, 784)
    cache = tmp_path / "xdg" / "cnncore" / "mnist"
    assert sorted(p.name for p in cache.iterdir()) == sorted(FILES)
    out = capsys.readouterr().out
    assert "Downloading train-images-idx3-ubyte.gz" in out and "failed" in out and "Done" in out


def test_fetch_copies_bytes_and_stops_oversized_responses(mnist_dir):
    source = mnist_dir / "t10k-labels-idx1-ubyte.gz"
    out = io.BytesIO()
    datasets._fetch(source.as_uri(), out)
    assert out.getvalue() == source.read_bytes()
    with pytest.raises(OSError, match="larger than 1000 bytes"):
        datasets._fetch(source.as_uri(), io.BytesIO(), max_bytes=1000)


def test_iterate_minibatches_covers_each_sample_once():
    x = np.arange(23)[:, None] * np.ones((1, 3))
    t = np.arange(23)
    batches = list(iterate_minibatches(x, t, 5, rng=0))
    assert [len(tb) for _, tb in batches] == [5, 5, 5, 5, 3]
    seen = np.concatenate([tb for _, tb in batches])
    assert sorted(seen.tolist()) == list(range(23)) and seen.tolist() != list(range(23))
    for xb, tb in batches:
        np.testing.assert_array_equal(xb[:, 0], tb)
    assert [len(tb) for _, tb in iterate_minibatches(x, t, 5, drop_last=True)] == [5] * 4
    ordered = [tb.tolist() for _, tb in iterate_minibatches(x, t, 10, shuffle=False)]
    assert ordered == [list(range(10)), list(range(10, 20)), [20, 21, 22]]
    np.random.seed(3)
    first = [tb.tolist() for _, tb in iterate_minibatches(x, t, 4)]
    np.random.seed(3)
    assert [tb.tolist() for _, tb in iterate_minibatches(x, t, 4)] == first  # global RNG


def test_iterate_minibatches_checks_arguments():
    with pytest.raises(ValueError, match="same number of samples"):
        next(iterate_minibatches(np.zeros(3), np.zeros(4), 2))
    with pytest.raises(ValueError, match="batch_size"):
        next(iterate_minibatches(np.zeros(3), np.zeros(3), 0))
