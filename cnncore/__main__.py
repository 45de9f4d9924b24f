"""python -m cnncore COMMAND [options]

Commands:
  info        version, compiled kernels, OpenMP and thread settings, NumPy's BLAS
  train       train SimpleConvNet / DeepConvNet / LeNet5 on MNIST (see: train --help)
  evaluate    test accuracy of saved parameters (see: evaluate --help)
  bench       compiled kernels vs the NumPy references (see: bench --help)
  export      a trained network to ONNX / PyTorch (see: export --help)
"""
import importlib
import sys

COMMANDS = {
    "info": "cnncore._info",
    "train": "cnncore.cli",
    "evaluate": "cnncore.cli",
    "bench": "cnncore.bench",
    "export": "cnncore.cli",
}


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(__doc__.strip())
        if argv and argv[0] not in ("-h", "--help"):
            print(f"\nunknown command: {argv[0]}", file=sys.stderr)
            return 2
        return 0
    module = importlib.import_module(COMMANDS[argv[0]])
    return getattr(module, f"{argv[0]}_main")(argv[1:]) or 0


if __name__ == "__main__":
    sys.exit(main())
