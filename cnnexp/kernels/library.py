"""Finding, loading and registering cnnexp's oneDNN kernel library, once per process.

The library (`_onednn*.so`, built from `src/` by the package's own install) holds XLA FFI
handlers that call oneDNN. It needs oneDNN's shared library, `libdnnl.so.3`, which the
`onednn-cpu-gomp` package installs into the environment's `lib/` folder: it is loaded first,
from where that package put it, so no `LD_LIBRARY_PATH` is needed. Where any of this is missing
(no compiler at install time, another OS, another CPU), `load()` says why in one warning and
returns None, and the layers use XLA's own convolutions.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.metadata
import logging
import os
from pathlib import Path

import jax

log = logging.getLogger("cnnexp.kernels")

ONEDNN_DISTRIBUTION = "onednn-cpu-gomp"
ONEDNN_SONAME = "libdnnl.so.3"
# The FFI handlers in src/, by the name JAX calls them with (also their C symbol).
CONV_FORWARD = "cnnexp_conv_forward"
POOL_FORWARD = "cnnexp_pool_forward"
BATCH_NORM_FORWARD = "cnnexp_batch_norm_forward"
BATCH_NORM_BACKWARD = "cnnexp_batch_norm_backward"
HANDLERS = (
    CONV_FORWARD,
    "cnnexp_conv_backward_data",
    "cnnexp_conv_backward_weights",
    POOL_FORWARD,
    "cnnexp_pool_backward",
    BATCH_NORM_FORWARD,
    BATCH_NORM_BACKWARD,
)
# Set to any value to run without the kernels (as on a machine where they cannot load).
DISABLE_VARIABLE = "CNNEXP_DISABLE_ONEDNN"


class KernelsUnavailable(RuntimeError):
    """The kernel library cannot be used here; the message says why."""


def _kernel_library() -> Path:
    found = sorted(Path(__file__).parent.glob("_onednn*.so"))
    if not found:
        raise KernelsUnavailable(
            "cnnexp's oneDNN kernels were not built when cnnexp was installed (a C++ compiler and the "
            f"{ONEDNN_DISTRIBUTION} package are needed; reinstall cnnexp to build them)"
        )
    return found[-1]


def _preload_onednn() -> None:
    """Load libdnnl.so.3 from the onednn-cpu-gomp package, so the kernel library's dependency
    resolves by its soname without LD_LIBRARY_PATH; a system-wide oneDNN 3 is used otherwise."""
    try:
        files = importlib.metadata.distribution(ONEDNN_DISTRIBUTION).files or []
    except importlib.metadata.PackageNotFoundError:
        return
    for file in files:
        if file.name == ONEDNN_SONAME:
            ctypes.CDLL(str(file.locate()), mode=ctypes.RTLD_GLOBAL)
            return


_registered: set[str] = set()


def _register(library: ctypes.CDLL) -> None:
    """Make the handlers known to XLA, once per process (XLA keeps them for its lifetime)."""
    for name in HANDLERS:
        if name not in _registered:
            jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(library, name)), platform="cpu")
            _registered.add(name)


@functools.cache
def load() -> ctypes.CDLL | None:
    """The loaded library with its FFI targets registered, or None (after one warning)."""
    try:
        if os.environ.get(DISABLE_VARIABLE):
            raise KernelsUnavailable(f"{DISABLE_VARIABLE} is set")
        _preload_onednn()
        path = _kernel_library()
        try:
            library = ctypes.CDLL(str(path))
        except OSError as error:
            raise KernelsUnavailable(f"{path.name} does not load: {error}") from None
        library.cnnexp_onednn_version.restype = ctypes.c_char_p
        _register(library)
    except KernelsUnavailable as reason:
        log.warning("oneDNN kernels unavailable, using XLA's convolutions and pooling: %s", reason)
        return None
    log.debug("oneDNN kernels loaded: %s, oneDNN %s", path, version(library))
    return library


def version(library: ctypes.CDLL) -> str:
    """The oneDNN version the library runs with (major.minor.patch)."""
    return library.cnnexp_onednn_version().decode()


def call(target: str, results, *operands: jax.Array, **attributes):
    """One FFI call into the library (loaded on first use); under `vmap`, one call per slice."""
    if load() is None:
        raise KernelsUnavailable(f"{target} needs cnnexp's oneDNN kernels, which are unavailable here")
    return jax.ffi.ffi_call(target, results, vmap_method="sequential")(*operands, **attributes)


def available() -> bool:
    """Whether the kernel library loaded in this process."""
    return load() is not None
