"""`python -m cnnexp.bench.layers --quick` runs end to end and records both implementations' timings."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # every test here runs the installed command


def test_quick_bench_writes_both_implementations_timings(shared_env, tmp_path):
    done = subprocess.run([sys.executable, "-m", "cnnexp.bench.layers", "--quick", "--repeats", "1",
                           "--match", "lenet|64->64|S2"], cwd=tmp_path,
                          env=shared_env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    (path,) = (tmp_path / "outputs" / "bench" / "layers").glob("*.json")
    assert f"wrote outputs/bench/layers/{path.name}" in done.stdout
    record = json.loads(path.read_text())
    assert record["cpu_count"] >= 1 and record["versions"]["jax"] and record["device"]["platform"]
    cases = {(case["name"], case["work"], case["reference_uses"]): case for case in record["cases"]}
    assert ("conv 3x3 64->64 32x32", "fwd+bwd", "im2col") in cases
    assert ("max pool 2x2/2 28x28x6 (S2)", "fwd+bwd", "ref pool") in cases
    assert ("lenet", "train step", "im2col") in cases
    assert not any("resnet" in name for name, _, _ in cases)  # --match left it out
    for case in cases.values():
        for side in ("library", "reference"):
            assert case[side]["median_ms"] > 0 and len(case[side]["times_ms"]) == 1
        assert case["speedup"] > 0
