"""The PyTorch reference of a bench row, run in a process of its own.

Both sides of a row used to share one process. With cnnexp's oneDNN kernels that stopped being
fair: the two libraries' OpenMP teams then outnumber the cores, and GNU OpenMP stops spinning
between parallel regions for every team in the process, so PyTorch's LeNet step ran 30-40%
slower after cnnexp's first step than before it (15,600 -> 10,600 images/s on 2 cores) and
PyTorch imported after JAX started ran ~50x slower. In its own process each side runs as it
would for a user. The sides still take turns (`cnnexp.bench.timing`), and the worker times its
own calls, so the pipe's round trip is not counted.
"""

from __future__ import annotations

import multiprocessing
import time
import traceback
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from cnnexp.data import ImageDataset


class NoReference(Exception):
    """The reference has no counterpart of this config's model or options (the message says which)."""


@dataclass(frozen=True)
class ReferenceInfo:
    params: int
    eval_images: int
    device: str


def _serve(connection: Any) -> None:
    """The worker's loop: build the reference steps, then run and time them on request."""
    from cnnexp.bench.torch_models import UnsupportedReference
    from cnnexp.bench.torch_side import reference_steps

    cfg, data, steps, eval_batches, compile_model = connection.recv()
    try:
        reference = reference_steps(OmegaConf.create(cfg), data, steps=steps, eval_batches=eval_batches,
                                    compile_model=compile_model)
    except UnsupportedReference as reason:
        connection.send(("unsupported", str(reason)))
        return
    except Exception:
        connection.send(("error", traceback.format_exc()))
        return
    connection.send(("ready", ReferenceInfo(reference.params, reference.eval_images, reference.device)))
    calls = {"train": reference.train, "evaluate": reference.evaluate}
    while (request := connection.recv()) != "close":
        start = time.perf_counter()
        calls[request]()
        connection.send(time.perf_counter() - start)


class ReferenceWorker:
    """`train()` and `evaluate()` run the reference's steps in the worker process and return the
    seconds they took there. Raises NoReference where there is no reference for `cfg`."""

    def __init__(self, cfg: DictConfig, data: ImageDataset, *, steps: int, eval_batches: int, compile_model: bool):
        # A fresh interpreter (spawn, not fork): nothing of this process's JAX or thread pools.
        context = multiprocessing.get_context("spawn")
        self._connection, theirs = context.Pipe()
        self._process = context.Process(target=_serve, args=(theirs,), daemon=True, name="cnnexp-bench-reference")
        self._process.start()
        theirs.close()
        self._connection.send((OmegaConf.to_container(cfg, resolve=True), data, steps, eval_batches, compile_model))
        status, detail = self._connection.recv()
        if status != "ready":
            self.close()
            if status == "unsupported":
                raise NoReference(detail)
            raise RuntimeError(f"the PyTorch reference failed to start:\n{detail}")
        self.info: ReferenceInfo = detail

    def _call(self, request: str) -> float:
        self._connection.send(request)
        return self._connection.recv()

    def train(self) -> float:
        return self._call("train")

    def evaluate(self) -> float:
        return self._call("evaluate")

    def close(self) -> None:
        if self._process.is_alive():
            try:
                self._connection.send("close")
            except (BrokenPipeError, OSError):
                pass
            self._process.join(timeout=10)
        if self._process.is_alive():
            self._process.kill()
        self._connection.close()
