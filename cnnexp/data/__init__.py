"""Datasets by config: `data.name` picks the bundled digits or any TFDS image dataset."""

from __future__ import annotations

from omegaconf import DictConfig

from cnnexp.data.dataset import ImageDataset, Split, build_dataset
from cnnexp.data.digits import load_digits_splits
from cnnexp.data.tfds_source import load_tfds_splits

__all__ = ["ImageDataset", "Split", "load_dataset"]


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
