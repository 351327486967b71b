"""Every differentiable op, as functions on Tensors (the functional API, like ``torch.nn.functional``).

Primitive ops (elementwise, reductions, shape, matmul) compose into anything; the fused
ops (linear, layer_norm, gelu, softmax, attention, conv2d, ...) are single Functions with
a hand-derived backward, which is what makes the ViT fast and its gradients readable.
"""
from .attention import *  # noqa: F401,F403
from .conv import *  # noqa: F401,F403
from .elementwise import (  # noqa: F401
    add, astype, div, exp, greater, log, maximum, mul, neg, pow, relu, sqrt, sub, tanh, to_device_op, where,
)
from .fused import *  # noqa: F401,F403
from .linalg import matmul  # noqa: F401
from .reduce import max, mean, sum, var  # noqa: F401
from .resize import *  # noqa: F401,F403
from .shape import (  # noqa: F401
    broadcast_to, concatenate, getitem, pad, permute, reshape, split, stack, swapaxes, transpose, unbind,
)
