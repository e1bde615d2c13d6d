"""SpeedNet: the network of the CIFAR-10 speed records (Keller Jordan's airbench94, after
hlb-CIFAR10 and Page's 2018 DAWNBench ResNet), for `experiment=speedrun`.

Layout (28x28x1 Fashion-MNIST, default widths 64, 256, 256):
- a patch-whitening convolution: 2x2 kernel, no padding (28 -> 27), 2 * (2*2*C) filters = the
  eigenvectors of the covariance of the training images' 2x2 patches, each scaled by
  1 / sqrt(eigenvalue + whiten_eps), and their negatives (so the activation after it keeps both
  signs). The kernel is fitted to the data (`fit_whitening`, called by the trainer through
  `model.fit_to_data` before training) and never trained: it is a `Whitening` variable, not an
  `nnx.Param`. Its bias is a trainable Param (`whiten_bias=true`; airbench trains it for the
  first 3 epochs only). Then the activation (GELU);
- one conv group per entry of `widths` (times `width`): conv 3x3 -> max pool 2 -> BN -> act,
  conv 3x3 -> BN -> act (27 -> 14 -> 7 -> 4 with the "ceil" pools, which also keep an 8x8 digit
  alive: 7 -> 4 -> 2 -> 1);
- a global max pool (airbench's MaxPool2d(3) over its final 3x3 map) or average pool;
- a dense head without bias, its logits multiplied by `logit_scale` (airbench: 1/9).

As in airbench, batch norms have no trainable scale (fixed at 1; only the shift trains) and a
fast running-statistics momentum (0.6: each batch's statistics count 40%), the 3x3 kernels
start with PyTorch's default init (uniform, variance 1 / (3 fan_in)) and, with `dirac=true`, the
first `in_channels` filters of every 3x3 conv start as the identity (airbench's `dirac_`).

The whitening is the uncentred second moment of the patches, as airbench computes it (the
inputs are standardized, so their mean is ~0 and it is ~ the covariance); the whitened patch
components then have second moments lambda / (lambda + eps) ~ 1 and are uncorrelated.

`Whitening` subclasses `nnx.BatchStat` on purpose: like the batch-norm running statistics it is
a statistic of the data, not trained, saved in checkpoints with the model state, and loaded
wherever cnnexp loads "parameters and batch statistics" (`init_from`, evaluate, visualize).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from cnnexp.checks import is_number
from cnnexp.errors import UserError
from cnnexp.models import recording
from cnnexp.models.layers import (
    Conv2d,
    Dense,
    GlobalPool,
    LayerOptions,
    Norm,
    Pool2d,
    activate,
    check_width,
    conv2d,
    output_size,
    resolve_padding,
    scaled,
)
from cnnexp.models.registry import register_model

WHITEN_KERNEL = 2
GLOBAL_POOLS = ("max", "avg")
# PyTorch's default conv/linear init (kaiming_uniform with a=sqrt(5)): uniform, variance 1/(3 fan_in).
TORCH_DEFAULT = nnx.initializers.variance_scaling(1 / 3, "fan_in", "uniform")
MAX_FIT_IMAGES = 5000
FIT_CHUNK = 500  # images per step of the covariance sum (bounds the memory of the patches)


class Whitening(nnx.BatchStat):
    """A kernel fitted to the data, never trained (the optimizer only sees `nnx.Param`s)."""


def dirac_init(base: nnx.Initializer = TORCH_DEFAULT) -> nnx.Initializer:
    """`base`, except that the first `in_features` filters of the HWIO kernel are the identity
    (a centred 1 on their own input channel), as torch.nn.init.dirac_ does in airbench."""

    def init(key: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
        kernel = base(key, shape, dtype)
        height, width, fan_in, fan_out = shape
        identity = min(fan_in, fan_out)
        kernel = kernel.at[..., :identity].set(0.0)
        channels = jnp.arange(identity)
        return kernel.at[height // 2, width // 2, channels, channels].set(1.0)

    return init


class WhiteningConv(Conv2d):
    """The 2x2 "valid" patch-whitening convolution: a `Conv2d` whose kernel is a `Whitening`
    variable (fitted by `fit_whitening`), with an optional trainable bias."""

    def __init__(self, in_features: int, *, use_bias: bool, impl: str, rngs: nnx.Rngs):
        super().__init__(in_features, 2 * WHITEN_KERNEL**2 * in_features, WHITEN_KERNEL, padding="valid",
                         use_bias=use_bias, impl=impl, kernel_init=TORCH_DEFAULT, rngs=rngs)
        # Until fitted: the random init (the model still trains, only without the whitening).
        self.kernel = Whitening(self.kernel[...])

    def __call__(self, x: jax.Array) -> jax.Array:
        pads = tuple(resolve_padding("valid", size, WHITEN_KERNEL, 1) for size in x.shape[1:3])
        if min(output_size(size, WHITEN_KERNEL, 1, p) for size, p in zip(x.shape[1:3], pads, strict=True)) < 1:
            raise UserError(f"speednet's 2x2 whitening needs images of at least 2x2 pixels, not "
                            f"{x.shape[1]}x{x.shape[2]}")
        with recording.scope():
            y = conv2d(x, self.kernel[...], 1, pads, self.impl, None if self.bias is None else self.bias[...])
        macs = math.prod(y.shape[1:]) * math.prod(self.kernel.shape[:3])
        recording.record(self, "conv", x, y, params=0 if self.bias is None else self.bias.shape[0], macs=macs,
                         kernel=(WHITEN_KERNEL, WHITEN_KERNEL), stride=1, padding=pads)
        return y


def patches(pixels: np.ndarray, size: int = WHITEN_KERNEL) -> np.ndarray:
    """Every `size`x`size` patch (stride 1, no padding) of NHWC `pixels`, flattened in the
    kernel's HWI order: (N * H' * W', size * size * C)."""
    n, height, width, channels = pixels.shape
    rows, cols = height - size + 1, width - size + 1
    parts = [pixels[:, i:i + rows, j:j + cols, :] for i in range(size) for j in range(size)]
    return np.stack(parts, axis=3).reshape(n * rows * cols, size * size * channels)


def patch_second_moment(pixels: np.ndarray, size: int = WHITEN_KERNEL) -> np.ndarray:
    """E[p p^T] over all `size`x`size` patches of `pixels` (float64)."""
    dim = size * size * pixels.shape[-1]
    total, count = np.zeros((dim, dim)), 0
    for start in range(0, len(pixels), FIT_CHUNK):
        flat = patches(np.asarray(pixels[start:start + FIT_CHUNK], np.float64), size)
        total += flat.T @ flat
        count += len(flat)
    return total / count


def whitening_kernel(pixels: np.ndarray, eps: float, size: int = WHITEN_KERNEL) -> np.ndarray:
    """The HWIO kernel of 2 * size*size*C filters: eigenvectors of the patch second moment,
    largest eigenvalue first, scaled by 1/sqrt(eigenvalue + eps), then their negatives."""
    channels = pixels.shape[-1]
    eigenvalues, eigenvectors = np.linalg.eigh(patch_second_moment(pixels, size))
    order = np.argsort(eigenvalues)[::-1]
    eigenvalues, eigenvectors = np.clip(eigenvalues[order], 0.0, None), eigenvectors[:, order]
    filters = eigenvectors / np.sqrt(eigenvalues + eps)  # columns: one filter each
    filters = np.concatenate([filters, -filters], axis=1)
    return filters.reshape(size, size, channels, 2 * size * size * channels).astype(np.float32)


def fit_whitening(model: SpeedNet, pixels: np.ndarray) -> None:
    """Fit `model`'s whitening kernel, in place, to preprocessed training images (NHWC float32,
    the inputs the model will see; the first `MAX_FIT_IMAGES` are used)."""
    pixels = np.asarray(pixels)
    conv = model.whiten
    if pixels.ndim != 4 or pixels.shape[-1] != conv.kernel.shape[2]:
        raise ValueError(f"fit_whitening wants NHWC images with {conv.kernel.shape[2]} channels, "
                         f"not shape {pixels.shape}")
    if len(pixels) == 0:
        raise ValueError("fit_whitening needs at least one image")
    kernel = whitening_kernel(pixels[:MAX_FIT_IMAGES], model.whiten_eps)
    conv.kernel.value = jnp.asarray(kernel)


class ConvGroup(nnx.Module):
    """conv 3x3 -> max pool 2 -> BN -> act, conv 3x3 -> BN -> act."""

    def __init__(self, in_features: int, out_features: int, layers: LayerOptions, *, norm_momentum: float,
                 dirac: bool, rngs: nnx.Rngs):
        init = dirac_init() if dirac else TORCH_DEFAULT
        bias = layers.norm == "none"
        self.layers = layers
        self.conv1 = Conv2d(in_features, out_features, 3, padding="same", use_bias=bias, impl=layers.conv_impl,
                            kernel_init=init, rngs=rngs)
        self.pool = Pool2d("max", 2, impl=layers.pool_impl)
        self.norm1 = Norm(out_features, layers.norm, momentum=norm_momentum, use_scale=False, impl=layers.norm_impl,
                          rngs=rngs)
        self.conv2 = Conv2d(out_features, out_features, 3, padding="same", use_bias=bias, impl=layers.conv_impl,
                            kernel_init=init, rngs=rngs)
        self.norm2 = Norm(out_features, layers.norm, momentum=norm_momentum, use_scale=False, impl=layers.norm_impl,
                          rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = activate(self.norm1(self.pool(self.conv1(x))), self.layers)
        return activate(self.norm2(self.conv2(x)), self.layers)


class SpeedNet(nnx.Module):
    """Whitening conv, act, conv groups, global pool, bias-free dense head times logit_scale."""

    def __init__(self, *, input_shape: tuple[int, int, int], num_classes: int, rngs: nnx.Rngs, layers: LayerOptions,
                 widths: Sequence[int], width: float, whiten_eps: float, whiten_bias: bool, norm_momentum: float,
                 dirac: bool, global_pool: str, logit_scale: float):
        self.layers, self.whiten_eps, self.logit_scale = layers, whiten_eps, logit_scale
        self.whiten = WhiteningConv(input_shape[2], use_bias=whiten_bias, impl=layers.conv_impl, rngs=rngs)
        channels = self.whiten.kernel.shape[3]
        groups = []
        for base in widths:
            out = scaled(base, width)
            groups.append(ConvGroup(channels, out, layers, norm_momentum=norm_momentum, dirac=dirac, rngs=rngs))
            channels = out
        self.groups = nnx.List(groups)
        self.pool = GlobalPool(global_pool)
        self.head = Dense(channels, num_classes, use_bias=False, kernel_init=TORCH_DEFAULT, rngs=rngs)

    def fit_to_data(self, pixels: np.ndarray) -> None:
        """Fit the whitening layer to preprocessed training images (see `fit_whitening`)."""
        fit_whitening(self, pixels)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = activate(self.whiten(x), self.layers)
        for group in self.groups:
            x = group(x)
        return self.head(self.pool(x)) * self.logit_scale


@register_model("speednet", layer_options=("activation", "norm"), layer_defaults={"activation": "gelu"})
def speednet(*, input_shape: tuple[int, int, int], num_classes: int, rngs: nnx.Rngs, layers: LayerOptions,
             widths: Sequence[int] = (64, 256, 256), width: float = 1.0, whiten_eps: float = 5e-4,
             whiten_bias: bool = True, norm_momentum: float = 0.6, dirac: bool = True, global_pool: str = "max",
             logit_scale: float = 1 / 9) -> SpeedNet:
    check_width(width)
    widths = list(widths)
    if not widths or not all(isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in widths):
        raise UserError(f"model.widths must be a non-empty list of channel counts > 0, not {widths!r}")
    if global_pool not in GLOBAL_POOLS:
        raise UserError(f"unknown model.global_pool {global_pool!r}; choose one of {', '.join(GLOBAL_POOLS)}")
    for name, value in (("whiten_eps", whiten_eps), ("logit_scale", logit_scale)):
        if not (is_number(value) and value > 0):
            raise UserError(f"model.{name} must be a number > 0, not {value!r}")
    if not (is_number(norm_momentum) and 0 <= norm_momentum < 1):
        raise UserError(f"model.norm_momentum must be in [0, 1), not {norm_momentum!r}")
    for name, value in (("whiten_bias", whiten_bias), ("dirac", dirac)):
        if not isinstance(value, bool):
            raise UserError(f"model.{name} must be true or false, not {value!r}")
    layers.require_elementwise_activation("speednet", "its convolutions make one channel per output channel")
    return SpeedNet(input_shape=input_shape, num_classes=num_classes, rngs=rngs, layers=layers, widths=widths,
                    width=width, whiten_eps=float(whiten_eps), whiten_bias=whiten_bias,
                    norm_momentum=float(norm_momentum), dirac=dirac, global_pool=global_pool,
                    logit_scale=float(logit_scale))
