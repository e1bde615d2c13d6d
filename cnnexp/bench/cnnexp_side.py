"""cnnexp's side of a bench row: the train and eval steps `cnnexp train` compiles for a config,
on the config's data resident on the device, with what XLA says about their cost."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from omegaconf import DictConfig, OmegaConf

from cnnexp import kernels
from cnnexp.data import ImageDataset
from cnnexp.training.builder import build_experiment, fit_to_training_data
from cnnexp.training.parallel import trainer_parallel
from cnnexp.training.steps import LeafStep, epoch_order


@dataclass
class CompiledSteps:
    """Callables that run `steps` train steps or one eval pass and wait for the device."""

    params: int
    compile_s: float  # lowering and compiling the train step: what the first step costs
    train_flops: float | None  # per step, from XLA's cost analysis of the step with XLA's layers
    train: Any
    evaluate: Any
    eval_images: int  # per evaluate() call
    kernel_share: Any  # () -> the fraction of train() time spent in the oneDNN kernels so far (None: none)


def _flops(program: Any) -> float | None:
    """XLA's FLOP count of a lowered or compiled program (None where the backend gives none)."""
    analysis = program.cost_analysis()
    analysis = analysis[0] if isinstance(analysis, list) else analysis
    flops = (analysis or {}).get("flops")
    return float(flops) if flops and flops > 0 else None


@dataclass
class _TrainProgram:
    """The train step of a config with its first arguments, ready to lower."""

    step: LeafStep
    args: tuple  # the state and the data; the batch index follows
    params: int
    kernels: dict[str, str]
    parallel: Any
    eval_fn: Any
    place: Any
    steps_per_epoch: int


def _train_program(cfg: DictConfig, data: ImageDataset) -> _TrainProgram:
    """Model, optimizer, state and step functions of `cfg`, from the builder `cnnexp train` uses."""
    steps_per_epoch = len(data.train) // cfg.trainer.batch_size
    parallel = trainer_parallel(cfg.trainer)
    experiment = build_experiment(
        cfg, data.input_shape, data.num_classes, steps_per_epoch=steps_per_epoch, parallel=parallel,
        initialize=lambda model, _: fit_to_training_data(model, data.fit_images(), data.preprocessing))
    place = jax.device_put if parallel is None else parallel.replicate
    state, preprocessing = place(experiment.state), place(data.preprocessing)
    images, labels = place(data.train.images), place(data.train.labels)
    order = place(epoch_order(jax.random.key(cfg.seed), 0, len(data.train)))
    return _TrainProgram(LeafStep(experiment.gathered_step, state), (state, images, labels, preprocessing, order),
                         experiment.params, experiment.kernels, parallel, experiment.eval_step, place, steps_per_epoch)


def _xla_flops(cfg: DictConfig, data: ImageDataset, program: _TrainProgram) -> float | None:
    """FLOPs of one train step. XLA's cost analysis does not see inside the oneDNN kernels' custom
    calls, so where they run the count comes from the same step lowered with XLA's layers."""
    kinds = ("conv", "pool", "norm")
    if "onednn" not in program.kernels.values():
        flops = _flops(program.step.lower(*program.args, np.int32(0)))
    else:
        xla_layers = OmegaConf.merge(cfg, {"model": {f"{kind}_impl": "library" for kind in kinds}})
        xla_program = _train_program(xla_layers, data)
        flops = _flops(xla_program.step.lower(*xla_program.args, np.int32(0)))
    if flops is not None and program.parallel is not None:  # the lowering is per device
        flops *= program.parallel.device_count
    return flops


def compile_steps(cfg: DictConfig, data: ImageDataset, *, steps: int, eval_batches: int) -> CompiledSteps:
    """Build the model, optimizer and steps of `cfg` with the builder `cnnexp train` uses, and compile them."""
    program = _train_program(cfg, data)
    flops = _xla_flops(cfg, data, program)
    start = time.perf_counter()
    train_step = program.step.compile(*program.args, np.int32(0))
    compile_s = time.perf_counter() - start
    state, images, labels, preprocessing, order = program.args
    current = {"leaves": train_step.leaves(state), "batch": 0}
    kernel_shares: list[float] = []  # per train() call

    def train() -> None:
        start, in_kernels = time.perf_counter(), kernels.seconds_in_kernels()
        for _ in range(steps):
            current["leaves"] = train_step(current["leaves"], images, labels, preprocessing, order,
                                           np.int32(current["batch"]))
            current["batch"] = (current["batch"] + 1) % program.steps_per_epoch
        jax.block_until_ready(current["leaves"])
        kernel_shares.append((kernels.seconds_in_kernels() - in_kernels) / (time.perf_counter() - start))

    eval_batch = cfg.trainer.eval_batch_size
    test = data.test.padded(eval_batch)
    test_images, test_labels = program.place(test.images), program.place(test.labels)
    batches = min(eval_batches, len(test) // eval_batch)
    eval_step = jax.jit(program.eval_fn).lower(jnp.zeros(3), state.params, state.model_state, test_images, test_labels,
                                               preprocessing, np.int32(0), np.int32(0)).compile()

    def evaluate() -> None:
        sums, trained = jnp.zeros(3), train_step.state(current["leaves"])
        for index in range(batches):
            sums = eval_step(sums, trained.params, trained.model_state, test_images, test_labels,
                             preprocessing, np.int32(len(data.test)), np.int32(index * eval_batch))
        jax.block_until_ready(sums)

    def kernel_share() -> float | None:  # the median call's: the first calls pay for warming up
        return statistics.median(kernel_shares) if kernel_shares and max(kernel_shares) > 0 else None

    return CompiledSteps(program.params, compile_s, flops, train, evaluate, batches * eval_batch, kernel_share)


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
