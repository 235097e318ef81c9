"""Admission: who gets in, and who must leave (the handshake budget and deadline, the TLS
handshake, the agency's identity, one live session per agency). When a worker accepts, and which
worker does, is accepting.py's; each accepted connection comes here (`admit`).

Connections that have not authenticated (TLS handshakes, health checks) have their own budget,
HANDSHAKE_BUDGET, and a deadline, HANDSHAKE_TIMEOUT: when the budget is full the oldest of them is
closed, so idle, dripping or garbage connections can never keep an agency out or take its slot.

On the agencies' port every connection is mutual TLS 1.3, its handshake stepped in the worker's
non-blocking loop; the agency's identity is the verified certificate's ``agency-<N>`` (never what
it writes). At most one session per agency lives at a time: an authenticated session claims its
agency on the shared board, and every older session of the agency, in whichever worker, closes.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import ssl
import time
from typing import Protocol

from . import transport
from .accepting import Accepting, Selector
from .board import Board
from .channel import Listeners
from .config import ServerConfig
from .connection import Connection

log = logging.getLogger(__name__)

# Readable names for the TLS errors an unwelcome peer causes most often.
_TLS_REASONS = {
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "no client certificate",
    "WRONG_VERSION_NUMBER": "not a TLS ClientHello (plaintext or garbage)",
    "HTTP_REQUEST": "not a TLS ClientHello (an HTTP request)",
    "UNSUPPORTED_PROTOCOL": "not TLS 1.3",
    "TLSV1_ALERT_PROTOCOL_VERSION": "not TLS 1.3",
}


def tls_failure(err: Exception) -> str:
    if isinstance(err, ssl.SSLCertVerificationError):
        return f"certificate refused: {err.verify_message}"
    if isinstance(err, (ssl.SSLEOFError, ssl.SSLZeroReturnError)):
        return "the peer closed during the handshake"
    if isinstance(err, ssl.SSLError):
        reason = err.reason or str(err)
        return f"{_TLS_REASONS.get(reason, 'TLS error')} ({reason})"
    return f"connection error: {getattr(err, 'strerror', None) or err}"


class Loop(Selector, Protocol):
    """What admission, and its accepting, ask of the worker's loop."""

    def add(self, conn: Connection) -> None: ...
    def set_events(self, conn: Connection, events: int) -> None: ...
    def close(self, conn: Connection, reason: str) -> None: ...
    def nudge(self) -> None: ...


class Admission:
    def __init__(
        self, index: int, listeners: Listeners, config: ServerConfig, tls: ssl.SSLContext, board: Board, loop: Loop
    ) -> None:
        self.index = index
        self.config = config
        self.tls = tls
        self.board = board
        self.loop = loop
        self.unauthenticated: dict[Connection, None] = {}  # oldest first: handshakes, health checks
        self.sessions: set[Connection] = set()  # authenticated, open
        self.supersessions = 0  # the board's count when the sessions were last walked
        self.accepting = Accepting(index, listeners, config, board, loop, self.admit, lambda: len(self.sessions))

    def update_accepting(self) -> None:
        """Accept while there is room for a session (accepting.py); called as sessions come and go."""
        self.accepting.update()

    # --- admitting ----------------------------------------------------------------------------

    def admit(self, sock: socket.socket, address: tuple[str, int], health: bool) -> None:
        """A connection just accepted: make room for it in the handshake budget (closing the
        oldest connection that has not authenticated), wrap it in TLS on the agencies' port, and
        watch it."""
        sock.setblocking(False)
        with contextlib.suppress(OSError):  # the peer is already gone; the first read will say so
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = f"{address[0]}:{address[1]}"
        if len(self.unauthenticated) >= self.config.handshake_budget:
            oldest = next(iter(self.unauthenticated))
            log.warning(
                "action: handshake | result: fail | peer: %s | reason: closed for a newer connection: %d connections"
                " of worker %d had not authenticated (HANDSHAKE_BUDGET)",
                oldest.peer,
                len(self.unauthenticated),
                self.index,
            )
            self.loop.close(oldest, "evicted before authenticating")
        if not health:
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        conn = Connection(sock, peer, health)
        self.unauthenticated[conn] = None
        self.loop.add(conn)
        # Health checks come every few seconds: their routine lines are DEBUG, their refusals are not.
        log.log(
            logging.DEBUG if health else logging.INFO,
            "action: accept | result: success | peer: %s | worker: %d | port: %s",
            peer,
            self.index,
            "health" if health else "agencies",
        )

    # --- authenticating -----------------------------------------------------------------------

    def authenticated(self, conn: Connection) -> bool:
        """Whether `conn` may exchange messages: a health check, or a finished TLS handshake."""
        return conn.session.health or conn.session.agency is not None

    def handshake(self, conn: Connection) -> bool:
        """One step of the TLS handshake; True once the connection is an authenticated session."""
        assert isinstance(conn.sock, ssl.SSLSocket)
        try:
            conn.sock.do_handshake()
        except ssl.SSLWantReadError:
            self.loop.set_events(conn, selectors.EVENT_READ)
            return False
        except ssl.SSLWantWriteError:
            self.loop.set_events(conn, selectors.EVENT_WRITE)
            return False
        except (ssl.SSLError, OSError) as err:
            log.warning("action: handshake | result: fail | peer: %s | reason: %s", conn.peer, tls_failure(err))
            self.loop.close(conn, "TLS handshake failed")
            return False
        certificate = conn.sock.getpeercert()
        agency = transport.agency_of(certificate)
        if agency is None or not 1 <= agency <= self.config.agencies:
            log.warning(
                "action: handshake | result: fail | peer: %s | reason: the certificate (subject %s) is not agency-N"
                " with N in 1..%d",
                conn.peer,
                (certificate or {}).get("subject", ()),
                self.config.agencies,
            )
            self.loop.close(conn, "not an agency of this round")
            return False
        session = conn.session
        session.agency = agency
        session.token = self.board.claim(agency, self.index)
        conn.last_active = time.monotonic()
        del self.unauthenticated[conn]
        self.sessions.add(conn)
        log.info(
            "action: handshake | result: success | peer: %s | agency: %d | worker: %d", conn.peer, agency, self.index
        )
        if self.check_sessions():  # it (or another) made a session stale: this worker's are closed
            self.loop.nudge()  # the other workers drop theirs
        self.update_accepting()
        self.loop.set_events(conn, selectors.EVENT_READ)
        return True

    def forget(self, conn: Connection) -> None:
        """`conn` was closed."""
        if conn in self.unauthenticated or conn in self.sessions:
            self.unauthenticated.pop(conn, None)
            self.sessions.discard(conn)
            if not conn.session.health:
                self.accepting.released()

    # --- leaving ------------------------------------------------------------------------------

    def check_sessions(self, walk: bool = False) -> bool:
        """Close every session a newer session of its agency superseded; True if some session
        went stale since the last walk. Its sessions are walked only then, or with `walk` (the
        worker's tick: a safety net for two first sessions of an agency claimed at the same
        instant, which both saw no older token)."""
        supersessions = self.board.supersessions()
        stale = supersessions != self.supersessions
        if not stale and not walk:
            return False
        self.supersessions = supersessions
        for conn in list(self.sessions):
            session = conn.session
            if session.agency is not None and not self.board.current(session.agency, session.token):
                log.info(
                    "action: session | result: success | agency: %d | peer: %s | reason: superseded by a newer"
                    " session of the agency",
                    session.agency,
                    conn.peer,
                )
                if session.held is not None:
                    log.info(
                        "action: consulta_ganadores | result: fail | agency: %d | reason: superseded", session.held
                    )
                self.loop.close(conn, "superseded")
        return stale

    def sweep(self, now: float) -> None:
        """Close the connections that did not authenticate within HANDSHAKE_TIMEOUT."""
        for conn in list(self.unauthenticated):
            if now - conn.accepted > self.config.handshake_timeout:
                log.warning(
                    "action: handshake | result: fail | peer: %s | reason: no %s within %gs (HANDSHAKE_TIMEOUT)",
                    conn.peer,
                    "health check" if conn.session.health else "TLS handshake",
                    self.config.handshake_timeout,
                )
                self.loop.close(conn, "handshake timeout")
