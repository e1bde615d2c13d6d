"""2-D convolution through oneDNN, differentiable: forward, backward-data and backward-weights
are three FFI calls into the kernel library, tied together by `jax.custom_vjp`, so `jax.grad`,
`jit`, buffer donation and the whole train step work as with `lax.conv_general_dilated`.

Layouts are JAX's usual NHWC activations and HWIO weights (with feature groups: HW(I/G)O, the
output channels group-major, as `feature_group_count`). Under `vmap` each mapped slice is its own
call (`vmap_method="sequential"`): correct, not fast.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import jax
import numpy as np

from cnnexp.kernels import library

Pads = tuple[tuple[int, int], tuple[int, int]]


@dataclass(frozen=True)
class ConvGeometry:
    """Everything about a convolution but its tensors (hashable: a static argument)."""

    stride: tuple[int, int] = (1, 1)
    pads: Pads = ((0, 0), (0, 0))
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1

    def attributes(self) -> dict[str, np.ndarray]:
        """The FFI attributes every convolution handler takes."""
        return {
            "stride": np.array(self.stride, np.int64),
            "dilation": np.array(self.dilation, np.int64),
            "padding_low": np.array([p[0] for p in self.pads], np.int64),
            "padding_high": np.array([p[1] for p in self.pads], np.int64),
            "groups": np.int64(self.groups),
        }

    def output_shape(self, x_shape: tuple[int, ...], kernel_shape: tuple[int, ...]) -> tuple[int, int, int, int]:
        """NHWC shape of the output: (W + P_low + P_high - (F - 1) * D - 1) // S + 1 per axis."""
        spatial = [
            (size + low + high - (k - 1) * d - 1) // s + 1
            for size, k, s, (low, high), d in zip(x_shape[1:3], kernel_shape[:2], self.stride, self.pads,
                                                  self.dilation, strict=True)
        ]
        return (x_shape[0], *spatial, kernel_shape[3])


def _forward(x: jax.Array, kernel: jax.Array, bias: jax.Array | None, geometry: ConvGeometry,
             relu: bool) -> jax.Array:
    result = jax.ShapeDtypeStruct(geometry.output_shape(x.shape, kernel.shape), x.dtype)
    operands = (x, kernel) if bias is None else (x, kernel, bias)
    return library.call(library.CONV_FORWARD, result, *operands, **geometry.attributes(), relu=np.int64(relu))


@partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def conv2d(x: jax.Array, kernel: jax.Array, bias: jax.Array | None, geometry: ConvGeometry,
           relu: bool = False) -> jax.Array:
    """`relu(conv(x, kernel) + bias)` (bias may be None; relu only if asked) in one oneDNN call."""
    return _forward(x, kernel, bias, geometry, relu)


def _conv2d_fwd(x, kernel, bias, geometry, relu):
    y = _forward(x, kernel, bias, geometry, relu)
    return y, (x, kernel, bias is not None, y if relu else None)


def _conv2d_bwd(geometry, relu, residuals, dy):
    x, kernel, has_bias, y = residuals
    if relu:
        dy = jax.numpy.where(y > 0, dy, 0).astype(dy.dtype)
    attributes = geometry.attributes()
    dx = library.call("cnnexp_conv_backward_data", jax.ShapeDtypeStruct(x.shape, x.dtype), dy, kernel, **attributes)
    weight_grad = jax.ShapeDtypeStruct(kernel.shape, kernel.dtype)
    if not has_bias:
        dw = library.call("cnnexp_conv_backward_weights", weight_grad, x, dy, **attributes)
        return dx, dw, None
    bias_grad = jax.ShapeDtypeStruct((kernel.shape[3],), dy.dtype)
    dw, db = library.call("cnnexp_conv_backward_weights", (weight_grad, bias_grad), x, dy, **attributes)
    return dx, dw, db


conv2d.defvjp(_conv2d_fwd, _conv2d_bwd)
