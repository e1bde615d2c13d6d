"""Exceptions that end a command with one clear line instead of a traceback."""

import sys


class UserError(Exception):
    """Bad input or a missing resource: shown as one line, exit status 2, no traceback."""

    exit_code = 2


class TrainingDiverged(UserError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""

    exit_code = 1


class TrainingInterrupted(Exception):
    """A stop signal (Ctrl-C, SIGTERM, a scheduler's preemption) ended training after a checkpoint;
    the run can be resumed. The exit status is the shell's for that signal: 128 + its number (130
    for Ctrl-C, 143 for SIGTERM)."""

    def __init__(self, message: str, signal_name: str | None = None, signal_number: int = 2):
        super().__init__(message)
        self.signal_name = signal_name
        self.signal_number = signal_number
        self.exit_code = 128 + signal_number


class RunFolderWriteError(Exception):
    """Writing a file of the run folder failed (a full disk, a quota, a read-only mount). The run
    stopped; its last complete checkpoint is kept. Exit status 1, one line, no traceback."""

    exit_code = 1

    def __init__(self, path: object, error: BaseException | str):
        if isinstance(error, OSError) and error.strerror:
            cause = error.strerror
        else:
            cause = (str(error).splitlines() or [type(error).__name__])[0]
        super().__init__(f"could not write {path}: {cause}")
        self.path, self.cause = path, cause


def report_error(error: BaseException) -> int:
    """Print `error` as the command's one line on stderr; returns the exit status it stands for."""
    print(f"cnnexp: error: {error}", file=sys.stderr)
    return getattr(error, "exit_code", 1)
