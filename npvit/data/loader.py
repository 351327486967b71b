"""Shuffled mini-batches of an in-memory data set, resumable at any batch.

The order of epoch ``e`` is a permutation drawn from ``seed_generator(seed, "order", e)``,
a pure function of (seed, epoch); a batch is a slice of it, and its augmentation
generator comes from ``(seed, "augment", epoch, batch, rank)``. So the whole stream is
determined by the seed, and resuming needs only the position ``(epoch, batch_index)``.

With ``world_size`` processes each one takes a contiguous share of every *global* batch:
the global batches, and hence what the job as a whole sees, depend on the seed alone,
not on how many processes share the work.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .core import DataError, array_module, seed_generator


@dataclass
class Batch:
    """One (per-process) mini-batch and where it sits in the stream."""

    x: object  # (b, C, H, W) uint8, on the device of the data set
    y: object  # (b,) int64
    epoch: int
    index: int  # batch index within the epoch
    rng: np.random.Generator  # for this batch's augmentation: a function of (seed, epoch, index, rank)


class Loader:
    """Iterate over mini-batches of ``(x, y)`` (NumPy or CuPy arrays, indexed on their device).

    ``batch_size`` is the global batch; each of ``world_size`` processes gets
    ``batch_size // world_size`` of it. ``drop_last`` drops the final short batch of an
    epoch (on for training, so every step has the same shape; off for evaluation).
    """

    def __init__(self, x, y, batch_size: int, *, seed: int = 0, shuffle: bool = True, drop_last: bool = True,
                 rank: int = 0, world_size: int = 1):
        if len(x) != len(y):
            raise ValueError(f"x has {len(x)} examples but y has {len(y)}")
        if batch_size <= 0 or batch_size % world_size:
            raise ValueError(f"batch size {batch_size} must be positive and divisible by world size {world_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside 0..{world_size - 1}")
        self.x, self.y = x, y
        self.batch_size, self.seed, self.shuffle, self.drop_last = batch_size, seed, shuffle, drop_last
        self.rank, self.world_size = rank, world_size
        self.epoch, self.batch_index = 0, 0
        self._order = (None, None)  # (epoch, order) of the last epoch asked for
        if len(self) == 0:
            raise DataError(f"{len(x)} examples make no full batch of {batch_size}; lower the batch size")

    def __len__(self) -> int:
        """Batches per epoch."""
        n = len(self.x)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    @property
    def position(self) -> tuple[int, int]:
        """(epoch, batch_index) of the next batch."""
        return self.epoch, self.batch_index

    def seek(self, epoch: int, batch_index: int = 0) -> None:
        """Make ``(epoch, batch_index)`` the next batch (an index past the end starts the next epoch)."""
        epoch, batch_index = epoch + batch_index // len(self), batch_index % len(self)
        self.epoch, self.batch_index = int(epoch), int(batch_index)

    def state_dict(self) -> dict:
        """The resume position and what it depends on, as plain ints (for JSON metadata)."""
        return {"epoch": self.epoch, "batch_index": self.batch_index, "seed": self.seed, "batch_size": self.batch_size}

    def load_state_dict(self, state: dict) -> None:
        """Resume at a position saved by ``state_dict``; the seed and batch size must match."""
        if state["seed"] != self.seed or state["batch_size"] != self.batch_size:
            raise ValueError(
                f"loader state is for seed {state['seed']} and batch size {state['batch_size']}, "
                f"not {self.seed} and {self.batch_size}: the data order would differ"
            )
        self.seek(state["epoch"], state["batch_index"])

    def order(self, epoch: int) -> np.ndarray:
        """The example order of ``epoch`` (N,) int64: a pure function of (seed, epoch)."""
        if self._order[0] != epoch:
            n = len(self.x)
            if self.shuffle:
                order = seed_generator(self.seed, "order", epoch).permutation(n).astype(np.int64)
            else:
                order = np.arange(n, dtype=np.int64)
            self._order = (epoch, order)
        return self._order[1]

    def indices(self, epoch: int, batch_index: int, positions=None) -> np.ndarray:
        """This process's example indices in batch ``batch_index`` of ``epoch``.

        ``positions`` (indices into the global batch) picks those examples instead of the
        process's share; the trainer chooses each process's rows itself this way.
        """
        order = self.order(epoch)
        global_batch = order[batch_index * self.batch_size:(batch_index + 1) * self.batch_size]
        if positions is not None:
            return global_batch[positions]
        return np.array_split(global_batch, self.world_size)[self.rank]

    def batch(self, epoch: int, batch_index: int, positions=None) -> Batch:
        """Batch ``batch_index`` of ``epoch``, without moving the position; ``positions`` as in ``indices``."""
        idx = self.indices(epoch, batch_index, positions)
        dev_idx = array_module(self.x).asarray(idx)  # indices on the data set's device
        rng = seed_generator(self.seed, "augment", epoch, batch_index, self.rank)
        return Batch(self.x[dev_idx], self.y[dev_idx], epoch, batch_index, rng)

    def __iter__(self):
        return self

    def __next__(self) -> Batch:
        """The batch at the position, then the position moves on (into the next epoch at its end)."""
        b = self.batch(self.epoch, self.batch_index)
        self.seek(self.epoch, self.batch_index + 1)
        return b

    def epoch_batches(self):
        """Yield the remaining batches of the current epoch; afterwards the position is the next epoch."""
        epoch = self.epoch
        while self.epoch == epoch:
            yield next(self)
