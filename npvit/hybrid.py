"""The hybrid model's ResNet (paper Sec. 3.1): a CNN whose feature map becomes the token sequence.

Built as in the paper's reference code (google-research/vision_transformer,
``models_resnet.py``): BiT-style convolutions with weight standardisation and GroupNorm
instead of BatchNorm, a root block (conv, GroupNorm, ReLU, 3x3 max-pool), then stages of
bottleneck units (1x1, 3x3, 1x1 convolutions, 4x expansion, post-activation, a projection
shortcut where the shape changes). Padding is TensorFlow's "SAME" (possibly one more
cell at the bottom/right), so the original R50+ViT-B/16 weights give the original numbers.

Parameter names follow timm's ``ResNetV2`` inside ``HybridEmbed``:
``patch_embed.backbone.stem.conv.weight``, ``.stem.norm.{weight,bias}``,
``.stages.{i}.blocks.{j}.{conv1,norm1,conv2,norm2,conv3,norm3}``, ``.downsample.{conv,norm}``.
"""
from __future__ import annotations

import numpy as np

from autograd import backend, init
from autograd.nn import GroupNorm, Module, Parameter, Sequential
from autograd.ops import conv2d, max_pool2d, pad, relu

GN_EPS = 1e-6  # flax's GroupNorm default, which the original weights were trained with


def _same_padding(size, kernel, stride) -> tuple[int, int]:
    """TensorFlow's SAME padding of one axis: output ceil(size / stride), the odd cell at the end."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def pad_same(x, kernel, stride):
    """Zero-pad (B, C, H, W) so a ``kernel``/``stride`` window pass gives ceil(H / stride) outputs."""
    ph = _same_padding(x.shape[2], kernel, stride)
    pw = _same_padding(x.shape[3], kernel, stride)
    if ph == pw == (0, 0):
        return x
    return pad(x, ((0, 0), (0, 0), ph, pw))


class StdConv2d(Module):
    """A bias-free convolution whose kernel is standardised per output channel before use.

    w_hat = (w - mean(w)) / (std(w) + eps) over (C_in, kh, kw), as the original JAX
    ``StdConv``; with GroupNorm this trains well at any batch size (Kolesnikov et al., BiT).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, eps=1e-5, generator=None):
        super().__init__()
        self.kernel_size, self.stride, self.eps = kernel_size, stride, eps
        shape = (out_channels, in_channels, kernel_size, kernel_size)
        self.weight = init.lecun_normal_(Parameter(np.zeros(shape, dtype=backend.default_dtype())), generator)

    def forward(self, x):
        w = self.weight
        mean = w.mean(axis=(1, 2, 3), keepdims=True)                       # (C_out, 1, 1, 1)
        std = w.var(axis=(1, 2, 3), keepdims=True).sqrt()
        w = (w - mean) / (std + self.eps)
        x = pad_same(x, self.kernel_size, self.stride)
        return conv2d(x, w, stride=self.stride)                            # (B, C_out, ceil(H/s), ceil(W/s))

    def extra_repr(self):
        o, i, k, _ = self.weight.shape
        return f"{i}, {o}, kernel_size={k}, stride={self.stride}"


class Stem(Module):
    """The root block: a strided conv, GroupNorm, ReLU and (optionally) a 3x3 stride-2 max-pool."""

    def __init__(self, in_chans, width, kernel_size, stride, pool, groups, generator=None):
        super().__init__()
        self.pool = pool
        self.conv = StdConv2d(in_chans, width, kernel_size, stride, generator=generator)
        self.norm = GroupNorm(groups, width, eps=GN_EPS)

    def forward(self, x):
        x = relu(self.norm(self.conv(x)))                                  # (B, W, H/s, W/s)
        if self.pool:
            # after the ReLU every value is >= 0, so zero padding acts as SAME's -inf padding
            x = max_pool2d(pad_same(x, 3, 2), 3, 2)                        # (B, W, H/2s, W/2s)
        return x


class Downsample(Module):
    """The projection shortcut: a strided 1x1 conv and GroupNorm to the unit's output shape."""

    def __init__(self, in_channels, out_channels, stride, groups, generator=None):
        super().__init__()
        self.conv = StdConv2d(in_channels, out_channels, 1, stride, generator=generator)
        self.norm = GroupNorm(groups, out_channels, eps=GN_EPS)

    def forward(self, x):
        return self.norm(self.conv(x))


class Bottleneck(Module):
    """A bottleneck unit: relu(shortcut + GN(conv3(relu(GN(conv2(relu(GN(conv1(x))))))))), 4x expansion."""

    def __init__(self, in_channels, width, stride, groups, generator=None):
        super().__init__()
        out = 4 * width
        needs_projection = in_channels != out or stride != 1
        self.downsample = Downsample(in_channels, out, stride, groups, generator) if needs_projection else None
        self.conv1 = StdConv2d(in_channels, width, 1, generator=generator)
        self.norm1 = GroupNorm(groups, width, eps=GN_EPS)
        self.conv2 = StdConv2d(width, width, 3, stride, generator=generator)
        self.norm2 = GroupNorm(groups, width, eps=GN_EPS)
        self.conv3 = StdConv2d(width, out, 1, generator=generator)
        self.norm3 = GroupNorm(groups, out, eps=GN_EPS)
        init.zeros_(self.norm3.weight)  # each unit starts as its shortcut, as the original

    def forward(self, x):
        shortcut = x if self.downsample is None else self.downsample(x)   # (B, 4W, H/s, W/s)
        y = relu(self.norm1(self.conv1(x)))                                # (B, W, H, W)
        y = relu(self.norm2(self.conv2(y)))                                # (B, W, H/s, W/s)
        y = self.norm3(self.conv3(y))                                      # (B, 4W, H/s, W/s)
        return relu(shortcut + y)


class Stage(Module):
    """Bottleneck units of one width; the first may stride and project."""

    def __init__(self, in_channels, width, depth, stride, groups, generator=None):
        super().__init__()
        self.blocks = Sequential(*(
            Bottleneck(in_channels if j == 0 else 4 * width, width, stride if j == 0 else 1, groups, generator)
            for j in range(depth)
        ))

    def forward(self, x):
        return self.blocks(x)


class ResNetBackbone(Module):
    """The stem and ``len(layers)`` stages (widths w, 2w, 4w, ...; strides 1, 2, 2, ...)."""

    def __init__(self, in_chans, layers, width=64, stem_kernel=7, stem_stride=2, stem_pool=True, groups=32,
                 generator=None):
        super().__init__()
        self.stem = Stem(in_chans, width, stem_kernel, stem_stride, stem_pool, groups, generator)
        stages, channels = [], width
        for i, depth in enumerate(layers):
            stages.append(Stage(channels, width * 2**i, depth, 1 if i == 0 else 2, groups, generator))
            channels = 4 * width * 2**i
        self.stages = Sequential(*stages)
        self.out_channels = channels

    def forward(self, x):
        return self.stages(self.stem(x))                                   # (B, C_out, H/stride, W/stride)
