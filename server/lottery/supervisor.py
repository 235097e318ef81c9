"""The supervisor: owns the storage's instance lock, the listening sockets, the worker table, the
signals, the draw and the journal's checkpoints.

Process model (gunicorn's arbiter): the supervisor takes the storage's instance lock, recovers
the storage, binds the listening sockets (the agencies' mutual-TLS port and the plaintext health
port) and forks `config.workers` workers (plain ``os.fork``; a child never returns into this
code), handing them the TLS context built at start. Every worker accepts on the shared listening
sockets and does its own TLS handshakes, so the supervisor never handles a connection, and
nothing it sends or receives can block: its channels to the workers carry droppable nudges only.
A worker's nudge (a FIN, a new session) is passed on to every worker: each re-checks the draw and
its sessions.

The draw barrier is a condition on the journal, not a message: whenever the journal may have
changed (a worker's nudge, or a changed size or inode seen on the periodic tick) the supervisor
folds it in, and once every agency 1..AGENCIES has a FIN it syncs the storage, draws, and nudges
the workers. A lost nudge or a worker killed after appending a FIN only delays the draw by a tick.

Faults: a worker that exits with EXIT_SYNC_FAILED (an fsync failed) and a failed fsync of the
supervisor's own (draw, checkpoint) stop the whole central at once: the workers are killed
before they can answer anything more, and the exit code is EXIT_SYNC_FAILED (fail-stop; the next
start recovers from what is on disk). A worker that dies otherwise is replaced.

Signal handlers only record the signal in an inbox; the main loop acts. Shutdown order: stop
listening, SIGTERM the workers (each answers its connections with SHUTTING_DOWN and closes
them), reap until a monotonic deadline, SIGKILL stragglers, reap again, close the channels, the
storage and the instance lock, exit 0. A second SIGTERM/SIGINT cuts the grace period short.
"""

from __future__ import annotations

import collections
import logging
import os
import selectors
import signal
import socket
import ssl
import time
from dataclasses import dataclass

from . import draw, sessions, storage
from .config import ServerConfig
from .storage import SyncFailed, WriteFailed
from .wakeup import WakeupPipe
from .worker import EXIT_SYNC_FAILED, Listeners, drain_nudges, nudge, run_worker

log = logging.getLogger(__name__)

# A worker that dies sooner than this after its start is replaced only after this delay, so a
# worker that cannot start does not make the supervisor fork in a loop.
RESPAWN_DELAY = 1.0
TICK = 0.5  # seconds between re-checks of the barrier and of the journal's size
COMPACT_BYTES = 1 << 20  # a journal past this size is rewritten as a checkpoint


@dataclass(eq=False)
class WorkerSlot:
    index: int
    pid: int
    channel: socket.socket
    started: float


class SignalInbox:
    """Where signal handlers record signals, to be taken by the main loop.

    The handler only appends to a deque and the loop only pops from it, so a signal that
    arrives while the loop is taking the others is never lost (no list is ever rebound)."""

    def __init__(self) -> None:
        self._signals: collections.deque[int] = collections.deque()

    def record(self, signum: int, frame: object = None) -> None:
        self._signals.append(signum)

    def take(self) -> list[int]:
        taken = []
        while self._signals:
            taken.append(self._signals.popleft())
        return taken


def describe_status(status: int) -> str:
    """A wait status in words: 'exit code 0', 'killed by SIGKILL'."""
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


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
        self.instance: storage.InstanceLock | None = None
        self.storage: storage.Storage | None = None
        self.drawn = False
        self.barrier_seen: tuple[int, int] | None = None  # journal (inode, size) last evaluated
        self.respawns: dict[int, float] = {}  # worker index -> when to start its replacement
        self.wakeup = WakeupPipe()

    # --- start --------------------------------------------------------------------------------

    def run(self) -> int:
        """Run until SIGTERM/SIGINT (0) or a storage failure (EXIT_SYNC_FAILED). Raises
        StorageInUse, RoundMismatch, StorageError or OSError if the central cannot start."""
        directory = self.config.storage_dir
        self.instance = storage.InstanceLock(directory)  # before anything touches the files
        report = storage.recover(directory, self.config.agencies)
        self.storage = storage.Storage(directory)
        self.drawn = draw.draw_done(directory)
        log.info(
            "action: storage_recovery | result: success | batches: %d | fins: %d | bets_bytes: %d"
            " | journal_bytes: %d | cut_bets_bytes: %d | cut_journal_bytes: %d | draw: %s",
            report.batches,
            report.fins,
            report.bets_bytes,
            report.journal_bytes,
            report.cut_bets_bytes,
            report.cut_journal_bytes,
            "done" if self.drawn else "pending",
        )
        sessions.reset(directory, self.config.agencies)
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
        self.selector.register(self.wakeup, selectors.EVENT_READ, "wake")
        try:
            self._checkpoint_if_large()  # before the workers fold the journal
            for index in range(1, self.config.workers + 1):
                self._spawn(index)
            self._draw_if_ready(force=True)
            next_tick = time.monotonic() + TICK
            while not self.stopping:
                timeout = max(0.0, next_tick - time.monotonic())
                if self.respawns:
                    timeout = min(timeout, 0.1)
                nudged = False
                for key, _ in self.selector.select(timeout=timeout):
                    if key.data == "wake":
                        self.wakeup.drain()
                    else:
                        nudged = self._on_worker_nudge(key.data) or nudged
                self._handle_signals()
                self._reap()
                self._respawn_due()
                now = time.monotonic()
                if nudged or now >= next_tick:
                    self._draw_if_ready(force=nudged)
                if now >= next_tick:
                    self._checkpoint_if_large()
                    next_tick = now + TICK
        except FailStop as err:
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
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        pid = os.fork()
        if pid == 0:  # the child never returns into the supervisor's code
            code = 1
            try:
                parent_end.close()
                self._close_inherited()
                assert self.listeners is not None
                code = run_worker(index, self.listeners, child_end, self.config, self.tls)
            except BaseException:
                log.exception("action: worker_exit | result: fail | worker: %d", index)
            finally:
                os._exit(code)
        child_end.close()
        parent_end.setblocking(False)
        slot = WorkerSlot(index, pid, parent_end, time.monotonic())
        self.slots[pid] = slot
        self.selector.register(parent_end, selectors.EVENT_READ, slot)
        log.info("action: worker_start | result: success | worker: %d | pid: %d", index, pid)

    def _close_inherited(self) -> None:
        """In a new child: drop the supervisor's pipes, signals, channels and storage handle.

        The listening sockets are kept (the worker accepts on them), and so is the instance lock's
        descriptor: the lock then lasts as long as any process of this central."""
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
            if code == EXIT_SYNC_FAILED:
                raise FailStop(f"worker {slot.index} could not sync the storage")
            if not self.stopping:  # its connections are lost; those agencies reconnect
                early = time.monotonic() - slot.started < RESPAWN_DELAY
                self.respawns[slot.index] = time.monotonic() + (RESPAWN_DELAY if early else 0.0)

    def _close_channel(self, slot: WorkerSlot) -> None:
        if slot.channel.fileno() < 0:
            return
        try:
            self.selector.unregister(slot.channel)
        except KeyError:
            pass
        slot.channel.close()
        log.info("action: close_channel | result: success | worker: %d", slot.index)

    def _respawn_due(self) -> None:
        now = time.monotonic()
        for index, when in list(self.respawns.items()):
            if when <= now and not self.stopping:
                del self.respawns[index]
                self._spawn(index)

    # --- the barrier, the draw and the checkpoint ---------------------------------------------

    def _draw_if_ready(self, force: bool = False) -> None:
        """Draw once every agency has a durable FIN; checked whenever the journal may have changed."""
        assert self.storage is not None
        if self.drawn:
            return
        identity = self.storage.journal_identity()
        if identity == self.barrier_seen and not force:
            return
        self.barrier_seen = identity
        view = self.storage.refresh()
        finished = view.finished(self.config.agencies)
        if finished < self.config.agencies:
            return
        try:
            self.storage.sync()  # a FIN appended by a worker that died before its sync is made durable
            winners = draw.run_draw(self.config.storage_dir, view.bets_end)
        except SyncFailed as err:
            raise FailStop(f"draw: {err}") from err
        except (OSError, WriteFailed) as err:  # e.g. a full disk: retried on the next tick
            log.error("action: sorteo | result: fail | error: %s", err)
            self.barrier_seen = None
            return
        self.drawn = True
        log.info("action: sorteo | result: success")
        log.info("action: draw_result | result: success | winners: %d | agencies: %d", winners, finished)
        for slot in self.slots.values():
            nudge(slot.channel)  # a worker that misses it finds the result on its own tick

    def _checkpoint_if_large(self) -> None:
        """Rewrite the journal as a checkpoint once it passes COMPACT_BYTES: restart time and every
        worker's start then read a bounded journal, whatever the number of batches stored."""
        assert self.storage is not None
        if self.storage.journal_identity()[1] < COMPACT_BYTES:
            return
        try:
            before, after = self.storage.compact()
        except SyncFailed as err:
            raise FailStop(f"checkpoint: {err}") from err
        except (OSError, WriteFailed) as err:  # e.g. a full disk: the journal stays as it is
            log.warning("action: checkpoint | result: fail | error: %s", err)
            return
        log.info("action: checkpoint | result: success | journal_bytes_before: %d | journal_bytes: %d", before, after)

    # --- shutdown -----------------------------------------------------------------------------

    def _fail_stop(self, reason: str) -> int:
        """Stop now, answering nothing more: kill the workers, close, exit EXIT_SYNC_FAILED."""
        log.critical("action: storage_sync | result: fail | reason: %s | action_taken: stopping the central", reason)
        self.stopping = True
        for slot in list(self.slots.values()):
            self._signal_worker(slot, signal.SIGKILL)
        self._reap_all()
        self._close_all()
        log.error("action: exit | result: fail | reason: storage failure (fail-stop); recovery runs at the next start")
        return EXIT_SYNC_FAILED

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
        self._reap_all()
        self._close_all()
        log.info("action: exit | result: success")
        return 0

    def _close_listener(self) -> None:
        if self.listeners is not None:
            self.listeners.agencies.close()
            self.listeners.health.close()
            self.listeners = None
            log.info("action: close_listener | result: success")

    def _reap_all(self) -> None:
        """Wait for every remaining worker (each has been sent SIGKILL or is exiting)."""
        while self.slots:
            pid, status = os.waitpid(next(iter(self.slots)), 0)
            slot = self.slots.pop(pid)
            log.info(
                "action: worker_exit | result: success | worker: %d | pid: %d | status: %s",
                slot.index,
                pid,
                describe_status(status),
            )
            self._close_channel(slot)

    def _close_all(self) -> None:
        self._close_listener()
        self.selector.close()
        if self.storage is not None:
            self.storage.close()
            log.info("action: close_storage | result: success")
        if self.instance is not None:
            self.instance.close()
        self.wakeup.close()

    def _signal_worker(self, slot: WorkerSlot, signum: signal.Signals) -> None:
        try:
            os.kill(slot.pid, signum)
            log.info("action: stop_worker | result: success | worker: %d | signal: %s", slot.index, signum.name)
        except ProcessLookupError:
            pass
