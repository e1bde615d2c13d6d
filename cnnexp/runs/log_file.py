"""<run folder>/train.log: the full log of a run, written beside its console output."""

from __future__ import annotations

import logging
import sys


class RunLogFileHandler(logging.FileHandler):
    """A FileHandler that reports a failed write (a full disk) once, in one line, and then leaves
    the log to the console, instead of printing a traceback for every line logged after it."""

    failed = False

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: ARG002, N802 (logging's name)
        if not self.failed:
            self.failed = True
            error = sys.exc_info()[1]
            cause = getattr(error, "strerror", None) or error
            print(f"cnnexp: warning: could not write {self.baseFilename} ({cause}); the log goes on on the "
                  f"console only", file=sys.stderr)
