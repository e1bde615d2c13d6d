"""Errors of background machinery (Orbax's and TensorStore's write callbacks, TensorBoard's writer
thread, atexit handlers) as one line each, not a traceback per callback: after a full disk, dozens
of callbacks fail the same way, and their tracebacks would bury the line that says what happened."""

from __future__ import annotations

import sys
import threading
import traceback
from types import TracebackType


def report_background_errors_briefly() -> None:
    """Install hooks that print each distinct background error once, with where it was raised."""
    seen: set[tuple[str, str]] = set()

    def brief(kind: str, error: BaseException | None, tb: TracebackType | None) -> None:
        if error is None:
            return
        key = (type(error).__name__, str(error))
        if key in seen:
            return
        seen.add(key)
        frames = traceback.extract_tb(tb) if tb is not None else []
        where = f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
        try:
            print(f"cnnexp: warning: {kind} failed: {key[0]}: {str(error).splitlines()[0] if str(error) else ''}"
                  f"{where}", file=sys.stderr)
        except (OSError, ValueError):  # stderr itself is gone (closed at exit): nowhere left to say it
            pass

    sys.unraisablehook = lambda unraisable: brief("a background task", unraisable.exc_value, unraisable.exc_traceback)
    threading.excepthook = lambda args: brief(f"thread {args.thread.name if args.thread else '?'}",
                                              args.exc_value, args.exc_traceback)
