"""LeNet-5 (LeCun et al., 1998): C1 6@5x5, S2, C3 16@5x5, S4, F5 120, F6 84, output layer.

The paper fed 32x32 inputs and padded MNIST's 28x28 digits to that size so strokes near the
border still fall in the centre of C1's receptive fields; smaller inputs are zero-padded to
32x32 the same way, so the layer shapes and parameter count (61,706 for 1x28x28, 10 classes)
are the classic ones. ReLU and max pooling are the default; `activation=tanh pool=avg` is
close to the original.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from cnnexp.models.layers import Conv2d, Dense, LayerOptions, Pool2d, activate
from cnnexp.models.registry import register_model

PAPER_INPUT_SIZE = 32


def _centre_padding(size: int) -> tuple[int, int]:
    """Zeros before and after an axis of `size` pixels to reach the paper's 32."""
    total = max(0, PAPER_INPUT_SIZE - size)
    return total // 2, total - total // 2


class LeNet5(nnx.Module):
    def __init__(self, *, input_shape: tuple[int, int, int], num_classes: int, rngs: nnx.Rngs, layers: LayerOptions):
        height, width, channels = input_shape
        self.layers = layers
        self.padding = (_centre_padding(height), _centre_padding(width))
        pieces = layers.pieces
        self.conv1 = Conv2d(channels, 6 * pieces, 5, padding="valid", impl=layers.conv_impl, rngs=rngs)
        self.pool1 = Pool2d(layers.pool, 2, padding="valid", impl=layers.pool_impl)
        self.conv2 = Conv2d(6, 16 * pieces, 5, padding="valid", impl=layers.conv_impl, rngs=rngs)
        self.pool2 = Pool2d(layers.pool, 2, padding="valid", impl=layers.pool_impl)
        padded = [size + sum(pad) for size, pad in zip((height, width), self.padding, strict=True)]
        final = [((size - 4) // 2 - 4) // 2 for size in padded]
        self.fc1 = Dense(16 * final[0] * final[1], 120 * pieces, rngs=rngs)
        self.fc2 = Dense(120, 84 * pieces, rngs=rngs)
        self.head = Dense(84, num_classes, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = jnp.pad(x, ((0, 0), *self.padding, (0, 0)))
        x = self.pool1(activate(self.conv1(x), self.layers))
        x = self.pool2(activate(self.conv2(x), self.layers))
        x = x.reshape(x.shape[0], -1)
        x = activate(self.fc1(x), self.layers)
        x = activate(self.fc2(x), self.layers)
        return self.head(x)


@register_model("lenet", layer_options=("activation", "pool"))
def lenet(*, input_shape: tuple[int, int, int], num_classes: int, rngs: nnx.Rngs, layers: LayerOptions) -> LeNet5:
    return LeNet5(input_shape=input_shape, num_classes=num_classes, rngs=rngs, layers=layers)
