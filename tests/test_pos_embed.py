"""Position embeddings: each kind against a direct loop, and resizing to a new patch grid."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from autograd import backend
from autograd.tensor import Tensor
from npvit import pos_embed as pe
from npvit import VisionTransformer
from checking import torch_or_skip

grids = st.tuples(st.integers(1, 5), st.integers(1, 5))
modes = st.sampled_from(["bilinear", "bicubic"])


def rng(seed=0):
    return np.random.default_rng(seed)


# --- the kinds -------------------------------------------------------------------------------
@given(grid=grids, prefix=st.integers(0, 1))
def test_2d_is_row_and_column_halves(grid, prefix):
    gh, gw = grid
    row, col = rng().standard_normal((gh, 3)), rng(1).standard_normal((gw, 3))
    out = pe.absolute("2d", {"pos_embed_row": Tensor(row), "pos_embed_col": Tensor(col)}, prefix).data
    assert out.shape == (1, prefix + gh * gw, 6)
    assert not out[0, :prefix].any()
    for y in range(gh):
        for x in range(gw):
            np.testing.assert_array_equal(out[0, prefix + y * gw + x], np.concatenate([row[y], col[x]]))


@given(grid=grids)
def test_relative_index_points_at_each_pairs_offset(grid):
    gh, gw = grid
    index = pe.relative_index(grid)
    offsets = (2 * gh - 1) * (2 * gw - 1)
    for i in range(gh * gw):
        for j in range(gh * gw):
            (yi, xi), (yj, xj) = divmod(i, gw), divmod(j, gw)
            assert index[i, j] == i * offsets + (yi - yj + gh - 1) * (2 * gw - 1) + (xi - xj + gw - 1)


@given(grid=grids, heads=st.integers(1, 2), prefix=st.integers(0, 1), seed=st.integers(0, 100))
def test_relative_bias_matches_a_loop(grid, heads, prefix, seed):
    gh, gw = grid
    B, d, n = 2, 3, prefix + gh * gw
    q = rng(seed).standard_normal((B, heads, n, d))
    table = rng(seed + 1).standard_normal((2 * gh - 1, 2 * gw - 1, heads * d))
    bias = pe.relative_bias(Tensor(q), Tensor(table), pe.relative_index(grid), prefix).data
    expected = np.zeros((B, heads, n, n))
    for i in range(gh * gw):
        for j in range(gh * gw):
            (yi, xi), (yj, xj) = divmod(i, gw), divmod(j, gw)
            r = table[yi - yj + gh - 1, xi - xj + gw - 1].reshape(heads, d)       # this offset's key, per head
            expected[:, :, prefix + i, prefix + j] = (q[:, :, prefix + i] * r).sum(-1) / np.sqrt(d)
    np.testing.assert_allclose(bias, expected, atol=1e-12)


@given(grid=grids, prefix=st.integers(0, 1), seed=st.integers(0, 100))
def test_1d_relative_bias_matches_a_loop(grid, prefix, seed):
    n_patches = grid[0] * grid[1]
    B, heads, d, n = 2, 2, 3, prefix + n_patches
    q = rng(seed).standard_normal((B, heads, n, d))
    table = rng(seed + 1).standard_normal((2 * n_patches - 1, heads * d))
    bias = pe.relative_bias(Tensor(q), Tensor(table), pe.relative_index(grid, "relative"), prefix).data
    expected = np.zeros((B, heads, n, n))
    for i in range(n_patches):
        for j in range(n_patches):
            r = table[i - j + n_patches - 1].reshape(heads, d)                    # the raster offset's key
            expected[:, :, prefix + i, prefix + j] = (q[:, :, prefix + i] * r).sum(-1) / np.sqrt(d)
    np.testing.assert_allclose(bias, expected, atol=1e-12)


# --- resizing ------------------------------------------------------------------------------------
@given(grid=grids, prefix=st.integers(0, 1), mode=modes, seed=st.integers(0, 100))
def test_resize_to_the_same_grid_is_identity(grid, prefix, mode, seed):
    gh, gw = grid
    arrays = {
        "pos_embed": rng(seed).standard_normal((1, prefix + gh * gw, 4)),
        "pos_embed_row": rng(seed).standard_normal((gh, 2)),
        "pos_embed_col": rng(seed).standard_normal((gw, 2)),
        "rel_pos_embed": rng(seed).standard_normal((2 * gh - 1, 2 * gw - 1, 4)),
    }
    for name, a in arrays.items():
        np.testing.assert_array_equal(pe.resize(name, a, grid, grid, prefix, mode), a)


@given(old=grids, new=grids, prefix=st.integers(0, 1), mode=modes)
def test_resize_shapes_and_constants(old, new, prefix, mode):
    # rows of an interpolation matrix sum to one: a constant table stays that constant
    (oh, ow), (nh, nw) = old, new
    shapes = {"pos_embed": ((1, prefix + oh * ow, 3), (1, prefix + nh * nw, 3)),
              "pos_embed_row": ((oh, 3), (nh, 3)), "pos_embed_col": ((ow, 3), (nw, 3)),
              "rel_pos_embed": ((2 * oh - 1, 2 * ow - 1, 3), (2 * nh - 1, 2 * nw - 1, 3))}
    for name, (before, after) in shapes.items():
        out = pe.resize(name, np.full(before, 0.7), old, new, prefix, mode)
        assert out.shape == after
        np.testing.assert_allclose(out, 0.7, atol=1e-12)


def test_resize_keeps_the_class_embedding_apart():
    a = rng().standard_normal((1, 1 + 9, 4))
    out = pe.resize("pos_embed", a, (3, 3), (5, 7), 1)
    assert out.shape == (1, 1 + 35, 4)
    np.testing.assert_array_equal(out[:, 0], a[:, 0])


def smooth(rows, cols, dim=2):
    """A smooth function of the continuous position of each cell's centre in the unit square."""
    y = (np.arange(rows) + 0.5) / rows
    x = (np.arange(cols) + 0.5) / cols
    Y, X = np.meshgrid(y, x, indexing="ij")
    return np.stack([np.cos(np.pi * Y) * np.sin(np.pi * X / 2), Y * X + Y][:dim], axis=-1)   # (rows, cols, dim)


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_upsampling_preserves_a_smooth_grid(mode):
    """The paper's fine-tuning (Sec. 3.2): a 7x7 grid to 14x14 interpolates by position in the image."""
    grid = smooth(7, 7)
    a = np.concatenate([np.full((1, 1, 2), 9.0), grid.reshape(1, 49, 2)], axis=1)
    out = pe.resize("pos_embed", a, (7, 7), (14, 14), 1, mode)[0, 1:].reshape(14, 14, 2)
    # the border cells lie outside the old centres and are extrapolated by clamping; judge the interior,
    # where linear interpolation errs by about h^2 max|f"| / 8 = 0.025 on a 7-cell grid (PyTorch's cubic,
    # a = -0.75, is no more accurate: only a = -0.5 reproduces slopes)
    np.testing.assert_allclose(out[1:-1, 1:-1], smooth(14, 14)[1:-1, 1:-1], atol=0.035)
    assert np.abs(out - smooth(14, 14)).mean() < 0.02


def test_bilinear_keeps_a_linear_ramp_exactly_inside():
    ramp = np.add.outer(np.arange(6.0), 2 * np.arange(6.0))[..., None]             # 0.. along rows, 0..2.. along cols
    out = pe.resize("pos_embed", ramp.reshape(1, 36, 1), (6, 6), (12, 12), 0, "bilinear").reshape(12, 12)
    new = (np.arange(12) + 0.5) / 2 - 0.5                                          # each new centre in old units
    np.testing.assert_allclose(out[1:-1, 1:-1], np.add.outer(new, 2 * new)[1:-1, 1:-1], atol=1e-12)


def test_2d_tables_resize_like_the_grid_they_make():
    row, col = rng().standard_normal((3, 2)), rng(1).standard_normal((4, 2))
    small = pe.absolute("2d", {"pos_embed_row": Tensor(row), "pos_embed_col": Tensor(col)}, 0).data
    resized = {n: Tensor(pe.resize(n, a, (3, 4), (6, 5), 0))
               for n, a in (("pos_embed_row", row), ("pos_embed_col", col))}
    np.testing.assert_allclose(pe.absolute("2d", resized, 0).data, pe.resize("pos_embed", small, (3, 4), (6, 5), 0),
                               atol=1e-12)


def test_relative_resize_keeps_the_zero_offset():
    table = rng().standard_normal((2 * 3 - 1, 2 * 4 - 1, 4))
    for mode in ("bilinear", "bicubic"):
        out = pe.resize("rel_pos_embed", table, (3, 4), (7, 6), 0, mode)
        assert out.shape == (13, 11, 4)
        np.testing.assert_allclose(out[6, 5], table[2, 3], atol=1e-12)


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
@pytest.mark.parametrize("old,new", [((4, 4), (7, 6)), ((7, 5), (4, 3)), ((14, 14), (24, 24)), ((24, 24), (14, 14))])
def test_antialiased_resize_matches_torch(mode, old, new):
    torch = torch_or_skip()
    a = rng().standard_normal((1, 1 + old[0] * old[1], 5))
    grid = torch.tensor(a[0, 1:].reshape(*old, 5).transpose(2, 0, 1)[None])             # (1, D, gh, gw)
    ref = torch.nn.functional.interpolate(grid, size=new, mode=mode, antialias=True)[0].numpy()
    out = pe.resize("pos_embed", a, old, new, 1, mode, antialias=True)
    np.testing.assert_allclose(out[0, 1:], ref.transpose(1, 2, 0).reshape(-1, 5), atol=1e-12)
    np.testing.assert_array_equal(out[:, 0], a[:, 0])
    # without antialiasing it is another resampling (a = -0.75 cubic; a narrower filter when shrinking);
    # only bilinear upsampling is the same either way
    if mode == "bicubic" or new[0] < old[0]:
        assert not np.allclose(pe.resize("pos_embed", a, old, new, 1, mode), out, atol=1e-6)


def test_1d_relative_index_holds_raster_offsets():
    index = pe.relative_index((3, 4), "relative")
    i, j = np.meshgrid(np.arange(12), np.arange(12), indexing="ij")
    np.testing.assert_array_equal(index, i * 23 + (i - j) + 11)


def test_resize_errors():
    with pytest.raises(ValueError, match="not a position embedding"):
        pe.resize("cls_token", np.zeros((1, 1, 2)), (2, 2), (3, 3), 1)
    with pytest.raises(ValueError, match="does not hold a 3x3 grid"):
        pe.resize("pos_embed", np.zeros((1, 5, 2)), (3, 3), (4, 4), 1)


def test_resize_keeps_float32():
    a = rng().standard_normal((1, 17, 4)).astype(np.float32)
    assert pe.resize("pos_embed", a, (4, 4), (6, 6), 1).dtype == np.float32


def test_model_set_img_size_matches_resize():
    with backend.default_dtype_as(np.float64):
        model = VisionTransformer(img_size=8, patch_size=2, embed_dim=8, depth=1, num_heads=2, num_classes=2,
                                  pos_embed="relative_2d", pos_embed_at="input", generator=rng())
    table = model.rel_pos_embed.data.copy()
    model.set_img_size(12, interpolation="bilinear")
    np.testing.assert_array_equal(model.rel_pos_embed.data, pe.resize("rel_pos_embed", table, (4, 4), (6, 6), 0,
                                                                      "bilinear"))
    np.testing.assert_array_equal(model.rel_pos_index, pe.relative_index((6, 6)))


def test_model_set_img_size_resizes_the_1d_relative_table_with_antialias():
    with backend.default_dtype_as(np.float64):
        model = VisionTransformer(img_size=8, patch_size=2, embed_dim=8, depth=2, num_heads=2, num_classes=2,
                                  pos_embed="relative", generator=rng())
    assert model.cfg.placement == "every_block" and model.blocks[1].rel_pos_embed_1d.shape == (31, 8)
    table = model.blocks[1].rel_pos_embed_1d.data.copy()
    model.set_img_size(12, antialias=True)
    expected = pe.antialias_matrix(31, 71, "bicubic") @ table                            # 6x6 grid: 71 offsets
    np.testing.assert_allclose(model.blocks[1].rel_pos_embed_1d.data, expected, atol=1e-12)
    np.testing.assert_allclose(expected[35], table[15], atol=1e-12)                      # the zero offset
    np.testing.assert_array_equal(model.rel_pos_index, pe.relative_index((6, 6), "relative"))
