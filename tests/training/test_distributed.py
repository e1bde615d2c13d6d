"""Multi-process runs (cnnexp.training.distributed): where the processes' places come from
(trainer.distributed keys, Slurm's variables), each process's rows of a batch, and a real run of
two processes on localhost that trains exactly like one process with two devices."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers.configs import compose_with_hydra
from omegaconf import OmegaConf

from cnnexp.errors import UserError
from cnnexp.training import distributed
from cnnexp.training.distributed import DistributedSpec, distributed_spec, process_shard

WORKER = Path(__file__).parents[1] / "helpers" / "distributed_worker.py"
# Measured (jax 0.10.2, gloo, 2 CPU processes vs 1 process with 2 devices): bit for bit equal, since
# each step's one all-reduce adds the same two partial gradients. The tolerance only leaves room
# for another reduction order in a future XLA; a wrong shard or a missing all-reduce is off by far more.
RTOL, ATOL = 1e-6, 1e-7
SUBPROCESS_TIMEOUT_S = 60


def trainer(**keys) -> OmegaConf:
    section = {"coordinator": None, "num_processes": None, "process_id": None, **keys}
    return OmegaConf.create({"batch_size": 64, "distributed": section})


def slurm_env(procid: int = 3, tasks: int = 4, **extra: str) -> dict[str, str]:
    """What srun (and so each task of Hydra's submitit launcher) sets, for task `procid` of a step."""
    return {"SLURM_JOB_ID": "123456", "SLURM_STEP_NODELIST": "gpu[007-008]", "SLURM_NTASKS": str(tasks),
            "SLURM_STEP_NUM_TASKS": str(tasks), "SLURM_PROCID": str(procid), "SLURM_LOCALID": str(procid % 2),
            **extra}


# --- where a process's place comes from ---------------------------------------------------------

def test_explicit_keys_give_the_spec():
    spec = distributed_spec(trainer(coordinator="10.0.0.1:1234", num_processes=2, process_id=1), environ={})
    assert spec == DistributedSpec("10.0.0.1:1234", 2, 1) and not spec.is_main and spec.cluster is None


def test_a_plain_process_is_not_distributed():
    assert distributed_spec(trainer(), environ={}) is None
    assert distributed_spec(OmegaConf.create({"batch_size": 64}), environ={}) is None  # no distributed section
    assert distributed_spec(trainer(coordinator="h:1", num_processes=1, process_id=0), environ={}) is None


@pytest.mark.parametrize(("keys", "missing"), [
    ({"coordinator": "10.0.0.1:1234"}, "missing: num_processes, process_id"),
    ({"num_processes": 2, "process_id": 0}, "missing: coordinator"),
])
def test_keys_are_set_together(keys, missing):
    with pytest.raises(UserError, match=f"set coordinator, num_processes and process_id together.*{missing}"):
        distributed_spec(trainer(**keys), environ={})


@pytest.mark.parametrize(("keys", "message"), [
    ({"coordinator": "10.0.0.1"}, "invalid trainer.distributed.coordinator='10.0.0.1': must be host:port"),
    ({"coordinator": "10.0.0.1:0"}, "invalid trainer.distributed.coordinator='10.0.0.1:0'"),
    ({"coordinator": 1234}, "invalid trainer.distributed.coordinator=1234"),
    ({"num_processes": 0}, "invalid trainer.distributed.num_processes=0: must be an integer >= 1"),
    ({"num_processes": True}, "invalid trainer.distributed.num_processes=True"),
    ({"process_id": 2}, r"invalid trainer.distributed.process_id=2: must be an integer in \[0, 1\]"),
    ({"process_id": -1}, "invalid trainer.distributed.process_id=-1"),
])
def test_bad_values_are_one_line_errors(keys, message):
    cfg = trainer(**{"coordinator": "10.0.0.1:1234", "num_processes": 2, "process_id": 0, **keys})
    with pytest.raises(UserError, match=message) as error:
        distributed_spec(cfg, environ={})
    assert "\n" not in str(error.value)


def test_a_slurm_step_of_several_tasks_is_detected():
    spec = distributed_spec(trainer(), environ=slurm_env(procid=3, tasks=4))
    # The coordinator is left to JAX's own Slurm detection (first node, port from the job id).
    assert spec == DistributedSpec(None, 4, 3, cluster="slurm")


def test_the_step_task_count_wins_over_the_jobs():
    env = slurm_env(procid=1, tasks=2, SLURM_NTASKS="8")  # `srun -n 2` inside an allocation of 8 tasks
    assert distributed_spec(trainer(), environ=env) == DistributedSpec(None, 2, 1, cluster="slurm")


@pytest.mark.parametrize("env", [
    slurm_env(procid=0, tasks=1),  # one task: each job of an ordinary Slurm sweep
    {k: v for k, v in slurm_env().items() if k not in ("SLURM_STEP_NODELIST", "SLURM_STEP_NUM_TASKS")},  # batch script
    {"SLURM_JOB_ID": "1"},
], ids=["one-task", "batch-script", "salloc-shell"])
def test_slurm_without_a_step_of_several_tasks_is_a_single_process(env):
    assert distributed_spec(trainer(), environ=env) is None


def test_explicit_keys_win_over_slurm():
    cfg = trainer(coordinator="10.0.0.1:1234", num_processes=2, process_id=0)
    assert distributed_spec(cfg, environ=slurm_env()) == DistributedSpec("10.0.0.1:1234", 2, 0)


def test_a_bad_slurm_variable_is_a_one_line_error():
    with pytest.raises(UserError, match="Slurm set SLURM_PROCID='x'"):
        distributed_spec(trainer(), environ=slurm_env(SLURM_PROCID="x"))
    with pytest.raises(UserError, match="SLURM_PROCID=5 for a step of 4 tasks"):
        distributed_spec(trainer(), environ=slurm_env(SLURM_PROCID="5"))


def test_jax_finds_the_coordinator_in_the_slurm_variables_we_require(monkeypatch):
    """What `initialize` leaves to JAX (jax._src.clusters, private, so checked here against the
    installed version): the first node of the step, a port from the job id or $JAX_COORDINATOR_PORT,
    and on GPUs task i of a node on that node's GPU i."""
    from jax._src import clusters

    for name in list(os.environ):
        if name.startswith(("SLURM_", "OMPI_", "JAX_COORDINATOR")):
            monkeypatch.delenv(name)
    for name, value in slurm_env(procid=3, tasks=4, JAX_COORDINATOR_PORT="23456").items():
        monkeypatch.setenv(name, value)
    assert distributed_spec(trainer()) == DistributedSpec(None, 4, 3, cluster="slurm")
    found = clusters.ClusterEnv.auto_detect_unset_distributed_params(None, 4, 3, None, "slurm", 10)
    assert found == ("gpu007:23456", 4, 3, [1])


def test_the_multinode_slurm_preset_composes():
    """One process per GPU, each seeing all of its node's GPUs: what JAX's Slurm detection expects."""
    launcher = compose_with_hydra(["hydra/launcher=slurm_multinode"]).hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.nodes > 1 and launcher.tasks_per_node == launcher.gpus_per_node and launcher.gpus_per_task is None


# --- each process's rows, and the helpers in a single process ------------------------------------

def test_process_shard_is_contiguous_blocks_in_process_order(monkeypatch):
    assert process_shard(64) == slice(0, 64)  # one process: the whole batch
    monkeypatch.setattr(jax, "process_count", lambda: 4)
    for index in range(4):
        monkeypatch.setattr(jax, "process_index", lambda index=index: index)
        assert process_shard(64) == slice(16 * index, 16 * (index + 1))
    with pytest.raises(UserError, match="a batch of 30 does not split evenly across 4 processes"):
        process_shard(30)


def test_process_shard_reads_a_sharding():
    mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
    assert process_shard(8, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))) == slice(0, 8)


def test_single_process_helpers_change_nothing():
    assert distributed.initialize(None) is False
    assert distributed.is_main_process()
    assert distributed.agree_on("outputs/run") == "outputs/run"
    sharding = jax.sharding.NamedSharding(jax.sharding.Mesh(np.array(jax.devices()), ("data",)),
                                          jax.sharding.PartitionSpec("data"))
    images = np.arange(12, dtype=np.float32).reshape(4, 3)
    batch = distributed.global_batch({"images": images}, sharding)
    assert batch["images"].sharding == sharding
    values = distributed.host_value({"images": batch["images"], "key": jax.random.key(0), "n": jnp.int32(3)})
    np.testing.assert_array_equal(values["images"], images)
    np.testing.assert_array_equal(values["key"], jax.random.key_data(jax.random.key(0)))
    assert isinstance(values["n"], np.ndarray) and values["n"] == 3


# --- a real run of two processes -----------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker_env(devices: int, **extra: str) -> dict[str, str]:
    """This environment without any cluster's variables, on `devices` CPU devices per process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "OMPI_", "JAX_COORDINATOR"))}
    flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith("--xla_force_host_platform_device_count")]
    env.update(XLA_FLAGS=" ".join([*flags, f"--xla_force_host_platform_device_count={devices}"]),
               JAX_PLATFORMS="cpu", **extra)
    return env


def run_workers(commands: list[tuple[list[str], dict[str, str]]], logs: Path) -> None:
    """Start every worker at once and wait for all; fail fast, killing the others, as soon as one
    fails (the rest would wait for it until JAX's timeouts) or when they take too long together."""
    logs.mkdir(exist_ok=True)
    paths = [logs / f"worker_{i}.log" for i in range(len(commands))]
    procs = []
    for (args, env), path in zip(commands, paths, strict=True):
        with path.open("w") as log:
            procs.append(subprocess.Popen([sys.executable, str(WORKER), *args], env=env, stdout=log,
                                          stderr=subprocess.STDOUT))
    deadline = time.monotonic() + SUBPROCESS_TIMEOUT_S
    try:
        while any(proc.poll() is None for proc in procs):
            if any(proc.returncode for proc in procs) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for proc, path in zip(procs, paths, strict=True):
        assert proc.returncode == 0, f"worker exited with {proc.returncode} (killed: -9, e.g. after " \
                                     f"{SUBPROCESS_TIMEOUT_S} s):\n{path.read_text()[-3000:]}"


def results(out: Path, process: int) -> tuple[dict, dict[str, np.ndarray]]:
    arrays = np.load(out / f"process_{process}.npz")
    return json.loads((out / f"process_{process}.json").read_text()), {k: arrays[k] for k in arrays.files}


@pytest.mark.slow
@pytest.mark.parametrize("launch", ["explicit", "slurm"])
def test_two_processes_train_like_one_process_with_two_devices(tmp_path, launch):
    """Same global batches, same steps: two processes of one CPU device each (batch split across
    them, gradients all-reduced over gloo) end with the parameters and losses of one process with
    two devices. `slurm`: the places come from (fake) Slurm variables and JAX's own detection."""
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir(), two.mkdir()
    run_workers([([str(one)], worker_env(2))], tmp_path / "logs_one")
    port = str(free_port())
    if launch == "explicit":
        commands = [([str(two), f"127.0.0.1:{port}", "2", str(i)], worker_env(1)) for i in range(2)]
    else:
        commands = [([str(two), "slurm"], worker_env(1, **slurm_env(procid=i, tasks=2, SLURM_STEP_NODELIST="localhost",
                                                               JAX_COORDINATOR_PORT=port))) for i in range(2)]
    run_workers(commands, tmp_path / "logs_two")

    single, reference = results(one, 0)
    assert single["process_count"] == 1 and single["device_count"] == 2 and not single["joined"]
    for process in range(2):
        info, values = results(two, process)
        assert info["joined"] and info["process_count"] == 2
        assert info["device_count"] == 2 and info["local_device_count"] == 1
        assert info["is_main"] == (process == 0)
        assert info["rows"] == [8 * process, 8 * (process + 1)]
        assert info["agreed"] == "run-folder-of-process-0"
        assert info["spec"][3] == (None if launch == "explicit" else "slurm")
        assert values.keys() == reference.keys()
        for name, value in reference.items():
            np.testing.assert_allclose(values[name], value, rtol=RTOL, atol=ATOL, err_msg=name)
    assert reference["losses"].shape == (5,) and np.all(np.isfinite(reference["losses"]))
