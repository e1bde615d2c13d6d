"""How synthesized images are represented and jittered during activation maximization.

After lucid (`optvis/param/spatial.py`, `optvis/transform.py`): the variable being optimized is
a parameterization, either the pixels themselves or a Fourier spectrum whose high frequencies
are scaled down (so plain gradient steps favour smooth images), mapped into [0, 1] pixels by a
sigmoid. Separately, random transforms (jitter, scale, rotation) are applied before every step,
so the image must excite the unit wherever and however it lands: a "robustness" regularizer.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from cnnexp.data.transforms import warp

PARAMETERIZATIONS = ("pixel", "fourier")
INIT_STD = 0.01  # start from a near-uniform grey image with a little noise, as lucid does


@dataclass(frozen=True)
class ImageParam:
    """`kind` pixel or fourier; `decay`: how steeply a Fourier spectrum damps high frequencies."""

    kind: str
    shape: tuple[int, int, int]  # H, W, C
    decay: float = 1.0

    def init(self, key: jax.Array, count: int) -> jax.Array:
        return INIT_STD * jax.random.normal(key, (count, *self._param_shape()))

    def _param_shape(self) -> tuple[int, ...]:
        height, width, channels = self.shape
        if self.kind == "pixel":
            return height, width, channels
        return 2, channels, height, width // 2 + 1  # real and imaginary parts of an rfft2

    def to_pixels(self, params: jax.Array) -> jax.Array:
        """Parameters to images in [0, 1] pixel units, NHWC."""
        if self.kind == "pixel":
            return jax.nn.sigmoid(params)
        height, width, _ = self.shape
        spectrum = (params[:, 0] + 1j * params[:, 1]) * self._spectrum_scale()
        images = jnp.fft.irfft2(spectrum, s=(height, width), norm="ortho")  # (N, C, H, W)
        return jax.nn.sigmoid(jnp.moveaxis(images, 1, -1))

    def _spectrum_scale(self) -> jax.Array:
        """1 / frequency^decay (lucid's fft_image), so every frequency's gradient has equal
        energy in the image instead of high frequencies dominating; scaled so a unit step is O(1)."""
        height, width, _ = self.shape
        fy = jnp.fft.fftfreq(height)[:, None]
        fx = jnp.fft.rfftfreq(width)[None, :]
        frequency = jnp.sqrt(fx**2 + fy**2)
        return 1.0 / jnp.maximum(frequency, 1.0 / max(height, width)) ** self.decay / max(height, width)


@dataclass(frozen=True)
class Transforms:
    """Random per-image jitter (pixels), scaling (factor in [1 - scale, 1 + scale]) and rotation
    (degrees in [-rotate, rotate]); all zero means no transform."""

    jitter: float = 0.0
    scale: float = 0.0
    rotate: float = 0.0

    @property
    def active(self) -> bool:
        return bool(self.jitter or self.scale or self.rotate)

    def __call__(self, key: jax.Array, images: jax.Array) -> jax.Array:
        if not self.active:
            return images
        count = images.shape[0]
        shift_key, scale_key, angle_key = jax.random.split(key, 3)
        shifts = jax.random.uniform(shift_key, (count, 2), minval=-self.jitter, maxval=self.jitter)
        scales = jax.random.uniform(scale_key, (count,), minval=1 - self.scale, maxval=1 + self.scale)
        angles = jnp.deg2rad(jax.random.uniform(angle_key, (count,), minval=-self.rotate, maxval=self.rotate))
        return jax.vmap(warp)(images, shifts, scales, angles)
