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
(timm's stem-only hybrids, ``vit_tiny_r_s16_p8_*``, name the stem ``patch_embed.backbone.{conv,norm}``;
``checkpoint.py`` renames those on loading.)

The normalisation constants follow the code whose weights are run (``CONVENTIONS``):
Google's, which trained the paper's weights, standardises w as (w - mean) / (std + 1e-5)
with GroupNorm eps 1e-6; timm's port as (w - mean) / sqrt(var + 1e-8) with eps 1e-5.
The two differ by about 3e-4 on an R50+ViT-B/16's logits, so each file runs with its own.
"""
from __future__ import annotations

import numpy as np

from autograd import backend, init
from autograd.nn import GroupNorm, Module, Parameter, Sequential
from autograd.ops import conv2d, max_pool2d, pad, relu

# convention -> (weight standardisation: eps added to the std, or to the variance under the root; GroupNorm eps)
CONVENTIONS = {
    "google": dict(std_eps=1e-5, var_eps=None, gn_eps=1e-6),  # models_resnet.StdConv, flax's GroupNorm default
    "timm": dict(std_eps=None, var_eps=1e-8, gn_eps=1e-5),    # StdConv2dSame(eps=1e-8), GroupNormAct's default
}


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

    w_hat = (w - mean(w)) / (std(w) + 1e-5) over (C_in, kh, kw), as the original JAX
    ``StdConv`` (``convention="google"``), or (w - mean(w)) / sqrt(var(w) + 1e-8) as timm's
    (``"timm"``); with GroupNorm this trains well at any batch size (Kolesnikov et al., BiT).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, convention="google", generator=None):
        super().__init__()
        self.kernel_size, self.stride, self.convention = kernel_size, stride, convention
        shape = (out_channels, in_channels, kernel_size, kernel_size)
        self.weight = init.lecun_normal_(Parameter(np.zeros(shape, dtype=backend.default_dtype())), generator)

    def standardised_weight(self):
        """The kernel as the convolution uses it, w_hat (C_out, C_in, kh, kw), in the graph."""
        w = self.weight
        c = CONVENTIONS[self.convention]
        mean = w.mean(axis=(1, 2, 3), keepdims=True)                       # (C_out, 1, 1, 1)
        var = w.var(axis=(1, 2, 3), keepdims=True)
        if c["var_eps"] is None:
            return (w - mean) / (var.sqrt() + c["std_eps"])
        return (w - mean) / (var + c["var_eps"]).sqrt()

    def forward(self, x):
        w = self.standardised_weight()
        x = pad_same(x, self.kernel_size, self.stride)
        return conv2d(x, w, stride=self.stride)                            # (B, C_out, ceil(H/s), ceil(W/s))

    def extra_repr(self):
        o, i, k, _ = self.weight.shape
        return f"{i}, {o}, kernel_size={k}, stride={self.stride}, convention={self.convention}"


class Stem(Module):
    """The root block: a strided conv, GroupNorm, ReLU and (optionally) a 3x3 stride-2 max-pool."""

    def __init__(self, in_chans, width, kernel_size, stride, pool, groups, convention="google", generator=None):
        super().__init__()
        self.pool = pool
        self.conv = StdConv2d(in_chans, width, kernel_size, stride, convention, generator)
        self.norm = GroupNorm(groups, width, eps=CONVENTIONS[convention]["gn_eps"])

    def forward(self, x):
        x = relu(self.norm(self.conv(x)))                                  # (B, W, H/s, W/s)
        if self.pool:
            # after the ReLU every value is >= 0, so zero padding acts as SAME's -inf padding
            x = max_pool2d(pad_same(x, 3, 2), 3, 2)                        # (B, W, H/2s, W/2s)
        return x


class Downsample(Module):
    """The projection shortcut: a strided 1x1 conv and GroupNorm to the unit's output shape."""

    def __init__(self, in_channels, out_channels, stride, groups, convention="google", generator=None):
        super().__init__()
        self.conv = StdConv2d(in_channels, out_channels, 1, stride, convention, generator)
        self.norm = GroupNorm(groups, out_channels, eps=CONVENTIONS[convention]["gn_eps"])

    def forward(self, x):
        return self.norm(self.conv(x))


class Bottleneck(Module):
    """A bottleneck unit: relu(shortcut + GN(conv3(relu(GN(conv2(relu(GN(conv1(x))))))))), 4x expansion."""

    def __init__(self, in_channels, width, stride, groups, convention="google", generator=None):
        super().__init__()
        out = 4 * width
        needs_projection = in_channels != out or stride != 1
        self.downsample = (Downsample(in_channels, out, stride, groups, convention, generator)
                           if needs_projection else None)
        eps = CONVENTIONS[convention]["gn_eps"]
        self.conv1 = StdConv2d(in_channels, width, 1, 1, convention, generator)
        self.norm1 = GroupNorm(groups, width, eps=eps)
        self.conv2 = StdConv2d(width, width, 3, stride, convention, generator)
        self.norm2 = GroupNorm(groups, width, eps=eps)
        self.conv3 = StdConv2d(width, out, 1, 1, convention, generator)
        self.norm3 = GroupNorm(groups, out, eps=eps)
        init.zeros_(self.norm3.weight)  # each unit starts as its shortcut, as the original

    def forward(self, x):
        shortcut = x if self.downsample is None else self.downsample(x)   # (B, 4W, H/s, W/s)
        y = relu(self.norm1(self.conv1(x)))                                # (B, W, H, W)
        y = relu(self.norm2(self.conv2(y)))                                # (B, W, H/s, W/s)
        y = self.norm3(self.conv3(y))                                      # (B, 4W, H/s, W/s)
        return relu(shortcut + y)


class Stage(Module):
    """Bottleneck units of one width; the first may stride and project."""

    def __init__(self, in_channels, width, depth, stride, groups, convention="google", generator=None):
        super().__init__()
        self.blocks = Sequential(*(
            Bottleneck(in_channels if j == 0 else 4 * width, width, stride if j == 0 else 1, groups, convention,
                       generator)
            for j in range(depth)
        ))

    def forward(self, x):
        return self.blocks(x)


class ResNetBackbone(Module):
    """The stem and ``len(layers)`` stages (widths w, 2w, 4w, ...; strides 1, 2, 2, ...)."""

    def __init__(self, in_chans, layers, width=64, stem_kernel=7, stem_stride=2, stem_pool=True, groups=32,
                 convention="google", generator=None):
        super().__init__()
        self.stem = Stem(in_chans, width, stem_kernel, stem_stride, stem_pool, groups, convention, generator)
        stages, channels = [], width
        for i, depth in enumerate(layers):
            stages.append(Stage(channels, width * 2**i, depth, 1 if i == 0 else 2, groups, convention, generator))
            channels = 4 * width * 2**i
        self.stages = Sequential(*stages)
        self.out_channels = channels

    def forward(self, x):
        return self.stages(self.stem(x))                                   # (B, C_out, H/stride, W/stride)
