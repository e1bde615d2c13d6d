"""Datasets by config: `data.name` picks the bundled digits or any TFDS image dataset."""

from __future__ import annotations

from omegaconf import DictConfig

from cnnexp.data.dataset import ImageDataset, Split, build_dataset
from cnnexp.data.digits import load_digits_splits
from cnnexp.data.tfds_source import load_tfds_splits, tfds_signature

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
    dataset does not fix them; nothing is loaded, so `cnnexp summary` works before any data exists."""
    if data_cfg.name == "digits":
        return DIGITS_SIGNATURE
    return tfds_signature(data_cfg.name, str(data_cfg.data_dir))
