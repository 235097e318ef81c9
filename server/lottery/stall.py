"""The stall watch: finds a worker that has held the append lock longer than STALL_TIMEOUT.

A worker stopped (SIGSTOP, a cgroup freeze, a debugger) or hung (a disk that does not answer)
while it holds the append lock would stop every other process's appends. The supervisor looks on
its tick, without waiting: if it can take the lock, nobody holds it; otherwise the kernel's table
of locks says which process holds it, and the shared board (board.py) since when. A worker past
STALL_TIMEOUT is reported, and the supervisor kills it, as gunicorn kills a worker that misses
its heartbeat; the kernel then drops its lock, and the next holder cuts whatever it had
half-appended (storage.py), so nothing of it is ever visible.
"""

from __future__ import annotations

from dataclasses import dataclass

from .board import Board, now_ms
from .locks import AppendLock


@dataclass(frozen=True)
class Stall:
    pid: int
    worker: int
    seconds: float


class StallWatch:
    def __init__(self, lock: AppendLock, board: Board, stall_timeout: float) -> None:
        self.lock = lock
        self.board = board
        self.stall_timeout = stall_timeout
        self.seen: tuple[int, int] | None = None  # (pid, since) of the holder seen last

    def check(self, workers: dict[int, int]) -> Stall | None:
        """The worker (`workers`: pid -> index) holding the lock past STALL_TIMEOUT, if any."""
        if self.lock.try_acquire():
            self.lock.release()
            self.seen = None
            return None
        pid = self.lock.holder_pid()
        if pid is None or pid not in workers:
            self.seen = None
            return None
        index = workers[pid]
        since = self.board.lock_since(index)
        if since is None:  # it holds the lock, its row not written yet: count from when it was first seen
            since = self.seen[1] if self.seen is not None and self.seen[0] == pid else now_ms()
        self.seen = (pid, since)
        seconds = (now_ms() - since) / 1000
        return Stall(pid, index, seconds) if seconds > self.stall_timeout else None
