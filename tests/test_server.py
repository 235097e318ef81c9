"""The real server process over real sockets: sessions, bad input, the draw barrier, shutdown, restart."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time

import pytest

from conftest import (
    SERVER_DIR,
    AgencyBets,
    Peer,
    batch,
    bet,
    chain_of,
    csv_rows,
    health_echo,
    row,
    wait_until,
    worker_pids,
)
from lottery import protocol
from lottery.protocol import ErrorCode


def expect_error(message: protocol.Message, code: ErrorCode) -> protocol.Error:
    assert isinstance(message, protocol.Error), message
    assert message.code is code, message
    return message


def stored_rows(server) -> list[list[str]]:
    return csv_rows(server.storage)


@pytest.mark.parametrize("port", ["agencies", "health"])
def test_echo_answers_the_same_bytes_up_to_the_largest_frame(start_server, peers, port) -> None:
    """ECHO over an agency's mutual-TLS connection, and on the plaintext health port (whose
    routine lines are DEBUG: a health check comes every few seconds)."""
    server = start_server(LOGGING_LEVEL="INFO" if port == "agencies" else "DEBUG")
    peer = peers(server.port) if port == "agencies" else peers(server.health_port, agency=None)
    for payload in (b"", b"ping", b"a" * protocol.MAX_PAYLOAD):
        peer.send(protocol.Echo(payload))
        assert peer.recv() == protocol.Echo(payload)
    level = "INFO" if port == "agencies" else "DEBUG"
    server.wait_log(rf"{level} action: echo \| result: success \| peer: \S+ \| bytes: {protocol.MAX_PAYLOAD}")


def test_a_whole_session_stores_acknowledges_and_answers_only_own_winners(start_server, peers) -> None:
    server = start_server(agencies=2)
    one, two = peers(server.port, agency=1), peers(server.port, agency=2)
    first, second = AgencyBets(1), AgencyBets(2)
    one.send(protocol.Hello(1))
    assert one.recv() == protocol.Resume(1, 0, 0, False)
    one.send(first.batch([bet("111", "7574"), bet("112", "5")]))
    one.send(first.batch([bet("113", "7574", first="María José", last="Ibáñez")]))
    assert [one.recv(), one.recv()] == [protocol.Ack(1, 2), protocol.Ack(1, 3)]
    one.send(first.fin())
    assert one.recv() == protocol.FinAck(1)
    one.send(protocol.WinnersQuery(1))
    server.wait_log(r"consulta_ganadores \| result: in_progress \| agency: 1")
    two.send(second.batch([bet("221", "7574"), bet("222", "7575")]))
    assert two.recv() == protocol.Ack(2, 2)
    assert "sorteo" not in server.log()  # agency 2 has not finished: no draw, no answer yet
    one.sock.settimeout(0.3)
    with pytest.raises(socket.timeout):
        one.recv()
    one.sock.settimeout(10)
    two.send(second.fin())
    assert two.recv() == protocol.FinAck(2)
    assert one.recv() == protocol.Winners(1, True, ("111", "113"))
    two.send(protocol.WinnersQuery(2))
    assert two.recv() == protocol.Winners(2, True, ("221",))
    server.wait_log(r"action: sorteo \| result: success")
    log = server.log()
    assert log.count("action: sorteo | result: success") == 1
    assert "action: apuesta_recibida | result: success | cantidad: 2 | agency: 1 | seq: 1" in log
    assert "action: apuesta_recibida | result: success | cantidad: 1 | agency: 1 | seq: 3" in log
    assert "action: fin | result: success | agency: 1 | bets: 3" in log
    assert "consulta_ganadores | result: success | agency: 1 | cant_ganadores: 2" in log
    assert len(stored_rows(server)) == 5


def test_a_client_writing_one_byte_at_a_time_is_served(start_server, peers) -> None:
    server = start_server()
    peer = peers(server.port)
    peer.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    frame = protocol.encode(AgencyBets(1).batch([bet(str(n), first="Ñandú, hijo") for n in range(30)]))
    for i in range(len(frame)):
        peer.send_raw(frame[i : i + 1])
        if i % 50 == 0:
            time.sleep(0.002)
    assert peer.recv() == protocol.Ack(1, 30)
    assert len(stored_rows(server)) == 30


@pytest.mark.parametrize(
    "raw, code, closes",
    [
        (bytes.fromhex("020200002000"), ErrorCode.FRAME_TOO_LARGE, True),
        (bytes.fromhex("0201ffffffff"), ErrorCode.FRAME_TOO_LARGE, True),
        (bytes.fromhex("030100000000"), ErrorCode.UNSUPPORTED_VERSION, True),
        (bytes.fromhex("010900000004") + (1).to_bytes(4, "big"), ErrorCode.UNSUPPORTED_VERSION, True),
        (bytes.fromhex("02ee00000003616263"), ErrorCode.UNKNOWN_TYPE, False),
        (protocol.encode(protocol.Ack(1, 1)), ErrorCode.UNKNOWN_TYPE, False),
        (protocol.encode(protocol.Resume(1, 0, 0, False)), ErrorCode.UNKNOWN_TYPE, False),
        (bytes.fromhex("020600000002abcd"), ErrorCode.MALFORMED, False),
        (bytes.fromhex("0209000000020001"), ErrorCode.MALFORMED, False),
        # An agency outside 1..AGENCIES cannot authenticate (test_identity.py); a message naming
        # one on agency 1's connection names another agency than its certificate's.
        (protocol.encode(protocol.Fin(9, 0, 0)), ErrorCode.AGENCY_MISMATCH, False),
        (protocol.encode(protocol.Hello(9)), ErrorCode.AGENCY_MISMATCH, False),
        (protocol.encode(protocol.WinnersQuery(0)), ErrorCode.MALFORMED, False),
        (protocol.encode(protocol.Hello(0)), ErrorCode.MALFORMED, False),
        (protocol.encode(batch(3, 1, [bet("1")])), ErrorCode.AGENCY_MISMATCH, False),
        (protocol.encode(batch(2, 2, [bet("22")], chain_of([bet("21", "7574")]))), ErrorCode.AGENCY_MISMATCH, False),
        (protocol.encode(batch(1, 3, [bet("1")], 0)), ErrorCode.SEQUENCE_GAP, False),
        (protocol.encode(batch(1, 1, [bet("1", "7575")])), ErrorCode.BETS_MISMATCH, False),
        (protocol.encode(batch(1, 0xFFFFFFFF, [bet("1"), bet("2")])), ErrorCode.MALFORMED, False),
    ],
    ids=["too_large", "too_large_4GiB", "bad_version", "version_1_hello", "unknown_type", "server_type",
         "resume_from_agency", "malformed", "hello_short", "fin_unknown_agency", "hello_unknown_agency",
         "query_agency_zero", "hello_agency_zero", "bet_unknown_agency", "bet_other_agency", "bet_gap",
         "bet_other_bets_at_stored",
         "bet_past_last_position"],
)
def test_bad_input_gets_an_error_code_and_harms_nothing(start_server, peers, raw, code, closes) -> None:
    server = start_server(agencies=2)
    # Agency 1 stores bet 1, then the bad input comes on agency 1's next connection (which
    # supersedes the first); agency 2's connection, beside it, goes on storing.
    first = peers(server.port, agency=1)
    first.send(AgencyBets(1).batch([bet("1", "7574")]))
    assert first.recv() == protocol.Ack(1, 1)
    first.close()
    good = peers(server.port, agency=2)
    agency = AgencyBets(2)
    good.send(agency.batch([bet("21", "7574")]))
    assert good.recv() == protocol.Ack(2, 1)
    bad = peers(server.port, agency=1)
    bad.send_raw(raw)
    expect_error(bad.recv(), code)
    if closes:
        assert bad.closed_by_server()
    else:  # the framing is intact: the connection goes on
        bad.send(protocol.Echo(b"still here"))
        assert bad.recv() == protocol.Echo(b"still here")
    good.send(agency.batch([bet("22")]))
    assert good.recv() == protocol.Ack(2, 2)
    assert stored_rows(server) == [row(1, bet("1", "7574")), row(2, bet("21", "7574")), row(2, bet("22"))]
    server.wait_log(r"result: fail \| .*code: " + code.name)
    assert health_echo(server.health_port)


@pytest.mark.parametrize(
    "lines, count, code, reason",
    [
        (b"Ana,Lopez,1,1990-01-01,1\nBea,Diaz,2,1990-02-30,2\n", 2, ErrorCode.INVALID_BET, "bet 2: birthdate"),
        (b"Ana,Lopez,12a,1990-01-01,1\n", 1, ErrorCode.INVALID_BET, "bet 1: document"),
        (b"Ana,Lopez,1,1990-01-01,x\n", 1, ErrorCode.INVALID_BET, "bet 1: number"),
        (b"Ana,1,1990-01-01,1\n", 1, ErrorCode.INVALID_BET, "bet 1: 4 fields"),
        (b"Ana,Lopez,1,1990-01-01,1\n", 3, ErrorCode.MALFORMED, "count is 3"),
        (b"Ana,L\xffpez,1,1990-01-01,1\n", 1, ErrorCode.INVALID_BET, "bet 1: not UTF-8"),
        # Names are quoted exactly when they hold a comma or a double quote, and only then.
        ("Ana,Pérez, Juan,1,1990-01-01,1\n".encode(), 1, ErrorCode.INVALID_BET, "bet 1: 6 fields, want 5"),
        (b'"Ana",Lopez,1,1990-01-01,1\n', 1, ErrorCode.INVALID_BET, "bet 1: first_name"),
        ('"Pérez, Juan",Gómez,1,1990-01-01,1\nAna,"O\'Neill",2,1990-01-01,1\n'.encode(), 2, ErrorCode.INVALID_BET,
         "bet 2: last_name"),
        (b'Ana "la Tana",Lopez,1,1990-01-01,1\n', 1, ErrorCode.INVALID_BET, "bet 1: quoting"),
        (b'"Ana ""la Tana,Lopez,1,1990-01-01,1\n', 1, ErrorCode.INVALID_BET, "bet 1: quoting"),
        (b"Ana\xc2\x85Mar\xc3\xada,Paz,1,1990-01-01,1\n", 1, ErrorCode.INVALID_BET, "bet 1: first_name"),
    ],
    ids=["bad_date_in_bet_2", "document", "number", "four_fields", "count_mismatch", "not_utf8",
         "unquoted_comma", "needless_quotes", "needless_quotes_in_bet_2", "unquoted_double_quote",
         "unclosed_quote", "c1_control"],
)
def test_an_invalid_batch_is_refused_whole(start_server, peers, lines, count, code, reason) -> None:
    server = start_server()
    peer = peers(server.port)
    peer.send(protocol.Bet(1, 1, count, 0, lines))
    error = expect_error(peer.recv(), code)
    assert error.position == 1 and reason in error.reason, error
    server.wait_log(rf"action: apuesta_recibida \| result: fail \| cantidad: {count} \| agency: 1 \| seq: 1 "
                    rf"\| code: {code.name}")
    assert stored_rows(server) == []
    peer.send(protocol.Hello(1))
    assert peer.recv() == protocol.Resume(1, 0, 0, False)  # nothing of it is stored
    agency = AgencyBets(1)
    peer.send(agency.batch([bet("5", first="Pérez, Juan")]))  # the same position, now valid, is stored
    assert peer.recv() == protocol.Ack(1, 1)
    assert stored_rows(server) == [row(1, bet("5", first="Pérez, Juan"))]


def test_fin_rules_gap_then_recorded_then_duplicate(start_server, peers) -> None:
    server = start_server(agencies=2)
    peer = peers(server.port)
    agency = AgencyBets(1)
    stored = agency.batch([bet("1")])
    peer.send(stored)
    peer.send(protocol.Fin(1, 2, agency.chain))
    assert peer.recv() == protocol.Ack(1, 1)
    expect_error(peer.recv(), ErrorCode.SEQUENCE_GAP)
    peer.send(agency.fin())
    assert peer.recv() == protocol.FinAck(1)
    peer.send(agency.fin())
    expect_error(peer.recv(), ErrorCode.DUPLICATE_FIN)
    peer.send(agency.batch([bet("2")]))
    expect_error(peer.recv(), ErrorCode.AGENCY_FINISHED)
    peer.send(stored)  # a resend of the last stored batch is still acknowledged
    assert peer.recv() == protocol.Ack(1, 1)
    peer.send(protocol.Hello(1))
    assert peer.recv() == protocol.Resume(1, 1, stored.chain_after, True)
    server.wait_log(r"action: fin \| result: fail \| agency: 1 .*DUPLICATE_FIN")
    assert stored_rows(server) == [row(1, bet("1"))]


def test_a_truncated_frame_is_logged_and_stores_nothing(start_server, peers) -> None:
    server = start_server()
    peer = peers(server.port)
    frame = protocol.encode(AgencyBets(1).batch([bet("1")]))
    peer.send_raw(frame[:-5])
    peer.shutdown_write()
    assert peer.closed_by_server()
    server.wait_log(r"receive_message \| result: fail .*truncated frame")
    assert stored_rows(server) == []


def test_an_idle_connection_is_closed_but_a_held_query_is_not(start_server, peers) -> None:
    server = start_server(agencies=3, IDLE_TIMEOUT=1)
    idle, holder = peers(server.port, agency=2), peers(server.port, agency=1)
    holder.send(protocol.Fin(1, 0, 0))
    assert holder.recv() == protocol.FinAck(1)
    holder.send(protocol.WinnersQuery(1))
    expect_error(idle.recv(), ErrorCode.IDLE_TIMEOUT)
    assert idle.closed_by_server()
    time.sleep(1.5)
    holder.sock.settimeout(0.2)
    with pytest.raises(socket.timeout):
        holder.recv()  # still held, not timed out
    holder.sock.settimeout(10)
    for agency in (2, 3):
        fin = peers(server.port, agency=agency)
        fin.send(protocol.Fin(agency, 0, 0))
        assert fin.recv() == protocol.FinAck(agency)
    assert holder.recv() == protocol.Winners(1, True, ())


def test_connections_beyond_capacity_wait_in_the_backlog(start_server, peers) -> None:
    server = start_server(agencies=2, WORKERS=1, WORKER_CONNECTIONS=2)
    first, second = peers(server.port, agency=1), peers(server.port, agency=2)
    for peer in (first, second):
        peer.send(protocol.Echo(b"x"))
        assert peer.recv() == protocol.Echo(b"x")
    # Agency 1 connects again. Accepted by the kernel, not yet by the server: its ClientHello
    # is sent, and no answer comes.
    waiting = Peer.handshake_pending(server.port, agency=1)
    waiting.sock.settimeout(0.5)
    with pytest.raises((socket.timeout, ssl.SSLWantReadError)):
        waiting.finish_handshake(timeout=0.5)
    assert health_echo(server.health_port)  # the health port is still watched meanwhile
    first.close()
    waiting.finish_handshake()
    waiting.send(protocol.Echo(b"later"))
    assert waiting.recv() == protocol.Echo(b"later")
    waiting.close()
    server.wait_log(r"every connection slot is taken")


def test_sigterm_releases_held_queries_closes_everything_and_exits_0(start_server, peers) -> None:
    server = start_server(agencies=2)
    holder = peers(server.port)
    holder.send(AgencyBets(1).batch([bet("1", "7574")]))
    assert holder.recv() == protocol.Ack(1, 1)
    holder.send(protocol.WinnersQuery(1))
    server.wait_log("result: in_progress | agency: 1")
    assert server.stop(signal.SIGTERM, timeout=10) == 0
    expect_error(holder.recv(), ErrorCode.SHUTTING_DOWN)
    log = server.log()
    for line in ("action: shutdown | result: in_progress | signal: SIGTERM", "action: close_listener | result: success",
                 "action: close_connection | result: success", "action: close_storage | result: success",
                 "action: close_channel | result: success", "status: exit code 0"):
        assert line in log
    assert log.rstrip().endswith("action: exit | result: success")


def test_a_stuck_worker_does_not_hang_shutdown(start_server) -> None:
    server = start_server(SHUTDOWN_TIMEOUT=1)
    stuck = worker_pids(server.proc.pid)[0]
    os.kill(stuck, signal.SIGSTOP)
    started = time.monotonic()
    assert server.stop(signal.SIGTERM, timeout=10) == 0
    assert time.monotonic() - started < 5
    assert "killed by SIGKILL" in server.log()


def test_a_second_sigterm_cuts_the_grace_period(start_server) -> None:
    server = start_server(SHUTDOWN_TIMEOUT=30)
    os.kill(worker_pids(server.proc.pid)[0], signal.SIGSTOP)
    started = time.monotonic()
    server.send_signal(signal.SIGTERM)
    server.wait_log("action: stop_worker")
    server.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=10) == 0
    assert time.monotonic() - started < 8


def test_a_killed_worker_is_replaced(start_server, peers) -> None:
    server = start_server(WORKERS=1)
    victim = worker_pids(server.proc.pid)[0]
    os.kill(victim, signal.SIGKILL)
    server.wait_log(r"worker_exit \| result: fail .*killed by SIGKILL")
    server.wait_log("action: worker_start", count=2)
    peer = peers(server.port)
    peer.send(protocol.Echo(b"alive"))
    assert peer.recv() == protocol.Echo(b"alive")


def test_a_restarted_server_keeps_bets_fins_and_the_draw(start_server, peers, tmp_path) -> None:
    storage = tmp_path / "kept"
    server = start_server(storage=storage)
    peer = peers(server.port)
    agency = AgencyBets(1)
    stored = agency.batch([bet("41", "7574"), bet("42")])
    peer.send(stored)
    assert peer.recv() == protocol.Ack(1, 2)
    server.kill()  # a crash: an acknowledged batch must survive it

    server = start_server(storage=storage)
    peer = peers(server.port)
    peer.send(stored)  # the agency resends: not stored twice
    assert peer.recv() == protocol.Ack(1, 2)
    peer.send(agency.fin())
    assert peer.recv() == protocol.FinAck(1)
    peer.send(protocol.WinnersQuery(1))
    assert peer.recv() == protocol.Winners(1, True, ("41",))
    assert server.stop() == 0

    server = start_server(storage=storage)
    assert "draw: done" in server.log()
    peer = peers(server.port)
    peer.send(protocol.WinnersQuery(1))
    assert peer.recv() == protocol.Winners(1, True, ("41",))
    peer.send(agency.fin())
    expect_error(peer.recv(), ErrorCode.DUPLICATE_FIN)
    peer.send(protocol.Hello(1))
    assert peer.recv() == agency.resume(finished=True)
    assert "sorteo" not in server.log()  # no second draw
    assert stored_rows(server) == [row(1, bet("41", "7574")), row(1, bet("42"))]


@pytest.mark.parametrize(
    "key, value",
    [("SERVER_PORT", "70000"), ("SERVER_PORT", "abc"), ("AGENCIES", "0"), ("LOGGING_LEVEL", "LOUD"),
     ("IDLE_TIMEOUT", "-1"), ("SERVER_IP", "not-an-ip"), ("WORKERS", "x"), ("WORKER_CONNECTIONS", "1"),
     ("STALL_TIMEOUT", "0.5"), ("STATUS_INTERVAL", "-1")],
)
def test_a_bad_setting_stops_the_server_with_one_line_naming_the_key(tmp_path, key, value) -> None:
    env = {**os.environ, "STORAGE_DIR": str(tmp_path), key: value}
    result = subprocess.run([sys.executable, str(SERVER_DIR / "main.py")], env=env, capture_output=True,
                            text=True, timeout=20)
    assert result.returncode == 1
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1 and f"action: config | result: fail | key: {key}" in lines[0], result.stdout


def test_a_missing_config_file_is_reported(tmp_path) -> None:
    env = {**os.environ, "SERVER_CONFIG": str(tmp_path / "absent.ini")}
    result = subprocess.run([sys.executable, str(SERVER_DIR / "main.py")], env=env, capture_output=True,
                            text=True, timeout=20)
    assert result.returncode == 1
    assert "action: config | result: fail | key: config_file" in result.stdout


def test_many_concurrent_agencies(start_server, peers) -> None:
    agencies = 200
    server = start_server(agencies=agencies, WORKER_CONNECTIONS=100)
    conns = [peers(server.port, agency=agency) for agency in range(1, agencies + 1)]
    for agency, peer in enumerate(conns, start=1):
        sender = AgencyBets(agency)
        peer.send(protocol.Hello(agency))
        peer.send(sender.batch([bet(f"{agency}{i}", "7574" if i == 0 else "1") for i in range(5)]))
        peer.send(sender.fin())
    for agency, peer in enumerate(conns, start=1):
        assert peer.recv() == protocol.Resume(agency, 0, 0, False)
        assert peer.recv() == protocol.Ack(agency, 5)
        assert peer.recv() == protocol.FinAck(agency)
    for agency, peer in enumerate(conns, start=1):
        peer.send(protocol.WinnersQuery(agency))
    for agency, peer in enumerate(conns, start=1):
        assert peer.recv() == protocol.Winners(agency, True, (f"{agency}0",))
    wait_until(lambda: len(stored_rows(server)) == agencies * 5, 5, "all rows")
