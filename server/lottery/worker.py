"""A worker process: serves many agency connections at once, one handler each, in a selector loop.

The supervisor hands each accepted connection to a worker over the worker's channel (a Unix
SOCK_SEQPACKET socketpair that carries the file descriptor). The worker reads frames, answers
ECHO, validates BET batches and commits every batch that arrived in one loop turn, from all its
connections, with a single append and sync (group commit), then acknowledges them. It records
FINs, tells the supervisor about them, and holds winners queries until the supervisor reports
that the draw is done. Nothing is shared in memory with other processes: stored state lives in
the storage files, and news travels over the channel.

Channel messages (one byte each): supervisor -> worker NEW_CONNECTION (+ fd), DRAW_DONE;
worker -> supervisor CONNECTION_CLOSED, FIN_RECORDED.
"""

from __future__ import annotations

import errno
import logging
import os
import selectors
import signal
import socket
import time
from dataclasses import dataclass, field

from . import draw, protocol
from .config import ServerConfig
from .protocol import ErrorCode, MsgType, ProtocolError
from .storage import FinOutcome, Outcome, Storage, StorageError
from .wakeup import WakeupPipe

log = logging.getLogger(__name__)

NEW_CONNECTION = b"C"
DRAW_DONE = b"D"
CONNECTION_CLOSED = b"c"
FIN_RECORDED = b"F"

CLIENT_TYPES = frozenset({MsgType.ECHO, MsgType.BET, MsgType.FIN, MsgType.WINNERS_QUERY})
RECV_SIZE = 65536
MAX_OUTBUF = 256 * 1024  # stop reading from a peer that does not read its answers
MAX_HELD_INBUF = 4 * protocol.MAX_FRAME  # what a held winners query may buffer behind it
CLOSE_GRACE = 5.0  # seconds a closing connection gets to take its last answer


@dataclass(eq=False)
class Connection:
    """One agency session: its socket, buffers and where it is in the protocol."""

    sock: socket.socket
    peer: str
    last_active: float
    inbuf: bytearray = field(default_factory=bytearray)
    outbuf: bytearray = field(default_factory=bytearray)
    pending: int = 0  # batches waiting for this turn's group commit
    held_agency: int | None = None  # a winners query waiting for the draw
    closing_since: float | None = None  # close once outbuf is flushed
    open: bool = True
    events: int = selectors.EVENT_READ


class Worker:
    def __init__(self, index: int, channel: socket.socket, config: ServerConfig) -> None:
        self.index = index
        self.channel = channel
        self.config = config
        self.storage = Storage(config.storage_dir)
        self.selector = selectors.DefaultSelector()
        self.connections: set[Connection] = set()
        self.pending: list[tuple[Connection, protocol.Bet]] = []
        self.dirty: set[Connection] = set()
        self.winners: dict[int, list[str]] | None = None
        self.stopping = False
        self.wakeup = WakeupPipe()

    # --- life cycle ---------------------------------------------------------------------------

    def run(self) -> int:
        self.wakeup.install()
        signal.signal(signal.SIGTERM, self._on_sigterm)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides; it sends SIGTERM
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        if draw.draw_done(self.config.storage_dir):
            self.winners = draw.load_winners(self.config.storage_dir)
        self.selector.register(self.wakeup, selectors.EVENT_READ, "wake")
        self.selector.register(self.channel, selectors.EVENT_READ, "channel")
        log.debug("action: worker_start | result: success | worker: %d | pid: %d", self.index, os.getpid())
        next_sweep = time.monotonic() + 1.0
        while not self.stopping:
            for key, mask in self.selector.select(timeout=1.0):
                if key.data == "wake":
                    self.wakeup.drain()
                elif key.data == "channel":
                    self._on_channel()
                else:
                    self._on_event(key.data, mask)
            self._commit()
            self._flush_dirty()
            now = time.monotonic()
            if now >= next_sweep:
                self._sweep(now)
                next_sweep = now + 1.0
        self._shutdown()
        return 0

    def _on_sigterm(self, signum: int, frame: object) -> None:
        self.stopping = True  # the loop acts; a handler only records

    def _shutdown(self) -> None:
        """Finish this turn's batches, tell every peer we are leaving, close everything."""
        self._commit()
        for conn in list(self.connections):
            if conn.held_agency is not None:
                log.info(
                    "action: consulta_ganadores | result: fail | agency: %d | reason: shutting down",
                    conn.held_agency,
                )
            self._reply(conn, protocol.Error(ErrorCode.SHUTTING_DOWN, 0, "server shutting down"))
            self._flush(conn)
            self._close(conn, "shutdown", notify=False)
        self.selector.close()
        self.channel.close()
        log.info("action: close_channel | result: success | worker: %d", self.index)
        self.storage.close()
        log.info("action: close_storage | result: success | worker: %d", self.index)
        self.wakeup.close()
        log.info("action: worker_exit | result: success | worker: %d", self.index)

    # --- channel ------------------------------------------------------------------------------

    def _on_channel(self) -> None:
        try:
            message, fds, _, _ = socket.recv_fds(self.channel, 16, 4)
        except InterruptedError:
            return
        if not message:
            log.error("action: worker_channel | result: fail | worker: %d | reason: supervisor gone", self.index)
            self.stopping = True
            return
        if message == NEW_CONNECTION and fds:
            self._adopt(fds[0])
        elif message == DRAW_DONE:
            self._on_draw_done()
        for fd in fds[1:] if message == NEW_CONNECTION else fds:
            os.close(fd)

    def _notify(self, message: bytes) -> None:
        try:
            self.channel.send(message)
        except OSError as err:
            log.error("action: worker_channel | result: fail | worker: %d | error: %s", self.index, err)
            self.stopping = True

    def _adopt(self, fd: int) -> None:
        sock = socket.socket(fileno=fd)
        sock.setblocking(False)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            host, port = sock.getpeername()[:2]
            peer = f"{host}:{port}"
        except OSError:
            peer = "unknown"
        conn = Connection(sock, peer, time.monotonic())
        self.connections.add(conn)
        self.selector.register(sock, selectors.EVENT_READ, conn)
        log.debug("action: connection | result: success | peer: %s | worker: %d", peer, self.index)

    def _on_draw_done(self) -> None:
        self.winners = draw.load_winners(self.config.storage_dir)
        for conn in list(self.connections):
            if conn.held_agency is not None:
                agency, conn.held_agency = conn.held_agency, None
                self._answer_winners(conn, agency)
                self._process(conn)  # frames it sent behind the query

    # --- connections --------------------------------------------------------------------------

    def _on_event(self, conn: Connection, mask: int) -> None:
        if mask & selectors.EVENT_WRITE:
            self._flush(conn)
        if mask & selectors.EVENT_READ and conn.open:
            self._read(conn)

    def _read(self, conn: Connection) -> None:
        try:
            data = conn.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as err:
            self._close(conn, f"receive error: {err.strerror or err}")
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
        conn.last_active = time.monotonic()
        if conn.closing_since is not None:
            return  # we are leaving; what it sends now is ignored
        conn.inbuf += data
        self._process(conn)
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
        if msg_type not in CLIENT_TYPES:
            self._refuse(conn, ProtocolError(ErrorCode.UNKNOWN_TYPE, f"type {msg_type} not accepted from an agency"))
            return
        try:
            msg = protocol.decode_payload(msg_type, payload)
        except ProtocolError as err:
            if msg_type == MsgType.BET:
                self._log_refused_batch(payload, err)
            self._refuse(conn, err, logged=msg_type == MsgType.BET)
            return
        if isinstance(msg, protocol.Bet):
            if self._known_agency(conn, msg.agency, msg.seq):
                self.pending.append((conn, msg))
                conn.pending += 1
            return
        if conn.pending:
            self._commit()  # answers go out in the order the requests came in
        if isinstance(msg, protocol.Echo):
            log.info("action: echo | result: success | peer: %s | bytes: %d", conn.peer, len(msg.payload))
            self._reply(conn, msg)
        elif isinstance(msg, protocol.Fin):
            if self._known_agency(conn, msg.agency):
                self._on_fin(conn, msg)
        elif isinstance(msg, protocol.WinnersQuery):
            if self._known_agency(conn, msg.agency):
                self._on_winners_query(conn, msg.agency)

    def _known_agency(self, conn: Connection, agency: int, seq: int = 0) -> bool:
        if 1 <= agency <= self.config.agencies:
            return True
        err = ProtocolError(ErrorCode.UNKNOWN_AGENCY, f"agency {agency} is outside 1..{self.config.agencies}", seq)
        self._refuse(conn, err)
        return False

    def _log_refused_batch(self, payload: bytes, err: ProtocolError) -> None:
        agency = seq = count = 0
        if len(payload) >= protocol.BET_HEADER_SIZE:
            agency, seq, count = protocol.BET_HEAD.unpack_from(payload)
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
        self._reply(conn, protocol.Error(err.code, err.seq, err.reason))
        if err.code in protocol.CLOSING_CODES:
            self._start_closing(conn)

    def _on_fin(self, conn: Connection, fin: protocol.Fin) -> None:
        try:
            outcome = self.storage.record_fin(fin.agency, fin.batches)
        except (OSError, StorageError) as err:
            self._storage_failed([conn], err)
            return
        if outcome is FinOutcome.RECORDED:
            log.info("action: fin | result: success | agency: %d | batches: %d", fin.agency, fin.batches)
            self._reply(conn, protocol.FinAck(fin.agency))
            self._notify(FIN_RECORDED)
            return
        if outcome is FinOutcome.DUPLICATE:
            code, reason = ErrorCode.DUPLICATE_FIN, f"FIN of agency {fin.agency} already recorded"
        else:
            last = self.storage.view.last_seq.get(fin.agency, 0)
            code, reason = ErrorCode.SEQUENCE_GAP, f"FIN announces {fin.batches} batches, {last} stored"
        log.warning(
            "action: fin | result: fail | agency: %d | batches: %d | code: %s | reason: %s",
            fin.agency,
            fin.batches,
            code.name,
            reason,
        )
        self._reply(conn, protocol.Error(code, 0, reason))

    def _on_winners_query(self, conn: Connection, agency: int) -> None:
        if self.winners is None:
            conn.held_agency = agency  # answered by _on_draw_done; never with partial results
            log.info("action: consulta_ganadores | result: in_progress | agency: %d | waiting: draw", agency)
            return
        self._answer_winners(conn, agency)

    def _answer_winners(self, conn: Connection, agency: int) -> None:
        documents = (self.winners or {}).get(agency, [])
        for page in protocol.winners_pages(agency, documents):
            conn.outbuf += page
        self.dirty.add(conn)
        log.info("action: consulta_ganadores | result: success | agency: %d | cant_ganadores: %d", agency, len(documents))

    # --- group commit -------------------------------------------------------------------------

    def _commit(self) -> None:
        """Store every batch received this turn with one append and one sync, then answer."""
        if not self.pending:
            return
        pending, self.pending = self.pending, []
        try:
            outcomes = self.storage.store_batches([bet for _, bet in pending])
        except (OSError, StorageError) as err:
            for conn, _ in pending:
                conn.pending = 0
            self._storage_failed([conn for conn, _ in pending], err)
            return
        debug = log.isEnabledFor(logging.DEBUG)
        for (conn, bet), outcome in zip(pending, outcomes):
            conn.pending -= 1
            if outcome is Outcome.STORED:
                log.info(
                    "action: apuesta_recibida | result: success | cantidad: %d | agency: %d | seq: %d",
                    bet.count,
                    bet.agency,
                    bet.seq,
                )
                if debug:
                    for line in bet.bets.decode("utf-8").splitlines():
                        _, _, document, _, number = line.split(",")
                        log.debug("action: apuesta_almacenada | result: success | dni: %s | numero: %s", document, number)
                self._reply(conn, protocol.Ack(bet.agency, bet.seq))
            elif outcome is Outcome.DUPLICATE:
                log.info("action: batch_duplicate | result: success | agency: %d | seq: %d", bet.agency, bet.seq)
                self._reply(conn, protocol.Ack(bet.agency, bet.seq))
            else:
                code = ErrorCode.SEQUENCE_GAP if outcome is Outcome.GAP else ErrorCode.AGENCY_FINISHED
                reason = (
                    f"batch {bet.seq} of agency {bet.agency}: "
                    + ("a previous batch is missing" if outcome is Outcome.GAP else "the agency already sent FIN")
                )
                self._log_refused_batch(protocol.BET_HEAD.pack(bet.agency, bet.seq, bet.count), ProtocolError(code, reason))
                self._reply(conn, protocol.Error(code, bet.seq, reason))

    def _storage_failed(self, conns: list[Connection], err: Exception) -> None:
        log.error("action: storage_write | result: fail | worker: %d | error: %s", self.index, err)
        for conn in conns:
            if conn.open:
                self._reply(conn, protocol.Error(ErrorCode.INTERNAL_ERROR, 0, "storage failure"))
                self._start_closing(conn)

    # --- output -------------------------------------------------------------------------------

    def _reply(self, conn: Connection, msg: protocol.Message) -> None:
        if conn.open:
            conn.outbuf += protocol.encode(msg)
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
            except (BlockingIOError, InterruptedError):
                pass
            except OSError as err:
                self._close(conn, f"send error: {err.strerror or err}")
                return
        if conn.closing_since is not None and not conn.outbuf:
            self._close(conn, "closed after error")
            return
        self._update_events(conn)

    def _update_events(self, conn: Connection) -> None:
        if not conn.open:
            return
        events = 0
        if conn.outbuf:
            events |= selectors.EVENT_WRITE
        reading = len(conn.outbuf) < MAX_OUTBUF and not (
            conn.held_agency is not None and len(conn.inbuf) > MAX_HELD_INBUF
        )
        if reading:
            events |= selectors.EVENT_READ
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

    def _close(self, conn: Connection, reason: str, notify: bool = True) -> None:
        if not conn.open:
            return
        conn.open = False
        if conn.events:
            self.selector.unregister(conn.sock)
        try:
            conn.sock.close()
        except OSError as err:  # pragma: no cover - close of a TCP socket rarely fails
            if err.errno != errno.EBADF:
                raise
        self.connections.discard(conn)
        self.dirty.discard(conn)
        log.info("action: close_connection | result: success | peer: %s | reason: %s", conn.peer, reason)
        if notify:
            self._notify(CONNECTION_CLOSED)

    def _sweep(self, now: float) -> None:
        """Close idle connections and those that would not take their last answer."""
        for conn in list(self.connections):
            if conn.closing_since is not None:
                if now - conn.closing_since > CLOSE_GRACE:
                    self._close(conn, "closing peer did not read")
            elif conn.held_agency is None and now - conn.last_active > self.config.idle_timeout:
                log.warning(
                    "action: receive_message | result: fail | peer: %s | code: IDLE_TIMEOUT | reason: idle for %gs",
                    conn.peer,
                    self.config.idle_timeout,
                )
                self._reply(conn, protocol.Error(ErrorCode.IDLE_TIMEOUT, 0, "idle timeout"))
                self._start_closing(conn)
                self._flush(conn)


def run_worker(index: int, channel: socket.socket, config: ServerConfig) -> int:
    """Entry point in the forked child; returns its exit code."""
    return Worker(index, channel, config).run()
