"""The dataset the trainer sees (in memory or streamed), and the split/statistics rules every source obeys."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any, NamedTuple

import numpy as np

from cnnexp.data.geometry import Geometry, center_crop
from cnnexp.data.preprocess import Preprocessing, fit_preprocessing


class Split(NamedTuple):
    """Images as uint8 NHWC (0..255) and labels as int32."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, rows: np.ndarray) -> Split:
        return Split(self.images[rows], self.labels[rows])

    def with_labels(self, labels: np.ndarray) -> Split:
        return Split(self.images, labels)

    def padded(self, batch_size: int) -> Split:
        """The split with zero images (label 0) appended up to a whole number of batches, so one
        compiled batch function covers it; evaluation masks examples at or past len(self)."""
        missing = -len(self) % batch_size
        return Split(np.concatenate([self.images, np.zeros((missing, *self.images.shape[1:]), self.images.dtype)]),
                     np.concatenate([self.labels, np.zeros(missing, self.labels.dtype)]))


# A split in memory, or one read from disk as it is used (cnnexp.data.stream.StreamedSplit); both
# have `labels`, `take(rows)` and `with_labels(labels)`, which is all subsets and carving need.
AnySplit = Any
# Training images, at most, that a streamed dataset's preprocessing is fitted on: a sample drawn with
# FIT_SAMPLE_SEED of at most this many images and bytes (uint8), so the fit's memory stays bounded
# (20,000 28x28 digits are 16 MB; 256 MB hold 5,461 128x128 photos). A dataset within both limits
# is fitted on all of its images, the same whether streamed or not.
STREAMED_FIT_SAMPLE = 20_000
STREAMED_FIT_BYTES = 256 * 2**20
FIT_SAMPLE_SEED = 0


@dataclass(frozen=True)
class ImageDataset:
    """A labelled image-classification dataset, already split, held in memory (`Split`) or streamed.

    `preprocessing` (`preprocess` fitted with `whitening_epsilon`) comes from the training split
    only, so nothing about validation or test images leaks into the inputs the model sees.
    """

    name: str
    train: AnySplit
    val: AnySplit
    test: AnySplit
    class_names: tuple[str, ...]
    preprocess: str
    whitening_epsilon: float | None
    geometry: Geometry = Geometry()

    @property
    def streamed(self) -> bool:
        return not isinstance(self.train, Split)

    def fit_images(self) -> np.ndarray:
        """uint8 training images at the model's size that data-dependent steps are fitted on: all of
        an in-memory split, a seeded sample of a streamed one (centre windows in `crop` mode)."""
        if not self.streamed:
            return center_crop(self.train.images, self.input_shape[:2])
        count = min(len(self.train), STREAMED_FIT_SAMPLE, max(1, STREAMED_FIT_BYTES // int(np.prod(self.stored_shape))))
        rows = np.sort(np.random.default_rng(FIT_SAMPLE_SEED).permutation(len(self.train))[:count])
        return center_crop(self.train.images(rows), self.input_shape[:2])

    @cached_property
    def preprocessing(self) -> Preprocessing:
        """Fitted on first use: a run that reads its stored preprocessing (resume, evaluate,
        visualize) never pays for a whitening fit it would throw away."""
        return fit_preprocessing(self.preprocess, self.fit_images(), self.whitening_epsilon)

    @property
    def _source_shape(self) -> tuple[int | None, int | None, int]:
        """(H, W, C) of the images before `geometry`: on disk (None where they vary), or as held."""
        return self.train.records.native_shape if self.streamed else self.train.images.shape[1:]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """The model's input (H, W, C)."""
        return self.geometry.model_shape(self._source_shape)

    @property
    def stored_shape(self) -> tuple[int, int, int]:
        """The (H, W, C) images are held and fed at, before the steps' crop (`data.resize=crop`)."""
        return self.geometry.stored_shape(self._source_shape)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def build_dataset(
    name: str,
    train: AnySplit,
    test: AnySplit,
    class_names: tuple[str, ...],
    *,
    val_fraction: float,
    seed: int,
    preprocess: str,
    whitening_epsilon: float | None = None,
    geometry: Geometry = Geometry(),
) -> ImageDataset:
    """Carve a validation split from `train` with the run's seed; `preprocess` is fitted on the rest."""
    order = np.random.default_rng(seed).permutation(len(train))
    val_count = max(1, int(round(val_fraction * len(train))))
    val_idx, train_idx = np.sort(order[:val_count]), np.sort(order[val_count:])
    return ImageDataset(name, train.take(train_idx), train.take(val_idx), test, class_names, preprocess,
                        whitening_epsilon, geometry)
