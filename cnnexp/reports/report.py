"""`cnnexp report <folder>`: one table over many runs, grouped by what varies between them.

The runs of a sweep differ in the values the command line swept (`model=lenet,vgg seed=0,1,2`);
the report finds those values itself, puts runs that differ only in their seed into one group,
and gives each group's mean and spread over seeds. Failed, interrupted and still running runs
are listed, never silently dropped, and the report works on a sweep that is still going. Runs
that `cnnexp evaluate invariance=true` has seen add their accuracy under the grids' largest
shift, largest rotation and smallest and largest scale.
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass
from pathlib import Path

from cnnexp.errors import UserError
from cnnexp.reports.baselines import SOURCE as BASELINE_SOURCE
from cnnexp.reports.groups import Group, InvariancePoint, Stat, short_value
from cnnexp.reports.run_records import TRANSFORMS, RunRecord, find_run_dirs, read_run
from cnnexp.runs.fingerprint import is_bookkeeping_key
from cnnexp.runs.layout import CONFIG_FILE, INVARIANCE_FILE, SUMMARY_FILE

REPORT_MD, REPORT_CSV, PLOTS_DIR = "report.md", "report.csv", "plots"
MISSING = "—"
# summary.json numbers summarized per group: key -> column heading.
METRICS = {
    "test_accuracy": "test acc %",
    "best_val_accuracy": "best val acc %",
    "params": "params",
    "wall_time_s": "wall time s",
    "train_images_per_s": "train img/s",
}
_PERCENT = ("test_accuracy", "best_val_accuracy")
@dataclass
class Report:
    root: Path
    runs: list[RunRecord]
    columns: list[str]  # the grouping keys, in the order shown
    groups: list[Group]
    with_baseline: bool
    invariance: list[InvariancePoint]  # empty when no completed run has evaluate/invariance.json


def build_report(root: Path, by: list[str] | None = None, with_baseline: bool = False) -> Report:
    """Read every run below `root` and group them: by the keys in `by`, or else by every config
    value that varies between the runs (apart from the seed and bookkeeping such as paths)."""
    if not root.is_dir():
        raise UserError(f"{root}: no such folder (give a sweep folder such as outputs/multirun/<name> "
                        "or a runs folder such as outputs/runs)")
    runs = [read_run(run_dir) for run_dir in find_run_dirs(root)]
    if not runs:
        raise UserError(f"{root}: no runs found (a run folder holds {SUMMARY_FILE} or {CONFIG_FILE}; "
                        "start some with `cnnexp train -m ...`)")
    columns = list(by) if by else _grouping_columns(runs)
    groups: dict[tuple[str, ...], Group] = {}
    for run in runs:
        label = {key: _lookup(run, key) for key in columns}
        groups.setdefault(tuple(label.values()), Group(label, [])).runs.append(run)
    # No baseline column where no group has a published figure (class subsets, other datasets).
    with_baseline = with_baseline and any(group.baseline() for group in groups.values())
    return Report(root, runs, columns, list(groups.values()), with_baseline, _invariance_points(runs))


def _invariance_points(runs: list[RunRecord]) -> list[InvariancePoint]:
    """The invariance columns: of each kind of transform, the values of the grid that every evaluated
    run shares, the largest shift and rotation (the hardest), and the smallest and largest scale."""
    evaluated = [run for run in runs if run.status == "completed" and run.invariance]
    points = []
    for kind in TRANSFORMS:
        shared = set.intersection(*(set(run.invariance.get(kind, {})) for run in evaluated)) if evaluated else set()
        if not shared:
            continue
        if kind == "scale":
            values = sorted({min(shared), max(shared)})
        else:
            values = [max(shared, key=lambda value: (abs(value), value))]
        points += [InvariancePoint(kind, value) for value in values]
    return points


def _lookup(run: RunRecord, key: str) -> str:
    """A run's value for a grouping key: as given on its command line, else from its config."""
    return run.overrides.get(key, run.config.get(key, MISSING))


def _varying(runs: list[RunRecord], values_of) -> list[str]:
    keys = sorted({key for run in runs for key in values_of(run)})
    return [key for key in keys
            if key != "seed" and not is_bookkeeping_key(key)
            and len({values_of(run).get(key, MISSING) for run in runs}) > 1]


def _grouping_columns(runs: list[RunRecord]) -> list[str]:
    """The command-line keys that vary (`experiment`, `model`), when they tell the groups apart
    exactly as the full configs do; otherwise the config keys that vary."""
    config_keys = _varying(runs, lambda run: run.config)
    override_keys = _varying(runs, lambda run: run.overrides)

    def partition(keys: list[str], values_of) -> set[frozenset[int]]:
        blocks: dict[tuple[str, ...], set[int]] = {}
        for index, run in enumerate(runs):
            blocks.setdefault(tuple(values_of(run).get(key, MISSING) for key in keys), set()).add(index)
        return {frozenset(block) for block in blocks.values()}

    if override_keys and partition(override_keys, lambda run: run.overrides) == partition(
            config_keys, lambda run: run.config):
        return override_keys
    return config_keys


def _percent(stat: Stat) -> str:
    if stat.mean is None:
        return MISSING
    return f"{100 * stat.mean:.2f}" + (f" ± {100 * stat.std:.2f}" if stat.std is not None else "")


def _plain(stat: Stat, decimals: int = 0) -> str:
    if stat.mean is None:
        return MISSING
    text = f"{stat.mean:,.{decimals}f}"
    return text + (f" ± {stat.std:,.{decimals}f}" if stat.std is not None and stat.std > 0 else "")


def _status_counts(runs: list[RunRecord]) -> str:
    counts: dict[str, int] = {}
    for run in runs:
        counts[run.status] = counts.get(run.status, 0) + 1
    return ", ".join(f"{n} {status}" for status, n in counts.items()) or MISSING


def table_rows(report: Report, name_baselines: bool = True) -> tuple[list[str], list[list[str]]]:
    """The report's table as text: headings and one row per group (shared by console and Markdown).
    `name_baselines=False` leaves out which published entry each baseline is (narrow terminals)."""
    # "not completed" (failed, running, ...) only when some run is not completed.
    show_others = any(group.not_completed for group in report.groups)
    headings = [*report.columns, "n", *(["not completed"] if show_others else []), *METRICS.values(),
                *(point.heading for point in report.invariance)]
    if report.with_baseline:
        headings.append("published test acc %")
    rows = []
    for group in report.groups:
        row = [*map(short_value, group.label.values()), str(len(group.completed)),
               *([_status_counts(group.not_completed)] if show_others else [])]
        for key in METRICS:
            stat = group.stat(key)
            row.append(_percent(stat) if key in _PERCENT else _plain(stat, 0 if key != "wall_time_s" else 1))
        row += [_percent(group.invariance_stat(point)) for point in report.invariance]
        if report.with_baseline:
            baseline = group.baseline()
            figure = f"{100 * baseline.test_accuracy:.1f}" if baseline else MISSING
            row.append(f"{figure} ({baseline.entry})" if baseline and name_baselines else figure)
        rows.append(row)
    return headings, rows


def write_csv(report: Report, path: Path) -> None:
    """Full-precision numbers, one row per group: for scripts and spreadsheets."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        header = [*report.columns, "n", "not_completed", "seeds"]
        header += [f"{key}_{part}" for key in METRICS for part in ("mean", "std")]
        if report.invariance:
            header += ["invariance_n", *(f"{point.csv_key}_{part}" for point in report.invariance
                                         for part in ("mean", "std"))]
        if report.with_baseline:
            header += ["baseline_test_accuracy", "baseline_entry"]
        writer.writerow(header)
        for group in report.groups:
            seeds = " ".join(str(run.summary.get("seed", MISSING)) for run in group.completed)
            row = [*group.label.values(), len(group.completed), len(group.not_completed), seeds]
            row += [cell for key in METRICS for cell in _csv_cells(group.stat(key))]
            if report.invariance:
                row.append(len(group.invariance_evaluated))
                row += [cell for point in report.invariance for cell in _csv_cells(group.invariance_stat(point))]
            if report.with_baseline:
                baseline = group.baseline()
                row += [baseline.test_accuracy, baseline.entry] if baseline else ["", ""]
            writer.writerow(row)


def _csv_cells(stat: Stat) -> list[str]:
    """Mean and standard deviation at full precision; empty cells where there is none."""
    return ["" if stat.mean is None else repr(stat.mean), "" if stat.std is None else repr(stat.std)]


def markdown_table(headings: list[str], rows: list[list[str]]) -> str:
    escape = lambda cell: str(cell).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(escape(h) for h in headings) + " |", "|" + "---|" * len(headings)]
    lines += ["| " + " | ".join(escape(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def markdown(report: Report, plots: dict[str, Path]) -> str:
    """report.md: the table, what it was grouped by, the plots, and every run that did not complete."""
    headings, rows = table_rows(report)
    grouped_by = ", ".join(f"`{key}`" for key in report.columns) or "nothing (one group: every run)"
    parts = [
        f"# Report: {report.root.name}",
        "",
        f"Generated {time.strftime('%Y-%m-%d %H:%M %Z')} by `cnnexp report` from `{report.root}`: "
        f"{len(report.runs)} runs ({_status_counts(report.runs)}), grouped by {grouped_by}.",
        "",
        markdown_table(headings, rows),
        "",
        "Means over the n completed runs of each group ± their sample standard deviation (ddof=1, "
        "shown from n=2). Accuracies in percent: test split at the end, validation split at the best "
        "epoch. Wall time covers loading, compiling and evaluating, not only training.",
    ]
    if report.invariance:
        evaluated = sum(len(group.invariance_evaluated) for group in report.groups)
        completed = sum(len(group.completed) for group in report.groups)
        parts += ["", "`acc % shift / rot / scale`: test accuracy on the test split shifted right by that many "
                  "pixels, rotated clockwise by that many degrees or scaled about the centre, as "
                  f"`cnnexp evaluate invariance=true` measured it (`{INVARIANCE_FILE}` of "
                  f"{evaluated} of the {completed} completed runs); the whole curves are in the invariance plot."]
    best = report.root / "optimization_results.yaml"
    if best.is_file():
        parts += ["", f"Optuna's best trial (`{best.name}`):", "", "```yaml", best.read_text().strip(), "```"]
    if report.with_baseline:
        parts += ["", f"Published figures: {BASELINE_SOURCE}. Their budgets and augmentation differ from these runs'."]
    if plots:
        parts += ["", "## Plots", ""]
        parts += [f"![{title}]({path.relative_to(report.root).as_posix()})" for title, path in plots.items()]
    unfinished = [run for run in report.runs if run.status != "completed"]
    if unfinished:
        parts += ["", "## Runs not completed", "",
                  markdown_table(["run", "status", "error"],
                                 [[_relative(run, report), run.status, run.error.splitlines()[0][:200] if run.error
                                   else MISSING] for run in unfinished])]
    parts += ["", "## All runs", "", markdown_table(
        ["run", "group", "seed", "status", "test acc %", "best val acc %", "wall time s"],
        [[_relative(run, report), group.name or "all", str(run.summary.get("seed", MISSING)), run.status,
          _percent(Stat(run.value("test_accuracy"), None)), _percent(Stat(run.value("best_val_accuracy"), None)),
          _plain(Stat(run.value("wall_time_s"), None), 1)]
         for group in report.groups for run in group.runs])]
    return "\n".join(parts) + "\n"


def _relative(run: RunRecord, report: Report) -> str:
    return run.run_dir.relative_to(report.root).as_posix() or "."


def write_report(report: Report, with_plots: bool = True) -> dict[str, Path]:
    """Write report.md, report.csv and the plots into the report's folder; returns what was written."""
    from cnnexp.reports.report_plots import draw_plots

    plots = draw_plots(report.groups, report.root / PLOTS_DIR) if with_plots else {}
    (report.root / REPORT_MD).write_text(markdown(report, plots), encoding="utf-8")
    write_csv(report, report.root / REPORT_CSV)
    return {"report": report.root / REPORT_MD, "csv": report.root / REPORT_CSV, **plots}
