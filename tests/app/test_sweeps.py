"""What a job of a continued sweep does with what its folder holds, and the command line that
continues a sweep."""

import json

import pytest

from cnnexp.app.sweeps import JobPlan, continuation_overrides, plan_job, record_sweep
from cnnexp.errors import UserError


def _job(tmp_path, status: str, fingerprint: str = "abc"):
    run = tmp_path / "0"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps({"status": status, "config_fingerprint": fingerprint}))
    return run


@pytest.mark.parametrize(("status", "rerun_failed", "plan"), [
    ("completed", False, JobPlan.KEEP),
    ("completed", True, JobPlan.KEEP),
    ("interrupted", False, JobPlan.RESUME),
    ("running", False, JobPlan.RESUME),  # killed: continued from its last checkpoint
    ("failed", False, JobPlan.KEEP),
    ("failed", True, JobPlan.RESUME),
])
def test_a_continued_sweep_keeps_finished_jobs_and_resumes_the_others(tmp_path, status, rerun_failed, plan):
    run = _job(tmp_path, status)
    assert plan_job(run, "abc", continuing=True, rerun_failed=rerun_failed) is plan


def test_a_job_with_nothing_in_its_folder_trains(tmp_path):
    assert plan_job(tmp_path / "0", "abc", continuing=True, rerun_failed=False) is JobPlan.TRAIN
    assert plan_job(tmp_path / "0", "abc", continuing=False, rerun_failed=False) is JobPlan.TRAIN


def test_a_run_in_the_folder_is_never_overwritten(tmp_path):
    run = _job(tmp_path, "completed")
    with pytest.raises(UserError, match=f"resume={tmp_path}"):
        plan_job(run, "abc", continuing=False, rerun_failed=False)
    with pytest.raises(UserError, match="holds a run of another config"):
        plan_job(run, "other", continuing=True, rerun_failed=False)


def test_continuing_reuses_the_sweeps_overrides_and_those_given_now_win(tmp_path):
    record_sweep(tmp_path, ["model=lenet", "seed=0,1", f"resume={tmp_path}"], ["hydra/launcher=joblib",
                                                                              "hydra.mode=MULTIRUN"])
    overrides = continuation_overrides(tmp_path, ["seed=0,1,2", "resume_failed=true", f"resume={tmp_path}"])
    assert overrides == ["hydra/launcher=joblib", "model=lenet", "seed=0,1,2", "resume_failed=true",
                         f"hydra.sweep.dir='{tmp_path}'", f"resume='{tmp_path}'"]


def test_continuing_a_folder_that_is_no_sweep_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="not a sweep folder"):
        continuation_overrides(tmp_path, [])
