"""Builds cnnexp's oneDNN kernel library, `cnnexp/kernels/_onednn*.so`; everything else about the
package is declared in pyproject.toml.

The library is C++17 compiled against two sets of headers found in the build environment:
XLA's FFI API from jaxlib (`jaxlib/include/xla/ffi/api/`) and oneDNN 3 from the
`onednn-devel-cpu-gomp` package (or from `$ONEDNN_ROOT/include`, with its library in
`$ONEDNN_ROOT/lib`). It is optional: where either is missing, or the compiler fails, the package
installs without it and cnnexp uses XLA's convolutions (with one warning when it runs).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
from pathlib import Path

from setuptools import Extension, setup

SOURCES = Path("cnnexp/kernels/src")
EXPORTS = SOURCES / "exports.map"


def jaxlib_include() -> Path | None:
    spec = importlib.util.find_spec("jaxlib")
    if spec is None or not spec.submodule_search_locations:
        return None
    include = Path(next(iter(spec.submodule_search_locations))) / "include"
    return include if (include / "xla/ffi/api/ffi.h").is_file() else None


def onednn_prefix() -> Path | None:
    """The folder holding oneDNN's include/ and lib/: $ONEDNN_ROOT, or where pip put the
    onednn-devel-cpu-gomp package's files (the environment's prefix)."""
    if os.environ.get("ONEDNN_ROOT"):
        return Path(os.environ["ONEDNN_ROOT"])
    try:
        files = importlib.metadata.distribution("onednn-devel-cpu-gomp").files or []
    except importlib.metadata.PackageNotFoundError:
        return None
    header = next((f for f in files if f.as_posix().endswith("include/oneapi/dnnl/dnnl.hpp")), None)
    return None if header is None else Path(header.locate()).resolve().parents[3]


def kernel_extensions() -> list[Extension]:
    missing = []
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        missing.append(f"only Linux on x86-64 is supported, not {platform.system()} on {platform.machine()}")
    ffi, onednn = jaxlib_include(), onednn_prefix()
    if ffi is None:
        missing.append("jaxlib's FFI headers were not found")
    if onednn is None or not (onednn / "include/oneapi/dnnl/dnnl.hpp").is_file():
        missing.append("oneDNN 3 headers were not found (install onednn-devel-cpu-gomp or set ONEDNN_ROOT)")
    if missing:
        print(f"cnnexp: building without the oneDNN kernels: {'; '.join(missing)}")
        return []
    return [Extension(
        "cnnexp.kernels._onednn",
        sources=[str(p) for p in sorted(SOURCES.glob("*.cc"))],
        depends=[str(p) for p in [*SOURCES.glob("*.h"), EXPORTS]],
        include_dirs=[str(ffi), str(onednn / "include")],
        library_dirs=[str(onednn / "lib")],
        extra_compile_args=["-std=c++17", "-O3", "-g0"],
        # libdnnl.so.3 by its soname; at run time from the environment's lib/ (where pip puts it:
        # four levels above site-packages/cnnexp/kernels/), and cnnexp.kernels.library preloads it
        # from wherever the package installed it.
        extra_link_args=["-l:libdnnl.so.3", f"-Wl,--version-script={EXPORTS}", "-Wl,-rpath,$ORIGIN/../../../..", "-s"],
        language="c++",
        optional=True,  # a compiler or linker error leaves the package without the kernels, not uninstallable
    )]


setup(ext_modules=kernel_extensions())
