"""Every differentiable op, as functions on Tensors (the functional API, like ``torch.nn.functional``).

Primitive ops (elementwise, reductions, shape, matmul) compose into anything; the fused
ops (linear, layer_norm, gelu, softmax, attention, conv2d, ...) are single Functions with
a hand-derived backward, which is what makes the ViT fast and its gradients readable.
"""
import numpy as np

from .. import backend
from ..tensor import Tensor as _Tensor  # private, so that ``ops`` lists only ops
from .attention import *  # noqa: F401,F403
from .conv import *  # noqa: F401,F403
from .elementwise import (  # noqa: F401
    add, astype, div, exp, greater, log, maximum, mul, neg, pow, relu, sqrt, sub, tanh, to_device_op, where,
)
from .fused import *  # noqa: F401,F403
from .linalg import matmul  # noqa: F401
from .reduce import max, mean, sum, var  # noqa: F401
from .resize import *  # noqa: F401,F403
from .shape import (  # noqa: F401
    broadcast_to, concatenate, getitem, pad, permute, reshape, split, stack, swapaxes, transpose, unbind,
)

# --- Tensor's operators and methods, bound once, here ------------------------------
# tensor.py says what a Tensor holds; what can be done with one is bound below, so that
# tensor.py needs no import of the ops (which import it).


def _reflected(op):
    """``op`` with its operands exchanged, for the reflected operators: ``2 - t`` is ``sub(2, t)``."""
    def reflected(a, b):
        return op(b, a)

    return reflected


def _as_tuple(args):
    """``t.reshape(2, 3)`` and ``t.reshape((2, 3))`` alike: the arguments as one tuple."""
    return tuple(args[0]) if len(args) == 1 and isinstance(args[0], (tuple, list)) else args


def _reshape(self, *shape):
    """The same elements in a new shape, ``t.reshape(2, -1)`` or ``t.reshape((2, -1))``."""
    return reshape(self, _as_tuple(shape))


def _transpose(self, *axes):
    """Permute the axes into ``axes`` order (reverse them when none are given)."""
    return transpose(self, _as_tuple(axes) or None)


def _flatten(self, start_axis=0):
    """Merge the axes from ``start_axis`` on into one."""
    return reshape(self, self.shape[:start_axis] + (-1,))


def _to(self, device=None, dtype=None):
    """A copy on another device and/or dtype (self when nothing changes); differentiable."""
    out = self
    if device is not None and backend.device_name(device) != self.device:
        out = to_device_op(out, device)
    if dtype is not None and np.dtype(dtype) != out.dtype:
        out = astype(out, dtype)
    return out


def _astype(self, dtype):
    """A differentiable cast to another dtype."""
    return _to(self, dtype=dtype)


_TENSOR_METHODS = {
    "__add__": add, "__radd__": _reflected(add), "__sub__": sub, "__rsub__": _reflected(sub),
    "__mul__": mul, "__rmul__": _reflected(mul), "__truediv__": div, "__rtruediv__": _reflected(div),
    "__matmul__": matmul, "__rmatmul__": _reflected(matmul), "__neg__": neg, "__pow__": pow,
    "__getitem__": getitem, "__gt__": greater, "__lt__": _reflected(greater),
    "sum": sum, "mean": mean, "max": max, "var": var, "exp": exp, "log": log, "sqrt": sqrt, "tanh": tanh,
    "relu": relu, "reshape": _reshape, "transpose": _transpose, "permute": _transpose, "swapaxes": swapaxes,
    "T": property(_transpose, doc="The axes reversed."), "flatten": _flatten, "broadcast_to": broadcast_to,
    "to": _to, "astype": _astype,
}
for _name, _method in _TENSOR_METHODS.items():
    setattr(_Tensor, _name, _method)
