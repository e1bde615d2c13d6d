"""The `cnnexp` command: a table of subcommands and `main`. Each subcommand lives in its own
module of cnnexp.commands and is imported only when it runs, so `cnnexp --help` starts fast."""

from __future__ import annotations

import difflib
import importlib
import sys
from typing import NamedTuple

from cnnexp import __version__
from cnnexp.background_errors import report_background_errors_briefly
from cnnexp.errors import UserError, report_error
from cnnexp.host_memory import keep_freed_memory


class Command(NamedTuple):
    text: str  # one line for `cnnexp --help`
    module: str  # its module in cnnexp.commands, whose run(args after the name) -> exit status


COMMANDS = {
    "train": Command("train a network from a config: cnnexp train [group=option ...] [key=value ...] (-m for sweeps)",
                     "train"),
    "summary": Command("a model's layers, shapes, parameters, MACs and receptive fields, without training: "
                       "cnnexp summary model=<name> data=<name>", "summary"),
    "lr-find": Command("a learning rate to train with: the loss while the rate grows from tiny to huge "
                       "(a range test): cnnexp lr-find [train overrides] [lr_find.key=value ...]", "lr_find"),
    "visualize": Command("what a trained run has learned: filters, feature maps, activation maximization, "
                         "saliency, mistakes: cnnexp visualize run=<run folder>", "visualize"),
    "evaluate": Command("a trained run on its test split, and on shifted, rotated, scaled copies: "
                        "cnnexp evaluate run=<run or sweep folder> [invariance=true]", "evaluate"),
    "bench": Command("training and evaluation speed per model on this device, beside the same model in PyTorch: "
                     "cnnexp bench [model=<name>] [bench.key=value ...]", "bench"),
    "report": Command("one table and plots over the runs of a sweep, grouped, mean ± std over seeds: "
                      "cnnexp report <folder>", "report"),
}


def _usage() -> str:
    lines = [f"cnnexp {__version__}: config-driven CNN experiments (Hydra, JAX, Flax NNX)", "",
             "Usage: cnnexp <command> [args]", "", "Commands:"]
    lines += [f"  {name:<8} {command.text}" for name, command in COMMANDS.items()]
    lines += ["", "`cnnexp <command> --help` shows a command's config groups and options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `cnnexp` console script."""
    keep_freed_memory()  # before JAX starts any thread
    report_background_errors_briefly()
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help", "help"):
        print(_usage())
        sys.exit(0 if args else 2)
    if args[0] == "--version":
        print(__version__)
        sys.exit(0)
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        close = difflib.get_close_matches(name, COMMANDS, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        sys.exit(report_error(UserError(f"unknown command {name!r}{hint}; commands: {', '.join(COMMANDS)}")))
    try:
        sys.exit(importlib.import_module(f"cnnexp.commands.{COMMANDS[name].module}").run(rest))
    except UserError as error:
        sys.exit(report_error(error))
