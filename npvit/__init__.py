"""npvit: the Vision Transformer of Dosovitskiy et al. (2020), written on ``autograd``."""
