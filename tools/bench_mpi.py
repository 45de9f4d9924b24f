"""Data-parallel training steps: one process x T threads against P MPI ranks x 1 thread.

    python tools/bench_mpi.py run [--ranks 2] [--threads 2] [--steps 40] [--json out.json]
    python tools/bench_mpi.py model --json out.json      # the cost model from a run's figures
    python tools/bench_mpi.py model                      # ... from BENCHMARKS.md's recorded steps

``run`` starts three configurations on the same global batch (100 MNIST-shaped images, Adam) for
SimpleConvNet and DeepConvNet in float32 and float64: ``python bench_mpi.py worker`` with
OMP_NUM_THREADS=1 and =T, and ``mpirun -n P --bind-to core bench_mpi.py worker`` with
OMP_NUM_THREADS=1.
Each worker times whole steps (DataParallelNetwork.gradient + Adam.update), the time a step spends
in the gradient all-reduce (waiting for the slowest rank included), and the all-reduce alone (the
same packed buffers, after a barrier, back to back). Prints a table: steps/s, ms/step, all-reduce
ms and its share of the step.

``model`` prints the ring all-reduce cost model: a ring moves 2(P-1)/P of the gradient bytes B
through each link per step, in 2(P-1) messages, so with link bandwidth bw and per-message latency a

    step(P) = T1 / P + 2 (P-1)/P * B / bw + 2 (P-1) * a

(T1 = one machine's step for the whole global batch, its compute assumed to split perfectly).
P machines beat one exactly when T1 > 2 B / bw + 2 P a; the best P is sqrt((T1 - 2 B / bw) / (2 a)).

Run it on a quiet machine: the two configurations compete for the same cores.
"""
import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time

NETWORKS = ("SimpleConvNet", "DeepConvNet")
DTYPES = ("float32", "float64")
BATCH = 100

# One machine's training step (gradient + Adam, batch 100, 2 threads) as BENCHMARKS.md's latest
# 2-thread table records it, ms; used by `model` when no run is given.
RECORDED_STEP_MS = {("SimpleConvNet", "float32"): 7.52, ("SimpleConvNet", "float64"): 15.83,
                    ("DeepConvNet", "float32"): 47.77, ("DeepConvNet", "float64"): 97.05}
# Links for the model: (name, bytes/s, per-message latency s)
LINKS = (("1 GbE", 125e6, 50e-6), ("10 GbE", 1.25e9, 20e-6), ("25 GbE", 3.125e9, 10e-6),
         ("100 Gb/s InfiniBand", 12.5e9, 2e-6))


def worker(steps):
    """Time data-parallel steps on this rank; rank 0 prints one JSON line."""
    import numpy as np

    from cnncore import get_num_threads, networks
    from cnncore.distributed import DataParallelNetwork, get_communicator
    from cnncore.optimizer import Adam

    comm = get_communicator()
    reduce_seconds = []
    allreduce = comm.allreduce_sum

    def timed_allreduce(buf):
        start = time.perf_counter()
        allreduce(buf)
        reduce_seconds[-1] += time.perf_counter() - start
        return buf

    comm.allreduce_sum = timed_allreduce
    rng = np.random.default_rng(0)
    x = rng.random((1000, 1, 28, 28), dtype=np.float32)
    t = rng.integers(0, 10, 1000)
    rows = []
    for name in NETWORKS:
        for dtype in DTYPES:
            np.random.seed(0)
            net = getattr(networks, name)(dtype=np.dtype(dtype))
            dp = DataParallelNetwork(net, comm)
            optimizer = Adam()
            samples = []
            for _ in range(steps + 5):   # the first 5 are warm-up
                idx = np.random.choice(len(x), BATCH)
                reduce_seconds.append(0.0)
                start = time.perf_counter()
                optimizer.update(dp.params, dp.gradient(x[idx], t[idx]))
                samples.append((time.perf_counter() - start, reduce_seconds[-1]))
            samples = samples[5:]
            pure = []
            if comm.size > 1:
                for buf in dp._packed.buffers.values():
                    for _ in range(5):
                        allreduce(buf)
                for _ in range(30):
                    comm.allreduce_sum(np.zeros(1))   # a barrier
                    start = time.perf_counter()
                    for buf in dp._packed.buffers.values():
                        allreduce(buf)
                    pure.append(time.perf_counter() - start)
            step = statistics.median(s for s, _ in samples)
            rows.append({
                "network": name, "dtype": dtype, "ranks": comm.size,
                "threads": get_num_threads(),
                "gradient_bytes": sum(v.nbytes for v in net.params.values()),
                "step_ms": 1e3 * step, "steps_per_s": 1 / step,
                "allreduce_in_step_ms": 1e3 * statistics.median(r for _, r in samples),
                "allreduce_alone_ms": 1e3 * statistics.median(pure) if pure else 0.0,
            })
    if comm.rank == 0:
        print(json.dumps(rows))


def _mpirun():
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    launcher = shutil.which("mpirun", path=path) or shutil.which("mpiexec", path=path)
    if launcher is None:
        sys.exit("no mpirun/mpiexec found: pip install 'cnncore[mpi]'")
    version = subprocess.run([launcher, "--version"], capture_output=True, text=True).stdout
    return [launcher, "--bind-to", "core"] if "Open MPI" in version else [launcher]


def run(args):
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    me = [sys.executable, os.path.abspath(__file__), "worker", "--steps", str(args.steps)]
    configurations = [
        ("1 x 1", me, dict(env, OMP_NUM_THREADS="1", CNNCORE_MPI="0")),
        (f"1 x {args.threads}", me, dict(env, OMP_NUM_THREADS=str(args.threads), CNNCORE_MPI="0")),
        (f"{args.ranks} x 1", _mpirun() + ["-n", str(args.ranks)] + me,
         dict(env, OMP_NUM_THREADS="1")),
    ]
    results = []
    for label, command, environment in configurations:
        time.sleep(1.0)   # let the previous run's threads go quiet
        out = subprocess.run(command, env=environment, check=True, capture_output=True,
                             text=True).stdout
        rows = json.loads(out.strip().splitlines()[-1])
        for row in rows:
            row["configuration"] = label
        results += rows
    print(f"{'network':14s} {'dtype':7s} {'ranks x threads':15s} {'steps/s':>8s} {'ms/step':>8s} "
          f"{'all-reduce in step ms':>21s} {'alone ms':>9s} {'share':>6s}")
    for row in results:
        print(f"{row['network']:14s} {row['dtype']:7s} {row['configuration']:15s} "
              f"{row['steps_per_s']:8.1f} {row['step_ms']:8.2f} {row['allreduce_in_step_ms']:21.2f} "
              f"{row['allreduce_alone_ms']:9.2f} "
              f"{100 * row['allreduce_alone_ms'] / row['step_ms']:5.1f}%")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


def step_model(t1, nbytes, p, bandwidth, latency):
    """Seconds per step on p machines under the ring model (module docstring)."""
    return t1 / p + 2 * (p - 1) / p * nbytes / bandwidth + 2 * (p - 1) * latency


def model(args):
    if args.json:
        with open(args.json) as f:
            rows = [r for r in json.load(f) if r["ranks"] == 1 and r["threads"] > 1]
        cases = {(r["network"], r["dtype"]): (r["step_ms"] / 1e3, r["gradient_bytes"]) for r in rows}
    else:
        from cnncore import networks

        cases = {}
        for (name, dtype), ms in RECORDED_STEP_MS.items():
            net = getattr(networks, name)(dtype=dtype)
            cases[name, dtype] = (ms / 1e3, sum(v.nbytes for v in net.params.values()))
    print(f"{'network':14s} {'dtype':7s} {'T1 ms':>6s} {'MB':>5s} {'pays above':>11s}  "
          + "  ".join(f"{name:>26s}" for name, _, _ in LINKS))
    for (name, dtype), (t1, nbytes) in cases.items():
        cells = []
        for _, bandwidth, latency in LINKS:
            if t1 <= 2 * nbytes / bandwidth + 4 * latency:
                cells.append(f"{'never (P=2 slower)':>26s}")
                continue
            best = max(2, min(BATCH, int(math.sqrt((t1 - 2 * nbytes / bandwidth) / (2 * latency)))))
            speedups = {p: t1 / step_model(t1, nbytes, p, bandwidth, latency)
                        for p in (2, 4, 8, best)}
            cells.append(f"x{speedups[2]:.2f}/x{speedups[4]:.2f}/x{speedups[8]:.2f} "
                         f"best P={best} x{speedups[best]:.1f}".rjust(26))
        print(f"{name:14s} {dtype:7s} {1e3 * t1:6.2f} {nbytes / 1e6:5.2f} "
              f"{2 * nbytes / t1 * 8 / 1e9:7.2f} Gb/s  " + "  ".join(cells))
    print("cells: speed-up over one machine at P = 2/4/8 and at the best P (capped at the batch, "
          "100); 'pays above': the link speed 2 B / T1 below which no P helps")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run")
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--json")
    p = sub.add_parser("worker")
    p.add_argument("--steps", type=int, default=40)
    p = sub.add_parser("model")
    p.add_argument("--json", help="a `run --json` file (its one-process rows give T1 and B)")
    args = parser.parse_args(argv)
    if args.command == "worker":
        worker(args.steps)
    elif args.command == "run":
        run(args)
    else:
        model(args)


if __name__ == "__main__":
    main()
