"""Copy a cnnexp (Flax) model's weights into its PyTorch twin, to show both compute the same
function: the reference modules carry the Flax attribute paths, so names map one to one."""

from __future__ import annotations

import jax
import numpy as np
import torch
from flax import nnx
from torch import nn

# Flax leaf name -> PyTorch's, for the leaves whose names differ.
_LEAF_NAMES = {"kernel": "weight", "scale": "weight", "mean": "running_mean", "var": "running_var"}


def torch_name(flax_path: str) -> str:
    """`stages.0.0.norm.batch_norm.scale` -> `stages.0.0.norm.weight`: Flax's BatchNorm sits one
    level below cnnexp's `Norm`, PyTorch's BatchNorm2d is the module itself."""
    parts = [part for part in flax_path.split(".") if part != "batch_norm"]
    parts[-1] = _LEAF_NAMES.get(parts[-1], parts[-1])
    return ".".join(parts)


def _torch_layout(value: np.ndarray) -> np.ndarray:
    """Flax's conv kernels are HWIO and dense kernels (in, out); PyTorch's are OIHW and (out, in)."""
    if value.ndim == 4:
        return value.transpose(3, 2, 0, 1)
    if value.ndim == 2:
        return value.T
    return value


def flax_arrays(model: nnx.Module) -> dict[str, np.ndarray]:
    """Every parameter and batch statistic of `model` by dotted path (not dropout's RNG keys)."""
    flat = jax.tree_util.tree_flatten_with_path(nnx.to_pure_dict(nnx.state(model, (nnx.Param, nnx.BatchStat))))[0]
    return {".".join(str(getattr(key, "key", key)) for key in path): np.asarray(value) for path, value in flat}


def copy_weights(flax_model: nnx.Module, torch_model: nn.Module) -> None:
    """Load every Flax parameter and batch statistic into `torch_model`; both sides must hold
    exactly the same tensors (a missing, extra or misshapen one raises)."""
    targets = {**dict(torch_model.named_parameters()), **dict(torch_model.named_buffers())}
    targets = {name: tensor for name, tensor in targets.items() if tensor.is_floating_point()}
    sources = {torch_name(path): _torch_layout(value) for path, value in flax_arrays(flax_model).items()}
    if set(sources) != set(targets):
        raise ValueError(f"tensors only in Flax: {sorted(set(sources) - set(targets))}; "
                         f"only in PyTorch: {sorted(set(targets) - set(sources))}")
    with torch.no_grad():
        for name, value in sources.items():
            if tuple(targets[name].shape) != value.shape:
                raise ValueError(f"{name}: PyTorch {tuple(targets[name].shape)}, Flax {value.shape}")
            targets[name].copy_(torch.from_numpy(np.array(value)))  # a writable copy
