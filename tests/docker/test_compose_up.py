"""Operating the system under the real Compose: `make docker-compose-up`'s last step
(tools/compose_up.py) and `make status`, on a default-like run and on a central that refuses to
start (a kept round for another number of agencies): the refusal and its remedy are printed where
the user looks, and the command fails."""

from __future__ import annotations

import re
import subprocess
import sys
import time

from test_docker import COMPOSE_FILE, PROJECT, Compose, compose, images  # noqa: F401  (fixtures)

from conftest import DEFAULT_WINNERS, ROOT


def compose_up() -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "tools/compose_up.py", "docker", "compose", "-p", PROJECT, "-f",
                           str(COMPOSE_FILE)], cwd=ROOT, capture_output=True, text=True, timeout=400)


def make_status() -> subprocess.CompletedProcess[str]:
    return subprocess.run(["make", "--no-print-directory", "status", f"COMPOSE_FILE={COMPOSE_FILE.name}",
                           f"COMPOSE_PROJECT={PROJECT}"], cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_a_run_reports_and_make_status_shows_it_then_a_kept_round_for_others_is_refused(
        compose,  # noqa: F811  (the fixture)
) -> None:
    first = compose(2)
    started = compose_up()
    assert started.returncode == 0, started.stdout + started.stderr
    sent = {}  # agency -> the batches it says it sent (the central must count the same)
    for agency, client in enumerate(first.clients, start=1):
        assert first.wait_exit(client) == 0
        logs = first.logs(client)
        progress = re.findall(r"action: progreso \| result: in_progress \| apuestas: \d+ \| porcentaje: (\d+)", logs)
        assert progress == [str(p) for p in range(10, 101, 10)], progress  # one line per tenth of the file
        batches = re.search(r"action: apuestas_enviadas \| result: success \| cantidad: 16000 \| batches: (\d+)", logs)
        assert batches, logs[-2000:]
        sent[agency] = int(batches.group(1))
    first.wait_log("server", r"action: reporte \| result: success \| agencias: 2 \| apuestas: 32000 \|"
                             rf" batches: {sent[1] + sent[2]} \| ganadores: {DEFAULT_WINNERS[1] + DEFAULT_WINNERS[2]}")
    shown = make_status()
    assert shown.returncode == 0, shown.stdout + shown.stderr
    rows = [line.split() for line in shown.stdout.splitlines()]
    assert ["1", "16000", str(sent[1]), "yes", str(DEFAULT_WINNERS[1])] in rows
    assert ["2", "16000", str(sent[2]), "yes", str(DEFAULT_WINNERS[2])] in rows
    assert shown.stdout.splitlines()[-1] == "draw: done | agencies awaited: none"
    first("stop", "-t", "10", timeout=60)  # the storage volume stays: a kept round for 2 agencies
    before = time.monotonic()
    down = make_status()
    assert down.returncode != 0 and time.monotonic() - before < 20
    assert "make status: the central is not running" in down.stdout + down.stderr
    Compose(3)  # the same project and volume, for 3 agencies
    refused = compose_up()
    assert refused.returncode != 0
    assert "make docker-compose-up: the central did not start." in refused.stderr
    refusal = "action: storage_round | result: fail | storage: /storage | round_agencies: 2 | agencies: 3"
    assert refusal in refused.stderr
    assert "Remedy: the storage volume holds" in refused.stderr and "make docker-compose-reset" in refused.stderr
