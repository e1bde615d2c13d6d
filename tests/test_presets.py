"""Every `conf/experiment/` preset: it composes, its model builds for Fashion-MNIST, and the CPU
forms train end to end (on the bundled digits, a few steps) through the installed command.

The CPU form of a preset inherits everything from its full form except width, depth and
epochs, so training the CPU forms exercises the full forms' optimizer, schedule and loss
settings too; the full forms' own models are built and traced here without training them
(their compile times would dominate the suite)."""

from pathlib import Path

import pytest
from conftest import TINY, layer_records, read_summary, run_dirs

from cnnexp.cli import compose_config, register_hydra_extensions
from cnnexp.config import model_options, validate_config

PRESETS = sorted(p.stem for p in (Path(__file__).parent.parent / "conf" / "experiment").glob("*.yaml"))
CPU_PRESETS = [p for p in PRESETS if p.endswith("_cpu")]
FASHION_MNIST = (28, 28, 1)


def test_every_full_preset_has_a_cpu_form():
    full = [p for p in PRESETS if p.endswith("_fashion_mnist")]
    assert len(full) >= 8 and all(f"{p}_cpu" in CPU_PRESETS for p in full)


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_composes_and_its_model_builds_for_fashion_mnist(preset):
    register_hydra_extensions()
    cfg = compose_config("train", [f"experiment={preset}"], validate_config)
    records = layer_records(cfg.model.name, model_options(cfg.model), FASHION_MNIST)
    assert records[-1].output_shape == (1, 10)
    if preset.endswith("_cpu"):
        full = compose_config("train", [f"experiment={preset.removesuffix('_cpu')}"], validate_config)
        assert cfg.trainer.epochs < full.trainer.epochs
        assert (cfg.model.name, cfg.optim, cfg.loss) == (full.model.name, full.optim, full.loss)
        # The warmup may shrink with the budget; the schedule's kind and shape stay.
        assert {k: v for k, v in cfg.schedule.items() if k != "warmup_epochs"} == \
            {k: v for k, v in full.schedule.items() if k != "warmup_epochs"}


def test_cpu_presets_train_end_to_end(cnnexp, tmp_path):
    """One multirun over every CPU preset: one process, each preset in its own run folder."""
    result = cnnexp("train", "-m", f"experiment={','.join(CPU_PRESETS)}", *TINY, "trainer.epochs=1",
                    "trainer.batch_size=256", timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = run_dirs(tmp_path / "outputs")
    summaries = {read_summary(run)["model"]: read_summary(run) for run in runs}
    assert len(runs) == len(CPU_PRESETS)
    for model, summary in summaries.items():
        assert summary["status"] == "completed", (model, summary.get("error"))
        assert 0.0 <= summary["test_accuracy"] <= 1.0
