"""Leaf layers every model family is built from, and the options they share.

Models never call `nnx.Conv` or `nnx.max_pool` directly: they use `Conv2d`, `Pool2d`,
`Dense`, `Norm` and friends from here, so that one option (`model.conv_impl=im2col`,
`model.pool_impl=reference`, `model.activation=maxout`, ...) reaches every layer of every
model, and `cnnexp summary` sees every layer with its kernel, stride and padding.

Implementations (`model.conv_impl`, `model.pool_impl`, `model.norm_impl`): `auto` (the default)
runs convolutions, pooling and training-mode batch normalization through cnnexp's oneDNN kernels
(`cnnexp.kernels`) on the CPU, where XLA's own are 2-5x slower, and through XLA's (`library`:
cuDNN on GPUs) anywhere else or where the kernels cannot load. All compute the same function, so
checkpoints move freely between them.

Tensors are NHWC. Padding is resolved to explicit (low, high) pixel counts per axis:
- "valid": none;
- "same": (F - 1) / 2 on each side for odd kernels, so the output is ceil(W / S) and the
  textbook formula (W - F + 2P) / S + 1 holds with one P; even kernels pad like XLA's SAME;
- "ceil": only on the high side, just enough that the last partial window counts (PyTorch's
  ceil_mode). A map smaller than the window still gives one output, so 2x2 pools never
  shrink an 8x8 digit or a 28x28 image to nothing;
- an integer P: P on each side.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from cnnexp import kernels
from cnnexp.checks import is_integer, is_number
from cnnexp.errors import UserError
from cnnexp.models import recording, reference_ops

Padding = str | int
Pads = tuple[tuple[int, int], tuple[int, int]]
KernelSize = int | tuple[int, int]

MAXOUT_PIECES = 2
LECUN_NORMAL = nnx.initializers.lecun_normal()  # Flax's default kernel initializer


def _maxout(x: jax.Array) -> jax.Array:
    """Maxout (Goodfellow et al., 2013): the max over `MAXOUT_PIECES` linear pieces. The layer
    before it produced `MAXOUT_PIECES` times the channels (see `LayerOptions.pieces`)."""
    return x.reshape(*x.shape[:-1], x.shape[-1] // MAXOUT_PIECES, MAXOUT_PIECES).max(axis=-1)


ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": nnx.relu,
    "leaky_relu": nnx.leaky_relu,
    "maxout": _maxout,
    "tanh": nnx.tanh,
    "sigmoid": nnx.sigmoid,
    "gelu": nnx.gelu,
}
POOLS = ("max", "avg")
NORMS = ("batch", "none")
PADDINGS = ("same", "valid")
CONV_IMPLS = ("auto", "library", "im2col", "onednn")
POOL_IMPLS = ("auto", "library", "reference", "onednn")
NORM_IMPLS = ("auto", "library", "onednn")


def _choose(option: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        raise UserError(f"unknown model.{option} {value!r}; choose one of {', '.join(choices)}")


@dataclass(frozen=True)
class LayerOptions:
    """The options shared by model families (each family declares which it supports)."""

    activation: str = "relu"
    pool: str = "max"
    norm: str = "batch"
    padding: str = "same"
    conv_impl: str = "auto"
    pool_impl: str = "auto"
    norm_impl: str = "auto"

    def __post_init__(self):
        _choose("activation", self.activation, list(ACTIVATIONS))
        _choose("pool", self.pool, POOLS)
        _choose("norm", self.norm, NORMS)
        _choose("padding", self.padding, PADDINGS)
        _choose("conv_impl", self.conv_impl, CONV_IMPLS)
        _choose("pool_impl", self.pool_impl, POOL_IMPLS)
        _choose("norm_impl", self.norm_impl, NORM_IMPLS)
        for option in ("conv_impl", "pool_impl", "norm_impl"):
            if getattr(self, option) == "onednn" and (why := kernels.unavailable_reason()):
                raise UserError(f"model.{option}=onednn cannot run here: {why}; use auto or library")

    @property
    def pieces(self) -> int:
        """How many channels a layer feeding the activation makes per output channel."""
        return MAXOUT_PIECES if self.activation == "maxout" else 1

    def require_elementwise_activation(self, model: str, why: str) -> None:
        """Refuse maxout where an activation does not directly follow a linear layer."""
        if self.activation == "maxout":
            raise UserError(f"model {model} cannot use model.activation=maxout: {why}")


def activate(x: jax.Array, layers: LayerOptions) -> jax.Array:
    """Apply the model's activation (maxout expects `layers.pieces` times the channels)."""
    return ACTIVATIONS[layers.activation](x)


def check_width(width: object) -> None:
    """A UserError unless the channel multiplier `model.width` is a positive number."""
    if not (is_number(width) and width > 0):
        raise UserError(f"model.width must be a positive number, not {width!r}")


def check_dropout(dropout: object) -> None:
    """A UserError unless `model.dropout` is a drop probability in [0, 1)."""
    if not (is_number(dropout) and 0 <= dropout < 1):
        raise UserError(f"model.dropout must be in [0, 1), not {dropout!r}")


def check_counts(option: str, value: object, length: int, minimum: int, meaning: str) -> None:
    """A UserError unless `model.<option>` is a list of `length` integers >= `minimum` (`meaning`:
    what they count, for the message)."""
    if (isinstance(value, str) or not isinstance(value, Sequence) or len(value) != length
            or not all(is_integer(v) and v >= minimum for v in value)):
        raise UserError(f"model.{option} must be {length} integers >= {minimum} ({meaning}), not {value!r}")


def scaled(channels: int, width: float) -> int:
    """`channels` times the width multiplier, at least 1."""
    return max(1, round(channels * width))


def resolve_padding(padding: Padding, size: int, window: int, stride: int) -> tuple[int, int]:
    """Explicit (low, high) padding of one spatial axis of `size` pixels (see module doc)."""
    if isinstance(padding, int) and not isinstance(padding, bool):
        return padding, padding
    if padding == "valid":
        return 0, 0
    if padding == "same":
        if window % 2 == 1:
            return (window - 1) // 2, (window - 1) // 2
        total = max((math.ceil(size / stride) - 1) * stride + window - size, 0)
        return total // 2, total - total // 2
    if padding == "ceil":
        outputs = max(math.ceil((size - window) / stride), 0) + 1
        return 0, (outputs - 1) * stride + window - size
    raise ValueError(f"padding must be 'same', 'valid', 'ceil' or an int, not {padding!r}")


def output_size(size: int, window: int, stride: int, pads: tuple[int, int]) -> int:
    """(W - F + P_low + P_high) // S + 1: the textbook formula with explicit padding."""
    return (size - window + sum(pads)) // stride + 1


def _spatial_pads(module: str, x: jax.Array, window: tuple[int, int], stride: int, padding: Padding) -> Pads:
    """Padding for both axes of NHWC `x`; a UserError if the layer would leave no pixels."""
    pads = tuple(resolve_padding(padding, size, k, stride) for size, k in zip(x.shape[1:3], window, strict=True))
    out = [output_size(size, k, stride, p) for size, k, p in zip(x.shape[1:3], window, pads, strict=True)]
    if min(out) < 1:
        raise UserError(
            f"a {window[0]}x{window[1]} {module} with stride {stride} and padding {padding!r} gets a "
            f"{x.shape[1]}x{x.shape[2]} map and leaves nothing: the input is too small for this "
            f"model (try model.padding=same or larger images)"
        )
    return pads  # type: ignore[return-value]


def resolve_impl(impl: str, dtype: Any) -> str:
    """The implementation `auto` stands for here: oneDNN on the CPU when its kernels load and
    handle `dtype` (bfloat16 needs AVX-512), XLA's library otherwise."""
    if impl == "auto":
        return "onednn" if kernels.preferred(dtype) else "library"
    if impl == "onednn" and not kernels.supports(dtype):
        return "library"
    return impl


def resolved_impls(options: dict[str, Any], dtype: Any) -> dict[str, str]:
    """What a model built with `options` runs its convolutions, pooling and batch norm on, for
    inputs of `dtype`: {"conv": "onednn", "pool": "onednn", "norm": "onednn"} on most CPUs."""
    return {kind: resolve_impl(options.get(f"{kind}_impl", "auto"), dtype) for kind in ("conv", "pool", "norm")}


def conv2d(x: jax.Array, kernel: jax.Array, stride: int, pads: Pads, impl: str,
           bias: jax.Array | None = None) -> jax.Array:
    """NHWC x HWIO convolution plus `bias` (if any): by oneDNN (bias fused into the call), XLA's
    convolution, or im2col and one matrix product."""
    impl = resolve_impl(impl, x.dtype)
    if impl == "onednn":
        return kernels.conv2d(x, kernel, bias, kernels.ConvGeometry(stride=(stride, stride), pads=pads))
    if impl == "im2col":
        y = reference_ops.im2col_conv2d(x, kernel, stride, pads)
    else:
        y = jax.lax.conv_general_dilated(x, kernel, (stride, stride), pads, dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y if bias is None else y + bias


def _size(*params: nnx.Param | None) -> int:
    """Number of scalars in the given parameters (None: an absent bias)."""
    return sum(math.prod(p.shape) for p in params if p is not None)


def kernel_window(kernel_size: KernelSize) -> tuple[int, int]:
    """(rows, columns) of a kernel given by its side (square) or by both (Inception's 1x7 and 7x1)."""
    return (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)


class Conv2d(nnx.Module):
    """A 2-D convolution (weights HWIO, optional bias); `kernel_size` is one side of a square kernel
    or (rows, columns) of a rectangular one."""

    def __init__(self, in_features: int, out_features: int, kernel_size: KernelSize, *, stride: int = 1,
                 padding: Padding = "same", use_bias: bool = True, impl: str = "auto",
                 kernel_init: nnx.Initializer = LECUN_NORMAL, rngs: nnx.Rngs):
        self.kernel_size, self.stride, self.padding, self.impl = kernel_size, stride, padding, impl
        self.kernel = nnx.Param(kernel_init(rngs.params(), (*kernel_window(kernel_size), in_features, out_features)))
        self.bias = nnx.Param(jnp.zeros((out_features,))) if use_bias else None

    def __call__(self, x: jax.Array) -> jax.Array:
        window = kernel_window(self.kernel_size)
        pads = _spatial_pads("convolution", x, window, self.stride, self.padding)
        kernel = self.kernel[...]
        with recording.scope():
            # The kernel's dtype is the compute dtype: bfloat16 under trainer.precision=bf16.
            y = conv2d(x.astype(kernel.dtype), kernel, self.stride, pads, self.impl,
                       None if self.bias is None else self.bias[...])
        macs = math.prod(y.shape[1:]) * math.prod(self.kernel.shape[:3])  # per image
        recording.record(self, "conv", x, y, params=_size(self.kernel, self.bias), macs=macs,
                         kernel=window, stride=self.stride, padding=pads)
        return y


def pool2d(x: jax.Array, kind: str, window: int, stride: int, pads: Pads, impl: str = "auto") -> jax.Array:
    """Max or average pooling over NHWC `x`. Padded pixels never count: they are -inf for max,
    and the average divides by the number of real pixels in each window."""
    impl = resolve_impl(impl, x.dtype)
    if impl == "onednn":
        return kernels.pool2d(x, kind, window, stride, pads)
    dims, strides = (1, window, window, 1), (1, stride, stride, 1)
    full_pads = ((0, 0), *pads, (0, 0))
    if kind == "max":
        if impl == "reference":
            return reference_ops.masked_max_pool(x, window, stride, pads)
        return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, dims, strides, full_pads)
    sums = jax.lax.reduce_window(x, 0.0, jax.lax.add, dims, strides, full_pads)
    if pads == ((0, 0), (0, 0)):
        return sums / (window * window)
    counts = jax.lax.reduce_window(jnp.ones((1, *x.shape[1:3], 1), x.dtype), 0.0, jax.lax.add, dims, strides, full_pads)
    return sums / counts


class Pool2d(nnx.Module):
    """Square max or average pooling (`kind`), with its own padding rule (usually "ceil")."""

    def __init__(self, kind: str, window: int = 2, stride: int | None = None, *, padding: Padding = "ceil",
                 impl: str = "auto"):
        self.kind, self.window, self.stride = kind, window, stride or window
        self.padding, self.impl = padding, impl

    def __call__(self, x: jax.Array) -> jax.Array:
        pads = _spatial_pads(f"{self.kind} pool", x, (self.window, self.window), self.stride, self.padding)
        with recording.scope():
            y = pool2d(x, self.kind, self.window, self.stride, pads, self.impl)
        recording.record(self, "pool", x, y, kernel=(self.window, self.window), stride=self.stride,
                         padding=pads, op=self.kind)
        return y


class GlobalPool(nnx.Module):
    """The mean (`op="avg"`) or the max (`op="max"`, airbench's) of each channel over all
    positions: NHWC -> NC."""

    def __init__(self, op: str = "avg"):
        _choose("global_pool", op, POOLS)
        self.op = op

    def __call__(self, x: jax.Array) -> jax.Array:
        with recording.scope():
            y = x.mean(axis=(1, 2)) if self.op == "avg" else x.max(axis=(1, 2))
        recording.record(self, "global_pool", x, y, op=self.op)
        return y


def _adaptive_bounds(size: int, outputs: int) -> list[tuple[int, int]]:
    return [(i * size // outputs, -(-(i + 1) * size // outputs)) for i in range(outputs)]


class AdaptiveAvgPool(nnx.Module):
    """PyTorch's AdaptiveAvgPool2d: average over the windows that split the map into
    `size` x `size` cells (repeating pixels when the map is smaller), so the classifier after it
    sees the same shape whatever the input size."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, x: jax.Array) -> jax.Array:
        with recording.scope():
            rows = [x[:, lo:hi].mean(axis=1, keepdims=True) for lo, hi in _adaptive_bounds(x.shape[1], self.size)]
            x_rows = jnp.concatenate(rows, axis=1)
            cols = [x_rows[:, :, lo:hi].mean(axis=2, keepdims=True) for lo, hi in _adaptive_bounds(x.shape[2], self.size)]
            y = jnp.concatenate(cols, axis=2)
        recording.record(self, "adaptive_pool", x, y, op="avg")
        return y


class Dense(nnx.Module):
    """A fully connected layer on the last axis."""

    def __init__(self, in_features: int, out_features: int, *, use_bias: bool = True,
                 kernel_init: nnx.Initializer = LECUN_NORMAL, rngs: nnx.Rngs):
        self.kernel = nnx.Param(kernel_init(rngs.params(), (in_features, out_features)))
        self.bias = nnx.Param(jnp.zeros((out_features,))) if use_bias else None

    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.kernel[...]
        with recording.scope():
            y = x.astype(kernel.dtype) @ kernel  # compute in the kernel's dtype, as Conv2d
            if self.bias is not None:
                y = y + self.bias[...]
        recording.record(self, "dense", x, y, params=_size(self.kernel, self.bias), macs=math.prod(self.kernel.shape))
        return y


class Norm(nnx.Module):
    """Batch normalization over channels (`kind="batch"`), or nothing (`kind="none"`).

    Batch statistics are `nnx.BatchStat` variables: updated in `model.train()` mode, used as
    they are in `model.eval()` mode, and saved with the rest of the model state. `momentum` is the
    weight of the old statistic; `use_scale=False` fixes the scale at 1 (speednet's, as airbench's).
    In training mode `impl` "onednn" computes the batch statistics and the normalization (and
    their gradients) in oneDNN, on the same variables as `nnx.BatchNorm`'s own code."""

    def __init__(self, features: int, kind: str, *, rngs: nnx.Rngs, scale_init: nnx.Initializer = nnx.initializers.ones,
                 momentum: float = 0.9, use_scale: bool = True, impl: str = "auto"):
        self.impl = impl
        self.batch_norm = (
            nnx.BatchNorm(features, momentum=momentum, epsilon=1e-5, use_scale=use_scale, scale_init=scale_init,
                          rngs=rngs)
            if kind == "batch" else None
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.batch_norm is None:
            return x
        with recording.scope():
            training = not self.batch_norm.use_running_average
            y = self._onednn_training(x) if training and resolve_impl(self.impl, x.dtype) == "onednn" else self.batch_norm(x)
        trained = (2 if self.batch_norm.use_scale else 1) * x.shape[-1]
        recording.record(self, "norm", x, y, params=trained)
        return y

    def _onednn_training(self, x: jax.Array) -> jax.Array:
        """What `nnx.BatchNorm` does in training mode (in float32 at least, as it promotes inputs
        to its float32 statistics), through `kernels.batch_norm`."""
        bn = self.batch_norm
        x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
        ones = jnp.ones(x.shape[-1], jnp.float32)
        scale = ones if bn.scale is None else bn.scale[...].astype(jnp.float32)
        shift = jnp.zeros_like(ones) if bn.bias is None else bn.bias[...].astype(jnp.float32)
        y, mean, var = kernels.batch_norm(x, scale, shift, bn.epsilon)
        bn.mean[...] = bn.momentum * bn.mean[...] + (1 - bn.momentum) * mean
        bn.var[...] = bn.momentum * bn.var[...] + (1 - bn.momentum) * var
        return y


class LocalResponseNorm(nnx.Module):
    """Local response normalization across channels (Krizhevsky et al., 2012; the "contrast
    normalization across feature maps" of Zeiler and Fergus, 2013): each activation is divided by
    (k + alpha * sum of the squares of the `size` channels around it at the same pixel) ** beta,
    so a strong response damps its neighbours'. No parameters. The defaults are AlexNet's (n=5,
    k=2, alpha=1e-4, beta=0.75); PyTorch's `LocalResponseNorm` divides its alpha by `size`."""

    def __init__(self, size: int = 5, *, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0):
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def __call__(self, x: jax.Array) -> jax.Array:
        with recording.scope():
            # The window sums as one product with a band of ones: input channel j counts for output
            # channel c when j - c is in [-(size // 2), (size - 1) // 2] (PyTorch's window; edge
            # channels sum fewer). Forward and gradient, that ran 3-5x faster on 2 CPU cores than
            # summing shifted slices, 4-8x faster than a reduce_window over the channel axis. The
            # band is traced, not a NumPy constant: `cnnexp summary` of a huge model.width then
            # allocates nothing.
            channel = jnp.arange(x.shape[-1])
            reach = channel[:, None] - channel[None, :]  # [j, c]: j - c
            band = ((reach >= -(self.size // 2)) & (reach <= (self.size - 1) // 2)).astype(jnp.float32)
            sums = jnp.matmul(x * x, band, precision=jax.lax.Precision.HIGHEST)
            y = x / (self.k + self.alpha * sums) ** self.beta
        recording.record(self, "norm", x, y, op="local response")
        return y


class ConvNormAct(nnx.Module):
    """Convolution, normalization, activation: the unit most CNNs are stacks of. The
    convolution makes `layers.pieces` channels per output channel, so maxout works here."""

    def __init__(self, in_features: int, out_features: int, kernel_size: KernelSize, layers: LayerOptions, *,
                 stride: int = 1, padding: Padding | None = None, rngs: nnx.Rngs,
                 kernel_init: nnx.Initializer = LECUN_NORMAL):
        wide = out_features * layers.pieces
        self.layers = layers
        self.conv = Conv2d(in_features, wide, kernel_size, stride=stride,
                           padding=layers.padding if padding is None else padding,
                           use_bias=layers.norm == "none", impl=layers.conv_impl, kernel_init=kernel_init, rngs=rngs)
        self.norm = Norm(wide, layers.norm, impl=layers.norm_impl, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return activate(self.norm(self.conv(x)), self.layers)
