"""Masked patch prediction, the paper's self-supervised pre-training (Sec. 4.6 / Appendix B.1.2).

A fraction ``mask_ratio`` (the paper: half) of each image's patch embeddings is
corrupted, BERT-style (``mpp_corruption``): 80% of those replaced by a learned [mask]
embedding, 10% by another random patch's, 10% left alone. The model
(``VisionTransformer.forward_mpp``) predicts, for every patch, one of three targets
(``mpp_targets``): its mean colour in 3-bit colour (512 classes, the paper's best), the
patch shrunk to 4x4 in 3-bit colour, or the whole patch by L2 regression. The loss
(``loss``) is taken over the corrupted patches only.

This module knows the model only through ``model.cfg`` and ``model.forward_mpp``, so the
model can import it (for the head's width) without a loop.
"""
from __future__ import annotations

import numpy as np

from autograd import Tensor, backend, ops


def head_width(cfg) -> int:
    """Outputs of the masked-patch-prediction head (``mpp_head``) of a ``ViTConfig``."""
    if cfg.mpp_target == "mean_color":
        return cfg.mpp_num_colors
    if cfg.mpp_target == "patch_color":
        return cfg.mpp_grid ** 2 * cfg.mpp_num_colors
    return cfg.in_chans * cfg.effective_patch_size ** 2


def mpp_corruption(batch_size, num_patches, generator, mask_ratio=0.5, mask_prob=0.8, random_prob=0.1):
    """Draw the corruption of masked patch prediction, BERT-style (paper Sec. 4.6).

    In each image ``round(mask_ratio * num_patches)`` patches are chosen; of those, each
    is replaced by the mask token with probability ``mask_prob``, by a random patch of the
    batch with ``random_prob``, and left as it is otherwise. Returns ``(selected, mask,
    replace_with)``, all (B, N) arrays on the generator's device: ``selected`` the positions
    to predict (the loss goes over these), ``mask`` and ``replace_with`` to pass to
    ``forward_mpp``.
    """
    B, N = batch_size, num_patches
    u = generator.random((B, N))
    xp = backend.get_array_module(u)
    rank = xp.argsort(xp.argsort(u, axis=1), axis=1)                      # (B, N) a random permutation per image
    selected = rank < int(round(mask_ratio * N))
    v = generator.random((B, N))
    mask = selected & (v < mask_prob)
    randomised = selected & (v >= mask_prob) & (v < mask_prob + random_prob)
    replace_with = xp.where(randomised, generator.integers(0, B * N, size=(B, N)), -1)
    return selected, mask, replace_with


def _quantize(values, bits, channels_axis):
    """Colour class of each cell: every channel in [0, 1] cut to ``bits`` bits, channels as digits."""
    xp = backend.get_array_module(values)
    levels = 2 ** bits
    q = xp.clip(xp.floor(values * levels), 0, levels - 1).astype(np.int64)
    digits = levels ** xp.arange(q.shape[channels_axis] - 1, -1, -1)      # first channel most significant
    shape = [1] * q.ndim
    shape[channels_axis] = -1
    return (q * digits.reshape(shape)).sum(axis=channels_axis)


def mpp_targets(images, cfg):
    """Targets of masked patch prediction for images (B, C, H, W) in [0, 1] (not yet normalised).

    ``"mean_color"``: (B, N) ints, the patch's mean colour at ``mpp_bits`` bits per channel
    (512 classes for RGB at 3 bits); ``"patch_color"``: (B, N, mpp_grid^2) ints, the same
    for each cell of the patch shrunk to mpp_grid x mpp_grid (row-major cells);
    ``"pixels"``: (B, N, C P P) floats, the patch's pixels in the patch embedding's order.
    """
    if cfg.mpp_target is None:
        raise ValueError("the config has no mpp_target")
    images = images.data if isinstance(images, Tensor) else images
    B, C, H, W = images.shape
    p = cfg.effective_patch_size
    gh, gw = H // p, W // p
    if (H, W) != cfg.image_hw or H % p or W % p:
        raise ValueError(f"images of size {(H, W)} do not cut into {p} x {p} patches of img_size {cfg.image_hw}")
    patches = images.reshape(B, C, gh, p, gw, p)                           # (B, C, gh, P, gw, P)
    if cfg.mpp_target == "mean_color":
        return _quantize(patches.mean(axis=(3, 5)), cfg.mpp_bits, 1).reshape(B, gh * gw)  # (B, N)
    if cfg.mpp_target == "patch_color":
        s = cfg.mpp_grid
        cells = patches.reshape(B, C, gh, s, p // s, gw, s, p // s).mean(axis=(4, 7))  # (B, C, gh, s, gw, s)
        classes = _quantize(cells, cfg.mpp_bits, 1)                        # (B, gh, s, gw, s)
        return classes.transpose(0, 1, 3, 2, 4).reshape(B, gh * gw, s * s)  # (B, N, s s)
    return patches.transpose(0, 2, 4, 1, 3, 5).reshape(B, gh * gw, C * p * p)  # (B, N, C P P)


def loss(model, inputs, targets, labels, generator, *, mean, std, mask_ratio):
    """Masked-patch-prediction loss of normalised images ``inputs`` (B, C, H, W), the mode's loss in the trainer.

    The patches are their own labels, so ``targets`` and ``labels`` (the data set's, there
    to share the signature of the classification loss) are not used; ``mean`` and ``std``
    undo the normalisation for the colour targets. Returns ``(loss, correct, count)``: the
    mean loss over corrupted patches (or cells), and how many of them the model predicted
    right (0 of 0 for the pixel target, which has no classes).
    """
    cfg = model.cfg
    x = inputs.data if isinstance(inputs, Tensor) else inputs
    xp = backend.get_array_module(x)
    B = x.shape[0]
    N = cfg.num_patches
    selected, mask, replace_with = mpp_corruption(B, N, generator, mask_ratio)
    selected, mask, replace_with = (xp.asarray(a) for a in (selected, mask, replace_with))
    out = model.forward_mpp(x, mask=mask, replace_with=replace_with)        # (B, N, ...)
    if cfg.mpp_target == "pixels":
        target = mpp_targets(x, cfg)                                         # (B, N, C P P), normalised scale
        weight = selected[:, :, None].astype(x.dtype) / (selected.sum() * target.shape[-1])
        diff = out - Tensor(target)
        return (diff * diff * Tensor(weight)).sum(), 0, 0
    c = xp.asarray(np.asarray(mean, dtype=np.float32).reshape(1, -1, 1, 1))
    s = xp.asarray(np.asarray(std, dtype=np.float32).reshape(1, -1, 1, 1))
    target = mpp_targets(x * s + c, cfg)                                   # (B, N) or (B, N, cells) ints
    rows = xp.nonzero(selected.reshape(-1))[0]                             # flattened corrupted positions
    logits = out.reshape((B * N,) + tuple(out.shape[2:]))[rows]            # (M, K) or (M, cells, K)
    labels = target.reshape((B * N,) + target.shape[2:])[rows]             # (M,) or (M, cells)
    k = logits.shape[-1]
    logits = logits.reshape(-1, k)                                         # (M cells, K)
    labels = labels.reshape(-1)
    correct = (logits.data.argmax(axis=-1) == labels).sum()
    return ops.cross_entropy(logits, labels), correct, labels.shape[0]
