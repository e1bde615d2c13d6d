"""`cnnexp bench bench.stream=true`: the streamed input path's own columns, through the installed
command on the digits as an image folder; and the memory sampler those columns use."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.images import write_digits_folder

from cnnexp.bench.tree_memory import TreeMemory, tree_rss_bytes


@pytest.mark.slow
def test_bench_stream_adds_the_streamed_columns(cnnexp, tmp_path):
    root = write_digits_folder(tmp_path / "digits")
    done = cnnexp("bench", "data=image_folder", f"data.root={root}", "model=lenet", "data.stream_workers=0",
                  "trainer.batch_size=32", "bench.stream=true", "bench.reference=none", "bench.peak=false",
                  "bench.steps=2", "bench.repeats=2", "bench.eval_batches=1", "trainer.eval_batch_size=120")
    assert done.returncode == 0, done.stderr[-3000:]
    (folder,) = (tmp_path / "outputs" / "bench").iterdir()
    (row,) = csv.DictReader((folder / "bench.csv").open())
    for column in ("stream img/s", "streamed train img/s", "stream peak MiB", "train img/s"):
        assert float(row[column]) > 0, (column, row)
    assert row["stream"] == "0 Grain worker(s), images stored at 8x8x1"


def test_bench_without_stream_keeps_the_table_as_it_was():
    from cnnexp.bench.runner import COLUMNS, Row, _columns

    assert _columns([Row({"model": "lenet", "train img/s": 1.0})]) == list(COLUMNS)


def test_tree_memory_counts_what_a_child_process_holds():
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; b = bytearray(200 * 2**20); "
                               "b[::4096] = b'x' * len(b[::4096]); print(1, flush=True); time.sleep(3)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        with TreeMemory() as memory:
            assert holder.stdout.readline().strip() == "1"  # the 200 MiB are touched, so resident
            assert tree_rss_bytes(holder.pid) >= 200 * 2**20
            own = _own_rss_bytes()
    finally:
        holder.kill()
    assert memory.peak_bytes >= own + 190 * 2**20  # this process and its child, summed


def _own_rss_bytes() -> int:
    status = Path("/proc/self/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1]) * 1024
