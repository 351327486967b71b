"""Data-parallel training over processes: one process per device, launched by ``mpirun``.

    mpirun -np 4 python train.py --device gpu --dataset cifar10 --batch-size 512

Three communicators share one interface: ``Communicator`` is a single process (every
collective returns its input), ``MPICommunicator`` averages gradients with MPI on the
CPU (through ``mpi4py``), and ``NCCLCommunicator`` does it with NCCL on GPUs (through
CuPy's ``cupy.cuda.nccl``, the NCCL id shared over MPI; MPI still carries the few
host numbers and the abort). ``init()`` picks MPI when an MPI launcher started several
processes (it sets ``OMPI_COMM_WORLD_SIZE``, ``PMI_SIZE`` or ``MV2_COMM_WORLD_SIZE``),
or when asked to (``force``, the ``--distributed`` flag).

A run on N processes is the same experiment as on one (the trainer relies on what is
here):

- Each process takes a contiguous share of every global batch (``shard``); its loss is
  the mean over its share, and the gradients are averaged over the processes, so their
  sum is the gradient of the global batch's mean loss. Clipping and the optimizer then
  run on that global gradient, identically everywhere, so the parameters stay equal,
  and so does the moving average of them (``--ema``) that each process keeps for itself.
- Random draws are made for the whole global batch on every process, which keeps only
  its rows (``RowGenerator``): dropout and attention-dropout masks, drop-path,
  augmentation and the masked patches are then the draws one process would make for
  the same examples. (Drawing the whole batch's masks is the price: small next to the
  forward pass, but it does not shrink with more processes.) One draw still depends on
  the share: the random patch that masked patch prediction puts in place of 10% of the
  chosen ones is taken from the process's share rather than the whole batch.
- Gradients and a few numbers of the step (loss, correct, count) travel in one flat
  buffer and one all-reduce, so every process sees the same global loss and a
  non-finite one stops all of them at the same step.

The gradients are reduced after the backward pass, not bucket by bucket during it: the
engine has no hook that says when a parameter's gradient is final.
"""
from __future__ import annotations

import os
from contextlib import contextmanager

import numpy as np

from autograd import backend

# what MPI launchers set: Open MPI's mpirun, MPICH's and Intel MPI's hydra (and srun --mpi=pmi2), MVAPICH
LAUNCHER_SIZE_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE")


class DistributedError(Exception):
    """The processes cannot work together as asked (no mpi4py, no NCCL, ...); one line for the user."""


def launcher_world_size() -> int:
    """How many processes the MPI launcher started (1 when none did), from its environment."""
    for name in LAUNCHER_SIZE_VARIABLES:
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 1


def init(force: bool = False) -> "Communicator":
    """The communicator of this process: MPI when launched as one of several (or ``force``), else a single process."""
    size = launcher_world_size()
    if size <= 1 and not force:
        return Communicator()
    try:
        from mpi4py import MPI  # noqa: F401  (initialises MPI)
    except ImportError as e:
        raise DistributedError(
            f"training on several processes (MPI) needs mpi4py, which cannot be imported ({e}): "
            "pip install 'npvit[mpi]' (needs an MPI library, e.g. apt-get install openmpi-bin libopenmpi-dev)"
        ) from None
    return MPICommunicator()


def shard(n: int, rank: int, world_size: int) -> slice:
    """Process ``rank``'s contiguous share of ``n`` rows; shares differ by at most one row (as ``np.array_split``)."""
    base, extra = divmod(n, world_size)
    lo = rank * base + min(rank, extra)
    return slice(lo, lo + base + (rank < extra))


def shard_positions(batch_size: int, rank: int, world_size: int, mirror: bool = False) -> np.ndarray:
    """The rows of a global batch that process ``rank`` loads: its share and, with ``mirror``, the rows it mixes with.

    Mixup and cutmix mix example i of a batch with example B-1-i. With ``mirror`` the
    share of process world-1-r follows process r's own, so that mixing this extended
    batch with *its* mirror pairs each own example with its partner in the global
    batch; the process augments both and keeps the first ``len(share)`` rows.
    """
    own = np.arange(batch_size)[shard(batch_size, rank, world_size)]
    partners = batch_size - 1 - own[::-1]
    if not mirror or partners[0] == own[0]:  # the middle share of an odd world is its own mirror
        return own
    return np.concatenate([own, partners])


class RowGenerator:
    """A random generator that draws for a whole batch of ``total`` rows and returns only ``rows`` of each draw.

    Wraps a NumPy or CuPy ``Generator``. A draw with a shape must be per example (its
    first axis the number of ``rows``); a draw without one (a scalar, e.g. mixup's
    lambda) is the whole batch's and passes through. So the underlying stream moves as
    it would for one process drawing for the whole batch, whatever the share.
    """

    def __init__(self, generator, rows, total: int):
        self.generator, self.rows, self.total = generator, rows, int(total)
        self.count = len(range(total)[rows]) if isinstance(rows, slice) else len(rows)

    def _draw(self, method, size, **kwargs):
        if size is None or size == ():
            return method(size=size, **kwargs)
        size = (size,) if np.isscalar(size) else tuple(size)
        if size[0] != self.count:
            raise ValueError(f"a draw of shape {size} is not per example of this share of {self.count} rows")
        return method(size=(self.total,) + size[1:], **kwargs)[self.rows]

    def random(self, size=None, dtype=np.float64):
        """Uniform floats in [0, 1)."""
        return self._draw(self.generator.random, size, dtype=dtype)

    def standard_normal(self, size=None, dtype=np.float64):
        """Standard normal floats."""
        return self._draw(self.generator.standard_normal, size, dtype=dtype)

    def beta(self, a, b, size=None):
        """Beta(a, b) floats."""
        return self._draw(lambda size: self.generator.beta(a, b, size=size), size)

    def integers(self, low, high=None, size=None):
        """Integers in [low, high)."""
        return self._draw(lambda size: self.generator.integers(low, high, size=size), size)


class _Flat:
    """One contiguous buffer holding every parameter's worth of numbers in turn."""

    def __init__(self, params):
        xp = backend.get_array_module(params[0].data)
        self.buffer = xp.empty(sum(p.data.size for p in params), dtype=np.result_type(*(p.dtype for p in params)))
        self.views, offset = [], 0
        for p in params:
            self.views.append(self.buffer[offset: offset + p.data.size].reshape(p.shape))
            offset += p.data.size


class Communicator:
    """A single process: no communication, every collective gives back its input.

    Also the interface of ``MPICommunicator`` and ``NCCLCommunicator``: rank and world
    size, the device of this process, gradient averaging, parameter broadcast, sums of a
    few host numbers, and ending the whole job.
    """

    rank = 0
    world_size = 1
    local_rank = 0  # rank among the processes of this machine

    @property
    def is_main(self) -> bool:
        """True on rank 0, the process that writes the run directory and prints."""
        return self.rank == 0

    def pick_device(self, device) -> str:
        """The device this process trains on when ``device`` is asked for ('gpu' means gpu:0 here)."""
        return backend.device_name(device)

    def for_device(self, device) -> "Communicator":
        """The communicator that reduces arrays living on ``device``."""
        return self

    def average_gradients(self, flat, stats=()) -> list:
        """Average the gradient buffers of ``flat`` (``autograd.flat.FlatParameters``) over the processes, in place;
        return ``stats`` (0-d arrays or numbers) summed over them."""
        return list(stats)

    def broadcast_parameters(self, params) -> None:
        """Give every process rank 0's values of ``params``, in place."""

    def sum(self, values) -> np.ndarray:
        """A few host numbers summed over the processes, as float64."""
        return np.asarray(values, dtype=np.float64)

    def share(self, value):
        """Rank 0's ``value`` (a small picklable Python object) on every process."""
        return value

    @contextmanager
    def node_leader_first(self):
        """Run the block on each machine's first process before its others (one download per machine)."""
        yield

    def abort(self, code: int):
        """End every process of the job with exit status ``code``."""
        raise SystemExit(code)


class MPICommunicator(Communicator):
    """Processes of an MPI job (``mpi4py``'s ``COMM_WORLD`` by default); arrays on the host."""

    def __init__(self, comm=None):
        from mpi4py import MPI

        self.MPI = MPI
        self.comm = MPI.COMM_WORLD if comm is None else comm
        self.rank, self.world_size = self.comm.Get_rank(), self.comm.Get_size()
        self.node = self.comm.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)  # the processes of this machine
        self.local_rank, self.local_size = self.node.Get_rank(), self.node.Get_size()

    def pick_device(self, device) -> str:
        """'gpu' means one GPU per process: the local rank's (modulo the GPUs this process sees); 'gpu:N' stays."""
        kind, _ = backend.parse_device(device)
        if kind == "cpu" or str(device).strip().lower() not in ("gpu", "cuda"):
            return backend.device_name(device)
        try:  # counted without making any GPU current, which would open a context on it
            from cupy.cuda import runtime

            count = runtime.getDeviceCount()
        except Exception:  # no CuPy or no driver: backend.xp_for says which when the device is used
            return "gpu:0"
        return f"gpu:{self.local_rank % max(count, 1)}"  # modulo: the launcher may show each process its GPU alone

    def for_device(self, device) -> Communicator:
        """NCCL for GPU arrays, this communicator for host arrays."""
        if backend.parse_device(device)[0] == "gpu":
            return NCCLCommunicator(self.comm, device)
        return self

    def average_gradients(self, flat, stats=()) -> list:
        flat.gather_grads()
        for grads in flat.grads:  # one buffer per dtype, so a whole model is one collective
            self._allreduce(grads)
            grads *= 1.0 / self.world_size
        if not stats:
            return []
        xp = backend.get_array_module(flat.grads[0])
        summed = xp.stack([xp.asarray(s, dtype=np.float64) for s in stats])
        self._allreduce(summed)
        return list(summed)

    def broadcast_parameters(self, params) -> None:
        flat = _Flat(params)
        for p, view in zip(params, flat.views):
            view[...] = p.data
        self._broadcast(flat.buffer)
        for p, view in zip(params, flat.views):
            p.data[...] = view

    def _allreduce(self, buffer) -> None:
        """Sum ``buffer`` over the processes, in place."""
        self.comm.Allreduce(self.MPI.IN_PLACE, buffer, op=self.MPI.SUM)

    def _broadcast(self, buffer) -> None:
        """Copy rank 0's ``buffer`` into every process's, in place."""
        self.comm.Bcast(buffer, root=0)

    def sum(self, values) -> np.ndarray:
        values = np.array(values, dtype=np.float64)
        self.comm.Allreduce(self.MPI.IN_PLACE, values, op=self.MPI.SUM)
        return values

    def share(self, value):
        return self.comm.bcast(value, root=0)

    @contextmanager
    def node_leader_first(self):
        if self.local_rank:
            self.node.Barrier()
        yield
        if not self.local_rank:  # not reached when the leader fails: the abort path ends the waiting processes
            self.node.Barrier()

    def abort(self, code: int):
        self.comm.Abort(code)


class NCCLCommunicator(MPICommunicator):
    """Processes of an MPI job with one GPU each: gradients and parameters go through NCCL.

    Rank 0 makes the NCCL unique id and MPI broadcasts it; every process then joins the
    NCCL communicator on its own GPU. Collectives run on CuPy's current stream, so they
    are ordered with the kernels around them and nothing waits on the host.
    """

    def __init__(self, comm, device):
        super().__init__(comm)
        self.cp = backend.xp_for(device)  # makes the device current: NCCL binds the communicator to it
        from cupy.cuda import nccl

        if not nccl.available:
            raise DistributedError("this CuPy has no NCCL: pip install nvidia-nccl-cu12 (or the CUDA 13 one)")
        self.nccl = nccl
        self.types = {np.dtype(np.float16): nccl.NCCL_FLOAT16, np.dtype(np.float32): nccl.NCCL_FLOAT32,
                      np.dtype(np.float64): nccl.NCCL_FLOAT64}
        unique_id = self.share(nccl.get_unique_id() if self.rank == 0 else None)
        try:
            self.group = nccl.NcclCommunicator(self.world_size, unique_id, self.rank)
        except nccl.NcclError as e:
            raise DistributedError(f"NCCL could not start on {device} ({e}); run one process per GPU") from None

    def _allreduce(self, buffer) -> None:
        stream = self.cp.cuda.get_current_stream().ptr
        self.group.allReduce(buffer.data.ptr, buffer.data.ptr, buffer.size, self.types[buffer.dtype],
                             self.nccl.NCCL_SUM, stream)

    def _broadcast(self, buffer) -> None:
        stream = self.cp.cuda.get_current_stream().ptr
        self.group.bcast(buffer.data.ptr, buffer.size, self.types[buffer.dtype], 0, stream)
