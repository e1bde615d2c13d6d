"""Composing a command's config the way Hydra will, with Hydra's errors turned into one line that
says what to type instead, and running a one-shot command as a Hydra app."""

from __future__ import annotations

import difflib
import re
import sys
from collections.abc import Callable

import hydra
from omegaconf import DictConfig, OmegaConf

from cnnexp.app.extensions import register_hydra_extensions
from cnnexp.errors import UserError, report_error

CONFIG_MODULE = "cnnexp.conf"
_SHOWN_OPTIONS = 40  # at most this many valid names in one error line


def override_key(override: str) -> str:
    """The dotted key (or group) a command-line override sets: `+model.width=2` -> `model.width`."""
    return override.split("=", 1)[0].lstrip("+~")


def compose_config(config_name: str, overrides: list[str],
                   validate: Callable[[DictConfig], None] | None = None) -> DictConfig:
    """`conf/<config_name>.yaml` composed with `overrides` (Hydra's own keys left to Hydra), checked
    by `validate`. Hydra's and OmegaConf's messages become UserErrors."""
    from hydra import compose, initialize_config_module
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    job_overrides = [o for o in overrides if not o.lstrip("+~").startswith(("hydra.", "hydra/"))]
    try:
        with initialize_config_module(CONFIG_MODULE, version_base="1.3"):
            cfg = compose(config_name, overrides=job_overrides)
    except (HydraException, OmegaConfBaseException) as error:
        raise _composition_error(error, config_name, job_overrides) from None
    if validate is not None:
        try:
            validate(cfg)
        except OmegaConfBaseException as error:  # a value the config must have and lacks (`???`)
            raise UserError(_one_line(error)) from None
    return cfg


def _one_line(error: Exception) -> str:
    return " ".join(line.strip() for line in str(error).splitlines() if line.strip())


def _composition_error(error: Exception, config_name: str, overrides: list[str]) -> UserError:
    """The shortest true answer to a failed composition: for an unknown group option, the valid
    ones and the closest; for an unknown key, the keys that exist there; else Hydra's message."""
    text = str(error)
    if missing := re.search(r"Could not find '([\w/]+)/([^']+)'", text):
        group, name = missing.groups()
        listed = re.search(r"Available options in '[^']+':\n(.*?)(?:\n\S|\Z)", text, flags=re.S)
        options = [line.strip() for line in listed.group(1).splitlines() if line.strip()] if listed else []
        return _unknown_name(f"{group}={name}", name, options)
    if unknown := re.search(r"Could not override '([^']+)'", text):
        return _unknown_key(unknown.group(1), config_name, overrides) or UserError(_one_line(error))
    return UserError(_one_line(error))


def _unknown_name(given: str, name: str, options: list[str]) -> UserError:
    close = difflib.get_close_matches(name, options, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    shown = ", ".join(options[:_SHOWN_OPTIONS]) + (", ..." if len(options) > _SHOWN_OPTIONS else "")
    return UserError(f"unknown {given}{hint}; choose one of {shown}" if options else f"unknown {given}{hint}")


def _unknown_key(key: str, config_name: str, overrides: list[str]) -> UserError | None:
    """For `model.<x>`, the model registry's own answer (the options the chosen model takes); for
    other keys, the keys that exist beside it. None when the config cannot be composed without it."""
    from cnnexp.models import accepted_options

    try:
        cfg = compose_config(config_name, [o for o in overrides if override_key(o) != key])
    except UserError:
        return None
    *parents, leaf = key.split(".")
    if parents == ["model"] and OmegaConf.select(cfg, "model.name") is not None:
        options = accepted_options(cfg.model.name)
        close = difflib.get_close_matches(leaf, options, n=1)
        hint = f" (did you mean model.{close[0]}?)" if close else ""
        return UserError(f"model {cfg.model.name!r} has no option model.{leaf}{hint}; "
                         f"its options: {', '.join('model.' + o for o in options)}")
    node = OmegaConf.select(cfg, ".".join(parents)) if parents else cfg
    if not OmegaConf.is_dict(node):
        return None
    where = ".".join(parents) or config_name
    keys = [k for k in node if k != "hydra"]
    close = difflib.get_close_matches(leaf, keys, n=1)
    hint = f" (did you mean {'.'.join([*parents, close[0]])}?)" if close else ""
    return UserError(f"{where} has no key {leaf!r}{hint}; its keys: {', '.join(map(str, keys))}")


def run_config_command(name: str, args: list[str], validate: Callable[[DictConfig], None],
                       action: Callable[[DictConfig], None]) -> int:
    """A one-shot command over `conf/<name>.yaml`. Plain overrides are composed by `compose_config`,
    so bad input is one line and exit 2 as for train; flags (--help, --cfg job) go to Hydra."""
    register_hydra_extensions()
    if "-m" in args or "--multirun" in args:
        raise UserError(f"{name} does one thing once; -m sweeps are for train")
    if any(a.startswith("-") for a in args):  # --help, --cfg job, ...: Hydra's own flags

        @hydra.main(version_base="1.3", config_path=f"pkg://{CONFIG_MODULE}", config_name=name)
        def hydra_task(cfg: DictConfig) -> None:
            try:
                action(cfg)
            except UserError as error:
                sys.exit(report_error(error))

        sys.argv = [f"cnnexp {name}", *args]
        hydra_task()
        return 0
    action(compose_config(name, args, validate))
    return 0
