"""Grid resizing: the gradient and the values against a per-pixel loop written from PyTorch's
formulas are checked by the op table (test_op_table.py); here, PyTorch itself when it is
installed, the identity bit for bit at the same size, constants and ramps preserved, rows of
the interpolation matrices summing to 1, and float32 kept float32."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from autograd import Tensor, ops
from autograd.ops import interpolation_matrix
from checking import torch_or_skip
from devices import requires_gpu
from references import source
from strategies import shapes

modes = st.sampled_from(["bilinear", "bicubic"])


@given(shapes(min_dims=2, max_dims=4, max_side=5), modes, st.booleans())
def test_same_size_is_the_identity_bit_for_bit(shape, mode, align_corners):
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32) * 1e3
    t = Tensor(x, requires_grad=True)
    out = ops.resize_2d(t, shape[-2:], mode, align_corners)
    g = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    out.backward(g)
    np.testing.assert_array_equal(out.data, x)
    np.testing.assert_array_equal(t.grad, g)
    assert out.data is not x  # a copy: changing one later leaves the other alone
    np.testing.assert_array_equal(interpolation_matrix(shape[-1], shape[-1], mode, align_corners), np.eye(shape[-1]))


@given(st.integers(1, 20), st.integers(1, 20), modes, st.booleans())
def test_matrix_rows_sum_to_one(n_in, n_out, mode, align_corners):
    m = interpolation_matrix(n_in, n_out, mode, align_corners, dtype=np.float64)
    assert m.shape == (n_out, n_in)
    np.testing.assert_allclose(m.sum(axis=1), 1.0, rtol=0, atol=1e-12)


@given(st.integers(1, 6), st.integers(1, 6), st.integers(1, 9), st.integers(1, 9), modes, st.booleans())
def test_constant_grid_stays_constant(h, w, h2, w2, mode, align_corners):
    out = ops.resize_2d(Tensor(np.full((3, h, w), 2.5)), (h2, w2), mode, align_corners).data
    np.testing.assert_allclose(out, 2.5, rtol=1e-12)


def ramp(coords_y, coords_x):
    """The plane 0.7 y - 1.3 x + 0.2 sampled at the given coordinates."""
    return 0.7 * np.asarray(coords_y)[:, None] - 1.3 * np.asarray(coords_x)[None, :] + 0.2


@given(st.integers(2, 6), st.integers(2, 6), st.integers(0, 8), st.integers(0, 8), st.booleans())
def test_bilinear_preserves_a_ramp_away_from_the_borders(h, w, extra_h, extra_w, align_corners):
    h2, w2 = h + extra_h, w + extra_w
    out = ops.resize_2d(Tensor(ramp(np.arange(h), np.arange(w))), (h2, w2), "bilinear", align_corners).data
    sy = np.array([source(i, h, h2, align_corners) for i in range(h2)])
    sx = np.array([source(j, w, w2, align_corners) for j in range(w2)])
    inside = np.outer((sy >= 0) & (sy <= h - 1), (sx >= 0) & (sx <= w - 1))  # outside, the edge is held flat
    assert inside.any()
    np.testing.assert_allclose(out[inside], ramp(sy, sx)[inside], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n", [4, 5, 7])
def test_bicubic_preserves_a_ramp_at_samples_and_midpoints(n):
    # With a = -0.75 cubic convolution reproduces a ramp only where the sample sits on an
    # input sample or halfway between two (a = -0.5 would reproduce it everywhere), and
    # only with all four taps inside the grid: corners aligned, 2n - 1 outputs hit exactly those.
    out = ops.resize_2d(Tensor(ramp(np.arange(n), np.arange(n))), (2 * n - 1, 2 * n - 1), "bicubic", True).data
    s = np.arange(2 * n - 1) / 2
    inner = slice(2, 2 * n - 4)  # sources in [1, n - 2.5]: taps floor(s) - 1 .. floor(s) + 2 all exist
    np.testing.assert_allclose(out[inner, inner], ramp(s, s)[inner, inner], rtol=1e-12, atol=1e-12)
    assert not np.allclose(out, ramp(s, s))  # at the borders the clamped taps bend it


@given(shapes(min_dims=0, max_dims=2, max_side=3), st.integers(1, 8), st.integers(1, 8),
       st.integers(1, 12), st.integers(1, 12), modes, st.booleans())
def test_resize_matches_torch(lead, h, w, h2, w2, mode, align_corners):
    torch = torch_or_skip()
    x = np.random.default_rng(h * 100 + w).standard_normal(tuple(lead) + (h, w))
    flat = torch.tensor(x.reshape((-1, 1, h, w)))  # F.interpolate wants (N, C, H, W)
    ref = torch.nn.functional.interpolate(flat, size=(h2, w2), mode=mode, align_corners=align_corners)
    ref = ref.numpy().reshape(tuple(lead) + (h2, w2))
    np.testing.assert_allclose(ops.resize_2d(Tensor(x), (h2, w2), mode, align_corners).data, ref,
                               rtol=1e-12, atol=1e-12)
    ours32 = ops.resize_2d(Tensor(x.astype(np.float32)), (h2, w2), mode, align_corners).data
    np.testing.assert_allclose(ours32, ref, rtol=1e-5, atol=1e-5)


def test_position_embedding_grid_upsampling_matches_torch():
    # the fine-tuning case: a (1, D, 14, 14) grid of embeddings to 24 x 24 (224 -> 384 pixels)
    torch = torch_or_skip()
    x = np.random.default_rng(0).standard_normal((1, 32, 14, 14)).astype(np.float32)
    t = Tensor(x, requires_grad=True)
    out = ops.resize_2d(t, (24, 24), "bicubic")
    out.backward(np.ones(out.shape, dtype=np.float32))
    xt = torch.tensor(x, requires_grad=True)
    ref = torch.nn.functional.interpolate(xt, size=(24, 24), mode="bicubic", align_corners=False)
    ref.backward(torch.ones(ref.shape))
    assert out.dtype == np.float32 and t.grad.dtype == np.float32
    np.testing.assert_allclose(out.data, ref.detach().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(t.grad, xt.grad.numpy(), rtol=1e-5, atol=1e-5)


def test_float32_any_rank_and_bad_arguments():
    for shape in ((3, 4), (2, 3, 4), (1, 2, 2, 3, 4)):
        x = Tensor(np.ones(shape, dtype=np.float32), requires_grad=True)
        out = ops.resize_2d(x, (5, 2), "bicubic")
        out.sum().backward()
        assert out.shape == shape[:-2] + (5, 2) and out.dtype == np.float32 and x.grad.dtype == np.float32
    assert interpolation_matrix(3, 5).dtype == np.float32
    with pytest.raises(ValueError, match="mode"):
        ops.resize_2d(Tensor(np.ones((3, 4))), (5, 5), "nearest")
    with pytest.raises(ValueError, match="mode"):  # refused before any work, even with nothing to resize
        ops.resize_2d(Tensor(np.ones((3, 4))), (3, 4), "nearest")
    with pytest.raises(ValueError, match="positive"):
        ops.resize_2d(Tensor(np.ones((3, 4))), (0, 5))
    with pytest.raises(ValueError, match="two axes"):
        ops.resize_2d(Tensor(np.ones(4)), (5, 5))


@requires_gpu
def test_resize_on_gpu_matches_cpu():
    x = np.random.default_rng(0).standard_normal((2, 3, 5, 7))
    g = np.random.default_rng(1).standard_normal((2, 3, 9, 4))
    for mode in ("bilinear", "bicubic"):
        cpu, gpu = Tensor(x, requires_grad=True), Tensor(x, requires_grad=True, device="gpu")
        for t in (cpu, gpu):
            ops.resize_2d(t, (9, 4), mode).backward(Tensor(g, device=t.device))
        np.testing.assert_allclose(ops.resize_2d(gpu, (9, 4), mode).numpy(), ops.resize_2d(cpu, (9, 4), mode).data,
                                   rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(gpu.grad.get(), cpu.grad, rtol=1e-12, atol=1e-12)
