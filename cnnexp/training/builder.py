"""Config becomes objects here, once: a composed config and the data's shape turn into the
model, its optimizer, the training state and the (not yet compiled) train and eval steps.
`cnnexp train`, `cnnexp bench` and loading a trained run (evaluate, visualize) all build here,
so what is benchmarked and what is looked at is exactly what was trained."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from omegaconf import DictConfig

from cnnexp.data.augment import make_augment
from cnnexp.data.geometry import Geometry
from cnnexp.data.preprocess import Preprocessing, apply_preprocessing
from cnnexp.models import count_params, create_model, options_of
from cnnexp.models.layers import resolved_impls
from cnnexp.models.param_paths import leaf_paths, output_layer
from cnnexp.training.losses import make_loss
from cnnexp.training.optim import ParamGroup, build_optimizer, build_schedule, param_groups
from cnnexp.training.parallel import DataParallel
from cnnexp.training.steps import (
    COMPUTE_DTYPES,
    TrainState,
    gathering,
    init_state,
    make_eval_step,
    make_train_step,
    to_pixels,
)

# Training images that data-dependent layers (`model.fit_to_data`) are fitted on.
DATA_FIT_SAMPLE = 5000
# (model, the path of its output layer) -> None: weights put into the fresh model before its
# optimizer state exists (fitted to data, loaded from another run, or from a checkpoint).
Initializer = Callable[[nnx.Module, str], None]


@dataclass
class Experiment:
    """What a config builds. `model` is in eval mode; the steps take and return `state`."""

    model: nnx.Module
    param_groups: list[ParamGroup]
    schedule: optax.Schedule
    state: TrainState
    train_step: Callable[..., TrainState]  # step(state, images, labels, preprocessing, batch_index): one batch
    gathered_step: Callable[..., TrainState]  # step(state, images, labels, preprocessing, order, batch_index)
    eval_step: Callable[..., Any]  # step(sums, params, model_state, images, labels, preprocessing, count, start)
    params: int  # trainable scalars
    kernels: dict[str, str]  # what computes each kind of layer: conv, pool, norm -> onednn, library, ...


def build_experiment(cfg: DictConfig, input_shape: tuple[int, int, int], num_classes: int, *,
                     steps_per_epoch: int, initialize: Initializer | None = None,
                     parallel: DataParallel | None = None, schedule: optax.Schedule | None = None) -> Experiment:
    """Everything a run of `cfg` computes with, on images of `input_shape` (H, W, C). The schedule
    spans `trainer.epochs` of `steps_per_epoch`, unless `schedule` replaces it (`cnnexp lr-find`'s
    ramp: the rate is a function of the step inside the compiled step, so it never recompiles);
    `parallel` splits each batch across devices."""
    trainer = cfg.trainer
    # Run folders saved before an option existed are built with its default (loading a trained run).
    precision, ema_decay = trainer.get("precision", "float32"), trainer.get("ema_decay")
    model = create_model(cfg.model.name, options_of(cfg.model), input_shape=input_shape, num_classes=num_classes,
                         rngs=nnx.Rngs(cfg.seed))
    output = output_layer(model, input_shape)
    if initialize is not None:
        initialize(model, output)
    groups = param_groups(cfg.optim.get("groups"), leaf_paths(nnx.state(model, nnx.Param)), output)
    if schedule is None:
        schedule = build_schedule(cfg.schedule, cfg.optim.lr, trainer.epochs * steps_per_epoch, steps_per_epoch)
    tx = build_optimizer(cfg.optim, schedule, groups)
    model.train()
    train_graphdef, state = init_state(model, tx, ema=ema_decay is not None)
    model.eval()
    eval_graphdef, _, _ = nnx.split(model, nnx.Param, ...)
    batch_sharding = None if parallel is None else parallel.batch
    augment = cfg.data.get("augment")
    train_view, eval_view = Geometry.of(cfg.data).views()
    train_step = make_train_step(
        train_graphdef, tx, loss=make_loss(cfg.loss.name, cfg.loss.get("label_smoothing", 0.0)),
        augment=None if augment is None else make_augment(augment, input_shape), view=train_view, seed=cfg.seed,
        precision=precision, ema_decay=ema_decay,
    )
    eval_step = make_eval_step(
        eval_graphdef, batch_size=trainer.eval_batch_size, loss=make_loss(cfg.loss.name), precision=precision,
        tta_flip=trainer.get("tta_flip", False), view=eval_view, batch_sharding=batch_sharding,
    )
    kernels = resolved_impls(options_of(cfg.model), COMPUTE_DTYPES[precision])
    return Experiment(model, groups, schedule, state, train_step, gathering(train_step, trainer.batch_size, batch_sharding),
                      eval_step, count_params(model), kernels)


def fit_to_training_data(model: nnx.Module, images: np.ndarray, preprocessing: Preprocessing) -> None:
    """Start data-dependent layers (speednet's patch whitening: models with a `fit_to_data`
    method) from a sample of the preprocessed training images (`ImageDataset.fit_images`: at the
    model's size); other models are left alone."""
    if hasattr(model, "fit_to_data"):
        sample = jnp.asarray(images[:DATA_FIT_SAMPLE])
        model.fit_to_data(np.asarray(apply_preprocessing(preprocessing, to_pixels(sample))))
