"""Generic checks on config values: a leaf every package validates its own options with.

YAML's `true`/`false` arrive as Python booleans, which are ints to `isinstance`; none of these
checks lets a boolean pass for a number, so `trainer.epochs=true` is refused, not one epoch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from pathlib import Path

from cnnexp.errors import UserError

# (dotted key, value, is_valid, what a valid value is: "an integer >= 1")
Check = tuple[str, object, Callable[[object], bool], str]


def is_number(value: object) -> bool:
    """An int or float from the config, not a boolean."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_finite(value: object) -> bool:
    """A number that is neither infinite nor NaN (`optim.lr=inf` trains nothing but NaNs)."""
    return is_number(value) and math.isfinite(value)


def is_integer(value: object) -> bool:
    """An int from the config, not a boolean."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_positive_int(value: object) -> bool:
    """An integer > 0, not a boolean."""
    return is_integer(value) and value > 0


def can_be_folder(value: object) -> bool:
    """A path string that is a folder, or could become one: its nearest existing ancestor is a
    folder (`notes.txt`, `notes.txt/runs` and `/dev/null/x` are refused). Nothing is created."""
    if not isinstance(value, str):
        return False
    try:
        path = Path(value).expanduser().absolute()
        while not path.exists():
            path = path.parent
        return path.is_dir()
    except (OSError, ValueError, RuntimeError):  # a name too long, a NUL byte, `~nobody`
        return False


def folder_at(key: str, value: object) -> Check:
    """The check "`key` is a folder that exists or can be created" (nothing is created)."""
    return key, value, can_be_folder, "a folder that exists or can be created (not a file, nor inside one)"


def seed_at(key: str, value: object) -> Check:
    """The check "`key` is a random seed": JAX takes a 64-bit one."""
    return key, value, lambda v: is_integer(v) and 0 <= v < 2**63, "an integer >= 0 and < 2^63"


def integer_at_least(key: str, value: object, minimum: int) -> Check:
    """The check "`key` is an integer >= `minimum`"."""
    return key, value, lambda v: is_integer(v) and v >= minimum, f"an integer >= {minimum}"


def check_values(checks: Iterable[Check]) -> None:
    """Raise a UserError for the first check whose value is invalid."""
    for key, value, ok, expected in checks:
        if not ok(value):
            raise UserError(f"invalid {key}={value!r}: must be {expected}")


def check_choice(key: str, value: object, choices: Iterable[str]) -> None:
    """A UserError listing the valid names when `value` is not one of `choices` (a table's keys)."""
    names = sorted(choices)
    if value not in names:
        raise UserError(f"invalid {key}={value!r}: choose one of {', '.join(names)}")
