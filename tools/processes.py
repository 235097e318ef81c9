"""Helpers for running the real system as processes on 127.0.0.1, shared by tools/bench.py,
tools/chaos.py and the tests: a free port, a process's children, killing processes and waiting for
their exit, their peak memory and CPU time."""

from __future__ import annotations

import os
import select
import signal
import socket
import time
from pathlib import Path


def free_port(*taken: int) -> int:
    """A port nobody listens on now, other than `taken` (a port just released may come back)."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port not in taken:
            return port


def children(parent: int) -> list[int]:
    """Pids whose parent is `parent`, from /proc (a central's workers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue  # gone meanwhile
            if int(stat[1]) == parent:
                found.append(int(entry.name))
    return found


def peak_rss_kib(pid: int) -> int:
    """The peak resident set (VmHWM) of `pid`, in KiB; LookupError if /proc has none (a zombie)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise LookupError(f"no VmHWM for {pid}")


def cpu_seconds(pid: int) -> float:
    """The CPU time (user + system) `pid` has used so far, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def kill_and_wait(pids: list[int], timeout: float) -> None:
    """SIGKILL `pids` and return once every one has exited (TimeoutError if one has not after
    `timeout` seconds). A kill is only delivered, not done, when os.kill returns: the process
    still holds its files (a central's instance lock) until it has exited. Exited children are
    left for their parent to reap."""
    exits = []  # pidfds, readable once their process has exited
    try:
        for pid in pids:
            try:
                exits.append(os.pidfd_open(pid))
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass  # gone already
        deadline = time.monotonic() + timeout
        for fd in exits:
            readable, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not readable:
                raise TimeoutError(f"a killed process has not exited after {timeout:g}s")
    finally:
        for fd in exits:
            os.close(fd)
