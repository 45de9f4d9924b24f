"""Hostile and broken files, beyond tests/test_io.py and tests/test_datasets.py.

- pickles whose ``__reduce__`` would run code (create a marker file) never run, with or without the
  opt-in, through every protocol and hiding places (dict value, object array, npz member);
- parameter files that declare huge shapes or inflate to gigabytes are refused before the memory is
  taken; special files (/dev/zero behind a symlink, a directory) give clear errors;
- a network's parameters are unchanged after any failed load_params;
- a save killed (SIGKILL) in the middle leaves the previous file loadable;
- MNIST files that are decompression bombs, special files or directories are refused by name.

The memory-hungry cases run in a child process with a 1 GiB address-space limit.
"""
import gzip
import io
import os
import pickle
import shutil
import signal
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest

from cnncore import datasets, networks
from cnncore._io import load_params_file, save_params_file

FILES = list(datasets.key_file.values())

pytestmark = pytest.mark.skipif(os.name != "posix", reason="symlinks, /dev/zero, SIGKILL")
# The children rely on RLIMIT_AS, which only Linux enforces, to fail fast instead of eating memory.
LIMITED = pytest.mark.skipif(sys.platform != "linux", reason="needs Linux (RLIMIT_AS)")


@pytest.fixture
def params(rng):
    return {"W1": rng.standard_normal((4, 1, 3, 3)), "b1": np.zeros(4),
            "W2": rng.standard_normal((36, 5)), "b2": rng.standard_normal(5)}


def shapes(params):
    return {k: v.shape for k, v in params.items()}


def run_limited(code, *args):
    """Run code in a child process limited to 1 GiB of address space (so a file that makes the
    loader read or inflate gigabytes fails fast there); fail unless it prints "ok"."""
    prelude = ("import resource\n"
               "resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))\n")
    proc = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)] + list(args),
                          capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OPENBLAS_NUM_THREADS="1"))
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-2000:]


# ------------------------------------------------------------------------------ pickles that run code

class Payload:
    """Unpickling this calls a function with a shell-ish effect: creates the marker file."""

    def __init__(self, how, marker):
        self.how, self.marker = how, marker

    def __reduce__(self):
        if self.how == "os.system":
            return (os.system, (f"touch {self.marker}",))
        if self.how == "exec":
            return (exec, (f"open({self.marker!r}, 'w').close()",))
        if self.how == "subprocess":
            return (subprocess.call, (["touch", self.marker],))
        return (Path.touch, (Path(self.marker),))


HOW = ["os.system", "exec", "subprocess", "Path.touch"]
HIDING = {
    "top level": lambda p: p,
    "dict value": lambda p: {"W1": p},
    "dict key": lambda p: {p: np.zeros(3)},
    "object array": lambda p: {"W1": np.array([p, 1.0], dtype=object)},
    "list in dict": lambda p: {"W1": [np.zeros(3), p]},
}


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("hiding", list(HIDING))
def test_malicious_pickles_never_run(tmp_path, protocol, how, hiding):
    marker = tmp_path / "marker"
    path = tmp_path / "params.pkl"
    path.write_bytes(pickle.dumps(HIDING[hiding](Payload(how, str(marker))), protocol=protocol))
    for allow in (False, True):
        with pytest.raises(ValueError, match="params.pkl"):
            load_params_file(path, {"W1": (3,)}, allow_pickle=allow)
        assert not marker.exists()


def npz_with_object_array(path, payload):
    np.savez(path, W1=np.array([payload], dtype=object))


def npz_with_raw_pickle_member(path, payload):
    """A zip whose member is a raw pickle, not an .npy."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("W1.npy", pickle.dumps(payload))


@pytest.mark.parametrize("make", [npz_with_object_array, npz_with_raw_pickle_member])
def test_pickles_inside_npz_never_run(tmp_path, make):
    marker = tmp_path / "marker"
    path = tmp_path / "params.npz"
    make(path, Payload("exec", str(marker)))
    for allow in (False, True):
        with pytest.raises(ValueError, match="params.npz"):
            load_params_file(path, {"W1": (1,)}, allow_pickle=allow)
    assert not marker.exists()


# ----------------------------------------------------------------------- bombs and special files

def npy_header(shape, descr="<f8"):
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": descr, "fortran_order": False,
                                                  "shape": shape})
    return header.getvalue()


BOMB_CODE = """
import io, os, sys, tracemalloc, zipfile
import numpy as np
from cnncore._io import load_params_file
path, kind = sys.argv[1], sys.argv[2]
tracemalloc.start()
try:
    load_params_file(path, {"W1": (3, 3)}, allow_pickle=(kind == "pickle"))
except ValueError as exc:
    assert os.path.basename(path) in str(exc), exc
else:
    raise AssertionError("loaded")
peak = tracemalloc.get_traced_memory()[1]
assert peak < 64 << 20, f"{peak >> 20} MiB allocated before refusing"
print("ok")
"""


def refuse_in_child(path, kind="npz"):
    run_limited(BOMB_CODE, str(path), kind)


@LIMITED
@pytest.mark.parametrize("shape", [
    (2**40,),     # 8 TiB if allocated
    (2**26,),     # 512 MiB if allocated before the data runs out
    (2**62, 4),   # the element count overflows
])
def test_npz_header_declaring_a_huge_shape(tmp_path, shape):
    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("W1.npy", npy_header(shape) + b"\0" * 64)
    refuse_in_child(path)


@LIMITED
def test_npz_deflate_bomb(tmp_path):
    """256 KiB on disk, 256 MiB of zeros once inflated, for a parameter of 9 values."""
    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("W1.npy", "w", force_zip64=True) as member:
            member.write(npy_header((2**25,)))
            zeros = bytes(1 << 24)
            for _ in range(16):
                member.write(zeros)
    assert path.stat().st_size < 1 << 20
    refuse_in_child(path)


@LIMITED
def test_symlink_to_dev_zero_is_refused(tmp_path):
    link = tmp_path / "params.pkl"
    link.symlink_to("/dev/zero")
    with pytest.raises(ValueError, match="params.pkl"):
        load_params_file(link, {"W1": (3, 3)})      # without the opt-in: refused at once
    refuse_in_child(link, kind="pickle")


def test_fifo_and_oversized_pickle_are_refused(tmp_path, params):
    fifo = tmp_path / "params.npz"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="params.npz: not a regular file"):
        load_params_file(fifo, shapes(params))      # without O_NONBLOCK, open() waits forever
    big = tmp_path / "big.pkl"
    save_params_file({"W1": np.zeros(200_000)}, big, format="pickle")
    with pytest.raises(ValueError, match="big.pkl: the pickle is larger"):
        load_params_file(big, {"W1": (3, 3)}, allow_pickle=True)


def test_symlinks_and_directories(tmp_path, params):
    real = tmp_path / "real.npz"
    save_params_file(params, real)
    link = tmp_path / "link.npz"
    link.symlink_to(real)
    assert set(load_params_file(link, shapes(params))) == set(params)
    dangling = tmp_path / "dangling.npz"
    dangling.symlink_to(tmp_path / "missing.npz")
    with pytest.raises(FileNotFoundError):
        load_params_file(dangling, shapes(params))
    # Saving onto a symlink replaces the link by a file; the file it pointed to is not touched.
    before = real.read_bytes()
    save_params_file({k: v + 1 for k, v in params.items()}, link)
    assert real.read_bytes() == before and not link.is_symlink()
    np.testing.assert_array_equal(load_params_file(link, shapes(params))["W1"], params["W1"] + 1)
    # A directory is neither read nor replaced; no temporary file is left behind.
    folder = tmp_path / "folder.npz"
    folder.mkdir()
    (folder / "keep").write_text("x")
    with pytest.raises(IsADirectoryError, match="folder.npz"):
        load_params_file(folder, shapes(params))
    with pytest.raises(OSError):
        save_params_file(params, folder)
    assert (folder / "keep").read_text() == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dangling.npz", "folder.npz",
                                                          "link.npz", "real.npz"]


# --------------------------------------------------------------- network parameters stay unchanged

def bad_files(tmp_path, params):
    """{what: path} of files a network must refuse."""
    good = tmp_path / "good.npz"
    save_params_file(params, good)
    data = good.read_bytes()
    files = {}

    def add(name, content):
        files[name] = tmp_path / name
        files[name].write_bytes(content)

    add("truncated.npz", data[:len(data) // 2])
    add("flipped.npz", data[:300] + bytes([data[300] ^ 0xFF]) + data[301:])
    add("garbage.npz", os.urandom(500))
    save_params_file({**params, "W9": np.zeros(2)}, tmp_path / "extra.npz")
    save_params_file({k: v for k, v in params.items() if k != "b2"}, tmp_path / "missing.npz")
    save_params_file({**params, "W2": params["W2"].T}, tmp_path / "transposed.npz")
    np.savez(tmp_path / "ints.npz", **{**params, "b1": np.zeros(4, int)})
    np.savez(tmp_path / "objects.npz", **{**params, "b1": np.array([None] * 4, dtype=object)})
    with zipfile.ZipFile(tmp_path / "header.npz", "w") as archive:
        archive.writestr("W1.npy", npy_header((2**62, 4)) + b"\0" * 64)
    add("evil.pkl", pickle.dumps({"W1": Payload("os.system", str(tmp_path / "marker"))}))
    save_params_file(params, tmp_path / "textbook.pkl", format="pickle")
    for name in ("extra.npz", "missing.npz", "transposed.npz", "ints.npz", "objects.npz",
                 "header.npz"):
        files[name] = tmp_path / name
    files["no pickle opt-in"] = tmp_path / "textbook.pkl"
    files["directory"] = tmp_path
    files["absent"] = tmp_path / "absent.npz"
    return files


def test_failed_load_params_leaves_the_network_unchanged(tmp_path):
    np.random.seed(0)
    net = networks.SimpleConvNet(input_dim=(1, 10, 10), conv_param={
        "filter_num": 4, "filter_size": 3, "pad": 0, "stride": 1}, hidden_size=5)
    params = {k: v * 2 for k, v in net.params.items()}
    before = {k: (v, v.copy()) for k, v in net.params.items()}
    layers = {id(layer): (layer, dict(vars(layer))) for layer in net.layers.values()}
    for what, path in bad_files(tmp_path, params).items():
        allow = what == "evil.pkl"
        with pytest.raises((ValueError, OSError)):
            net.load_params(str(path), allow_pickle=allow)
        for key, (obj, values) in before.items():
            assert net.params[key] is obj, what
            np.testing.assert_array_equal(obj, values, err_msg=what)
        for layer, attrs in layers.values():
            for name in ("W", "b"):
                if name in attrs:
                    assert getattr(layer, name) is attrs[name], what
    assert not (tmp_path / "marker").exists()


# ---------------------------------------------------------------------------- interrupted saves

KILL_CODE = """
import os, signal, sys
import numpy as np
from cnncore import _io
path, fmt = sys.argv[1], sys.argv[2]
params = {"W1": np.full((64, 64), 2.0), "b1": np.full(64, 2.0)}


class Killer:
    # a file object that dies (SIGKILL) after the first 1000 bytes
    def __init__(self, f):
        self.f, self.n = f, 0

    def write(self, data):
        self.n += len(data)
        if self.n > 1000:
            self.f.write(bytes(data)[:500])
            self.f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)


real = _io.atomic_write


def dying(path):
    class Context:
        def __enter__(self):
            self.cm = real(path)
            return Killer(self.cm.__enter__())

        def __exit__(self, *exc):
            return self.cm.__exit__(*exc)
    return Context()


_io.atomic_write = dying
_io.save_params_file(params, path, format=None if fmt == "npz" else fmt)
"""


@pytest.mark.parametrize("fmt", ["npz", "pickle"])
def test_save_killed_midway_keeps_the_previous_file(tmp_path, fmt):
    path = tmp_path / "params.npz"
    old = {"W1": np.ones((64, 64)), "b1": np.ones(64)}
    save_params_file(old, path, format=None if fmt == "npz" else fmt)
    proc = subprocess.run([sys.executable, "-c", KILL_CODE, str(path), fmt],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    loaded = load_params_file(path, shapes(old), allow_pickle=(fmt == "pickle"))
    np.testing.assert_array_equal(loaded["W1"], old["W1"])


# ---------------------------------------------------------------------------------------- MNIST

@pytest.fixture
def mnist_copy(tmp_path, mnist_dir, monkeypatch):
    monkeypatch.setattr(datasets, "_memo", {})
    for name in FILES:
        shutil.copy(mnist_dir / name, tmp_path / name)
    return tmp_path


MNIST_CODE = """
import sys, tracemalloc
from cnncore.datasets import load_mnist
tracemalloc.start()
try:
    load_mnist(path=sys.argv[1], download=False)
except (ValueError, OSError) as exc:
    assert sys.argv[2] in str(exc), exc
else:
    raise AssertionError("loaded")
peak = tracemalloc.get_traced_memory()[1]
assert peak < 200 << 20, f"{peak >> 20} MiB allocated before refusing"  # MNIST itself: ~55 MB
print("ok")
"""


@LIMITED
def test_mnist_gzip_bomb(mnist_copy):
    """Concatenated gzip members: 256 KiB on disk, 256 MiB once decompressed (labels: 10 kB)."""
    member = gzip.compress(bytes(1 << 26), compresslevel=9)
    (mnist_copy / "t10k-labels-idx1-ubyte.gz").write_bytes(member * 4)
    run_limited(MNIST_CODE, str(mnist_copy), "t10k-labels-idx1-ubyte.gz")


@LIMITED
def test_mnist_file_that_is_dev_zero(mnist_copy):
    target = mnist_copy / "t10k-images-idx3-ubyte.gz"
    target.unlink()
    target.symlink_to("/dev/zero")
    run_limited(MNIST_CODE, str(mnist_copy), "t10k-images-idx3-ubyte.gz")


@pytest.mark.parametrize("damage", ["directory", "empty", "random gzip", "uncompressed",
                                    "other file's gzip"])
def test_mnist_broken_files_are_named(mnist_copy, damage):
    from cnncore.datasets import load_mnist
    target = mnist_copy / "train-labels-idx1-ubyte.gz"
    raw = target.read_bytes()
    target.unlink()
    if damage == "directory":
        target.mkdir()
    elif damage == "empty":
        target.write_bytes(b"")
    elif damage == "random gzip":
        target.write_bytes(gzip.compress(os.urandom(60008)))
    elif damage == "uncompressed":
        target.write_bytes(gzip.decompress(raw))
    else:
        target.write_bytes((mnist_copy / "t10k-labels-idx1-ubyte.gz").read_bytes())
    with pytest.raises((ValueError, OSError), match="train-labels-idx1-ubyte.gz"):
        load_mnist(path=mnist_copy, download=False)
