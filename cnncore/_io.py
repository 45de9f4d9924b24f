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
- **Bounded reads.** Only regular files are read (a directory raises IsADirectoryError, a device,
  FIFO or socket ValueError). Each ``.npz`` member's header (dtype, shape) is checked before its
  data is read, so a member declaring a huge shape or inflating to gigabytes is refused without
  taking the memory; a pickle is read only up to the largest size the expected arrays could take.
- **Atomic saves.** Files are written to a temporary file in the same directory, flushed and fsynced,
  then renamed over the target, so an interrupted save leaves the previous file intact.

Pickles written under NumPy 2 refer to ``numpy._core`` and cannot be unpickled by NumPy 1.x
(numpy/numpy#28340); ``.npz`` files have no such problem. Pickles written under NumPy 1.x (the
textbook's shipped files) load fine.
"""
import contextlib
import errno
import io
import json
import math
import os
import pickle
import stat
import tempfile
import zipfile
import zlib

import numpy as np

_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip with members / an empty zip

# The member of a network file holding its architecture: UTF-8 JSON bytes as a uint8 array.
ARCHITECTURE = "__architecture__"
_ARCHITECTURE_MAX_BYTES = 1 << 20
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
    removed and ``path`` is left as it was. A ``path`` (or its link target) that is a device, FIFO
    or socket is refused first: the rename would replace it (run as root, /dev/null by a file).
    """
    path = os.fsdecode(path)   # (bytes too: the temporary name is built as str)
    with contextlib.suppress(OSError):
        mode = os.stat(path).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):   # (a directory: os.replace refuses)
            raise ValueError(f"{path}: not a regular file (a device, FIFO or socket); refusing "
                             f"to replace it")
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


def open_regular_file(path):
    """Open ``path`` for binary reading, refusing anything but a regular file (after symlinks).

    A directory raises IsADirectoryError; a device, FIFO or socket raises ValueError naming the path
    (``/dev/zero`` would never end). O_NONBLOCK keeps the open of a FIFO from waiting for a writer.
    """
    path = os.fspath(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
        if not stat.S_ISREG(mode):
            raise ValueError(f"{path}: not a regular file (a device, FIFO or socket); refusing "
                             f"to read it")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def save_params_file(params, path, format=None, *, architecture=None):
    """Save a dict ``{name: array}`` to ``path``, atomically.

    Parameters
    ----------
    params : mapping of str to float arrays (a network's ``params``).
    path : file name; used exactly as given (no suffix is added).
    format : ``None`` or ``"npz"`` writes ``np.savez`` content (no pickle inside);
        ``"pickle"`` writes the textbook's ``params.pkl`` format: a pickled plain dict of plain
        ndarrays (default protocol), loadable by the textbook's ``load_params``.
    architecture : (keyword, .npz only) a JSON-able dict describing the network, stored as data in
        the member ``__architecture__`` (read back by :func:`load_architecture`).
    """
    if format not in (None, "npz", "pickle"):
        raise ValueError(f"format must be None, 'npz' or 'pickle', got {format!r}")
    if architecture is not None and format == "pickle":
        raise ValueError("an architecture is saved in .npz files only, not in pickles")
    arrays = {}
    for key, value in params.items():
        if not isinstance(key, str):
            raise TypeError(f"parameter names must be strings, got {key!r}")
        array = np.asarray(value)  # plain ndarray, so pickles stay loadable by the textbook
        if array.dtype.kind != "f" or array.dtype.itemsize > 8:
            raise TypeError(f"parameter {key!r} has dtype {array.dtype}; expected float16, "
                            f"float32 or float64")
        arrays[key] = array
    if architecture is not None:
        text = json.dumps(architecture, allow_nan=False).encode("utf-8")
        arrays[ARCHITECTURE] = np.frombuffer(text, np.uint8)
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


def load_params_file(path, expected, allow_pickle=False, *, optional=None):
    """Read a parameter file written by :func:`save_params_file` or by the textbook.

    Parameters
    ----------
    path : an ``.npz`` file, or (with ``allow_pickle=True``) a textbook pickle; the format is
        detected from the content.
    expected : dict ``{name: shape}`` (a shape tuple, or anything with ``.shape``); the file must
        hold exactly these names with exactly these shapes. ``None`` skips the name/shape checks.
    allow_pickle : read pickles (restricted to dicts of NumPy arrays). Default False.
    optional : (keyword) dict ``{name: shape}`` of names the file may hold but need not (a
        network's BatchNorm running statistics, absent from older files); checked like expected.

    Returns
    -------
    dict ``{name: ndarray}`` in the order of ``expected``: fresh, writable, C-contiguous arrays with
    the file's float dtype.

    Raises
    ------
    FileNotFoundError if ``path`` does not exist, IsADirectoryError if it is a directory;
    ValueError naming the file if it is not a regular file, corrupted, truncated, a refused pickle,
    or does not match ``expected``.
    """
    path = os.fspath(path)
    if expected is not None:
        expected = {key: tuple(getattr(want, "shape", want)) for key, want in expected.items()}
        expected.update({key: tuple(getattr(want, "shape", want))
                         for key, want in (optional or {}).items()})
    required = None if expected is None else [k for k in expected if k not in (optional or {})]
    with open_regular_file(path) as f:
        head = f.read(8)
        f.seek(0)
        if head.startswith(_ZIP_MAGIC):
            loaded = _read_npz(f, path, expected, required)
        elif head.startswith(_NPY_MAGIC):
            raise ValueError(f"{path}: is a single-array .npy file, not a parameter file "
                             f"(.npz holding one array per parameter name)")
        elif not head:
            raise ValueError(f"{path}: file is empty")
        elif not allow_pickle:
            kind = "a pickle file" if head[:1] == b"\x80" else "not an .npz archive"
            raise ValueError(
                f"{path}: is {kind}; refusing to unpickle it. If it is a textbook params.pkl from "
                f"a source you trust, pass allow_pickle=True (pickles can run code), or convert "
                f"it once to .npz"
            )
        else:
            loaded = _read_pickle(f, path, _pickle_size_limit(expected))
    return _checked(path, loaded, expected, required)


def load_architecture(path):
    """The architecture dict a network file was saved with (see save_params_file), read as JSON:
    data only, nothing in the file runs. ValueError naming the file when there is none."""
    path = os.fspath(path)
    with open_regular_file(path) as f:
        if not f.read(4).startswith(_ZIP_MAGIC):
            raise ValueError(f"{path}: not an .npz network file (no architecture inside)")
        f.seek(0)
        try:
            with zipfile.ZipFile(f) as archive:
                members = _member_names(archive, path)
                if ARCHITECTURE not in members:
                    raise ValueError(f"{path}: holds parameters but no architecture (it was "
                                     f"written by save_params, not save); build the network "
                                     f"and use load_params")
                with archive.open(members[ARCHITECTURE]) as member:
                    array = _read_array(member, members[ARCHITECTURE], path, archive,
                                        _ARCHITECTURE_MAX_BYTES)
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, KeyError, OverflowError,
                NotImplementedError, RuntimeError) as exc:
            raise ValueError(f"{path}: corrupted or truncated .npz file ({exc})") from None
    if array.dtype != np.uint8 or array.ndim != 1:
        raise ValueError(f"{path}: the architecture member must be uint8 bytes, got "
                         f"{array.dtype} {array.shape}")
    try:
        architecture = json.loads(array.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:   # (nesting too deep)
        raise ValueError(f"{path}: the architecture is not valid JSON ({exc})") from None
    if not isinstance(architecture, dict):
        raise ValueError(f"{path}: the architecture must be a JSON object, got "
                         f"{type(architecture).__name__}")
    return architecture


def _member_names(archive, path):
    """{key: member name}; a key stored twice (a repeated member, or 'W1' beside 'W1.npy') is
    refused, since reading it would silently take one of the two."""
    members = {}
    for name in archive.namelist():
        key = name[:-4] if name.endswith(".npy") else name
        if key in members:
            raise ValueError(f"{path}: the archive holds {key!r} twice; refusing an ambiguous file")
        members[key] = name
    return members


def _read_npz(f, path, expected, required):
    """{name: array} of an .npz; names, dtypes and shapes are checked before any data is read."""
    try:
        with zipfile.ZipFile(f) as archive:
            members = _member_names(archive, path)
            members.pop(ARCHITECTURE, None)
            if expected is not None:
                _check_names(path, list(members), expected, required)
            return {key: _read_member(archive, name, key, path, expected)
                    for key, name in members.items()}
    # zipfile raises NotImplementedError for unknown compression and RuntimeError for encryption
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, KeyError, OverflowError,
            NotImplementedError, RuntimeError) as exc:
        raise ValueError(f"{path}: corrupted or truncated .npz file ({exc})") from None


def _read_member(archive, name, key, path, expected):
    with archive.open(name) as member:
        return _read_array(member, name, path, archive, None, key, expected)


def _read_array(member, name, path, archive, max_bytes, key=None, expected=None):
    """One .npy member, its header checked (dtype and shape, or a byte limit) before its data."""
    try:
        version = np.lib.format.read_magic(member)
        if version == (1, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(member)
        elif version == (2, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(member)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
    except ValueError as exc:
        raise ValueError(f"{path}: member {name!r} is not an .npy array readable without "
                         f"pickle ({exc})") from None
    if max_bytes is None:
        _check_entry(path, key, shape, dtype, expected)
    elif dtype.hasobject or math.prod(shape) * dtype.itemsize > max_bytes:
        raise ValueError(f"{path}: member {name!r} is larger than {max_bytes} bytes or not "
                         f"plain data")
    nbytes = math.prod(shape) * dtype.itemsize
    size = archive.getinfo(name).file_size - member.tell()
    if nbytes != size:
        raise ValueError(f"{path}: corrupted or truncated .npz file (member {name!r} holds "
                         f"{size} data bytes, its header declares {shape} {dtype})")
    data = member.read(nbytes)
    if len(data) != nbytes or member.read(1):  # the last read also checks the CRC
        raise ValueError(f"{path}: corrupted or truncated .npz file (member {name!r})")
    return np.frombuffer(data, dtype).reshape(shape, order="F" if fortran_order else "C")


def _pickle_size_limit(expected):
    """The most bytes a pickle of the expected arrays can take, or None (no expectation).

    float64 data is at most 8 bytes an element, which protocol 0 can escape to 6 times as many (each
    zero byte becomes ``\\u0000``); 1 KiB a name and 64 KiB for the rest are far more than needed.
    """
    if expected is None:
        return None
    elements = sum(math.prod(shape) for shape in expected.values())
    return 6 * 8 * elements + 1024 * len(expected) + 65536


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


def _read_pickle(f, path, limit):
    data = f.read() if limit is None else f.read(limit + 1)
    if limit is not None and len(data) > limit:
        raise ValueError(f"{path}: the pickle is larger ({limit} bytes read) than any file "
                         f"holding the expected parameters could be")
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


def _check_names(path, names, expected, required=None):
    missing = [k for k in (expected if required is None else required) if k not in names]
    unexpected = [k for k in names if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {missing}")
        if unexpected:
            parts.append(f"unexpected {unexpected}")
        raise ValueError(f"{path}: parameter names do not match the network: "
                         f"{'; '.join(parts)} (the file holds {names})")


def _check_entry(path, key, shape, dtype, expected):
    if dtype.kind != "f" or dtype.itemsize > 8:
        raise ValueError(f"{path}: parameter {key!r} has dtype {dtype}; expected float16, float32 "
                         f"or float64")
    if expected is not None and shape != expected[key]:
        raise ValueError(f"{path}: parameter {key!r} has shape {shape}, the network expects "
                         f"{expected[key]}")


def _checked(path, loaded, expected, required=None):
    for name, value in loaded.items():
        if not isinstance(name, str) or not isinstance(value, np.ndarray):
            raise ValueError(f"{path}: entry {name!r} is a {type(value).__name__}, expected an "
                             f"array under a string name")
        _check_entry(path, name, value.shape, value.dtype, None)
    if expected is not None:
        _check_names(path, list(loaded), expected, required)
        for key in expected:
            if key in loaded:
                _check_entry(path, key, loaded[key].shape, loaded[key].dtype, expected)
    order = list(loaded) if expected is None else [key for key in expected if key in loaded]
    return {key: np.array(loaded[key], order="C", copy=True) for key in order}
