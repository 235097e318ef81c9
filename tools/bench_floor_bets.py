#!/usr/bin/env python3
"""The floor under the central's per-bet cost (owns tools/bench_floor_bets.py), for tools/bench.py
--floor-bets.

A per-bet floor run is a benchmark run whose central keeps only what every bet costs whatever the
code does. The real agencies (the same binary, data set and environment as the run before it)
send their bets to a bare central, this file run as a script: the same workers, each with the
central's own TLS context and identity check (server/lottery/transport.py), and for each bet only
what the rules ask of any central:

- its bytes received over mutual TLS 1.3 and cut into frames (protocol.parse_header);
- the BET checked by the rules (protocol.decode_payload, which runs bets.validate_bets: the
  central's own check at its fastest);
- stored as a bets.csv line (files.csv_lines), with one write and one fdatasync per loop turn
  before any ACK;
- searched for winners (the draw's search, bytes.count of its needle over the stored lines).

Nothing else: no journal, no chain or position bookkeeping, no sessions, no log lines, no
supervisor's barrier, no draw file. A HELLO gets RESUME 0 and a winners query the empty last
page, after the ACKs before it. Its central CPU set against the real central's is the floor of
the issue's "central CPU per bet". It prints a `floor-bets N:` line per run.
"""

from __future__ import annotations

import argparse
import os
import selectors
import socket
import ssl
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bench_floor import accept, bare_central, handshake, run_against_bare_central
from bench_run import BenchError, Figures, Side, agency_launches

READY = "floor-bets: listening"
READ_SIZE = 1 << 18  # what the central reads from a connection at once (READ_PER_TURN)


def run_floor_bets(args: argparse.Namespace, side: Side, data: Path, run: int) -> Figures:
    """The side's real agencies against the bare per-bet central; every agency must exit 0 and
    every bet be stored once. Printed as `floor-bets N: ...`."""
    stored = side.work / f"floor-bets-{run}"
    stored.mkdir(parents=True, exist_ok=True)
    exits, _, wall, server_cpu = run_against_bare_central(
        args, side, Path(__file__), ["--storage", str(stored)],
        lambda port: [replace(launch, log=launch.log.with_name(f"floor-bets-{launch.log.name}"))
                      for launch in agency_launches(args, side, data, port, run)],
        READY, f"floor-bets {run}")
    failed = [a for a, code in enumerate(exits.codes, start=1) if code != 0]
    if failed:
        raise BenchError(f"floor-bets {run}: agencies {failed} failed (logs in {side.work})")
    lines = sum(path.read_bytes().count(b"\n") for path in stored.glob("bets-*.csv"))
    if lines != args.bets:
        raise BenchError(f"floor-bets {run}: the bare central stored {lines} bets, want {args.bets}")
    print(f"floor-bets {run}: agencies: {args.agencies} | bets: {lines} | wall_seconds: {wall:.3f} | "
          f"server_cpu_seconds: {server_cpu:.2f} | agencies_cpu_seconds: {exits.cpu:.2f}", flush=True)
    return Figures(wall, server_cpu, exits.cpu, 0.0)


# --- the bare per-bet central -------------------------------------------------------------------


@dataclass
class Peer:
    """One agency's connection: its agency once the handshake is done, its unparsed bytes."""

    agency: int | None = None
    inbuf: bytearray = field(default_factory=bytearray)


class Worker:
    """One worker: accept, handshake, read frames, check and stage each BET; at the end of each
    loop turn one write and one fdatasync, then the turn's answers in order."""

    def __init__(self, listener: socket.socket, context: ssl.SSLContext, agencies: int, agency_of: Any,
                 storage: Path, server: Any) -> None:
        self.listener, self.context, self.agencies, self.agency_of = listener, context, agencies, agency_of
        self.protocol, self.csv_lines = server.protocol, server.csv_lines
        self.needle = b"%d\n" % server.winning_number
        self.fd = os.open(storage / f"bets-{os.getpid()}.csv", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.selector = selectors.DefaultSelector()
        self.staged: list[bytes] = []
        self.answers: dict[ssl.SSLSocket, bytearray] = {}  # per connection, in order: one write each
        self.winners = 0

    def serve(self) -> None:
        self.selector.register(self.listener, selectors.EVENT_READ, None)
        while True:
            for key, _ in self.selector.select():
                if key.data is None:
                    accept(self.listener, self.context, self.selector, Peer)
                else:
                    self.step(key.fileobj, key.data)  # type: ignore[arg-type]
            if self.staged:
                data = b"".join(self.staged)
                os.write(self.fd, data)  # a regular file: written whole
                os.fdatasync(self.fd)
                self.staged = []
            for conn, frames in self.answers.items():
                if conn.fileno() >= 0:  # not closed since
                    try:
                        conn.sendall(frames)  # small frames into a send buffer the agency reads
                    except (ssl.SSLError, OSError):
                        self.selector.unregister(conn)
                        conn.close()
            self.answers = {}

    def step(self, conn: ssl.SSLSocket, peer: Peer) -> None:
        try:
            if peer.agency is None:
                peer.agency = handshake(conn, peer, self.selector, self.agencies, self.agency_of)
                if peer.agency is None:
                    return
            while True:
                data = conn.recv(READ_SIZE)
                if not data:
                    raise EOFError
                peer.inbuf += data
                self.frames(conn, peer)
        except ssl.SSLWantReadError:
            return
        except (ssl.SSLError, OSError, EOFError, self.protocol.ProtocolError):  # a refused frame ends it
            self.selector.unregister(conn)
            conn.close()

    def frames(self, conn: ssl.SSLSocket, peer: Peer) -> None:
        protocol, inbuf = self.protocol, peer.inbuf
        header = protocol.HEADER_SIZE
        while len(inbuf) >= header:
            msg_type, length = protocol.parse_header(inbuf)
            if len(inbuf) < header + length:
                return
            message = protocol.decode_payload(msg_type, bytes(inbuf[header : header + length]))
            del inbuf[: header + length]
            agency, out = peer.agency, self.answers.setdefault(conn, bytearray())
            if isinstance(message, protocol.Bet):
                lines = self.csv_lines(agency, message.bets)
                self.staged.append(lines)
                self.winners += lines.count(self.needle)
                out += protocol.ack_frame(agency, message.last)
            elif isinstance(message, protocol.Hello):
                out += protocol.encode(protocol.Resume(agency, 0, 0, False))
            elif isinstance(message, protocol.Fin):
                out += protocol.encode(protocol.FinAck(agency))
            elif isinstance(message, protocol.WinnersQuery):
                out += protocol.encode(protocol.Winners(agency, True))
            else:
                raise OSError(f"not in a per-bet floor run: {message}")


def prepare(args: argparse.Namespace, listener: socket.socket, context: ssl.SSLContext,
            transport: Any) -> Callable[[], None]:
    """The side's own modules, imported once before the fork; each worker then serves."""
    from lottery import draw, protocol
    from lottery.files import csv_lines

    server = argparse.Namespace(protocol=protocol, csv_lines=csv_lines, winning_number=draw.WINNING_NUMBER)
    return lambda: Worker(listener, context, args.agencies, transport.agency_of, args.storage, server).serve()


def main() -> int:
    return bare_central("The bare per-bet central of tools/bench.py --floor-bets.", READY, prepare,
                        lambda parser: parser.add_argument("--storage", type=Path, required=True))


if __name__ == "__main__":
    sys.exit(main())
