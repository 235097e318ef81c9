"""The supervisor's signal inbox: a signal that arrives while the main loop takes the others is
never lost (the shutdown loop once rebound its list and could drop one)."""

from __future__ import annotations

import signal
import time

from lottery.signals import SignalInbox


def test_no_signal_is_lost_while_the_loop_takes_them() -> None:
    inbox = SignalInbox()
    delivered = 0

    def handler(signum: int, frame: object) -> None:
        nonlocal delivered
        delivered += 1
        inbox.record(signum, frame)

    previous = signal.signal(signal.SIGALRM, handler)
    taken = 0
    try:
        # Real signals, every 50 microseconds, land at arbitrary points of take().
        signal.setitimer(signal.ITIMER_REAL, 0.00005, 0.00005)
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            taken += len(inbox.take())
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0, 0)
        signal.signal(signal.SIGALRM, previous)
    taken += len(inbox.take())
    assert delivered > 100, "the timer delivered too few signals to prove anything"
    assert taken == delivered
