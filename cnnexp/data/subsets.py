"""Subsets of a dataset for transfer experiments: `data.classes` keeps some classes (relabelled
0..k-1 in the order given), `data.train_fraction` keeps a stratified share of the labelled
training pool, as if only that many labels existed (the validation split is then carved from
what is left, so a 1% run is honest about having 1% of the labels)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cnnexp.data.dataset import AnySplit
from cnnexp.errors import UserError

# Seeds the label subsample apart from the validation carve, which uses the plain run seed.
_FRACTION_STREAM = 1


def class_indices(classes: Sequence[int | str], class_names: Sequence[str]) -> list[int]:
    """`data.classes` (indices or names) as indices into `class_names`; a UserError for unknown or repeated ones."""
    indices = []
    for chosen in classes:
        if isinstance(chosen, bool) or not isinstance(chosen, int | str):
            raise UserError(f"invalid data.classes entry {chosen!r}: give class indices or names")
        if isinstance(chosen, str) and chosen in class_names:
            chosen = list(class_names).index(chosen)
        if not isinstance(chosen, int) or not 0 <= chosen < len(class_names):
            raise UserError(f"invalid data.classes entry {chosen!r}: the dataset's classes are "
                            f"0..{len(class_names) - 1} ({', '.join(class_names)})")
        indices.append(chosen)
    if len(set(indices)) != len(indices) or len(indices) < 2:
        raise UserError(f"invalid data.classes={list(classes)}: name at least two distinct classes")
    return indices


def select_classes(split: AnySplit, indices: Sequence[int]) -> AnySplit:
    """The examples of the chosen classes, labelled by their position in `indices`."""
    relabel = np.full(max(int(split.labels.max()), *indices) + 1, -1, np.int32)
    relabel[list(indices)] = np.arange(len(indices), dtype=np.int32)
    keep = relabel[split.labels] >= 0
    return split.take(np.flatnonzero(keep)).with_labels(relabel[split.labels[keep]])


def label_fraction(split: AnySplit, fraction: float, seed: int) -> AnySplit:
    """A stratified `fraction` of `split` (at least two examples per class, so training and
    validation can both see each class), the same for the same seed, in the original order."""
    rng = np.random.default_rng([seed, _FRACTION_STREAM])
    keep = []
    for label in np.unique(split.labels):
        members = np.flatnonzero(split.labels == label)
        count = min(len(members), max(2, int(round(fraction * len(members)))))
        keep.append(rng.choice(members, count, replace=False))
    chosen = np.sort(np.concatenate(keep))
    return split.take(chosen)
