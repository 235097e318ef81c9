"""The supervisor: owns the storage's instance lock, the listening sockets, the shared board,
the table of workers (workers.py) and the signals; runs the barrier, the draw and the checkpoints
(barrier.py) and the stall watch (stall.py) on its tick.

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

import logging
import selectors
import signal
import socket
import ssl
import time

from .barrier import Barrier
from .board import Board
from .channel import EXIT_OK, EXIT_STORAGE_FAILED, Listeners
from .config import ServerConfig
from .durable import StorageError
from .locks import InstanceLock
from .recovery import recover
from .signals import SignalInbox
from .stall import StallWatch
from .storage import Storage
from .wakeup import WakeupPipe
from .worker import run_worker
from .workers import StorageFailed, WorkerTable

log = logging.getLogger(__name__)

TICK = 0.5  # seconds between re-checks of the barrier, the journal's size and the append lock


class Supervisor:
    def __init__(self, config: ServerConfig, tls: ssl.SSLContext) -> None:
        self.config = config
        self.tls = tls
        self.selector = selectors.DefaultSelector()
        self.workers = WorkerTable(self.selector, self._run_worker, self._close_in_child)
        self.listeners: Listeners | None = None
        self.inbox = SignalInbox()
        self.instance: InstanceLock | None = None
        self.storage: Storage | None = None
        self.board = Board(config.agencies)
        self.wakeup = WakeupPipe()

    @property
    def stopping(self) -> bool:
        return self.workers.stopping

    # --- start and run ------------------------------------------------------------------------

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
        self.listeners = Listeners(self._listen(self.config.port), health)
        log.info(
            "action: listen | result: success | address: %s:%d | port: agencies, mutual TLS 1.3",
            self.config.ip,
            self.config.port,
        )
        self.selector.register(self.wakeup, selectors.EVENT_READ, self.wakeup.drain)
        try:
            barrier.at_start()
            barrier.checkpoint_if_large()  # before the workers fold the journal
            for index in range(1, self.config.workers + 1):
                self.workers.spawn(index)
            self._draw(barrier, force=True)
            self._loop(barrier, stall)
        except (StorageFailed, StorageError) as err:  # SyncFailed included: fail-stop
            return self._fail_stop(str(err))
        return self._shutdown()

    def _loop(self, barrier: Barrier, stall: StallWatch) -> None:
        next_tick = time.monotonic() + TICK
        while not self.stopping:
            timeout = max(0.0, next_tick - time.monotonic())
            if self.workers.respawns:
                timeout = min(timeout, 0.1)
            nudged = False
            for key, _ in self.selector.select(timeout=timeout):  # each key carries its callback
                nudged = bool(key.data()) or nudged  # True: a worker nudged (a FIN, a session)
            self._handle_signals()
            self.workers.reap()
            self.workers.respawn_due()
            now = time.monotonic()
            if nudged or now >= next_tick:
                self._draw(barrier, force=nudged)
            if now >= next_tick:
                barrier.checkpoint_if_large()
                barrier.log_progress(now)
                self._kill_stalled(stall)
                next_tick = now + TICK

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
                self.workers.stopping = True

    # --- the workers --------------------------------------------------------------------------

    def _run_worker(self, index: int, channel: socket.socket) -> int:
        assert self.listeners is not None
        return run_worker(index, self.listeners, channel, self.config, self.tls, self.board)

    def _close_in_child(self) -> None:
        """In a new child: drop the supervisor's signals, wake-up pipe, selector and storage handle.

        The listening sockets are kept (the worker accepts on them), and so are the board and the
        instance lock's descriptor: the lock then lasts as long as any process of this central."""
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
            signal.signal(signum, signal.SIG_DFL)
        self.wakeup.close()
        self.selector.close()
        if self.storage is not None:
            self.storage.close()

    def _kill_stalled(self, stall: StallWatch) -> None:
        """Kill a worker that has held the append lock longer than STALL_TIMEOUT."""
        found = stall.check(self.workers.pids())
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
        self.workers.signal_one(self.workers.slots[found.pid], signal.SIGKILL)

    def _draw(self, barrier: Barrier, force: bool) -> None:
        if barrier.check(force):
            self.workers.nudge_all()  # first: the held winners queries are answered meanwhile
            barrier.after_draw()

    # --- stopping -----------------------------------------------------------------------------

    def _fail_stop(self, reason: str) -> int:
        """Stop now, answering nothing more: kill the workers, close, exit EXIT_STORAGE_FAILED."""
        log.critical("action: storage_sync | result: fail | reason: %s | action_taken: stopping the central", reason)
        self.workers.stopping = True
        self.workers.signal_all(signal.SIGKILL)
        self.workers.reap_killed()
        self._close_all()
        log.error("action: exit | result: fail | reason: storage failure (fail-stop); recovery runs at the next start")
        return EXIT_STORAGE_FAILED

    def _shutdown(self) -> int:
        self._close_listener()
        self.workers.signal_all(signal.SIGTERM)
        deadline = time.monotonic() + self.config.shutdown_timeout
        try:
            while self.workers.slots and time.monotonic() < deadline:
                self.selector.select(timeout=min(0.05, max(0.0, deadline - time.monotonic())))
                self.wakeup.drain()
                if any(s in (signal.SIGTERM, signal.SIGINT) for s in self.inbox.take()):
                    log.warning("action: shutdown | result: in_progress | reason: second signal, killing workers")
                    break
                self.workers.reap()
        except StorageFailed as err:
            return self._fail_stop(str(err))
        for slot in list(self.workers.slots.values()):
            log.warning("action: stop_worker | result: in_progress | worker: %d | signal: SIGKILL", slot.index)
            self.workers.signal_one(slot, signal.SIGKILL)
        self.workers.reap_killed()
        self._close_all()
        log.info("action: exit | result: success")
        return EXIT_OK

    def _close_listener(self) -> None:
        if self.listeners is not None:
            self.listeners.close()
            self.listeners = None
            log.info("action: close_listener | result: success")

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
