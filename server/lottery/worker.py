"""A worker process: accepts, authenticates and serves many agency connections at once, in one
selector loop.

Each worker accepts on the listening sockets it inherited from the supervisor (gunicorn's model),
one connection per loop turn. On the agencies' port every connection is mutual TLS 1.3: the
handshake runs in this non-blocking loop (it never blocks another connection), and the agency's
identity is the verified certificate's ``agency-<N>``; every message naming another agency is
refused with AGENCY_MISMATCH. The health port is plaintext and answers ECHO only.

Admission: a worker serves up to WORKER_CONNECTIONS authenticated sessions and stops watching the
agencies' port while full (the rest wait in the kernel's backlog). Connections that have not
authenticated (TLS handshakes, health checks) have their own budget, HANDSHAKE_BUDGET, and a
deadline, HANDSHAKE_TIMEOUT: when the budget is full the oldest of them is closed, so idle,
dripping or garbage connections can never keep a real agency out, and they never take an
agency's slot. At most one session per agency lives at a time (sessions.py): a new one closes
the older one, in whichever worker it is. No file descriptor and no connection count travels
between processes.

The worker reads frames, answers ECHO and HELLO (what is stored of the agency), validates BET
batches and commits every batch that arrived in one loop turn, from all its connections, with a
single append and sync (group commit), then acknowledges them. Answers on a connection leave in
the order its requests came in: before any other answer, the connection's pending batches are
committed and answered. It records FINs and holds winners queries until the round is drawn.

Its channel to the supervisor carries only nudges, single bytes whose content does not matter:
"the journal has a new FIN" (worker -> supervisor) and "the round is drawn" (supervisor ->
worker). Both ends are non-blocking and a nudge that finds the channel full is dropped, since
one is already pending; the facts themselves live in the storage, and both sides also re-check
them on a periodic tick, so a lost nudge delays, never loses, anything.

A failed fsync ends the worker at once with EXIT_SYNC_FAILED and no further answer (fail-stop);
the supervisor then stops the whole central.
"""

from __future__ import annotations

import errno
import logging
import os
import selectors
import signal
import socket
import ssl
import time
from dataclasses import dataclass, field

from . import draw, protocol, transport
from .config import ServerConfig
from .sessions import SessionTable
from .protocol import ErrorCode, MsgType, ProtocolError
from .storage import AgencyState, FinOutcome, Outcome, Storage, StorageError, Verdict, WriteFailed
from .wakeup import WakeupPipe

log = logging.getLogger(__name__)

NUDGE = b"!"
EXIT_SYNC_FAILED = 3  # the storage failed (fsync error or damage): the central must stop

CLIENT_TYPES = frozenset({MsgType.ECHO, MsgType.HELLO, MsgType.BET, MsgType.FIN, MsgType.WINNERS_QUERY})
RECV_SIZE = 65536
READ_PER_TURN = 256 * 1024  # what one connection may bring into one loop turn
MAX_OUTBUF = 256 * 1024  # stop reading from a peer that does not read its answers
MAX_HELD_INBUF = 4 * protocol.MAX_FRAME  # what a held winners query may buffer behind it
CLOSE_GRACE = 5.0  # seconds a closing connection gets to take its last answer
TICK = 1.0  # seconds between sweeps: idle connections, the draw, a paused accept
ACCEPT_PAUSE = 0.5  # seconds without accepting after accept ran out of descriptors or memory
# accept errors that concern one connection that vanished: try the next one at once
_TRANSIENT_ACCEPT = frozenset({errno.ECONNABORTED, errno.EPROTO, errno.EPERM})

def _refusal(outcome: Outcome, bet: protocol.Bet, stored: AgencyState) -> ProtocolError:
    """The ERROR for a batch the storage refused, its reason naming the facts it was decided on
    (both checksums for a mismatch)."""
    where = f"bets {bet.first}..{bet.last} of agency {bet.agency}"
    if outcome is Outcome.GAP:
        held = f"only bets 1..{stored.stored} are stored" if stored.stored else "no bet of the agency is stored"
        code, why = ErrorCode.SEQUENCE_GAP, held
    elif outcome is Outcome.FINISHED:
        code, why = ErrorCode.AGENCY_FINISHED, "the agency already sent FIN"
    elif outcome is Outcome.ROUND_CLOSED:
        code, why = ErrorCode.ROUND_CLOSED, "the draw has already happened"
    elif bet.first > stored.stored:
        code = ErrorCode.BETS_MISMATCH
        why = f"chain before them is {bet.chain:08x}, the stored bets' is {stored.chain:08x}"
    else:
        code = ErrorCode.BETS_MISMATCH
        why = (
            f"bets 1..{stored.stored} are stored (chain {stored.chain:08x}) and these are not a resend of the"
            f" last stored batch (their chain after: {bet.chain_after:08x})"
        )
    return ProtocolError(code, f"{where}: {why}", bet.first)


def nudge(channel: socket.socket) -> bool:
    """Send one nudge without blocking; False if the peer is gone. A full channel already holds
    a nudge, so this one is not needed."""
    try:
        channel.send(NUDGE)
    except (BlockingIOError, InterruptedError):
        pass
    except OSError:
        return False
    return True


def drain_nudges(channel: socket.socket) -> bool:
    """Read every pending nudge; False once the peer has closed its end."""
    while True:
        try:
            data = channel.recv(4096)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            return False
        if not data:
            return False


@dataclass(frozen=True)
class Listeners:
    """The central's listening sockets, shared by every worker."""

    agencies: socket.socket  # mutual TLS
    health: socket.socket  # plaintext, ECHO only


# Readable names for the TLS errors an unwelcome peer causes most often.
_TLS_REASONS = {
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "no client certificate",
    "WRONG_VERSION_NUMBER": "not a TLS ClientHello (plaintext or garbage)",
    "HTTP_REQUEST": "not a TLS ClientHello (an HTTP request)",
    "UNSUPPORTED_PROTOCOL": "not TLS 1.3",
    "TLSV1_ALERT_PROTOCOL_VERSION": "not TLS 1.3",
}


def _tls_failure(err: Exception) -> str:
    if isinstance(err, ssl.SSLCertVerificationError):
        return f"certificate refused: {err.verify_message}"
    if isinstance(err, (ssl.SSLEOFError, ssl.SSLZeroReturnError)):
        return "the peer closed during the handshake"
    if isinstance(err, ssl.SSLError):
        reason = err.reason or str(err)
        return f"{_TLS_REASONS.get(reason, 'TLS error')} ({reason})"
    return f"connection error: {getattr(err, 'strerror', None) or err}"


@dataclass(eq=False)
class Connection:
    """One connection: its socket, buffers, identity and where it is in the protocol."""

    sock: socket.socket  # an ssl.SSLSocket on the agencies' port
    peer: str
    last_active: float
    accepted: float  # the handshake (or health check) deadline counts from here
    health: bool = False  # on the health port: ECHO only
    agency: int | None = None  # the verified identity, once the TLS handshake is done
    session: int = 0  # its generation in the session table
    read_wants_write: bool = False  # TLS must write before this connection can read again
    inbuf: bytearray = field(default_factory=bytearray)
    outbuf: bytearray = field(default_factory=bytearray)
    pending: int = 0  # batches waiting for this turn's group commit
    held_agency: int | None = None  # a winners query waiting for the draw
    closing_since: float | None = None  # close once outbuf is flushed
    open: bool = True
    events: int = selectors.EVENT_READ


class Worker:
    def __init__(
        self, index: int, listeners: Listeners, channel: socket.socket, config: ServerConfig, tls: ssl.SSLContext
    ) -> None:
        self.index = index
        self.listeners = listeners
        self.channel = channel
        self.config = config
        self.tls = tls
        self.storage = Storage(config.storage_dir)
        self.sessions = SessionTable(config.storage_dir)
        self.selector = selectors.DefaultSelector()
        self.connections: set[Connection] = set()
        self.unauthenticated: dict[Connection, None] = {}  # oldest first: handshakes, health checks
        self.ready: set[Connection] = set()  # TLS holds decrypted bytes the selector cannot see
        self.pending: list[tuple[Connection, protocol.Bet]] = []
        self.dirty: set[Connection] = set()
        self.winners: dict[int, list[str]] | None = None
        self.watching: set[socket.socket] = set()  # the listening sockets in the selector
        self.accept_paused_until = 0.0
        self.stopping = False
        self.wakeup = WakeupPipe()

    # --- life cycle ---------------------------------------------------------------------------

    def run(self) -> int:
        self.wakeup.install()
        signal.signal(signal.SIGTERM, self._on_sigterm)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides; it sends SIGTERM
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        self.channel.setblocking(False)
        self._check_draw()
        self.selector.register(self.wakeup, selectors.EVENT_READ, "wake")
        self.selector.register(self.channel, selectors.EVENT_READ, "channel")
        self._update_accepting()
        log.debug("action: worker_start | result: success | worker: %d | pid: %d", self.index, os.getpid())
        next_tick = time.monotonic() + TICK
        try:
            while not self.stopping:
                timeout = 0.0 if self.ready else max(0.0, next_tick - time.monotonic())
                for key, mask in self.selector.select(timeout=timeout):
                    if key.data == "wake":
                        self.wakeup.drain()
                    elif key.data == "channel":
                        self._on_channel()
                    elif isinstance(key.data, Connection):
                        self._on_event(key.data, mask)
                    else:
                        self._accept(key.fileobj, health=key.data == "health")
                ready, self.ready = self.ready, set()
                for conn in ready:
                    if conn.open:
                        self._read(conn)
                now = time.monotonic()
                if now >= next_tick:
                    self._tick(now)
                    next_tick = now + TICK
                self._commit()
                self._flush_dirty()
            self._shutdown()
        except StorageError as err:  # fail-stop: no answer may follow a failed fsync
            log.critical("action: storage_sync | result: fail | worker: %d | error: %s", self.index, err)
            return EXIT_SYNC_FAILED
        return 0

    def _on_sigterm(self, signum: int, frame: object) -> None:
        self.stopping = True  # the loop acts; a handler only records

    def _tick(self, now: float) -> None:
        self._sweep(now)
        self._check_draw()
        self._check_sessions()
        self._update_accepting()

    def _shutdown(self) -> None:
        """Finish this turn's batches, tell every peer we are leaving, close everything."""
        self._commit()
        for listener in list(self.watching):
            self._unwatch(listener)
        self.listeners.agencies.close()
        self.listeners.health.close()
        for conn in list(self.connections):
            if conn.held_agency is not None:
                log.info(
                    "action: consulta_ganadores | result: fail | agency: %d | reason: shutting down",
                    conn.held_agency,
                )
            self._reply(conn, protocol.Error(ErrorCode.SHUTTING_DOWN, 0, "server shutting down"))
            self._flush(conn)
            self._close(conn, "shutdown")
        self.selector.close()
        self.channel.close()
        log.info("action: close_channel | result: success | worker: %d", self.index)
        self.storage.close()
        self.sessions.close()
        log.info("action: close_storage | result: success | worker: %d", self.index)
        self.wakeup.close()
        log.info("action: worker_exit | result: success | worker: %d", self.index)

    # --- the supervisor and the draw ----------------------------------------------------------

    def _on_channel(self) -> None:
        if not drain_nudges(self.channel):
            log.error("action: worker_channel | result: fail | worker: %d | reason: supervisor gone", self.index)
            self.selector.unregister(self.channel)
            self.stopping = True
            return
        self._check_draw()
        self._check_sessions()

    def _check_draw(self) -> None:
        """Load the result once the round is drawn, and answer the winners queries held for it."""
        if self.winners is not None or not draw.draw_done(self.config.storage_dir):
            return
        self.winners = draw.load_winners(self.config.storage_dir)
        for conn in list(self.connections):
            if conn.held_agency is not None:
                agency, conn.held_agency = conn.held_agency, None
                self._answer_winners(conn, agency)
                self._process(conn)  # frames it sent behind the query
                self._update_events(conn)

    # --- accepting and authenticating ---------------------------------------------------------

    def _update_accepting(self) -> None:
        """Watch the agencies' port while there is room for a session, the health port always;
        neither while accept is paused."""
        open_for_all = not self.stopping and time.monotonic() >= self.accept_paused_until
        sessions = len(self.connections) - len(self.unauthenticated)
        room = sessions < self.config.worker_connections
        if open_for_all and room:
            self._watch(self.listeners.agencies, "agencies")
        else:
            if self.listeners.agencies in self.watching and not room:
                log.warning(
                    "action: accept | result: in_progress | worker: %d | connections: %d"
                    " | reason: every connection slot is taken, new connections wait in the backlog",
                    self.index,
                    sessions,
                )
            self._unwatch(self.listeners.agencies)
        if open_for_all:
            self._watch(self.listeners.health, "health")
        else:
            self._unwatch(self.listeners.health)

    def _watch(self, listener: socket.socket, name: str) -> None:
        if listener not in self.watching:
            self.selector.register(listener, selectors.EVENT_READ, name)
            self.watching.add(listener)

    def _unwatch(self, listener: socket.socket) -> None:
        if listener in self.watching:
            self.selector.unregister(listener)
            self.watching.discard(listener)

    def _accept(self, listener: socket.socket, health: bool) -> None:
        """Accept one connection (the other workers get their turn at the next ones)."""
        while True:
            try:
                sock, address = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
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
                self.accept_paused_until = time.monotonic() + ACCEPT_PAUSE
                self._update_accepting()
                return
            break
        sock.setblocking(False)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass  # the peer is already gone; the first read will say so
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
            self._close(oldest, "evicted before authenticating")
        if not health:
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        now = time.monotonic()
        conn = Connection(sock, peer, now, now, health=health)
        self.connections.add(conn)
        self.unauthenticated[conn] = None
        self.selector.register(sock, selectors.EVENT_READ, conn)
        # Health checks come every few seconds: their routine lines are DEBUG, their refusals are not.
        log.log(logging.DEBUG if health else logging.INFO, "action: accept | result: success | peer: %s | worker: %d"
                " | port: %s", peer, self.index, "health" if health else "agencies")
        self._update_accepting()

    def _handshake(self, conn: Connection) -> None:
        """One step of the TLS handshake; authenticates the connection once it is done."""
        assert isinstance(conn.sock, ssl.SSLSocket)
        try:
            conn.sock.do_handshake()
        except ssl.SSLWantReadError:
            self._set_events(conn, selectors.EVENT_READ)
            return
        except ssl.SSLWantWriteError:
            self._set_events(conn, selectors.EVENT_WRITE)
            return
        except (ssl.SSLError, OSError) as err:
            log.warning("action: handshake | result: fail | peer: %s | reason: %s", conn.peer, _tls_failure(err))
            self._close(conn, "TLS handshake failed")
            return
        agency = transport.agency_of(conn.sock.getpeercert())
        if agency is None or not 1 <= agency <= self.config.agencies:
            subject = conn.sock.getpeercert().get("subject", ())
            log.warning(
                "action: handshake | result: fail | peer: %s | reason: the certificate (subject %s) is not agency-N"
                " with N in 1..%d",
                conn.peer,
                subject,
                self.config.agencies,
            )
            self._close(conn, "not an agency of this round")
            return
        conn.agency = agency
        conn.session = self.sessions.claim(agency)
        conn.last_active = time.monotonic()
        del self.unauthenticated[conn]
        log.info("action: handshake | result: success | peer: %s | agency: %d | worker: %d", conn.peer, agency, self.index)
        for other in list(self.connections):
            if other is not conn and other.agency == agency:
                self._supersede(other)
        nudge(self.channel)  # the other workers drop an older session of this agency
        self._update_accepting()
        self._set_events(conn, selectors.EVENT_READ)
        self._read(conn)  # application data may have come with the handshake's last flight

    def _check_sessions(self) -> None:
        for conn in list(self.connections):
            if conn.agency is not None and not self.sessions.current(conn.agency, conn.session):
                self._supersede(conn)

    def _supersede(self, conn: Connection) -> None:
        log.info(
            "action: session | result: success | agency: %d | peer: %s | reason: superseded by a newer session of"
            " the agency",
            conn.agency,
            conn.peer,
        )
        if conn.held_agency is not None:
            log.info("action: consulta_ganadores | result: fail | agency: %d | reason: superseded", conn.held_agency)
        self._close(conn, "superseded")

    # --- connections --------------------------------------------------------------------------

    def _on_event(self, conn: Connection, mask: int) -> None:
        if not conn.open:
            return  # closed earlier in this turn (evicted, superseded): its event is stale
        if not conn.health and conn.agency is None:
            self._handshake(conn)
            return
        if mask & selectors.EVENT_WRITE:
            self._flush(conn)
            if conn.read_wants_write and conn.open:
                conn.read_wants_write = False
                self._read(conn)
        if mask & selectors.EVENT_READ and conn.open:
            self._read(conn)

    def _read(self, conn: Connection) -> None:
        """Read what the connection has, up to READ_PER_TURN bytes, and handle its frames.

        A TLS socket yields one record (at most 16 kB) per recv, so it is read until it has
        nothing more: the batches a pipelining agency sent together then reach this turn's
        group commit together, as on a plain socket. Bytes `ssl` still holds past the bound
        are read next turn (`ready`): the selector does not report them."""
        budget = READ_PER_TURN
        drain = isinstance(conn.sock, ssl.SSLSocket)  # a plain socket: the selector reports the rest
        handled = False
        while budget > 0:
            try:
                data = conn.sock.recv(RECV_SIZE)
            except (BlockingIOError, InterruptedError, ssl.SSLWantReadError):
                break
            except ssl.SSLWantWriteError:  # TLS must send something (a key update) first
                conn.read_wants_write = True
                break
            except OSError as err:  # ssl.SSLError included: a forged or corrupt record
                self._close(conn, f"receive error: {getattr(err, 'strerror', None) or err}")
                return
            if not data:
                if conn.inbuf and conn.closing_since is None:
                    log.warning(
                        "action: receive_message | result: fail | peer: %s | reason: truncated frame (%d bytes)",
                        conn.peer,
                        len(conn.inbuf),
                    )
                self._close(conn, "peer closed")
                return
            budget -= len(data)
            conn.last_active = time.monotonic()
            if conn.closing_since is not None:
                return  # we are leaving; what it sends now is ignored
            conn.inbuf += data
            self._process(conn)
            handled = True
            if not drain or not conn.open or not self._reading(conn):
                break
        # Once per turn, not per TLS record: the events follow what the frames left to send, and
        # decrypted bytes `ssl` holds past the budget are marked ready (the selector cannot see them).
        if handled or conn.read_wants_write:
            self._update_events(conn)

    def _process(self, conn: Connection) -> None:
        """Handle every complete frame in the connection's buffer, in order."""
        inbuf = conn.inbuf
        while conn.open and conn.closing_since is None and conn.held_agency is None:
            if len(inbuf) < protocol.HEADER_SIZE:
                return
            try:
                msg_type, length = protocol.parse_header(bytes(inbuf[: protocol.HEADER_SIZE]))
            except ProtocolError as err:
                inbuf.clear()
                self._refuse(conn, err)
                return
            end = protocol.HEADER_SIZE + length
            if len(inbuf) < end:
                return
            payload = bytes(inbuf[protocol.HEADER_SIZE : end])
            del inbuf[:end]
            self._handle(conn, msg_type, payload)

    def _handle(self, conn: Connection, msg_type: int, payload: bytes) -> None:
        if conn.health and msg_type != MsgType.ECHO:
            self._refuse(conn, ProtocolError(ErrorCode.UNKNOWN_TYPE, "the health port answers ECHO only"))
            self._start_closing(conn)
            return
        if msg_type not in CLIENT_TYPES:
            self._refuse(conn, ProtocolError(ErrorCode.UNKNOWN_TYPE, f"type {msg_type} not accepted from an agency"))
            return
        try:
            msg = protocol.decode_payload(msg_type, payload)
            if isinstance(msg, (protocol.Hello, protocol.Bet, protocol.Fin, protocol.WinnersQuery)):
                self._check_agency(conn, msg.agency, msg.first if isinstance(msg, protocol.Bet) else 0)
        except ProtocolError as err:
            if msg_type == MsgType.BET:
                self._log_refused_batch(payload, err)
            self._refuse(conn, err, logged=msg_type == MsgType.BET)
            return
        if isinstance(msg, protocol.Bet):
            self.pending.append((conn, msg))  # answered after this turn's group commit
            conn.pending += 1
        elif isinstance(msg, protocol.Echo):
            log.log(logging.DEBUG if conn.health else logging.INFO, "action: echo | result: success | peer: %s | bytes: %d",
                    conn.peer, len(msg.payload))
            self._reply(conn, msg)
        elif isinstance(msg, protocol.Hello):
            self._on_hello(conn, msg.agency)
        elif isinstance(msg, protocol.Fin):
            self._on_fin(conn, msg)
        elif isinstance(msg, protocol.WinnersQuery):
            self._on_winners_query(conn, msg.agency)

    def _check_agency(self, conn: Connection, agency: int, position: int) -> None:
        """The message's agency must be the one the connection's certificate proves."""
        if agency != conn.agency:
            raise ProtocolError(
                ErrorCode.AGENCY_MISMATCH,
                f"the certificate is agency-{conn.agency}'s, the message names agency {agency}",
                position,
            )

    def _log_refused_batch(self, payload: bytes, err: ProtocolError) -> None:
        """The contract's line for a refused batch; `seq` is the position of its first bet."""
        agency = seq = count = 0
        if len(payload) >= protocol.BET_HEADER_SIZE:
            agency, seq, count, _ = protocol.BET_HEAD.unpack_from(payload)
        log.warning(
            "action: apuesta_recibida | result: fail | cantidad: %d | agency: %d | seq: %d | code: %s | reason: %s",
            count,
            agency,
            seq,
            err.code.name,
            err.reason,
        )

    def _refuse(self, conn: Connection, err: ProtocolError, logged: bool = False) -> None:
        """Answer ERROR; close after it if the code says so. `logged`: the caller logged it."""
        if not logged:
            log.warning(
                "action: receive_message | result: fail | peer: %s | code: %s | reason: %s",
                conn.peer,
                err.code.name,
                err.reason,
            )
        self._reply(conn, protocol.Error(err.code, err.position, err.reason))
        if err.code in protocol.CLOSING_CODES:
            self._start_closing(conn)

    def _on_hello(self, conn: Connection, agency: int) -> None:
        if conn.pending:
            self._commit()  # RESUME must count this connection's batches before it
        try:
            state, finished = self.storage.resume(agency)
        except WriteFailed as err:  # pragma: no cover - resume appends nothing
            self._storage_failed([(conn, 0)], err)
            return
        log.info(
            "action: hello | result: success | agency: %d | stored: %d | chain: %08x | finished: %d | peer: %s",
            agency,
            state.stored,
            state.chain,
            finished,
            conn.peer,
        )
        self._reply(conn, protocol.Resume(agency, state.stored, state.chain, finished))

    def _on_fin(self, conn: Connection, fin: protocol.Fin) -> None:
        if conn.pending:
            self._commit()  # the storage must see this connection's batches before its FIN
        try:
            outcome, state = self.storage.record_fin(fin.agency, fin.bets, fin.chain)
        except WriteFailed as err:
            self._storage_failed([(conn, 0)], err)
            return
        if outcome in (FinOutcome.RECORDED, FinOutcome.DUPLICATE):
            nudge(self.channel)  # the supervisor re-checks the barrier (a DUPLICATE may be a retry)
        if outcome is FinOutcome.RECORDED:
            log.info("action: fin | result: success | agency: %d | bets: %d", fin.agency, fin.bets)
            self._reply(conn, protocol.FinAck(fin.agency))
            return
        if outcome is FinOutcome.DUPLICATE:
            code, reason = ErrorCode.DUPLICATE_FIN, f"FIN of agency {fin.agency} already recorded"
        elif outcome is FinOutcome.FINISHED:
            recorded = self.storage.view.fins.get(fin.agency, (0, 0))
            code, reason = ErrorCode.AGENCY_FINISHED, f"another FIN of agency {fin.agency} is recorded ({recorded[0]} bets)"
        elif outcome is FinOutcome.ROUND_CLOSED:
            code, reason = ErrorCode.ROUND_CLOSED, "the draw has already happened"
        elif outcome is FinOutcome.GAP:
            code, reason = ErrorCode.SEQUENCE_GAP, f"FIN announces {fin.bets} bets, {state.stored} stored"
        else:
            code = ErrorCode.BETS_MISMATCH
            reason = f"FIN chain is {fin.chain:08x}, the stored bets' is {state.chain:08x}"
        log.warning(
            "action: fin | result: fail | agency: %d | bets: %d | code: %s | reason: %s",
            fin.agency,
            fin.bets,
            code.name,
            reason,
        )
        self._reply(conn, protocol.Error(code, 0, reason))

    def _on_winners_query(self, conn: Connection, agency: int) -> None:
        if self.winners is None:
            if conn.pending:
                self._commit()  # its batches are answered before the query is held
            conn.held_agency = agency  # answered by _check_draw; never with partial results
            log.info("action: consulta_ganadores | result: in_progress | agency: %d | waiting: draw", agency)
            return
        self._answer_winners(conn, agency)

    def _answer_winners(self, conn: Connection, agency: int) -> None:
        documents = (self.winners or {}).get(agency, [])
        for page in protocol.winners_pages(agency, documents):
            self._reply_raw(conn, page)
        log.info("action: consulta_ganadores | result: success | agency: %d | cant_ganadores: %d", agency, len(documents))

    # --- group commit -------------------------------------------------------------------------

    def _commit(self) -> None:
        """Store every batch received this turn with one append and one sync, then answer."""
        if not self.pending:
            return
        pending, self.pending = self.pending, []
        for conn, _ in pending:
            conn.pending = 0
        try:
            verdicts = self.storage.store_batches([bet for _, bet in pending])
        except WriteFailed as err:
            self._storage_failed([(conn, bet.first) for conn, bet in pending], err)
            return
        debug = log.isEnabledFor(logging.DEBUG)
        for (conn, bet), verdict in zip(pending, verdicts):
            self._answer_batch(conn, bet, verdict, debug)

    def _answer_batch(self, conn: Connection, bet: protocol.Bet, verdict: Verdict, debug: bool) -> None:
        if verdict.outcome is Outcome.STORED:
            log.info(
                "action: apuesta_recibida | result: success | cantidad: %d | agency: %d | seq: %d",
                bet.count,
                bet.agency,
                bet.first,
            )
            if debug:
                self._log_each_bet(bet)
            self._reply(conn, protocol.Ack(bet.agency, bet.last))
        elif verdict.outcome is Outcome.DUPLICATE:
            log.info("action: batch_duplicate | result: success | agency: %d | seq: %d", bet.agency, bet.first)
            self._reply(conn, protocol.Ack(bet.agency, bet.last))
        else:
            err = _refusal(verdict.outcome, bet, verdict.state)
            self._log_refused_batch(protocol.BET_HEAD.pack(bet.agency, bet.first, bet.count, bet.chain), err)
            self._reply(conn, protocol.Error(err.code, err.position, err.reason))

    @staticmethod
    def _log_each_bet(bet: protocol.Bet) -> None:
        # Split on the protocol's own line end only: str.splitlines() would also split a name at
        # U+2028, which is valid in a name. Names may be quoted and hold commas; the document and
        # the number never do, so they are found from the end.
        for line in bet.bets[:-1].split(b"\n"):
            _, document, _, number = line.rsplit(b",", 3)
            log.debug(
                "action: apuesta_almacenada | result: success | dni: %s | numero: %s",
                document.decode("ascii"),
                number.decode("ascii"),
            )

    def _storage_failed(self, requests: list[tuple[Connection, int]], err: Exception) -> None:
        """An append failed and was undone: each request gets INTERNAL_ERROR (with its batch's
        first position) and its connection is closed; the agency comes back and resends."""
        log.error("action: storage_write | result: fail | worker: %d | error: %s", self.index, err)
        for conn, position in requests:
            if conn.open and conn.closing_since is None:
                self._reply(conn, protocol.Error(ErrorCode.INTERNAL_ERROR, position, "storage failure"))
        for conn, _ in requests:
            self._start_closing(conn)

    # --- output -------------------------------------------------------------------------------

    def _reply(self, conn: Connection, msg: protocol.Message) -> None:
        self._reply_raw(conn, protocol.encode(msg))

    def _reply_raw(self, conn: Connection, frame: bytes) -> None:
        """Queue one answer. The connection's pending batches are committed (and answered) first,
        so answers always leave in the order the requests came in."""
        if conn.pending:
            self._commit()
        if conn.open:
            conn.outbuf += frame
            self.dirty.add(conn)

    def _flush_dirty(self) -> None:
        dirty, self.dirty = self.dirty, set()
        for conn in dirty:
            if conn.open:
                self._flush(conn)

    def _flush(self, conn: Connection) -> None:
        if conn.outbuf:
            try:
                sent = conn.sock.send(conn.outbuf)
                del conn.outbuf[:sent]
            except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                pass
            except OSError as err:
                self._close(conn, f"send error: {getattr(err, 'strerror', None) or err}")
                return
        if conn.closing_since is not None and not conn.outbuf:
            self._close(conn, "closed after error")
            return
        self._update_events(conn)

    def _reading(self, conn: Connection) -> bool:
        """Whether to read more from the connection: not while it does not read its answers."""
        return len(conn.outbuf) < MAX_OUTBUF and not (
            conn.held_agency is not None and len(conn.inbuf) > MAX_HELD_INBUF
        )

    def _update_events(self, conn: Connection) -> None:
        if not conn.open:
            return
        events = 0
        if conn.outbuf or conn.read_wants_write:
            events |= selectors.EVENT_WRITE
        if self._reading(conn):
            events |= selectors.EVENT_READ
            if isinstance(conn.sock, ssl.SSLSocket) and conn.agency is not None and conn.sock.pending():
                self.ready.add(conn)
        self._set_events(conn, events)

    def _set_events(self, conn: Connection, events: int) -> None:
        if events != conn.events:
            if conn.events and events:
                self.selector.modify(conn.sock, events, conn)
            elif events:
                self.selector.register(conn.sock, events, conn)
            else:
                self.selector.unregister(conn.sock)
            conn.events = events

    def _start_closing(self, conn: Connection) -> None:
        if conn.closing_since is None:
            conn.closing_since = time.monotonic()
            conn.inbuf.clear()
            self.dirty.add(conn)  # closed once its last answer is out

    def _close(self, conn: Connection, reason: str) -> None:
        if not conn.open:
            return
        conn.open = False
        if conn.events:
            self.selector.unregister(conn.sock)
        conn.sock.close()
        self.connections.discard(conn)
        self.unauthenticated.pop(conn, None)
        self.dirty.discard(conn)
        self.ready.discard(conn)
        routine = conn.health and reason == "peer closed"  # a health check that went well
        log.log(logging.DEBUG if routine else logging.INFO,
                "action: close_connection | result: success | peer: %s | reason: %s", conn.peer, reason)
        if not self.stopping:
            self._update_accepting()

    def _sweep(self, now: float) -> None:
        """Close idle connections and those that would not take their last answer."""
        for conn in list(self.unauthenticated):
            if now - conn.accepted > self.config.handshake_timeout:
                log.warning(
                    "action: handshake | result: fail | peer: %s | reason: no %s within %gs (HANDSHAKE_TIMEOUT)",
                    conn.peer,
                    "health check" if conn.health else "TLS handshake",
                    self.config.handshake_timeout,
                )
                self._close(conn, "handshake timeout")
        for conn in list(self.connections):
            if conn.closing_since is not None:
                if now - conn.closing_since > CLOSE_GRACE:
                    self._close(conn, "closing peer did not read")
            elif conn in self.unauthenticated or not conn.open:
                continue  # HANDSHAKE_TIMEOUT governs it (above), not the idle timeout
            elif conn.held_agency is None and now - conn.last_active > self.config.idle_timeout:
                log.warning(
                    "action: receive_message | result: fail | peer: %s | code: IDLE_TIMEOUT | reason: idle for %gs",
                    conn.peer,
                    self.config.idle_timeout,
                )
                self._reply(conn, protocol.Error(ErrorCode.IDLE_TIMEOUT, 0, "idle timeout"))
                self._start_closing(conn)
                self._flush(conn)


def run_worker(
    index: int, listeners: Listeners, channel: socket.socket, config: ServerConfig, tls: ssl.SSLContext
) -> int:
    """Entry point in the forked child; returns its exit code."""
    try:
        worker = Worker(index, listeners, channel, config, tls)
    except StorageError as err:
        log.critical("action: storage_open | result: fail | worker: %d | error: %s", index, err)
        return EXIT_SYNC_FAILED
    return worker.run()
