"""The experiments of `make reproduce-activations` and `make reproduce-invariance`: their sweeps
compose, the activations preset runs as a sweep and is reported per activation, and each section
the reproduce targets publish is in docs/results.md, measured or saying it was not run."""

import csv
import itertools
import json
import re
import shlex
import subprocess

import pytest
from helpers.commands import TINY, read_summary, run_dirs
from helpers.configs import compose_with_hydra
from helpers.paths import REPO
from omegaconf import OmegaConf

from cnnexp.app.compose import compose_config
from cnnexp.app.extensions import register_hydra_extensions
from cnnexp.config import validate_config
from cnnexp.reports.publish import _TITLES

ACTIVATIONS = ["relu", "leaky_relu", "maxout", "tanh", "sigmoid"]


def dry_run(target: str) -> str:
    """The shell commands `make <target>` would run (`make -n` runs none of them), without the
    ARGS a `make test ARGS=...` around the tests passes down."""
    return subprocess.run(["make", "-n", target, "ARGS="], cwd=REPO, capture_output=True, text=True,
                          check=True).stdout


def swept_overrides(commands: str) -> list[str]:
    """The overrides of the target's `cnnexp train -m` (without the seeds and the sweep folder)."""
    line = next(line for line in commands.splitlines() if "cnnexp train -m" in line)
    words = shlex.split(line.split(";")[0])
    return [w for w in words[words.index("-m") + 1:] if not w.startswith(("seed=", "hydra.sweep.dir="))]


def test_activations_preset_is_lenets_cpu_preset_swept_over_five_activations():
    assert compose_with_hydra(["experiment=activations"]).hydra.sweeper.params["model.activation"] == \
        ",".join(ACTIVATIONS)
    register_hydra_extensions()
    assert compose_config("train", ["experiment=activations"], validate_config) == \
        compose_config("train", ["experiment=lenet_fashion_mnist_cpu"], validate_config)
    assert swept_overrides(dry_run("reproduce-activations")) == ["experiment=activations"]


@pytest.mark.slow
def test_activations_sweep_trains_and_is_reported_per_activation(cnnexp, tmp_path):
    # The command line narrows the preset's sweep to two activations (Hydra's basic sweeper lets a
    # command-line sweep of a key replace the preset's).
    result = cnnexp("train", "-m", "experiment=activations", "model.activation=relu,maxout", *TINY,
                    "trainer.epochs=1")
    assert result.returncode == 0, result.stderr[-3000:]
    runs = run_dirs(tmp_path / "outputs")
    assert [read_summary(run)["status"] for run in runs] == ["completed", "completed"]
    (sweep,) = {run.parent for run in runs}
    report = cnnexp("report", str(sweep))
    assert report.returncode == 0, report.stderr[-3000:]
    with (sweep / "report.csv").open(newline="") as handle:
        assert [row["model.activation"] for row in csv.DictReader(handle)] == ["relu", "maxout"]
    for curve in ("train_loss", "val_loss", "val_accuracy"):
        assert (sweep / "plots" / f"{curve}.png").is_file()


def test_invariance_target_trains_evaluates_then_publishes_a_sweep_that_composes():
    commands = dry_run("reproduce-invariance")
    overrides = swept_overrides(commands)
    sweep_dir = re.search(r"hydra\.sweep\.dir=(\S+)", commands).group(1)
    evaluate = commands.index(f"cnnexp evaluate invariance=true run={sweep_dir}")
    assert commands.index("cnnexp train -m") < evaluate < commands.index("--section invariance")
    register_hydra_extensions()
    choices = [[f"{override.split('=')[0]}={value}" for value in override.split("=", 1)[1].split(",")]
               for override in overrides]
    seen = set()
    for combination in itertools.product(*choices):
        cfg = compose_config("train", list(combination), validate_config)
        seen.add((cfg.model.name, json.dumps(OmegaConf.to_container(cfg.data.augment), sort_keys=True)))
    assert {model for model, _ in seen} == {"lenet", "simple_cnn", "mlp", "resnet", "inception"}
    assert len(seen) == 10  # two different augmentations of each model


def test_every_published_section_has_a_title_and_says_not_run_until_measured():
    targets = re.search(r"^\.PHONY:(.*)$", (REPO / "Makefile").read_text(), re.MULTILINE).group(1).split()
    commands = "\n".join(dry_run(target) for target in targets if target.startswith("reproduce-"))
    published = set(re.findall(r"--section (\S+)", commands))
    assert {"zoo-cpu", "activations", "invariance"} <= published <= set(_TITLES)
    text = (REPO / "docs" / "results.md").read_text()
    for section, title in _TITLES.items():
        body = text.split(f"<!-- {section}: begin")[1].split(f"<!-- {section}: end -->")[0]
        assert f"## {title}" in body
        assert "- Command: `make " in body or "not run yet" in body.lower(), section


def test_make_help_lists_every_target():
    makefile = (REPO / "Makefile").read_text()
    phony = re.search(r"^\.PHONY:(.*)$", makefile, re.MULTILINE).group(1).split()
    shown = subprocess.run(["make", "-s", "help"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    listed = re.findall(r"^\s+make (\S+)", shown, re.MULTILINE)
    assert sorted(listed) == sorted(phony)
    assert {"reproduce-zoo", "reproduce-zoo-gpu"} <= set(listed)


def test_results_doc_has_measured_sections_or_says_not_run():
    text = (REPO / "docs" / "results.md").read_text()
    for section in ("zoo-cpu", "zoo-gpu"):
        body = text.split(f"<!-- {section}: begin")[1].split(f"<!-- {section}: end -->")[0]
        assert "| lenet" in body or "not run" in body.lower()
        for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", body):
            assert (REPO / "docs" / link).is_file()
