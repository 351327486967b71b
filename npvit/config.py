"""Model configurations: one dataclass holds every design choice, and a table names the variants.

``ViTConfig`` uses timm's argument names where timm has the choice (``img_size``,
``patch_size``, ``embed_dim``, ``depth``, ``num_heads``, ``global_pool``, ...), and its
own names for what the paper ablates and timm does not: the kind of position embedding
and where it is added (Appendix D.4), the pre-training head (``representation_size``,
Sec. 3.1), masked patch prediction (Sec. 4.6 / Appendix B.1.2) and the hybrid's ResNet
stem (Sec. 3.1). ``MODELS`` names the paper's ViT-Ti/S/B/L/H (Table 1), the hybrid
R50+ViT-B/16, and small variants for 32x32 CIFAR images; ``get_config(name, **overrides)``
builds one, changing any field by keyword.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import math
from dataclasses import dataclass

POS_EMBED_KINDS = ("none", "1d", "2d", "relative", "relative_2d")
RELATIVE_KINDS = ("relative", "relative_2d")
# timm's VisionTransformer(pos_embed=...) spellings of the kinds it has
POS_EMBED_ALIASES = {"learn": "1d", "": "none"}
POS_EMBED_AT = ("input", "every_block", "every_block_shared")
# The hybrid's normalisation constants, by the code whose weights it is to run (see ``hybrid.py``)
HYBRID_CONVENTIONS = ("google", "timm")
GLOBAL_POOLS = ("token", "avg")
MPP_TARGETS = ("mean_color", "patch_color", "pixels")


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


@dataclass(frozen=True)
class ViTConfig:
    """Every choice that shapes a VisionTransformer; JSON-serialisable via ``to_dict``/``from_dict``.

    Position embeddings (``pos_embed``, Appendix D.4): ``"none"``; ``"1d"`` one learned
    vector per patch (the paper's default; timm's ``"learn"`` is accepted for it, and ``""``
    for ``"none"``); ``"2d"`` a learned row and column vector of D/2 each, concatenated;
    ``"relative"`` the paper's relative attention, a learned vector per 1-D offset between
    two patches' raster positions whose dot product with the query is added to the
    attention logits; ``"relative_2d"`` the same with one vector per 2-D (dy, dx) offset.
    ``pos_embed_at``: ``"input"`` once before the first block (for the relative kinds: in
    the first block's attention only), ``"every_block"`` before every block (in every
    block's attention) with each block its own, or ``"every_block_shared"`` the same with
    one set for all. ``None`` (the default) is ``"every_block"`` for the relative kinds,
    relative attention being a property of every attention layer, and ``"input"`` for the
    others; ``placement`` gives the value in force.

    ``hybrid_convention``: the constants of the hybrid's weight standardisation and
    GroupNorm, ``"google"`` (the paper's code: (w - mean) / (std + 1e-5), GroupNorm eps
    1e-6) or ``"timm"`` (timm's port: (w - mean) / sqrt(var + 1e-8), eps 1e-5), so
    converted weights compute what they computed where they came from.

    ``hybrid_layers`` switches on the hybrid: ``None`` is the plain ViT, a tuple gives the
    bottleneck units per ResNet stage (``()`` keeps only the stem); ``patch_size`` is
    then the patch size on the ResNet feature map (1 in the paper).

    ``mpp_target`` adds the masked-patch-prediction head (``mpp_head``): ``"mean_color"``
    (one of 2^(bits x channels) colours per patch, 512 for RGB at 3 bits), ``"patch_color"``
    (the patch shrunk to ``mpp_grid`` x ``mpp_grid`` cells, each one such colour) or ``"pixels"``
    (every pixel of the patch, regressed).
    """

    img_size: int | tuple[int, int] = 224
    patch_size: int = 16
    in_chans: int = 3
    num_classes: int = 1000
    global_pool: str = "token"
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    class_token: bool = True
    # None: a LayerNorm after pooling (``fc_norm``, final ``norm`` dropped) exactly when global_pool is "avg", as timm
    fc_norm: bool | None = None
    representation_size: int | None = None  # the pre-training head's tanh layer (``pre_logits.fc``); None: no layer
    drop_rate: float = 0.0  # dropout before the head
    pos_drop_rate: float = 0.0  # dropout after the position embeddings are added
    proj_drop_rate: float = 0.0  # dropout after the attention projection and in the MLP
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.0  # stochastic depth, rising linearly to this in the last block
    gelu_approximate: str = "none"  # "tanh" as the original JAX code (flax's nn.gelu)
    pos_embed: str = "1d"
    pos_embed_at: str | None = None  # None: "every_block" for the relative kinds, else "input" (``placement``)
    mask_token: bool = False
    mpp_target: str | None = None
    mpp_bits: int = 3
    mpp_grid: int = 4
    hybrid_layers: tuple[int, ...] | None = None
    hybrid_width: int = 64
    hybrid_stem_kernel: int = 7
    hybrid_stem_stride: int = 2
    hybrid_stem_pool: bool = True
    hybrid_groups: int = 32
    hybrid_convention: str = "google"

    def __post_init__(self):
        # JSON turns tuples into lists; keep the dataclass hashable and comparable
        object.__setattr__(self, "img_size", self.img_size if isinstance(self.img_size, int) else tuple(self.img_size))
        if self.hybrid_layers is not None:
            object.__setattr__(self, "hybrid_layers", tuple(self.hybrid_layers))
        object.__setattr__(self, "pos_embed", POS_EMBED_ALIASES.get(self.pos_embed, self.pos_embed))
        self._validate()

    def _validate(self):
        def fail(message):
            raise ValueError(f"ViTConfig: {message}")

        for name in ("patch_size", "in_chans", "embed_dim", "depth", "num_heads", "mpp_bits", "mpp_grid",
                     "hybrid_width", "hybrid_stem_kernel", "hybrid_stem_stride", "hybrid_groups"):
            if int(getattr(self, name)) < 1:
                fail(f"{name} must be a positive integer, not {getattr(self, name)}")
        if min(_pair(self.img_size)) < 1:
            fail(f"img_size must be positive, not {self.img_size}")
        if self.num_classes < 0:
            fail(f"num_classes must be >= 0 (0: no head), not {self.num_classes}")
        if self.embed_dim % self.num_heads:
            fail(f"embed_dim {self.embed_dim} does not split into {self.num_heads} heads")
        if not self.mlp_ratio > 0 or self.mlp_ratio == float("inf"):
            fail(f"mlp_ratio must be positive, not {self.mlp_ratio}")
        for name in ("drop_rate", "pos_drop_rate", "proj_drop_rate", "attn_drop_rate", "drop_path_rate"):
            if not 0.0 <= getattr(self, name) < 1.0:
                fail(f"{name} must be in [0, 1), not {getattr(self, name)}")
        if self.gelu_approximate not in ("none", "tanh"):
            fail(f"gelu_approximate must be 'none' or 'tanh', not {self.gelu_approximate!r}")
        if self.global_pool not in GLOBAL_POOLS:
            fail(f"global_pool must be one of {GLOBAL_POOLS}, not {self.global_pool!r}")
        if self.global_pool == "token" and not self.class_token:
            fail("global_pool='token' needs class_token=True (or use global_pool='avg')")
        if self.representation_size is not None and self.representation_size < 1:
            fail(f"representation_size must be None or positive, not {self.representation_size}")
        if self.pos_embed not in POS_EMBED_KINDS:
            fail(f"pos_embed must be one of {POS_EMBED_KINDS}, not {self.pos_embed!r}")
        if self.pos_embed_at is not None and self.pos_embed_at not in POS_EMBED_AT:
            fail(f"pos_embed_at must be one of {POS_EMBED_AT} (or None: the kind's default), not {self.pos_embed_at!r}")
        if self.pos_embed == "none" and self.placement != "input":
            fail("pos_embed='none' adds nothing anywhere; leave pos_embed_at='input'")
        if self.hybrid_convention not in HYBRID_CONVENTIONS:
            fail(f"hybrid_convention must be one of {HYBRID_CONVENTIONS}, not {self.hybrid_convention!r}")
        if self.pos_embed == "2d" and self.embed_dim % 2:
            fail(f"pos_embed='2d' splits embed_dim into a row and a column half; {self.embed_dim} is odd")
        if self.mpp_target is not None and self.mpp_target not in MPP_TARGETS:
            fail(f"mpp_target must be None or one of {MPP_TARGETS}, not {self.mpp_target!r}")
        if self.mpp_target is not None and any(n % self.effective_patch_size for n in self.image_hw):
            fail(f"masked patch prediction needs img_size {self.image_hw} divisible by the patch's "
                 f"{self.effective_patch_size} pixels")
        if self.mpp_target == "patch_color" and self.effective_patch_size % self.mpp_grid:
            fail(f"mpp_grid {self.mpp_grid} does not divide the patch size {self.effective_patch_size}")
        if self.hybrid_layers is not None:
            if any(n < 1 for n in self.hybrid_layers):
                fail(f"hybrid_layers must be positive unit counts, not {self.hybrid_layers}")
            if self.hybrid_width % self.hybrid_groups:
                fail(f"hybrid_width {self.hybrid_width} does not split into {self.hybrid_groups} GroupNorm groups")
        feature = self.feature_size
        if feature[0] % self.patch_size or feature[1] % self.patch_size:
            where = "the ResNet feature map" if self.hybrid_layers is not None else "img_size"
            fail(f"{where} {feature} is not divisible by patch_size {self.patch_size}")

    # --- derived sizes ------------------------------------------------------------
    @property
    def placement(self) -> str:
        """Where the position embeddings go: ``pos_embed_at``, or its default for the kind when None."""
        if self.pos_embed_at is not None:
            return self.pos_embed_at
        return "every_block" if self.pos_embed in RELATIVE_KINDS else "input"

    @property
    def image_hw(self) -> tuple[int, int]:
        """(H, W) of the input image."""
        return _pair(self.img_size)

    @property
    def backbone_stride(self) -> int:
        """How many pixels one position of the hybrid's feature map spans (1 for the plain ViT)."""
        if self.hybrid_layers is None:
            return 1
        pool = 2 if self.hybrid_stem_pool else 1
        return self.hybrid_stem_stride * pool * 2 ** max(len(self.hybrid_layers) - 1, 0)

    @property
    def feature_size(self) -> tuple[int, int]:
        """(H, W) of what the patch projection sees: the image, or the ResNet feature map (SAME padding rounds up)."""
        if self.hybrid_layers is None:
            return self.image_hw
        strides = [self.hybrid_stem_stride] + [2] * self.hybrid_stem_pool + [2] * max(len(self.hybrid_layers) - 1, 0)
        size = list(self.image_hw)
        for s in strides:
            size = [math.ceil(n / s) for n in size]
        return tuple(size)

    @property
    def grid_size(self) -> tuple[int, int]:
        """(rows, columns) of the patch grid."""
        h, w = self.feature_size
        return h // self.patch_size, w // self.patch_size

    @property
    def num_patches(self) -> int:
        """N, the number of patch tokens."""
        gh, gw = self.grid_size
        return gh * gw

    @property
    def num_prefix_tokens(self) -> int:
        """Tokens before the patches: the [class] token or none."""
        return int(self.class_token)

    @property
    def effective_patch_size(self) -> int:
        """The side in input pixels of the image area one patch token covers."""
        return self.patch_size * self.backbone_stride

    @property
    def use_fc_norm(self) -> bool:
        """Whether the final LayerNorm comes after pooling (``fc_norm``) instead of before (``norm``)."""
        return self.global_pool == "avg" if self.fc_norm is None else self.fc_norm

    @property
    def mlp_hidden_dim(self) -> int:
        """Width of the MLP's hidden layer."""
        return int(self.embed_dim * self.mlp_ratio)

    @property
    def mpp_num_colors(self) -> int:
        """Colour classes of one masked-patch-prediction cell: 2^(bits x channels), 512 for RGB at 3 bits."""
        return 2 ** (self.mpp_bits * self.in_chans)

    # --- (de)serialisation --------------------------------------------------------
    def to_dict(self) -> dict:
        """The fields as a JSON-ready dict (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "ViTConfig":
        """Rebuild from ``to_dict`` output; an unknown key is a ValueError naming the valid ones."""
        check_fields(d)
        return cls(**d)

    def replace(self, **changes) -> "ViTConfig":
        """A copy with some fields changed (validated again); unknown names are a ValueError."""
        check_fields(changes)
        return dataclasses.replace(self, **changes)


def config_fields() -> list[str]:
    """The names ``create_model`` accepts as overrides."""
    return [f.name for f in dataclasses.fields(ViTConfig)]


def check_fields(names):
    """Raise a ValueError naming the valid fields if any of ``names`` is not a config field."""
    unknown = sorted(set(names) - set(config_fields()))
    if unknown:
        raise ValueError(f"unknown config field(s) {unknown}; valid fields: {', '.join(config_fields())}")


_CIFAR = dict(img_size=32, num_classes=10)
_R50 = dict(hybrid_layers=(3, 4, 9), patch_size=1)
# The hybrid for 32x32 images: a 3x3 stride-1 stem, no max-pool, three stages (strides 1, 2, 2)
# leave an 8x8 map of 256 channels, the same 64 tokens as vit_cifar_tiny's 4x4 patches.
_CIFAR_R = dict(hybrid_layers=(1, 1, 1), hybrid_width=16, hybrid_stem_kernel=3, hybrid_stem_stride=1,
                hybrid_stem_pool=False, hybrid_groups=8, patch_size=1)

MODELS: dict[str, dict] = {
    # the paper's Table 1 (ViT-B is the dataclass default), plus DeiT's Ti and S sizes as timm has them
    "vit_tiny_patch16_224": dict(embed_dim=192, num_heads=3),
    "vit_tiny_patch16_384": dict(embed_dim=192, num_heads=3, img_size=384),
    "vit_small_patch16_224": dict(embed_dim=384, num_heads=6),
    "vit_small_patch32_224": dict(embed_dim=384, num_heads=6, patch_size=32),
    "vit_small_patch16_384": dict(embed_dim=384, num_heads=6, img_size=384),
    "vit_base_patch16_224": dict(),
    "vit_base_patch32_224": dict(patch_size=32),
    "vit_base_patch16_384": dict(img_size=384),
    "vit_base_patch32_384": dict(patch_size=32, img_size=384),
    "vit_large_patch16_224": dict(embed_dim=1024, depth=24, num_heads=16),
    "vit_large_patch32_224": dict(embed_dim=1024, depth=24, num_heads=16, patch_size=32),
    "vit_large_patch16_384": dict(embed_dim=1024, depth=24, num_heads=16, img_size=384),
    "vit_huge_patch14_224": dict(embed_dim=1280, depth=32, num_heads=16, patch_size=14),
    # the hybrid: ResNet-50's first three stages (output stride 16), ViT-B on its 14x14 map
    "vit_base_r50_s16_224": dict(**_R50),
    "vit_base_r50_s16_384": dict(**_R50, img_size=384),
    # 32x32 inputs; vit_cifar_tiny is also the benchmark's "vit-tiny"; vit_cifar_mini is the
    # CPU recipe's model (README, REPRODUCTION.md): a CIFAR-10 run in under an hour on 2 cores
    "vit_cifar_mini": dict(**_CIFAR, patch_size=4, embed_dim=96, depth=4, num_heads=3),
    "vit_cifar_tiny": dict(**_CIFAR, patch_size=4, embed_dim=192, depth=9, num_heads=3),
    "vit_cifar_tiny_patch2": dict(**_CIFAR, patch_size=2, embed_dim=192, depth=9, num_heads=3),
    "vit_cifar_small": dict(**_CIFAR, patch_size=4, embed_dim=384, depth=9, num_heads=6),
    "vit_cifar_small_patch2": dict(**_CIFAR, patch_size=2, embed_dim=384, depth=9, num_heads=6),
    "vit_cifar_base": dict(**_CIFAR, patch_size=4, embed_dim=768, depth=12, num_heads=12),
    # vit_cifar_mini's hybrid twin at about its compute: a stride-2 stem and two stages leave the
    # same 8x8 map, and one block fewer pays for the convolutions (REPRODUCTION.md)
    "vit_hybrid_cifar_mini": dict(**_CIFAR, **{**_CIFAR_R, "hybrid_layers": (1, 1), "hybrid_stem_stride": 2},
                                  embed_dim=96, depth=3, num_heads=3),
    "vit_hybrid_cifar_tiny": dict(**_CIFAR, **_CIFAR_R, embed_dim=192, depth=9, num_heads=3),
    "vit_hybrid_cifar_small": dict(**_CIFAR, **_CIFAR_R, embed_dim=384, depth=9, num_heads=6),
}


def list_models(pattern: str = "*") -> list[str]:
    """The registered model names matching a shell-style pattern, sorted."""
    return sorted(n for n in MODELS if fnmatch.fnmatch(n, pattern))


def model_name(cfg: ViTConfig) -> str | None:
    """The registered name of the variant ``cfg`` is, whatever its image size, channels and classes; None when
    it is none of them (a variant with changed fields)."""
    free = ("img_size", "in_chans", "num_classes")
    mine = {k: v for k, v in cfg.to_dict().items() if k not in free}
    for name in MODELS:
        if {k: v for k, v in get_config(name).to_dict().items() if k not in free} == mine:
            return name
    return None


def get_config(name: str, **overrides) -> ViTConfig:
    """The config of a named variant with some fields changed."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(list_models())}")
    check_fields(overrides)
    return ViTConfig(**{**MODELS[name], **overrides})
