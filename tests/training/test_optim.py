"""Schedules, optimizers and weight decay, and the parameter groups of optim.groups (fine-tuning)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from omegaconf import OmegaConf

from cnnexp.app.compose import compose_config
from cnnexp.app.extensions import register_hydra_extensions
from cnnexp.errors import UserError
from cnnexp.training.losses import LOSSES
from cnnexp.training.optim import OPTIMIZERS, SCHEDULES, ParamGroup, build_optimizer, build_schedule, param_groups
from cnnexp.training.options import validate_training_options


def schedule(**cfg):
    return OmegaConf.create({"warmup_epochs": 0, **cfg})


def test_warmup_rises_linearly_then_cosine_decays_to_the_floor():
    fn = build_schedule(schedule(name="cosine", warmup_epochs=1, final_lr_fraction=0.1), 1.0, 100, 10)
    assert float(fn(0)) == 0.0
    assert float(fn(5)) == pytest.approx(0.5)
    assert float(fn(10)) == pytest.approx(1.0)
    assert float(fn(100)) == pytest.approx(0.1)


def test_step_schedule_multiplies_by_gamma_at_each_milestone():
    fn = build_schedule(schedule(name="step", milestones=[0.5, 0.75], gamma=0.1), 1.0, 100, 10)
    assert [round(float(fn(s)), 6) for s in (0, 49, 50, 74, 75, 99)] == [1.0, 1.0, 0.1, 0.1, 0.01, 0.01]


def test_constant_schedule_keeps_the_rate():
    fn = build_schedule(schedule(name="constant"), 0.3, 100, 10)
    assert float(fn(0)) == pytest.approx(0.3) and float(fn(99)) == pytest.approx(0.3)


@pytest.mark.parametrize("name", ["sgd", "momentum", "nesterov", "adam", "adamw"])
def test_weight_decay_shrinks_kernels_but_not_biases(name):
    cfg = OmegaConf.create({"name": name, "lr": 0.1, "momentum": 0.9, "b1": 0.9, "b2": 0.999, "weight_decay": 0.5})
    tx = build_optimizer(cfg, optax.constant_schedule(0.1))
    params = {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}
    zero_grads = {"kernel": jnp.zeros((2, 2)), "bias": jnp.zeros(2)}
    updates, _ = tx.update(zero_grads, tx.init(params), params)
    assert np.all(np.asarray(updates["kernel"]) < 0)
    np.testing.assert_array_equal(np.asarray(updates["bias"]), 0.0)


def test_param_groups_take_the_first_matching_group_and_leave_the_rest_at_full_rate():
    paths = ["conv1.kernel", "conv1.bias", "fc1.kernel", "head.kernel", "head.bias"]
    groups = param_groups(OmegaConf.create({"head": {"params": "@output", "lr_scale": 10},
                                            "convs": {"params": ["conv*"], "lr_scale": 0}}), paths, "head")
    assert groups == [ParamGroup("head", 10.0, ("head.kernel", "head.bias")),
                      ParamGroup("convs", 0.0, ("conv1.kernel", "conv1.bias")),
                      ParamGroup("rest", 1.0, ("fc1.kernel",))]
    with pytest.raises(UserError, match="optim.groups.typo .* matches no parameter"):
        param_groups(OmegaConf.create({"typo": {"params": "haed.*", "lr_scale": 1}}), paths, "head")


def test_group_multipliers_scale_the_update_and_a_frozen_group_keeps_no_state():
    params = {"body": {"kernel": jnp.ones((2, 2))}, "head": {"kernel": jnp.ones((2, 3))}}
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.5), params)
    optim = OmegaConf.create({"name": "sgd", "lr": 0.1, "weight_decay": 0.0})
    groups = [ParamGroup("head", 10.0, ("head.kernel",)), ParamGroup("body", 0.1, ("body.kernel",))]
    tx = build_optimizer(optim, optax.constant_schedule(0.1), groups)
    updates, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_allclose(updates["head"]["kernel"], -0.1 * 10 * 0.5, rtol=1e-6)
    np.testing.assert_allclose(updates["body"]["kernel"], -0.1 * 0.1 * 0.5, rtol=1e-6)

    adam = OmegaConf.create({"name": "adam", "lr": 0.1, "b1": 0.9, "b2": 0.999, "weight_decay": 0.0})
    frozen = build_optimizer(adam, optax.constant_schedule(0.1),
                             [ParamGroup("head", 1.0, ("head.kernel",)), ParamGroup("body", 0.0, ("body.kernel",))])
    state = frozen.init(params)
    updates, _ = frozen.update(grads, state, params)
    assert not np.any(updates["body"]["kernel"])
    moments = [leaf.shape for leaf in jax.tree.leaves(state) if getattr(leaf, "ndim", 0) == 2]
    assert moments == [(2, 3), (2, 3)]  # Adam's two moments for the head only


@pytest.mark.parametrize("table, key", [(OPTIMIZERS, "optim.name"), (SCHEDULES, "schedule.name"), (LOSSES, "loss.name")])
def test_an_unknown_name_lists_the_tables_keys(table, key):
    """Checked once, with the config, before anything is loaded: the message lists the table."""
    register_hydra_extensions()
    cfg = compose_config("train", ["data=digits", f"{key}=nope"])
    with pytest.raises(UserError, match=f"invalid {key}='nope': choose one of {', '.join(sorted(table))}$"):
        validate_training_options(cfg)
