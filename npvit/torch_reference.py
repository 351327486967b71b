"""The ViT again in plain PyTorch: the twin that the benchmark times and the tests compare logits with.

Pre-norm blocks, fused q/k/v, ``F.scaled_dot_product_attention`` as timm uses it, exact
or tanh GELU as the config says, [class] token or average pooling, 1-D position
embeddings, the pre-training head: what a ``ViTConfig`` without the hybrid, other
position embeddings, masked patch prediction or dropout describes (``torch_unsupported``
names what is missing). Parameter names are timm's, as npvit's, so
``model.load_state_dict`` takes npvit's state dict converted with ``torch.from_numpy``.
PyTorch is imported only when a twin is built.
"""
from __future__ import annotations


def torch_unsupported(cfg) -> str | None:
    """Why the PyTorch twin cannot mirror ``cfg``, or None when it can."""
    if cfg.hybrid_layers is not None:
        return "the hybrid's ResNet stem"
    if cfg.pos_embed not in ("1d", "none") or cfg.placement != "input":
        return f"pos_embed={cfg.pos_embed!r} at {cfg.placement!r}"
    if cfg.mpp_target is not None or cfg.mask_token:
        return "masked patch prediction"
    rates = ("drop_rate", "pos_drop_rate", "proj_drop_rate", "attn_drop_rate", "drop_path_rate")
    if any(getattr(cfg, r) for r in rates):
        return "dropout"
    return None


def build_torch_vit(cfg):
    """The config's ViT in plain torch.nn, with timm's parameter names (so npvit's state dict loads)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv = nn.Linear(cfg.embed_dim, 3 * cfg.embed_dim, bias=cfg.qkv_bias)
            self.proj = nn.Linear(cfg.embed_dim, cfg.embed_dim)

        def forward(self, x):
            B, N, D = x.shape
            H = cfg.num_heads
            q, k, v = self.qkv(x).reshape(B, N, 3, H, D // H).permute(2, 0, 3, 1, 4).unbind(0)  # (B, H, N, d)
            x = F.scaled_dot_product_attention(q, k, v)
            return self.proj(x.transpose(1, 2).reshape(B, N, D))

    class Mlp(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(cfg.embed_dim, cfg.mlp_hidden_dim)
            self.act = nn.GELU(approximate=cfg.gelu_approximate)
            self.fc2 = nn.Linear(cfg.mlp_hidden_dim, cfg.embed_dim)

        def forward(self, x):
            return self.fc2(self.act(self.fc1(x)))

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm1 = nn.LayerNorm(cfg.embed_dim, eps=1e-6)
            self.attn = Attention()
            self.norm2 = nn.LayerNorm(cfg.embed_dim, eps=1e-6)
            self.mlp = Mlp()

        def forward(self, x):
            x = x + self.attn(self.norm1(x))
            return x + self.mlp(self.norm2(x))

    class PatchEmbed(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Conv2d(cfg.in_chans, cfg.embed_dim, cfg.patch_size, stride=cfg.patch_size)

        def forward(self, x):
            return self.proj(x).flatten(2).transpose(1, 2)  # (B, N, D)

    class PreLogits(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(cfg.embed_dim, cfg.representation_size)

        def forward(self, x):
            return torch.tanh(self.fc(x))

    class VisionTransformer(nn.Module):
        def __init__(self):
            super().__init__()
            D, prefix = cfg.embed_dim, cfg.num_prefix_tokens
            self.patch_embed = PatchEmbed()
            self.cls_token = nn.Parameter(torch.zeros(1, 1, D)) if cfg.class_token else None
            if cfg.pos_embed == "1d":
                self.pos_embed = nn.Parameter(torch.randn(1, cfg.num_patches + prefix, D) * 0.02)
            self.blocks = nn.Sequential(*(Block() for _ in range(cfg.depth)))
            self.norm = nn.Identity() if cfg.use_fc_norm else nn.LayerNorm(D, eps=1e-6)
            self.fc_norm = nn.LayerNorm(D, eps=1e-6) if cfg.use_fc_norm else nn.Identity()
            self.pre_logits = PreLogits() if cfg.representation_size else nn.Identity()
            self.head = nn.Linear(cfg.representation_size or D, cfg.num_classes) if cfg.num_classes else nn.Identity()

        def forward(self, x):
            x = self.patch_embed(x)
            if self.cls_token is not None:
                x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)  # (B, N', D)
            if cfg.pos_embed == "1d":
                x = x + self.pos_embed
            x = self.norm(self.blocks(x))
            x = x[:, cfg.num_prefix_tokens:].mean(dim=1) if cfg.global_pool == "avg" else x[:, 0]  # (B, D)
            return self.head(self.pre_logits(self.fc_norm(x)))

    return VisionTransformer()
