"""Published Fashion-MNIST test accuracies to set beside ours, by cnnexp model name.

All come from the benchmark table of the Fashion-MNIST repository's README (results submitted
by users, which the dataset's authors say they have not verified). No entry is a LeNet-5, an
AlexNet-lite, a ZF Net or an Inception-ResNet, so those rows name the nearest architecture
listed, and say so. Their
training budgets and augmentation differ from ours: a baseline is a reference point, not a
target a CPU budget preset should reach.
"""

from __future__ import annotations

from typing import NamedTuple

SOURCE = "Fashion-MNIST benchmark table, github.com/zalandoresearch/fashion-mnist (README, submitted results)"


class Baseline(NamedTuple):
    test_accuracy: float
    entry: str  # the entry of the table, as listed there


FASHION_MNIST = {
    "lenet": Baseline(0.876, "nearest: 2 Conv Layers with max pooling (Keras)"),
    "simple_cnn": Baseline(0.876, "2 Conv Layers with max pooling (Keras)"),
    "alexnet": Baseline(0.899, "AlexNet with Triplet loss"),
    "alexnet_lite": Baseline(0.899, "nearest: AlexNet with Triplet loss"),
    "zfnet": Baseline(0.899, "nearest: AlexNet with Triplet loss"),
    "vgg": Baseline(0.935, "VGG16 26M parameters"),
    "inception": Baseline(0.937, "GoogleNet with cross-entropy loss"),
    "inception_resnet": Baseline(0.937, "nearest: GoogleNet with cross-entropy loss"),
    "resnet": Baseline(0.949, "ResNet18, with flips, translation and rotation"),
    "densenet": Baseline(0.954, "DenseNet-BC 768K params, with crops and flips"),
}


def baseline_for(dataset: str | None, model: str | None) -> Baseline | None:
    """The published figure for this model on this dataset, if there is one."""
    if dataset != "fashion_mnist" or model is None:
        return None
    return FASHION_MNIST.get(model)
