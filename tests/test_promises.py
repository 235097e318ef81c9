"""Four promises the central keeps under faults that once broke them, each on the real server
process (with strace, SIGSTOP and a small tmpfs as the fault injectors), plus the order of two
syncs and of the draw's last steps, which nothing else pins.

1. Nothing waits on a frozen process: a worker stopped while it holds the append lock is killed
   after STALL_TIMEOUT and the others go on; SIGTERM ends the central within SHUTDOWN_TIMEOUT
   plus a margin whatever the stopped worker does.
2. A full disk refuses writes and nothing else: handshakes, RESUME and winners queries work, no
   worker dies, batches are refused with INTERNAL_ERROR naming the cause, and everything is
   stored once after room is made.
3. A restart resumes whatever an earlier connection leaves behind: a batch of a connection that
   ended is never stored after it, so a new session's RESUME stays true.
4. The draw is announced once per round, even when the central is killed between the draw and
   the announcement.
"""

from __future__ import annotations

import collections
import errno
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import DATA, DEFAULT_WINNERS, SERVER_DIR, Peer, health_echo, kill_and_wait, wait_until, worker_pids
from lottery import protocol, recovery
from lottery.locks import flock_holder
from lottery.protocol import ErrorCode
from test_durability import strace
from wire import bet_lines

WORKER_START = re.compile(r"action: worker_start \| result: success \| worker: (\d+) \| pid: (\d+)")


def healthcheck(port: int) -> subprocess.CompletedProcess[str]:
    """The container's health check (server/healthcheck.py) against the health port."""
    return subprocess.run([sys.executable, str(SERVER_DIR / "healthcheck.py"), str(port), "127.0.0.1"],
                          capture_output=True, text=True, timeout=10)


def file_rows(agency: int) -> list[tuple[str, str, str, str, str]]:
    """The default data set's rows of `agency` (plain CSV, no quoting)."""
    lines = (DATA / f"agency-{agency}.csv").read_text(encoding="utf-8").splitlines()
    return [tuple(line.split(",")) for line in lines]  # type: ignore[misc]


def stored(storage: Path) -> collections.Counter[tuple[str, ...]]:
    import csv

    with open(storage / "bets.csv", encoding="utf-8", newline="") as bets:
        return collections.Counter(tuple(row) for row in csv.reader(bets))


def assert_stored_once(storage: Path, agencies: list[int]) -> None:
    expected = collections.Counter((str(a), *r) for a in agencies for r in file_rows(a))
    held = stored(storage)
    assert held == expected, f"lost {sum((expected - held).values())}, extra {sum((held - expected).values())}"


def process_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "gone"


def lock_holder(storage: Path) -> int | None:
    return flock_holder(os.stat(storage / "storage.lock"))


def worker_pid(server, index: int) -> int:
    return next(int(pid) for number, pid in WORKER_START.findall(server.log()) if int(number) == index)


def serving_worker(server, peer: Peer) -> int:
    """The pid of the worker that authenticated `peer`'s connection, from the log."""
    client_port = peer.sock.getsockname()[1]
    pattern = rf"handshake \| result: success \| peer: 127\.0\.0\.1:{client_port} \| agency: \d+ \| worker: (\d+)"
    found = wait_until(lambda: re.search(pattern, server.log()), 10, "the handshake's log line")
    return worker_pid(server, int(found.group(1)))


def stop_worker_holding_the_lock(server, tmp_path: Path) -> int:
    """Stop the worker serving agency 1's connection with SIGSTOP right after it takes the append
    lock (strace delivers the signal as its flock returns) to answer a HELLO; returns its pid.
    Tried again if the stop did not stick (strace may detach before the stop is delivered)."""
    peer = Peer(server.port, timeout=5, agency=1)
    peer.send(protocol.Hello(1))
    assert peer.recv() == protocol.Resume(1, 0, 0, False)
    pid = serving_worker(server, peer)
    for attempt in range(3):
        trace = tmp_path / f"flock{attempt}.trace"
        with strace(pid, trace, "-e", "trace=flock", "-e", "inject=flock:signal=SIGSTOP:when=1"):
            peer.send(protocol.Hello(1))
            wait_until(lambda trace=trace: "stopped by SIGSTOP" in trace.read_text(), 10, "the worker to stop")
        # strace has detached: the worker stays stopped, holding the lock
        time.sleep(0.2)
        if process_state(pid) == "T" and lock_holder(server.storage) == pid:
            peer.close()
            return pid
        os.kill(pid, signal.SIGCONT)
        assert peer.recv() == protocol.Resume(1, 0, 0, False)  # it goes on: try again
    raise AssertionError(f"worker {pid} did not stay stopped holding the append lock")


def test_a_worker_stopped_holding_the_append_lock_is_killed_and_the_others_go_on(start_server, launch,
                                                                                  tmp_path) -> None:
    server = start_server(agencies=3, STALL_TIMEOUT=2, SHUTDOWN_TIMEOUT=2)
    stopped = stop_worker_holding_the_lock(server, tmp_path)
    frozen_at = time.monotonic()
    agencies = [launch(a, server.port, DATA / f"agency-{a}.csv", CLI_RETRY_ATTEMPTS=100,
                       CLI_RETRY_MAXBACKOFF="500ms", CLI_IO_TIMEOUT="3s") for a in (1, 2, 3)]
    server.wait_log(rf"action: worker_stall \| result: fail \| worker: \d+ \| pid: {stopped} \| held_seconds: ", 10)
    assert time.monotonic() - frozen_at < 2 + 3  # STALL_TIMEOUT, the supervisor's tick, a loaded machine
    wait_until(lambda: process_state(stopped) == "gone", 5, "the stopped worker to be killed")
    for agency in agencies:
        assert agency.wait(timeout=120) == 0, agency.log()[-2000:]
        assert agency.winners() == DEFAULT_WINNERS[agency.agency]
    assert_stored_once(server.storage, [1, 2, 3])
    assert server.log().count("action: sorteo | result: success") == 1
    assert health_echo(server.health_port)
    assert server.stop(timeout=10) == 0


def test_sigterm_ends_a_central_whose_worker_is_stopped_holding_the_append_lock(start_server, tmp_path) -> None:
    server = start_server(agencies=3, STALL_TIMEOUT=600, SHUTDOWN_TIMEOUT=2)
    stop_worker_holding_the_lock(server, tmp_path)
    time.sleep(2.2)  # past HEALTH_STALL: the health port says the central cannot store
    health = Peer(server.health_port, timeout=5, agency=None)
    health.send(protocol.Echo(b"ok?"))
    answer = health.recv()
    assert isinstance(answer, protocol.Error) and answer.code is ErrorCode.INTERNAL_ERROR, answer
    assert re.fullmatch(r"cannot store: a store has been stuck for \d+\.\d s \(worker \d waits for or holds the"
                        r" append lock\)", answer.reason), answer.reason
    health.close()
    waiting = [Peer(server.port, timeout=5, agency=a) for a in (1, 2, 1, 2)]
    for number, peer in enumerate(waiting):  # the other worker waits for the lock too
        peer.send(protocol.Hello(number % 2 + 1))
    time.sleep(0.5)
    started = time.monotonic()
    code = server.stop(signal.SIGTERM, timeout=15)
    took = time.monotonic() - started
    assert code == 0 and took < 2 + 2.5, f"exit {code} after {took:.1f}s:\n{server.log()[-3000:]}"
    log = server.log()
    assert "action: shutdown | result: in_progress | signal: SIGTERM" in log
    assert re.search(r"action: stop_worker \| result: in_progress \| worker: \d+ \| signal: SIGKILL", log)
    assert log.rstrip().endswith("action: exit | result: success")
    for peer in waiting:
        peer.close()


# --- a full disk ---------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 8 MiB tmpfs (root needed: CI runs as root), unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(path: Path) -> None:
    """Write `path` until the file system says ENOSPC."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (1 << 20, 4096, 1):
            chunk = b"\0" * size
            while True:
                try:
                    os.write(fd, chunk)
                except OSError as err:
                    if err.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(fd)


def test_a_full_disk_refuses_writes_and_nothing_else(start_server, launch, small_disk, peers) -> None:
    storage = small_disk / "storage"
    server = start_server(agencies=3, storage=storage)
    workers = sorted(worker_pids(server.proc.pid))
    filler = small_disk / "filler"
    fill(filler)  # before the first handshake
    peer = peers(server.port, agency=1)
    peer.send(protocol.Hello(1))  # a handshake and a RESUME need no room
    assert peer.recv() == protocol.Resume(1, 0, 0, False)
    peer.send(protocol.Bet(1, 1, 3, 0, bet_lines(file_rows(1)[:3])))
    refused = peer.recv()
    assert isinstance(refused, protocol.Error) and refused.code is ErrorCode.INTERNAL_ERROR and refused.position == 1
    assert "No space left on device" in refused.reason, refused
    assert peer.closed_by_server()
    health = Peer(server.health_port, agency=None)
    health.send(protocol.Echo(b"ok?"))
    answer = health.recv()
    assert isinstance(answer, protocol.Error) and "full disk" in answer.reason  # unhealthy meanwhile
    health.close()
    check = healthcheck(server.health_port)  # what Docker's health check says
    assert check.returncode == 1
    assert re.fullmatch(r"healthcheck: fail: the central answered ERROR: cannot store: the storage has \d+ bytes"
                        r" free \(a full disk\)\n", check.stderr), check.stderr
    agencies = [launch(a, server.port, DATA / f"agency-{a}.csv", CLI_RETRY_ATTEMPTS=200,
                       CLI_RETRY_INITIALBACKOFF="50ms", CLI_RETRY_MAXBACKOFF="300ms") for a in (1, 2, 3)]
    server.wait_log(r"action: storage_write \| result: fail .*No space left on device", count=4)
    time.sleep(1)
    filler.unlink()  # room again: the agencies' retries store everything
    for agency in agencies:
        assert agency.wait(timeout=120) == 0, agency.log()[-2000:]
        assert agency.winners() == DEFAULT_WINNERS[agency.agency]
    assert_stored_once(storage, [1, 2, 3])
    fill(filler)  # full again after the draw: winners queries and RESUME still answered
    again = peers(server.port, agency=2)
    again.send(protocol.Hello(2))
    resume = again.recv()
    assert isinstance(resume, protocol.Resume) and resume.stored == 16000 and resume.finished
    again.send(protocol.WinnersQuery(2))
    assert again.recv() == protocol.Winners(2, True, ())
    assert sorted(worker_pids(server.proc.pid)) == workers  # no worker died
    assert "worker_exit" not in server.log() and "Traceback" not in server.log()
    filler.unlink()
    assert server.stop() == 0


# --- a stale batch at a stopped worker -----------------------------------------------------------


def test_a_batch_left_at_a_stopped_worker_is_not_stored_after_its_connection_ended(start_server, launch,
                                                                                    tmp_path) -> None:
    """The old connection's batch waits in the socket of a stopped worker while the agency starts
    again on the other worker; when the stopped worker wakes up, the batch is not stored (its
    connection ended), so the new session's first batch, cut at another size, is acknowledged
    and the restarted agency resumes exactly after it."""
    server = start_server(agencies=1, STALL_TIMEOUT=600)
    rows = file_rows(1)
    old = Peer(server.port, agency=1)
    old.send(protocol.Hello(1))
    assert old.recv() == protocol.Resume(1, 0, 0, False)
    client_port = old.sock.getsockname()[1]
    served_by = re.search(rf"handshake \| result: success \| peer: 127\.0\.0\.1:{client_port} \| agency: 1 \| "
                          r"worker: (\d+)", server.log())
    assert served_by, server.log()
    frozen = worker_pid(server, int(served_by.group(1)))
    os.kill(frozen, signal.SIGSTOP)
    try:
        old.send(protocol.Bet(1, 1, 3, 0, bet_lines(rows[:3])))  # buffered at the stopped worker
        old.close()  # the agency was killed
        new = Peer(server.port, agency=1)  # its next run, served by the other worker
        new.send(protocol.Hello(1))
        assert new.recv() == protocol.Resume(1, 0, 0, False)
    finally:
        os.kill(frozen, signal.SIGCONT)
    server.wait_log(r"action: (batch_abandoned|apuesta_recibida) \| result: \w+ \| cantidad: 3 \| agency: 1 \| seq: 1")
    first = protocol.Bet(1, 1, 10, 0, bet_lines(rows[:10]))
    new.send(first)
    assert new.recv() == protocol.Ack(1, 10)  # not BETS_MISMATCH: the old batch was not stored
    new.close()
    agency = launch(1, server.port, DATA / "agency-1.csv", CLI_BATCH_MAXAMOUNT=7)  # started again
    assert agency.wait(timeout=60) == 0, agency.log()[-2000:]
    assert "action: verificar_apuestas | result: success | stored: 10" in agency.log()
    assert agency.winners() == DEFAULT_WINNERS[1]
    assert_stored_once(server.storage, [1])


# --- the announcement ----------------------------------------------------------------------------


def test_a_draw_made_but_not_announced_is_announced_once_after_a_restart(start_server, peers, tmp_path) -> None:
    server = start_server(agencies=1, WORKERS=1)
    storage = server.storage
    rows = file_rows(1)[:50]
    peer = peers(server.port, agency=1)
    batch = protocol.Bet(1, 1, len(rows), 0, bet_lines(rows))
    peer.send(batch)
    assert peer.recv() == protocol.Ack(1, len(rows))
    # The supervisor's first fsync (not fdatasync) is the directory's, right after it renamed
    # winners.csv into place: it is killed there, before it logs the draw.
    with strace(server.proc.pid, tmp_path / "draw.trace", "-e", "trace=fsync", "-e",
                "inject=fsync:signal=SIGKILL:when=1"):
        peer.send(protocol.Fin(1, len(rows), batch.chain_after))
        assert peer.recv() == protocol.FinAck(1)
        wait_until(lambda: server.proc.poll() is not None, 10, "the supervisor to be killed")
    kill_and_wait(worker_pids(server.proc.pid), 10)
    winners = (storage / "winners.csv").read_bytes()
    assert "action: sorteo" not in server.log() and not (storage / "announced").exists()
    peer.close()
    for restart in range(2):
        again = start_server(agencies=1, storage=storage, WORKERS=1)
        again.wait_log(r"action: storage_recovery \| result: success .* draw: done")
        asks = peers(again.port, agency=1)
        asks.send(protocol.WinnersQuery(1))
        answer = asks.recv()
        assert isinstance(answer, protocol.Winners) and len(answer.documents) == winners.count(b"\n")
        assert (storage / "winners.csv").read_bytes() == winners  # no second draw
        assert again.log().count("action: sorteo | result: success") == (1 if restart == 0 else 0)
        assert again.stop() == 0


def test_the_workers_hear_of_the_draw_before_its_marker_and_report(start_server, peers, tmp_path) -> None:
    """The agencies' winners wait for the draw to be durable and nothing more: once winners.csv
    is in place, the supervisor tells the workers before it writes the announcement's marker (a
    file and a directory sync) and logs the report."""
    server = start_server(agencies=1, WORKERS=1)
    rows = file_rows(1)[:5]
    peer = peers(server.port, agency=1)
    batch = protocol.Bet(1, 1, len(rows), 0, bet_lines(rows))
    peer.send(batch)
    assert peer.recv() == protocol.Ack(1, len(rows))
    trace = tmp_path / "draw.trace"
    with strace(server.proc.pid, trace, "-y", "-e", "trace=sendto,openat,rename"):
        peer.send(protocol.Fin(1, len(rows), batch.chain_after))
        assert peer.recv() == protocol.FinAck(1)
        server.wait_log(r"action: reporte \| result: success \| agencias: 1")
    calls = trace.read_text().splitlines()
    placed = first(calls, r"rename\(.*winners\.csv")
    told = placed + first(calls[placed:], r'sendto\(.*"!"')
    assert told < first(calls, r"openat\(.*/announced") < len(calls), calls


# --- the order of two syncs ----------------------------------------------------------------------

SYNC_ORDER_SCRIPT = r"""
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from lottery import config, recovery, protocol
from lottery.barrier import Barrier
from lottery.storage import Storage
directory = Path(sys.argv[2])
recovery.recover(directory, 1)
storage = Storage(directory)
lines = b"Ana,Lopez,1,1990-01-01,7574\n"
storage.store_batches([protocol.Bet(1, 1, 1, 0, lines)])
if sys.argv[3] == "compact":
    sys.stdout.buffer.write(b"compact\n"); sys.stdout.flush()
    assert storage.try_compact() is not None
else:
    storage.record_fin(1, 1, protocol.chain(lines))
    settings = config.load(Path(sys.argv[1]) / "config.ini", {"STORAGE_DIR": str(directory), "AGENCIES": "1"})
    sys.stdout.buffer.write(b"draw\n"); sys.stdout.flush()
    assert Barrier(settings, storage).check(force=True)
"""


def traced_calls(tmp_path: Path, what: str) -> list[str]:
    """The syscalls that touch the storage files, in order, from the point `what` starts."""
    directory = tmp_path / what
    trace = tmp_path / f"{what}.trace"
    subprocess.run(["strace", "-f", "-y", "-qq", "-o", str(trace), "-e", "trace=write,fdatasync,fsync,openat,rename",
                    sys.executable, "-c", SYNC_ORDER_SCRIPT, str(SERVER_DIR), str(directory), what],
                   check=True, timeout=60, capture_output=True)
    lines = trace.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if re.search(rf'write\(1<[^>]*>, "{what}\\n"', line))
    return [line for line in lines[start + 1 :] if str(directory) in line]


def first(calls: list[str], pattern: str) -> int:
    return next((i for i, call in enumerate(calls) if re.search(pattern, call)), len(calls))


def test_the_draw_syncs_the_bets_and_the_journal_before_it_writes_the_winners(tmp_path) -> None:
    calls = traced_calls(tmp_path, "draw")
    winners = first(calls, r"openat\(.*winners\.csv\.tmp")
    assert winners < len(calls), calls
    assert first(calls, r"fdatasync\(\d+<[^>]*/bets\.csv>") < winners, calls
    assert first(calls, r"fdatasync\(\d+<[^>]*/journal\.log>") < winners, calls


def test_a_checkpoint_syncs_the_bets_before_it_writes_the_new_journal(tmp_path) -> None:
    calls = traced_calls(tmp_path, "compact")
    checkpoint = first(calls, r"openat\(.*journal\.log\.tmp")
    assert checkpoint < len(calls), calls
    assert first(calls, r"fdatasync\(\d+<[^>]*/bets\.csv>") < checkpoint, calls


assert recovery  # the storage the scripts above recover
