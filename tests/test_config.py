"""cnncore's settings (get_config, set_config, config_context), their environment defaults, the
algorithm choice (cnncore._conv.select: its table of rules, tested directly) and every algorithm
that can run a layer, forced through config_context, against the NumPy reference."""
import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import cnncore
from cnncore import kernels as K
from cnncore import reference as R
from cnncore._conv import select
from cnncore._conv.select import trace

ALGORITHMS = ["im2col", "winograd", "avx2_rows", "avx2_blocks", "avx512_blocks"]
CPU = cnncore.cpu_features()


# ------------------------------------------------------------------------------------ the settings

def test_defaults_and_validation():
    config = cnncore.get_config()
    assert config["conv_algorithm"] == "auto" and config["use_avx2"] is True
    assert config["tile_bytes"] == 4 << 20 and config["work_per_thread"] == 1 << 15
    with pytest.raises(ValueError, match="conv_algorithm must be one of"):
        cnncore.set_config(conv_algorithm="fft")
    with pytest.raises(TypeError, match="use_avx2 must be True or False"):
        cnncore.set_config(use_avx2=1)
    assert config["use_avx512"] is True
    with pytest.raises(TypeError, match="use_avx512 must be True or False"):
        cnncore.set_config(use_avx512="no")
    with pytest.raises(ValueError, match="tile_bytes must be >= 1"):
        cnncore.set_config(tile_bytes=0)
    with pytest.raises(TypeError, match="tile_bytes must be an integer"):
        cnncore.set_config(tile_bytes=2.5)
    with pytest.raises(TypeError, match="unknown setting"):
        cnncore.set_config(tile_size=4)
    assert cnncore.get_config() == config      # a refused change changes nothing


def test_config_context_restores_and_nests(config):
    with cnncore.config_context(conv_algorithm="im2col", tile_bytes=1000) as inside:
        assert inside["conv_algorithm"] == "im2col"
        with cnncore.config_context(tile_bytes=None):        # None: back to the default
            assert cnncore.get_config()["tile_bytes"] == 4 << 20
            assert cnncore.get_config()["conv_algorithm"] == "im2col"
        assert cnncore.get_config()["tile_bytes"] == 1000
    assert cnncore.get_config()["conv_algorithm"] == "auto"
    config(matmul_chunks=3)
    assert cnncore.get_config()["matmul_chunks"] == 3
    with pytest.raises(RuntimeError), cnncore.config_context(matmul_chunks=5):
        raise RuntimeError
    assert cnncore.get_config()["matmul_chunks"] == 3


def test_settings_are_context_local():
    """Another thread neither sees this thread's change nor changes this thread's settings."""
    seen, started, changed = {}, threading.Event(), threading.Event()

    def other():
        seen["before"] = cnncore.get_config()["conv_algorithm"]
        cnncore.set_config(conv_algorithm="winograd")
        started.set()
        changed.wait(10)
        seen["after"] = cnncore.get_config()["conv_algorithm"]

    with cnncore.config_context(conv_algorithm="im2col"):
        thread = threading.Thread(target=other)
        thread.start()
        started.wait(10)
        assert cnncore.get_config()["conv_algorithm"] == "im2col"
        changed.set()
        thread.join(10)
    assert seen == {"before": "auto", "after": "winograd"}


def test_forced_algorithm_reaches_the_worker_threads(rng, config):
    """Settings are read in the calling thread: a convolution run on two threads with one image
    per tile takes what this thread forced, in every tile."""
    config(conv_algorithm="im2col", tile_bytes=1)
    cnncore.set_num_threads(2)
    try:
        x = rng.standard_normal((6, 32, 10, 10))
        Wt = rng.standard_normal((32, 32, 3, 3))
        with trace() as steps:
            out = K.conv_forward(x, Wt, 0.0, 1, 1)
    finally:
        cnncore.set_num_threads(None)
    assert [(r.step, r.algorithm) for r in steps] == [("forward", "im2col")]
    np.testing.assert_array_equal(out, K.conv_forward(x, Wt, 0.0, 1, 1))


# ------------------------------------------------------------------------- environment defaults

def run_python(code, **env):
    """Run code in a fresh interpreter with env added; -> (return code, stdout, stderr)."""
    full = dict(os.environ, **env)
    full.setdefault("PYTHONPATH", os.pathsep.join(p for p in sys.path if p))
    done = subprocess.run([sys.executable, "-W", "always", "-c", code], env=full,
                          capture_output=True, text=True, timeout=120)
    return done.returncode, done.stdout, done.stderr


@pytest.mark.parametrize("value", ["²", "١٢", str(2**44), str(2**28 + 1), "-1", "1e3", "0x10", ""])
def test_output_cache_environment_value_out_of_range_is_warned_and_ignored(value):
    # '²'.isdigit() is True but int('²') raises: import cnncore failed; 2**44 MiB overflowed.
    code, out, err = run_python("import cnncore; print(cnncore.get_output_cache_limit())",
                                CNNCORE_OUTPUT_CACHE_MB=value)
    assert code == 0, err
    assert int(out) == 256 << 20
    assert "CNNCORE_OUTPUT_CACHE_MB" in err and "RuntimeWarning" in err


def test_output_cache_environment_value_in_range_is_taken():
    code, out, err = run_python("import cnncore; print(cnncore.get_output_cache_limit())",
                                CNNCORE_OUTPUT_CACHE_MB=" 3 ")
    assert code == 0 and int(out) == 3 << 20 and "Warning" not in err


@pytest.mark.parametrize("value", ["²", "0", "-2", "2.5", "two", str(2**31)])
def test_omp_num_threads_not_a_count_is_warned_and_ignored(value, monkeypatch, rng):
    cnncore.set_num_threads(None)     # the environment decides
    # OMP_NUM_THREADS='²' made every kernel call raise (int('²') in get_num_threads).
    monkeypatch.setenv("OMP_NUM_THREADS", value)
    with pytest.warns(RuntimeWarning, match="OMP_NUM_THREADS"):
        n = cnncore.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert n == cnncore.get_num_threads()            # the CPUs this process may use
    monkeypatch.setenv("OMP_NUM_THREADS", value)
    with pytest.warns(RuntimeWarning):
        x = rng.standard_normal((2, 3, 8, 8))
        np.testing.assert_array_equal(K.max_pool_forward(x, 2, 2)[0], R.max_pool_forward(x, 2, 2)[0])


def test_omp_num_threads_takes_the_first_count_of_a_list(monkeypatch):
    cnncore.set_num_threads(None)
    monkeypatch.setenv("OMP_NUM_THREADS", "3,2")
    assert cnncore.get_num_threads() == 3


def test_config_environment_defaults():
    code, out, err = run_python(
        "import json, cnncore; print(json.dumps(cnncore.get_config()))",
        CNNCORE_CONV_ALGORITHM="im2col", CNNCORE_USE_AVX2="0", CNNCORE_TILE_BYTES="65536",
        CNNCORE_WORK_PER_THREAD="²", CNNCORE_MATMUL_CHUNKS="0", CNNCORE_USE_AVX512="0")
    assert code == 0, err
    config = json.loads(out)
    assert config["conv_algorithm"] == "im2col" and config["use_avx2"] is False
    assert config["use_avx512"] is False
    assert config["tile_bytes"] == 65536
    assert config["work_per_thread"] == 1 << 15 and config["matmul_chunks"] == 2   # ignored
    assert "CNNCORE_WORK_PER_THREAD" in err and "CNNCORE_MATMUL_CHUNKS" in err
    code, out, err = run_python("import cnncore; print(cnncore.get_config()['conv_algorithm'])",
                                CNNCORE_CONV_ALGORITHM="fft")
    assert code == 0 and out.strip() == "auto" and "CNNCORE_CONV_ALGORITHM" in err
    code, out, err = run_python("import cnncore; print(cnncore.get_config()['use_avx512'])",
                                CNNCORE_USE_AVX512="2")
    assert code == 0 and out.strip() == "True" and "CNNCORE_USE_AVX512" in err


# --------------------------------------------------------------------------- the table of rules

AVX2 = {"x86_targets": True, "avx2": True, "fma": True, "avx512f": False}
BARE = {"x86_targets": True, "avx2": False, "fma": False, "avx512f": False}
AVX512 = dict(AVX2, avx512f=True)
AUTO = dict(cnncore.get_config(), conv_algorithm="auto", use_avx2=True)


def plan(x_shape, W_shape, stride=1, pad=0, dtype=np.float32, features=AVX2, need_dx=True, **cfg):
    return select.select(x_shape, W_shape, stride, pad, dtype, need_dx=need_dx,
                         config=dict(AUTO, **cfg), features=features)


@pytest.mark.parametrize("x_shape, W_shape, stride, pad, dtype, features, forward, grads", [
    # Winograd: 3x3 stride 1 pad <= 2 with >= 32 input channels, any dtype and CPU
    ((1, 32, 14, 14), (32, 32, 3, 3), 1, 2, np.float32, AVX2, "winograd", "winograd"),
    ((1, 32, 14, 14), (32, 32, 3, 3), 1, 1, np.float64, BARE, "winograd", "winograd"),
    ((1, 31, 14, 14), (32, 31, 3, 3), 1, 1, np.float64, AVX2, "im2col", "im2col"),
    ((1, 32, 14, 14), (32, 32, 3, 3), 1, 3, np.float64, AVX2, "im2col", "im2col"),     # pad 3
    ((1, 32, 14, 14), (32, 32, 3, 3), 2, 1, np.float64, AVX2, "im2col", "im2col"),     # stride 2
    ((1, 32, 14, 14), (32, 32, 5, 5), 1, 1, np.float64, AVX2, "im2col", "im2col"),     # 5x5
    # its gradients need >= 32 filters and planes of >= 64 pixels
    ((1, 32, 14, 14), (31, 32, 3, 3), 1, 1, np.float64, AVX2, "winograd", "im2col"),
    ((1, 64, 8, 8), (64, 64, 3, 3), 1, 1, np.float64, AVX2, "winograd", "winograd"),
    ((1, 64, 7, 7), (64, 64, 3, 3), 1, 1, np.float64, AVX2, "winograd", "im2col"),
    # rows: float32 stride 1, rows of 8-256 outputs, < 64 taps, AVX2 + FMA
    ((1, 1, 28, 28), (30, 1, 5, 5), 1, 0, np.float32, AVX2, "avx2_rows", "avx2_rows"),
    ((1, 1, 28, 28), (16, 1, 3, 3), 1, 1, np.float32, AVX2, "avx2_rows", "avx2_rows"),
    ((1, 1, 28, 28), (16, 1, 3, 3), 1, 1, np.float32, BARE, "im2col", "im2col"),
    ((1, 1, 28, 28), (16, 1, 3, 3), 1, 1, np.float64, AVX2, "im2col", "im2col"),
    ((1, 1, 28, 28), (16, 1, 3, 3), 2, 1, np.float32, AVX2, "im2col", "im2col"),
    ((1, 1, 7, 7), (16, 1, 3, 3), 1, 1, np.float32, AVX2, "im2col", "im2col"),         # rows of 7
    ((1, 1, 3, 300), (4, 1, 3, 3), 1, 1, np.float32, AVX2, "im2col", "im2col"),        # of 300
    # blocks: float32, >= 64 taps, 8-32 filters; the rows' gradients for few filters
    ((1, 16, 28, 28), (16, 16, 3, 3), 1, 1, np.float32, AVX2, "avx2_blocks", "avx2_rows"),
    ((1, 16, 14, 14), (32, 16, 3, 3), 1, 1, np.float32, AVX2, "avx2_blocks", "im2col"),
    ((1, 17, 14, 14), (16, 17, 3, 3), 1, 1, np.float32, AVX2, "avx2_blocks", "im2col"),  # 153 taps
    ((1, 24, 14, 14), (8, 24, 3, 3), 1, 1, np.float32, AVX2, "avx2_blocks", "avx2_rows"),
    ((1, 16, 14, 14), (64, 16, 3, 3), 1, 1, np.float32, AVX2, "im2col", "im2col"),
    ((1, 16, 14, 14), (4, 16, 3, 3), 1, 1, np.float32, AVX2, "im2col", "avx2_rows"),
    ((1, 16, 14, 14), (16, 16, 3, 3), 2, 1, np.float32, AVX2, "avx2_blocks", "im2col"),
    # AVX-512: the blocks' forward for 8-128 filters of >= 64 taps (float64: up to 128 filters,
    # any taps, below Winograd's layers); its gradients (float32) for stride 1,
    # square 3x3 / 5x5 filters, >= 16 filters and 16-31 input channels (fewer: dW only)
    ((1, 16, 28, 28), (16, 16, 3, 3), 1, 1, np.float32, AVX512, "avx512_blocks", "avx512_blocks"),
    ((1, 16, 14, 14), (32, 16, 3, 3), 1, 1, np.float32, AVX512, "avx512_blocks", "avx512_blocks"),
    ((1, 31, 14, 14), (16, 31, 5, 5), 1, 4, np.float32, AVX512, "avx512_blocks", "avx512_blocks"),
    ((1, 16, 14, 14), (64, 16, 3, 3), 1, 1, np.float32, AVX512, "avx512_blocks", "avx512_blocks"),
    ((1, 16, 14, 14), (129, 16, 3, 3), 1, 1, np.float32, AVX512, "im2col", "avx512_blocks"),
    ((1, 1, 28, 28), (6, 1, 5, 5), 1, 2, np.float64, AVX512, "avx512_blocks", "im2col"),
    ((1, 16, 5, 5), (120, 16, 5, 5), 1, 0, np.float64, AVX512, "avx512_blocks", "im2col"),
    ((1, 16, 5, 5), (129, 16, 5, 5), 1, 0, np.float64, AVX512, "im2col", "im2col"),
    ((1, 32, 14, 14), (32, 32, 3, 3), 1, 1, np.float64, AVX512, "winograd", "winograd"),
    ((1, 16, 14, 14), (16, 16, 3, 3), 1, 3, np.float32, AVX512, "avx512_blocks", "avx2_rows"),
    ((1, 16, 14, 14), (16, 16, 3, 3), 2, 1, np.float32, AVX512, "avx512_blocks", "im2col"),
    ((1, 16, 14, 14), (15, 16, 3, 3), 1, 1, np.float32, AVX512, "avx512_blocks", "avx2_rows"),
    ((1, 16, 14, 14), (16, 16, 3, 2), 1, 1, np.float32, AVX512, "avx512_blocks", "avx2_rows"),
    ((1, 6, 14, 14), (16, 6, 5, 5), 1, 0, np.float32, AVX512, "avx512_blocks", "im2col"),
    ((1, 32, 14, 14), (32, 32, 3, 3), 1, 2, np.float32, AVX512, "winograd", "winograd"),
    ((1, 16, 14, 14), (16, 16, 3, 3), 1, 1, np.float64, AVX512, "avx512_blocks", "im2col"),
    # its gradients want output planes of >= 64 cells (63 here; LeNet-5's conv3 has one)
    ((1, 16, 8, 8), (16, 16, 3, 3), 1, 1, np.float32, AVX512, "avx512_blocks", "avx512_blocks"),
    ((1, 16, 7, 9), (16, 16, 3, 3), 1, 1, np.float32, AVX512, "avx512_blocks", "avx2_rows"),
    ((1, 16, 5, 5), (120, 16, 5, 5), 1, 0, np.float32, AVX512, "avx512_blocks", "im2col"),
])
def test_rules(x_shape, W_shape, stride, pad, dtype, features, forward, grads):
    p = plan(x_shape, W_shape, stride, pad, dtype, features)
    assert (p.forward, p.weight_grad, p.input_grad) == (forward, grads, grads)
    assert p.forward_reason and p.gradient_reason


def test_rules_input_gradient():
    # without the input gradient there is none; the rows' dx needs input rows of 8-256 as well
    p = plan((1, 1, 28, 28), (16, 1, 3, 3), need_dx=False)
    assert (p.weight_grad, p.input_grad) == ("avx2_rows", None)
    p = plan((1, 1, 6, 6), (4, 1, 1, 1), pad=1)            # rows of 8 outputs but of 6 inputs
    assert (p.forward, p.weight_grad) == ("avx2_rows", "im2col")
    assert plan((1, 1, 6, 6), (4, 1, 1, 1), pad=1, need_dx=False).weight_grad == "avx2_rows"
    # AVX-512's dx has the channels in its 16 lanes: a first layer of one channel takes its dW only
    p = plan((1, 1, 28, 28), (16, 1, 3, 3), features=AVX512)
    assert (p.forward, p.weight_grad) == ("avx2_rows", "avx2_rows")
    p = plan((1, 1, 28, 28), (16, 1, 3, 3), features=AVX512, need_dx=False)
    assert (p.weight_grad, p.input_grad) == ("avx512_blocks", None)


def test_use_avx2_false_is_a_cpu_without_it():
    for shapes in (((1, 1, 28, 28), (16, 1, 3, 3)), ((1, 16, 28, 28), (16, 16, 3, 3))):
        assert plan(*shapes, use_avx2=False) == plan(*shapes, features=BARE)
        assert plan(*shapes, features=AVX512, use_avx2=False) == plan(*shapes, features=BARE)
        assert plan(*shapes, features=AVX512, use_avx512=False) == plan(*shapes, features=AVX2)


def test_forced_algorithms_run_where_they_can_and_say_where_not():
    p = plan((1, 3, 10, 10), (4, 3, 3, 3), conv_algorithm="winograd")
    assert (p.forward, p.weight_grad) == ("winograd", "winograd")
    assert "forced" in p.forward_reason
    p = plan((1, 3, 10, 10), (4, 3, 3, 3), conv_algorithm="avx2_blocks")
    assert p.forward == "avx2_blocks" and p.weight_grad == "avx2_rows"   # no gradients of its own
    assert "no gradients of its own" in p.gradient_reason
    assert plan((1, 3, 10, 10), (4, 3, 5, 5), conv_algorithm="im2col").forward == "im2col"
    with pytest.raises(ValueError, match="'winograd' cannot run the forward.*3x3 filters"):
        plan((1, 3, 10, 10), (4, 3, 5, 5), conv_algorithm="winograd")
    with pytest.raises(ValueError, match="'avx2_rows' cannot run the forward.*AVX2 \\+ FMA"):
        plan((1, 3, 10, 10), (4, 3, 3, 3), features=BARE, conv_algorithm="avx2_rows")
    with pytest.raises(ValueError, match="'avx2_rows' cannot run the gradients"):
        plan((1, 1, 6, 6), (4, 1, 1, 1), pad=1, conv_algorithm="avx2_rows")
    with pytest.raises(ValueError, match="'avx2_blocks' cannot run the forward"):
        plan((1, 3, 10, 10), (4, 3, 3, 3), dtype=np.float64, conv_algorithm="avx2_blocks")
    p = plan((1, 3, 10, 10), (4, 3, 3, 3), features=AVX512, conv_algorithm="avx512_blocks")
    assert (p.forward, p.weight_grad) == ("avx512_blocks", "avx512_blocks")
    with pytest.raises(ValueError, match="'avx512_blocks' cannot run the forward.*AVX-512F"):
        plan((1, 3, 10, 10), (4, 3, 3, 3), conv_algorithm="avx512_blocks")
    with pytest.raises(ValueError, match="'avx512_blocks' cannot run the gradients.*stride 1"):
        plan((1, 3, 10, 10), (4, 3, 3, 3), 2, features=AVX512, conv_algorithm="avx512_blocks")


def test_every_rule_has_a_reason_and_the_last_takes_everything():
    for rules in (select.FORWARD_RULES, select.GRADIENT_RULES):
        assert all(rule.reason for rule in rules)
        assert rules[-1].algorithm == "im2col"
        assert rules[-1].applies(None, None)
    assert set(select.CAN_RUN) == set(ALGORITHMS)


def test_explain_a_network_and_a_layer():
    from cnncore.layers import Convolution
    from cnncore.networks import DeepConvNet, LeNet5

    rows = cnncore.explain(DeepConvNet(dtype=np.float32), (2, 1, 28, 28))
    assert len(rows) == 6 and rows[0]["input"] == (1, 28, 28)
    assert [r["forward"] for r in rows[3:]] == ["winograd"] * 3
    assert "first layer" in rows[0]["gradients_reason"]
    layer = Convolution(np.zeros((8, 3, 5, 5)), np.zeros(8))
    (row,) = cnncore.explain(layer, (1, 3, 12, 12))
    assert row["forward"] == ("avx512_blocks" if CPU["avx512f"] else "im2col")
    assert row["dtype"] == "float64"
    with cnncore.config_context(conv_algorithm="winograd"):
        (row,) = cnncore.explain(layer, (1, 3, 12, 12))
        assert row["forward"] == "error" and "3x3" in row["forward_reason"]
        rows = cnncore.explain(LeNet5(), (1, 1, 28, 28))   # 5x5 layers: Winograd cannot run them
    assert [r["forward"] for r in rows] == ["error"] * 3


# ------------------------------------------- every algorithm that can run a layer, against the reference

def builtin_layers():
    """(name, x_shape, W_shape, stride, pad) of every convolution of the built-in networks."""
    from cnncore.networks import DeepConvNet, LeNet5, SimpleConvNet

    layers = []
    for cls in (SimpleConvNet, DeepConvNet, LeNet5):
        for row in cnncore.explain(cls(), (2, 1, 28, 28)):
            layers.append((f"{cls.__name__}.{row['layer']}", (2, *row["input"]), row["filters"],
                           row["stride"], row["pad"]))
    return layers


GRID = [(f"grid{i}", x, w, s, p) for i, (x, w, s, p) in enumerate([
    ((2, 3, 9, 8), (5, 3, 3, 3), 1, 1),
    ((3, 2, 7, 12), (4, 2, 3, 3), 1, 0),
    ((1, 4, 10, 17), (9, 4, 3, 3), 1, 2),
    ((2, 3, 11, 10), (17, 3, 5, 5), 1, 2),
    ((2, 5, 9, 9), (6, 5, 3, 3), 2, 1),
    ((2, 2, 6, 30), (3, 2, 1, 1), 1, 0),
    ((1, 33, 6, 6), (33, 33, 3, 3), 1, 1),
    ((2, 8, 12, 12), (16, 8, 3, 2), 1, 1),
    ((2, 16, 9, 11), (20, 16, 3, 3), 1, 1),
    ((3, 17, 8, 7), (33, 17, 5, 5), 1, 4),
    ((2, 20, 7, 7), (16, 20, 3, 3), 1, 2),
    ((2, 16, 10, 10), (40, 16, 3, 3), 2, 1),
])]
CASES = builtin_layers() + GRID


def runnable(x_shape, W_shape, stride, pad, dtype):
    """The algorithms that can run the forward of this layer here."""
    found = []
    for algorithm in ALGORITHMS:
        try:
            select.select(x_shape, W_shape, stride, pad, dtype,
                          config=dict(AUTO, conv_algorithm=algorithm), need_dx=False)
        except ValueError:
            continue
        found.append(algorithm)
    return found


def tol(dtype, scale):
    if np.dtype(dtype) == np.float32:
        return dict(rtol=2e-4, atol=2e-5 * scale)
    return dict(rtol=1e-9, atol=1e-11 * scale)


@pytest.mark.parametrize("fused", [False, True], ids=["conv", "fused"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c[0])
def test_every_algorithm_that_can_run_a_layer_agrees_with_the_reference(case, dtype, fused, rng):
    name, x_shape, W_shape, stride, pad = case
    x = rng.standard_normal(x_shape).astype(dtype)
    Wt = (rng.standard_normal(W_shape) / np.sqrt(np.prod(W_shape[1:]))).astype(dtype)
    b = rng.standard_normal(W_shape[0]).astype(dtype)
    fwd, bwd = ((R.conv_bias_relu_forward, R.conv_bias_relu_backward) if fused
                else (R.conv_forward, R.conv_backward))
    want = fwd(x, Wt, b, stride, pad)
    dout = rng.standard_normal(want.shape).astype(dtype)
    want_grads = (bwd(dout, x, Wt, want, stride, pad) if fused
                  else bwd(dout, x, Wt, stride, pad))
    algorithms = runnable(x_shape, W_shape, stride, pad, dtype)
    assert "im2col" in algorithms
    if dtype == np.float32 and CPU["avx2"] and CPU["fma"] and stride == 1:
        assert "avx2_blocks" in algorithms
    for algorithm in algorithms:
        with cnncore.config_context(conv_algorithm=algorithm), trace() as steps:
            out = (K.conv_bias_relu_forward if fused else K.conv_forward)(x, Wt, b, stride, pad)
            try:
                grads = (K.conv_bias_relu_backward(dout, x, Wt, out, stride, pad) if fused
                         else K.conv_backward(dout, x, Wt, stride, pad))
            except ValueError as e:      # a forced algorithm that cannot run the gradients
                assert "cannot run the gradients" in str(e)
                assert algorithm in ("avx2_rows", "avx512_blocks")
                grads = None
        assert steps[0].algorithm == algorithm and steps[0].redone == 0
        np.testing.assert_allclose(out, want, **tol(dtype, np.abs(want).max() + 1),
                                   err_msg=f"{algorithm} forward")
        if grads is None:
            continue
        assert steps[-1].step == "gradients" and steps[-1].redone == 0
        for g, w, what in zip(grads, want_grads, ("dx", "dW", "db")):
            np.testing.assert_allclose(g, w, **tol(dtype, np.abs(w).max() + 1),
                                       err_msg=f"{algorithm} {what}")
