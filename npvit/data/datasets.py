"""Data sets by name, read from their official files into one in-memory ``Dataset``.

``load_dataset(name, split)`` looks for the official files in this order, and downloads
only when none is found:

1. ``data_dir``: the extracted official folder (``data_dir/cifar-10-batches-bin/`` or
   ``data_dir`` itself), then the official archive (``data_dir/cifar-10-binary.tar.gz``),
   which is extracted into the cache (``data_dir`` may be read-only);
2. ``cache_dir`` (default ``$NPVIT_CACHE_DIR`` or ``~/.cache/npvit/data``): the same;
3. the official URL (or ``$NPVIT_DATA_MIRROR``), md5-checked, then extracted.

Only downloads are md5-checked: a local copy may be a legitimate rebuild of the official
layout, and its files are validated as they are parsed instead. Nothing here unpickles:
CIFAR is read from the *binary* archives and decoded caches are ``.npz`` files loaded with
``allow_pickle=False``.
"""
from __future__ import annotations

import gzip
import hashlib
import math
import os
import shutil
import tempfile
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..fileio import atomic_write
from .core import Dataset, DataError, seed_generator
from .download import download as fetch
from .download import EXTRACT_SUFFIX, clean_partial, extract, resolve_url

CACHE_ENV = "NPVIT_CACHE_DIR"
DATASETS = ("cifar10", "cifar100", "tiny-imagenet", "fashion-mnist", "imagefolder", "synthetic")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

# Per-channel statistics of each official training split, on the [0, 1] scale.
_STATS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "tiny-imagenet": ((0.4802, 0.4481, 0.3975), (0.2770, 0.2691, 0.2821)),
    "fashion-mnist": ((0.2860,), (0.3530,)),
}
# Folders of arbitrary images get the ViT convention: pixels scaled to [-1, 1].
_HALF = 0.5

FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


@dataclass(frozen=True)
class _Archive:
    """An official archive and the folder it unpacks to."""

    filename: str
    url: str
    md5: str
    folder: str  # top-level folder inside the archive
    marker: str  # a file in that folder whose presence means the tree is there


_CIFAR10 = _Archive("cifar-10-binary.tar.gz", "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
                    "c32a1d4ab5d03f1284b67883e8d87530", "cifar-10-batches-bin", "batches.meta.txt")
_CIFAR100 = _Archive("cifar-100-binary.tar.gz", "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",
                     "03b5dce01913d631647c71ecec9e9cb8", "cifar-100-binary", "fine_label_names.txt")
_TINY_IMAGENET = _Archive("tiny-imagenet-200.zip", "http://cs231n.stanford.edu/tiny-imagenet-200.zip",
                          "90528d7ca1a48142e341f4ef8d21d0de", "tiny-imagenet-200", "wnids.txt")

_FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_FASHION_MNIST_FILES = {  # split -> ((images, md5), (labels, md5))
    "train": (("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
              ("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe")),
    "test": (("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
             ("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310")),
}


def default_cache_dir() -> Path:
    """Where downloads, extracted archives and decoded caches go: $NPVIT_CACHE_DIR or ~/.cache/npvit/data."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "npvit" / "data"


def _canonical_name(name: str) -> str:
    key = name.strip().lower().replace("_", "-")
    key = {"tinyimagenet": "tiny-imagenet", "fashionmnist": "fashion-mnist", "cifar-10": "cifar10",
           "cifar-100": "cifar100", "image-folder": "imagefolder"}.get(key, key)
    if key not in DATASETS:
        raise DataError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")
    return key


def _canonical_split(name: str, split: str) -> str:
    """'train', or the held-out split under its official name (tiny-imagenet's is 'val')."""
    s = split.strip().lower()
    if s == "train":
        return "train"
    if s in ("test", "val", "validation", "eval"):
        return "val" if name == "tiny-imagenet" else "test"
    raise DataError(f"unknown split {split!r} for {name}; use 'train' or 'test' (alias 'val')")


# ---------------------------------------------------------------------------- locating files

# How to let npvit download, by whether a --data-dir was given (a local copy is never topped up from the net).
_ALLOW_DOWNLOAD = {True: "leave out --data-dir to download into the cache",
                   False: "allow downloading (leave out --no-download)"}


def _find_archive_tree(spec: _Archive, data_dir, cache_dir: Path, download: bool, mirror, progress: bool) -> Path:
    """The extracted official folder of ``spec``, unpacking or downloading it if needed."""
    bases = ([Path(data_dir).expanduser()] if data_dir else []) + [cache_dir]
    for base in bases:
        if (base / spec.folder / spec.marker).is_file():
            return base / spec.folder
        if (base / spec.marker).is_file():  # the user pointed at the folder itself
            return base
        archive = base / spec.filename
        if archive.is_file():
            if base == cache_dir:
                target = cache_dir
            else:
                # one extraction per archive copy, so two different copies never mix
                st = archive.stat()
                key = hashlib.sha1(f"{archive.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:12]
                target = cache_dir / "extracted" / key
            if not (target / spec.folder / spec.marker).is_file():
                _unpack(spec, archive, target, f"it is not the official {spec.filename}")
            return target / spec.folder
    where = " or ".join(str(b) for b in bases)
    if data_dir or not download:
        raise DataError(f"{spec.filename} (or its extracted folder {spec.folder}/) not found in {where}; "
                        f"download it from {spec.url} into a folder and pass it as --data-dir (the archive or the "
                        f"extracted {spec.folder}/ both work), or {_ALLOW_DOWNLOAD[bool(data_dir)]}")
    archive = fetch(resolve_url(spec.url, mirror), cache_dir / spec.filename, spec.md5, progress=progress)
    _unpack(spec, archive, cache_dir, "delete it and download it again")
    return cache_dir / spec.folder


def _unpack(spec: _Archive, archive: Path, target: Path, advice: str) -> None:
    """Extract ``archive`` into a temporary folder and rename its ``spec.folder`` into ``target`` once complete.

    Checked before anything reaches ``target``: a bad archive leaves nothing there, and a
    folder an earlier failure left without its marker is replaced rather than trusted.
    """
    try:
        target.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{archive.name}.", suffix=EXTRACT_SUFFIX, dir=target))
    except OSError as e:
        raise DataError(f"cannot write to {target} ({e.strerror}); point ${CACHE_ENV} at a writable folder") from None
    try:
        extract(archive, tmp)
        if not (tmp / spec.folder / spec.marker).is_file():
            raise DataError(f"{archive} does not contain {spec.folder}/{spec.marker}; {advice}")
        final = target / spec.folder
        if final.exists():  # incomplete (its marker is missing, or we would not be here)
            shutil.rmtree(final)
        os.replace(tmp / spec.folder, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _find_fashion_mnist(split: str, data_dir, cache_dir: Path, download: bool, mirror, progress: bool) -> list[Path]:
    """Paths of the split's two IDX files: local copy, Debian's package, cache, or download."""
    files = _FASHION_MNIST_FILES[split]
    places = []
    if data_dir:
        places += [Path(data_dir).expanduser(), Path(data_dir).expanduser() / "fashion-mnist"]
    places += [cache_dir / "fashion-mnist", DEBIAN_FASHION_MNIST]
    for place in places:
        if all((place / f).is_file() for f, _ in files):
            return [place / f for f, _ in files]
    names = " and ".join(f for f, _ in files)
    if data_dir or not download:
        raise DataError(f"fashion-mnist: {names} not found in {', '.join(map(str, places))}; download them from "
                        f"{_FASHION_MNIST_URL} into a folder and pass it as --data-dir, apt-get install "
                        f"dataset-fashion-mnist, or {_ALLOW_DOWNLOAD[bool(data_dir)]}")
    return [fetch(resolve_url(_FASHION_MNIST_URL + f, mirror), cache_dir / "fashion-mnist" / f, md5, progress=progress)
            for f, md5 in files]


# ---------------------------------------------------------------------------- readers

def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"{path} is missing; the data folder is incomplete, delete it and get the data again")
    return [line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]


def _read_cifar_records(paths: list[Path], label_bytes: int) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR binary batches: records of ``label_bytes`` labels then 3x32x32 planar RGB bytes.

    Each file must hold its official number of records (``_CIFAR_RECORDS``): a file cut
    at a record boundary is otherwise a valid, smaller data set, and nothing else notices.
    """
    size = label_bytes + 3 * 32 * 32
    chunks = []
    for path in paths:
        if not path.is_file():
            raise DataError(f"{path} is missing; the extracted folder is incomplete, delete it and get the data again")
        raw = np.fromfile(path, dtype=np.uint8)
        if raw.size == 0 or raw.size % size:
            raise DataError(f"{path} is truncated or not a CIFAR binary batch ({raw.size} bytes is not a multiple of "
                            f"{size}); delete it and get the data again")
        expected = _CIFAR_RECORDS["data_batch" if path.stem.startswith("data_batch") else path.stem]
        if raw.size // size != expected:
            raise DataError(f"{path} holds {raw.size // size} records, not the official file's {expected}; it is "
                            "truncated or not the official file, delete it and get the data again")
        chunks.append(raw.reshape(-1, size))
    records = np.concatenate(chunks)  # (N, label_bytes + 3072)
    labels = records[:, :label_bytes].astype(np.int64)  # (N, label_bytes)
    x = np.ascontiguousarray(records[:, label_bytes:]).reshape(-1, 3, 32, 32)  # (N, C, H, W)
    return x, labels


# Records per file of the official CIFAR binaries: CIFAR-10's five data_batch_N.bin and
# test_batch.bin hold 10,000 each; CIFAR-100's train.bin 50,000 and test.bin 10,000.
_CIFAR_RECORDS = {"data_batch": 10000, "test_batch": 10000, "train": 50000, "test": 10000}


def _check_labels(labels: np.ndarray, num_classes: int, source) -> None:
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"{source} has labels outside 0..{num_classes - 1}; it is corrupt or not the official file")


def _load_cifar10(split: str, folder: Path) -> Dataset:
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] if split == "train" else ["test_batch.bin"]
    x, labels = _read_cifar_records([folder / n for n in names], label_bytes=1)
    classes = _read_lines(folder / "batches.meta.txt")
    y = labels[:, 0]
    _check_labels(y, len(classes), folder)
    mean, std = _STATS["cifar10"]
    return Dataset("cifar10", split, x, y, classes, mean, std)


def _load_cifar100(split: str, folder: Path) -> Dataset:
    x, labels = _read_cifar_records([folder / f"{split}.bin"], label_bytes=2)
    classes = _read_lines(folder / "fine_label_names.txt")
    coarse_classes = _read_lines(folder / "coarse_label_names.txt")
    coarse, fine = labels[:, 0], labels[:, 1]  # each record starts with the coarse label
    _check_labels(fine, len(classes), folder)
    _check_labels(coarse, len(coarse_classes), folder)
    mean, std = _STATS["cifar100"]
    return Dataset("cifar100", split, x, fine, classes, mean, std, coarse_y=coarse, coarse_classes=coarse_classes)


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """A gzipped IDX file (big-endian header: magic, then one uint32 per dimension)."""
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path} is corrupt or truncated ({e}); delete it and get it again") from None
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header or int.from_bytes(raw[:4], "big") != magic:
        raise DataError(f"{path} is not an IDX file of the expected kind; delete it and get it again")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if len(raw) != header + math.prod(shape):
        raise DataError(f"{path} is truncated: {len(raw) - header} bytes of data for shape {shape}; delete it and get it again")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _load_fashion_mnist(split: str, paths: list[Path]) -> Dataset:
    images = _read_idx(paths[0], 0x00000803)  # (N, 28, 28)
    labels = _read_idx(paths[1], 0x00000801).astype(np.int64)  # (N,)
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{paths[0].name} has {images.shape[0]} images but {paths[1].name} has {labels.shape[0]} labels")
    _check_labels(labels, 10, paths[1])
    mean, std = _STATS["fashion-mnist"]
    return Dataset("fashion-mnist", split, images[:, None].copy(), labels, list(FASHION_MNIST_CLASSES), mean, std)


def _decode_one(path: Path, size) -> np.ndarray:
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            if size is not None and img.size != (size[1], size[0]):
                img = img.resize((size[1], size[0]), Image.BILINEAR)
            return np.asarray(img)  # (H, W, 3)
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"cannot read image {path} ({e}); delete or replace it") from None


def decode_images(paths: list[Path], image_size=None, workers: int | None = None) -> np.ndarray:
    """Decode image files with Pillow into one uint8 RGB array ``(N, 3, H, W)``.

    With ``image_size`` (int or (H, W)) every image is resized to it (bilinear);
    without, all images must share the first one's size. Decoding runs in threads:
    Pillow releases the GIL while it decodes.
    """
    if not paths:
        raise DataError("no images to decode")
    size = (image_size, image_size) if isinstance(image_size, int) else image_size
    first = _decode_one(paths[0], size)
    out = np.empty((len(paths), *first.shape), np.uint8)  # (N, H, W, 3)

    def fill(i: int) -> None:
        img = first if i == 0 else _decode_one(paths[i], size)
        if img.shape != first.shape:
            raise DataError(f"{paths[i]} is {img.shape[1]}x{img.shape[0]} but {paths[0]} is {first.shape[1]}x{first.shape[0]}; "
                            "pass --image-size N (image_size=N) to resize them all to N x N")
        out[i] = img

    with ThreadPoolExecutor(workers or min(16, os.cpu_count() or 1)) as pool:
        for _ in pool.map(fill, range(len(paths)), chunksize=256):
            pass
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))  # (N, 3, H, W)


def _cached_decode(cache_dir: Path, name: str, split: str, paths: list[Path], labels: np.ndarray,
                   classes: list[str], image_size) -> np.ndarray:
    """Decoded images of ``paths``, from an .npz cache when one matches this exact file list."""
    key_src = "\n".join([name, split, str(image_size), *map(str, paths)])  # callers pass absolute paths
    key = hashlib.sha1(key_src.encode()).hexdigest()[:16]
    path = cache_dir / "decoded" / f"{name}-{split}-{key}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                if np.array_equal(z["y"], labels) and list(z["classes"]) == classes:
                    return z["x"]
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            pass  # an unreadable cache is rebuilt below
    x = decode_images(paths, image_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        np.savez(f, x=x, y=labels, classes=np.array(classes, dtype=str))
    return x


def _load_tiny_imagenet(split: str, folder: Path, cache_dir: Path) -> Dataset:
    folder = folder.resolve()
    wnids = _read_lines(folder / "wnids.txt")
    index = {w: i for i, w in enumerate(wnids)}
    words = {}
    if (folder / "words.txt").is_file():
        for line in _read_lines(folder / "words.txt"):
            wnid, _, text = line.partition("\t")
            words[wnid] = text.strip()
    classes = [words.get(w, w) for w in wnids]
    paths, labels = [], []
    if split == "train":
        for w in wnids:
            images = folder / "train" / w / "images"
            if not images.is_dir():
                raise DataError(f"{images} is missing; the tiny-imagenet train folder is incomplete")
            names = sorted(e.name for e in os.scandir(images) if e.name.lower().endswith(IMAGE_EXTENSIONS))
            paths += [images / n for n in names]
            labels += [index[w]] * len(names)
    else:
        for line in _read_lines(folder / "val" / "val_annotations.txt"):
            fields = line.split("\t")
            if len(fields) < 2 or fields[1] not in index:
                raise DataError(f"{folder / 'val' / 'val_annotations.txt'} has a bad line {line[:80]!r}; the file is corrupt")
            paths.append(folder / "val" / "images" / fields[0])
            labels.append(index[fields[1]])
    y = np.asarray(labels, dtype=np.int64)
    x = _cached_decode(cache_dir, "tiny-imagenet", split, paths, y, classes, None)
    mean, std = _STATS["tiny-imagenet"]
    return Dataset("tiny-imagenet", split, x, y, classes, mean, std)


def _images_under(folder: Path) -> list[Path]:
    """Image files below ``folder`` (any depth, hidden entries skipped), in sorted order."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(root) / f for f in sorted(files) if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith(".")]
    return found


def _class_dirs(folder: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def _classes_of(folder: Path) -> list[str]:
    """The class folders of the tree that defines the classes; DataError when one holds no image.

    An empty folder would still become a class, one the head must learn without a single
    example, and shift nothing visibly: refused rather than skipped, so the class list
    the user sees is the one the model gets.
    """
    classes = _class_dirs(folder)
    empty = [c for c in classes if not _images_under(folder / c)]
    if empty:
        raise DataError(f"class folder(s) {', '.join(empty[:5])} under {folder} hold no images "
                        f"({', '.join(IMAGE_EXTENSIONS)}); add images or remove the folder(s)")
    return classes


def _load_imagefolder(split: str, root, cache_dir: Path, image_size, val_fraction: float) -> Dataset:
    if root is None:
        raise DataError("imagefolder needs a data directory (--data-dir ROOT) holding ROOT/train/CLASS/*.jpg or ROOT/CLASS/*.jpg")
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise DataError(f"imagefolder root {root} is not a folder")
    if (root / "train").is_dir():
        classes = _classes_of(root / "train")
        if split == "train":
            folder = root / "train"
        else:
            held_out = [d for d in ("val", "test") if (root / d).is_dir()]
            if not held_out:
                raise DataError(f"{root} has train/ but neither val/ nor test/; add one with the same CLASS folders")
            folder, split = root / held_out[0], held_out[0]
        extra = sorted(set(_class_dirs(folder)) - set(classes))
        if extra:
            raise DataError(f"{folder} has class folders missing from {root / 'train'}: {', '.join(extra[:5])}")
        paths, labels = [], []
        for k, c in enumerate(classes):
            if (folder / c).is_dir():
                found = _images_under(folder / c)
                paths += found
                labels += [k] * len(found)
    else:
        # one CLASS tree: a file's split is a hash of its path, so adding files never moves others
        classes = _classes_of(root)
        paths, labels = [], []
        for k, c in enumerate(classes):
            for p in _images_under(root / c):
                held = zlib.crc32(str(p.relative_to(root)).encode()) % 10000 < val_fraction * 10000
                if held == (split != "train"):
                    paths.append(p)
                    labels.append(k)
    if not classes or not paths:
        raise DataError(f"no images found for split {split!r} under {root}; expected ROOT/train/CLASS/*.jpg or ROOT/CLASS/*.jpg")
    y = np.asarray(labels, dtype=np.int64)
    x = _cached_decode(cache_dir, "imagefolder", split, paths, y, classes, image_size)
    return Dataset("imagefolder", split, x, y, classes, (_HALF,) * 3, (_HALF,) * 3)


def synthetic(split: str = "train", *, num_examples: int | None = None, num_classes: int = 10,
              image_size: int = 32, channels: int = 3, seed: int = 0) -> Dataset:
    """A generated data set a small ViT learns in a few hundred steps.

    Each class has its own colour and an oriented sinusoidal grating (angle and frequency
    per class); an example adds a random phase, a brightness jitter and pixel noise. The
    class templates depend on ``seed`` alone, the examples on ``(seed, split)``, so train
    and test share classes but not images. Default sizes: 5,000 train, 1,000 test.
    """
    split = _canonical_split("synthetic", split)
    n = num_examples if num_examples is not None else (5000 if split == "train" else 1000)
    templates = seed_generator(seed, "synthetic-templates")
    colours = templates.uniform(40.0, 215.0, (num_classes, channels)).astype(np.float32)  # (K, C)
    angles = templates.uniform(0.0, np.pi, num_classes)  # (K,)
    freqs = templates.integers(1, 4, num_classes)  # (K,) cycles per image
    g = seed_generator(seed, "synthetic", split)
    y = g.permutation(np.arange(n) % num_classes).astype(np.int64)  # balanced classes
    phase = g.uniform(0.0, 2 * np.pi, n)[:, None, None]  # (n, 1, 1)
    grid = (np.arange(image_size, dtype=np.float32) + 0.5) / image_size
    rows, cols = grid[:, None], grid[None, :]  # (S, 1), (1, S)
    direction = (np.cos(angles[y])[:, None, None] * cols + np.sin(angles[y])[:, None, None] * rows)  # (n, S, S)
    wave = np.sin(2 * np.pi * freqs[y][:, None, None] * direction + phase).astype(np.float32)  # (n, S, S)
    jitter = g.uniform(-15.0, 15.0, (n, 1, 1, 1)).astype(np.float32)
    noise = g.standard_normal((n, channels, image_size, image_size), dtype=np.float32) * 20.0
    x = colours[y][:, :, None, None] + 40.0 * wave[:, None] + jitter + noise  # (n, C, S, S)
    x = np.clip(np.rint(x), 0, 255).astype(np.uint8)
    return Dataset("synthetic", split, x, y, [f"class_{k}" for k in range(num_classes)],
                   (_HALF,) * channels, (_HALF,) * channels)


def _clean_cache(cache: Path) -> None:
    """Remove what a killed download or extraction left in the cache's folders (``download.clean_partial``)."""
    extracted = cache / "extracted"
    folders = [cache, cache / "fashion-mnist", cache / "decoded", extracted]
    if extracted.is_dir():
        folders += [p for p in extracted.iterdir() if p.is_dir()]
    for folder in folders:
        clean_partial(folder)


def load_dataset(name: str, split: str = "train", *, data_dir=None, download: bool = True, cache_dir=None,
                 mirror: str | None = None, image_size: int | None = None, channels: int | None = None,
                 progress: bool = True, **options) -> Dataset:
    """Load one split of a data set by name into memory.

    name: one of DATASETS ('cifar10', 'cifar100', 'tiny-imagenet', 'fashion-mnist',
    'imagefolder', 'synthetic'). split: 'train' or 'test' ('val' is the same held-out
    split; tiny-imagenet calls it 'val'). data_dir: where a local copy lives (the root
    of the tree for 'imagefolder'). download: fetch the official files when no local copy
    is found. cache_dir: downloads and decoded caches (default ``default_cache_dir()``).
    mirror: base URL that replaces the official one ($NPVIT_DATA_MIRROR by default).
    image_size: decode size for 'imagefolder' and 'synthetic' (the others have a fixed
    size: resize batches with ``augment.resize``). channels: 3 turns grey images into RGB.
    options: 'synthetic' takes num_examples, num_classes, seed; 'imagefolder' takes
    val_fraction (the held-out share of a single CLASS tree, default 0.1).
    Every problem the user can fix raises DataError with a one-line message.
    """
    name = _canonical_name(name)
    split = _canonical_split(name, split)
    cache = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    allowed = {"synthetic": {"num_examples", "num_classes", "seed"}, "imagefolder": {"val_fraction"}}.get(name, set())
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise TypeError(f"load_dataset({name!r}) got unexpected options: {', '.join(unknown)}")
    if data_dir is not None and not Path(data_dir).expanduser().is_dir():
        raise DataError(f"data dir {data_dir} is not a folder; fix --data-dir or leave it out to use the cache")
    if image_size is not None and name not in ("imagefolder", "synthetic"):
        raise DataError(f"{name} images have a fixed size; resize batches instead (npvit.data.resize) of asking for image_size={image_size}")
    if name != "synthetic":
        _clean_cache(cache)
    if name == "synthetic":
        ds = synthetic(split, image_size=image_size or 32, channels=channels or 3, **options)
    elif name == "imagefolder":
        ds = _load_imagefolder(split, data_dir, cache, image_size, options.get("val_fraction", 0.1))
    elif name == "fashion-mnist":
        ds = _load_fashion_mnist(split, _find_fashion_mnist(split, data_dir, cache, download, mirror, progress))
    elif name == "tiny-imagenet":
        ds = _load_tiny_imagenet(split, _find_archive_tree(_TINY_IMAGENET, data_dir, cache, download, mirror, progress), cache)
    elif name == "cifar10":
        ds = _load_cifar10(split, _find_archive_tree(_CIFAR10, data_dir, cache, download, mirror, progress))
    else:
        ds = _load_cifar100(split, _find_archive_tree(_CIFAR100, data_dir, cache, download, mirror, progress))
    return ds.with_channels(channels) if channels else ds
