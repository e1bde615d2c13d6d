"""Exceptions that end a command with one clear line instead of a traceback."""

import sys


class UserError(Exception):
    """Bad input or a missing resource: shown as one line, exit status 2, no traceback."""

    exit_code = 2


class TrainingDiverged(UserError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""

    exit_code = 1


class TrainingInterrupted(Exception):
    """The user pressed Ctrl-C; the state was checkpointed and the run can be resumed."""

    exit_code = 130


def report_error(error: BaseException) -> int:
    """Print `error` as the command's one line on stderr; returns the exit status it stands for."""
    print(f"cnnexp: error: {error}", file=sys.stderr)
    return getattr(error, "exit_code", 1)
