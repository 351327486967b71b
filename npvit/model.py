"""The Vision Transformer of Dosovitskiy et al. (2020), "An Image is Worth 16x16 Words", on ``autograd``.

The model of the paper's Sec. 3.1, equations (1)-(4):

    z_0 = [x_class; x_p^1 E; ...; x_p^N E] + E_pos      patches, projected; [class] token; positions
    z'_l = MSA(LN(z_{l-1})) + z_{l-1}                    l = 1..L
    z_l = MLP(LN(z'_l)) + z'_l
    y = head(LN(z_L^0))                                  the [class] token's output

with every choice the paper ablates selectable in ``ViTConfig`` (``npvit/config.py``):
the position embedding's kind and where it is added (Appendix D.4, ``pos_embed.py``),
[class] token or global average pooling (Appendix D.3), the pre-training head with its
tanh layer or the zero-initialised linear fine-tuning head (Sec. 3.1 / 3.2), the hybrid's
ResNet stem (``hybrid.py``), masked patch prediction (Sec. 4.6), dropout, attention
dropout and stochastic depth.

Parameter names are timm's ``vision_transformer.py``, so state dicts move one-to-one:
``cls_token`` (1, 1, D), ``pos_embed`` (1, N+1, D), ``patch_embed.proj.{weight (D, C, P, P),
bias}``, ``blocks.{i}.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}.{weight, bias}``,
``norm`` (with ``global_pool="avg"``: ``fc_norm`` instead, after pooling, as timm),
``pre_logits.fc`` (the tanh layer, old timm's name), ``head``; the hybrid's ResNet under
``patch_embed.backbone``. Names of our own for the variants timm lacks:

- ``pos_embed_row`` (rows, D/2), ``pos_embed_col`` (cols, D/2): the 2-D position embedding;
- ``rel_pos_embed_1d`` (2 N - 1, D): the relative one of the paper (raster offsets);
- ``rel_pos_embed`` (2 rows - 1, 2 cols - 1, D): the 2-D relative one;
- with ``pos_embed_at="every_block"`` these (and ``pos_embed``) live on each block,
  ``blocks.{i}.pos_embed``; with ``"input"`` and ``"every_block_shared"`` on the model;
- ``mask_token`` (1, 1, D) and ``mpp_head`` (D, outputs): masked patch prediction.

The model's methods each return one kind of thing: ``model(images)`` the logits,
``forward_features`` the encoded tokens, ``forward_head`` logits from tokens,
``forward_intermediates`` the logits with every block's tokens and attention weights (for
``npvit/analysis.py``), and ``forward_mpp`` the masked-patch predictions of corrupted
images; the corruption, targets and loss of masked patch prediction are ``npvit/mpp.py``.
"""
from __future__ import annotations

import numpy as np

from autograd import backend, init, no_grad
from autograd.nn import Dropout, DropPath, GELU, Identity, LayerNorm, Linear, Module, ModuleList, Parameter
from autograd.ops import (
    attention_weights, concatenate, layer_norm_linear, linear, scaled_dot_product_attention, unbind, where,
)
from autograd.tensor import Tensor

from . import mpp
from . import pos_embed as pe
from .config import ViTConfig, get_config
from .hybrid import ResNetBackbone

LN_EPS = 1e-6


class PatchProjection(Module):
    """The patch embedding matrix E: each P x P patch, flattened, times E, plus a bias.

    The weight is stored (D, C, P, P) like the convolution kernel timm uses, so timm and
    Google weights load unchanged, but applied as what it is: cut the image into
    patches, flatten each to C P P numbers, one matrix product.
    """

    def __init__(self, in_chans, embed_dim, patch_size):
        super().__init__()
        self.patch_size = patch_size
        dtype = backend.default_dtype()
        self.weight = Parameter(np.zeros((embed_dim, in_chans, patch_size, patch_size), dtype=dtype))
        self.bias = Parameter(np.zeros((embed_dim,), dtype=dtype))

    def forward(self, x):
        B, C, H, W = x.shape
        p = self.patch_size
        gh, gw = H // p, W // p
        x = x.reshape(B, C, gh, p, gw, p).transpose(0, 2, 4, 1, 3, 5)   # (B, gh, gw, C, P, P)
        x = x.reshape(B, gh * gw, C * p * p)                                # (B, N, C P P)
        return linear(x, self.weight.reshape(self.weight.shape[0], -1), self.bias)  # (B, N, D)


class PatchEmbed(Module):
    """Image (B, C, H, W) to patch embeddings (B, N, D), through the hybrid's ResNet if there is one."""

    def __init__(self, cfg: ViTConfig, generator=None):
        super().__init__()
        channels = cfg.in_chans
        if cfg.hybrid_layers is not None:
            self.backbone = ResNetBackbone(
                cfg.in_chans, cfg.hybrid_layers, cfg.hybrid_width, cfg.hybrid_stem_kernel, cfg.hybrid_stem_stride,
                cfg.hybrid_stem_pool, cfg.hybrid_groups, cfg.hybrid_convention, generator,
            )
            channels = self.backbone.out_channels
        else:
            self.backbone = None
        self.proj = PatchProjection(channels, cfg.embed_dim, cfg.patch_size)

    def forward(self, x):
        if self.backbone is not None:
            x = self.backbone(x)                                            # (B, C', H', W')
        return self.proj(x)                                                 # (B, N, D)


class Attention(Module):
    """Multi-head self-attention with one fused q/k/v projection, as timm.

    Attention dropout draws its masks from ``generator`` when one is set (as ``Dropout``
    does; the trainer sets one per step), else from the global generator.
    """

    def __init__(self, dim, num_heads, qkv_bias=True, attn_drop=0.0, proj_drop=0.0, generator=None):
        super().__init__()
        self.num_heads = num_heads
        self.attn_drop, self.generator = attn_drop, generator
        self.qkv = Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = Linear(dim, dim)
        self.proj_drop = Dropout(proj_drop)

    def _heads(self, x, norm=None):
        """Queries, keys and values (B, H, N, d) each of tokens x (B, N, D), normalised first by ``norm`` if given."""
        B, N, D = x.shape
        H = self.num_heads
        qkv = _normed_linear(x, norm, self.qkv).reshape(B, N, 3, H, D // H)  # (B, N, 3, H, d)
        # unbinding before the transpose keeps the gradient of qkv one contiguous write
        return [t.transpose(0, 2, 1, 3) for t in unbind(qkv, axis=2)]       # (B, H, N, d) each

    def forward(self, x, position_bias=None, residual=None, norm=None, queries=None):
        """``position_bias``: None, or a function of the queries (B, H, N, d) giving logits to add (B, H, N, N).

        ``residual`` (B, N, D): returned plus the output, the add folded into the projection
        (one kernel with its bias on a GPU) unless dropout comes between them. ``norm`` (a
        LayerNorm): applied to x first, as one op with the q/k/v projection (``_normed_linear``).
        ``queries`` (an int): the output (B, queries, D) of the first ``queries`` tokens only,
        attending to all N (``residual`` then (B, queries, D) too), for the last block of a
        model that reads only its [class] token (``VisionTransformer.forward``).
        """
        B, N, D = x.shape
        q, k, v = self._heads(x, norm)
        if queries is not None:
            q = q[:, :, :queries]                                           # (B, H, queries, d)
        bias = None if position_bias is None else position_bias(q)          # (B, H, N, N)
        out = scaled_dot_product_attention(
            q, k, v, bias=bias, dropout_p=self.attn_drop, training=self.training, generator=self.generator,
        )
        out = out.transpose(0, 2, 1, 3).reshape(B, q.shape[2], D)           # (B, N or queries, D)
        if residual is not None and not _dropping(self.proj_drop):
            return linear(out, self.proj.weight, self.proj.bias, residual=residual)
        out = self.proj_drop(self.proj(out))
        return out if residual is None else residual + out

    @no_grad()
    def weights(self, x, position_bias=None):
        """The attention weights (B, H, N, N) of tokens x, before dropout, as a Tensor without history."""
        q, k, _ = self._heads(x)
        return attention_weights(q, k, None if position_bias is None else position_bias(q))


class Mlp(Module):
    """Linear, GELU, dropout, linear, dropout."""

    def __init__(self, dim, hidden, drop=0.0, approximate="none"):
        super().__init__()
        self.fc1 = Linear(dim, hidden)
        self.act = GELU(approximate)
        self.drop1 = Dropout(drop)
        self.fc2 = Linear(hidden, dim)
        self.drop2 = Dropout(drop)

    def forward(self, x, residual=None, norm=None):
        """(B, N, D) -> (B, N, D), plus ``residual`` if given, x normalised first by ``norm`` if given (as Attention's).

        Without dropout, fc1's bias and GELU, and fc2's bias and the residual add, are each
        one op with their layer's GEMM (one kernel after it on a GPU).
        """
        if _dropping(self.drop1) or _dropping(self.drop2):
            h = self.act(_normed_linear(x, norm, self.fc1))                 # (B, N, hidden)
            out = self.drop2(self.fc2(self.drop1(h)))                       # (B, N, D)
            return out if residual is None else residual + out
        gelu = "gelu_tanh" if self.act.approximate == "tanh" else "gelu"
        h = _normed_linear(x, norm, self.fc1, activation=gelu)              # (B, N, hidden)
        return linear(h, self.fc2.weight, self.fc2.bias, residual=residual)  # (B, N, D)


class Block(Module):
    """A pre-LayerNorm encoder block: x + MSA(LN(x)), then x + MLP(LN(x)), each branch with stochastic depth."""

    def __init__(self, cfg: ViTConfig, drop_path=0.0):
        super().__init__()
        self.norm1 = LayerNorm(cfg.embed_dim, eps=LN_EPS)
        self.attn = Attention(cfg.embed_dim, cfg.num_heads, cfg.qkv_bias, cfg.attn_drop_rate, cfg.proj_drop_rate)
        self.drop_path1 = DropPath(drop_path)
        self.norm2 = LayerNorm(cfg.embed_dim, eps=LN_EPS)
        self.mlp = Mlp(cfg.embed_dim, cfg.mlp_hidden_dim, cfg.proj_drop_rate, cfg.gelu_approximate)
        self.drop_path2 = DropPath(drop_path)

    def forward(self, x, position_bias=None, queries=None):
        """Tokens (B, N, D) to (B, N, D); with ``queries`` (an int) the first ``queries`` tokens' outputs
        (B, queries, D) only: their attention over all N tokens, then their MLP (see ``Attention.forward``)."""
        kept = x if queries is None else x[:, :queries]                     # the tokens whose outputs are made
        # each layer norm goes into its branch's first layer as one op (``_normed_linear``)
        if _dropping(self.drop_path1) or _dropping(self.drop_path2):  # stochastic depth drops whole branches
            x = kept + self.drop_path1(self.attn(x, position_bias, norm=self.norm1, queries=queries))
            return x + self.drop_path2(self.mlp(x, norm=self.norm2))
        # the same sums with each residual add inside its branch's last layer (one kernel on a GPU)
        x = self.attn(x, position_bias, residual=kept, norm=self.norm1, queries=queries)
        #   z'_l = MSA(LN(z_{l-1})) + z_{l-1}
        return self.mlp(x, residual=x, norm=self.norm2)                     # z_l = MLP(LN(z'_l)) + z'_l


def _normed_linear(x, norm, layer, activation=None):
    """``layer`` (a Linear) of ``norm(x)`` (a LayerNorm, or None for x itself), with ``linear``'s ``activation``.

    With a norm, ``layer_norm_linear``: the same numbers as the two layers, and on the CPU
    the normalised tokens (B, N, D) are not kept for the backward, which remakes them.
    """
    if norm is None:
        return linear(x, layer.weight, layer.bias, activation=activation)
    return layer_norm_linear(x, norm.weight, norm.bias, layer.weight, layer.bias, activation=activation, eps=norm.eps)


def _dropping(drop) -> bool:
    """Whether a Dropout or DropPath module drops anything now: training, with p > 0."""
    return drop.training and drop.p > 0


class PreLogits(Module):
    """The pre-training head's hidden layer: linear then tanh (``pre_logits.fc``)."""

    def __init__(self, dim, size):
        super().__init__()
        self.fc = Linear(dim, size)

    def forward(self, x):
        return self.fc(x).tanh()


class VisionTransformer(Module):
    """The ViT: ``model(images)`` gives logits (B, num_classes).

    Build with ``VisionTransformer(cfg)``, ``VisionTransformer(**fields)`` or, by name,
    ``npvit.create_model``. Initialisation follows the reference implementations:
    truncated-normal (std 0.02) position embeddings, [class] and mask tokens; xavier-uniform
    linear weights (q, k and v each as its own D x D map), zero biases except the MLP's
    (N(0, 1e-6)); LeCun-normal patch projection and pre-logits layer; zero head. Draws come
    from ``generator`` (a NumPy/CuPy Generator), else from the global one.
    """

    def __init__(self, cfg: ViTConfig | None = None, *, generator=None, **fields):
        super().__init__()
        cfg = cfg or ViTConfig()
        if fields:
            cfg = cfg.replace(**fields)
        self.cfg = cfg
        D = cfg.embed_dim
        dtype = backend.default_dtype()
        self.patch_embed = PatchEmbed(cfg, generator)
        self.cls_token = Parameter(np.zeros((1, 1, D), dtype=dtype)) if cfg.class_token else None
        self.mask_token = Parameter(np.zeros((1, 1, D), dtype=dtype)) if cfg.mask_token else None
        self.pos_drop = Dropout(cfg.pos_drop_rate)
        rates = np.linspace(0.0, cfg.drop_path_rate, cfg.depth)
        self.blocks = ModuleList(Block(cfg, float(r)) for r in rates)
        for owner in self._position_owners():
            for name, p in pe.make_params(cfg.pos_embed, cfg.grid_size, D, cfg.num_prefix_tokens).items():
                setattr(owner, name, p)
        self._set_relative_index()
        self.norm = Identity() if cfg.use_fc_norm else LayerNorm(D, eps=LN_EPS)
        self.fc_norm = LayerNorm(D, eps=LN_EPS) if cfg.use_fc_norm else Identity()
        self.head_drop = Dropout(cfg.drop_rate)
        rep = cfg.representation_size
        self.pre_logits = PreLogits(D, rep) if rep else Identity()
        self.head = Linear(rep or D, cfg.num_classes) if cfg.num_classes else Identity()
        self.mpp_head = Linear(D, mpp.head_width(cfg)) if cfg.mpp_target else None
        self._init_weights(generator)

    # --- construction helpers -------------------------------------------------------
    def _position_owners(self) -> list:
        """The modules holding position parameters: every block, or the model itself."""
        return list(self.blocks) if self.cfg.placement == "every_block" else [self]

    def _position_owner(self, i):
        """The module whose position parameters block ``i`` uses, or None when it gets none."""
        cfg = self.cfg
        if cfg.pos_embed == "none" or (cfg.placement == "input" and i > 0):
            return None
        return self.blocks[i] if cfg.placement == "every_block" else self

    def _set_relative_index(self):
        """(Re)build the relative-offset gather index for the current grid, on the parameters' device."""
        if self.cfg.pos_embed in ("relative", "relative_2d"):
            index = pe.relative_index(self.cfg.grid_size, self.cfg.pos_embed)
            device = self.patch_embed.proj.weight.device
            self.register_buffer("rel_pos_index", backend.to_device(index, device), persistent=False)

    def _init_weights(self, generator):
        for name, m in self.named_modules():
            if isinstance(m, Linear):
                if name == "head":
                    init.zeros_(m.weight)
                elif name == "pre_logits.fc":
                    init.lecun_normal_(m.weight, generator)
                elif name.endswith("attn.qkv"):
                    # the original has separate q, k, v maps, each xavier over D x D
                    bound = (6.0 / (2 * m.in_features)) ** 0.5
                    init.uniform_(m.weight, -bound, bound, generator)
                else:
                    init.xavier_uniform_(m.weight, generator=generator)
                if m.bias is not None:
                    if ".mlp." in f".{name}.":
                        init.normal_(m.bias, std=1e-6, generator=generator)
                    else:
                        init.zeros_(m.bias)
            elif isinstance(m, PatchProjection):
                init.lecun_normal_(m.weight, generator)
                init.zeros_(m.bias)
        for name, p in self.named_parameters():
            if name.rsplit(".", 1)[-1] in pe.ALL_PARAM_NAMES + ("cls_token", "mask_token"):
                init.trunc_normal_(p, std=0.02, generator=generator)

    @property
    def device(self) -> str:
        """Where the parameters live."""
        return self.patch_embed.proj.weight.device

    @property
    def dtype(self):
        """The parameters' floating dtype."""
        return self.patch_embed.proj.weight.dtype

    # --- forward ----------------------------------------------------------------------
    def _as_input(self, x) -> Tensor:
        """Images as a Tensor in the model's dtype, checked against the config."""
        if not isinstance(x, Tensor):
            x = Tensor(x, device=self.device)
        cfg = self.cfg
        if x.ndim != 4:
            raise ValueError(f"expected images (B, C, H, W), got shape {tuple(x.shape)}")
        if x.shape[1] != cfg.in_chans:
            raise ValueError(f"images have {x.shape[1]} channels but the model takes in_chans={cfg.in_chans}")
        hw = tuple(x.shape[2:])
        if hw != cfg.image_hw:
            p = cfg.effective_patch_size
            why = f", and {hw} is not divisible by the patch size {p}" if hw[0] % p or hw[1] % p else ""
            raise ValueError(
                f"image size {hw} does not match the model's img_size {cfg.image_hw}{why}; "
                "resize the position embeddings first with model.set_img_size(...)"
            )
        return x.astype(self.dtype) if x.dtype != self.dtype else x

    def _corrupt(self, x, mask, replace_with):
        """Corrupt patch embeddings x (B, N, D) for masked patch prediction (see ``forward_features``)."""
        B, N, D = x.shape
        xp = x.xp
        if replace_with is not None:
            src = _array_on(replace_with, x.device).reshape(-1)
            if src.size != B * N or int(src.max()) >= B * N or int(src.min()) < -1:
                raise ValueError(f"replace_with must be (B, N) = {(B, N)} with values in [-1, {B * N})")
            src = xp.where(src < 0, xp.arange(B * N), src)
            x = x.reshape(B * N, D)[src].reshape(B, N, D)                  # (B, N, D), other patches' embeddings
        if mask is not None:
            if self.mask_token is None:
                raise ValueError("a mask was given but the model has no mask token; build it with mask_token=True")
            m = _array_on(mask, x.device)
            if m.shape != (B, N):
                raise ValueError(f"mask must be (B, N) = {(B, N)}, not {m.shape}")
            x = where(Tensor(m.astype(bool)[:, :, None]), self.mask_token, x)  # (B, N, D)
        return x

    def _embed(self, x, mask=None, replace_with=None):
        """Images (B, C, H, W) to the token sequence (B, N', D) before positions: patches, corrupted
        for masked patch prediction when asked (see ``forward_features``), [class] token first."""
        x = self.patch_embed(self._as_input(x))                             # (B, N, D)
        if mask is not None or replace_with is not None:
            x = self._corrupt(x, mask, replace_with)
        if self.cls_token is None:
            return x
        cls = self.cls_token.broadcast_to((x.shape[0], 1, self.cfg.embed_dim))
        return concatenate([cls, x], axis=1)                                # (B, N', D)

    def _block_input(self, i, x):
        """Block i's input and attention bias: x with the position embedding block i gets (``pos_embed.apply``),
        then dropout wherever position embeddings were added (the paper's Appendix B.1: "directly after
        adding positional- to patch embeddings"), and before the first block in any case, as timm."""
        cfg = self.cfg
        owner = self._position_owner(i)
        x, bias = pe.apply(cfg.pos_embed, owner, x, getattr(self, "rel_pos_index", None), cfg.num_prefix_tokens)
        added = owner is not None and cfg.pos_embed in ("1d", "2d")
        return (self.pos_drop(x) if i == 0 or added else x), bias

    def forward_features(self, x, mask=None, replace_with=None):
        """The encoder: images (B, C, H, W) to normalised tokens (B, N', D), [class] token first.

        For masked patch prediction the patch embeddings can be corrupted before the
        [class] token and positions are added:

        - ``replace_with`` (B, N) ints: where >= 0, that patch's embedding is replaced by
          the embedding of patch ``replace_with`` of the flattened batch (index b * N + n),
          i.e. by another random patch; -1 keeps it.
        - ``mask`` (B, N) bools: where True the embedding becomes the learned ``mask_token``
          (applied after ``replace_with``, so it wins where both are set).
        """
        return self._encode(self._embed(x, mask, replace_with))

    def _encode(self, x, class_token_only=False):
        """The blocks and the final norm over tokens x (B, N', D) before positions.

        ``class_token_only``: the last block makes the [class] token's output alone
        (B, 1, D), all that ``forward_head`` reads with ``global_pool="token"``: the other
        tokens' outputs of the last block reach no logit, so skipping them gives the same
        logits and gradients (to rounding) for 9 of the block's 12 D^2 multiply-adds a
        token (its output projection and MLP) and its attention's other queries; the q/k/v
        projection stays one product over every token, keys and values needing them all.
        A last block with a relative position bias runs whole: its table then still gets
        its (zero) gradient, so the optimizer treats it as before.
        """
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            x, bias = self._block_input(i, x)
            if class_token_only and i == last and bias is None:
                x = block(x, queries=self.cfg.num_prefix_tokens)            # (B, 1, D)
            else:
                x = block(x, bias)                                          # (B, N', D)
        return self.norm(x)

    def forward_intermediates(self, x, attention=True):
        """Logits (B, num_classes) and what led to them, for analysis: ``(logits, intermediates)``.

        ``intermediates["tokens"]``: the depth + 1 token sequences (B, N', D), the input of
        the first block (positions added) and each block's output, in the graph like the
        logits; ``intermediates["attention"]``: every block's attention weights
        (B, H, N', N') without history (an empty list with ``attention=False``).
        """
        x = self._embed(x)
        tokens, maps = [], []
        for i, block in enumerate(self.blocks):
            x, bias = self._block_input(i, x)
            if i == 0:
                tokens.append(x)
            if attention:
                maps.append(block.attn.weights(block.norm1(x), bias))
            x = block(x, bias)
            tokens.append(x)
        return self.forward_head(self.norm(x)), {"tokens": tokens, "attention": maps}

    def forward_head(self, x, pre_logits=False):
        """Pool the tokens (B, N', D) ([class] token or the patches' mean) and classify; ``pre_logits``
        stops before the last linear layer."""
        if self.cfg.global_pool == "avg":
            x = x[:, self.cfg.num_prefix_tokens:].mean(axis=1)             # (B, D)
        else:
            x = x[:, 0]                                                     # (B, D)
        x = self.pre_logits(self.head_drop(self.fc_norm(x)))               # (B, D or representation_size)
        return x if pre_logits else self.head(x)                           # (B, num_classes)

    def forward(self, x):
        """Logits (B, num_classes) of images (B, C, H, W) (NumPy/CuPy array or Tensor).

        ``forward_head(forward_features(x))``; with [class]-token pooling the last block
        makes that token's output alone (``_encode``).
        """
        return self.forward_head(self._encode(self._embed(x), class_token_only=self.cfg.global_pool == "token"))

    def forward_mpp(self, x, mask=None, replace_with=None):
        """Masked patch prediction: every patch position's prediction of its target.

        Images (B, C, H, W), optionally corrupted (see ``forward_features``). Returns a
        Tensor of logits (B, N, K) for ``mpp_target="mean_color"`` (K = ``cfg.mpp_num_colors``,
        512 for RGB), logits (B, N, mpp_grid^2, K) for ``"patch_color"``, or pixel values
        (B, N, C P P) for ``"pixels"``; compare with ``mpp_targets(images)`` at the
        corrupted positions.
        """
        if self.mpp_head is None:
            raise ValueError("the model has no masked-patch-prediction head; build it with mpp_target=...")
        x = self.forward_features(x, mask=mask, replace_with=replace_with)
        x = self.fc_norm(x[:, self.cfg.num_prefix_tokens:])                # (B, N, D)
        out = self.mpp_head(x)                                             # (B, N, outputs)
        if self.cfg.mpp_target == "patch_color":
            B, N = out.shape[:2]
            out = out.reshape(B, N, self.cfg.mpp_grid ** 2, self.cfg.mpp_num_colors)  # (B, N, cells, colours)
        return out

    def mpp_targets(self, images):
        """Masked-patch-prediction targets of images (B, C, H, W) with values in [0, 1]; see ``mpp_targets``."""
        return mpp.mpp_targets(images, self.cfg)

    # --- changing the model ------------------------------------------------------------
    def reset_classifier(self, num_classes):
        """The fine-tuning head swap (Sec. 3.2): a zero-initialised linear head for ``num_classes``
        (0: none), and every pre-training head dropped, the tanh layer and masked patch
        prediction's head and [mask] token."""
        self.cfg = self.cfg.replace(num_classes=num_classes, representation_size=None, mpp_target=None,
                                    mask_token=False)
        self.pre_logits = Identity()
        self.mpp_head = self.mask_token = None
        if num_classes:
            with backend.default_dtype_as(self.dtype):
                head = Linear(self.cfg.embed_dim, num_classes)
            init.zeros_(head.weight)
            init.zeros_(head.bias)
            self.head = head.to(self.device)
        else:
            self.head = Identity()
        return self

    def set_img_size(self, img_size, interpolation="bicubic", antialias=False):
        """Take images of another size: interpolate every position embedding to the new patch
        grid (``interpolation`` "bilinear" or "bicubic", ``antialias`` as ``F.interpolate``'s),
        keeping the [class] embedding apart.

        The position Parameters stay the same objects, their data rebound to the new shape
        (and their gradients dropped): an optimizer's flat buffers gather them again
        (``FlatParameters.attach``), but its state of them keeps the old shape, so resize that
        too (the trainer's low-resolution stage does) or build the optimizer afterwards.
        """
        old, new = self.cfg, self.cfg.replace(img_size=img_size)
        for owner in self._position_owners():
            for name in pe.PARAM_NAMES[old.pos_embed]:
                p = getattr(owner, name)
                p.data = pe.resize(name, p.data, old.grid_size, new.grid_size, old.num_prefix_tokens,
                                   interpolation, antialias)
                p.grad = None
        self.cfg = new
        self._set_relative_index()
        return self


def _array_on(a, device):
    """An array-like (list, NumPy or CuPy array) as an array on ``device``."""
    return backend.to_device(a if backend.is_gpu_array(a) else np.asarray(a), device)


def create_model(name: str, *, generator=None, **overrides) -> VisionTransformer:
    """A VisionTransformer by registered name (see ``list_models``), any config field overridden by keyword."""
    return VisionTransformer(get_config(name, **overrides), generator=generator)
