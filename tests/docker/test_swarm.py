"""The stack end to end on a single-node swarm: `make swarm-up`, the winners through
`docker service logs`, the hardened task containers, `make swarm-status`, `make swarm-logs`,
`make swarm-down` (docs/swarm.md).

The engine is put in swarm mode by the test when it is not in one (`docker swarm init
--advertise-addr 127.0.0.1`) and left as it was found: the test leaves the swarm (and removes the
docker_gwbridge network that swarm mode created) only if it initialized it, and takes back the
node label lottery.storage only if it added it. The stack is `lotterytest`, its storage volume
`lotterytest_server-storage` (removed at the end); the credentials are issued into a temporary
directory; the images are the Docker tests' own (lottery-test/...), built from this tree.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import DEFAULT_WINNERS, ROOT

STACK = "lotterytest"
COMPOSE_FILE = ROOT / "docker-compose-test-swarm.yaml"  # git-ignored, as its stack file
STACK_FILE = ROOT / "docker-compose-test-swarm.stack.yaml"
IMAGES = {"server": "lottery-test/server:latest", "client": "lottery-test/client:latest"}
LABEL = "lottery.storage"


def run(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


def make(target: str, *variables: str, timeout: float = 900, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run("make", "--no-print-directory", target, f"STACK={STACK}", f"STACK_FILE={STACK_FILE}",
               f"COMPOSE_FILE={COMPOSE_FILE}", f"SERVER_IMAGE={IMAGES['server']}",
               f"CLIENT_IMAGE={IMAGES['client']}", *variables, timeout=timeout, check=check)


def stack_containers() -> list[str]:
    return run("docker", "ps", "-aq", "--filter", f"label=com.docker.stack.namespace={STACK}").stdout.split()


def remove_stack() -> None:
    """docker stack rm, then wait until its containers and network are gone (bounded)."""
    run("docker", "stack", "rm", STACK, check=False)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        networks = run("docker", "network", "ls", "-q", "--filter", f"label=com.docker.stack.namespace={STACK}")
        if not stack_containers() and not networks.stdout.strip():
            return
        time.sleep(0.5)
    raise AssertionError(f"stack {STACK} still has containers or networks 90 s after docker stack rm")


@pytest.fixture(scope="module")
def swarm() -> Iterator[str]:
    """A swarm manager (this engine): initialized here only if it was in none, left as found."""
    if run("docker", "info", check=False, timeout=30).returncode != 0:
        pytest.fail("Docker is not available: start an engine (source ../shared/ci/docker-env.sh)")
    state = run("docker", "info", "-f", "{{.Swarm.LocalNodeState}}").stdout.strip()
    initialized = False
    gwbridge_before = bool(run("docker", "network", "ls", "-q", "--filter", "name=^docker_gwbridge$").stdout.strip())
    if state == "inactive":
        run("docker", "swarm", "init", "--advertise-addr", "127.0.0.1", timeout=60)
        initialized = True
    elif run("docker", "info", "-f", "{{.Swarm.ControlAvailable}}").stdout.strip() != "true":
        pytest.fail(f"this engine is in a swarm ({state}) but not a manager: the stack test needs a manager")
    node = run("docker", "info", "-f", "{{.Swarm.NodeID}}").stdout.strip()
    labelled = run("docker", "node", "inspect", "-f", f'{{{{index .Spec.Labels "{LABEL}"}}}}', node).stdout.strip()
    try:
        yield node
    finally:
        remove_stack()
        run("docker", "volume", "rm", f"{STACK}_server-storage", check=False)
        COMPOSE_FILE.unlink(missing_ok=True)
        STACK_FILE.unlink(missing_ok=True)
        if initialized:
            run("docker", "swarm", "leave", "--force", timeout=60)
            if not gwbridge_before:
                run("docker", "network", "rm", "docker_gwbridge", check=False)
        elif labelled != "true":
            run("docker", "node", "update", "--label-rm", LABEL, node, check=False)


@pytest.fixture
def secrets() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="lottery-swarm-secrets-"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def service_log(service: str) -> str:
    result = run("docker", "service", "logs", "--raw", f"{STACK}_{service}", check=False)
    return result.stdout + result.stderr


def tasks(service: str) -> list[dict]:
    """The service's tasks, newest first, as `docker inspect` shows them."""
    ids = run("docker", "service", "ps", "-q", "--no-trunc", f"{STACK}_{service}").stdout.split()
    if not ids:
        return []
    found = json.loads(run("docker", "inspect", *ids).stdout)
    return sorted(found, key=lambda task: task["CreatedAt"], reverse=True)


def wait_completed(service: str, timeout: float) -> dict:
    """The service's newest task once it has exited 0 (Complete); fails on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = tasks(service)
        if found and found[0]["Status"]["State"] == "complete":
            return found[0]
        time.sleep(1)
    states = [(t["Status"]["State"], t["Status"].get("Err", "")) for t in tasks(service)]
    raise AssertionError(f"{service}: not complete after {timeout}s: {states}\n{service_log(service)[-3000:]}")


def test_the_stack_on_a_single_node_swarm(swarm: str, secrets: Path) -> None:
    made = run(sys.executable, "compose_maker.py", "5", "--output", str(COMPOSE_FILE), "--secrets-dir", str(secrets),
               timeout=600)
    assert f"wrote {STACK_FILE}" in made.stdout, made.stdout
    run("docker", "volume", "rm", f"{STACK}_server-storage", check=False)  # a leftover of an interrupted run
    started = time.monotonic()
    up = make("swarm-up")
    assert f"docker stack deploy --resolve-image never -c {STACK_FILE} {STACK}" in up.stdout, up.stdout
    label = run("docker", "node", "inspect", "-f", f'{{{{index .Spec.Labels "{LABEL}"}}}}', swarm).stdout.strip()
    assert label == "true"

    for agency in range(1, 6):
        task = wait_completed(f"client{agency}", timeout=240)
        assert task["Status"]["ContainerStatus"]["ExitCode"] == 0
        log = service_log(f"client{agency}")
        assert f"action: consulta_ganadores | result: success | cant_ganadores: {DEFAULT_WINNERS[agency]}" in log, log
        assert log.rstrip().endswith("action: exit | result: success"), log[-2000:]
    round_seconds = time.monotonic() - started
    server_log = service_log("server")
    assert server_log.count("action: sorteo | result: success") == 1, server_log[-3000:]
    assert "agencies: 5" in server_log
    for agency in range(1, 6):  # each agency once: restarted by nobody
        assert len(tasks(f"client{agency}")) == 1
    print(f"swarm-up to the last agency's exit: {round_seconds:.1f} s")

    # The hardened task containers, as `docker inspect` shows them.
    central = run("docker", "ps", "-q", "--filter",
                  f"label=com.docker.swarm.service.name={STACK}_server").stdout.split()
    assert len(central) == 1
    for container in stack_containers():
        info = json.loads(run("docker", "inspect", container).stdout)[0]
        service = info["Config"]["Labels"]["com.docker.swarm.service.name"]
        is_central = service == f"{STACK}_server"
        host = info["HostConfig"]
        assert info["Config"]["User"] == ("10001:10001" if is_central else "10002:10002"), service
        assert host["ReadonlyRootfs"] is True, service
        assert host["CapDrop"] == ["ALL"], service
        assert host["Memory"] == (256 if is_central else 64) * 2**20, service
        assert host["PidsLimit"] == (256 if is_central else 64), service
        writable = [m["Destination"] for m in info["Mounts"] if m["RW"]]
        assert writable == (["/storage"] if is_central else []), (service, info["Mounts"])
    # Each task holds exactly its own credentials, owned by its user; the key 0400.
    listing = run("docker", "exec", central[0], "python3", "-c",
                  "import os\nfor n in sorted(os.listdir('/run/secrets')):\n"
                  " s = os.stat('/run/secrets/' + n); print(n, s.st_uid, s.st_gid, oct(s.st_mode & 0o777))").stdout
    assert listing.splitlines() == ["ca.pem 10001 10001 0o444", "server-key.pem 10001 10001 0o400",
                                    "server.pem 10001 10001 0o444"]
    root_write = run("docker", "exec", central[0], "python3", "-c", "open('/x', 'w')", check=False)
    assert root_write.returncode != 0 and "Read-only file system" in root_write.stderr
    rows = run("docker", "exec", central[0], "python3", "-c",
               "import csv; rows = list(csv.reader(open('/storage/bets.csv', encoding='utf-8')));"
               "print(len(rows), len({(r[0], r[3]) for r in rows}))").stdout.split()
    assert rows == ["80000", "80000"]  # every bet once

    status = make("swarm-status", check=False)
    assert re.search(rf"{STACK}_server\.1\s", status.stdout), status.stdout
    assert status.returncode == 0, status.stdout + status.stderr  # the central's table (lottery/status.py)
    assert status.stdout.splitlines()[-1] == "draw: done | agencies awaited: none", status.stdout
    logs = make("swarm-logs", "SWARM_LOGS_ARGS=", timeout=60)
    assert (logs.stdout + logs.stderr).count("action: sorteo | result: success") == 1

    down = make("swarm-down", timeout=120)
    assert down.returncode == 0
    assert run("docker", "service", "ls", "-q", "--filter", f"label=com.docker.stack.namespace={STACK}").stdout == ""
    assert stack_containers() == []
    # The storage stays, like make docker-compose-down's.
    assert run("docker", "volume", "inspect", f"{STACK}_server-storage", check=False).returncode == 0


def test_swarm_up_with_a_registry_and_shared_storage() -> None:
    """`make -n`: with REGISTRY the images are tagged and pushed there and the deploy resolves them
    (every node pulls); LOTTERY_STORAGE and LOTTERY_DATA_DIR reach the stack file's variables."""
    dry = run("make", "--no-print-directory", "-n", "swarm-up", "REGISTRY=registry.example:5000",
              "LOTTERY_STORAGE=/mnt/lottery/storage", "LOTTERY_DATA_DIR=/mnt/lottery/data", "VENV=.venv")
    lines = dry.stdout.splitlines()
    assert "docker tag server:latest registry.example:5000/lottery-server:latest && docker push " \
           "registry.example:5000/lottery-server:latest" in lines, dry.stdout
    assert "docker tag client:latest registry.example:5000/lottery-client:latest && docker push " \
           "registry.example:5000/lottery-client:latest" in lines, dry.stdout
    deploy = [" ".join(line.split()) for line in lines if "docker stack deploy" in line]
    assert deploy == ["SERVER_IMAGE=registry.example:5000/lottery-server:latest "
                      "CLIENT_IMAGE=registry.example:5000/lottery-client:latest "
                      "LOTTERY_STORAGE=/mnt/lottery/storage LOTTERY_DATA_DIR=/mnt/lottery/data "
                      "docker stack deploy --resolve-image always --with-registry-auth "
                      "-c docker-compose-dev.stack.yaml lottery"], dry.stdout
    local = " ".join(run("make", "--no-print-directory", "-n", "swarm-up", "VENV=.venv").stdout.split())
    assert "docker push" not in local
    assert ("SERVER_IMAGE=server:latest CLIENT_IMAGE=client:latest docker stack deploy --resolve-image never "
            "-c docker-compose-dev.stack.yaml lottery") in local, local
