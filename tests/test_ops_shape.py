"""Shape ops (autograd/ops/shape.py): forward against NumPy, gradient against finite differences, on
drawn shapes; split and unbind as one node with several outputs, some unused or reused."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from autograd import Tensor, gradcheck, ops
from checking import check_forward
from strategies import arrays, broadcastable_shapes, shapes


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


@given(broadcastable_shapes(2), st.data())
def test_broadcast_to(shape_pair, data):
    small, other = shape_pair
    target = np.broadcast_shapes(small, other)
    a = data.draw(arrays(small))
    check_forward(lambda x: ops.broadcast_to(x, target), lambda x: np.broadcast_to(x, target), a)
    gradcheck(lambda x: ops.broadcast_to(x, target), [a])


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


@given(shapes(min_dims=1, max_dims=3, max_side=5), st.data())
def test_split_at_indices_with_unused_and_reused_pieces(shape, data):
    a = data.draw(arrays(shape))
    axis = data.draw(st.integers(0, len(shape) - 1))
    n = shape[axis]
    bounds = sorted(data.draw(st.lists(st.integers(0, n + 1), max_size=3)))
    used = data.draw(st.lists(st.booleans(), min_size=len(bounds) + 1, max_size=len(bounds) + 1))

    def fn(x):
        pieces = ops.split(x, bounds, axis=axis)
        terms = [(p * p + p).sum() for p, u in zip(pieces, used) if u]  # a used piece feeds two ops
        return sum(terms) if terms else (x * 0.0).sum()

    for got, want in zip(ops.split(Tensor(a), bounds, axis=axis), np.split(a, bounds, axis=axis)):
        np.testing.assert_array_equal(got.data, want)
    gradcheck(fn, [a])


def test_split_gradient_is_c_ordered_even_from_transposed_pieces():
    x = Tensor(np.arange(24.0).reshape(2, 3, 4), requires_grad=True)
    q, k, v = ops.unbind(x, axis=1)  # (2, 4) each
    (q.T * 1.0).sum().backward()  # upstream gradients arrive transposed
    assert x.grad.flags.c_contiguous
    np.testing.assert_array_equal(x.grad, np.stack([np.ones((2, 4)), np.zeros((2, 4)), np.zeros((2, 4))], axis=1))


def test_split_rejects_decreasing_or_negative_indices():
    for bad in ([3, 1], [-1]):
        with pytest.raises(ValueError, match="non-decreasing"):
            ops.split(Tensor(np.zeros(4)), bad)


@given(shapes(min_dims=1, max_dims=4), st.data())
def test_unbind(shape, data):
    a = data.draw(arrays(shape))
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    pieces = ops.unbind(Tensor(a), axis=axis)
    assert len(pieces) == shape[axis]
    for i, piece in enumerate(pieces):
        np.testing.assert_array_equal(piece.data, np.take(a, i, axis=axis))
    weights = [np.random.default_rng(i).normal(size=p.shape) for i, p in enumerate(pieces)]
    gradcheck(lambda x: sum(p * w for p, w in zip(ops.unbind(x, axis=axis), weights)), [a])


def test_backward_from_one_output_of_several():
    x = Tensor(np.arange(6.0).reshape(3, 2), requires_grad=True)
    a, b, c = ops.unbind(x)
    b.backward(np.array([1.0, 2.0]))
    np.testing.assert_array_equal(x.grad, [[0, 0], [1, 2], [0, 0]])


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
