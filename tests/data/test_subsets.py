"""`data.classes` and `data.train_fraction` (fine-tuning, source text 002): a subset of the
classes, relabelled in the order given, and a stratified share of the labels fixed by the seed."""

import numpy as np
import pytest
from omegaconf import OmegaConf

from cnnexp.data import load_dataset
from cnnexp.data.digits import load_digits_splits
from cnnexp.data.subsets import label_fraction
from cnnexp.errors import UserError


def test_classes_are_selected_and_relabelled_in_the_order_given():
    cfg = OmegaConf.create({"name": "digits", "val_fraction": 0.1, "classes": [7, "3"], "train_fraction": 1.0,
                            "preprocess": "standardize", "whitening_epsilon": 0.01})
    data = load_dataset(cfg, seed=0)
    train, test, _ = load_digits_splits()
    assert data.class_names == ("7", "3") and data.num_classes == 2
    assert len(data.train) + len(data.val) == np.isin(train.labels, [7, 3]).sum()
    assert len(data.test) == np.isin(test.labels, [7, 3]).sum()
    sevens = train.images[train.labels == 7]
    assert any(np.array_equal(image, sevens[0]) for image in data.train.images[data.train.labels == 0]) or \
        any(np.array_equal(image, sevens[0]) for image in data.val.images[data.val.labels == 0])
    with pytest.raises(UserError, match="the dataset's classes are 0..9"):
        load_dataset(OmegaConf.merge(cfg, {"classes": [3, 12]}), seed=0)


def test_train_fraction_is_stratified_and_fixed_by_the_seed():
    train, _, _ = load_digits_splits()
    part = label_fraction(train, 0.1, seed=0)
    assert np.array_equal(part.images, label_fraction(train, 0.1, seed=0).images)
    assert not np.array_equal(part.images, label_fraction(train, 0.1, seed=1).images)
    counts, full = np.bincount(part.labels), np.bincount(train.labels)
    np.testing.assert_allclose(counts, np.round(0.1 * full), atol=0)
