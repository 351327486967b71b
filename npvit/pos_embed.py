"""Position embeddings, all four kinds of the paper's Appendix D.4, and their resizing.

Self-attention is blind to order, so a ViT is told where each patch came from:

- ``"none"``: it is not told (a bag of patches).
- ``"1d"``: one learned D-vector per position of the flattened sequence, the [class]
  token's included (``pos_embed``, (1, N+1, D)); the paper's default, and timm's.
- ``"2d"``: a learned row vector (``pos_embed_row``, (rows, D/2)) and column vector
  (``pos_embed_col``, (cols, D/2)); a patch gets its row's and column's concatenated,
  the [class] token gets nothing.
- ``"relative"``: the paper's relative attention (Appendix D.4): a learned D-vector per
  1-D offset i - j between a query patch's and a key patch's raster positions
  (``rel_pos_embed_1d``, (2 N - 1, D), split into heads like the queries). Each head's
  query is dotted with the vector of each key's offset, scaled like the content logits,
  and added to the attention logits before the softmax; pairs with the [class] token get
  no term, having no offset.
- ``"relative_2d"``: the same with a vector per 2-D offset (dy, dx)
  (``rel_pos_embed``, (2 rows - 1, 2 cols - 1, D)), which knows rows from columns.

The absolute kinds are added to the tokens; the relative kinds are an attention bias,
by default in every block's attention (``ViTConfig.placement``).

Fine-tuning at a higher resolution keeps the patch size, so the grid grows and the
learned tables are interpolated to it (Sec. 3.2): the 1-D table as a (rows, cols) image
with the [class] vector kept apart, the 2-D row and column tables each along its axis,
the 2-D relative table over its (dy, dx) axes, the 1-D relative table along its offsets
(the zero offset stays at the centre; the others only stretch, a raster offset having no
fixed place on a grid of another width). Same size in, same values out.

Interpolation is separable, one axis at a time, as ``F.interpolate``: "bilinear" or
"bicubic", without antialiasing (the resampling of Google's code, and npvit's own
default) or with it (``antialias=True``, what timm applies to its own state dicts:
PIL-style filters, the cubic with a = -0.5, widened by the scale when shrinking).
"""
from __future__ import annotations

from functools import partial

import numpy as np

from autograd import backend
from autograd.nn import Parameter
from autograd.ops import concatenate, interpolation_matrix, pad

# The parameter names of each kind, whether they sit on the model or on a block.
PARAM_NAMES = {
    "none": (),
    "1d": ("pos_embed",),
    "2d": ("pos_embed_row", "pos_embed_col"),
    "relative": ("rel_pos_embed_1d",),
    "relative_2d": ("rel_pos_embed",),
}
ALL_PARAM_NAMES = tuple(n for names in PARAM_NAMES.values() for n in names)


def make_params(kind, grid, dim, num_prefix_tokens) -> dict:
    """Zero Parameters of one set of position embeddings of ``kind``, by name (the model initialises them)."""
    gh, gw = grid
    dtype = backend.default_dtype()
    shapes = {
        "none": {},
        "1d": {"pos_embed": (1, num_prefix_tokens + gh * gw, dim)},
        "2d": {"pos_embed_row": (gh, dim // 2), "pos_embed_col": (gw, dim // 2)},
        "relative": {"rel_pos_embed_1d": (2 * gh * gw - 1, dim)},
        "relative_2d": {"rel_pos_embed": (2 * gh - 1, 2 * gw - 1, dim)},
    }[kind]
    return {name: Parameter(np.zeros(shape, dtype=dtype)) for name, shape in shapes.items()}


def absolute(kind, params, num_prefix_tokens):
    """The (1, N', D) term an absolute kind adds to the tokens; ``params`` maps names to Tensors."""
    if kind == "1d":
        return params["pos_embed"]
    row, col = params["pos_embed_row"], params["pos_embed_col"]
    (gh, half), gw = row.shape, col.shape[0]
    rows = row.reshape(gh, 1, half).broadcast_to((gh, gw, half))          # (gh, gw, D/2)
    cols = col.reshape(1, gw, half).broadcast_to((gh, gw, half))          # (gh, gw, D/2)
    grid = concatenate([rows, cols], axis=-1).reshape(1, gh * gw, 2 * half)  # (1, N, D)
    if num_prefix_tokens:
        grid = pad(grid, ((0, 0), (num_prefix_tokens, 0), (0, 0)))        # (1, N', D)
    return grid


def apply(kind, owner, x, index, num_prefix_tokens):
    """A block's position information: ``(x, position_bias)`` for tokens x (B, N', D).

    ``owner`` is the module holding the parameters this block uses (None: the block gets
    none). The absolute kinds come back added to x with no bias; the relative kind leaves
    x alone and comes back as the attention bias, a function of the queries
    (``relative_bias`` with the table and gather ``index`` bound).
    """
    if owner is None or kind == "none":
        return x, None
    if kind in ("relative", "relative_2d"):
        table = getattr(owner, PARAM_NAMES[kind][0])
        return x, partial(relative_bias, table=table, index=index, num_prefix_tokens=num_prefix_tokens)
    params = {n: getattr(owner, n) for n in PARAM_NAMES[kind]}
    return x + absolute(kind, params, num_prefix_tokens), None                  # (B, N', D)


def relative_index(grid, kind="relative_2d") -> np.ndarray:
    """(N, N) indices into the flattened (N, offsets) query-offset logits: row i, column j holds
    i * offsets + the offset of patch i from patch j, so a single gather picks every pair.

    The offset is the raster one, i - j in [-(N - 1), N - 1], for ``kind="relative"``, and
    (dy, dx) numbered row-major on the (2 gh - 1, 2 gw - 1) grid for ``"relative_2d"``."""
    gh, gw = grid
    n = gh * gw
    if kind == "relative":
        i = np.arange(n)
        return i[:, None] * (2 * n - 1) + i[:, None] - i[None, :] + n - 1
    ys, xs = np.divmod(np.arange(n), gw)                                  # (N,) row and column of each patch
    dy = ys[:, None] - ys[None, :] + gh - 1                               # (N, N) in [0, 2 gh - 2]
    dx = xs[:, None] - xs[None, :] + gw - 1
    offsets = (2 * gh - 1) * (2 * gw - 1)
    return np.arange(n)[:, None] * offsets + dy * (2 * gw - 1) + dx


def relative_bias(q, table, index, num_prefix_tokens):
    """The relative-position attention logits (B, H, N', N') for queries ``q`` (B, H, N', d).

    Computed as every query against every offset (one matmul over the small table), then
    gathered per (query, key) pair, rather than materialising a (N, N, D) key tensor.
    """
    B, H, n_all, d = q.shape
    offsets = table.size // table.shape[-1]                               # 2 N - 1, or (2 gh - 1)(2 gw - 1)
    keys = table.reshape(offsets, H, d).transpose(1, 2, 0) * d ** -0.5  # (H, d, M), scaled like q k^T
    if num_prefix_tokens:
        q = q[:, :, num_prefix_tokens:]                                   # (B, H, N, d)
    n = n_all - num_prefix_tokens
    # heads first, batch folded into rows: one GEMM per head, no broadcast to sum over in backward
    q = q.transpose(1, 0, 2, 3).reshape(H, B * n, d)                      # (H, B N, d)
    logits = (q @ keys).reshape(H, B, n * offsets)                        # (H, B, N M)
    bias = logits[:, :, index].transpose(1, 0, 2, 3)                      # (B, H, N, N)
    if num_prefix_tokens:
        p = num_prefix_tokens
        bias = pad(bias, ((0, 0), (0, 0), (p, 0), (p, 0)))                # (B, H, N', N')
    return bias


def _antialias_filter(mode, x):
    """PIL's filters, which antialiased resampling uses: the triangle, or Keys' cubic with a = -0.5."""
    x = np.abs(x)
    if mode == "bilinear":
        return np.maximum(1.0 - x, 0.0)
    a = -0.5
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x <= 1, near, np.where(x < 2, far, 0.0))


def antialias_matrix(in_size, out_size, mode="bicubic", dtype=np.float64) -> np.ndarray:
    """The (out_size, in_size) matrix of ``F.interpolate(..., antialias=True)`` along one axis.

    Output sample i sits at (i + 0.5) s in input coordinates, s = in / out. When shrinking
    (s > 1) the filter is stretched by s so that every input sample contributes (no
    aliasing); taps falling outside the input are dropped and each row renormalised to
    sum 1, rather than clamped to the edge as without antialiasing.
    """
    scale = in_size / out_size
    stretch = max(scale, 1.0)
    support = (1.0 if mode == "bilinear" else 2.0) * stretch
    m = np.zeros((out_size, in_size))
    for i in range(out_size):
        centre = (i + 0.5) * scale
        lo, hi = max(int(centre - support + 0.5), 0), min(int(centre + support + 0.5), in_size)
        taps = np.arange(lo, hi)
        w = _antialias_filter(mode, (taps - centre + 0.5) / stretch)
        m[i, lo:hi] = w / w.sum()
    return m.astype(dtype)


def _resize_axis(a, axis, size, mode, antialias=False):
    """Interpolate array ``a`` along one axis to ``size`` points (untouched when it already has them)."""
    if a.shape[axis] == size:
        return a
    xp = backend.get_array_module(a)
    matrix = antialias_matrix if antialias else interpolation_matrix
    m = xp.asarray(matrix(a.shape[axis], size, mode=mode, dtype=a.dtype))  # (size, n)
    return xp.moveaxis(xp.tensordot(m, a, axes=([1], [axis])), 0, axis)


def resize(name, a, old_grid, new_grid, num_prefix_tokens, mode="bicubic", antialias=False):
    """A position-embedding array named ``name`` (see ``PARAM_NAMES``) resized from one patch grid to another;
    ``mode`` "bilinear" or "bicubic", ``antialias`` as ``F.interpolate``'s."""
    (oh, ow), (nh, nw) = old_grid, new_grid
    if name == "pos_embed":
        prefix, grid = a[:, :num_prefix_tokens], a[0, num_prefix_tokens:]
        if grid.shape[0] != oh * ow:
            raise ValueError(f"pos_embed of shape {a.shape} does not hold a {oh}x{ow} grid "
                             f"after {num_prefix_tokens} prefix token(s)")
        grid = grid.reshape(oh, ow, -1)                                   # (gh, gw, D)
        grid = _resize_axis(_resize_axis(grid, 0, nh, mode, antialias), 1, nw, mode, antialias)  # (nh, nw, D)
        xp = backend.get_array_module(a)
        return xp.concatenate([prefix, grid.reshape(1, nh * nw, -1)], axis=1)  # (1, N', D)
    if name == "pos_embed_row":
        return _resize_axis(a, 0, nh, mode, antialias)
    if name == "pos_embed_col":
        return _resize_axis(a, 0, nw, mode, antialias)
    if name == "rel_pos_embed_1d":
        return _resize_axis(a, 0, 2 * nh * nw - 1, mode, antialias)
    if name == "rel_pos_embed":
        return _resize_axis(_resize_axis(a, 0, 2 * nh - 1, mode, antialias), 1, 2 * nw - 1, mode, antialias)
    raise ValueError(f"{name!r} is not a position embedding; known: {ALL_PARAM_NAMES}")
