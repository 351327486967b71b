"""The op table: one entry per public differentiable op, the single place the gradient suite draws from.

Each entry names the op, what it covers (the public functions and ``Function`` classes
it exercises, which ``test_op_table.py`` holds against everything ``autograd`` and
``npvit`` define), a Hypothesis strategy drawing an ``Example`` (the input arrays,
every keyword argument, and which inputs require a gradient), the op itself, and an
independent float64 reference forward in NumPy (loops or the formula of the op's
definition, never the op's own vectorised code). ``test_op_table.py`` drives three
parametrised properties from it, so every op gets its own examples on every run:
its gradient against finite differences, its forward against the reference, and that
neither pass changes an array the caller holds.

Keyword arguments the op takes are drawn, defaults included: an entry that draws
``None`` for one calls the op without it, and the reference then uses the documented
default, so a changed default fails the forward check.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from hypothesis import strategies as st

from autograd import ops
from autograd.backend import generator
from autograd.ops import attention, conv, elementwise, fused, linalg, reduce, resize, shape
from npvit import pos_embed
from references import conv_reference, distinct, pool_reference, resize_reference
from strategies import arrays, away_from, broadcastable_shapes, shapes, windows


@dataclass
class Example:
    """One drawn call: input arrays, keyword arguments, and which inputs require a gradient."""

    inputs: list
    params: dict = field(default_factory=dict)
    grad: tuple = None  # one bool per input; None: every floating input

    def __post_init__(self):
        if self.grad is None:
            self.grad = tuple(a.dtype.kind == "f" for a in self.inputs)


@dataclass(frozen=True)
class Op:
    """A table entry (see the module docstring)."""

    name: str
    covers: tuple  # public functions and Function classes this entry exercises
    example: st.SearchStrategy
    op: object  # (*tensors, **params) -> Tensor, or a sequence of Tensors
    reference: object  # (*arrays, **params) -> float64 array, or a sequence of them
    differentiable: bool = True
    rtol: float = 1e-10
    atol: float = 1e-12
    view: bool = False  # the output may share memory with an input (reshape, slices)
    # a function of the op's result giving the part with history (attention's weights come back without)
    graph_part: object = None


def given_kwargs(params):
    """``params`` without the ones drawn as None, so that the op is called with its own defaults."""
    return {k: v for k, v in params.items() if v is not None}


def with_defaults(params, **defaults):
    """``params`` with each None replaced by the documented default, for the reference."""
    return {k: defaults[k] if v is None and k in defaults else v for k, v in params.items()}


@st.composite
def needs_grad(draw, flags):
    """Which inputs require a gradient: a drawn subset of those marked True in ``flags``, never empty."""
    candidates = [i for i, f in enumerate(flags) if f]
    chosen = draw(st.lists(st.sampled_from(candidates), min_size=1, unique=True))
    return tuple(i in chosen for i in range(len(flags)))


def _call(fn):
    """An op that takes the drawn keyword arguments, with the ones drawn as None left out."""
    return lambda *tensors, **params: fn(*tensors, **given_kwargs(params))


# --- elementwise --------------------------------------------------------------------------------

@st.composite
def binary_example(draw, kind=None):
    sa, sb = draw(broadcastable_shapes(2))
    a, b = draw(arrays(sa)), draw(arrays(sb))
    if kind == "divisor":
        b = away_from(b, [0.0], margin=0.5)
    if kind == "no_ties":  # a on odd, b on even tenths: never tied, never within the step
        a, b = (2 * np.round(a * 5) + 1) / 10, 2 * np.round(b * 5) / 10
    return Example([a, b], grad=draw(needs_grad((True, True))))


@st.composite
def unary_example(draw, domain=None, **params):
    a = draw(arrays(draw(shapes())))
    if domain == "positive":
        a = np.abs(a) + 0.2
    elif domain == "kink":
        a = away_from(a, [0.0])
    return Example([a], {k: draw(v) for k, v in params.items()})


@st.composite
def pow_example(draw):
    exponent = draw(st.sampled_from([2, 3, -1, 0.5, 1.5, -2.0]))
    a = draw(arrays(draw(shapes())))
    if not float(exponent).is_integer() or exponent < 0:
        a = np.abs(a) + 0.2
    return Example([a], {"exponent": exponent})


@st.composite
def where_example(draw):
    sc, sa, sb = draw(broadcastable_shapes(3))
    cond = draw(arrays(sc)) > 0
    return Example([cond, draw(arrays(sa)), draw(arrays(sb))], grad=draw(needs_grad((False, True, True))))


def reflected_operators(a, b):
    """Each operator with a number or a NumPy array on the left, so the reflected methods run: 2 - a, 3 / b, ..."""
    return (1.5 - a) + 3.0 / b + 2.0 * a + (0.5 + b) + a * 4.0 - b / 2.0 + a ** 2 + np.float64(0.5) * a \
        - np.full(b.shape, 2.0) / b


def np_reflected_operators(a, b):
    return (1.5 - a) + 3.0 / b + 2.0 * a + (0.5 + b) + a * 4.0 - b / 2.0 + a ** 2 + 0.5 * a - 2.0 / b


def np_gelu(x, approximate=None):
    """x Phi(x) from math.erf, or the tanh form 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    if approximate == "tanh":
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    return x * np.vectorize(lambda v: 0.5 * (1 + math.erf(v / math.sqrt(2))))(x)


@st.composite
def methods_example(draw):
    shape_ = draw(shapes(min_dims=2, max_dims=3))
    return Example([distinct(shape_, draw(st.integers(0, 2**16))) + 0.05])  # no ties, none at relu's kink


def tensor_methods(a):
    """Every array method and the operators ops/__init__.py binds to Tensor, each output kept."""
    n = a.ndim
    return [a.reshape(-1), a.reshape((a.size,)), a.reshape(a.size, 1), a.T, a.transpose(),
            a.transpose(1, 0, *range(2, n)), a.permute(*reversed(range(n))), a.swapaxes(0, -1), a.flatten(),
            a.flatten(1), a.sum(), a.mean(axis=0), a.max(axis=-1), a.var(), a.exp(), a.tanh(), a.relu(),
            a.broadcast_to((2,) + a.shape), a.to(dtype=a.dtype), -a, a ** 2, a[0], a @ a.swapaxes(-1, -2),
            a.T @ np.ones(a.shape[:1])]


def np_tensor_methods(a):
    n = a.ndim
    return [a.reshape(-1), a.reshape(-1), a.reshape(a.size, 1), a.T, a.T, a.transpose(1, 0, *range(2, n)),
            a.transpose(*reversed(range(n))), a.swapaxes(0, -1), a.reshape(-1), a.reshape(a.shape[0], -1),
            np.array(a.sum()), a.mean(axis=0), a.max(axis=-1), np.array(a.var()), np.exp(a), np.tanh(a),
            np.maximum(a, 0), np.broadcast_to(a, (2,) + a.shape), a, -a, a ** 2, a[0],
            a @ a.swapaxes(-1, -2), a.T @ np.ones(a.shape[:1])]


ELEMENTWISE = [
    Op("add", (ops.add, elementwise.Add), binary_example(), ops.add, np.add),
    Op("sub", (ops.sub, elementwise.Sub), binary_example(), ops.sub, np.subtract),
    Op("mul", (ops.mul, elementwise.Mul), binary_example(), ops.mul, np.multiply),
    Op("div", (ops.div, elementwise.Div), binary_example("divisor"), ops.div, np.divide),
    Op("maximum", (ops.maximum, elementwise.Maximum), binary_example("no_ties"), ops.maximum, np.maximum),
    Op("reflected_operators", (), binary_example("divisor"), reflected_operators, np_reflected_operators),
    Op("tensor_methods", (), methods_example(), tensor_methods, np_tensor_methods, view=True),
    Op("neg", (ops.neg, elementwise.Neg), unary_example(), ops.neg, np.negative),
    Op("pow", (ops.pow, elementwise.Pow), pow_example(), ops.pow, lambda a, exponent: a ** float(exponent)),
    Op("exp", (ops.exp, elementwise.Exp), unary_example(), ops.exp, np.exp),
    Op("log", (ops.log, elementwise.Log), unary_example("positive"), ops.log, np.log),
    Op("sqrt", (ops.sqrt, elementwise.Sqrt), unary_example("positive"), ops.sqrt, np.sqrt),
    Op("tanh", (ops.tanh, elementwise.Tanh), unary_example(), ops.tanh, np.tanh),
    Op("relu", (ops.relu, elementwise.Relu), unary_example("kink"), ops.relu, lambda a: np.maximum(a, 0.0)),
    Op("where", (ops.where, elementwise.Where), where_example(), ops.where, np.where),
    Op("greater", (ops.greater, elementwise.Greater), binary_example("no_ties"), ops.greater, np.greater,
       differentiable=False),
    # longdouble, so that the cast keeps every digit the finite differences need
    Op("astype", (ops.astype, elementwise.AsType), unary_example(), lambda a: ops.astype(a, np.longdouble),
       lambda a: a.astype(np.longdouble)),
    Op("to_device_op", (ops.to_device_op, elementwise.ToDevice), unary_example(),
       lambda a: ops.to_device_op(a, "cpu"), lambda a: a, view=True),  # to its own device: the array itself
]


# --- matmul and reductions ----------------------------------------------------------------------

@st.composite
def matmul_example(draw):
    kind = draw(st.sampled_from(["vv", "vm", "mv", "batched"]))
    n, m, k = (draw(st.integers(1, 4)) for _ in range(3))
    if kind == "batched":
        lead_a, lead_b = draw(broadcastable_shapes(2, max_dims=2, max_side=3))
        sa, sb = lead_a + (n, k), lead_b + (k, m)
    else:
        lead = draw(shapes(min_dims=0, max_dims=2, max_side=3))
        sa = (k,) if kind[0] == "v" else lead + (n, k)
        sb = (k,) if kind[1] == "v" else lead + (k, m)
    return Example([draw(arrays(sa)), draw(arrays(sb))], grad=draw(needs_grad((True, True))))


def reduction_axes(ndim):
    """None, a single axis (negative too) or a tuple of distinct axes."""
    return st.one_of(
        st.none(),
        st.integers(-ndim, ndim - 1),
        st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True).map(tuple),
    )


@st.composite
def reduction_example(draw, distinct_values=False, ddof=False):
    shape_ = draw(shapes())
    a = distinct(shape_, draw(st.integers(0, 2**16))) if distinct_values else draw(arrays(shape_))
    params = {"axis": draw(reduction_axes(len(shape_))), "keepdims": draw(st.sampled_from([None, False, True]))}
    if ddof:
        axes = range(len(shape_)) if params["axis"] is None else np.atleast_1d(params["axis"])
        n = int(np.prod([shape_[ax] for ax in axes]))
        params["ddof"] = draw(st.sampled_from([None, 0] + ([1] if n > 1 else [])))
    return Example([a], params)


def np_reduction(name):
    """NumPy's reduction ``name`` with the op's defaults (all axes, no keepdims, ddof 0)."""
    def reference(a, **params):
        return getattr(np, name)(a, **with_defaults(params, axis=None, keepdims=False, ddof=0))

    return reference


REDUCTIONS = [
    Op("matmul", (ops.matmul, linalg.MatMul), matmul_example(), ops.matmul, np.matmul),
    Op("sum", (ops.sum, reduce.Sum), reduction_example(), _call(ops.sum), np_reduction("sum")),
    Op("mean", (ops.mean, reduce.Mean), reduction_example(), _call(ops.mean), np_reduction("mean")),
    Op("max", (ops.max, reduce.Max), reduction_example(distinct_values=True), _call(ops.max), np_reduction("max")),
    Op("var", (ops.var, reduce.Var), reduction_example(ddof=True), _call(ops.var), np_reduction("var")),
]


# --- shape ops ----------------------------------------------------------------------------------

@st.composite
def reshape_example(draw):
    shape_ = draw(shapes())
    size = int(np.prod(shape_))
    target = draw(st.sampled_from([(-1,), (size, 1), tuple(reversed(shape_)), (1, -1, 1)]))
    return Example([draw(arrays(shape_))], {"shape": target})


@st.composite
def transpose_example(draw, allow_none=True):
    shape_ = draw(shapes())
    axes = list(draw(st.permutations(range(len(shape_)))))
    axes = [ax - len(shape_) if draw(st.booleans()) else ax for ax in axes]  # negative axes too
    return Example([draw(arrays(shape_))], {"axes": draw(st.sampled_from([None, tuple(axes)])) if allow_none
                                            else tuple(axes)})


@st.composite
def swapaxes_example(draw):
    shape_ = draw(shapes())
    axis = st.integers(-len(shape_), len(shape_) - 1)
    return Example([draw(arrays(shape_))], {"axis1": draw(axis), "axis2": draw(axis)})


@st.composite
def broadcast_to_example(draw):
    small, big = draw(broadcastable_shapes(2))
    target = np.broadcast_shapes(small, big)
    return Example([draw(arrays(small))], {"shape": target})


@st.composite
def join_example(draw, new_axis):
    shape_ = draw(shapes(max_dims=3))
    ndim = len(shape_) + new_axis
    axis = draw(st.integers(-ndim, ndim - 1))
    parts = []
    for _ in range(draw(st.integers(1, 3))):
        s = list(shape_)
        if not new_axis:
            s[axis % ndim] = draw(st.integers(1, 3))
        parts.append(draw(arrays(tuple(s))))
    grads = draw(needs_grad((True,) * len(parts)))
    return Example(parts, {"axis": draw(st.sampled_from([None, axis])) if axis == 0 else axis}, grads)


def joined(fn):
    """An op over a list of tensors (concatenate, stack) called on its inputs one by one."""
    return lambda *parts, **params: fn(list(parts), **given_kwargs(params))


@st.composite
def split_example(draw):
    shape_ = draw(shapes(max_dims=3))
    axis = draw(st.integers(-len(shape_), len(shape_) - 1))
    n = shape_[axis]
    sections = draw(st.one_of(
        st.sampled_from([d for d in range(1, n + 1) if n % d == 0]),
        st.lists(st.integers(0, n + 1), max_size=3).map(sorted),  # empty, repeated and out-of-range pieces
    ))
    return Example([draw(arrays(shape_))], {"indices_or_sections": sections, "axis": axis})


@st.composite
def unbind_example(draw):
    shape_ = draw(shapes(max_dims=3))
    axis = draw(st.integers(-len(shape_), len(shape_) - 1))
    return Example([draw(arrays(shape_))], {"axis": draw(st.sampled_from([None, axis])) if axis == 0 else axis})


@st.composite
def getitem_example(draw):
    shape_ = draw(shapes(max_dims=3))
    a = draw(arrays(shape_))
    kind = draw(st.sampled_from(["slices", "int", "gather", "mask", "ellipsis"]))
    if kind == "slices":
        index = tuple(slice(draw(st.integers(-n, n)), draw(st.sampled_from([None, n, -1])),
                            draw(st.sampled_from([1, 2, -1]))) for n in shape_)
    elif kind == "int":
        index = (draw(st.integers(-shape_[0], shape_[0] - 1)),) + (slice(None),) * (len(shape_) - 1)
    elif kind == "gather":  # repeats: an element picked twice gets both gradients
        index = np.array(draw(st.lists(st.integers(0, shape_[0] - 1), min_size=1, max_size=5)))
    elif kind == "mask":
        index = draw(arrays(shape_)) > 0
    else:
        index = (Ellipsis, None, draw(st.integers(0, shape_[-1] - 1)))
    return Example([a], {"index": index})


@st.composite
def pad_example(draw):
    shape_ = draw(shapes(max_dims=3))
    width = draw(st.one_of(st.integers(0, 2), st.tuples(*[st.tuples(st.integers(0, 2), st.integers(0, 2))
                                                          for _ in shape_])))
    return Example([draw(arrays(shape_))], {"pad_width": width, "value": draw(st.sampled_from([None, 0.0, -1.5]))})


def np_pad(a, pad_width, value=None):
    return np.pad(a, pad_width, constant_values=0.0 if value is None else value)


def np_split(a, indices_or_sections, axis):
    return np.split(a, indices_or_sections, axis=axis)


def np_unbind(a, axis=None):
    axis = 0 if axis is None else axis
    return [np.take(a, i, axis=axis) for i in range(a.shape[axis])]


SHAPE = [
    Op("reshape", (ops.reshape, shape.Reshape), reshape_example(), ops.reshape, np.reshape, view=True),
    Op("transpose", (ops.transpose, shape.Transpose), transpose_example(), ops.transpose, np.transpose, view=True),
    Op("permute", (ops.permute,), transpose_example(allow_none=False), ops.permute, np.transpose, view=True),
    Op("swapaxes", (ops.swapaxes,), swapaxes_example(), ops.swapaxes, np.swapaxes, view=True),
    Op("broadcast_to", (ops.broadcast_to, shape.BroadcastTo), broadcast_to_example(), ops.broadcast_to,
       np.broadcast_to, view=True),
    Op("concatenate", (ops.concatenate, shape.Concatenate), join_example(new_axis=False), joined(ops.concatenate),
       lambda *parts, axis=None: np.concatenate(parts, axis=0 if axis is None else axis)),
    Op("stack", (ops.stack, shape.Stack), join_example(new_axis=True), joined(ops.stack),
       lambda *parts, axis=None: np.stack(parts, axis=0 if axis is None else axis)),
    Op("split", (ops.split, shape.Split), split_example(), ops.split, np_split, view=True),
    Op("unbind", (ops.unbind,), unbind_example(), _call(ops.unbind), np_unbind, view=True),
    Op("getitem", (ops.getitem, shape.GetItem), getitem_example(), ops.getitem, lambda a, index: a[index],
       view=True),
    Op("pad", (ops.pad, shape.Pad), pad_example(), _call(ops.pad), np_pad),
]


# --- fused ops ----------------------------------------------------------------------------------

@st.composite
def linear_example(draw):
    lead = draw(shapes(min_dims=0, max_dims=3, max_side=3))
    n_in, n_out = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    inputs = [draw(arrays(lead + (n_in,))), draw(arrays((n_out, n_in)))]
    if draw(st.booleans()):
        inputs.append(draw(arrays((n_out,))))
    return Example(inputs, grad=draw(needs_grad((True,) * len(inputs))))


def np_linear(x, w, b=None):
    return x @ w.T + (0 if b is None else b)


@st.composite
def linear_epilogue_example(draw):
    """x, weight, bias and, for the residual form, a residual of the output's shape; the form drawn."""
    lead = draw(shapes(min_dims=1, max_dims=2, max_side=3))
    n_in, n_out = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    form = draw(st.sampled_from(["gelu", "gelu_tanh", "residual"]))
    inputs = [draw(arrays(lead + (n_in,))), draw(arrays((n_out, n_in))), draw(arrays((n_out,)))]
    if form == "residual":
        inputs.append(draw(arrays(lead + (n_out,))))
    return Example(inputs, {"form": form}, grad=draw(needs_grad((True,) * len(inputs))))


def linear_epilogue_call(x, w, b, *residual, form):
    return ops.linear(x, w, b, residual=residual[0]) if residual else ops.linear(x, w, b, activation=form)


def np_linear_epilogue(x, w, b, *residual, form):
    out = np_linear(x, w, b)
    if residual:
        return residual[0] + out
    return np_gelu(out, "tanh" if form == "gelu_tanh" else None)


@st.composite
def norm_example(draw, group=False):
    """Inputs and affine parameters of layer norm or group norm, each affine part present or not, eps drawn."""
    if group:
        groups, per_group = draw(st.integers(1, 3)), draw(st.integers(1, 2))
        spatial = tuple(draw(st.lists(st.integers(1, 3), max_size=2)))
        channels = groups * per_group
        x = draw(arrays((draw(st.integers(1, 2)), channels) + spatial))
        params = {"num_groups": groups}
    else:
        channels = draw(st.integers(2, 6))
        x = draw(arrays(draw(shapes(min_dims=0, max_dims=3, max_side=3)) + (channels,)))
        params = {}
    weight = draw(st.sampled_from([None, draw(arrays((channels,)))]))
    bias = draw(st.sampled_from([None, draw(arrays((channels,)))]))
    inputs = [x] + [p for p in (weight, bias) if p is not None]
    params.update(has_weight=weight is not None, has_bias=bias is not None,
                  eps=draw(st.sampled_from([None, 1e-5, 0.1, 1.0])))
    return Example(inputs, params, draw(needs_grad((True,) * len(inputs))))


def norm_call(fn):
    """layer_norm / group_norm called with the drawn affine parts by keyword."""
    def call(x, *affine, has_weight, has_bias, **params):
        rest = list(affine)
        weight = rest.pop(0) if has_weight else None
        bias = rest.pop(0) if has_bias else None
        return fn(x, weight=weight, bias=bias, **given_kwargs(params))

    return call


def np_layer_norm(x, *affine, has_weight, has_bias, eps):
    eps = 1e-6 if eps is None else eps
    out = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + eps)
    rest = list(affine)
    out = out * rest.pop(0) if has_weight else out
    return out + rest.pop(0) if has_bias else out


def np_group_norm(x, *affine, num_groups, has_weight, has_bias, eps):
    eps = 1e-5 if eps is None else eps
    xg = x.reshape(x.shape[0], num_groups, -1)
    xg = (xg - xg.mean(-1, keepdims=True)) / np.sqrt(xg.var(-1, keepdims=True) + eps)
    out, channel = xg.reshape(x.shape), (-1,) + (1,) * (x.ndim - 2)
    rest = list(affine)
    out = out * rest.pop(0).reshape(channel) if has_weight else out
    return out + rest.pop(0).reshape(channel) if has_bias else out


@st.composite
def layer_norm_linear_example(draw):
    """x, the layer norm's weight and bias, the linear layer's weight and its bias or none; activation and eps drawn."""
    lead = draw(shapes(min_dims=0, max_dims=2, max_side=3))
    n_in, n_out = draw(st.integers(2, 5)), draw(st.integers(1, 4))
    inputs = [draw(arrays(lead + (n_in,))), draw(arrays((n_in,))), draw(arrays((n_in,))), draw(arrays((n_out, n_in)))]
    if draw(st.booleans()):
        inputs.append(draw(arrays((n_out,))))
    params = {"activation": draw(st.sampled_from([None, "gelu", "gelu_tanh"])),
              "eps": draw(st.sampled_from([None, 1e-5, 0.1]))}
    return Example(inputs, params, draw(needs_grad((True,) * len(inputs))))


def np_layer_norm_linear(x, ln_weight, ln_bias, weight, *bias, activation, eps):
    out = np_linear(np_layer_norm(x, ln_weight, ln_bias, has_weight=True, has_bias=True, eps=eps), weight, *bias)
    return out if activation is None else np_gelu(out, "tanh" if activation == "gelu_tanh" else None)


@st.composite
def axis_example(draw, low=-2.0, high=2.0, **params):
    shape_ = draw(shapes())
    axis = draw(st.integers(-len(shape_), len(shape_) - 1))
    return Example([draw(arrays(shape_, low, high))],
                   {"axis": None if axis == -1 and draw(st.booleans()) else axis,
                    **{k: draw(v) for k, v in params.items()}})


def np_softmax(x, axis=None):
    e = np.exp(x - x.max(axis=-1 if axis is None else axis, keepdims=True))
    return e / e.sum(axis=-1 if axis is None else axis, keepdims=True)


def np_log_softmax(x, axis=None):
    return np.log(np_softmax(x, axis))


@st.composite
def cross_entropy_example(draw):
    lead = draw(shapes(min_dims=0, max_dims=2, max_side=3))
    n_class = draw(st.integers(1, 4))
    logits = draw(arrays(lead + (n_class,), -3, 3))
    params = {"label_smoothing": draw(st.sampled_from([None, 0.0, 0.1, 0.5])),
              "reduction": draw(st.sampled_from([None, "mean", "sum", "none"]))}
    kind = draw(st.sampled_from(["labels", "soft", "unnormalised"]))
    if kind == "labels":
        params["ignore_index"] = draw(st.sampled_from([None, -100, 0]))
        ignored = -100 if params["ignore_index"] is None else params["ignore_index"]
        target = np.array(draw(st.lists(st.integers(0, n_class - 1), min_size=int(np.prod(lead)),
                                        max_size=int(np.prod(lead))))).reshape(lead).astype(np.int64)
        drop = draw(arrays(lead)) > 0.5  # some labels ignored, on purpose
        target = np.where(drop, ignored, target)
    else:  # soft targets: distributions, or rows of any positive mass (as mixup's sums may drift)
        target = draw(arrays(lead + (n_class,), 0.05, 1.0))
        if kind == "soft":
            target = target / target.sum(-1, keepdims=True)
    return Example([logits, target], params, (True, False))


def np_cross_entropy(logits, target, label_smoothing=None, reduction=None, ignore_index=None):
    """-sum_c q_c log softmax(z)_c row by row, q the smoothed target, then the reduction."""
    eps = label_smoothing or 0.0
    ignore_index = -100 if ignore_index is None else ignore_index
    n_class = logits.shape[-1]
    rows, losses, counted = logits.reshape(-1, n_class), [], []
    for i, z in enumerate(rows):
        logp = z - z.max() - math.log(np.exp(z - z.max()).sum())
        if target.dtype.kind == "f":
            q, keep = target.reshape(-1, n_class)[i], True
        else:
            label = int(target.reshape(-1)[i])
            keep = label != ignore_index
            q = np.eye(n_class)[label if keep else 0]
        q = q * (1 - eps) + eps / n_class
        losses.append(-(q * logp).sum() if keep else 0.0)
        counted.append(keep)
    losses = np.array(losses)
    if reduction == "none":
        return losses.reshape(logits.shape[:-1])
    if reduction == "sum":
        return np.array(losses.sum())
    return np.array(losses.sum() / max(sum(counted), 1))


@st.composite
def drop_example(draw):
    return Example([draw(arrays(draw(shapes())))],
                   {"p": draw(st.sampled_from([0.0, 0.25, 0.5, 1.0])), "training": draw(st.sampled_from([None, True,
                                                                                                          False])),
                    "seed": draw(st.integers(0, 1000))})


def drop_call(fn):
    """dropout / drop_path with a fresh generator of the drawn seed on each call, so every call drops alike."""
    return lambda x, seed, **params: fn(x, generator=generator(seed), **given_kwargs(params))


def np_drop(per_sample):
    """x * keep / (1 - p), keep drawn as documented: uniform float32 from the generator >= p."""
    def reference(x, p, training, seed):
        if training is False or p == 0:
            return x
        shape_ = (x.shape[0],) + (1,) * (x.ndim - 1) if per_sample else x.shape
        keep = generator(seed).random(shape_, dtype=np.float32) >= p
        return x * keep * (1 / (1 - p) if p < 1 else 0.0)

    return reference


FUSED = [
    Op("linear", (ops.linear, fused.Linear), linear_example(), ops.linear, np_linear),
    Op("linear_epilogue", (fused.LinearEpilogue,), linear_epilogue_example(), linear_epilogue_call,
       np_linear_epilogue, rtol=1e-9, atol=1e-14),
    Op("layer_norm", (ops.layer_norm, fused.LayerNorm), norm_example(), norm_call(ops.layer_norm), np_layer_norm,
       rtol=1e-9),
    Op("layer_norm_linear", (ops.layer_norm_linear, fused.LayerNormLinear), layer_norm_linear_example(),
       _call(ops.layer_norm_linear), np_layer_norm_linear, rtol=1e-9, atol=1e-14),
    Op("gelu", (ops.gelu, fused.Gelu), unary_example(approximate=st.sampled_from([None, "none", "tanh"])),
       _call(ops.gelu), np_gelu, rtol=1e-9, atol=1e-14),
    Op("softmax", (ops.softmax, fused.Softmax), axis_example(), _call(ops.softmax), np_softmax),
    Op("log_softmax", (ops.log_softmax, fused.LogSoftmax), axis_example(-20, 20), _call(ops.log_softmax),
       np_log_softmax),
    Op("cross_entropy", (ops.cross_entropy, fused.CrossEntropy), cross_entropy_example(), _call(ops.cross_entropy),
       np_cross_entropy),
    Op("dropout", (ops.dropout, fused.DropMask), drop_example(), drop_call(ops.dropout), np_drop(False), view=True),
    Op("drop_path", (ops.drop_path,), drop_example(), drop_call(ops.drop_path), np_drop(True), view=True),
]


# --- convolution, pooling, group norm, attention, resizing --------------------------------------

@st.composite
def conv_example(draw):
    kernel, stride, padding, size = draw(windows())
    batch, c_in, c_out = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    inputs = [draw(arrays((batch, c_in) + size)), draw(arrays((c_out, c_in) + kernel))]
    if draw(st.booleans()):
        inputs.append(draw(arrays((c_out,))))
    square = stride[0] == stride[1] and padding[0] == padding[1]
    params = {"stride": stride[0] if square and draw(st.booleans()) else stride,
              "padding": draw(st.sampled_from([None, padding])) if padding == (0, 0) else padding}
    return Example(inputs, params, draw(needs_grad((True,) * len(inputs))))


def np_conv2d(x, w, b=None, stride=1, padding=None):
    pair = lambda v: (v, v) if isinstance(v, int) else v  # noqa: E731
    return conv_reference(x, w, b, pair(stride), pair(padding or 0))


@st.composite
def pool_example(draw, distinct_values):
    kernel, stride, padding, size = draw(windows(pool=True))
    shape_ = (draw(st.integers(1, 2)), draw(st.integers(1, 3))) + size
    x = distinct(shape_, draw(st.integers(0, 2**16))) if distinct_values else draw(arrays(shape_))
    return Example([x], {"kernel_size": kernel,
                         "stride": draw(st.sampled_from([None, stride])) if stride == kernel else stride,
                         "padding": draw(st.sampled_from([None, padding])) if padding == (0, 0) else padding})


def np_pool(reduce_, fill):
    def reference(x, kernel_size, stride=None, padding=None):
        return pool_reference(x, kernel_size, kernel_size if stride is None else stride, padding or (0, 0),
                              reduce_, fill)

    return reference


@st.composite
def attention_example(draw, with_dropout=True):
    """q (..., Nq, d), k (..., Nk, d), v (..., Nk, dv), a bias broadcasting to the logits or none, scale, dropout."""
    lead = draw(shapes(min_dims=0, max_dims=2, max_side=2))
    nq, nk, d, dv = (draw(st.integers(1, 3)) for _ in range(4))
    inputs = [draw(arrays(lead + (nq, d))), draw(arrays(lead + (nk, d))), draw(arrays(lead + (nk, dv)))]
    if draw(st.booleans()):
        logits = lead + (nq, nk)
        ones = draw(st.lists(st.booleans(), min_size=len(logits), max_size=len(logits)))
        bias_shape = tuple(1 if one else n for one, n in zip(ones, logits))[draw(st.integers(0, len(lead) + 1)):]
        inputs.append(draw(arrays(bias_shape)))
    params = {"scale": draw(st.sampled_from([None, 0.7]))}
    if with_dropout:
        params.update(dropout_p=draw(st.sampled_from([None, 0.0, 0.3])), training=draw(st.sampled_from([None, False])),
                      return_weights=draw(st.sampled_from([None, True])), seed=draw(st.integers(0, 1000)))
    return Example(inputs, params, draw(needs_grad((True,) * len(inputs))))


def attention_call(q, k, v, *bias, seed, **params):
    """scaled_dot_product_attention with a fresh generator of the drawn seed on each call."""
    return ops.scaled_dot_product_attention(q, k, v, *bias, generator=generator(seed), **given_kwargs(params))


def np_attention_weights(q, k, bias=None, scale=None):
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    return np_softmax(q @ np.swapaxes(k, -1, -2) * scale + (0 if bias is None else bias))


def np_attention(q, k, v, *bias, scale, dropout_p, training, return_weights, seed):
    """softmax(q k^T scale + bias) v, the weights dropped with the mask drawn as documented."""
    p = np_attention_weights(q, k, *bias, scale=scale)
    if training is not False and dropout_p:
        keep = generator(seed).random(p.shape, dtype=np.float32) >= dropout_p
        out = (p * keep / (1 - dropout_p)) @ v
    else:
        out = p @ v
    return (out, p) if return_weights else out


@st.composite
def resize_example(draw):
    lead = draw(shapes(min_dims=0, max_dims=2, max_side=2))
    h, w = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    return Example([draw(arrays(lead + (h, w)))],
                   {"size": (draw(st.integers(1, 7)), draw(st.integers(1, 7))),
                    "mode": draw(st.sampled_from([None, "bilinear", "bicubic"])),
                    "align_corners": draw(st.sampled_from([None, False, True]))})


def np_resize(x, size, mode=None, align_corners=None):
    return resize_reference(x, size, mode or "bilinear", bool(align_corners))


LAYERS = [
    Op("conv2d", (ops.conv2d, conv.Conv2d), conv_example(), _call(ops.conv2d), np_conv2d),
    Op("max_pool2d", (ops.max_pool2d, conv.MaxPool2d), pool_example(True), _call(ops.max_pool2d),
       np_pool(np.max, -np.inf)),
    Op("avg_pool2d", (ops.avg_pool2d, conv.AvgPool2d), pool_example(False), _call(ops.avg_pool2d),
       np_pool(np.mean, 0.0)),
    Op("group_norm", (ops.group_norm, conv.GroupNorm), norm_example(group=True), norm_call(ops.group_norm),
       np_group_norm, rtol=1e-9),
    Op("scaled_dot_product_attention", (ops.scaled_dot_product_attention, attention.ScaledDotProductAttention),
       attention_example(), attention_call, np_attention,
       graph_part=lambda result: result[0] if isinstance(result, tuple) else result),
    Op("attention_weights", (ops.attention_weights,), attention_example(with_dropout=False),
       lambda q, k, v, *bias, **params: ops.attention_weights(q, k, *bias, **given_kwargs(params)),
       lambda q, k, v, *bias, **params: np_attention_weights(q, k, *bias, **params), differentiable=False),
    Op("resize_2d", (ops.resize_2d, resize.Resize2d), resize_example(), _call(ops.resize_2d), np_resize),
]


# --- npvit's ops: position embeddings ------------------------------------------------------------

@st.composite
def absolute_2d_example(draw):
    gh, gw, half = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    return Example([draw(arrays((gh, half))), draw(arrays((gw, half)))],
                   {"num_prefix_tokens": draw(st.integers(0, 2))}, draw(needs_grad((True, True))))


def absolute_2d(row, col, num_prefix_tokens):
    return pos_embed.absolute("2d", {"pos_embed_row": row, "pos_embed_col": col}, num_prefix_tokens)


def np_absolute_2d(row, col, num_prefix_tokens):
    """Token n = i gw + j gets [row i, col j]; prefix tokens get zeros."""
    (gh, half), gw = row.shape, col.shape[0]
    out = np.zeros((1, num_prefix_tokens + gh * gw, 2 * half))
    for i in range(gh):
        for j in range(gw):
            out[0, num_prefix_tokens + i * gw + j] = np.concatenate([row[i], col[j]])
    return out


@st.composite
def relative_bias_example(draw):
    gh, gw, heads = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    d = draw(st.integers(1, 2))
    prefix, batch = draw(st.integers(0, 1)), draw(st.integers(1, 2))
    q = draw(arrays((batch, heads, prefix + gh * gw, d)))
    table = draw(arrays((2 * gh - 1, 2 * gw - 1, heads * d)))
    return Example([q, table], {"grid": (gh, gw), "num_prefix_tokens": prefix}, draw(needs_grad((True, True))))


def relative_bias(q, table, grid, num_prefix_tokens):
    return pos_embed.relative_bias(q, table, pos_embed.relative_index(grid), num_prefix_tokens)


def np_relative_bias(q, table, grid, num_prefix_tokens):
    """bias[b, h, p + m, p + n] = q[b, h, p + m] . table[dy, dx, head h] / sqrt(d), (dy, dx) patch m's offset from n."""
    gh, gw = grid
    batch, heads, n_all, d = q.shape
    p = num_prefix_tokens
    out = np.zeros((batch, heads, n_all, n_all))
    for m in range(gh * gw):
        for n in range(gh * gw):
            dy, dx = m // gw - n // gw + gh - 1, m % gw - n % gw + gw - 1
            key = table[dy, dx].reshape(heads, d)  # (H, d)
            out[:, :, p + m, p + n] = (q[:, :, p + m] * key).sum(-1) * d ** -0.5
    return out


NPVIT = [
    Op("pos_embed.absolute_2d", (pos_embed.absolute,), absolute_2d_example(), absolute_2d, np_absolute_2d),
    Op("pos_embed.relative_bias", (pos_embed.relative_bias, pos_embed.relative_index), relative_bias_example(),
       relative_bias, np_relative_bias),
]

TABLE = {op.name: op for op in ELEMENTWISE + REDUCTIONS + SHAPE + FUSED + LAYERS + NPVIT}
