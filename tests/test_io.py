"""save_params_file / load_params_file: formats, pickle refusal, strict checks, atomic saves."""
import os
import pickle

import numpy as np
import pytest

from cnncore import _io
from cnncore._io import load_params_file, save_params_file


@pytest.fixture
def params(rng):
    return {
        "W1": rng.standard_normal((4, 1, 3, 3)),
        "b1": np.zeros(4),
        "W2": rng.standard_normal((36, 5)).astype(np.float32),
        "b2": rng.standard_normal(5).astype(np.float16),
    }


def shapes(params):
    return {k: v.shape for k, v in params.items()}


def assert_same(loaded, params):
    assert list(loaded) == list(params)
    for key, value in params.items():
        assert loaded[key].dtype == value.dtype
        np.testing.assert_array_equal(loaded[key], value)
        assert loaded[key].flags.writeable and loaded[key].flags.c_contiguous
        assert loaded[key] is not value and type(loaded[key]) is np.ndarray


@pytest.mark.parametrize("name", ["params.npz", "params.pkl", "weights"])
def test_npz_round_trip(tmp_path, params, name):
    path = tmp_path / name
    save_params_file(params, path)
    assert sorted(os.listdir(tmp_path)) == [name]  # exact name, no suffix added, no temp left
    assert path.read_bytes()[:4] == b"PK\x03\x04"  # npz content even under a .pkl name
    with np.load(path, allow_pickle=False) as archive:  # readable by plain NumPy
        assert sorted(archive.files) == sorted(params)
    assert_same(load_params_file(path, shapes(params)), params)
    # expected given as arrays works too, and the order follows expected
    reordered = {k: params[k] for k in reversed(list(params))}
    assert list(load_params_file(path, reordered)) == list(reordered)


def test_pickle_round_trip_is_the_textbook_format(tmp_path, params):
    path = tmp_path / "params.pkl"
    save_params_file(params, path, format="pickle")
    with open(path, "rb") as f:  # what the textbook's load_params does
        raw = pickle.load(f)
    assert type(raw) is dict and list(raw) == list(params)
    assert all(type(v) is np.ndarray for v in raw.values())
    assert_same(load_params_file(path, shapes(params), allow_pickle=True), params)


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_reads_pickles_of_every_protocol(tmp_path, params, protocol):
    path = tmp_path / "params.pkl"
    path.write_bytes(pickle.dumps(params, protocol=protocol))
    assert_same(load_params_file(path, shapes(params), allow_pickle=True), params)


@pytest.mark.parametrize("protocol", [2, 3])
def test_reads_pickles_written_under_numpy_1(tmp_path, params, protocol):
    """The textbook's files (protocols 2-4 under NumPy 1.x) name numpy.core, not numpy._core."""
    data = pickle.dumps(params, protocol=protocol)
    assert b"numpy._core.multiarray\n" in data  # protocols < 4 name globals as text lines
    path = tmp_path / "params.pkl"
    path.write_bytes(data.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n"))
    assert_same(load_params_file(path, shapes(params), allow_pickle=True), params)


class _Payload:
    """Unpickling this creates a file: proof that code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("extension", [".pkl", ".npz"])
def test_pickle_refused_without_opt_in_and_nothing_runs(tmp_path, extension):
    marker = tmp_path / "pwned"
    path = tmp_path / ("evil" + extension)
    path.write_bytes(pickle.dumps({"W1": _Payload(str(marker))}))
    with pytest.raises(ValueError, match=r"evil\.(pkl|npz).*refusing to unpickle.*allow_pickle"):
        load_params_file(path, {"W1": (1,)})
    assert not marker.exists()
    # even with the opt-in, only NumPy arrays may be rebuilt
    with pytest.raises(ValueError, match=r"evil.*builtins|evil.*io"):
        load_params_file(path, {"W1": (1,)}, allow_pickle=True)
    assert not marker.exists()


def test_object_array_in_npz_is_refused(tmp_path):
    path = tmp_path / "obj.npz"
    np.savez(path, W1=np.array([None, 1], dtype=object))
    with pytest.raises(ValueError, match="obj.npz"):
        load_params_file(path, {"W1": (2,)})


def test_mismatched_keys_and_shapes(tmp_path, params):
    path = tmp_path / "p.npz"
    save_params_file(params, path)
    expected = shapes(params)
    with pytest.raises(ValueError, match=r"p\.npz.*missing \['W3'\]"):
        load_params_file(path, {**expected, "W3": (5, 2)})
    fewer = dict(expected)
    del fewer["b2"]
    with pytest.raises(ValueError, match=r"unexpected \['b2'\]"):
        load_params_file(path, fewer)
    with pytest.raises(ValueError, match=r"'W2' has shape \(36, 5\), the network expects \(5, 36\)"):
        load_params_file(path, {**expected, "W2": (5, 36)})


def test_non_float_dtypes_refused(tmp_path):
    path = tmp_path / "ints.npz"
    np.savez(path, W1=np.arange(6).reshape(2, 3))
    with pytest.raises(ValueError, match="'W1' has dtype int64"):
        load_params_file(path, {"W1": (2, 3)})
    with pytest.raises(TypeError, match="'W1' has dtype"):
        save_params_file({"W1": np.ones(3, dtype=complex)}, tmp_path / "c.npz")


def test_truncated_and_garbage_files(tmp_path, params):
    path = tmp_path / "p.npz"
    save_params_file(params, path)
    data = path.read_bytes()
    for cut in (len(data) // 2, len(data) - 10, 30):
        path.write_bytes(data[:cut])
        with pytest.raises(ValueError, match=r"p\.npz: corrupted or truncated"):
            load_params_file(path, shapes(params))
    broken = bytearray(data)
    broken[200] ^= 0xFF  # inside the first member's data: CRC mismatch
    path.write_bytes(bytes(broken))
    with pytest.raises(ValueError, match=r"p\.npz"):
        load_params_file(path, shapes(params))

    pkl = tmp_path / "p.pkl"
    save_params_file(params, pkl, format="pickle")
    pkl.write_bytes(pkl.read_bytes()[:-40])
    with pytest.raises(ValueError, match=r"p\.pkl: corrupted or truncated pickle"):
        load_params_file(pkl, shapes(params), allow_pickle=True)

    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty.npz: file is empty"):
        load_params_file(empty, {})
    npy = tmp_path / "one.npy"
    np.save(npy, np.ones(3))
    with pytest.raises(ValueError, match="single-array .npy"):
        load_params_file(npy, {})
    with pytest.raises(FileNotFoundError):
        load_params_file(tmp_path / "nope.npz", {})


@pytest.mark.skipif(os.name == "nt", reason="POSIX permissions")
def test_saved_file_gets_normal_permissions(tmp_path, params):
    umask = os.umask(0o022)
    try:
        path = tmp_path / "params.npz"
        save_params_file(params, path)
        assert path.stat().st_mode & 0o777 == 0o644  # as open() would create it
        path.chmod(0o600)
        save_params_file(params, path)
        assert path.stat().st_mode & 0o777 == 0o600  # an existing file keeps its mode
    finally:
        os.umask(umask)


def test_interrupted_save_keeps_the_old_file(tmp_path, params, monkeypatch):
    path = tmp_path / "params.npz"
    save_params_file(params, path)
    before = path.read_bytes()

    real_write_array = np.lib.format.write_array
    written = []

    def write_then_fail(fp, array, **kwargs):
        if written:  # the second member: part of the new file is already on disk
            raise KeyboardInterrupt
        written.append(1)
        real_write_array(fp, array, **kwargs)

    monkeypatch.setattr(np.lib.format, "write_array", write_then_fail)
    changed = {k: v + 1 for k, v in params.items()}
    with pytest.raises(KeyboardInterrupt):
        save_params_file(changed, path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["params.npz"]  # the temporary file was removed
    monkeypatch.undo()
    assert_same(load_params_file(path, shapes(params)), params)


def test_interrupted_pickle_save_keeps_the_old_file(tmp_path, params, monkeypatch):
    path = tmp_path / "params.pkl"
    save_params_file(params, path, format="pickle")
    before = path.read_bytes()

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(_io.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        save_params_file({k: v * 2 for k, v in params.items()}, path, format="pickle")
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["params.pkl"]


def test_bad_arguments(tmp_path, params):
    with pytest.raises(ValueError, match="format"):
        save_params_file(params, tmp_path / "x", format="hdf5")
    with pytest.raises(TypeError, match="names must be strings"):
        save_params_file({1: np.ones(2)}, tmp_path / "x")
    assert os.listdir(tmp_path) == []


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_saving_over_a_fifo_or_device_is_refused(tmp_path, params):
    """Found by fuzzing cnncore.export's paths: the atomic rename replaced whatever was at the path,
    so to_onnx(net, "/dev/null") run as root swapped the device for a regular file. A FIFO stands
    in for the device here; a link to it is refused too, and nothing is left behind."""
    import stat

    from cnncore.networks import Linear, Sequential

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    link = tmp_path / "link.npz"
    link.symlink_to(fifo)
    net = Sequential([Linear(2)], input_dim=(3,))
    for path in (fifo, link):
        with pytest.raises(ValueError, match="not a regular file .* refusing to replace it"):
            save_params_file(params, path)
        with pytest.raises(ValueError, match="not a regular file"):
            net.save(path)
        assert stat.S_ISFIFO(os.stat(path).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo", "link.npz"]


def test_a_bytes_path_is_saved_like_a_str(tmp_path, params):
    """A bytes path raised TypeError from building the temporary file's name (found by fuzzing
    cnncore.export's paths); np.load and the loaders take bytes paths."""
    path = os.fsencode(tmp_path / "b.npz")
    save_params_file(params, path)
    assert sorted(load_params_file(path, None)) == sorted(params)
