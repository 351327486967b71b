"""What every part of the data package shares: the error type, the in-memory data set,
the array-module lookup and the seeded generators.

A data set lives in memory as one uint8 array of images ``(N, C, H, W)`` and one int64
array of labels ``(N,)``; batching and augmentation index into those arrays, so the
whole pipeline runs on whichever device holds them (NumPy on the CPU, CuPy on a GPU).
"""
from __future__ import annotations

import sys
import zlib
from dataclasses import dataclass, field, replace

import numpy as np


class DataError(Exception):
    """A data problem the user can fix (missing files, bad checksum, corrupt archive, ...).

    The message is one line that says what went wrong and what to do; the command line
    prints it and exits with status 2.
    """


def array_module(a):
    """numpy or cupy, whichever ``a`` belongs to.

    CuPy is looked up in ``sys.modules`` rather than imported, so the CPU path never
    needs it installed: an array can only be a CuPy array if someone imported CuPy.
    """
    cupy = sys.modules.get("cupy")
    if cupy is not None and isinstance(a, cupy.ndarray):
        return cupy
    return np


def _key_int(key) -> int:
    """An integer for a generator key; strings hash with crc32, stable across processes."""
    if isinstance(key, str):
        return zlib.crc32(key.encode("utf-8"))
    return int(key) & 0xFFFFFFFFFFFFFFFF


def seed_generator(seed: int, *keys) -> np.random.Generator:
    """A NumPy generator that is a pure function of ``(seed, *keys)`` (ints or strings).

    SeedSequence mixes the keys, so ``(seed, "order", 3)`` and ``(seed, "order", 4)``
    give unrelated streams; this is how data order and augmentation stay reproducible
    and resumable without carrying generator state around.
    """
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([_key_int(k) for k in (seed, *keys)])))


@dataclass
class Dataset:
    """One split of a data set, held in memory.

    ``mean`` and ``std`` are per channel, on the [0, 1] scale, and always those of the
    *training* split (or a fixed convention), so train and test are normalised alike.
    """

    name: str
    split: str
    x: np.ndarray  # (N, C, H, W) uint8
    y: np.ndarray  # (N,) int64
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    coarse_y: np.ndarray | None = None  # (N,) int64, CIFAR-100's 20 superclasses
    coarse_classes: list[str] | None = field(default=None)

    def __post_init__(self):
        if self.x.ndim != 4 or self.x.dtype != np.uint8:
            raise ValueError(f"Dataset.x must be uint8 (N, C, H, W), got {self.x.dtype} {self.x.shape}")
        if self.y.shape != (self.x.shape[0],):
            raise ValueError(f"Dataset.y must have shape ({self.x.shape[0]},), got {self.y.shape}")
        if len(self.mean) != self.x.shape[1] or len(self.std) != self.x.shape[1]:
            raise ValueError("Dataset.mean and Dataset.std need one value per channel")

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def num_classes(self) -> int:
        """How many classes the labels index into."""
        return len(self.classes)

    @property
    def channels(self) -> int:
        """Image channels C."""
        return int(self.x.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        """Image height and width (H, W)."""
        return int(self.x.shape[2]), int(self.x.shape[3])

    def with_channels(self, channels: int) -> Dataset:
        """The same data with 1 or 3 channels; grey images are repeated into RGB."""
        if channels == self.channels:
            return self
        if self.channels == 1 and channels == 3:
            x = np.repeat(self.x, 3, axis=1)  # (N, 3, H, W)
            return replace(self, x=x, mean=self.mean * 3, std=self.std * 3)
        raise DataError(
            f"{self.name} has {self.channels} channel(s) and cannot be turned into {channels}; "
            "ask for 1 or 3 channels"
        )
