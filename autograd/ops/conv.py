"""Convolution, pooling and group norm on channels-first images ``(B, C, H, W)``.

These are what the hybrid model's ResNet stem is made of. A convolution is a GEMM
over a column matrix: ``_im2col`` copies every kernel window out of the padded image
through a strided view (no loop over pixels), one matrix product mixes channels and
kernel offsets at once, and ``_col2im``, its exact adjoint, scatter-adds column
gradients back into the image with one strided add per kernel offset. The pools reuse
the same helpers, so all three share one picture of where each window lies. Inside,
images are held as (C, H, W, B), batch innermost (see ``_pad``).
"""
from __future__ import annotations

from .. import precision
from ..backend import get_array_module
from ..engine import Function
from .util import pair

__all__ = ["conv2d", "max_pool2d", "avg_pool2d", "group_norm"]


def _out_size(size, kernel, stride, padding):
    """How many windows fit along one axis of the padded image."""
    return (size + 2 * padding - kernel) // stride + 1


def _pad(x, padding, fill):
    """``x`` (B, C, H, W) copied into the working layout (C, Hp, Wp, B), ``fill`` around the image.

    The batch goes innermost: a window then slides over runs of Wo * B contiguous numbers
    instead of Wo, so the strided copies below move long rows, and the GEMM's rows are
    (offset, channel) and its columns (pixel, image) with no batched product.
    """
    xp = get_array_module(x)
    (ph, pw), (batch, c, h, w) = padding, x.shape
    out = xp.full((c, h + 2 * ph, w + 2 * pw, batch), fill, dtype=x.dtype)  # (C, Hp, Wp, B)
    out[:, ph:ph + h, pw:pw + w] = x.transpose(1, 2, 3, 0)
    return out


def _unpad(a, padding, size):
    """The inverse of ``_pad``: the inner ``size`` = (H, W) of a (C, Hp, Wp, B) array, as (B, C, H, W)."""
    xp = get_array_module(a)
    (ph, pw), (h, w) = padding, size
    return xp.ascontiguousarray(a[:, ph:ph + h, pw:pw + w].transpose(3, 0, 1, 2))


def _im2col(a, kernel, stride):
    """Every window of a (C, Hp, Wp, B) array, kernel offsets first: (kh, kw, C, Ho, Wo, B), one copy.

    The windows are first a zero-copy strided view (an element appears in every window
    that covers it); the single copy lays them out for the GEMM. ``xp.lib.stride_tricks``
    is the same function under NumPy and CuPy, strides in bytes on both.
    """
    xp = get_array_module(a)
    (kh, kw), (sh, sw) = kernel, stride
    c, h, w, batch = a.shape
    ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
    s_c, s_row, s_col, s_b = a.strides
    windows = xp.lib.stride_tricks.as_strided(
        a, shape=(kh, kw, c, ho, wo, batch), strides=(s_row, s_col, s_c, s_row * sh, s_col * sw, s_b)
    )
    return xp.ascontiguousarray(windows)


def _col2im(cols, padded_shape, stride):
    """The adjoint of ``_im2col``: add each window's values back where it was cut from.

    ``cols`` is (kh, kw, C, Ho, Wo, B); the loop runs over the kh*kw kernel offsets, each
    adding one strided slab of the image, so overlapping windows accumulate.
    """
    xp = get_array_module(cols)
    kh, kw, _, ho, wo, _ = cols.shape
    sh, sw = stride
    out = xp.zeros(padded_shape, dtype=cols.dtype)  # (C, Hp, Wp, B)
    for i in range(kh):
        for j in range(kw):
            out[:, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw] += cols[i, j]
    return out


class Conv2d(Function):
    @staticmethod
    def forward(x, w, *bias, stride, padding):
        xp = get_array_module(x)
        batch, c_in, h, width = x.shape
        c_out, _, kh, kw = w.shape
        ho, wo = _out_size(h, kh, stride[0], padding[0]), _out_size(width, kw, stride[1], padding[1])
        xpad = _pad(x, padding, 0)                                          # (C_in, Hp, Wp, B)
        cols = _im2col(xpad, (kh, kw), stride).reshape(kh * kw * c_in, -1)  # (kh*kw*C_in, Ho*Wo*B)
        w2 = w.transpose(0, 2, 3, 1).reshape(c_out, -1)                     # (C_out, kh*kw*C_in) like cols
        w2, cols = precision.lower(w2, cols)                                 # 16-bit under mixed precision
        out = precision.matmul(w2, cols, w2.dtype, x.dtype)                  # (C_out, Ho*Wo*B)
        if bias:
            out += bias[0][:, None]
        out = out.reshape(c_out, ho, wo, batch).transpose(3, 0, 1, 2)      # (B, C_out, Ho, Wo)
        out = xp.ascontiguousarray(out)
        # The column matrix is kh*kw times the image: backward rebuilds it rather than keep it.
        return out, (xpad, w2, w.shape, (h, width), stride, padding, bool(bias))

    @staticmethod
    def backward(g, cache):
        # out = W2 @ cols (+ b), cols = im2col(pad(x)):
        #   dW2 = dout @ cols^T,  dcols = W2^T @ dout,  dx = unpad(col2im(dcols)),  db = sum of dout
        xpad, w2, w_shape, size, stride, padding, has_bias = cache
        xp = get_array_module(g)
        c_out, c_in, kh, kw = w_shape
        _, _, ho, wo = g.shape
        g2 = g.transpose(1, 2, 3, 0).reshape(c_out, -1)                     # (C_out, Ho*Wo*B)
        cols = _im2col(xpad, (kh, kw), stride).reshape(kh * kw * c_in, -1)  # (kh*kw*C_in, Ho*Wo*B)
        # both products in the forward's precision: the cached w2's dtype
        dw = precision.matmul(g2, cols.T, w2.dtype, g.dtype)                # (C_out, kh*kw*C_in)
        dw = dw.reshape(c_out, kh, kw, c_in).transpose(0, 3, 1, 2)          # (C_out, C_in, kh, kw)
        dcols = precision.matmul(w2.T, g2, w2.dtype, g.dtype)               # (kh*kw*C_in, Ho*Wo*B)
        dcols = dcols.reshape(kh, kw, c_in, ho, wo, -1)                     # (kh, kw, C_in, Ho, Wo, B)
        dx = _unpad(_col2im(dcols, xpad.shape, stride), padding, size)      # (B, C_in, H, W)
        grads = (dx, xp.ascontiguousarray(dw))
        return (*grads, g.sum(axis=(0, 2, 3))) if has_bias else grads


def conv2d(x, weight, bias=None, stride=1, padding=0):
    """2-D cross-correlation of ``x`` (B, C_in, H, W) with ``weight`` (C_out, C_in, kh, kw), zero padding."""
    stride, padding = pair(stride, "stride"), pair(padding, "padding")
    if len(x.shape) != 4 or len(weight.shape) != 4:
        raise ValueError(
            f"conv2d takes x (B, C, H, W) and weight (C_out, C_in, kh, kw), not {x.shape} and {weight.shape}"
        )
    if x.shape[1] != weight.shape[1]:
        raise ValueError(f"conv2d: x has {x.shape[1]} channels but weight expects {weight.shape[1]}")
    if 0 in stride:
        raise ValueError("conv2d: stride must be positive")
    kernel = weight.shape[2:]
    if any(_out_size(n, k, s, p) < 1 for n, k, s, p in zip(x.shape[2:], kernel, stride, padding)):
        raise ValueError(f"conv2d: kernel {tuple(kernel)} does not fit the input {x.shape[2:]} padded by {padding}")
    if bias is None:
        return Conv2d.apply(x, weight, stride=stride, padding=padding)
    if tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"conv2d: bias of shape {bias.shape} for {weight.shape[0]} output channels")
    return Conv2d.apply(x, weight, bias, stride=stride, padding=padding)


def _pool_args(x, kernel_size, stride, padding):
    """Check and normalise a pool's arguments as PyTorch does (padding at most half the kernel)."""
    kernel = pair(kernel_size, "kernel_size")
    stride = kernel if stride is None else pair(stride, "stride")
    padding = pair(padding, "padding")
    if len(x.shape) != 4:
        raise ValueError(f"pooling takes x (B, C, H, W), not {x.shape}")
    if 0 in kernel or 0 in stride:
        raise ValueError("pooling: kernel_size and stride must be positive")
    if any(2 * p > k for p, k in zip(padding, kernel)):
        raise ValueError(f"pooling: padding {padding} must be at most half of kernel_size {kernel}")
    if any(_out_size(n, k, s, p) < 1 for n, k, s, p in zip(x.shape[2:], kernel, stride, padding)):
        raise ValueError(f"pooling: kernel {kernel} does not fit the input {x.shape[2:]} padded by {padding}")
    return kernel, stride, padding


class MaxPool2d(Function):
    @staticmethod
    def forward(x, kernel, stride, padding):
        xp = get_array_module(x)
        xpad = _pad(x, padding, float("-inf"))                              # (C, Hp, Wp, B)
        cols = _im2col(xpad, kernel, stride)                                # (kh, kw, C, Ho, Wo, B)
        cols = cols.reshape(kernel[0] * kernel[1], *cols.shape[2:])         # (kh*kw, C, Ho, Wo, B)
        arg = cols.argmax(axis=0)  # the first maximum in row-major window order, as PyTorch picks
        out = xp.ascontiguousarray(cols.max(axis=0).transpose(3, 0, 1, 2))  # (B, C, Ho, Wo)
        return out, (arg, kernel, stride, padding, xpad.shape, x.shape[2:])

    @staticmethod
    def backward(g, cache):
        # out = window[arg]: each window's gradient goes whole to the element it took,
        # and an element that wins several overlapping windows collects all of them
        arg, kernel, stride, padding, padded_shape, size = cache
        xp = get_array_module(g)
        n = kernel[0] * kernel[1]
        picked = xp.arange(n).reshape(n, 1, 1, 1, 1) == arg                # (kh*kw, C, Ho, Wo, B)
        dcols = (picked * g.transpose(1, 2, 3, 0)).reshape(*kernel, *arg.shape)  # (kh, kw, C, Ho, Wo, B)
        return _unpad(_col2im(dcols, padded_shape, stride), padding, size)


def max_pool2d(x, kernel_size, stride=None, padding=0):
    """Maximum over each window (stride defaults to the kernel; padding counts as -inf)."""
    kernel, stride, padding = _pool_args(x, kernel_size, stride, padding)
    return MaxPool2d.apply(x, kernel=kernel, stride=stride, padding=padding)


class AvgPool2d(Function):
    @staticmethod
    def forward(x, kernel, stride, padding):
        xp = get_array_module(x)
        xpad = _pad(x, padding, 0)                                          # (C, Hp, Wp, B)
        n = kernel[0] * kernel[1]
        out = _im2col(xpad, kernel, stride).sum(axis=(0, 1)) / n            # (C, Ho, Wo, B)
        out = xp.ascontiguousarray(out.transpose(3, 0, 1, 2))              # (B, C, Ho, Wo)
        return out, (kernel, stride, padding, xpad.shape, x.shape[2:], n)

    @staticmethod
    def backward(g, cache):
        # out = sum(window) / n with padded zeros counted in n: every cell of a window gets g / n
        kernel, stride, padding, padded_shape, size, n = cache
        xp = get_array_module(g)
        g = g.transpose(1, 2, 3, 0) / n                                     # (C, Ho, Wo, B)
        dcols = xp.broadcast_to(g, (*kernel, *g.shape))                     # (kh, kw, C, Ho, Wo, B)
        return _unpad(_col2im(dcols, padded_shape, stride), padding, size)


def avg_pool2d(x, kernel_size, stride=None, padding=0):
    """Mean over each window, padded zeros included in the count (PyTorch's default)."""
    kernel, stride, padding = _pool_args(x, kernel_size, stride, padding)
    return AvgPool2d.apply(x, kernel=kernel, stride=stride, padding=padding)


class GroupNorm(Function):
    @staticmethod
    def forward(x, *affine, num_groups, eps, has_weight, has_bias):
        xp = get_array_module(x)
        batch, c = x.shape[:2]
        channel = (c,) + (1,) * (x.ndim - 2)  # a per-channel vector's shape, broadcast over positions
        xg = x.reshape(batch, num_groups, -1)                               # (B, G, C/G * positions)
        centred = xg - xg.mean(axis=-1, keepdims=True)
        rstd = 1 / xp.sqrt((centred * centred).mean(axis=-1, keepdims=True) + eps)  # (B, G, 1)
        xhat = (centred * rstd).reshape(x.shape)                            # (B, C, ...)
        weight = affine[0].reshape(channel) if has_weight else None
        out = xhat * weight if has_weight else xhat
        if has_bias:
            out = out + affine[-1].reshape(channel)
        return out, (xhat, rstd, weight, num_groups, has_weight, has_bias)

    @staticmethod
    def backward(g, cache):
        # y = w xhat + b with xhat = (x - mu) rstd over each group of n values. As in layer
        # norm, mu and rstd depend on every x of the group, which contributes the two means:
        #   dxhat = g w,  dx = rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat))
        #   dw = sum over batch and positions of g xhat,  db = sum of g
        xhat, rstd, weight, num_groups, has_weight, has_bias = cache
        batch = g.shape[0]
        others = (0,) + tuple(range(2, g.ndim))  # every axis but the channel
        dxhat = (g * weight if has_weight else g).reshape(batch, num_groups, -1)  # (B, G, C/G * positions)
        xhat_g = xhat.reshape(batch, num_groups, -1)
        dx = rstd * (
            dxhat
            - dxhat.mean(axis=-1, keepdims=True)
            - xhat_g * (dxhat * xhat_g).mean(axis=-1, keepdims=True)
        )
        grads = (dx.reshape(g.shape),)
        if has_weight:
            grads += ((g * xhat).sum(axis=others),)
        if has_bias:
            grads += (g.sum(axis=others),)
        return grads


def group_norm(x, num_groups, weight=None, bias=None, eps=1e-5):
    """Normalise ``x`` (B, C, ...) over each group of C/num_groups channels and all positions; per-channel affine."""
    if len(x.shape) < 2 or x.shape[1] % num_groups:
        raise ValueError(f"group_norm: {num_groups} groups do not divide the channels of shape {x.shape}")
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None and tuple(p.shape) != (x.shape[1],):
            raise ValueError(f"group_norm: {name} of shape {p.shape} for {x.shape[1]} channels")
    affine = tuple(p for p in (weight, bias) if p is not None)
    return GroupNorm.apply(
        x, *affine, num_groups=num_groups, eps=eps, has_weight=weight is not None, has_bias=bias is not None
    )
