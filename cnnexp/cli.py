"""The `cnnexp` command. Each subcommand is a Hydra app over the configs shipped in the package."""

from __future__ import annotations

import difflib
import logging
import math
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from cnnexp import __version__
from cnnexp.config import config_fingerprint, objective_direction, validate_config
from cnnexp.errors import TrainingInterrupted, UserError
from cnnexp.host_memory import keep_freed_memory
from cnnexp.launchers import SweepOutcome, share_accelerator_between_jobs
from cnnexp.runs.naming import find_latest_run, register_resolvers, shared_sweep_name
from cnnexp.runs.summary import record_early_failure
from cnnexp.tfds_config_source import register as register_config_source

CONFIG_MODULE = "cnnexp.conf"
log = logging.getLogger("cnnexp")
_exit_code = 0  # set by the Hydra task, returned by main() once Hydra is done


def _usage() -> str:
    lines = [f"cnnexp {__version__}: config-driven CNN experiments (Hydra, JAX, Flax NNX)", "",
             "Usage: cnnexp <command> [args]", "", "Commands:"]
    lines += [f"  {name:<8} {command.text}" for name, command in COMMANDS.items()]
    lines += ["", "`cnnexp <command> --help` shows a command's config groups and options."]
    return "\n".join(lines)


def _fail(error: BaseException) -> int:
    print(f"cnnexp: error: {error}", file=sys.stderr)
    return getattr(error, "exit_code", 1)


def register_hydra_extensions() -> None:
    """What every command's configs need: cnnexp's resolvers and `data=<any TFDS name>`."""
    register_resolvers()
    # hparams_search presets point Optuna's direction at the objective's own direction.
    OmegaConf.register_new_resolver("cnnexp_objective_direction", objective_direction, replace=True)
    register_config_source()


def compose_config(config_name: str, overrides: list[str], validate: Callable[[DictConfig], None]) -> DictConfig:
    """Compose and `validate` a command's config outside Hydra's app runner, to catch bad input
    before anything is written (and for train, to resolve `resume=latest`). Hydra's own
    messages become UserErrors."""
    from hydra import compose, initialize_config_module
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    job_overrides = [o for o in overrides if not o.lstrip("+~").startswith(("hydra.", "hydra/"))]
    try:
        with initialize_config_module(CONFIG_MODULE, version_base="1.3"):
            cfg = compose(config_name, overrides=job_overrides)
            validate(cfg)
            return cfg
    except (HydraException, OmegaConfBaseException) as error:
        message = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
        raise UserError(message) from None


def _override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _resolve_resume(overrides: list[str]) -> list[str]:
    """Turn `resume=` into a run folder and that run's own overrides, so `resume=<folder>` alone
    continues the run with its config (overrides given now still win)."""
    cfg = compose_config("train", overrides, validate_config)
    if not cfg.resume:
        return overrides
    if cfg.resume == "latest":
        run_dir = find_latest_run(Path(cfg.paths.runs_dir), config_fingerprint(cfg))
        log.info("resume=latest: %s", run_dir)
    else:
        run_dir = Path(cfg.resume)
    saved = run_dir / ".hydra" / "overrides.yaml"
    if not (run_dir / "checkpoints").is_dir() or not saved.is_file():
        raise UserError(f"resume={cfg.resume}: not a run folder with checkpoints and .hydra/overrides.yaml")
    given = {_override_key(o): o for o in overrides if _override_key(o) != "resume"}
    merged = {_override_key(o): o for o in OmegaConf.load(saved) if _override_key(o) != "resume"}
    merged.update(given)
    resolved = [*merged.values(), f"resume={run_dir}"]
    compose_config("train", resolved, validate_config)
    return resolved


@hydra.main(version_base="1.3", config_path=f"pkg://{CONFIG_MODULE}", config_name="train")
def _train_app(cfg: DictConfig) -> float:
    """Hydra's task: one run (called once per combination in a multirun). Returns the run's
    `objective` for sweepers; NaN for a failed run, which Optuna records as a failed trial."""
    global _exit_code
    from cnnexp.training.run import train

    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    run_dir = Path(hydra_cfg.runtime.output_dir)
    if multirun:
        share_accelerator_between_jobs(hydra_cfg.launcher)
    try:
        if multirun and cfg.resume:
            raise UserError("resume= continues one run; it cannot be combined with -m")
        summary = train(cfg, run_dir, config_fingerprint(cfg))
        return float(summary[cfg.objective])
    except TrainingInterrupted as stop:
        print(f"cnnexp: {stop}; checkpoint saved. Continue with: cnnexp train resume={run_dir}", file=sys.stderr)
        _exit_code = stop.exit_code
        sys.exit(_exit_code)  # stops a sweep too: Ctrl-C means stop
    except UserError as error:
        _exit_code = max(_exit_code, _fail(error))
        if not multirun:
            sys.exit(_exit_code)
        log.error("run %s failed: %s", run_dir, error)
        record_early_failure(run_dir, cfg, error)
    except Exception as error:
        if not multirun:
            raise
        # One broken combination must not cost the rest of the sweep; its summary says failed.
        log.error("run %s failed:\n%s", run_dir, traceback.format_exc())
        record_early_failure(run_dir, cfg, error)
        _exit_code = max(_exit_code, 1)
    return math.nan


def _check_sweep_objective(args: list[str]) -> None:
    """A wrong `objective=` is wrong for every job of a sweep: refuse it before any job starts."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    given = [a for a in args if _override_key(a) == "objective"]
    try:
        overrides = OverridesParser.create().parse_overrides(given)
    except HydraException as error:
        raise UserError(" ".join(str(error).split())) from None
    for override in overrides:
        values = override.sweep_string_iterator() if override.is_sweep_override() else [override.value()]
        for value in values:
            objective_direction(str(value))


def _train_command(args: list[str]) -> int:
    register_hydra_extensions()
    is_flag = [a.startswith("-") for a in args]
    if not any(is_flag):  # a plain single run: check it before Hydra creates anything
        args = _resolve_resume(args)
    elif "-m" in args or "--multirun" in args:
        _check_sweep_objective(args)
    sys.argv = ["cnnexp train", *args]
    with shared_sweep_name():
        _train_app()
    if SweepOutcome.unfinished:  # runs of a sweep failed, possibly in other processes
        return max(_exit_code, 1)
    return _exit_code


def _show_summary(cfg: DictConfig) -> None:
    from cnnexp.analysis import show, summary_from_config

    show(summary_from_config(cfg), cfg.format)


def _make_visualizations(cfg: DictConfig) -> None:
    from cnnexp.visualize.command import visualize

    print(visualize(cfg))


def _run_evaluation(cfg: DictConfig) -> None:
    from cnnexp.analysis.evaluation import evaluate

    evaluate(cfg)


def _config_command(name: str, args: list[str], validate: Callable[[DictConfig], None],
                    action: Callable[[DictConfig], None]) -> int:
    """A one-shot command over `conf/<name>.yaml`. Plain overrides are composed by `compose_config`,
    so bad input is one line and exit 2 as for train; flags (--help, --cfg job) go to Hydra."""
    register_hydra_extensions()
    if "-m" in args or "--multirun" in args:
        raise UserError(f"{name} does one thing once; -m sweeps are for train")
    if any(a.startswith("-") for a in args):  # --help, --cfg job, ...: Hydra's own flags

        @hydra.main(version_base="1.3", config_path=f"pkg://{CONFIG_MODULE}", config_name=name)
        def hydra_task(cfg: DictConfig) -> None:
            try:
                action(cfg)
            except UserError as error:
                sys.exit(_fail(error))

        sys.argv = [f"cnnexp {name}", *args]
        hydra_task()
        return 0
    action(compose_config(name, args, validate))
    return 0


def _summary_command(args: list[str]) -> int:
    from cnnexp.analysis import validate_summary_config

    return _config_command("summary", args, validate_summary_config, _show_summary)


def _visualize_command(args: list[str]) -> int:
    from cnnexp.visualize.command import validate_visualize_config

    return _config_command("visualize", args, validate_visualize_config, _make_visualizations)


def _evaluate_command(args: list[str]) -> int:
    from cnnexp.analysis.evaluation import validate_evaluate_config

    return _config_command("evaluate", args, validate_evaluate_config, _run_evaluation)


def _report_command(args: list[str]) -> int:
    """Tabulate and plot every run below a folder; report.md, report.csv and plots/ go into it."""
    import argparse

    from cnnexp.analysis.report import build_report, table_rows, write_report
    from cnnexp.console import print_table

    parser = argparse.ArgumentParser(
        prog="cnnexp report",
        description="One table (and plots) over every run below FOLDER: runs that differ only in their seed "
                    "form a group with its mean and standard deviation. Writes report.md, report.csv and "
                    "plots/ into FOLDER.")
    parser.add_argument("folder", type=Path, help="a sweep folder (outputs/multirun/<name>) or a runs folder")
    parser.add_argument("--by", nargs="+", metavar="KEY",
                        help="group by these keys (config keys such as model.name, or command-line keys such as "
                             "experiment) instead of by every value that varies")
    parser.add_argument("--baseline", action="store_true",
                        help="add published Fashion-MNIST test accuracies of the same architectures")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    options = parser.parse_args(args)
    report = build_report(options.folder, options.by, options.baseline)
    written = write_report(report, with_plots=not options.no_plots)
    print_table(f"cnnexp report: {options.folder}", *table_rows(report, name_baselines=False))
    if options.baseline:
        print("published figures: see report.md for the entry each comes from")
    for path in written.values():
        print(path)
    return 0


def _bench_command(args: list[str]) -> int:
    from cnnexp.bench.command import main_args

    register_hydra_extensions()
    return main_args(args)


class Command(NamedTuple):
    text: str  # one line for `cnnexp --help`
    run: Callable[[list[str]], int]  # the arguments after the command name -> exit status


COMMANDS = {
    "train": Command("train a network from a config: cnnexp train [group=option ...] [key=value ...] (-m for sweeps)",
                     _train_command),
    "summary": Command("a model's layers, shapes, parameters, MACs and receptive fields, without training: "
                       "cnnexp summary model=<name> data=<name>", _summary_command),
    "visualize": Command("what a trained run has learned: filters, feature maps, activation maximization, "
                         "saliency, mistakes: cnnexp visualize run=<run folder>", _visualize_command),
    "evaluate": Command("a trained run on its test split, and on shifted, rotated, scaled copies: "
                        "cnnexp evaluate run=<run or sweep folder> [invariance=true]", _evaluate_command),
    "bench": Command("training and evaluation speed per model on this device, beside the same model in PyTorch: "
                     "cnnexp bench [model=<name>] [bench.key=value ...]", _bench_command),
    "report": Command("one table and plots over the runs of a sweep, grouped, mean ± std over seeds: "
                      "cnnexp report <folder>", _report_command),
}


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `cnnexp` console script."""
    keep_freed_memory()  # before JAX starts any thread
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help", "help"):
        print(_usage())
        sys.exit(0 if args else 2)
    if args[0] == "--version":
        print(__version__)
        sys.exit(0)
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        close = difflib.get_close_matches(command, COMMANDS, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        sys.exit(_fail(UserError(f"unknown command {command!r}{hint}; commands: {', '.join(COMMANDS)}")))
    try:
        sys.exit(COMMANDS[command].run(rest))
    except UserError as error:
        sys.exit(_fail(error))
