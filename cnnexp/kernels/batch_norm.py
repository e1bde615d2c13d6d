"""Batch normalization in training mode through oneDNN, differentiable (`jax.custom_vjp`): one
FFI call forward (normalized output, batch mean and biased variance), one backward (gradients of
the input, scale and shift). Statistics are over every axis but the last (channels), in float32.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from cnnexp.kernels import library


def _forward(x, scale, shift, epsilon):
    stats = jax.ShapeDtypeStruct(scale.shape, jnp.float32)
    return library.call(library.BATCH_NORM_FORWARD, (jax.ShapeDtypeStruct(x.shape, x.dtype), stats, stats),
                        x, scale, shift, epsilon=np.float32(epsilon))


@partial(jax.custom_vjp, nondiff_argnums=(3,))
def _batch_norm(x, scale, shift, epsilon):
    return _forward(x, scale, shift, epsilon)


def _batch_norm_fwd(x, scale, shift, epsilon):
    y, mean, variance = _forward(x, scale, shift, epsilon)
    return (y, mean, variance), (x, scale, mean, variance)


def _batch_norm_bwd(epsilon, residuals, cotangents):
    x, scale, mean, variance = residuals
    dy = cotangents[0]  # the statistics' cotangents are zero: batch_norm stops their gradient
    grads = (jax.ShapeDtypeStruct(x.shape, x.dtype), jax.ShapeDtypeStruct(scale.shape, jnp.float32),
             jax.ShapeDtypeStruct(scale.shape, jnp.float32))
    return library.call(library.BATCH_NORM_BACKWARD, grads, x, dy.astype(x.dtype), scale, mean, variance,
                        epsilon=np.float32(epsilon))


_batch_norm.defvjp(_batch_norm_fwd, _batch_norm_bwd)


def batch_norm(x: jax.Array, scale: jax.Array, shift: jax.Array,
               epsilon: float) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(scale * (x - mean) / sqrt(variance + epsilon) + shift, mean, variance) over the batch of
    NHWC or NC `x` (float32 or bfloat16); `scale` and `shift` float32, one value per channel.
    The statistics carry no gradient (what a running average of them needs)."""
    y, mean, variance = _batch_norm(x, scale, shift, float(epsilon))
    return y, jax.lax.stop_gradient(mean), jax.lax.stop_gradient(variance)
