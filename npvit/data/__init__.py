"""Data for npvit: data sets by name (download, verify, cache), batching and augmentation.

    from npvit.data import load_dataset, Loader, Augment, DataError
    train = load_dataset("cifar10", "train", data_dir="~/data")   # Dataset: x (N, C, H, W) uint8, y (N,)
    loader = Loader(train.x, train.y, batch_size=128, seed=0)
    augment = Augment(train.mean, train.std, train.num_classes, crop_padding=4, flip=True)
    for batch in loader.epoch_batches():
        inputs, targets = augment(batch.x, batch.y, batch.rng)  # (B, C, H, W) float32, (B, K) float32

Every problem the user can fix raises ``DataError`` with a one-line message.
"""
from . import augment_kernel  # noqa: F401  (registers the fused RandAugment kernel that augment.py asks for)
from .augment import (RAND_AUGMENT_OPS, Augment, affine, affine_matrix, autocontrast, brightness, color, contrast,
                      cutmix, hflip, mix, mixup, normalize, one_hot, posterize, rand_augment, random_crop,
                      random_erasing, random_flip, resize, sharpness, solarize)
from .core import DataError, Dataset, array_module, seed_generator
from .datasets import DATASETS, decode_images, default_cache_dir, load_dataset, synthetic
from .download import download, extract, md5sum, resolve_url
from .loader import Batch, Loader

__all__ = [
    "DATASETS", "RAND_AUGMENT_OPS", "Augment", "Batch", "DataError", "Dataset", "Loader", "affine", "affine_matrix",
    "array_module", "autocontrast", "brightness", "color", "contrast", "cutmix", "decode_images", "default_cache_dir",
    "download", "extract", "hflip", "load_dataset", "md5sum", "mix", "mixup", "normalize", "one_hot", "posterize",
    "rand_augment", "random_crop", "random_erasing", "random_flip", "resize", "resolve_url", "seed_generator",
    "sharpness", "solarize", "synthetic",
]
