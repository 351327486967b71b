"""Batch augmentation: shapes, dtypes, determinism, and the exact values of simple cases."""
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from npvit.data import (RAND_AUGMENT_OPS, Augment, affine, affine_matrix, autocontrast, brightness, color, contrast,
                        cutmix, hflip, mix, mixup, normalize, one_hot, posterize, rand_augment, random_crop,
                        random_erasing, random_flip, resize, seed_generator, sharpness, solarize)


def _batch(seed=0, b=6, c=3, h=8, w=10):
    return np.random.default_rng(seed).integers(0, 256, (b, c, h, w), dtype=np.uint8)


def test_seed_generator_is_a_pure_function_of_its_keys():
    a = seed_generator(3, "order", 1).random(4)
    np.testing.assert_array_equal(a, seed_generator(3, "order", 1).random(4))
    assert not np.allclose(a, seed_generator(3, "order", 2).random(4))
    assert not np.allclose(a, seed_generator(4, "order", 1).random(4))


def test_flip_mirrors_and_is_its_own_inverse():
    x = _batch()
    np.testing.assert_array_equal(hflip(x)[:, :, :, 0], x[:, :, :, -1])
    np.testing.assert_array_equal(hflip(hflip(x)), x)
    flipped = random_flip(x, seed_generator(0), p=0.5)
    same = [np.array_equal(flipped[i], x[i]) for i in range(len(x))]
    mirrored = [np.array_equal(flipped[i], x[i, :, :, ::-1]) for i in range(len(x))]
    assert all(s or m for s, m in zip(same, mirrored)) and any(same) and any(mirrored)
    np.testing.assert_array_equal(random_flip(x, seed_generator(0), p=1.0), hflip(x))


def test_crop_with_no_padding_is_identity_and_padding_shifts_content():
    x = _batch()
    np.testing.assert_array_equal(random_crop(x, seed_generator(1), padding=0), x)
    out = random_crop(x, seed_generator(1), padding=2)
    assert out.shape == x.shape and out.dtype == np.uint8
    padded = np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2)))
    for i in range(len(x)):  # every crop is some window of the zero-padded image
        windows = [(dy, dx) for dy in range(5) for dx in range(5)
                   if np.array_equal(out[i], padded[i, :, dy:dy + 8, dx:dx + 10])]
        assert windows
    small = random_crop(x, seed_generator(2), padding=0, size=4)
    assert small.shape == (6, 3, 4, 4)


def test_augmentations_are_deterministic_given_the_generator():
    x = _batch()
    aug = Augment((0.5,) * 3, (0.25,) * 3, 10, image_size=12, crop_padding=2, flip=True, rand_ops=2,
                  erase_prob=0.5, label_smoothing=0.1, mixup_alpha=0.8, cutmix_alpha=1.0)
    y = np.arange(6)
    a = aug(x, y, seed_generator(7, "augment", 0))
    b = aug(x, y, seed_generator(7, "augment", 0))
    c = aug(x, y, seed_generator(7, "augment", 1))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    assert a[0].shape == (6, 3, 12, 12) and a[0].dtype == np.float32
    assert a[1].shape == (6, 10) and a[1].dtype == np.float32
    np.testing.assert_allclose(a[1].sum(1), 1.0, rtol=1e-6)


def test_augment_with_everything_off_is_just_normalisation():
    x = _batch()
    inputs, targets = Augment((0.5,) * 3, (0.5,) * 3, 4)(x, np.array([0, 1, 2, 3, 0, 1]), seed_generator(0))
    np.testing.assert_allclose(inputs, x / 127.5 - 1.0, atol=1e-6)
    np.testing.assert_array_equal(targets.argmax(1), [0, 1, 2, 3, 0, 1])


def test_resize_identity_and_linear_ramp():
    x = _batch(h=8, w=8)
    np.testing.assert_array_equal(resize(x, 8), x.astype(np.float32))
    ramp = np.tile(np.arange(32, dtype=np.float32) * 4, (1, 1, 32, 1))  # (1, 1, 32, 32), linear in the column
    up = resize(ramp, 48)
    assert up.shape == (1, 1, 48, 48) and up.dtype == np.float32
    src = (np.arange(48) + 0.5) * 32 / 48 - 0.5  # where each output column samples the input
    inner = (src >= 0) & (src <= 31)
    np.testing.assert_allclose(up[0, 0, 5, inner], 4 * src[inner], atol=1e-3)
    np.testing.assert_allclose(up[0, 0, :, 10], up[0, 0, 0, 10])  # constant down each column
    down = resize(ramp, 16)  # 2x box-like average of neighbours stays on the line
    np.testing.assert_allclose(down[0, 0, 3, 1:-1], 4 * (2 * np.arange(1, 15) + 0.5), atol=1e-3)
    assert resize(_batch(h=8, w=10), (4, 6)).shape == (6, 3, 4, 6)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 20), st.integers(1, 20), st.integers(1, 20), st.integers(1, 20))
def test_resize_preserves_constants_and_range(h, w, oh, ow):
    x = np.full((1, 2, h, w), 77, np.uint8)
    np.testing.assert_allclose(resize(x, (oh, ow)), 77.0, rtol=1e-5)
    r = resize(np.random.default_rng(h * w).integers(0, 256, (1, 1, h, w)).astype(np.uint8), (oh, ow))
    assert r.min() >= -1e-3 and r.max() <= 255 + 1e-3


def test_normalize_uses_per_channel_statistics():
    x = np.full((2, 3, 2, 2), 255, np.uint8)
    out = normalize(x, (0.5, 0.0, 1.0), (0.5, 0.25, 1.0))
    np.testing.assert_allclose(out[0, :, 0, 0], [1.0, 4.0, 0.0], atol=1e-6)
    assert out.dtype == np.float32


def test_one_hot_and_label_smoothing():
    t = one_hot(np.array([2, 0]), 4, smoothing=0.2)
    np.testing.assert_allclose(t, [[0.05, 0.05, 0.85, 0.05], [0.85, 0.05, 0.05, 0.05]], atol=1e-7)
    np.testing.assert_array_equal(one_hot(np.array([1]), 3), [[0, 1, 0]])


def test_mixup_and_cutmix_targets_are_convex_combinations():
    x = _batch(b=4).astype(np.float32)
    t = one_hot(np.array([0, 1, 2, 3]), 5)
    xm, tm = mixup(x, t, seed_generator(1), alpha=0.8)
    np.testing.assert_allclose(tm.sum(1), 1.0, rtol=1e-6)
    lam = tm[0, 0]  # example 0 mixes with its mirror, example 3
    np.testing.assert_allclose(tm[0, 3], 1 - lam, rtol=1e-6)
    np.testing.assert_allclose(xm[0], lam * x[0] + (1 - lam) * x[3], rtol=1e-5)
    xc, tc = cutmix(x, t, seed_generator(2), alpha=1.0)
    np.testing.assert_allclose(tc.sum(1), 1.0, rtol=1e-6)
    pasted = (xc[0] != x[0]).any(axis=0).mean()  # share of pixels that came from example 3
    np.testing.assert_allclose(tc[0, 3], pasted, atol=1e-6)
    np.testing.assert_array_equal(mix(x, t, seed_generator(3), 0.8, 1.0, prob=0.0)[0], x)


def test_random_erasing_fills_one_box_per_erased_image():
    x = np.zeros((8, 3, 16, 16), np.float32)
    out = random_erasing(x, seed_generator(4), p=1.0)
    for i in range(8):
        rows, cols = np.nonzero((out[i] != 0).any(0))
        assert rows.size > 0
        box = out[i, :, rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        assert (box != 0).all()  # a solid rectangle
        assert np.ptp(box, axis=(1, 2)).max() == 0  # one colour per channel
    np.testing.assert_array_equal(random_erasing(x, seed_generator(4), p=0.0), x)


def test_photometric_ops_match_their_definitions():
    x = np.array([[[[0, 100], [200, 255]]]], np.float32).repeat(3, axis=1)  # (1, 3, 2, 2) grey
    one = np.ones(1, np.float32)
    np.testing.assert_allclose(brightness(x, 0.5 * one), x * 0.5)
    np.testing.assert_allclose(contrast(x, 0 * one), np.full_like(x, x[0, 0].mean()), rtol=1e-5)
    np.testing.assert_allclose(color(x, 0 * one), x, atol=1e-3)  # grey stays grey
    np.testing.assert_array_equal(solarize(x, 128 * one)[0, 0], [[0, 100], [55, 0]])
    np.testing.assert_array_equal(posterize(x, 2 * one)[0, 0], [[0, 64], [192, 192]])
    np.testing.assert_allclose(autocontrast(x * 0.5 + 10)[0, 0], x[0, 0], atol=1e-4)
    flat = np.full((1, 1, 5, 5), 40.0, np.float32)
    np.testing.assert_allclose(sharpness(flat, 2 * one), flat, rtol=1e-6)
    for op in (brightness, contrast, color, sharpness):
        np.testing.assert_allclose(op(_batch(b=1).astype(np.float32), one), _batch(b=1), atol=1e-3)


def test_affine_identity_translation_and_rotation():
    x = _batch(b=2, h=6, w=6).astype(np.float32)
    identity = affine_matrix(batch=2)
    np.testing.assert_array_equal(affine(x, identity), x)
    shift = affine_matrix(translate_x=np.array([1.0, 0.0], np.float32), batch=2)
    out = affine(x, shift, fill=7.0)
    np.testing.assert_array_equal(out[0, :, :, :-1], x[0, :, :, 1:])  # sampling one pixel right
    np.testing.assert_array_equal(out[0, :, :, -1], 7.0)
    np.testing.assert_array_equal(out[1], x[1])
    quarter = affine(x, affine_matrix(rotate=np.array([90.0, 0.0], np.float32), batch=2))
    np.testing.assert_allclose(quarter[0, 0], np.rot90(x[0, 0], k=1), atol=1e-3)


@pytest.mark.parametrize("op", RAND_AUGMENT_OPS)
def test_each_rand_augment_op_runs_and_keeps_the_range(op):
    x = _batch(b=5)
    out = rand_augment(x, seed_generator(5), num_ops=1, magnitude=9, ops=(op,))
    assert out.shape == x.shape and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 255
    if op == "identity":
        np.testing.assert_array_equal(out, x)
    else:
        assert not np.array_equal(out, x)


def test_rand_augment_magnitude_zero_is_identity_and_unknown_ops_are_refused():
    x = _batch()
    keep = tuple(op for op in RAND_AUGMENT_OPS if op not in ("autocontrast", "posterize", "solarize"))
    np.testing.assert_allclose(rand_augment(x, seed_generator(6), 3, magnitude=0, ops=keep), x, atol=1e-3)
    with pytest.raises(ValueError, match="unknown RandAugment"):
        rand_augment(x, seed_generator(6), ops=("equalize",))


def test_on_the_device_stand_in_augmentation_gives_the_hosts_images_in_one_upload(monkeypatch):
    import fakecupy as cupy

    monkeypatch.setitem(sys.modules, "cupy", cupy)  # so array_module sees the stand-in's arrays, in this test only
    x, y = _batch(b=40), np.arange(40) % 10
    x_dev, y_dev = cupy.asarray(x), cupy.asarray(y)
    aug = Augment((0.5,) * 3, (0.25,) * 3, 10, image_size=12, crop_padding=2, flip=True, rand_ops=2,
                  erase_prob=0.5, label_smoothing=0.1, mixup_alpha=0.8, cutmix_alpha=1.0)
    for batch in range(4):  # mixup and cutmix both come up
        host = aug(x, y, seed_generator(7, "augment", batch))
        cupy.meter.reset()
        device = aug(x_dev, y_dev, seed_generator(7, "augment", batch))
        assert sum(cupy.meter.syncs.values()) == 0 and sum(cupy.meter.uploads.values()) == 1
        for h, d in zip(host, device):
            np.testing.assert_array_equal(cupy.asnumpy(d), h)
