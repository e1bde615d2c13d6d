"""`cnnexp report <folder>`: one table and plots over every run below a folder.

The one command that is not a Hydra app: it composes no config (it reads run folders), and its
input is a folder and a few flags, which argparse states and checks plainly."""

from __future__ import annotations

import argparse
from pathlib import Path


def run(args: list[str]) -> int:
    """Tabulate and plot every run below a folder; report.md, report.csv and plots/ go into it."""
    from cnnexp.console import print_table
    from cnnexp.reports.report import build_report, table_rows, write_report

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
