"""Geometric transforms of images on the device: one affine warp (shift, scale, rotation about
the centre) that activation maximization jitters with and invariance evaluation sweeps."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.ndimage import map_coordinates


def warp(image: jax.Array, shift: jax.Array, scale: jax.Array, angle: jax.Array, fill: str = "nearest") -> jax.Array:
    """One HWC image shifted by `shift` (rows, columns; pixels), scaled by `scale` and rotated by
    `angle` (radians; clockwise as displayed, rows running down) about its centre, with bilinear
    sampling. Pixels from outside the image repeat the edge (`fill="nearest"`) or are 0
    (`fill="constant"`)."""
    height, width, channels = image.shape
    rows, cols = jnp.meshgrid(jnp.arange(height), jnp.arange(width), indexing="ij")
    centre_row, centre_col = (height - 1) / 2, (width - 1) / 2
    y, x = rows - centre_row - shift[0], cols - centre_col - shift[1]
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    source = [(cos * y - sin * x) / scale + centre_row, (sin * y + cos * x) / scale + centre_col]
    return jnp.stack([map_coordinates(image[..., c], source, order=1, mode=fill, cval=0.0)
                      for c in range(channels)], axis=-1)
