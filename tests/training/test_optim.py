import jax.numpy as jnp
import numpy as np
import optax
import pytest
from omegaconf import OmegaConf

from cnnexp.training.optim import build_optimizer, build_schedule


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
