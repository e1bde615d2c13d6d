"""How batches reach the compiled steps: from a split held on the device (gathered by index inside
the step) or streamed from disk (read by Grain, placed on the device ahead of the step).

Both feed a train step with the batches of the same `epoch_order(seed, epoch)`, so the two paths
train the same model for the same seed; a feed starts an epoch at any batch, which is how a
resumed run continues mid-epoch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np
from omegaconf import DictConfig

from cnnexp.data.dataset import ImageDataset, Split
from cnnexp.data.stream import StreamedSplit, batches, epoch_rows, on_device, stream_workers
from cnnexp.training.builder import Experiment
from cnnexp.training.parallel import DataParallel
from cnnexp.training.steps import LeafStep, TrainState, epoch_order

Place = Callable[[Any], Any]  # host arrays -> device arrays (replicated, or split across devices)


class MemoryFeed:
    """The training split on the device as uint8; the step gathers each batch by index."""

    def __init__(self, split: Split, *, batch_size: int, seed: int, place: Place):
        self.place = place
        self.images, self.labels = place(split.images), place(split.labels)
        self.size, self.steps_per_epoch = len(split), len(split) // batch_size
        self.key = jax.random.key(seed)
        self._order = jax.jit(epoch_order, static_argnums=2).lower(self.key, 0, self.size).compile()

    def compile(self, experiment: Experiment, state: TrainState, preprocessing: Any) -> LeafStep:
        """The experiment's gathering train step, compiled for this split."""
        example_order = self.place(np.zeros(self.size, np.int32))
        return LeafStep(experiment.gathered_step, state).compile(state, self.images, self.labels, preprocessing, example_order,
                                                      np.int32(0))

    def epoch(self, epoch: int, first_batch: int, preprocessing: Any) -> Iterator[tuple]:
        """The step arguments (after the state) of each batch of `epoch` from `first_batch` on."""
        # Every process computes the same order; placed beside the split it indexes.
        order = self.place(self._order(self.key, epoch))
        for batch in range(first_batch, self.steps_per_epoch):
            yield self.images, self.labels, preprocessing, order, np.int32(batch)


class _Stream:
    """A split on disk read by Grain: this process's `shard` of each batch, placed on the device
    (`place_batch`) ahead of the step that uses it."""

    def __init__(self, split: StreamedSplit, *, batch_size: int, place_batch: Place,
                 stored_shape: tuple[int, int, int], workers: int, shard: slice = slice(None)):
        self.split, self.batch_size, self.place_batch, self.workers = split, batch_size, place_batch, workers
        self.shard, self.local_batch = shard, len(range(batch_size)[shard])
        self.stored_shape = stored_shape

    def _placeholder(self) -> tuple[Any, Any]:
        """A batch of this process's shape on the device, to compile for."""
        return self.place_batch((np.zeros((self.local_batch, *self.stored_shape), np.uint8),
                                 np.zeros(self.local_batch, np.int32)))

    def _batches(self, rows: np.ndarray) -> Iterator[tuple[Any, Any]]:
        return on_device(batches(self.split, rows, self.local_batch, self.workers), self.place_batch)


class StreamFeed(_Stream):
    """The training split on disk, read in the order of `epoch_order(seed, epoch)`."""

    def __init__(self, split: StreamedSplit, *, seed: int, **stream: Any):
        super().__init__(split, **stream)
        self.size, self.steps_per_epoch = len(split), len(split) // self.batch_size
        self.key = jax.random.key(seed)

    def compile(self, experiment: Experiment, state: TrainState, preprocessing: Any) -> LeafStep:
        """The experiment's train step on one batch, compiled for this process's share of it."""
        return LeafStep(experiment.train_step, state).compile(state, *self._placeholder(), preprocessing, np.int32(0))

    def epoch(self, epoch: int, first_batch: int, preprocessing: Any) -> Iterator[tuple]:
        """The step arguments (after the state) of each batch of `epoch` from `first_batch` on."""
        order = np.asarray(jax.device_get(epoch_order(self.key, epoch, self.size)))
        rows = epoch_rows(order, first_batch, self.batch_size, self.shard)
        for batch, (images, labels) in enumerate(self._batches(rows), first_batch):
            yield images, labels, preprocessing, np.int32(batch)


class MemoryEval:
    """An evaluation split on the device, padded to whole batches: (images, labels, count, start) per batch."""

    def __init__(self, split: Split, *, batch_size: int, place: Place):
        padded = split.padded(batch_size)
        self.images, self.labels, self.count, self.batch_size = place(padded.images), place(padded.labels), len(split), batch_size

    def example(self) -> tuple:
        return self.images, self.labels, np.int32(self.count), np.int32(0)

    def batches(self) -> Iterator[tuple]:
        for start in range(0, self.images.shape[0], self.batch_size):
            yield self.images, self.labels, np.int32(self.count), np.int32(start)


class StreamEval(_Stream):
    """An evaluation split on disk, read in order, the last batch padded (its padding masked by the
    count of examples left)."""

    def example(self) -> tuple:
        return *self._placeholder(), np.int32(0), np.int32(0)

    def batches(self) -> Iterator[tuple]:
        count = len(self.split)
        rows = np.arange(count + -count % self.batch_size) % count  # padding repeats the first rows
        shard_rows = rows.reshape(-1, self.batch_size)[:, self.shard].reshape(-1)
        for index, (images, labels) in enumerate(self._batches(shard_rows)):
            yield images, labels, np.int32(count - index * self.batch_size), np.int32(0)


def stream_options(data: ImageDataset, data_cfg: DictConfig, batch_size: int,
                   parallel: DataParallel | None) -> dict[str, Any]:
    """How a streamed split of `data` is read and placed: each process reads its own rows of every
    batch (all of them in a single process) and places them on its devices."""
    place_batch, rows = ((jax.device_put, slice(None)) if parallel is None
                         else (parallel.place_batch, parallel.shard(batch_size)))
    return {"place_batch": place_batch, "stored_shape": data.stored_shape, "workers": stream_workers(data_cfg),
            "shard": rows}


def train_feed(data: ImageDataset, data_cfg: DictConfig, *, batch_size: int, seed: int, place: Place,
               parallel: DataParallel | None) -> MemoryFeed | StreamFeed:
    """The training split's feed as `cnnexp train` reads it (and `cnnexp lr-find`, which trains the
    same way): on the device, or streamed from disk."""
    if not data.streamed:
        return MemoryFeed(data.train, batch_size=batch_size, seed=seed, place=place)
    return StreamFeed(data.train, batch_size=batch_size, seed=seed,
                      **stream_options(data, data_cfg, batch_size, parallel))
