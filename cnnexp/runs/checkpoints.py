"""Orbax checkpoints of the training state: `checkpoints/last` (the newest few) and
`checkpoints/best` (the best validation accuracy so far), each with a small JSON of metadata."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from cnnexp.errors import RunFolderWriteError, UserError
from cnnexp.models.param_paths import dotted_path
from cnnexp.runs.layout import BEST_CHECKPOINT, CHECKPOINTS_DIR, LAST_CHECKPOINT


def _manager(directory: Path, keep: int) -> ocp.CheckpointManager:
    # In a run of several processes every process saves and the managers sync with barriers named
    # after the manager: `last` and `best` save at the same step, and barriers of the same name
    # would mix them up (two-process saves hung without the prefix).
    multiprocessing = ocp.options.MultiprocessingOptions(barrier_sync_key_prefix=directory.name)
    return ocp.CheckpointManager(
        directory.absolute(),
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, multiprocessing_options=multiprocessing),
        item_handlers=_item_handlers(),
    )


def _item_handlers() -> dict[str, ocp.CheckpointHandler]:
    """How each item of a checkpoint is read and written (new handlers for each manager)."""
    return {"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()}


class RunCheckpoints:
    """Saving and restoring the training state of one run folder."""

    def __init__(self, run_dir: Path, keep: int):
        self.root = run_dir / CHECKPOINTS_DIR
        self.last = _manager(self.root / LAST_CHECKPOINT, keep)
        self.best = _manager(self.root / BEST_CHECKPOINT, 1)

    def save(self, state: Any, meta: dict[str, Any], *, best: bool) -> None:
        """Save `state` as the newest checkpoint (and as the best one if `best`); asynchronous."""
        step = int(meta["step"])
        managers = [self.last, self.best] if best else [self.last]
        for manager in managers:
            if manager.latest_step() == step:
                continue  # already saved at this step (e.g. interrupted right after an epoch)
            try:
                manager.save(
                    step,
                    args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
                )
            except Exception as error:  # an earlier background write's failure surfaces here too
                raise RunFolderWriteError(Path(manager.directory) / str(step), error) from error

    def restore_latest(self, abstract_state: Any) -> tuple[Any, dict[str, Any]] | None:
        """The newest saved state (shaped like `abstract_state`) and its metadata, or None if
        the run was stopped before its first checkpoint was complete."""
        step = self.last.latest_step()
        if step is None:
            return None
        path = Path(self.last.directory) / str(step)
        try:
            restored = self.last.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()
                ),
            )
        except Exception as error:  # Orbax raises many types for unreadable files
            raise UserError(
                f"cannot resume: checkpoint {path} is unreadable or does not match this config "
                f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})"
            ) from None
        return restored.state, dict(restored.meta)

    def wait(self) -> None:
        """Block until pending asynchronous saves are on disk. A save that failed (a full disk)
        leaves only Orbax's temporary folder, which is never restored, and raises here."""
        for manager in (self.last, self.best):
            try:
                manager.wait_until_finished()
            except Exception as error:  # Orbax re-raises the background write's error
                raise RunFolderWriteError(manager.directory, error) from error

    def close(self) -> None:
        self.last.close()
        self.best.close()


def abstract_like(tree: Any) -> Any:
    """Shapes and dtypes of `tree`, as Orbax needs to restore into it."""
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


def read_weights(run_dir: Path, which: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The model variables (parameters, or their moving average when the run kept one, and batch
    statistics) of a run's `best` or `last` checkpoint, by dotted path (`stages.0.1.conv.kernel`), and that checkpoint's metadata.

    Read without a target, so no model or optimizer needs to be rebuilt to look at them and they
    can go into a model of another shape."""
    directory = (run_dir / CHECKPOINTS_DIR / which).absolute()
    manager = ocp.CheckpointManager(directory, item_handlers=_item_handlers()) if directory.is_dir() else None
    step = manager.latest_step() if manager else None
    if step is None:
        raise UserError(f"{run_dir} has no complete {which!r} checkpoint (train it first, or try checkpoint=last)")
    # Every array onto this process's first device, whatever devices (trainer.devices, processes)
    # saved it: without a target Orbax insists on the saving topology.
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=device),
                          manager.item_metadata(step)["state"].tree)
    restored = manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()))
    manager.close()
    weights: dict[str, np.ndarray] = {}
    # A run that kept a moving average of its weights is evaluated with it.
    params = "params" if restored.state.get("ema_params") is None else "ema_params"
    for part in (params, "model_state"):
        for path, value in jax.tree_util.tree_flatten_with_path(restored.state[part])[0]:
            if jnp.issubdtype(value.dtype, jnp.floating):  # not RNG keys and counters
                weights[dotted_path(path)] = np.asarray(value)
    return weights, dict(restored.meta)
