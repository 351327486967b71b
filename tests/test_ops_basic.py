"""Primitive ops: forward against NumPy, gradient against finite differences, on drawn shapes."""
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from autograd import Tensor, gradcheck, ops
from strategies import arrays, away_from, broadcastable_shapes, shapes


def check_forward(fn, np_fn, *inputs):
    """The op's forward equals NumPy's on the same inputs."""
    out = fn(*(Tensor(x) for x in inputs))
    np.testing.assert_allclose(out.data, np_fn(*inputs), rtol=1e-12, atol=1e-12)


BINARY = {
    "add": (ops.add, np.add),
    "sub": (ops.sub, np.subtract),
    "mul": (ops.mul, np.multiply),
    "div": (ops.div, np.divide),
    "maximum": (ops.maximum, np.maximum),
}


@given(st.sampled_from(sorted(BINARY)), broadcastable_shapes(2), st.data())
def test_binary_ops_broadcast(name, shape_pair, data):
    fn, np_fn = BINARY[name]
    sa, sb = shape_pair
    a = data.draw(arrays(sa))
    b = data.draw(arrays(sb))
    if name == "div":
        b = away_from(b, [0.0], margin=0.5)
    if name == "maximum":  # a on odd, b on even tenths: never tied, never within the step
        a = (2 * np.round(a * 5) + 1) / 10
        b = 2 * np.round(b * 5) / 10
    check_forward(fn, np_fn, a, b)
    gradcheck(fn, [a, b])


UNARY = {
    "neg": (ops.neg, np.negative, None),
    "exp": (ops.exp, np.exp, None),
    "log": (ops.log, np.log, "positive"),
    "sqrt": (ops.sqrt, np.sqrt, "positive"),
    "tanh": (ops.tanh, np.tanh, None),
    "relu": (ops.relu, lambda a: np.maximum(a, 0), "kink"),
    "square": (lambda a: a**2, np.square, None),
    "pow_frac": (lambda a: ops.pow(a, 1.5), lambda a: a**1.5, "positive"),
    "pow_neg": (lambda a: ops.pow(a, -2), lambda a: a**-2.0, "positive"),
}


@given(st.sampled_from(sorted(UNARY)), shapes(), st.data())
def test_unary_ops(name, shape, data):
    fn, np_fn, domain = UNARY[name]
    a = data.draw(arrays(shape))
    if domain == "positive":
        a = np.abs(a) + 0.2
    elif domain == "kink":
        a = away_from(a, [0.0])
    check_forward(fn, np_fn, a)
    gradcheck(fn, [a])


@given(broadcastable_shapes(3), st.data())
def test_where(shape_triple, data):
    sc, sa, sb = shape_triple
    cond = data.draw(arrays(sc)) > 0
    a, b = data.draw(arrays(sa)), data.draw(arrays(sb))
    check_forward(lambda c, x, y: ops.where(c, x, y), np.where, cond, a, b)
    gradcheck(lambda x, y: ops.where(cond, x, y), [a, b])


def reduction_axes(ndim):
    """None, a single axis (negative too) or a tuple of distinct axes."""
    return st.one_of(
        st.none(),
        st.integers(-ndim, ndim - 1),
        st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True).map(tuple),
    )


@given(st.sampled_from(["sum", "mean", "var", "max"]), shapes(), st.booleans(), st.data())
def test_reductions(name, shape, keepdims, data):
    axis = data.draw(reduction_axes(len(shape)))
    a = data.draw(arrays(shape))
    if name == "max":  # distinct values spaced apart: no ties, none within the step
        a = np.random.default_rng(a.size).permutation(a.size).reshape(shape) * 0.1
    fn = lambda x: getattr(ops, name)(x, axis=axis, keepdims=keepdims)  # noqa: E731
    np_fn = lambda x: getattr(np, name)(x, axis=axis, keepdims=keepdims)  # noqa: E731
    check_forward(fn, np_fn, a)
    gradcheck(fn, [a])


def test_max_ties_share_the_gradient():
    a = Tensor(np.array([1.0, 3.0, 3.0]), requires_grad=True)
    ops.max(a).backward()
    np.testing.assert_array_equal(a.grad, [0.0, 0.5, 0.5])


def test_var_with_ddof():
    a = np.random.default_rng(0).normal(size=(3, 5))
    check_forward(lambda x: ops.var(x, axis=1, ddof=1), lambda x: np.var(x, axis=1, ddof=1), a)
    gradcheck(lambda x: ops.var(x, axis=1, ddof=1), [a])


@given(shapes(min_dims=1), st.data())
def test_reshape_and_transpose(shape, data):
    a = data.draw(arrays(shape))
    perm = tuple(data.draw(st.permutations(range(len(shape)))))
    check_forward(lambda x: ops.transpose(x, perm), lambda x: np.transpose(x, perm), a)
    gradcheck(lambda x: ops.transpose(x, perm), [a])
    gradcheck(lambda x: ops.reshape(x, (-1,)) * np.arange(a.size), [a])
    gradcheck(lambda x: ops.reshape(ops.transpose(x), (a.size, 1)), [a])
    if len(shape) >= 2:
        check_forward(lambda x: ops.swapaxes(x, 0, -1), lambda x: np.swapaxes(x, 0, -1), a)
        gradcheck(lambda x: ops.swapaxes(x, 0, -1), [a])


@given(shapes(min_dims=1, max_dims=3), st.integers(1, 3), st.data())
def test_concatenate_stack_split(shape, n, data):
    axis = data.draw(st.integers(0, len(shape) - 1))
    parts = [data.draw(arrays(shape)) for _ in range(n)]
    check_forward(lambda *xs: ops.concatenate(xs, axis=axis), lambda *xs: np.concatenate(xs, axis=axis), *parts)
    gradcheck(lambda *xs: ops.concatenate(xs, axis=axis), parts)
    check_forward(lambda *xs: ops.stack(xs, axis=axis), lambda *xs: np.stack(xs, axis=axis), *parts)
    gradcheck(lambda *xs: ops.stack(xs, axis=axis), parts)
    whole = np.concatenate(parts, axis=axis)
    weights = [np.random.default_rng(i).normal(size=shape) for i in range(n)]
    gradcheck(lambda x: sum(p * w for p, w in zip(ops.split(x, n, axis=axis), weights)), [whole])
    pieces = ops.split(Tensor(whole), n, axis=axis)
    for got, want in zip(pieces, np.split(whole, n, axis=axis)):
        np.testing.assert_array_equal(got.data, want)


@given(shapes(min_dims=1, max_dims=3), st.data())
def test_getitem_slices(shape, data):
    a = data.draw(arrays(shape))
    index = tuple(
        data.draw(st.one_of(st.integers(-n, n - 1), st.slices(n).filter(lambda s: s.step is None or s.step != 0)))
        for n in shape
    )
    check_forward(lambda x: x[index], lambda x: x[index], a)
    if np.asarray(a[index]).size:
        gradcheck(lambda x: x[index] * 1.0, [a])


@given(shapes(min_dims=1, max_dims=3), st.data())
def test_getitem_integer_array_gather_with_repeats(shape, data):
    a = data.draw(arrays(shape))
    idx = np.array(data.draw(st.lists(st.integers(0, shape[0] - 1), min_size=1, max_size=6)))
    check_forward(lambda x: x[idx], lambda x: x[idx], a)
    gradcheck(lambda x: x[idx], [a])
    if len(shape) >= 2:
        cols = np.array(data.draw(st.lists(st.integers(0, shape[1] - 1), min_size=len(idx), max_size=len(idx))))
        gradcheck(lambda x: x[idx, cols], [a])


def test_getitem_with_ellipsis_and_newaxis():
    a = np.random.default_rng(0).normal(size=(2, 3, 4))
    check_forward(lambda x: x[..., None, 1:3], lambda x: x[..., None, 1:3], a)
    gradcheck(lambda x: x[..., None, 1:3], [a])


@given(shapes(min_dims=1, max_dims=3), st.data())
def test_pad(shape, data):
    a = data.draw(arrays(shape))
    widths = tuple((data.draw(st.integers(0, 2)), data.draw(st.integers(0, 2))) for _ in shape)
    value = data.draw(st.sampled_from([0.0, -1.5]))
    check_forward(lambda x: ops.pad(x, widths, value), lambda x: np.pad(x, widths, constant_values=value), a)
    gradcheck(lambda x: ops.pad(x, widths, value), [a])


@given(broadcastable_shapes(2), st.data())
def test_broadcast_to(shape_pair, data):
    small, other = shape_pair
    target = np.broadcast_shapes(small, other)
    a = data.draw(arrays(small))
    check_forward(lambda x: ops.broadcast_to(x, target), lambda x: np.broadcast_to(x, target), a)
    gradcheck(lambda x: ops.broadcast_to(x, target), [a])


@st.composite
def matmul_shapes(draw):
    """Shapes (..., n, k) and (..., k, m) with broadcastable batch dims, or 1-D operands."""
    n, k, m = draw(st.integers(1, 4)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    batch_a, batch_b = draw(broadcastable_shapes(2, max_dims=2, max_side=3))
    sa = batch_a + (n, k) if draw(st.booleans()) or not batch_a else (k,)
    sb = batch_b + (k, m) if draw(st.booleans()) or not batch_b else (k,)
    return sa, sb


@given(matmul_shapes(), st.data())
def test_matmul_batched_and_broadcast(shape_pair, data):
    sa, sb = shape_pair
    a, b = data.draw(arrays(sa)), data.draw(arrays(sb))
    check_forward(ops.matmul, np.matmul, a, b)
    gradcheck(ops.matmul, [a, b])
