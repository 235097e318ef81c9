"""Helpers for running the real system as processes on 127.0.0.1, shared by tools/bench.py,
tools/chaos.py and the tests: a free port, a process's children, its peak memory."""

from __future__ import annotations

import socket
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
