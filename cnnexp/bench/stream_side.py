"""`bench.stream=true`: the streamed input path of a row's config, timed on its own and feeding the
train step, with the memory it holds (the training process and its Grain workers together)."""

from __future__ import annotations

import time
from typing import Any

import jax
from omegaconf import DictConfig

from cnnexp.bench.tree_memory import TreeMemory
from cnnexp.data import load_dataset
from cnnexp.data.stream import stream_workers
from cnnexp.training.builder import build_experiment, fit_to_training_data
from cnnexp.training.feeds import StreamFeed


def _timed_batches(stream: Any, count: int) -> float:
    """Seconds to take `count` batches from `stream` after its first (startup: workers, first reads)."""
    first = next(stream)
    jax.block_until_ready(first)
    start = time.perf_counter()
    for _ in range(count):
        jax.block_until_ready(next(stream))
    return time.perf_counter() - start


def measure_stream(cfg: DictConfig, batches: int) -> dict[str, Any]:
    """"stream img/s" (batches read, decoded and placed on the device, nothing trained), "streamed
    train img/s" (the compiled train step fed by that stream) and "stream peak MiB" of `cfg`'s
    training split read from disk, over `batches` batches each."""
    if cfg.data.name == "digits":
        return {"stream": "digits is held in memory only"}
    with TreeMemory() as memory:
        data = load_dataset(cfg.data, cfg.seed, in_memory=False)
        batch = cfg.trainer.batch_size
        if len(data.train) // batch < 2 * batches + 2:
            return {"stream": f"the training split has fewer than {2 * batches + 2} batches of {batch}"}
        feed = StreamFeed(data.train, batch_size=batch, seed=cfg.seed, place_batch=jax.device_put,
                          stored_shape=data.stored_shape, workers=stream_workers(cfg.data))
        preprocessing = jax.device_put(data.preprocessing)
        read_s = _timed_batches(iter(feed.epoch(0, 0, preprocessing)), batches)
        experiment = build_experiment(cfg, data.input_shape, data.num_classes, steps_per_epoch=feed.steps_per_epoch,
                                      initialize=lambda model, _: fit_to_training_data(model, data.fit_images(),
                                                                                       preprocessing))
        state = jax.device_put(experiment.state)
        step = feed.compile(experiment, state, preprocessing)
        leaves = step.leaves(state)

        def trained(args_stream):
            nonlocal leaves
            for args in args_stream:
                leaves = step(leaves, *args)
                yield leaves

        train_s = _timed_batches(trained(feed.epoch(1, 0, preprocessing)), batches)
    return {"stream img/s": batches * batch / read_s, "streamed train img/s": batches * batch / train_s,
            "stream peak MiB": memory.peak_bytes / 2**20,
            "stream": f"{feed.workers} Grain worker(s), images stored at {'x'.join(map(str, data.stored_shape))}"}
