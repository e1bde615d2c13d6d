"""Datasets by config: `data.name` picks the bundled digits or any TFDS image dataset."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from cnnexp.checks import check_values, is_number
from cnnexp.data.augment import validate_augment_options
from cnnexp.data.dataset import ImageDataset, Split, build_dataset
from cnnexp.data.digits import load_digits_splits
from cnnexp.data.preprocess import validate_preprocess_options
from cnnexp.data.subsets import class_indices, label_fraction, select_classes
from cnnexp.data.tfds_source import load_tfds_splits, tfds_signature
from cnnexp.errors import UserError

__all__ = ["ImageDataset", "Split", "dataset_signature", "load_dataset", "validate_data_options"]

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
    )


def validate_data_options(data_cfg: DictConfig) -> None:
    """The `data` group's values, checked before anything is loaded (which classes exist, and
    whether the batch fits the split, only once the dataset is there)."""
    check_values([
        ("data.val_fraction", data_cfg.val_fraction, lambda v: is_number(v) and 0 < v < 1,
         "a number strictly between 0 and 1"),
        ("data.train_fraction", data_cfg.get("train_fraction", 1.0), lambda v: is_number(v) and 0 < v <= 1,
         "a number in (0, 1]"),
    ])
    classes = data_cfg.get("classes")
    if classes is not None and not OmegaConf.is_list(classes):
        raise UserError(f"invalid data.classes={classes!r}: must be a list of class indices or names, "
                        f"e.g. data.classes=[0,1,2]")
    validate_preprocess_options(data_cfg)
    validate_augment_options(data_cfg.augment)


def dataset_signature(data_cfg: DictConfig) -> tuple[tuple[int | None, ...], int | None]:
    """(image shape H, W, C; class count) of the dataset `data_cfg` names, None where the
    dataset does not fix them; nothing is loaded, so `cnnexp summary` works before any data exists."""
    shape, classes = DIGITS_SIGNATURE if data_cfg.name == "digits" else tfds_signature(
        data_cfg.name, str(data_cfg.data_dir))
    return shape, len(data_cfg.classes) if data_cfg.get("classes") else classes
