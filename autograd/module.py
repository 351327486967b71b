"""Modules: Parameter, Module and the containers, the object-oriented layer over the ops, like ``torch.nn.Module``.

A ``Module`` owns ``Parameter``s (the tensors an optimizer updates), buffers (arrays
saved with the model but not trained, e.g. index tables) and sub-modules, all
registered by plain attribute assignment. A parameter's name is its dotted attribute
path (``blocks.0.attn.qkv.weight``), which is what lets a state dict move between this
library and timm / PyTorch one key at a time.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import backend
from .tensor import Tensor


class Parameter(Tensor):
    """A tensor that requires grad and that a Module registers as trainable."""

    __slots__ = ()

    def __init__(self, data, requires_grad=True):
        super().__init__(data, requires_grad=requires_grad)

    def __repr__(self):
        return "Parameter(" + super().__repr__()[len("Tensor("):]


class StateDictError(ValueError):
    """A state dict does not fit a module; the message names every key that is off."""

    def __init__(self, message, missing, unexpected, mismatched):
        super().__init__(message)
        self.missing = missing
        self.unexpected = unexpected
        self.mismatched = mismatched


class LoadResult(NamedTuple):
    """What ``load_state_dict`` could not load: key lists, mis-shaped ones as (key, given, expected)."""

    missing: list
    unexpected: list
    mismatched: list


def _join(prefix, name):
    return f"{prefix}.{name}" if prefix else name


def _as_array(value):
    """A state-dict value (ndarray, CuPy array, Tensor, nested list) as an array."""
    if isinstance(value, Tensor):
        return value.data
    return value if backend.is_gpu_array(value) else np.asarray(value)


def _host_copy(a) -> np.ndarray:
    """A NumPy copy that later in-place updates of ``a`` cannot reach."""
    return a.copy() if isinstance(a, np.ndarray) else backend.to_numpy(a)


class Module:
    """Base of every layer: registers parameters, buffers and sub-modules by attribute assignment.

    Subclasses call ``super().__init__()`` first, assign ``Parameter``s and Modules as
    attributes, and define ``forward``. A name lives in one registry at a time: assigning
    a Module to a name that held a Parameter replaces it, and so on.
    """

    def __init__(self):
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_buffers", {})
        object.__setattr__(self, "_non_persistent", set())
        object.__setattr__(self, "_modules", {})
        object.__setattr__(self, "training", True)

    # --- registration -----------------------------------------------------------
    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}: call super().__init__() before assigning attributes")
        if isinstance(value, Tensor) and not isinstance(value, Parameter) and name in self._parameters:
            raise TypeError(f"cannot assign a plain Tensor to parameter {name!r}: wrap it in Parameter(...)")
        if name in self._buffers and not isinstance(value, (Parameter, Module)):
            self._buffers[name] = value.data if isinstance(value, Tensor) else value
            return
        if isinstance(value, (Parameter, Module)):
            registry = self._parameters if isinstance(value, Parameter) else self._modules
            if name not in registry:  # a replacement keeps its place in the order
                self._forget(name)
            registry[name] = value
        else:
            self._forget(name)
            object.__setattr__(self, name, value)

    def __getattr__(self, name):
        # Only called when normal lookup fails, i.e. for registered names.
        for registry in ("_parameters", "_buffers", "_modules"):
            found = self.__dict__.get(registry, {})
            if name in found:
                return found[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __delattr__(self, name):
        if not self._forget(name):
            object.__delattr__(self, name)

    def _forget(self, name) -> bool:
        """Remove ``name`` from every registry and the instance dict; True if it was registered."""
        registered = False
        for registry in (self._parameters, self._buffers, self._modules):
            if name in registry:
                del registry[name]
                registered = True
        self._non_persistent.discard(name)
        self.__dict__.pop(name, None)
        return registered

    def register_buffer(self, name, array, persistent=True) -> None:
        """Register an array saved with the model (if ``persistent``) and moved by ``to()``, but not trained."""
        if isinstance(array, Parameter):
            raise TypeError(f"buffer {name!r} is a Parameter; assign it as an attribute instead")
        self._forget(name)
        self._buffers[name] = array.data if isinstance(array, Tensor) else array
        if not persistent:
            self._non_persistent.add(name)

    # --- traversal --------------------------------------------------------------
    def _walk(self, prefix=""):
        """Every (dotted name, module) pair of the tree; a shared module once per path to it."""
        yield prefix, self
        for name, child in self._modules.items():
            yield from child._walk(_join(prefix, name))

    def named_modules(self, prefix=""):
        """(dotted name, module) for this module and every descendant, each module once, pre-order."""
        seen = set()
        for name, module in self._walk(prefix):
            if id(module) not in seen:
                seen.add(id(module))
                yield name, module

    def modules(self):
        """This module and every descendant, each once."""
        return (m for _, m in self.named_modules())

    def named_children(self):
        """(name, module) for the direct sub-modules, each once."""
        seen = set()
        for name, child in self._modules.items():
            if id(child) not in seen:
                seen.add(id(child))
                yield name, child

    def children(self):
        """The direct sub-modules, each once."""
        return (m for _, m in self.named_children())

    def named_parameters(self, prefix="", recurse=True):
        """(dotted name, Parameter) pairs; a parameter shared by several modules is listed once, first name."""
        seen = set()
        for module_name, module in self._walk(prefix) if recurse else [(prefix, self)]:
            for name, p in module._parameters.items():
                if id(p) not in seen:
                    seen.add(id(p))
                    yield _join(module_name, name), p

    def parameters(self, recurse=True):
        """Every Parameter, each once."""
        return (p for _, p in self.named_parameters(recurse=recurse))

    def named_buffers(self, prefix="", recurse=True):
        """(dotted name, array) for every buffer that is not None, persistent or not, each once."""
        seen = set()
        for module_name, module in self._walk(prefix) if recurse else [(prefix, self)]:
            for name, b in module._buffers.items():
                if b is not None and id(b) not in seen:
                    seen.add(id(b))
                    yield _join(module_name, name), b

    def buffers(self, recurse=True):
        """Every buffer array, each once."""
        return (b for _, b in self.named_buffers(recurse=recurse))

    def num_parameters(self) -> int:
        """How many numbers the parameters hold (shared ones counted once)."""
        return sum(p.size for p in self.parameters())

    def apply(self, fn):
        """Call ``fn(module)`` on every descendant, then on self (as timm's init does); return self."""
        for child in self.children():
            child.apply(fn)
        fn(self)
        return self

    # --- state ------------------------------------------------------------------
    def _state_arrays(self) -> dict:
        """Name -> live array for every entry of the state dict (tied parameters under each name)."""
        arrays = {}
        for module_name, module in self._walk():
            for name, p in module._parameters.items():
                arrays[_join(module_name, name)] = p.data
            for name, b in module._buffers.items():
                if b is not None and name not in module._non_persistent:
                    arrays[_join(module_name, name)] = b
        return arrays

    def state_dict(self) -> dict:
        """``{dotted name: host NumPy copy}``: per module its parameters, then its persistent buffers.

        Always NumPy on the host whatever the device, so the result can go straight to
        ``np.savez``; tied parameters appear under every name, as in PyTorch.
        """
        return {name: _host_copy(a) for name, a in self._state_arrays().items()}

    def load_state_dict(self, state, strict=True) -> LoadResult:
        """Copy arrays into the existing parameters and buffers in place (dtype and device cast).

        In place, so Parameter objects (and the optimizers holding them) stay valid.
        When ``strict``, a state dict with any missing, unexpected or mis-shaped key loads
        nothing and raises one ``StateDictError`` naming all of them; otherwise whatever
        fits is loaded and the rest is returned.
        """
        targets = self._state_arrays()
        given = {k: _as_array(v) for k, v in state.items()}
        missing = [k for k in targets if k not in given]
        unexpected = [k for k in given if k not in targets]
        mismatched = [
            (k, tuple(given[k].shape), tuple(targets[k].shape))
            for k in targets
            if k in given and tuple(given[k].shape) != tuple(targets[k].shape)
        ]
        if strict and (missing or unexpected or mismatched):
            lines = [f"the state dict does not fit {type(self).__name__}:"]
            if missing:
                lines.append(f"  missing keys ({len(missing)}): " + ", ".join(missing))
            if unexpected:
                lines.append(f"  unexpected keys ({len(unexpected)}): " + ", ".join(unexpected))
            if mismatched:
                lines.append(
                    f"  mis-shaped keys ({len(mismatched)}): "
                    + ", ".join(f"{k} given {g} but the model has {e}" for k, g, e in mismatched)
                )
            raise StateDictError("\n".join(lines), missing, unexpected, mismatched)
        bad = {k for k, _, _ in mismatched}
        for name, target in targets.items():
            if name in given and name not in bad:
                target[...] = backend.to_device(given[name], backend.array_device(target))
        return LoadResult(missing, unexpected, mismatched)

    # --- modes and devices ------------------------------------------------------
    def train(self, mode=True):
        """Set ``training`` on this module and every descendant; return self."""
        for m in self.modules():
            m.training = bool(mode)
        return self

    def eval(self):
        """Evaluation mode (no dropout); return self."""
        return self.train(False)

    def to(self, device):
        """Move parameters (with their grads) and buffers to ``device`` in place; return self.

        Parameter objects keep their identity, so an optimizer made before the move still
        holds them (its own state moves on its next step).
        """
        for p in self.parameters():
            p.data = backend.to_device(p.data, device)
            if p.grad is not None:
                p.grad = backend.to_device(p.grad, device)
        for m in self.modules():
            for name, b in m._buffers.items():
                if b is not None:
                    m._buffers[name] = backend.to_device(b, device)
        return self

    def zero_grad(self) -> None:
        """Forget every parameter's gradient."""
        for p in self.parameters():
            p.grad = None

    # --- calling and printing ---------------------------------------------------
    def forward(self, *args, **kwargs):
        """The computation; every subclass defines its own."""
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def extra_repr(self) -> str:
        """The settings shown inside the parentheses of ``repr``."""
        return ""

    def __repr__(self):
        extra = self.extra_repr()
        children = [f"({name}): " + repr(m).replace("\n", "\n  ") for name, m in self._modules.items()]
        if not children:
            return f"{type(self).__name__}({extra})"
        body = ([extra] if extra else []) + children
        return f"{type(self).__name__}(\n  " + "\n  ".join(body) + "\n)"


# --- containers -------------------------------------------------------------------
class ModuleList(Module):
    """A list of modules, registered under the names ``0``, ``1``, ..."""

    def __init__(self, modules=()):
        super().__init__()
        self.extend(modules)

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, index):
        items = list(self._modules.values())
        if isinstance(index, slice):
            return ModuleList(items[index])
        return items[index]

    def __setitem__(self, index, module):
        if not isinstance(module, Module):
            raise TypeError(f"{type(self).__name__} holds Modules, not {type(module).__name__}")
        setattr(self, str(range(len(self))[index]), module)

    def append(self, module):
        """Add a module at the end; return self."""
        if not isinstance(module, Module):
            raise TypeError(f"{type(self).__name__} holds Modules, not {type(module).__name__}")
        setattr(self, str(len(self)), module)
        return self

    def extend(self, modules):
        """Append each module; return self."""
        for m in modules:
            self.append(m)
        return self


class Sequential(ModuleList):
    """Modules applied one after another: ``Sequential(a, b)(x) == b(a(x))``."""

    def __init__(self, *modules):
        super().__init__(modules)

    def __getitem__(self, index):
        item = super().__getitem__(index)
        return Sequential(*item) if isinstance(index, slice) else item

    def forward(self, x):
        for m in self:
            x = m(x)
        return x


class Identity(Module):
    """Returns its input; stands in for an optional layer (e.g. no head)."""

    def forward(self, x):
        return x
