"""Bad configs answered in one line that says what to type instead, composed in-process."""

from __future__ import annotations

import re

import pytest

from cnnexp.app.compose import compose_config
from cnnexp.app.extensions import register_hydra_extensions
from cnnexp.config import validate_config
from cnnexp.errors import UserError
from cnnexp.evaluation.evaluate import validate_evaluate_config
from cnnexp.inspection import validate_summary_config
from cnnexp.visualize.visualization import validate_visualize_config

# The smallest overrides each command's config composes with.
BASES = {"train": ["data=digits"], "evaluate": ["run=."], "summary": []}
VALIDATORS = {"summary": validate_summary_config, "evaluate": validate_evaluate_config,
              "visualize": validate_visualize_config}


@pytest.fixture(autouse=True, scope="module")
def _extensions():
    register_hydra_extensions()


@pytest.mark.parametrize("override, message", [
    ("trainer.epochs=true", "invalid trainer.epochs=True: must be an integer >= 1"),
    ("trainer.batch_size=false", "invalid trainer.batch_size=False: must be an integer >= 1"),
    ("trainer.eval_batch_size=true", "invalid trainer.eval_batch_size=True"),
    ("trainer.log_every_steps=true", "invalid trainer.log_every_steps=True"),
    ("seed=true", "invalid seed=True: must be an integer >= 0"),
    ("trainer.devices=true", "invalid trainer.devices=True"),
    ("optim.lr=true", "invalid optim.lr=True: must be a finite number >= 0"),
    ("data.augment.translate=true", "invalid data.augment.translate=True"),
])
def test_booleans_are_not_numbers(override, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        compose_config("train", ["data=digits", override], validate_config)


@pytest.mark.parametrize("overrides, message", [
    (["model=lenet", "model.width=0.25"],
     "model 'lenet' has no option model.width; its options: model.activation, model.pool, model.conv_impl"),
    (["model=resnet", "model.widht=0.5"], "model 'resnet' has no option model.widht (did you mean model.width?)"),
    (["model=resnt"], "unknown model=resnt (did you mean resnet?); choose one of alexnet, alexnet_lite"),
    (["optim=adamx"], "unknown optim=adamx (did you mean adam?); choose one of adam, adamw, momentum"),
    (["loss=hinge"], "unknown loss=hinge; choose one of cross_entropy, mse"),
    (["trainer.epoch=3"], "trainer has no key 'epoch' (did you mean trainer.epochs?); its keys: epochs"),
    (["data.augment.flop=true"], "data.augment has no key 'flop' (did you mean data.augment.flip?)"),
])
def test_composition_errors_say_what_to_type(overrides, message):
    with pytest.raises(UserError) as raised:
        compose_config("train", ["data=digits", *overrides], validate_config)
    text = str(raised.value)
    assert text.startswith(message), text
    assert "search path" not in text.lower() and "To append" not in text and "\n" not in text


def test_an_option_the_model_takes_composes():
    cfg = compose_config("train", ["data=digits", "model=resnet", "model.width=0.5"], validate_config)
    assert cfg.model.width == 0.5


@pytest.mark.parametrize("override, message", [
    ("model=1", "unknown model=1; choose one of alexnet,"),
    ("model=null", "unknown model=null; choose one of alexnet,"),
    ("model=[1]", "unknown model=[1]; choose one of alexnet,"),
    ("model={a:1}", "unknown model={a:1}; choose one of alexnet,"),
    ("~model=[]", "unknown model=[]; choose one of alexnet,"),
    ("paths=1_000", "unknown paths=1000; choose one of default"),
    ("data=_", "unknown data=_; choose one of cifar10, digits"),  # not a name TFDS could parse
])
def test_a_group_takes_an_options_name(override, message):
    """Hydra answers these with a bare ValueError or TypeError (a traceback)."""
    with pytest.raises(UserError, match=re.escape(message)):
        compose_config("train", ["data=digits", override], validate_config)


@pytest.mark.parametrize("config, override, message", [
    ("evaluate", "scales.x=0", "invalid scales.x=0: scales is a list; give all of it (scales=[...]) or one item "
                               "by its index (scales.0=...)"),
    ("summary", "model.activation=${oops}", "model.activation: Interpolation key 'oops' not found"),
    ("train", "hydra.nope=1", "Could not override 'hydra.nope'"),
    ("train", "hydra.job.chdir=maybe", "Error merging override hydra.job.chdir=maybe: Value 'maybe' is not a valid bool"),
    ("train", "hydra/launcher=nope", "unknown hydra/launcher=nope; choose one of basic, joblib"),
])
def test_malformed_overrides_are_one_line(config, override, message):
    """A list indexed by a name, an interpolation that does not resolve, a wrong Hydra key: refused
    while composing, not halfway through the command (or by Hydra's app, with exit status 1)."""
    with pytest.raises(UserError) as raised:
        compose_config(config, [*BASES[config], override])
    assert str(raised.value).startswith(message) and "\n" not in str(raised.value), str(raised.value)


@pytest.mark.parametrize("override, message", [
    ("optim.lr=inf", "invalid optim.lr=inf: must be a finite number >= 0"),
    ("optim.b1=''", "invalid optim.b1='': must be a number in [0, 1)"),
    ("optim.b2=1", "invalid optim.b2=1: must be a number in [0, 1)"),
    ("optim=momentum optim.momentum=1.5", "invalid optim.momentum=1.5"),
    ("schedule.warmup_epochs=inf", "invalid schedule.warmup_epochs=inf"),
    ("schedule.final_lr_fraction=2", "invalid schedule.final_lr_fraction=2: must be a number in [0, 1]"),
    ("schedule=step schedule.milestones=[0.5,a]", "invalid schedule.milestones=[0.5, 'a']: must be a list of fractions of the run"),
    ("schedule=step schedule.gamma=nan", "invalid schedule.gamma=nan"),
    (f"seed={2**63}", f"invalid seed={2**63}: must be an integer >= 0 and < 2^63"),
    ("trainer.progress=3", "invalid trainer.progress=3: must be true or false"),
    ("init_from_strict=maybe", "invalid init_from_strict='maybe': must be true or false"),
    ("data.name=_", "invalid data.name='_': must be digits, image_folder or a TFDS dataset's name"),
    ("data=mnist data.memory_limit_gb=inf", "invalid data.memory_limit_gb=inf"),
])
def test_values_the_run_would_crash_on_are_refused(override, message):
    """Each of these used to end in a traceback (or a run of NaNs) after the run folder existed."""
    with pytest.raises(UserError, match=re.escape(message)):
        compose_config("train", ["data=digits", *override.split()], validate_config)


@pytest.mark.parametrize("key", ["paths.output_dir", "paths.runs_dir", "paths.jax_cache_dir", "paths.data_dir"])
@pytest.mark.parametrize("below", ["", "/runs"])
def test_a_file_where_a_folder_goes_is_refused_before_hydra_creates_the_run(tmp_path, key, below):
    (tmp_path / "notes.txt").write_text("not a folder\n")
    path = f"{tmp_path / 'notes.txt'}{below}"
    with pytest.raises(UserError, match=re.escape(f"invalid {key}='{path}': must be a folder that exists or can be created")):
        compose_config("train", ["data=digits", f"{key}={path}"], validate_config)


@pytest.mark.parametrize("config, overrides, message", [
    ("summary", ["data.classes=1"], "invalid data.classes=1: must be a list of class indices or names"),
    ("summary", ["data.name=0"], "invalid data.name=0: must be digits, image_folder or a TFDS dataset's name"),
    ("evaluate", ["run=0"], "run=0: no such folder"),
    ("visualize", ["run=.", "layers=1.5"], "invalid layers=1.5: must be null, a layer's name or index, or a list"),
    ("visualize", ["run=.", "dense_layers=[true]"], "invalid dense_layers=[True]"),
    ("visualize", ["run=.", "maximize.lr=inf"], "invalid maximize.lr=inf"),
    ("visualize", ["run=.", "maximize.seed=-1"], "invalid maximize.seed=-1: must be an integer >= 0 and < 2^63"),
])
def test_settings_of_summary_evaluate_and_visualize(config, overrides, message):
    with pytest.raises(UserError, match=re.escape(message)):
        compose_config(config, overrides, VALIDATORS[config])
