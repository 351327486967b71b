"""What a ViT has learned, as arrays: the paper's Figure 7 and its attention maps (Figures 6 and 14).

- ``patch_embedding_pca``: the principal components of the patch-embedding filters E
  (Fig. 7 left: they look like the low-frequency bases of a CNN's first layer).
- ``position_similarity``: the cosine similarity of every patch position's embedding
  with every other's, on the patch grid (Fig. 7 centre: neighbours, rows and columns
  come out similar, so 1-D embeddings learn the 2-D layout).
- ``mean_attention_distance``: per block and head, how far in pixels a query patch
  looks, weighting each key patch's distance by its attention weight (Fig. 7 right and
  Appendix D.7: some heads attend globally already in the first layers, and the
  distance grows with depth).
- ``attention_rollout``: attention propagated through all layers (Abnar & Zuidema 2020),
  giving the image regions the output attends to (Fig. 6 / 14).

The functions take arrays (NumPy or CuPy; Tensors are unwrapped) so they can be checked
on hand-made cases; ``embedding_filters``, ``position_embeddings`` and
``attention_summary`` get those arrays out of a model. ``npvit.analyze`` draws them.
"""
from __future__ import annotations

import numpy as np

from autograd.backend import get_array_module
from autograd import Tensor, no_grad

from . import pos_embed as pe
from .data import resize

_TINY = 1e-12


def _data(a):
    """The array of a Tensor, or the array itself."""
    return a.data if isinstance(a, Tensor) else a


# --- Figure 7 left: the patch-embedding filters --------------------------------------
def pca(rows, k: int):
    """The first ``k`` principal components of the rows of ``rows`` (observations, features).

    Returns ``(components, explained)``: (k, features) unit vectors, largest variance first,
    each signed so its largest-magnitude entry is positive, and each one's share of the total
    variance (k,). ``k`` is capped at min(observations - 1, features), the most that
    centred data can span.
    """
    rows = _data(rows)
    xp = get_array_module(rows)
    centred = rows - rows.mean(axis=0, keepdims=True)                    # (n, F)
    _, s, vt = xp.linalg.svd(centred, full_matrices=False)               # s (r,), vt (r, F), r = min(n, F)
    variance = s * s
    k = min(k, max(rows.shape[0] - 1, 1), vt.shape[0])
    components = vt[:k]                                                   # (k, F)
    peak = xp.take_along_axis(components, xp.abs(components).argmax(axis=1)[:, None], axis=1)  # (k, 1)
    components = components * xp.where(peak < 0, -1.0, 1.0).astype(components.dtype)
    return components, variance[:k] / xp.maximum(variance.sum(), _TINY)


def patch_embedding_pca(weight, k: int = 28):
    """Principal components of the filters ``weight`` (D, C, P, P) as filters (k, C, P, P), with
    each one's share of the variance (k,); the paper shows the first 28 of E."""
    weight = _data(weight)
    D, C, P, Q = weight.shape
    components, explained = pca(weight.reshape(D, C * P * Q), k)         # (k, C P P)
    return components.reshape(-1, C, P, Q), explained


def unit_range(x, axes):
    """``x`` scaled so that each slice over ``axes`` spans [0, 1] (a constant slice becomes 0.5)."""
    x = _data(x)
    xp = get_array_module(x)
    lo, hi = x.min(axis=axes, keepdims=True), x.max(axis=axes, keepdims=True)
    span = hi - lo
    return xp.where(span > 0, (x - lo) / xp.where(span > 0, span, 1.0), 0.5).astype(x.dtype)


def embedding_filters(model):
    """The filters that look at the pixels, (D, C, P, P), and a line saying what they are.

    For the plain ViT that is the patch embedding E. The hybrid's E acts on 1x1 cells of a
    ResNet feature map, not on pixels, so its first pixel filters are the ResNet stem's
    convolution, returned as the convolution uses it (weight-standardised).
    """
    cfg = model.cfg
    if cfg.hybrid_layers is None:
        P = cfg.patch_size
        what = f"patch embedding E ({cfg.embed_dim} filters of {cfg.in_chans}x{P}x{P})"
        return model.patch_embed.proj.weight.data, what
    with no_grad():
        w = model.patch_embed.backbone.stem.conv.standardised_weight().data  # (width, C, K, K)
    width, C, K, _ = w.shape
    what = (f"hybrid's ResNet stem ({width} filters of {C}x{K}x{K}):\nits patch embedding E sees "
            f"{cfg.patch_size}x{cfg.patch_size} cells of ResNet features, not pixels")
    return w, what


# --- Figure 7 centre: position-embedding similarity -------------------------------------
def position_embeddings(model, block: int = 0):
    """Each position's embedding (M, D), the grid (rows, cols) they lie on, and a line saying what they are.

    "1d": every patch's learned vector, the [class] token's left out; "2d": every patch's
    row vector joined to its column vector; "relative_2d": the vector of every 2-D offset
    (dy, dx) between two patches, on the (2 rows - 1, 2 cols - 1) offset grid; "relative":
    the vector of every raster offset, on a (1, 2 N - 1) grid. With
    ``pos_embed_at="every_block"`` the embeddings of block ``block``. A ValueError for
    ``"none"``, which has nothing to compare.
    """
    cfg = model.cfg
    kind = cfg.pos_embed
    if kind == "none":
        raise ValueError("the model has no position embedding (pos_embed='none'): there is nothing to compare")
    owner = model.blocks[block] if cfg.placement == "every_block" else model
    where = f" of block {block + 1}" if cfg.placement == "every_block" else ""
    if kind == "relative_2d":
        table = owner.rel_pos_embed.data                                  # (2 gh - 1, 2 gw - 1, D)
        rows, cols, D = table.shape
        what = f"2-D relative position embedding{where}, offset (dy, dx) vectors"
        return table.reshape(rows * cols, D), (rows, cols), what
    if kind == "relative":
        table = owner.rel_pos_embed_1d.data                               # (2 N - 1, D)
        what = f"relative position embedding{where}, raster offset vectors"
        return table, (1, table.shape[0]), what
    params = {n: getattr(owner, n) for n in pe.PARAM_NAMES[kind]}
    with no_grad():
        emb = pe.absolute(kind, params, 0).data[0]                         # (N' or N, D)
    if kind == "1d":
        emb = emb[cfg.num_prefix_tokens:]                                  # (N, D)
    return emb, cfg.grid_size, f"{kind.upper()} position embedding{where}"


def cosine_similarity_grid(embeddings, grid):
    """(rows, cols, rows, cols): entry [i, j] is the map of position (i, j)'s cosine similarity
    with every position; ``embeddings`` (rows cols, D) in row-major order."""
    e = _data(embeddings)
    xp = get_array_module(e)
    rows, cols = grid
    unit = e / xp.maximum(xp.linalg.norm(e, axis=1, keepdims=True), _TINY)  # (N, D)
    return (unit @ unit.T).reshape(rows, cols, rows, cols)              # (N, N) -> (gh, gw, gh, gw)


def position_similarity(model, block: int = 0):
    """The similarity grid of ``model``'s position embeddings (see ``position_embeddings``) and what they are."""
    emb, grid, what = position_embeddings(model, block)
    return cosine_similarity_grid(emb, grid), what


# --- Figure 7 right: mean attention distance --------------------------------------------
def patch_distances(grid, pitch=1.0, xp=np, dtype=np.float32):
    """(N, N) distances between the centres of every two patches of a (rows, cols) grid whose
    patches are ``pitch`` pixels apart; row-major patch order."""
    rows, cols = grid
    ys, xs = xp.divmod(xp.arange(rows * cols), cols)                      # (N,) each
    dy = (ys[:, None] - ys[None, :]).astype(dtype)                       # (N, N)
    dx = (xs[:, None] - xs[None, :]).astype(dtype)
    return (dy * dy + dx * dx) ** 0.5 * pitch


def mean_attention_distance(attention, grid, pitch, num_prefix_tokens: int = 0):
    """(L, H) mean attention distance in pixels of every block and head.

    ``attention``: per block the weights (B, H, N', N') (a list, or one (L, B, H, N', N')
    array), the first ``num_prefix_tokens`` tokens not patches. For a query patch the
    distance is its attention weights over the patch keys, renormalised to sum to 1, times
    each key's distance (``pitch`` pixels per grid step), summed over keys; it is averaged
    over query patches and the batch. Uniform attention gives the mean distance between
    two patches, attention to itself 0.
    """
    p = num_prefix_tokens
    out = []
    for weights in attention:
        a = _data(weights)[:, :, p:, p:]                                  # (B, H, N, N)
        xp = get_array_module(a)
        d = patch_distances(grid, pitch, xp, a.dtype)                     # (N, N)
        per_query = (a * d).sum(axis=-1) / xp.maximum(a.sum(axis=-1), _TINY)  # (B, H, N)
        out.append(per_query.mean(axis=(0, 2)))                            # (H,)
    return get_array_module(out[0]).stack(out)                             # (L, H)


# --- Figures 6 and 14: attention rollout --------------------------------------------------
def attention_rollout(attention):
    """(B, N', N') attention rolled out through the layers (Abnar & Zuidema 2020).

    Each layer's weights (B, H, N', N') are averaged over heads, the identity added for the
    residual connection and the rows renormalised; the layers' matrices are multiplied,
    the last on the left, so row i says how much each input token flows into output token
    i. Every row sums to 1.
    """
    rollout = None
    for weights in attention:
        a = _data(weights).mean(axis=1)                                   # (B, N', N')
        xp = get_array_module(a)
        a = a + xp.eye(a.shape[-1], dtype=a.dtype)
        a = a / a.sum(axis=-1, keepdims=True)
        rollout = a if rollout is None else a @ rollout                    # (B, N', N')
    return rollout


def rollout_maps(rollout, grid, num_prefix_tokens: int = 1, global_pool: str = "token"):
    """(B, rows, cols) how much each patch flows into what the head reads: the [class] token's
    row of ``rollout`` (B, N', N') over the patches, or for global average pooling (or no
    [class] token) the mean of the patches' rows."""
    r = _data(rollout)
    p = num_prefix_tokens
    if global_pool == "token" and p:
        flow = r[:, 0, p:]                                                # (B, N)
    else:
        flow = r[:, p:, p:].mean(axis=1)                                  # (B, N)
    return flow.reshape(r.shape[0], *grid)                                # (B, gh, gw)


def upsample(maps, size):
    """Maps (B, rows, cols) resized bilinearly to ``size`` (H, W): (B, H, W) float32."""
    return resize(_data(maps)[:, None], size)[:, 0]


def attention_summary(model, inputs, batch_size: int = 32):
    """Run ``model`` over ``inputs`` (normalised images (B, C, H, W)) in batches and return
    ``(distance (L, H), maps (B, rows, cols), predictions (B,))``: the mean attention
    distance over all images, each image's attention-rollout map and predicted class
    (None for a model without a classifier head)."""
    cfg = model.cfg
    distance, maps, predictions = 0.0, [], []
    with no_grad():
        for start in range(0, len(inputs), batch_size):
            x = inputs[start:start + batch_size]
            logits, extras = model.forward_intermediates(x)
            attention = extras["attention"]
            distance = distance + mean_attention_distance(
                attention, cfg.grid_size, cfg.effective_patch_size, cfg.num_prefix_tokens) * len(x)
            rollout = attention_rollout(attention)                       # (b, N', N')
            maps.append(rollout_maps(rollout, cfg.grid_size, cfg.num_prefix_tokens, cfg.global_pool))
            predictions.append(logits.data.argmax(axis=-1))
    xp = get_array_module(maps[0])
    predictions = xp.concatenate(predictions) if cfg.num_classes else None
    return distance / len(inputs), xp.concatenate(maps), predictions
