"""The Tensor: an array, its gradient, and the node of the op that made it.

This file defines what a Tensor holds. ``engine.py`` (read it first) defines how ops
record the graph and binds ``backward()``; ``ops/__init__.py`` binds the operators
(``+ - * / ** @ [] > <``) and the array methods (``sum``, ``reshape``, ``to``, ...) to
the ops that compute them. Both import this file and it imports neither, so there is
no import loop.
"""
from __future__ import annotations

import numpy as np

from . import backend


def _is_float(dtype) -> bool:
    return np.dtype(dtype).kind == "f"


def as_tensor_like(x, others=()):
    """``x`` as a Tensor; a bare number takes the dtype and device of the first tensor in ``others``."""
    if isinstance(x, Tensor):
        return x
    ref = next((o for o in others if isinstance(o, Tensor)), None)
    if ref is not None and np.isscalar(x):
        xp = backend.get_array_module(ref.data)
        dtype = ref.dtype if (_is_float(ref.dtype) or isinstance(x, (int, np.integer))) else backend.default_dtype()
        return Tensor(xp.asarray(x, dtype=dtype))
    if ref is not None:
        return Tensor(x, device=ref.device)
    return Tensor(x)


class Tensor:
    """An n-dimensional array with an optional gradient and the op that made it."""

    __slots__ = ("data", "grad", "requires_grad", "_node", "_output", "__weakref__")
    __array_priority__ = 1000  # numpy scalars/arrays on the left defer to Tensor's operators

    def __init__(self, data, requires_grad=False, dtype=None, device=None):
        if isinstance(data, Tensor):
            data = data.data
        if not (isinstance(data, (np.ndarray, np.generic)) or backend.is_gpu_array(data)):
            data = np.asarray(data)
            if data.dtype.kind == "f":  # Python floats are float64; the policy says float32
                data = data.astype(backend.default_dtype())
        if device is not None:
            data = backend.to_device(data, device)
        xp = backend.get_array_module(data)
        data = xp.asarray(data, dtype=dtype)
        if requires_grad and not _is_float(data.dtype):
            raise TypeError(f"only floating tensors can require gradients, not {data.dtype}")
        self.data = data
        self.grad = None
        self.requires_grad = bool(requires_grad)
        self._node = None
        self._output = 0  # which output of its node's op this tensor is

    # --- basic properties -------------------------------------------------------
    @property
    def shape(self):
        return self.data.shape

    @property
    def ndim(self):
        return self.data.ndim

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def size(self):
        return self.data.size

    @property
    def device(self) -> str:
        return backend.array_device(self.data)

    @property
    def xp(self):
        """The array module of this tensor's data."""
        return backend.get_array_module(self.data)

    @property
    def is_leaf(self) -> bool:
        """True for tensors made by the user rather than by an op."""
        return self._node is None

    def __len__(self):
        return len(self.data)

    def __repr__(self):
        grad = ", requires_grad=True" if self.requires_grad else ""
        dev = "" if self.device == "cpu" else f", device='{self.device}'"
        return f"Tensor({backend.to_numpy(self.data)!r}{grad}{dev})"

    def numpy(self) -> np.ndarray:
        """The data as a host NumPy array (a copy from the GPU when needed)."""
        return backend.to_numpy(self.data)

    def item(self):
        """The value of a one-element tensor as a Python number."""
        return self.numpy().item()

    def detach(self) -> "Tensor":
        """The same data with no history and no gradient."""
        return Tensor(self.data)

    def requires_grad_(self, flag=True) -> "Tensor":
        """Set requires_grad in place (leaves only) and return self."""
        if flag and not _is_float(self.dtype):
            raise TypeError(f"only floating tensors can require gradients, not {self.dtype}")
        self.requires_grad = bool(flag)
        return self

    def zero_grad(self) -> None:
        """Forget the accumulated gradient."""
        self.grad = None


def tensor(data, requires_grad=False, dtype=None, device=None) -> Tensor:
    """Make a tensor: numbers and lists become the default float dtype, arrays keep theirs."""
    return Tensor(data, requires_grad=requires_grad, dtype=dtype, device=device)
