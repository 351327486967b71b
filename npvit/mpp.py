"""The loss of masked patch prediction, the paper's self-supervised pre-training (Sec. 4.6).

Half of each image's patch embeddings are corrupted (80% of those replaced by a learned
[mask] embedding, 10% by another random patch's, 10% left alone, see
``npvit.model.mpp_corruption``) and the model predicts, for each corrupted patch, one of
three targets (``npvit.model.mpp_targets``): its mean colour in 3-bit colour (512
classes, the paper's best), the patch shrunk to 4x4 in 3-bit colour, or the whole patch
by L2 regression. The loss is taken over the corrupted patches only.
"""
from __future__ import annotations

import numpy as np

from autograd import Tensor, ops
from autograd.backend import get_array_module

from .model import mpp_corruption, mpp_targets

TARGETS = ("mean_color", "patch_color", "pixels")


def loss(model, inputs, mean, std, generator, corrupt_prob=0.5):
    """Masked-patch-prediction loss of normalised images ``inputs`` (B, C, H, W).

    Returns ``(loss, correct, count)``: the mean loss over corrupted patches (or cells), and
    how many of them the model predicted right (0 for the pixel target, which has no classes).
    """
    cfg = model.cfg
    x = inputs.data if isinstance(inputs, Tensor) else inputs
    xp = get_array_module(x)
    B = x.shape[0]
    N = cfg.num_patches
    selected, mask, replace_with = mpp_corruption(B, N, generator, corrupt_prob)
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

