"""Bad train configs answered in one line that says what to type instead, composed in-process."""

from __future__ import annotations

import pytest

from cnnexp.app.compose import compose_config
from cnnexp.app.extensions import register_hydra_extensions
from cnnexp.config import validate_config
from cnnexp.errors import UserError


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
