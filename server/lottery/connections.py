"""A worker's open connections: their selector registrations and their I/O (owns reading into
frames for the handler, flushing answers, closing, and the idle sweep).

It is the worker loop's side of `admission.Loop` (watch a listener, add a connection, close one)
and of `session.Outbox` (the handler's answers land in a connection's output buffer, flushed at
the end of the loop turn). Each connection's selector key carries the callback `serve`, which
steps its TLS handshake (admission.py) until it is authenticated, then reads and flushes it.
"""

from __future__ import annotations

import logging
import selectors
import socket
from collections.abc import Callable

from .admission import Admission
from .config import ServerConfig
from .connection import Connection, Read
from .handler import Handler
from .protocol import ErrorCode, ProtocolError
from .session import Session

log = logging.getLogger(__name__)

CLOSE_GRACE = 5.0  # seconds a closing connection gets to take its last answer
_IDLE = ProtocolError(ErrorCode.IDLE_TIMEOUT, "idle timeout")


class ConnectionTable:
    """Wired in two steps (admission and handler need the table, the table needs them): create
    it, then set `admission` and `handler`."""

    admission: Admission
    handler: Handler

    def __init__(self, selector: selectors.BaseSelector, config: ServerConfig, nudge: Callable[[], None]) -> None:
        self.selector = selector
        self.config = config
        self.nudge = nudge
        self.by_session: dict[Session, Connection] = {}
        self.dirty: set[Connection] = set()  # with output to flush this turn
        self.ready: set[Connection] = set()  # TLS holds decrypted bytes the selector cannot see
        self.stopping = False

    def all(self) -> list[Connection]:
        return list(self.by_session.values())

    # --- admission.Loop -----------------------------------------------------------------------

    def watch(self, listener: socket.socket, callback: Callable[[int], None]) -> None:
        self.selector.register(listener, selectors.EVENT_READ, callback)

    def unwatch(self, listener: socket.socket) -> None:
        self.selector.unregister(listener)

    def add(self, conn: Connection) -> None:
        self.by_session[conn.session] = conn
        conn.events = selectors.EVENT_READ
        self.selector.register(conn.sock, conn.events, lambda mask: self.serve(conn, mask))

    def set_events(self, conn: Connection, events: int) -> None:
        if events != conn.events:
            if conn.events and events:
                self.selector.modify(conn.sock, events, self.selector.get_key(conn.sock).data)
            elif events:
                self.selector.register(conn.sock, events, lambda mask: self.serve(conn, mask))
            else:
                self.selector.unregister(conn.sock)
            conn.events = events

    def close(self, conn: Connection, reason: str) -> None:
        if not conn.open:
            return
        if conn.events:
            self.selector.unregister(conn.sock)
        conn.close()  # its batches waiting for the group commit are no longer stored
        del self.by_session[conn.session]
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

    # --- session.Outbox -----------------------------------------------------------------------

    def send(self, session: Session, frame: bytes) -> None:
        conn = self.by_session.get(session)
        if conn is not None and conn.open:
            conn.outbuf += frame
            self.dirty.add(conn)

    def close_after_send(self, session: Session) -> None:
        conn = self.by_session.get(session)
        if conn is not None and conn.open:
            conn.start_closing()
            self.dirty.add(conn)

    # --- one connection -----------------------------------------------------------------------

    def serve(self, conn: Connection, mask: int) -> None:
        """The selector's callback for `conn`."""
        if not conn.open:
            return  # closed earlier in this turn (evicted, superseded): its event is stale
        if not self.admission.authenticated(conn):
            if self.admission.handshake(conn):
                self.read(conn)  # application data may have come with the handshake's last flight
            return
        if mask & selectors.EVENT_WRITE:
            self.flush(conn)
            if conn.read_wants_write and conn.open:
                conn.read_wants_write = False
                self.read(conn)
        if mask & selectors.EVENT_READ and conn.open:
            self.read(conn)

    def read(self, conn: Connection) -> None:
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
            self.process(conn)
            handled = True
        # Once per turn, not per TLS record: the events follow what the frames left to send.
        if handled or conn.read_wants_write:
            self.update_events(conn)

    def read_ready(self) -> None:
        """Read the connections whose decrypted bytes the selector could not report."""
        ready, self.ready = self.ready, set()
        for conn in ready:
            if conn.open:
                self.read(conn)

    def process(self, conn: Connection) -> None:
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

    def update_events(self, conn: Connection) -> None:
        if not conn.open:
            return
        events = conn.wanted_events()
        if events & selectors.EVENT_READ and conn.has_buffered():
            self.ready.add(conn)
        self.set_events(conn, events)

    def flush_dirty(self) -> None:
        dirty, self.dirty = self.dirty, set()
        for conn in dirty:
            if conn.open:
                self.flush(conn)

    def flush(self, conn: Connection) -> None:
        if not conn.flush():
            self.close(conn, conn.broken)
        elif conn.closing_since is not None and not conn.outbuf:
            self.close(conn, "closed after error")
        else:
            self.update_events(conn)

    def sweep_idle(self, now: float) -> None:
        """Close idle sessions and connections that would not take their last answer."""
        for conn in self.all():
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
                self.handler.refuse(conn.session, _IDLE, logged=True)
                self.flush(conn)
