"""scikit-learn's bundled 8x8 digits (1,797 real images): the offline dataset for tests and smoke runs."""

from __future__ import annotations

import numpy as np

from cnnexp.data.dataset import Split

TEST_FRACTION = 0.2
SPLIT_SEED = 0  # fixed, so every run of every seed is tested on the same images


def load_digits_splits() -> tuple[Split, Split, tuple[str, ...]]:
    """Train and test splits (stratified, fixed) with pixels rescaled from 0..16 to 0..255."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    labels = bunch.target.astype(np.int32)
    train_x, test_x, train_y, test_y = train_test_split(
        images, labels, test_size=TEST_FRACTION, stratify=labels, random_state=SPLIT_SEED
    )
    names = tuple(str(d) for d in range(10))
    return Split(train_x, train_y), Split(test_x, test_y), names
