"""Publish a sweep's report as a section of a results document (docs/results.md).

`make reproduce-*` ends here: the section gets the report's table (with the published
baselines), its plots copied beside the document, and what is needed to trust and repeat the
numbers: date, commit, hardware, versions, the command and the sweep's wall time. Only the
section between its markers is rewritten, so each target keeps the others' results.

    python -m cnnexp.reports.publish <sweep folder> --doc docs/results.md --section zoo-cpu \\
        --command "make reproduce-zoo"
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
from datetime import datetime
from pathlib import Path

from cnnexp.errors import UserError
from cnnexp.reports.baselines import SOURCE as BASELINE_SOURCE
from cnnexp.reports.report import Report, build_report, markdown_table, table_rows, write_report

_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S%z"
_DOC_HEADER = """# Results

Measured numbers only, each section written by the Make target it names from a sweep it ran
(tables and plots made by `cnnexp report`). A section that says "not run" has no numbers yet.
"""


def markers(section: str) -> tuple[str, str]:
    return (f"<!-- {section}: begin (written by the Make target below; edits inside are overwritten) -->",
            f"<!-- {section}: end -->")


def _span(report: Report) -> tuple[str, str, float | None]:
    """First start, last finish and the seconds between them, from the runs' summaries."""
    starts = [run.summary["started_at"] for run in report.runs if run.summary.get("started_at")]
    ends = [run.summary["finished_at"] for run in report.runs if run.summary.get("finished_at")]
    if not starts or not ends:
        return "?", "?", None
    first, last = min(starts), max(ends)
    seconds = (datetime.strptime(last, _TIME_FORMAT) - datetime.strptime(first, _TIME_FORMAT)).total_seconds()
    return first, last, seconds


def cpu_model() -> str:
    try:
        match = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.MULTILINE)
    except OSError:
        match = None
    return match.group(1).strip() if match else "unknown CPU"


def _hardware(report: Report) -> str:
    devices = {(str(run.summary.get("device", {}).get("platform")), str(run.summary.get("device", {}).get("kind")),
                run.summary.get("device", {}).get("count")) for run in report.runs if run.summary.get("device")}
    accelerators = "; ".join(f"{count} x {kind}" if kind != platform else f"{platform}"
                             for platform, kind, count in sorted(devices, key=str))
    return f"JAX on {accelerators or 'an unknown device'}; host CPU {cpu_model()}, {os.cpu_count()} cores"


def _shown(path: Path) -> str:
    """The path relative to the current folder when it is below it (no machine's paths in the docs)."""
    try:
        return path.resolve().relative_to(Path.cwd()).as_posix()
    except ValueError:
        return path.name


def section_text(report: Report, title: str, command: str, plots: dict[str, Path], doc: Path, section: str) -> str:
    """The section's Markdown, plots copied to `<doc folder>/results/<section>/`."""
    first, last, seconds = _span(report)
    commits = sorted({str(run.summary.get("git_commit")) for run in report.runs if run.summary.get("git_commit")})
    versions = next((run.summary["versions"] for run in report.runs if run.summary.get("versions")), {})
    headings, rows = table_rows(report)
    seeds = sorted({str(run.summary.get("seed")) for run in report.runs if run.summary.get("seed") is not None}, key=int)
    images = doc.parent / "results" / section
    if images.exists():
        shutil.rmtree(images)
    images.mkdir(parents=True)
    figures = []
    for name, path in plots.items():
        shutil.copy(path, images / path.name)
        figures.append(f"![{name}]({(images / path.name).relative_to(doc.parent).as_posix()})")
    begin, end = markers(section)
    wall = f"{seconds / 60:.1f} minutes ({first} to {last})" if seconds is not None else "unknown"
    lines = [
        begin,
        f"## {title}",
        "",
        f"- Command: `{command}` (sweep folder `{_shown(report.root)}`)",
        f"- Finished: {last}; sweep wall time {wall}",
        f"- Commit: {', '.join(commits) or 'unknown'}",
        f"- Hardware: {_hardware(report)}",
        "- Versions: " + ", ".join(f"{name} {version}" for name, version in versions.items() if version),
        f"- Runs: {len(report.runs)}, seeds {', '.join(seeds)}; each row is the mean ± sample standard deviation "
        "over its seeds",
        "",
        markdown_table(headings, rows),
        "",
        *([f"Published test accuracies: {BASELINE_SOURCE}. They come from longer training, most of them "
           "with augmentation.", ""] if report.with_baseline else []),
        *figures,
        end,
    ]
    return "\n".join(lines)


def replace_section(doc: Path, section: str, text: str, header: str = _DOC_HEADER) -> None:
    """Put `text` in place of the section's old text (or at the end), leaving the rest of `doc` as
    it is; a new `doc` starts with `header`."""
    content = doc.read_text(encoding="utf-8") if doc.is_file() else header
    begin, end = markers(section)
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(content):
        content = pattern.sub(lambda _: text, content)
    else:
        content = content.rstrip("\n") + "\n\n" + text
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(content.rstrip("\n") + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cnnexp.reports.publish", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep", type=Path)
    parser.add_argument("--doc", type=Path, required=True, help="the results document, e.g. docs/results.md")
    parser.add_argument("--section", required=True, help="the section's id, e.g. zoo-cpu")
    parser.add_argument("--title", help="the section's heading (default: from the id)")
    parser.add_argument("--command", required=True, help="the command that made the sweep")
    parser.add_argument("--by", nargs="+", metavar="KEY", help="group by these keys (default: as cnnexp report)")
    options = parser.parse_args(argv)
    try:
        report = build_report(options.sweep, by=options.by, with_baseline=True)
    except UserError as error:
        print(f"cnnexp: error: {error}", file=sys.stderr)
        return error.exit_code
    written = write_report(report)
    plots = {title: path for title, path in written.items() if path.suffix == ".png"}
    title = options.title or _TITLES.get(options.section, options.section)
    replace_section(options.doc, options.section,
                    section_text(report, title, options.command, plots, options.doc, options.section))
    print(f"{written['report']}\n{options.doc} (section {options.section})")
    return 0


_TITLES = {
    "zoo-cpu": "Model zoo on Fashion-MNIST: CPU budget presets, 3 seeds",
    "zoo-gpu": "Model zoo on Fashion-MNIST: full presets (GPU), 3 seeds",
    "losses": "Cross-entropy against MSE (source text 004): LeNet on Fashion-MNIST, CPU preset, 3 seeds",
    "activations": "Activations (source text 002): LeNet on Fashion-MNIST with relu, leaky_relu, maxout, tanh and "
                   "sigmoid, CPU preset, 3 seeds",
    "invariance": "Invariance to shifts, rotations and scales (source text 001): CNNs and a dense network, "
                  "with and without augmentation, CPU presets",
    "speedrun": "Speedrun: speednet (airbench-style) to 94% Fashion-MNIST test accuracy, 5 seeds",
    "finetune": "Fine-tuning (source text 002): LeNet pretrained on Fashion-MNIST classes 0-4, then classes 5-9 "
                "with few labels: from scratch, fine-tuned, body frozen",
}

if __name__ == "__main__":
    sys.exit(main())
