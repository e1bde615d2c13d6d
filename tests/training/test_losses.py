"""`loss=cross_entropy|mse`, each with label smoothing: the values, and a run trained with MSE."""

import json

import jax.numpy as jnp
import numpy as np
import pytest
from helpers.commands import TINY, read_summary, run_dirs

from cnnexp.training.losses import make_loss

LOGITS = jnp.array([[2.0, 0.5, -1.0], [0.0, 0.0, 3.0]])
LABELS = jnp.array([0, 1])


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("smoothing", [0.0, 0.3])
def test_mse_is_the_squared_distance_of_the_softmax_to_the_smoothed_one_hot(smoothing):
    targets = np.full((2, 3), smoothing / 3) + (1 - smoothing) * np.eye(3)[np.asarray(LABELS)]
    expected = ((_softmax(np.asarray(LOGITS)) - targets) ** 2).sum(axis=1)
    np.testing.assert_allclose(make_loss("mse", smoothing)(LOGITS, LABELS), expected, rtol=1e-6)


@pytest.mark.parametrize("smoothing", [0.0, 0.3])
def test_cross_entropy_with_smoothing(smoothing):
    log_p = np.log(_softmax(np.asarray(LOGITS)))
    targets = np.full((2, 3), smoothing / 3) + (1 - smoothing) * np.eye(3)[np.asarray(LABELS)]
    np.testing.assert_allclose(make_loss("cross_entropy", smoothing)(LOGITS, LABELS),
                               -(targets * log_p).sum(axis=1), rtol=1e-6)


@pytest.mark.slow
def test_a_run_trained_with_mse_learns_and_logs_mse(cnnexp, tmp_path):
    result = cnnexp("train", *TINY, "loss=mse", "trainer.epochs=4", "optim.lr=0.005")
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = run_dirs(tmp_path / "outputs")
    assert read_summary(run)["test_accuracy"] > 0.6
    losses = [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(0 <= loss <= 2 for loss in losses)  # two probability vectors are at most 2 apart, squared


@pytest.mark.slow
def test_unknown_loss_is_a_config_error(cnnexp):
    result = cnnexp("train", *TINY, "loss=hinge")
    assert result.returncode == 2, result.stderr
    assert "unknown loss=hinge; choose one of cross_entropy, mse" in result.stderr
    assert "search path" not in result.stderr.lower()
