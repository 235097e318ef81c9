"""Operating the central: the barrier lines while the draw waits, the end-of-run report, and the
status table `make status` prints (server/lottery/status.py), on the real server process."""

from __future__ import annotations

import re
import subprocess
import sys
import time

from conftest import SERVER_DIR, AgencyBets, bet, health_echo
from lottery import protocol


def status(storage) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lottery.status", "--storage", str(storage)], cwd=SERVER_DIR,
                          capture_output=True, text=True, timeout=10)


def finish(peers, server, agency: int, numbers: list[str]) -> AgencyBets:
    """Agency `agency` stores one batch per number given (a bet each) and sends its FIN."""
    peer = peers(server.port, agency=agency)
    bets = AgencyBets(agency)
    for n, number in enumerate(numbers):
        peer.send(bets.batch([bet(f"{agency}{n:04d}", number)]))
        assert peer.recv() == protocol.Ack(agency, n + 1)
    peer.send(bets.fin())
    assert peer.recv() == protocol.FinAck(agency)
    return bets


def test_the_barrier_says_whom_it_waits_for_until_the_draw(start_server, peers) -> None:
    server = start_server(agencies=3, STATUS_INTERVAL=0.5)
    time.sleep(1.2)
    assert "result: in_progress | agencias_listas" not in server.log()  # not before the first FIN
    finish(peers, server, 1, ["7574"])
    server.wait_log(r"INFO action: sorteo \| result: in_progress \| agencias_listas: 1/3 \| esperando: 2,3\n", 5)
    finish(peers, server, 3, ["1", "2"])
    server.wait_log(r"action: sorteo \| result: in_progress \| agencias_listas: 2/3 \| esperando: 2\n", 5)
    finish(peers, server, 2, [])
    server.wait_log(r"action: sorteo \| result: success", 5)
    check = subprocess.run([sys.executable, str(SERVER_DIR / "healthcheck.py"), str(server.health_port), "127.0.0.1"],
                           capture_output=True, text=True, timeout=10)  # Docker's health check: healthy
    assert check.returncode == 0 and check.stdout.startswith("healthcheck: ECHO answered"), check.stderr
    lines = server.log().count("agencias_listas")
    time.sleep(1.2)
    assert server.log().count("agencias_listas") == lines  # none after the draw


def test_the_report_after_the_draw_and_at_every_start_on_a_drawn_round(start_server, peers) -> None:
    server = start_server(agencies=2, STATUS_INTERVAL=0)
    finish(peers, server, 1, ["7574", "1", "7574"])
    finish(peers, server, 2, ["5"])
    server.wait_log(r"action: reporte \| result: success \| agencias: 2", 10)
    expected = [
        "action: reporte | result: success | agencia: 1 | apuestas: 3 | batches: 3 | ganadores: 2",
        "action: reporte | result: success | agencia: 2 | apuestas: 1 | batches: 1 | ganadores: 0",
        "action: reporte | result: success | agencias: 2 | apuestas: 4 | batches: 4 | ganadores: 2",
    ]
    lines = [line.split(" INFO ", 1)[1] for line in server.log().splitlines() if "action: reporte" in line]
    assert lines == expected
    assert "agencias_listas" not in server.log()  # STATUS_INTERVAL=0: no barrier lines
    assert server.stop() == 0
    again = start_server(agencies=2, storage=server.storage)
    again.wait_log(r"action: reporte \| result: success \| agencias: 2", 10)
    assert [line.split(" INFO ", 1)[1] for line in again.log().splitlines() if "action: reporte" in line] == expected
    assert "action: sorteo | result: success" not in again.log()  # announced once, not again


def test_status_prints_the_round_during_and_after_a_run_and_fails_fast_when_the_central_is_down(
        start_server, peers) -> None:
    server = start_server(agencies=3)
    finish(peers, server, 2, ["7574", "3"])
    during = status(server.storage)
    assert during.returncode == 0, during.stderr
    rows = [line.split() for line in during.stdout.splitlines()]
    assert rows[0] == ["agency", "bets", "batches", "fin", "winners"]
    assert ["1", "0", "0", "no", "-"] in rows and ["2", "2", "2", "yes", "-"] in rows
    assert ["total", "2", "2", "1/3", "-"] in rows
    assert during.stdout.splitlines()[-1] == "draw: pending | agencies awaited: 1,3"
    assert "7574" not in during.stdout and "20000" not in during.stdout  # aggregates only: no document
    finish(peers, server, 1, [])
    finish(peers, server, 3, ["7574"])
    server.wait_log(r"action: sorteo \| result: success", 10)
    after = status(server.storage)
    rows = [line.split() for line in after.stdout.splitlines()]
    assert ["2", "2", "2", "yes", "1"] in rows and ["3", "1", "1", "yes", "1"] in rows
    assert ["total", "3", "3", "3/3", "2"] in rows
    assert after.stdout.splitlines()[-1] == "draw: done | agencies awaited: none"
    assert server.stop() == 0
    assert not health_echo(server.health_port, timeout=1)
    started = time.monotonic()
    down = status(server.storage)
    assert down.returncode == 1 and time.monotonic() - started < 5
    assert re.fullmatch(r"status: the central is not running on \S+ \(no process holds instance\.lock\)\n", down.stderr)
