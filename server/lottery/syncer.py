"""A worker's background sync: one thread that makes the storage's appends durable while the
worker's loop goes on reading and checking the next frames (owns that thread and its hand-offs).

Without it a worker waits through every group commit's two fdatasyncs, and with few agencies the
core stays idle meanwhile (docs/benchmarks.md). With it the loop appends a group, asks for a
sync (`request`, which returns the group's ticket) and goes back to its sockets; the thread
syncs, then marks the ticket done and writes to an eventfd the loop's selector watches, and the
loop answers the groups whose tickets are done (`done`). One sync covers every append made
before it started, so requests that arrive during a sync share the next one.

The rules it keeps:

- **No two syncs of one file run side by side.** A caller that needs a sync at once (`sync_now`:
  a RESUME, the shutdown) asks the thread and waits, and the storage's other syncs (a
  checkpoint's) wait for `idle`: with Linux's per-file error reporting, of two concurrent
  fdatasyncs only one would see a writeback error, and the other could state a fact that is not
  on disk.
- **Fail-stop.** Once a sync fails, every later call of `done`, `wait` or `sync_now` raises the
  same `SyncFailed`, so nothing it covered, and nothing after it, is ever answered.
- **The files stay open while a sync runs.** The storage calls `idle` before it closes or
  replaces a descriptor the thread may be syncing (journal.log after another process's
  checkpoint, and at close).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable

from .durable import SyncFailed


class Syncer:
    """Runs `sync` (it raises SyncFailed) in a thread, one run at a time, on request."""

    def __init__(self, sync: Callable[[], None]) -> None:
        self._sync = sync
        self._changed = threading.Condition()
        self._requested = 0  # the last ticket handed out
        self._done = 0  # every ticket up to this one is durable
        self._running = False
        self._started = 0.0  # time.monotonic() when the running sync began
        self._failed: SyncFailed | None = None
        self._closing = False
        self._ready = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)  # readable once a sync returns
        self._thread = threading.Thread(target=self._run, name="sync", daemon=True)
        self._thread.start()

    def fileno(self) -> int:
        """The eventfd that turns readable when a sync has returned (for the loop's selector)."""
        return self._ready

    def request(self) -> int:
        """Ask for a sync of every append made so far; returns its ticket (see `done`)."""
        with self._changed:
            self._raise_if_failed()
            self._requested += 1
            self._changed.notify_all()
            return self._requested

    def done(self) -> int:
        """The last ticket whose sync has returned (every earlier one has too); clears the
        eventfd. Raises SyncFailed once a sync has failed."""
        with contextlib.suppress(BlockingIOError):  # already cleared by an earlier call
            os.eventfd_read(self._ready)
        with self._changed:
            self._raise_if_failed()
            return self._done

    def wait(self, ticket: int) -> None:
        """Block until `ticket`'s sync has returned; SyncFailed if a sync failed."""
        with self._changed:
            while self._done < ticket and self._failed is None:
                self._changed.wait()
            self._raise_if_failed()

    def sync_now(self) -> None:
        """Make every append so far durable before returning (through the thread)."""
        self.wait(self.request())

    def running_for(self) -> float:
        """Seconds the running sync has taken so far; 0.0 when none runs (the health port)."""
        with self._changed:
            return time.monotonic() - self._started if self._running else 0.0

    def idle(self) -> None:
        """Block until no sync is running or asked for (before a descriptor it uses changes)."""
        with self._changed:
            while (self._running or self._done < self._requested) and self._failed is None:
                self._changed.wait()

    def close(self) -> None:
        """Let the running sync finish, stop the thread and close the eventfd."""
        with self._changed:
            self._closing = True
            self._changed.notify_all()
        self._thread.join()
        os.close(self._ready)

    def _raise_if_failed(self) -> None:
        if self._failed is not None:
            raise self._failed

    def _run(self) -> None:
        # The process's signals go to its main thread, whose loop acts on them.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT, signal.SIGCHLD})
        while True:
            with self._changed:
                while self._done == self._requested and not self._closing:
                    self._changed.wait()
                if self._done == self._requested:  # closing, and nothing left to sync
                    return
                ticket, self._running, self._started = self._requested, True, time.monotonic()
            try:
                self._sync()
            except SyncFailed as err:
                with self._changed:
                    self._failed, self._running = err, False
                    self._changed.notify_all()
                os.eventfd_write(self._ready, 1)
                return
            with self._changed:
                self._done, self._running = ticket, False
                self._changed.notify_all()
            os.eventfd_write(self._ready, 1)
