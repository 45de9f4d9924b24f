"""Data-parallel training over MPI (mpi4py): one model, the global batch split across P processes.

    mpirun -n 2 cnncore train --network simple            # the command line
    mpirun -n 2 python my_script.py                        # a script using the API below

    from cnncore.distributed import DistributedTrainer
    trainer = DistributedTrainer(network, x_train, t_train, x_test, t_test, epochs=20,
                                 mini_batch_size=100, optimizer='Adam')   # Trainer's arguments
    trainer.train()
    if trainer.comm.rank == 0:
        network.save_params("params.npz")

How it works (every rank runs the same script on the whole data set):

- ``get_communicator()`` is MPI's COMM_WORLD when the process was started by an MPI launcher
  (mpirun, mpiexec, srun with PMI), else a one-process ``SerialCommunicator``: a plain run never
  imports mpi4py, and a script written for mpirun also runs on its own.
- ``DataParallelNetwork(network)`` broadcasts rank 0's parameters, BatchNorm running statistics
  (``network.buffers()``, where the network has them) and global ``np.random`` state, so the ranks
  start equal and draw the same global batch indices. ``gradient(x, t)`` takes the *global* batch,
  computes the gradient of this rank's contiguous slice of it (``shard_bounds``), weights it by
  local_n / global_n (SoftmaxWithLoss averages over the local batch) and sums it over the ranks in
  one all-reduce of a packed buffer per dtype; the running statistics ride in the same buffer,
  weighted alike, so they stay equal on every rank. Every rank then applies the same update.
  ``loss`` is the batch-weighted mean of the shard losses (one more all-reduce of one number);
  ``accuracy`` scores one share of the samples per rank and sums the counts.
- Results do not depend on P: the indices come from the same RNG on every rank and each rank takes
  its slice, so P ranks compute the one-process gradient up to the order of the sum (the tests
  hold float64 parameters after an epoch to 1e-10 relative). Two exceptions, as in any
  data-parallel engine:
  BatchNormalization normalises over each rank's shard, and Dropout draws its masks per rank.
- Random numbers: the network's own draws (Dropout) come from a per-rank stream that
  ``DataParallelNetwork`` swaps into ``np.random`` around each forward pass, so the global
  ``np.random`` is consumed by batch sampling alone and stays identical on every rank.
- Threads: under MPI each rank defaults to its share of the node's cores (cores // ranks on this
  node, at least 1) for cnncore's kernels and NumPy's BLAS, unless ``OMP_NUM_THREADS`` or
  ``cnncore.set_num_threads`` says otherwise.
- Failures: with more than one rank, an uncaught exception on any rank prints its traceback and
  calls ``MPI_Abort``, which ends every rank instead of leaving the others waiting in a collective
  (``abort_on_error`` does the same for a block of code, SystemExit included).

mpi4py and an MPI library are optional: ``pip install cnncore[mpi]`` (mpi4py and Open MPI's wheel).
"""
import contextlib
import os
import sys
import traceback

import numpy as np

from ._validate import check_int
from .trainer import Trainer

__all__ = ["launched_by_mpi", "get_communicator", "SerialCommunicator", "MPICommunicator",
           "shard_bounds", "DataParallelNetwork", "DistributedTrainer", "abort_on_error",
           "default_rank_threads"]

# Variables an MPI launcher sets in every process it starts (Open MPI, PMIx, MPICH/Intel MPI's
# Hydra and srun with PMI, MVAPICH).
_LAUNCHER_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE", "PMI_RANK",
                       "MV2_COMM_WORLD_SIZE")


def launched_by_mpi():
    """True when an MPI launcher (mpirun/mpiexec/srun) started this process.

    CNNCORE_MPI=1 or 0 overrides the guess (e.g. CNNCORE_MPI=0 to train one model per process).
    """
    forced = os.environ.get("CNNCORE_MPI", "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    return any(name in os.environ for name in _LAUNCHER_VARIABLES)


def _import_mpi():
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ImportError("data-parallel training needs mpi4py and an MPI library: "
                          "pip install 'cnncore[mpi]' (mpi4py + Open MPI's wheel)") from exc
    return MPI


def shard_bounds(n, rank, size):
    """(lo, hi): the contiguous slice of n items that rank (of size) takes; sizes differ by <= 1."""
    n, size = check_int(n, "n", 0), check_int(size, "size", 1)
    rank = check_int(rank, "rank", 0, size - 1)
    return rank * n // size, (rank + 1) * n // size


def default_rank_threads(local_size):
    """Kernel threads for one of local_size ranks on a node: its share of the cores, at least 1,
    and never more than the CPUs it is bound to (mpirun binds to cores by default for few ranks)."""
    try:
        bound = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        bound = os.cpu_count() or 1
    local_size = check_int(local_size, "local_size", 1)
    return max(1, min(bound, (os.cpu_count() or 1) // local_size))


def _check_buffer(buf, name="buf"):
    """MPI's buffer collectives work in place on a C-contiguous writeable array: refused here for
    one process too, so that a script that runs alone runs under mpirun."""
    if type(buf) is not np.ndarray or not buf.flags.c_contiguous or not buf.flags.writeable:
        raise TypeError(f"{name} must be a C-contiguous writeable numpy array (collectives work "
                        f"in place), got {type(buf).__name__}"
                        + (f" (contiguous={buf.flags.c_contiguous}, writeable={buf.flags.writeable})"
                           if isinstance(buf, np.ndarray) else ""))
    return buf


def _check_root(root, size):
    return check_int(root, "root", 0, size - 1)


class SerialCommunicator:
    """The communicator of a run without MPI: one rank, collectives are copies (no mpi4py)."""

    rank = 0
    size = 1
    local_size = 1

    def allreduce_sum(self, buf):
        """Sum buf over the ranks in place (one rank: nothing to do)."""
        return _check_buffer(buf)

    def bcast_array(self, buf, root=0):
        """Overwrite buf with root's buf, in place."""
        _check_root(root, self.size)
        return _check_buffer(buf)

    def bcast_object(self, obj, root=0):
        _check_root(root, self.size)
        return obj

    def allgather_object(self, obj):
        return [obj]

    def abort(self, code=1):
        """End the job: one process, so exit this one."""
        sys.stderr.flush()
        os._exit(code)


class MPICommunicator:
    """An mpi4py intracommunicator (COMM_WORLD by default) with the few collectives training needs.

    Creating one with more than one rank installs the abort-on-exception hook, and, on nodes running
    several ranks, sets each rank's default threads to its share of the cores (see the module
    docstring).
    """

    def __init__(self, comm=None):
        if comm is not None and not all(callable(getattr(comm, name, None)) for name in
                                        ("Get_rank", "Get_size", "Split_type", "Allreduce", "Bcast")):
            raise TypeError(f"comm must be an mpi4py intracommunicator (e.g. MPI.COMM_WORLD), "
                            f"got {comm!r}")
        MPI = _import_mpi()
        self._MPI = MPI
        self.comm = MPI.COMM_WORLD if comm is None else comm
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        node = self.comm.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)
        self.local_size = node.Get_size()
        node.Free()
        if self.size > 1:
            _install_abort_hook(self)
        if self.local_size > 1:
            _share_cores(self.local_size)

    def allreduce_sum(self, buf):
        """Sum buf (a contiguous array) over the ranks, in place; every rank gets the same bits."""
        self.comm.Allreduce(self._MPI.IN_PLACE, _check_buffer(buf), op=self._MPI.SUM)
        return buf

    def bcast_array(self, buf, root=0):
        self.comm.Bcast(_check_buffer(buf), root=_check_root(root, self.size))
        return buf

    def bcast_object(self, obj, root=0):
        return self.comm.bcast(obj, root=_check_root(root, self.size))

    def allgather_object(self, obj):
        return self.comm.allgather(obj)

    def abort(self, code=1):
        """MPI_Abort: ends every rank of the job (the launcher reports it)."""
        sys.stderr.flush()
        sys.stdout.flush()
        self.comm.Abort(code)


_world = None


def get_communicator(comm=None):
    """The communicator to train on.

    None: COMM_WORLD when launched by MPI (created once per process), else a SerialCommunicator.
    An mpi4py communicator is wrapped; a SerialCommunicator or MPICommunicator is returned as is.
    """
    global _world
    if isinstance(comm, (SerialCommunicator, MPICommunicator)):
        return comm
    if comm is not None:
        return MPICommunicator(comm)
    if not launched_by_mpi():
        return SerialCommunicator()
    if _world is None:
        _world = MPICommunicator()
    return _world


def _share_cores(local_size):
    """Default this rank's kernel and BLAS threads to its share of the node, unless the user chose."""
    from . import _threads

    if _threads._num_threads is not None or os.environ.get("OMP_NUM_THREADS"):
        return
    n = default_rank_threads(local_size)
    _threads.set_num_threads(n)
    for _, _, set_threads in _threads._blas():
        set_threads(n)


def _report_and_abort(comm, exc_type, exc, tb):
    sys.stdout.flush()
    traceback.print_exception(exc_type, exc, tb, file=sys.stderr)
    print(f"cnncore: rank {comm.rank} of {comm.size} failed ({exc_type.__name__}); aborting "
          f"the job", file=sys.stderr)
    comm.abort(1)


def _install_abort_hook(comm):
    previous = sys.excepthook

    def hook(exc_type, exc, tb):
        _report_and_abort(comm, exc_type, exc, tb)

    hook.previous = previous
    sys.excepthook = hook


@contextlib.contextmanager
def abort_on_error(comm=None):
    """Run a block; if it raises (SystemExit with a non-zero code included), print the error and
    abort the whole MPI job. Does nothing special with one rank."""
    comm = get_communicator(comm)
    try:
        yield comm
    except SystemExit as exc:
        if comm.size > 1 and exc.code not in (None, 0):
            sys.stdout.flush()
            print(f"cnncore: rank {comm.rank} of {comm.size} exited with {exc.code!r}; aborting "
                  f"the job", file=sys.stderr)
            comm.abort(exc.code if isinstance(exc.code, int) else 1)
        raise
    except BaseException as exc:
        if comm.size > 1:
            _report_and_abort(comm, type(exc), exc, exc.__traceback__)
        raise


# ---------------------------------------------------------------------------------- packing buffers

class _Packed:
    """Arrays grouped by dtype into one contiguous buffer per dtype (keys in a fixed order), so a
    collective moves each group in one call."""

    def __init__(self, arrays):
        self.layout = {}     # dtype -> [(key, offset, shape)]
        sizes = {}
        for key, value in arrays.items():
            dtype = np.dtype(value.dtype)
            if dtype.kind != "f":
                raise TypeError(f"{key} must be a floating-point array to be reduced, got {dtype}")
            offset = sizes.get(dtype, 0)
            self.layout.setdefault(dtype, []).append((key, offset, value.shape))
            sizes[dtype] = offset + value.size
        self.buffers = {dtype: np.empty(size, dtype) for dtype, size in sizes.items()}

    def pack(self, arrays, weight=None):
        for dtype, entries in self.layout.items():
            buf = self.buffers[dtype]
            for key, offset, shape in entries:
                view = buf[offset:offset + int(np.prod(shape))].reshape(shape)
                if weight is None:
                    view[...] = arrays[key]
                else:
                    np.multiply(arrays[key], weight, out=view, casting="unsafe")
        return self

    def views(self):
        out = {}
        for dtype, entries in self.layout.items():
            buf = self.buffers[dtype]
            for key, offset, shape in entries:
                out[key] = buf[offset:offset + int(np.prod(shape))].reshape(shape)
        return out


def _buffers(network):
    """The network's non-parameter state (the layer contract's buffers()), {} if it has none."""
    buffers = network.buffers() if hasattr(network, "buffers") else {}
    return {key: value for key, value in buffers.items() if value is not None}


def _signature(arrays):
    return [(key, tuple(value.shape), str(value.dtype)) for key, value in arrays.items()]


# --------------------------------------------------------------------------------------- the network

class DataParallelNetwork:
    """Wrap ``network`` so that ``gradient``, ``loss`` and ``accuracy`` run data-parallel.

    Construction broadcasts rank 0's parameters, buffers and ``np.random`` state (a collective:
    every rank must construct it). Then, on every rank, with the *global* batch:

    - ``gradient(x, t)``: the gradient of the whole batch, computed a slice per rank and summed in
      one all-reduce; returned arrays are reused by the next call (like the textbook's dW).
    - ``loss(x, t)``: the loss of the whole batch (each rank's slice, batch-weighted).
    - ``accuracy(x, t, ...)``: the network's accuracy of (x, t), samples shared among the ranks in
      whole evaluation batches, so it equals the one-process value.
    - ``shard(*arrays)``: this rank's slices of arrays holding a global batch.
    - ``reduce_gradients(grads, local_n, global_n)``: the all-reduce step alone, for a loop that
      computes its shard's gradient itself.

    Anything else (``params``, ``predict``, ``save_params``, ``layers``...) is the network's own.
    """

    def __init__(self, network, comm=None):
        if not isinstance(getattr(network, "params", None), dict) or not all(
                callable(getattr(network, name, None)) for name in ("gradient", "loss")):
            raise TypeError(f"network must have a params dict and gradient(x, t) and loss(x, t) "
                            f"methods, got {type(network).__name__}")
        self.network = network
        self.comm = get_communicator(comm)
        self._packed, self._packed_keys = None, None
        self._grad_keys = list(network.params)
        self._broadcast_state()
        state = np.random.get_state()
        # This rank's stream for the network's own draws (Dropout): seeded from the shared state and
        # the rank, so a seeded run is reproducible and ranks draw different masks.
        self._net_rng = np.random.RandomState(
            np.random.SeedSequence([int(w) for w in state[1][:8]],
                                   spawn_key=(self.comm.rank,)).generate_state(8))

    def __getattr__(self, name):
        if name == "network":   # not set yet (e.g. during unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.network, name)

    # --------------------------------------------------------------------------- start equal
    def _broadcast_state(self):
        comm = self.comm
        params, buffers = self.network.params, _buffers(self.network)
        mine = (_signature(params), _signature(buffers))
        signatures = comm.allgather_object(mine)
        for rank, theirs in enumerate(signatures):
            if theirs != signatures[0]:
                raise ValueError(f"the network on rank {rank} differs from rank 0's: parameters "
                                 f"and buffers (key, shape, dtype) {theirs} against "
                                 f"{signatures[0]}")
        np.random.set_state(comm.bcast_object(np.random.get_state()))
        if comm.size == 1:
            return
        for arrays, assign in ((params, self._assign_params), (buffers, self._assign_buffers)):
            if not arrays:
                continue
            packed = _Packed(arrays).pack(arrays)
            for buf in packed.buffers.values():
                comm.bcast_array(buf)
            assign(packed.views())

    def _assign_params(self, values):
        for key, value in values.items():
            self.network.params[key][...] = value   # in place: the layers hold these arrays

    def _assign_buffers(self, values):
        self.network.load_buffers({key: value.copy() for key, value in values.items()})

    # --------------------------------------------------------------------------- sharding
    def local_bounds(self, n):
        """(lo, hi): this rank's slice of a global batch of n samples."""
        return shard_bounds(n, self.comm.rank, self.comm.size)

    def shard(self, *arrays):
        """This rank's slice of each array (all hold the same global batch along axis 0)."""
        lo, hi = self.local_bounds(len(arrays[0]))
        shards = tuple(a[lo:hi] for a in arrays)
        return shards[0] if len(shards) == 1 else shards

    @contextlib.contextmanager
    def _own_rng(self):
        """np.random is this rank's network stream inside the block, the shared one outside."""
        shared = np.random.get_state()
        np.random.set_state(self._net_rng.get_state())
        try:
            yield
        finally:
            self._net_rng.set_state(np.random.get_state())
            np.random.set_state(shared)

    # --------------------------------------------------------------------------- the step
    def gradient(self, x, t):
        """Gradients of the loss of the global batch (x, t), keyed like params, equal on all ranks."""
        n = len(x)
        x_local, t_local = self.shard(x, t)
        if len(x_local):
            with self._own_rng():
                grads = self.network.gradient(x_local, t_local)
        else:   # more ranks than samples in this batch: this rank adds nothing
            grads = {key: np.zeros_like(self.network.params[key]) for key in self._grad_keys}
        return self.reduce_gradients(grads, len(x_local), n)

    def reduce_gradients(self, grads, local_n, global_n):
        """Sum over the ranks of grads * local_n / global_n (each rank's grads being the mean over
        its local_n samples), with the network's buffers averaged the same way in the same
        all-reduce. Returns the summed gradients (arrays reused by the next call); the averaged
        buffers are loaded into the network."""
        global_n = check_int(global_n, "global_n", 1)
        local_n = check_int(local_n, "local_n", 0, global_n)
        missing = [key for key in self._grad_keys if key not in grads]
        if missing:
            raise ValueError(f"grads must hold a gradient for every parameter; missing {missing}")
        buffers = _buffers(self.network)
        if global_n < self.comm.size:
            # Some rank has no samples, so its BatchNorm layers may not have run yet: every rank
            # takes the buffer layout of the last rank, which always has samples.
            layout = self.comm.bcast_object(_signature(buffers), root=self.comm.size - 1)
            if local_n == 0:
                buffers = {key: np.zeros(shape, dtype) for key, shape, dtype in layout}
        arrays = {("grad", key): grads[key] for key in self._grad_keys}
        arrays.update({("buffer", key): value for key, value in buffers.items()})
        if self.comm.size == 1 and local_n == global_n:
            return {key: grads[key] for key in self._grad_keys}
        if self._packed_keys != _signature(arrays):   # buffers appear after the first forward
            self._packed, self._packed_keys = _Packed(arrays), _signature(arrays)
        self._packed.pack(arrays, local_n / global_n)
        for buf in self._packed.buffers.values():
            self.comm.allreduce_sum(buf)
        reduced = self._packed.views()
        if buffers:
            self._assign_buffers({key: reduced["buffer", key] for key in buffers})
        return {key: reduced["grad", key] for key in self._grad_keys}

    def loss(self, x, t, *args, **kwargs):
        """Loss of the global batch: sum over the ranks of local loss * local_n / n."""
        n = len(x)
        x_local, t_local = self.shard(x, t)
        total = np.zeros(1)
        dtype = np.result_type(*self.network.params.values())
        if len(x_local):
            with self._own_rng():
                local = self.network.loss(x_local, t_local, *args, **kwargs)
            dtype = np.asarray(local).dtype
            total[0] = float(local) * (len(x_local) / n)
        if self.comm.size > 1:
            self.comm.allreduce_sum(total)
        return dtype.type(total[0])

    def accuracy(self, x, t, *args, **kwargs):
        """The network's accuracy(x, t, ...) of the whole set, evaluated a share per rank.

        Shares are whole evaluation batches (the accuracy's batch_size, default 100); the last rank
        also takes the remainder, so the textbook's rule (a partial last batch counts as wrong unless
        exact=True) gives the one-process value.
        """
        n = len(x)
        if self.comm.size == 1 or n == 0:
            return self.network.accuracy(x, t, *args, **kwargs)
        batch = check_int(kwargs.get("batch_size", args[0] if args else 100), "batch_size", 1)
        n_batches = n // batch
        lo, hi = (b * batch for b in shard_bounds(n_batches, self.comm.rank, self.comm.size))
        if self.comm.rank == self.comm.size - 1:
            hi = n
        count = np.zeros(1)
        if hi > lo:
            acc = self.network.accuracy(x[lo:hi], t[lo:hi], *args, **kwargs)
            count[0] = round(float(acc) * (hi - lo))   # acc is count / (hi - lo): exact
        self.comm.allreduce_sum(count)
        return np.float64(count[0]) / n


# --------------------------------------------------------------------------------------- the trainer

class DistributedTrainer(Trainer):
    """The textbook Trainer (same arguments, same attributes), data-parallel over ``comm``.

    Every rank constructs it with the same arguments and the whole data set. The global batch is
    ``mini_batch_size``; batches are drawn from np.random as the Trainer does, identically on every
    rank (rank 0's state is broadcast), and each rank computes its slice (see DataParallelNetwork).
    Only rank 0 prints (``verbose``); ``epoch_callback`` runs on every rank. ``trainer.network`` is
    the DataParallelNetwork, ``trainer.network.network`` the network given.

    Keyword ``comm``: None (COMM_WORLD under mpirun, else one process), an mpi4py communicator, or a
    communicator from get_communicator.
    """

    def __init__(self, network, x_train, t_train, x_test, t_test, *args, comm=None, **kwargs):
        self.comm = get_communicator(comm)
        if not isinstance(network, DataParallelNetwork):
            network = DataParallelNetwork(network, self.comm)
        super().__init__(network, x_train, t_train, x_test, t_test, *args, **kwargs)
        self.verbose = self.verbose and self.comm.rank == 0
