"""cnncore.bench (``python -m cnncore bench``): it runs, its table has the expected rows, and its
agreement check stops a fast wrong kernel. Tiny shapes and one sample each, so a few seconds."""
import json
import re
import time

import numpy as np
import pytest

import cnncore
from cnncore import bench, kernels, networks, reference

TINY = {
    "conv": (bench.ConvShape("tiny", 2, 3, 9, 8, 3, 2, 1, FN=4, quick=True),),
    "pool": (bench.PoolShape("tiny", 2, 3, 8, 9, 3, 2, quick=True),),
    "elementwise": (bench.ArrayShape("tiny", 2, 3, 8, 9, quick=True),),
    "matrix": (bench.MatShape("tiny", 3, 7, 5, quick=True),),
}


def test_cli_quick_one_group(capsys, tmp_path):
    out_json = tmp_path / "bench.json"
    assert bench.bench_main(["--quick", "--filter", "avg_pool_backward", "--repeat", "1",
                             "--no-torch", "--json", str(out_json)]) == 0
    text = capsys.readouterr().out
    rows = [line for line in text.splitlines() if line.startswith("avg_pool_backward ")]
    assert len(rows) == 2   # the one quick pooling shape, float32 and float64
    assert "(100,30,24,24) 2x2 s2" in rows[0] and "float32" in rows[0] and "float64" in rows[1]
    assert "speed-up" in text and "OPENBLAS_CORETYPE" in text
    saved = json.loads(out_json.read_text())
    assert [r["group"] for r in saved["rows"]] == ["avg_pool_backward"] * 2
    assert saved["rows"][0]["x_floor"] > 0 and "memory" not in saved


def test_rows_and_derived_columns():
    result = bench.run(quick=True, repeat=1, filters=["im2col", "pool", "conv_forward_backward"],
                       shapes=TINY, torch=False, memory=False)
    got = [(r["group"], r["dtype"]) for r in result["rows"]]
    groups = ["im2col", "max_pool_forward", "max_pool_backward", "avg_pool_forward",
              "avg_pool_backward", "conv_forward_backward"]
    assert got == [(g, d) for g in groups for d in ("float32", "float64")]
    for row in result["rows"]:
        assert row["numpy_ms"] > 0 and row["cython_ms"] > 0
        assert row["speedup"] == pytest.approx(row["numpy_ms"] / row["cython_ms"])
        if row["group"].startswith("conv"):
            assert row["gflops"] > 0 and 0 < row["matmul_fraction"]
        else:
            assert row["x_floor"] > 0
    table = bench.format_table(result)
    assert table.count("(2,3,8,9) 3x3 s2") == 8 and table.count("(2,3,9,8) k3 s2 p1 FN4") == 4


@pytest.mark.parametrize("group, patch", [
    ("max_pool_forward", lambda f: lambda *a: (f(*a)[0] + 1, f(*a)[1])),      # wrong values
    ("max_pool_forward", lambda f: lambda *a: (f(*a)[0], np.zeros_like(f(*a)[1]))),  # wrong arg_max
    ("col2im", lambda f: lambda *a: f(*a)[:, ::-1].copy()),                   # wrong layout
    ("conv_backward", lambda f: lambda *a: tuple(g * 1.001 for g in f(*a))),  # slightly off
    ("conv_bias_relu_forward", lambda f: lambda *a: f(*a).astype(np.float64)),  # wrong dtype
    ("relu_forward", lambda f: lambda x: (f(x)[0], ~f(x)[1])),                # wrong mask
])
def test_agreement_check_catches_a_wrong_kernel(monkeypatch, group, patch):
    monkeypatch.setattr(kernels, group, patch(getattr(kernels, group)))
    bench_group = {"conv_backward": "conv_forward_backward",
                   "relu_forward": "relu_forward_backward"}.get(group, group)
    (case,) = [c for c in bench.cases(groups=[bench_group], shapes=TINY)
               if c.dtype == np.float32]
    with pytest.raises(bench.AgreementError):
        case.prepare().check()
    with pytest.raises(bench.AgreementError):
        bench.run(quick=True, repeat=1, filters=[bench_group], shapes=TINY, torch=False,
                  memory=False)


def test_every_case_agrees_on_tiny_shapes():
    for case in bench.cases(shapes=TINY, groups=list(bench.GROUPS)):
        case.prepare().check()


def test_peak_memory_of_the_tiled_convolution():
    # a batch whose im2col matrix is 4 tiles, so one tile is well below the reference's peak
    n = 4 * cnncore.get_config()["tile_bytes"] // (16 * 9 * 28 * 28 * 8) + 1
    shape = bench.ConvShape("m", n, 16, 28, 28, 3, 1, 1, FN=16)
    cython, out_bytes = bench.peak_memory("cython", np.float64, shape)
    numpy, _ = bench.peak_memory("numpy", np.float64, shape)
    assert out_bytes <= cython < numpy / 2


def test_use_reference_swaps_every_kernel_layer():
    net = bench.use_reference(networks.DeepConvNet())
    with_kernels = [layer for layer in net.layers if hasattr(layer, "kernels")]
    assert len(with_kernels) == 18   # 6 Convolution + 7 Relu + 3 Pooling + 2 Affine
    assert all(layer.kernels is reference for layer in with_kernels)
    assert all(layer.kernels is kernels for layer in networks.DeepConvNet().layers
               if hasattr(layer, "kernels"))


def _train_step_case(net, dtype):
    return bench.Case(bench.all_groups()["train_step"], bench.NetShape("tiny", net, 3),
                      np.dtype(dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("net", ["SimpleConvNet", "DeepConvNet"])
def test_train_step_check_passes_layer_by_layer(net, dtype):
    for seed in range(3):
        np.random.seed(seed)
        _train_step_case(net, dtype).prepare().check()


@pytest.mark.parametrize("kernel, patch, where", [
    ("conv_backward", lambda f: lambda *a, **k: (lambda g: (g[0], g[1] * 1.01, g[2]))(f(*a, **k)),
     "Convolution) backward"),
    ("conv_forward", lambda f: lambda *a, **k: f(*a, **k) + 1e-3, "Convolution) forward"),
    ("max_pool_backward", lambda f: lambda *a, **k: f(*a, **k) * 0, "Pooling) backward"),
    ("matmul", lambda f: lambda a, b: f(a, b) * 1.001, "Affine) forward"),
])
def test_train_step_check_names_the_wrong_layer(monkeypatch, kernel, patch, where):
    monkeypatch.setattr(kernels, kernel, patch(getattr(kernels, kernel)))
    np.random.seed(0)
    with pytest.raises(bench.AgreementError, match=re.escape(where)):
        _train_step_case("DeepConvNet", np.float32).prepare().check()


def test_time_blocks_times_each_runner_in_its_own_block():
    calls = []
    runners = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    medians, samples = bench.time_blocks(runners, repeat=3, iterations={"a": 2, "b": 1}, settle=0,
                                         warmup=0)
    assert calls == ["a"] * 7 + ["b"] * 4            # one untimed call, then repeat * iterations
    assert set(medians) == {"a", "b"} and [len(samples[k]) for k in "ab"] == [3, 3]
    assert all(m >= 0 for m in medians.values())


def test_time_blocks_warms_each_runner_up_for_the_given_seconds():
    calls = []

    def slow(name):
        return lambda: calls.append((name, time.perf_counter())) or time.sleep(0.01)

    bench.time_blocks({"a": slow("a"), "b": slow("b")}, repeat=2, iterations={"a": 1, "b": 1},
                      settle=0, warmup=0.05)
    for name in "ab":
        starts = [t for n, t in calls if n == name]
        untimed = starts[:-2]                        # the last two calls are the samples
        assert len(untimed) >= 2                     # 10 ms each, for 50 ms
        assert starts[-2] - starts[0] >= 0.05
        assert len(untimed) < 50                     # and then it stops
