"""Where the repository's files are, wherever a test file sits below tests/."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "conf"
CONF_MODEL = CONF / "model"
# The experiment presets (conf/experiment/*.yaml) and their CPU forms.
PRESETS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
CPU_PRESETS = [p for p in PRESETS if p.endswith("_cpu")]
