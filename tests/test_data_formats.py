"""Data set readers against small files written here in each official layout."""
import gzip
import io
import tarfile
import zipfile

import numpy as np
import pytest
from PIL import Image

from npvit.data import DataError, load_dataset, synthetic
from npvit.data import datasets as datasets_module


@pytest.fixture(autouse=True)
def _no_debian_copy(monkeypatch):
    """Keep the machine's /usr/share copy of Fashion-MNIST out of the tests."""
    monkeypatch.setattr(datasets_module, "DEBIAN_FASHION_MNIST", datasets_module.Path("/nonexistent-npvit-test"))


@pytest.fixture(autouse=True)
def _small_cifar(monkeypatch):
    """The record counts of the small CIFAR files written here, in place of the official 10,000 and 50,000."""
    monkeypatch.setattr(datasets_module, "_CIFAR_RECORDS", {"data_batch": 3, "test_batch": 4, "train": 6, "test": 2})


def _images(rng, n, c=3, h=32, w=32):
    return rng.integers(0, 256, (n, c, h, w), dtype=np.uint8)


def _cifar_records(labels, x):
    """Official record layout: label byte(s), then R, G, B planes of 32x32, row-major."""
    return np.concatenate([labels.reshape(len(x), -1).astype(np.uint8), x.reshape(len(x), -1)], axis=1).tobytes()


def _write_cifar10(root, rng, per_batch=3, n_test=4):
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    x = _images(rng, 5 * per_batch)
    y = rng.integers(0, 10, 5 * per_batch)
    for b in range(5):
        s = slice(b * per_batch, (b + 1) * per_batch)
        (folder / f"data_batch_{b + 1}.bin").write_bytes(_cifar_records(y[s], x[s]))
    xt, yt = _images(rng, n_test), rng.integers(0, 10, n_test)
    (folder / "test_batch.bin").write_bytes(_cifar_records(yt, xt))
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    (folder / "batches.meta.txt").write_text("\n".join(names) + "\n\n")
    return folder, (x, y), (xt, yt), names


def test_cifar10_reads_extracted_folder_its_parent_and_the_archive(tmp_path):
    rng = np.random.default_rng(0)
    folder, (x, y), (xt, yt), names = _write_cifar10(tmp_path / "data", rng)
    cache = tmp_path / "cache"
    for data_dir in (folder.parent, folder):
        train = load_dataset("cifar10", "train", data_dir=data_dir, cache_dir=cache, download=False)
        assert train.x.dtype == np.uint8 and train.x.shape == (15, 3, 32, 32)
        np.testing.assert_array_equal(train.x, x)
        np.testing.assert_array_equal(train.y, y)
        assert train.y.dtype == np.int64 and train.classes == names and train.split == "train"
    # a pixel check independent of reshape: record 0, green plane, row 2, column 5
    raw = (folder / "data_batch_1.bin").read_bytes()
    assert train.x[0, 1, 2, 5] == raw[1 + 1024 + 2 * 32 + 5]

    archive_dir = tmp_path / "archive"
    archive_dir.mkdir()
    with tarfile.open(archive_dir / "cifar-10-binary.tar.gz", "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-bin")
    test = load_dataset("cifar10", "val", data_dir=archive_dir, cache_dir=cache, download=False)
    assert test.split == "test"
    np.testing.assert_array_equal(test.x, xt)
    np.testing.assert_array_equal(test.y, yt)
    assert not any(p.name.endswith(".extract") for p in cache.rglob("*")), "no temporary folder may be left"


def test_cifar10_truncated_batch_is_a_clear_error(tmp_path):
    folder, *_ = _write_cifar10(tmp_path, np.random.default_rng(1))
    raw = (folder / "test_batch.bin").read_bytes()
    (folder / "test_batch.bin").write_bytes(raw[:-10])
    with pytest.raises(DataError, match="truncated"):
        load_dataset("cifar10", "test", data_dir=tmp_path, cache_dir=tmp_path / "c", download=False)


def test_cifar10_batch_cut_at_a_record_boundary_is_refused(tmp_path):
    folder, *_ = _write_cifar10(tmp_path, np.random.default_rng(1))
    raw = (folder / "data_batch_3.bin").read_bytes()
    (folder / "data_batch_3.bin").write_bytes(raw[: 2 * 3073])
    with pytest.raises(DataError, match="data_batch_3.bin holds 2 records, not the official file's 3"):
        load_dataset("cifar10", "train", data_dir=tmp_path, cache_dir=tmp_path / "c", download=False)


def test_cifar100_fine_and_coarse_labels(tmp_path):
    rng = np.random.default_rng(2)
    folder = tmp_path / "cifar-100-binary"
    folder.mkdir()
    x, coarse, fine = _images(rng, 6), rng.integers(0, 20, 6), rng.integers(0, 100, 6)
    (folder / "train.bin").write_bytes(_cifar_records(np.stack([coarse, fine], 1), x))
    (folder / "test.bin").write_bytes(_cifar_records(np.stack([coarse[:2], fine[:2]], 1), x[:2]))
    (folder / "fine_label_names.txt").write_text("\n".join(f"fine{i}" for i in range(100)) + "\n")
    (folder / "coarse_label_names.txt").write_text("\n".join(f"coarse{i}" for i in range(20)) + "\n")
    ds = load_dataset("cifar100", "train", data_dir=tmp_path, cache_dir=tmp_path / "c", download=False)
    np.testing.assert_array_equal(ds.x, x)
    np.testing.assert_array_equal(ds.y, fine)
    np.testing.assert_array_equal(ds.coarse_y, coarse)
    assert ds.num_classes == 100 and ds.classes[7] == "fine7" and ds.coarse_classes[3] == "coarse3"
    assert len(load_dataset("cifar100", "test", data_dir=tmp_path, cache_dir=tmp_path / "c", download=False)) == 2


def _solid_jpeg(colour, size=8):
    buf = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def test_tiny_imagenet_zip_layout_labels_and_npz_cache(tmp_path):
    wnids = ["n002", "n001"]  # not sorted: the label is the position in wnids.txt
    colours = {"n002": (250, 10, 10), "n001": (10, 10, 250)}
    archive = tmp_path / "data" / "tiny-imagenet-200.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("tiny-imagenet-200/wnids.txt", "\n".join(wnids) + "\n")
        z.writestr("tiny-imagenet-200/words.txt", "n001\tgoldfish, Carassius auratus\nn002\tcat\nn999\tunused\n")
        for w in wnids:
            for i in range(2):
                z.writestr(f"tiny-imagenet-200/train/{w}/images/{w}_{i}.JPEG", _solid_jpeg(colours[w]))
            z.writestr(f"tiny-imagenet-200/train/{w}/{w}_boxes.txt", "")
        z.writestr("tiny-imagenet-200/val/images/val_0.JPEG", _solid_jpeg(colours["n001"]))
        z.writestr("tiny-imagenet-200/val/images/val_1.JPEG", _solid_jpeg(colours["n002"]))
        z.writestr("tiny-imagenet-200/val/val_annotations.txt", "val_0.JPEG\tn001\t0\t0\t8\t8\nval_1.JPEG\tn002\t0\t0\t8\t8\n")
    cache = tmp_path / "cache"
    train = load_dataset("tiny-imagenet", "train", data_dir=archive.parent, cache_dir=cache, download=False)
    assert train.x.shape == (4, 3, 8, 8) and train.classes == ["cat", "goldfish, Carassius auratus"]
    np.testing.assert_array_equal(train.y, [0, 0, 1, 1])
    assert abs(int(train.x[0, 0].mean()) - 250) <= 3 and abs(int(train.x[2, 2].mean()) - 250) <= 3
    val = load_dataset("tiny-imagenet", "test", data_dir=archive.parent, cache_dir=cache, download=False)
    assert val.split == "val"
    np.testing.assert_array_equal(val.y, [1, 0])
    assert val.x[0, 2].mean() > 200 and val.x[1, 0].mean() > 200
    cached = list((cache / "decoded").glob("tiny-imagenet-train-*.npz"))
    assert len(cached) == 1
    with np.load(cached[0], allow_pickle=False) as z:
        np.testing.assert_array_equal(z["x"], train.x)
    again = load_dataset("tiny-imagenet", "train", data_dir=archive.parent, cache_dir=cache, download=False)
    np.testing.assert_array_equal(again.x, train.x)


def _idx_gz(path, magic, array):
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def _write_fashion_mnist(folder, rng, n=5):
    folder.mkdir(parents=True, exist_ok=True)
    x, y = rng.integers(0, 256, (n, 28, 28)), rng.integers(0, 10, n)
    for prefix in ("train", "t10k"):
        _idx_gz(folder / f"{prefix}-images-idx3-ubyte.gz", 0x803, x)
        _idx_gz(folder / f"{prefix}-labels-idx1-ubyte.gz", 0x801, y)
    return x, y


def test_fashion_mnist_idx_one_or_three_channels(tmp_path):
    x, y = _write_fashion_mnist(tmp_path / "fashion-mnist", np.random.default_rng(3))
    ds = load_dataset("fashion-mnist", "train", data_dir=tmp_path, cache_dir=tmp_path / "c", download=False)
    assert ds.x.shape == (5, 1, 28, 28) and ds.mean == (0.2860,)
    np.testing.assert_array_equal(ds.x[:, 0], x)
    np.testing.assert_array_equal(ds.y, y)
    rgb = load_dataset("fashion_mnist", "test", data_dir=tmp_path / "fashion-mnist", cache_dir=tmp_path / "c",
                       download=False, channels=3)
    assert rgb.x.shape == (5, 3, 28, 28) and len(rgb.mean) == 3
    np.testing.assert_array_equal(rgb.x[:, 2], x)


def test_fashion_mnist_corrupt_files_are_clear_errors(tmp_path):
    folder = tmp_path / "f"
    _write_fashion_mnist(folder, np.random.default_rng(4))
    images = folder / "train-images-idx3-ubyte.gz"
    _idx_gz(images, 0x801, np.zeros((5, 28, 28)))  # wrong magic
    with pytest.raises(DataError, match="not an IDX file"):
        load_dataset("fashion-mnist", data_dir=folder, cache_dir=tmp_path / "c", download=False)
    images.write_bytes(gzip.compress(b"\x00\x00\x08\x03" + (5).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + b"\x00" * 100))
    with pytest.raises(DataError, match="truncated"):
        load_dataset("fashion-mnist", data_dir=folder, cache_dir=tmp_path / "c", download=False)
    images.write_bytes(images.read_bytes()[:20])  # a cut-off gzip stream
    with pytest.raises(DataError, match="corrupt"):
        load_dataset("fashion-mnist", data_dir=folder, cache_dir=tmp_path / "c", download=False)


def _png(path, colour, size):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def test_imagefolder_split_folders_resize_and_class_order(tmp_path):
    _png(tmp_path / "train" / "dog" / "a.png", (0, 255, 0), (20, 10))
    _png(tmp_path / "train" / "cat" / "b.png", (255, 0, 0), (12, 12))
    _png(tmp_path / "train" / "cat" / "sub" / "c.PNG", (255, 0, 0), (7, 9))
    (tmp_path / "train" / "cat" / "notes.txt").write_text("not an image")
    _png(tmp_path / "val" / "dog" / "d.png", (0, 255, 0), (5, 5))
    train = load_dataset("imagefolder", "train", data_dir=tmp_path, cache_dir=tmp_path / ".cache", image_size=6)
    assert train.classes == ["cat", "dog"] and train.x.shape == (3, 3, 6, 6)
    np.testing.assert_array_equal(train.y, [0, 0, 1])
    assert (train.x[0, 0] == 255).all() and (train.x[2, 1] == 255).all() and (train.x[2, 0] == 0).all()
    val = load_dataset("imagefolder", "test", data_dir=tmp_path, cache_dir=tmp_path / ".cache", image_size=6)
    assert val.split == "val" and val.y.tolist() == [1]
    with pytest.raises(DataError, match="pass --image-size N"):
        load_dataset("imagefolder", "train", data_dir=tmp_path, cache_dir=tmp_path / ".cache")


def test_imagefolder_single_tree_split_is_deterministic_and_disjoint(tmp_path):
    for k in range(40):
        _png(tmp_path / "tree" / f"c{k % 2}" / f"{k}.png", (k, k, k), (4, 4))
    kw = dict(data_dir=tmp_path / "tree", cache_dir=tmp_path / "cache", val_fraction=0.25)
    train, test = load_dataset("imagefolder", "train", **kw), load_dataset("imagefolder", "test", **kw)
    assert len(train) + len(test) == 40 and 0 < len(test) < 20
    values = sorted(train.x[:, 0, 0, 0].tolist() + test.x[:, 0, 0, 0].tolist())
    assert values == list(range(40))  # every image in exactly one split
    np.testing.assert_array_equal(load_dataset("imagefolder", "test", **kw).x, test.x)


def test_synthetic_is_deterministic_balanced_and_learnable():
    a = synthetic("train", num_examples=400, num_classes=8, image_size=16, seed=5)
    b = synthetic("train", num_examples=400, num_classes=8, image_size=16, seed=5)
    np.testing.assert_array_equal(a.x, b.x)
    assert a.x.shape == (400, 3, 16, 16) and np.bincount(a.y).tolist() == [50] * 8
    test = synthetic("test", num_examples=200, num_classes=8, image_size=16, seed=5)
    assert not np.array_equal(test.x[:10], a.x[:10])
    assert not np.array_equal(synthetic("train", num_examples=400, num_classes=8, image_size=16, seed=6).x, a.x)
    # a nearest-class-mean classifier already separates it, so a ViT can learn it quickly
    feats = lambda d: d.x.reshape(len(d), -1).astype(np.float32)
    centroids = np.stack([feats(a)[a.y == k].mean(0) for k in range(8)])
    pred = ((feats(test)[:, None] - centroids[None]) ** 2).sum(-1).argmin(1)
    assert (pred == test.y).mean() > 0.9


def test_unknown_names_options_and_fixed_sizes_are_refused(tmp_path):
    with pytest.raises(DataError, match="unknown data set"):
        load_dataset("mnist-but-typo")
    with pytest.raises(DataError, match="unknown split"):
        load_dataset("synthetic", "holdout")
    with pytest.raises(DataError, match="fixed size"):
        load_dataset("cifar10", image_size=48, cache_dir=tmp_path, download=False)
    with pytest.raises(TypeError, match="num_classes"):
        load_dataset("cifar10", num_classes=3, cache_dir=tmp_path, download=False)


def test_offline_without_a_copy_names_the_files_and_places(tmp_path):
    with pytest.raises(DataError, match="not a folder"):
        load_dataset("cifar10", data_dir=tmp_path / "d", cache_dir=tmp_path / "c", download=False)
    (tmp_path / "d").mkdir()
    with pytest.raises(DataError) as e:
        load_dataset("cifar10", data_dir=tmp_path / "d", cache_dir=tmp_path / "c", download=False)
    message = str(e.value)
    assert "cifar-10-binary.tar.gz" in message and str(tmp_path / "d") in message and "\n" not in message
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz"):
        load_dataset("fashion-mnist", cache_dir=tmp_path / "c", download=False)


def test_imagefolder_refuses_an_empty_class_folder(tmp_path):
    _png(tmp_path / "train" / "dog" / "a.png", (0, 255, 0), (8, 8))
    (tmp_path / "train" / "cat").mkdir()
    (tmp_path / "train" / "cat" / "notes.txt").write_text("no images here")
    _png(tmp_path / "val" / "dog" / "d.png", (0, 255, 0), (8, 8))
    with pytest.raises(DataError, match="class folder.* cat under .* hold no images"):
        load_dataset("imagefolder", "train", data_dir=tmp_path, cache_dir=tmp_path / ".cache")


def test_offline_with_a_data_dir_names_data_dir_and_the_extracted_folder(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(DataError) as e:  # downloading is allowed, but a --data-dir is never topped up
        load_dataset("cifar10", data_dir=tmp_path / "d", cache_dir=tmp_path / "c", download=True)
    message = str(e.value)
    assert "--data-dir" in message and "cifar-10-batches-bin/ both work" in message and "cannot reach" not in message
