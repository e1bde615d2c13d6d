"""`init_from`: start a run from another run's weights (fine-tuning, source text 002).

Every model variable (parameter or batch statistic) whose dotted path and shape match the
source checkpoint is loaded; the others keep their fresh initialization. A shape clash is
expected in the output layer when the class count changed; anywhere else, or when nothing
loads at all, the source is probably not the run the user meant, so it is an error unless
`init_from_strict=false`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import jax.numpy as jnp
from flax import nnx

from cnnexp.errors import UserError
from cnnexp.models.param_paths import OUTPUT_ALIAS, dotted_path, matches
from cnnexp.runs.checkpoints import read_weights
from cnnexp.runs.layout import BEST_CHECKPOINT, CHECKPOINT_KINDS, CHECKPOINTS_DIR, CONFIG_FILE, is_run_folder

log = logging.getLogger("cnnexp.train")

_SHOWN = 8  # paths listed per kind in the log and in errors


@dataclass
class InitReport:
    """What `init_from` did to each model variable; summary.json keeps it as `init_from`."""

    source: str
    checkpoint: str
    epoch: int
    loaded: list[str] = field(default_factory=list)
    reinitialized: dict[str, str] = field(default_factory=dict)  # path -> why
    skipped: list[str] = field(default_factory=list)  # in the source, not in the model

    def as_record(self) -> dict:
        return {"source": self.source, "checkpoint": self.checkpoint, "epoch": self.epoch,
                "loaded": self.loaded, "reinitialized": self.reinitialized, "skipped": self.skipped}


def resolve_source(init_from: str) -> tuple[Path, str]:
    """(run folder, best|last) for `init_from`: a run folder means its best checkpoint."""
    path = Path(init_from).expanduser()
    if is_run_folder(path):
        return path, BEST_CHECKPOINT
    if path.name in CHECKPOINT_KINDS and path.parent.name == CHECKPOINTS_DIR:
        return path.parent.parent, path.name
    raise UserError(f"init_from={init_from}: not a run folder (no {CONFIG_FILE}) nor "
                    f"<run>/{CHECKPOINTS_DIR}/{' or '.join(CHECKPOINT_KINDS)}")


def initialize_from(model: nnx.Module, init_from: str, *, output: str, reinit: list[str],
                    strict: bool) -> InitReport:
    """Load into `model` what fits of the `init_from` checkpoint (see the module docstring).

    `output` is the model's output layer path (its shape clashes are expected), `reinit` lists
    patterns of variables to keep fresh even when they fit."""
    run_dir, which = resolve_source(init_from)
    weights, meta = read_weights(run_dir, which)
    report = InitReport(str(run_dir), which, int(meta["epoch"]))
    unexpected, loaded, model_paths = [], [], set()
    for path, variable in nnx.to_flat_state(nnx.state(model, (nnx.Param, nnx.BatchStat))):
        name = dotted_path(path)
        model_paths.add(name)
        source, in_output = weights.get(name), matches(name, [OUTPUT_ALIAS], output)
        if matches(name, reinit, output):
            report.reinitialized[name] = "init_from_reinit"
        elif source is None:
            report.reinitialized[name] = "not in the source"
            unexpected += [] if in_output else [f"{name} is not in the source"]
        elif source.shape != variable.value.shape:
            report.reinitialized[name] = f"source shape {source.shape}, model shape {variable.value.shape}"
            unexpected += [] if in_output else [f"{name}: source shape {source.shape}, this model's "
                                                f"{variable.value.shape}"]
        else:
            report.loaded.append(name)
            loaded.append((path, variable.replace(jnp.asarray(source, variable.value.dtype))))
    report.skipped = sorted(set(weights) - model_paths)
    if strict and (not report.loaded or unexpected):
        why = "nothing fits" if not report.loaded else "; ".join(unexpected[:_SHOWN])
        raise UserError(f"init_from={init_from}: {why} (is it a run of the same model? "
                        f"init_from_strict=false loads whatever fits)")
    nnx.update(model, nnx.from_flat_state(loaded))
    _log_report(report)
    return report


def _log_report(report: InitReport) -> None:
    log.info("init_from %s (%s checkpoint, epoch %d): %d loaded, %d re-initialized, %d skipped",
             report.source, report.checkpoint, report.epoch, len(report.loaded), len(report.reinitialized),
             len(report.skipped))
    for name, why in list(report.reinitialized.items())[:_SHOWN]:
        log.info("  re-initialized %s (%s)", name, why)
    for name in report.skipped[:_SHOWN]:
        log.info("  skipped %s (not in this model)", name)
