"""End to end under Docker Compose: the real images, the compose file compose_maker.py writes, nc_test.sh.

Docker is required: without an engine these tests fail (they are never skipped). Base images come
from PYTHON_IMAGE / GO_IMAGE / NETCAT_IMAGE as `make docker-image` and nc_test.sh read them.
The compose project is `lottery-test` (its own network and storage volume); the container names
are the ones compose_maker.py gives (server, client1, ...), so a `make docker-compose-up` of
your own must be down while these run.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from typing import Callable, Iterator

import pytest
import yaml

from conftest import DEFAULT_WINNERS, ROOT

PROJECT = "lottery-test"
COMPOSE_FILE = ROOT / "docker-compose-test.yaml"


def run(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="session")
def images() -> None:
    if run("docker", "info", check=False, timeout=30).returncode != 0:
        pytest.fail("Docker is not available: start an engine (source ../shared/ci/docker-env.sh)")
    run("make", "docker-image", timeout=900)


class Compose:
    """One compose project made by compose_maker.py, optionally tweaked, and helpers to watch it."""

    def __init__(self, agencies: int, tweak: Callable[[dict], None] | None = None) -> None:
        run("python3", "compose_maker.py", str(agencies), "--output", str(COMPOSE_FILE))
        spec = yaml.safe_load(COMPOSE_FILE.read_text())
        if tweak:
            tweak(spec)
        COMPOSE_FILE.write_text(yaml.safe_dump(spec, sort_keys=False))
        self.agencies = agencies
        self.clients = [f"client{i}" for i in range(1, agencies + 1)]
        self.network = f"{PROJECT}_lottery_net"

    def __call__(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return run("docker", "compose", "-p", PROJECT, "-f", str(COMPOSE_FILE), *args, timeout=timeout)

    def state(self, container: str) -> tuple[bool, int]:
        out = run("docker", "inspect", "-f", "{{.State.Running}} {{.State.ExitCode}}", container).stdout.split()
        return out[0] == "true", int(out[1])

    def wait_exit(self, container: str, timeout: float = 180) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            running, code = self.state(container)
            if not running:
                return code
            time.sleep(0.5)
        raise AssertionError(f"{container} still running after {timeout}s:\n{self.logs(container)[-3000:]}")

    def logs(self, container: str) -> str:
        result = run("docker", "logs", container, check=False)
        return result.stdout + result.stderr

    def wait_log(self, container: str, pattern: str, count: int = 1, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(re.findall(pattern, self.logs(container))) >= count:
                return
            time.sleep(0.3)
        raise AssertionError(f"{container}: no {pattern!r} after {timeout}s:\n{self.logs(container)[-3000:]}")

    def raw_peer(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        image = os.environ.get("PYTHON_IMAGE", "python:3.11-slim")
        return run("docker", "run", "--rm", "--network", self.network,
                   "-v", f"{ROOT / 'server'}:/server:ro", "-v", f"{ROOT / 'tests' / 'docker'}:/peer:ro",
                   image, "python3", "/peer/raw_peer.py", "server", "12345", *args, timeout=timeout, check=False)

    def down(self) -> None:
        self("down", "-v", "--remove-orphans", "-t", "2", timeout=180)


@pytest.fixture
def compose(images) -> Iterator[Callable[..., Compose]]:
    made: list[Compose] = []

    def make(agencies: int, tweak: Callable[[dict], None] | None = None) -> Compose:
        project = Compose(agencies, tweak)
        project.down()  # a leftover of an interrupted run
        made.append(project)
        return project

    yield make
    for project in made:
        project.down()
    COMPOSE_FILE.unlink(missing_ok=True)


def slow_clients(spec: dict) -> None:
    """Small batches, one in flight: a run long enough to interrupt."""
    for name, service in spec["services"].items():
        if name.startswith("client"):
            service["environment"] += ["CLI_BATCH_MAXAMOUNT=5", "CLI_BATCH_WINDOW=1"]


def shutdown_logged(log: str) -> bool:
    return log.rstrip().endswith("action: exit | result: success")


def nc_test() -> subprocess.CompletedProcess[str]:
    return run("bash", "nc_test.sh", check=False, timeout=60)


def test_five_agencies_get_their_winners_and_everything_stops_cleanly(compose) -> None:
    project = compose(5)
    project("up", "-d", timeout=300)
    for agency, client in enumerate(project.clients, start=1):
        assert project.wait_exit(client) == 0, project.logs(client)[-3000:]
        log = project.logs(client)
        assert f"action: consulta_ganadores | result: success | cant_ganadores: {DEFAULT_WINNERS[agency]}" in log
        assert shutdown_logged(log), log[-2000:]
    server_log = project.logs("server")
    assert server_log.count("action: sorteo | result: success") == 1
    assert "action: config | result: success | port: 12345 | listen_backlog:" in server_log
    assert "agencies: 5" in server_log

    # After the draw the server keeps running and answers health checks.
    check = nc_test()
    assert check.returncode == 0 and check.stdout.strip() == "action: test_echo_server | result: success", check

    project("stop", "-t", "10")
    assert project.state("server") == (False, 0)
    server_log = project.logs("server")
    for line in ("action: shutdown | result: in_progress | signal: SIGTERM", "action: close_listener | result: success",
                 "action: close_storage | result: success"):
        assert line in server_log
    assert shutdown_logged(server_log)

    # With the server down the health check fails, promptly.
    started = time.monotonic()
    check = nc_test()
    assert check.returncode == 1 and check.stdout.strip() == "action: test_echo_server | result: fail", check
    assert time.monotonic() - started < 30

    # The storage volume outlives the container: a restarted server has the draw and its bets.
    project("start", "server")
    project.wait_log("server", r"storage_recovery \| result: success \| batches: \d+ \| fins: 5 .*draw: done", count=1)
    assert nc_test().returncode == 0
    rows = run("docker", "exec", "server", "python3", "-c",
               "print(sum(1 for _ in open('/storage/bets.csv', 'rb')))").stdout.strip()
    assert rows == "80000"


def test_docker_stop_of_one_agency_mid_run(compose) -> None:
    project = compose(2, slow_clients)
    project("up", "-d", timeout=300)
    project.wait_log("server", r"apuesta_recibida \| result: success", count=10)
    run("docker", "stop", "-t", "10", "client1")
    assert project.state("client1") == (False, 0)
    log = project.logs("client1")
    assert "action: shutdown | result: in_progress | signal: SIGTERM" in log
    assert "action: close_connection | result: success" in log and "action: close_file | result: success" in log
    assert shutdown_logged(log)
    assert project.state("client2")[0] or project.state("client2")[1] == 0  # the other agency is unharmed
    assert project.state("server")[0]


def test_docker_stop_of_the_server_mid_run(compose) -> None:
    project = compose(2, slow_clients)
    project("up", "-d", timeout=300)
    project.wait_log("server", r"apuesta_recibida \| result: success", count=10)
    started = time.monotonic()
    run("docker", "stop", "-t", "10", "server")
    assert time.monotonic() - started < 9, "the server must not need the SIGKILL after the grace period"
    assert project.state("server") == (False, 0)
    log = project.logs("server")
    for line in ("signal: SIGTERM", "action: close_listener | result: success", "action: stop_worker",
                 "action: worker_exit | result: success", "action: close_connection | result: success"):
        assert line in log, log[-3000:]
    assert shutdown_logged(log)


def test_docker_stop_of_everything_at_once(compose) -> None:
    project = compose(3, slow_clients)
    project("up", "-d", timeout=300)
    project.wait_log("server", r"apuesta_recibida \| result: success", count=10)
    started = time.monotonic()
    project("stop", "-t", "10")
    assert time.monotonic() - started < 20
    for container in ["server", *project.clients]:
        assert project.state(container) == (False, 0), project.logs(container)[-2000:]
        assert shutdown_logged(project.logs(container)), container


def test_hand_made_agency_and_bad_input_beside_real_agencies(compose) -> None:
    """Agency 3 is played by raw_peer.py: HELLO, a batch sent one byte at a time, the largest batch, a
    reconnection whose RESUME states what is stored, a resend of the last batch; the attacks
    before it (agency 3's batches and FIN among them) store nothing."""

    def three_agencies_two_real(spec: dict) -> None:
        spec["services"]["server"]["environment"] = ["AGENCIES=3"]

    project = compose(2, three_agencies_two_real)
    project("up", "-d", timeout=300)
    attack = project.raw_peer("attacks")
    assert attack.returncode == 0, attack.stdout + attack.stderr
    assert attack.stdout.count("ok ") >= 18, attack.stdout
    assert "ok BETS_MISMATCH names both checksums" in attack.stdout
    manual = project.raw_peer("agency", "3")
    assert manual.returncode == 0, manual.stdout + manual.stderr
    for line in ("ok HELLO answered: nothing stored yet", "ok one byte at a time: batch 1 acknowledged",
                 "ok a resend of the last batch acknowledged", "ok HELLO after FIN: finished"):
        assert line in manual.stdout, manual.stdout
    assert re.search(r"^ok HELLO after reconnecting: \d+ bets stored, chain [0-9a-f]{8}$", manual.stdout, re.M)
    largest = re.search(r"ok largest batch is 8192 bytes, (\d+) bets", manual.stdout)
    assert largest, manual.stdout
    # Agency 3's winners: the first bet of each of its two batches has 7574, and only those.
    assert re.search(r"^winners: 2 39000001,40000000$", manual.stdout, re.M), manual.stdout
    for agency, client in enumerate(project.clients, start=1):
        assert project.wait_exit(client) == 0, project.logs(client)[-3000:]
        assert f"cant_ganadores: {DEFAULT_WINNERS[agency]}" in project.logs(client)
    server_log = project.logs("server")
    for code in ("FRAME_TOO_LARGE", "UNSUPPORTED_VERSION", "UNKNOWN_TYPE", "INVALID_BET", "UNKNOWN_AGENCY",
                 "BETS_MISMATCH", "SEQUENCE_GAP"):
        assert re.search(rf"result: fail \|.*code: {code}", server_log), code
    assert "truncated frame" in server_log
    assert "action: apuesta_recibida | result: fail | cantidad: 1" in server_log
    rows = run("docker", "exec", "server", "python3", "-c",
               "print(sum(1 for _ in open('/storage/bets.csv', 'rb')))").stdout.strip()
    assert int(rows) == 2 * 16_000 + 2 + int(largest.group(1))  # the attacks stored nothing
    assert re.search(r"action: fin \| result: success \| agency: 3 \| bets: \d+", server_log)


def test_a_failed_fsync_stops_the_server_and_compose_restarts_it(compose) -> None:
    """Fail-stop under Compose: an fdatasync error injected (strace, from the host) into a worker
    makes the central exit 3; the restart policy starts it again, recovery runs, and the agencies,
    which kept retrying, finish with exact winners and every bet stored once."""
    project = compose(2, slow_clients)
    project("up", "-d", timeout=300)
    project.wait_log("server", r"apuesta_recibida \| result: success", count=20)
    supervisor = int(run("docker", "inspect", "-f", "{{.State.Pid}}", "server").stdout)
    worker = int(open(f"/proc/{supervisor}/task/{supervisor}/children").read().split()[0])
    tracer = subprocess.Popen(["strace", "-qq", "-p", str(worker), "-e", "trace=fdatasync",
                               "-e", "inject=fdatasync:error=EIO:when=1", "-o", "/dev/null"])
    try:
        project.wait_log("server", r"action: storage_sync \| result: fail", timeout=60)
    finally:
        tracer.kill()
        tracer.wait(timeout=10)
    project.wait_log("server", r"action: exit \| result: fail", timeout=30)
    project.wait_log("server", r"action: storage_recovery \| result: success", count=2, timeout=60)
    for agency, client in enumerate(project.clients, start=1):
        assert project.wait_exit(client) == 0, project.logs(client)[-3000:]
        assert f"cant_ganadores: {DEFAULT_WINNERS[agency]}" in project.logs(client)
    restarts = run("docker", "inspect", "-f", "{{.RestartCount}}", "server").stdout.strip()
    assert restarts == "1"
    documents = run("docker", "exec", "server", "python3", "-c",
                    "import csv; rows = list(csv.reader(open('/storage/bets.csv', encoding='utf-8')));"
                    "print(len(rows), len({r[3] for r in rows}))").stdout.split()
    assert documents == ["32000", "32000"]


def test_agencies_killed_mid_run_and_restarted_store_every_bet_once(compose) -> None:
    """docker kill (SIGKILL) of two agencies mid-run: client1 is started again as it was,
    client2 is recreated with another batch size. Each resumes after what the server stores."""
    project = compose(2, slow_clients)
    project("up", "-d", timeout=300)
    project.wait_log("server", r"apuesta_recibida \| result: success \| cantidad: \d+ \| agency: 1 ", count=30)
    project.wait_log("server", r"apuesta_recibida \| result: success \| cantidad: \d+ \| agency: 2 ", count=30)
    run("docker", "kill", "client1", "client2")
    run("docker", "start", "client1")  # the same container: the same batch size

    spec = yaml.safe_load(COMPOSE_FILE.read_text())
    env = spec["services"]["client2"]["environment"]
    spec["services"]["client2"]["environment"] = [e for e in env if not e.startswith("CLI_BATCH_MAXAMOUNT=")] + [
        "CLI_BATCH_MAXAMOUNT=37"]
    COMPOSE_FILE.write_text(yaml.safe_dump(spec, sort_keys=False))
    project("up", "-d", "--no-deps", "client2", timeout=120)  # recreated with another batch size
    for agency, client in enumerate(project.clients, start=1):
        assert project.wait_exit(client) == 0, project.logs(client)[-3000:]
        log = project.logs(client)
        assert re.search(r"action: verificar_apuestas \| result: success \| stored: [1-9]", log), log[-2000:]
        assert f"cant_ganadores: {DEFAULT_WINNERS[agency]}" in log
    counts = run("docker", "exec", "server", "python3", "-c",
                 "import csv, collections; rows = list(csv.reader(open('/storage/bets.csv', encoding='utf-8')));"
                 "print(len(rows), len({(r[0], r[3]) for r in rows}))").stdout.split()
    assert counts == ["32000", "32000"]
