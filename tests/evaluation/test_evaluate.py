"""`cnnexp evaluate` on a LeNet trained on digits for a few seconds (the shared `lenet_run`): the test split as the run
saw it, and invariance curves over shifted, rotated and scaled copies (the warp they use: data/test_transforms.py);
a sweep folder evaluated run by run."""

import json
import shutil
from pathlib import Path

import pytest
from helpers.commands import assert_one_line_error, copy_run, read_summary, run_cnnexp
from helpers.shared import build_once
from omegaconf import OmegaConf

pytestmark = pytest.mark.slow  # every test here runs the installed command

GRIDS = ["translations=[0,2]", "rotations=[0,40]", "scales=[1.0,0.6]"]


@pytest.fixture(scope="session")
def evaluated(tmp_path_factory, lenet_run, shared_env) -> Path:
    """`cnnexp evaluate` with invariance curves on a copy of the shared LeNet run: the copy. Read only."""

    def build(root: Path) -> None:
        run = copy_run(lenet_run, root / "run")
        result = run_cnnexp("evaluate", f"run={run}", "checkpoint=last", "invariance=true", *GRIDS, cwd=root,
                            env=shared_env)
        assert result.returncode == 0, result.stderr[-3000:]
        assert str(run / "evaluate" / "invariance.png") in result.stdout and "rotation" in result.stdout

    return build_once(tmp_path_factory, "evaluated", build)[0] / "run"


def test_the_last_checkpoint_gives_the_runs_own_test_numbers(evaluated):
    evaluation = json.loads((evaluated / "evaluate" / "evaluation.json").read_text())
    summary = read_summary(evaluated)
    assert evaluation["test_accuracy"] == pytest.approx(summary["test_accuracy"], abs=1e-6)
    assert evaluation["test_loss"] == pytest.approx(summary["test_loss"], rel=1e-4)
    assert evaluation["test_examples"] == 360


def test_invariance_curves_start_at_the_plain_accuracy_and_fall_under_big_transforms(evaluated):
    invariance = json.loads((evaluated / "evaluate" / "invariance.json").read_text())
    plain = invariance["test_accuracy"]
    for kind, (identity, big) in {"translation": (0.0, 2.0), "rotation": (0.0, 40.0), "scale": (1.0, 0.6)}.items():
        points = {p["value"]: p["accuracy"] for p in invariance["curves"][kind]}
        assert set(points) == {identity, big}
        assert points[identity] == pytest.approx(plain, abs=1e-9), kind  # the identity warp changes nothing
        assert points[big] < plain - 0.05, kind  # 8x8 digits: 2 px, 40 degrees or 0.6x are big changes
    image = evaluated / "evaluate" / "invariance.png"
    assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and image.stat().st_size > 10_000


def test_a_sweep_folder_is_evaluated_run_by_run(evaluated, cnnexp, tmp_path):
    # Job 0 is the trained run; job 1 failed while training (skipped, with a warning).
    sweep = tmp_path / "sweep"
    shutil.copytree(evaluated, sweep / "0", ignore=shutil.ignore_patterns("evaluate"))
    (sweep / "1" / ".hydra").mkdir(parents=True)
    shutil.copy(evaluated / ".hydra" / "config.yaml", sweep / "1" / ".hydra")
    (sweep / "1" / "summary.json").write_text(json.dumps({"status": "failed", "error": "loss is NaN"}))
    result = cnnexp("evaluate", f"run={sweep}", "checkpoint=last", "invariance=true", *GRIDS)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"ok       {sweep / '0'}: test acc " in result.stdout
    assert f"skipped  {sweep / '1'}: status failed" in result.stderr
    copied = json.loads((sweep / "0" / "evaluate" / "invariance.json").read_text())
    original = json.loads((evaluated / "evaluate" / "invariance.json").read_text())
    assert copied["curves"] == original["curves"]
    assert not (sweep / "1" / "evaluate").exists()
    # Job 2 completed but lost its checkpoints: it fails, the others are still evaluated, exit 1.
    shutil.copytree(evaluated, sweep / "2", ignore=shutil.ignore_patterns("evaluate", "checkpoints"))
    result = cnnexp("evaluate", f"run={sweep}", "checkpoint=last")
    assert result.returncode == 1, result.stderr[-3000:]
    assert f"ok       {sweep / '0'}" in result.stdout and f"FAILED   {sweep / '2'}: " in result.stdout
    assert f"1 of 2 runs below {sweep} could not be evaluated" in result.stderr and "Traceback" not in result.stderr


def test_a_model_with_dropout_is_evaluated(cnnexp, tmp_path, preset_runs):
    # Dropout keeps a random key in the model's state: loading the weights must pass over it
    # (make reproduce-invariance evaluates mlp, simple_cnn and inception presets, all with dropout).
    # The mlp CPU preset's run (dropout 0.2, one tiny epoch) of the shared preset multirun, copied:
    # evaluate writes into the run folder.
    run = copy_run(preset_runs["mlp_fashion_mnist_cpu"], tmp_path / "run")
    assert OmegaConf.load(run / ".hydra" / "config.yaml").model.dropout == 0.2
    result = cnnexp("evaluate", f"run={run}")
    assert result.returncode == 0, result.stderr[-3000:]


def test_a_batch_beyond_the_test_split_is_the_split(cnnexp, tmp_path, evaluated):
    # It was padded to the batch size: batch_size=10**9 allocated 60 GB of padding and failed.
    run = copy_run(evaluated, tmp_path / "run", "evaluate")
    result = cnnexp("evaluate", f"run={run}", "checkpoint=last", f"batch_size={10**9}")
    assert result.returncode == 0, result.stderr[-3000:]
    evaluation = json.loads((run / "evaluate" / "evaluation.json").read_text())
    original = json.loads((evaluated / "evaluate" / "evaluation.json").read_text())
    assert evaluation["test_accuracy"] == original["test_accuracy"] and evaluation["test_examples"] == 360


def test_a_sweep_folder_without_completed_runs_is_exit_2(cnnexp, tmp_path):
    (tmp_path / "sweep" / "0").mkdir(parents=True)
    (tmp_path / "sweep" / "0" / "summary.json").write_text(json.dumps({"status": "interrupted"}))
    result = cnnexp("evaluate", f"run={tmp_path / 'sweep'}")
    assert_one_line_error(result, "none of its 1 runs is completed")


@pytest.mark.parametrize(("args", "message"), [
    ([], "say which run"),
    (["run=no/such/run"], "no such folder"),
    (["run=.", "translations=[-1]"], "invalid translations=[-1]"),
    (["run=.", "scales=[]"], "invalid scales=[]"),
    (["run=.", "invariance=maybe"], "invalid invariance='maybe'"),
    (["run=."], "not a run folder"),
])
def test_bad_input_is_one_line_and_exit_2(cnnexp, args, message):
    result = cnnexp("evaluate", *args)
    assert_one_line_error(result, message)
