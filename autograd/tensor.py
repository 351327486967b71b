"""The Tensor and the reverse-mode engine. Start reading here.

A ``Tensor`` wraps an array (NumPy or CuPy) and, when it was produced by an op on
tensors that need gradients, a ``Node``: the op's ``Function``, the input tensors and
the cache the op's forward left for its backward. ``backward()`` walks the nodes in
reverse topological order, asks each ``Function.backward`` for the gradients of its
inputs and adds them up (``+=``), so a tensor used twice receives both contributions.

Every op is a ``Function`` subclass with two static methods, side by side in
``autograd/ops``:

    forward(*arrays, **params) -> (out_array, cache)
    backward(grad_out, cache)  -> one gradient (or None) per array input

The engine never looks inside the cache; after a backward pass the caches are
dropped so the next step's graph does not pile up on this one.

An op with several outputs (``split``, ``unbind``) sets ``multiple_outputs = True`` and
returns a tuple of arrays; its backward then runs once, after every output it made has
received its gradient, and gets them as a tuple (None where an output got none).
"""
from __future__ import annotations

from collections import Counter

import numpy as np

from . import backend

_grad_enabled = True


def is_grad_enabled() -> bool:
    """Whether ops record the graph for backward."""
    return _grad_enabled


class no_grad:
    """Context manager (and decorator) under which ops record no graph."""

    def __enter__(self):
        global _grad_enabled
        self.saved = _grad_enabled
        _grad_enabled = False

    def __exit__(self, *exc):
        global _grad_enabled
        _grad_enabled = self.saved

    def __call__(self, fn):
        def wrapped(*args, **kwargs):
            with no_grad():
                return fn(*args, **kwargs)

        wrapped.__name__ = fn.__name__
        wrapped.__doc__ = fn.__doc__
        return wrapped


class GraphFreedError(RuntimeError):
    """backward() reached a node whose cache an earlier backward() already freed."""


class Node:
    """How a tensor was made: the op, its tensor inputs, the op's cache and how many outputs it made."""

    __slots__ = ("fn", "inputs", "cache", "freed", "n_outputs")

    def __init__(self, fn, inputs, cache, n_outputs=1):
        self.fn = fn
        self.inputs = inputs
        self.cache = cache
        self.freed = False
        self.n_outputs = n_outputs


class Function:
    """Base of every differentiable op: subclasses define ``forward`` and ``backward``."""

    # Ops whose output is never differentiable (argmax, comparisons) set this False.
    differentiable = True
    # Ops that can skip work for inputs that need no gradient (the input-gradient GEMM of
    # a first layer, a derivative for a frozen weight) set this True: their forward then
    # also gets ``needs_input_grad``, one bool per array input, all False when no graph
    # is recorded, and keeps in its cache what its backward will need to know of it.
    takes_needs_input_grad = False
    # Ops whose forward returns a tuple of arrays, one tensor each (see the module docstring).
    multiple_outputs = False

    @staticmethod
    def forward(*arrays, **params):
        """Compute the output array and the cache backward will need."""
        raise NotImplementedError

    @staticmethod
    def backward(grad, cache):
        """Given dLoss/dOut, return dLoss/dInput for each array input (None: no gradient)."""
        raise NotImplementedError

    @classmethod
    def apply(cls, *inputs, **params):
        """Run the op on tensors (or arrays, or numbers) and record it in the graph."""
        tensors = [as_tensor_like(x, inputs) for x in inputs]
        record = cls.differentiable and _grad_enabled
        needs_input_grad = tuple(record and t.requires_grad for t in tensors)
        if cls.takes_needs_input_grad:
            params["needs_input_grad"] = needs_input_grad
        out, cache = cls.forward(*(t.data for t in tensors), **params)
        needs_grad = any(needs_input_grad)
        outs = out if cls.multiple_outputs else (out,)
        node = Node(cls, tensors, cache, len(outs)) if needs_grad else None
        results = tuple(Tensor(o, requires_grad=needs_grad) for o in outs)
        for i, r in enumerate(results):
            r._node, r._output = node, i
        return results if cls.multiple_outputs else results[0]


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

    def to(self, device=None, dtype=None) -> "Tensor":
        """A copy on another device and/or dtype (self when nothing changes); differentiable."""
        from .ops import to_device_op, astype

        out = self
        if device is not None and backend.device_name(device) != self.device:
            out = to_device_op(out, device)
        if dtype is not None and np.dtype(dtype) != out.dtype:
            out = astype(out, dtype)
        return out

    def astype(self, dtype) -> "Tensor":
        """A differentiable cast to another dtype."""
        return self.to(dtype=dtype)

    def zero_grad(self) -> None:
        """Forget the accumulated gradient."""
        self.grad = None

    # --- the engine -------------------------------------------------------------
    def backward(self, grad=None, retain_graph=False) -> None:
        """Accumulate d(self)/d(leaf) into ``leaf.grad`` for every leaf that requires grad.

        ``grad`` is dLoss/dSelf; it may be omitted only for a one-element tensor.
        Unless ``retain_graph`` the op caches are freed afterwards, and a second
        backward through the same graph raises ``GraphFreedError``.
        """
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad (no leaf in its graph needs one)")
        xp = self.xp
        if grad is None:
            if self.size != 1:
                raise RuntimeError(
                    f"backward() on a tensor of shape {self.shape} needs an explicit gradient of that shape"
                )
            grad = xp.ones_like(self.data)
        else:
            grad = grad.data if isinstance(grad, Tensor) else xp.asarray(grad, dtype=self.dtype)
            if grad.shape != self.shape:
                raise ValueError(f"gradient of shape {grad.shape} given for a tensor of shape {self.shape}")

        order = _topological_order(self)
        grads = {id(self): grad}
        # how many outputs of each multi-output node are still to be reached, and their gradients so far
        waiting = Counter(id(t._node) for t in order if t._node is not None and t._node.fn.multiple_outputs)
        output_grads = {}
        given = set()  # arrays already handed to a leaf: an op may pass one array to two inputs
        for t in order:  # outputs before inputs
            g = grads.pop(id(t), None)
            node = t._node
            if node is None:  # a leaf: keep the gradient
                if g is not None and t.requires_grad:
                    if id(g) in given:  # so that scaling one leaf's grad in place never touches another's
                        g = g.copy()
                    given.add(id(g))
                    t.grad = g if t.grad is None else t.grad + g
                continue
            if node.freed:
                raise GraphFreedError(
                    "backward() through a graph that an earlier backward() already freed; "
                    "pass retain_graph=True to the first call if you need two passes"
                )
            if node.fn.multiple_outputs:
                slots = output_grads.setdefault(id(node), [None] * node.n_outputs)
                slots[t._output] = g
                waiting[id(node)] -= 1
                if waiting[id(node)]:
                    continue
                g = None if all(s is None for s in slots) else tuple(slots)
            if g is None:
                continue
            in_grads = node.fn.backward(g, node.cache)
            if not isinstance(in_grads, tuple):
                in_grads = (in_grads,)
            for inp, ig in zip(node.inputs, in_grads):
                if ig is None or not inp.requires_grad:
                    continue
                if ig.shape != inp.shape:
                    raise RuntimeError(
                        f"{node.fn.__name__}.backward returned a gradient of shape {ig.shape} "
                        f"for an input of shape {inp.shape}"
                    )
                key = id(inp)
                prev = grads.get(key)
                # += would write into an array the op may still hold in its cache
                grads[key] = ig if prev is None else prev + ig
            if not retain_graph:
                node.cache = None
                node.freed = True

    # --- operators (defined in ops, bound here so expressions read naturally) ----
    def __add__(self, other):
        from .ops import add
        return add(self, other)

    def __radd__(self, other):
        from .ops import add
        return add(other, self)

    def __sub__(self, other):
        from .ops import sub
        return sub(self, other)

    def __rsub__(self, other):
        from .ops import sub
        return sub(other, self)

    def __mul__(self, other):
        from .ops import mul
        return mul(self, other)

    def __rmul__(self, other):
        from .ops import mul
        return mul(other, self)

    def __truediv__(self, other):
        from .ops import div
        return div(self, other)

    def __rtruediv__(self, other):
        from .ops import div
        return div(other, self)

    def __neg__(self):
        from .ops import neg
        return neg(self)

    def __pow__(self, exponent):
        from .ops import pow
        return pow(self, exponent)

    def __matmul__(self, other):
        from .ops import matmul
        return matmul(self, other)

    def __rmatmul__(self, other):
        from .ops import matmul
        return matmul(other, self)

    def __getitem__(self, index):
        from .ops import getitem
        return getitem(self, index)

    def __gt__(self, other):
        from .ops import greater
        return greater(self, other)

    def __lt__(self, other):
        from .ops import greater
        return greater(other, self)

    def sum(self, axis=None, keepdims=False):
        from .ops import sum
        return sum(self, axis=axis, keepdims=keepdims)

    def mean(self, axis=None, keepdims=False):
        from .ops import mean
        return mean(self, axis=axis, keepdims=keepdims)

    def max(self, axis=None, keepdims=False):
        from .ops import max
        return max(self, axis=axis, keepdims=keepdims)

    def var(self, axis=None, keepdims=False, ddof=0):
        from .ops import var
        return var(self, axis=axis, keepdims=keepdims, ddof=ddof)

    def exp(self):
        from .ops import exp
        return exp(self)

    def log(self):
        from .ops import log
        return log(self)

    def sqrt(self):
        from .ops import sqrt
        return sqrt(self)

    def tanh(self):
        from .ops import tanh
        return tanh(self)

    def relu(self):
        from .ops import relu
        return relu(self)

    def reshape(self, *shape):
        from .ops import reshape
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return reshape(self, shape)

    def transpose(self, *axes):
        from .ops import transpose
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        return transpose(self, axes or None)

    def permute(self, *axes):
        return self.transpose(*axes)

    def swapaxes(self, a, b):
        from .ops import swapaxes
        return swapaxes(self, a, b)

    @property
    def T(self):
        return self.transpose()

    def flatten(self, start_axis=0):
        """Merge the axes from ``start_axis`` on into one."""
        return self.reshape(self.shape[:start_axis] + (-1,))

    def broadcast_to(self, shape):
        from .ops import broadcast_to
        return broadcast_to(self, shape)


def _topological_order(root: Tensor) -> list:
    """Tensors reachable from ``root`` that need grad, each after every tensor it feeds.

    Iterative depth-first search, so a chain of 10,000 ops needs no recursion.
    """
    order, visited = [], set()
    stack = [(root, False)]
    while stack:
        t, children_done = stack.pop()
        if children_done:
            order.append(t)
            continue
        if id(t) in visited:
            continue
        visited.add(id(t))
        stack.append((t, True))
        if t._node is not None:
            for inp in t._node.inputs:
                if inp.requires_grad and id(inp) not in visited:
                    stack.append((inp, False))
    order.reverse()
    return order


def tensor(data, requires_grad=False, dtype=None, device=None) -> Tensor:
    """Make a tensor: numbers and lists become the default float dtype, arrays keep theirs."""
    return Tensor(data, requires_grad=requires_grad, dtype=dtype, device=device)
