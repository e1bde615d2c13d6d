"""Composing a command's config the way Hydra will, with Hydra's errors turned into one line that
says what to type instead, and running a one-shot command as a Hydra app."""

from __future__ import annotations

import difflib
import re
import sys
from collections.abc import Callable

import hydra
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from cnnexp.app.extensions import register_hydra_extensions
from cnnexp.errors import UserError, report_error

CONFIG_MODULE = "cnnexp.conf"
_SHOWN_OPTIONS = 40  # at most this many valid names in one error line


def override_key(override: str) -> str:
    """The dotted key (or group) a command-line override sets: `+model.width=2` -> `model.width`."""
    return override.split("=", 1)[0].lstrip("+~")


def compose_config(config_name: str, overrides: list[str],
                   validate: Callable[[DictConfig], None] | None = None) -> DictConfig:
    """`conf/<config_name>.yaml` composed with `overrides` and checked by `validate`. Hydra's own
    keys (`hydra.*`, `hydra/<group>=`) are composed too, so that a wrong one is refused here rather
    than by Hydra's app (exit 1), but left out of the result. Hydra's and OmegaConf's messages
    become UserErrors."""
    from hydra import compose, initialize_config_module
    from hydra.errors import HydraException

    try:
        with initialize_config_module(CONFIG_MODULE, version_base="1.3"):
            _check_group_choices(overrides)
            try:
                cfg = compose(config_name, overrides=overrides)
            except ValueError as error:  # OmegaConf's answer to `scales.x=0`
                raise _list_index_error(error, config_name, overrides) from None
        # Every interpolation a user typed (`model.activation=${oops}`) resolves now, not halfway
        # through the command.
        OmegaConf.to_container(cfg, resolve=True)
    except (HydraException, OmegaConfBaseException) as error:
        raise _composition_error(error, config_name, overrides) from None
    if validate is not None:
        try:
            validate(cfg)
        except OmegaConfBaseException as error:  # a value the config must have and lacks (`???`)
            raise UserError(_one_line(error)) from None
    return cfg


def _one_line(error: Exception) -> str:
    """Hydra's or OmegaConf's message in one line. OmegaConf's has its message on the first line and
    then the key on lines of its own; Hydra's "Error merging override x=y" says why only in the
    OmegaConf error behind it."""
    if isinstance(error, OmegaConfBaseException) and getattr(error, "full_key", None):
        return f"{error.full_key}: {str(error).splitlines()[0]}"
    text = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
    cause = error.__cause__
    return f"{text}: {str(cause).splitlines()[0]}" if isinstance(cause, OmegaConfBaseException) else text


def _check_group_choices(overrides: list[str]) -> None:
    """Refuse a config group given something other than an option's name (`model=1`, `model=null`,
    `model=[1]`, `model={a: 1}`, `~model=[]`), which Hydra answers with a bare ValueError or
    TypeError. Runs inside Hydra's initialized context, whose config loader knows the groups."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    loader = GlobalHydra.instance().config_loader()
    for override in OverridesParser.create().parse_overrides(overrides):
        value = override.value()
        names = isinstance(value, list) and all(isinstance(v, str) for v in value)  # Hydra's multi-select
        if isinstance(value, str) or (value is None if override.is_delete() else names):
            continue
        if options := loader.get_group_options(override.key_or_group):
            text = override.get_value_element_as_str()
            raise _unknown_name(f"{override.key_or_group}={text}", text, options)


def _list_index_error(error: ValueError, config_name: str, overrides: list[str]) -> UserError:
    """An override that indexes a list by a name (`scales.x=0`), which OmegaConf answers with a bare
    ValueError; any other ValueError is not the user's and is raised."""
    from hydra import compose

    structure = compose(config_name, overrides=[o for o in overrides if "." not in override_key(o)])
    for override in overrides:
        *parents, leaf = override_key(override).split(".")
        if parents and OmegaConf.is_list(OmegaConf.select(structure, ".".join(parents))) and not leaf.isdigit():
            where = ".".join(parents)
            return UserError(f"invalid {override}: {where} is a list; give all of it ({where}=[...]) "
                             f"or one item by its index ({where}.0=...)")
    raise error


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
