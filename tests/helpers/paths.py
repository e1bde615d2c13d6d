"""Where the repository's files are, wherever a test file sits below tests/."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "conf"
CONF_MODEL = CONF / "model"
