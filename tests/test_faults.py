"""The central's promises under faults, with the real server as a process: one central per storage,
no blocking between processes, a round that ends with its draw, answers in request order, a
bounded restart, survived accept and write errors. Every test ends with each acknowledged bet
stored exactly once.

(Fault injection with strace, for fsync errors and kills at the worst moment: test_durability.py.)
"""

from __future__ import annotations

import contextlib
import resource
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import (
    DATA,
    DEFAULT_WINNERS,
    AgencyBets,
    Peer,
    batch,
    bet,
    csv_rows,
    health_echo,
    row,
    run_server_foreground,
    stored_documents,
    worker_pids,
)
from lottery import protocol
from lottery.protocol import ErrorCode
from processes import peak_rss_kib


def expect_error(message: protocol.Message, code: ErrorCode, position: int | None = None) -> protocol.Error:
    assert isinstance(message, protocol.Error), message
    assert message.code is code, message
    if position is not None:
        assert message.position == position, message
    return message


def rows(storage: Path) -> list[list[str]]:
    # the csv module: names may hold commas and double quotes (quoted), and U+2028 (which
    # str.splitlines() would split at)
    return csv_rows(storage)


def run_server(storage: Path, timeout: float = 20, **env: object) -> subprocess.CompletedProcess[str]:
    """The server in the foreground, for starts that must fail (with the test credentials)."""
    return run_server_foreground(storage, timeout, **env)


def test_a_second_central_on_the_same_storage_refuses_and_touches_nothing(start_server, launch, tmp_path) -> None:
    storage = tmp_path / "shared"
    server = start_server(agencies=2, storage=storage)
    clients = [launch(a, server.port, DATA / f"agency-{a}.csv", CLI_BATCH_MAXAMOUNT=10, CLI_BATCH_WINDOW=1)
               for a in (1, 2)]
    server.wait_log(r"apuesta_recibida \| result: success", count=50)
    before = (storage / "bets.csv").stat().st_size
    second = run_server(storage, AGENCIES=2)
    assert second.returncode == 1, second.stdout
    refusal = [line for line in second.stdout.splitlines() if "result: fail" in line]
    assert len(refusal) == 1, second.stdout
    assert f"action: storage_lock | result: fail | storage: {storage} | holder: pid {server.proc.pid}" in refusal[0]
    assert "action: storage_recovery" not in second.stdout and "action: listen" not in second.stdout
    assert (storage / "bets.csv").stat().st_size >= before  # nothing was cut under the running central
    for client in clients:
        assert client.wait() == 0, client.log()[-2000:]
        assert client.winners() == DEFAULT_WINNERS[client.agency]
    documents = stored_documents(storage)
    assert len(documents) == len(set(documents)) == 32_000
    assert server.stop() == 0


# --- no blocking between processes -----------------------------------------------------------


@pytest.mark.parametrize("admission", ["deadline", "budget"])
def test_bursts_of_short_and_idle_connections_never_block_the_central(start_server, peers, admission) -> None:
    """900 idle and 2,000 short plaintext connections on the agencies' port. None of them
    authenticates (none sends a ClientHello), so they never take one of the WORKER_CONNECTIONS
    slots and never block an agency: they are closed by HANDSHAKE_TIMEOUT (`deadline`: the
    budget holds them all, and the 900 idle ones are swept together) or by HANDSHAKE_BUDGET
    (`budget`: 64, overflowed at once: the oldest make room for the newer ones, and the deadline
    closes the last 64)."""
    timed_out = r"reason: no TLS handshake within 2s \(HANDSHAKE_TIMEOUT\)"
    evicted = r"reason: closed for a newer connection: 64 connections of worker 1 had not authenticated"
    budget = 4000 if admission == "deadline" else 64
    server = start_server(WORKERS=1, WORKER_CONNECTIONS=2000, HANDSHAKE_TIMEOUT=2, HANDSHAKE_BUDGET=budget)
    idle = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(900)]
    opened = time.monotonic()
    try:
        # Short connections, each closed at once, until well past the moment the 900 idle ones are
        # swept together (2 to 3 s after they opened): new and closed connections at once.
        burst = 0
        while burst < 2000 or time.monotonic() - opened < 4.5:
            try:
                socket.create_connection(("127.0.0.1", server.port), timeout=3).close()
            except OSError:
                break  # the backlog is full: the central stopped accepting
            burst += 1
        assert burst >= 2000, f"only {burst} connections were accepted"
        probe = peers(server.port, timeout=5)  # an agency: mutual TLS, then ECHO
        probe.send(protocol.Echo(b"during the burst"))
        assert probe.recv() == protocol.Echo(b"during the burst")
        assert health_echo(server.health_port)
        # Every idle connection is closed by the central (the sweep closes all 900 at once).
        if admission == "deadline":
            server.wait_log(r"action: handshake \| result: fail \| peer: \S+ \| " + timed_out, count=900, timeout=20)
            assert "HANDSHAKE_BUDGET" not in server.log()
        else:
            server.wait_log(r"action: handshake \| result: fail \| peer: \S+ \| " + evicted, count=900 - 64)
            server.wait_log(r"action: handshake \| result: fail \| peer: \S+ \| " + timed_out)
        for sock in idle:
            sock.settimeout(5)
            with contextlib.suppress(ConnectionResetError):
                assert sock.recv(1) == b""
        assert "IDLE_TIMEOUT" not in server.log()  # they never became sessions
        probe.close()
        fresh = peers(server.port)
        fresh.send(protocol.Echo(b"after the sweep"))
        assert fresh.recv() == protocol.Echo(b"after the sweep")
    finally:
        for sock in idle:
            sock.close()
    started = time.monotonic()
    assert server.stop(signal.SIGTERM, timeout=15) == 0
    assert time.monotonic() - started < 10
    assert "SIGKILL" not in server.log()


def test_accept_out_of_descriptors_is_logged_and_survived(start_server, peers) -> None:
    server = start_server(WORKERS=1, WORKER_CONNECTIONS=500)
    worker = worker_pids(server.proc.pid)[0]
    _, hard = resource.prlimit(worker, resource.RLIMIT_NOFILE)
    resource.prlimit(worker, resource.RLIMIT_NOFILE, (40, hard))
    # Plaintext connections (no TLS handshake): more than the worker can hold open.
    held = [Peer(server.port, agency=None) for _ in range(60)]
    try:
        server.wait_log(r"action: accept \| result: fail \| worker: 1 \| error: .*Too many open files")
    finally:
        for peer in held:
            peer.close()
    resource.prlimit(worker, resource.RLIMIT_NOFILE, (min(4096, hard), hard))
    peer = peers(server.port)  # an agency's mutual-TLS connection
    peer.send(protocol.Echo(b"still serving"))
    assert peer.recv() == protocol.Echo(b"still serving")
    assert health_echo(server.health_port)
    assert worker_pids(server.proc.pid) == [worker]  # the same worker, and the supervisor, survived
    assert server.stop() == 0


# --- a round ends with its draw --------------------------------------------------------------


def test_after_the_draw_new_bets_and_fins_are_refused_and_resends_still_acknowledged(start_server, peers) -> None:
    server = start_server(agencies=1)
    peer = peers(server.port)
    agency = AgencyBets(1)
    stored = agency.batch([bet("11", "7574")])
    peer.send(stored)
    peer.send(agency.fin())
    peer.send(protocol.WinnersQuery(1))
    assert [peer.recv(), peer.recv(), peer.recv()] == [protocol.Ack(1, 1), protocol.FinAck(1),
                                                        protocol.Winners(1, True, ("11",))]
    peer.send(agency.batch([bet("12", "7574")]))
    expect_error(peer.recv(), ErrorCode.ROUND_CLOSED, position=2)
    peer.send(batch(1, 5, [bet("15", "7574")], agency.chain))  # a gap is no new fact either
    expect_error(peer.recv(), ErrorCode.ROUND_CLOSED, position=5)
    peer.send(stored)  # a resend of the last stored batch states a stored fact: acknowledged
    assert peer.recv() == protocol.Ack(1, 1)
    peer.send(protocol.Fin(1, 1, stored.chain_after))
    expect_error(peer.recv(), ErrorCode.DUPLICATE_FIN)
    peer.send(protocol.Fin(1, 2, agency.chain))  # another FIN: a new fact, refused
    expect_error(peer.recv(), ErrorCode.ROUND_CLOSED)
    other = peers(server.port)  # RESUME after the draw: everything stored, the FIN recorded
    other.send(protocol.Hello(1))
    assert other.recv() == protocol.Resume(1, 1, stored.chain_after, True)
    server.wait_log(r"apuesta_recibida \| result: fail \| cantidad: 1 \| agency: 1 \| seq: 2 \| code: ROUND_CLOSED")
    assert rows(server.storage) == [row(1, bet("11", "7574"))]


@pytest.mark.parametrize("drawn", [False, True], ids=["open_round", "drawn_round"])
def test_a_restart_with_another_agency_count_refuses_to_start(start_server, peers, tmp_path, drawn) -> None:
    storage = tmp_path / "round"
    server = start_server(agencies=1, storage=storage)
    peer = peers(server.port)
    agency = AgencyBets(1)
    peer.send(agency.batch([bet("21", "7574")]))
    assert peer.recv() == protocol.Ack(1, 1)
    if drawn:
        peer.send(agency.fin())
        assert peer.recv() == protocol.FinAck(1)
        server.wait_log(r"action: sorteo \| result: success")
    assert server.stop() == 0
    files = {name: (storage / name).read_bytes() for name in ("bets.csv", "journal.log")}

    refused = run_server(storage, AGENCIES=2)
    assert refused.returncode == 1
    failures = [line for line in refused.stdout.splitlines() if "result: fail" in line]
    assert len(failures) == 1, refused.stdout
    assert (f"action: storage_round | result: fail | storage: {storage} | round_agencies: 1 | agencies: 2"
            in failures[0])
    assert "make docker-compose-reset" in failures[0]
    assert {name: (storage / name).read_bytes() for name in files} == files

    server = start_server(agencies=1, storage=storage)  # the round's own count still starts
    assert ("draw: done" if drawn else "draw: pending") in server.log()
    fresh = start_server(agencies=2, storage=tmp_path / "new-round")  # a new round on an empty storage
    assert "agencies: 2" in fresh.log()


# --- answers in request order ----------------------------------------------------------------


def test_pipelined_valid_and_invalid_frames_are_answered_in_order(start_server, peers) -> None:
    server = start_server(agencies=2)
    peer = peers(server.port)
    agency = AgencyBets(1)
    first = agency.batch([bet("31")])
    peer.send_raw(b"".join([
        protocol.encode(protocol.Hello(1)),
        protocol.encode(first),
        protocol.encode(protocol.Bet(1, 2, 1, agency.chain, b"Ana,Lopez,3x,1990-01-01,1\n")),  # invalid document
        protocol.encode(batch(3, 1, [bet("33")])),  # agency 3 of 2, on agency 1's connection
        bytes.fromhex("02ee00000002abcd"),  # unknown type
        protocol.encode(batch(1, 2, [bet("34")], agency.chain ^ 1)),  # another chain
        protocol.encode(agency.batch([bet("32", "7574", first="Paz, Ana")])),
        protocol.encode(protocol.WinnersQuery(0)),  # malformed
        protocol.encode(protocol.Hello(1)),
        protocol.encode(first),  # no longer the last stored batch
        protocol.encode(protocol.Echo(b"in order")),
        protocol.encode(agency.fin()),
    ]))
    answers = [peer.recv() for _ in range(12)]
    assert answers[:2] == [protocol.Resume(1, 0, 0, False), protocol.Ack(1, 1)]
    expect_error(answers[2], ErrorCode.INVALID_BET, position=2)
    expect_error(answers[3], ErrorCode.AGENCY_MISMATCH, position=1)
    expect_error(answers[4], ErrorCode.UNKNOWN_TYPE)
    expect_error(answers[5], ErrorCode.BETS_MISMATCH, position=2)
    assert answers[6] == protocol.Ack(1, 2)
    expect_error(answers[7], ErrorCode.MALFORMED)
    assert answers[8] == agency.resume()
    expect_error(answers[9], ErrorCode.BETS_MISMATCH, position=1)
    assert answers[10:] == [protocol.Echo(b"in order"), protocol.FinAck(1)]
    assert rows(server.storage) == [row(1, bet("31")), row(1, bet("32", "7574", first="Paz, Ana"))]
    server.wait_log(r"apuesta_recibida \| result: fail \| cantidad: 1 \| agency: 3 \| seq: 1 \| code: AGENCY_MISMATCH"
                    r" \| reason: the certificate is agency-1's, the message names agency 3")


# --- bounded restart -------------------------------------------------------------------------


def test_a_restart_over_many_small_batches_is_bounded(start_server, tmp_path) -> None:
    """60,000 one-bet batches: the journal is checkpointed as it grows, and a restart reads a
    bounded journal. The benchmark measures 3,000,000 (tools/bench.py --restart-batches)."""
    storage = tmp_path / "many"
    agencies, per_agency, window = 4, 15_000, 1000
    server = start_server(agencies=agencies, storage=storage)
    peers = [Peer(server.port, agency=agency) for agency in range(1, agencies + 1)]
    senders = {agency: AgencyBets(agency) for agency in range(1, agencies + 1)}
    for start in range(1, per_agency + 1, window):
        positions = range(start, min(start + window, per_agency + 1))
        for agency, peer in enumerate(peers, start=1):
            peer.send_raw(b"".join(protocol.encode(senders[agency].batch([bet(f"{agency}{s:06d}")]))
                                   for s in positions))
        for agency, peer in enumerate(peers, start=1):
            for s in positions:
                assert peer.recv() == protocol.Ack(agency, s)
    for peer in peers:
        peer.close()
    server.wait_log(r"action: checkpoint \| result: success", timeout=5)
    server.kill()
    journal = (storage / "journal.log").stat().st_size
    assert journal < 2 << 20, f"journal of {journal} bytes: not checkpointed"

    started = time.monotonic()
    server = start_server(agencies=agencies, storage=storage)
    assert time.monotonic() - started < 5  # measured in the benchmark; loose here
    memory = [peak_rss_kib(pid) / 1024 for pid in [server.proc.pid, *worker_pids(server.proc.pid)]]
    assert max(memory) < 64, memory
    peer = Peer(server.port, agency=2)
    peer.send(protocol.Hello(2))
    assert peer.recv() == senders[2].resume()  # the checkpoint kept the count and the chain
    peer.send(senders[2].batches[-1])  # the last batch, resent: the checkpoint kept its first too
    assert peer.recv() == protocol.Ack(2, per_agency)
    peer.send(senders[2].batches[-2])  # an older one is not a resend
    expect_error(peer.recv(), ErrorCode.BETS_MISMATCH, position=per_agency - 1)
    peer.send(senders[2].batch([bet("2999999")]))
    assert peer.recv() == protocol.Ack(2, per_agency + 1)
    peer.close()
    documents = [r[3] for r in rows(storage)]
    assert len(documents) == len(set(documents)) == agencies * per_agency + 1


# --- write errors and odd input --------------------------------------------------------------


def test_a_failed_append_answers_internal_error_with_the_position_and_stores_nothing(start_server, peers) -> None:
    server = start_server(WORKERS=1)
    worker = worker_pids(server.proc.pid)[0]
    peer = peers(server.port)
    agency = AgencyBets(1)
    first = [bet(f"{40000000 + n}", first="Ñandú" * 14) for n in range(40)]  # make bets.csv outgrow the log
    peer.send(agency.batch(first))
    assert peer.recv() == protocol.Ack(1, 40)
    storage = server.storage
    sizes = {name: (storage / name).stat().st_size for name in ("bets.csv", "journal.log")}
    # Files may not grow past bets.csv's size + 10 bytes: the next append fails midway (EFBIG),
    # as it would on a full disk.
    resource.prlimit(worker, resource.RLIMIT_FSIZE, (sizes["bets.csv"] + 10, resource.RLIM_INFINITY))
    second = agency.batch([bet("41"), bet("42", "7574")])
    peer.send(second)
    expect_error(peer.recv(), ErrorCode.INTERNAL_ERROR, position=41)
    assert peer.closed_by_server()
    assert {name: (storage / name).stat().st_size for name in sizes} == sizes  # nothing half-stored
    resource.prlimit(worker, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    again = peers(server.port)
    again.send(protocol.Hello(1))
    assert again.recv() == protocol.Resume(1, 40, second.chain, False)  # nothing of it is stored
    again.send(second)  # the room is back: the same central stores it
    assert again.recv() == protocol.Ack(1, 42)
    assert [r[3] for r in rows(storage)][-3:] == ["40000039", "41", "42"]
    assert len(rows(storage)) == 42
    assert worker_pids(server.proc.pid) == [worker]
    server.wait_log(r"action: storage_write \| result: fail")


def test_a_name_with_a_unicode_line_separator_is_stored_at_debug(start_server, peers) -> None:
    server = start_server(WORKERS=1, LOGGING_LEVEL="DEBUG")
    peer = peers(server.port)
    # U+2028 and U+2029 are valid in a name (U+0085, a C1 control character, is not).
    peer.send(AgencyBets(1).batch([bet("51", first="Ana\u2028María", last="Paz\u2029Ruiz, Soto"), bet("52", "7574")]))
    assert peer.recv() == protocol.Ack(1, 2)
    server.wait_log(r"apuesta_almacenada \| result: success \| dni: 52 \| numero: 7574")
    assert "dni: 51 | numero: 1" in server.log()
    assert rows(server.storage)[0][1:3] == ["Ana\u2028María", "Paz\u2029Ruiz, Soto"]
    assert "worker_exit" not in server.log()
