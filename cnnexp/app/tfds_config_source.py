"""A Hydra config source that makes `data=<any TFDS name>` a valid choice.

The `data` group ships a file for each dataset cnnexp knows well; for any other name this
source answers with a config that extends `data/tfds` and sets `name`, so a user can train on
`data=kmnist` without writing YAML. It sits after the packaged configs on the search path,
so the shipped files always win.
"""

from __future__ import annotations

import re

from hydra.core.object_type import ObjectType
from hydra.core.plugins import Plugins
from hydra.plugins.config_source import ConfigLoadError, ConfigResult, ConfigSource
from omegaconf import OmegaConf

from cnnexp.data import TFDS_NAME

SCHEME = "cnnexp-tfds"
SEARCH_PATH = f"{SCHEME}://data"
_DATA_CONFIG = re.compile(r"^data/([^/]+?)(\.yaml)?$")  # a `/` would make a Hydra sub-group


class TfdsDataConfigSource(ConfigSource):
    @staticmethod
    def scheme() -> str:
        return SCHEME

    def load_config(self, config_path: str) -> ConfigResult:
        name = _dataset_name(config_path)
        if name is None:
            raise ConfigLoadError(f"Config not found : {config_path}")
        config = OmegaConf.create({"defaults": ["tfds", "_self_"], "name": name})
        return ConfigResult(
            provider=self.provider, path=f"{SCHEME}://{self.path}", config=config,
            header=self._get_header_dict(""),
        )

    def available(self) -> bool:
        return True

    def is_group(self, config_path: str) -> bool:
        return False

    def is_config(self, config_path: str) -> bool:
        return _dataset_name(config_path) is not None

    def list(self, config_path: str, results_filter: ObjectType | None) -> list[str]:
        return []


def _dataset_name(config_path: str) -> str | None:
    """The dataset `data/<name>` names, if TFDS could parse the name (else it is no choice at all)."""
    match = _DATA_CONFIG.match(config_path)
    return match.group(1) if match and TFDS_NAME.fullmatch(match.group(1)) else None


def register() -> None:
    """Make the `cnnexp-tfds://` scheme known to Hydra (idempotent)."""
    Plugins.instance().register(TfdsDataConfigSource)
