"""The reverse-mode engine: how ops record the graph and how ``backward()`` walks it. Start reading here.

A ``Tensor`` (``tensor.py``) wraps an array. When an op makes it from tensors that need
gradients, it also carries a ``Node``: the op's ``Function``, the input tensors and the
cache the op's forward left for its backward.

Every op is a ``Function`` subclass with two static methods, side by side in
``autograd/ops``:

    forward(*arrays, **params) -> (out_array, cache)
    backward(grad_out, cache)  -> one gradient (or None) per array input

``Function.apply`` runs ``forward`` on the inputs' arrays and records the ``Node``.
``backward()`` visits the tensors in reverse topological order (each after every tensor
it feeds), asks each node's ``Function.backward`` for the gradients of its inputs and
adds them up, so a tensor used twice receives both contributions. The engine never
looks inside a cache; after a backward pass the caches are dropped, so the next step's
graph does not pile up on this one.

An op with several outputs (``split``, ``unbind``) sets ``multiple_outputs = True`` and
returns a tuple of arrays; its backward then runs once, after every output it made has
received its gradient, and gets them as a tuple (None where an output got none).
"""
from __future__ import annotations

from collections import Counter

from .tensor import Tensor, as_tensor_like

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
    # Ops whose backward can add the gradient of their first input to what that input has
    # received so far, in the pass that makes it (a GPU kernel then spares the engine's add),
    # set this True: their backward then also gets ``so_far`` (that gradient, or None) and
    # returns the sum for the first input. A residual stream's layer norm is one.
    adds_to_first_grad = False

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


def backward(self: Tensor, grad=None, retain_graph=False) -> None:
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
            raise RuntimeError(f"backward() on a tensor of shape {self.shape} needs an explicit gradient of that shape")
        grad = xp.ones_like(self.data)
    else:
        # a copy: ops pass the upstream gradient through (add, reshape), and a leaf's grad
        # that is the caller's array, or a view of it, would change it when scaled in place
        grad = xp.array(grad.data if isinstance(grad, Tensor) else grad, dtype=self.dtype)
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
        if node.fn.adds_to_first_grad:
            in_grads = node.fn.backward(g, node.cache, grads.pop(id(node.inputs[0]), None))
        else:
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


# tensor.py, which this module imports, cannot import it back; so ``t.backward()`` is bound here.
Tensor.backward = backward
