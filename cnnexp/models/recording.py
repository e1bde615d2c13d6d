"""Layer-by-layer records of a forward pass, for `cnnexp summary` and `cnnexp visualize`.

Leaf layers (conv, pool, dense, norm) call `record` after they compute. Outside a
`recording()` block that is a no-op, so training pays nothing. Inside one, each leaf layer
also runs under a named scope `cnnexp_layer_<index>`, so the summary can find the layer's
operations in the traced jaxpr (that is how receptive fields are followed through
branches and skip connections).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import jax
from flax import nnx

SCOPE_PREFIX = "cnnexp_layer_"


@dataclass
class LayerRecord:
    """What one leaf layer did in one forward pass."""

    module: Any  # the nnx.Module that ran; its path in the model names the row
    kind: str  # conv, pool, dense, norm, global_pool, adaptive_pool
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    params: int
    macs: int
    info: dict[str, Any] = field(default_factory=dict)  # kernel, stride, padding, op, ...
    scope: str = ""
    output: Any = None  # the layer's output (a tracer when recorded under jit): what visualize looks at


_RECORDS: ContextVar[list[LayerRecord] | None] = ContextVar("cnnexp_layer_records", default=None)


@contextlib.contextmanager
def recording() -> Iterator[list[LayerRecord]]:
    """Collect a LayerRecord for every leaf layer called inside the block."""
    records: list[LayerRecord] = []
    token = _RECORDS.set(records)
    try:
        yield records
    finally:
        _RECORDS.reset(token)


@contextlib.contextmanager
def scope() -> Iterator[None]:
    """Name the operations of the leaf layer about to compute (only while recording)."""
    records = _RECORDS.get()
    if records is None:
        yield
        return
    with jax.named_scope(f"{SCOPE_PREFIX}{len(records)}"):
        yield


def record(module: Any, kind: str, x: jax.Array, y: jax.Array, *, params: int = 0, macs: int = 0,
           **info: Any) -> None:
    """Note that `module` turned `x` into `y` (only while recording)."""
    records = _RECORDS.get()
    if records is None:
        return
    records.append(LayerRecord(
        module=module, kind=kind, input_shape=tuple(x.shape), output_shape=tuple(y.shape),
        params=params, macs=macs, info=info, scope=f"{SCOPE_PREFIX}{len(records)}", output=y,
    ))


def module_paths(model: Any) -> dict[int, str]:
    """The dotted attribute path of every submodule of `model` (`stages.0.1.conv`), by object id:
    how a record's `module` gets its name. Take it from the very copy that ran."""
    return {id(module): ".".join(map(str, path)) for path, module in nnx.iter_modules(model)}
