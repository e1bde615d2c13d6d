"""ZF Net: the paper's Figure 3 at 224 px, the small-image form, and contrast normalization."""

import jax
import numpy as np
import pytest
from flax import nnx
from helpers.models import layer_records

from cnnexp.errors import UserError
from cnnexp.inspection import summarize_model
from cnnexp.models import count_params, create_model
from cnnexp.models.layers import LocalResponseNorm

IMAGENET = (224, 224, 3)


def test_imagenet_form_has_the_papers_maps_and_layer_sizes():
    # Figure 3: 110x110x96 -> pool 55 -> 26x26x256 -> pool 13 -> 13x13x384, 384, 256 -> pool 6x6x256.
    records = layer_records("zfnet", {}, IMAGENET, classes=1000)
    maps = [(r.kind, r.output_shape[1:]) for r in records if r.kind in ("conv", "pool")]
    assert maps == [("conv", (110, 110, 96)), ("pool", (55, 55, 96)), ("conv", (26, 26, 256)), ("pool", (13, 13, 256)),
                    ("conv", (13, 13, 384)), ("conv", (13, 13, 384)), ("conv", (13, 13, 256)), ("pool", (6, 6, 256))]
    first, second, *_ = (r for r in records if r.kind == "conv")
    assert (first.info["kernel"], first.info["stride"], second.info["kernel"], second.info["stride"]) == \
        ((7, 7), 2, (5, 5), 2)
    # Contrast normalization right after the first two pools.
    kinds = [(r.kind, r.info.get("op")) for r in records]
    assert [i for i, k in enumerate(kinds) if k == ("norm", "local response")] == [2, 5]


def test_imagenet_form_parameter_count():
    # convs 7*7*3*96+96 = 14,208; 5*5*96*256+256 = 614,656; 3*3*256*384+384 = 885,120;
    # 3*3*384*384+384 = 1,327,488; 3*3*384*256+256 = 884,992; dense 6*6*256*4096+4096 = 37,752,832,
    # 4096*4096+4096 = 16,781,312, 4096*1000+1000 = 4,097,000.
    model = nnx.eval_shape(lambda: create_model("zfnet", {}, input_shape=IMAGENET, num_classes=1000,
                                                rngs=nnx.Rngs(0)))
    assert count_params(model) == 14_208 + 614_656 + 885_120 + 1_327_488 + 884_992 + 37_752_832 + 16_781_312 \
        + 4_097_000 == 62_357_608


def test_small_form_parameter_count_and_maps():
    # convs 3*3*1*96+96 = 960, then as above but for the dense layers: 3*3*256*1024+1024 = 2,360,320,
    # 1024*1024+1024 = 1,049,600, 1024*10+10 = 10,250.
    model = nnx.eval_shape(lambda: create_model("zfnet", {}, input_shape=(28, 28, 1), num_classes=10,
                                                rngs=nnx.Rngs(0)))
    assert count_params(model) == 960 + 614_656 + 885_120 + 1_327_488 + 884_992 + 2_360_320 + 1_049_600 + 10_250
    records = layer_records("zfnet", {}, (28, 28, 1))
    assert [r.output_shape[1] for r in records if r.kind == "pool"] == [14, 7, 3]
    assert [r.info["stride"] for r in records if r.kind == "conv"] == [1] * 5


def test_auto_picks_the_imagenet_form_from_112_pixels():
    def first_stride(shape):
        return next(r.info["stride"] for r in layer_records("zfnet", {}, shape) if r.kind == "conv")

    assert (first_stride((111, 111, 3)), first_stride((112, 112, 3))) == (1, 2)
    assert first_stride((32, 32, 3)) == 1 and next(
        r.info["stride"] for r in layer_records("zfnet", {"variant": "imagenet"}, (64, 64, 3)) if r.kind == "conv") == 2


def test_without_contrast_normalization_only_the_norm_layers_go():
    with_norm = layer_records("zfnet", {}, (28, 28, 1))
    without = layer_records("zfnet", {"contrast_norm": False}, (28, 28, 1))
    assert len(with_norm) - len(without) == 2
    assert [r.output_shape for r in with_norm if r.kind != "norm"] == [r.output_shape for r in without]


def test_middle_widths_widen_layers_3_to_5_as_the_papers_best_single_model():
    records = layer_records("zfnet", {"middle_widths": [512, 1024, 512]}, IMAGENET, classes=1000)
    assert [r.output_shape[-1] for r in records if r.kind == "conv"] == [96, 256, 512, 1024, 512]


@pytest.mark.parametrize("size", [5, 4])
def test_local_response_norm_is_the_formula(size):
    # b_c = a_c / (k + alpha * sum of a^2 over the channels c - size // 2 .. c + (size - 1) // 2 that
    # exist) ** beta; values of about 30, so the sums matter beside k = 2.
    x = np.random.default_rng(0).normal(0, 30, (2, 3, 3, 7)).astype(np.float32)
    squares = np.pad(x * x, ((0, 0), (0, 0), (0, 0), (size // 2, (size - 1) // 2)))
    sums = sum(squares[..., i:i + 7] for i in range(size))
    expected = x / (2.0 + 1e-4 * sums) ** 0.75
    np.testing.assert_allclose(np.asarray(LocalResponseNorm(size)(jax.numpy.asarray(x))), expected, rtol=1e-5)


def test_summary_of_a_huge_model_allocates_nothing():
    # 96 million channels into the contrast normalization: its band of ones is traced, not built.
    summary = summarize_model("zfnet", {"width": 1e6}, (28, 28, 1), 10)
    assert summary.total_params > 10**18


@pytest.mark.parametrize(("option", "message"), [
    ({"variant": "huge"}, "model.variant 'huge'"),
    ({"contrast_norm": "yes"}, "model.contrast_norm"),
    ({"middle_widths": [384, 384]}, "model.middle_widths must be 3 integers >= 1"),
    ({"middle_widths": [384, 0, 256]}, "model.middle_widths must be 3 integers >= 1"),
    ({"width": 0}, "model.width"),
    ({"dropout": 1.0}, "model.dropout"),
])
def test_bad_options_are_user_errors(option, message):
    with pytest.raises(UserError, match=message):
        create_model("zfnet", option, input_shape=(28, 28, 1), num_classes=10, rngs=nnx.Rngs(0))


def test_imagenet_form_on_images_too_small_for_it_is_a_user_error():
    with pytest.raises(UserError, match="input is too small"):
        create_model("zfnet", {"variant": "imagenet"}, input_shape=(8, 8, 1), num_classes=10, rngs=nnx.Rngs(0))
