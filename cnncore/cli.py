"""``python -m cnncore train`` and ``python -m cnncore evaluate``: the ch07/ch08 scripts as commands.

    python -m cnncore train --subset --epochs 5          # the course demo: 5000 train / 1000 test
    python -m cnncore train --network deep --dtype float32 --out deep.npz
    python -m cnncore train --dataset cifar10 --val-split 0.1 --augment --lr-schedule cosine \
        --early-stop 5 --checkpoint best.npz              # CIFAR-10 with the chapter 6 habits
    python -m cnncore train --network deep --compare-reference 5   # + timed against the NumPy network
    mpirun -n 2 cnncore train --network deep             # data-parallel on 2 ranks (cnncore.distributed)
    python -m cnncore evaluate --params params.npz       # exact accuracy on all 10000 test images
    python -m cnncore evaluate --params p.npz --confusion cm.png --misclassified wrong.png
    python -m cnncore evaluate --params params.pkl --pickle   # a textbook params.pkl (trusted files only)

``train`` uses the textbook's settings (``train_convnet.py``): Adam lr 0.001, batch 100, 20 epochs,
train/test accuracy on the first 1000 images after every epoch, batches drawn with replacement
(``np.random.choice``). Unlike the textbook's Trainer it counts epochs exactly (one line after each
full epoch), measures the final accuracy exactly, remainder batch included, and reports each step's
loss as computed for its gradient (no second forward pass after the update). During an epoch a
progress line shows steps, images/s, loss and the time left (``cnncore.callbacks.ProgressBar``).
Parameters are saved as ``.npz``; with matplotlib installed the loss and accuracy curves are drawn
(matplotlib is optional). Everything that could fail late (an unwritable output, a bad value, an
empty set) is checked before training starts.
"""
import argparse
import contextlib
import os
import sys
import time

import numpy as np

# --network NAME: (cnncore.networks attribute, help). The textbook's networks take input_dim and
# output_size by keyword; the course's builders too.
NETWORKS = {
    "simple": ("SimpleConvNet", "ch07's SimpleConvNet"),
    "deep": ("DeepConvNet", "ch08's DeepConvNet"),
    "lenet5": ("LeNet5", "LeNet-5 (the lecture's layout)"),
    "flexible": ("flexible_cnn", "the lecture's flexible CNN (conv32-conv64-pool-fc128)"),
    "cifar10": ("cifar10_cnn", "the lecture's CIFAR-10 CNN (32-32-pool-64-64-pool-fc512)"),
}
SUBSET = (5000, 1000)  # the course demo: x_train[:5000], x_test[:1000]
DATASETS = ("mnist", "fashion-mnist", "cifar10")
# --augment per dataset: shift (padding) and flips; digits must not be mirrored
AUGMENT = {"mnist": (2, False), "fashion-mnist": (2, True), "cifar10": (4, True)}


def build_network(name, dtype, input_dim=(1, 28, 28), output_size=10):
    """A fresh network of cnncore.networks by its short name (see NETWORKS) for images of shape
    ``input_dim`` (C, H, W) and ``output_size`` classes."""
    from . import networks

    make = getattr(networks, NETWORKS[name][0])
    return make(input_dim=tuple(input_dim), output_size=output_size, dtype=np.dtype(dtype))


def _common_options(parser):
    parser.add_argument("--network", choices=list(NETWORKS), default="simple",
                        help="; ".join(f"{name} = {text}" for name, (_, text) in NETWORKS.items()))
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float64",
                        help="parameter/compute dtype (default float64, the textbook's numbers; "
                             "float32 is faster)")
    parser.add_argument("--dataset", choices=DATASETS, default="mnist",
                        help="mnist (default), fashion-mnist or cifar10 (the binary version)")
    parser.add_argument("--data", metavar="DIR",
                        help="directory with the dataset's files (default: $CNNCORE_DATA for "
                             "MNIST, $CNNCORE_FASHION_MNIST_DATA, $CNNCORE_CIFAR10_DATA, else "
                             "~/.cache/cnncore/<dataset>, downloading if missing)")
    parser.add_argument("--batch-size", type=int, default=100, metavar="N", help="default 100")
    parser.add_argument("--threads", type=int, metavar="N",
                        help="threads for the compiled kernels (BLAS keeps its own setting)")


def _positive(parser, name, value):
    if value is not None and value < 1:
        parser.error(f"{name} must be >= 1, got {value}")


def _setup(parser, args):
    for name in ("batch_size", "threads", "epochs", "train_size", "test_size", "max_steps",
                 "early_stop"):
        _positive(parser, "--" + name.replace("_", "-"), getattr(args, name, None))
    split = getattr(args, "val_split", None)
    if split is not None and not 0 < split < 1:
        parser.error(f"--val-split must be a fraction in (0, 1), got {split}")
    for option in ("early_stop", "checkpoint"):
        if getattr(args, option, None) is not None and split is None:
            parser.error(f"--{option.replace('_', '-')} watches the validation accuracy: add "
                         f"--val-split (tuning on the test set is what chapter 6 warns against)")
    if getattr(args, "lr_schedule", None) is not None:
        args.schedule = _schedule(parser, args.lr_schedule)
    if getattr(args, "lr", 1) <= 0:
        parser.error(f"--lr must be > 0, got {args.lr}")
    if getattr(args, "eval_samples", 0) < 0:
        parser.error(f"--eval-samples must be >= 0, got {args.eval_samples}")
    if getattr(args, "compare_reference", 0) < 0:
        parser.error(f"--compare-reference must be >= 0, got {args.compare_reference}")
    if args.threads is not None:
        from . import set_num_threads

        set_num_threads(args.threads)


def _schedule(parser, text):
    """--lr-schedule: none, step:N[:GAMMA] (x GAMMA, default 0.1, every N epochs) or
    cosine[:ETA_MIN] (per step, down to ETA_MIN, default 0)."""
    from .callbacks import CosineLR, StepLR

    kind, *values = text.split(":")
    try:
        numbers = [float(v) for v in values]
        if kind == "none" and not values:
            return None
        if kind == "step" and 1 <= len(numbers) <= 2 and numbers[0] == int(numbers[0]):
            return StepLR(int(numbers[0]), *numbers[1:])
        if kind == "cosine" and len(numbers) <= 1:
            return CosineLR(*numbers)
    except ValueError as exc:
        parser.error(f"--lr-schedule {text}: {exc}")
    parser.error(f"--lr-schedule must be none, step:N[:GAMMA] or cosine[:ETA_MIN], got {text!r}")


def _check_outputs(paths):
    """Fail before any data is read or step taken if an output file could not be written."""
    from .callbacks import check_writable_file

    for option, path in paths:
        if path is None:
            continue
        try:
            check_writable_file(path, option)
        except OSError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(1) from None


def _load(args):
    from . import datasets

    loader = {"mnist": datasets.load_mnist, "fashion-mnist": datasets.load_fashion_mnist,
              "cifar10": datasets.load_cifar10}[args.dataset]
    try:
        return loader(flatten=False, path=args.data)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


def _fail(message):
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(1)


def train_main(argv):
    parser = argparse.ArgumentParser(
        prog="python -m cnncore train",
        description="Train a CNN on MNIST, Fashion-MNIST or CIFAR-10 with the textbook's Trainer "
                    "settings.")
    _common_options(parser)
    parser.add_argument("--epochs", type=int, default=20, metavar="N", help="default 20")
    parser.add_argument("--lr", type=float, default=0.001, help="Adam learning rate (default 0.001)")
    parser.add_argument("--subset", action="store_true",
                        help="the course demo: first 5000 training and 1000 test images")
    parser.add_argument("--train-size", type=int, metavar="N", help="use the first N training images")
    parser.add_argument("--test-size", type=int, metavar="N", help="use the first N test images")
    parser.add_argument("--eval-samples", type=int, default=1000, metavar="N",
                        help="images of each set scored after every epoch (default 1000; 0 = all)")
    parser.add_argument("--val-split", type=float, metavar="F",
                        help="hold out this fraction of the training images (shuffled) as a "
                             "validation set, scored after every epoch")
    parser.add_argument("--augment", action="store_true",
                        help="random shifts (zero padding 2, CIFAR-10: 4) and, except for MNIST, "
                             "horizontal flips of every training batch")
    parser.add_argument("--lr-schedule", metavar="SPEC",
                        help="none, step:N[:GAMMA] (lr x GAMMA, default 0.1, every N epochs) or "
                             "cosine[:ETA_MIN] (annealed per step over the run)")
    parser.add_argument("--early-stop", type=int, metavar="N",
                        help="stop when the validation accuracy has not improved for N epochs "
                             "and keep the best epoch's weights (needs --val-split)")
    parser.add_argument("--checkpoint", metavar="FILE",
                        help="save the parameters of the best epoch (validation accuracy) here "
                             "as training goes (needs --val-split)")
    parser.add_argument("--shuffle", action="store_true",
                        help="visit every training image once per epoch instead of drawing "
                             "batches with replacement")
    parser.add_argument("--seed", type=int, help="np.random.seed before building the network")
    parser.add_argument("--max-steps", type=int, metavar="N", help="stop after N steps (quick runs)")
    parser.add_argument("--out", default="params.npz", help="parameter file (default params.npz)")
    parser.add_argument("--plot", default="acc.png", metavar="PNG",
                        help="loss and accuracy curves (default acc.png; needs matplotlib)")
    parser.add_argument("--no-plot", action="store_true", help="do not plot")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress line during epochs")
    parser.add_argument("--verbose", action="store_true",
                        help="also print the textbook Trainer's per-step loss lines")
    parser.add_argument("--compare-reference", type=int, default=0, metavar="N",
                        help="before training, time N training steps of this network and of the "
                             "same network on the pure-NumPy reference kernels (default 0: off)")
    args = parser.parse_args(argv)
    _setup(parser, args)
    _check_outputs([("--out", args.out), ("--plot", None if args.no_plot else args.plot),
                    ("--checkpoint", args.checkpoint)])
    from .distributed import launched_by_mpi   # mpi4py is imported only under an MPI launcher

    if launched_by_mpi():   # mpirun -n P cnncore train ...: one model, data-parallel on P ranks
        from .distributed import abort_on_error

        with abort_on_error() as comm, _quiet_unless(comm.rank == 0):
            return _train(args, comm)
    return _train(args)


@contextlib.contextmanager
def _quiet_unless(condition):
    """Silence stdout (errors still go to stderr) unless condition: only rank 0 prints."""
    if condition:
        yield
        return
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        yield


def _train(args, comm=None):
    from . import callbacks
    from .augment import RandomCropFlip
    from .datasets import split_validation
    from .trainer import Trainer

    if comm is not None:
        from .distributed import DistributedTrainer as Trainer

    (x_train, t_train), (x_test, t_test) = _load(args)
    train_size, test_size = SUBSET if args.subset else (len(x_train), len(x_test))
    train_size = min(args.train_size or train_size, len(x_train))
    test_size = min(args.test_size or test_size, len(x_test))
    x_train, t_train = x_train[:train_size], t_train[:train_size]
    x_test, t_test = x_test[:test_size], t_test[:test_size]

    if comm is not None and args.seed is None:   # every rank must split and draw alike
        args.seed = comm.bcast_object(int(np.random.SeedSequence().entropy % 2**32))
    if args.seed is not None:
        np.random.seed(args.seed)
    x_val = t_val = None
    if args.val_split is not None:
        try:
            (x_train, t_train), (x_val, t_val) = split_validation(
                x_train, t_train, args.val_split, rng=np.random.default_rng(args.seed))
        except ValueError as exc:
            _fail(f"--val-split: {exc}")
    network = build_network(args.network, args.dtype, x_train.shape[1:], 10)
    progress = _EpochPrinter(args.epochs)
    hooks = [h for h in (getattr(args, "schedule", None),) if h is not None]
    if args.early_stop:
        hooks.append(callbacks.EarlyStopping(patience=args.early_stop))
    rank0 = comm is None or comm.rank == 0   # only rank 0 writes files and shows progress
    if args.checkpoint and rank0:
        hooks.append(callbacks.ModelCheckpoint(args.checkpoint))
    if not (args.no_progress or args.verbose) and rank0:
        hooks.append(callbacks.ProgressBar())
    augment = None
    if args.augment:
        pad, flip = AUGMENT[args.dataset]
        augment = RandomCropFlip(pad=pad, flip=flip, seed=args.seed)
    try:
        trainer = Trainer(network, x_train, t_train, x_test, t_test,
                          epochs=args.epochs, mini_batch_size=args.batch_size,
                          optimizer="Adam", optimizer_param={"lr": args.lr},
                          evaluate_sample_num_per_epoch=args.eval_samples or None,
                          verbose=args.verbose, exact_epochs=True, shuffle=args.shuffle,
                          epoch_callback=progress, x_val=x_val, t_val=t_val, augment=augment,
                          callbacks=hooks,
                          # the loss of the gradient pass: no extra forward per step (one process;
                          # across ranks the loss needs the textbook's reduced loss)
                          **({"loss_after_update": False} if comm is None else {"comm": comm}))
    except (TypeError, ValueError) as exc:
        _fail(str(exc))
    val = f" / {len(x_val)} validation" if x_val is not None else ""
    print(f"{type(network).__name__} ({args.dtype}) on {args.dataset}, {len(x_train)} training"
          f"{val} / {test_size} test images, {args.epochs} epochs x {trainer.iter_per_epoch} "
          f"steps of {args.batch_size}, Adam lr {args.lr}"
          + (f", {augment!r}" if augment else "")
          + (f", lr schedule {args.lr_schedule}" if args.lr_schedule else ""), flush=True)
    if comm is not None:
        from . import get_num_threads

        print(f"data-parallel: {comm.size} ranks x {get_num_threads()} threads, "
              f"{args.batch_size} images a step shared among them", flush=True)

    if args.compare_reference:
        compare_with_reference(network, x_train, t_train, args.batch_size, args.compare_reference)

    progress.start()
    try:
        steps = trainer.fit(max_steps=args.max_steps)
    except (TypeError, ValueError) as exc:   # a callback refusing its settings, before step one
        _fail(str(exc))
    if trainer.stop_reason:
        print(f"stopped after {steps} of {trainer.max_iter} steps: {trainer.stop_reason}")
    elif steps < trainer.max_iter:
        print(f"stopped after {steps} of {trainer.max_iter} steps (--max-steps)")

    test_acc = trainer.network.accuracy(x_test, t_test, args.batch_size, exact=True)
    print(f"final test acc {test_acc:.4f} ({round(test_acc * test_size)}/{test_size} images), "
          f"total {time.perf_counter() - progress.t0:.1f} s")
    if comm is not None and comm.rank != 0:
        return 0   # rank 0 saves and plots
    try:
        network.save_params(args.out)
    except OSError as exc:
        print(f"error: cannot save the parameters: {exc}", file=sys.stderr)
        return 1
    print(f"parameters saved to {args.out}")
    if args.checkpoint and os.path.exists(args.checkpoint):
        print(f"best validation epoch saved to {args.checkpoint}")
    if not args.no_plot:
        _plot(trainer, args.plot)
    return 0


def compare_with_reference(network, x, t, batch_size, steps):
    """Time ``steps`` training steps (gradient + Adam) of a copy of network and of a copy running on
    cnncore.reference, on the same batches; print both and the ratio. Leaves network and the global
    RNG as they were, so a seeded run trains exactly as it would without the comparison."""
    import copy

    from .bench import SETTLE_SECONDS, use_reference, warm_up
    from .optimizer import Adam

    state = np.random.get_state()
    try:
        times = {}
        for name, net in (("reference", use_reference(copy.deepcopy(network))),
                          ("cnncore", copy.deepcopy(network))):
            optimizer, samples = Adam(), []
            optimizer.compiled = name == "cnncore"   # the reference: the textbook's NumPy statements
            time.sleep(SETTLE_SECONDS)   # let the previous run's BLAS threads stop spinning
            warm_up(lambda: optimizer.update(net.params, net.gradient(x[:batch_size], t[:batch_size])))
            np.random.seed(0)
            for _ in range(steps):
                batch = np.random.choice(len(x), batch_size)
                start = time.perf_counter()
                optimizer.update(net.params, net.gradient(x[batch], t[batch]))
                samples.append(time.perf_counter() - start)
            times[name] = 1e3 * float(np.median(samples))
    finally:
        np.random.set_state(state)
    print(f"training step (gradient + Adam, batch {batch_size}), median of {steps}: reference "
          f"(NumPy) {times['reference']:.1f} ms, cnncore {times['cnncore']:.1f} ms, "
          f"{times['reference'] / times['cnncore']:.1f}x", flush=True)
    return times


class _EpochPrinter:
    """Trainer epoch_callback: one line per epoch with accuracies, loss, images/s and elapsed time."""

    def __init__(self, epochs):
        self.epochs = epochs

    def start(self):
        self.t0 = self.last = time.perf_counter()
        self.last_iter = 0

    def __call__(self, trainer):
        now = time.perf_counter()
        steps = trainer.current_iter + 1 - self.last_iter
        losses = trainer.train_loss_list[-steps:]
        # images/s: training images per second of the epoch, the evaluation included
        rate = steps * trainer.batch_size / max(now - self.last, 1e-9)
        print(f"epoch {trainer.current_epoch}/{self.epochs}: "
              f"train acc {float(trainer.train_acc_list[-1]):.4f}, "
              f"test acc {float(trainer.test_acc_list[-1]):.4f}, "
              + (f"val acc {trainer.val_acc_list[-1]:.4f}, " if trainer.val_acc_list else "")
              + f"loss {float(np.mean(losses)):.4f}, {rate:.0f} images/s, "
              f"elapsed {now - self.t0:.1f} s", flush=True)
        self.last, self.last_iter = now, trainer.current_iter + 1


def _plot(trainer, path):
    from . import visualize

    if not trainer.train_acc_list:
        print("no epoch finished: no plot")
        return
    try:
        visualize.plot_curves(trainer, path)
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)")
        return
    print(f"loss and accuracy curves written to {path}")


def evaluate_main(argv):
    parser = argparse.ArgumentParser(
        prog="python -m cnncore evaluate",
        description="Exact test accuracy of saved parameters on a dataset's test images, and "
                    "optionally its confusion matrix and misclassified images as PNGs.")
    parser.add_argument("--params", required=True, metavar="FILE",
                        help=".npz from 'train' or save_params (or a textbook .pkl with --pickle)")
    _common_options(parser)
    parser.add_argument("--test-size", type=int, metavar="N",
                        help="score only the first N test images (default: all)")
    parser.add_argument("--confusion", metavar="PNG", help="write the confusion matrix here")
    parser.add_argument("--misclassified", metavar="PNG",
                        help="write a grid of misclassified images (true -> predicted) here")
    parser.add_argument("--pickle", action="store_true",
                        help="allow a pickle file (the textbook's params.pkl); only for files you "
                             "trust, unpickling can run code")
    args = parser.parse_args(argv)
    _setup(parser, args)
    _check_outputs([("--confusion", args.confusion), ("--misclassified", args.misclassified)])
    if args.confusion or args.misclassified:
        try:
            import matplotlib  # noqa: F401  (fail now, not after the evaluation)
        except ImportError:
            _fail("--confusion / --misclassified need matplotlib: pip install matplotlib")

    from . import visualize
    from .datasets import CLASS_NAMES

    _, (x_test, t_test) = _load(args)
    x_test, t_test = x_test[:args.test_size], t_test[:args.test_size]
    network = build_network(args.network, args.dtype, x_test.shape[1:], 10)
    try:
        network.load_params(args.params, allow_pickle=args.pickle)
    except (OSError, ValueError) as exc:
        print(f"error: {str(exc).replace('pass allow_pickle=True', 'pass --pickle')}",
              file=sys.stderr)
        return 1
    start = time.perf_counter()
    predicted = visualize.predict_labels(network, x_test, args.batch_size)
    acc = float(np.mean(predicted == t_test))
    seconds = time.perf_counter() - start
    print(f"{type(network).__name__} ({args.dtype}) {args.params}: test acc {acc:.4f} "
          f"({round(acc * len(x_test))}/{len(x_test)} images, {seconds:.1f} s)")
    names = CLASS_NAMES[args.dataset]
    if args.confusion:
        visualize.plot_confusion_matrix(t_test, predicted, args.confusion, class_names=names)
        print(f"confusion matrix written to {args.confusion}")
    if args.misclassified:
        visualize.plot_misclassified(x_test, t_test, predicted, args.misclassified,
                                     class_names=names)
        print(f"misclassified images written to {args.misclassified}")
    return 0


def export_main(argv):
    """``cnncore export``: a trained network to ONNX and/or a PyTorch state dict."""
    parser = argparse.ArgumentParser(
        prog="python -m cnncore export",
        description="Export a trained network to ONNX (--onnx) and/or PyTorch (--torch: the "
                    "state dict of cnncore.export.to_torch(network), for torch.load).")
    parser.add_argument("--params", required=True, metavar="FILE",
                        help="a file written by network.save (architecture included), or "
                             "parameters from 'train' / save_params with --network")
    parser.add_argument("--network", choices=list(NETWORKS),
                        help="the network the parameters belong to (not needed for a "
                             "network.save file); " +
                             "; ".join(f"{name} = {text}" for name, (_, text) in NETWORKS.items()))
    parser.add_argument("--dtype", choices=["float32", "float64"],
                        help="dtype of the exported model (default: float64 with --network, "
                             "else the saved network's; onnxruntime runs float32 convolutions "
                             "only)")
    parser.add_argument("--pickle", action="store_true",
                        help="allow a pickle file (the textbook's params.pkl) with --network; only "
                             "for files you trust, unpickling can run code")
    parser.add_argument("--onnx", metavar="OUT", help="write an ONNX model here")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    parser.add_argument("--torch", metavar="OUT",
                        help="write a PyTorch state dict (torch.save) here")
    args = parser.parse_args(argv)
    if not (args.onnx or args.torch):
        parser.error("give --onnx OUT and/or --torch OUT")

    from . import export
    from .networks import Sequential

    try:
        if args.network:
            network = build_network(args.network, args.dtype or "float64")
            network.load_params(args.params, allow_pickle=args.pickle)
        else:
            network = Sequential.load(args.params)
        # Everything is converted (and so checked) before the first file is written.
        model = state = None
        if args.onnx:
            model = export._load_onnx().build_model(network, opset=args.opset, dtype=args.dtype)
        if args.torch:
            state = export._load_torch().torch_state_dict(network, dtype=args.dtype)
    except (OSError, ValueError, ImportError) as exc:
        message = str(exc).replace("pass allow_pickle=True", "pass --pickle")
        if not args.network and "no architecture" in message:
            message += " (or pass --network)"
        print(f"error: {message}", file=sys.stderr)
        return 1
    name = type(network).__name__
    try:
        if model is not None:
            export._load_onnx().write_model(model, args.onnx)
            print(f"{name} -> {args.onnx} (ONNX opset {args.opset}, input 'x', output 'scores')")
        if state is not None:
            export._load_torch().save_state_dict(state, args.torch)
            print(f"{name} -> {args.torch} (PyTorch state dict, {len(state)} tensors; "
                  f"model = cnncore.export.to_torch(network))")
    except OSError as exc:
        print(f"error: cannot write: {exc}", file=sys.stderr)
        return 1
    return 0
