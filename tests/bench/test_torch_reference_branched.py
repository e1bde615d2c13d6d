"""The PyTorch twins of resnet, inception, inception_resnet and densenet compute the cnnexp models' function: same
parameter count, and the same logits once the Flax weights are copied over."""

import pytest

torch = pytest.importorskip("torch")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402
from helpers.paths import CONF_MODEL  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from cnnexp.bench.torch_models import UnsupportedReference, reference_model  # noqa: E402
from cnnexp.bench.torch_models.transfer import copy_weights, flax_arrays, torch_name  # noqa: E402
from cnnexp.models import count_params, create_model  # noqa: E402

FASHION = (28, 28, 1)
CIFAR = (32, 32, 3)
TOLERANCE = {"rtol": 1e-4, "atol": 1e-4}


def model_options(name: str, **overrides) -> dict:
    """`conf/model/<name>.yaml` without `name`, as `cnnexp bench` passes it, plus overrides."""
    conf = OmegaConf.to_container(OmegaConf.load(CONF_MODEL / f"{name}.yaml"))
    conf.pop("name")
    return {**conf, **overrides}


def random_weights(model: nnx.Module) -> None:
    """Random kernels (He scale), batch-norm scales, biases and statistics: drawn by NumPy, much
    faster than Flax's initializers run eagerly, and no residual branch starts at zero scale."""
    rng = np.random.default_rng(0)
    state = nnx.state(model, nnx.Any(nnx.Param, nnx.BatchStat))

    def draw(path, value):
        leaf = str(path[-1].key)
        if leaf == "kernel":
            array = rng.normal(0.0, np.sqrt(2 / np.prod(value.shape[:-1])), value.shape)
        elif leaf in ("scale", "var"):
            array = rng.uniform(0.5, 1.5, value.shape)
        else:
            array = rng.normal(0.0, 0.2, value.shape)
        return array.astype(np.float32)

    nnx.replace_by_pure_dict(state, jax.tree_util.tree_map_with_path(draw, nnx.to_pure_dict(state)))
    nnx.update(model, state)


def twins(name: str, options: dict, shape: tuple[int, int, int]):
    """The Flax model (random weights) and its PyTorch twin holding the same weights."""
    flax_model = nnx.eval_shape(lambda: create_model(name, options, input_shape=shape, num_classes=10,
                                                     rngs=nnx.Rngs(0)))
    random_weights(flax_model)
    for dropout in [node for _, node in nnx.iter_graph(flax_model) if isinstance(node, nnx.Dropout)]:
        dropout.rngs = None  # eval_shape left its RNG state abstract; eval mode never draws from it
    torch_model = reference_model(name, options, input_shape=shape, num_classes=10)
    assert sum(p.numel() for p in torch_model.parameters()) == count_params(flax_model)
    copy_weights(flax_model, torch_model)
    return flax_model, torch_model


@nnx.jit
def flax_logits(model: nnx.Module, x: jax.Array) -> jax.Array:
    """One compiled forward (much faster than eager ops); updates batch statistics in train mode."""
    return model(x)


def images(shape: tuple[int, int, int]) -> np.ndarray:
    return np.random.default_rng(1).normal(size=(2, *shape)).astype(np.float32)


def torch_logits(torch_model, x: np.ndarray) -> np.ndarray:
    """Logits of NHWC images `x`, given to PyTorch as NCHW."""
    return torch_model(torch.from_numpy(x).permute(0, 3, 1, 2)).detach().numpy()


CASES = {
    "resnet_cpu": ("resnet", {"width": 0.25, "stem": "small"}, FASHION),
    "resnet_default": ("resnet", {}, FASHION),
    "resnet50": ("resnet", {"depth": 50, "width": 0.25}, FASHION),
    "resnet_preact": ("resnet", {"preact": True, "width": 0.25}, FASHION),
    "resnet_cifar": ("resnet", {"width": 0.25}, CIFAR),
    "resnet_imagenet_stem_gelu_no_norm": ("resnet", {"width": 0.25, "stem": "imagenet", "activation": "gelu",
                                                     "norm": "none"}, FASHION),
    "inception_cpu": ("inception", {"width": 0.125}, FASHION),
    "inception_naive_avg_leaky": ("inception", {"width": 0.0625, "reduce": False, "pool": "avg",
                                                "activation": "leaky_relu"}, FASHION),
    "inception_resnet_cpu": ("inception_resnet", {"width": 0.125, "blocks": [1, 2, 1]}, FASHION),
    "inception_resnet_v2_avg_gelu_no_norm": ("inception_resnet", {"variant": "v2", "width": 0.0625, "blocks": [1, 1, 1],
                                                                  "pool": "avg", "activation": "gelu", "norm": "none",
                                                                  "residual_scale": 0.5}, CIFAR),
    "inception_resnet_digits": ("inception_resnet", {"width": 0.0625, "blocks": [1, 1, 1]}, (8, 8, 1)),
    "densenet_cpu": ("densenet", {"growth_rate": 8, "block_layers": [4, 4, 4]}, FASHION),
    "densenet_imagenet_stem_tanh": ("densenet", {"growth_rate": 4, "block_layers": [2, 3], "stem": "imagenet",
                                                    "activation": "tanh", "compression": 0.7}, CIFAR),
}


@pytest.mark.parametrize(("name", "overrides", "shape"), list(CASES.values()), ids=list(CASES))
def test_same_parameters_and_logits_in_eval_mode(name, overrides, shape):
    flax_model, torch_model = twins(name, model_options(name, **overrides), shape)
    flax_model.eval()
    torch_model.eval()
    x = images(shape)
    with torch.no_grad():
        expected = torch_logits(torch_model, x)
    np.testing.assert_allclose(expected, np.asarray(flax_logits(flax_model, jnp.asarray(x))), **TOLERANCE)


def test_resnet_training_forward_uses_and_updates_batch_statistics_alike():
    flax_model, torch_model = twins("resnet", model_options("resnet", width=0.25, stem="small"), FASHION)
    before = flax_arrays(flax_model)
    pixels = {}  # BatchNorm2d name -> values per channel it normalized over
    for name, module in torch_model.named_modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.register_forward_hook(lambda m, inputs, out, name=name: pixels.__setitem__(
                name, inputs[0].numel() // inputs[0].shape[1]))
    flax_model.train()
    torch_model.train()
    x = images(FASHION)
    logits = np.asarray(flax_logits(flax_model, jnp.asarray(x)))
    np.testing.assert_allclose(torch_logits(torch_model, x), logits, **TOLERANCE)
    buffers = dict(torch_model.named_buffers())
    after = {path: value for path, value in flax_arrays(flax_model).items() if path.endswith((".mean", ".var"))}
    assert len(after) == 2 * len(pixels) > 0
    for path, value in after.items():
        torch_value = buffers[torch_name(path)].numpy()
        if path.endswith(".var"):
            # Flax folds the biased batch variance into its running variance, PyTorch the unbiased one.
            n = pixels[torch_name(path).rsplit(".", 1)[0]]
            old = 0.9 * before[path]
            value = old + (value - old) * n / (n - 1)
        np.testing.assert_allclose(torch_value, value, **TOLERANCE, err_msg=path)


@pytest.mark.parametrize(("name", "overrides", "shape", "message"), [
    ("resnet", {"activation": "maxout"}, FASHION, "activation='maxout'"),
    ("inception", {"activation": "maxout"}, FASHION, "activation='maxout'"),
    ("resnet", {"padding": "valid"}, FASHION, "model.padding"),
    ("densenet", {"stem": "tiny"}, FASHION, "stem='tiny'"),
    ("inception", {}, (4, 4, 1), "1-pixel map"),
    ("inception_resnet", {"activation": "maxout"}, FASHION, "activation='maxout'"),
    ("inception_resnet", {"variant": "v4"}, FASHION, "variant='v4'"),
], ids=["resnet_maxout", "inception_maxout", "unknown_option", "unknown_stem", "inception_tiny_images",
        "inception_resnet_maxout", "inception_resnet_unknown_variant"])
def test_unmirrored_options_raise(name, overrides, shape, message):
    with pytest.raises(UnsupportedReference, match=message):
        reference_model(name, model_options(name, **overrides), input_shape=shape, num_classes=10)
