"""Every op of the op table (``op_table.py``), each with its own examples: its gradient against
finite differences in float64, its forward against an independent reference, no change to any
array the caller holds; and a coverage check that fails when a Function or a public op has no entry.
"""
import importlib
import inspect
import pkgutil

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import autograd
import npvit
from autograd import Tensor, gradcheck, ops
from autograd.engine import Function
from checking import upstream
from op_table import TABLE

# Public callables of autograd.ops that are not ops on Tensors, each with why it has no entry.
NOT_OPS = {
    ops.interpolation_matrix: "a NumPy helper building resize_2d's matrices; checked through resize_2d's "
                              "per-pixel reference and test_ops_resize's row sums",
}

names = pytest.mark.parametrize("name", sorted(TABLE))
# ops without a gradient (comparisons, analysis-only weights) have the forward and no-mutation properties alone
differentiable_names = pytest.mark.parametrize("name", sorted(n for n, e in TABLE.items() if e.differentiable))


def joined(out, xp_concatenate):
    """An op's result as one flat array or Tensor: several outputs (split, unbind) end to end."""
    if isinstance(out, (tuple, list)):
        return xp_concatenate([o.reshape(-1) for o in out])
    return out


def run(name, example, tensors, graph_part=False):
    """The entry's op on ``tensors`` with the drawn keyword arguments, as one Tensor (its part with history)."""
    result = TABLE[name].op(*tensors, **example.params)
    if graph_part and TABLE[name].graph_part is not None:
        result = TABLE[name].graph_part(result)
    return joined(result, ops.concatenate)


@differentiable_names
@given(st.data())
def test_gradient_matches_finite_differences(name, data):
    entry = TABLE[name]
    example = data.draw(entry.example)
    check = [i for i, g in enumerate(example.grad) if g]
    gradcheck(lambda *t: run(name, example, t, graph_part=True), example.inputs, check=check)


@names
@given(st.data())
def test_forward_matches_reference(name, data):
    entry = TABLE[name]
    example = data.draw(entry.example)
    result = entry.op(*[Tensor(a) for a in example.inputs], **example.params)
    reference = entry.reference(*example.inputs, **example.params)
    if isinstance(result, (tuple, list)):  # joined end to end below: each output's shape first
        assert [r.shape for r in result] == [np.shape(r) for r in reference]
    out = joined(result, ops.concatenate)
    want = np.asarray(joined(reference, np.concatenate))
    assert out.shape == want.shape
    assert out.dtype == (want.dtype if entry.differentiable else out.dtype)
    np.testing.assert_allclose(out.data, want, rtol=entry.rtol, atol=entry.atol)


@names
@given(st.data())
def test_no_array_of_the_caller_changes(name, data):
    """Forward and backward leave the inputs and the upstream gradient as they were; each gradient
    has its input's shape and dtype, owns its memory, and a frozen input gets none."""
    entry = TABLE[name]
    example = data.draw(entry.example)
    inputs = example.inputs
    params_before = {k: np.copy(v) for k, v in example.params.items() if isinstance(v, np.ndarray)}
    before = [a.copy() for a in inputs]
    tensors = [Tensor(a, requires_grad=g and entry.differentiable) for a, g in zip(inputs, example.grad)]
    out = run(name, example, tensors)
    if not entry.view:
        assert not any(np.shares_memory(out.data, a) for a in inputs), "the output is a view of an input"
    if not entry.differentiable:
        assert not out.requires_grad
    else:
        g = upstream(out.shape, out.dtype)
        g_before = g.copy()
        out.backward(g)
        np.testing.assert_array_equal(g, g_before)
        for t, a, wanted in zip(tensors, inputs, example.grad):
            if not wanted:
                assert t.grad is None
                continue
            assert t.grad.shape == a.shape and t.grad.dtype == a.dtype
            assert not any(np.shares_memory(t.grad, b) for b in inputs + [g])
    for a, b in zip(inputs, before):
        np.testing.assert_array_equal(a, b)
    for k, v in params_before.items():
        np.testing.assert_array_equal(example.params[k], v)


# --- coverage: nothing lands without an entry ---------------------------------------------------

def _import_all(package):
    """Import every module of ``package``, so that every Function subclass it defines exists."""
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        importlib.import_module(info.name)


def _subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def test_every_function_and_public_op_has_a_table_entry():
    _import_all(autograd)
    _import_all(npvit)
    covered = {obj for entry in TABLE.values() for obj in entry.covers}
    functions = {cls for cls in _subclasses(Function) if cls.__module__.split(".")[0] in ("autograd", "npvit")}
    public = {obj for n, obj in vars(ops).items()
              if not n.startswith("_") and inspect.isfunction(obj) and obj.__module__.startswith("autograd.ops")}
    missing = sorted(f"{obj.__module__}.{obj.__qualname__}" for obj in (functions | public) - covered - set(NOT_OPS))
    assert not missing, f"no entry in tests/op_table.py for: {', '.join(missing)}"
    assert len(functions) >= 40 and len(public) >= 45  # the walk found the library, not an empty namespace


def test_a_function_without_an_entry_is_named():
    class Unlisted(Function):  # a new op that landed without a table entry
        @staticmethod
        def forward(a):
            return a, None

    try:
        functions = set(_subclasses(Function))
        assert Unlisted in functions
        assert Unlisted not in {obj for entry in TABLE.values() for obj in entry.covers}
    finally:
        del Unlisted
