"""The central's memory during a benchmark run (owns tools/bench_memory.py), for tools/bench.py.

Two figures, both over the central's processes (the supervisor and its workers):

- the sum of their peak resident sets (VmHWM): each process's own high-water mark, read once at
  the end. A page a worker shares with the supervisor since the fork (the interpreter's heap as it
  was, the shared libraries, the shared board) counts once per process mapping it, so the sum
  overstates what the central holds; the peaks need not coincide in time either.
- the peak of the sum of their proportional set sizes (Pss): `PssSampler` reads every process's
  Pss (/proc/<pid>/smaps_rollup: each resident page counted as 1/n for the n processes mapping it)
  every `interval` seconds in a thread of its own, and keeps the largest sum. That is what the
  central as a whole holds at once; being sampled, it can miss a peak shorter than the interval.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

from processes import children, pss_kib  # tools/ is on sys.path when run


def central_pids(supervisor: int) -> list[int]:
    """The supervisor and its children, from /proc/<pid>/task/<pid>/children (one read; the
    supervisor forks from its main thread) or else the scan of /proc that processes.children does."""
    try:
        listed = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text()
    except FileNotFoundError:  # a kernel without CONFIG_PROC_CHILDREN, or the supervisor is gone
        return [supervisor, *children(supervisor)]
    return [supervisor, *(int(pid) for pid in listed.split())]


def pss_sum_kib(supervisor: int) -> int:
    """The sum of the Pss of the central's processes now, in KiB (a process gone meanwhile counts 0)."""
    total = 0
    for pid in central_pids(supervisor):
        with contextlib.suppress(OSError, LookupError):
            total += pss_kib(pid)
    return total


class PssSampler:
    """The peak, over samples, of the sum of the Pss of a central's processes. `start` takes a
    first sample, then a thread samples every `interval` seconds until `stop`, which takes a last
    one and returns the peak in KiB. With an interval of 0 only the first and last are taken."""

    def __init__(self, supervisor: int, interval: float) -> None:
        self.supervisor = supervisor
        self.interval = interval
        self.peak_kib = 0
        self.samples = 0
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def sample(self) -> None:
        self.peak_kib = max(self.peak_kib, pss_sum_kib(self.supervisor))
        self.samples += 1

    def start(self) -> PssSampler:
        self.sample()
        if self.interval > 0:
            self._thread = threading.Thread(target=self._run, name="pss-sampler", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stopping.wait(self.interval):
            self.sample()

    def stop(self) -> int:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()
        return self.peak_kib
