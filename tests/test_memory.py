"""Repeated calls do not grow memory: every kernel, forward and backward, and a small network's
training step, thousands of times, measured as the resident set size of a child process.

    python tests/test_memory.py 10000     # the long run, by hand: prints the RSS figures
"""
import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self/status")

STEPS_CODE = r"""
import json, sys
import numpy as np
import cnncore
from cnncore import kernels as K


def rss_kib():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


rng = np.random.default_rng(0)
x = rng.standard_normal((2, 3, 9, 7)).astype(np.float32)
Wt = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
b = rng.standard_normal(4).astype(np.float32)
x64 = x.astype(np.float64)[:, :, ::-1]              # non-contiguous: the boundary copies it


def kernel_step():
    col = K.im2col(x, 3, 3, 2, 1)
    K.col2im(col, x.shape, 3, 3, 2, 1)
    out, arg = K.max_pool_forward(x64, 3, 3, 2, 1)
    K.max_pool_backward(out, arg, x64.shape, 3, 3, 2, 1)
    avg = K.avg_pool_forward(x, 2, 2)
    K.avg_pool_backward(avg, x.shape, 2, 2)
    conv = K.conv_forward(x64, Wt, b, 1, 1)
    K.conv_backward(conv, x64, Wt, 1, 1)
    fused = K.conv_bias_relu_forward(x, Wt, b, 2, 1)
    K.conv_bias_relu_backward(fused, x, Wt, fused, 2, 1)
    try:                                             # the error path must not leak either
        K.conv_forward(x, Wt[:, :2], b)
    except ValueError:
        pass


def network_step(state={}):
    if not state:
        from cnncore.networks import SimpleConvNet
        from cnncore.optimizer import Adam
        state["net"] = SimpleConvNet(input_dim=(1, 10, 10), conv_param={"filter_num": 4,
                                     "filter_size": 3, "pad": 1, "stride": 1}, hidden_size=8)
        state["opt"] = Adam()
        state["x"] = rng.standard_normal((4, 1, 10, 10)).astype(np.float32)
        state["t"] = np.array([1, 2, 3, 4])
    net = state["net"]
    state["opt"].update(net.params, net.gradient(state["x"], state["t"]))


def measure(step, steps):
    for _ in range(max(200, steps // 10)):           # warm-up: caches, OpenMP/BLAS pools, arenas
        step()
    before = rss_kib()
    for _ in range(steps):
        step()
    return before, rss_kib()


steps = int(sys.argv[1])
report = {"kernels": measure(kernel_step, steps)}
try:
    import cnncore.networks, cnncore.optimizer
except ImportError:
    pass
else:
    report["network"] = measure(network_step, steps // 4)
print(json.dumps(report))
"""


def measure(steps, timeout=600):
    proc = subprocess.run([sys.executable, "-c", STEPS_CODE, str(steps)], capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_repeated_calls_do_not_grow_memory():
    """2000 steps of every kernel (500 of a tiny SimpleConvNet + Adam): RSS grows < 2 MiB.

    A leak of one small array per step would show as tens of MiB here."""
    report = measure(2000)
    for what, (before, after) in report.items():
        assert after - before < 2048, f"{what}: RSS {before} KiB -> {after} KiB"


if __name__ == "__main__":
    for what, (before, after) in measure(int(sys.argv[1]), timeout=36000).items():
        print(f"{what}: RSS after warm-up {before} KiB, after the run {after} KiB "
              f"({after - before:+d} KiB)")
