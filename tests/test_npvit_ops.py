"""npvit's masked patch prediction (npvit/mpp.py) against references written from the paper's
definitions by loops over patches: the three targets, the corruption's counts, and the loss over
the corrupted patches only; and the shapes of each kind of position embedding. (Position
embeddings' gradients and forwards are in the op table.)"""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from autograd import Tensor, ops
from npvit import mpp, pos_embed
from npvit.config import ViTConfig
from tiny_models import TINY, tiny


def colour_class(rgb, bits):
    """The class of a colour in [0, 1]^C at ``bits`` bits per channel, the first channel most significant."""
    levels = 2 ** bits
    cls = 0
    for value in rgb:
        cls = cls * levels + min(int(np.floor(value * levels)), levels - 1)
    return cls


def patches_of(images, p):
    """(B, N, C, p, p) patches in row-major grid order, by loops."""
    B, C, H, W = images.shape
    return np.array([[images[b, :, i:i + p, j:j + p] for i in range(0, H, p) for j in range(0, W, p)]
                     for b in range(B)])


@given(st.sampled_from(["mean_color", "patch_color", "pixels"]), st.integers(1, 3), st.sampled_from([1, 2, 4]),
       st.integers(0, 2**16))
def test_targets_match_loops_over_patches(target, bits, grid, seed):
    cfg = ViTConfig(**TINY, mpp_target=target, mpp_bits=bits, mpp_grid=grid)
    images = np.random.default_rng(seed).uniform(0, 1, (2, 3, 8, 8))
    images[0, :, 0, 0] = 1.0  # the top level is clamped into the last class
    got = mpp.mpp_targets(images, cfg)
    patches = patches_of(images, 4)  # (B, N, C, 4, 4)
    if target == "mean_color":
        want = [[colour_class(patch.mean(axis=(1, 2)), bits) for patch in row] for row in patches]
    elif target == "patch_color":
        s = 4 // grid
        want = [[[colour_class(patch[:, r * s:(r + 1) * s, c * s:(c + 1) * s].mean(axis=(1, 2)), bits)
                  for r in range(grid) for c in range(grid)] for patch in row] for row in patches]
    else:
        want = patches.reshape(2, 4, -1)  # (C, P, P) flattened, the patch embedding's order
    np.testing.assert_array_equal(got, np.array(want))


@given(st.integers(1, 4), st.integers(1, 12), st.sampled_from([0.0, 0.15, 0.5, 1.0]), st.integers(0, 2**16))
def test_corruption_selects_round_ratio_n_per_image(batch, n, ratio, seed):
    selected, mask, replace = mpp.mpp_corruption(batch, n, np.random.default_rng(seed), mask_ratio=ratio)
    assert selected.shape == mask.shape == replace.shape == (batch, n)
    np.testing.assert_array_equal(selected.sum(axis=1), round(ratio * n))
    assert not (mask & ~selected).any() and not (mask & (replace >= 0)).any()
    assert ((replace == -1) | selected).all() and replace.min() >= -1 and replace.max() < batch * n


def test_corruption_proportions_follow_the_probabilities():
    selected, mask, replace = mpp.mpp_corruption(200, 50, np.random.default_rng(1), mask_prob=0.6, random_prob=0.3)
    chosen = selected.sum()
    assert abs(mask.sum() / chosen - 0.6) < 0.02 and abs((replace >= 0).sum() / chosen - 0.3) < 0.02


@pytest.mark.parametrize("target", ["mean_color", "pixels"])
def test_loss_is_the_mean_over_corrupted_patches_only(target):
    model = tiny(mask_token=True, mpp_target=target, mpp_bits=1)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (2, 3, 8, 8))
    mean, std = np.array([0.5, 0.4, 0.3]), np.array([0.2, 0.25, 0.3])
    inputs = (images - mean[:, None, None]) / std[:, None, None]
    loss, correct, count = mpp.loss(model, inputs, None, None, np.random.default_rng(5), mean=mean, std=std,
                                    mask_ratio=0.5)
    selected, mask, replace = mpp.mpp_corruption(2, 4, np.random.default_rng(5), 0.5)
    out = model.forward_mpp(inputs, mask=mask, replace_with=replace).data  # (B, N, K)
    rows = [(b, i) for b in range(2) for i in range(4) if selected[b, i]]
    if target == "pixels":
        want = mpp.mpp_targets(inputs, model.cfg)
        per_patch = [((out[b, i] - want[b, i]) ** 2).mean() for b, i in rows]
        assert (correct, count) == (0, 0)
    else:
        labels = mpp.mpp_targets(images, model.cfg)
        per_patch = [-ops.log_softmax(Tensor(out[b, i])).data[labels[b, i]] for b, i in rows]
        assert count == len(rows)
        assert correct == sum(int(out[b, i].argmax() == labels[b, i]) for b, i in rows)
    assert loss.item() == pytest.approx(np.mean(per_patch), rel=1e-10)


def test_position_embedding_tables_have_the_shapes_of_appendix_d4():
    shapes = {kind: {n: p.shape for n, p in pos_embed.make_params(kind, (3, 4), 8, 1).items()}
              for kind in pos_embed.PARAM_NAMES}
    assert shapes == {"none": {}, "1d": {"pos_embed": (1, 1 + 12, 8)},
                      "2d": {"pos_embed_row": (3, 4), "pos_embed_col": (4, 4)},
                      "relative": {"rel_pos_embed_1d": (2 * 12 - 1, 8)},
                      "relative_2d": {"rel_pos_embed": (5, 7, 8)}}
