"""Activation maximization: the input that most excites a unit, found by gradient ascent on the
input with the model fixed (source text 000), for many units at once.

Unit k of a batch of N units gets image k of a batch of N images, so a whole layer is optimized
in one forward/backward pass per step, and every step of the loop is inside one jit (a scan).
What is maximized is the unit's activation in units of its spread over real test images, minus
the weighted regularizers: that makes the same regularizer weights mean the same thing for
every layer and model, whose raw activations differ by orders of magnitude.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cnnexp.errors import UserError
from cnnexp.visualize.probe import Layer, Probe
from cnnexp.visualize.synthesis import ImageParam, Transforms

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop", "lion")
LOGITS = None  # a Target with layer None maximizes the class logits


@dataclass(frozen=True)
class Regularizers:
    """Weights of the penalties on the image (pixels in [0, 1]): L1 (few pixels with ink, the
    seed's), L2, and total variation (neighbouring pixels alike, the seed's smoothness)."""

    l1: float = 0.0
    l2: float = 0.0
    tv: float = 0.0

    def terms(self, pixels: jax.Array) -> dict[str, jax.Array]:
        """Each penalty per image, unweighted."""
        dy = jnp.abs(jnp.diff(pixels, axis=1)).mean(axis=(1, 2, 3))
        dx = jnp.abs(jnp.diff(pixels, axis=2)).mean(axis=(1, 2, 3))
        return {"l1": jnp.abs(pixels).mean(axis=(1, 2, 3)), "l2": (pixels**2).mean(axis=(1, 2, 3)), "tv": dx + dy}

    def penalty(self, pixels: jax.Array) -> jax.Array:
        terms = self.terms(pixels)
        return self.l1 * terms["l1"] + self.l2 * terms["l2"] + self.tv * terms["tv"]


@dataclass(frozen=True)
class Settings:
    steps: int
    lr: float
    optimizer: str
    param: str  # pixel or fourier
    decay: float
    regularizers: Regularizers
    transforms: Transforms
    seed: int = 0

    def unregularized(self) -> Settings:
        """Plain gradient ascent on the pixels, as in the seed before its fixes."""
        return Settings(self.steps, self.lr, self.optimizer, "pixel", self.decay, Regularizers(), Transforms(),
                        self.seed)


@dataclass(frozen=True)
class Target:
    """Which units to maximize: `units[k]` of `layer` (None: the class logits) for image k."""

    layer: Layer | None
    units: np.ndarray


@dataclass(frozen=True)
class Result:
    pixels: np.ndarray  # N x H x W x C in [0, 1]
    activation_start: np.ndarray  # the seed's degree of activation at the random start
    activation: np.ndarray  # ... and at the end
    activation_start_z: np.ndarray  # both in standard deviations from the mean over real test images
    activation_z: np.ndarray
    best_real: np.ndarray  # the largest activation any real test image gave the unit
    ink: np.ndarray  # mean absolute pixel value
    penalties: dict[str, np.ndarray]  # each regularizer's value at the end, unweighted
    predicted: np.ndarray  # the model's class for each synthesized image
    confidence: np.ndarray  # and its softmax probability


def unit_activation(logits: jax.Array, outputs: list[jax.Array], probe: Probe, target: Target,
                    units: jax.Array) -> jax.Array:
    """Per image k, the activation of unit `units[k]`: a conv channel's feature map summed over
    positions (the seed's "degree of activation"), a dense neuron, or a class logit."""
    values = logits if target.layer is None else outputs[probe.layers.index(target.layer)]
    picked = jnp.take_along_axis(values, units.reshape(-1, *([1] * (values.ndim - 1))), axis=-1)[..., 0]
    return picked.reshape(picked.shape[0], -1).sum(axis=1)


@dataclass(frozen=True)
class UnitStatistics:
    """Each target unit's activation over real test images: the scale synthesized images are judged on."""

    mean: np.ndarray
    std: np.ndarray
    best: np.ndarray  # the largest any of the real images reaches


def unit_statistics(probe: Probe, target: Target, normalized_images: jax.Array) -> UnitStatistics:
    """What each target unit does on real images (one batch through the model)."""

    def activations(images):
        logits, outputs = probe(probe.weights, images)
        per_unit = jax.vmap(lambda u: unit_activation(logits, outputs, probe, target, jnp.full(len(images), u)))
        return per_unit(jnp.asarray(target.units))  # units x images

    values = np.asarray(jax.jit(activations)(normalized_images))
    return UnitStatistics(values.mean(axis=1), np.maximum(values.std(axis=1), 1e-6), values.max(axis=1))


def maximize(probe: Probe, target: Target, settings: Settings, normalize, statistics: UnitStatistics,
             input_shape: tuple[int, int, int]) -> Result:
    """Optimize one image per target unit; `normalize` maps [0, 1] pixels to model inputs."""
    if settings.optimizer not in OPTIMIZERS:
        raise UserError(f"maximize.optimizer={settings.optimizer!r}: choose one of {', '.join(OPTIMIZERS)}")
    param = ImageParam(settings.param, input_shape, settings.decay)
    tx = getattr(optax, settings.optimizer)(settings.lr)
    units = jnp.asarray(target.units, jnp.int32)
    unit_mean, unit_std = jnp.asarray(statistics.mean, jnp.float32), jnp.asarray(statistics.std, jnp.float32)

    def activation_of(weights, pixels):
        logits, outputs = probe(weights, normalize(pixels))
        return unit_activation(logits, outputs, probe, target, units), logits

    def loss(params, weights, key):
        pixels = param.to_pixels(params)
        seen = settings.transforms(key, pixels)
        activation, _ = activation_of(weights, seen)
        objective = (activation - unit_mean) / unit_std - settings.regularizers.penalty(pixels)
        return -objective.sum()  # images are independent: the sum's gradient is each image's own

    @jax.jit
    def run(weights, key):
        init_key, loop_key = jax.random.split(key)
        params = param.init(init_key, len(target.units))
        start, _ = activation_of(weights, param.to_pixels(params))

        def step(carry, step_key):
            params, opt_state = carry
            grads = jax.grad(loss)(params, weights, step_key)
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), None

        (params, _), _ = jax.lax.scan(step, (params, tx.init(params)), jax.random.split(loop_key, settings.steps))
        pixels = param.to_pixels(params)
        end, logits = activation_of(weights, pixels)
        probabilities = jax.nn.softmax(logits)
        return pixels, start, end, settings.regularizers.terms(pixels), probabilities

    pixels, start, end, penalties, probabilities = jax.device_get(run(probe.weights, jax.random.key(settings.seed)))
    mean, std = statistics.mean, statistics.std
    return Result(
        pixels=pixels, activation_start=start, activation=end,
        activation_start_z=(start - mean) / std, activation_z=(end - mean) / std, best_real=statistics.best,
        ink=np.abs(pixels).mean(axis=(1, 2, 3)), penalties=penalties,
        predicted=probabilities.argmax(axis=1), confidence=probabilities.max(axis=1),
    )
