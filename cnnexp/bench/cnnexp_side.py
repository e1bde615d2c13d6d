"""cnnexp's side of a bench row: the train and eval steps `cnnexp train` compiles for a config,
on the config's data resident on the device, with what XLA says about their cost."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from omegaconf import DictConfig

from cnnexp.config import model_options
from cnnexp.data import ImageDataset
from cnnexp.models import count_params, create_model
from cnnexp.models.param_paths import leaf_paths, output_layer
from cnnexp.training.optim import build_optimizer, build_schedule, param_groups
from cnnexp.training.parallel import data_parallel
from cnnexp.training.run import configured_steps, fit_to_training_data
from cnnexp.training.steps import epoch_order, init_state


@dataclass
class CompiledSteps:
    """Callables that run `steps` train steps or one eval pass and wait for the device."""

    params: int
    compile_s: float  # lowering and compiling the train step: what the first step costs
    train_flops: float | None  # per step, from XLA's cost analysis of the compiled program
    train: Any
    evaluate: Any
    eval_images: int  # per evaluate() call


def _flops(compiled: Any) -> float | None:
    """XLA's FLOP count of a compiled program (None where the backend gives none)."""
    analysis = compiled.cost_analysis()
    analysis = analysis[0] if isinstance(analysis, list) else analysis
    flops = (analysis or {}).get("flops")
    return float(flops) if flops and flops > 0 else None


def compile_steps(cfg: DictConfig, data: ImageDataset, *, steps: int, eval_batches: int) -> CompiledSteps:
    """Build the model, optimizer and steps of `cfg` as `Trainer.build` does, and compile them."""
    trainer = cfg.trainer
    batch = trainer.batch_size
    model = create_model(cfg.model.name, model_options(cfg.model), input_shape=data.input_shape,
                         num_classes=data.num_classes, rngs=nnx.Rngs(cfg.seed))
    preprocessing = data.preprocessing
    fit_to_training_data(model, data.train.images, preprocessing)
    groups = param_groups(cfg.optim.get("groups"), leaf_paths(nnx.state(model, nnx.Param)),
                          output_layer(model, data.input_shape))
    steps_per_epoch = len(data.train) // batch
    tx = build_optimizer(cfg.optim, build_schedule(cfg.schedule, cfg.optim.lr, 10 * steps_per_epoch, steps_per_epoch),
                         groups)
    model.train()
    train_graphdef, state = init_state(model, tx, ema=trainer.ema_decay is not None)
    model.eval()
    eval_graphdef, _, _ = nnx.split(model, nnx.Param, ...)
    eval_batch = trainer.eval_batch_size
    parallel = data_parallel(trainer.devices, {"trainer.batch_size": batch, "trainer.eval_batch_size": eval_batch})
    place = jax.device_put if parallel is None else parallel.replicate
    batch_sharding = None if parallel is None else parallel.batch
    state, preprocessing = place(state), place(preprocessing)
    images, labels = place(data.train.images), place(data.train.labels)
    order = place(epoch_order(jax.random.key(cfg.seed), 0, len(data.train)))

    train_fn, eval_fn = configured_steps(cfg, data.input_shape, train_graphdef, eval_graphdef, tx, batch_sharding)
    start = time.perf_counter()
    train_step = jax.jit(train_fn, donate_argnums=0).lower(state, images, labels, preprocessing, order,
                                                           np.int32(0)).compile()
    compile_s = time.perf_counter() - start
    current = {"state": state, "batch": 0}

    def train() -> None:
        for _ in range(steps):
            current["state"] = train_step(current["state"], images, labels, preprocessing, order,
                                          np.int32(current["batch"]))
            current["batch"] = (current["batch"] + 1) % steps_per_epoch
        jax.block_until_ready(current["state"])

    test = data.test.padded(eval_batch)
    test_images, test_labels = place(test.images), place(test.labels)
    batches = min(eval_batches, len(test) // eval_batch)
    eval_step = jax.jit(eval_fn).lower(jnp.zeros(3), state.params, state.model_state, test_images, test_labels, preprocessing,
             np.int32(0), np.int32(0)).compile()

    def evaluate() -> None:
        sums = jnp.zeros(3)
        for index in range(batches):
            sums = eval_step(sums, current["state"].params, current["state"].model_state, test_images, test_labels,
                             preprocessing, np.int32(len(data.test)), np.int32(index * eval_batch))
        jax.block_until_ready(sums)

    flops = _flops(train_step)  # per device under data parallelism: the step's total is that times the devices
    if flops is not None and parallel is not None:
        flops *= parallel.device_count
    return CompiledSteps(count_params(model), compile_s, flops, train, evaluate, batches * eval_batch)


def peak_memory_bytes() -> int | None:
    """The most device memory in use so far, where the backend reports it (GPUs; not XLA:CPU)."""
    stats = jax.devices()[0].memory_stats() or {}
    return stats.get("peak_bytes_in_use")


def matmul_seconds(flops: float, dtype: str = "float32", repeats: int = 5, fastest: bool = False) -> float:
    """Median (or `fastest`) time of one square matrix product doing `flops` (2 n^3) operations."""
    n = max(8, round((flops / 2) ** (1 / 3)))
    dtype = jnp.bfloat16 if dtype == "bf16" else jnp.float32
    a = jax.random.normal(jax.random.key(0), (n, n), dtype)
    product = jax.jit(lambda x: x @ x).lower(a).compile()
    jax.block_until_ready(product(a))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(product(a))
        times.append(time.perf_counter() - start)
    chosen = min(times) if fastest else sorted(times)[len(times) // 2]
    return chosen * flops / (2 * n**3)  # rescaled to exactly `flops`
