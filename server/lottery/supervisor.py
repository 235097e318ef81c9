"""The supervisor: owns the listening socket, the table of worker processes, the signals and the draw.

Process model (after gunicorn's arbiter): the supervisor recovers the storage, forks
`config.workers` workers (start method: plain ``os.fork``, chosen explicitly; a child never
returns into this code), accepts connections and passes each one's file descriptor to the
least-loaded worker with room for it. When every worker is full it stops accepting, so new
connections wait in the listen backlog instead of being dropped. Workers report closed
connections and recorded FINs over their channel; when the storage shows a FIN from every
agency the supervisor runs the draw, exactly once, and tells every worker.

Signal handlers only record the signal; the main loop acts. Shutdown order: stop accepting,
SIGTERM the workers (each releases the winners queries it holds with SHUTTING_DOWN and closes
its connections), reap until a monotonic deadline, SIGKILL stragglers, reap again, close the
channels and the storage, exit 0. A second SIGTERM/SIGINT cuts the grace period short.
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import socket
import time
from dataclasses import dataclass

from . import draw, storage
from .wakeup import WakeupPipe
from .config import ServerConfig
from .worker import CONNECTION_CLOSED, DRAW_DONE, FIN_RECORDED, NEW_CONNECTION, run_worker

log = logging.getLogger(__name__)


# A worker that dies sooner than this after its start is replaced only after this delay, so a
# worker that cannot start (storage unreadable, say) does not make the supervisor fork in a loop.
RESPAWN_DELAY = 1.0


@dataclass(eq=False)
class WorkerSlot:
    index: int
    pid: int
    channel: socket.socket
    started: float
    connections: int = 0


def describe_status(status: int) -> str:
    """A wait status in words: 'exit code 0', 'killed by SIGKILL'."""
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


class Supervisor:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.slots: dict[int, WorkerSlot] = {}  # by pid
        self.selector = selectors.DefaultSelector()
        self.listener: socket.socket | None = None
        self.accepting = False
        self.signals: list[int] = []
        self.stopping = False
        self.storage: storage.Storage | None = None
        self.draw_failed = False  # the last draw attempt hit an I/O error: try again
        self.respawns: dict[int, float] = {}  # worker index -> when to start its replacement
        self.wakeup = WakeupPipe()

    # --- start --------------------------------------------------------------------------------

    def run(self) -> int:
        directory = self.config.storage_dir
        report = storage.recover(directory)
        self.storage = storage.Storage(directory)
        log.info(
            "action: storage_recovery | result: success | batches: %d | fins: %d | bets_bytes: %d"
            " | cut_bets_bytes: %d | cut_journal_bytes: %d | draw: %s",
            report.batches,
            report.fins,
            report.bets_bytes,
            report.cut_bets_bytes,
            report.cut_journal_bytes,
            "done" if draw.draw_done(directory) else "pending",
        )
        self._install_signals()
        self.listener = socket.create_server(
            (self.config.ip, self.config.port), backlog=self.config.listen_backlog, reuse_port=False
        )
        self.listener.setblocking(False)
        log.info("action: listen | result: success | address: %s:%d", self.config.ip, self.config.port)
        self.selector.register(self.wakeup, selectors.EVENT_READ, "wake")
        for index in range(1, self.config.workers + 1):
            self._spawn(index)
        self._resume_accepting()
        self._draw_if_ready()
        while not self.stopping:
            for key, _ in self.selector.select(timeout=0.1 if self.respawns else 1.0):
                if key.data == "wake":
                    self.wakeup.drain()
                elif key.data == "listener":
                    self._accept()
                else:
                    self._on_worker_message(key.data)
            self._handle_signals()
            self._reap()
            if self.draw_failed:
                self._draw_if_ready()
        return self._shutdown()

    def _install_signals(self) -> None:
        self.wakeup.install()
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: object) -> None:
        self.signals.append(signum)  # the main loop acts on it

    def _handle_signals(self) -> None:
        """Act on the recorded signals: SIGTERM and SIGINT start the shutdown."""
        while self.signals:
            signum = self.signals.pop(0)
            if signum in (signal.SIGTERM, signal.SIGINT):
                log.info(
                    "action: shutdown | result: in_progress | signal: %s", signal.Signals(signum).name
                )
                self.stopping = True

    # --- workers ------------------------------------------------------------------------------

    def _spawn(self, index: int) -> None:
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:  # the child never returns into the supervisor's code
            code = 1
            try:
                parent_end.close()
                self._close_inherited()
                code = run_worker(index, child_end, self.config)
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
        """In a new child: drop the supervisor's sockets, pipes, signals and storage handle."""
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
            signal.signal(signum, signal.SIG_DFL)
        self.wakeup.close()
        self.selector.close()
        if self.listener is not None:
            self.listener.close()
        for slot in self.slots.values():
            slot.channel.close()
        if self.storage is not None:
            self.storage.close()

    def _on_worker_message(self, slot: WorkerSlot) -> None:
        try:
            message = slot.channel.recv(16)
        except OSError:
            message = b""
        if not message:  # the worker is gone; _reap collects it
            self.selector.unregister(slot.channel)
            return
        if message == CONNECTION_CLOSED:
            slot.connections = max(0, slot.connections - 1)
            self._resume_accepting()
        elif message == FIN_RECORDED:
            self._draw_if_ready()

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            slot = self.slots.pop(pid, None)
            if slot is None:
                continue
            level = logging.INFO if self.stopping and os.waitstatus_to_exitcode(status) == 0 else logging.ERROR
            log.log(
                level,
                "action: worker_exit | result: %s | worker: %d | pid: %d | status: %s",
                "success" if level == logging.INFO else "fail",
                slot.index,
                pid,
                describe_status(status),
            )
            if slot.channel.fileno() >= 0:
                try:
                    self.selector.unregister(slot.channel)
                except KeyError:
                    pass
                slot.channel.close()
                log.info("action: close_channel | result: success | worker: %d", slot.index)
            if not self.stopping:  # its connections are lost; those agencies reconnect
                early = time.monotonic() - slot.started < RESPAWN_DELAY
                self.respawns[slot.index] = time.monotonic() + (RESPAWN_DELAY if early else 0.0)
        self._respawn_due()

    def _respawn_due(self) -> None:
        now = time.monotonic()
        for index, when in list(self.respawns.items()):
            if when <= now and not self.stopping:
                del self.respawns[index]
                self._spawn(index)
                self._resume_accepting()

    # --- accepting ----------------------------------------------------------------------------

    def _free_slot(self) -> WorkerSlot | None:
        free = [s for s in self.slots.values() if s.connections < self.config.worker_connections]
        return min(free, key=lambda s: s.connections) if free else None

    def _resume_accepting(self) -> None:
        if not self.accepting and not self.stopping and self._free_slot() is not None:
            assert self.listener is not None
            self.selector.register(self.listener, selectors.EVENT_READ, "listener")
            self.accepting = True

    def _pause_accepting(self) -> None:
        if self.accepting:
            assert self.listener is not None
            self.selector.unregister(self.listener)
            self.accepting = False
            if not self.stopping:
                log.warning(
                    "action: accept | result: in_progress | reason: every worker is full, connections wait in the backlog"
                )

    def _accept(self) -> None:
        assert self.listener is not None
        while True:
            slot = self._free_slot()
            if slot is None:
                self._pause_accepting()
                return
            try:
                conn, address = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            try:
                socket.send_fds(slot.channel, [NEW_CONNECTION], [conn.fileno()])
                slot.connections += 1
                log.info(
                    "action: accept | result: success | peer: %s:%d | worker: %d", *address[:2], slot.index
                )
            except OSError as err:  # the worker just died: the agency will reconnect
                log.error("action: accept | result: fail | worker: %d | error: %s", slot.index, err)
            finally:
                conn.close()  # the worker holds its own copy now

    # --- the draw -----------------------------------------------------------------------------

    def _draw_if_ready(self) -> None:
        """Run the draw once every agency has a FIN in the storage, exactly once."""
        assert self.storage is not None
        directory = self.config.storage_dir
        if draw.draw_done(directory):
            return
        view = self.storage.refresh()
        finished = sum(1 for agency in view.fins if 1 <= agency <= self.config.agencies)
        if finished < self.config.agencies:
            return
        try:
            winners = draw.run_draw(directory, view.bets_end)
        except OSError as err:  # e.g. a full disk: retried on the next loop turn
            if not self.draw_failed:
                log.error("action: sorteo | result: fail | error: %s", err)
            self.draw_failed = True
            return
        self.draw_failed = False
        log.info("action: sorteo | result: success")
        log.info("action: draw_result | result: success | winners: %d | agencies: %d", winners, finished)
        for slot in self.slots.values():
            try:
                slot.channel.send(DRAW_DONE)
            except OSError as err:  # a dead worker's replacement reads the result at start
                log.error("action: notify_draw | result: fail | worker: %d | error: %s", slot.index, err)

    # --- shutdown -----------------------------------------------------------------------------

    def _shutdown(self) -> int:
        self._pause_accepting()
        if self.listener is not None:
            self.listener.close()
            log.info("action: close_listener | result: success")
        for slot in self.slots.values():
            self._signal_worker(slot, signal.SIGTERM)
        deadline = time.monotonic() + self.config.shutdown_timeout
        while self.slots and time.monotonic() < deadline:
            self.selector.select(timeout=min(0.05, max(0.0, deadline - time.monotonic())))
            self.wakeup.drain()
            self.signals = [s for s in self.signals if s != signal.SIGCHLD]
            if self.signals:
                log.warning("action: shutdown | result: in_progress | reason: second signal, killing workers")
                self.signals.clear()
                break
            self._reap()
        for slot in list(self.slots.values()):
            log.warning("action: stop_worker | result: in_progress | worker: %d | signal: SIGKILL", slot.index)
            self._signal_worker(slot, signal.SIGKILL)
        while self.slots:
            pid, status = os.waitpid(next(iter(self.slots)), 0)
            slot = self.slots.pop(pid)
            log.info(
                "action: worker_exit | result: success | worker: %d | pid: %d | status: %s",
                slot.index,
                pid,
                describe_status(status),
            )
            slot.channel.close()
            log.info("action: close_channel | result: success | worker: %d", slot.index)
        self.selector.close()
        if self.storage is not None:
            self.storage.close()
            log.info("action: close_storage | result: success")
        self.wakeup.close()
        log.info("action: exit | result: success")
        return 0

    def _signal_worker(self, slot: WorkerSlot, signum: signal.Signals) -> None:
        try:
            os.kill(slot.pid, signum)
            log.info("action: stop_worker | result: success | worker: %d | signal: %s", slot.index, signum.name)
        except ProcessLookupError:
            pass
