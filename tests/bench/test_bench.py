"""`cnnexp bench` end to end through the installed command, on the bundled digits: every row
gets cnnexp's figures and the PyTorch reference's, and the tables land where the README says."""

from __future__ import annotations

import csv
import json

import pytest
from helpers.commands import assert_one_line_error

pytestmark = pytest.mark.slow  # every test here runs the installed command

pytest.importorskip("torch")
QUICK = ["data=digits", "bench.steps=2", "bench.repeats=2", "bench.warmup=1", "bench.eval_batches=1",
         "trainer.eval_batch_size=120"]


def _one_folder(root):
    (folder,) = (root / "outputs" / "bench").iterdir()
    return folder


def test_bench_two_presets_writes_csv_markdown_and_doc(cnnexp, tmp_path):
    done = cnnexp("bench", *QUICK, "bench.models=[lenet,resnet]", "bench.presets=cpu", "bench.doc=docs/bench.md")
    assert done.returncode == 0, done.stderr[-3000:]
    folder = _one_folder(tmp_path)
    rows = list(csv.DictReader((folder / "bench.csv").open()))
    assert [row["model"] for row in rows] == ["lenet_fashion_mnist_cpu", "resnet_fashion_mnist_cpu"]
    for row in rows:
        for column in ("train img/s", "step ms", "eval img/s", "compile s", "ref train img/s", "train ratio",
                       "GFLOP/step", "% peak"):
            assert float(row[column]) > 0, (column, row)
        # The ratio is the reference's step time over cnnexp's, from the same medians.
        assert float(row["train ratio"]) == pytest.approx(float(row["train img/s"]) / float(row["ref train img/s"]))
        assert row["reference"] == "PyTorch eager, cpu"
    assert rows[1]["params"] == "701178"  # the ResNet-18 of the CPU preset (width 0.25), as in docs/results.md
    record = json.loads((folder / "bench.json").read_text())
    assert record["peak_flops"] > 0 and record["device"]["platform"] == "cpu"
    markdown = (folder / "bench.md").read_text()
    assert "| lenet_fashion_mnist_cpu | 61,706 |" in markdown
    doc = (tmp_path / "docs" / "bench.md").read_text()
    assert "<!-- bench-cpu: begin" in doc and "- Command: `cnnexp bench data=digits" in doc
    assert "| resnet_fashion_mnist_cpu |" in doc and "torch 2.13.0" in doc


def test_bench_one_model_without_reference_features(cnnexp, tmp_path):
    """model= gives one row with that config; options the reference lacks leave its columns
    empty with the reason, and cnnexp's columns are still measured (here with augmentation)."""
    done = cnnexp("bench", *QUICK, "model=lenet", "data/augment=standard", "bench.peak=false")
    assert done.returncode == 0, done.stderr[-3000:]
    (row,) = csv.DictReader((_one_folder(tmp_path) / "bench.csv").open())
    assert row["model"] == "lenet" and float(row["train img/s"]) > 0
    assert row["ref train img/s"] == "" and row["reference"] == "no reference for data.augment"


@pytest.mark.parametrize(("override", "message"), [
    ("bench.nonsense=1", "invalid bench option"),
    ("bench.presets=tiny", "invalid bench.presets='tiny'"),
    ("trainer.precision=fp8", "trainer.precision"),
])
def test_bench_bad_options_are_one_line_errors(cnnexp, override, message):
    assert_one_line_error(cnnexp("bench", "data=digits", override), message)
