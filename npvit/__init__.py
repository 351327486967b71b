"""npvit: the Vision Transformer of Dosovitskiy et al. (2020), written on ``autograd``.

    model = npvit.create_model("vit_cifar_tiny")              # or any name in npvit.list_models()
    logits = model(images)                                     # (B, C, H, W) array -> (B, classes) Tensor
    npvit.save_checkpoint("ckpt.npz", model, step=1000)
    model = npvit.load_checkpoint("ViT-B_16.npz", img_size=384, num_classes=10)  # ours, timm's or Google's
"""
import autograd  # noqa: F401  first, before NumPy: it sets OpenBLAS's thread timeout (autograd/parallel.py)
from .checkpoint import Checkpoint, load_checkpoint, read_checkpoint, save_checkpoint  # noqa: F401
from .config import MODELS, ViTConfig, config_fields, get_config, list_models  # noqa: F401
from .model import VisionTransformer, create_model  # noqa: F401
from .mpp import mpp_corruption, mpp_targets  # noqa: F401
