"""Datasets by config: `data.name` picks the bundled digits, a folder of the user's own images
(`image_folder`) or any TFDS image dataset; `data.in_memory` whether it is held in memory or
streamed from disk."""

from __future__ import annotations

import logging
import os
import re

import numpy as np
from omegaconf import DictConfig, OmegaConf

from cnnexp.checks import check_values, is_finite, is_integer, is_number
from cnnexp.data.augment import validate_augment_options
from cnnexp.data.dataset import ImageDataset, Split, build_dataset
from cnnexp.data.digits import load_digits_splits
from cnnexp.data.geometry import Geometry, validate_geometry_options
from cnnexp.data.preprocess import validate_preprocess_options
from cnnexp.data.records import RecordSplit
from cnnexp.data.subsets import class_indices, label_fraction, select_classes
from cnnexp.errors import UserError

__all__ = ["TFDS_NAME", "ImageDataset", "Split", "dataset_signature", "load_dataset", "validate_data_options"]

log = logging.getLogger("cnnexp.data")

DIGITS_SIGNATURE = ((8, 8, 1), 10)  # scikit-learn's digits: 8x8 grey images of 0-9
IMAGE_FOLDER = "image_folder"
# The dataset names TFDS can parse (its `naming._NAME_REG`): [namespace:]name[/config][:x.y.z][/kwargs].
TFDS_NAME = re.compile(r"(?:[\w\-]+:)?[A-Za-z]\w*"  # [namespace:]name
                       r"(?:/[\w+\-.]+)?(?::(?:\d+|\*)(?:\.(?:\d+|\*)){2})?(?:/(?:\w+=[^,]+,?)+)?")
# data.memory_limit_gb=null: this share of the machine's RAM may hold a decoded training split.
DEFAULT_MEMORY_SHARE = 0.25


def _open_records(data_cfg: DictConfig) -> tuple[RecordSplit, RecordSplit, tuple[str, ...]]:
    """The train and test splits (on disk) and class names of a TFDS or image-folder dataset."""
    from cnnexp.data import tfds_source

    if data_cfg.name == IMAGE_FOLDER:
        from cnnexp.data.image_folder import prepare_image_folder, skipped_images

        builder = prepare_image_folder(data_cfg.root, data_cfg.data_dir, test_fraction=data_cfg.test_fraction,
                                       on_bad_image=data_cfg.on_bad_image)
        if skipped := skipped_images(builder):
            log.warning("%d file(s) of data.root=%s are not decodable images and are left out: %s%s",
                        len(skipped), data_cfg.root, ", ".join(skipped[:3]), ", ..." if len(skipped) > 3 else "")
        return tfds_source.open_prepared(IMAGE_FOLDER, str(builder.data_dir))
    return tfds_source.open_tfds(data_cfg.name, str(data_cfg.data_dir),
                                 str(data_cfg.source_dir) if data_cfg.get("source_dir") else None,
                                 bool(data_cfg.get("download", True)))


def memory_limit_bytes(data_cfg: DictConfig) -> int:
    """data.memory_limit_gb in bytes; null: DEFAULT_MEMORY_SHARE of this machine's RAM."""
    limit_gb = data_cfg.get("memory_limit_gb")
    if limit_gb is not None:
        return int(limit_gb * 2**30)
    return int(DEFAULT_MEMORY_SHARE * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def _keeps_in_memory(data_cfg: DictConfig, train: RecordSplit, geometry: Geometry) -> bool:
    """data.in_memory: true, false, or auto (in memory when the decoded training split fits under
    data.memory_limit_gb)."""
    choice = data_cfg.get("in_memory", "auto")
    if choice != "auto":
        return bool(choice)
    height, width, channels = geometry.stored_shape(train.native_shape)
    needed, limit = len(train) * height * width * channels, memory_limit_bytes(data_cfg)
    if needed > limit:
        log.info("streaming %s from disk: its decoded training split (%.2f GB) exceeds data.memory_limit_gb (%.2f)",
                 data_cfg.name, needed / 2**30, limit / 2**30)
        return False
    return True


def load_dataset(data_cfg: DictConfig, seed: int, *, in_memory: bool | None = None) -> ImageDataset:
    """Load the dataset `data_cfg` names, with a validation split carved using `seed`; `in_memory`
    overrides data.in_memory (commands that only read the test split keep it in memory)."""
    geometry = Geometry.of(data_cfg)
    if data_cfg.name == "digits":
        train, test, class_names = load_digits_splits()
        if geometry.changes_images:
            train, test = (Split(geometry.stored_images(split.images), split.labels) for split in (train, test))
    else:
        from cnnexp.data.stream import StreamedSplit

        train_records, test_records, class_names = _open_records(data_cfg)
        geometry.model_shape(train_records.native_shape)  # varying sizes need data.image_size: say so before decoding
        if in_memory if in_memory is not None else _keeps_in_memory(data_cfg, train_records, geometry):
            train, test = train_records.decoded(geometry), test_records.decoded(geometry)
        else:
            train, test = (StreamedSplit(records, np.arange(len(records)), records.labels, geometry)
                           for records in (train_records, test_records))
    if data_cfg.get("classes"):
        indices = class_indices(data_cfg.classes, class_names)
        train, test = select_classes(train, indices), select_classes(test, indices)
        class_names = tuple(class_names[i] for i in indices)
    if data_cfg.get("train_fraction", 1.0) < 1.0:
        train = label_fraction(train, data_cfg.train_fraction, seed)
    return build_dataset(
        data_cfg.name, train, test, class_names, val_fraction=data_cfg.val_fraction, seed=seed,
        # Run folders from before data.preprocess existed were standardized.
        preprocess=data_cfg.get("preprocess", "standardize"), whitening_epsilon=data_cfg.get("whitening_epsilon"),
        geometry=geometry,
    )


def validate_data_options(data_cfg: DictConfig) -> None:
    """The `data` group's values, checked before anything is loaded (which classes exist, and
    whether the batch fits the split, only once the dataset is there)."""
    name = data_cfg.get("name")
    if not (isinstance(name, str) and TFDS_NAME.fullmatch(name)):  # digits and image_folder are such names too
        raise UserError(f"invalid data.name={name!r}: must be digits, image_folder or a TFDS dataset's name "
                        f"(data=<name> chooses one)")
    if name == IMAGE_FOLDER:
        from cnnexp.data.image_folder import validate_image_folder_options

        validate_image_folder_options(data_cfg)
    check_values([
        ("data.val_fraction", data_cfg.val_fraction, lambda v: is_number(v) and 0 < v < 1,
         "a number strictly between 0 and 1"),
        ("data.train_fraction", data_cfg.get("train_fraction", 1.0), lambda v: is_number(v) and 0 < v <= 1,
         "a number in (0, 1]"),
        ("data.in_memory", data_cfg.get("in_memory", "auto"), lambda v: v == "auto" or isinstance(v, bool),
         "auto, true or false"),
        ("data.memory_limit_gb", data_cfg.get("memory_limit_gb"), lambda v: v is None or (is_finite(v) and v > 0),
         "a number of GB > 0, or null (a quarter of this machine's RAM)"),
        ("data.stream_workers", data_cfg.get("stream_workers", "auto"),
         lambda v: v == "auto" or (is_integer(v) and v >= 0),
         "auto or an integer >= 0 (0: threads of the training process)"),
    ])
    if data_cfg.get("name") == "digits" and data_cfg.get("in_memory", "auto") is False:
        raise UserError("data=digits is always held in memory (it is 1 MB); data.in_memory=false "
                        "streams TFDS and image-folder datasets")
    classes = data_cfg.get("classes")
    if classes is not None and not OmegaConf.is_list(classes):
        raise UserError(f"invalid data.classes={classes!r}: must be a list of class indices or names, "
                        f"e.g. data.classes=[0,1,2]")
    validate_geometry_options(data_cfg)
    validate_preprocess_options(data_cfg)
    validate_augment_options(data_cfg.augment)


def dataset_signature(data_cfg: DictConfig) -> tuple[tuple[int | None, ...], int | None]:
    """(model input shape H, W, C; class count) of the dataset `data_cfg` names, None where the
    dataset does not fix them; nothing is loaded (an image folder is prepared: its channel count
    needs every image), so `cnnexp summary` works before any data exists."""
    if data_cfg.name == "digits":
        shape, classes = DIGITS_SIGNATURE
    elif data_cfg.name == IMAGE_FOLDER:
        from cnnexp.data.image_folder import image_folder_signature

        shape, classes = image_folder_signature(data_cfg.root, data_cfg.data_dir, test_fraction=data_cfg.test_fraction)
    else:
        from cnnexp.data.tfds_source import tfds_signature

        shape, classes = tfds_signature(data_cfg.name, str(data_cfg.data_dir))
    geometry = Geometry.of(data_cfg)
    if geometry.changes_images or None in shape[:2]:
        shape = (*(geometry.image_size or shape[:2]), geometry.channels or shape[2])
    return shape, len(data_cfg.classes) if data_cfg.get("classes") else classes
