"""What every part of the harness shares (owns tools/chaos/common.py): the repository's paths, the
deadlines and agency retry settings, the harness's exceptions, and the recorded signal with the
waits that honour it.

Signal handlers only record (the project's rule): SIGTERM and SIGINT set `STOP`, and every wait
of the harness (`wait_until`, `wait_progress`, `pause`, `run_command`) raises `Interrupted` when it
sees it, so the driver unwinds through its `finally` blocks: processes killed, the tmpfs unmounted,
the compose project taken down.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TypeVar

import processes

ROOT = Path(__file__).resolve().parents[2]
CLIENT_DIR = ROOT / "client"

T = TypeVar("T")

# Deadlines (seconds).
CENTRAL_START_TIMEOUT = 20.0
CENTRAL_STOP_TIMEOUT = 20.0
PROCESS_EXIT_TIMEOUT = 10.0
RUN_TIMEOUT = 120.0  # from the start of the agencies to the exit of the last one
TRIGGER_TIMEOUT = 60.0
DOCKER_TIMEOUT = 180.0
IMAGE_BUILD_TIMEOUT = 1200.0
BUILD_TIMEOUT = 600.0

SHUTDOWN_TIMEOUT = 3  # the central's SHUTDOWN_TIMEOUT
# Agency retry settings that outlast every fault.
AGENCY_RETRY = {
    "CLI_RETRY_ATTEMPTS": "100",
    "CLI_RETRY_INITIALBACKOFF": "50ms",
    "CLI_RETRY_MAXBACKOFF": "1s",
    "CLI_IO_TIMEOUT": "2s",
    "CLI_LOG_LEVEL": "INFO",
}


class RunProblem(Exception):
    """Something in a run went wrong in a way that ends it early (the central did not start, a
    wait ran out): recorded as a problem of the run."""


class HarnessError(Exception):
    """The harness itself cannot go on (no Docker, no root for the tmpfs, a build failed)."""


class Interrupted(Exception):
    """A recorded SIGTERM or SIGINT, raised by the waits (never by the handler) to unwind."""


@dataclass
class Stop:
    """The signal the handler recorded, if any: the handler only sets `signum`."""

    signum: int | None = None

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def record(self, signum: int, _frame: FrameType | None) -> None:
        self.signum = signum

    def check(self) -> None:
        """Raise Interrupted if a signal was recorded."""
        if self.signum is not None:
            raise Interrupted(f"signal {signal.Signals(self.signum).name}")


STOP = Stop()


def record_signals() -> None:
    """SIGTERM and SIGINT (Ctrl-C) only record; the waits unwind."""
    STOP.signum = None
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, STOP.record)


def pause(seconds: float) -> None:
    """time.sleep that ends early, with Interrupted, once a signal is recorded."""
    deadline = time.monotonic() + seconds
    while True:
        STOP.check()
        left = deadline - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(left, 0.05))


def wait_until(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.02) -> T:
    """processes.wait_until with RunProblem when it runs out, and Interrupted on a signal."""
    return processes.wait_until(predicate, timeout, what, interval=interval, error=RunProblem, check=STOP.check)


def wait_progress(stored_bytes: Callable[[], int], anyone_running: Callable[[], bool], target: float,
                  timeout: float = TRIGGER_TIMEOUT) -> bool:
    """Wait until bets.csv holds `target` bytes: True, or False if every agency exited first.
    The size is polled every few ms; whether agencies still run (dearer under Docker) every 0.25 s."""
    deadline = time.monotonic() + timeout
    next_look = time.monotonic() + 0.25
    while time.monotonic() < deadline:
        STOP.check()
        if stored_bytes() >= target:
            return True
        if time.monotonic() >= next_look:
            if not anyone_running():
                return False
            next_look = time.monotonic() + 0.25
        time.sleep(0.003)
    raise RunProblem(f"timed out after {timeout:.0f} s waiting for {target:.0f} bytes of bets to be stored")


def run_command(args: Sequence[str], timeout: float, *, cwd: Path = ROOT, env: dict[str, str] | None = None,
                interruptible: bool = True) -> subprocess.CompletedProcess[str]:
    """subprocess.run with captured text output in a session of its own: subprocess.TimeoutExpired
    after `timeout` seconds and, if `interruptible`, Interrupted once a signal is recorded (cleanup
    commands are not). Either way the command's process group is killed before raising."""
    deadline = time.monotonic() + timeout
    with subprocess.Popen(list(args), cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True) as proc:
        try:
            while True:
                left = deadline - time.monotonic()
                try:
                    out, err = proc.communicate(timeout=min(left, 0.1) if interruptible else left)
                    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
                except subprocess.TimeoutExpired:
                    if time.monotonic() >= deadline:
                        raise subprocess.TimeoutExpired(proc.args, timeout) from None
                    STOP.check()
        finally:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def read_text(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
