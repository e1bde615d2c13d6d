"""A trained run brought back for analysis: its own config, its data, and its model, built by the
same builder as training, holding the weights of its best or last checkpoint (what `cnnexp
evaluate` and `cnnexp visualize` look at)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from flax import nnx
from omegaconf import DictConfig, OmegaConf

from cnnexp.data import ImageDataset, Split, load_dataset
from cnnexp.data.geometry import center_crop
from cnnexp.data.preprocess import Preprocessing, apply_preprocessing, load_preprocessing
from cnnexp.errors import UserError
from cnnexp.models.param_paths import dotted_path
from cnnexp.runs.checkpoints import read_weights
from cnnexp.runs.layout import BEST_CHECKPOINT, CHECKPOINT_KINDS, CONFIG_FILE, PREPROCESSING_FILE, is_run_folder
from cnnexp.training.builder import build_experiment


@dataclass(frozen=True)
class TrainedRun:
    run_dir: Path
    cfg: DictConfig  # the config the run was trained with
    data: ImageDataset  # its dataset, split with the run's seed
    model: nnx.Module  # in eval mode, with the checkpoint's weights
    checkpoint: str  # best or last
    epoch: int  # the epoch the checkpoint was saved after
    preprocessing: Preprocessing  # the one the run stored, so inputs are exactly those it trained on

    def normalize(self, pixels: jnp.ndarray) -> jnp.ndarray:
        """NHWC images in [0, 1] pixel units to the inputs the model was trained on."""
        return apply_preprocessing(self.preprocessing, pixels)


def validate_run_choice(cfg: DictConfig, command: str) -> None:
    """The `run=` and `checkpoint=` of a command that looks at a trained run, checked before loading."""
    if OmegaConf.is_missing(cfg, "run"):
        raise UserError(f"say which run: cnnexp {command} run=<run folder>")
    if not isinstance(cfg.run, str) or not Path(cfg.run).is_dir():  # `run=0` is a number to Hydra
        raise UserError(f"run={cfg.run}: no such folder")
    if cfg.checkpoint not in CHECKPOINT_KINDS:
        raise UserError(f"checkpoint={cfg.checkpoint!r}: choose {' or '.join(CHECKPOINT_KINDS)}")


def load_trained_run(run_dir: Path, checkpoint: str = BEST_CHECKPOINT) -> TrainedRun:
    """Rebuild the run's model from its saved config and load the chosen checkpoint into it."""
    if not is_run_folder(run_dir):
        raise UserError(f"run={run_dir}: not a run folder (no {CONFIG_FILE})")
    cfg = OmegaConf.load(run_dir / CONFIG_FILE)
    weights, meta = read_weights(run_dir, checkpoint)
    data = load_dataset(cfg.data, cfg.seed, in_memory=True)
    # What looks at a trained run reads test images directly: at the model's size (centre windows).
    # (the steps' own centre crop then leaves them as they are).
    data = dataclasses.replace(data, test=Split(center_crop(data.test.images, data.input_shape[:2]), data.test.labels))
    source = f"{run_dir} ({checkpoint} checkpoint)"
    model = build_experiment(cfg, data.input_shape, data.num_classes,
                             steps_per_epoch=max(1, len(data.train) // cfg.trainer.batch_size),
                             initialize=lambda model, _: assign_weights(model, weights, source=source)).model
    stored = load_preprocessing(run_dir / PREPROCESSING_FILE)
    # Run folders from before preprocessing was stored: fitted again, as they were then.
    preprocessing = stored if stored is not None else data.preprocessing
    return TrainedRun(run_dir, cfg, data, model, checkpoint, int(meta["epoch"]), preprocessing)


def assign_weights(model: nnx.Module, weights: dict[str, np.ndarray], *, source: str) -> None:
    """Put every parameter and batch statistic of `model` from `weights` (by dotted path); all
    must be there with the same shapes, since the config that built the model is the run's own."""
    flat = nnx.to_flat_state(nnx.state(model, (nnx.Param, nnx.BatchStat)))
    updated, problems = [], []
    for path, variable in flat:
        key = dotted_path(path)
        if key not in weights:
            problems.append(f"{key} missing")
        elif weights[key].shape != variable.value.shape:
            problems.append(f"{key} has shape {weights[key].shape}, the model wants {variable.value.shape}")
        else:
            updated.append((path, variable.replace(jnp.asarray(weights[key]))))
    if problems:
        raise UserError(f"{source} does not fit the model its config builds: {'; '.join(problems[:5])}")
    nnx.update(model, nnx.from_flat_state(updated))
