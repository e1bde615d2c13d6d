"""Reading a model's inner layers: which layers it has, and a forward pass that also returns the
outputs of chosen ones (the layers record themselves, see `cnnexp.models.recording`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
from flax import nnx

from cnnexp.errors import UserError
from cnnexp.models.recording import module_paths, recording

# Layers whose outputs have units worth looking at: conv channels and dense neurons.
UNIT_KINDS = ("conv", "dense")


@dataclass(frozen=True)
class Layer:
    index: int  # position among the recorded layers of one forward pass
    name: str  # the module's path in the model (`conv1`, `stages.0.1.conv`)
    kind: str  # conv, pool, dense, norm, ...
    output_shape: tuple[int, ...]  # without the batch axis

    @property
    def units(self) -> int:
        return self.output_shape[-1]

    @property
    def label(self) -> str:
        return f"{self.name} ({self.kind})"


def list_layers(model: nnx.Module, input_shape: Sequence[int]) -> list[Layer]:
    """Every recorded layer of `model` on one image of `input_shape`, in call order (no compute)."""
    graphdef, state = nnx.split(model)
    found: list[Layer] = []

    def forward(image, state):
        module = nnx.merge(graphdef, state)
        paths = module_paths(module)
        with recording() as records:
            logits = module(image)
        found.extend(Layer(i, paths.get(id(r.module), f"layer{i}"), r.kind, r.output_shape[1:])
                     for i, r in enumerate(records))
        return logits

    jax.eval_shape(forward, jax.ShapeDtypeStruct((1, *input_shape), jnp.float32), state)
    return found


def conv_stages(layers: list[Layer]) -> list[Layer]:
    """The last conv layer at each spatial resolution: one per stage of the network, where the
    features of that scale are most developed (and the first conv, whose filters are shown as is).
    Last in call order, so a block whose branches go back and forth between two resolutions
    (Inception-ResNet's reductions) still gives one layer per resolution."""
    convs = [layer for layer in layers if layer.kind == "conv"]
    last = {layer.output_shape[:2]: layer for layer in convs}
    return sorted({id(layer): layer for layer in [*convs[:1], *last.values()]}.values(), key=lambda layer: layer.index)


def hidden_dense(layers: list[Layer]) -> list[Layer]:
    """Dense layers before the class output (whose units are the logits)."""
    return [layer for layer in layers if layer.kind == "dense"][:-1]


def select_layers(layers: list[Layer], wanted: Sequence[str | int]) -> list[Layer]:
    """Layers by name or index, with a clear error listing the choices."""
    by_name = {layer.name: layer for layer in layers}
    chosen = []
    for key in wanted:
        if isinstance(key, int) and 0 <= key < len(layers):
            chosen.append(layers[key])
        elif str(key) in by_name:
            chosen.append(by_name[str(key)])
        else:
            choices = ", ".join(f"{layer.index}:{layer.name}" for layer in layers if layer.kind in UNIT_KINDS)
            raise UserError(f"no layer {key!r} in this model; conv and dense layers (index:name): {choices}")
    return chosen


def module_at(model: nnx.Module, name: str) -> nnx.Module:
    """The submodule at a layer's dotted path."""
    return {".".join(map(str, path)): module for path, module in nnx.iter_modules(model)}[name]


class Probe:
    """The model as a pure function `probe(weights, images) -> (logits, [output of each layer])`,
    to jit, vmap or differentiate; the weights are an argument, not constants baked into the jit."""

    def __init__(self, model: nnx.Module, layers: Sequence[Layer]):
        self.graphdef, self.weights = nnx.split(model)
        self.layers = list(layers)

    def __call__(self, weights: nnx.State, images: jax.Array) -> tuple[jax.Array, list[jax.Array]]:
        with recording() as records:
            logits = nnx.merge(self.graphdef, weights)(images)
        return logits, [records[layer.index].output for layer in self.layers]
