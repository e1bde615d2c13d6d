"""What a job does when the launcher runs jobs side by side."""

import os

import pytest
from omegaconf import OmegaConf

from cnnexp.app.launchers import share_accelerator_between_jobs

JOBLIB = OmegaConf.create({"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"})
BASIC = OmegaConf.create({"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"})


@pytest.mark.parametrize("launcher, preset, expected", [
    (JOBLIB, {}, "false"),  # parallel jobs: JAX must not take 75% of the card in the first job
    (JOBLIB, {"XLA_PYTHON_CLIENT_MEM_FRACTION": "0.3"}, None),  # the user's own choice stands
    (BASIC, {}, None),  # one job at a time: JAX's default
])
def test_parallel_jobs_share_the_accelerator(monkeypatch, launcher, preset, expected):
    for name in ("XLA_PYTHON_CLIENT_PREALLOCATE", "XLA_PYTHON_CLIENT_MEM_FRACTION", "XLA_PYTHON_CLIENT_ALLOCATOR"):
        monkeypatch.delenv(name, raising=False)
    for name, value in preset.items():
        monkeypatch.setenv(name, value)
    share_accelerator_between_jobs(launcher)
    assert os.environ.get("XLA_PYTHON_CLIENT_PREALLOCATE") == expected
