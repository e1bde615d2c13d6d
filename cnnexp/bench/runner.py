"""`cnnexp bench`: training and evaluation speed of each model on this device, side by side with
the same model and step in PyTorch, as a table on the terminal, CSV and Markdown files, and
optionally a section of docs/bench.md.

Both sides of a row run at the same time on the same images, interleaved (cnnexp.bench.timing):
cnnexp here, PyTorch in a worker process of its own (cnnexp.bench.reference_worker) so that neither
library's thread pool slows the other, so the ratio column holds up on a shared machine even when
the absolute figures move. "oneDNN %" is the share of cnnexp's train step spent inside its oneDNN
kernels (cnnexp.kernels); the rest is XLA's own code and dispatch."""

from __future__ import annotations

import csv
import importlib.metadata
import importlib.util
import json
import logging
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from cnnexp.checks import can_be_folder, check_choice, check_values, folder_at, integer_at_least
from cnnexp.errors import UserError

log = logging.getLogger("cnnexp.bench")
DOC_HEADER = """# Speed

`cnnexp bench` measures each model's training step and evaluation on one device beside the same
model and step in PyTorch. Each section below is the latest table for one device platform,
written by the command it names. Ratios are cnnexp / PyTorch (above 1: cnnexp is faster); they
were measured side by side, interleaved, so they are steadier than the absolute figures.
"oneDNN %" is the share of cnnexp's train step inside its oneDNN kernels, the rest is XLA's code.
"""
COLUMNS = ("model", "params", "batch", "precision", "train img/s", "step ms", "spread %", "compile s",
           "oneDNN %", "eval img/s", "peak MiB", "GFLOP/step", "GFLOP/s", "% peak", "matmul ms", "ref train img/s",
           "ref eval img/s", "train ratio", "eval ratio", "reference")
PRESETS = ("auto", "cpu", "full")  # bench.presets: auto is cpu on a CPU, full on an accelerator
REFERENCES = ("auto", "none", "torch")  # bench.reference
# bench.stream=true: the training split read from disk by Grain (cnnexp.bench.stream_side).
STREAM_COLUMNS = ("stream img/s", "streamed train img/s", "stream peak MiB", "stream")


@dataclass
class Row:
    """One model's figures; `None` where not measured (the `reference` note says why)."""

    values: dict[str, Any] = field(default_factory=dict)

    def cell(self, column: str) -> str:
        value = self.values.get(column)
        if value is None:
            return "-"
        if column.endswith("ratio"):
            return f"{value:.2f}"
        if isinstance(value, float):
            return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
        if isinstance(value, int):
            return f"{value:,}"
        return str(value)


def bench_options(overrides: list[str]) -> DictConfig:
    """conf/bench.yaml with the `bench.` overrides, checked; a wrong key or value is a one-line error."""
    options = OmegaConf.create((resources.files("cnnexp.conf") / "bench.yaml").read_text())
    OmegaConf.set_struct(options, True)
    given = [o.removeprefix("bench.") for o in overrides if o.startswith("bench.")]
    try:
        options = OmegaConf.merge(options, OmegaConf.from_dotlist(given))
        OmegaConf.resolve(options)  # `bench.steps=${oops}`: refused here, not when it is read
    except Exception as error:  # OmegaConf's messages name the key
        raise UserError(f"invalid bench option: {' '.join(str(error).split())}") from None
    validate_bench_options(options)
    return options


def validate_bench_options(options: DictConfig) -> None:
    """Every `bench.` value, before any model is compiled or anything is written."""
    names = lambda v: OmegaConf.is_list(v) and len(v) > 0 and all(isinstance(m, str) for m in v)  # noqa: E731
    markdown_file = lambda v: v is None or (isinstance(v, str) and can_be_folder(str(Path(v).parent))  # noqa: E731
                                            and not Path(v).is_dir())
    check_values([
        ("bench.models", options.models, names, "a non-empty list of model names"),
        *[integer_at_least(f"bench.{key}", options[key], 1) for key in ("steps", "repeats", "eval_batches")],
        integer_at_least("bench.warmup", options.warmup, 0),
        *[(f"bench.{key}", options[key], lambda v: isinstance(v, bool), "true or false") for key in ("stream", "peak")],
        ("bench.torch_compile", options.torch_compile, lambda v: isinstance(v, bool) or v == "auto",
         "true, false or auto"),
        ("bench.doc", options.doc, markdown_file, "null or the path of a Markdown file"),
        folder_at("bench.output_dir", options.output_dir),
    ])
    check_choice("bench.presets", options.presets, PRESETS)
    check_choice("bench.reference", options.reference, REFERENCES)


def row_overrides(options: DictConfig, train_overrides: list[str], platform: str) -> list[list[str]]:
    """The train overrides of each row: the user's own config if it names a model or experiment,
    else one row per `bench.models` entry with its Fashion-MNIST preset."""
    keys = {o.split("=", 1)[0].lstrip("+~") for o in train_overrides}
    if keys & {"model", "experiment"}:
        return [train_overrides]
    presets = options.presets if options.presets != "auto" else ("cpu" if platform == "cpu" else "full")
    suffix = "_cpu" if presets == "cpu" else ""
    return [[f"experiment={model}_fashion_mnist{suffix}", *train_overrides] for model in options.models]


def _wants_reference(options: DictConfig) -> bool:
    if options.reference == "none":
        return False
    if importlib.util.find_spec("torch") is None:  # not imported here: the reference runs in its own process
        if options.reference == "torch":
            raise UserError("bench.reference=torch needs PyTorch: pip install 'cnnexp[bench]'") from None
        log.warning("PyTorch is not installed (the `bench` extra): no reference column")
        return False
    return True


def row_label(overrides: list[str], cfg: DictConfig) -> str:
    """The experiment preset a row was configured by, or else its model's name."""
    presets = [o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0] == "experiment"]
    return presets[-1] if presets else cfg.model.name


def measure_row(label: str, cfg: DictConfig, options: DictConfig, data_cache: dict, with_reference: bool,
                peak_flops: float | None) -> Row:
    """Compile and time one config's steps, and its reference's, interleaved."""
    from cnnexp.bench.cnnexp_side import compile_steps, matmul_seconds, peak_memory_bytes
    from cnnexp.bench.timing import interleaved
    from cnnexp.data import load_dataset

    key = json.dumps(OmegaConf.to_container(cfg.data, resolve=True), sort_keys=True)
    if key not in data_cache:
        data_cache[key] = load_dataset(cfg.data, cfg.seed, in_memory=True)  # the steps' speed, not the disk's
    data = data_cache[key]
    batch = cfg.trainer.batch_size
    row = Row({"model": label, "batch": batch, "precision": cfg.trainer.precision})
    ours = compile_steps(cfg, data, steps=options.steps, eval_batches=options.eval_batches)
    row.values.update(params=ours.params, **{"compile s": ours.compile_s})
    calls = {"cnnexp train": ours.train, "cnnexp eval": ours.evaluate}
    reference = None
    if with_reference:
        from cnnexp.bench.reference_worker import NoReference, ReferenceWorker

        compile_model = options.torch_compile is True or (options.torch_compile == "auto" and
                                                          cfg.trainer.get("devices") != "cpu" and _on_gpu())
        try:
            reference = ReferenceWorker(cfg, data, steps=options.steps, eval_batches=options.eval_batches,
                                        compile_model=compile_model)
        except NoReference as reason:
            row.values["reference"] = str(reason)
        else:
            if reference.info.params != ours.params:
                reference.close()
                raise RuntimeError(f"{label}: the PyTorch reference has {reference.info.params:,} parameters, "
                                   f"cnnexp's model {ours.params:,}: not the same architecture")
            calls.update({"reference train": reference.train, "reference eval": reference.evaluate})
            row.values["reference"] = f"PyTorch {'compiled' if compile_model else 'eager'}, {reference.info.device}"
    try:
        timings = interleaved(calls, warmup=options.warmup, repeats=options.repeats)
    finally:
        if reference is not None:
            reference.close()
    step_s = timings["cnnexp train"].median_s / options.steps
    row.values.update({
        "train img/s": batch / step_s, "step ms": 1000 * step_s, "spread %": 100 * timings["cnnexp train"].spread,
        "eval img/s": ours.eval_images / timings["cnnexp eval"].median_s,
    })
    if (share := ours.kernel_share()) is not None:
        row.values["oneDNN %"] = 100 * share
    if (peak := peak_memory_bytes()) is not None:
        row.values["peak MiB"] = peak / 2**20
    if ours.train_flops:
        row.values.update({"GFLOP/step": ours.train_flops / 1e9, "GFLOP/s": ours.train_flops / step_s / 1e9,
                           "matmul ms": 1000 * matmul_seconds(ours.train_flops, cfg.trainer.precision)})
        if peak_flops:
            row.values["% peak"] = 100 * ours.train_flops / step_s / peak_flops
    if options.stream:
        from cnnexp.bench.stream_side import measure_stream

        row.values.update(measure_stream(cfg, options.steps * options.repeats))
    if reference is not None:
        ref_step_s = timings["reference train"].median_s / options.steps
        row.values.update({
            "ref train img/s": batch / ref_step_s,
            "ref eval img/s": reference.info.eval_images / timings["reference eval"].median_s,
            "train ratio": ref_step_s / step_s,
            "eval ratio": timings["reference eval"].median_s / timings["cnnexp eval"].median_s,
        })
    return row


def _on_gpu() -> bool:
    import jax

    return jax.devices()[0].platform == "gpu"


def peak_matmul_flops(precision: str) -> float:
    """FLOP/s of a large square matrix product on this device: the ceiling the "% peak" column
    compares with, measured here rather than read from a datasheet."""
    import jax

    from cnnexp.bench.cnnexp_side import matmul_seconds

    n = 2048 if jax.devices()[0].platform == "cpu" else 8192
    return 2 * n**3 / matmul_seconds(2 * n**3, precision, fastest=True)


def bench(options: DictConfig, configs: list[tuple[str, DictConfig]], command: str, env: dict[str, Any]) -> Path:
    """Measure each (row label, composed train config) with the `bench` options; returns the output
    folder. `env` is `runs.summary.environment()`, `command` the command line the files name."""
    from cnnexp.console import print_table
    from cnnexp.runs.naming import unique_name

    with_reference = _wants_reference(options)
    platform = env["device"]["platform"]
    precision = configs[0][1].trainer.precision
    peak = peak_matmul_flops(precision) if options.peak else None
    if peak:
        log.info("matrix-product peak (%s): %.1f GFLOP/s", precision, peak / 1e9)
    out = Path(options.output_dir) / unique_name()
    out.mkdir(parents=True)
    rows, data_cache = [], {}
    for label, cfg in configs:
        log.info("bench %s", label)
        rows.append(measure_row(label, cfg, options, data_cache, with_reference, peak))
        _write_files(out, rows, command, env, options, peak)  # after every row: a stopped bench keeps its rows
        if options.doc:
            _write_doc(Path(options.doc), rows, command, env, peak, precision)
    title = (f"cnnexp bench on {env['device']['count']} x {env['device']['kind']} ({os.cpu_count()} CPU cores): "
             f"{options.steps} steps x {options.repeats} repeats, median")
    columns = _columns(rows)
    print_table(title, columns, [[row.cell(c) for c in columns] for row in rows])
    if options.doc:
        print(f"updated {options.doc} (section bench-{platform})")
    print(out)
    return out


def _columns(rows: list[Row]) -> list[str]:
    """COLUMNS, and STREAM_COLUMNS where a row measured the streamed path."""
    streamed = any(column in row.values for row in rows for column in STREAM_COLUMNS)
    return [*COLUMNS, *(STREAM_COLUMNS if streamed else ())]


def _markdown(rows: list[Row]) -> str:
    from cnnexp.reports.report import markdown_table

    columns = _columns(rows)
    return markdown_table(columns, [[row.cell(c) for c in columns] for row in rows])


def _write_files(out: Path, rows: list[Row], command: str, env: dict, options: DictConfig, peak: float | None) -> None:
    with (out / "bench.csv").open("w", newline="") as file:
        columns = _columns(rows)
        writer = csv.DictWriter(file, fieldnames=columns)
        writer.writeheader()
        writer.writerows([{c: row.values.get(c) for c in columns} for row in rows])
    (out / "bench.md").write_text(f"Command: `{command}`\n\n{_markdown(rows)}\n")
    record = {"command": command, "options": OmegaConf.to_container(options), "peak_flops": peak,
              "xla_flags": os.environ.get("XLA_FLAGS"), **env, "rows": [row.values for row in rows]}
    (out / "bench.json").write_text(json.dumps(record, indent=2) + "\n")


def _write_doc(doc: Path, rows: list[Row], command: str, env: dict, peak: float | None, precision: str) -> None:
    from cnnexp.reports.publish import cpu_model, markers, replace_section

    section = f"bench-{env['device']['platform']}"
    begin, end = markers(section)
    versions = ", ".join(f"{name} {version}" for name, version in env["versions"].items() if version)
    try:
        versions += f", torch {importlib.metadata.version('torch')}"
    except importlib.metadata.PackageNotFoundError:
        pass
    lines = [
        begin, f"## {env['device']['platform'].upper()}: {env['device']['count']} x {env['device']['kind']}", "",
        f"- Command: `{command}`" + (f" with XLA_FLAGS=`{os.environ['XLA_FLAGS']}`" if os.environ.get("XLA_FLAGS") else ""),
        f"- Commit: {env.get('git_commit') or 'unknown'}",
        f"- Hardware: host CPU {cpu_model()}, {os.cpu_count()} cores"
        + (f"; matrix-product peak {peak / 1e9:,.0f} GFLOP/s ({precision})" if peak else ""),
        f"- Versions: {versions}", "", _markdown(rows), "", end,
    ]
    replace_section(doc, section, "\n".join(lines), header=DOC_HEADER)
