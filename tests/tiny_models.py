"""The tiny float64 ViT the model and checkpoint tests share."""
import numpy as np

from autograd import backend, ops, optim
from npvit import VisionTransformer

TINY = dict(img_size=8, patch_size=4, embed_dim=8, depth=2, num_heads=2, num_classes=3)


def tiny(seed=0, **fields):
    """A float64 tiny model with every parameter random (N(0, 0.5^2)), in eval mode."""
    with backend.default_dtype_as(np.float64):
        model = VisionTransformer(**{**TINY, **fields}, generator=np.random.default_rng(seed))
    rng = np.random.default_rng(seed + 1)
    for p in model.parameters():
        p.data[...] = rng.normal(0.0, 0.5, p.shape)
    return model.eval()


def adamw_steps(model, x, y, seed, steps=2):
    """The losses of ``steps`` AdamW steps (lr 1e-2) of ``model`` on images x and labels y, then its gradients and
    parameters after them; dropout's masks drawn after ``manual_seed(seed)``."""
    opt = optim.AdamW(model.parameters(), lr=1e-2)
    backend.manual_seed(seed)
    out = []
    for _ in range(steps):
        opt.zero_grad()
        loss = ops.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        out.append(loss.data)
    return out + [p.grad for p in model.parameters()] + [p.data for p in model.parameters()]
