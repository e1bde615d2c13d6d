"""`python -m cnnexp.bench.layers`: the reference layers against XLA's library operations, on this machine.

Times the im2col convolution and the masked max pool (cnnexp.models.reference_ops) against
`lax.conv_general_dilated` and `lax.reduce_window`, alone and inside whole training steps (the
jitted step `cnnexp train` runs), to tell whether `model.conv_impl=im2col` or
`model.pool_impl=reference` is worth selecting here. Both sides of a comparison run in this one
process, interleaved (the order flips every repetition), so a shared machine's changing load
hits both alike; each side reports its median after warm-up. A table goes to the terminal and
everything, with the environment, to outputs/bench/<run name>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from omegaconf import OmegaConf
from rich.table import Table

from cnnexp.bench.timing import interleaved
from cnnexp.console import console
from cnnexp.data.preprocess import Preprocessing
from cnnexp.models import create_model, list_models
from cnnexp.models.layers import conv2d, pool2d
from cnnexp.runs.naming import unique_name
from cnnexp.runs.summary import environment
from cnnexp.training.losses import make_loss
from cnnexp.training.optim import build_optimizer
from cnnexp.training.steps import gathering, init_state, make_train_step

OUTPUT_DIR = Path("outputs/bench/layers")
SIDES = ("library", "reference")
NUM_CLASSES = 10
SAME_3X3 = ((1, 1), (1, 1))
VALID = ((0, 0), (0, 0))
# (name, NHWC image, HWIO kernel, stride, padding): LeNet's C1 (the model pads 28x28 digits to
# 32x32), a narrow ResNet's stage-1 conv, its downsampling conv and a stage-2 conv.
CONV_LAYERS = (
    ("conv 5x5 1->6 32x32 (C1)", (32, 32, 1), (5, 5, 1, 6), 1, VALID),
    ("conv 3x3 64->64 32x32", (32, 32, 64), (3, 3, 64, 64), 1, SAME_3X3),
    ("conv 3x3/2 64->128 32x32", (32, 32, 64), (3, 3, 64, 128), 2, SAME_3X3),
    ("conv 3x3 128->128 16x16", (16, 16, 128), (3, 3, 128, 128), 1, SAME_3X3),
)
# (name, NHWC image, window, stride, padding): LeNet's S2, the ResNet ImageNet stem's pool.
MAX_POOLS = (
    ("max pool 2x2/2 28x28x6 (S2)", (28, 28, 6), 2, 2, VALID),
    ("max pool 3x3/2 32x32x64", (32, 32, 64), 3, 2, SAME_3X3),
)
# (name, model, image, options of both sides, what the reference side uses, its options):
# whole train steps; a model that is not registered is skipped.
TRAIN_STEPS = (
    ("lenet", "lenet", (28, 28, 1), {}, "im2col", {"conv_impl": "im2col"}),
    ("lenet", "lenet", (28, 28, 1), {}, "im2col + ref pool", {"conv_impl": "im2col", "pool_impl": "reference"}),
    ("resnet-18 width 0.25", "resnet", (32, 32, 3), {"depth": 18, "width": 0.25}, "im2col", {"conv_impl": "im2col"}),
)


@dataclass
class Case:
    """One comparison: `run[side]()` makes one call of that side, on `images` images."""

    name: str
    work: str  # forward, fwd+bwd or train step
    uses: str  # what the reference side uses
    images: int
    run: dict[str, Callable[[], Any]]
    times_s: dict[str, list[float]] = field(default_factory=dict)

    def median_ms(self, side: str) -> float:
        return 1000 * statistics.median(self.times_s[side])

    def images_per_s(self, side: str) -> float:
        return self.images / self.median_ms(side) * 1000

    def speedup(self) -> float:
        """How many times faster the reference side is (< 1: slower)."""
        return self.median_ms("library") / self.median_ms("reference")

    def to_json(self) -> dict[str, Any]:
        sides = {side: {"median_ms": self.median_ms(side), "images_per_s": self.images_per_s(side),
                        "times_ms": [1000 * t for t in self.times_s[side]]} for side in SIDES}
        return {"name": self.name, "work": self.work, "reference_uses": self.uses, "images": self.images,
                "speedup": self.speedup(), **sides}


def _random(rng: np.random.Generator, shape: Sequence[int]) -> jax.Array:
    return jnp.asarray(rng.standard_normal(shape, np.float32))


def _forward_backward(f: Callable[..., jax.Array]) -> Callable[..., Any]:
    """The value and the gradients w.r.t. every argument of f's sum: a layer's training work."""
    return lambda *args: jax.value_and_grad(lambda *a: f(*a).sum(), argnums=tuple(range(len(args))))(*args)


def _layer_sides(layer: Callable[[str], Callable[..., jax.Array]], impls: Sequence[str], transform, *args) -> dict:
    """{side: call}: `transform(layer(impl))`, jitted, on `args`."""
    compiled = {side: jax.jit(transform(layer(impl))) for side, impl in zip(SIDES, impls, strict=True)}
    return {side: (lambda f=f: f(*args)) for side, f in compiled.items()}


def conv_cases(batch: int, rng: np.random.Generator) -> list[Case]:
    """Each conv layer forward, and forward + backward, through `layers.conv2d` as models call it."""
    cases = []
    for name, image, kernel_shape, stride, pads in CONV_LAYERS:
        inputs, kernel = _random(rng, (batch, *image)), _random(rng, kernel_shape)

        def layer(impl, stride=stride, pads=pads):
            return lambda x, k: conv2d(x, k, stride, pads, impl)

        for work, transform in (("forward", lambda f: f), ("fwd+bwd", _forward_backward)):
            cases.append(Case(name, work, "im2col", batch, _layer_sides(layer, ("library", "im2col"), transform, inputs, kernel)))
    return cases


def pool_cases(batch: int, rng: np.random.Generator) -> list[Case]:
    """Max pooling forward + backward through `layers.pool2d`: XLA's select-and-scatter
    gradient against the mask of the maxima."""
    cases = []
    for name, image, window, stride, pads in MAX_POOLS:

        def layer(impl, window=window, stride=stride, pads=pads):
            return lambda x: pool2d(x, "max", window, stride, pads, impl)

        run = _layer_sides(layer, ("library", "reference"), _forward_backward, _random(rng, (batch, *image)))
        cases.append(Case(name, "fwd+bwd", "ref pool", batch, run))
    return cases


def _default_optimizer():
    """The optimizer `cnnexp train` uses by default (conf/optim/adamw.yaml), at its base rate."""
    cfg = OmegaConf.create((resources.files("cnnexp.conf") / "optim" / "adamw.yaml").read_text())
    return build_optimizer(cfg, cfg.lr)


def _train_step(model_name: str, image: tuple[int, int, int], options: dict[str, Any], batch: int,
                rng: np.random.Generator) -> Callable[[], Any]:
    """One call = one training step on a batch of random uint8 images, compiled as
    the train loop compiles it (jit, state donated); each call's state feeds the next."""
    model = create_model(model_name, options, input_shape=image, num_classes=NUM_CLASSES, rngs=nnx.Rngs(0))
    model.train()
    tx = _default_optimizer()
    graphdef, state = init_state(model, tx)
    channels = image[-1]
    step = gathering(make_train_step(graphdef, tx, loss=make_loss("cross_entropy")), batch)
    batch_data = (
        jax.device_put(rng.integers(0, 256, (batch, *image), np.uint8)),
        jax.device_put(rng.integers(0, NUM_CLASSES, batch).astype(np.int32)),
        jax.device_put(Preprocessing("standardize", np.full(channels, 0.5, np.float32),
                                     np.full(channels, 0.25, np.float32))),
        jnp.arange(batch, dtype=jnp.int32),  # the epoch's order: this one batch
        np.int32(0),
    )
    compiled = jax.jit(step, donate_argnums=0).lower(state, *batch_data).compile()
    current = {"state": state}

    def run():
        current["state"] = compiled(current["state"], *batch_data)
        return current["state"]

    return run


def train_cases(batch: int, rng: np.random.Generator) -> list[Case]:
    """Whole train steps (forward, loss, gradients, AdamW update) of the models registered now."""
    cases = []
    for name, model_name, image, shared, uses, reference in TRAIN_STEPS:
        if model_name in list_models():
            run = {side: _train_step(model_name, image, {**shared, **extra}, batch, rng)
                   for side, extra in zip(SIDES, ({}, reference), strict=True)}
            cases.append(Case(name, "train step", uses, batch, run))
    return cases


def measure(case: Case, warmup: int, repeats: int) -> None:
    """Warm both sides up, then time them in turns; every call waits for its result."""
    calls = {side: (lambda run=case.run[side]: jax.block_until_ready(run())) for side in SIDES}
    case.times_s = {side: list(timing.times_s) for side, timing in interleaved(calls, warmup=warmup,
                                                                                repeats=repeats).items()}


def print_table(cases: Sequence[Case], title: str) -> None:
    table = Table(title=title, title_justify="left")
    table.add_column("case")
    table.add_column("work")
    table.add_column("reference")
    for column in ("library ms", "ref ms", "speedup", "library img/s", "ref img/s"):
        table.add_column(column, justify="right")
    for case in cases:
        speedup = case.speedup()
        table.add_row(case.name, case.work, case.uses, f"{case.median_ms('library'):.2f}",
                      f"{case.median_ms('reference'):.2f}", f"[{'green' if speedup > 1 else 'red'}]{speedup:.2f}x",
                      f"{case.images_per_s('library'):,.0f}", f"{case.images_per_s('reference'):,.0f}")
    console.print(table)
    console.print("speedup = library ms / ref ms: above 1 the reference implementation is faster.")


def main(argv: Sequence[str] | None = None) -> Path:
    """Run every case, print the table, write the JSON; returns its path."""
    parser = argparse.ArgumentParser(prog="python -m cnnexp.bench.layers", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="batch 8, 2 repetitions: a smoke test, not numbers")
    parser.add_argument("--repeats", type=int, help="timed calls per side and case (default 5, --quick 2)")
    parser.add_argument("--batch-size", type=int, help="images per call (default 128, --quick 8)")
    parser.add_argument("--match", default="", help="only the cases whose name matches this regular expression")
    args = parser.parse_args(argv)
    repeats = args.repeats or (2 if args.quick else 5)
    batch = args.batch_size or (8 if args.quick else 128)
    warmup = 1 if args.quick else 2

    rng = np.random.default_rng(0)
    cases = []
    for build in (conv_cases, pool_cases, train_cases):
        for case in [case for case in build(batch, rng) if re.search(args.match, case.name)]:
            console.print(f"[dim]timing {case.name} {case.work}, library and {case.uses}", highlight=False)
            measure(case, warmup, repeats)
            cases.append(case)

    env = environment()
    print_table(cases, f"cnnexp bench: batch {batch}, median of {repeats} after {warmup} warm-up, "
                       f"{env['device']['kind']}, {os.cpu_count()} CPUs, jax {jax.__version__}")
    record = {
        "command": " ".join(["python -m cnnexp.bench.layers", *(sys.argv[1:] if argv is None else argv)]),
        "settings": {"batch_size": batch, "repeats": repeats, "warmup": warmup, "quick": args.quick},
        "cpu_count": os.cpu_count(),
        "xla_flags": os.environ.get("XLA_FLAGS"),
        **env,
        "cases": [case.to_json() for case in cases],
    }
    path = OUTPUT_DIR / f"{unique_name()}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")
    console.print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
