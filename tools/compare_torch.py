"""The course's networks in cnncore and in PyTorch eager mode: whole training steps, each library alone
in its own process, alternating, same thread count; medians and ratios.

    python tools/compare_torch.py                          # every network, float32 and float64
    python tools/compare_torch.py --networks deep,cifar10 --dtypes float32 --runs 5
    python tools/compare_torch.py --inference              # predict at batch 100 and 1000 instead
    python tools/compare_torch.py --layers --networks deep --dtypes float32   # each convolution alone

A step is what a training loop does per batch: forward, loss, backward and Adam's update (cnncore:
``network.gradient`` + ``Adam.update``; PyTorch: ``zero_grad``, forward, ``cross_entropy``,
``backward``, ``step``), on fixed random batches. First, in this process, the two models are given
the same weights and checked to agree (inference outputs, and loss and gradients with Dropout off);
a disagreement stops the run. Then every (network, dtype) is timed in fresh processes, cnncore and
PyTorch alternating ``--runs`` times; each process warms up, times ``--steps`` steps and prints its
median. The PyTorch processes never import cnncore (its OpenMP defaults would change torch's
threads): they build the model from a JSON description of the layers.

``--layers`` times each convolution with its ReLU alone instead, on its input in the network:
forward, and backward (the first layer's without the input gradient, as both libraries train it),
the minimum over ``--steps`` passes in each process, the median over the processes.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

NETWORKS = ["simple", "lenet5", "deep", "flexible", "cifar10", "flexible+bn", "cifar10+bn"]


# ------------------------------------------------------------------------- the networks, as layers

def build_cnncore(name, dtype):
    """The cnncore network for a name; '+bn' adds a per-channel BatchNorm after every convolution."""
    import numpy as np

    from cnncore import networks
    from cnncore.layers import Relu
    from cnncore.networks import BatchNorm2d, Conv2d, Linear, Sequential

    np.random.seed(0)
    if name == "simple":
        return networks.SimpleConvNet(dtype=dtype)
    if name == "deep":
        return networks.DeepConvNet(dtype=dtype)
    if name == "lenet5":
        return networks.lenet5(dtype=dtype)
    base = {"flexible": networks.flexible_cnn, "cifar10": networks.cifar10_cnn}[name.split("+")[0]]
    net = base(dtype=dtype)
    if not name.endswith("+bn"):
        return net
    layers = []
    for layer in net.layers.values():   # rebuild with a BatchNorm2d between each conv and its Relu
        if type(layer).__name__ == "Convolution":
            layers += [Conv2d(layer.W.shape[0], layer.W.shape[2], layer.stride, layer.pad),
                       BatchNorm2d()]
        elif type(layer).__name__ == "Affine":
            layers.append(Linear(layer.W.shape[1]))
        else:
            layers.append(layer if not isinstance(layer, Relu) else Relu())
    np.random.seed(0)
    return Sequential(layers, input_dim=net.input_dim, dtype=dtype)


def describe(net):
    """A JSON description of a cnncore network's layers for build_torch (no cnncore needed)."""
    from cnncore.networks.sequential import architecture

    arch = architecture(net)
    arch["shapes"] = {key: list(value.shape) for key, value in net.params.items()}
    return arch


def build_torch(arch, dtype):
    """nn.Sequential of PyTorch's own modules for a description made by describe()."""
    import torch
    from torch import nn

    shapes = arch["shapes"]
    modules = []
    for spec in arch["layers"]:
        kind, config, params = spec["type"], spec["config"], spec["params"]
        if kind in ("Convolution", "ConvReLU"):
            FN, C, FH, FW = shapes[params["W"]]
            modules.append(nn.Conv2d(C, FN, (FH, FW), config["stride"], config["pad"],
                                     padding_mode=config["padding_mode"]))
            if kind == "ConvReLU":
                modules.append(nn.ReLU())
        elif kind == "Affine":
            D, M = shapes[params["W"]]
            modules += [nn.Flatten(), nn.Linear(D, M)]
        elif kind == "Relu":
            modules.append(nn.ReLU())
        elif kind == "Pooling":
            modules.append(nn.MaxPool2d((config["pool_h"], config["pool_w"]), config["stride"],
                                        config["pad"]))
        elif kind == "AvgPooling":
            modules.append(nn.AvgPool2d((config["pool_h"], config["pool_w"]), config["stride"],
                                        config["pad"]))
        elif kind == "Dropout":
            modules.append(nn.Dropout(config["dropout_ratio"]))
        elif kind == "SpatialBatchNormalization":
            modules.append(nn.BatchNorm2d(shapes[params["gamma"]][0], eps=1e-6,
                                          momentum=1 - config["momentum"]))
        elif kind == "BatchNormalization":
            D = shapes[params["gamma"]][0]
            modules += [nn.Flatten(), nn.BatchNorm1d(D, eps=1e-6, momentum=1 - config["momentum"])]
        else:
            raise ValueError(f"no PyTorch module for {kind}")
    return nn.Sequential(*modules).to({"float32": torch.float32, "float64": torch.float64}[dtype])


def copy_weights(net, model):
    """Give the torch model the cnncore network's weights (Affine's W is (in, out), Linear's (out, in))."""
    import numpy as np
    import torch

    owners = {}
    for key, layer, attr in net._bindings:
        owners.setdefault(id(layer), {})[attr] = net.params[key]
    weighted = [owners[id(layer)] for layer in net._layer_list() if id(layer) in owners]
    targets = [m for m in model if hasattr(m, "weight")]
    with torch.no_grad():
        for params, module in zip(weighted, targets, strict=True):
            if "W" in params:
                W = params["W"] if params["W"].ndim == 4 else params["W"].T
                module.weight.copy_(torch.from_numpy(np.ascontiguousarray(W)))
                module.bias.copy_(torch.from_numpy(params["b"]))
            else:
                module.weight.copy_(torch.from_numpy(params["gamma"]))
                module.bias.copy_(torch.from_numpy(params["beta"]))


def check_agreement(name, dtype):
    """Same weights, same batch: inference outputs, and loss and gradients with Dropout off."""
    import numpy as np
    import torch

    net = build_cnncore(name, dtype)
    model = build_torch(describe(net), dtype)
    copy_weights(net, model)
    rng = np.random.default_rng(0)
    x = rng.random((8, *net.input_dim)).astype(dtype)
    t = rng.integers(0, 10, 8)
    # float32 gradients are compared loosely: one activation within 1e-6 of a ReLU's kink can take
    # the other side in either library and move whole channels' gradients by 1e-2 through batch norm
    tol = {"float32": 1e-3, "float64": 1e-9}[dtype]
    grad_tol = {"float32": 0.1, "float64": 1e-9}[dtype]
    for layer in net._layer_list():
        if type(layer).__name__ == "Dropout":
            layer.dropout_ratio = 0.0
    for module in model:
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    model.train()
    out = model(torch.from_numpy(x))
    loss = torch.nn.functional.cross_entropy(out, torch.from_numpy(t))
    loss.backward()
    grads = net.gradient(x, t)
    ours = [grads[key] for key, _, attr in net._bindings if attr == "W"]
    theirs = [m.weight.grad.numpy() for m in model if hasattr(m, "weight") and m.weight.ndim > 1]
    for a, b in zip(ours, theirs, strict=True):
        b = b if a.ndim == 4 else b.T
        err = np.abs(a - b).max() / max(np.abs(b).max(), 1e-12)
        if err > grad_tol:
            raise AssertionError(f"{name} {dtype}: gradients differ from PyTorch's by {err:.1e}")
    model.eval()
    norms = [m for m in model if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    bns = [layer for layer in net._layer_list() if hasattr(layer, "running_var")]
    with torch.no_grad():
        for module, layer in zip(norms, bns, strict=True):   # torch keeps the unbiased variance
            module.running_mean.copy_(torch.from_numpy(layer.running_mean))
            module.running_var.copy_(torch.from_numpy(layer.running_var))
        ref = model(torch.from_numpy(x)).numpy()
    err = np.abs(net.predict(x) - ref).max() / np.abs(ref).max()
    if err > tol:
        raise AssertionError(f"{name} {dtype}: inference differs from PyTorch's by {err:.1e}")


# ----------------------------------------------------------------------------------- the children

def time_cnncore(name, dtype, steps, batch, inference):
    import numpy as np

    from cnncore.optimizer import Adam

    net = build_cnncore(name, dtype)
    rng = np.random.default_rng(1)
    x = rng.random((batch, *net.input_dim)).astype(dtype)
    t = rng.integers(0, 10, batch)
    optimizer = Adam()

    def step():
        if inference:
            net.predict(x)
        else:
            optimizer.update(net.params, net.gradient(x, t))
    return _median(step, steps)


def time_torch(arch, dtype, steps, batch, inference, threads):
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    model = build_torch(arch, dtype)
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.random((batch, *arch["input_dim"])).astype(dtype))
    t = torch.from_numpy(rng.integers(0, 10, batch))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.001)

    def step():
        if inference:
            model.eval()
            with torch.no_grad():
                model(x)
        else:
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x), t).backward()
            optimizer.step()
    return _median(step, steps)


def layer_times_cnncore(name, dtype, steps, batch):
    """[(label, forward ms, backward ms)] of each fused Convolution + Relu of the network."""
    import numpy as np

    from cnncore.layers import conv_relu_backward, conv_relu_forward
    from cnncore.networks._base import forward

    def times(conv, relu, x, need_dx):
        out = conv_relu_forward(conv, relu, x)
        dout = np.ones_like(out)
        return (out, _minimum(lambda: conv_relu_forward(conv, relu, x), steps),
                _minimum(lambda: conv_relu_backward(conv, relu, dout, need_dx=need_dx), steps))

    net = build_cnncore(name, dtype)
    h = np.random.default_rng(1).random((batch, *net.input_dim)).astype(dtype)
    rows = []
    for step in net._steps():
        if len(step) == 2:
            FN, C, FH, FW = step[0].W.shape
            label = f"{C}->{FN} {FH}x{FW} @{h.shape[2]}x{h.shape[3]} pad {step[0].pad}"
            h, fwd, bwd = times(*step, h, need_dx=bool(rows))
            rows.append((label, fwd, bwd))
        else:
            h = forward(step[0], h, True)
    return rows


def layer_times_torch(arch, dtype, steps, batch, threads):
    """As layer_times_cnncore, for the same layers in PyTorch (Conv2d followed by ReLU)."""
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    model = build_torch(arch, dtype)
    h = torch.from_numpy(np.random.default_rng(1).random((batch, *arch["input_dim"])).astype(dtype))
    def times(module, x):
        def fwd():
            return torch.relu(module(x))

        def bwd():   # seconds of the backward alone
            y = fwd()
            start = time.perf_counter()
            y.backward(torch.ones_like(y))
            return time.perf_counter() - start

        bwd()
        return _minimum(fwd, steps), 1e3 * min(bwd() for _ in range(steps))

    modules = list(model)
    rows = []
    for module, after in zip(modules, modules[1:] + [None]):
        if isinstance(module, torch.nn.Conv2d) and isinstance(after, torch.nn.ReLU):
            FN, C, FH, FW = module.weight.shape
            label = f"{C}->{FN} {FH}x{FW} @{h.shape[2]}x{h.shape[3]} pad {module.padding[0]}"
            rows.append((label, *times(module, h.detach().requires_grad_(bool(rows)))))
        with torch.no_grad():
            h = module(h)
    return rows


def _minimum(call, steps):
    """Milliseconds of the fastest of steps calls (after one call to warm up)."""
    call()
    best = float("inf")
    for _ in range(steps):
        start = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - start)
    return 1e3 * best


def _median(step, steps):
    for _ in range(3):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def child(args):
    spec = json.loads(args.child_spec)
    if args.child == "cnncore":
        import cnncore

        cnncore.set_num_threads(args.threads)
        if args.layers:
            ms = layer_times_cnncore(spec["name"], spec["dtype"], args.steps, args.batch)
        else:
            ms = time_cnncore(spec["name"], spec["dtype"], args.steps, args.batch, args.inference)
    elif args.layers:
        ms = layer_times_torch(spec["arch"], spec["dtype"], args.steps, args.batch, args.threads)
    else:
        ms = time_torch(spec["arch"], spec["dtype"], args.steps, args.batch, args.inference,
                        args.threads)
    print(json.dumps({"ms": ms}))


def run_child(which, spec, args):
    cmd = [sys.executable, os.path.abspath(__file__), "--child", which, "--child-spec",
           json.dumps(spec), "--steps", str(args.steps), "--batch", str(args.batch),
           "--threads", str(args.threads)] + (["--inference"] if args.inference else []) + (
               ["--layers"] if args.layers else [])
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["ms"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--networks", default=",".join(NETWORKS))
    parser.add_argument("--dtypes", default="float32,float64")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per process")
    parser.add_argument("--runs", type=int, default=3, help="processes per library, alternating")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--inference", action="store_true", help="time predict instead of steps")
    parser.add_argument("--layers", action="store_true",
                        help="time each convolution + ReLU alone instead of whole steps")
    parser.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    parser.add_argument("--child", choices=["cnncore", "torch"], help=argparse.SUPPRESS)
    parser.add_argument("--child-spec", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args)

    if args.layers:
        return compare_layers(args)
    rows = []
    what = f"predict, batch {args.batch}" if args.inference else f"training step, batch {args.batch}"
    print(f"{what}, {args.threads} threads, median of {args.steps} steps per process, "
          f"{args.runs} processes per library alternating")
    print(f"{'network':12s} {'dtype':8s} {'torch ms':>9s} {'cnncore ms':>10s} {'torch/cnncore':>13s}")
    for name in args.networks.split(","):
        for dtype in args.dtypes.split(","):
            check_agreement(name, dtype)
            spec = {"name": name, "dtype": dtype, "arch": describe(build_cnncore(name, dtype))}
            times = {"cnncore": [], "torch": []}
            for _ in range(args.runs):
                for which in ("cnncore", "torch"):
                    times[which].append(run_child(which, spec, args))
            ours, theirs = (statistics.median(times[k]) for k in ("cnncore", "torch"))
            rows.append({"network": name, "dtype": dtype, "torch_ms": theirs, "cnncore_ms": ours,
                         "ratio": theirs / ours, "runs": times})
            print(f"{name:12s} {dtype:8s} {theirs:9.1f} {ours:10.1f} {theirs / ours:13.2f}",
                  flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"what": what, "threads": args.threads, "rows": rows}, f, indent=1)


def compare_layers(args):
    """The --layers table: each convolution + ReLU, forward and backward, both libraries."""
    print(f"each convolution + ReLU alone, batch {args.batch}, {args.threads} threads, fastest of "
          f"{args.steps} per process, median of {args.runs} processes per library alternating")
    print(f"{'network':10s} {'dtype':8s} {'layer':28s} {'torch fwd/bwd ms':>17s} "
          f"{'cnncore fwd/bwd ms':>19s} {'x fwd':>6s} {'x bwd':>6s}")
    rows = []
    for name in args.networks.split(","):
        for dtype in args.dtypes.split(","):
            spec = {"name": name, "dtype": dtype, "arch": describe(build_cnncore(name, dtype))}
            runs = {"cnncore": [], "torch": []}
            for _ in range(args.runs):
                for which in ("cnncore", "torch"):
                    runs[which].append(run_child(which, spec, args))
            for i, (label, _, _) in enumerate(runs["cnncore"][0]):
                ours, theirs = ([statistics.median(r[i][k] for r in runs[which]) for k in (1, 2)]
                                for which in ("cnncore", "torch"))
                rows.append({"network": name, "dtype": dtype, "layer": label,
                             "torch_ms": theirs, "cnncore_ms": ours})
                print(f"{name:10s} {dtype:8s} {label:28s} {theirs[0]:8.2f}/{theirs[1]:<8.2f} "
                      f"{ours[0]:9.2f}/{ours[1]:<9.2f} {theirs[0] / ours[0]:6.2f} "
                      f"{theirs[1] / ours[1]:6.2f}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"what": "layers", "threads": args.threads, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
