"""Max and average pooling through oneDNN, differentiable (`jax.custom_vjp`): one FFI call
forward, one backward. Padded pixels never count, as in `layers.pool2d`: max pooling ignores
them and average pooling divides by the real pixels of each window.

Training max pooling also returns a workspace (where each window's maximum was, in oneDNN's
own encoding) that the backward call reads; its size comes from the library itself.
"""

from __future__ import annotations

import ctypes
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from cnnexp.kernels import library

Pads = tuple[tuple[int, int], tuple[int, int]]
KINDS = {"max": 0, "avg": 1}  # the handlers' `kind` attribute
_DTYPE_CODES = {jnp.dtype(jnp.float32): 0, jnp.dtype(jnp.bfloat16): 1, jnp.dtype(jnp.float16): 2}


def _attributes(kind: str, window: int, stride: int, pads: Pads) -> dict:
    return {
        "kind": np.int64(KINDS[kind]),
        "window": np.array([window, window], np.int64),
        "stride": np.array([stride, stride], np.int64),
        "padding_low": np.array([p[0] for p in pads], np.int64),
        "padding_high": np.array([p[1] for p in pads], np.int64),
    }


def _output_shape(shape: tuple[int, ...], window: int, stride: int, pads: Pads) -> tuple[int, ...]:
    spatial = [(size + low + high - window) // stride + 1 for size, (low, high) in zip(shape[1:3], pads, strict=True)]
    return (shape[0], *spatial, shape[3])


def _workspace_bytes(shape: tuple[int, ...], out_shape: tuple[int, ...], dtype, window: int, stride: int,
                     pads: Pads) -> int:
    query = library.load().cnnexp_max_pool_workspace_bytes
    query.restype = ctypes.c_int64
    size = query(*(ctypes.c_int64(v) for v in (*shape, *out_shape[1:3], window, window, stride, stride,
                                                pads[0][0], pads[1][0], pads[0][1], pads[1][1],
                                                _DTYPE_CODES[jnp.dtype(dtype)])))
    if size < 0:
        raise ValueError(f"oneDNN cannot max-pool a {shape} tensor with window {window}, stride {stride}, pads {pads}")
    return size


@partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3, 4))
def pool2d(x: jax.Array, kind: str, window: int, stride: int, pads: Pads) -> jax.Array:
    """`kind` ("max" or "avg") pooling of NHWC `x` over `window` x `window` windows."""
    out = jax.ShapeDtypeStruct(_output_shape(x.shape, window, stride, pads), x.dtype)
    return library.call(library.POOL_FORWARD, out, x, **_attributes(kind, window, stride, pads))


def _pool2d_fwd(x, kind, window, stride, pads):
    out = jax.ShapeDtypeStruct(_output_shape(x.shape, window, stride, pads), x.dtype)
    attributes = _attributes(kind, window, stride, pads)
    if kind != "max":
        return library.call(library.POOL_FORWARD, out, x, **attributes), (x.shape, None)
    workspace = jax.ShapeDtypeStruct((_workspace_bytes(x.shape, out.shape, x.dtype, window, stride, pads),), jnp.uint8)
    y, used = library.call(library.POOL_FORWARD, (out, workspace), x, **attributes)
    return y, (x.shape, used)


def _pool2d_bwd(kind, window, stride, pads, residuals, dy):
    shape, workspace = residuals
    operands = (dy,) if workspace is None else (dy, workspace)
    dx = library.call("cnnexp_pool_backward", jax.ShapeDtypeStruct(shape, dy.dtype), *operands,
               **_attributes(kind, window, stride, pads))
    return (dx,)


pool2d.defvjp(_pool2d_fwd, _pool2d_bwd)
