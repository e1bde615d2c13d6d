"""`make gpu-check`: what a lent GPU machine should measure, in one command of under 8 minutes.

A GPU machine may be lent for minutes, reaching no package registry, with another Python than
this project's machines. So the check comes in two halves:

- `--prepare-carry DIR` (here, where the registry is): wheels for Python 3.12 of everything the
  GPU image lacks (Hydra, OmegaConf, TFDS and their pure-Python dependencies, without what the
  image already holds: jax, torch, numpy, scipy, ...) and the Fashion-MNIST IDX files, into DIR.
- the check itself (there): installs the carried wheels and cnnexp without the registry, then
  runs stages, each under its own time limit, each failure recorded and the next stage still
  run: the environment (devices, versions), `cnnexp bench` over the full presets beside a
  torch.compile'd PyTorch reference (docs/bench.md's GPU section), and brief trainings of the
  speedrun and two full presets (docs/bench.md's GPU training section).

Only the standard library is imported at the top: on the GPU machine this module runs before
cnnexp's dependencies are installed. `--small` shrinks every stage for a CPU, to test the check
where no GPU is lent.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

# What cnnexp needs beyond the GPU image (../shared/docs/gpu-machine.md lists both sides).
CARRIED_REQUIREMENTS = (
    "hydra-core>=1.3.2,<1.4", "omegaconf>=2.3,<2.4", "tensorflow-datasets>=4.9.10,<4.10",
    "importlib_resources>=6", "tensorboardX>=2.6", "hydra-joblib-launcher>=1.2,<1.3",
    "hydra-submitit-launcher>=1.2,<1.3", "setuptools>=77",
)
# Published only as source archives: built into wheels here (all pure Python).
SOURCE_ONLY = ("antlr4-python3-runtime==4.9.3", "promise==2.3")
# Already in the GPU image, and large: never carried (the carry limit is 64 MiB in all).
# (pyarrow is not, but TFDS imports it only for formats cnnexp does not read.)
IN_IMAGE = ("numpy", "scipy", "pyarrow", "protobuf", "jax", "jaxlib", "torch", "rich", "joblib", "pillow",
            "matplotlib", "scikit_learn", "absl_py", "msgpack", "tensorboard")
FASHION_MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                       "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
CARRY_PYTHON = (3, 12)  # the GPU image's Python, which the carried wheels are built for
TRAINING_SECTION = "bench-gpu-training"
CNNEXP = (sys.executable, "-m", "cnnexp")


@dataclass
class Stage:
    name: str
    status: str = "not run"
    seconds: float = 0.0
    detail: str = ""
    rows: list[dict] = field(default_factory=list)


def prepare_carry(carry: Path) -> None:
    """Fill `carry` with the wheels and data files the GPU machine lacks; prints its size."""
    wheels = carry / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip"]
    subprocess.run([*pip, "wheel", "--quiet", "--no-deps", "-w", str(wheels), *SOURCE_ONLY], check=True)
    subprocess.run([*pip, "download", "--quiet", "--only-binary=:all:", "--find-links", str(wheels),
                    "--python-version", ".".join(map(str, CARRY_PYTHON)), "--implementation", "cp",
                    *[arg for tag in ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64")
                      for arg in ("--platform", tag)],
                    "-d", str(wheels), *CARRIED_REQUIREMENTS, *SOURCE_ONLY], check=True)
    for wheel in wheels.glob("*.whl"):
        if wheel.name.split("-")[0].lower() in IN_IMAGE:
            wheel.unlink()
    data = carry / "fashion-mnist"
    data.mkdir(exist_ok=True)
    for name in FASHION_MNIST_FILES:
        source = DEBIAN_FASHION_MNIST / name
        if not source.is_file():
            raise SystemExit(f"{source} is missing: install Debian's dataset-fashion-mnist (make dataset)")
        shutil.copy2(source, data / name)
    size = sum(f.stat().st_size for f in carry.rglob("*") if f.is_file())
    print(f"{carry}: {len(list(wheels.glob('*.whl')))} wheels and Fashion-MNIST, {size / 2**20:.1f} MiB "
          f"(carry it with the working tree: run(carry=['{carry}']))")


def _run(command: list[str], timeout_s: float, log: Path) -> tuple[int, str]:
    """Run `command`, its output teed into `log`; returns (exit status, the output's tail)."""
    start = time.perf_counter()
    with log.open("w") as out:
        try:
            process = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, timeout=max(timeout_s, 1))
            code = process.returncode
        except subprocess.TimeoutExpired:
            code = 124
    tail = log.read_text(errors="replace")[-1500:]
    print(f"  {' '.join(command)}\n  -> exit {code} after {time.perf_counter() - start:.0f} s (log {log})", flush=True)
    return code, tail


def _install(carry: Path | None, stage: Stage, timeout_s: float, logs: Path) -> None:
    """Install the carried wheels and cnnexp (editable, without the registry), unless present."""
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps"]
    if carry is None or sys.version_info[:2] != CARRY_PYTHON:
        stage.status = "ok"
        stage.detail = ("nothing carried" if carry is None else f"the carry is for Python {CARRY_PYTHON}, this is "
                        f"{sys.version_info[:2]}") + ": cnnexp and its dependencies must be installed already"
        return
    wheels = sorted((carry / "wheels").glob("*.whl")) if carry else []
    if wheels:
        code, tail = _run([*pip, *map(str, wheels)], timeout_s, logs / "install-wheels.log")
        if code:
            stage.status, stage.detail = "failed", tail
            return
    code, tail = _run([*pip, "--no-build-isolation", "-e", "."], timeout_s, logs / "install-cnnexp.log")
    stage.status, stage.detail = ("ok", f"{len(wheels)} carried wheels") if code == 0 else ("failed", tail)


def _environment(stage: Stage, allow_cpu: bool, timeout_s: float, logs: Path) -> bool:
    """The devices and versions; False when there is no GPU (and a CPU is not allowed)."""
    probe = ("import json, jax, importlib.metadata as m\n"
             "v = {}\n"
             "for p in ('jax', 'jaxlib', 'flax', 'optax', 'torch'):\n"
             "    try: v[p] = m.version(p)\n"
             "    except m.PackageNotFoundError: pass\n"
             "print(json.dumps({'devices': [str(d) for d in jax.devices()], 'platform': jax.devices()[0].platform,"
             " 'python': __import__('sys').version.split()[0], 'versions': v}))")
    code, tail = _run([sys.executable, "-c", probe], timeout_s, logs / "environment.log")
    if code:
        stage.status, stage.detail = "failed", tail
        return False
    found = json.loads(tail.strip().splitlines()[-1])
    smi = shutil.which("nvidia-smi")
    gpus = subprocess.run([smi, "-L"], capture_output=True, text=True).stdout.strip() if smi else "no nvidia-smi"
    stage.detail = f"{found['devices']}; python {found['python']}; {found['versions']}; {gpus}"
    if found["platform"] != "gpu" and not allow_cpu:
        stage.status = "failed"
        stage.detail = f"JAX sees no GPU ({stage.detail}): is the jax CUDA plugin installed?"
        return False
    stage.status = "ok"
    return True


def _bench(stage: Stage, small: bool, data_args: list[str], doc: Path, timeout_s: float, logs: Path) -> None:
    options = (["bench.presets=cpu", "bench.models=[lenet,resnet]", "bench.steps=2", "bench.repeats=2",
                "bench.eval_batches=1", "bench.peak=false", "bench.torch_compile=false"] if small else
               ["bench.presets=full", "bench.torch_compile=true", "bench.steps=20", "bench.repeats=5",
                "bench.warmup=2"])
    code, tail = _run([*CNNEXP, "bench", *options, f"bench.doc={doc}", *data_args], timeout_s, logs / "bench.log")
    stage.status, stage.detail = ("ok", f"{doc}, section bench-gpu") if code == 0 else ("failed", tail)


def _trainings(small: bool) -> list[tuple[str, list[str]]]:
    """(label, overrides): the speedrun and two full presets, each trained briefly."""
    if small:
        tiny = ["trainer.epochs=1", "data.train_fraction=0.02", "trainer.batch_size=64", "trainer.eval_batch_size=100"]
        return [("speedrun", ["experiment=speedrun", "model.width=0.25", *tiny]),
                ("lenet_fashion_mnist", ["experiment=lenet_fashion_mnist", *tiny])]
    return [("speedrun", ["experiment=speedrun"]),
            ("resnet_fashion_mnist", ["experiment=resnet_fashion_mnist", "trainer.epochs=2"]),
            ("vgg_fashion_mnist", ["experiment=vgg_fashion_mnist", "trainer.epochs=2"])]


def _train(stage: Stage, small: bool, data_args: list[str], outputs: Path, deadline: float, logs: Path) -> None:
    failures = []
    for label, overrides in _trainings(small):
        run_root = outputs / label
        code, tail = _run([*CNNEXP, "train", *overrides, *data_args, f"paths.output_dir={run_root}",
                           "trainer.progress=false"], deadline - time.perf_counter(), logs / f"train-{label}.log")
        summaries = sorted(run_root.rglob("summary.json"))
        summary = json.loads(summaries[-1].read_text()) if summaries else {}
        stage.rows.append({"run": label, "overrides": " ".join(overrides), "exit": code, **{
            key: summary.get(key) for key in ("status", "train_images_per_s", "compile_time_s", "train_time_s",
                                              "wall_time_s", "test_accuracy")}})
        if code:
            failures.append(f"{label}: exit {code}: {tail[-600:]}")
    stage.status, stage.detail = ("failed", "\n".join(failures)) if failures else ("ok", "")


def _training_section(rows: list[dict], doc: Path, small: bool) -> None:
    """docs/bench.md's GPU training section: what each brief training measured."""
    from cnnexp.bench.runner import DOC_HEADER
    from cnnexp.reports.publish import markers, replace_section  # installed by now
    from cnnexp.reports.report import markdown_table
    from cnnexp.runs.summary import environment

    def cell(value, digits: int = 1) -> str:
        return "-" if value is None else f"{value:,.{digits}f}" if isinstance(value, float) else str(value)

    env = environment()
    begin, end = markers(TRAINING_SECTION)
    table = markdown_table(
        ["run", "overrides", "status", "train img/s", "compile s", "train s", "wall s", "test accuracy %"],
        [[r["run"], f"`{r['overrides']}`", r["status"] or f"exit {r['exit']}", cell(r["train_images_per_s"], 0),
          cell(r["compile_time_s"]), cell(r["train_time_s"]), cell(r["wall_time_s"]),
          cell(None if r["test_accuracy"] is None else 100 * r["test_accuracy"], 2)] for r in rows])
    title = f"{env['device']['count']} x {env['device']['kind']}" + (" (--small, a test of the check)" if small else "")
    text = "\n".join([begin, f"## Brief training runs on {title}", "",
                      "- Command: `make gpu-check`" + (" ARGS=--small" if small else ""),
                      f"- Commit: {env.get('git_commit') or 'unknown'}", "", table, "", end])
    replace_section(doc, TRAINING_SECTION, text, header=DOC_HEADER)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cnnexp.bench.gpu_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--prepare-carry", type=Path, metavar="DIR", help="(with a registry) fill DIR and stop")
    parser.add_argument("--carry", type=Path, help="the folder --prepare-carry filled, carried to this machine")
    parser.add_argument("--small", action="store_true", help="tiny stages, a CPU allowed: a test of the check")
    parser.add_argument("--doc", type=Path, help="default docs/bench.md; with --small <outputs>/bench.md")
    parser.add_argument("--outputs", type=Path, default=Path("outputs/gpu-check"))
    parser.add_argument("--budget-s", type=float, default=450.0, help="wall-clock budget of all stages")
    args = parser.parse_args(argv)
    if args.prepare_carry:
        prepare_carry(args.prepare_carry)
        return 0

    start = time.perf_counter()
    deadline = start + args.budget_s
    args.outputs.mkdir(parents=True, exist_ok=True)
    logs = args.outputs
    doc = args.doc or (args.outputs / "bench.md" if args.small else Path("docs/bench.md"))
    data = args.carry / "fashion-mnist" if args.carry else None
    data_args = [f"data.source_dir={data.resolve()}"] if data and data.is_dir() else []
    stages = {name: Stage(name) for name in ("install", "environment", "bench", "train")}
    print(f"gpu-check: stages {', '.join(stages)}; budget {args.budget_s:.0f} s; logs in {logs}", flush=True)
    _install(args.carry, stages["install"], 120, logs)
    if stages["install"].status == "ok" and _environment(stages["environment"], args.small, 60, logs):
        remaining = deadline - time.perf_counter()
        _bench(stages["bench"], args.small, data_args, doc, 0.55 * remaining, logs)
        _train(stages["train"], args.small, data_args, args.outputs, deadline, logs)
        if stages["train"].rows:
            _training_section(stages["train"].rows, doc, args.small)
    for stage in stages.values():
        print(f"{stage.name:12s} {stage.status:8s} {stage.detail[:2000]}")
    print(f"gpu-check: {time.perf_counter() - start:.0f} s in all")
    (args.outputs / "gpu-check.json").write_text(json.dumps([vars(s) for s in stages.values()], indent=2) + "\n")
    return 0 if all(s.status == "ok" for s in stages.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
