"""`cnnexp train`: a Hydra app over conf/train.yaml, one run or a sweep (-m).

A plain run is composed and validated here before Hydra starts (so bad input is one line and
nothing is written), and `resume=` is turned into the run folder and that run's own overrides.
A run of several processes (`trainer.distributed`, a Slurm step) joins them here too, so that all
of them train into process 0's run folder. The Hydra task then trains; in a sweep, one broken job
is recorded as failed and the others go on, and the command's exit status says whether every job
completed.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import signal
import sys
import traceback
from pathlib import Path

import hydra
import jax
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from cnnexp.app.compose import CONFIG_MODULE, compose_config, override_key
from cnnexp.app.extensions import register_hydra_extensions
from cnnexp.app.launchers import SweepOutcome, share_accelerator_between_jobs
from cnnexp.config import validate_config
from cnnexp.errors import RunFolderWriteError, TrainingDiverged, TrainingInterrupted, UserError, report_error
from cnnexp.runs.fingerprint import config_fingerprint
from cnnexp.runs.layout import CHECKPOINTS_DIR, LAST_CHECKPOINT, OVERRIDES_FILE, SWEEP_FILE, is_resumable
from cnnexp.runs.lock import RunLock, check_not_in_use
from cnnexp.runs.naming import find_latest_run, run_dir_for, shared_sweep_name
from cnnexp.runs.summary import objective_direction, read_summary, record_early_failure
from cnnexp.app.sweeps import JobPlan, continuation_overrides, in_requeueable_job, plan_job
from cnnexp.training.distributed import (
    agree_on,
    any_process,
    distributed_spec,
    initialize,
    is_main_process,
    quiet_other_processes,
)
from cnnexp.training.interrupts import hand_on

log = logging.getLogger("cnnexp")


# Overrides that say how this launch's processes join (trainer.distributed.*), not what the run
# computes: a resumed run takes them from its own command line, never from the run folder.
LAUNCH_KEYS = "trainer.distributed"


def resolve_resume(overrides: list[str]) -> tuple[list[str], DictConfig]:
    """Validated overrides of one run and its config, with `resume=` turned into a run folder and
    that run's own overrides, so `resume=<folder>` alone continues the run with its config
    (overrides given now still win)."""
    cfg = compose_config("train", overrides, validate_config)
    if not cfg.resume:
        return overrides, cfg
    if cfg.resume == "latest":
        run_dir = find_latest_run(Path(cfg.paths.runs_dir), config_fingerprint(cfg))
        log.info("resume=latest: %s", run_dir)
    else:
        run_dir = Path(cfg.resume)
    if (run_dir / SWEEP_FILE).is_file():
        raise UserError(f"resume={cfg.resume} is a sweep folder: continue the sweep with cnnexp train -m resume={run_dir}")
    if not is_resumable(run_dir):
        raise UserError(f"resume={cfg.resume}: not a run folder with {CHECKPOINTS_DIR}/ and {OVERRIDES_FILE}")
    check_not_in_use(run_dir)
    given = {override_key(o): o for o in overrides if override_key(o) != "resume"}
    merged = {override_key(o): o for o in OmegaConf.load(run_dir / OVERRIDES_FILE)
              if override_key(o) != "resume" and not override_key(o).startswith(LAUNCH_KEYS)}
    merged.update(given)
    resolved = [*merged.values(), f"resume={run_dir}"]
    return resolved, compose_config("train", resolved, validate_config)  # the run's own config, with what was given now


def join_processes(cfg: DictConfig) -> bool:
    """Join the other processes of a multi-process run, if this is one (before anything starts JAX's
    backend), and refuse in all of them a run whose processes were given different configs: they
    would compile different programs and wait on each other until JAX's timeouts."""
    if not initialize(distributed_spec(cfg.trainer)):
        return False
    fingerprint = config_fingerprint(cfg)
    if any_process(agree_on(fingerprint) != fingerprint):
        raise UserError(f"the {jax.process_count()} processes of this run were given different configs "
                        f"(compare their overrides): each must train the same one")
    return True


def share_run_folder(overrides: list[str], cfg: DictConfig) -> list[str]:
    """A plain run of several processes: joined, every process trains into process 0's run folder,
    and only process 0 writes its `.hydra/` folder. One process: `overrides` as they are."""
    if not join_processes(cfg):
        return overrides
    run_dir = agree_on(run_dir_for(cfg.paths.runs_dir, cfg.resume))
    quoted = run_dir.replace("\\", "\\\\").replace("'", "\\'")
    return [*overrides, f"hydra.run.dir='{quoted}'", *([] if is_main_process() else ["hydra.output_subdir=null"])]


def check_sweep_objective(args: list[str]) -> None:
    """A wrong `objective=` is wrong for every job of a sweep: refuse it before any job starts."""
    for value in sweep_values(args, "objective"):
        objective_direction(str(value))


def sweep_values(args: list[str], key: str) -> list[object]:
    """Every value the overrides in `args` give `key`, each of a sweep's values included."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    given = [a for a in args if override_key(a) == key]
    try:
        overrides = OverridesParser.create().parse_overrides(given)
    except HydraException as error:
        raise UserError(" ".join(str(error).split())) from None
    values: list[object] = []
    for override in overrides:
        values.extend(override.sweep_iterator() if override.is_sweep_override() else [override.value()])
    return values


def check_sweep_trackers(args: list[str]) -> None:
    """A tracker whose library is missing fails every job of a sweep: refuse it before any job starts."""
    from cnnexp.runs.trackers import check_installed

    for value in sweep_values(args, "logger"):
        for name in value if isinstance(value, list) else [value]:
            check_installed(str(name))


def check_sweep_processes(args: list[str]) -> None:
    """A sweep's multi-process runs are each a job of `hydra/launcher=slurm_multinode`, whose tasks
    share the job's folder. Processes that each ran a sweep themselves would each name a sweep
    folder of their own, and could not stop together when one of their jobs failed: refused."""
    given = sorted({override_key(a) for a in args if override_key(a).startswith(LAUNCH_KEYS)})
    if given:
        raise UserError(f"{', '.join(given)} join the processes of one run, not of a sweep (-m); for a sweep of "
                        f"runs of several processes use hydra/launcher=slurm_multinode")
    if distributed_spec(OmegaConf.create({}), os.environ) is not None:
        raise UserError("cnnexp train -m runs here in each task of a Slurm step of several tasks; start the sweep "
                        "once, outside srun, with hydra/launcher=slurm_multinode (each job a run of several tasks)")


def continue_sweep(args: list[str]) -> list[str]:
    """`-m resume=<sweep folder>`: the sweep's own command line again, in its folder."""
    resumed = [a for a in args if override_key(a) == "resume"]
    if not resumed:
        return args
    sweep_dir = Path(resumed[-1].split("=", 1)[1].strip("'\""))
    if sweep_dir.name in ("", "latest") or not sweep_dir.is_dir():
        raise UserError(f"{resumed[-1]}: with -m, resume= takes the folder of the sweep to continue "
                        f"(outputs/multirun/<name>)")
    flags = [a for a in args if a.startswith("-")]
    return [*flags, *continuation_overrides(sweep_dir, [a for a in args if not a.startswith("-")])]


def plan_sweep_job(cfg: DictConfig, run_dir: Path) -> float | None:
    """A sweep's job whose folder already holds a run (the sweep is being continued, or submitit
    restarted the job): None to train, after pointing `cfg.resume` at the run if it continues it;
    the kept run's objective if the job keeps what is there."""
    if cfg.resume and Path(cfg.resume).resolve() != run_dir.parent.resolve():
        raise UserError(f"resume={cfg.resume} with -m continues the sweep in that folder; this job's sweep "
                        f"folder is {run_dir.parent}")
    plan = plan_job(run_dir, config_fingerprint(cfg), continuing=bool(cfg.resume) or in_requeueable_job(),
                    rerun_failed=cfg.resume_failed)
    if plan is JobPlan.KEEP:
        summary = read_summary(run_dir) or {}
        log.info("%s: keeping its %s run", run_dir, summary.get("status"))
        objective = summary.get(cfg.objective)
        return math.nan if objective is None else float(objective)
    cfg.resume = str(run_dir) if plan is JobPlan.RESUME else None
    return None


def discard_untrained_run(run_dir: Path) -> None:
    """A new run refused for input found wrong only once its data or model existed (a dataset that
    cannot be downloaded, a batch larger than the split): nothing was trained, so its folder goes,
    as for input refused before Hydra made it."""
    last = run_dir / CHECKPOINTS_DIR / LAST_CHECKPOINT
    if not (last.is_dir() and any(step.name.isdigit() for step in last.iterdir())):
        shutil.rmtree(run_dir, ignore_errors=True)


def continue_command(run_dir: Path, multirun: bool) -> str:
    """The command that continues a stopped run, or the sweep it is a job of."""
    if multirun:
        return f"cnnexp train -m resume={run_dir.parent}"
    every_process = f" (in each of the {jax.process_count()} processes)" if jax.process_count() > 1 else ""
    return f"cnnexp train resume={run_dir}{every_process}"


def run(args: list[str]) -> int:
    """The command: exit status 0 when every run completed, else the worst job's status."""
    register_hydra_extensions()
    flags = [a for a in args if a.startswith("-")]
    validated = not flags  # a plain single run: composed and checked before Hydra creates anything
    if validated:
        args = share_run_folder(*resolve_resume(args))
    elif "-m" in flags or "--multirun" in flags:
        args = continue_sweep(args)
        check_sweep_objective(args)
        check_sweep_trackers(args)
        check_sweep_processes(args)
    exit_status = 0

    @hydra.main(version_base="1.3", config_path=f"pkg://{CONFIG_MODULE}", config_name="train")
    def train_task(cfg: DictConfig) -> float:
        """One run (called once per combination in a multirun). Returns the run's `objective` for
        sweepers; NaN for a failed run, which Optuna records as a failed trial."""
        nonlocal exit_status
        from cnnexp.training.run import train

        hydra_cfg = HydraConfig.get()
        multirun = hydra_cfg.mode == RunMode.MULTIRUN
        run_dir = Path(hydra_cfg.runtime.output_dir)
        if multirun:
            share_accelerator_between_jobs(hydra_cfg.launcher)
        try:
            if not validated:
                validate_config(cfg)
                join_processes(cfg)  # a sweep's job that is a Slurm step of several tasks (plain runs joined before)
            if multirun and (kept := plan_sweep_job(cfg, run_dir)) is not None:
                return kept
            quiet_other_processes()
            with RunLock(run_dir) if is_main_process() else contextlib.nullcontext():
                summary = train(cfg, run_dir, config_fingerprint(cfg))
            return float(summary[cfg.objective])
        except TrainingInterrupted as stop:
            if is_main_process():
                print(f"cnnexp: {stop}; checkpoint saved. Continue with: {continue_command(run_dir, multirun)}",
                      file=sys.stderr)
            if stop.signal_name is not None and hand_on(signal.Signals[stop.signal_name]):
                log.info("handed %s on (submitit requeues the job, which then continues the run)", stop.signal_name)
            exit_status = stop.exit_code
            sys.exit(exit_status)  # stops a sweep too: a stop signal means stop
        except RunFolderWriteError as error:  # a full disk: stopped, the last complete checkpoint kept
            exit_status = max(exit_status, report_error(RunFolderWriteError(
                error.path, f"{error.cause}; the last complete checkpoint is kept, continue with: "
                            f"{continue_command(run_dir, multirun)}")))
            if not multirun:
                sys.exit(exit_status)
        except UserError as error:
            exit_status = max(exit_status, report_error(error))
            if not multirun:
                if not cfg.resume and not isinstance(error, TrainingDiverged) and is_main_process():
                    discard_untrained_run(run_dir)
                sys.exit(exit_status)
            log.error("run %s failed: %s", run_dir, error)
            record_early_failure(run_dir, cfg, error)
        except Exception as error:
            if not multirun:
                raise
            # One broken combination must not cost the rest of the sweep; its summary says failed.
            log.error("run %s failed:\n%s", run_dir, traceback.format_exc())
            record_early_failure(run_dir, cfg, error)
            exit_status = max(exit_status, 1)
        return math.nan

    sys.argv = ["cnnexp train", *args]
    with shared_sweep_name():
        train_task()
    if SweepOutcome.unfinished:  # runs of a sweep failed, possibly in other processes
        return max(exit_status, 1)
    return exit_status
