"""The batch loader: seeded order, exact resume, and sharding across processes."""
import numpy as np
import pytest

from npvit.data import Augment, DataError, Loader, synthetic


def _data(n=50):
    x = np.arange(n, dtype=np.uint8).reshape(n, 1, 1, 1).repeat(2, axis=2)  # (N, 1, 2, 1): value = index
    return x, np.arange(n, dtype=np.int64)


def test_each_epoch_is_a_seeded_permutation_that_changes_with_the_epoch():
    x, y = _data()
    loader = Loader(x, y, batch_size=10, seed=3)
    seen = np.concatenate([b.y for b in loader.epoch_batches()])
    assert sorted(seen.tolist()) == list(range(50)) and loader.position == (1, 0)
    np.testing.assert_array_equal(seen, loader.order(0))
    np.testing.assert_array_equal(Loader(x, y, 10, seed=3).order(0), loader.order(0))
    assert not np.array_equal(loader.order(0), loader.order(1))
    assert not np.array_equal(loader.order(0), Loader(x, y, 10, seed=4).order(0))
    b = loader.batch(0, 2)
    np.testing.assert_array_equal(b.x[:, 0, 0, 0], b.y)  # images and labels stay paired


def test_drop_last_and_unshuffled_evaluation():
    x, y = _data(23)
    assert len(Loader(x, y, 10)) == 2
    evaluation = Loader(x, y, 10, shuffle=False, drop_last=False)
    sizes = [len(b.y) for b in evaluation.epoch_batches()]
    assert sizes == [10, 10, 3]
    np.testing.assert_array_equal(evaluation.batch(0, 2).y, [20, 21, 22])
    with pytest.raises(DataError, match="no full batch"):
        Loader(x, y, 30)


def test_resume_gives_the_same_batches_and_augmentation():
    ds = synthetic("train", num_examples=64, num_classes=4, image_size=8)
    augment = Augment(ds.mean, ds.std, ds.num_classes, crop_padding=1, flip=True, rand_ops=2, mixup_alpha=0.5)
    run = Loader(ds.x, ds.y, batch_size=16, seed=11)
    full = [augment(b.x, b.y, b.rng) for b in (next(run) for _ in range(10))]  # crosses two epoch boundaries
    first = Loader(ds.x, ds.y, batch_size=16, seed=11)
    for _ in range(6):
        next(first)
    state = first.state_dict()
    assert state["epoch"] == 1 and state["batch_index"] == 2
    resumed = Loader(ds.x, ds.y, batch_size=16, seed=11)
    resumed.load_state_dict(state)
    for expected in full[6:]:
        b = next(resumed)
        got = augment(b.x, b.y, b.rng)
        np.testing.assert_array_equal(got[0], expected[0])
        np.testing.assert_array_equal(got[1], expected[1])
    with pytest.raises(ValueError, match="seed"):
        Loader(ds.x, ds.y, batch_size=16, seed=12).load_state_dict(state)


def test_shards_split_each_global_batch_and_depend_only_on_the_seed():
    x, y = _data(48)
    single = Loader(x, y, batch_size=12, seed=5)
    shards = [Loader(x, y, batch_size=12, seed=5, rank=r, world_size=3) for r in range(3)]
    for epoch, index in [(0, 0), (0, 3), (2, 1)]:
        parts = [s.batch(epoch, index).y for s in shards]
        assert [len(p) for p in parts] == [4, 4, 4]
        np.testing.assert_array_equal(np.concatenate(parts), single.batch(epoch, index).y)
    rngs = [s.batch(0, 0).rng.random() for s in shards]
    assert len(set(rngs)) == 3  # each process augments its share differently
    with pytest.raises(ValueError, match="divisible"):
        Loader(x, y, batch_size=10, world_size=3)


def test_seek_wraps_into_later_epochs():
    x, y = _data(40)
    loader = Loader(x, y, batch_size=10, seed=0)
    loader.seek(0, 9)
    assert loader.position == (2, 1)
    np.testing.assert_array_equal(next(loader).y, loader.batch(2, 1).y)
    assert loader.position == (2, 2)
