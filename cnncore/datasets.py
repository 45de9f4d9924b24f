"""MNIST from the four standard idx ``.gz`` files, and a mini-batch iterator.

    from cnncore.datasets import load_mnist       # instead of: from dataset.mnist import load_mnist
    (x_train, t_train), (x_test, t_test) = load_mnist(flatten=False)

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
import os
import sys
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
    env = os.environ.get("CNNCORE_DATA")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return Path(cache).expanduser() / "cnncore" / "mnist"


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
    size = int(np.prod(shape, dtype=np.int64))
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
                raise OSError(f"response larger than {max_bytes} bytes: not an MNIST file")
            out.write(chunk)
            if total and sys.stdout.isatty():
                print(f"\r  {done / 1e6:.1f} / {total / 1e6:.1f} MB ({100 * done // total}%)",
                      end="", flush=True)
    if total and sys.stdout.isatty():
        print()


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
        errors = []
        for base in mirrors:
            url = base.rstrip("/") + "/" + file_name
            if verbose:
                print(f"Downloading {file_name} from {url} ...", flush=True)
            try:
                buffer = io.BytesIO()  # at most ~10 MB; checked before anything is written
                _fetch(url, buffer)
                buffer.seek(0)
                _verified(_decompress(buffer, key, url), key, url)
                directory.mkdir(parents=True, exist_ok=True)
                with atomic_write(target) as out:
                    out.write(buffer.getvalue())
            except (OSError, ValueError, http.client.HTTPException) as exc:
                errors.append(f"{url}: {exc}")
                if verbose:
                    print(f"  failed: {exc}", flush=True)
                continue
            if verbose:
                print("Done", flush=True)
            break
        else:
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
    one_hot = np.zeros((labels.size, 10))
    one_hot[np.arange(labels.size), labels] = 1
    return one_hot


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
