"""Why training checkpoints between epoch ends: a request to stop from outside, or the clock.

Requests to stop a run from outside: Ctrl-C (SIGINT), a scheduler's SIGTERM (Slurm preemption and
`scancel`, Kubernetes eviction, `kill`), and the signal with which submitit announces a preemption
or a time limit (SIGUSR2 unless SUBMITIT_PREEMPT_SIGNAL says otherwise).

Each one becomes a request the training loop honours at its next step: it saves a checkpoint there
and stops, so nothing trained is lost. Once stopped, a signal that someone else was waiting for
(submitit's handler, which requeues the job) is handed on to them (`hand_on`).
"""

from __future__ import annotations

import logging
import os
import signal
import time
from types import FrameType

from cnnexp.training.distributed import any_process

log = logging.getLogger("cnnexp.train")


def stop_signals() -> tuple[signal.Signals, ...]:
    """The signals that stop a run with a checkpoint."""
    submitit = getattr(signal, f"SIG{os.environ.get('SUBMITIT_PREEMPT_SIGNAL', 'USR2')}", signal.SIGUSR2)
    return tuple(dict.fromkeys((signal.SIGINT, signal.SIGTERM, signal.Signals(submitit))))


class StopRequests:
    """While active, turns the stop signals into a request (`received`) instead of ending the
    process. A second Ctrl-C interrupts at once, as users expect when a save takes too long; a
    repeated SIGTERM is only logged (schedulers resend it)."""

    def __init__(self, processes: int):
        self.received: signal.Signals | None = None
        self._previous: dict[signal.Signals, object] = {}
        self._single_process = processes == 1  # asked once: stop_now runs every step

    def __enter__(self) -> StopRequests:
        for signum in stop_signals():
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:  # noqa: ARG002 (handler signature)
        name = signal.Signals(signum).name
        if self.received is not None:
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            log.warning("%s again: still saving the checkpoint", name)
            return
        self.received = signal.Signals(signum)
        more = " (Ctrl-C again to abort at once)" if signum == signal.SIGINT else ""
        log.warning("%s received: saving a checkpoint and stopping%s", name, more)

    def stop_now(self, at_sync_point: bool) -> bool:
        """Whether the loop stops after this step. One process stops at the next step; several stop
        together (each saves its part of the checkpoint) at the next point where they sync anyway,
        a log point or an epoch's end, if a signal reached any of them."""
        if self._single_process:
            return self.received is not None
        return at_sync_point and any_process(self.received is not None)

    def __exit__(self, *exc: object) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)


def hand_on(signum: signal.Signals) -> bool:
    """Call the Python handler that was installed for `signum` before the run (submitit's, which
    requeues the job on its preemption signal), now that the checkpoint is saved. False if there is
    none: the default actions (end the process, KeyboardInterrupt) are what cnnexp replaces."""
    handler = signal.getsignal(signum)
    if not callable(handler) or handler is signal.default_int_handler:
        return False
    handler(signum, None)
    return True


class CheckpointClock:
    """When a checkpoint falls due between epoch ends: every `minutes` of training
    (`trainer.checkpoint_every_minutes`; None: never), so that a crash or a SIGTERM that leaves no
    time to save loses at most that much of a long epoch. Several processes save together, so they
    agree at the points where they sync anyway."""

    def __init__(self, minutes: float | None, processes: int):
        self._period_s = None if minutes is None else 60.0 * minutes
        self._single_process = processes == 1
        self.restart()

    def restart(self) -> None:
        """A checkpoint was just saved: the next one is due a period from now."""
        self._last = time.monotonic()

    def due(self, at_sync_point: bool) -> bool:
        if self._period_s is None:
            return False
        late = time.monotonic() - self._last >= self._period_s
        if self._single_process:
            return late
        return at_sync_point and any_process(late)
