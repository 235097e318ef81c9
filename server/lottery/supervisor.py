"""The supervisor: owns the storage's instance lock, the listening sockets, the shared board,
the table of workers and the signals; runs the barrier, the draw and the checkpoints (barrier.py)
and the stall watch (stall.py).

Process model (gunicorn's arbiter): the supervisor takes the instance lock, recovers the storage,
binds the listening sockets (the agencies' mutual-TLS port and the plaintext health port), creates
the shared board and forks `config.workers` workers (plain ``os.fork``; a child never returns into
this code), handing them the TLS context built at start. Every worker accepts on the shared
listening sockets and does its own TLS handshakes, so the supervisor never handles a connection.

**Nothing waits on another process.** The channels to the workers carry droppable nudges only
(channel.py); the append lock is only ever tried, never waited for; children are reaped with
WNOHANG. Its loop therefore stays responsive to signals, children and its tick whatever a worker
does: a worker that holds the append lock longer than STALL_TIMEOUT is killed, and one that does
not leave after SIGTERM is killed at the SHUTDOWN_TIMEOUT deadline.

Faults: a worker that exits with EXIT_STORAGE_FAILED (an fsync failed, damaged files), and a
failed fsync of the supervisor's own (draw, checkpoint), stop the whole central at once: the
workers are killed before they can answer anything more, and the exit code is
EXIT_STORAGE_FAILED (fail-stop; the next start recovers from what is on disk). A worker that dies
otherwise is replaced (after RESPAWN_DELAY if it died right after starting).

Signal handlers only record the signal in an inbox; the main loop acts. Shutdown order: stop
listening, SIGTERM the workers (each answers its connections with SHUTTING_DOWN and closes
them), reap until a monotonic deadline, SIGKILL stragglers, reap them (bounded), close the
channels, the storage and the instance lock, exit 0. A second SIGTERM/SIGINT cuts the grace
period short.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import signal
import socket
import ssl
import time
from dataclasses import dataclass

from .barrier import Barrier
from .board import Board
from .channel import EXIT_OK, EXIT_STORAGE_FAILED, Listeners, channel_pair, drain_nudges, nudge
from .config import ServerConfig
from .durable import SyncFailed
from .locks import InstanceLock
from .recovery import recover
from .signals import SignalInbox, describe_status
from .stall import StallWatch
from .storage import Storage
from .wakeup import WakeupPipe
from .worker import run_worker

log = logging.getLogger(__name__)

# A worker that dies sooner than this after its start is replaced only after this delay, so a
# worker that cannot start does not make the supervisor fork in a loop.
RESPAWN_DELAY = 1.0
TICK = 0.5  # seconds between re-checks of the barrier, the journal's size and the append lock
KILL_GRACE = 2.0  # seconds SIGKILLed workers get to be reaped before the supervisor exits anyway


@dataclass(eq=False)
class WorkerSlot:
    index: int
    pid: int
    channel: socket.socket
    started: float


class FailStop(Exception):
    """The storage cannot be trusted any more: stop the central now."""


class Supervisor:
    def __init__(self, config: ServerConfig, tls: ssl.SSLContext) -> None:
        self.config = config
        self.tls = tls
        self.slots: dict[int, WorkerSlot] = {}  # by pid
        self.selector = selectors.DefaultSelector()
        self.listeners: Listeners | None = None
        self.inbox = SignalInbox()
        self.stopping = False
        self.instance: InstanceLock | None = None
        self.storage: Storage | None = None
        self.board = Board(config.agencies)
        self.respawns: dict[int, float] = {}  # worker index -> when to start its replacement
        self.wakeup = WakeupPipe()

    # --- start --------------------------------------------------------------------------------

    def run(self) -> int:
        """Run until SIGTERM/SIGINT (EXIT_OK) or a storage failure (EXIT_STORAGE_FAILED). Raises
        StorageInUse, RoundMismatch, StorageError or OSError if the central cannot start."""
        directory = self.config.storage_dir
        self.instance = InstanceLock(directory)  # before anything touches the files
        report = recover(directory, self.config.agencies)
        self.storage = Storage(directory, self.board, 0)
        barrier = Barrier(self.config, self.storage)
        stall = StallWatch(self.storage.lock, self.board, self.config.stall_timeout)
        log.info(
            "action: storage_recovery | result: success | batches: %d | fins: %d | bets_bytes: %d"
            " | journal_bytes: %d | cut_bets_bytes: %d | cut_journal_bytes: %d | draw: %s",
            report.batches,
            report.fins,
            report.bets_bytes,
            report.journal_bytes,
            report.cut_bets_bytes,
            report.cut_journal_bytes,
            "done" if barrier.drawn else "pending",
        )
        self._install_signals()
        health = self._listen(self.config.health_port)
        log.info(
            "action: listen | result: success | address: %s:%d | port: health, plaintext, ECHO only",
            self.config.ip,
            self.config.health_port,
        )
        agencies = self._listen(self.config.port)
        self.listeners = Listeners(agencies, health)
        log.info(
            "action: listen | result: success | address: %s:%d | port: agencies, mutual TLS 1.3",
            self.config.ip,
            self.config.port,
        )
        self.selector.register(self.wakeup, selectors.EVENT_READ, None)
        try:
            barrier.announce_if_needed()
            barrier.checkpoint_if_large()  # before the workers fold the journal
            for index in range(1, self.config.workers + 1):
                self._spawn(index)
            self._draw(barrier, force=True)
            next_tick = time.monotonic() + TICK
            while not self.stopping:
                timeout = max(0.0, next_tick - time.monotonic())
                if self.respawns:
                    timeout = min(timeout, 0.1)
                nudged = False
                for key, _ in self.selector.select(timeout=timeout):
                    if key.data is None:
                        self.wakeup.drain()
                    else:
                        nudged = self._on_worker_nudge(key.data) or nudged
                self._handle_signals()
                self._reap()
                self._respawn_due()
                now = time.monotonic()
                if nudged or now >= next_tick:
                    self._draw(barrier, force=nudged)
                if now >= next_tick:
                    barrier.checkpoint_if_large()
                    self._kill_stalled(stall)
                    next_tick = now + TICK
        except (FailStop, SyncFailed) as err:
            return self._fail_stop(str(err))
        return self._shutdown()

    def _listen(self, port: int) -> socket.socket:
        listener = socket.create_server((self.config.ip, port), backlog=self.config.listen_backlog)
        listener.setblocking(False)
        return listener

    def _install_signals(self) -> None:
        self.wakeup.install()
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
            signal.signal(signum, self.inbox.record)

    def _handle_signals(self) -> None:
        """Act on the recorded signals: SIGTERM and SIGINT start the shutdown."""
        for signum in self.inbox.take():
            if signum in (signal.SIGTERM, signal.SIGINT):
                log.info("action: shutdown | result: in_progress | signal: %s", signal.Signals(signum).name)
                self.stopping = True

    # --- workers ------------------------------------------------------------------------------

    def _spawn(self, index: int) -> None:
        parent_end, child_end = channel_pair()
        pid = os.fork()
        if pid == 0:  # the child never returns into the supervisor's code
            code = 1
            try:
                parent_end.close()
                self._close_inherited()
                assert self.listeners is not None
                code = run_worker(index, self.listeners, child_end, self.config, self.tls, self.board)
            except BaseException:
                log.exception("action: worker_exit | result: fail | worker: %d", index)
            finally:
                os._exit(code)
        child_end.close()
        slot = WorkerSlot(index, pid, parent_end, time.monotonic())
        self.slots[pid] = slot
        self.selector.register(parent_end, selectors.EVENT_READ, slot)
        log.info("action: worker_start | result: success | worker: %d | pid: %d", index, pid)

    def _close_inherited(self) -> None:
        """In a new child: drop the supervisor's pipes, signals, channels and storage handle.

        The listening sockets are kept (the worker accepts on them), and so are the board and the
        instance lock's descriptor: the lock then lasts as long as any process of this central."""
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
            signal.signal(signum, signal.SIG_DFL)
        self.wakeup.close()
        self.selector.close()
        for slot in self.slots.values():
            slot.channel.close()
        if self.storage is not None:
            self.storage.close()

    def _on_worker_nudge(self, slot: WorkerSlot) -> bool:
        """Drain a worker's nudges and pass one on to the others (a new session or FIN concerns
        them all); True if there was one (the journal may have a new FIN)."""
        if not drain_nudges(slot.channel):
            self.selector.unregister(slot.channel)  # the worker is gone; _reap collects it
            return False
        for other in self.slots.values():
            if other is not slot:
                nudge(other.channel)
        return True

    def _reap(self) -> None:
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
                raise FailStop(f"worker {slot.index} could not use the storage")
            if not self.stopping:  # its connections are lost; those agencies reconnect
                early = time.monotonic() - slot.started < RESPAWN_DELAY
                self.respawns[slot.index] = time.monotonic() + (RESPAWN_DELAY if early else 0.0)

    def _close_channel(self, slot: WorkerSlot) -> None:
        if slot.channel.fileno() < 0:
            return
        with contextlib.suppress(KeyError):
            self.selector.unregister(slot.channel)
        slot.channel.close()
        log.info("action: close_channel | result: success | worker: %d", slot.index)

    def _respawn_due(self) -> None:
        now = time.monotonic()
        for index, when in list(self.respawns.items()):
            if when <= now and not self.stopping:
                del self.respawns[index]
                self._spawn(index)

    def _kill_stalled(self, stall: StallWatch) -> None:
        """Kill a worker that has held the append lock longer than STALL_TIMEOUT."""
        found = stall.check({pid: slot.index for pid, slot in self.slots.items()})
        if found is None:
            return
        log.error(
            "action: worker_stall | result: fail | worker: %d | pid: %d | held_seconds: %.1f | reason: it has held"
            " the append lock longer than STALL_TIMEOUT (%gs), stopped or hung; killing it",
            found.worker,
            found.pid,
            found.seconds,
            self.config.stall_timeout,
        )
        self._signal_worker(self.slots[found.pid], signal.SIGKILL)

    # --- the draw -----------------------------------------------------------------------------

    def _draw(self, barrier: Barrier, force: bool) -> None:
        if barrier.check(force):
            for slot in self.slots.values():
                nudge(slot.channel)  # a worker that misses it finds the result on its own tick

    # --- shutdown -----------------------------------------------------------------------------

    def _fail_stop(self, reason: str) -> int:
        """Stop now, answering nothing more: kill the workers, close, exit EXIT_STORAGE_FAILED."""
        log.critical("action: storage_sync | result: fail | reason: %s | action_taken: stopping the central", reason)
        self.stopping = True
        for slot in list(self.slots.values()):
            self._signal_worker(slot, signal.SIGKILL)
        self._reap_killed()
        self._close_all()
        log.error("action: exit | result: fail | reason: storage failure (fail-stop); recovery runs at the next start")
        return EXIT_STORAGE_FAILED

    def _shutdown(self) -> int:
        self._close_listener()
        for slot in self.slots.values():
            self._signal_worker(slot, signal.SIGTERM)
        deadline = time.monotonic() + self.config.shutdown_timeout
        try:
            while self.slots and time.monotonic() < deadline:
                self.selector.select(timeout=min(0.05, max(0.0, deadline - time.monotonic())))
                self.wakeup.drain()
                if any(s in (signal.SIGTERM, signal.SIGINT) for s in self.inbox.take()):
                    log.warning("action: shutdown | result: in_progress | reason: second signal, killing workers")
                    break
                self._reap()
        except FailStop as err:
            return self._fail_stop(str(err))
        for slot in list(self.slots.values()):
            log.warning("action: stop_worker | result: in_progress | worker: %d | signal: SIGKILL", slot.index)
            self._signal_worker(slot, signal.SIGKILL)
        self._reap_killed()
        self._close_all()
        log.info("action: exit | result: success")
        return EXIT_OK

    def _close_listener(self) -> None:
        if self.listeners is not None:
            self.listeners.close()
            self.listeners = None
            log.info("action: close_listener | result: success")

    def _reap_killed(self) -> None:
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
            log.error("action: worker_exit | result: fail | worker: %d | pid: %d | status: still running after"
                      " SIGKILL (an uninterruptible sleep); leaving it", slot.index, slot.pid)
            self._close_channel(slot)
        self.slots.clear()

    def _close_all(self) -> None:
        self._close_listener()
        self.selector.close()
        if self.storage is not None:
            self.storage.close()
            log.info("action: close_storage | result: success")
        if self.instance is not None:
            self.instance.close()
        self.board.close()
        self.wakeup.close()

    def _signal_worker(self, slot: WorkerSlot, signum: signal.Signals) -> None:
        try:
            os.kill(slot.pid, signum)
            log.info("action: stop_worker | result: success | worker: %d | signal: %s", slot.index, signum.name)
        except ProcessLookupError:
            pass

