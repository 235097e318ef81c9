"""The supervisor's table of workers: forking them, their channels, reaping them, replacing the
ones that die, signalling them. Never blocks: children are reaped with WNOHANG, and the
channels carry droppable nudges only (channel.py).
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from .channel import EXIT_STORAGE_FAILED, channel_pair, drain_nudges, nudge
from .signals import describe_status

log = logging.getLogger(__name__)

# A worker that dies sooner than this after its start is replaced only after this delay, so a
# worker that cannot start does not make the supervisor fork in a loop.
RESPAWN_DELAY = 1.0
KILL_GRACE = 2.0  # seconds SIGKILLed workers get to be reaped before the supervisor exits anyway


class StorageFailed(Exception):
    """A worker exited with EXIT_STORAGE_FAILED: the central must stop (fail-stop)."""


@dataclass(eq=False)
class WorkerSlot:
    index: int
    pid: int
    channel: socket.socket
    started: float


class WorkerTable:
    """`run_child(index, channel)` is what a new child runs (after `close_in_child`); it returns
    the child's exit code."""

    def __init__(
        self,
        selector: selectors.BaseSelector,
        run_child: Callable[[int, socket.socket], int],
        close_in_child: Callable[[], None],
    ) -> None:
        self.selector = selector
        self.run_child = run_child
        self.close_in_child = close_in_child
        self.slots: dict[int, WorkerSlot] = {}  # by pid
        self.respawns: dict[int, float] = {}  # worker index -> when to start its replacement
        self.stopping = False

    def pids(self) -> dict[int, int]:
        """pid -> worker index."""
        return {pid: slot.index for pid, slot in self.slots.items()}

    def spawn(self, index: int) -> None:
        parent_end, child_end = channel_pair()
        pid = os.fork()
        if pid == 0:  # the child never returns into the supervisor's code
            code = 1
            try:
                parent_end.close()
                for slot in self.slots.values():
                    slot.channel.close()
                self.close_in_child()
                code = self.run_child(index, child_end)
            except BaseException:
                log.exception("action: worker_exit | result: fail | worker: %d", index)
            finally:
                os._exit(code)
        child_end.close()
        slot = WorkerSlot(index, pid, parent_end, time.monotonic())
        self.slots[pid] = slot
        self.selector.register(parent_end, selectors.EVENT_READ, lambda: self.on_nudge(slot))
        log.info("action: worker_start | result: success | worker: %d | pid: %d", index, pid)

    def on_nudge(self, slot: WorkerSlot) -> bool:
        """Drain a worker's nudges and pass one on to the others (a new session or FIN concerns
        them all); True if there was one (the journal may have a new FIN)."""
        if not drain_nudges(slot.channel):
            self.selector.unregister(slot.channel)  # the worker is gone; reap collects it
            return False
        for other in self.slots.values():
            if other is not slot:
                nudge(other.channel)
        return True

    def nudge_all(self) -> None:
        for slot in self.slots.values():
            nudge(slot.channel)  # a worker that misses it finds the fact on its own tick

    def reap(self) -> None:
        """Collect the workers that exited; schedule their replacement. StorageFailed if one
        stopped on a storage failure."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            slot = self.slots.pop(pid, None)
            if slot is None:
                continue
            code = os.waitstatus_to_exitcode(status)
            level = logging.INFO if self.stopping and code == 0 else logging.ERROR
            log.log(
                level,
                "action: worker_exit | result: %s | worker: %d | pid: %d | status: %s",
                "success" if level == logging.INFO else "fail",
                slot.index,
                pid,
                describe_status(status),
            )
            self._close_channel(slot)
            if code == EXIT_STORAGE_FAILED:
                raise StorageFailed(f"worker {slot.index} could not use the storage")
            if not self.stopping:  # its connections are lost; those agencies reconnect
                early = time.monotonic() - slot.started < RESPAWN_DELAY
                self.respawns[slot.index] = time.monotonic() + (RESPAWN_DELAY if early else 0.0)

    def respawn_due(self) -> None:
        now = time.monotonic()
        for index, when in list(self.respawns.items()):
            if when <= now and not self.stopping:
                del self.respawns[index]
                self.spawn(index)

    def signal_one(self, slot: WorkerSlot, signum: signal.Signals) -> None:
        try:
            os.kill(slot.pid, signum)
            log.info("action: stop_worker | result: success | worker: %d | signal: %s", slot.index, signum.name)
        except ProcessLookupError:
            pass

    def signal_all(self, signum: signal.Signals) -> None:
        for slot in list(self.slots.values()):
            self.signal_one(slot, signum)

    def reap_killed(self) -> None:
        """Reap the workers sent SIGKILL, for at most KILL_GRACE seconds (a process in an
        uninterruptible sleep, on a hung disk, dies only when the disk answers)."""
        deadline = time.monotonic() + KILL_GRACE
        while self.slots and time.monotonic() < deadline:
            for pid in list(self.slots):
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    slot = self.slots.pop(pid)
                    log.info(
                        "action: worker_exit | result: success | worker: %d | pid: %d | status: %s",
                        slot.index,
                        pid,
                        describe_status(status),
                    )
                    self._close_channel(slot)
            if self.slots:
                time.sleep(0.01)
        for slot in list(self.slots.values()):
            log.error(
                "action: worker_exit | result: fail | worker: %d | pid: %d | status: still running after SIGKILL"
                " (an uninterruptible sleep); leaving it",
                slot.index,
                slot.pid,
            )
            self._close_channel(slot)
        self.slots.clear()

    def _close_channel(self, slot: WorkerSlot) -> None:
        if slot.channel.fileno() < 0:
            return
        with contextlib.suppress(KeyError):
            self.selector.unregister(slot.channel)
        slot.channel.close()
        log.info("action: close_channel | result: success | worker: %d", slot.index)
