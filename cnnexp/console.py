"""What a person watching the terminal sees: a live progress bar and the closing summary table."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

from rich.console import Console
from rich.measure import Measurement
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

console = Console()


@contextmanager
def training_progress(total_steps: int, done_steps: int, enabled: bool) -> Iterator[Progress]:
    """A progress bar over all training steps, with a free-text `status` field for metrics."""
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
        console=console,
        disable=not enabled,
        transient=False,
    )
    with progress:
        progress.add_task("train", total=total_steps, completed=done_steps, status="compiling")
        yield progress


def print_summary(summary: dict[str, Any], run_dir: str) -> None:
    """The run's headline numbers as a table (they are all in summary.json too)."""
    table = Table(title=f"cnnexp train: {summary['status']}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()

    def percent(value: Any) -> str:
        return f"{100 * value:.2f}%" if isinstance(value, (int, float)) else "-"

    def number(value: Any, fmt: str) -> str:
        return format(value, fmt) if isinstance(value, (int, float)) else "-"

    rows = [
        ("model", f"{summary['model']} on {summary['dataset']}"),
        ("test accuracy", percent(summary.get("test_accuracy"))),
        ("best val accuracy", f"{percent(summary.get('best_val_accuracy'))} (epoch {summary.get('best_epoch', '-')})"),
        ("parameters", number(summary.get("params"), ",")),
        ("epochs", f"{summary.get('epochs_completed', 0)} / {summary.get('epochs')}"),
        ("wall time", f"{number(summary.get('wall_time_s'), '.1f')} s (compile {number(summary.get('compile_time_s'), '.1f')} s)"),
        ("train images/s", number(summary.get("train_images_per_s"), ",.0f")),
        ("device", summary.get("device", {}).get("kind", "-")),
        ("run folder", run_dir),
    ]
    if summary.get("error"):
        rows.append(("error", summary["error"]))
    for name, value in rows:
        table.add_row(name, str(value))
    console.print(table)


def print_table(title: str, headings: list[str], rows: list[list[str]]) -> None:
    """A table of text cells, titled: as wide as the terminal allows, unwrapped when piped to a file or log."""
    table = Table(title=title, title_justify="left")
    for index, heading in enumerate(headings):
        table.add_column(heading, justify="left" if index == 0 else "right", overflow="fold")
    for row in rows:
        table.add_row(*row)
    if console.is_terminal:
        console.print(table)
    else:
        natural_width = Measurement.get(console, console.options.update_width(10_000), table).maximum
        Console(width=max(console.width, natural_width, len(title))).print(table)
