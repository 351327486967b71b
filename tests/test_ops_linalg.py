"""Matrix products (autograd/ops/linalg.py): batched, broadcast and 1-D operands against NumPy and
finite differences."""
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from autograd import gradcheck, ops
from checking import check_forward
from strategies import arrays, broadcastable_shapes


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
