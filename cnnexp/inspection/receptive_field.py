"""Receptive fields read off a traced forward pass (jaxpr), exact through branches and skips.

Every variable of the jaxpr that depends on the input image carries, for each spatial axis of
the image (H and W), the span of input pixel coordinates each of its positions along that axis
depends on (arrays `lo`, `hi`), and the `jump` between neighbouring positions. The input
starts with position i spanning pixel i, jump 1. Padding counts as the textbook formula
counts it: a padded position spans the coordinates just outside the image (extrapolated by the
jump), so a 3x3 convolution's border units span 3 pixels like the others. Each operation maps
spans to its outputs:

- windows (convolution and pooling, XLA's or cnnexp's oneDNN kernels; `pad`, `slice`,
  `concatenate` along H or W) pick, for each output position, the input positions it reads, so
  strided, padded, dilated, im2col and hand-written pooling layers all come out as the formula
  rf += (k - 1) * dilation * jump says;
- operations on other axes (elementwise, channel concatenation, stacking, products over
  channels) take the union of their inputs' spans: an Inception concatenation sees what its
  widest branch sees, a ResNet sum the larger of its two paths;
- reducing or flattening a spatial axis collapses it to one span over all its positions; a
  tensor whose H and W are both collapsed (after flatten or global pooling) sees the image
  globally. Tensors are NHWC, so a collapsed axis reappears as axis 1 (H) or 2 (W) when an
  operation makes a 4-D tensor with size 1 there (mean with keepdims, adaptive pooling).

The receptive field of a layer is the widest span of any of its positions; it can exceed the
image (ResNet-18's last layers span 435 pixels of a 224 image), so callers cap what they show.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace

import numpy as np
from jax.extend.core import ClosedJaxpr, Jaxpr, JaxprEqn, Literal

from cnnexp.kernels import library
from cnnexp.models.recording import SCOPE_PREFIX

_EMPTY_LO = np.iinfo(np.int64).max // 4  # the span of a position that depends on no pixel
_EMPTY_HI = np.iinfo(np.int64).min // 4
GLOBAL = "global"
SPATIAL_DIMS = (1, 2)  # NHWC


@dataclass(frozen=True)
class Axis:
    """One image axis inside a variable: on `dim` with one span per position, or collapsed
    (`dim` None) to a single span; `jump`: input pixels between neighbouring positions."""

    dim: int | None
    lo: np.ndarray
    hi: np.ndarray
    jump: int

    def collapsed(self) -> Axis:
        return Axis(None, self.lo.min(keepdims=True), self.hi.max(keepdims=True), self.jump)

    def moved(self, dim: int | None) -> Axis:
        return self.collapsed() if dim is None else replace(self, dim=dim)

    def spans_at(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The spans of positions `index`, which may lie in padding outside 0..len - 1."""
        inside = np.clip(index, 0, len(self.lo) - 1)
        shift = (index - inside) * self.jump
        return self.lo[inside] + shift, self.hi[inside] + shift

    def size(self) -> int:
        """The widest span of any position (0 if none depends on the image)."""
        seen = self.lo <= self.hi
        return int((self.hi[seen] - self.lo[seen]).max() + 1) if seen.any() else 0


Field = tuple[Axis, Axis]  # (H, W)
ReceptiveField = tuple[int, int] | str  # (height, width) or GLOBAL


def _field(axes: Iterable[Axis]) -> Field:
    height, width = axes
    return height, width


def receptive_field(field: Field) -> ReceptiveField:
    """What a row shows: the span sizes, or GLOBAL once both image axes are collapsed."""
    if all(axis.dim is None for axis in field):
        return GLOBAL
    return field[0].size(), field[1].size()


def _input_field(shape: Sequence[int]) -> Field:
    return _field(Axis(d, np.arange(shape[d]), np.arange(shape[d]), 1) for d in SPATIAL_DIMS)


def _remap(field: Field, dims: Callable[[int], int | None]) -> Field:
    """Move each positioned axis to `dims(its dim)`, collapsing it where that is None."""
    return _field(a if a.dim is None else a.moved(dims(a.dim)) for a in field)


def _merge(fields: Sequence[Field]) -> Field:
    """The union of fields already in the output's frame (positioned axes must agree on dim)."""
    merged = []
    for k in range(2):
        axes = [f[k] for f in fields]
        dims = {a.dim for a in axes if a.dim is not None}
        if len(dims) > 1:
            axes, dims = [a.collapsed() for a in axes], set()
        lo = np.minimum.reduce([np.broadcast_to(a.lo, max(len(b.lo) for b in axes)) for a in axes])
        hi = np.maximum.reduce([np.broadcast_to(a.hi, max(len(b.hi) for b in axes)) for a in axes])
        merged.append(Axis(dims.pop() if dims else None, lo, hi, max((a.jump for a in axes), key=abs)))
    return _field(merged)


def _attach_collapsed(field: Field, shape: Sequence[int]) -> Field:
    """Give a collapsed axis back its NHWC place where a 4-D output has size 1 there."""
    if len(shape) != 4:
        return field
    taken = {a.dim for a in field}
    return _field(
        replace(a, dim=d) if a.dim is None and shape[d] == 1 and d not in taken else a
        for a, d in zip(field, SPATIAL_DIMS, strict=True)
    )


def _windowed(axis: Axis, out_size: int, window: int, stride: int, pad_low: int, dilation: int) -> Axis:
    """Output position i reads input positions i*stride - pad_low + t*dilation, t < window."""
    index = np.arange(out_size)[:, None] * stride - pad_low + np.arange(window)[None, :] * dilation
    lo, hi = axis.spans_at(index)
    return Axis(axis.dim, lo.min(axis=1), hi.max(axis=1), axis.jump * stride)


def _shape(var) -> tuple[int, ...]:
    return tuple(var.aval.shape)


# Rules: (eqn, fields of its inputs, None where an input does not depend on the image) -> the
# fields of its outputs in their own frames.
Rule = Callable[[JaxprEqn, list[Field | None]], list[Field | None]]


def _elementwise(eqn: JaxprEqn, fields: list[Field | None]) -> list[Field | None]:
    """Same-shape inputs keep their positions; anything else is seen as a whole."""
    outs = []
    for out in eqn.outvars:
        parts = [f if _shape(v) == _shape(out) else _remap(f, lambda d: None)
                 for f, v in zip(fields, eqn.invars, strict=True) if f is not None]
        outs.append(_merge(parts))
    return outs


def _collapse_all(eqn: JaxprEqn, fields: list[Field | None]) -> list[Field | None]:
    """Unknown structure: every output sees all the image its inputs see."""
    whole = _merge([_remap(f, lambda d: None) for f in fields if f is not None])
    return [whole] * len(eqn.outvars)


def _conv(eqn: JaxprEqn, fields: list[Field | None]) -> list[Field | None]:
    lhs, rhs = fields[:2]
    p = eqn.params
    # An image-dependent kernel is no fixed window; transposed (input-dilated) ones are not followed.
    if rhs is not None or lhs is None or any(d != 1 for d in p["lhs_dilation"]):
        return _collapse_all(eqn, fields)
    lhs_spec, rhs_spec, out_spec = p["dimension_numbers"]
    kernel_shape, out_shape = _shape(eqn.invars[1]), _shape(eqn.outvars[0])
    axes = []
    for axis in lhs:
        if axis.dim is None or axis.dim not in lhs_spec[2:]:
            axes.append(axis.moved(None))
            continue
        i = lhs_spec[2:].index(axis.dim)
        out_dim = out_spec[2 + i]
        moved = _windowed(axis, out_shape[out_dim], kernel_shape[rhs_spec[2 + i]], p["window_strides"][i],
                          p["padding"][i][0], p["rhs_dilation"][i])
        axes.append(moved.moved(out_dim))
    return [_field(axes)]


def _reduce_window(eqn: JaxprEqn, fields: list[Field | None]) -> list[Field | None]:
    p = eqn.params
    if any(d != 1 for d in p["base_dilation"]):
        return _collapse_all(eqn, fields)
    outs = []
    for out in eqn.outvars:
        parts = []
        for field in fields:
            if field is None:
                continue
            parts.append(_field(
                a if a.dim is None else _windowed(
                    a, _shape(out)[a.dim], p["window_dimensions"][a.dim], p["window_strides"][a.dim],
                    p["padding"][a.dim][0], p["window_dilation"][a.dim])
                for a in field
            ))
        outs.append(_merge(parts))
    return outs


def _kernel_call(eqn: JaxprEqn, fields: list[Field | None]) -> list[Field | None]:
    """A call into cnnexp's oneDNN kernels: NHWC convolution (window: the kernel's HW) and pooling
    (window: an attribute) forward passes are windows like XLA's; other calls are not followed."""
    attributes = {name: np.asarray(getattr(value, "val", value)) for name, value in eqn.params["attributes"]}
    target, image = eqn.params["target_name"], fields[0]
    if target == library.CONV_FORWARD and all(f is None for f in fields[1:]):
        window, dilation = _shape(eqn.invars[1])[:2], attributes["dilation"]
    elif target == library.POOL_FORWARD:
        window, dilation = attributes["window"], (1, 1)
    else:
        return _collapse_all(eqn, fields)
    if image is None:
        return _collapse_all(eqn, fields)
    out_shape = _shape(eqn.outvars[0])
    first = _field(
        a if a.dim is None else _windowed(a, out_shape[a.dim], int(window[a.dim - 1]),
                                          int(attributes["stride"][a.dim - 1]),
                                          int(attributes["padding_low"][a.dim - 1]), int(dilation[a.dim - 1]))
        for a in image
    )
    return [first, *_collapse_all(eqn, fields)[1:]]  # a training pool's workspace: not an image


def _pad(eqn: JaxprEqn, fields: list[Field | None]) -> list[Field | None]:
    config = eqn.params["padding_config"]
    field = fields[0]
    if field is None or any(interior for _, _, interior in config):  # dilating pads are not followed
        return _collapse_all(eqn, fields)
    size = _shape(eqn.outvars[0])
    axes = []
    for a in field:
        if a.dim is None:
            axes.append(a)
            continue
        lo, hi = a.spans_at(np.arange(size[a.dim]) - int(config[a.dim][0]))
        axes.append(Axis(a.dim, lo, hi, a.jump))
    return [_merge([_field(axes)] + ([] if fields[1] is None else [_remap(fields[1], lambda d: None)]))]


def _slice(eqn: JaxprEqn, fields: list[Field | None]) -> list[Field | None]:
    p = eqn.params
    strides = p["strides"] or (1,) * len(p["start_indices"])
    return [_field(
        a if a.dim is None else Axis(a.dim, *(v[p["start_indices"][a.dim]:p["limit_indices"][a.dim]:strides[a.dim]]
                                              for v in (a.lo, a.hi)), a.jump * strides[a.dim])
        for a in fields[0]
    )]


def _concatenate(eqn: JaxprEqn, fields: list[Field | None]) -> list[Field | None]:
    """Along H or W the outputs' positions come from one input each; elsewhere, a union."""
    dim = eqn.params["dimension"]
    axes = []
    for k in range(2):
        if not any(f is not None and f[k].dim == dim for f in fields):
            axes.append(_merge([f for f in fields if f is not None])[k])
            continue
        lo, hi, jumps = [], [], []
        for f, v in zip(fields, eqn.invars, strict=True):
            n = _shape(v)[dim]
            a = None if f is None else f[k]
            lo.append(np.full(n, _EMPTY_LO) if a is None else np.broadcast_to(a.lo if a.dim == dim else a.lo.min(), n))
            hi.append(np.full(n, _EMPTY_HI) if a is None else np.broadcast_to(a.hi if a.dim == dim else a.hi.max(), n))
            jumps += [] if a is None else [a.jump]
        lo, hi = np.concatenate(lo), np.concatenate(hi)
        # Pieces side by side (adaptive pooling's windows): the jump is what separates them.
        jump = int(lo[1] - lo[0]) if len(lo) > 1 and hi[0] >= lo[0] and hi[1] >= lo[1] else max(jumps, key=abs)
        axes.append(Axis(dim, lo, hi, jump))
    return [_field(axes)]


def _split(eqn: JaxprEqn, fields: list[Field | None]) -> list[Field | None]:
    axis_dim, bounds = eqn.params["axis"], np.cumsum([0, *eqn.params["sizes"]])
    return [_field(
        Axis(a.dim, a.lo[start:stop], a.hi[start:stop], a.jump) if a.dim == axis_dim else a for a in fields[0]
    ) for start, stop in zip(bounds[:-1], bounds[1:], strict=True)]


def _stack(eqn: JaxprEqn, fields: list[Field | None]) -> list[Field | None]:
    new = eqn.params["axis"]
    return [_merge([_remap(f, lambda d: d + (d >= new)) for f in fields if f is not None])]


def _reduce(eqn: JaxprEqn, fields: list[Field | None]) -> list[Field | None]:
    axes = set(eqn.params["axes"])
    return [_remap(fields[0], lambda d: None if d in axes else d - sum(a < d for a in axes))] * len(eqn.outvars)


def _squeeze(eqn: JaxprEqn, fields: list[Field | None]) -> list[Field | None]:
    gone = set(eqn.params["dimensions"])
    return [_remap(fields[0], lambda d: None if d in gone else d - sum(g < d for g in gone))]


def _transpose(eqn: JaxprEqn, fields: list[Field | None]) -> list[Field | None]:
    permutation = list(eqn.params["permutation"])
    return [_remap(fields[0], permutation.index)]


def _rev(eqn: JaxprEqn, fields: list[Field | None]) -> list[Field | None]:
    flipped = set(eqn.params["dimensions"])
    return [_field(Axis(a.dim, a.lo[::-1], a.hi[::-1], -a.jump) if a.dim in flipped else a for a in fields[0])]


def _broadcast_in_dim(eqn: JaxprEqn, fields: list[Field | None]) -> list[Field | None]:
    if fields[0] is None:
        return _collapse_all(eqn, fields)
    targets, size = eqn.params["broadcast_dimensions"], _shape(eqn.outvars[0])
    return [_field(
        a if a.dim is None else Axis(targets[a.dim], *(np.broadcast_to(v, size[targets[a.dim]]) for v in (a.lo, a.hi)),
                                     a.jump)
        for a in fields[0]
    )]


def _reshape(eqn: JaxprEqn, fields: list[Field | None]) -> list[Field | None]:
    """An axis survives a reshape when it is alone in its group of dimensions (size-1 ones
    aside), like H and W under maxout's (N, H, W, C) -> (N, H, W, C/k, k); flattening collapses it."""
    before, after = _shape(eqn.invars[0]), _shape(eqn.outvars[0])
    survivors = _reshape_survivors(before, after)
    return [_remap(fields[0], survivors.get)]


def _reshape_survivors(before: Sequence[int], after: Sequence[int]) -> dict[int, int]:
    survivors, i, j = {}, 0, 0
    while i < len(before) and j < len(after):
        group_in, group_out = [i], [j]
        size_in, size_out = before[i], after[j]
        i, j = i + 1, j + 1
        while size_in != size_out:
            if size_in < size_out:
                group_in.append(i)
                size_in *= before[i]
                i += 1
            else:
                group_out.append(j)
                size_out *= after[j]
                j += 1
        big_in = [d for d in group_in if before[d] != 1]
        big_out = [d for d in group_out if after[d] != 1]
        if len(big_in) == 1 and len(big_out) == 1:
            survivors[big_in[0]] = big_out[0]
        elif len(group_in) == 1 and len(group_out) == 1:
            survivors[group_in[0]] = group_out[0]
    return survivors


def _dot_general(eqn: JaxprEqn, fields: list[Field | None]) -> list[Field | None]:
    (contract_l, contract_r), (batch_l, batch_r) = eqn.params["dimension_numbers"]
    ranks = [len(_shape(v)) for v in eqn.invars]
    free = [[d for d in range(rank) if d not in c and d not in b]
            for rank, c, b in zip(ranks, (contract_l, contract_r), (batch_l, batch_r), strict=True)]
    parts = []
    for side, field in enumerate(fields):
        if field is None:
            continue
        batch = (batch_l, batch_r)[side]
        offset = len(batch) + (len(free[0]) if side else 0)

        def place(d: int, batch=batch, offset=offset, side=side) -> int | None:
            if d in batch:
                return list(batch).index(d)
            return offset + free[side].index(d) if d in free[side] else None

        parts.append(_remap(field, place))
    return [_merge(parts)]


_RULES: dict[str, Rule] = {
    "conv_general_dilated": _conv,
    "ffi_call": _kernel_call,
    "reduce_window_max": _reduce_window,
    "reduce_window_min": _reduce_window,
    "reduce_window_sum": _reduce_window,
    "reduce_window": _reduce_window,
    "pad": _pad,
    "slice": _slice,
    "concatenate": _concatenate,
    "split": _split,
    "stack": _stack,
    "squeeze": _squeeze,
    "transpose": _transpose,
    "rev": _rev,
    "broadcast_in_dim": _broadcast_in_dim,
    "reshape": _reshape,
    "dot_general": _dot_general,
    **{name: _reduce for name in ("reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "reduce_and",
                                   "reduce_or", "reduce_xor", "argmax", "argmin")},
}
# Calls whose body runs once on the call's own inputs: followed inside (scan, while and cond
# bodies are not: they fall back to the default rule).
_CALLS = ("jit", "closed_call", "remat2", "custom_jvp_call", "custom_vjp_call")
_SUB_JAXPR_PARAMS = ("jaxpr", "call_jaxpr")
_SCOPE = re.compile(rf"(?<![\w]){re.escape(SCOPE_PREFIX)}(\d+)(?!\d)")


def _sub_jaxpr(eqn: JaxprEqn) -> Jaxpr | None:
    """The body of a call whose inputs and outputs are the equation's own."""
    if eqn.primitive.name not in _CALLS:
        return None
    for key in _SUB_JAXPR_PARAMS:
        body = eqn.params.get(key)
        body = body.jaxpr if isinstance(body, ClosedJaxpr) else body
        if isinstance(body, Jaxpr) and len(body.invars) == len(eqn.invars) and len(body.outvars) == len(eqn.outvars):
            return body
    return None


def _default_rule(eqn: JaxprEqn, fields: list[Field | None]) -> list[Field | None]:
    same_shape = all(_shape(v) == _shape(out) for f, v in zip(fields, eqn.invars, strict=True) if f is not None
                     for out in eqn.outvars)
    return (_elementwise if same_shape else _collapse_all)(eqn, fields)


Visit = Callable[[str, JaxprEqn, list[Field | None]], None]


def _walk(jaxpr: Jaxpr, inputs: list[Field | None], scope: str, visit: Visit) -> list[Field | None]:
    env: dict = {}
    for var, field in zip(jaxpr.invars, inputs, strict=True):
        env[var] = field
    for eqn in jaxpr.eqns:
        fields = [None if isinstance(v, Literal) else env.get(v) for v in eqn.invars]
        name = "/".join(s for s in (scope, str(eqn.source_info.name_stack)) if s)
        if all(f is None for f in fields):
            outs: list[Field | None] = [None] * len(eqn.outvars)
        elif (body := _sub_jaxpr(eqn)) is not None:
            outs = _walk(body, fields, name, visit)
        else:
            outs = [None if f is None else _attach_collapsed(f, _shape(v))
                    for f, v in zip(_RULES.get(eqn.primitive.name, _default_rule)(eqn, fields), eqn.outvars,
                                    strict=True)]
        for var, field in zip(eqn.outvars, outs, strict=True):
            env[var] = field
        visit(name, eqn, outs)
    return [None if isinstance(v, Literal) else env.get(v) for v in jaxpr.outvars]


def layer_receptive_fields(jaxpr: ClosedJaxpr, image_arg: int, output_shapes: Sequence[Sequence[int]]
                           ) -> list[ReceptiveField | None]:
    """The receptive field of each recorded layer in a forward pass traced while recording.

    `image_arg`: which flat input of `jaxpr` is the NHWC image; `output_shapes[i]`: layer i's
    output shape. A layer's field is that of the output of the last equation named with its
    scope (`cnnexp_layer_<i>`) whose shape is the layer's output shape; None if none is."""
    found: list[ReceptiveField | None] = [None] * len(output_shapes)

    def visit(name: str, eqn: JaxprEqn, outs: list[Field | None]) -> None:
        for index in map(int, _SCOPE.findall(name)):
            if index >= len(found):
                continue
            for var, field in zip(eqn.outvars, outs, strict=True):
                if field is not None and _shape(var) == tuple(output_shapes[index]):
                    found[index] = receptive_field(field)

    inputs: list[Field | None] = [None] * len(jaxpr.jaxpr.invars)
    inputs[image_arg] = _input_field(_shape(jaxpr.jaxpr.invars[image_arg]))
    _walk(jaxpr.jaxpr, inputs, "", visit)
    return found
