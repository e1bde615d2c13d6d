"""Data parallel training (trainer.devices) on 2 CPU devices equals one device, and its errors."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
from helpers.commands import assert_one_line_error, stable_metrics, train_tiny_run

from cnnexp.training import steps

pytestmark = pytest.mark.slow  # every test here runs the installed command

TWO_CPU_DEVICES = "--xla_force_host_platform_device_count=2"
RESNET = ["model=resnet", "model.width=0.125", "trainer.eval_batch_size=100", "trainer.epochs=1"]


def _two_device_env(env: dict[str, str]) -> dict[str, str]:
    return {**env, "XLA_FLAGS": f"{env.get('XLA_FLAGS', '')} {TWO_CPU_DEVICES}".strip()}


def test_data_parallel_training_equals_one_device(shared_env, tmp_path):
    """A ResNet (batch norm: statistics over the whole batch, across devices) trained on 2 CPU
    devices follows the 1-device run step for step, within float32 reduction-order noise."""
    env = _two_device_env(shared_env)
    runs = {}
    for devices in (1, 2):
        (tmp_path / str(devices)).mkdir()
        runs[devices] = train_tiny_run(tmp_path / str(devices), env, *RESNET, f"trainer.devices={devices}")
    assert "data parallel over 2 devices" in (runs[2] / "train.log").read_text()
    assert "data parallel" not in (runs[1] / "train.log").read_text()
    one, two = stable_metrics(runs[1]), stable_metrics(runs[2])
    assert [(r["kind"], r["split"], r["step"]) for r in one] == [(r["kind"], r["split"], r["step"]) for r in two]
    # The first steps agree closely; Adam then amplifies the different summation order a little.
    assert math.isclose(one[0]["loss"], two[0]["loss"], rel_tol=1e-4)
    for a, b in zip(one, two, strict=True):
        assert math.isclose(a["loss"], b["loss"], rel_tol=1e-2), (a, b)
        assert abs(a["accuracy"] - b["accuracy"]) <= 0.035, (a, b)  # a few images of a window


def test_batch_must_split_across_devices(cnnexp):
    result = cnnexp("train", "data=digits", "trainer.batch_size=63", env=_two_device_env(cnnexp.env))
    assert_one_line_error(result, "trainer.batch_size=63 does not split evenly across 2 devices")


def test_more_devices_than_present_is_an_error(cnnexp):
    assert_one_line_error(cnnexp("train", "data=digits", "trainer.devices=64"), "trainer.devices=64: only")


LEAF_STEP_WAITS = """
import jax, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from cnnexp.training import steps

waits = []
jax.block_until_ready = lambda tree: waits.append(1) or tree  # counted, not waited for
for devices in (jax.devices()[:1], jax.devices()):
    placed = jax.device_put({"w": np.zeros(4, np.float32)}, NamedSharding(Mesh(np.array(devices), ("data",)), PartitionSpec()))
    step = steps.LeafStep(lambda s: {"w": s["w"] + 1}, placed).compile(placed)
    leaves = step.leaves(placed)
    for _ in range(20):
        leaves = step(leaves)
    print(len(devices), len(waits), float(step.state(leaves)["w"][0]))
"""


def test_steps_on_several_cpu_devices_run_at_most_a_few_ahead(tmp_path):
    """XLA:CPU deadlocks when a loop dispatches 32 steps with cross-device collectives ahead (seen
    with LeNet on Fashion-MNIST, 2 devices on 2 cores): LeafStep waits for every 8th step there, and
    never on one device."""
    result = subprocess.run([sys.executable, "-c", LEAF_STEP_WAITS], capture_output=True, text=True, timeout=120,
                            env=_two_device_env({**os.environ, "JAX_PLATFORMS": "cpu"}))
    assert result.returncode == 0, result.stderr[-3000:]
    expected = 20 // steps.CPU_COLLECTIVE_STEPS_AHEAD
    assert result.stdout.split("\n")[:2] == ["1 0 20.0", f"2 {expected} 20.0"], result.stdout
