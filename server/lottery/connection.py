"""One connection of a worker: its socket, its input and output buffers, reading and flushing
(TLS want-read / want-write included), and which selector events it wants.

Bounds: one turn reads at most READ_PER_TURN bytes from a connection; a peer that does not read
its answers stops being read once MAX_OUTBUF bytes wait for it, and one whose winners query is
held stops being read past MAX_HELD_INBUF bytes behind the query. A TLS socket yields one record
(at most 16 kB) per recv, so it is read until it has nothing more, up to the bound: the batches a
pipelining agency sent together reach one group commit, as on a plain socket. Bytes ``ssl``
still holds past the bound (``SSLSocket.pending()``) are invisible to the selector: `has_buffered`
tells the worker to come back without waiting.
"""

from __future__ import annotations

import selectors
import socket
import ssl
import time
from collections.abc import Iterator
from enum import Enum

from . import protocol
from .session import Session

RECV_SIZE = 65536
READ_PER_TURN = 256 * 1024  # what one connection may bring into one loop turn
MAX_OUTBUF = 256 * 1024  # stop reading from a peer that does not read its answers
MAX_HELD_INBUF = 4 * protocol.MAX_FRAME  # what a held winners query may buffer behind it


class Read(Enum):
    DATA = "data"  # bytes were added to the input buffer
    NOTHING = "nothing"  # nothing to read now
    CLOSED = "closed"  # the peer closed, or the connection broke: see `Connection.broken`


class Connection:
    """`sock` is an ssl.SSLSocket on the agencies' port, a plain socket on the health port."""

    def __init__(self, sock: socket.socket, peer: str, health: bool) -> None:
        now = time.monotonic()
        self.sock = sock
        self.session = Session(peer, health=health)
        self.accepted = now  # the handshake (or health check) deadline counts from here
        self.last_active = now
        self.inbuf = bytearray()
        self.outbuf = bytearray()
        self.read_wants_write = False  # TLS must write before this connection can read again
        self.closing_since: float | None = None  # close once outbuf is flushed
        self.events = 0  # what the selector watches for it now
        self.broken = ""  # why reading or writing failed

    @property
    def peer(self) -> str:
        return self.session.peer

    @property
    def open(self) -> bool:
        return self.session.open

    def reading(self) -> bool:
        """Whether to read more: not while the peer does not read its answers."""
        return len(self.outbuf) < MAX_OUTBUF and not (
            self.session.held is not None and len(self.inbuf) > MAX_HELD_INBUF
        )

    def has_buffered(self) -> bool:
        """Decrypted bytes `ssl` holds that the selector cannot see."""
        return isinstance(self.sock, ssl.SSLSocket) and self.session.agency is not None and self.sock.pending() > 0

    def wanted_events(self) -> int:
        events = 0
        if self.outbuf or self.read_wants_write:
            events |= selectors.EVENT_WRITE
        if self.reading():
            events |= selectors.EVENT_READ
        return events

    def read(self) -> Iterator[Read]:
        """Read what the connection has, up to READ_PER_TURN bytes; yields after each chunk so the
        caller handles its frames (and may stop reading) before the next one."""
        budget = READ_PER_TURN
        drain = isinstance(self.sock, ssl.SSLSocket)  # a plain socket: the selector reports the rest
        while budget > 0:
            try:
                data = self.sock.recv(RECV_SIZE)
            except (BlockingIOError, InterruptedError, ssl.SSLWantReadError):
                return
            except ssl.SSLWantWriteError:  # TLS must send something (a key update) first
                self.read_wants_write = True
                return
            except OSError as err:  # ssl.SSLError included: a forged or corrupt record
                self.broken = f"receive error: {getattr(err, 'strerror', None) or err}"
                yield Read.CLOSED
                return
            if not data:
                self.broken = "peer closed"
                yield Read.CLOSED
                return
            budget -= len(data)
            self.last_active = time.monotonic()
            if self.closing_since is not None:
                return  # we are leaving; what it sends now is ignored
            self.inbuf += data
            yield Read.DATA
            if not drain or not self.open or not self.reading():
                return

    def next_frame(self) -> tuple[int, bytes] | None:
        """The next whole frame in the input buffer as (type, payload), or None until one is
        complete. ProtocolError for a header that cannot be a frame (the buffer is cleared: the
        framing is lost)."""
        inbuf = self.inbuf
        if len(inbuf) < protocol.HEADER_SIZE:
            return None
        try:
            msg_type, length = protocol.parse_header(inbuf)
        except protocol.ProtocolError:
            inbuf.clear()
            raise
        end = protocol.HEADER_SIZE + length
        if len(inbuf) < end:
            return None
        payload = bytes(inbuf[protocol.HEADER_SIZE : end])
        del inbuf[:end]
        return msg_type, payload

    def flush(self) -> bool:
        """Send what the output buffer holds, as much as the socket takes; False if it broke."""
        if not self.outbuf:
            return True
        try:
            sent = self.sock.send(self.outbuf)
            del self.outbuf[:sent]
        except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
            pass
        except OSError as err:
            self.broken = f"send error: {getattr(err, 'strerror', None) or err}"
            return False
        return True

    def start_closing(self) -> None:
        """Take no more input; close once the last answer has left."""
        if self.closing_since is None:
            self.closing_since = time.monotonic()
            self.session.closing = True
            self.inbuf.clear()

    def close(self) -> None:
        self.session.open = False
        self.sock.close()
