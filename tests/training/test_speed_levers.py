"""The training speed options do what they claim (data parallel training: test_data_parallel.py):
bf16 computes in bfloat16 and still learns, the moving average and test-time flip are what
evaluation sees."""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from helpers.commands import assert_one_line_error, read_summary, run_cnnexp, train_tiny_run

from cnnexp.data.preprocess import Preprocessing
from cnnexp.models import create_model
from cnnexp.training.losses import make_loss
from cnnexp.training.steps import evaluated_params, gathering, init_state, make_eval_step, make_train_step


def _lenet_step(precision: str, **options):
    model = create_model("lenet", {}, input_shape=(8, 8, 1), num_classes=10, rngs=nnx.Rngs(0))
    model.train()
    tx = optax.sgd(0.1)
    graphdef, state = init_state(model, tx, ema=options.get("ema_decay") is not None)
    step = gathering(make_train_step(graphdef, tx, loss=make_loss("cross_entropy"), precision=precision, **options), 16)
    rng = np.random.default_rng(0)
    data = (jnp.asarray(rng.integers(0, 256, (16, 8, 8, 1), np.uint8)), jnp.asarray(rng.integers(0, 10, 16), jnp.int32),
            Preprocessing("standardize", np.full(1, 0.5, np.float32), np.full(1, 0.25, np.float32)),
            jnp.arange(16, dtype=jnp.int32), np.int32(0))
    return jax.jit(step), state, data


def test_bf16_computes_in_bfloat16_and_keeps_float32_state():
    step, state, data = _lenet_step("bf16")
    jaxpr = str(jax.make_jaxpr(step)(state, *data))
    # LeNet's C1 output, in bfloat16, from XLA's convolution or the oneDNN kernel (on CPUs with bf16 support)
    assert ("conv_general_dilated" in jaxpr or "cnnexp_conv_forward" in jaxpr) and "bf16[16,28,28,6]" in jaxpr
    new = step(state, *data)
    assert {leaf.dtype for leaf in jax.tree.leaves(new.params)} == {jnp.dtype(jnp.float32)}
    assert jax.tree.structure(new) == jax.tree.structure(state)
    float32 = _lenet_step("float32")
    reference = float32[0](float32[1], *float32[2])
    # Same step, different rounding: the updates agree to bfloat16's ~3 significant digits.
    for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(reference.params), strict=True):
        np.testing.assert_allclose(a, b, atol=2e-2)
    assert not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(reference.params), strict=True))


def test_ema_follows_the_parameters_at_its_decay():
    step, state, data = _lenet_step("float32", ema_decay=0.75)
    new = step(state, *data)
    for old, ema, params in zip(jax.tree.leaves(state.params), jax.tree.leaves(new.ema_params),
                                jax.tree.leaves(new.params), strict=True):
        np.testing.assert_allclose(ema, 0.75 * old + 0.25 * params, rtol=1e-6, atol=1e-7)
    assert evaluated_params(new) is new.ema_params


def test_tta_flip_averages_the_image_and_its_mirror():
    model = create_model("lenet", {}, input_shape=(8, 8, 1), num_classes=10, rngs=nnx.Rngs(0))
    model.eval()
    graphdef, params, model_state = nnx.split(model, nnx.Param, ...)
    images = np.random.default_rng(1).integers(0, 256, (4, 8, 8, 1), np.uint8)
    labels = jnp.zeros(4, jnp.int32)
    identity = Preprocessing("none", np.zeros(1, np.float32), np.ones(1, np.float32))
    loss = make_loss("cross_entropy")

    def loss_sum(step, batch):
        return float(step(jnp.zeros(3), params, model_state, batch, labels, identity, 4, 0)[0])

    plain = make_eval_step(graphdef, batch_size=4, loss=loss)
    tta = make_eval_step(graphdef, batch_size=4, loss=loss, tta_flip=True)
    mirrored = images[:, :, ::-1]
    assert not math.isclose(loss_sum(plain, images), loss_sum(plain, mirrored))
    # Flip-averaged logits do not change when the input is mirrored.
    assert math.isclose(loss_sum(tta, images), loss_sum(tta, mirrored), rel_tol=1e-5)


@pytest.mark.slow
def test_ema_run_evaluates_the_average(shared_env, tmp_path):
    """Through the command: a run with an EMA (and the one-cycle schedule) trains, and `cnnexp evaluate`
    (which reads the checkpoint) reproduces its test accuracy, so it read the average too."""
    run = train_tiny_run(tmp_path, shared_env, "trainer.ema_decay=0.9", "schedule=onecycle")
    summary = read_summary(run)
    assert summary["status"] == "completed"
    done = run_cnnexp("evaluate", f"run={run}", "checkpoint=last", cwd=tmp_path, env=shared_env)
    assert done.returncode == 0, done.stderr[-2000:]
    evaluated = json.loads((run / "evaluate" / "evaluation.json").read_text())
    assert math.isclose(evaluated["test_accuracy"], summary["test_accuracy"], abs_tol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("value", ["trainer.precision=fp8", "trainer.ema_decay=1.5", "trainer.devices=0"])
def test_bad_speed_options_are_one_line_errors(cnnexp, value):
    assert_one_line_error(cnnexp("train", "data=digits", value), value.split("=")[0])
