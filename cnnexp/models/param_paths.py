"""Parameters named by dotted path (`stages.0.1.conv.kernel`), and the patterns that pick them.

Fine-tuning options (`init_from_reinit`, `optim.groups`) name parameters with shell-style
patterns over these paths (`head.*`, `stages.0.*`). The pattern `@output` stands for the layer
that produces the class logits, whatever a model calls it (`head`, `classifier.out`), so one
preset can say "a new head" for every model.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from fnmatch import fnmatchcase
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from cnnexp.models.recording import module_paths, recording

OUTPUT_ALIAS = "@output"


def dotted_path(key_path: Sequence[Any]) -> str:
    """A pytree key path of a model state as a dotted name, without the Variable's own `.value`."""
    keys = [str(getattr(key, "key", getattr(key, "idx", getattr(key, "name", key)))) for key in key_path]
    return ".".join(keys[:-1] if keys and keys[-1] == "value" else keys)


def output_layer(model: nnx.Module, input_shape: tuple[int, int, int]) -> str:
    """The path of the layer whose output is the logits: the last leaf layer with parameters in
    an (abstract, nothing computed) forward pass of one image."""
    found: list[str] = []

    def forward(copy: nnx.Module) -> jax.Array:
        with recording() as records:
            logits = copy(jnp.zeros((1, *input_shape)))
        layer = [record for record in records if record.params > 0][-1]
        found.append(module_paths(copy)[id(layer.module)])  # names come from the copy that ran
        return logits

    nnx.eval_shape(forward, model)
    return found[0]


def matches(path: str, patterns: Iterable[str], output: str) -> bool:
    """Whether `path` matches any pattern (`@output`: the output layer's parameters)."""
    expanded = [f"{output}.*" if pattern == OUTPUT_ALIAS else pattern for pattern in patterns]
    return any(fnmatchcase(path, pattern) for pattern in expanded)


def leaf_paths(tree: Any) -> list[str]:
    """The dotted paths of a model state's leaves, in the tree's own order."""
    return [dotted_path(path) for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]
