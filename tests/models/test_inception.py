"""Inception: the reduced and the naive block, and the GoogLeNet-style network."""

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from cnnexp.models import count_params, create_model
from cnnexp.models.inception import BlockWidths, InceptionBlock
from cnnexp.models.layers import LayerOptions

BLOCK_3A = BlockWidths(64, 96, 128, 16, 32, 32)  # GoogLeNet Table 1, on 192 input channels


@pytest.mark.slow
def test_one_block_by_hand():
    plain = LayerOptions(norm="none")
    reduced = InceptionBlock(192, BLOCK_3A, plain, reduce=True, rngs=nnx.Rngs(0))
    naive = InceptionBlock(192, BLOCK_3A, plain, reduce=False, rngs=nnx.Rngs(0))
    # 1x1: 192*64+64 = 12,352; reduce 192*96+96 = 18,528, 3x3 9*96*128+128 = 110,720;
    # reduce 192*16+16 = 3,088, 5x5 25*16*32+32 = 12,832; pool projection 192*32+32 = 6,176.
    assert count_params(reduced) == 12_352 + 18_528 + 110_720 + 3_088 + 12_832 + 6_176 == 163_696
    # 1x1 12,352; 3x3 on all 192 channels 9*192*128+128 = 221,312; 5x5 25*192*32+32 = 153,632; pool: none.
    assert count_params(naive) == 12_352 + 221_312 + 153_632 == 387_296
    # Output depth: 64+128+32+32 = 256 reduced; the naive block passes the 192 pooled channels on.
    assert reduced.out_features == 256
    assert naive.out_features == 64 + 128 + 32 + 192
    x = jnp.ones((1, 5, 5, 192))
    assert jax.eval_shape(reduced, x).shape == (1, 5, 5, 256)
    assert jax.eval_shape(naive, x).shape == (1, 5, 5, 416)


def test_batch_norm_replaces_the_conv_biases():
    block = InceptionBlock(192, BLOCK_3A, LayerOptions(norm="batch"), reduce=True, rngs=nnx.Rngs(0))
    biases = 64 + 96 + 128 + 16 + 32 + 32
    assert count_params(block) == 163_696 - biases + 2 * biases


@pytest.mark.slow
def test_naive_network_has_more_parameters():
    def params(reduce):
        return count_params(nnx.eval_shape(lambda: create_model(
            "inception", {"reduce": reduce}, input_shape=(28, 28, 1), num_classes=10, rngs=nnx.Rngs(0))))

    assert params(True) == 5_868_458
    assert params(False) > 15 * params(True)
