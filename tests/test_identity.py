"""Who may speak to the central, on the real server process over real sockets and real TLS:
mutual TLS 1.3 on the agencies' port, the identity a verified certificate proves (a message
naming another agency is refused), one session per agency, the admission of connections that
have not authenticated (HANDSHAKE_TIMEOUT, HANDSHAKE_BUDGET), the plaintext health port (ECHO
only), and the TLS files a central starts with.

Each hostile case is its own test and checks: a log line that gives the reason, the central
still serving (an ECHO on the health port, and an agency's HELLO), and nothing stored from the
attacker (bets.csv and journal.log byte for byte). Where real Go agencies run beside the
attacker, their results are exact.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import selectors
import shutil
import signal
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import (
    CREDENTIALS,
    DATA,
    DEFAULT_WINNERS,
    ROOT,
    AgencyBets,
    Peer,
    agency_context,
    bet,
    health_echo,
    issue_credentials,
    raise_nofile_limit,
    run_server_foreground,
    stored_documents,
    worker_pids,
)
from lottery import protocol
from lottery.protocol import ErrorCode

VECTORS = json.loads((ROOT / "testdata" / "protocol_vectors.json").read_text(encoding="utf-8"))
MISMATCH_VECTOR = next(v for v in VECTORS["frames"] if v["name"] == "error_agency_mismatch")
KNOCK = b"let me in"  # the ECHO an unauthenticated peer tries: logged "bytes: 9" if it were answered
HANDSHAKE_FAIL = r"action: handshake \| result: fail \| peer: {peer} \| reason: {reason}"


# --- credentials the project CA did not issue, or issued for the wrong time ---------------------


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A whole other CA, with its own central and agency-1..3 certificates."""
    directory = tmp_path_factory.mktemp("other-ca")
    issue_credentials(directory, 3)
    return directory


@pytest.fixture(scope="module")
def expired(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Agency 1..2 certificates signed by the project CA, valid for one day in 2020."""
    directory = tmp_path_factory.mktemp("expired")
    for name in ("ca.pem", "ca-key.pem"):
        shutil.copy(CREDENTIALS / name, directory / name)
    created = issue_credentials(directory, 2, "-not-before", "2020-01-01T00:00:00Z", "-days", "1")
    assert "ca.pem" not in created and "agency-2.pem" in created, created
    return directory


def client_context(certificate: Path | None = None, key: Path | None = None,
                   maximum: ssl.TLSVersion = ssl.TLSVersion.MAXIMUM_SUPPORTED) -> ssl.SSLContext:
    """A TLS client that trusts the project CA (the attacker wants to reach the central) and
    presents `certificate`, or no certificate at all."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=str(CREDENTIALS / "ca.pem"))
    context.maximum_version = maximum
    if certificate is not None:
        context.load_cert_chain(str(certificate), str(key))
    return context


def client_hello(agency: int = 1) -> bytes:
    """The bytes of a real ClientHello of agency `agency`'s context, taken from memory."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = agency_context(agency).wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    hello = outgoing.read()
    assert hello[0] == 0x16 and len(hello) > 100, hello[:16]
    return hello


# --- what every hostile test checks ---------------------------------------------------------------


def snapshot(storage: Path) -> dict[str, bytes]:
    return {name: (storage / name).read_bytes() for name in ("bets.csv", "journal.log")}


def address(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"{host}:{port}"


def ended_without_an_answer(sock: socket.socket) -> str:
    """Read until the central ends the connection; no byte of the lottery protocol may come (a
    TLS alert may). Returns how it ended."""
    sock.settimeout(10)
    received = b""
    try:
        while True:
            data = sock.recv(4096)
            if not data:
                break
            received += data
    except ssl.SSLError as err:
        how = f"TLS error: {err.reason or err}"
    except ConnectionResetError:
        how = "reset"
    else:
        how = "closed"
    is_tls = isinstance(sock, ssl.SSLSocket)
    assert received == b"" or (not is_tls and received[0] == 0x15), \
        f"the central answered an unauthenticated peer: {received[:64]!r}"
    return how


def assert_still_serving(server, storage_before: dict[str, bytes] | None = None) -> None:
    """The central still serves: an ECHO on the health port and an agency's HELLO answered;
    and nothing was stored."""
    assert health_echo(server.health_port), f"the health port did not answer:\n{server.log()[-3000:]}"
    agency = Peer(server.port, agency=1)
    try:
        agency.send(protocol.Hello(1))
        assert isinstance(agency.recv(), protocol.Resume)
    finally:
        agency.close()
    if storage_before is not None:
        assert snapshot(server.storage) == storage_before
    assert f"bytes: {len(KNOCK)}\n" not in server.log(), "an unauthenticated peer's ECHO was answered"
    assert server.proc.poll() is None


def refused_with_a_certificate(server, context: ssl.SSLContext) -> tuple[str, str]:
    """Connect with `context` and knock (an ECHO): the central must end the connection without
    an answer. Returns the client's address and how it ended."""
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    peer = address(raw)
    try:
        sock = context.wrap_socket(raw, server_hostname="localhost")
    except (ssl.SSLError, OSError) as err:  # refused within the handshake
        raw.close()
        return peer, f"handshake: {err}"
    try:
        try:
            sock.sendall(protocol.encode(protocol.Echo(KNOCK)))
        except (ssl.SSLError, OSError) as err:
            return peer, f"send: {err}"
        return peer, ended_without_an_answer(sock)
    finally:
        sock.close()


# --- certificates the central refuses -------------------------------------------------------------


def assert_handshake_refused(server, context: ssl.SSLContext, reason: str) -> str:
    """Connect with `context`: the central refuses the handshake and logs it with `reason` (a
    regular expression), authenticates nobody, stores nothing and keeps serving. Returns how the
    connection ended, as the client saw it."""
    before = snapshot(server.storage)
    peer, how = refused_with_a_certificate(server, context)
    server.wait_log(HANDSHAKE_FAIL.format(peer=re.escape(peer), reason=reason))
    assert "action: handshake | result: success" not in server.log()
    assert_still_serving(server, before)
    return how


def test_a_client_without_a_certificate_is_refused(start_server) -> None:
    assert_handshake_refused(start_server(agencies=2), client_context(), r"no client certificate")


def test_a_certificate_of_another_ca_is_refused(start_server, other_ca) -> None:
    context = client_context(other_ca / "agency-1.pem", other_ca / "agency-1-key.pem")
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # it does not care who answers
    assert_handshake_refused(start_server(agencies=2), context,
                             r"certificate refused: unable to get local issuer certificate")


def test_an_expired_certificate_of_the_project_ca_is_refused(start_server, expired) -> None:
    context = client_context(expired / "agency-2.pem", expired / "agency-2-key.pem")
    assert_handshake_refused(start_server(agencies=2), context, r"certificate refused: certificate has expired")


def test_a_certificate_of_an_agency_outside_the_round_is_refused(start_server) -> None:
    """Agency 9's certificate is genuine, but the round has 3 agencies (what UNKNOWN_AGENCY was)."""
    assert_handshake_refused(start_server(agencies=3), agency_context(9),
                             r"the certificate \(subject .*agency-9.*\) is not agency-N with N in 1\.\.3")


def test_the_central_certificate_is_no_agency_certificate(start_server) -> None:
    """The central's own certificate (a server certificate of the project CA, CN `server`)
    presented as a client certificate."""
    context = client_context(CREDENTIALS / "server.pem", CREDENTIALS / "server-key.pem")
    assert_handshake_refused(start_server(agencies=2), context, r"certificate refused: \S.*")


def test_a_tls_1_2_client_is_refused(start_server) -> None:
    context = client_context(CREDENTIALS / "agency-1.pem", CREDENTIALS / "agency-1-key.pem",
                             maximum=ssl.TLSVersion.TLSv1_2)
    how = assert_handshake_refused(start_server(agencies=2), context, r"not TLS 1\.3")
    assert how.startswith("handshake:"), how


# --- a genuine agency naming another one --------------------------------------------------------


HOSTILE = {
    # Each would change or reveal agency 3's round if the central took the agency from the message:
    # a valid next batch, a FIN matching its bets, its RESUME, its winners.
    "BET": lambda three: AgencyBets(3, three.stored, three.chain).batch([bet("3999", "7574")]),
    "FIN": lambda three: three.fin(),
    "HELLO": lambda three: protocol.Hello(3),
    "WINNERS_QUERY": lambda three: protocol.WinnersQuery(3),
}


@pytest.mark.parametrize("kind", list(HOSTILE))
def test_a_message_naming_another_agency_is_refused(start_server, peers, kind) -> None:
    server = start_server(agencies=3)
    three = AgencyBets(3)
    agency3 = peers(server.port, agency=3)
    agency3.send(three.batch([bet("3001", "7574"), bet("3002", "12")]))
    assert agency3.recv() == protocol.Ack(3, 2)
    before = snapshot(server.storage)

    agency2 = peers(server.port, agency=2)
    received: list[protocol.Message] = []

    def answer() -> protocol.Message:
        received.append(agency2.recv())
        return received[-1]

    hostile = HOSTILE[kind](three)
    agency2.send(hostile)
    refusal = answer()
    reason = "the certificate is agency-2's, the message names agency 3"
    position = hostile.first if isinstance(hostile, protocol.Bet) else 0
    assert refusal == protocol.Error(ErrorCode.AGENCY_MISMATCH, position, reason), refusal
    assert int(refusal.code) == 15
    if position == 0:  # byte for byte the vector error_agency_mismatch
        assert protocol.encode(refusal).hex() == MISMATCH_VECTOR["hex"]
    server.wait_log(r"result: fail \|.* code: AGENCY_MISMATCH \| reason: " + re.escape(reason))
    line = next(x for x in server.log().splitlines() if "AGENCY_MISMATCH" in x)
    assert "WARNING" in line and "agency-2" in line and "agency 3" in line, line

    agency2.send(protocol.Echo(b"still open"))  # the framing is intact: the connection stays open
    assert answer() == protocol.Echo(b"still open")
    assert snapshot(server.storage) == before  # nothing stored, no FIN recorded
    assert "consulta_ganadores | result: in_progress | agency: 3" not in server.log()  # not held either
    agency3.send(protocol.Hello(3))
    assert agency3.recv() == three.resume(finished=False)

    # The round ends; agency 3's winners go to agency 3 only.
    agency3.send(three.fin())
    assert agency3.recv() == protocol.FinAck(3)
    agency1 = peers(server.port, agency=1)
    agency1.send(protocol.Fin(1, 0, 0))
    assert agency1.recv() == protocol.FinAck(1)
    agency2.send(protocol.Fin(2, 0, 0))
    assert answer() == protocol.FinAck(2)
    agency3.send(protocol.WinnersQuery(3))
    assert agency3.recv() == protocol.Winners(3, True, ("3001",))
    agency2.send(protocol.WinnersQuery(3))  # after the draw too
    assert answer() == protocol.Error(ErrorCode.AGENCY_MISMATCH, 0, reason)
    agency2.send(protocol.WinnersQuery(2))
    assert answer() == protocol.Winners(2, True, ())
    assert not any(isinstance(m, (protocol.Winners, protocol.Resume)) and m.agency == 3 for m in received), received
    log = server.log()
    assert log.count("action: consulta_ganadores | result: success | agency: 3 ") == 1
    assert log.count("code: AGENCY_MISMATCH") == 2
    assert stored_documents(server.storage) == ["3001", "3002"]
    assert (server.storage / "winners.csv").read_text().splitlines() == ["3,3001"]
    assert health_echo(server.health_port)


# --- what is not TLS on the TLS port -------------------------------------------------------------


def knock_raw(server, data: bytes) -> tuple[str, str]:
    """Send `data` on a plaintext connection to the agencies' port; the central must end it
    without an answer (a TLS alert at most). Returns the client's address and how it ended."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    peer = address(sock)
    try:
        try:
            sock.sendall(data)
        except OSError as err:
            return peer, f"send: {err}"
        return peer, ended_without_an_answer(sock)
    finally:
        sock.close()


@pytest.mark.parametrize(
    "data",
    [b"hello, is this the lottery?\n", protocol.encode(protocol.Echo(KNOCK)),
     protocol.encode(AgencyBets(1).batch([bet("1", "7574")])), b"GET / HTTP/1.1\r\nHost: server\r\n\r\n"],
    ids=["text", "echo_frame", "bet_frame", "http"],
)
def test_plaintext_on_the_tls_port_gets_no_answer(start_server, data) -> None:
    server = start_server(agencies=2)
    before = snapshot(server.storage)
    peer, _ = knock_raw(server, data)
    server.wait_log(HANDSHAKE_FAIL.format(peer=re.escape(peer), reason=r"not a TLS ClientHello \((plaintext or "
                                          r"garbage|an HTTP request)\)"))
    assert "action: handshake | result: success" not in server.log()
    assert_still_serving(server, before)


@pytest.mark.parametrize("kind", ["random", "tls_record_header_then_random", "client_hello_corrupted"])
def test_garbage_instead_of_a_client_hello_is_refused(start_server, kind) -> None:
    rng = random.Random(7574)
    if kind == "random":
        data = rng.randbytes(600)
    elif kind == "tls_record_header_then_random":
        data = bytes.fromhex("1603010200") + rng.randbytes(512)
    else:  # a real ClientHello with its body scrambled
        hello = bytearray(client_hello())
        for i in range(9, len(hello)):
            hello[i] ^= rng.randrange(1, 256)
        data = bytes(hello)
    server = start_server(agencies=2)
    before = snapshot(server.storage)
    peer, _ = knock_raw(server, data)
    server.wait_log(HANDSHAKE_FAIL.format(peer=re.escape(peer), reason=r"\S.*"))
    assert "action: handshake | result: success" not in server.log()
    assert_still_serving(server, before)


@pytest.mark.parametrize("kind", ["silent", "half_a_client_hello"])
def test_a_stalled_handshake_is_closed_at_the_deadline(start_server, kind) -> None:
    server = start_server(agencies=2, HANDSHAKE_TIMEOUT=1)
    before = snapshot(server.storage)
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    opened = time.monotonic()
    peer = address(sock)
    try:
        if kind == "half_a_client_hello":
            hello = client_hello()
            sock.sendall(hello[: len(hello) // 2])
        ended_without_an_answer(sock)
        elapsed = time.monotonic() - opened
    finally:
        sock.close()
    assert 0.9 < elapsed < 3, f"closed after {elapsed:.2f}s with HANDSHAKE_TIMEOUT=1"
    server.wait_log(HANDSHAKE_FAIL.format(peer=re.escape(peer),
                                          reason=r"no TLS handshake within 1s \(HANDSHAKE_TIMEOUT\)"))
    assert_still_serving(server, before)


def test_a_stalled_handshake_is_not_taken_for_an_idle_session(start_server) -> None:
    """With IDLE_TIMEOUT shorter than HANDSHAKE_TIMEOUT, a connection that never authenticated
    is still closed by the handshake deadline, as a failed handshake: it is no session, so it
    gets no IDLE_TIMEOUT frame (which would be written into a TLS connection that has no keys)."""
    server = start_server(agencies=2, HANDSHAKE_TIMEOUT=3, IDLE_TIMEOUT=1)
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    opened = time.monotonic()
    peer = address(sock)
    try:
        ended_without_an_answer(sock)
        elapsed = time.monotonic() - opened
    finally:
        sock.close()
    server.wait_log(HANDSHAKE_FAIL.format(peer=re.escape(peer),
                                          reason=r"no TLS handshake within 3s \(HANDSHAKE_TIMEOUT\)"))
    own = [line for line in server.log().splitlines() if f"peer: {peer} " in line]
    assert not any("IDLE_TIMEOUT" in line for line in own), "\n".join(own)
    assert 2.9 < elapsed < 5, f"closed after {elapsed:.2f}s with HANDSHAKE_TIMEOUT=3"


def test_unauthenticated_connections_have_their_own_budget_and_never_take_an_agency_slot(start_server,
                                                                                          peers) -> None:
    """One worker with one agency slot and a budget of 4 connections that have not authenticated:
    the 5th closes the oldest, and the agency still gets in (its own handshake evicts one more)."""
    server = start_server(agencies=1, WORKERS=1, WORKER_CONNECTIONS=1, HANDSHAKE_BUDGET=4, HANDSHAKE_TIMEOUT=30)
    before = snapshot(server.storage)
    idle = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(4)]
    try:
        server.wait_log(r"action: accept \| result: success .*port: agencies", count=4)
        assert "HANDSHAKE_BUDGET" not in server.log()
        idle.append(socket.create_connection(("127.0.0.1", server.port), timeout=10))
        ended_without_an_answer(idle[0])  # the oldest is closed for the newer one
        server.wait_log(HANDSHAKE_FAIL.format(peer=re.escape(address(idle[0])), reason=r"closed for a newer "
                                              r"connection: 4 connections of worker 1 had not authenticated "
                                              r"\(HANDSHAKE_BUDGET\)"))
        agency = peers(server.port, agency=1)  # the only slot is the agency's
        agency.send(protocol.Hello(1))
        assert agency.recv() == protocol.Resume(1, 0, 0, False)
        ended_without_an_answer(idle[1])  # its handshake evicted the next oldest
        for sock in idle[2:]:  # the rest still wait, unanswered
            sock.setblocking(False)
            with pytest.raises(BlockingIOError):
                sock.recv(1)
        server.wait_log(r"every connection slot is taken")  # the agency holds the only slot
        agency.send(protocol.Echo(b"served"))
        assert agency.recv() == protocol.Echo(b"served")
    finally:
        for sock in idle:
            sock.close()
    assert health_echo(server.health_port)
    assert snapshot(server.storage) == before


def test_an_evicted_connection_is_logged_once(start_server) -> None:
    """An unauthenticated connection that the budget evicts in the same loop turn in which it
    becomes readable is closed once and logged once. (Whether one select() returns the newer
    connection before the older one's bytes is up to the kernel: the race is tried 20 times.)"""
    server = start_server(agencies=1, WORKERS=1, HANDSHAKE_BUDGET=1, HANDSHAKE_TIMEOUT=30)
    worker = worker_pids(server.proc.pid)[0]
    evicted = []
    oldest = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    try:
        for _ in range(20):
            server.wait_log(r"action: accept \| result: success \| peer: " + re.escape(address(oldest)))
            os.kill(worker, signal.SIGSTOP)  # one select() then sees both, the newer connection first
            try:
                newer = socket.create_connection(("127.0.0.1", server.port), timeout=10)
                time.sleep(0.05)
                oldest.sendall(b"\x16\x03\x01")  # readable, not enough to fail the handshake
                time.sleep(0.05)
            finally:
                os.kill(worker, signal.SIGCONT)
            ended_without_an_answer(oldest)
            evicted.append(address(oldest))
            oldest.close()
            oldest = newer
    finally:
        oldest.close()
    for peer in evicted:
        server.wait_log(HANDSHAKE_FAIL.format(peer=re.escape(peer), reason=r"closed for a newer connection"))
    time.sleep(0.5)
    log = server.log().splitlines()
    for peer in evicted:
        own = [line for line in log if f"peer: {peer} " in line]
        assert len([line for line in own if "action: handshake | result: fail" in line]) == 1, "\n".join(own)
        assert len([line for line in own if "action: close_connection" in line]) == 1, "\n".join(own)
    assert health_echo(server.health_port)


# --- one session per agency -------------------------------------------------------------------------


def test_a_second_session_of_an_agency_closes_the_first(start_server, peers) -> None:
    server = start_server(agencies=2)
    first = peers(server.port, agency=1)
    first.send(protocol.Fin(1, 0, 0))
    assert first.recv() == protocol.FinAck(1)
    first.send(protocol.WinnersQuery(1))
    server.wait_log(r"consulta_ganadores \| result: in_progress \| agency: 1")
    old = address(first.sock)

    second = peers(server.port, agency=1)
    started = time.monotonic()
    assert first.closed_by_server()  # EOF: the held query goes with it
    assert time.monotonic() - started < 3
    server.wait_log(r"action: session \| result: success \| agency: 1 \| peer: " + re.escape(old)
                    + r" \| reason: superseded by a newer session of the agency")
    server.wait_log(r"action: consulta_ganadores \| result: fail \| agency: 1 \| reason: superseded")
    second.send(protocol.Hello(1))
    assert second.recv() == protocol.Resume(1, 0, 0, True)

    # Again and again, whichever worker holds the older session and takes the newer one.
    current = second
    for _ in range(6):
        newer = peers(server.port, agency=1)
        assert current.closed_by_server()
        newer.send(protocol.Hello(1))
        assert newer.recv() == protocol.Resume(1, 0, 0, True)
        current = newer
    assert server.log().count("reason: superseded by a newer session of the agency") == 7

    other = peers(server.port, agency=2)  # another agency's session is not touched
    current.send(protocol.WinnersQuery(1))
    other.send(protocol.Fin(2, 0, 0))
    assert other.recv() == protocol.FinAck(2)
    assert current.recv() == protocol.Winners(1, True, ())
    assert "action: session | result: success | agency: 2" not in server.log()  # never superseded


# --- the health port --------------------------------------------------------------------------------


def test_the_health_port_answers_echo(start_server, peers) -> None:
    server = start_server()
    peer = peers(server.health_port, agency=None)
    for payload in (b"", b"ping", bytes(range(256)) * 8):
        peer.send(protocol.Echo(payload))
        assert peer.recv() == protocol.Echo(payload)
    assert health_echo(server.health_port)


@pytest.mark.parametrize("kind", ["BET", "HELLO", "FIN", "WINNERS_QUERY"])
def test_the_health_port_refuses_every_other_message_and_closes(start_server, peers, kind) -> None:
    server = start_server(agencies=1)
    before = snapshot(server.storage)
    agency = AgencyBets(1)
    message = {"BET": agency.batch([bet("1", "7574")]), "HELLO": protocol.Hello(1),
               "FIN": protocol.Fin(1, 0, 0), "WINNERS_QUERY": protocol.WinnersQuery(1)}[kind]
    peer = peers(server.health_port, agency=None)
    peer.send(protocol.Echo(b"first"))
    assert peer.recv() == protocol.Echo(b"first")
    peer.send(message)
    peer.send(protocol.Echo(b"never answered"))
    answer = peer.recv()
    assert answer == protocol.Error(ErrorCode.UNKNOWN_TYPE, 0, "the health port answers ECHO only"), answer
    assert peer.closed_by_server()
    server.wait_log(r"action: receive_message \| result: fail \| peer: " + re.escape(address(peer.sock))
                    + r" \| code: UNKNOWN_TYPE \| reason: the health port answers ECHO only")
    assert snapshot(server.storage) == before
    log = server.log()
    for line in ("apuesta_recibida", "action: hello", "action: fin", "consulta_ganadores", "sorteo"):
        assert line not in log, line
    assert_still_serving(server, before)


def test_a_tls_client_on_the_health_port_gets_no_tls(start_server) -> None:
    server = start_server(agencies=1)
    before = snapshot(server.storage)
    raw = socket.create_connection(("127.0.0.1", server.health_port), timeout=10)
    peer = address(raw)
    with pytest.raises(ssl.SSLError):
        agency_context(1).wrap_socket(raw, server_hostname="localhost")
    raw.close()
    # Its ClientHello is read as a frame of version 22: refused, then closed.
    server.wait_log(r"action: receive_message \| result: fail \| peer: " + re.escape(peer)
                    + r" \| code: UNSUPPORTED_VERSION")
    server.wait_log(r"action: close_connection \| result: success \| peer: " + re.escape(peer))
    assert "action: handshake | result: success" not in server.log()
    assert_still_serving(server, before)


# --- the central's own TLS files ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "key, settings",
    [
        ("TLS_KEY", lambda tmp, other: {"TLS_KEY": str(tmp / "absent-key.pem")}),
        ("TLS_KEY", lambda tmp, other: {"TLS_KEY": str(CREDENTIALS / "agency-1-key.pem")}),
        ("TLS_CERT", lambda tmp, other: {"TLS_CERT": str(other / "server.pem"),
                                         "TLS_KEY": str(other / "server-key.pem")}),
        ("TLS_CERT", lambda tmp, other: {"TLS_CERT": str(tmp / "absent.pem")}),
        ("TLS_CA", lambda tmp, other: {"TLS_CA": str(tmp / "absent-ca.pem")}),
        ("TLS_CERT", lambda tmp, other: {"TLS_CERT": str(DATA / "agency-1.csv")}),
    ],
    ids=["missing_key", "key_of_another_certificate", "certificate_of_another_ca", "missing_certificate",
         "missing_ca", "certificate_not_pem"],
)
def test_a_bad_tls_file_stops_the_central_at_start(tmp_path, other_ca, key, settings) -> None:
    storage = tmp_path / "storage"
    result = run_server_foreground(storage, **settings(tmp_path, other_ca))
    assert result.returncode == 1, result.stdout
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout
    assert f"action: config | result: fail | key: {key} | error: " in lines[0], lines[0]
    assert not storage.exists() or not any(storage.iterdir())  # it stopped before the storage


# --- refused peers beside real agencies ------------------------------------------------------------


def test_refused_peers_beside_running_agencies_change_nothing(start_server, launch, other_ca, expired) -> None:
    """Every kind of refused peer, again and again, while three real agencies send their bets:
    the agencies' results are exact."""
    server = start_server(agencies=3)
    clients = [launch(a, server.port, DATA / f"agency-{a}.csv", CLI_BATCH_MAXAMOUNT=20) for a in range(1, 4)]
    other = client_context(other_ca / "agency-1.pem", other_ca / "agency-1-key.pem")
    other.check_hostname, other.verify_mode = False, ssl.CERT_NONE
    attackers: list[Callable[[], object]] = [
        lambda: refused_with_a_certificate(server, client_context()),
        lambda: refused_with_a_certificate(server, other),
        lambda: refused_with_a_certificate(server, client_context(expired / "agency-2.pem",
                                                                  expired / "agency-2-key.pem")),
        lambda: refused_with_a_certificate(server, agency_context(9)),
        lambda: knock_raw(server, protocol.encode(AgencyBets(3).batch([bet("1", "7574")]))),
        lambda: knock_raw(server, random.randbytes(300)),
    ]
    rounds = 0
    while any(client.proc.poll() is None for client in clients) and rounds < 50:
        for attack in attackers:
            attack()
        rounds += 1
    for client in clients:
        assert client.wait() == 0, client.log()[-2000:]
        assert client.winners() == DEFAULT_WINNERS[client.agency]
    assert rounds >= 3, "the agencies finished before the attackers could try"
    documents = stored_documents(server.storage)
    expected = sum(1 for a in range(1, 4) for line in (DATA / f"agency-{a}.csv").read_bytes().splitlines() if line)
    assert len(documents) == len(set(documents)) == expected
    assert len(re.findall(r"action: handshake \| result: fail", server.log())) >= rounds * len(attackers)
    assert health_echo(server.health_port)
    assert server.stop() == 0


# --- a flood of connections that never authenticate, beside real agencies ---------------------------


class Flood:
    """Plaintext connections on the agencies' port, kept up from a thread: `idle` ones send
    nothing, `drip` ones send a real ClientHello one byte every 100 ms, `garbage` ones send
    random bytes. Each one the central closes is opened again (at most `reopen` per 100 ms), so
    the flood lasts until `stop`."""

    def __init__(self, port: int, idle: int, drip: int, garbage: int, reopen: int = 100) -> None:
        self.port = port
        self.wanted = {"idle": idle, "drip": drip, "garbage": garbage}
        self.reopen = reopen
        self.hello = client_hello()
        self.rng = random.Random(2024)
        self.selector = selectors.DefaultSelector()
        self.kinds: dict[socket.socket, str] = {}
        self.dripped: dict[socket.socket, int] = {}
        self.opened = self.closed_by_server = self.failed_connects = 0
        self.peak = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.error: BaseException | None = None

    def start(self) -> Flood:
        for kind, count in self.wanted.items():
            for _ in range(count):
                self._open(kind)
        self.peak = len(self.kinds)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=30)
        for sock in list(self.kinds):
            self._drop(sock)
        self.selector.close()
        if self.error is not None:
            raise self.error

    def _open(self, kind: str) -> None:
        try:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=1)
        except OSError:
            self.failed_connects += 1
            return
        self.opened += 1
        sock.setblocking(False)
        self.kinds[sock] = kind
        self.selector.register(sock, selectors.EVENT_READ)
        if kind == "garbage":
            with contextlib.suppress(OSError):
                sock.send(self.rng.randbytes(64))
        elif kind == "drip":
            self.dripped[sock] = 0

    def _drop(self, sock: socket.socket) -> None:
        self.selector.unregister(sock)
        self.kinds.pop(sock, None)
        self.dripped.pop(sock, None)
        sock.close()

    def _run(self) -> None:
        try:
            next_drip = time.monotonic()
            while not self.stopping.is_set():
                for key, _ in self.selector.select(timeout=0.05):
                    sock = key.fileobj
                    try:
                        data = sock.recv(4096)
                    except BlockingIOError:
                        continue
                    except OSError:
                        data = b""
                    if not data or data[:1] == b"\x15":  # closed, reset, or a TLS alert
                        self.closed_by_server += 1
                        self._drop(sock)
                now = time.monotonic()
                if now >= next_drip:
                    next_drip = now + 0.1
                    for sock, sent in list(self.dripped.items()):
                        if sent < len(self.hello):
                            try:
                                sock.send(self.hello[sent : sent + 1])
                                self.dripped[sock] = sent + 1
                            except OSError:
                                pass
                    budget = self.reopen
                    for kind, count in self.wanted.items():
                        missing = count - sum(1 for k in self.kinds.values() if k == kind)
                        for _ in range(min(missing, budget)):
                            self._open(kind)
                            budget -= 1
                    self.peak = max(self.peak, len(self.kinds))
        except BaseException as err:  # reported by stop()
            self.error = err


@pytest.fixture
def flood() -> Iterator[Callable[..., Flood]]:
    started: list[Flood] = []

    def start(port: int, **kinds: int) -> Flood:
        started.append(Flood(port, **kinds).start())
        return started[-1]

    yield start
    for each in started:
        if not each.stopping.is_set():
            each.stop()


def test_a_flood_of_unauthenticated_connections_never_keeps_real_agencies_out(start_server, launch, flood) -> None:
    """1,000 connections that never authenticate (900 idle, 50 dripping a ClientHello, 50 sending
    garbage), each reopened as soon as the central closes it, overflow a HANDSHAKE_BUDGET of 64
    per worker while five real agencies send the default data set: they all finish promptly with
    their exact winners, and every bet is stored once."""
    assert raise_nofile_limit() >= 2000
    server = start_server(agencies=5, HANDSHAKE_BUDGET=64)
    attack = flood(server.port, idle=900, drip=50, garbage=50)
    # The flood is under way, and overflows the budget again and again, before the agencies start.
    server.wait_log(r"reason: closed for a newer connection: 64 connections of worker \d had not authenticated "
                    r"\(HANDSHAKE_BUDGET\)", count=2000, timeout=30)
    started = time.monotonic()
    clients = [launch(a, server.port, DATA / f"agency-{a}.csv") for a in range(1, 6)]
    health = []
    while any(client.proc.poll() is None for client in clients) and time.monotonic() - started < 60:
        health.append(health_echo(server.health_port))
        time.sleep(0.5)
    elapsed = time.monotonic() - started
    for client in clients:
        assert client.wait(timeout=1) == 0, client.log()[-2000:]
        assert client.winners() == DEFAULT_WINNERS[client.agency]
    attack.stop()
    assert elapsed < 60, f"the agencies took {elapsed:.1f}s under the flood"
    # 1,000 at once (less the garbage ones already refused), and more than as many again reopened.
    assert attack.peak >= 950 and attack.opened >= 2000 and attack.closed_by_server >= 1000, \
        (attack.peak, attack.opened, attack.closed_by_server)
    documents = stored_documents(server.storage)
    assert len(documents) == len(set(documents)) == 80_000
    log = server.log()
    assert log.count("action: sorteo | result: success") == 1
    assert len(re.findall(r"action: handshake \| result: success \| peer: \S+ \| agency: \d", log)) >= 5
    assert all(health), f"{health.count(False)} of {len(health)} health checks failed during the flood"
    assert health_echo(server.health_port)
    assert server.stop() == 0
