"""MNIST, Fashion-MNIST and CIFAR-10 from their published files; a validation split; mini-batches.

    from cnncore.datasets import load_mnist       # instead of: from dataset.mnist import load_mnist
    (x_train, t_train), (x_test, t_test) = load_mnist(flatten=False)
    (x_train, t_train), (x_test, t_test) = load_fashion_mnist(flatten=False)
    (x_train, t_train), (x_test, t_test) = load_cifar10()          # (N, 3, 32, 32)
    (x_train, t_train), (x_val, t_val) = split_validation(x_train, t_train, 0.2)

Fashion-MNIST and CIFAR-10 follow the same contract as MNIST (below; details in their docstrings):
local files first, downloads only into the per-user cache, atomically and verified against the
published MD5s, fresh writable arrays, and a FileNotFoundError that says which files to put where.

Where the files are looked for (the first that applies):

1. the ``path`` argument of :func:`load_mnist`;
2. the ``CNNCORE_DATA`` environment variable;
3. the per-user cache ``$XDG_CACHE_HOME/cnncore/mnist`` (``~/.cache/cnncore/mnist`` by default).

Missing files are downloaded into that directory from :data:`MIRRORS` (each file written atomically
and checked before it is kept); if every mirror fails, the error says where to put the files by hand.
``download=False`` turns downloading off.

Every file is checked before use: gzip integrity, the idx magic number and dimensions, the file
length implied by the header, and a SHA-256 of the decompressed data against the standard MNIST
files (:data:`SHA256`). A damaged or wrong file raises ``ValueError`` naming it. Reads are bounded:
only regular files are opened (not ``/dev/zero`` or a FIFO), and a ``.gz`` is decompressed as a
stream that stops one byte past the size its MNIST file has, so a decompression bomb is refused
without taking the memory.

Differences from the textbook's ``dataset/mnist.py`` (documented choices):

- no ``mnist.pkl`` cache: the idx files are parsed directly (a verified copy is kept in memory for the
  rest of the process instead, keyed by the files' size and modification time);
- the returned arrays are always fresh and writable (the textbook's unpickled ones were read-only);
- images are float32 in [0, 1] when ``normalize`` (as the textbook: ``astype(float32) / 255.0``),
  else uint8; labels uint8, or float64 one-hot ``(N, 10)``; ``flatten=False`` gives ``(N, 1, 28, 28)``.
"""
import gzip
import hashlib
import http.client
import io
import math
import os
import sys
import tarfile
import urllib.request
import zlib
from pathlib import Path

import numpy as np

from ._io import atomic_write, open_regular_file

#: Mirrors tried in order by :func:`download_mnist` (each is the base URL of the four files).
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
url_base = MIRRORS[0]

key_file = {
    "train_img": "train-images-idx3-ubyte.gz",
    "train_label": "train-labels-idx1-ubyte.gz",
    "test_img": "t10k-images-idx3-ubyte.gz",
    "test_label": "t10k-labels-idx1-ubyte.gz",
}

train_num = 60000
test_num = 10000
img_dim = (1, 28, 28)
img_size = 784

#: SHA-256 of the *decompressed* standard MNIST files (mirrors recompress the .gz differently).
SHA256 = {
    "train-images-idx3-ubyte.gz": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte.gz": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte.gz": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte.gz": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

# idx magic number and dimensions each file must declare.
_LAYOUT = {
    "train_img": (2051, (train_num, 28, 28)),
    "train_label": (2049, (train_num,)),
    "test_img": (2051, (test_num, 28, 28)),
    "test_label": (2049, (test_num,)),
}

_memo = {}  # key -> (file stamp, verified uint8 array); the arrays are never handed out


def default_data_dir():
    """``$CNNCORE_DATA`` if set, else ``$XDG_CACHE_HOME/cnncore/mnist`` (``~/.cache/...``)."""
    return _cache_dir("mnist", "CNNCORE_DATA")


def _data_dir(path):
    return Path(path).expanduser() if path is not None else default_data_dir()


def parse_idx(data, name="idx data", expect=None):
    """Parse decompressed idx bytes into a uint8 array of the declared shape.

    ``expect`` = (magic, shape) to require. Raises ValueError mentioning ``name`` when the header is
    invalid, does not match, or the length disagrees with the header.
    """
    if len(data) < 4:
        raise ValueError(f"{name}: too short for an idx header ({len(data)} bytes)")
    magic = int.from_bytes(data[:4], "big")
    zero, dtype_code, ndim = data[0] << 8 | data[1], data[2], data[3]
    if zero != 0 or dtype_code != 0x08 or not 1 <= ndim <= 4:
        raise ValueError(f"{name}: not an unsigned-byte idx file (magic number {magic:#010x})")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{name}: truncated idx header ({len(data)} bytes)")
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    if expect is not None and (magic, shape) != expect:
        raise ValueError(f"{name}: idx header says magic {magic} shape {shape}, expected magic "
                         f"{expect[0]} shape {expect[1]} (is this the right file?)")
    size = math.prod(shape)   # Python ints: three dimensions of 2**32 - 1 overflow int64
    if len(data) != header + size:
        state = "truncated" if len(data) < header + size else "has trailing bytes"
        raise ValueError(f"{name}: {state}: {len(data) - header} data bytes for shape {shape} "
                         f"({size} expected)")
    return np.frombuffer(data, np.uint8, offset=header).reshape(shape)


def _verified(data, key, shown):
    """Check the decompressed MNIST file ``key_file[key]`` (header, length, checksum).

    Returns a read-only uint8 array; raises ValueError mentioning ``shown`` (path or URL).
    """
    array = parse_idx(data, shown, expect=_LAYOUT[key])
    digest = hashlib.sha256(data).hexdigest()
    expected = SHA256[key_file[key]]
    if digest != expected:
        raise ValueError(f"{shown}: contents differ from the standard MNIST file (sha256 {digest}, "
                         f"expected {expected}); the file is corrupted or not MNIST")
    return array


def _decompress(f, key, shown):
    """Decompress the gzip stream in the binary file f, refusing more than MNIST file key holds."""
    shape = _LAYOUT[key][1]
    size = 4 + 4 * len(shape) + int(np.prod(shape))  # the idx header, then one byte a value
    try:
        with gzip.GzipFile(fileobj=f, mode="rb") as stream:
            data = stream.read(size + 1)
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
        raise ValueError(f"{shown}: corrupted or truncated gzip file ({exc})") from None
    if len(data) > size:  # a bomb, or damage the CRC at the end would have shown
        parse_idx(data[:size], shown, expect=_LAYOUT[key])  # but first: is it the wrong file?
        raise ValueError(f"{shown}: corrupted or truncated gzip file, or not MNIST: it "
                         f"decompresses to more than the {size} bytes of {key_file[key]}")
    return data


def _read_file(directory, key):
    file_path = directory / key_file[key]
    with open_regular_file(file_path) as f:
        stat = os.fstat(f.fileno())
        stamp = (str(file_path.resolve()), stat.st_size, stat.st_mtime_ns)
        cached = _memo.get(key)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        array = _verified(_decompress(f, key, str(file_path)), key, str(file_path))
    _memo[key] = (stamp, array)
    return array


def _fetch(url, out, timeout=60, max_bytes=32 * 2**20):
    """Copy the bytes at ``url`` into the binary file ``out``, printing a progress line.

    Raises OSError (or http.client.HTTPException) on failure, and OSError when the response grows
    past ``max_bytes`` (the largest MNIST file is under 10 MB compressed).
    """
    request = urllib.request.Request(url, headers={"User-Agent": "cnncore (python urllib)"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        total = int(response.headers.get("Content-Length") or 0)
        done = 0
        while True:
            chunk = response.read(1 << 16)
            if not chunk:
                break
            done += len(chunk)
            if done > max_bytes:
                raise OSError(f"response larger than {max_bytes} bytes: not the expected file")
            out.write(chunk)
            if total and sys.stdout.isatty():
                print(f"\r  {done / 1e6:.1f} / {total / 1e6:.1f} MB ({100 * done // total}%)",
                      end="", flush=True)
    if total and sys.stdout.isatty():
        print()


def _store_mnist(url, key, target):
    buffer = io.BytesIO()  # at most ~10 MB; checked before anything is written
    _fetch(url, buffer)
    buffer.seek(0)
    _verified(_decompress(buffer, key, url), key, url)
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(target) as out:
        out.write(buffer.getvalue())


def _try_mirrors(file_name, mirrors, store, verbose):
    """Call ``store(url)`` for ``file_name`` at each mirror until one succeeds (it raises OSError,
    ValueError or HTTPException otherwise). Returns the failures, empty on success."""
    errors = []
    for base in mirrors:
        url = base.rstrip("/") + "/" + file_name
        if verbose:
            print(f"Downloading {file_name} from {url} ...", flush=True)
        try:
            store(url)
        except (OSError, ValueError, http.client.HTTPException) as exc:
            errors.append(f"{url}: {exc}")
            if verbose:
                print(f"  failed: {exc}", flush=True)
            continue
        if verbose:
            print("Done", flush=True)
        return []
    return errors or [f"{file_name}: no mirrors"]


def download_mnist(path=None, mirrors=None, verbose=True):
    """Download the missing MNIST files into ``path`` (default: :func:`default_data_dir`).

    Each file is tried from every mirror in turn; a download is kept only when it passes the same
    checks as :func:`load_mnist`, and it is written atomically. Files already present are left alone.
    Raises FileNotFoundError, saying where to put the files, when a file cannot be obtained.
    """
    directory = _data_dir(path)
    mirrors = MIRRORS if mirrors is None else tuple(mirrors)
    failed = {}
    for key, file_name in key_file.items():
        target = directory / file_name
        if target.exists():
            continue
        errors = _try_mirrors(file_name, mirrors,
                              lambda url, key=key, target=target: _store_mnist(url, key, target),
                              verbose)
        if errors:
            failed[file_name] = errors
    if failed:
        tried = "\n".join(f"  {e}" for errors in failed.values() for e in errors) or "  (no mirrors)"
        raise FileNotFoundError(
            f"MNIST files missing and could not be downloaded: {', '.join(failed)}.\n"
            f"Put the four standard files\n  " + "\n  ".join(key_file.values()) +
            f"\ninto {directory}\n(or point load_mnist(path=...) or $CNNCORE_DATA at a directory "
            f"holding them).\nDownload attempts:\n{tried}"
        )


def init_mnist(path=None):
    """Make sure the four files are present (downloading if needed); the textbook's entry point."""
    download_mnist(path)


def _change_one_hot_label(labels):
    return _one_hot(labels, 10)


def load_mnist(normalize=True, flatten=True, one_hot_label=False, path=None, *, download=True):
    """MNIST as ``((x_train, t_train), (x_test, t_test))``, like the textbook's ``load_mnist``.

    Parameters
    ----------
    normalize : images as float32 in [0, 1] (else uint8 0..255).
    flatten : images as ``(N, 784)`` (else ``(N, 1, 28, 28)``).
    one_hot_label : labels as float64 one-hot ``(N, 10)`` (else uint8 ``(N,)``).
    path : directory holding the four idx ``.gz`` files (default: ``$CNNCORE_DATA``, else the
        per-user cache, see the module docstring).
    download : fetch missing files into that directory (default True).

    Returns fresh, writable arrays: 60000 training and 10000 test images.
    """
    directory = _data_dir(path)
    missing = [f for f in key_file.values() if not (directory / f).exists()]
    if missing:
        if not download:
            raise FileNotFoundError(
                f"MNIST files not found: {', '.join(missing)}. Put the four standard idx .gz "
                f"files into {directory} (or pass path=... / set $CNNCORE_DATA)")
        download_mnist(directory)
    dataset = {key: _read_file(directory, key) for key in key_file}
    for key in ("train_img", "test_img"):
        images = dataset[key].reshape(-1, img_size)
        if normalize:
            images = images.astype(np.float32)
            images /= 255.0
        else:
            images = images.copy()
        dataset[key] = images if flatten else images.reshape(-1, *img_dim)
    for key in ("train_label", "test_label"):
        labels = dataset[key]
        dataset[key] = _change_one_hot_label(labels) if one_hot_label else labels.copy()
    return ((dataset["train_img"], dataset["train_label"]),
            (dataset["test_img"], dataset["test_label"]))


def iterate_minibatches(x, t, batch_size, shuffle=True, drop_last=False, rng=None):
    """Yield ``(x_batch, t_batch)`` pairs covering the data once (one epoch).

    Parameters
    ----------
    x, t : arrays with the same first dimension (samples).
    batch_size : samples per batch (>= 1).
    shuffle : visit the samples in a random order (without replacement).
    drop_last : skip the last batch when it is smaller than ``batch_size``.
    rng : None (the global ``np.random``, as the textbook uses), an int seed, or a
        ``np.random.Generator`` / ``RandomState``.

    Batches are copies (fancy indexing) when shuffling, views otherwise.
    """
    from ._validate import check_int

    batch_size = check_int(batch_size, "batch_size", 1)
    n = len(x)
    if len(t) != n:
        raise ValueError(f"x and t must have the same number of samples, got {n} and {len(t)}")
    order = None
    if shuffle:
        if rng is None:
            rng = np.random
        elif isinstance(rng, (int, np.integer)):
            rng = np.random.default_rng(rng)
        order = rng.permutation(n)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        if order is None:
            yield x[start:start + batch_size], t[start:start + batch_size]
        else:
            index = order[start:start + batch_size]
            yield x[index], t[index]


# ----------------------------------------------------------------------------- validation split

def split_validation(x, t, val_fraction=0.2, shuffle=True, rng=None):
    """Hold out ``val_fraction`` of (x, t) for validation: ``((x_train, t_train), (x_val, t_val))``.

    Chapter 6's recipe (``hyperparameter_optimization.py``): shuffle, then the first
    ``int(N * val_fraction)`` samples are the validation set. Tune on it, never on the test set.
    ``rng``: None (the global ``np.random.permutation``, like the textbook's ``shuffle_dataset``), an
    int seed, or a Generator / RandomState. Returns copies when shuffling, views otherwise.
    Raises ValueError when the fraction is not in (0, 1) or either part would be empty.
    """
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float, np.floating)):
        raise TypeError(f"val_fraction must be a number in (0, 1), got {val_fraction!r}")
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    n = len(x)
    if len(t) != n:
        raise ValueError(f"x and t must have the same number of samples, got {n} and {len(t)}")
    n_val = int(n * val_fraction)
    if n_val == 0 or n_val == n:
        raise ValueError(f"val_fraction={val_fraction} of {n} samples leaves "
                         f"{'no validation' if n_val == 0 else 'no training'} samples")
    if shuffle:
        order = _rng(rng).permutation(n)
        x, t = x[order], t[order]
    return (x[n_val:], t[n_val:]), (x[:n_val], t[:n_val])


def _rng(rng):
    if rng is None:
        return np.random
    if isinstance(rng, (int, np.integer)):
        return np.random.default_rng(rng)
    return rng


# ----------------------------------------------------------------------------- shared helpers

class _HashingWriter:
    """A binary file wrapper that hashes what passes through it."""

    def __init__(self, out, algorithm="md5"):
        self.out, self.hash = out, hashlib.new(algorithm)

    def write(self, data):
        self.hash.update(data)
        return self.out.write(data)


def _md5_of_file(f):
    digest = hashlib.md5()
    for block in iter(lambda: f.read(1 << 20), b""):
        digest.update(block)
    f.seek(0)
    return digest.hexdigest()


def _cache_dir(name, env):
    """``$<env>`` if set, else ``$XDG_CACHE_HOME/cnncore/<name>`` (``~/.cache/...``)."""
    value = os.environ.get(env)
    if value:
        return Path(value).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return Path(cache).expanduser() / "cnncore" / name


def _download_verified(file_name, mirrors, md5, target, max_bytes, verbose):
    """Fetch ``file_name`` from the first mirror that gives bytes with the published ``md5`` and
    write them atomically to ``target``. Returns the list of failures (empty on success)."""
    def store(url):
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(target) as out:   # removed again unless the body succeeds
            writer = _HashingWriter(out)
            _fetch(url, writer, max_bytes=max_bytes)
            if writer.hash.hexdigest() != md5:
                raise ValueError(f"md5 {writer.hash.hexdigest()} differs from the published {md5}")

    return _try_mirrors(file_name, mirrors, store, verbose)


def _one_hot(labels, classes):
    one_hot = np.zeros((labels.size, classes))
    one_hot[np.arange(labels.size), labels] = 1
    return one_hot


def _finish(images, labels, normalize, flatten, one_hot_label, sample_shape, classes):
    """The load_mnist conventions: float32 / 255 or uint8 copies, flat or per-sample shape, labels
    uint8 or float64 one-hot."""
    if normalize:
        out = images.astype(np.float32)
        out /= 255.0
    else:
        out = images.copy()
    out = out.reshape(len(out), -1) if flatten else out.reshape(len(out), *sample_shape)
    labels = _one_hot(labels, classes) if one_hot_label else labels.copy()
    return out, labels


def _check_labels(labels, classes, shown):
    if labels.size and labels.max() >= classes:
        bad = int(np.argmax(labels >= classes))
        raise ValueError(f"{shown}: label {labels[bad]} at index {bad} is outside the {classes} "
                         f"classes 0..{classes - 1}")


# ----------------------------------------------------------------------------- Fashion-MNIST

#: Fashion-MNIST's class names, by label.
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                         "Sneaker", "Bag", "Ankle boot")
#: Where :func:`load_fashion_mnist` downloads from (the dataset's own hosts).
FASHION_MNIST_MIRRORS = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
)
#: MD5 of the published ``.gz`` files (zalandoresearch/fashion-mnist's README; torchvision's
#: ``FashionMNIST.resources`` lists the same).
FASHION_MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}


def _read_idx_gz(file_path, magic, sample_shape, max_count, md5):
    """A uint8 idx array from a .gz file: header magic and per-sample shape checked, at most
    ``max_count`` samples (the published file's count), decompressed with that bound. When the
    header declares exactly the published count, the .gz must have the published ``md5``."""
    shown = str(file_path)
    size = 4 + 4 * (1 + len(sample_shape)) + max_count * int(np.prod(sample_shape, dtype=np.int64))
    with open_regular_file(file_path) as f:
        raw_md5 = _md5_of_file(f)
        try:
            with gzip.GzipFile(fileobj=f, mode="rb") as stream:
                data = stream.read(size + 1)
        except (OSError, EOFError, zlib.error) as exc:
            raise ValueError(f"{shown}: corrupted or truncated gzip file ({exc})") from None
    if len(data) > size:
        raise ValueError(f"{shown}: decompresses to more than the {size} bytes the published "
                         f"file has: not this dataset's file")
    if len(data) >= 8 and int.from_bytes(data[4:8], "big") > max_count:
        raise ValueError(f"{shown}: declares {int.from_bytes(data[4:8], 'big')} samples, more "
                         f"than the {max_count} of the published file: not this dataset's file")
    array = parse_idx(data, shown)
    if int.from_bytes(data[:4], "big") != magic or array.shape[1:] != tuple(sample_shape):
        raise ValueError(f"{shown}: idx header says magic {int.from_bytes(data[:4], 'big')} shape "
                         f"{array.shape}, expected magic {magic} and samples of shape "
                         f"{tuple(sample_shape)} (is this the right file?)")
    if len(array) == max_count and raw_md5 != md5:
        raise ValueError(f"{shown}: has the published file's size but md5 {raw_md5}, expected "
                         f"{md5}: the file is corrupted or a different dataset")
    return array


def load_fashion_mnist(normalize=True, flatten=True, one_hot_label=False, path=None, *,
                       download=True):
    """Fashion-MNIST (Zalando's 28x28 clothing images, 10 classes) like :func:`load_mnist`.

    The four files have MNIST's names and idx ``.gz`` format; they are looked for in ``path``, else
    ``$CNNCORE_FASHION_MNIST_DATA``, else ``~/.cache/cnncore/fashion-mnist`` (where missing files are
    downloaded, each verified against :data:`FASHION_MNIST_MD5` and written atomically, unless
    ``download=False``). Every file's idx header, length and labels (0..9) are checked; a file that
    holds the published number of samples must also have the published MD5. Smaller files in the
    same format (a subset) are accepted. Class names: :data:`FASHION_MNIST_CLASSES`.
    Returns ``((x_train, t_train), (x_test, t_test))``, fresh writable arrays.
    """
    directory = Path(path).expanduser() if path is not None else \
        _cache_dir("fashion-mnist", "CNNCORE_FASHION_MNIST_DATA")
    missing = [name for name in key_file.values() if not (directory / name).exists()]
    if missing and download and path is None:
        failed = {}
        for name in missing:
            errors = _download_verified(name, FASHION_MNIST_MIRRORS, FASHION_MNIST_MD5[name],
                                        directory / name, 32 * 2**20, verbose=True)
            if errors:
                failed[name] = errors
        missing = list(failed)
    if missing:
        raise FileNotFoundError(
            f"Fashion-MNIST files not found: {', '.join(missing)}.\nPut the four files\n  "
            + "\n  ".join(key_file.values()) + f"\nfrom https://github.com/zalandoresearch/"
            f"fashion-mnist (data/fashion) into {directory}\n(or pass path=... / set "
            f"$CNNCORE_FASHION_MNIST_DATA)")
    arrays = {}
    for key, name in key_file.items():
        is_img = key.endswith("img")
        count = train_num if key.startswith("train") else test_num
        arrays[key] = _read_idx_gz(directory / name, 2051 if is_img else 2049,
                                   (28, 28) if is_img else (), count, FASHION_MNIST_MD5[name])
    out = []
    for split in ("train", "test"):
        images, labels = arrays[split + "_img"], arrays[split + "_label"]
        shown = directory / key_file[split + "_label"]
        if len(images) != len(labels) or len(images) == 0:
            raise ValueError(f"{shown}: {len(labels)} labels for {len(images)} images in "
                             f"{key_file[split + '_img']} (need the same number, at least one)")
        _check_labels(labels, 10, shown)
        out.append(_finish(images, labels, normalize, flatten, one_hot_label, img_dim, 10))
    return tuple(out)


# ----------------------------------------------------------------------------- CIFAR-10

#: CIFAR-10's class names, by label (as in ``batches.meta.txt``).
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                   "truck")
#: The binary distribution: archive name, URL directory, the MD5 published on the dataset's page
#: (https://www.cs.toronto.edu/~kriz/cifar.html) and its size.
CIFAR10_ARCHIVE = "cifar-10-binary.tar.gz"
CIFAR10_MIRRORS = ("https://www.cs.toronto.edu/~kriz/",)
CIFAR10_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"
CIFAR10_ARCHIVE_BYTES = 170052171
CIFAR10_DIR = "cifar-10-batches-bin"
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR10_TEST_FILES = ("test_batch.bin",)
_CIFAR_RECORD = 1 + 3 * 32 * 32   # one label byte, then 1024 red, 1024 green, 1024 blue bytes
_CIFAR_BATCH = 10000              # records in each published batch file
_cifar_memo = {}


def _parse_cifar_batch(data, shown):
    """(images (N, 3, 32, 32) uint8, labels (N,) uint8) from a data_batch_N.bin's bytes."""
    if len(data) == 0 or len(data) % _CIFAR_RECORD:
        raise ValueError(f"{shown}: {len(data)} bytes is not a whole number of {_CIFAR_RECORD}-byte "
                         f"CIFAR-10 records (1 label byte + 3072 pixel bytes): truncated or not "
                         f"a CIFAR-10 binary batch")
    if len(data) > _CIFAR_BATCH * _CIFAR_RECORD:
        raise ValueError(f"{shown}: {len(data) // _CIFAR_RECORD} records, more than the "
                         f"{_CIFAR_BATCH} of a CIFAR-10 batch file")
    records = np.frombuffer(data, np.uint8).reshape(-1, _CIFAR_RECORD)
    labels = records[:, 0]
    _check_labels(labels, 10, shown)
    return records[:, 1:].reshape(-1, 3, 32, 32), labels


def _cifar_from_archive(archive):
    """The six batch files' bytes from the verified binary archive, read as a stream: only regular
    members with the expected names are read, nothing is extracted."""
    wanted = {f"{CIFAR10_DIR}/{name}": name for name in CIFAR10_TRAIN_FILES + CIFAR10_TEST_FILES}
    found = {}
    with open_regular_file(archive) as f:
        md5 = _md5_of_file(f)
        if md5 != CIFAR10_MD5:
            raise ValueError(f"{archive}: md5 {md5} differs from the published {CIFAR10_MD5}: the "
                             f"archive is corrupted, truncated or not {CIFAR10_ARCHIVE}")
        with tarfile.open(fileobj=f, mode="r|gz") as tar:
            for member in tar:
                name = wanted.get(member.name)
                if name is None or not member.isfile():
                    continue
                if member.size != _CIFAR_BATCH * _CIFAR_RECORD:
                    raise ValueError(f"{archive}: member {member.name} has {member.size} bytes, "
                                     f"expected {_CIFAR_BATCH * _CIFAR_RECORD}")
                found[name] = tar.extractfile(member).read()
    missing = sorted(set(wanted.values()) - set(found))
    if missing:
        raise ValueError(f"{archive}: members missing: {', '.join(missing)}")
    return found


def _cifar_files(directory):
    """Where the batch files are: ``directory/cifar-10-batches-bin/``, else ``directory`` itself;
    None when neither holds them all."""
    names = CIFAR10_TRAIN_FILES + CIFAR10_TEST_FILES
    for place in (directory / CIFAR10_DIR, directory):
        if all((place / name).exists() for name in names):
            return place
    return None


def _read_cifar_file(file_path, shown):
    with open_regular_file(file_path) as f:
        data = f.read(_CIFAR_BATCH * _CIFAR_RECORD + 1)
    return _parse_cifar_batch(data, shown)


def _check_meta(place):
    """batches.meta.txt, when present, must list the ten class names (one a line)."""
    meta = place / "batches.meta.txt"
    if not meta.exists():
        return
    with open_regular_file(meta) as f:
        names = f.read(4096).decode("ascii", "replace").split()
    if tuple(names) != CIFAR10_CLASSES:
        raise ValueError(f"{meta}: lists classes {names[:12]}, expected {list(CIFAR10_CLASSES)}")


#: The Python distribution's extracted directory and the MD5 of each batch pickle (torchvision's
#: ``CIFAR10.train_list`` / ``test_list``), keyed by the binary batch each stands for.
CIFAR10_PY_DIR = "cifar-10-batches-py"
CIFAR10_PY_MD5 = {
    "data_batch_1.bin": ("data_batch_1", "c99cafc152244af753f735de768cd75f"),
    "data_batch_2.bin": ("data_batch_2", "d4bba439e000b95fd0a9bffe97cbabec"),
    "data_batch_3.bin": ("data_batch_3", "54ebc095f3ab1f0389bbae665268c751"),
    "data_batch_4.bin": ("data_batch_4", "634d18415352ddfa80567beed471001a"),
    "data_batch_5.bin": ("data_batch_5", "482c414d41f54cd18b22e5b47cb7c3cb"),
    "test_batch.bin": ("test_batch", "40351d587109b95175f43aff81a1287e"),
}
_CIFAR_PY_MAX_BYTES = 32 * 2**20   # a published batch pickle is about 31 MB


def _read_cifar_pickle(file_path, md5):
    """(images, labels) from one batch of the Python distribution, without running its code: the
    unpickler only builds NumPy arrays and plain containers (cnncore._io's allow-list), and the
    result must be ``{'data': uint8 (N, 3072), 'labels': N ints in 0..9, ...}``. A batch of the
    published 10000 images must have the published ``md5``."""
    from ._io import _ArrayUnpickler, _RefusedGlobal

    shown = str(file_path)
    with open_regular_file(file_path) as f:
        data = f.read(_CIFAR_PY_MAX_BYTES + 1)
    if len(data) > _CIFAR_PY_MAX_BYTES:
        raise ValueError(f"{shown}: larger than any CIFAR-10 batch pickle "
                         f"({_CIFAR_PY_MAX_BYTES} bytes)")
    try:
        batch = _ArrayUnpickler(io.BytesIO(data), encoding="latin1").load()
    except _RefusedGlobal as exc:
        raise ValueError(f"{shown}: refused to unpickle, not a CIFAR-10 batch: {exc}") from None
    except Exception as exc:   # whatever damage the pickle machine reports
        raise ValueError(f"{shown}: corrupted or truncated pickle ({type(exc).__name__}: "
                         f"{exc})") from None
    if isinstance(batch, dict):
        batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    images = batch.get("data") if isinstance(batch, dict) else None
    labels = batch.get("labels") if isinstance(batch, dict) else None
    if not (isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.ndim == 2
            and images.shape[1] == 3072 and isinstance(labels, list)
            and len(labels) == len(images) and 0 < len(images) <= _CIFAR_BATCH
            and all(type(v) is int for v in labels)):
        raise ValueError(f"{shown}: expected a CIFAR-10 batch: a dict with 'data' (uint8, N x "
                         f"3072, N <= {_CIFAR_BATCH}) and 'labels' (N ints)")
    huge = next((i for i, v in enumerate(labels) if not -2**63 <= v < 2**63), None)   # not int64
    if huge is not None:
        raise ValueError(f"{shown}: label {labels[huge]} at index {huge} is outside the 10 classes "
                         f"0..9")
    labels = np.array(labels, dtype=np.int64)
    if labels.min() < 0:
        raise ValueError(f"{shown}: label {labels.min()} is outside the 10 classes 0..9")
    _check_labels(labels, 10, shown)
    digest = hashlib.md5(data).hexdigest()
    if len(images) == _CIFAR_BATCH and digest != md5:
        raise ValueError(f"{shown}: has the published batch's size but md5 {digest}, expected "
                         f"{md5}: corrupted or altered")
    return images.reshape(-1, 3, 32, 32), labels.astype(np.uint8)


def load_cifar10(normalize=True, flatten=False, one_hot_label=False, path=None, *, download=True):
    """CIFAR-10 (32x32 colour images, 10 classes) from the binary distribution (or the Python one).

    Looked for in ``path``, else ``$CNNCORE_CIFAR10_DATA``, else ``~/.cache/cnncore/cifar10``:
    the extracted ``cifar-10-batches-bin/`` (or its files directly in the directory), else an
    extracted ``cifar-10-batches-py/`` (what torchvision and Keras leave behind; read by
    :func:`_read_cifar_pickle`, which runs no code from the files and checks each published
    batch's MD5), else the archive ``cifar-10-binary.tar.gz``, which must have the published MD5
    (:data:`CIFAR10_MD5`) and is read without extracting. A missing archive is downloaded into the
    cache (verified, atomically) unless ``download=False``. Each batch file must hold whole records
    of 1 label byte (0..9) and 3072 pixel bytes (red, green, blue planes, row-major); ``batches.meta.txt``, if
    present, must list the ten classes (:data:`CIFAR10_CLASSES`).

    Images are ``(N, 3, 32, 32)`` (``flatten=True``: ``(N, 3072)``), float32 in [0, 1] when
    ``normalize`` else uint8; labels uint8 ``(N,)`` or float64 one-hot ``(N, 10)``.
    Returns ``((x_train, t_train), (x_test, t_test))``, fresh writable arrays.
    """
    directory = Path(path).expanduser() if path is not None else \
        _cache_dir("cifar10", "CNNCORE_CIFAR10_DATA")
    place = _cifar_files(directory)
    python_dir = directory / CIFAR10_PY_DIR
    if place is None and not all((python_dir / name).exists()
                                 for name, _ in CIFAR10_PY_MD5.values()):
        python_dir = None
    archive = directory / CIFAR10_ARCHIVE
    if place is None and python_dir is None and not archive.exists() and download and \
            path is None:
        errors = _download_verified(CIFAR10_ARCHIVE, CIFAR10_MIRRORS, CIFAR10_MD5, archive,
                                    CIFAR10_ARCHIVE_BYTES + 1, verbose=True)
        if errors:
            raise FileNotFoundError(_cifar_missing(directory) + "\nDownload attempts:\n  "
                                    + "\n  ".join(errors))
    if place is not None:
        _check_meta(place)
        parts = {name: _read_cifar_file(place / name, str(place / name))
                 for name in CIFAR10_TRAIN_FILES + CIFAR10_TEST_FILES}
    elif python_dir is not None:
        parts = {name: _read_cifar_pickle(python_dir / py_name, md5)
                 for name, (py_name, md5) in CIFAR10_PY_MD5.items()}
    elif archive.exists():
        stat = os.stat(archive)
        stamp = (str(archive.resolve()), stat.st_size, stat.st_mtime_ns)
        if _cifar_memo.get("stamp") != stamp:
            _cifar_memo.clear()
            _cifar_memo.update(stamp=stamp, data=_cifar_from_archive(archive))
        parts = {name: _parse_cifar_batch(data, f"{archive}:{name}")
                 for name, data in _cifar_memo["data"].items()}
    else:
        raise FileNotFoundError(_cifar_missing(directory))
    out = []
    for names in (CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILES):
        images = np.concatenate([parts[name][0] for name in names])
        labels = np.concatenate([parts[name][1] for name in names])
        out.append(_finish(images, labels, normalize, flatten, one_hot_label, (3, 32, 32), 10))
    return tuple(out)


def _cifar_missing(directory):
    return (f"CIFAR-10 not found in {directory}. Put either {CIFAR10_ARCHIVE} (the binary version "
            f"from https://www.cs.toronto.edu/~kriz/cifar.html) or its extracted {CIFAR10_DIR}/ "
            f"({', '.join(CIFAR10_TRAIN_FILES + CIFAR10_TEST_FILES)}, batches.meta.txt) there, or "
            f"the Python version's extracted {CIFAR10_PY_DIR}/ (or pass path=... / set "
            f"$CNNCORE_CIFAR10_DATA)")


#: Class names of every dataset the loaders know, by the CLI's dataset name.
CLASS_NAMES = {
    "mnist": tuple(str(i) for i in range(10)),
    "fashion-mnist": FASHION_MNIST_CLASSES,
    "cifar10": CIFAR10_CLASSES,
}
