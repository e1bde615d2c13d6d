"""What the trained model does with real test images: its predictions over a split, the
confusion matrix, its most confident mistakes, and saliency maps (which pixels move the score)."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from cnnexp.data import Split
from cnnexp.visualize.probe import Probe

Normalize = Callable[[jax.Array], jax.Array]


def predict(probe: Probe, normalize: Normalize, split: Split, batch_size: int = 1000) -> np.ndarray:
    """Softmax probabilities for the uint8 NHWC images of `split`, batch by batch through one compiled function
    (the last batch padded, so it compiles once)."""

    @jax.jit
    def probabilities(weights, batch):
        logits, _ = probe(weights, normalize(batch.astype(jnp.float32) / 255.0))
        return jax.nn.softmax(logits)

    padded = split.padded(batch_size).images
    parts = [probabilities(probe.weights, padded[start:start + batch_size])
             for start in range(0, len(padded), batch_size)]
    return np.concatenate(jax.device_get(parts))[:len(split)]


def confusion_counts(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """counts[true, predicted]."""
    counts = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(counts, (labels, predicted), 1)
    return counts


def confident_mistakes(labels: np.ndarray, probabilities: np.ndarray, count: int) -> np.ndarray:
    """Indices of the wrongly classified images, most confident first."""
    predicted = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predicted != labels)
    return wrong[np.argsort(-probabilities[wrong, predicted[wrong]], kind="stable")][:count]


def saliency_maps(probe: Probe, normalize: Normalize, pixels: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """|d logit[class] / d pixel|, the largest over channels: N x H x W (Simonyan et al., 2014)."""

    def score(image, target):
        logits, _ = probe(probe.weights, normalize(image[None]))
        return logits[0, target]

    gradients = jax.jit(jax.vmap(jax.grad(score)))(jnp.asarray(pixels, jnp.float32), jnp.asarray(classes))
    return np.abs(np.asarray(gradients)).max(axis=-1)
