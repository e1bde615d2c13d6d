"""Data parallelism over the devices of the default backend, through `jax.sharding`.

Every device holds the whole (small) dataset and a replica of the training state; each batch is
split along its first axis, so XLA partitions the step and all-reduces the gradients itself. One
device means no sharding at all: the single-device program is unchanged. In a run of several
processes (`training.distributed`) the devices are those of all processes, and each process
places its own share of every batch.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from omegaconf import DictConfig

from cnnexp.errors import UserError
from cnnexp.training.distributed import global_batch, process_shard, replicate

BATCH_AXIS = "data"


class DataParallel(NamedTuple):
    replicated: NamedSharding
    batch: NamedSharding  # split along the first axis

    @property
    def device_count(self) -> int:
        return self.replicated.mesh.size

    def replicate(self, tree: Any) -> Any:
        """Put `tree` (the same value in every process) on every device."""
        return replicate(tree, self.replicated)

    def place_batch(self, local: Any) -> Any:
        """The global batch of which `local` (numpy) is this process's `shard`, split across the devices."""
        return global_batch(local, self.batch)

    def shard(self, batch_size: int) -> slice:
        """The rows of each batch of `batch_size` this process feeds (all of them in a single process)."""
        return process_shard(batch_size, self.batch)


def data_parallel(devices: str | int, batch_sizes: dict[str, int]) -> DataParallel | None:
    """The shardings for `trainer.devices` (`all` or a count), or None for a single device.
    Every batch size (by config key) must split evenly across the devices."""
    available = jax.devices()
    count = len(available) if devices == "all" else devices
    if count > len(available):
        raise UserError(f"trainer.devices={devices}: only {len(available)} {available[0].platform} device(s) here")
    if jax.process_count() > 1 and count != len(available):
        # Each process feeds its own devices: a mesh without some of them would leave a process out.
        raise UserError(f"trainer.devices={devices}: a run of {jax.process_count()} processes trains on every "
                        f"device of every process ({len(available)}); use trainer.devices=all")
    if count == 1:
        return None
    for key, size in batch_sizes.items():
        if size % count:
            raise UserError(f"{key}={size} does not split evenly across {count} devices "
                            f"(use a multiple of {count}, or trainer.devices=1)")
    mesh = Mesh(available[:count], (BATCH_AXIS,))
    return DataParallel(NamedSharding(mesh, PartitionSpec()), NamedSharding(mesh, PartitionSpec(BATCH_AXIS)))


def trainer_parallel(trainer_cfg: DictConfig) -> DataParallel | None:
    """`data_parallel` for the `trainer` group: its devices, its train and eval batch sizes."""
    return data_parallel(trainer_cfg.devices, {"trainer.batch_size": trainer_cfg.batch_size,
                                               "trainer.eval_batch_size": trainer_cfg.eval_batch_size})
