"""autograd: a small reverse-mode automatic differentiation library on NumPy and CuPy.

Read ``engine.py`` first (the engine, one page) and ``tensor.py``, then any op in
``ops/`` (forward and backward side by side), then ``module.py``, ``nn.py`` and ``optim.py``.
"""
from . import parallel  # noqa: F401  first: it sets OpenBLAS's thread timeout before NumPy loads it
from . import init, nn, ops, optim  # noqa: F401
from .backend import (  # noqa: F401
    DeviceError, default_dtype, default_dtype_as, generator, manual_seed, set_default_dtype,
)
from .engine import GraphFreedError, is_grad_enabled, no_grad  # noqa: F401
from .gradcheck import GradcheckError, gradcheck  # noqa: F401
from .tensor import Tensor, tensor  # noqa: F401
