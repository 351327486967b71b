"""Optimizers (SGD, Adam, AdamW), gradient clipping and step-based learning-rate schedules.

The optimizers follow ``torch.optim``'s update rules and its parameter groups: a list
of dicts, each with its own ``params`` and hyper-parameters (``lr``, ``weight_decay``,
...; missing ones take the constructor's). Updates are written in place into the
parameter arrays, so NumPy and CuPy arrays alike stay where they are and keep their
dtype; the state (momentum, moments) has the parameter's dtype and device.

``state_dict()`` is made of JSON-able values and NumPy arrays only, so a checkpoint
needs no pickle:

    {"param_groups": [{"params": [0, 1, 2], "lr": 0.001, "betas": [0.9, 0.999], ...}, ...],
     "state": {"0.exp_avg": ndarray, "0.exp_avg_sq": ndarray, "0.step": ndarray(int64), ...},
     "step": 12}

Parameters are numbered 0, 1, ... in the order of the groups and of the parameters
within them; ``state`` keys are ``"{index}.{name}"``; ``step`` counts ``step()`` calls.
Save ``state`` with ``np.savez`` and the rest with ``json.dump``.

On a GPU the parameters, gradients and state are views into flat buffers
(``autograd/flat.py``), and a group's update is a few whole-buffer operations; the
state dict is per parameter all the same. ``step(ok=flag)`` takes a device flag that
leaves everything unchanged when False, so a trainer need not read it every step.

``ExponentialMovingAverage`` keeps a moving average of an optimizer's parameters on its
flat buffers (Polyak averaging, ``--ema`` of train.py).

Schedules map a step to a learning rate and nothing else, so a resumed run gets the
same rate at step s as an uninterrupted one: ``set_lr(opt, schedule(s))``.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from . import backend, kernels, parallel
from .flat import FlatParameters, clip_grad_norm  # noqa: F401  (clip_grad_norm is this module's API)
from .ops.util import blocks
from .tensor import Tensor


def _jsonable(value):
    """A hyper-parameter as a JSON value: tuples as lists, NumPy scalars as Python numbers."""
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    return value.item() if isinstance(value, np.generic) else value


class Optimizer:
    """Base of the optimizers: parameter groups, per-parameter state, saving and loading.

    A subclass names its state (``array_state``: arrays shaped like the parameter,
    ``scalar_state``: integers) and defines ``update(param, grad, state, group)``, which
    changes ``param`` in place; on a GPU, ``fused_kernel`` (a flat-buffer kernel of
    autograd/kernels) with ``fused_call`` does a whole group's update in one launch.
    """

    array_state: tuple = ()
    scalar_state: tuple = ()
    fused_kernel = None

    def __init__(self, params, defaults):
        self.defaults = dict(defaults)
        self.param_groups = []
        self.state = {}  # flat parameter index -> {name: array or int}
        self.steps = 0
        self._flat = None
        self._segments = {}  # group index -> {state name: (flat array, the parameters' views of it)}
        self._decay = {}  # run length -> the kernels' weight-decay mask of ones (a group decays all or nothing)
        params = list(params)
        if not params:
            raise ValueError(f"{type(self).__name__} got an empty parameter list")
        for group in params if isinstance(params[0], dict) else [{"params": params}]:
            self.add_param_group(group)

    def add_param_group(self, group) -> None:
        """Append a group ``{"params": [...], **hyper-parameters}``; missing ones take the defaults."""
        group = dict(group)
        params = group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        for p in params:
            if not isinstance(p, Tensor):
                raise TypeError(f"{type(self).__name__} optimizes Tensors, not {type(p).__name__}")
        held = {id(p) for g in self.param_groups for p in g["params"]}
        if len({id(p) for p in params}) != len(params) or any(id(p) in held for p in params):
            raise ValueError("a parameter appears twice in the parameter groups")
        for key, value in self.defaults.items():
            group.setdefault(key, value)
        group["params"] = params
        self.param_groups.append(group)
        self._flat = None  # remade, with the new group's parameters, on the next use

    def _indexed(self):
        """(flat index, group, parameter) for every parameter, in state-dict order."""
        i = 0
        for group in self.param_groups:
            for p in group["params"]:
                yield i, group, p
                i += 1

    def zero_grad(self) -> None:
        """Forget every parameter's gradient."""
        for _, _, p in self._indexed():
            p.grad = None

    @property
    def flat(self) -> FlatParameters:
        """The parameters as views into one buffer per dtype (``autograd/flat.py``), made on first use."""
        if self._flat is None:
            self._flat = FlatParameters([p for _, _, p in self._indexed()])
        self._flat.attach()
        return self._flat

    def step(self, ok=None) -> None:
        """Update every parameter that has a gradient; parameters without one are left alone.

        ``ok`` False (a 0-d boolean array on a GPU, read there by nobody) leaves the
        parameters and the moments as they were, so a step with a non-finite loss
        changes nothing without the host waiting for the device to say so. The step
        counters still advance on a GPU: a trainer stops at its next read of the flag
        and saves nothing after it, so they are never written (``npvit/trainer.py``).
        """
        if ok is not None and not backend.is_gpu_array(ok) and not ok:
            return
        ok = ok if ok is not None and backend.is_gpu_array(ok) else None
        bad = None if ok is None else ~ok
        flat = self.flat
        if backend.is_gpu_array(flat.data[0]):  # the CPU updates each parameter in cache unless gathered already
            flat.gather_grads()
        start = 0
        for g, group in enumerate(self.param_groups):
            indices = list(range(start, start + len(group["params"])))
            start += len(indices)
            if indices and not self._step_segment(g, group, indices, ok, bad):
                for i in indices:
                    p = flat.params[i]
                    if p.grad is not None:
                        self._masked_update(p.data, p.grad, self._state_on(i, p), group, bad)
        self.steps += 1

    def _state_on(self, i, p) -> dict:
        """Parameter ``i``'s state, its arrays on the parameter's device (the model may have moved since)."""
        state = self.state.setdefault(i, {})
        device = backend.array_device(p.data)
        for name in self.array_state:
            if name in state and backend.array_device(state[name]) != device:
                state[name] = backend.to_device(state[name], device)
        return state

    def _step_segment(self, g, group, indices, ok, bad) -> bool:
        """Update group ``g`` as one run of each flat buffer; False (nothing done) when it does not fit one.

        It fits when its parameters lie side by side in one buffer, all have gradients and
        all have the same state entries and counters; then the group's state arrays are
        views of one flat array per entry too, made here (again after a load) by one
        concatenation each.
        """
        flat = self.flat
        span = flat.span(indices)
        if span is None or any(flat.params[i].grad is not flat.grad_views[i] for i in indices):
            return False
        states = [self._state_on(i, flat.params[i]) for i in indices]
        if any(s.keys() != states[0].keys() or any(s[n] != states[0][n] for n in self.scalar_state if n in s)
               for s in states):
            return False
        k, lo, hi = span
        xp = backend.get_array_module(flat.data[k])
        seg = self._segments.setdefault(g, {})
        state = {n: states[0][n] for n in self.scalar_state if n in states[0]}
        for name in self.array_state:
            if name not in states[0]:
                continue
            whole, views = seg.get(name, (None, ()))
            if len(views) != len(states) or any(s[name] is not v for s, v in zip(states, views)):
                whole = xp.concatenate([s[name].reshape(-1) for s in states])
            state[name] = whole
        param, grad = flat.data[k][lo:hi], flat.grads[k][lo:hi]
        if xp is not np and self._fused_update(param, grad, state, group, ok):
            pass  # the group in one launch of its kernel, state updated in place
        elif all(n in state for n in self.array_state):
            # in cache-sized blocks on the CPU, so that the update's passes run in cache, over the
            # threads of autograd.parallel (one block on a GPU); each block advances its own copy
            # of the counters from the same start, and the last one's are kept
            def update_block(b):
                part = {n: v[b] if n in self.array_state else v for n, v in state.items()}
                self._masked_update(param[b], grad[b], part, group, bad)
                return part

            part = parallel.run(update_block, blocks(hi - lo, 1, xp))[-1]
            state.update({n: part[n] for n in self.scalar_state if n in part})
        else:  # the first step makes the state, whole
            self._masked_update(param, grad, state, group, bad)
        for name in self.array_state:
            if name in state:
                views = [state[name][a - lo:b - lo].reshape(flat.params[i].shape)
                         for i, (_, a, b) in ((i, flat.slots[i]) for i in indices)]
                seg[name] = (state[name], views)
                for s, v in zip(states, views):
                    s[name] = v
        for s in states:
            s.update({n: state[n] for n in self.scalar_state if n in state})
        return True

    def _fused_update(self, param, grad, state, group, ok) -> bool:
        """The group's update as one launch of its kernel (autograd/kernels/optim.py) on a GPU; False where none applies.

        The kernel reads the learning rate and step from the device (two small uploads,
        no sync) and updates only where ``ok`` (the device flag; None: always) is set.
        """
        fused = kernels.get(self.fused_kernel, param.dtype) if self.fused_kernel else None
        call = None if fused is None else self.fused_call(state, group)
        if call is None:
            return False
        number, options = call
        xp = backend.get_array_module(param)
        if param.size not in self._decay:  # the group's weight decay is all or nothing: a mask of ones
            self._decay[param.size] = xp.ones(param.size, dtype=np.uint8)
        lr = xp.asarray(np.array([group["lr"]], dtype=np.float32))
        step = xp.asarray(np.array([number], dtype=np.int32))
        flag = xp.ones(1, dtype=np.uint8) if ok is None else ok.reshape(1).view(np.uint8)  # a bool is a byte
        fused(param, grad, *[state[n] for n in self.array_state], self._decay[param.size], lr, step, flag, **options)
        return True

    def fused_call(self, state, group):
        """(step number, keyword arguments) for ``fused_kernel`` on this group, advancing the state's
        counters; None (nothing advanced) where the kernel does not do this update."""
        return None

    def _masked_update(self, param, grad, state, group, bad) -> None:
        """``update``, undone on the device where ``bad`` (a 0-d boolean array) is True."""
        if bad is None:
            self.update(param, grad, state, group)
            return
        xp = backend.get_array_module(param)
        before = [(param, param.copy())] + [(state[n], state[n].copy()) for n in self.array_state if n in state]
        made = [n for n in self.array_state if n not in state]
        self.update(param, grad, state, group)
        for now, old in before:
            xp.copyto(now, old, where=bad)
        for name in made:  # state a bad first step made: as if no step had been
            xp.copyto(state[name], 0, where=bad)

    def update(self, param, grad, state, group) -> None:
        """Change ``param`` in place given its gradient; every subclass defines its own rule."""
        raise NotImplementedError(f"{type(self).__name__} does not define update()")

    def state_dict(self) -> dict:
        """The optimizer as JSON-able groups, host NumPy state arrays and the step count (layout above)."""
        groups, index = [], 0
        for group in self.param_groups:
            saved = {k: _jsonable(v) for k, v in group.items() if k != "params"}
            saved["params"] = list(range(index, index + len(group["params"])))
            index += len(group["params"])
            groups.append(saved)
        state = {}
        for i, entries in sorted(self.state.items()):
            for name, value in entries.items():
                if name in self.scalar_state:
                    state[f"{i}.{name}"] = np.asarray(value, dtype=np.int64)
                else:
                    state[f"{i}.{name}"] = value.copy() if isinstance(value, np.ndarray) else backend.to_numpy(value)
        return {"param_groups": groups, "state": state, "step": self.steps}

    def load_state_dict(self, state_dict) -> None:
        """Restore groups' hyper-parameters, state and step count; checks every count and shape first.

        State arrays are copied to each parameter's device and dtype. On any mismatch
        nothing is loaded and one ValueError lists every problem.
        """
        groups, saved_state = state_dict["param_groups"], state_dict["state"]
        params = {i: p for i, _, p in self._indexed()}
        problems = []
        if len(groups) != len(self.param_groups):
            problems.append(f"{len(groups)} parameter groups saved, the optimizer has {len(self.param_groups)}")
        else:
            start = 0
            for k, (saved, group) in enumerate(zip(groups, self.param_groups)):
                expected = list(range(start, start + len(group["params"])))
                if list(saved["params"]) != expected:
                    problems.append(
                        f"group {k}: saved parameter indices {list(saved['params'])}, the optimizer has {expected}"
                    )
                start += len(group["params"])
        names = self.array_state + self.scalar_state
        parsed = {}
        for key, value in saved_state.items():
            index, _, name = key.partition(".")
            if not index.isdigit() or int(index) not in params or name not in names:
                problems.append(f"unexpected state entry {key!r}")
                continue
            value = np.asarray(value) if not backend.is_gpu_array(value) else value
            want = () if name in self.scalar_state else tuple(params[int(index)].shape)
            if tuple(value.shape) != want:
                problems.append(f"state {key!r} has shape {tuple(value.shape)}, expected {want}")
                continue
            parsed.setdefault(int(index), {})[name] = value
        if problems:
            raise ValueError(f"cannot load {type(self).__name__} state:\n  " + "\n  ".join(problems))

        for saved, group in zip(groups, self.param_groups):
            for key, value in saved.items():
                if key != "params":
                    group[key] = tuple(value) if isinstance(self.defaults.get(key), tuple) else value
        self.state = {}
        for i, entries in parsed.items():
            p = params[i]
            self.state[i] = {
                name: int(value) if name in self.scalar_state
                else backend.to_device(value, p.device).astype(p.dtype, copy=True)
                for name, value in entries.items()
            }
        self.steps = int(state_dict["step"])


class SGD(Optimizer):
    """Stochastic gradient descent with (Nesterov) momentum and L2 weight decay, as torch.optim.SGD.

    g = grad + wd p;  b = momentum b + (1 - dampening) g (b = g on the first step);
    p -= lr (g + momentum b) with Nesterov, else p -= lr b.
    """

    array_state = ("momentum_buffer",)
    fused_kernel = "sgd_step"

    def __init__(self, params, lr, momentum=0.0, nesterov=False, weight_decay=0.0, dampening=0.0):
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum needs momentum > 0 and dampening 0")
        defaults = dict(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay, dampening=dampening)
        super().__init__(params, defaults)

    def fused_call(self, state, group):
        # no momentum: no buffer to hand the kernel, and two launches on the CuPy path anyway;
        # the first step makes the buffer (b = d) on the CuPy path, so the kernel's step is never 1
        momentum, buf = float(group["momentum"]), state.get("momentum_buffer")
        if not momentum or buf is None or buf.dtype != np.float32:
            return None
        return 2, dict(momentum=momentum, dampening=float(group["dampening"]),
                                   nesterov=bool(group["nesterov"]), weight_decay=float(group["weight_decay"]))

    def update(self, param, grad, state, group):
        lr, momentum, wd = float(group["lr"]), float(group["momentum"]), float(group["weight_decay"])
        d = grad + wd * param if wd else grad
        if momentum:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = d.copy()
            else:
                buf *= momentum
                buf += (1.0 - float(group["dampening"])) * d
            d = d + momentum * buf if group["nesterov"] else buf
        param -= lr * d


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015) with L2 weight decay added to the gradient, as torch.optim.Adam.

    g = grad + wd p;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
    p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps).
    """

    array_state = ("exp_avg", "exp_avg_sq")
    scalar_state = ("step",)
    fused_kernel = "adamw_step"
    decoupled = False  # AdamW: decay the weights directly instead of through the gradient

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    def fused_call(self, state, group):
        wd = float(group["weight_decay"])
        if "exp_avg" not in state or state["exp_avg"].dtype != np.float32 or (wd and not self.decoupled):
            return None  # the first step makes the moments; the kernel keeps them in float32 and decays decoupled
        state["step"] += 1
        return state["step"], dict(betas=tuple(float(b) for b in group["betas"]),
                                                 eps=float(group["eps"]), weight_decay=wd)

    def update(self, param, grad, state, group):
        xp = backend.get_array_module(param)
        lr, eps, wd = float(group["lr"]), float(group["eps"]), float(group["weight_decay"])
        b1, b2 = (float(b) for b in group["betas"])
        t = state["step"] = state.get("step", 0) + 1
        if "exp_avg" not in state:
            state["exp_avg"], state["exp_avg_sq"] = xp.zeros_like(param), xp.zeros_like(param)
        m, v = state["exp_avg"], state["exp_avg_sq"]
        if wd and self.decoupled:
            param *= 1.0 - lr * wd
        elif wd:
            grad = grad + wd * param
        m *= b1
        m += (1.0 - b1) * grad
        v *= b2
        v += (1.0 - b2) * (grad * grad)
        denom = xp.sqrt(v)  # (sqrt(v) / sqrt(1 - b2^t) + eps), reused for the step
        denom /= math.sqrt(1.0 - b2**t)
        denom += eps
        xp.divide(m, denom, out=denom)
        denom *= lr / (1.0 - b1**t)
        param -= denom


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter 2019): p -= lr wd p, then Adam's step."""

    decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


class ExponentialMovingAverage:
    """An exponential moving average of an optimizer's parameters (Polyak averaging), updated after each step.

    ``update()`` after every ``optimizer.step()``: ema = d ema + (1 - d) w, with
    d = min(decay, (1 + t) / (10 + t)) at the t-th update (t = 0, 1, ...), the warm-up of
    TensorFlow's ``ExponentialMovingAverage(num_updates=...)`` that timm's ``ModelEma`` also
    offers: without it the first thousand steps of a 0.999 average would still be mostly
    the initialisation, which a short run never outgrows (d is 0.1 at the first update,
    0.5 at the eighth, 0.9 at the 80th). The averages live in one buffer per buffer of the
    optimizer's flat parameters (``autograd/flat.py``), so an update is three whole-buffer
    operations per dtype (scale, scale a temporary, add) on the CPU and the GPU alike.
    ``applied()`` puts them into the parameters for an evaluation; ``arrays()`` and ``load``
    save and restore them per parameter, in the optimizer's order.
    """

    def __init__(self, optimizer: Optimizer, decay: float):
        if not 0 < decay < 1:
            raise ValueError(f"the decay must be in (0, 1), not {decay}")
        self.optimizer = optimizer
        self.decay = decay
        self.updates = 0
        self.averages = [w.copy() for w in optimizer.flat.data]

    def rate(self) -> float:
        """The decay of the next update, d = min(decay, (1 + t) / (10 + t)) after t updates."""
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    def update(self) -> None:
        """Move the averages towards the parameters as they are now."""
        d = self.rate()
        for average, w in zip(self.averages, self.optimizer.flat.data):
            average *= d
            average += (1.0 - d) * w
        self.updates += 1

    def arrays(self) -> list:
        """The averages of parameter 0, 1, ... (the optimizer's order), as views in the parameters' shapes."""
        flat = self.optimizer.flat
        return [flat.view(self.averages, i) for i in range(len(flat.params))]

    def load(self, arrays, updates: int) -> None:
        """Take the averages from per-parameter ``arrays`` (as ``arrays()`` gives them, host or device) and the
        count of updates made; ValueError when a shape does not fit (nothing is changed then)."""
        flat = self.optimizer.flat
        if len(arrays) != len(flat.params):
            raise ValueError(f"{len(arrays)} averages for {len(flat.params)} parameters")
        for i, (a, p) in enumerate(zip(arrays, flat.params)):
            if tuple(a.shape) != tuple(p.shape):
                raise ValueError(f"the average of parameter {i} has shape {tuple(a.shape)}, expected {p.shape}")
        self.averages = [
            backend.get_array_module(w).concatenate([
                backend.to_device(arrays[i], backend.array_device(w)).reshape(-1).astype(w.dtype, copy=False)
                for i in indices])
            for w, indices in zip(flat.data, flat.members)
        ]
        self.updates = int(updates)

    @contextmanager
    def applied(self):
        """The parameters hold the averages inside the block and their own values again after it."""
        flat = self.optimizer.flat
        kept = [w.copy() for w in flat.data]
        for w, average in zip(flat.data, self.averages):
            w[...] = average
        try:
            yield
        finally:
            for w, k in zip(flat.data, kept):
                w[...] = k


NO_WEIGHT_DECAY = ("pos_embed", "cls_token", "mask_token", "dist_token", "relative_position_bias_table")


def param_groups_weight_decay(named_parameters, weight_decay, skip=NO_WEIGHT_DECAY) -> list:
    """[decay group, no-decay group], as timm: no decay on 1-D parameters or names containing a ``skip`` token.

    Biases and norm scales are 1-D; position embeddings and class tokens are named.
    Parameters that do not require grad are left out.
    """
    decay, no_decay = [], []
    for name, p in named_parameters:
        if not p.requires_grad:
            continue
        if p.ndim <= 1 or any(token in name for token in skip):
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def set_lr(optimizer, lr) -> None:
    """Set every group's lr to ``lr`` times the group's ``lr_scale`` (1 when absent)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


@dataclass(frozen=True)
class Schedule:
    """A learning rate as a pure function of the step: linear warmup, then a decay to ``final_lr``.

    Warmup rises linearly to ``base_lr``, reaching it at the last warmup step, so the
    very first update already moves; then ``decay`` ("cosine", "linear" or "constant")
    runs from ``base_lr`` at step ``warmup_steps`` to ``final_lr`` at ``total_steps``
    and stays there.
    """

    base_lr: float
    total_steps: int
    warmup_steps: int = 0
    final_lr: float = 0.0
    decay: str = "cosine"

    def __post_init__(self):
        if self.decay not in ("cosine", "linear", "constant"):
            raise ValueError(f"unknown decay {self.decay!r}: use 'cosine', 'linear' or 'constant'")
        if not 0 <= self.warmup_steps <= self.total_steps:
            raise ValueError(f"need 0 <= warmup_steps <= total_steps, got {self.warmup_steps}, {self.total_steps}")

    def __call__(self, step) -> float:
        if step < self.warmup_steps:
            return self.base_lr * (step + 1) / self.warmup_steps
        if self.decay == "constant":
            return self.base_lr
        span = self.total_steps - self.warmup_steps
        progress = min(1.0, (step - self.warmup_steps) / span) if span else 1.0
        shape = 0.5 * (1.0 + math.cos(math.pi * progress)) if self.decay == "cosine" else 1.0 - progress
        return self.final_lr + (self.base_lr - self.final_lr) * shape


def warmup_cosine(base_lr, total_steps, warmup_steps=0, final_lr=0.0) -> Schedule:
    """Linear warmup, then half a cosine from base_lr down to final_lr at total_steps."""
    return Schedule(base_lr, total_steps, warmup_steps, final_lr, "cosine")


def warmup_linear(base_lr, total_steps, warmup_steps=0, final_lr=0.0) -> Schedule:
    """Linear warmup, then a straight line from base_lr down to final_lr at total_steps."""
    return Schedule(base_lr, total_steps, warmup_steps, final_lr, "linear")


def constant(base_lr, warmup_steps=0) -> Schedule:
    """Linear warmup, then base_lr for ever."""
    return Schedule(base_lr, warmup_steps, warmup_steps, base_lr, "constant")
