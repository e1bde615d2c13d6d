"""The small CNN that source text 000 (Hung-yi Lee's lecture on what a CNN learns) walks through.

With a 1x28x28 image: 25 3x3 filters -> 25x26x26 -> 2x2 max pool -> 25x13x13 -> 50 3x3
filters -> 50x11x11 -> 2x2 max pool -> 50x5x5 -> flatten (1,250) -> fully connected
network -> class outputs. Hence "valid" convolutions by default ("if we ignore what happens
at the image border") and pools that drop the last odd row and column, 11 -> 5, as the text
does. A map smaller than the 2x2 window (an 8x8 digit reaches the second pool at 1x1) keeps its
one partial window instead of vanishing.

"Fully connected network" is one hidden dense layer of `hidden` = 100 units: that is the
lecture's Keras example (Flatten, Dense(100), Dense(10)), and the text's "what does a neuron
do" experiment maximizes the neurons of exactly this layer, each of which sees the whole
image. `hidden=0` connects the flattened maps to the outputs directly. `width` multiplies the
filters and the hidden units. The text uses no normalization and no dropout, so both are off
by default; dropout acts on the hidden layer's outputs.

Parameters at 1x28x28 and 10 classes: 250 + 11,300 + 125,100 + 1,010 = 137,660.
"""

from __future__ import annotations

from flax import nnx

from cnnexp.errors import UserError
from cnnexp.models.alexnet import Conv, ConvNet, Pool
from cnnexp.models.layers import LayerOptions
from cnnexp.models.registry import register_model


@register_model("simple_cnn", layer_options=("activation", "pool", "norm", "padding"),
                layer_defaults={"padding": "valid", "norm": "none"})
def simple_cnn(*, input_shape: tuple[int, int, int], num_classes: int, rngs: nnx.Rngs, layers: LayerOptions,
               width: float = 1.0, hidden: int = 100, dropout: float = 0.0) -> ConvNet:
    if hidden < 0:
        raise UserError(f"model.hidden is a number of units (0 for none), not {hidden!r}")
    if dropout and not hidden:
        raise UserError("model.dropout acts on the hidden layer; with model.hidden=0 there is none")
    plan = (Conv(25), Pool(floor=True), Conv(50), Pool(floor=True))
    return ConvNet(plan, (hidden,) if hidden else (), input_shape=input_shape, num_classes=num_classes,
                   layers=layers, width=width, dropout=dropout, rngs=rngs)
