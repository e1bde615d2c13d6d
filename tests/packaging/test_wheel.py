"""The package as users get it: built into a wheel, installed in a fresh virtualenv, run from
an unrelated directory. Configs must ship inside the package and outputs land in that directory."""

import fnmatch
import platform
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from helpers.commands import TINY, read_summary, run_dirs
from helpers.paths import REPO

pytestmark = pytest.mark.slow  # every test here runs the installed command

NOT_SOURCE = shutil.ignore_patterns(".venv", ".git", "outputs", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache")


def test_wheel_installs_into_a_fresh_venv_and_runs_from_anywhere(tmp_path, shared_env):
    source = tmp_path / "source"
    shutil.copytree(REPO, source, ignore=NOT_SOURCE)
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path / "dist"), str(source)],
        check=True, capture_output=True,
    )
    (wheel,) = (tmp_path / "dist").glob("cnnexp-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {name for name in names if name.endswith(".yaml")}
    assert shipped == {f"cnnexp/conf/{p.relative_to(REPO / 'conf')}" for p in (REPO / "conf").rglob("*.yaml")}
    on_x86_linux = sys.platform == "linux" and platform.machine() == "x86_64"
    if on_x86_linux:  # the compiled oneDNN kernels ship in the wheel
        assert any(fnmatch.fnmatch(name, "cnnexp/kernels/_onednn*.so") for name in names), names

    venv = tmp_path / "fresh"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps", "--no-index", str(wheel)],
        check=True, capture_output=True,
    )
    # The dependencies come from this environment (no network in tests); cnnexp itself only
    # from the wheel, since a path listed in a .pth file does not run that path's .pth files.
    fresh_site = Path(subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip())
    (fresh_site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    location = subprocess.run([str(python), "-c", "import cnnexp; print(cnnexp.__file__)"],
                              cwd=tmp_path, check=True, capture_output=True, text=True).stdout
    assert location.startswith(str(venv))

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = subprocess.run([str(venv / "bin" / "cnnexp"), "train", *TINY, "trainer.epochs=1"],
                            cwd=elsewhere, env=shared_env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = run_dirs(elsewhere / "outputs" / "runs")
    summary = read_summary(run)
    assert summary["status"] == "completed"
    if on_x86_linux:  # found and loaded from the installed wheel, without LD_LIBRARY_PATH
        assert summary["kernels"] == {"conv": "onednn", "pool": "onednn", "norm": "onednn"}, result.stderr[-2000:]
