"""Elementwise ops (autograd/ops/elementwise.py): forward against NumPy, gradient against finite
differences, on drawn (broadcast) shapes."""
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from autograd import gradcheck, ops
from checking import check_forward
from strategies import arrays, away_from, broadcastable_shapes, shapes


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
