"""The fingerprint that says "the same config": what `resume=latest` looks for among run folders
and what `cnnexp report` ignores when it groups runs.

It lives with the run folders, not the config checks, because the report stage (which never
imports JAX) needs it too.
"""

from __future__ import annotations

import hashlib
import json

from omegaconf import DictConfig, OmegaConf

# Keys (dotted, each with everything below it) that say where a run lives, how it is shown or
# what a sweeper reads from it, not what it computes.
BOOKKEEPING_KEYS = ("hydra", "resume", "resume_failed", "paths", "objective", "data.data_dir", "data.source_dir",
                    "data.download", "trainer.progress", "trainer.distributed", "trainer.checkpoint_every_minutes",
                    "logger")
# How layers are computed, not what: every implementation computes the same function, so a run
# continues (resume=latest) under another one. Reports still tell them apart (their speed differs).
IMPLEMENTATION_KEYS = ("model.conv_impl", "model.pool_impl", "model.norm_impl")


def config_fingerprint(cfg: DictConfig) -> str:
    """A short hash of everything in `cfg` that changes what a run computes."""
    container = OmegaConf.to_container(cfg, resolve=True)
    for dotted in (*BOOKKEEPING_KEYS, *IMPLEMENTATION_KEYS):
        *parents, leaf = dotted.split(".")
        node = container
        for parent in parents:
            node = node.get(parent, {})
        node.pop(leaf, None)
    canonical = json.dumps(container, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def is_bookkeeping_key(dotted: str) -> bool:
    """True for a key in (or below) BOOKKEEPING_KEYS: it does not change what a run computes."""
    return any(dotted == key or dotted.startswith(f"{key}.") for key in BOOKKEEPING_KEYS)
