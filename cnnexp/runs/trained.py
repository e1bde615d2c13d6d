"""A trained run brought back for analysis: its own config, its data, and its model holding the
weights of its best or last checkpoint (what `cnnexp visualize` looks inside)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from flax import nnx
from omegaconf import DictConfig, OmegaConf

from cnnexp.config import model_options
from cnnexp.data import ImageDataset, load_dataset
from cnnexp.data.preprocess import Preprocessing, apply_preprocessing, load_preprocessing
from cnnexp.errors import UserError
from cnnexp.models import create_model
from cnnexp.models.param_paths import dotted_path
from cnnexp.runs.checkpoints import read_weights

SAVED_CONFIG = Path(".hydra") / "config.yaml"
CHECKPOINTS = ("best", "last")


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
    if not Path(cfg.run).is_dir():
        raise UserError(f"run={cfg.run}: no such folder")
    if cfg.checkpoint not in CHECKPOINTS:
        raise UserError(f"checkpoint={cfg.checkpoint!r}: choose {' or '.join(CHECKPOINTS)}")


def load_trained_run(run_dir: Path, checkpoint: str = "best") -> TrainedRun:
    """Rebuild the run's model from its saved config and load the chosen checkpoint into it."""
    if not (run_dir / SAVED_CONFIG).is_file():
        raise UserError(f"run={run_dir}: not a run folder (no {SAVED_CONFIG})")
    cfg = OmegaConf.load(run_dir / SAVED_CONFIG)
    weights, meta = read_weights(run_dir, checkpoint)
    data = load_dataset(cfg.data, cfg.seed)
    model = create_model(cfg.model.name, model_options(cfg.model), input_shape=data.input_shape,
                         num_classes=data.num_classes, rngs=nnx.Rngs(cfg.seed))
    assign_weights(model, weights, source=f"{run_dir} ({checkpoint} checkpoint)")
    model.eval()
    stored = load_preprocessing(run_dir)
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
