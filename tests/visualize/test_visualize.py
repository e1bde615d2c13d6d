"""`cnnexp visualize` on a LeNet trained for a few seconds on the bundled digits: the gallery, the
numbers behind it, and the activation maximization's promises (units excited, L1 removes ink,
class images classified as their class)."""

import json
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers.commands import assert_one_line_error, copy_run, read_summary, run_cnnexp
from helpers.models import marked_slow
from helpers.shared import build_once
from omegaconf import OmegaConf

from cnnexp.models import create_model, list_models
from cnnexp.training.trained_run import load_trained_run
from cnnexp.visualize.maximize import Regularizers, Settings, Target, maximize, unit_statistics
from cnnexp.visualize.probe import Probe, conv_stages, hidden_dense, list_layers, select_layers
from cnnexp.visualize.synthesis import ImageParam, Transforms
from cnnexp.visualize.visualization import settings_from_config

QUICK = ["maximize.steps=256", "maximize.units=12", "images=4", "mistakes=8"]


@pytest.fixture(scope="session")
def gallery(tmp_path_factory, lenet_run, shared_env) -> Path:
    """`cnnexp visualize` on a copy of the shared LeNet run: the gallery's index.html."""

    def build(root: Path) -> None:
        run = copy_run(lenet_run, root / "run")
        result = run_cnnexp("visualize", f"run={run}", "checkpoint=last", *QUICK, cwd=root, env=shared_env)
        assert result.returncode == 0, result.stderr[-3000:]
        index = run / "visualize" / "index.html"
        assert str(index) in result.stdout and "[9/9]" in result.stdout  # progress lines, then where it is

    root, _ = build_once(tmp_path_factory, "gallery", build)
    return root / "run" / "visualize" / "index.html"


@pytest.fixture(scope="session")
def trained_run(gallery) -> Path:
    """The run the gallery was made of: the shared LeNet run's copy. Read only."""
    return gallery.parent.parent


@pytest.fixture(scope="module")
def record(gallery) -> dict:
    return json.loads((gallery.parent / "maximization.json").read_text())


@pytest.mark.slow
def test_gallery_references_only_files_that_exist_and_every_kind_of_figure(gallery):
    sources = re.findall(r"<img src='([^']+)'", gallery.read_text())
    names = {Path(source).name for source in sources}
    assert {"filters.png", "classes.png", "saliency.png", "confusion.png", "mistakes.png",
            "feature_maps_00_conv1.png", "feature_maps_02_conv2.png", "maximize_00_conv1.png",
            "maximize_02_conv2.png", "maximize_04_fc1.png", "maximize_05_fc2.png"} <= names
    for source in sources:
        image = gallery.parent / source
        assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and image.stat().st_size > 3000
    written = {p.name for p in gallery.parent.glob("*.png")}
    assert written == names  # nothing written that the gallery does not show


@pytest.mark.slow
def test_every_unit_rises_well_above_its_random_start_and_past_real_images(record):
    assert set(record["layers"]) == {"conv1", "conv2", "fc1", "fc2"}
    assert [u["unit"] for u in record["layers"]["conv1"]] == list(range(6))  # every filter of conv1
    assert len(record["layers"]["fc1"]) == 12  # maximize.units caps big layers
    for layer, units in record["layers"].items():
        for unit in units:
            # Up by more than the spread of the unit over real images (pixels stay in [0, 1], so a
            # unit of a small dense layer cannot go up without bound)...
            assert unit["activation_z"] - unit["activation_start_z"] > 1.0, (layer, unit)
        # ... and nearly every unit beyond what the best of 512 real test images gives it.
        beaten = [unit["activation"] > unit["best_real_activation"] for unit in units]
        assert sum(beaten) >= 0.9 * len(units), layer


@pytest.mark.slow
def test_class_images_are_classified_as_their_class_and_regularized_ones_have_less_ink(record):
    for variant in ("unregularized", "regularized"):
        units = record["classes"][variant]["units"]
        assert len(units) == 10
        for unit in units:
            assert unit["predicted"] == str(unit["unit"]) and unit["confidence"] > 0.9, (variant, unit)
    assert record["classes"]["regularized"]["mean_ink"] < record["classes"]["unregularized"]["mean_ink"] - 0.03


@pytest.mark.slow
def test_checkpoint_last_gives_back_the_runs_own_test_accuracy(record, trained_run):
    assert record["test_accuracy"] == pytest.approx(read_summary(trained_run)["test_accuracy"], abs=1e-6)


@pytest.fixture(scope="module")
def lenet(trained_run):
    run = load_trained_run(trained_run, "last")
    layers = list_layers(run.model, run.data.input_shape)
    real = run.normalize(jnp.asarray(run.data.test.images[:256], jnp.float32) / 255.0)
    return run, layers, real


def _settings(**changes) -> Settings:
    base = dict(steps=96, lr=0.1, optimizer="adam", param="fourier", decay=1.0,
                regularizers=Regularizers(), transforms=Transforms(1.0, 0.05, 5.0))
    return Settings(**{**base, **changes})


@pytest.mark.slow
def test_l1_lowers_the_ink_of_every_image_and_images_are_not_constant(lenet):
    run, layers, real = lenet
    (conv2,) = select_layers(layers, ["conv2"])
    probe = Probe(run.model, [conv2])
    target = Target(conv2, np.arange(conv2.units))
    statistics = unit_statistics(probe, target, real)
    plain, sparse = (maximize(probe, target, _settings(regularizers=Regularizers(l1=l1)), run.normalize, statistics,
                              run.data.input_shape) for l1 in (0.0, 10.0))
    assert np.all(sparse.ink < plain.ink)
    assert sparse.penalties["l1"] == pytest.approx(sparse.ink, abs=1e-6)  # pixels are >= 0, so L1 is the ink
    for result in (plain, sparse):
        assert result.pixels.shape == (conv2.units, 8, 8, 1)
        assert np.all(result.pixels.reshape(conv2.units, -1).std(axis=1) > 0.01)


@pytest.mark.slow
def test_integer_settings_beyond_64_bits_still_trace(lenet):
    """`maximize.lr=12248133133189412864` is a Python int to Hydra; passed to JAX as is, it overflowed."""
    run, _, real = lenet
    cfg = OmegaConf.create({"maximize": {"steps": 1, "lr": 2**70, "optimizer": "sgd", "param": "pixel", "decay": 1,
                                         "l1": 2**70, "l2": 0, "tv": 0, "jitter": 0, "scale": 0, "rotate": 0, "seed": 0}})
    probe, target = Probe(run.model, []), Target(None, np.arange(2))
    result = maximize(probe, target, settings_from_config(cfg), run.normalize, unit_statistics(probe, target, real),
                      run.data.input_shape)
    assert result.pixels.shape == (2, 8, 8, 1)


@pytest.mark.slow
def test_total_variation_makes_neighbouring_pixels_alike(lenet):
    run, layers, real = lenet
    probe = Probe(run.model, [])
    target = Target(None, np.arange(10))
    statistics = unit_statistics(probe, target, real)
    rough, smooth = (maximize(probe, target, _settings(param="pixel", regularizers=Regularizers(tv=tv)),
                              run.normalize, statistics, run.data.input_shape) for tv in (0.0, 5.0))
    assert smooth.penalties["tv"].mean() < 0.7 * rough.penalties["tv"].mean()


@pytest.mark.slow
def test_default_layers_are_the_conv_stages_and_hidden_dense_layers(lenet):
    _, layers, _ = lenet
    assert [layer.name for layer in conv_stages(layers)] == ["conv1", "conv2"]
    assert [layer.name for layer in hidden_dense(layers)] == ["fc1", "fc2"]
    assert select_layers(layers, [0, "fc1"]) == [layers[0], layers[4]]


def test_transforms_off_leave_images_alone_and_a_zero_warp_is_the_identity():
    images = jax.random.uniform(jax.random.key(0), (3, 8, 8, 2))
    assert Transforms()(jax.random.key(1), images) is images
    tiny = Transforms(jitter=1e-6, scale=1e-6, rotate=1e-6)(jax.random.key(1), images)
    np.testing.assert_allclose(tiny, images, atol=1e-4)
    moved = Transforms(jitter=2.0, scale=0.2, rotate=20.0)(jax.random.key(1), images)
    assert moved.shape == images.shape and not np.allclose(moved, images, atol=1e-2)


def test_fourier_images_are_valid_pixels_of_the_right_shape():
    param = ImageParam("fourier", (9, 7, 3))
    pixels = param.to_pixels(param.init(jax.random.key(0), 4) * 100)
    assert pixels.shape == (4, 9, 7, 3) and float(pixels.min()) >= 0 and float(pixels.max()) <= 1


@pytest.mark.slow
@pytest.mark.parametrize(("args", "message"), [
    ([], "say which run"),
    (["run=no/such/run"], "no such folder"),
    (["run=.", "maximize.param=wavelet"], "maximize.param='wavelet'"),
    (["run=.", "maximize.steps=0"], "invalid maximize.steps=0"),
    (["run=."], "not a run folder"),
])
def test_bad_input_is_one_line_and_exit_2(cnnexp, args, message):
    result = cnnexp("visualize", *args)
    assert_one_line_error(result, message)


@pytest.mark.slow
def test_unknown_layer_lists_the_choices_and_writes_nothing(cnnexp, lenet_run, tmp_path):
    run = copy_run(lenet_run, tmp_path / "run", "visualize")
    result = cnnexp("visualize", f"run={run}", "layers=[conv9]")
    assert result.returncode == 2 and "no layer 'conv9'" in result.stderr and "0:conv1" in result.stderr
    assert not (run / "visualize").exists()


@pytest.mark.parametrize("name", marked_slow([name for name in list_models() if name != "mlp"], ("densenet", "inception", "inception_resnet")))  # mlp: dense only
def test_every_model_can_be_probed_at_its_conv_stages(name):
    model = nnx.eval_shape(lambda: create_model(name, {}, input_shape=(32, 32, 3), num_classes=10, rngs=nnx.Rngs(0)))
    model.eval()  # abstract: shapes only, nothing allocated
    layers = list_layers(model, (32, 32, 3))
    stages = conv_stages(layers)
    assert stages and stages[0] == next(layer for layer in layers if layer.kind == "conv")
    assert len({layer.output_shape[:2] for layer in stages}) >= len(stages) - 1  # one per resolution (+ the first)
    probe = Probe(model, [*stages, *hidden_dense(layers)])
    logits, outputs = jax.eval_shape(probe, probe.weights, jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32))
    assert logits.shape == (2, 10)
    assert [o.shape[1:] for o in outputs] == [layer.output_shape for layer in probe.layers]


def test_a_dense_only_model_has_no_conv_stage_and_its_hidden_layers_are_probed():
    model = nnx.eval_shape(lambda: create_model("mlp", {}, input_shape=(28, 28, 1), num_classes=10, rngs=nnx.Rngs(0)))
    layers = list_layers(model, (28, 28, 1))
    assert conv_stages(layers) == [] and [layer.output_shape for layer in hidden_dense(layers)] == [(256,), (128,)]
