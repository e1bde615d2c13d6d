"""One training run across several processes (several hosts, or one process per GPU) through JAX's
own multi-controller SPMD: `jax.distributed` joins the processes into one set of global devices,
a `Mesh` over `jax.devices()` spans them all, and XLA all-reduces the gradients of a step whose
batch is split across them. Every process runs the same program on its own share of each batch.

Where the processes come from:
- `trainer.distributed.{coordinator,num_processes,process_id}` set explicitly (all three), e.g. two
  terminals on one machine or any launcher that does not set Slurm's variables;
- a Slurm job step with several tasks (`srun`, or Hydra's submitit launcher with `nodes` /
  `tasks_per_node` > 1): JAX's own Slurm detection finds the coordinator (the first node of the
  step, a port derived from the job id, or $JAX_COORDINATOR_PORT) and, on GPUs, gives task i of a
  node that node's i-th GPU. So on GPUs run one task per GPU, each seeing all of the node's GPUs
  (`gpus_per_node`, not `gpus_per_task`, which hides the others from each task).
- otherwise a plain single process: nothing here changes anything.

Measured with jax 0.10.2 on CPU (two processes on localhost, gloo collectives): a step's result is
bit for bit the one of a single process with two devices (--xla_force_host_platform_device_count=2)
and the same global batch; `jax.distributed.initialize` takes 10-150 ms once both processes are up;
each step pays the cross-process all-reduce (about 16 ms for a tiny net on 2 cores), so on CPU this
is for correctness and for hosts with many cores, not a speedup of small models.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np
from omegaconf import DictConfig

from cnnexp.checks import check_values, integer_at_least, is_integer
from cnnexp.errors import UserError

log = logging.getLogger(__name__)

# The three keys of `trainer.distributed`, set together or not at all.
KEYS = ("coordinator", "num_processes", "process_id")
# What JAX's Slurm detection (jax._src.clusters.slurm_cluster) reads: without all of them it
# detects nothing and `jax.distributed.initialize()` fails for want of a coordinator address.
SLURM_REQUIRED = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")


@dataclass(frozen=True)
class DistributedSpec:
    """How this process joins a multi-process run."""

    coordinator: str | None  # host:port of process 0's coordinator; None: JAX's `cluster` detection finds it
    num_processes: int
    process_id: int
    # "slurm": found in Slurm's variables, and JAX detects the coordinator and each task's GPU.
    # None (explicit keys): no detection at all, so each process keeps every device it sees.
    cluster: str | None = None


def _is_address(value: object) -> bool:
    """`host:port` with a port in 1..65535 (IPv6 hosts in brackets: `[::1]:1234`)."""
    if not isinstance(value, str) or ":" not in value:
        return False
    host, port = value.rsplit(":", 1)
    return bool(host) and port.isdigit() and 0 < int(port) < 65536


def distributed_spec(trainer_cfg: DictConfig, environ: Mapping[str, str] = os.environ) -> DistributedSpec | None:
    """This process's place in a multi-process run, or None for a plain single process.

    Explicit `trainer.distributed` keys win (all three, or none); otherwise a Slurm job step of
    more than one task is detected from `environ`. One process (`num_processes=1`, a one-task Slurm
    job such as each job of an ordinary Slurm sweep) is None: it needs no coordinator."""
    section = trainer_cfg.get("distributed") or {}
    given = {key: section.get(key) for key in KEYS}
    if any(value is not None for value in given.values()):
        return _explicit_spec(given)
    return _slurm_spec(environ)


def _explicit_spec(given: dict[str, Any]) -> DistributedSpec | None:
    missing = [key for key, value in given.items() if value is None]
    if missing:
        raise UserError(f"trainer.distributed: set coordinator, num_processes and process_id together, or none "
                        f"of them (missing: {', '.join(missing)})")
    coordinator, num_processes, process_id = (given[key] for key in KEYS)
    check_values([
        ("trainer.distributed.coordinator", coordinator, _is_address, "host:port of process 0, e.g. 10.0.0.1:12345"),
        integer_at_least("trainer.distributed.num_processes", num_processes, 1),
    ])
    check_values([("trainer.distributed.process_id", process_id,
                   lambda v: is_integer(v) and 0 <= v < num_processes, f"an integer in [0, {num_processes - 1}]")])
    if num_processes == 1:
        return None
    return DistributedSpec(coordinator, num_processes, process_id)


def _slurm_spec(environ: Mapping[str, str]) -> DistributedSpec | None:
    # In a job step (srun, and so every submitit task) SLURM_STEP_NUM_TASKS is the step's task count;
    # SLURM_NTASKS is the job's, which a batch script's own process also sees (it is no step of many).
    tasks = environ.get("SLURM_STEP_NUM_TASKS") or environ.get("SLURM_NTASKS")
    if tasks is None or not all(name in environ for name in SLURM_REQUIRED):
        return None
    for name, value in (("SLURM_STEP_NUM_TASKS/SLURM_NTASKS", tasks), ("SLURM_PROCID", environ["SLURM_PROCID"])):
        if not value.strip().isdigit():
            raise UserError(f"Slurm set {name}={value!r}, not a task count or rank")
    num_processes, process_id = int(tasks), int(environ["SLURM_PROCID"])
    if num_processes <= 1:
        return None
    if process_id >= num_processes:
        raise UserError(f"Slurm set SLURM_PROCID={process_id} for a step of {num_processes} tasks")
    return DistributedSpec(None, num_processes, process_id, cluster="slurm")


def initialize(spec: DistributedSpec | None, *, timeout_s: int = 300) -> bool:
    """Join the multi-process run `spec` describes (once: a second call does nothing); True if this
    process is part of one. Must run before anything starts a JAX backend (jax.devices(), the first
    array): that is when each process learns the global devices.

    `timeout_s`: how long to wait for every process to connect to the coordinator."""
    if spec is None:
        return False
    if jax.distributed.is_initialized():
        return True
    # Cross-process collectives on CPU need an implementation; gloo (TCP, built into jaxlib) is the
    # default in jax 0.10.2, but older releases had none and every multi-process CPU program failed
    # at its first all-reduce. Only CPU computations use it, so it is harmless on GPU hosts; a
    # choice the user made (e.g. mpi) is kept.
    if jax.config.jax_cpu_collectives_implementation is None:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    # With explicit keys, JAX would still run its cluster detection (for local_device_ids) and, in
    # a Slurm job, restrict each process to the GPU of its Slurm rank: "deactivate" keeps them all.
    coordinator = spec.coordinator or f"found by JAX in {spec.cluster}'s variables"
    try:
        jax.distributed.initialize(spec.coordinator, num_processes=spec.num_processes, process_id=spec.process_id,
                                   cluster_detection_method=spec.cluster or "deactivate",
                                   initialization_timeout=timeout_s)
    except Exception as error:  # jaxlib raises its own runtime errors (a timeout, an address in use)
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"process {spec.process_id} of {spec.num_processes} could not join the run (coordinator "
                        f"{coordinator}, waited up to {timeout_s} s for all processes): {reason}") from None
    log.info("distributed: process %d of %d (coordinator %s), %d of %d %s devices here", spec.process_id,
             spec.num_processes, coordinator, jax.local_device_count(), jax.device_count(), jax.devices()[0].platform)
    return True


def is_main_process() -> bool:
    """True in process 0, the one that writes the run folder's files (summary, metrics, plots);
    every process must still take part in each computation and checkpoint."""
    return jax.process_index() == 0


class _ProcessPrefix(logging.Filter):
    """Names this process at the start of each message (once, though every handler filters it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "process_prefixed", False):
            record.msg, record.process_prefixed = f"process {jax.process_index()}: {record.msg}", True
        return True


def quiet_other_processes() -> None:
    """In every process but 0, log warnings and errors only, each line naming its process: process 0
    tells the run's progress for all of them, and N processes sharing a terminal or a log file
    would otherwise print every line N times."""
    if jax.process_count() == 1 or is_main_process():
        return
    root = logging.getLogger()
    for handler in root.handlers:
        handler.setLevel(max(handler.level, logging.WARNING))
        handler.addFilter(_ProcessPrefix())


def any_process(flag: bool) -> bool:
    """True if `flag` is true in any process (a Ctrl-C or SIGTERM that reached some of them). A
    collective: every process must call it at the same point of the run."""
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils

    return bool(np.any(multihost_utils.process_allgather(np.array([flag]))))


def _host_leaf(x: Any) -> Any:
    if not isinstance(x, jax.Array):
        return np.asarray(x)
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    if x.is_fully_addressable:
        return np.asarray(x)
    return np.asarray(x.addressable_data(0))  # replicated: this process's copy, no communication


def host_value(tree: Any) -> Any:
    """Numpy values of `tree`'s arrays (local, or replicated across processes like the training
    state and the metric sums), also where `np.asarray` raises for an array that spans other
    processes' devices. An array split across processes is no value one process holds: refused."""
    for leaf in jax.tree.leaves(tree):
        if isinstance(leaf, jax.Array) and not (leaf.is_fully_addressable or leaf.sharding.is_fully_replicated):
            raise ValueError(f"host_value: an array split across processes ({leaf.sharding})")
    return jax.tree.map(_host_leaf, tree)


def global_batch(local: Any, sharding: jax.sharding.Sharding) -> Any:
    """The global array(s) of which `local` (numpy, a pytree of them) is this process's share
    (`process_shard`'s rows), split over the devices as `sharding` says. The same call also works
    in a single process with the whole batch as `local`."""
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), local)


def replicate(tree: Any, sharding: jax.sharding.Sharding) -> Any:
    """`tree` on every device of `sharding` (a replicated one), from the same value in every
    process. Unlike `jax.device_put`, which refuses a sharding over other processes' devices for
    typed PRNG keys and for arrays already committed to a device, this takes any leaf."""
    def place(x: Any) -> Any:
        if isinstance(x, jax.Array) and x.sharding == sharding:
            return x
        return jax.make_array_from_process_local_data(sharding, x)

    return jax.tree.map(place, tree)


def agree_on(value: str) -> str:
    """Process 0's `value` in every process (the run folder each would otherwise name itself).
    A collective: every process must call it, in the same order as its other collectives."""
    if jax.process_count() == 1:
        return value
    from jax.experimental import multihost_utils

    # broadcast_one_to_all needs the same shape in every process: first the length, then the bytes.
    data = np.frombuffer(value.encode(), np.uint8)
    length = int(multihost_utils.broadcast_one_to_all(np.int32(len(data))))
    buffer = np.zeros(length, np.uint8)
    if is_main_process():
        buffer[:] = data
    return bytes(np.asarray(multihost_utils.broadcast_one_to_all(buffer))).decode()


def process_shard(batch_size: int, sharding: jax.sharding.Sharding) -> slice:
    """The rows of each batch of `batch_size` this process feeds: those its devices hold under
    `sharding`, one block (a mesh over `jax.devices()` lists each process's devices together),
    which is where `jax.make_array_from_process_local_data` puts them. One process: every row."""
    device_rows = sharding.addressable_devices_indices_map((batch_size,)).values()
    blocks = sorted((range(batch_size)[rows[0]] for rows in device_rows), key=lambda r: r.start)
    if any(a.stop < b.start for a, b in zip(blocks, blocks[1:])):
        raise ValueError(f"{sharding} gives this process rows that are not one block")
    return slice(blocks[0].start, max(block.stop for block in blocks))
