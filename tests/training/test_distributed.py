"""Multi-process runs (cnnexp.training.distributed): where the processes' places come from
(trainer.distributed keys, Slurm's variables), each process's rows of a batch, and real runs of
`cnnexp train` in two processes on localhost that train exactly like one process with two devices,
in memory and streamed, through Ctrl-C and resume."""

from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml
from helpers.commands import TINY, cnnexp_executable, read_summary, run_dirs, stable_metrics, train_tiny_run
from helpers.configs import compose_with_hydra
from helpers.faults import checkpoint_steps, live_run
from omegaconf import OmegaConf

from cnnexp.errors import UserError
from cnnexp.runs.checkpoints import read_weights
from cnnexp.training import distributed
from cnnexp.training.distributed import DistributedSpec, distributed_spec, process_shard
from cnnexp.training.parallel import data_parallel

# Measured (jax 0.10.2, gloo, `cnnexp train` in 2 CPU processes vs 1 process with 2 devices, in
# memory and streamed, straight through and interrupted then resumed): every metric bit for bit
# equal, since each step's one all-reduce adds the same two partial gradients. The tolerance only
# leaves room for another reduction order in a future XLA; a wrong shard or a missing all-reduce
# is off by far more.
RTOL = 1e-6
TIMEOUT_S = 240  # for each launch of the processes together
GRACE_S = 30  # for the others to end by themselves once one failed


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
    assert spec == DistributedSpec("10.0.0.1:1234", 2, 1) and spec.cluster is None


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

def test_process_shard_reads_the_sharding():
    mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
    assert process_shard(8, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))) == slice(0, 8)


def test_single_process_helpers_change_nothing():
    assert distributed.initialize(None) is False
    assert distributed.is_main_process()
    assert distributed.agree_on("outputs/run") == "outputs/run"
    assert distributed.any_process(True) and not distributed.any_process(False)
    sharding = jax.sharding.NamedSharding(jax.sharding.Mesh(np.array(jax.devices()), ("data",)),
                                          jax.sharding.PartitionSpec("data"))
    images = np.arange(12, dtype=np.float32).reshape(4, 3)
    batch = distributed.global_batch({"images": images}, sharding)
    assert batch["images"].sharding == sharding
    values = distributed.host_value({"images": batch["images"], "key": jax.random.key(0), "n": jnp.int32(3)})
    np.testing.assert_array_equal(values["images"], images)
    np.testing.assert_array_equal(values["key"], jax.random.key_data(jax.random.key(0)))
    assert isinstance(values["n"], np.ndarray) and values["n"] == 3


def test_several_processes_train_on_every_device(monkeypatch):
    """A mesh without some process's devices would leave that process out of every step."""
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    monkeypatch.setattr(jax, "devices", lambda: jax.local_devices() * 2)  # one of this process, one of the other's
    with pytest.raises(UserError, match="a run of 2 processes trains on every device.*trainer.devices=all"):
        data_parallel(1, {"trainer.batch_size": 64})


def test_resume_takes_the_processes_from_its_own_command_line(tmp_path, monkeypatch):
    """A run trained by two processes records their trainer.distributed keys; resuming it (in one
    process, or in two with keys of their own) must not join the old coordinator."""
    from cnnexp.app.extensions import register_hydra_extensions
    from cnnexp.commands.train import resolve_resume

    register_hydra_extensions()  # as `cnnexp train` does before composing
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / "checkpoints").mkdir()
    keys = ["trainer.distributed.coordinator=10.0.0.1:1234", "trainer.distributed.num_processes=2",
            "trainer.distributed.process_id=0"]
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["data=digits", "trainer.epochs=3", *keys]))
    monkeypatch.chdir(tmp_path)
    overrides, cfg = resolve_resume([f"resume={run}"])
    assert overrides == ["data=digits", "trainer.epochs=3", f"resume={run}"]
    assert cfg.trainer.epochs == 3 and cfg.trainer.distributed.coordinator is None
    given = ["trainer.distributed.coordinator=127.0.0.1:5", "trainer.distributed.num_processes=2",
             "trainer.distributed.process_id=1"]
    _, cfg = resolve_resume([f"resume={run}", *given])
    assert (cfg.trainer.distributed.coordinator, cfg.trainer.distributed.process_id) == ("127.0.0.1:5", 1)


def test_the_distributed_keys_are_not_part_of_the_run():
    """Two processes of one run differ in process_id: still one config (resume=latest finds the run
    whatever processes train it next)."""
    from cnnexp.runs.fingerprint import config_fingerprint

    base = OmegaConf.create({"seed": 0, "trainer": {"epochs": 2, "distributed": {}}})
    first, second = (OmegaConf.merge(base, {"trainer": {"distributed": {
        "coordinator": "127.0.0.1:5", "num_processes": 2, "process_id": index}}}) for index in (0, 1))
    assert config_fingerprint(first) == config_fingerprint(second) == config_fingerprint(base)
    assert config_fingerprint(base) != config_fingerprint(OmegaConf.merge(base, {"trainer": {"epochs": 3}}))


def test_a_sweep_is_not_run_by_each_of_several_processes(monkeypatch):
    """Each process would name a sweep folder of its own: sweeps of multi-process runs go through
    the slurm_multinode launcher, whose jobs' tasks share their job's folder."""
    from cnnexp.commands.train import check_sweep_processes

    for name in list(os.environ):
        if name.startswith("SLURM_"):
            monkeypatch.delenv(name)
    check_sweep_processes(["seed=0,1", "hydra/launcher=slurm_multinode"])
    with pytest.raises(UserError, match="trainer.distributed.process_id join the processes of one run, not of a "
                                        "sweep.*hydra/launcher=slurm_multinode"):
        check_sweep_processes(["seed=0,1", "trainer.distributed.process_id=0"])
    for name, value in slurm_env(procid=1, tasks=2).items():
        monkeypatch.setenv(name, value)
    with pytest.raises(UserError, match="in each task of a Slurm step of several tasks"):
        check_sweep_processes(["seed=0,1"])


# --- real runs of two processes ------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command_env(env: dict[str, str], devices: int, **extra: str) -> dict[str, str]:
    """`env` without any cluster's variables, on `devices` CPU devices per process."""
    env = {k: v for k, v in env.items() if not k.startswith(("SLURM_", "OMPI_", "JAX_COORDINATOR"))}
    flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith("--xla_force_host_platform_device_count")]
    env.update(XLA_FLAGS=" ".join([*flags, f"--xla_force_host_platform_device_count={devices}"]),
               JAX_PLATFORMS="cpu", **extra)
    return env


def explicit_keys(port: int) -> list[tuple[list[str], dict[str, str]]]:
    """(extra arguments, extra environment) of each of two processes given trainer.distributed keys."""
    keys = [f"trainer.distributed.coordinator=127.0.0.1:{port}", "trainer.distributed.num_processes=2"]
    return [([*keys, f"trainer.distributed.process_id={i}"], {}) for i in range(2)]


def slurm_tasks(port: int) -> list[tuple[list[str], dict[str, str]]]:
    """The same for the two tasks of a (fake) Slurm job step on this machine."""
    return [([], slurm_env(procid=i, tasks=2, SLURM_STEP_NODELIST="localhost", JAX_COORDINATOR_PORT=str(port)))
            for i in range(2)]


def start(root: Path, env: dict[str, str], args: list[str], places: list[tuple[list[str], dict[str, str]]]) -> list:
    """`cnnexp train *args` in `root`, once per place (each one process of one CPU device)."""
    root.mkdir(exist_ok=True)
    return [subprocess.Popen([cnnexp_executable(), "train", *args, *extra_args], cwd=root,
                             env=command_env(env, 1, **extra_env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True) for extra_args, extra_env in places]


def finish(processes: list) -> list[tuple[int, str]]:
    """Wait for every process, (exit status, output) of each. All are killed after TIMEOUT_S, and
    the others GRACE_S after one failed: they would wait for it until JAX's timeouts."""
    deadline = time.monotonic() + TIMEOUT_S
    while any(p.poll() is None for p in processes) and time.monotonic() < deadline:
        if any(p.returncode not in (None, 0, 130) for p in processes):
            deadline = min(deadline, time.monotonic() + GRACE_S)
        time.sleep(0.1)
    for p in processes:
        if p.poll() is None:
            p.kill()
    return [(p.wait(), p.stdout.read()) for p in processes]


def one_process_with_two_devices(root: Path, env: dict[str, str], *overrides: str) -> Path:
    """The reference: TINY plus `overrides` trained by one process of two CPU devices; its run folder."""
    root.mkdir()
    return train_tiny_run(root, command_env(env, 2), *overrides)


def assert_same_training(run: Path, reference: Path) -> None:
    ours, theirs = stable_metrics(run), stable_metrics(reference)
    assert [(r["kind"], r["split"], r["step"], r["lr"]) for r in ours] == \
           [(r["kind"], r["split"], r["step"], r["lr"]) for r in theirs]
    for a, b in zip(ours, theirs, strict=True):
        assert math.isclose(a["loss"], b["loss"], rel_tol=RTOL) and math.isclose(a["accuracy"], b["accuracy"], rel_tol=RTOL), (a, b)


@pytest.mark.slow
def test_two_processes_stop_together_resume_and_train_like_one_process_with_two_devices(shared_env, tmp_path):
    """trainer.distributed keys, the split in memory: Ctrl-C reaches process 1 only, both save their
    parts of the checkpoint and stop; two processes resume the run; it ends exactly like the run of
    one process with two devices. Process 0 alone writes the run folder and the console summary."""
    args = [*TINY, "trainer.epochs=3"]
    reference = one_process_with_two_devices(tmp_path / "one", shared_env, "trainer.epochs=3")
    root = tmp_path / "two"
    processes = start(root, shared_env, args, explicit_keys(free_port()))
    deadline = time.monotonic() + TIMEOUT_S
    while not ((run := live_run(root)[0]) and checkpoint_steps(run)) and time.monotonic() < deadline:
        assert all(p.poll() is None for p in processes), finish(processes)
        time.sleep(0.05)
    assert run and checkpoint_steps(run), f"no checkpoint of epoch 1 in {TIMEOUT_S} s: {finish(processes)}"
    processes[1].send_signal(signal.SIGINT)
    (status_0, output_0), (status_1, output_1) = finish(processes)
    assert status_0 == status_1 == 130, (output_0[-3000:], output_1[-3000:])
    summary = read_summary(run)
    assert summary["status"] == "interrupted" and summary["epochs_completed"] >= 1, summary
    assert f"Continue with: cnnexp train resume={run} (in each of the 2 processes)" in output_0
    assert "Continue with" not in output_1 and "process 1: SIGINT received" in output_1

    resumed = finish(start(root, shared_env, [f"resume={run}"], explicit_keys(free_port())))
    assert [status for status, _ in resumed] == [0, 0], [output[-3000:] for _, output in resumed]
    assert run_dirs(root / "outputs") == [run]
    assert read_summary(run)["status"] == "completed"
    assert read_summary(run)["device"] == {**read_summary(reference)["device"], "processes": 2}  # 2 devices of cpu
    assert "cnnexp train: completed" in resumed[0][1] and "cnnexp train:" not in resumed[1][1]
    assert "trainer.distributed.process_id=0" in (run / ".hydra" / "overrides.yaml").read_text()
    assert_same_training(run, reference)
    # Saved by two processes, read by this one (evaluate, visualize and init_from read it so).
    weights, meta = read_weights(run, "best")
    assert meta["epoch"] == read_summary(run)["best_epoch"] and weights["conv1.kernel"].shape == (5, 5, 1, 6)


@pytest.mark.slow
def test_two_slurm_tasks_stream_like_one_process_with_two_devices(shared_env, tmp_path, digits_root):
    """Places from Slurm's variables (JAX finds the coordinator), the image folder streamed from
    disk: each process reads only its rows of every batch, and the run equals one process's."""
    args = [*TINY, "data=image_folder", f"data.root={digits_root}", "data.in_memory=false", "data.stream_workers=0"]
    reference = one_process_with_two_devices(tmp_path / "one", shared_env, *args[len(TINY):])
    results = finish(start(tmp_path / "two", shared_env, args, slurm_tasks(free_port())))
    assert [status for status, _ in results] == [0, 0], [output[-3000:] for _, output in results]
    (run,) = run_dirs(tmp_path / "two" / "outputs")
    assert read_summary(run)["data_path"] == "streamed"
    assert_same_training(run, reference)


@pytest.mark.slow
def test_processes_given_different_configs_are_refused_together(shared_env, tmp_path):
    """They would compile different programs and wait on each other: every one of them stops with
    one line before anything is written."""
    places = explicit_keys(free_port())
    places[1][0].append("trainer.batch_size=32")
    results = finish(start(tmp_path, shared_env, ["data=digits"], places))
    for status, output in results:
        assert status == 2 and "the 2 processes of this run were given different configs" in output, output[-3000:]
        assert "Traceback" not in output
    assert not (tmp_path / "outputs").exists()
