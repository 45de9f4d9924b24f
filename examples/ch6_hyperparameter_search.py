"""Chapter 6's random search for the learning rate and weight decay, tuned on a validation split.

    python examples/ch6_hyperparameter_search.py --data ../shared/data/mnist

As ``ch06/hyperparameter_optimization.py``: the first 500 MNIST training images, 20 % of them held
out for validation (never the test set), a 6-layer MultiLayerNet (100 units each) trained with SGD
for 50 epochs per trial, the learning rate drawn from 10^U(-6, -2) and the weight decay from
10^U(-8, -4). The best trials are printed by validation accuracy; only the winner is scored on the
test set, once, at the end. ``--trials`` sets how many (the textbook's 100 take a few minutes;
the default 30 well under one).
"""
import argparse
import time

import numpy as np

from cnncore.datasets import load_mnist, split_validation
from cnncore.networks import MultiLayerNet
from cnncore.trainer import Trainer


def trial(x_train, t_train, x_val, t_val, lr, weight_decay, epochs):
    network = MultiLayerNet(input_size=784, hidden_size_list=[100] * 6, output_size=10,
                            weight_decay_lambda=weight_decay)
    trainer = Trainer(network, x_train, t_train, x_val, t_val, epochs=epochs,
                      mini_batch_size=100, optimizer="sgd", optimizer_param={"lr": lr},
                      verbose=False, exact_epochs=True, x_val=x_val, t_val=t_val)
    trainer.fit()   # the training loop only: no test accuracy is looked at
    return network, trainer.val_acc_list


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="directory with the MNIST idx .gz files")
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    (x_train, t_train), (x_test, t_test) = load_mnist(path=args.data)
    x_train, t_train = x_train[:500], t_train[:500]          # the textbook's subset
    (x_train, t_train), (x_val, t_val) = split_validation(x_train, t_train, 0.2, rng=args.seed)

    rng = np.random.default_rng(args.seed)
    np.random.seed(args.seed)                                 # weight init and batches
    start = time.perf_counter()
    results = []
    for i in range(args.trials):
        lr = 10 ** rng.uniform(-6, -2)
        weight_decay = 10 ** rng.uniform(-8, -4)
        network, val_acc = trial(x_train, t_train, x_val, t_val, lr, weight_decay, args.epochs)
        results.append((val_acc[-1], lr, weight_decay, network))
        print(f"trial {i + 1:3d}: val acc {val_acc[-1]:.3f} | lr {lr:.2e}, weight decay "
              f"{weight_decay:.2e}", flush=True)

    results.sort(key=lambda r: r[0], reverse=True)
    print(f"\n=========== Hyper-Parameter Optimization Result ({time.perf_counter() - start:.1f} s)")
    for rank, (acc, lr, weight_decay, _) in enumerate(results[:5], 1):
        print(f"Best-{rank} (val acc:{acc:.3f}) | lr:{lr:.3e}, weight decay:{weight_decay:.3e}")
    best = results[0][3]
    print(f"test acc of the best trial (looked at once): "
          f"{best.accuracy(x_test, t_test):.4f}")


if __name__ == "__main__":
    main()
