"""A hand-driven protocol peer for the Docker tests: runs in a container on the compose network.

    python3 raw_peer.py HOST PORT SCENARIO [AGENCY]

Every connection is mutual TLS 1.3 (Python ssl) to the agencies' port, with the credentials in
/tls (RAW_PEER_TLS names another directory): ca.pem, agency-3.pem and agency-3-key.pem for the
hand-made agency 3, and agency-4.pem and agency-4-key.pem, a real certificate of this CA for an
agency outside the round (AGENCIES=3). The name checked in the central's certificate is "server".

Scenarios (each prints one `ok ...` line per check and exits 0, or prints the failure and exits 1):
  agency    plays a whole agency session by hand (protocol version 2): HELLO (nothing may be
            stored yet), a batch written one byte at a time (the server must cope with short
            reads) holding a name that needs quoting, the largest possible batch (8192-byte
            frame), a reconnection whose HELLO must say exactly what is stored (count and chain),
            a resend of the last batch, FIN, and the winners query, whose answer it prints as
            `winners: N DOCUMENTS`.
  attacks   unwelcome peers, refused before any message is read: plaintext bytes (a protocol
            HELLO) on the TLS port, a TLS client without a certificate, the certificate of an
            agency outside the round; then bad input over TLS as agency 3: an oversized length, a
            4 GiB length, a bad version, a version 1 frame, an unknown type, an invalid bet,
            needless quotes, messages naming another agency than the certificate's (2, a real
            agency running beside it, and 999), a batch with another chain, a gap, a FIN with the
            wrong count, a frame cut short. Each must get its error code (or a close) and store
            nothing, without disturbing the real agencies running beside it. The batches and the
            FIN target agency 3, the hand-made one, before it has stored anything (the `agency`
            scenario then checks that nothing was).
It imports the server's protocol module, mounted at /server.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import sys
import time

sys.path.insert(0, "/server")
from lottery import protocol  # noqa: E402
from lottery.bets import bet_line  # noqa: E402
from lottery.protocol import ErrorCode  # noqa: E402

TLS_DIR = os.environ.get("RAW_PEER_TLS", "/tls")
SERVER_NAME = "server"  # a name in the central's certificate
HAND_MADE = 3  # the agency this peer plays
OUTSIDER = 4  # a certificate of the project CA for an agency the round (AGENCIES=3) does not have


def tls_context(agency: int | None) -> ssl.SSLContext:
    """What an agency uses: TLS 1.3, the central verified against the CA, its own certificate
    (none when `agency` is None)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_verify_locations(os.path.join(TLS_DIR, "ca.pem"))
    if agency is not None:
        context.load_cert_chain(os.path.join(TLS_DIR, f"agency-{agency}.pem"),
                                os.path.join(TLS_DIR, f"agency-{agency}-key.pem"))
    return context


def tcp(host: str, port: int) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def connect(host: str, port: int, agency: int | None = HAND_MADE) -> ssl.SSLSocket:
    return tls_context(agency).wrap_socket(tcp(host, port), server_hostname=SERVER_NAME)


def receive(sock: socket.socket) -> protocol.Message:
    def read_exact(n: int) -> bytes:
        data = bytearray()
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise EOFError("closed by the server")
            data += chunk
        return bytes(data)

    msg_type, length = protocol.parse_header(read_exact(protocol.HEADER_SIZE))
    return protocol.decode_payload(msg_type, read_exact(length) if length else b"")


def closed(sock: socket.socket, within: float = 15) -> tuple[bool, bytes]:
    """Read until the server closes (EOF, a reset, a TLS alert): (closed in time, bytes read)."""
    sock.settimeout(within)
    data = b""
    try:
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                return True, data
            data += chunk
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
        return True, data  # ssl.SSLError: the alert the server sent before closing
    except TimeoutError:
        return False, data


def check(condition: bool, what: str) -> None:
    if not condition:
        print(f"FAILED {what}", flush=True)
        sys.exit(1)
    print(f"ok {what}", flush=True)


def largest_batch(agency: int, first: int, chain: int) -> protocol.Bet:
    lines = []
    used = 0
    n = 0
    while True:
        line = f"Ñandú,Peña,{40000000 + n},1977-07-07,{7574 if n == 0 else n}\n".encode()
        if used + len(line) > protocol.MAX_BETS_BYTES:
            break
        lines.append(line)
        used += len(line)
        n += 1
    padding = protocol.MAX_BETS_BYTES - used  # lengthen the last surname to fill the frame exactly
    lines[-1] = lines[-1].replace(b"Pe\xc3\xb1a", b"Pe\xc3\xb1a" + b"z" * padding, 1)
    return protocol.Bet(agency, first, len(lines), chain, b"".join(lines))


def hello(sock: socket.socket, agency: int) -> protocol.Message:
    sock.sendall(protocol.encode(protocol.Hello(agency)))
    return receive(sock)


def agency_session(host: str, port: int, agency: int) -> None:
    sock = connect(host, port)
    check(hello(sock, agency) == protocol.Resume(agency, 0, 0, False), "HELLO answered: nothing stored yet")
    bets = b"".join(bet_line(row) for row in [("Íñigo, hijo", "Ñúñez", "39000001", "1990-01-01", "7574"),
                               ('Zoe "la Tana"', "O'Paz", "39000002", "2000-02-29", "1")])
    check(bets.startswith('"Íñigo, hijo",Ñúñez,'.encode()), "a name with a comma is quoted")
    first = protocol.Bet(agency, 1, 2, 0, bets)
    frame = protocol.encode(first)
    for i in range(len(frame)):
        sock.sendall(frame[i : i + 1])
        time.sleep(0.001)
    check(receive(sock) == protocol.Ack(agency, 2), "one byte at a time: batch 1 acknowledged")
    largest = largest_batch(agency, first.last + 1, first.chain_after)
    frame = protocol.encode(largest)
    check(len(frame) == protocol.MAX_FRAME, f"largest batch is {len(frame)} bytes, {largest.count} bets")
    sock.sendall(frame)
    check(receive(sock) == protocol.Ack(agency, largest.last), "largest batch acknowledged")
    sock.close()

    sock = connect(host, port)  # a reconnection: the central says what it holds
    stored = protocol.chain(largest.bets, protocol.chain(bets))
    check(hello(sock, agency) == protocol.Resume(agency, largest.last, stored, False),
          f"HELLO after reconnecting: {largest.last} bets stored, chain {stored:08x}")
    sock.sendall(protocol.encode(largest))
    check(receive(sock) == protocol.Ack(agency, largest.last), "a resend of the last batch acknowledged")
    sock.sendall(protocol.encode(protocol.Fin(agency, largest.last, stored)))
    check(receive(sock) == protocol.FinAck(agency), "FIN acknowledged")
    check(hello(sock, agency) == protocol.Resume(agency, largest.last, stored, True), "HELLO after FIN: finished")
    sock.sendall(protocol.encode(protocol.WinnersQuery(agency)))
    documents: list[str] = []
    while True:
        page = receive(sock)
        check(isinstance(page, protocol.Winners) and page.agency == agency, "a WINNERS page for this agency")
        documents.extend(page.documents)
        if page.last:
            break
    print(f"winners: {len(documents)} {','.join(sorted(documents))}", flush=True)
    sock.close()


def expect_error(host: str, port: int, raw: bytes, code: ErrorCode, closes: bool, what: str = "") -> protocol.Error:
    sock = connect(host, port)
    sock.sendall(raw)
    reply = receive(sock)
    check(isinstance(reply, protocol.Error) and reply.code is code, f"{code.name} answered{what}")
    if closes:
        check(sock.recv(1) == b"", f"{code.name} closes the connection")
    sock.close()
    return reply


def refused_before_any_message(host: str, port: int) -> None:
    """Peers without a valid agency certificate get no protocol answer at all."""
    sock = tcp(host, port)  # plaintext: the protocol spoken without TLS
    sock.sendall(protocol.encode(protocol.Hello(HAND_MADE)))
    done, data = closed(sock)
    sock.close()
    check(done and (not data or data[0] == 0x15),  # nothing, or a TLS alert record
          f"plaintext on the TLS port is closed without an answer (got {data[:16].hex() or 'nothing'})")

    for agency, what in ((None, "a TLS client without a certificate"),
                         (OUTSIDER, f"the certificate of agency {OUTSIDER}, outside the round")):
        try:
            sock = connect(host, port, agency)  # TLS 1.3: the client's side may finish first
            sock.sendall(protocol.encode(protocol.Hello(agency or HAND_MADE)))
            done, data = closed(sock)
            sock.close()
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
            done, data = True, b""
        check(done and not data, f"{what} is refused: closed without an answer")


def attacks(host: str, port: int) -> None:
    refused_before_any_message(host, port)
    target = HAND_MADE  # nothing of it is stored until the `agency` scenario runs
    oversized = bytes.fromhex("02020000") + (protocol.MAX_PAYLOAD + 1).to_bytes(2, "big")
    expect_error(host, port, oversized + b"x" * 100, ErrorCode.FRAME_TOO_LARGE, True)
    expect_error(host, port, bytes.fromhex("0201ffffffff"), ErrorCode.FRAME_TOO_LARGE, True)
    expect_error(host, port, bytes.fromhex("070100000000"), ErrorCode.UNSUPPORTED_VERSION, True)
    version_1_hello = bytes.fromhex("010900000004") + target.to_bytes(4, "big")
    expect_error(host, port, version_1_hello, ErrorCode.UNSUPPORTED_VERSION, True, " to a version 1 frame")
    expect_error(host, port, bytes.fromhex("02ee00000001ff"), ErrorCode.UNKNOWN_TYPE, False)
    bad_bet = protocol.Bet(target, 1, 1, 0, b"Ana,Lopez,12a,1990-01-01,1\n")
    expect_error(host, port, protocol.encode(bad_bet), ErrorCode.INVALID_BET, False)
    quoted = protocol.Bet(target, 1, 1, 0, b'"Ana",Lopez,12,1990-01-01,1\n')
    expect_error(host, port, protocol.encode(quoted), ErrorCode.INVALID_BET, False, " to needless quotes")
    line = b"Ana,Lopez,1,1990-01-01,1\n"
    # The identity is the certificate's: agency 3 cannot speak for agency 2 (running beside it)
    # nor for an agency that does not exist.
    expect_error(host, port, protocol.encode(protocol.Hello(2)), ErrorCode.AGENCY_MISMATCH, False,
                 " to a HELLO naming agency 2")
    expect_error(host, port, protocol.encode(protocol.Bet(2, 1, 1, 0, line)), ErrorCode.AGENCY_MISMATCH, False,
                 " to a batch of agency 2")
    expect_error(host, port, protocol.encode(protocol.Fin(999, 0, 0)), ErrorCode.AGENCY_MISMATCH, False,
                 " to a FIN of agency 999")
    mismatch = expect_error(host, port, protocol.encode(protocol.Bet(target, 1, 1, 0xDEADBEEF, line)),
                            ErrorCode.BETS_MISMATCH, False)
    check("deadbeef" in mismatch.reason and "00000000" in mismatch.reason,
          f"BETS_MISMATCH names both checksums: {mismatch.reason}")
    expect_error(host, port, protocol.encode(protocol.Bet(target, 5, 1, 0, line)), ErrorCode.SEQUENCE_GAP, False)
    expect_error(host, port, protocol.encode(protocol.Fin(target, 7, 0)), ErrorCode.SEQUENCE_GAP, False,
                 " to a FIN announcing unstored bets")
    truncated_frame(host, port, protocol.encode(protocol.Bet(target, 1, 1, 0, line))[:15])


class HalfClosingTLS:
    """A TLS client over memory BIOs, for what ssl.SSLSocket cannot do: send close_notify (the
    end of the stream, TLS's half-close) and go on reading what the central still sends."""

    def __init__(self, host: str, port: int) -> None:
        self.sock = tcp(host, port)
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = tls_context(HAND_MADE).wrap_bio(self.incoming, self.outgoing, server_hostname=SERVER_NAME)
        self._step(self.tls.do_handshake)

    def _flush(self) -> None:
        data = self.outgoing.read()
        if data:
            self.sock.sendall(data)

    def _step(self, operation):  # type: ignore[no-untyped-def]
        while True:
            try:
                result = operation()
                self._flush()
                return result
            except ssl.SSLWantReadError:
                self._flush()
                data = self.sock.recv(65536)
                if data:
                    self.incoming.write(data)
                else:
                    self.incoming.write_eof()

    def send(self, data: bytes) -> None:
        self._step(lambda: self.tls.write(data))

    def end_stream(self) -> None:
        """close_notify: no more bytes from this side; the read side stays open."""
        with contextlib.suppress(ssl.SSLWantReadError):  # the central's close_notify has not come yet; it need not
            self.tls.unwrap()
        self._flush()

    def read_to_end(self) -> bytes:
        """Everything the central sends until it closes (its close_notify, an EOF, a reset)."""
        data = b""
        try:
            while chunk := self._step(lambda: self.tls.read(65536)):
                data += chunk
        except (ssl.SSLError, ConnectionResetError):
            pass
        return data


def truncated_frame(host: str, port: int, cut: bytes) -> None:
    peer = HalfClosingTLS(host, port)
    peer.sock.settimeout(15)
    peer.send(protocol.encode(protocol.Echo(b"ping")))
    echo = peer._step(lambda: peer.tls.read(65536))
    check(echo == protocol.encode(protocol.Echo(b"ping")), "ECHO answered over TLS")
    peer.send(cut)
    peer.end_stream()  # the stream ends mid-frame
    try:
        answer = peer.read_to_end()
    except TimeoutError:
        check(False, "a truncated frame is closed: the central did not close within 15 s")
    check(answer == b"", f"a truncated frame is closed without an answer (got {answer[:32].hex() or 'nothing'})")
    peer.sock.close()


def main() -> int:
    host, port, scenario = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    if scenario == "agency":
        agency_session(host, port, int(sys.argv[4]))
    elif scenario == "attacks":
        attacks(host, port)
    else:
        print(f"unknown scenario {scenario}")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
