"""Time the compiled kernels of two cnncore installs against each other (e.g. a regular and an abi3
wheel, or two compiler settings), on the shapes of docs/wheels.md.

    python tools/compare_builds.py VENV_A/bin/python VENV_B/bin/python [REPEATS]

Each interpreter runs in its own worker process; the driver asks them for one timing at a time,
alternating A and B (and their order) on every repeat, so that load on a shared machine hits both
alike. Prints the median time of each side and the median of the paired ratios B/A. For stable
numbers set OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1.
"""
import ast
import statistics
import subprocess
import sys

WORKER = r'''
import sys, time
import numpy as np
import cnncore._ext.im2col
from cnncore import kernels as k

rng = np.random.default_rng(0)
x = rng.standard_normal((100, 16, 28, 28))
W = rng.standard_normal((32, 16, 3, 3))
b = rng.standard_normal(32)
col = k.im2col(x, 3, 3, 1, 1)
dout = rng.standard_normal(k.conv_forward(x, W, b, 1, 1).shape)
xp = rng.standard_normal((100, 30, 24, 24))
pout, arg_max = k.max_pool_forward(xp, 2, 2, 2, 0)
pdout = rng.standard_normal(pout.shape)
tiny = rng.standard_normal((1, 1, 4, 4))
cases = {  # name: (calls per timing, call)
    "im2col": (3, lambda: k.im2col(x, 3, 3, 1, 1)),
    "col2im": (3, lambda: k.col2im(col, x.shape, 3, 3, 1, 1)),
    "max_pool_forward": (3, lambda: k.max_pool_forward(xp, 2, 2, 2, 0)),
    "max_pool_backward": (3, lambda: k.max_pool_backward(pdout, arg_max, xp.shape, 2, 2, 2, 0)),
    "conv_forward": (3, lambda: k.conv_forward(x, W, b, 1, 1)),
    "conv_backward": (3, lambda: k.conv_backward(dout, x, W, 1, 1)),
    "im2col (1,1,4,4): call overhead": (2000, lambda: k.im2col(tiny, 3, 3, 1, 1)),
}
print(repr((cnncore._ext.im2col.__file__, list(cases))), flush=True)
for line in sys.stdin:
    number, fn = cases[line.strip()]
    fn()
    t0 = time.perf_counter()
    for _ in range(number):
        fn()
    print((time.perf_counter() - t0) / number, flush=True)
'''


def start(python):
    proc = subprocess.Popen([python, "-c", WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, cwd="/")  # cwd: never import a source tree's cnncore/
    header = proc.stdout.readline()
    if not header:
        sys.exit(f"{python}: the worker failed to start (is cnncore installed there?)")
    return proc, ast.literal_eval(header)


def timing(proc, name):
    proc.stdin.write(name + "\n")
    proc.stdin.flush()
    return float(proc.stdout.readline())


def main(argv):
    if len(argv) not in (2, 3):
        sys.exit(__doc__)
    repeats = int(argv[2]) if len(argv) == 3 else 21
    (pa, (fa, names)), (pb, (fb, _)) = start(argv[0]), start(argv[1])
    print(f"A: {fa}\nB: {fb}\nmedian of {repeats} alternating repeats")
    print(f"{'kernel':34s} {'A':>10s} {'B':>10s} {'B/A paired':>11s}")
    for name in names:
        ta, tb = [], []
        for r in range(repeats):
            pairs = [(pa, ta), (pb, tb)]
            for proc, times in pairs if r % 2 == 0 else pairs[::-1]:
                times.append(timing(proc, name))
        scale, unit = (1e6, "us") if "overhead" in name else (1e3, "ms")
        ratio = statistics.median(b / a for a, b in zip(ta, tb))
        print(f"{name:34s} {statistics.median(ta) * scale:8.3f}{unit} "
              f"{statistics.median(tb) * scale:8.3f}{unit} {ratio:11.3f}")
    for proc in (pa, pb):
        proc.stdin.close()
        proc.wait()


if __name__ == "__main__":
    main(sys.argv[1:])
