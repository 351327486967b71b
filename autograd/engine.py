"""The reverse-mode engine: how ops record the graph and how ``backward()`` walks it. Start reading here.

A ``Tensor`` (``tensor.py``) wraps an array. When an op makes it from tensors that need
gradients, it also carries a ``Node``: the op's ``Function``, where each input came from
(the leaf tensor itself, or the node and output that made it) and the cache the op's
forward left for its backward. The graph holds no intermediate tensor, so an array no
cache keeps is freed as soon as the caller drops it (PyTorch's saved tensors: the input
of a GELU, whose backward needs only its cached derivative, is not kept for the pass back).

Every op is a ``Function`` subclass with two static methods, side by side in
``autograd/ops``:

    forward(*arrays, **params) -> (out_array, cache)
    backward(grad_out, cache)  -> one gradient (or None) per array input

``Function.apply`` runs ``forward`` on the inputs' arrays and records the ``Node``.
``backward()`` visits the nodes in reverse topological order (each after every node it
feeds), asks each node's ``Function.backward`` for the gradients of its inputs and adds
them up, so a tensor used twice receives both contributions. The engine never looks
inside a cache; after a backward pass the caches are dropped, so the next step's graph
does not pile up on this one.

An op with several outputs (``split``, ``unbind``) sets ``multiple_outputs = True`` and
returns a tuple of arrays; its backward runs once, after every node that uses one of its
outputs, and gets their gradients as a tuple (None where an output got none).
"""
from __future__ import annotations

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
    """How a tensor was made: the op, where its inputs came from, the op's cache and how many outputs it made.

    ``inputs`` has one entry per array input: None where it needs no gradient, the tensor
    itself for a leaf, else ``(node, output)``, the node that made it and which output;
    ``shapes`` are the inputs' shapes, which their gradients must have.
    """

    __slots__ = ("fn", "inputs", "shapes", "cache", "freed", "n_outputs")

    def __init__(self, fn, tensors, cache, n_outputs=1):
        self.fn = fn
        self.inputs = tuple(_source(t) for t in tensors)
        self.shapes = tuple(t.shape for t in tensors)
        self.cache = cache
        self.freed = False
        self.n_outputs = n_outputs


def _source(t: Tensor):
    """Where the gradient of input ``t`` goes: nowhere (None), the leaf itself, or (node, output) that made it."""
    if not t.requires_grad:
        return None
    return t if t._node is None else (t._node, t._output)


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

    if self._node is None:  # a leaf: the gradient is its own
        _give(self, grad, set())
        return
    order = _topological_order(self._node)
    # id(node) -> the gradients of its outputs so far; id(leaf) -> [its gradient so far]
    grads = {id(self._node): [None] * self._node.n_outputs}
    grads[id(self._node)][self._output] = grad
    leaves = {}  # id(leaf) -> leaf
    for node in order:  # every node after all the nodes that use its outputs
        slots = grads.pop(id(node), None)
        if node.freed:
            raise GraphFreedError(
                "backward() through a graph that an earlier backward() already freed; "
                "pass retain_graph=True to the first call if you need two passes"
            )
        if slots is None or all(s is None for s in slots):
            continue
        g = tuple(slots) if node.fn.multiple_outputs else slots[0]
        if node.fn.adds_to_first_grad:  # the first input's gradient so far leaves grads and comes back summed
            in_grads = node.fn.backward(g, node.cache, _take(grads, node.inputs[0]))
        else:
            in_grads = node.fn.backward(g, node.cache)
        if not isinstance(in_grads, tuple):
            in_grads = (in_grads,)
        for source, shape, ig in zip(node.inputs, node.shapes, in_grads):
            if ig is None or source is None:
                continue
            if ig.shape != shape:
                raise RuntimeError(
                    f"{node.fn.__name__}.backward returned a gradient of shape {ig.shape} "
                    f"for an input of shape {shape}"
                )
            if isinstance(source, Tensor):  # a leaf: one gradient, given at the end
                leaves[id(source)] = source
            key, i, n = _slot_of(source)
            slot = grads.setdefault(key, [None] * n)
            # += would write into an array the op may still hold in its cache
            slot[i] = ig if slot[i] is None else slot[i] + ig
        if not retain_graph:
            node.cache = None
            node.freed = True
    given = set()  # arrays already handed to a leaf: an op may pass one array to two inputs
    for leaf in leaves.values():
        _give(leaf, grads[id(leaf)][0], given)


def _slot_of(source) -> tuple:
    """(key in backward's ``grads``, slot, slots there) of a node's input: a leaf's one slot, or an output of
    the node that made it."""
    if isinstance(source, Tensor):
        return id(source), 0, 1
    made_by, i = source
    return id(made_by), i, made_by.n_outputs


def _take(grads: dict, source):
    """The gradient a node's input ``source`` has received so far (None if none), taken out of ``grads``."""
    if source is None:
        return None
    key, i, _ = _slot_of(source)
    slot = grads.get(key)
    if slot is None:
        return None
    g, slot[i] = slot[i], None
    return g


def _give(leaf: Tensor, g, given: set) -> None:
    """Add ``g`` to ``leaf.grad``, copying an array another leaf already holds, so that scaling one
    leaf's grad in place never touches another's."""
    if id(g) in given:
        g = g.copy()
    given.add(id(g))
    leaf.grad = g if leaf.grad is None else leaf.grad + g


def _topological_order(root: Node) -> list:
    """Nodes reachable from ``root``, each after every node that uses one of its outputs.

    Iterative depth-first search, so a chain of 10,000 ops needs no recursion.
    """
    order, visited = [], set()
    stack = [(root, False)]
    while stack:
        node, inputs_done = stack.pop()
        if inputs_done:
            order.append(node)
            continue
        if id(node) in visited:
            continue
        visited.add(id(node))
        stack.append((node, True))
        for source in node.inputs:
            if isinstance(source, tuple) and id(source[0]) not in visited:
                stack.append((source[0], False))
    order.reverse()
    return order


# tensor.py, which this module imports, cannot import it back; so ``t.backward()`` is bound here.
Tensor.backward = backward
