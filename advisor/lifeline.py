"""A child process that dies with its parent: measuring processes must never outlive `advisor bench`.

On Linux the kernel sends the child SIGTERM when its parent dies (prctl PR_SET_PDEATHSIG); elsewhere a
watchdog thread notices that the parent is gone (the child is re-parented) and ends the process.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

PR_SET_PDEATHSIG = 1
WATCH_INTERVAL_S = 0.5


def die_with_parent(parent_pid: int | None = None) -> str:
    """Arrange for this process to end when its parent does. Returns how: "prctl" or "watchdog"."""
    parent = parent_pid if parent_pid is not None else os.getppid()
    how = "watchdog"
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) == 0:
                how = "prctl"
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)
    if how == "watchdog":
        _start_watchdog(parent)
    return how


def _start_watchdog(parent: int) -> None:
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(WATCH_INTERVAL_S):
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="advisor-lifeline", daemon=True).start()
