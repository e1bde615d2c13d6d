"""cnnexp's CPU kernels: oneDNN convolution and pooling called from jitted JAX through XLA's FFI.

XLA:CPU runs convolutions with Eigen kernels whose backward passes are several times slower
than PyTorch's (docs/bench.md); oneDNN is the library PyTorch itself uses on CPUs. The layers of
`cnnexp.models.layers` call `conv2d` and `pool2d` from here when `model.conv_impl` /
`model.pool_impl` resolve to `onednn` (what `auto` does on the CPU where `available()`), and
`batch_norm` in training mode for `model.norm_impl`.
"""

from __future__ import annotations

import ctypes
import functools
from typing import Any

import jax
import jax.numpy as jnp

from cnnexp.kernels import library
from cnnexp.kernels.batch_norm import batch_norm
from cnnexp.kernels.conv import ConvGeometry, conv2d
from cnnexp.kernels.pool import pool2d

__all__ = ["ConvGeometry", "available", "batch_norm", "conv2d", "pool2d", "preferred", "seconds_in_kernels", "supports", "unavailable_reason", "version"]


def available() -> bool:
    """Whether the kernel library loaded (the first call warns once if it cannot)."""
    return library.available()


def unavailable_reason() -> str | None:
    """Why the kernels cannot run in this process (None: they can)."""
    if jax.default_backend() != "cpu":
        return f"the oneDNN kernels run on the CPU only, and JAX's default backend is {jax.default_backend()}"
    return None if library.available() else "cnnexp's oneDNN kernel library did not load (see the warning above)"


@functools.cache
def _bf16() -> bool:
    check = library.load().cnnexp_supports_bf16
    check.restype = ctypes.c_int64
    return bool(check())


def supports(dtype: Any) -> bool:
    """Whether the kernels run `dtype` well here: float32 always; bfloat16 where oneDNN has
    optimized bfloat16 kernels for this CPU (AVX-512 and newer)."""
    dtype = jnp.dtype(dtype)
    if not library.available() or dtype not in (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16)):
        return False
    return dtype == jnp.float32 or _bf16()


def preferred(dtype: Any) -> bool:
    """What `conv_impl=auto` / `pool_impl=auto` decide: oneDNN when computing on the CPU and the
    kernels support `dtype`."""
    return jax.default_backend() == "cpu" and supports(dtype)


def seconds_in_kernels() -> float:
    """Time spent inside the kernels since they loaded (0 if they are unavailable): a bench
    compares it with a step's wall time to tell oneDNN's share from XLA's."""
    loaded = library.load() if library.available() else None
    if loaded is None:
        return 0.0
    clock = loaded.cnnexp_kernel_nanoseconds
    clock.restype = ctypes.c_int64
    return clock() / 1e9


def version() -> str | None:
    """The oneDNN version the kernels run with, None if they are unavailable."""
    loaded = library.load()
    return None if loaded is None else library.version(loaded)
