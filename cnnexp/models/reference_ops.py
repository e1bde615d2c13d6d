"""The textbook forms of convolution and max pooling (source text 001, 003).

- `im2col_conv2d`: every receptive field is stretched into a row of one matrix (im2col),
  the filters into the columns of another, and the convolution is their one matrix product.
- `masked_max_pool`: max pooling whose backward pass is written out by hand: it remembers a
  mask of where each window's maximum was and routes the output gradient only there.

Both are selectable in every model (`model.conv_impl=im2col`, `model.pool_impl=reference`)
and tested equal to XLA's own operations, values and gradients.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

Pads = tuple[tuple[int, int], tuple[int, int]]


def _window_slices(padded: jax.Array, window: tuple[int, int], stride: int) -> tuple[list[jax.Array], int, int]:
    """For each kernel offset (i, j), row-major, the strided view of `padded` it multiplies."""
    rows = (padded.shape[1] - window[0]) // stride + 1
    cols = (padded.shape[2] - window[1]) // stride + 1
    views = [
        padded[:, i : i + (rows - 1) * stride + 1 : stride, j : j + (cols - 1) * stride + 1 : stride, :]
        for i in range(window[0])
        for j in range(window[1])
    ]
    return views, rows, cols


def im2col(x: jax.Array, window: tuple[int, int], stride: int, pads: Pads) -> jax.Array:
    """NHWC `x` -> (N, OH, OW, KH*KW*C): one row per output position holding its receptive
    field, ordered (kernel row, kernel column, channel) like an HWIO kernel reshaped."""
    padded = jnp.pad(x, ((0, 0), *pads, (0, 0)))
    views, _, _ = _window_slices(padded, window, stride)
    return jnp.concatenate(views, axis=-1)


def im2col_conv2d(x: jax.Array, kernel: jax.Array, stride: int, pads: Pads) -> jax.Array:
    """Convolution of NHWC `x` with HWIO `kernel` as one matrix product: X_col . W_row."""
    kh, kw, cin, cout = kernel.shape
    return im2col(x, (kh, kw), stride, pads) @ kernel.reshape(kh * kw * cin, cout)


def _pool_windows(x: jax.Array, window: int, stride: int, pads: Pads) -> tuple[jax.Array, int, int]:
    """(N, OH, OW, K*K, C): every pooling window's pixels, padding as -inf."""
    padded = jnp.pad(x, ((0, 0), *pads, (0, 0)), constant_values=-jnp.inf)
    views, rows, cols = _window_slices(padded, (window, window), stride)
    return jnp.stack(views, axis=3), rows, cols


@partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def masked_max_pool(x: jax.Array, window: int, stride: int, pads: Pads) -> jax.Array:
    """Max pooling of NHWC `x` over `window` x `window` windows."""
    windows, _, _ = _pool_windows(x, window, stride, pads)
    return windows.max(axis=3)


def _masked_max_pool_forward(x, window, stride, pads):
    windows, _, _ = _pool_windows(x, window, stride, pads)
    # The mask of the max positions: one-hot over the window (the first maximum on ties).
    mask = jax.nn.one_hot(windows.argmax(axis=3), window * window, axis=3, dtype=x.dtype)
    return windows.max(axis=3), (mask, x.shape)


def _masked_max_pool_backward(window, stride, pads, residuals, grad_out):
    """Each output gradient goes to the input pixel that was its window's maximum; pixels that
    were the maximum of several overlapping windows collect the sum."""
    mask, shape = residuals
    routed = mask * grad_out[:, :, :, None, :]
    (top, bottom), (left, right) = pads
    grad_padded = jnp.zeros((shape[0], shape[1] + top + bottom, shape[2] + left + right, shape[3]), grad_out.dtype)
    rows, cols = grad_out.shape[1], grad_out.shape[2]
    for offset in range(window * window):
        i, j = divmod(offset, window)
        grad_padded = grad_padded.at[
            :, i : i + (rows - 1) * stride + 1 : stride, j : j + (cols - 1) * stride + 1 : stride, :
        ].add(routed[:, :, :, offset, :])
    return (grad_padded[:, top : top + shape[1], left : left + shape[2], :],)


masked_max_pool.defvjp(_masked_max_pool_forward, _masked_max_pool_backward)
