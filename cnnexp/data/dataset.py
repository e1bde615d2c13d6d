"""The in-memory dataset the trainer sees, and the split/statistics rules every source obeys."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple

import numpy as np

from cnnexp.data.preprocess import Preprocessing, fit_preprocessing


class Split(NamedTuple):
    """Images as uint8 NHWC (0..255) and labels as int32."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def padded(self, batch_size: int) -> Split:
        """The split with zero images (label 0) appended up to a whole number of batches, so one
        compiled batch function covers it; evaluation masks examples at or past len(self)."""
        missing = -len(self) % batch_size
        return Split(np.concatenate([self.images, np.zeros((missing, *self.images.shape[1:]), self.images.dtype)]),
                     np.concatenate([self.labels, np.zeros(missing, self.labels.dtype)]))


@dataclass(frozen=True)
class ImageDataset:
    """A labelled image-classification dataset held in memory, already split.

    `preprocessing` (`preprocess` fitted with `whitening_epsilon`) comes from the training split
    only, so nothing about validation or test images leaks into the inputs the model sees.
    """

    name: str
    train: Split
    val: Split
    test: Split
    class_names: tuple[str, ...]
    preprocess: str
    whitening_epsilon: float | None

    @cached_property
    def preprocessing(self) -> Preprocessing:
        """Fitted on first use: a run that reads its stored preprocessing (resume, evaluate,
        visualize) never pays for a whitening fit it would throw away."""
        return fit_preprocessing(self.preprocess, self.train.images, self.whitening_epsilon)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        height, width, channels = self.train.images.shape[1:]
        return int(height), int(width), int(channels)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def build_dataset(
    name: str,
    train: Split,
    test: Split,
    class_names: tuple[str, ...],
    *,
    val_fraction: float,
    seed: int,
    preprocess: str,
    whitening_epsilon: float | None = None,
) -> ImageDataset:
    """Carve a validation split from `train` with the run's seed; `preprocess` is fitted on the rest."""
    order = np.random.default_rng(seed).permutation(len(train))
    val_count = max(1, int(round(val_fraction * len(train))))
    val_idx, train_idx = np.sort(order[:val_count]), np.sort(order[val_count:])
    train_part = Split(train.images[train_idx], train.labels[train_idx])
    val_part = Split(train.images[val_idx], train.labels[val_idx])
    return ImageDataset(name, train_part, val_part, test, class_names, preprocess, whitening_epsilon)
