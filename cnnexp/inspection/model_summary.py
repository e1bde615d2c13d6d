"""`cnnexp summary`: one row per layer, with shapes, parameters, multiply-accumulates,
receptive fields and the textbook output-size check, for any model and input size in seconds.

Nothing runs for real: the model is built abstractly (`nnx.eval_shape`) and its forward pass
on one image is only traced (`jax.make_jaxpr`) while the layers record themselves, so an
ImageNet-size VGG costs no memory and no compilation. The trace also gives the receptive
fields (see `receptive_field`).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax.extend.core import ClosedJaxpr
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from cnnexp.checks import is_positive_int
from cnnexp.console import console
from cnnexp.errors import UserError
from cnnexp.inspection.receptive_field import GLOBAL, ReceptiveField, layer_receptive_fields
from cnnexp.models import count_params, create_model, options_of
from cnnexp.models.recording import LayerRecord, module_paths, recording

FORMATS = ("text", "markdown", "csv", "json")
WINDOWED_KINDS = ("conv", "pool")  # rows checked against (W - F + P_low + P_high) / S + 1
WEIGHTED_KINDS = ("conv", "dense")  # rows compared with a dense layer of the same sizes
Pads = tuple[tuple[int, int], tuple[int, int]]


@dataclass(frozen=True)
class OutputCheck:
    """The textbook output size (W - F + P_low + P_high) / S + 1 of a conv or pool row, per axis."""

    expected: tuple[int, int]
    actual: tuple[int, int]
    leftover: tuple[int, int]  # (W - F + P_low + P_high) mod S: border pixels no window reaches
    leftover_real: tuple[int, int]  # how many of those are image pixels rather than padding

    @property
    def status(self) -> str:
        if self.expected != self.actual:
            return "MISMATCH"
        return "not divisible" if any(self.leftover) else "ok"


def check_output_size(record: LayerRecord) -> OutputCheck | None:
    """Check a recorded conv or pool layer's output size against the formula; None for other kinds."""
    if record.kind not in WINDOWED_KINDS:
        return None
    kernel, stride, pads = record.info["kernel"], record.info["stride"], record.info["padding"]
    spans = [size - window + low + high
             for size, window, (low, high) in zip(record.input_shape[1:3], kernel, pads, strict=True)]
    leftover = _pair(span % stride for span in spans)
    return OutputCheck(
        expected=_pair(span // stride + 1 for span in spans),
        actual=_pair(record.output_shape[1:3]),
        leftover=leftover,
        leftover_real=_pair(max(0, rest - high) for rest, (_, high) in zip(leftover, pads, strict=True)),
    )


def _pair(values: Iterable[int]) -> tuple[int, int]:
    height, width = values
    return height, width


@dataclass(frozen=True)
class LayerRow:
    """One call of one leaf layer (shapes without the batch axis)."""

    name: str
    kind: str
    op: str | None
    kernel: tuple[int, int] | None
    stride: int | None
    padding: Pads | None
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    params: int
    macs: int
    receptive_field: ReceptiveField | None  # capped at the input size, as shown
    receptive_field_theoretical: ReceptiveField | None  # the formula's value, which can exceed the input
    dense_params: int | None  # in * out + out: a dense layer between the same input and output
    check: OutputCheck | None


@dataclass(frozen=True)
class ModelSummary:
    model: str
    options: Mapping[str, Any]
    dataset: str | None
    input_shape: tuple[int, int, int]
    num_classes: int | None
    output_shape: tuple[int, ...]
    rows: list[LayerRow]
    total_params: int  # count_params(model)
    params_in_rows: int  # each layer counted once, however often it is called
    params_outside_rows: dict[str, int]  # parameter path -> size, for parameters of no listed layer

    @property
    def total_macs(self) -> int:
        return sum(row.macs for row in self.rows)

    def notes(self) -> list[str]:
        """Everything a reader should not miss: formula mismatches, strides that don't fit,
        parameters no row accounts for."""
        notes = []
        for row in self.rows:
            check = row.check
            if check is None or check.status == "ok":
                continue
            if check.status == "MISMATCH":
                notes.append(f"{row.name}: output {_size(check.actual)} but (W - F + P_low + P_high) / S + 1 gives "
                             f"{_size(check.expected)}")
                continue
            lost = ("all padding" if not any(check.leftover_real)
                    else f"{_rows_and_columns(check.leftover_real)} of the image lost")
            notes.append(f"{row.name}: stride {row.stride} doesn't fit: W - F + P_low + P_high is not a multiple of "
                         f"it, so the last {_rows_and_columns(check.leftover)} of the padded input are never read "
                         f"({lost})")
        if self.params_outside_rows:
            listed = ", ".join(f"{path} ({size:,})" for path, size in self.params_outside_rows.items())
            notes.append(f"{sum(self.params_outside_rows.values()):,} parameters belong to no row: {listed}")
        if self.params_in_rows + sum(self.params_outside_rows.values()) != self.total_params:
            notes.append(f"rows count {self.params_in_rows:,} parameters but the model has {self.total_params:,}")
        return notes


def _rows_and_columns(counts: tuple[int, int]) -> str:
    parts = [f"{n} {word}{'s' if n > 1 else ''}" for n, word in zip(counts, ("row", "column"), strict=True) if n]
    return " and ".join(parts)


def validate_summary_config(cfg: DictConfig) -> None:
    """Raise a UserError naming the first invalid summary setting."""
    from cnnexp.data import validate_data_options

    validate_data_options(cfg.data)  # `data.classes` and the image geometry make the signature
    if cfg.format not in FORMATS:
        raise UserError(f"invalid format={cfg.format!r}: must be one of {', '.join(FORMATS)}")
    shape = OmegaConf.to_object(cfg.input_shape) if OmegaConf.is_config(cfg.input_shape) else cfg.input_shape
    if shape is not None and not (isinstance(shape, list) and len(shape) == 3 and all(map(is_positive_int, shape))):
        raise UserError(f"invalid input_shape={shape!r}: must be [H,W,C], three integers > 0 (e.g. [224,224,3])")
    if cfg.num_classes is not None and not is_positive_int(cfg.num_classes):
        raise UserError(f"invalid num_classes={cfg.num_classes!r}: must be an integer > 0")


def summary_from_config(cfg: DictConfig) -> ModelSummary:
    """The summary a composed `summary` config asks for; the dataset is consulted (never
    loaded) only for what `input_shape` and `num_classes` leave open."""
    validate_summary_config(cfg)
    input_shape = None if cfg.input_shape is None else tuple(cfg.input_shape)
    num_classes, dataset = cfg.num_classes, None
    if input_shape is None or num_classes is None:
        from cnnexp.data import dataset_signature

        dataset = cfg.data.name
        data_shape, data_classes = dataset_signature(cfg.data)
        input_shape = input_shape or data_shape
        num_classes = num_classes or data_classes
        if None in input_shape or num_classes is None:
            raise UserError(f"dataset {dataset!r} does not fix the image size or class count "
                            f"(images {input_shape}, {num_classes} classes): give input_shape=[H,W,C] num_classes=N")
    options = options_of(cfg.model)
    return summarize_model(cfg.model.name, options, input_shape, num_classes, dataset=dataset)


def summarize_model(name: str, options: Mapping[str, Any], input_shape: Sequence[int], num_classes: int,
                    *, dataset: str | None = None) -> ModelSummary:
    """Summarize registered model `name` built abstractly (no weights are ever allocated)."""
    model = nnx.eval_shape(lambda: create_model(name, options, input_shape=tuple(input_shape),
                                                num_classes=num_classes, rngs=nnx.Rngs(0)))
    return summarize_module(model, input_shape, model_name=name, options=options, dataset=dataset,
                            num_classes=num_classes)


def summarize_module(model: nnx.Module, input_shape: Sequence[int], *, model_name: str = "model",
                     options: Mapping[str, Any] | None = None, dataset: str | None = None,
                     num_classes: int | None = None) -> ModelSummary:
    """Summarize any module built from the recording layers, abstract or real (it is put in
    eval mode, so batch norm uses its running statistics as at test time)."""
    model.eval()
    records, paths, jaxpr, output_shape = _trace(model, tuple(input_shape))
    fields = layer_receptive_fields(jaxpr, 0, [r.output_shape for r in records])
    rows, calls = [], Counter()
    for record, field in zip(records, fields, strict=True):
        calls[id(record.module)] += 1
        # A layer outside the module tree (made during the call) or the root itself goes by its type.
        name = paths.get(id(record.module)) or f"<{type(record.module).__name__}>"
        if calls[id(record.module)] > 1:  # a layer used twice (shared weights) gets a row per call
            name = f"{name} (call {calls[id(record.module)]})"
        rows.append(_row(record, name, field, input_shape))
    covered = [paths[id(r.module)] for r in records if id(r.module) in paths]
    outside = {
        ".".join(map(str, path)): math.prod(value.shape)
        for path, value in nnx.to_flat_state(nnx.state(model, nnx.Param))
        if not any(_under(path, prefix) for prefix in covered)
    }
    return ModelSummary(
        model=model_name, options=dict(options or {}), dataset=dataset, input_shape=_triple(input_shape),
        num_classes=num_classes, output_shape=output_shape[1:], rows=rows, total_params=count_params(model),
        params_in_rows=sum({id(r.module): r.params for r in records}.values()), params_outside_rows=outside,
    )


def _triple(shape: Sequence[int]) -> tuple[int, int, int]:
    height, width, channels = shape
    return height, width, channels


def _under(path: tuple, prefix: str) -> bool:
    dotted = ".".join(map(str, path))
    return prefix == "" or dotted == prefix or dotted.startswith(prefix + ".")


def _trace(model: nnx.Module, input_shape: tuple[int, ...]
           ) -> tuple[list[LayerRecord], dict[int, str], ClosedJaxpr, tuple[int, ...]]:
    """Trace the forward pass on one image while the layers record themselves; the module
    paths are taken from the copy being traced, since records point at its modules."""
    graphdef, state = nnx.split(model)
    paths: dict[int, str] = {}

    def forward(image, state):
        module = nnx.merge(graphdef, state)
        paths.update(module_paths(module))
        return module(image)

    image = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
    with recording() as records:
        jaxpr, output = jax.make_jaxpr(forward, return_shape=True)(image, state)
    if not isinstance(output, jax.ShapeDtypeStruct):
        raise UserError(f"the model returns {type(output).__name__}, not one array of logits")
    return records, paths, jaxpr, tuple(output.shape)


def _row(record: LayerRecord, name: str, field: ReceptiveField | None, input_shape: Sequence[int]) -> LayerRow:
    weighted = record.kind in WEIGHTED_KINDS
    fan_in, fan_out = math.prod(record.input_shape[1:]), math.prod(record.output_shape[1:])
    capped = field if field is None or field == GLOBAL else _pair(map(min, field, input_shape[:2]))
    return LayerRow(
        name=name, kind=record.kind, op=record.info.get("op"), kernel=record.info.get("kernel"),
        stride=record.info.get("stride"), padding=record.info.get("padding"),
        input_shape=record.input_shape[1:], output_shape=record.output_shape[1:], params=record.params,
        macs=record.macs, receptive_field=capped, receptive_field_theoretical=field,
        dense_params=fan_in * fan_out + fan_out if weighted else None, check=check_output_size(record),
    )


# Rendering. Text, markdown and csv share the cells; json keeps numbers as numbers.

_UNWRAPPED = 10_000  # columns for text that is not going to a terminal
_HEADERS = ("layer", "kind", "kernel/stride/pad", "output", "params", "MACs", "receptive field",
            "as dense", "check")


def _size(values: Sequence[int]) -> str:
    return "x".join(map(str, values))


def _kind(row: LayerRow) -> str:
    names = {"pool": f"{row.op} pool", "global_pool": f"global {row.op} pool",
             "adaptive_pool": f"adaptive {row.op} pool", "norm": f"{row.op} norm" if row.op else "norm"}
    return names.get(row.kind, row.kind)


def _padding(pads: Pads) -> str:
    """'1' for the same padding all round, 'low,high' when both axes agree, else 'H low,high W low,high'."""
    (top, bottom), (left, right) = pads
    if top == bottom == left == right:
        return str(top)
    if (top, bottom) == (left, right):
        return f"{top},{bottom}"
    return f"H {top},{bottom} W {left},{right}"


def _window(row: LayerRow) -> str:
    if row.kernel is None:
        return "-"
    return f"{_size(row.kernel)}/{row.stride}/{_padding(row.padding)}"


def _field(field: ReceptiveField | None) -> str:
    if field is None:
        return "-"
    return field if field == GLOBAL else _size(field)


def _cells(row: LayerRow, number=lambda n: f"{n:,}") -> list[str]:
    return [
        row.name, _kind(row), _window(row), _size(row.output_shape), number(row.params), number(row.macs),
        _field(row.receptive_field), "-" if row.dense_params is None else number(row.dense_params),
        "-" if row.check is None else row.check.status,
    ]


def _total_cells(summary: ModelSummary, number=lambda n: f"{n:,}") -> list[str]:
    return ["total", "", "", _size(summary.output_shape), number(summary.total_params), number(summary.total_macs),
            "", "", ""]


def _title(summary: ModelSummary) -> str:
    source = f"{summary.dataset}: " if summary.dataset else ""
    classes = "" if summary.num_classes is None else f", {summary.num_classes} classes"
    return f"{summary.model} on {source}{_size(summary.input_shape)}{classes}"


def _legend(summary: ModelSummary) -> list[str]:
    return [
        f"{summary.total_params:,} parameters, {summary.total_macs:,} multiply-accumulates (MACs) per image.",
        "kernel/stride/pad: padding in pixels (low,high when uneven). MACs: of convolutions and dense layers. "
        "receptive field: the input pixels one output unit depends on (padding counted as in the textbook "
        "formula, shown at most the input size); global after flatten or global pooling. "
        "as dense: the parameters of a dense layer with the same input and output sizes. "
        "check: output size = (W - F + P_low + P_high) / S + 1.",
    ]


def render(summary: ModelSummary, fmt: str) -> str:
    """The summary as markdown, csv or json text (`show` prints text as a rich table)."""
    if fmt == "json":
        return json.dumps(_as_json(summary), indent=2)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["layer", "kind", "op", "kernel", "stride", "padding", "input", "output", "params", "macs",
                         "receptive_field", "dense_equivalent_params", "check"])
        for row in summary.rows:
            writer.writerow([
                row.name, row.kind, row.op or "", "" if row.kernel is None else _size(row.kernel), row.stride or "",
                "" if row.padding is None else ",".join(str(p) for pad in row.padding for p in pad),
                _size(row.input_shape), _size(row.output_shape), row.params, row.macs, _field(row.receptive_field),
                "" if row.dense_params is None else row.dense_params, "" if row.check is None else row.check.status,
            ])
        writer.writerow(["total", "", "", "", "", "", _size(summary.input_shape), _size(summary.output_shape),
                         summary.total_params, summary.total_macs, "", "", ""])
        return out.getvalue().rstrip("\n")
    if fmt == "markdown":
        lines = [f"**{_title(summary)}**", "", "| " + " | ".join(_HEADERS) + " |",
                 "|" + "|".join("---:" if h in ("params", "MACs", "as dense") else "---" for h in _HEADERS) + "|"]
        lines += ["| " + " | ".join(_cells(row)) + " |" for row in summary.rows]
        lines += ["| " + " | ".join(f"**{c}**" if c else "" for c in _total_cells(summary)) + " |"]
        for paragraph in _legend(summary):
            lines += ["", paragraph]
        notes = summary.notes()
        return "\n".join(lines + ([""] if notes else []) + [f"- {note}" for note in notes])
    raise ValueError(f"render() makes markdown, csv or json, not {fmt!r}")


def _as_json(summary: ModelSummary) -> dict[str, Any]:
    def check(c: OutputCheck | None) -> dict[str, Any] | None:
        return None if c is None else {"status": c.status, "expected_output": c.expected,
                                       "leftover": c.leftover, "leftover_image_pixels": c.leftover_real}

    return {
        "model": summary.model, "options": dict(summary.options), "dataset": summary.dataset,
        "input_shape": summary.input_shape, "num_classes": summary.num_classes,
        "output_shape": summary.output_shape,
        "layers": [{
            "name": r.name, "kind": r.kind, "op": r.op, "kernel": r.kernel, "stride": r.stride, "padding": r.padding,
            "input_shape": r.input_shape, "output_shape": r.output_shape, "params": r.params, "macs": r.macs,
            "receptive_field": r.receptive_field, "receptive_field_theoretical": r.receptive_field_theoretical,
            "dense_equivalent_params": r.dense_params, "check": check(r.check),
        } for r in summary.rows],
        "total_params": summary.total_params, "params_in_layers": summary.params_in_rows,
        "params_outside_layers": summary.params_outside_rows, "total_macs": summary.total_macs,
        "notes": summary.notes(),
    }


def show(summary: ModelSummary, fmt: str) -> None:
    """Print the summary in format `fmt` to stdout."""
    if fmt != "text":
        print(render(summary, fmt))
        return
    table = Table(title=f"cnnexp summary: {_title(summary)}", title_justify="left")
    for header in _HEADERS:
        table.add_column(header, justify="right" if header in ("params", "MACs", "as dense") else "left",
                         no_wrap=header == "layer")
    for row in summary.rows:
        cells = _cells(row)
        style = {"MISMATCH": "bold red", "not divisible": "yellow"}.get(cells[-1])
        table.add_row(*cells, style=style)
    table.add_section()
    table.add_row(*_total_cells(summary), style="bold")
    # Piped output is not squeezed into 80 columns: files and pagers get whole rows.
    out = console if console.is_terminal else Console(width=_UNWRAPPED)
    out.print(table)
    for line in _legend(summary) + [f"- {note}" for note in summary.notes()]:
        out.print(line, highlight=False, markup=False)
