"""Parameters and their gradients as views into one contiguous buffer per dtype.

An optimizer step, gradient clipping or an all-reduce over a hundred parameters is
then a few operations on whole buffers instead of a few per parameter: on a GPU, a
handful of kernel launches instead of hundreds. Each ``Parameter.data`` becomes a
view (a reshaped slice) of its dtype's buffer; code that writes into ``p.data`` in
place (``load_state_dict``, the optimizers) keeps it there, and code that rebinds it
(``Module.to``) is noticed by ``attach``, which gathers the parameters again.

The engine hands each leaf a gradient array of its own; ``gather_grads`` copies them
into the gradient buffer with one concatenation and rebinds each ``.grad`` to its view.
"""
from __future__ import annotations

import numpy as np

from . import backend


class FlatParameters:
    """``params`` laid out in order in one data and one gradient buffer per dtype."""

    def __init__(self, params):
        self.params = list(params)
        self._build()

    def _build(self):
        xp = backend.get_array_module(self.params[0].data)
        by_dtype = {}
        for i, p in enumerate(self.params):
            by_dtype.setdefault(p.dtype, []).append(i)
        self.members = list(by_dtype.values())  # per buffer, the indices of its parameters in order
        self.data, self.grads = [], []
        self.slots = [None] * len(self.params)  # per parameter: (buffer, start, stop)
        for k, (dtype, indices) in enumerate(by_dtype.items()):
            offsets = [0]
            for i in indices:
                offsets.append(offsets[-1] + self.params[i].size)
            data = xp.concatenate([self.params[i].data.reshape(-1) for i in indices]).astype(dtype, copy=False)
            self.data.append(data)
            self.grads.append(xp.zeros_like(data))
            for i, start, stop in zip(indices, offsets, offsets[1:]):
                self.slots[i] = (k, start, stop)
        self.data_views = [self.view(self.data, i) for i in range(len(self.params))]
        self.grad_views = [self.view(self.grads, i) for i in range(len(self.params))]
        for p, v in zip(self.params, self.data_views):
            p.data = v

    def view(self, buffers, i):
        """Parameter ``i``'s part of one of ``buffers`` (one array per dtype laid out as the data), in its shape."""
        k, start, stop = self.slots[i]
        return buffers[k][start:stop].reshape(self.params[i].shape)

    def attach(self) -> None:
        """Gather the parameters again if any ``.data`` was rebound (moved, replaced) since the last time."""
        if any(p.data is not v for p, v in zip(self.params, self.data_views)):
            self._build()

    def span(self, indices):
        """``(buffer, start, stop)`` when parameters ``indices`` lie side by side in one buffer, else None."""
        first, last = self.slots[indices[0]], self.slots[indices[-1]]
        k, start, stop = first[0], first[1], last[2]
        if last[0] != k or stop - start != sum(self.params[i].size for i in indices):
            return None
        return k, start, stop

    def gather_grads(self) -> None:
        """Copy every gradient into the gradient buffer (zeros for parameters without one); rebind ``.grad``."""
        xp = backend.get_array_module(self.grads[0])
        for k, indices in enumerate(self.members):
            grads = [self.params[i].grad for i in indices]
            if all(g is None for g in grads):
                self.grads[k].fill(0)
                continue
            if all(g is None or g is self.grad_views[i] for g, i in zip(grads, indices)):
                continue  # gathered already
            if all(g is not None for g in grads):
                xp.concatenate([g.reshape(-1) for g in grads], out=self.grads[k])
            else:  # a parameter the loss did not reach: it keeps no gradient, its slot reads as 0
                self.grads[k].fill(0)
                for g, i in zip(grads, indices):
                    if g is not None:
                        self.grad_views[i][...] = g
            for g, i in zip(grads, indices):
                if g is not None:
                    self.params[i].grad = self.grad_views[i]

    def grad_norm(self):
        """The global L2 norm of the gradients, a 0-d array on their device (no sync)."""
        xp = backend.get_array_module(self.grads[0])
        total = xp.vdot(self.grads[0], self.grads[0])
        for g in self.grads[1:]:
            total = total + xp.vdot(g, g)
        return xp.sqrt(total)

    def gathered(self) -> bool:
        """Whether every gradient there is is its view of the gradient buffer."""
        return all(p.grad is None or p.grad is v for p, v in zip(self.params, self.grad_views))

    def clip_grad_norm(self, max_norm, eps=1e-6):
        """Scale the gradients by min(1, max_norm / (norm + eps)); return the norm, a 0-d array (no sync).

        On a GPU, on the gradient buffer (gathered first): a few launches. On the CPU,
        unless already gathered (by an all-reduce), parameter by parameter: each in
        cache, with no gathering copy.
        """
        xp = backend.get_array_module(self.grads[0])
        if xp is np and not self.gathered():
            return np.float64(clip_grad_norm(self.params, max_norm, eps))
        self.gather_grads()
        norm = self.grad_norm()
        scale = clip_factor(norm, max_norm, eps)
        for g in self.grads:
            g *= scale
        return norm


def clip_factor(norm, max_norm, eps):
    """min(1, max_norm / (norm + eps)): the factor that brings a global norm down to ``max_norm``, an array."""
    xp = backend.get_array_module(norm)
    return xp.minimum(max_norm / (norm + eps), 1.0)


def clip_grad_norm(parameters, max_norm, eps=1e-6) -> float:
    """Scale all gradients by min(1, max_norm / (norm + eps)), norm their global L2 norm; return that norm.

    The gradients are replaced rather than scaled in place: the engine may hand the
    same gradient array to two leaves, or a read-only broadcast view. (An optimizer's
    ``flat.clip_grad_norm`` scales its own gradient buffer in place and returns the
    norm on the device, with no sync.)
    """
    params = [p for p in parameters if p.grad is not None]
    if not params:
        return 0.0
    xp = backend.get_array_module(params[0].grad)
    total = xp.sqrt(sum(xp.vdot(p.grad.ravel(), p.grad.ravel()) for p in params))
    scale = clip_factor(total, max_norm, eps)
    for p in params:
        p.grad = p.grad * scale
    return float(total)
