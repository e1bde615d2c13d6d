"""Datasets by config: `data.name` picks the bundled digits or any TFDS image dataset."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from cnnexp.data.dataset import ImageDataset, Split, build_dataset
from cnnexp.data.digits import load_digits_splits
from cnnexp.data.tfds_source import _builder, load_tfds_splits
from cnnexp.errors import UserError

__all__ = ["ImageDataset", "Split", "dataset_signature", "load_dataset"]

DIGITS_SIGNATURE = ((8, 8, 1), 10)  # scikit-learn's digits: 8x8 grey images of 0-9


def load_dataset(data_cfg: DictConfig, seed: int) -> ImageDataset:
    """Load the dataset `data_cfg` names, with a validation split carved using `seed`."""
    if data_cfg.name == "digits":
        train, test, class_names = load_digits_splits()
    else:
        train, test, class_names = load_tfds_splits(
            data_cfg.name,
            str(data_cfg.data_dir),
            str(data_cfg.source_dir) if data_cfg.get("source_dir") else None,
            bool(data_cfg.get("download", True)),
        )
    return build_dataset(
        data_cfg.name, train, test, class_names, val_fraction=data_cfg.val_fraction, seed=seed
    )


def dataset_signature(data_cfg: DictConfig) -> tuple[tuple[int | None, ...], int | None]:
    """(image shape H, W, C; class count) of the dataset `data_cfg` names, None where the
    dataset does not fix them (images of varying size). Read from TFDS's builder info: nothing
    is downloaded, prepared or loaded, so `cnnexp summary` works before any data exists."""
    if data_cfg.name == "digits":
        return DIGITS_SIGNATURE
    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(logging.ERROR)  # TFDS warns that an unprepared dataset has no dataset_info.json
    try:
        info = _builder(data_cfg.name, Path(str(data_cfg.data_dir)).expanduser()).info
    finally:
        absl.setLevel(level)
    keys = info.supervised_keys
    if keys is None or len(keys) != 2:
        raise UserError(f"dataset {data_cfg.name!r} has no (image, label) supervised keys")
    image, label = (info.features[key] for key in keys)
    shape = tuple(image.shape)
    return (*shape, 1) if len(shape) == 2 else shape, getattr(label, "num_classes", None)
