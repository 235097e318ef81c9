"""Whether the central can store now: what the health port answers (owns that judgement).

The health port echoes while the central can store, and answers `ERROR INTERNAL_ERROR` with the
reason otherwise, so the container's health check reports the central unhealthy while:

- the storage's file system has less room than one stored batch (a full disk: batches and FINs
  are refused meanwhile, every other request is served), or
- one process has waited for or held the append lock for more than HEALTH_STALL seconds: a
  store stuck behind a stopped or hung worker (which is killed after STALL_TIMEOUT, see
  stall.py); the lock is normally held for microseconds, or
- this worker's sync (its sync thread's fdatasync, syncer.py) has run for more than HEALTH_STALL
  seconds: a hung disk. The worker's loop still answers meanwhile, but acknowledges nothing.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from .board import Board, now_ms
from .recovery import MAX_BATCH_BYTES

HEALTH_STALL = 2.0  # seconds a store may take before the central is unhealthy


class StorageHealth:
    def __init__(self, directory: Path, board: Board, worker: int, sync_running_for: Callable[[], float]) -> None:
        self.directory = directory
        self.board = board
        self.worker = worker
        self.sync_running_for = sync_running_for  # Syncer.running_for

    def problem(self) -> str | None:
        """Why the central cannot store now, or None if it can."""
        try:
            status = os.statvfs(self.directory)
        except OSError as err:
            return f"cannot look at {self.directory}: {err.strerror or err}"
        free = status.f_bavail * status.f_frsize
        if free < MAX_BATCH_BYTES:
            return f"the storage has {free} bytes free (a full disk)"
        claim = self.board.oldest_claim()
        if claim is not None:
            process, since = claim
            seconds = (now_ms() - since) / 1000
            if seconds > HEALTH_STALL:
                who = "the supervisor" if process == 0 else f"worker {process}"
                return f"a store has been stuck for {seconds:.1f} s ({who} waits for or holds the append lock)"
        syncing = self.sync_running_for()
        if syncing > HEALTH_STALL:
            return f"a sync has been running for {syncing:.1f} s (worker {self.worker}'s fdatasync)"
        return None
