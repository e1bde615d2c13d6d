"""How the test processes, and the commands they start, compile: fast, and once a session."""

from __future__ import annotations

import os
from pathlib import Path

# XLA's CPU backend spends most of a small program's compile time in LLVM's optimizer; the suite
# compiles thousands of small programs (parameter initializers, one train step, a few epochs)
# and runs each a few times, so unoptimized code is much faster overall (measured on 2 cores:
# LeNet's tiny run 12.6 -> 9.1 s CPU, every CPU preset's one-epoch run 121 -> 74 s, `cnnexp
# visualize` 45 -> 27 s, Inception's initializers 31 -> 11 s). The programs are the same (same
# HLO, same fusions); results differ from optimized code at most in the last bits of floats, and
# every comparison in the suite is between programs compiled alike. A level given in XLA_FLAGS
# already (e.g. XLA_FLAGS=--xla_backend_optimization_level=2 to test what users run) is kept.
FAST_COMPILES = "--xla_backend_optimization_level=0"
# In-process compilations worth writing to the persistent cache (the many tiny eager ones are not).
CACHE_MIN_COMPILE_S = 0.05


def with_fast_compiles(flags: str) -> str:
    """XLA_FLAGS `flags` plus the suite's optimization level, unless `flags` set one."""
    return flags if "xla_backend_optimization_level" in flags else f"{flags} {FAST_COMPILES}".strip()


def use_fast_compiles() -> None:
    """For this process and every process it starts (before JAX creates its CPU client)."""
    os.environ["XLA_FLAGS"] = with_fast_compiles(os.environ.get("XLA_FLAGS", ""))


def share_compilations(cache_dir: Path) -> None:
    """JAX's persistent compilation cache in `cache_dir` for this test process: what another
    pytest-xdist worker compiled (the same model's initializers, the same train step), this one
    loads. Must run before the process compiles anything (JAX decides once whether to use it)."""
    import jax

    jax.config.update("jax_compilation_cache_dir", str(cache_dir))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", CACHE_MIN_COMPILE_S)
