"""Streaming from disk (data.in_memory=false): the same examples, splits and batches as the
in-memory path, read by Grain; and a TFDS dataset of mixed image sizes trained by name."""

import io

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from helpers.images import write_digits_folder
from omegaconf import OmegaConf
from PIL import Image

from cnnexp.data import load_dataset
from cnnexp.data.stream import StreamedSplit, batches, epoch_rows
from cnnexp.training.feeds import MemoryFeed, StreamEval, StreamFeed


@pytest.fixture(scope="module")
def digits_folder(tmp_path_factory):
    """The bundled digits as a folder of PNGs with fixed train/ and test/ splits (200 + 60 images)."""
    return write_digits_folder(tmp_path_factory.mktemp("digits_folder"), 200, 60)


def _data_cfg(root, data_dir, **changes):
    return OmegaConf.create({
        "name": "image_folder", "root": str(root), "data_dir": str(data_dir), "test_fraction": 0.2,
        "on_bad_image": "skip", "val_fraction": 0.1, "classes": None, "train_fraction": 1.0,
        "preprocess": "standardize", "whitening_epsilon": 0.01, "image_size": None, "channels": None,
        "resize": "crop", "in_memory": "auto", "memory_limit_gb": None, "stream_workers": 0, **changes})


def test_streamed_and_in_memory_datasets_hold_the_same_examples(digits_folder, tmp_path):
    overrides = {"classes": [3, 1, 7], "train_fraction": 0.5}
    memory = load_dataset(_data_cfg(digits_folder, tmp_path, in_memory=True, **overrides), seed=4)
    streamed = load_dataset(_data_cfg(digits_folder, tmp_path, in_memory=False, **overrides), seed=4)
    assert streamed.streamed and not memory.streamed
    assert streamed.class_names == memory.class_names == ("3", "1", "7")
    assert streamed.input_shape == memory.input_shape == (8, 8, 1)
    for name in ("train", "val", "test"):
        kept, on_disk = getattr(memory, name), getattr(streamed, name)
        np.testing.assert_array_equal(on_disk.labels, kept.labels)
        np.testing.assert_array_equal(on_disk.images(np.arange(len(on_disk))), kept.images)
    # All training images are fewer than the streamed fit sample: the same preprocessing.
    np.testing.assert_array_equal(streamed.preprocessing.mean, memory.preprocessing.mean)
    np.testing.assert_array_equal(streamed.preprocessing.std, memory.preprocessing.std)


def test_auto_streams_what_does_not_fit_under_the_memory_limit(digits_folder, tmp_path):
    small_limit = 100 * 64 / 2**30  # room for 100 8x8 images; the training split has 200
    assert load_dataset(_data_cfg(digits_folder, tmp_path, memory_limit_gb=small_limit), seed=0).streamed
    assert not load_dataset(_data_cfg(digits_folder, tmp_path, memory_limit_gb=1), seed=0).streamed


def test_epoch_rows_give_each_process_its_share_of_every_global_batch():
    order = np.random.default_rng(0).permutation(22)
    whole = epoch_rows(order, 0, 4, slice(None))
    np.testing.assert_array_equal(whole, order[:20])  # whole batches only
    np.testing.assert_array_equal(epoch_rows(order, 3, 4, slice(None)), order[12:20])  # resumed at batch 3
    first, second = epoch_rows(order, 0, 4, slice(0, 2)), epoch_rows(order, 0, 4, slice(2, 4))
    np.testing.assert_array_equal(np.stack([first.reshape(-1, 2), second.reshape(-1, 2)], 1).reshape(-1), whole)


@pytest.mark.parametrize("workers", [0, 1])
def test_streamed_batches_are_the_in_memory_gathers(digits_folder, tmp_path, workers):
    data = load_dataset(_data_cfg(digits_folder, tmp_path, in_memory=False), seed=0)
    memory = load_dataset(_data_cfg(digits_folder, tmp_path, in_memory=True), seed=0)
    feed = StreamFeed(data.train, batch_size=16, seed=5, place_batch=jax.device_put, stored_shape=data.stored_shape,
                      workers=workers)
    reference = MemoryFeed(memory.train, batch_size=16, seed=5, place=jax.device_put)
    streamed = list(feed.epoch(epoch=2, first_batch=3, preprocessing=None))
    gathered = list(reference.epoch(epoch=2, first_batch=3, preprocessing=None))
    assert len(streamed) == len(gathered) == len(data.train) // 16 - 3
    for (images, labels, _, batch), (all_images, all_labels, _, order, same_batch) in zip(streamed, gathered, strict=True):
        assert batch == same_batch
        rows = np.asarray(order)[batch * 16:(batch + 1) * 16]
        np.testing.assert_array_equal(images, np.asarray(all_images)[rows])
        np.testing.assert_array_equal(labels, np.asarray(all_labels)[rows])


def test_streamed_evaluation_pads_the_last_batch_and_counts_what_is_real(digits_folder, tmp_path):
    data = load_dataset(_data_cfg(digits_folder, tmp_path, in_memory=False), seed=0)
    evaluation = StreamEval(data.test, batch_size=16, place_batch=jax.device_put, stored_shape=data.stored_shape,
                            workers=0)
    seen = list(evaluation.batches())
    assert [int(count) for *_, count, _ in seen] == [60, 44, 28, 12]
    labels = np.concatenate([np.asarray(batch_labels)[:min(16, int(count))] for _, batch_labels, count, _ in seen])
    np.testing.assert_array_equal(labels, data.test.labels)


def test_batches_keep_their_order_and_drop_a_partial_batch(digits_folder, tmp_path):
    data = load_dataset(_data_cfg(digits_folder, tmp_path, in_memory=False), seed=0)
    split: StreamedSplit = data.train
    rows = np.arange(len(split))[::-1]
    got = list(batches(split, rows, 50, workers=0))
    assert len(got) == len(split) // 50
    np.testing.assert_array_equal(np.concatenate([labels for _, labels in got]), split.labels[rows][:len(got) * 50])


class MixedSizes(tfds.core.GeneratorBasedBuilder):
    """A TFDS dataset of colour images of many sizes, made here (no download)."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3)), "label": tfds.features.ClassLabel(names=["a", "b"])}),
            supervised_keys=("image", "label"))

    def _split_generators(self, dl_manager):  # noqa: ARG002 (TFDS signature)
        return {"train": self._generate_examples(40, 0), "test": self._generate_examples(10, 1)}

    def _generate_examples(self, count, seed):
        rng = np.random.default_rng(seed)
        for index in range(count):
            height, width = rng.integers(9, 40, 2)
            encoded = io.BytesIO()  # TFDS encodes arrays with TensorFlow, which is not installed: PNG bytes
            Image.fromarray(rng.integers(0, 256, (height, width, 3), np.uint8)).save(encoded, format="PNG")
            yield index, {"image": encoded.getvalue(), "label": index % 2}


@pytest.mark.parametrize("in_memory", [True, False])
def test_a_tfds_dataset_of_mixed_sizes_loads_by_name_at_one_size(tmp_path, in_memory):
    MixedSizes(data_dir=str(tmp_path), file_format="array_record").download_and_prepare()
    cfg = _data_cfg(None, tmp_path, name="mixed_sizes", in_memory=in_memory, image_size=[16, 12], source_dir=None,
                    download=False)
    data = load_dataset(cfg, seed=0)
    assert data.input_shape == (16, 12, 3) and data.stored_shape == (18, 14, 3)  # crop: 16 / 0.875, 12 / 0.875
    assert len(data.train) + len(data.val) == 40 and len(data.test) == 10
    assert data.fit_images().shape[1:] == (16, 12, 3)  # centre windows at the model's size
    with pytest.raises(Exception, match=r"differ in size: set data.image_size"):
        load_dataset(_data_cfg(None, tmp_path, name="mixed_sizes", in_memory=in_memory, source_dir=None,
                               download=False), seed=0)
