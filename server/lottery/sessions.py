"""The session table: at most one live session per agency, across every worker process.

A newly authenticated session of agency N takes the next *generation* of N; any older session of
N, in whichever worker, sees that its generation is no longer current and closes (logged). So a
half-open connection left by a network break cannot keep a connection slot or a held winners
query forever: the agency's next connection supersedes it.

The generations live in one small file of the storage directory, ``sessions`` (a big-endian u32
per agency, at offset 4 * (N - 1)), not in shared memory: a worker claims a generation under an
``flock`` held only around that read and write, and checks its own sessions with ``pread`` on its
tick and whenever it is nudged. The supervisor zeroes the file at start (sessions do not outlive
the central), and nothing needs to survive a crash, so it is never synced.
"""

from __future__ import annotations

import fcntl
import os
import struct
from pathlib import Path

SESSIONS_FILE = "sessions"
_GENERATION = struct.Struct(">I")


def reset(directory: Path, agencies: int) -> None:
    """Start every agency at generation 0 (the supervisor, before the workers start)."""
    fd = os.open(directory / SESSIONS_FILE, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.ftruncate(fd, _GENERATION.size * agencies)
    finally:
        os.close(fd)


class SessionTable:
    """One worker's handle on the session generations."""

    def __init__(self, directory: Path) -> None:
        self._fd = os.open(directory / SESSIONS_FILE, os.O_RDWR)

    def close(self) -> None:
        os.close(self._fd)

    def _read(self, agency: int) -> int:
        data = os.pread(self._fd, _GENERATION.size, _GENERATION.size * (agency - 1))
        return _GENERATION.unpack(data)[0] if len(data) == _GENERATION.size else 0

    def claim(self, agency: int) -> int:
        """A new session of `agency`: its generation, which makes every older one stale."""
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            generation = (self._read(agency) + 1) & 0xFFFFFFFF
            os.pwrite(self._fd, _GENERATION.pack(generation), _GENERATION.size * (agency - 1))
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        return generation

    def current(self, agency: int, generation: int) -> bool:
        """Whether the session of `agency` with `generation` is still the newest."""
        return self._read(agency) == generation
