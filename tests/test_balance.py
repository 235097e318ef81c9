"""Connections spread over the workers (accepting.py's least connections first, on the shared
board's loads): a worker holding more connections than another leaves a new one to it, and a
stopped worker can delay accepting, never stop it. On the real server, with real TLS agencies."""

from __future__ import annotations

import os
import re
import signal
import time
from collections import Counter

from conftest import Peer, wait_until, worker_pids
from lottery import protocol
from lottery.board import Board

HANDSHAKE = re.compile(r"action: handshake \| result: success \| peer: \S+ \| agency: (\d+) \| worker: (\d+)")


def worker_of(server, agency: int, count: int) -> str:
    """The worker that took agency `agency`'s connection, once `count` handshakes are logged."""
    found = wait_until(lambda: len(done := HANDSHAKE.findall(server.log())) >= count and done, 5, "the handshake")
    return [worker for who, worker in found if int(who) == agency][-1]


def echo(peer: Peer) -> None:
    peer.send(protocol.Echo(b"hi"))
    assert peer.recv() == protocol.Echo(b"hi")


def test_the_board_names_a_lighter_worker() -> None:
    board = Board(3)
    assert not board.lighter_worker(1, 2)  # 0 and 0
    board.set_load(1, 2)
    board.set_load(2, 1)
    assert board.lighter_worker(1, 2) and not board.lighter_worker(2, 2)
    assert not board.lighter_worker(1, 1)  # alone
    board.set_load(3, 0)  # a third worker, only seen when counted
    assert board.lighter_worker(2, 3) and not board.lighter_worker(2, 2)


def test_connections_made_one_at_a_time_alternate_between_the_workers(start_server, peers) -> None:
    """Whichever worker wakes first would take them at random; the lighter one takes each."""
    server = start_server(agencies=10, WORKERS=2)
    held: dict[int, Peer] = {}
    taken: Counter[str] = Counter()
    for agency in range(1, 9):
        held[agency] = peers(server.port, agency=agency)
        echo(held[agency])
        taken[worker_of(server, agency, agency)] += 1
        assert abs(taken["1"] - taken["2"]) <= 1, (agency, taken, server.log()[-3000:])
    # Closing three of worker 1's connections makes it the lighter one: it takes the next two.
    mine = [agency for agency in held if worker_of(server, agency, 8) == "1"][:3]
    for agency in mine:
        held.pop(agency).close()
    wait_until(lambda: server.log().count("action: close_connection | result: success") >= 3, 5, "the closes")
    for count, agency in enumerate((9, 10), start=9):
        held[agency] = peers(server.port, agency=agency)
        echo(held[agency])
        assert worker_of(server, agency, count) == "1", server.log()[-3000:]


def test_a_stopped_worker_delays_accepting_but_never_stops_it(start_server, peers) -> None:
    """With one worker stopped (SIGSTOP) and holding fewer connections, the other still takes
    every connection: it waits for the stopped one at most BALANCE_WAIT, then not for a while."""
    server = start_server(agencies=6, WORKERS=2)
    stopped = worker_pids(server.proc.pid)[0]
    os.kill(stopped, signal.SIGSTOP)
    try:
        started = time.monotonic()
        for agency in range(1, 7):
            echo(peers(server.port, agency=agency, timeout=5))
        elapsed = time.monotonic() - started
        workers = {worker_of(server, agency, 6) for agency in range(1, 7)}
        assert len(workers) == 1, server.log()[-3000:]
        assert elapsed < 3, elapsed
    finally:
        os.kill(stopped, signal.SIGCONT)
