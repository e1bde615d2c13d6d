"""`data.augment`: random flips, rotations, translations and erasing of training batches.

They run on the device inside the jitted train step, on pixels in [0, 1] before preprocessing,
so they cost no host work and no transfers. Every draw comes from the run's seed and the step
number, so a resumed run and a rerun with the same seed see the same images. Evaluation, `cnnexp
evaluate` and `cnnexp visualize` never augment.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp
from omegaconf import DictConfig

from cnnexp.checks import check_values, is_integer, is_number
from cnnexp.data.transforms import warp
from cnnexp.errors import UserError

Augment = Callable[[jax.Array, jax.Array], jax.Array]  # (key, NHWC pixels in [0, 1]) -> the same, changed

# The share of the image random erasing blanks and the rectangle's aspect ratio (height / width):
# Zhong et al. 2017 ("Random Erasing Data Augmentation") draw 0.02..0.4 and 0.3..1/0.3; the area
# is capped lower here, since on 8x8 to 32x32 images 40% often hides the whole object.
ERASE_AREA = (0.02, 0.2)
ERASE_ASPECT = (0.3, 1 / 0.3)
# Folded into the seed's key, so augmentation draws apart from the epoch shuffle (which folds
# the epoch number into the plain seed key).
_STREAM = 1 << 30


def validate_augment_options(augment_cfg: DictConfig) -> None:
    """data.augment's values, checked before any data is loaded (translate against the image size:
    make_augment)."""
    check_values([
        ("data.augment.translate", augment_cfg.translate, lambda v: is_integer(v) and v >= 0, "an integer >= 0 (pixels)"),
        ("data.augment.flip", augment_cfg.flip, lambda v: isinstance(v, bool), "true or false"),
        ("data.augment.rotate", augment_cfg.rotate, lambda v: is_number(v) and 0 <= v <= 180,
         "a number of degrees in [0, 180]"),
        ("data.augment.erase", augment_cfg.erase, lambda v: is_number(v) and 0 <= v <= 1, "a probability in [0, 1]"),
    ])


def augment_key(seed: int, step: jax.Array) -> jax.Array:
    """The key of training step `step`'s augmentation: a function of (seed, step) only."""
    return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), _STREAM), step)


def make_augment(augment_cfg: DictConfig, image_shape: tuple[int, int, int]) -> Augment | None:
    """`augment(key, images)` doing what `augment_cfg` turns on (flip, rotate, translate, erase, in
    that order), each image with draws of its own; None when everything is off."""
    size = min(image_shape[:2])
    if augment_cfg.translate >= size:
        raise UserError(f"invalid data.augment.translate={augment_cfg.translate}: "
                        f"must be below the image size ({size} px)")
    ops = [op for op, on in [
        (flip, augment_cfg.flip),
        (partial(rotate, degrees=float(augment_cfg.rotate)), augment_cfg.rotate > 0),
        (partial(translate, pixels=int(augment_cfg.translate)), augment_cfg.translate > 0),
        (partial(erase, probability=float(augment_cfg.erase)), augment_cfg.erase > 0),
    ] if on]
    if not ops:
        return None

    def augment(key: jax.Array, images: jax.Array) -> jax.Array:
        for op, op_key in zip(ops, jax.random.split(key, len(ops)), strict=True):
            images = jax.vmap(op)(jax.random.split(op_key, images.shape[0]), images)
        return images

    return augment


def flip(key: jax.Array, image: jax.Array) -> jax.Array:
    """One HWC image mirrored left-right with probability 1/2."""
    return jnp.where(jax.random.bernoulli(key), image[:, ::-1], image)


def rotate(key: jax.Array, image: jax.Array, degrees: float) -> jax.Array:
    """One HWC image rotated about its centre by a uniform angle in [-degrees, degrees]; the corners
    that enter the frame are black."""
    angle = jax.random.uniform(key, minval=-degrees, maxval=degrees) * math.pi / 180
    return warp(image, jnp.zeros(2), jnp.ones(()), angle, fill="constant")


def translate(key: jax.Array, image: jax.Array, pixels: int) -> jax.Array:
    """One HWC image shifted by up to `pixels` along each axis: padded with black, cropped back to
    its size at a random offset."""
    padded = jnp.pad(image, ((pixels, pixels), (pixels, pixels), (0, 0)))
    row, col = jax.random.randint(key, (2,), 0, 2 * pixels + 1)
    return jax.lax.dynamic_slice(padded, (row, col, 0), image.shape)


def erase(key: jax.Array, image: jax.Array, probability: float) -> jax.Array:
    """One HWC image with, with `probability`, a random rectangle (ERASE_AREA of the image, aspect
    ratio in ERASE_ASPECT) set to 0, so the model learns from partly hidden objects."""
    height, width, _ = image.shape
    apply_key, area_key, aspect_key, row_key, col_key = jax.random.split(key, 5)
    area = jax.random.uniform(area_key, minval=ERASE_AREA[0], maxval=ERASE_AREA[1]) * height * width
    aspect = jnp.exp(jax.random.uniform(aspect_key, minval=math.log(ERASE_ASPECT[0]), maxval=math.log(ERASE_ASPECT[1])))
    rows = jnp.clip(jnp.round(jnp.sqrt(area * aspect)), 1, height).astype(jnp.int32)
    cols = jnp.clip(jnp.round(jnp.sqrt(area / aspect)), 1, width).astype(jnp.int32)
    top = jax.random.randint(row_key, (), 0, height - rows + 1)
    left = jax.random.randint(col_key, (), 0, width - cols + 1)
    row_index, col_index = jnp.arange(height)[:, None, None], jnp.arange(width)[None, :, None]
    inside = (row_index >= top) & (row_index < top + rows) & (col_index >= left) & (col_index < left + cols)
    return jnp.where(inside & jax.random.bernoulli(apply_key, probability), 0.0, image)
