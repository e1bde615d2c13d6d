"""Every `conf/experiment/` preset: it composes, its model builds for Fashion-MNIST, and the CPU
forms train end to end (on the bundled digits, a few steps) through the installed command.

The CPU form of a preset inherits everything from its full form except width, depth and
epochs, so training the CPU forms exercises the full forms' optimizer, schedule and loss
settings too; the full forms' own models are built and traced here without training them
(their compile times would dominate the suite)."""

import pytest
from helpers.commands import read_summary
from helpers.configs import compose_with_hydra
from helpers.models import layer_records, marked_slow
from helpers.paths import CONF, CPU_PRESETS, PRESETS
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from cnnexp.app.compose import compose_config
from cnnexp.app.extensions import register_hydra_extensions
from cnnexp.config import validate_config
from cnnexp.models.registry import options_of

FASHION_MNIST = (28, 28, 1)


def test_every_full_preset_has_a_cpu_form():
    full = [p for p in PRESETS if p.endswith("_fashion_mnist")]
    assert len(full) >= 8 and all(f"{p}_cpu" in CPU_PRESETS for p in full)


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_composes_and_its_model_builds_for_fashion_mnist(preset):
    register_hydra_extensions()
    needs_a_run = ["init_from=outputs/runs/pretrained"] if preset in (
        "finetune_tune", "finetune_slow_body", "finetune_frozen") else []
    cfg = compose_config("train", [f"experiment={preset}", *needs_a_run], validate_config)
    records = layer_records(cfg.model.name, options_of(cfg.model), FASHION_MNIST)
    assert records[-1].output_shape == (1, 10)
    if preset.endswith("_cpu"):
        full = compose_config("train", [f"experiment={preset.removesuffix('_cpu')}"], validate_config)
        assert cfg.trainer.epochs < full.trainer.epochs
        assert (cfg.model.name, cfg.optim, cfg.loss) == (full.model.name, full.optim, full.loss)
        # The warmup may shrink with the budget; the schedule's kind and shape stay.
        assert {k: v for k, v in cfg.schedule.items() if k != "warmup_epochs"} == \
            {k: v for k, v in full.schedule.items() if k != "warmup_epochs"}


@pytest.mark.slow
def test_cpu_presets_train_end_to_end(preset_runs):
    """One multirun over every CPU preset (the shared `preset_runs`, which trains lenet_classic
    too): one process, each preset in its own run folder."""
    assert sorted(preset_runs) == sorted([*CPU_PRESETS, "lenet_classic"])
    assert len(set(preset_runs.values())) == len(preset_runs)
    runs = [preset_runs[preset] for preset in CPU_PRESETS]
    summaries = {read_summary(run)["model"]: read_summary(run) for run in runs}
    assert len(summaries) == len(CPU_PRESETS)
    for model, summary in summaries.items():
        assert summary["status"] == "completed", (model, summary.get("error"))
        assert 0.0 <= summary["test_accuracy"] <= 1.0


SEARCHES = sorted(p.stem for p in (CONF / "hparams_search").glob("*.yaml"))


@pytest.mark.parametrize("search", marked_slow(SEARCHES, ("simple_cnn_design",)))  # it builds every design
def test_hparams_search_preset_composes_into_an_optuna_search(search):
    cfg = compose_with_hydra([f"hparams_search={search}"])
    validate_config(cfg)
    assert cfg.hydra.sweeper._target_.endswith("OptunaSweeper")
    assert cfg.hydra.sweeper.direction == "maximize" and cfg.objective == "best_val_accuracy"
    assert compose_with_hydra([f"hparams_search={search}", "objective=test_loss"]).hydra.sweeper.direction == "minimize"
    parser = OverridesParser.create()
    for key, space in cfg.hydra.sweeper.params.items():
        assert OmegaConf.select(cfg, key) is not None, f"{search} searches {key}, which the config does not have"
        override = parser.parse_override(f"{key}={space}")
        if override.value_type is not None and override.value_type.name == "CHOICE_SWEEP":
            for value in override.sweep_string_iterator():  # every choice is valid and its model builds
                chosen = compose_config("train", [f"hparams_search={search}", f"{key}={value}"], validate_config)
                records = layer_records(chosen.model.name, options_of(chosen.model), FASHION_MNIST)
                assert records[-1].output_shape == (1, 10)


def test_slurm_launcher_preset_composes():
    launcher = compose_with_hydra(["hydra/launcher=slurm"]).hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher") and launcher.gpus_per_node == 1


@pytest.mark.slow
def test_classic_experiment_preset_trains(preset_runs):
    run = preset_runs["lenet_classic"]  # trained by the multirun of the CPU presets
    config = (run / ".hydra" / "config.yaml").read_text()
    assert "activation: tanh" in config and "pool: avg" in config and "name: momentum" in config
    assert read_summary(run)["status"] == "completed"
