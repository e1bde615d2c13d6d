"""The warp `cnnexp evaluate` measures invariance with: shifts, rotations and scales about the centre."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from cnnexp.data.transforms import warp


def test_warp_shifts_rotates_and_scales_about_the_centre():
    image = np.zeros((5, 5, 1), np.float32)
    image[0, 2, 0] = 1.0  # top middle
    moved = lambda shift, scale, angle: np.asarray(warp(jnp.asarray(image), jnp.asarray(shift, jnp.float32),  # noqa: E731
                                                        jnp.float32(scale), jnp.float32(angle), fill="constant"))[..., 0]
    np.testing.assert_allclose(moved([0, 1], 1, 0), np.roll(image[..., 0], 1, axis=1), atol=1e-6)  # one pixel right
    np.testing.assert_allclose(moved([0, 0], 1, math.pi / 2), np.rot90(image[..., 0], -1), atol=1e-6)  # clockwise
    np.testing.assert_allclose(moved([0, 0], 1, 0), image[..., 0], atol=1e-6)
    shrunk = moved([0, 0], 0.5, 0)
    assert shrunk[1, 2] == pytest.approx(1.0) and shrunk.sum() == pytest.approx(1.0)  # halfway to the centre
    left = np.zeros((5, 5, 1), np.float32)
    left[:, 0] = 1.0
    edge = np.asarray(warp(jnp.asarray(left), jnp.asarray([0.0, 1.0]), jnp.float32(1), jnp.float32(0)))[..., 0]
    assert np.all(edge[:, 0] == 1.0)  # fill="nearest" repeats the edge that was shifted away from
