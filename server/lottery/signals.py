"""Signals as the central's processes take them: handlers only record, the main loop acts.

`SignalInbox` is where the supervisor's handlers put what arrived; `signal.set_wakeup_fd`
(wakeup.py) wakes the loop's selector, which takes them. `describe_status` says how a child
ended, for the log.
"""

from __future__ import annotations

import collections
import os
import signal


class SignalInbox:
    """Where signal handlers record signals, to be taken by the main loop.

    The handler only appends to a deque and the loop only pops from it, so a signal that
    arrives while the loop is taking the others is never lost (no list is ever rebound)."""

    def __init__(self) -> None:
        self._signals: collections.deque[int] = collections.deque()

    def record(self, signum: int, frame: object = None) -> None:
        self._signals.append(signum)

    def take(self) -> list[int]:
        taken = []
        while self._signals:
            taken.append(self._signals.popleft())
        return taken


def describe_status(status: int) -> str:
    """A wait status in words: 'exit code 0', 'killed by SIGKILL'."""
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"
