"""`make gpu-check` where no GPU is lent: it must say so and stop, not bench a CPU as a GPU."""

from __future__ import annotations

import json
import subprocess
import sys

from cnnexp.bench import gpu_check


def test_without_a_gpu_the_check_stops_at_the_environment_with_a_clear_reason(tmp_path):
    result = subprocess.run([sys.executable, "-m", "cnnexp.bench.gpu_check", "--outputs", str(tmp_path),
                             "--doc", str(tmp_path / "bench.md")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stdout + result.stderr
    stages = {stage["name"]: stage for stage in json.loads((tmp_path / "gpu-check.json").read_text())}
    assert stages["install"]["status"] == "ok"
    assert stages["environment"]["status"] == "failed"
    assert "JAX sees no GPU" in stages["environment"]["detail"]
    assert stages["bench"]["status"] == stages["train"]["status"] == "not run"
    assert not (tmp_path / "bench.md").exists()


def test_the_training_section_lists_every_run_with_its_figures(tmp_path):
    doc = tmp_path / "bench.md"
    rows = [{"run": "speedrun", "overrides": "experiment=speedrun", "exit": 0, "status": "completed",
             "train_images_per_s": 51234.5, "compile_time_s": 12.25, "train_time_s": 30.0, "wall_time_s": 50.5,
             "test_accuracy": 0.9412},
            {"run": "vgg_fashion_mnist", "overrides": "experiment=vgg_fashion_mnist trainer.epochs=2", "exit": 124,
             "status": None, "train_images_per_s": None, "compile_time_s": None, "train_time_s": None,
             "wall_time_s": None, "test_accuracy": None}]
    gpu_check._training_section(rows, doc, small=False)
    text = doc.read_text()
    assert text.startswith("# Speed")
    assert "| speedrun | `experiment=speedrun` | completed | 51,234 | 12.2 | 30.0 | 50.5 | 94.12 |" in text
    assert "| vgg_fashion_mnist | `experiment=vgg_fashion_mnist trainer.epochs=2` | exit 124 | - |" in text
    gpu_check._training_section(rows[:1], doc, small=False)  # a rerun replaces its section
    assert doc.read_text().count(gpu_check.TRAINING_SECTION + ": begin") == 1
    assert "vgg_fashion_mnist" not in doc.read_text()
