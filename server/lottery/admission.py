"""Admission: who gets in, and who must leave (accepting, the handshake budget and deadline, the
TLS handshake, the agency's identity, one live session per agency).

Each worker accepts on the listening sockets it inherited (gunicorn's model), one connection per
loop turn, so the workers share a burst. It serves up to WORKER_CONNECTIONS authenticated sessions
and stops watching the agencies' port while full: the rest wait in the kernel's backlog. Running
out of descriptors or memory in `accept` pauses accepting for ACCEPT_PAUSE instead of spinning.

**Least connections first.** Whichever worker is idle when an agency connects would take it, so
a worker that is busy for a moment (a handshake, a sync) loses the next connections to the
other: five agencies often split 4 to 1 over two workers, and the worker with four works alone
at the end. So a worker that holds more connections on the agencies' port than another one (the
shared board's loads) leaves a new connection in the backlog for up to BALANCE_WAIT, for the
lighter worker to take. If it is still there after that (the lighter worker is busy, stopped or
gone), the worker takes it and does not wait again for BALANCE_HOLDOFF: a stuck worker can delay
accepting by BALANCE_WAIT at most once per BALANCE_HOLDOFF, never stop it.

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
import errno
import logging
import selectors
import socket
import ssl
import time
from collections.abc import Callable
from typing import Protocol

from . import transport
from .board import Board
from .channel import Listeners
from .config import ServerConfig
from .connection import Connection

log = logging.getLogger(__name__)

ACCEPT_PAUSE = 0.5  # seconds without accepting after accept ran out of descriptors or memory
BALANCE_WAIT = 0.005  # seconds a worker holding more connections than another leaves a new one to it
BALANCE_HOLDOFF = 0.1  # seconds without such waits after one that the lighter worker did not end
# accept errors that concern one connection that vanished: try the next one at once
_TRANSIENT_ACCEPT = frozenset({errno.ECONNABORTED, errno.EPROTO, errno.EPERM})

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


class Loop(Protocol):
    """What admission asks of the worker's loop."""

    def watch(self, listener: socket.socket, callback: Callable[[int], None]) -> None: ...
    def unwatch(self, listener: socket.socket) -> None: ...
    def add(self, conn: Connection) -> None: ...
    def set_events(self, conn: Connection, events: int) -> None: ...
    def close(self, conn: Connection, reason: str) -> None: ...
    def nudge(self) -> None: ...


class Admission:
    def __init__(
        self, index: int, listeners: Listeners, config: ServerConfig, tls: ssl.SSLContext, board: Board, loop: Loop
    ) -> None:
        self.index = index
        self.listeners = listeners
        self.config = config
        self.tls = tls
        self.board = board
        self.loop = loop
        self.unauthenticated: dict[Connection, None] = {}  # oldest first: handshakes, health checks
        self.sessions: set[Connection] = set()  # authenticated, open
        self.supersessions = 0  # the board's count when the sessions were last walked
        self.watching: set[socket.socket] = set()
        self.paused_until = 0.0
        self.stopped = False
        self.load = 0  # connections on the agencies' port, in their handshake or in session
        self.waiting_until = 0.0  # leaving the agencies' port to a lighter worker until then (0: not)
        self.balance_off_until = 0.0  # no leaving it to a lighter worker until then
        board.set_load(index, 0)  # a new worker in the slot of a dead one holds nothing yet

    # --- accepting ----------------------------------------------------------------------------

    def update_accepting(self) -> None:
        """Watch the agencies' port while there is room for a session, the health port always;
        neither while accepting is paused or stopped."""
        open_for_all, room = self._open(time.monotonic()), self._room()
        agencies, health = self.listeners.agencies, self.listeners.health
        if open_for_all and room and not self.waiting_until:
            self._watch(agencies, lambda mask: self.accept(agencies, health=False))
        else:
            if agencies in self.watching and not room:
                log.warning(
                    "action: accept | result: in_progress | worker: %d | connections: %d"
                    " | reason: every connection slot is taken, new connections wait in the backlog",
                    self.index,
                    len(self.sessions),
                )
            self._unwatch(agencies)
        if open_for_all:
            self._watch(health, lambda mask: self.accept(health, health=True))
        else:
            self._unwatch(health)

    def _open(self, now: float) -> bool:
        """Whether accepting is neither stopped nor paused."""
        return not self.stopped and now >= self.paused_until

    def _room(self) -> bool:
        """Whether this worker has room for another session."""
        return len(self.sessions) < self.config.worker_connections

    def stop(self) -> None:
        """Accept nothing more (shutdown)."""
        self.stopped = True
        for listener in list(self.watching):
            self._unwatch(listener)

    def _watch(self, listener: socket.socket, callback: Callable[[int], None]) -> None:
        if listener not in self.watching:
            self.loop.watch(listener, callback)
            self.watching.add(listener)

    def _unwatch(self, listener: socket.socket) -> None:
        if listener in self.watching:
            self.loop.unwatch(listener)
            self.watching.discard(listener)

    def _accept_one(self, listener: socket.socket) -> tuple[socket.socket, tuple[str, int]] | None:
        """`accept`, skipping connections that vanished; None if there is none (or accepting ran
        out of descriptors or memory, and is paused)."""
        while True:
            try:
                sock, address = listener.accept()
                return sock, address
            except (BlockingIOError, InterruptedError):
                return None
            except OSError as err:
                if err.errno in _TRANSIENT_ACCEPT:
                    log.info("action: accept | result: fail | worker: %d | error: %s", self.index, err)
                    continue
                # Out of descriptors or memory: the listener stays readable, so back off instead
                # of spinning; connections wait in the backlog meanwhile.
                log.error(
                    "action: accept | result: fail | worker: %d | error: %s | reason: pausing accept for %gs",
                    self.index,
                    err,
                    ACCEPT_PAUSE,
                )
                self.paused_until = time.monotonic() + ACCEPT_PAUSE
                self.update_accepting()
                return None

    def _leave_to_lighter(self) -> bool:
        """Whether to leave the waiting connection to a worker that holds fewer (see the module's
        docstring); if so, stop watching the agencies' port for BALANCE_WAIT."""
        now = time.monotonic()
        if now < self.balance_off_until or not self.board.lighter_worker(self.index, self.config.workers):
            return False
        self.waiting_until = now + BALANCE_WAIT
        self.update_accepting()
        return True

    def wake_at(self, at: float) -> float:
        """The time the loop must wake by: `at`, or sooner if a wait for a lighter worker ends."""
        return min(at, self.waiting_until) if self.waiting_until else at

    def end_wait(self, now: float) -> None:
        """Once a wait for a lighter worker is over: take the connection it left, if it is still
        there, and then wait for none for BALANCE_HOLDOFF; watch the agencies' port again."""
        if not self.waiting_until or now < self.waiting_until:
            return
        self.waiting_until = 0.0
        if self._open(now) and self._room() and self._take(self.listeners.agencies, health=False, waited=True):
            self.balance_off_until = now + BALANCE_HOLDOFF
            log.debug(
                "action: accept | result: in_progress | worker: %d | reason: no lighter worker took the"
                " connection within %gs; taking the next ones at once for %gs",
                self.index,
                BALANCE_WAIT,
                BALANCE_HOLDOFF,
            )
        self.update_accepting()

    def accept(self, listener: socket.socket, health: bool) -> None:
        """Accept one connection (the other workers get their turn at the next ones), unless it
        is left to a lighter worker."""
        self._take(listener, health, waited=False)

    def _take(self, listener: socket.socket, health: bool, waited: bool) -> bool:
        """`accept`; whether a connection was accepted. `waited`: it was left to a lighter
        worker already."""
        if not health and not waited and self._leave_to_lighter():
            return False
        accepted = self._accept_one(listener)
        if accepted is None:
            return False
        sock, address = accepted
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
        if not health:
            self._set_load(self.load + 1)
        self.loop.add(conn)
        # Health checks come every few seconds: their routine lines are DEBUG, their refusals are not.
        log.log(
            logging.DEBUG if health else logging.INFO,
            "action: accept | result: success | peer: %s | worker: %d | port: %s",
            peer,
            self.index,
            "health" if health else "agencies",
        )
        self.update_accepting()
        return True

    def _set_load(self, load: int) -> None:
        self.load = load
        self.board.set_load(self.index, load)

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
                self._set_load(self.load - 1)

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
