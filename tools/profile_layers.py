"""Where a training step's time goes, layer by layer (forward and backward of each step alone).

    python tools/profile_layers.py deep [--dtype float32] [--batch 100] [--repeat 3]
    python tools/profile_layers.py cifar10

NAME is one of cnncore's networks (simple, deep, lenet5, flexible, cifar10, as `cnncore train
--network`). A Convolution directly followed by a Relu runs fused, as the network runs it. Each step
is timed on its own, the minimum of --repeat passes is printed; the optimizer is not included.
"""
import argparse
import time

import numpy as np

from cnncore.cli import NETWORKS, build_network
from cnncore.layers import conv_relu_backward, conv_relu_forward
from cnncore.networks._base import forward


def profile(net, x, t, repeat):
    """{(position, name, 'fwd'/'bwd'): seconds}, the minimum over repeat passes."""
    times = {}
    steps = net._steps()
    for _ in range(repeat):
        h = x
        for i, step in enumerate(steps):
            start = time.perf_counter()
            h = conv_relu_forward(*step, h) if len(step) == 2 else forward(step[0], h, True)
            _keep(times, (i, step, "fwd"), time.perf_counter() - start)
        net.last_layer.forward(h, t)
        dout = net.last_layer.backward(1)
        for i, step in reversed(list(enumerate(steps))):
            start = time.perf_counter()
            if len(step) == 2:
                dout = conv_relu_backward(*step, dout, need_dx=i > 0)
            elif i == 0 and hasattr(step[0], "W") and step[0].W.ndim == 4:
                dout = step[0].backward(dout, need_dx=False)
            else:
                dout = step[0].backward(dout)
            _keep(times, (i, step, "bwd"), time.perf_counter() - start)
    return times


def _keep(times, key, seconds):
    times[key] = min(times.get(key, seconds), seconds)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("network", choices=list(NETWORKS))
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    input_dim = (3, 32, 32) if args.network == "cifar10" else (1, 28, 28)
    np.random.seed(0)
    net = build_network(args.network, args.dtype, input_dim)
    rng = np.random.default_rng(0)
    x = rng.random((args.batch, *input_dim)).astype(args.dtype)
    t = rng.integers(0, 10, args.batch)
    net.gradient(x, t)   # warm-up
    times = profile(net, x, t, args.repeat)
    order = [key for key in times if key[2] == "fwd"] + [key for key in times if key[2] == "bwd"]
    for i, step, way in order:   # forward in layer order, then backward in the order it runs
        name = "+".join(type(layer).__name__ for layer in step)
        print(f"{i:3d} {name:24s} {way} {1e3 * times[(i, step, way)]:8.2f} ms")
    print(f"total {1e3 * sum(times.values()):.1f} ms")


if __name__ == "__main__":
    main()
