import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from cnnexp.errors import UserError
from cnnexp.models import count_params, create_model
from cnnexp.models.resnet import PreActBlock, Projection, ResidualBlock

TINY = {"width": 0.125}  # 8, 16, 32, 64 channels: fast forward passes


def build(options=None, shape=(8, 8, 1), classes=10):
    return create_model("resnet", options or {}, input_shape=shape, num_classes=classes, rngs=nnx.Rngs(0))


def build_abstract(options, shape=(224, 224, 3), classes=1000):
    """The model with shapes only: no parameters are allocated."""
    return nnx.eval_shape(lambda: build(options, shape, classes))


@pytest.mark.parametrize(("depth", "params"), [(18, 11_689_512), (34, 21_797_672), (50, 25_557_032)])
def test_imagenet_resnets_have_torchvisions_parameter_counts(depth, params):
    model = build_abstract({"depth": depth})
    assert model.stem.kind == "imagenet"
    assert count_params(model) == params


def test_projection_shortcuts_exactly_where_shapes_change():
    resnet18 = build_abstract({"depth": 18}, shape=(32, 32, 3))
    # Stage 1 keeps 64 channels at stride 1; stages 2-4 open with stride 2 and twice the channels.
    assert [[isinstance(b.shortcut, Projection) for b in stage] for stage in resnet18.stages] == [
        [False, False], [True, False], [True, False], [True, False]
    ]
    assert [stage[0].units[0].conv.stride for stage in resnet18.stages] == [1, 2, 2, 2]
    resnet50 = build_abstract({"depth": 50}, shape=(32, 32, 3), classes=10)
    # Bottleneck stage 1 goes 64 -> 256 channels, so it projects too, at stride 1.
    assert [len(stage) for stage in resnet50.stages] == [3, 4, 6, 3]
    assert all(isinstance(stage[0].shortcut, Projection) for stage in resnet50.stages)
    assert all(block.shortcut is None for stage in resnet50.stages for block in stage[1:])
    assert [stage[0].shortcut.conv.stride for stage in resnet50.stages] == [1, 2, 2, 2]
    assert resnet50.head.kernel.shape == (2048, 10)


def test_width_scales_every_channel_count():
    model = build_abstract({"depth": 50, "width": 0.25}, shape=(32, 32, 3), classes=10)
    assert model.stem.conv.kernel.shape == (3, 3, 3, 16)
    assert model.head.kernel.shape == (128 * 4, 10)


@pytest.mark.parametrize(
    ("size", "stem", "stem_out"), [(224, "imagenet", 56), (112, "imagenet", 28), (111, "small", 111), (32, "small", 32)]
)
def test_auto_stem_is_imagenet_from_112_pixels(size, stem, stem_out):
    model = build_abstract(TINY, shape=(size, size, 3))
    assert model.stem.kind == stem
    out = nnx.eval_shape(lambda m: m.stem(jnp.ones((1, size, size, 3))), model)
    assert out.shape == (1, stem_out, stem_out, 8)


@pytest.mark.slow
def test_imagenet_stem_works_on_8x8_digits():
    model = build({**TINY, "stem": "imagenet"})
    model.eval()
    logits = model(jnp.ones((2, 8, 8, 1)))
    assert logits.shape == (2, 10) and bool(jnp.all(jnp.isfinite(logits)))


@pytest.mark.slow
def test_blocks_start_as_the_identity():
    # The last batch norm of each residual branch starts at scale 0, so a block with an identity
    # shortcut computes activation(x + 0) at initialization.
    model = build(TINY)
    block = model.stages[0][1]
    assert isinstance(block, ResidualBlock) and block.shortcut is None
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 8))
    np.testing.assert_allclose(block(x), jax.nn.relu(x))


@pytest.mark.slow
def test_preact_blocks_change_the_forward_not_the_interface():
    x = jax.random.normal(jax.random.key(1), (2, 8, 8, 1))
    post, pre = build(TINY), build({**TINY, "preact": True})
    post.eval(), pre.eval()
    assert all(isinstance(b, PreActBlock) for stage in pre.stages for b in stage)
    assert post.final_norm is None and pre.final_norm is not None
    # No BN-activation in the stem and none in projections: the next pre-activation does it.
    assert pre.stem.norm.batch_norm is None and pre.stages[1][0].shortcut.norm.batch_norm is None
    y_post, y_pre = post(x), pre(x)
    assert y_post.shape == y_pre.shape == (2, 10)
    assert bool(jnp.all(jnp.isfinite(y_pre))) and not jnp.allclose(y_post, y_pre)


def test_maxout_is_refused():
    with pytest.raises(UserError, match="resnet cannot use model.activation=maxout: the activation after each"):
        build({"activation": "maxout"})


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"depth": 101}, "unknown model.depth 101; choose one of 18, 34, 50"),
        ({"stem": "cifar"}, "unknown model.stem 'cifar'; choose one of auto, small, imagenet"),
        ({"width": 0}, "model.width must be a positive number"),
        ({"preact": "yes"}, "model.preact must be true or false"),
        ({"padding": "valid"}, "no option model.padding"),
    ],
)
def test_bad_options_are_user_errors(options, message):
    with pytest.raises(UserError, match=message):
        build(options)


def test_norm_none_gives_every_conv_a_bias_and_no_batch_statistics():
    model = build({**TINY, "norm": "none"})
    assert not jax.tree.leaves(nnx.state(model, nnx.BatchStat))
    convs = [m for _, m in nnx.iter_graph(model) if hasattr(m, "kernel_size")]
    assert convs and all(c.bias is not None for c in convs)
    model.eval()
    assert bool(jnp.all(jnp.isfinite(model(jnp.ones((2, 8, 8, 1))))))


@pytest.mark.slow
def test_conv_and_pool_implementations_reach_every_layer():
    x = jax.random.normal(jax.random.key(3), (2, 16, 16, 1))
    options = {**TINY, "stem": "imagenet"}
    library = build(options, shape=(16, 16, 1))
    reference = build({**options, "conv_impl": "im2col", "pool_impl": "reference"}, shape=(16, 16, 1))
    assert reference.stem.conv.impl == "im2col" and reference.stem.pool.impl == "reference"
    assert reference.stages[3][0].shortcut.conv.impl == "im2col"
    library.eval(), reference.eval()
    np.testing.assert_allclose(library(x), reference(x), rtol=1e-4, atol=1e-4)
