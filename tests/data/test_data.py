import numpy as np
import pytest

from cnnexp.data.dataset import Split, build_dataset
from cnnexp.data.digits import load_digits_splits
from cnnexp.data.geometry import Geometry
from cnnexp.data.idx import read_idx, write_idx
from cnnexp.data.offline_idx import IDX_FILES
from cnnexp.data.tfds_source import open_tfds
from cnnexp.errors import UserError


def test_digits_splits_are_fixed_stratified_and_uint8():
    train, test, names = load_digits_splits()
    again_train, again_test, _ = load_digits_splits()
    assert len(train) + len(test) == 1797 and len(test) == 360
    assert train.images.dtype == np.uint8 and train.images.shape[1:] == (8, 8, 1)
    assert train.images.max() == 255 and names == tuple("0123456789")
    np.testing.assert_array_equal(test.images, again_test.images)
    np.testing.assert_array_equal(train.labels, again_train.labels)
    assert set(np.bincount(test.labels)) <= {35, 36, 37}  # stratified: 10 classes, ~36 each


def test_validation_split_follows_the_seed_and_statistics_come_from_train_only():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (200, 4, 4, 3), dtype=np.uint8)
    train = Split(images, np.arange(200, dtype=np.int32) % 10)
    test = Split(np.full((10, 4, 4, 3), 255, np.uint8), np.zeros(10, np.int32))
    a = build_dataset("x", train, test, tuple("0123456789"), val_fraction=0.25, seed=1, preprocess="standardize")
    b = build_dataset("x", train, test, tuple("0123456789"), val_fraction=0.25, seed=1, preprocess="standardize")
    c = build_dataset("x", train, test, tuple("0123456789"), val_fraction=0.25, seed=2, preprocess="standardize")
    assert len(a.val) == 50 and len(a.train) == 150
    np.testing.assert_array_equal(a.val.labels, b.val.labels)
    assert not np.array_equal(a.val.images, c.val.images)
    # Disjoint and complete: every training example lands in exactly one of train and val.
    merged = np.concatenate([a.train.images, a.val.images]).reshape(200, -1)
    assert len({row.tobytes() for row in merged}) == len({row.tobytes() for row in images.reshape(200, -1)})
    pixels = a.train.images.reshape(-1, 3) / 255.0
    np.testing.assert_allclose(a.preprocessing.mean, pixels.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(a.preprocessing.std, pixels.std(axis=0), rtol=1e-5)


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_files_round_trip(tmp_path, suffix):
    array = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    path = tmp_path / f"x-idx3-ubyte{suffix}"
    write_idx(path, array)
    np.testing.assert_array_equal(read_idx(path), array)


def test_truncated_idx_file_is_rejected(tmp_path):
    path = tmp_path / "bad-idx3-ubyte"
    write_idx(path, np.zeros((4, 3, 3), np.uint8))
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(ValueError, match="header says"):
        read_idx(path)


def _write_idx_set(directory, count_train=120, count_test=40):
    """Four IDX files of real images: the bundled digits, padded to Fashion-MNIST's 28x28."""
    train, test, _ = load_digits_splits()
    arrays = {}
    for split, data, count in (("train", train, count_train), ("test", test, count_test)):
        images = np.pad(data.images[:count, :, :, 0], ((0, 0), (10, 10), (10, 10)))
        labels = data.labels[:count].astype(np.uint8)
        images_stem, labels_stem = IDX_FILES[split]
        write_idx(directory / f"{images_stem}.gz", images)
        write_idx(directory / f"{labels_stem}.gz", labels)
        arrays[split] = (images, labels)
    return arrays


def test_fashion_mnist_is_prepared_offline_from_idx_files_and_read_back(tmp_path):
    source = tmp_path / "idx"
    source.mkdir()
    arrays = _write_idx_set(source)
    data_dir = tmp_path / "tfds"
    train_records, test_records, names = open_tfds("fashion_mnist", str(data_dir), str(source), False)
    train, test = train_records.decoded(Geometry()), test_records.decoded(Geometry())
    assert (data_dir / "fashion_mnist").is_dir()
    assert names[:2] == ("T-shirt/top", "Trouser") and len(names) == 10
    for split, (images, labels) in (("train", arrays["train"]), ("test", arrays["test"])):
        got = train if split == "train" else test
        # TFDS may store examples in any order: compare as multisets of (image, label).
        want = sorted((img.tobytes(), int(lbl)) for img, lbl in zip(images, labels, strict=True))
        have = sorted((img[..., 0].tobytes(), int(lbl)) for img, lbl in zip(got.images, got.labels, strict=True))
        assert have == want
        assert got.images.shape[1:] == (28, 28, 1) and got.images.dtype == np.uint8


def test_source_dir_without_idx_files_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="does not hold the four IDX files"):
        open_tfds("fashion_mnist", str(tmp_path / "tfds"), str(tmp_path), False)


def test_unprepared_dataset_without_download_says_how_to_get_it(tmp_path):
    with pytest.raises(UserError, match="not prepared under .*data.download=false.*data.data_dir"):
        open_tfds("cifar10", str(tmp_path), None, False)


def test_unknown_tfds_name_suggests_close_ones(tmp_path):
    with pytest.raises(UserError, match="no dataset named 'fashion_mnst'.*fashion_mnist"):
        open_tfds("fashion_mnst", str(tmp_path), None, False)
