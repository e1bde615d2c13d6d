"""The textbook forms of convolution and max pooling (source text 001, 003).

- `im2col_conv2d`: every receptive field is stretched into a row of one matrix (im2col),
  the filters into the columns of another, and the convolution is their one matrix product.
- `masked_max_pool`: max pooling whose backward pass is written out by hand: it remembers a
  mask of where each window's maximum was and routes the output gradient only there, then
  back to the pixels with col2im (the transpose of im2col).

Both are selectable in every model (`model.conv_impl=im2col`, `model.pool_impl=reference`)
and tested equal to XLA's own operations, values and gradients (tests/test_reference_ops.py).
Patches are cut with one strided slice per kernel offset. Forward + backward on XLA:CPU (2
cores, batch 128) that beat `lax.conv_general_dilated_patches` 10-15x (its input gradient is
a convolution) and an index gather 1.1-1.2x (its gradient is a scatter); col2im as the
transpose of those slices beat scattering into the padded input (`.at[].add`) 1.3-2x.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

Pads = tuple[tuple[int, int], tuple[int, int]]


def _patches(x: jax.Array, window: tuple[int, int], stride: int, pads: Pads, fill: float = 0.0) -> jax.Array:
    """(N, OH, OW, KH*KW, C): the receptive field of every output position of NHWC `x`, kernel
    offsets row-major, padding pixels equal to `fill`."""
    padded = jnp.pad(x, ((0, 0), *pads, (0, 0)), constant_values=fill)
    rows = (padded.shape[1] - window[0]) // stride + 1
    cols = (padded.shape[2] - window[1]) // stride + 1
    views = [
        padded[:, i : i + (rows - 1) * stride + 1 : stride, j : j + (cols - 1) * stride + 1 : stride, :]
        for i in range(window[0])
        for j in range(window[1])
    ]
    return jnp.stack(views, axis=3)


def _col2im(patch_grads: jax.Array, shape: tuple[int, ...], window: tuple[int, int], stride: int, pads: Pads) -> jax.Array:
    """The transpose of `_patches`: every patch entry is added back onto the pixel it was cut
    from (overlapping windows sum), and what fell on the padding is dropped."""
    transpose = jax.linear_transpose(
        partial(_patches, window=window, stride=stride, pads=pads), jax.ShapeDtypeStruct(shape, patch_grads.dtype)
    )
    return transpose(patch_grads)[0]


def im2col(x: jax.Array, window: tuple[int, int], stride: int, pads: Pads) -> jax.Array:
    """NHWC `x` -> (N, OH, OW, KH*KW*C): one row per output position holding its receptive
    field, ordered (kernel row, kernel column, channel) like an HWIO kernel reshaped."""
    patches = _patches(x, window, stride, pads)
    return patches.reshape(*patches.shape[:3], -1)


def im2col_conv2d(x: jax.Array, kernel: jax.Array, stride: int, pads: Pads) -> jax.Array:
    """Convolution of NHWC `x` with HWIO `kernel` as one matrix product: X_col . W_row."""
    kh, kw, cin, cout = kernel.shape
    return im2col(x, (kh, kw), stride, pads) @ kernel.reshape(kh * kw * cin, cout)


def _pool_windows(x: jax.Array, window: int, stride: int, pads: Pads) -> jax.Array:
    """(N, OH, OW, K*K, C): every pooling window's pixels; padding is -inf, so it never wins."""
    return _patches(x, (window, window), stride, pads, fill=-jnp.inf)


@partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def masked_max_pool(x: jax.Array, window: int, stride: int, pads: Pads) -> jax.Array:
    """Max pooling of NHWC `x` over `window` x `window` windows."""
    return _pool_windows(x, window, stride, pads).max(axis=3)


def _masked_max_pool_forward(x, window, stride, pads):
    windows = _pool_windows(x, window, stride, pads)
    # The mask, kept as the offset of each window's maximum (the first one on ties).
    return windows.max(axis=3), (windows.argmax(axis=3), x.shape)


def _masked_max_pool_backward(window, stride, pads, residuals, grad_out):
    """Each output gradient goes to the input pixel that was its window's maximum; pixels that
    were the maximum of several overlapping windows collect the sum."""
    max_offset, shape = residuals
    mask = max_offset[:, :, :, None, :] == jnp.arange(window * window)[:, None]
    routed = jnp.where(mask, grad_out[:, :, :, None, :], 0)
    return (_col2im(routed, shape, (window, window), stride, pads),)


masked_max_pool.defvjp(_masked_max_pool_forward, _masked_max_pool_backward)
