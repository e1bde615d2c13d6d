"""Inception-ResNet: one residual block by hand, the reductions, the grids and the paper's widths."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers.models import layer_records

from cnnexp.errors import UserError
from cnnexp.models import count_params, create_model
from cnnexp.models.inception_resnet import VARIANTS, ReductionBlock, ResidualInceptionBlock
from cnnexp.models.layers import LayerOptions

PLAIN = LayerOptions(norm="none")  # convolutions with biases and nothing else: counts by hand


def abstract(options: dict, shape=(28, 28, 1)) -> nnx.Module:
    return nnx.eval_shape(lambda: create_model("inception_resnet", options, input_shape=shape, num_classes=10,
                                               rngs=nnx.Rngs(0)))


def test_block_a_by_hand():
    block = ResidualInceptionBlock(256, VARIANTS["v1"].block_a, PLAIN, width=1.0, scale=0.2, rngs=nnx.Rngs(0))
    one_by_one, three_by_three = 256 * 32 + 32, 9 * 32 * 32 + 32
    # Figure 10: 1x1 32 | 1x1 32, 3x3 32 | 1x1 32, 3x3 32, 3x3 32; then the linear 1x1 from 96 back to 256.
    projection = 96 * 256 + 256
    assert count_params(block) == 3 * one_by_one + 3 * three_by_three + projection == 77_248


def test_the_skip_connection_carries_the_input_past_a_silent_residual():
    block = ResidualInceptionBlock(8, VARIANTS["v1"].block_b, PLAIN, width=0.25, scale=0.2, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (2, 5, 5, 8))
    assert not jnp.allclose(block(x), jax.nn.relu(x))
    block.project.kernel[...] = jnp.zeros_like(block.project.kernel[...])  # the bias starts at zero
    np.testing.assert_array_equal(np.asarray(block(x)), np.asarray(jax.nn.relu(x)))


def test_the_residual_is_scaled_before_the_sum():
    x = jax.random.normal(jax.random.key(0), (2, 5, 5, 8))
    linear = LayerOptions(norm="none", activation="gelu")
    residuals = []
    for scale in (0.1, 0.3):
        block = ResidualInceptionBlock(8, VARIANTS["v1"].block_c, linear, width=0.25, scale=scale, rngs=nnx.Rngs(0))
        mixed = jnp.concatenate([branch(x) for branch in block.branches], axis=-1)
        np.testing.assert_allclose(block(x), jax.nn.gelu(x + scale * block.project(mixed)), rtol=1e-6)
        residuals.append(block.project(mixed))
    np.testing.assert_allclose(*residuals, rtol=1e-6)  # same weights: only the scale differs


def test_reduction_a_halves_the_map_and_deepens_it():
    # Figure 7 with v1's k, l, m, n = 192, 192, 256, 384: 256 pooled + 384 + 256 = 896 channels.
    block = ReductionBlock(256, VARIANTS["v1"].reduction_a, PLAIN, width=1.0, rngs=nnx.Rngs(0))
    assert block.out_features == 896
    assert jax.eval_shape(block, jnp.ones((1, 14, 14, 256))).shape == (1, 7, 7, 896)


@pytest.mark.slow  # building 20 blocks, even abstractly, takes seconds
@pytest.mark.parametrize(("variant", "depths", "params"), [
    ("v1", (256, 896, 1792), 20_980_682),
    ("v2", (384, 1152, 2144), 30_541_066),
])
def test_each_variants_depths_and_parameters_on_fashion_mnist(variant, depths, params):
    model = abstract({"variant": variant})
    assert [[block.project.kernel.shape[-1] for block in stage if isinstance(block, ResidualInceptionBlock)]
            for stage in model.stages] == [[depths[0]] * 5, [depths[1]] * 10, [depths[2]] * 5]
    assert count_params(model) == params


@pytest.mark.parametrize(("shape", "grids"), [((28, 28, 1), (14, 7, 4)), ((32, 32, 3), (16, 8, 4)),
                                              ((8, 8, 1), (4, 2, 1))])
def test_blocks_a_b_c_run_on_grids_like_googlenets(shape, grids):
    records = layer_records("inception_resnet", {"blocks": [1, 1, 1], "width": 0.125}, shape)
    # The stem's first convolutions see the whole image; its pool and the two reductions halve it.
    assert sorted({r.output_shape[1] for r in records if r.kind == "conv"}, reverse=True) == [shape[0], *grids]


def test_b_and_c_blocks_use_factorized_kernels():
    records = layer_records("inception_resnet", {"blocks": [1, 1, 1], "width": 0.125}, (28, 28, 1))
    kernels = {r.info["kernel"] for r in records if r.kind == "conv"}
    assert {(1, 7), (7, 1), (1, 3), (3, 1)} <= kernels


def test_no_blocks_leaves_the_stem_and_the_reductions():
    model = abstract({"blocks": [0, 0, 0], "width": 0.125})
    assert [[type(block).__name__ for block in stage] for stage in model.stages] == \
        [["ReductionBlock"], ["ReductionBlock"], []]


@pytest.mark.parametrize(("option", "message"), [
    ({"variant": "v3"}, "model.variant 'v3'"),
    ({"blocks": [5, 10]}, "model.blocks must be 3 integers"),
    ({"blocks": [1, -1, 1]}, "model.blocks must be 3 integers"),
    ({"blocks": "5,10,5"}, "model.blocks must be 3 integers"),
    ({"residual_scale": 0}, "model.residual_scale"),
    ({"residual_scale": True}, "model.residual_scale"),
    ({"residual_scale": float("inf")}, "model.residual_scale"),
    ({"activation": "maxout"}, "cannot use model.activation=maxout"),
    ({"padding": "valid"}, "no option model.padding"),
])
def test_bad_options_are_user_errors(option, message):
    with pytest.raises(UserError, match=message):
        create_model("inception_resnet", option, input_shape=(28, 28, 1), num_classes=10, rngs=nnx.Rngs(0))
