"""The storage's two locks: the instance lock (one central per storage directory) and the append
lock (one process changes the files at a time), and who holds the latter.

Both are ``flock`` locks, so the kernel drops them when their holder dies. The append lock is taken
blocking by the workers (a turn waits for another worker's append, which takes microseconds) and
never blocking by the supervisor, which must stay free to act on signals and children whatever a
worker does: it tries, and comes back on its next tick. Every process writes on the shared board
(board.py) when it starts waiting for the lock and when it gets it, so that a process stopped or
hung while holding it can be found: `holder_pid` reads the kernel's own table of locks.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from pathlib import Path

from .board import Board
from .durable import StorageError
from .files import INSTANCE_LOCK_FILE, LOCK_FILE


class StorageInUse(StorageError):
    """Another central holds this storage's instance lock."""

    def __init__(self, directory: Path, holder: str) -> None:
        super().__init__(f"{directory} is in use by another central ({holder})")
        self.directory = directory
        self.holder = holder


class InstanceLock:
    """The exclusive lock that makes a storage directory belong to one central.

    Taken before recovery with a non-blocking ``flock``. Forked workers inherit the descriptor, so
    the lock is held until every process of the central has exited: a new central can never
    recover the files under a worker that is still writing.
    """

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / INSTANCE_LOCK_FILE
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = os.pread(self.fd, 64, 0).decode("ascii", "replace").strip()
            os.close(self.fd)
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise StorageInUse(directory, f"pid {holder}" if holder else "pid unknown") from None
            raise
        os.ftruncate(self.fd, 0)
        with contextlib.suppress(OSError):  # a full disk: the pid only informs a second central
            os.pwrite(self.fd, b"%d\n" % os.getpid(), 0)

    def close(self) -> None:
        os.close(self.fd)


class AppendLock:
    """One process's handle on ``storage.lock``; `process` is its row on the board (0 for the
    supervisor, the worker's index for a worker)."""

    def __init__(self, directory: Path, board: Board | None, process: int) -> None:
        self.path = directory / LOCK_FILE
        self.fd = os.open(self.path, os.O_RDWR)
        self.board = board
        self.process = process

    def close(self) -> None:
        os.close(self.fd)

    def acquire(self) -> None:
        """Wait for the lock (a worker)."""
        if self.board is not None:
            self.board.lock_waiting(self.process)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        if self.board is not None:
            self.board.lock_held(self.process)

    def try_acquire(self) -> bool:
        """Take the lock if it is free, without waiting (the supervisor)."""
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        if self.board is not None:
            self.board.lock_held(self.process)
        return True

    def release(self) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        if self.board is not None:  # after the unlock: a holder is never shown as free
            self.board.lock_released(self.process)

    def holder_pid(self) -> int | None:
        """The pid holding the lock now (see `flock_holder`)."""
        return flock_holder(os.fstat(self.fd))


def flock_holder(status: os.stat_result) -> int | None:
    """The pid holding an flock on the file `status` describes, from the kernel's table of locks
    (/proc/locks); None if nobody holds one or the table cannot be read. Reading it takes no lock."""
    device = f"{os.major(status.st_dev):02x}:{os.minor(status.st_dev):02x}:{status.st_ino}"
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as table:
            for line in table:
                fields = line.split()
                # "1: FLOCK  ADVISORY  WRITE 1234 00:2a:5678 0 EOF"; waiters have "->" in 2nd place
                if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == device:
                    return int(fields[4])
    except (OSError, ValueError):
        return None
    return None
