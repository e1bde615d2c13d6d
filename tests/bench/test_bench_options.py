"""`bench.` options checked before any model is compiled or anything is written: each of these used
to fail minutes later (a division by zero, a traceback while writing the files), or not at all."""

from __future__ import annotations

import re

import pytest

from cnnexp.bench.runner import bench_options
from cnnexp.errors import UserError


@pytest.mark.parametrize("override, message", [
    ("bench.steps=0", "invalid bench.steps=0: must be an integer >= 1"),
    ("bench.repeats=true", "invalid bench.repeats=True: must be an integer >= 1"),
    ("bench.eval_batches=1.5", "invalid bench.eval_batches=1.5"),
    ("bench.warmup=-1", "invalid bench.warmup=-1: must be an integer >= 0"),
    ("bench.models=[]", "invalid bench.models=[]: must be a non-empty list of model names"),
    ("bench.peak=maybe", "invalid bench.peak='maybe': must be true or false"),
    ("bench.stream=1", "invalid bench.stream=1: must be true or false"),
    ("bench.torch_compile=1", "invalid bench.torch_compile=1: must be true, false or auto"),
    ("bench.presets=tiny", "invalid bench.presets='tiny': choose one of auto, cpu, full"),
    ("bench.reference=pytorch", "invalid bench.reference='pytorch': choose one of auto, none, torch"),
    ("bench.steps=${oops}", "invalid bench option: Interpolation key 'oops' not found"),
])
def test_a_wrong_value_is_one_line(override, message):
    with pytest.raises(UserError, match=re.escape(message)):
        bench_options([override])


def test_files_and_folders_must_fit_where_they_go(tmp_path):
    (tmp_path / "notes.txt").write_text("not a folder\n")
    with pytest.raises(UserError, match="invalid bench.output_dir=.*: must be a folder that exists or can be created"):
        bench_options([f"bench.output_dir={tmp_path / 'notes.txt' / 'bench'}"])
    with pytest.raises(UserError, match="invalid bench.doc=.*: must be null or the path of a Markdown file"):
        bench_options([f"bench.doc={tmp_path}"])


def test_the_defaults_and_tiny_settings_pass(tmp_path):
    options = bench_options(["bench.steps=1", "bench.warmup=0", f"bench.doc={tmp_path / 'docs' / 'bench.md'}"])
    assert options.steps == 1 and options.models[0] == "lenet"
