"""Data parallelism over the devices of the default backend, through `jax.sharding`.

Every device holds the whole (small) dataset and a replica of the training state; each batch is
split along its first axis, so XLA partitions the step and all-reduces the gradients itself. One
device means no sharding at all: the single-device program is unchanged.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from omegaconf import DictConfig

from cnnexp.errors import UserError

BATCH_AXIS = "data"


class DataParallel(NamedTuple):
    replicated: NamedSharding
    batch: NamedSharding  # split along the first axis

    @property
    def device_count(self) -> int:
        return self.replicated.mesh.size

    def replicate(self, tree: Any) -> Any:
        """Put `tree` on every device."""
        return jax.device_put(tree, self.replicated)


def data_parallel(devices: str | int, batch_sizes: dict[str, int]) -> DataParallel | None:
    """The shardings for `trainer.devices` (`all` or a count), or None for a single device.
    Every batch size (by config key) must split evenly across the devices."""
    available = jax.devices()
    count = len(available) if devices == "all" else devices
    if count > len(available):
        raise UserError(f"trainer.devices={devices}: only {len(available)} {available[0].platform} device(s) here")
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
