import jax.numpy as jnp
import pytest
from flax import nnx

from cnnexp.errors import UserError
from cnnexp.models import count_params, create_model
from cnnexp.models.densenet import DenseLayer, Transition

TINY = {"growth_rate": 4, "block_layers": [2, 3]}  # stem 8 channels, 16 -> 8 after block 1, 20 at the end


def build(options=None, shape=(8, 8, 1), classes=10):
    return create_model("densenet", options or {}, input_shape=shape, num_classes=classes, rngs=nnx.Rngs(0))


def build_abstract(options, shape, classes):
    """The model with shapes only: no parameters are allocated."""
    return nnx.eval_shape(lambda: build(options, shape, classes))


@pytest.mark.slow
def test_densenet_121_has_torchvisions_parameter_count():
    model = build_abstract({"growth_rate": 32, "block_layers": [6, 12, 24, 16]}, (224, 224, 3), 1000)
    assert model.stem.kind == "imagenet"
    assert count_params(model) == 7_978_856


def test_default_is_densenet_bc_100():
    # A dense layer with c inputs: BN 2c + 1x1 conv 48c + BN 96 + 3x3 conv 9*48*12 = 50c + 5,280.
    # Stem 3x3x3x24 = 648. Block 1 (c = 24, 36, ..., 204): 50 * 1,824 + 16 * 5,280 = 175,680, out 216.
    # Transition 216 -> 108: 432 + 23,328. Block 2 (c from 108): 242,880, out 300. Transition
    # 300 -> 150: 600 + 45,000. Block 3 (c from 150): 276,480, out 342. Final BN 684, dense 3,430.
    model = build_abstract({}, (32, 32, 3), 10)
    assert model.stem.kind == "small"
    assert [len(stage) for stage in model.stages] == [17, 17, 16]
    assert count_params(model) == 769_162


def test_layers_add_growth_channels_and_transitions_compress():
    model = build_abstract(TINY, (8, 8, 1), 10)
    first, second = model.stages
    assert [type(m) for m in first] == [DenseLayer, DenseLayer, Transition]
    assert [type(m) for m in second] == [DenseLayer] * 3
    assert model.stem.conv.kernel.shape == (3, 3, 1, 8)
    assert [layer.bottleneck.conv.kernel.shape for layer in first[:2]] == [(1, 1, 8, 16), (1, 1, 12, 16)]
    assert first[0].conv.conv.kernel.shape == (3, 3, 16, 4)
    assert first[2].conv.conv.kernel.shape == (1, 1, 16, 8)
    assert model.head.kernel.shape == (20, 10)
    out = nnx.eval_shape(lambda m: m.stages[0][0](jnp.ones((2, 8, 8, 8))), model)
    assert out.shape == (2, 8, 8, 12)


def test_width_scales_the_growth_rate_and_the_stem():
    model = build_abstract({"growth_rate": 12, "block_layers": [2], "width": 0.5}, (8, 8, 1), 10)
    assert model.stem.conv.kernel.shape == (3, 3, 1, 12)
    assert model.head.kernel.shape == (12 + 2 * 6, 10)


@pytest.mark.parametrize(("size", "stem", "stem_out"), [(224, "imagenet", 56), (32, "small", 32)])
def test_auto_stem_is_imagenet_from_112_pixels(size, stem, stem_out):
    model = build_abstract(TINY, (size, size, 3), 10)
    assert model.stem.kind == stem
    out = nnx.eval_shape(lambda m: m.stem(jnp.ones((1, size, size, 3))), model)
    assert out.shape == (1, stem_out, stem_out, 8)


def test_transitions_never_shrink_a_map_to_nothing():
    # 8 -> 4 -> 2 -> 1 -> 1: 2x2 average pools with "ceil" padding keep a 1x1 map.
    model = build_abstract({"growth_rate": 2, "block_layers": [1] * 5}, (8, 8, 1), 10)

    def stage_outputs(m):
        x, outputs = m.stem(jnp.ones((2, 8, 8, 1))), []
        for stage in m.stages:
            for module in stage:
                x = module(x)
            outputs.append(x)
        return outputs

    assert [out.shape[1:3] for out in nnx.eval_shape(stage_outputs, model)] == [(4, 4), (2, 2), (1, 1), (1, 1), (1, 1)]
    assert nnx.eval_shape(lambda m: m(jnp.ones((2, 8, 8, 1))), model).shape == (2, 10)


def test_maxout_is_refused():
    with pytest.raises(UserError, match="densenet cannot use model.activation=maxout: its layers are pre-activation"):
        build({**TINY, "activation": "maxout"})


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"block_layers": []}, "model.block_layers must be a list of positive integers"),
        ({"block_layers": [6, 0]}, "model.block_layers must be a list of positive integers"),
        ({"block_layers": 6}, "model.block_layers must be a list of positive integers"),
        ({"growth_rate": 0}, "model.growth_rate must be a positive integer"),
        ({"compression": 0}, r"model.compression must be in \(0, 1\]"),
        ({"dropout": 1.0}, r"model.dropout must be in \[0, 1\)"),
        ({"stem": "big"}, "unknown model.stem 'big'"),
        ({"pool": "max"}, "no option model.pool"),
    ],
)
def test_bad_options_are_user_errors(options, message):
    with pytest.raises(UserError, match=message):
        build(options)
