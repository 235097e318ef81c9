#!/usr/bin/env python3
"""Micro-benchmark of the central's per-bet work, in one process, without sockets or TLS:
decoding and validating BET payloads (protocol.decode_payload), storing them (Storage.store_batches,
groups of --group batches, as a group commit does), and the whole handling path (handler.py and
commit.py with an in-memory outbox), its INFO lines formatted and written to /dev/null as the
central writes them to stdout.

    python3 tools/bench_central.py [--bets 200000] [--batch 100] [--group 16] [--storage DIR] [--profile]

The storage goes to a temporary directory (--storage: use a tmpfs to leave the disk's fsync out).
It prints microseconds per bet of each stage, best of --repeat runs (process CPU time).
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "server"))
sys.path.insert(0, str(ROOT / "tools"))

import gen_data  # noqa: E402
from lottery import logs, protocol, recovery  # noqa: E402
from lottery.board import Board  # noqa: E402
from lottery.commit import GroupCommit  # noqa: E402
from lottery.handler import Handler  # noqa: E402
from lottery.session import Session  # noqa: E402
from lottery.storage import Storage  # noqa: E402


@dataclass
class NullOutbox:
    sent: int = 0
    sessions: set[Session] = field(default_factory=set)

    def send(self, session: Session, frame: bytes) -> None:
        self.sent += 1

    def close_after_send(self, session: Session) -> None:
        self.sessions.add(session)


def payloads(bets: int, batch: int) -> list[bytes]:
    """BET payloads of agency 1, `batch` bets each, in position order with their chains."""
    lines = [line.encode() + b"\n" for line in gen_data.agency_lines(1, bets, bets // 1000, 7574)]
    out, chain = [], 0
    for first in range(0, bets, batch):
        block = b"".join(lines[first : first + batch])
        out.append(protocol.BET_HEAD.pack(1, first + 1, block.count(b"\n"), chain) + block)
        chain = protocol.chain(block, chain)
    return out


def cpu() -> float:
    return time.process_time()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bets", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--group", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--storage", type=Path, default=None)
    parser.add_argument("--profile", action="store_true", help="print the top of a cProfile of the handling path")
    args = parser.parse_args()
    frames = payloads(args.bets, args.batch)
    logs.setup("INFO", os.open(os.devnull, os.O_WRONLY))  # a line per batch, as the central logs it
    results: dict[str, float] = {}

    def measure(name: str, work) -> None:  # type: ignore[no-untyped-def]
        best = min(work() for _ in range(args.repeat))
        results[name] = best / args.bets * 1e6

    def decode() -> float:
        started = cpu()
        for payload in frames:
            protocol.decode_payload(protocol.MsgType.BET, payload)
        return cpu() - started

    decoded = [protocol.decode_payload(protocol.MsgType.BET, payload) for payload in frames]

    def fresh() -> tuple[Path, Board, Storage]:
        directory = Path(tempfile.mkdtemp(prefix="bench-central-", dir=args.storage))
        recovery.recover(directory, 1)
        board = Board(1)
        return directory, board, Storage(directory, board, 1)

    def store() -> float:
        directory, board, storage = fresh()
        started = cpu()
        for group in range(0, len(decoded), args.group):
            storage.store_batches(decoded[group : group + args.group])
        spent = cpu() - started
        storage.close()
        board.close()
        shutil.rmtree(directory)
        return spent

    def handle() -> float:
        directory, board, storage = fresh()
        outbox = NullOutbox()
        commit = GroupCommit(storage, board, outbox, 1, lambda: None)
        handler = Handler(storage, commit, outbox, lambda: None, lambda: None, 1)
        session = Session("bench", agency=1, token=board.claim(1))
        started = cpu()
        for group in range(0, len(frames), args.group):
            for payload in frames[group : group + args.group]:
                handler.handle(session, protocol.MsgType.BET, payload)
            commit.run()
        spent = cpu() - started
        assert outbox.sent == len(frames), outbox.sent
        storage.close()
        board.close()
        shutil.rmtree(directory)
        return spent

    measure("decode and validate", decode)
    measure("store (append, journal, sync)", store)
    measure("handle (decode, validate, store, answer, log)", handle)
    print(f"bets: {args.bets} | batch: {args.batch} | group: {args.group} | best of {args.repeat}, CPU us per bet:")
    for name, value in results.items():
        print(f"  {name}: {value:.3f}")
    if args.profile:
        profile = cProfile.Profile()
        profile.runcall(handle)
        pstats.Stats(profile).sort_stats("tottime").print_stats(15)
    return 0


if __name__ == "__main__":
    sys.exit(main())
