"""The resident memory of this process and every process it started (Grain's workers), sampled in
the background: what a streamed run holds at its peak, which one process's ru_maxrss misses."""

from __future__ import annotations

import os
import threading
from pathlib import Path

SAMPLE_S = 0.05


def _children(pid: int) -> list[int]:
    found = []
    for tasks in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found += [int(child) for child in tasks.read_text().split()]
        except OSError:  # the thread ended
            pass
    return found


def tree_rss_bytes(pid: int) -> int:
    """Resident bytes of `pid` and its descendants now (Linux /proc; 0 where unreadable)."""
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:  # it exited meanwhile
            continue
        pending += _children(current)
    return total


class TreeMemory:
    """`with TreeMemory() as memory: ...` then `memory.peak_bytes`: the largest sum seen inside the block."""

    def __init__(self, pid: int | None = None):
        self.pid, self.peak_bytes = pid or os.getpid(), 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            self.peak_bytes = max(self.peak_bytes, tree_rss_bytes(self.pid))

    def __enter__(self) -> TreeMemory:
        self.peak_bytes = tree_rss_bytes(self.pid)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_bytes = max(self.peak_bytes, tree_rss_bytes(self.pid))


def main(argv: list[str]) -> int:
    """`python -m cnnexp.bench.tree_memory <command ...>`: run the command, then print the peak
    resident memory of it and its descendants (a streamed `cnnexp train`, say)."""
    import subprocess
    import sys

    if not argv:
        print(main.__doc__.strip(), file=sys.stderr)
        return 2
    process = subprocess.Popen(argv)
    with TreeMemory(process.pid) as memory:
        status = process.wait()
    print(f"peak resident memory of the command and its processes: {memory.peak_bytes / 2**20:,.0f} MiB",
          file=sys.stderr)
    return status


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
