"""Parameter files: ``.npz`` by default, the textbook's pickle only on explicit opt-in.

    save_params_file(network.params, "params.npz")                  # the np.savez format, no pickle
    save_params_file(network.params, "params.pkl", format="pickle")  # the textbook's format
    params = load_params_file("params.npz", {k: v.shape for k, v in network.params.items()})

Policies (the networks' ``save_params``/``load_params`` call these two functions):

- **Format by content, not by name.** ``format=None`` writes ``.npz`` content under exactly the path
  given, even ``params.pkl`` (the textbook's default name), so ``save_params()`` followed by
  ``load_params()`` works without pickle. Loading looks at the first bytes: a zip archive is read
  as ``.npz`` (``allow_pickle=False``); anything else is treated as a pickle and refused unless
  ``allow_pickle=True``.
- **Pickle opt-in is still restricted.** With ``allow_pickle=True`` the unpickler only rebuilds what
  the textbook's files contain (dicts of NumPy arrays); any other global named in the file is
  refused before it runs. Only open pickles from sources you trust.
- **Strict keys and shapes.** Every expected key must be present, no other key may be, each shape
  must match exactly and each dtype must be a real float (float16/32/64). Arrays come back as fresh,
  writable, C-contiguous copies in the dtype stored in the file.
- **Atomic saves.** Files are written to a temporary file in the same directory, flushed and fsynced,
  then renamed over the target, so an interrupted save leaves the previous file intact.

Pickles written under NumPy 2 refer to ``numpy._core`` and cannot be unpickled by NumPy 1.x
(numpy/numpy#28340); ``.npz`` files have no such problem. Pickles written under NumPy 1.x (the
textbook's shipped files) load fine.
"""
import contextlib
import io
import os
import pickle
import tempfile
import zipfile

import numpy as np

_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip with members / an empty zip
_NPY_MAGIC = b"\x93NUMPY"

# What a pickled {name: ndarray} dict may reference (NumPy 1.x, 2.x, protocols 2-5).
_PICKLE_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("collections", "OrderedDict"),
    ("_codecs", "encode"),  # how protocols 0-2 store bytes
}


@contextlib.contextmanager
def atomic_write(path):
    """Open a temporary binary file beside ``path``; on success it replaces ``path`` atomically.

    The data is flushed and fsynced before ``os.replace``; if the body raises, the temporary file is
    removed and ``path`` is left as it was.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                               dir=directory)
    try:
        _set_mode(fd, path)
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_directory(directory)


def _set_mode(fd, path):
    # mkstemp creates 0600 files; give the new file the old one's mode, else what open() would give.
    try:
        mode = os.stat(path).st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    with contextlib.suppress(OSError, AttributeError):  # no fchmod on Windows
        os.fchmod(fd, mode)


def _fsync_directory(directory):
    # Makes the rename itself durable; not possible on every platform (e.g. Windows), so best effort.
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def save_params_file(params, path, format=None):
    """Save a dict ``{name: array}`` to ``path``, atomically.

    Parameters
    ----------
    params : mapping of str to float arrays (a network's ``params``).
    path : file name; used exactly as given (no suffix is added).
    format : ``None`` or ``"npz"`` writes ``np.savez`` content (no pickle inside);
        ``"pickle"`` writes the textbook's ``params.pkl`` format: a pickled plain dict of plain
        ndarrays (default protocol), loadable by the textbook's ``load_params``.
    """
    if format not in (None, "npz", "pickle"):
        raise ValueError(f"format must be None, 'npz' or 'pickle', got {format!r}")
    arrays = {}
    for key, value in params.items():
        if not isinstance(key, str):
            raise TypeError(f"parameter names must be strings, got {key!r}")
        array = np.asarray(value)  # plain ndarray, so pickles stay loadable by the textbook
        if array.dtype.kind != "f" or array.dtype.itemsize > 8:
            raise TypeError(f"parameter {key!r} has dtype {array.dtype}; expected float16, "
                            f"float32 or float64")
        arrays[key] = array
    with atomic_write(path) as f:
        if format == "pickle":
            pickle.dump(arrays, f)
        else:
            # Positional *args of np.savez clash with names like "file"; write members ourselves.
            _write_npz(f, arrays)


def _write_npz(f, arrays):
    with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for key, array in arrays.items():
            with archive.open(key + ".npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, array, allow_pickle=False)


def load_params_file(path, expected, allow_pickle=False):
    """Read a parameter file written by :func:`save_params_file` or by the textbook.

    Parameters
    ----------
    path : an ``.npz`` file, or (with ``allow_pickle=True``) a textbook pickle; the format is
        detected from the content.
    expected : dict ``{name: shape}`` (a shape tuple, or anything with ``.shape``); the file must
        hold exactly these names with exactly these shapes. ``None`` skips the name/shape checks.
    allow_pickle : read pickles (restricted to dicts of NumPy arrays). Default False.

    Returns
    -------
    dict ``{name: ndarray}`` in the order of ``expected``: fresh, writable, C-contiguous arrays with
    the file's float dtype.

    Raises
    ------
    FileNotFoundError if ``path`` does not exist; ValueError naming the file if it is corrupted,
    truncated, a refused pickle, or does not match ``expected``.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(_ZIP_MAGIC):
        loaded = _read_npz(path)
    elif head.startswith(_NPY_MAGIC):
        raise ValueError(f"{path}: is a single-array .npy file, not a parameter file "
                         f"(.npz holding one array per parameter name)")
    elif not head:
        raise ValueError(f"{path}: file is empty")
    elif not allow_pickle:
        kind = "a pickle file" if head[:1] == b"\x80" else "not an .npz archive"
        raise ValueError(
            f"{path}: is {kind}; refusing to unpickle it. If it is a textbook params.pkl from a "
            f"source you trust, pass allow_pickle=True (pickles can run code), or convert it "
            f"once to .npz"
        )
    else:
        loaded = _read_pickle(path)
    return _checked(path, loaded, expected)


def _read_npz(path):
    try:
        # our own handle: np.load(path) leaks it when the archive is unreadable
        with open(path, "rb") as f, np.load(f, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except ValueError as exc:  # object arrays need pickle, or a bad .npy header
        raise ValueError(f"{path}: cannot be read as .npz without pickle: {exc}") from None
    except (zipfile.BadZipFile, EOFError, OSError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: corrupted or truncated .npz file ({exc})") from None


class _RefusedGlobal(pickle.UnpicklingError):
    pass


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in _PICKLE_GLOBALS:
            raise _RefusedGlobal(
                f"the pickle references {module}.{name}, which is not part of a parameter file "
                f"(only dicts of NumPy arrays are loaded)"
            )
        return super().find_class(module, name)


def _read_pickle(path):
    with open(path, "rb") as f:
        data = f.read()
    try:
        loaded = _ArrayUnpickler(io.BytesIO(data)).load()
    except _RefusedGlobal as exc:
        raise ValueError(f"{path}: refused to unpickle: {exc}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError,
            IndexError, KeyError, MemoryError, OverflowError) as exc:
        reason = f"{type(exc).__name__}: {exc}"
        raise ValueError(f"{path}: corrupted or truncated pickle ({reason})") from None
    if not isinstance(loaded, dict):
        raise ValueError(f"{path}: the pickle holds a {type(loaded).__name__}, expected a dict "
                         f"{{name: array}}")
    return loaded


def _checked(path, loaded, expected):
    for name, value in loaded.items():
        if not isinstance(name, str) or not isinstance(value, np.ndarray):
            raise ValueError(f"{path}: entry {name!r} is a {type(value).__name__}, expected an "
                             f"array under a string name")
        if value.dtype.kind != "f" or value.dtype.itemsize > 8:
            raise ValueError(f"{path}: parameter {name!r} has dtype {value.dtype}; expected "
                             f"float16, float32 or float64")
    if expected is None:
        order = list(loaded)
    else:
        order = list(expected)
        missing = [k for k in order if k not in loaded]
        unexpected = [k for k in loaded if k not in expected]
        if missing or unexpected:
            parts = []
            if missing:
                parts.append(f"missing {missing}")
            if unexpected:
                parts.append(f"unexpected {unexpected}")
            raise ValueError(f"{path}: parameter names do not match the network: "
                             f"{'; '.join(parts)} (the file holds {list(loaded)})")
        for key in order:
            want = expected[key]
            want = tuple(getattr(want, "shape", want))
            if loaded[key].shape != want:
                raise ValueError(f"{path}: parameter {key!r} has shape {loaded[key].shape}, the "
                                 f"network expects {want}")
    return {key: np.array(loaded[key], order="C", copy=True) for key in order}
