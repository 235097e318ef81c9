"""A worker process: one selector loop serving many connections (owns the loop, the worker's
tick and its life cycle; everything else it delegates).

Each selector key carries the callback that handles its events: the wake-up pipe (signals), the
channel to the supervisor (nudges: look at the draw and the sessions again), the listening
sockets (accepting.py accepts), and each connection (connections.py reads and flushes it,
admission.py runs its TLS handshake, handler.py handles its messages), and the storage's sync
thread (syncer.py: a group's sync has returned). Batches wait for the end of the loop turn, when
the group commit (commit.py) appends them all at once and asks for one sync; the loop reads on
meanwhile, and answers the group once its sync has returned. Every connection with output is
flushed at the end of each turn.

A failed fsync, or a storage that cannot be trusted, ends the worker at once with
EXIT_STORAGE_FAILED and no further answer (fail-stop); the supervisor then stops the central.
On SIGTERM the worker finishes its turn (the batches already read are stored and answered),
stops accepting, answers every connection (held winners queries included) with SHUTTING_DOWN,
closes them, its channel and its storage, and exits 0.
"""

from __future__ import annotations

import logging
import selectors
import signal
import socket
import ssl
import time

from . import draw, protocol
from .admission import Admission
from .board import Board
from .channel import EXIT_OK, EXIT_STORAGE_FAILED, Listeners, drain_nudges, nudge
from .commit import GroupCommit
from .config import ServerConfig
from .connections import ConnectionTable
from .durable import StorageError, SyncFailed
from .handler import Handler
from .health import StorageHealth
from .protocol import ErrorCode
from .storage import Storage
from .wakeup import WakeupPipe

log = logging.getLogger(__name__)

TICK = 1.0  # seconds between sweeps: idle connections, the draw, the sessions, a paused accept


class Worker:
    def __init__(
        self, index: int, listeners: Listeners, channel: socket.socket, config: ServerConfig, tls: ssl.SSLContext,
        board: Board,
    ) -> None:  # fmt: skip
        self.index, self.listeners, self.channel, self.config = index, listeners, channel, config
        self.storage = Storage(config.storage_dir, board, index, background_sync=True)
        self.selector = selectors.DefaultSelector()
        self.winners: dict[int, list[str]] | None = None
        self.stopping = False
        self.wakeup = WakeupPipe()
        self.connections = ConnectionTable(self.selector, config, self._nudge)
        self.admission = Admission(index, listeners, config, tls, board, self.connections)
        self.commit = GroupCommit(self.storage, board, self.connections, index, self._nudge)
        health = StorageHealth(config.storage_dir, board, index, self.storage.syncer.running_for)
        self.handler = Handler(
            self.storage, self.commit, self.connections, lambda: self.winners, health.problem, index
        )  # fmt: skip
        self.connections.admission, self.connections.handler = self.admission, self.handler

    def run(self) -> int:
        self.wakeup.install()
        signal.signal(signal.SIGTERM, self._on_sigterm)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides; it sends SIGTERM
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        self.selector.register(self.wakeup, selectors.EVENT_READ, lambda mask: self.wakeup.drain())
        self.selector.register(self.channel, selectors.EVENT_READ, self._on_channel)
        self.selector.register(self.storage.syncer, selectors.EVENT_READ, lambda mask: self.commit.on_synced())
        try:
            self._check_draw()
            self.admission.update_accepting()
            next_tick = time.monotonic() + TICK
            while not self.stopping:
                wake = self.admission.accepting.wake_at(next_tick)
                timeout = 0.0 if self.connections.ready else max(0.0, wake - time.monotonic())
                for key, mask in self.selector.select(timeout=timeout):
                    key.data(mask)
                self.connections.read_ready()
                now = time.monotonic()
                self.admission.accepting.end_wait(now)
                if now >= next_tick:
                    self._tick(now)
                    next_tick = now + TICK
                self.commit.start()
                self.connections.flush_dirty()
            self._shutdown()
        except SyncFailed as err:  # fail-stop: no answer may follow a failed fsync
            log.critical("action: storage_sync | result: fail | worker: %d | error: %s", self.index, err)
            return EXIT_STORAGE_FAILED
        except StorageError as err:  # damaged files, an append that could not be undone
            log.critical("action: storage_error | result: fail | worker: %d | error: %s", self.index, err)
            return EXIT_STORAGE_FAILED
        return EXIT_OK

    def _nudge(self) -> None:
        """Tell the supervisor to look again (a FIN, a new session); it tells the other workers."""
        nudge(self.channel)

    def _on_sigterm(self, signum: int, frame: object) -> None:
        self.stopping = True  # the loop acts; a handler only records

    def _on_channel(self, mask: int) -> None:
        if not drain_nudges(self.channel):
            log.error("action: worker_channel | result: fail | worker: %d | reason: supervisor gone", self.index)
            self.selector.unregister(self.channel)
            self.stopping = True
            return
        self._check_draw()
        self.admission.check_sessions()

    def _tick(self, now: float) -> None:
        self.connections.sweep_idle(now)
        self.admission.sweep(now)
        self._check_draw()
        self.admission.check_sessions(walk=True)
        self.admission.update_accepting()

    def _check_draw(self) -> None:
        """Load the result once the round is drawn, and answer the winners queries held for it."""
        if self.winners is not None or not draw.draw_done(self.config.storage_dir):
            return
        self.winners = draw.load_winners(self.config.storage_dir)
        for conn in self.connections.all():
            if self.handler.release_held(conn.session):
                self.connections.process(conn)  # frames it sent behind the query
                self.connections.update_events(conn)

    def _shutdown(self) -> None:
        """Finish this turn's batches and the groups in flight, tell every peer we are leaving,
        close everything."""
        self.commit.run()
        self.connections.stopping = True
        self.admission.accepting.stop()
        self.listeners.close()
        for conn in self.connections.all():
            if conn.session.held is not None:
                log.info(
                    "action: consulta_ganadores | result: fail | agency: %d | reason: shutting down", conn.session.held
                )
            self.handler.reply(conn.session, protocol.Error(ErrorCode.SHUTTING_DOWN, 0, "server shutting down"))
            if conn.open:
                conn.flush()
                self.connections.close(conn, "shutdown")
        self.selector.close()
        self.channel.close()
        log.info("action: close_channel | result: success | worker: %d", self.index)
        self.storage.close()
        log.info("action: close_storage | result: success | worker: %d", self.index)
        self.wakeup.close()
        log.info("action: worker_exit | result: success | worker: %d", self.index)


def run_worker(
    index: int, listeners: Listeners, channel: socket.socket, config: ServerConfig, tls: ssl.SSLContext, board: Board
) -> int:
    """Entry point in the forked child; returns its exit code."""
    try:
        worker = Worker(index, listeners, channel, config, tls, board)
    except StorageError as err:
        log.critical("action: storage_open | result: fail | worker: %d | error: %s", index, err)
        return EXIT_STORAGE_FAILED
    return worker.run()
