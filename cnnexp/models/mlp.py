"""A dense-only baseline: flatten the image, `hidden` fully connected layers, class logits.

Source text 001 says a convolution is translation-invariant because one filter is applied at
every position, and a dense layer is not: each of its weights belongs to one pixel, so an
object moved by a pixel meets different weights. This model is the other side of that
comparison (`cnnexp evaluate invariance=true`, `make reproduce-invariance`). With the default
`hidden=[256, 128]` it has 235,146 parameters on 28x28x1 and 10 classes (200,960 + 32,896 +
1,290), about four times LeNet's. `hidden=[]` is multinomial logistic regression on the pixels.

It is `alexnet.Classifier` on its own: activation, then dropout, after each hidden layer; with
maxout each hidden layer makes two pieces per unit. There are no convolutions or pools, so
`conv_impl` and `pool_impl` (which every model takes) change nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from flax import nnx

from cnnexp.errors import UserError
from cnnexp.models.alexnet import Classifier
from cnnexp.models.layers import LayerOptions, check_dropout
from cnnexp.models.registry import register_model


def _is_units(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


@register_model("mlp", layer_options=("activation",))
def mlp(*, input_shape: tuple[int, int, int], num_classes: int, rngs: nnx.Rngs, layers: LayerOptions,
        hidden: Sequence[int] = (256, 128), dropout: float = 0.0) -> Classifier:
    if isinstance(hidden, str | bytes) or not isinstance(hidden, Sequence) or not all(map(_is_units, hidden)):
        raise UserError(f"model.hidden is a list of layer widths such as [256,128] ([] for none), not {hidden!r}")
    check_dropout(dropout)
    if dropout and not hidden:
        raise UserError("model.dropout acts on the hidden layers; with model.hidden=[] there are none")
    return Classifier(math.prod(input_shape), list(hidden), num_classes, layers, dropout=dropout, rngs=rngs)
