"""A hand-driven protocol peer for the Docker tests: runs in a container on the compose network.

    python3 raw_peer.py HOST PORT SCENARIO [AGENCY]

Scenarios (each prints one `ok ...` line per check and exits 0, or prints the failure and exits 1):
  agency    plays a whole agency session by hand (protocol version 2): HELLO (nothing may be
            stored yet), a batch written one byte at a time (the server must cope with short
            reads) holding a name that needs quoting, the largest possible batch (8192-byte
            frame), a reconnection whose HELLO must say exactly what is stored (count and chain),
            a resend of the last batch, FIN, and the winners query, whose answer it prints as
            `winners: N DOCUMENTS`.
  attacks   bad input: an oversized length, a 4 GiB length, a bad version, a version 1 frame, an
            unknown type, an invalid bet, needless quotes, a FIN and a HELLO from an unknown
            agency, a batch with another chain, a gap, a FIN with the wrong count, a frame cut
            short; each must get its error code (or a close) and store nothing, without disturbing
            the real agencies running beside it. The batches and the FIN target agency 3, the
            hand-made one, before it has stored anything (the `agency` scenario then checks
            that nothing was).
It imports the server's protocol module, mounted at /server.
"""

from __future__ import annotations

import socket
import sys
import time

sys.path.insert(0, "/server")
from lottery import protocol  # noqa: E402
from lottery.protocol import ErrorCode  # noqa: E402


def connect(host: str, port: int) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def receive(sock: socket.socket) -> protocol.Message:
    def read_exact(n: int) -> bytes:
        data = bytearray()
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise EOFError("closed by the server")
            data += chunk
        return bytes(data)

    return protocol.read_frame(read_exact)


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
    bets = protocol.bet_lines([("Íñigo, hijo", "Ñúñez", "39000001", "1990-01-01", "7574"),
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


def attacks(host: str, port: int) -> None:
    target = 3  # the hand-made agency: nothing of it is stored until the `agency` scenario runs
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
    expect_error(host, port, protocol.encode(protocol.Fin(999, 0, 0)), ErrorCode.UNKNOWN_AGENCY, False)
    expect_error(host, port, protocol.encode(protocol.Hello(999)), ErrorCode.UNKNOWN_AGENCY, False, " to HELLO")
    line = b"Ana,Lopez,1,1990-01-01,1\n"
    mismatch = expect_error(host, port, protocol.encode(protocol.Bet(target, 1, 1, 0xDEADBEEF, line)),
                            ErrorCode.BETS_MISMATCH, False)
    check("deadbeef" in mismatch.reason and "00000000" in mismatch.reason,
          f"BETS_MISMATCH names both checksums: {mismatch.reason}")
    expect_error(host, port, protocol.encode(protocol.Bet(target, 5, 1, 0, line)), ErrorCode.SEQUENCE_GAP, False)
    expect_error(host, port, protocol.encode(protocol.Fin(target, 7, 0)), ErrorCode.SEQUENCE_GAP, False,
                 " to a FIN announcing unstored bets")
    sock = connect(host, port)
    sock.sendall(protocol.encode(protocol.Bet(2, 1, 1, 0, line))[:15])
    sock.shutdown(socket.SHUT_WR)  # cut short: nothing of it may be stored or answered
    check(sock.recv(1) == b"", "a truncated frame is closed without an answer")
    sock.close()


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
