"""Durability under injected faults, on the real server process, with strace as the fault injector.

What these tests pin (storage.py, worker.py, supervisor.py):

- Nothing is answered before it is durable: a resent batch's ACK and a DUPLICATE_FIN leave the
  worker only after an fdatasync of bets.csv and of journal.log.
- The draw barrier is a condition on the journal: a worker killed after appending the last FIN
  but before syncing it (and before nudging the supervisor) still leads to exactly one draw.
- fsync failure is fail-stop: a worker whose fdatasync fails answers nothing more, the central
  exits with code 3, and the next start on the same storage finishes the round from the disk.

Faults are injected into one worker (WORKERS=1) with ``strace -f -p``: an EIO on its first
fdatasync, or a SIGKILL at it (``-f``: every thread of the worker, its sync thread included,
which makes every fdatasync of a worker; strace counts the calls per thread). Every test ends by
checking that each acknowledged bet is stored exactly once and that the winners (number 7574)
are exact.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from conftest import DATA, DEFAULT_WINNERS, AgencyBets, Peer, bet, csv_rows, health_echo, row, wait_until, worker_pids
from lottery import protocol
from lottery.health import HEALTH_STALL
from lottery.protocol import ErrorCode

STRACE = shutil.which("strace") or "strace"  # required: `make test` checks it is installed
EXIT_SYNC_FAILED = 3


# --- strace ------------------------------------------------------------------------------------


def tracer_of(pid: int) -> int:
    """The pid tracing `pid` (0 if none, or if `pid` is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    found = re.search(r"^TracerPid:\s+(\d+)", status, re.MULTILINE)
    return int(found.group(1)) if found else 0


@contextmanager
def strace(pid: int, out: Path, *options: str) -> Iterator[subprocess.Popen[bytes]]:
    """Attach strace to `pid` (writing its trace to `out`), yield once it traces, always detach.
    With "-f" among `options`, to every thread of it (a worker syncs in a thread of its own)."""
    tracer = subprocess.Popen([STRACE, "-qq", "-p", str(pid), "-o", str(out), *options],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: tracer_of(pid) == tracer.pid or tracer.poll() is not None, 5, "strace to attach")
        if tracer.poll() is not None:  # a busy tracee may already have hit the fault and died
            problem = tracer.stderr.read().decode(errors="replace")
            assert tracer.returncode == 0 and not problem, f"strace failed: {problem}"
        else:
            time.sleep(0.3)  # let strace finish setting up syscall stops before the test acts
        yield tracer
    finally:
        detach(tracer)


def detach(tracer: subprocess.Popen[bytes]) -> None:
    """Stop strace (it detaches on SIGTERM and flushes its output); a no-op once it has exited."""
    if tracer.poll() is None:
        tracer.send_signal(signal.SIGTERM)
        try:
            tracer.wait(timeout=10)
        except subprocess.TimeoutExpired:
            tracer.kill()
            tracer.wait(timeout=10)
    if tracer.stderr is not None:
        tracer.stderr.close()


def fail_first_fdatasync(pid: int, out: Path):
    return strace(pid, out, "-f", "-e", "trace=fdatasync", "-e", "inject=fdatasync:error=EIO:when=1")


def kill_at_first_fdatasync(pid: int, out: Path):
    return strace(pid, out, "-f", "-e", "trace=fdatasync", "-e", "inject=fdatasync:signal=SIGKILL:when=1")


@dataclass(frozen=True)
class Syscall:
    name: str
    fd: int
    data: bytes  # the buffer, for recvfrom/sendto/read/write
    result: int | None  # None when the call did not return (killed)


SYSCALL_LINE = re.compile(
    r'^(?P<name>recvfrom|sendto|read|write|fdatasync)\((?P<fd>\d+)(?:, "(?P<data>(?:\\x[0-9a-f]{2})*)")?.*'
    r"=\s+(?P<result>-?\d+|\?)"
)


THREAD_PREFIX = re.compile(r"^(?:\[pid\s+)?(?P<thread>\d+)\]?\s+")  # -f: each line starts with its thread's id
UNFINISHED = re.compile(r"^(?P<call>\w+\(.*) <unfinished \.\.\.>$")
RESUMED = re.compile(r"^<\.\.\. (?P<name>\w+) resumed>(?P<rest>.*)$")


def read_trace(out: Path) -> list[Syscall]:
    """The calls of a trace taken with -f, -xx (every buffer byte as \\xNN) and a large -s, in
    the order they returned. A call that another thread's call interrupted in the trace (its
    "<unfinished ...>" line, then its "<... resumed>" line) is put back together at its return."""
    calls = []
    started: dict[str, str] = {}  # thread id -> the start of its unfinished call
    for traced in out.read_text().splitlines():
        prefix = THREAD_PREFIX.match(traced)
        thread, line = (prefix.group("thread"), traced[prefix.end() :]) if prefix else ("", traced)
        unfinished = UNFINISHED.match(line)
        if unfinished:
            started[thread] = unfinished.group("call")
            continue
        resumed = RESUMED.match(line)
        if resumed:
            line = started.pop(thread, resumed.group("name") + "(") + resumed.group("rest")
        found = SYSCALL_LINE.match(line)
        if found:
            data = bytes.fromhex((found.group("data") or "").replace("\\x", ""))
            result = None if found.group("result") == "?" else int(found.group("result"))
            calls.append(Syscall(found.group("name"), int(found.group("fd")), data, result))
    return calls


# A TLS 1.3 record around n bytes of application data: a 5-byte header, the data, its 1-byte
# content type and a 16-byte AEAD tag (the agencies' connections are mutual TLS 1.3).
TLS_RECORD_OVERHEAD = 5 + 1 + 16
RECEIVES, SENDS = ("recvfrom", "read"), ("sendto", "write")  # OpenSSL reads and writes a socket with read/write


def server_fd(worker: int, port: int, peer: Peer) -> int:
    """The worker's descriptor of `peer`'s connection: the socket whose local port is the
    server's `port` and whose remote port is the peer's, found in /proc/net/tcp by inode."""
    client_port = peer.sock.getsockname()[1]
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = fields[1], fields[2]
        if int(local.split(":")[1], 16) == port and int(remote.split(":")[1], 16) == client_port:
            inode = fields[9]
    assert inode is not None, f"no server socket for the peer at port {client_port}"
    for entry in Path(f"/proc/{worker}/fd").iterdir():
        try:
            if os.readlink(entry) == f"socket:[{inode}]":
                return int(entry.name)
        except OSError:
            continue
    raise AssertionError(f"worker {worker} holds no descriptor for socket {inode}")


def assert_answered_after_syncs(calls: list[Syscall], worker: int, fd: int, answers: list[protocol.Message]) -> None:
    """The requests on connection `fd` were sent one at a time, each after the previous answer
    arrived. For each, in order: the first send on `fd` after the first receive of the request
    carries exactly its answer (the bytes are encrypted: one TLS record of the answer's size),
    and both bets.csv and journal.log were fdatasync'ed between the two."""
    position = 0
    for answer in answers:
        received = next((i for i in range(position, len(calls)) if calls[i].name in RECEIVES
                         and calls[i].fd == fd and (calls[i].result or 0) > 0), None)
        assert received is not None, f"no request arrived on fd {fd} for {answer}: {calls[position:]}"
        sent = next((i for i in range(received + 1, len(calls))
                     if calls[i].name in SENDS and calls[i].fd == fd), None)
        assert sent is not None, f"no answer was sent on fd {fd}: {calls[received:]}"
        size = len(protocol.encode(answer)) + TLS_RECORD_OVERHEAD
        assert calls[sent].result == size, f"sendto of {calls[sent].result} bytes, want one record of {answer}"
        synced = {os.path.basename(os.readlink(f"/proc/{worker}/fd/{c.fd}"))
                  for c in calls[received + 1 : sent] if c.name == "fdatasync" and c.result == 0}
        assert {"bets.csv", "journal.log"} <= synced, f"answered before a sync: {calls[received : sent + 1]}"
        position = sent + 1


# --- the protocol and the storage ----------------------------------------------------------------


def expect_error(message: protocol.Message, code: ErrorCode) -> None:
    assert isinstance(message, protocol.Error) and message.code is code, message


def expect_no_answer(peer: Peer) -> None:
    """The connection ends without one more byte: the process serving it is gone."""
    try:
        data = peer.sock.recv(64)
    except ConnectionResetError:
        return
    assert data == b"", f"an answer arrived after the fault: {data!r}"


def only_worker(server) -> int:
    pids = wait_until(lambda: worker_pids(server.proc.pid), 10, "the worker")
    assert len(pids) == 1, pids
    return pids[0]


def stored_rows(storage: Path) -> list[list[str]]:
    return csv_rows(storage)


def assert_stored_exactly(storage: Path, acknowledged: dict[int, list[tuple[str, str, str, str, str]]]) -> None:
    """bets.csv holds every acknowledged bet exactly once, each agency's in position order, and
    nothing else."""
    rows = stored_rows(storage)
    for agency, bets in acknowledged.items():
        assert [r for r in rows if r[0] == str(agency)] == [row(agency, b) for b in bets]
    assert len(rows) == sum(len(bets) for bets in acknowledged.values())


# --- tests ---------------------------------------------------------------------------------------


def test_a_trace_of_two_threads_is_read_in_the_order_the_calls_returned(tmp_path: Path) -> None:
    """The reader the tests below rely on: with -f, a call another thread interrupted is split
    over an "<unfinished ...>" and a "<... resumed>" line, and counts where it returned."""
    trace = tmp_path / "two-threads.trace"
    trace.write_text(
        "100 read(7,  <unfinished ...>\n"  # strace's own spacing
        "101 fdatasync(4)                      = 0\n"
        '100 <... read resumed>"\\x17\\x03", 65536) = 2\n'
        "101 fdatasync(5 <unfinished ...>\n"
        '100 write(7, "\\x17", 1) = 1\n'
        "101 <... fdatasync resumed>)            = 0\n"
        "101 fdatasync(4 <unfinished ...>\n"
        "101 +++ killed by SIGKILL +++\n"
    )
    assert read_trace(trace) == [
        Syscall("fdatasync", 4, b"", 0),
        Syscall("read", 7, b"\x17\x03", 2),
        Syscall("write", 7, b"\x17", 1),
        Syscall("fdatasync", 5, b"", 0),
    ]



def test_a_worker_killed_between_the_last_fin_and_its_sync_still_gets_the_draw(start_server, peers,
                                                                               tmp_path) -> None:
    server = start_server(agencies=2, WORKERS=1)
    bets = {1: [bet("101", "7574"), bet("102", "5")], 2: [bet("201", "7574"), bet("202", "7575", last="Paz, Ruiz")]}
    senders = {1: AgencyBets(1), 2: AgencyBets(2)}
    one = peers(server.port, agency=1)
    one.send(senders[1].batch(bets[1]))
    assert one.recv() == protocol.Ack(1, 2)
    one.send(senders[1].fin())
    assert one.recv() == protocol.FinAck(1)
    one.send(protocol.WinnersQuery(1))
    server.wait_log(r"consulta_ganadores \| result: in_progress \| agency: 1")
    two = peers(server.port, agency=2)
    two.send(senders[2].batch(bets[2]))
    assert two.recv() == protocol.Ack(2, 2)

    # The last FIN is appended to the journal, then the worker dies at its first fdatasync:
    # no sync, no nudge to the supervisor, no answer.
    with kill_at_first_fdatasync(only_worker(server), tmp_path / "kill.trace"):
        two.send(senders[2].fin())
        expect_no_answer(two)
    server.wait_log(r"worker_exit \| result: fail .*killed by SIGKILL")
    expect_no_answer(one)  # the held query died with the worker

    # Nobody sends anything more: the supervisor finds the FIN in the journal on its own.
    server.wait_log(r"action: sorteo \| result: success", timeout=5)

    one, two = peers(server.port, agency=1), peers(server.port, agency=2)
    two.send(protocol.Hello(2))
    assert two.recv() == senders[2].resume(finished=True)  # the FIN is in the journal
    two.send(senders[2].fin())
    expect_error(two.recv(), ErrorCode.DUPLICATE_FIN)
    two.send(protocol.WinnersQuery(2))
    assert two.recv() == protocol.Winners(2, True, ("201",))
    one.send(protocol.WinnersQuery(1))
    assert one.recv() == protocol.Winners(1, True, ("101",))
    assert server.log().count("action: sorteo | result: success") == 1
    assert_stored_exactly(server.storage, bets)
    assert (server.storage / "winners.csv").read_text().splitlines() == ["1,101", "2,201"]


def test_duplicate_fin_is_answered_only_after_a_sync(start_server, peers, tmp_path) -> None:
    server = start_server(agencies=2, WORKERS=1)  # agency 2 never finishes here: no draw yet
    bets = [bet("301", "7574"), bet("302", "12")]
    agency = AgencyBets(1)
    peer = peers(server.port)
    peer.send(agency.batch(bets))
    assert peer.recv() == protocol.Ack(1, 2)
    peer.send(agency.fin())
    assert peer.recv() == protocol.FinAck(1)

    worker = only_worker(server)
    fd = server_fd(worker, server.port, peer)
    trace = tmp_path / "answers.trace"
    answers = []
    with strace(worker, trace, "-f", "-xx", "-s", "65536", "-e", "trace=fdatasync,sendto,recvfrom,read,write"):
        peer.send(agency.batches[-1])  # already stored: the duplicate ACK must state a durable fact too
        answers.append(peer.recv())
        assert answers[-1] == protocol.Ack(1, 2)
        peer.send(agency.fin())
        answers.append(peer.recv())
        expect_error(answers[-1], ErrorCode.DUPLICATE_FIN)
        peer.send(protocol.Hello(1))  # RESUME states durable facts too
        answers.append(peer.recv())
        assert answers[-1] == agency.resume(finished=True)
    assert_answered_after_syncs(read_trace(trace), worker, fd, answers)

    other = peers(server.port, agency=2)
    other.send(protocol.Fin(2, 0, 0))
    assert other.recv() == protocol.FinAck(2)
    peer.send(protocol.WinnersQuery(1))
    assert peer.recv() == protocol.Winners(1, True, ("301",))
    assert_stored_exactly(server.storage, {1: bets})


def test_an_fdatasync_error_after_a_fin_stops_the_central_and_the_restart_draws(start_server, peers,
                                                                                tmp_path) -> None:
    storage = tmp_path / "eio"
    server = start_server(agencies=2, storage=storage, WORKERS=1)
    port = server.port
    bets = {1: [bet("401", "7574"), bet("402", "1")], 2: [bet("501", "3"), bet("502", "7574", first='"Tana"')]}
    senders = {1: AgencyBets(1), 2: AgencyBets(2)}
    one = peers(port, agency=1)
    one.send(senders[1].batch(bets[1]))
    assert one.recv() == protocol.Ack(1, 2)
    one.send(senders[1].fin())
    assert one.recv() == protocol.FinAck(1)
    one.send(protocol.WinnersQuery(1))
    server.wait_log(r"consulta_ganadores \| result: in_progress \| agency: 1")
    two = peers(port, agency=2)
    two.send(senders[2].batch(bets[2]))
    assert two.recv() == protocol.Ack(2, 2)

    with fail_first_fdatasync(only_worker(server), tmp_path / "eio.trace"):
        two.send(senders[2].fin())
        # Fail-stop: no FIN_ACK and no error frame; not even the held query hears anything.
        expect_no_answer(two)
        expect_no_answer(one)
        assert server.proc.wait(timeout=10) == EXIT_SYNC_FAILED
    log = server.log()
    assert "action: storage_sync | result: fail" in log
    assert "action: exit | result: fail" in log.rstrip().splitlines()[-1], log[-2000:]
    assert "action: fin | result: success | agency: 2" not in log

    # The next start decides from the disk whether the FIN was kept; either way the round ends.
    server = start_server(agencies=2, storage=storage, port=port, WORKERS=1)
    one, two = peers(port, agency=1), peers(port, agency=2)
    two.send(protocol.Hello(2))
    told = two.recv()
    assert isinstance(told, protocol.Resume) and (told.stored, told.chain) == (2, senders[2].chain), told
    two.send(senders[2].fin())
    answer = two.recv()
    assert answer == protocol.FinAck(2) or (
        isinstance(answer, protocol.Error) and answer.code is ErrorCode.DUPLICATE_FIN), answer
    two.send(protocol.WinnersQuery(2))
    assert two.recv() == protocol.Winners(2, True, ("502",))
    one.send(protocol.WinnersQuery(1))
    assert one.recv() == protocol.Winners(1, True, ("401",))
    draws = sum(path.read_text().count("action: sorteo | result: success") for path in tmp_path.glob("server*.log"))
    assert draws == 1
    assert_stored_exactly(storage, bets)



def test_a_hung_sync_acknowledges_nothing_while_the_worker_answers_and_its_health_says_why(
    start_server, peers, tmp_path
) -> None:
    """The worker syncs in a thread of its own: a sync that hangs (strace holds the worker's
    first fdatasync for 4 s) leaves its batch unacknowledged, while the worker's loop goes on
    answering, and the health port says the central cannot store; the ACK follows the sync."""
    server = start_server(agencies=1, WORKERS=1)
    agency, peer = AgencyBets(1), peers(server.port)
    peer.send(protocol.Hello(1))
    assert peer.recv() == protocol.Resume(1, 0, 0, False)
    worker = only_worker(server)
    with strace(worker, tmp_path / "hung.trace", "-f", "-e", "trace=fdatasync",
                "-e", "inject=fdatasync:delay_enter=4000000:when=1"):
        sent = time.monotonic()
        peer.send(agency.batch([bet("701", "7574")]))
        time.sleep(HEALTH_STALL + 0.5)
        health = peers(server.health_port, agency=None)
        health.send(protocol.Echo(b"ok?"))
        answer = health.recv()  # answered at once: the loop is not blocked by the sync
        assert isinstance(answer, protocol.Error) and answer.code is ErrorCode.INTERNAL_ERROR, answer
        assert re.fullmatch(r"cannot store: a sync has been running for \d+\.\d s \(worker 1's fdatasync\)",
                            answer.reason), answer.reason
        assert peer.recv() == protocol.Ack(1, 1)
        assert time.monotonic() - sent >= 4, "acknowledged before its sync returned"
    assert health_echo(server.health_port)
    assert_stored_exactly(server.storage, {1: [bet("701", "7574")]})


# --- with real agencies ----------------------------------------------------------------------------


def data_rows(agency: int) -> list[list[str]]:
    with open(DATA / f"agency-{agency}.csv", encoding="utf-8", newline="") as data:
        return [[str(agency), *fields] for fields in csv.reader(data) if fields]


def test_an_fdatasync_error_after_a_batch_is_never_acknowledged(start_server, launch, tmp_path) -> None:
    storage = tmp_path / "eio-batches"
    server = start_server(agencies=2, storage=storage, WORKERS=1)
    port = server.port
    clients = [launch(a, port, DATA / f"agency-{a}.csv", CLI_BATCH_MAXAMOUNT=20, CLI_BATCH_WINDOW=2,
                      CLI_RETRY_INITIALBACKOFF="50ms", CLI_RETRY_MAXBACKOFF="500ms", CLI_RETRY_ATTEMPTS=60)
               for a in (1, 2)]
    server.wait_log(r"apuesta_recibida \| result: success", count=20, timeout=30)

    # The batches of the commit whose sync fails were appended but must never be acknowledged;
    # an agency that got no ACK resends them, and the restart must not store them twice.
    with fail_first_fdatasync(only_worker(server), tmp_path / "eio.trace"):
        assert server.proc.wait(timeout=10) == EXIT_SYNC_FAILED
    log = server.log()
    assert "action: storage_sync | result: fail" in log
    assert "action: exit | result: fail" in log.rstrip().splitlines()[-1], log[-2000:]
    assert all(client.proc.poll() is None for client in clients), "an agency gave up during the fault"

    server = start_server(agencies=2, storage=storage, port=port, WORKERS=1)
    for client in clients:
        assert client.proc.wait(timeout=120) == 0, client.log()[-2000:]
        assert client.winners() == DEFAULT_WINNERS[client.agency]
    rows = stored_rows(storage)
    documents = [r[3] for r in rows]
    assert len(rows) == 32_000 and len(set(documents)) == 32_000
    for agency in (1, 2):  # each agency's bets once, in its file's order
        assert [r for r in rows if r[0] == str(agency)] == data_rows(agency)
    server.wait_log(r"action: sorteo \| result: success")
    winners = (storage / "winners.csv").read_text().splitlines()
    assert len(winners) == DEFAULT_WINNERS[1] + DEFAULT_WINNERS[2]
    assert sorted(winners) == sorted(f"{r[0]},{r[3]}" for r in rows if r[5] == "7574")
    assert server.stop() == 0
