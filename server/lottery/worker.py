"""A worker process: one selector loop serving many connections (owns the loop, the idle sweep
and the worker's life cycle; everything else it delegates).

Each selector key carries the callback that handles its events: the wake-up pipe (signals), the
channel to the supervisor (nudges: look at the draw and the sessions again), the listening
sockets (admission.py accepts), and each connection (connection.py reads and flushes it,
admission.py runs its TLS handshake, handler.py handles its messages). Batches wait for the end
of the loop turn, when the group commit (commit.py) stores them all with one append and one sync;
then every connection with output is flushed.

A failed fsync, or a storage that cannot be trusted, ends the worker at once with
EXIT_STORAGE_FAILED and no further answer (fail-stop); the supervisor then stops the central.
"""

from __future__ import annotations

import logging
import selectors
import signal
import socket
import ssl
import time
from collections.abc import Callable

from . import draw, protocol
from .admission import Admission
from .board import Board
from .channel import EXIT_OK, EXIT_STORAGE_FAILED, Listeners, drain_nudges, nudge
from .commit import GroupCommit
from .config import ServerConfig
from .connection import Connection, Read
from .durable import StorageError, SyncFailed
from .handler import Handler
from .health import StorageHealth
from .protocol import ErrorCode, ProtocolError
from .session import Session
from .storage import Storage
from .wakeup import WakeupPipe

log = logging.getLogger(__name__)

CLOSE_GRACE = 5.0  # seconds a closing connection gets to take its last answer
TICK = 1.0  # seconds between sweeps: idle connections, the draw, the sessions, a paused accept


class Worker:
    def __init__(
        self, index: int, listeners: Listeners, channel: socket.socket, config: ServerConfig,
        tls: ssl.SSLContext, board: Board,
    ) -> None:  # fmt: skip
        self.index, self.listeners, self.channel, self.config = index, listeners, channel, config
        self.storage = Storage(config.storage_dir, board, index)
        self.selector = selectors.DefaultSelector()
        self.connections: dict[Session, Connection] = {}
        self.dirty: set[Connection] = set()  # with output to flush this turn
        self.ready: set[Connection] = set()  # TLS holds decrypted bytes the selector cannot see
        self.winners: dict[int, list[str]] | None = None
        self.stopping = False
        self.wakeup = WakeupPipe()
        self.admission = Admission(index, listeners, config, tls, board, self)
        self.commit = GroupCommit(self.storage, board, self, index)
        health = StorageHealth(config.storage_dir, board)
        self.handler = Handler(self.storage, self.commit, self, lambda: self.winners, health.problem, self.nudge, index)

    def run(self) -> int:
        self.wakeup.install()
        signal.signal(signal.SIGTERM, self._on_sigterm)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides; it sends SIGTERM
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        self.selector.register(self.wakeup, selectors.EVENT_READ, lambda mask: self.wakeup.drain())
        self.selector.register(self.channel, selectors.EVENT_READ, self._on_channel)
        try:
            self._check_draw()
            self.admission.update_accepting()
            next_tick = time.monotonic() + TICK
            while not self.stopping:
                timeout = 0.0 if self.ready else max(0.0, next_tick - time.monotonic())
                for key, mask in self.selector.select(timeout=timeout):
                    key.data(mask)
                ready, self.ready = self.ready, set()
                for conn in ready:
                    if conn.open:
                        self._read(conn)
                now = time.monotonic()
                if now >= next_tick:
                    self._tick(now)
                    next_tick = now + TICK
                self.commit.run()
                self._flush_dirty()
            self._shutdown()
        except SyncFailed as err:  # fail-stop: no answer may follow a failed fsync
            log.critical("action: storage_sync | result: fail | worker: %d | error: %s", self.index, err)
            return EXIT_STORAGE_FAILED
        except StorageError as err:  # damaged files, an append that could not be undone
            log.critical("action: storage_error | result: fail | worker: %d | error: %s", self.index, err)
            return EXIT_STORAGE_FAILED
        return EXIT_OK

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
        self._sweep_idle(now)
        self.admission.sweep(now)
        self._check_draw()
        self.admission.check_sessions()
        self.admission.update_accepting()

    def _check_draw(self) -> None:
        """Load the result once the round is drawn, and answer the winners queries held for it."""
        if self.winners is not None or not draw.draw_done(self.config.storage_dir):
            return
        self.winners = draw.load_winners(self.config.storage_dir)
        for conn in list(self.connections.values()):
            if self.handler.release_held(conn.session):
                self._process(conn)  # frames it sent behind the query
                self._update_events(conn)

    # --- the loop's side of admission.Loop and session.Outbox ---------------------------------

    def watch(self, listener: socket.socket, callback: Callable[[int], None]) -> None:
        self.selector.register(listener, selectors.EVENT_READ, callback)

    def unwatch(self, listener: socket.socket) -> None:
        self.selector.unregister(listener)

    def add(self, conn: Connection) -> None:
        self.connections[conn.session] = conn
        conn.events = selectors.EVENT_READ
        self.selector.register(conn.sock, conn.events, lambda mask: self._serve(conn, mask))

    def set_events(self, conn: Connection, events: int) -> None:
        if events != conn.events:
            if conn.events and events:
                self.selector.modify(conn.sock, events, self.selector.get_key(conn.sock).data)
            elif events:
                self.selector.register(conn.sock, events, lambda mask: self._serve(conn, mask))
            else:
                self.selector.unregister(conn.sock)
            conn.events = events

    def nudge(self) -> None:
        nudge(self.channel)

    def send(self, session: Session, frame: bytes) -> None:
        conn = self.connections.get(session)
        if conn is not None and conn.open:
            conn.outbuf += frame
            self.dirty.add(conn)

    def close_after_send(self, session: Session) -> None:
        conn = self.connections.get(session)
        if conn is not None and conn.open:
            conn.start_closing()
            self.dirty.add(conn)

    def close(self, conn: Connection, reason: str) -> None:
        if not conn.open:
            return
        if conn.events:
            self.selector.unregister(conn.sock)
        conn.close()  # its batches waiting for the group commit are no longer stored
        del self.connections[conn.session]
        self.admission.forget(conn)
        self.dirty.discard(conn)
        self.ready.discard(conn)
        routine = conn.session.health and reason == "peer closed"  # a health check that went well
        log.log(
            logging.DEBUG if routine else logging.INFO,
            "action: close_connection | result: success | peer: %s | reason: %s",
            conn.peer,
            reason,
        )
        if not self.stopping:
            self.admission.update_accepting()

    # --- one connection -----------------------------------------------------------------------

    def _serve(self, conn: Connection, mask: int) -> None:
        if not conn.open:
            return  # closed earlier in this turn (evicted, superseded): its event is stale
        if not self.admission.authenticated(conn):
            if self.admission.handshake(conn):
                self._read(conn)  # application data may have come with the handshake's last flight
            return
        if mask & selectors.EVENT_WRITE:
            self._flush(conn)
            if conn.read_wants_write and conn.open:
                conn.read_wants_write = False
                self._read(conn)
        if mask & selectors.EVENT_READ and conn.open:
            self._read(conn)

    def _read(self, conn: Connection) -> None:
        handled = False
        for result in conn.read():
            if result is Read.CLOSED:
                if conn.broken == "peer closed" and conn.inbuf and conn.closing_since is None:
                    log.warning(
                        "action: receive_message | result: fail | peer: %s | reason: truncated frame (%d bytes)",
                        conn.peer,
                        len(conn.inbuf),
                    )
                self.close(conn, conn.broken)
                return
            self._process(conn)
            handled = True
        # Once per turn, not per TLS record: the events follow what the frames left to send.
        if handled or conn.read_wants_write:
            self._update_events(conn)

    def _process(self, conn: Connection) -> None:
        """Handle every complete frame in the connection's buffer, in order."""
        session = conn.session
        while session.open and not session.closing and session.held is None:
            try:
                frame = conn.next_frame()
            except ProtocolError as err:
                self.handler.refuse(session, err)
                return
            if frame is None:
                return
            self.handler.handle(session, *frame)

    def _update_events(self, conn: Connection) -> None:
        if not conn.open:
            return
        events = conn.wanted_events()
        if events & selectors.EVENT_READ and conn.has_buffered():
            self.ready.add(conn)
        self.set_events(conn, events)

    def _flush_dirty(self) -> None:
        dirty, self.dirty = self.dirty, set()
        for conn in dirty:
            if conn.open:
                self._flush(conn)

    def _flush(self, conn: Connection) -> None:
        if not conn.flush():
            self.close(conn, conn.broken)
        elif conn.closing_since is not None and not conn.outbuf:
            self.close(conn, "closed after error")
        else:
            self._update_events(conn)

    def _sweep_idle(self, now: float) -> None:
        """Close idle sessions and connections that would not take their last answer."""
        for conn in list(self.connections.values()):
            if conn.closing_since is not None:
                if now - conn.closing_since > CLOSE_GRACE:
                    self.close(conn, "closing peer did not read")
            elif not self.admission.authenticated(conn) or conn.session.health or not conn.open:
                continue  # HANDSHAKE_TIMEOUT governs it, not the idle timeout
            elif conn.session.held is None and now - conn.last_active > self.config.idle_timeout:
                log.warning(
                    "action: receive_message | result: fail | peer: %s | code: IDLE_TIMEOUT | reason: idle for %gs",
                    conn.peer,
                    self.config.idle_timeout,
                )
                self.handler.refuse(session=conn.session, err=_IDLE, logged=True)
                self._flush(conn)

    def _shutdown(self) -> None:
        """Finish this turn's batches, tell every peer we are leaving, close everything."""
        self.commit.run()
        self.admission.stop()
        self.listeners.close()
        for conn in list(self.connections.values()):
            if conn.session.held is not None:
                log.info(
                    "action: consulta_ganadores | result: fail | agency: %d | reason: shutting down", conn.session.held
                )
            self.handler.reply(conn.session, protocol.Error(ErrorCode.SHUTTING_DOWN, 0, "server shutting down"))
            if conn.open:
                conn.flush()
                self.close(conn, "shutdown")
        self.selector.close()
        self.channel.close()
        log.info("action: close_channel | result: success | worker: %d", self.index)
        self.storage.close()
        log.info("action: close_storage | result: success | worker: %d", self.index)
        self.wakeup.close()
        log.info("action: worker_exit | result: success | worker: %d", self.index)


_IDLE = ProtocolError(ErrorCode.IDLE_TIMEOUT, "idle timeout")


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

