"""The PyTorch twins of the plain models hold cnnexp's parameters and compute its function."""

from __future__ import annotations

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from flax import nnx  # noqa: E402
from helpers.paths import CONF_MODEL  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from cnnexp.bench.torch_models import UnsupportedReference, reference_model, reference_names  # noqa: E402
from cnnexp.bench.torch_models.transfer import copy_weights  # noqa: E402
from cnnexp.models import count_params, create_model  # noqa: E402
from cnnexp.models.layers import LocalResponseNorm  # noqa: E402

SHAPE = (28, 28, 1)  # Fashion-MNIST
NARROW = {"width": 0.25}  # the *_fashion_mnist_cpu presets

# (id, model, overrides of conf/model/<model>.yaml)
FORWARD_CASES = [
    ("lenet", "lenet", {}),
    ("lenet-classic", "lenet", {"activation": "tanh", "pool": "avg"}),
    ("lenet-maxout", "lenet", {"activation": "maxout"}),
    ("mlp", "mlp", {}),
    ("mlp-gelu-dropout", "mlp", {"activation": "gelu", "hidden": [64], "dropout": 0.3}),
    ("simple_cnn", "simple_cnn", {}),
    ("simple_cnn-same-batch-sigmoid", "simple_cnn", {"padding": "same", "norm": "batch", "activation": "sigmoid"}),
    ("vgg-cpu", "vgg", NARROW),
    ("vgg11-batch-avg", "vgg", {**NARROW, "variant": "vgg11", "norm": "batch", "pool": "avg"}),
    ("alexnet-cpu", "alexnet", NARROW),
    ("alexnet-avg-leaky", "alexnet", {**NARROW, "pool": "avg", "activation": "leaky_relu"}),
    ("alexnet_lite-cpu", "alexnet_lite", NARROW),
    ("alexnet_lite-batch-maxout", "alexnet_lite", {**NARROW, "norm": "batch", "activation": "maxout"}),
    ("zfnet-cpu", "zfnet", {**NARROW, "norm": "batch"}),
    ("zfnet-imagenet-avg-tanh", "zfnet", {**NARROW, "variant": "imagenet", "pool": "avg", "activation": "tanh"}),
    ("zfnet-no-contrast-norm-maxout-wide-middle", "zfnet", {**NARROW, "contrast_norm": False, "activation": "maxout",
                                                            "middle_widths": [512, 1024, 512]}),
]
FULL_WIDTH = ["lenet", "mlp", "simple_cnn", "vgg", "alexnet", "alexnet_lite", "zfnet"]


def _options(name: str, overrides: dict) -> dict:
    options = OmegaConf.to_container(OmegaConf.load(CONF_MODEL / f"{name}.yaml"))
    del options["name"]
    return {**options, **overrides}


def _flax_model(name: str, options: dict) -> nnx.Module:
    """`create_model`'s module filled with random numbers instead of its initializers (whose
    per-shape compilation costs seconds a model). Biases, norm scales and batch statistics get
    random values too, so a misplaced one shows in the outputs."""
    abstract = nnx.eval_shape(lambda: create_model(name, options, input_shape=SHAPE, num_classes=10,
                                                   rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(abstract)
    rng = np.random.default_rng(1)

    def draw(path, leaf):
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            return jax.random.key(0)
        if not np.issubdtype(leaf.dtype, np.floating):
            return np.zeros(leaf.shape, leaf.dtype)
        if path[-1].key == "var":
            return rng.uniform(0.5, 1.5, leaf.shape).astype(leaf.dtype)
        if len(leaf.shape) >= 2:  # kernels: unit variance out
            return (rng.normal(size=leaf.shape) / np.sqrt(np.prod(leaf.shape[:-1]))).astype(leaf.dtype)
        return (float(path[-1].key == "scale") + rng.normal(0, 0.1, leaf.shape)).astype(leaf.dtype)

    nnx.replace_by_pure_dict(state, jax.tree_util.tree_map_with_path(draw, nnx.to_pure_dict(state)))
    return nnx.merge(graphdef, state)


def _torch_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_every_plain_model_has_a_reference():
    assert set(FULL_WIDTH) <= set(reference_names())


@pytest.mark.parametrize("name", FULL_WIDTH)
def test_parameter_count_at_the_default_config(name):
    options = _options(name, {})
    flax_model = nnx.eval_shape(lambda: create_model(name, options, input_shape=SHAPE, num_classes=10,
                                                     rngs=nnx.Rngs(0)))
    with torch.device("meta"):
        torch_model = reference_model(name, options, input_shape=SHAPE, num_classes=10)
    assert _torch_params(torch_model) == count_params(flax_model)


@pytest.mark.parametrize(("name", "overrides"), [(name, o) for _, name, o in FORWARD_CASES],
                         ids=[case_id for case_id, _, _ in FORWARD_CASES])
def test_same_weights_give_the_same_logits(name, overrides):
    options = _options(name, overrides)
    flax_model = _flax_model(name, options)
    torch_model = reference_model(name, options, input_shape=SHAPE, num_classes=10)
    assert _torch_params(torch_model) == count_params(flax_model)
    copy_weights(flax_model, torch_model)
    flax_model.eval()
    torch_model.eval()
    x = np.random.default_rng(2).normal(size=(2, *SHAPE)).astype(np.float32)
    expected = np.asarray(flax_model(x))
    with torch.no_grad():
        got = torch_model(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
    assert got.shape == expected.shape == (2, 10)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_contrast_normalization_matches_where_it_bites():
    # With the random weights above the sums of squares are far below k = 2, so the layer is nearly a
    # constant factor there; activations of about 30 make its neighbourhood sums count.
    flax_norm = next(m for _, m in _flax_model("zfnet", _options("zfnet", NARROW)).iter_modules()
                     if isinstance(m, LocalResponseNorm))
    torch_norm = next(m for m in reference_model("zfnet", _options("zfnet", NARROW), input_shape=SHAPE,
                                                 num_classes=10).modules() if isinstance(m, torch.nn.LocalResponseNorm))
    x = np.random.default_rng(3).normal(0, 30, (2, 5, 5, 12)).astype(np.float32)
    with torch.no_grad():
        got = torch_norm(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(got, np.asarray(flax_norm(x)), rtol=1e-5)


@pytest.mark.parametrize(("name", "overrides", "message"), [
    ("lenet", {"norm": "batch"}, "option"),
    ("vgg", {"variant": "vgg99"}, "vgg99"),
    ("simple_cnn", {"activation": "swish"}, "swish"),
    ("zfnet", {"variant": "tiny"}, "variant='tiny'"),
], ids=["unknown-option", "unknown-variant", "unknown-activation", "zfnet-unknown-variant"])
def test_what_the_reference_cannot_mirror_raises(name, overrides, message):
    with pytest.raises(UnsupportedReference, match=message):
        reference_model(name, _options(name, overrides), input_shape=SHAPE, num_classes=10)
