"""Freed host memory stays in the process, so XLA:CPU's per-step buffers stop page-faulting.

XLA:CPU allocates each execution's temporaries as one fresh block (tens to hundreds of MB for a
CNN step) and frees it at the end. glibc serves blocks above 32 MB with mmap and gives them back
with munmap (smaller ones from per-thread heaps it trims with madvise), so every step faults in
and zeroes all of its activations again: 3.2 million page faults in 15 s of ResNet-18/4 training
on 2 cores, a fifth of the CPU time spent in the kernel. With one heap (one arena) that never
shrinks and no mmap'd blocks, the pages are reused: 30,000 faults, and ResNet trains at ~720
instead of ~470 images/s (DenseNet 239 -> 378, Inception 701 -> 1,028; LeNet, whose buffers are
small, unchanged). The cost: the process keeps its peak memory until it exits.

`CNNEXP_SYSTEM_MALLOC=1` keeps glibc's defaults. Other C libraries (musl, macOS) are left alone.
"""

from __future__ import annotations

import ctypes
import os
import platform

OPT_OUT_VARIABLE = "CNNEXP_SYSTEM_MALLOC"
# mallopt parameters, from glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
_NEVER_TRIM = 2**31 - 1  # the largest int mallopt takes: trim only when 2 GB lie free at the top


def keep_freed_memory() -> bool:
    """Tune glibc's allocator as above; True if it was (call before JAX starts its threads, so
    they share the one arena). Idempotent."""
    if os.environ.get(OPT_OUT_VARIABLE) or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)
    libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    settings = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _NEVER_TRIM))
    return all(libc.mallopt(option, value) == 1 for option, value in settings)
