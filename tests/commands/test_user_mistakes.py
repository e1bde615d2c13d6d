"""Whatever a user types after `cnnexp train|summary|evaluate|visualize|bench|lr-find`, the command ends
with exit status 0 or 2 (or lr-find's 1 for a range without a valley) and never a traceback, and a
refused command leaves no run folder behind.

Hypothesis draws the overrides (unknown keys and near misses of real ones, real keys with values of
the wrong type, out of range, bad paths, unicode or empty, malformed override syntax) after a tiny
valid base config, so that an accepted command finishes in seconds. Each example runs in this
process (`cnnexp.cli.main`): starting the installed command costs seconds, and there are hundreds."""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import absl.logging
import jax
import pytest
from helpers.commands import TINY, copy_run, run_dirs
from helpers.paths import CONF
from hydra.core.global_hydra import GlobalHydra
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from cnnexp.app.compose import compose_config
from cnnexp.app.extensions import register_hydra_extensions
from cnnexp.cli import main
from cnnexp.runs.layout import LR_FIND_FILE, is_run_folder
from cnnexp.runs.naming import unique_name

pytestmark = pytest.mark.slow  # valid examples train, evaluate, visualize and bench for real

# The base of every example: each command's cheapest valid call. Later overrides win, so the
# drawn ones come after it. RUN stands for the example's copy of a trained run.
RUN = "<run>"
BASES = {
    "train": [*TINY, "trainer.epochs=1", "data.train_fraction=0.5"],
    "summary": [],
    "evaluate": [f"run={RUN}", "translations=[0,1]", "rotations=[0,10]", "scales=[1.0]"],
    "visualize": [f"run={RUN}", "images=1", "feature_channels=1", "mistakes=1", "maximize.units=1",
                  "maximize.steps=1"],
    "bench": ["model=lenet", "data=digits", "trainer.batch_size=64", "bench.steps=1", "bench.repeats=1",
              "bench.warmup=0", "bench.eval_batches=1", "bench.reference=none", "bench.peak=false"],
    "lr-find": ["data=digits", "trainer.batch_size=64", "trainer.progress=false", "lr_find.steps=10"],
}
# Examples per command (hundreds in all), fewer where a valid example costs more.
EXAMPLES = {"train": 50, "summary": 60, "evaluate": 50, "visualize": 40, "bench": 40, "lr-find": 30}
# Valid input whose command finds nothing, by design exit status 1 with this in its output: a range
# test whose loss has no valley between the rates it was given.
FOUND_NOTHING = {"lr-find": "no suggestion: "}

# Keys that accept any size, never drawn huge: the cost of a valid example grows with them, or a
# huge one is valid but makes the run diverge (exit status 1 by design: TrainingDiverged). Huge
# values go to the other keys, whose range validation must bound.
UNBOUNDED_KEYS = frozenset({
    "trainer.epochs", "trainer.eval_batch_size", "trainer.log_every_steps", "trainer.checkpoint_keep",
    "optim.lr", "optim.weight_decay", "schedule.gamma", "data.image_size", "input_shape", "num_classes",
    "images", "feature_channels", "mistakes", "maximize.units", "maximize.steps", "translations", "rotations",
    "scales", "bench.steps", "bench.repeats", "bench.warmup", "bench.eval_batches", "model.blocks",
    "lr_find.steps",
})
# Valid group options that train a big model or download a dataset: drawn for summary only, which
# builds no weights and reads no data.
COSTLY_OPTIONS = {
    "model": {"alexnet", "alexnet_lite", "densenet", "inception", "inception_resnet", "resnet", "speednet", "vgg",
              "simple_cnn", "zfnet"},
    "data": {"cifar10", "fashion_mnist", "mnist", "tfds"},
    "experiment": {p.stem for p in (CONF / "experiment").glob("*.yaml")},
}
# Valid values that cost more than seconds (bench's PyTorch reference process).
COSTLY_VALUES = {"bench.reference": {"auto", "torch"}}

# What `cnnexp train` sets in this process (cnnexp.training.run.enable_compilation_cache).
JAX_CACHE_SETTINGS = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")
# In each example's folder: a file where a folder is expected. Paths are relative (to the example's
# folder) but for /dev/null: a drawn `/x` or `~/x` might be valid, and a valid run would write there.
A_FILE = "a_file.txt"
PATHS = [A_FILE, f"{A_FILE}/below", "no/such/folder", ".", "", "/dev/null", "/dev/null/below", "outputs",
         "outputs/runs"]
ODD_VALUES = [
    "", "''", '""', "null", "true", "false", "True", "yes", "nan", "inf", "-inf", "-0", "0.0", "1e-300", "1e999",
    "-1e999", "[]", "{}", "[1,2]", "[[1]]", "[a,b]", "{a:1}", "[1e999]", "[nan]", "[-1]", "[0]", "???", "${oops}",
    "${oc.env:CNNEXP_NO_SUCH_VARIABLE}", "${trainer}", "ünïcødé", "名前", "🙂", "a b", "\\", "a,b", "1,2",
    "range(1,3)", "choice(1,2)", "interval(0,1)", "0x10", "1_000", "+1",
]
MALFORMED = [
    "=x", "=", "key==", "trainer.epochs==2", "a=[1,2", "a=[1,2]]", "a={b", "a='unterminated", 'a="x', "a=${",
    "~", "+", "~trainer", "~trainer.epochs=3", "~seed", "+seed=1", "+trainer.epochs=1", "++trainer.nope=1",
    "+nope=1", "++nope=1", "a.=1", ".a=1", "a..b=1", "a=b=c", "[1,2]", "trainer.epochs", "seed", "model",
    "trainer.epochs=1,2", "seed=range(0,3)", "model=lenet,mlp", "hydra.nope=1", "hydra.run.dir=", "hydra/nope=x",
    "hydra/launcher=nope", "hydra.job.chdir=maybe", "-x", "--nope", "--cfg", "-c", " ", "\t=\t",
]


def _leaf_keys(node: object, prefix: str = "") -> list[str]:
    keys = []
    for key in node:
        child = node._get_node(key)
        keys += _leaf_keys(child, f"{prefix}{key}.") if OmegaConf.is_dict(child) else [f"{prefix}{key}"]
    return keys


@functools.cache
def real_keys(command: str) -> tuple[str, ...]:
    """Every leaf key of `command`'s composed base config (bench, lr-find: their own options and train's)."""
    register_hydra_extensions()
    if command == "bench":
        options = OmegaConf.load(CONF / "bench.yaml")
        return tuple(f"bench.{key}" for key in _leaf_keys(options)) + real_keys("train")
    if command == "lr-find":
        return tuple(_leaf_keys(OmegaConf.load(CONF / "lr_find.yaml"))) + real_keys("train")
    keys = _leaf_keys(compose_config(command, [o.replace(RUN, ".") for o in BASES[command]]))
    # Options of the other models: a mistake for the base model, checked by the model registry.
    model_keys = {f"model.{k}" for p in (CONF / "model").glob("*.yaml") for k in OmegaConf.load(p)}
    return tuple(sorted(set(keys) | (model_keys if "model.name" in keys else set())))


@functools.cache
def groups(command: str) -> dict[str, list[str]]:
    """Config group -> its options under conf/, for the groups `command` composes (Hydra's own,
    `data/augment`, and train's `experiment` and `hparams_search`, which are null by default)."""
    tops = {key.split(".")[0] for key in real_keys(command)} | {"hydra"}
    if command in ("train", "bench", "lr-find"):
        tops |= {"experiment", "hparams_search"}
    found = {}
    for folder in sorted(p for p in CONF.rglob("*") if p.is_dir() and any(p.glob("*.yaml"))):
        group = folder.relative_to(CONF).as_posix()
        if group.split("/")[0] in tops:
            costly = COSTLY_OPTIONS.get(group, set()) if command != "summary" else set()
            found[group] = sorted(p.stem for p in folder.glob("*.yaml") if p.stem not in costly)
    return found


def _near_misses(key: str) -> st.SearchStrategy[str]:
    """Typos of a real key: a letter dropped, doubled or swapped, a plural, a wrong separator, a case."""
    variants = {key[:-1], key + "s", key.upper(), key.replace(".", "_"), key.replace("_", "-"), key + ".x",
                key.replace(".", ".."), key.split(".")[-1], "x." + key}
    if len(key) > 2:
        variants |= {key[1:], key[0] + key[2:] if key[1] != "." else key, key[:2] + key[1:]}
    return st.sampled_from(sorted(v for v in variants if v and v != key))


def values(key: str) -> st.SearchStrategy[str]:
    """Text for the right of `key=`: mostly wrong for it, sometimes right."""
    numbers = st.one_of(st.integers(-5, 3).map(str), st.floats(allow_nan=True, allow_infinity=True).map(repr))
    if key not in UNBOUNDED_KEYS:
        numbers = st.one_of(numbers, st.integers(10**6, 10**40).map(str))
    lists = st.lists(numbers, max_size=3).map(lambda xs: f"[{','.join(xs)}]")
    drawn = st.one_of(numbers, lists, st.sampled_from(ODD_VALUES), st.sampled_from(PATHS), _texts())
    return drawn.filter(lambda v: v.lower() not in COSTLY_VALUES.get(key, ()))


def _texts(min_size: int = 0) -> st.SearchStrategy[str]:
    """Any unicode, but no absolute or home path (see PATHS)."""
    return st.text(min_size=min_size, max_size=8).filter(lambda v: not v.lstrip().startswith(("/", "~")))


@st.composite
def override(draw: st.DrawFn, command: str) -> str:
    """One command-line argument a user might get wrong."""
    keys, choices = real_keys(command), groups(command)
    kind = draw(st.sampled_from(["value", "value", "value", "group", "unknown", "typo", "malformed", "unicode"]))
    if kind == "value":
        key = draw(st.sampled_from(keys))
        return f"{draw(st.sampled_from(['', '', '', '+', '++', '~']))}{key}={draw(values(key))}"
    if kind == "group":
        group = draw(st.sampled_from(sorted(choices)))
        option = draw(st.one_of(st.sampled_from(choices[group] or [""]), st.sampled_from(ODD_VALUES),
                                st.from_regex(r"[a-z_]{1,12}", fullmatch=True)))
        return f"{draw(st.sampled_from(['', '', '+', '~']))}{group}={option}"
    if kind == "unknown":
        key = draw(st.from_regex(r"[a-z_]{1,10}(\.[a-z_]{1,10}){0,2}", fullmatch=True))
        return f"{key}={draw(values(key))}"
    if kind == "typo":
        key = draw(st.sampled_from(keys))
        return f"{draw(_near_misses(key))}={draw(values(key))}"
    if kind == "unicode":
        return f"{draw(_texts(min_size=1))}={draw(_texts())}"
    return draw(st.sampled_from(MALFORMED))


@dataclass
class Outcome:
    status: int
    output: str  # stdout and stderr


def run_in_process(args: list[str], cwd: Path) -> Outcome:
    """`cnnexp *args` in this process, in `cwd`, as a fresh process would run it: Hydra's global
    state, the process's run name (cached per process) and the logging handlers Hydra installs are
    reset around it. An exception other than SystemExit propagates: that is a crash."""
    GlobalHydra.instance().clear()
    unique_name.cache_clear()
    root = logging.getLogger()
    handlers, level, argv, previous = root.handlers[:], root.level, sys.argv[:], os.getcwd()
    hooks = sys.unraisablehook, threading.excepthook  # main() installs its own
    # Hydra's logging setup closes every handler's stream that is not the current sys.stderr: absl's
    # handler holds pytest's capture stream from import time, which must survive the example.
    absl_handler = absl.logging.get_absl_handler().python_handler
    absl_stream, absl_handler.stream = absl_handler.stream, sys.__stderr__
    captured = io.StringIO()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
            try:
                main(args)
                status = 0
            except SystemExit as exit_:
                status = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
                if isinstance(exit_.code, str):
                    print(exit_.code)
    finally:
        os.chdir(previous)
        sys.argv = argv
        for handler in set(root.handlers) - set(handlers):
            handler.close()
        root.handlers[:] = handlers
        root.setLevel(level)
        sys.unraisablehook, threading.excepthook = hooks
        absl_handler.stream = absl_stream
        GlobalHydra.instance().clear()
    return Outcome(status, captured.getvalue())


def _files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")}


def _run_folders(folder: Path) -> set[Path]:
    """Run folders (a composed config or a summary.json), and range tests' folders, anywhere below `folder`."""
    configs = {p.parent.parent for p in folder.rglob("config.yaml")}
    return {*run_dirs(folder), *filter(is_run_folder, configs), *(p.parent for p in folder.rglob(LR_FIND_FILE))}


@pytest.fixture(scope="module")
def arena(tmp_path_factory, shared_env) -> Iterator[Path]:
    """A folder for the examples' own folders, with this process's environment set as the installed
    command's (its TFDS and compilation-cache folders), and a tiny trained run in `arena/run`. The
    JAX compilation cache a training turns on is turned back as it was for the tests after these."""
    root = tmp_path_factory.mktemp("user-mistakes")
    cache = {name: getattr(jax.config, name) for name in JAX_CACHE_SETTINGS}
    with pytest.MonkeyPatch.context() as patch:
        for name in ("TFDS_DATA_DIR", "CNNEXP_CACHE_DIR", "COLUMNS"):
            patch.setenv(name, shared_env[name])
        trained = run_in_process(["train", *BASES["train"]], root)
        assert trained.status == 0, trained.output[-3000:]
        (run,) = run_dirs(root / "outputs")
        shutil.move(run, root / "run")
        shutil.rmtree(root / "outputs")
        yield root
    for name, value in cache.items():
        jax.config.update(name, value)


def check_command(command: str, extra: list[str], arena: Path) -> None:
    """Run `command` with its base and `extra` in a fresh folder of `arena`, and check the property."""
    with tempfile.TemporaryDirectory(dir=arena) as folder:
        cwd = Path(folder)
        (cwd / A_FILE).write_text("not a folder\n")
        run = copy_run(arena / "run", cwd / "the-run") if RUN in " ".join(BASES[command]) else None
        args = [command, *(o.replace(RUN, str(run)) for o in BASES[command]), *extra]
        before = _files(run) if run else set()
        outcome = run_in_process(args, cwd)
        shown = f"cnnexp {' '.join(map(repr, args))}\n{outcome.output[-4000:]}"
        found_nothing = outcome.status == 1 and command in FOUND_NOTHING and FOUND_NOTHING[command] in outcome.output
        assert outcome.status in (0, 2) or found_nothing, shown
        assert "Traceback" not in outcome.output, shown
        if outcome.status == 2:
            assert outcome.output.rstrip().splitlines()[-1].startswith("cnnexp"), shown  # its one-line error
            left = _run_folders(cwd) - {run}
            assert not left, f"left behind: {sorted(left)}\n{shown}"
            if run:
                assert _files(run) == before, f"written into the run: {sorted(_files(run) - before)}\n{shown}"


def mistakes(command: str) -> st.SearchStrategy[list[str]]:
    """What follows the base: one to three arguments, each possibly wrong."""
    return st.lists(override(command), min_size=1, max_size=3)


def _property(command: str) -> settings:
    """Deterministic (derandomized, no example database), so the suite is reproducible."""
    return settings(max_examples=EXAMPLES[command], deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                           HealthCheck.data_too_large])


@_property("train")
@given(extra=mistakes("train"))
def test_train(arena, extra):
    check_command("train", extra, arena)


@_property("summary")
@given(extra=mistakes("summary"))
def test_summary(arena, extra):
    check_command("summary", extra, arena)


@_property("evaluate")
@given(extra=mistakes("evaluate"))
def test_evaluate(arena, extra):
    check_command("evaluate", extra, arena)


@_property("visualize")
@given(extra=mistakes("visualize"))
def test_visualize(arena, extra):
    check_command("visualize", extra, arena)


@_property("bench")
@given(extra=mistakes("bench"))
def test_bench(arena, extra):
    check_command("bench", extra, arena)



@_property("lr-find")
@given(extra=mistakes("lr-find"))
def test_lr_find(arena, extra):
    check_command("lr-find", extra, arena)
