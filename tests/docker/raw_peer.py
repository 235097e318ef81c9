"""A hand-driven protocol peer for the Docker tests: runs in a container on the compose network.

    python3 raw_peer.py HOST PORT SCENARIO [AGENCY]

Scenarios (each prints one `ok ...` line per check and exits 0, or prints the failure and exits 1):
  agency    plays a whole agency session by hand: a batch written one byte at a time (the server
            must cope with short reads), the largest possible batch (8192-byte frame), FIN, and
            the winners query, whose answer it prints as `winners: N`.
  attacks   bad input: an oversized length, a 4 GiB length, a bad version, an unknown type, an
            invalid bet, a FIN from an unknown agency, a frame cut short; each must get its error
            code (or a close) without disturbing the real agencies running beside it.
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


def largest_batch(agency: int, seq: int) -> protocol.Bet:
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
    return protocol.Bet(agency, seq, len(lines), b"".join(lines))


def agency_session(host: str, port: int, agency: int) -> None:
    sock = connect(host, port)
    first = protocol.encode(protocol.Bet(agency, 1, 2, "Íñigo,Ñúñez,39000001,1990-01-01,7574\n"
                                                     "Zoe,Paz,39000002,2000-02-29,1\n".encode()))
    for i in range(len(first)):
        sock.sendall(first[i : i + 1])
        time.sleep(0.001)
    check(receive(sock) == protocol.Ack(agency, 1), "one byte at a time: batch 1 acknowledged")
    largest = largest_batch(agency, 2)
    frame = protocol.encode(largest)
    check(len(frame) == protocol.MAX_FRAME, f"largest batch is {len(frame)} bytes, {largest.count} bets")
    sock.sendall(frame)
    check(receive(sock) == protocol.Ack(agency, 2), "largest batch acknowledged")
    sock.sendall(protocol.encode(protocol.Fin(agency, 2)))
    check(receive(sock) == protocol.FinAck(agency), "FIN acknowledged")
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


def expect_error(host: str, port: int, raw: bytes, code: ErrorCode, closes: bool) -> None:
    sock = connect(host, port)
    sock.sendall(raw)
    reply = receive(sock)
    check(isinstance(reply, protocol.Error) and reply.code is code, f"{code.name} answered")
    if closes:
        check(sock.recv(1) == b"", f"{code.name} closes the connection")
    sock.close()


def attacks(host: str, port: int) -> None:
    oversized = bytes.fromhex("01020000") + (protocol.MAX_PAYLOAD + 1).to_bytes(2, "big")
    expect_error(host, port, oversized + b"x" * 100, ErrorCode.FRAME_TOO_LARGE, True)
    expect_error(host, port, bytes.fromhex("0101ffffffff"), ErrorCode.FRAME_TOO_LARGE, True)
    expect_error(host, port, bytes.fromhex("070100000000"), ErrorCode.UNSUPPORTED_VERSION, True)
    expect_error(host, port, bytes.fromhex("01ee00000001ff"), ErrorCode.UNKNOWN_TYPE, False)
    bad_bet = protocol.Bet(1, 1, 1, b"Ana,Lopez,12a,1990-01-01,1\n")
    expect_error(host, port, protocol.encode(bad_bet), ErrorCode.INVALID_BET, False)
    expect_error(host, port, protocol.encode(protocol.Fin(999, 0)), ErrorCode.UNKNOWN_AGENCY, False)
    sock = connect(host, port)
    sock.sendall(protocol.encode(protocol.Bet(2, 1, 1, b"Ana,Lopez,1,1990-01-01,1\n"))[:15])
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
