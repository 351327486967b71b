"""Array backends: NumPy on the CPU, CuPy on a GPU.

Every tensor carries an array of one backend; an op looks the backend up from its
inputs (``get_array_module``) and calls the same functions on either. CuPy is imported
only when a GPU is asked for, so the CPU path never needs it installed.

Also here: the dtype policy (float32 unless asked otherwise) and the random
generators that dropout, drop-path and the data pipeline draw from.
"""
from __future__ import annotations

import os

import numpy as np

_cupy = None  # the cupy module once a GPU has been asked for
_default_dtype = np.dtype(np.float32)


class DeviceError(RuntimeError):
    """A device was asked for that this machine cannot give."""


def _import_cupy():
    """Import CuPy on first use, with an error that names what is missing."""
    global _cupy
    if _cupy is None:
        fake = os.environ.get("NPVIT_FAKE_CUPY")
        try:
            if fake:  # the strict CPU stand-in of tests/fakecupy.py, so CI runs the GPU path
                import fakecupy

                cupy = fakecupy.install(fake)
            else:
                import cupy
        except ImportError as e:
            raise DeviceError(
                "NPVIT_FAKE_CUPY is set but tests/fakecupy.py is not on PYTHONPATH" if fake else
                "a GPU device was asked for but CuPy is not installed: "
                "pip install 'npvit[gpu]' (or cupy-cuda12x / cupy-cuda13x), or use --device cpu"
            ) from e
        try:
            count = cupy.cuda.runtime.getDeviceCount()
        except Exception as e:  # CUDA driver missing or broken
            raise DeviceError(f"CuPy is installed but no CUDA GPU is usable ({e}); use --device cpu") from e
        if count == 0:
            raise DeviceError("CuPy is installed but this machine has no CUDA GPU; use --device cpu")
        _probe(cupy)
        _cupy = cupy
    return _cupy


def _probe(cupy) -> None:
    """Launch a tiny kernel and a matmul, so missing CUDA libraries fail at start-up, not mid-step.

    CuPy loads NVRTC (elementwise kernels) and cuBLAS (matmul) on first use; without the
    probe a machine with only a driver would fail inside the first training step.
    """
    try:
        a = cupy.arange(4, dtype=cupy.float32).reshape(2, 2)
        float(((a * 2 + 1) @ a).sum())
    except Exception as e:
        why = " ".join(f"{type(e).__name__}: {e}".split())
        raise DeviceError(
            f"CuPy cannot run on this GPU ({why}); pip install 'npvit[gpu]' installs the CUDA libraries "
            "it needs (cupy-cuda12x[ctk] / cupy-cuda13x[ctk]), or use --device cpu"
        ) from e


def parse_device(device) -> tuple[str, int]:
    """Normalise 'cpu', 'gpu', 'gpu:N', 'cuda', 'cuda:N' to ('cpu', 0) or ('gpu', N)."""
    if device is None:
        return ("cpu", 0)
    name = str(device).strip().lower()
    if name == "cpu":
        return ("cpu", 0)
    kind, _, index = name.partition(":")
    if kind in ("gpu", "cuda"):
        if index == "":
            return ("gpu", 0)
        if index.isdigit():
            return ("gpu", int(index))
    raise DeviceError(f"unknown device {device!r}: use 'cpu', 'gpu' or 'gpu:N'")


def device_name(device) -> str:
    """The canonical string for a device: 'cpu' or 'gpu:N'."""
    kind, index = parse_device(device)
    return "cpu" if kind == "cpu" else f"gpu:{index}"


def xp_for(device):
    """The array module (numpy or cupy) for a device, making a GPU current if asked."""
    kind, index = parse_device(device)
    if kind == "cpu":
        return np
    cp = _import_cupy()
    if index >= cp.cuda.runtime.getDeviceCount():
        raise DeviceError(
            f"device gpu:{index} asked for but only {cp.cuda.runtime.getDeviceCount()} GPU(s) are visible"
        )
    cp.cuda.Device(index).use()
    return cp


def get_array_module(*arrays):
    """numpy or cupy, whichever the arrays belong to (numpy when CuPy was never loaded)."""
    if _cupy is None:
        return np
    return _cupy.get_array_module(*arrays)


def is_gpu_array(a) -> bool:
    """True for a CuPy array."""
    return _cupy is not None and isinstance(a, _cupy.ndarray)


def array_device(a) -> str:
    """The canonical device string of an array."""
    if is_gpu_array(a):
        return f"gpu:{a.device.id}"
    return "cpu"


def to_device(a, device):
    """Copy an array to a device (no copy when it is already there)."""
    target = device_name(device)
    if array_device(a) == target:
        return a
    if target == "cpu":
        return _cupy.asnumpy(a)
    cp = xp_for(target)
    with cp.cuda.Device(int(target.split(":")[1])):
        return cp.asarray(a)


def to_numpy(a) -> np.ndarray:
    """The array as a NumPy array on the host."""
    return _cupy.asnumpy(a) if is_gpu_array(a) else np.asarray(a)


def default_dtype() -> np.dtype:
    """The floating dtype new tensors get: float32 unless changed."""
    return _default_dtype


def set_default_dtype(dtype) -> None:
    """Change the floating dtype new tensors get (float64 for gradient checks)."""
    global _default_dtype
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise TypeError(f"default dtype must be a floating dtype, not {dtype}")
    _default_dtype = dtype


class default_dtype_as:
    """Context manager: ``with default_dtype_as(np.float64): ...``."""

    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)

    def __enter__(self):
        self.saved = default_dtype()
        set_default_dtype(self.dtype)

    def __exit__(self, *exc):
        set_default_dtype(self.saved)


# Random numbers. A run is repeatable and resumable when every random draw is a pure
# function of (seed, what it is for, step): generators are derived from those keys
# rather than carried along, so resuming at step s needs nothing but s.
_global_keys: tuple = (0,)
_global_generators: dict = {}


def derive_seed(*keys) -> int:
    """A 63-bit integer seed mixed from integer keys (SeedSequence, so close keys differ)."""
    state = np.random.SeedSequence([int(k) & 0xFFFFFFFFFFFFFFFF for k in keys]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def generator(*keys, device="cpu"):
    """A fresh random generator on a device, a pure function of the integer keys."""
    seed = derive_seed(*keys)
    xp = xp_for(device)
    return xp.random.default_rng(seed)


class LazyGenerator:
    """``generator(*keys, device=device)``, built at its first draw: a step that draws nothing builds none.

    On a GPU each build is a cuRAND set-up; a training step without dropout then costs none.
    """

    def __init__(self, *keys, device="cpu"):
        self._keys, self._device, self._generator = keys, device, None

    def __getattr__(self, name):
        if self._generator is None:
            self._generator = generator(*self._keys, device=self._device)
        return getattr(self._generator, name)


def manual_seed(*keys) -> None:
    """Reset the global generators (used by dropout when none is passed) from keys."""
    global _global_keys
    _global_keys = tuple(int(k) for k in keys)
    _global_generators.clear()


def global_generator(device="cpu"):
    """The global generator of a device, created from the keys of the last manual_seed."""
    name = device_name(device)
    g = _global_generators.get(name)
    if g is None:
        g = _global_generators[name] = generator(*_global_keys, device=name)
    return g


# --- host memory ------------------------------------------------------------------------
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters


def keep_freed_memory() -> str | None:
    """Ask glibc's malloc to keep freed memory for reuse (no trimming, no mmap up to 1 GiB); None, or why not.

    A training step makes and frees hundreds of megabytes of activations and gradients.
    By default glibc hands big freed blocks back to the kernel, and the next step pays
    for fresh pages again (page faults and zeroing); keeping them makes a NumPy step
    faster (BENCHMARKS.md). It applies to the whole process.
    """
    import ctypes
    import ctypes.util
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return "needs Linux with glibc"
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    if not (libc.mallopt(M_MMAP_THRESHOLD, 1 << 30) and libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1)):
        return "mallopt refused the settings"
    return None
