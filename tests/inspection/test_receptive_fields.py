"""Receptive fields in `cnnexp summary`'s rows, followed by hand through branches, sums, a capped
input and adaptive pooling."""

import jax.numpy as jnp
from flax import nnx

from cnnexp.inspection import summarize_module
from cnnexp.models.layers import AdaptiveAvgPool, Conv2d, Dense, GlobalPool, Pool2d


class _Branchy(nnx.Module):
    """An Inception-like concatenation of a 5x5 and a 1x1 branch, then a strided pool and a
    ResNet-like sum, small enough to follow every receptive field by hand."""

    def __init__(self, rngs: nnx.Rngs):
        self.stem = Conv2d(1, 4, 3, rngs=rngs)  # rf 3
        self.large = Conv2d(4, 4, 5, rngs=rngs)  # rf 3 + 4 = 7
        self.small = Conv2d(4, 4, 1, rngs=rngs)  # rf 3
        self.pool = Pool2d("max", 2)  # on the concatenation: max(7, 3) + 1 = 8, then steps of 2
        self.res = Conv2d(8, 8, 3, rngs=rngs)  # 8 + 2 * 2 = 12
        self.mix = Conv2d(8, 8, 1, rngs=rngs)  # on pool + res: max(8, 12) = 12
        self.gap = GlobalPool()
        self.head = Dense(8, 3, rngs=rngs)

    def __call__(self, x):
        x = self.stem(x)
        x = jnp.concatenate([self.large(x), self.small(x)], axis=-1)
        x = self.pool(x)
        x = x + self.res(x)
        return self.head(self.gap(self.mix(x)))


def test_receptive_fields_through_branches_and_sums():
    summary = summarize_module(nnx.eval_shape(lambda: _Branchy(nnx.Rngs(0))), (16, 16, 1))
    fields = {row.name: row.receptive_field for row in summary.rows}
    assert fields == {"stem": (3, 3), "large": (7, 7), "small": (3, 3), "pool": (8, 8), "res": (12, 12),
                      "mix": (12, 12), "gap": "global", "head": "global"}


def test_receptive_fields_are_shown_capped_at_the_input():
    branchy = nnx.eval_shape(lambda: _Branchy(nnx.Rngs(0)))
    rows = {row.name: row for row in summarize_module(branchy, (6, 6, 1)).rows}
    assert rows["res"].receptive_field == rows["mix"].receptive_field == (6, 6)
    assert rows["res"].receptive_field_theoretical == rows["mix"].receptive_field_theoretical == (12, 12)


class _Adaptive(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.conv = Conv2d(1, 2, 3, rngs=rngs)  # rf 3
        self.pool = AdaptiveAvgPool(2)  # 8 rows -> 2 windows of 4 conv rows, spanning pixels -1..4 and 3..8
        self.mix = Conv2d(2, 2, 1, rngs=rngs)  # still one window each

    def __call__(self, x):
        return self.mix(self.pool(self.conv(x)))


def test_adaptive_pooling_keeps_its_windows_apart():
    fields = {row.name: row.receptive_field
              for row in summarize_module(nnx.eval_shape(lambda: _Adaptive(nnx.Rngs(0))), (8, 8, 1)).rows}
    assert fields == {"conv": (3, 3), "pool": (6, 6), "mix": (6, 6)}
