"""Streaming a split that stays on disk: Grain reads, decodes and resizes batches in worker
processes while the device trains on the previous ones.

The epoch's order is the same `epoch_order(seed, epoch)` permutation the in-memory path gathers
by, so a streamed run sees exactly the batches an in-memory run of the same seed sees; a resumed
run starts the pipeline at the batch its checkpoint stopped at.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial

import numpy as np
from omegaconf import DictConfig

from cnnexp.data.geometry import Geometry
from cnnexp.data.records import RecordSplit

# Batches put on the device ahead of the step that uses them: one in flight while one trains.
DEVICE_PREFETCH = 2
# Batches each Grain reader keeps ready (host memory: this many batches of decoded images).
HOST_PREFETCH = 4
# Reader threads per process (array_record reads and PNG decodes release the GIL).
READ_THREADS = 4


@dataclass(frozen=True, eq=False)
class StreamedSplit:
    """Examples `indices` of `records`, labelled `labels`, brought to `geometry` when read."""

    records: RecordSplit
    indices: np.ndarray  # int64 positions in `records`
    labels: np.ndarray  # int32, may be relabelled (data.classes)
    geometry: Geometry

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, rows: np.ndarray) -> StreamedSplit:
        return StreamedSplit(self.records, self.indices[rows], self.labels[rows], self.geometry)

    def with_labels(self, labels: np.ndarray) -> StreamedSplit:
        return StreamedSplit(self.records, self.indices, labels, self.geometry)

    def images(self, rows: np.ndarray) -> np.ndarray:
        """The stored-size images of `rows`, read now (preprocessing fits, small samples)."""
        return np.stack([self.records.image(self.indices[row], self.geometry) for row in rows])


class _Examples:
    """Grain's random-access source: position i -> (image, label) of row `rows[i]` of `split`."""

    def __init__(self, split: StreamedSplit, rows: np.ndarray):
        self.split, self.rows = split, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, position: int) -> tuple[np.ndarray, np.int32]:
        row = self.rows[position]
        return self.split.records.image(self.split.indices[row], self.split.geometry), self.split.labels[row]


def _allow_unparsed_flags() -> None:
    """Grain's worker processes read an absl flag, which raises unless flags were parsed
    (google/grain#1355, fixed after 0.2.18); cnnexp has no absl command line to parse."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def _die_with_parent(parent: int, worker_index: int, worker_count: int) -> None:  # noqa: ARG001 (Grain's signature)
    """Runs in each Grain worker: the kernel ends it when the training process `parent` dies, even
    by SIGKILL, which leaves no Python code to stop the workers (they would hold the run's output
    pipes and cores). A worker whose parent died while it was starting exits at once. Linux only;
    elsewhere the workers stop when their queue closes."""
    import ctypes
    import signal
    import sys

    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # 1: PR_SET_PDEATHSIG
        if os.getppid() != parent:
            os._exit(1)


def stream_workers(data_cfg: DictConfig) -> int:
    """data.stream_workers as a count of Grain worker processes (0: threads of this process); `auto`
    is one per core but one (the main process feeds the device), at least one, at most eight."""
    workers = data_cfg.get("stream_workers", "auto")
    return max(1, min(8, (os.cpu_count() or 2) - 1)) if workers == "auto" else int(workers)


def batches(split: StreamedSplit, rows: np.ndarray, batch_size: int, workers: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(uint8 images, int32 labels) of consecutive `batch_size` groups of `rows` (whole batches only),
    decoded by `workers` processes (0: threads of this process)."""
    import grain

    dataset = grain.MapDataset.source(_Examples(split, rows)).batch(batch_size, drop_remainder=True)
    stream = dataset.to_iter_dataset(grain.ReadOptions(num_threads=READ_THREADS, prefetch_buffer_size=HOST_PREFETCH))
    if workers > 0:
        _allow_unparsed_flags()
        stream = stream.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers, per_worker_buffer_size=HOST_PREFETCH),
                                    worker_init_fn=partial(_die_with_parent, os.getpid()))
    return iter(stream)


def epoch_rows(order: np.ndarray, first_batch: int, batch_size: int, shard: slice) -> np.ndarray:
    """The rows this process reads in an epoch of shuffled `order`, from batch `first_batch` on:
    its `shard` of every global batch, batches in order."""
    steps = len(order) // batch_size
    global_batches = order[first_batch * batch_size:steps * batch_size].reshape(-1, batch_size)
    return global_batches[:, shard].reshape(-1)


def on_device(stream: Iterator[tuple[np.ndarray, ...]], place: Callable[[tuple[np.ndarray, ...]], tuple]) -> Iterator[tuple]:
    """`stream`'s batches placed on the device `DEVICE_PREFETCH` ahead, so the next batch's
    transfer overlaps the step that is running."""
    ahead: deque = deque()
    for batch in stream:
        ahead.append(place(batch))
        if len(ahead) > DEVICE_PREFETCH:
            yield ahead.popleft()
    while ahead:
        yield ahead.popleft()
