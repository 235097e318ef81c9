"""Losing a machine mid-round, on a real three-node swarm built on this host (tools/swarm_lab.py,
docs/swarm.md): a node running agencies, then the central's node with the storage on the lab's
shared directory (NFS's stand-in). Each test builds its own lab and removes it (also on failure),
and checks that the host's engine is left as found.

Marked `swarm_lab`: a quick run skips them with `-m "not swarm_lab"`; `make test` runs them. Each
wait is bounded; a scenario takes about a minute and a half. The agencies send 5 bets per batch,
one batch in flight, so that the round lasts long enough to lose a node in the middle of it.
"""

from __future__ import annotations

import collections
import csv
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import DEFAULT_WINNERS, ROOT

sys.path.insert(0, str(ROOT / "tools"))
import lab_nodes  # noqa: E402
import swarm_lab  # noqa: E402

pytestmark = pytest.mark.swarm_lab

IMAGES = ("lottery-test/server:latest", "lottery-test/client:latest")  # the Docker tests' images
SLOW_AGENCIES = ("CLI_BATCH_MAXAMOUNT=5", "CLI_BATCH_WINDOW=1")
ROUND_TIMEOUT = 240


def run(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


def host_state() -> tuple[str, ...]:
    """What the lab must leave as it found it on the host's engine and system."""
    swarm = run("docker", "info", "-f", "{{.Swarm.LocalNodeState}} {{.Swarm.NodeID}}").stdout.strip()
    networks = run("docker", "network", "ls", "-q", "--filter", "driver=overlay").stdout.strip()
    netns = run("ip", "netns", "list").stdout.strip()
    links = " ".join(sorted(line.split(":")[1].strip() for line in run("ip", "-o", "link").stdout.splitlines()))
    rules = "\n".join(re.sub(r"\[\d+:\d+\]", "", line) for line in run("iptables-save").stdout.splitlines()
                      if not line.startswith("#"))  # without the counters
    return swarm, networks, netns, links, rules


@pytest.fixture(scope="module")
def images() -> None:
    if run("docker", "info", check=False, timeout=30).returncode != 0:
        pytest.fail("Docker is not available: start an engine (source ../shared/ci/docker-env.sh)")
    run("make", "docker-image", f"SERVER_IMAGE={IMAGES[0]}", f"CLIENT_IMAGE={IMAGES[1]}", timeout=900)


@pytest.fixture
def lab(images) -> Iterator[swarm_lab.Lab]:
    swarm_lab.down()  # a leftover of an interrupted run, if any
    before = host_state()
    made = swarm_lab.Lab(3)
    try:
        yield made
    finally:
        made.down()
        assert host_state() == before
        assert not swarm_lab.LAB_DIR.exists() and not swarm_lab.RUN_DIR.exists()
        assert swarm_lab.LAB_DIR.as_posix() not in Path("/proc/self/mountinfo").read_text()
        assert not list(Path("/sys/fs/cgroup/pids").glob("lottery-lab-*"))


def stored(lab: swarm_lab.Lab) -> collections.Counter[str]:
    """Bets stored per agency, from bets.csv on the shared storage."""
    path = lab.storage / "bets.csv"
    if not path.exists():
        return collections.Counter()
    with open(path, encoding="utf-8", newline="") as bets:
        return collections.Counter(row[0] for row in csv.reader(bets))


def wait_until(predicate, timeout: float, what: str, interval: float = 0.5) -> Any:
    return swarm_lab.wait_until(predicate, timeout, what, interval)


def agency_nodes(lab: swarm_lab.Lab) -> dict[int, int]:
    """{agency: lab node} of each agency's running task."""
    where = lab.placement()
    return {int(name.removeprefix("client")): node for name, node in where.items() if name.startswith("client")}


def wait_round(lab: swarm_lab.Lab, started: float) -> float:
    """Every agency's newest task exited 0 (Complete); returns the time it took from `started`."""
    def finished() -> bool:
        return all((tasks := lab.tasks(f"client{agency}")) and tasks[0]["Status"]["State"] == "complete"
                   for agency in DEFAULT_WINNERS)

    try:
        wait_until(finished, ROUND_TIMEOUT, "every agency to exit 0", interval=1)
    except swarm_lab.LabError as err:
        states = {agency: [(t["Status"]["State"], t["Status"].get("Err", "")) for t in lab.tasks(f"client{agency}")]
                  for agency in DEFAULT_WINNERS}
        raise AssertionError(f"{err}: {states}") from None
    return time.monotonic() - started


def check_round(lab: swarm_lab.Lab, resumed: set[int]) -> str:
    """Every valid bet stored once, the draw once, exact winners, every agency's last task exit 0
    and its log with its winners; the agencies in `resumed` ran again and resumed after what the
    storage held. Returns the central's log (of its last task)."""
    with open(lab.storage / "bets.csv", encoding="utf-8", newline="") as bets:
        rows = list(csv.reader(bets))
    assert len(rows) == 80_000 and len({(row[0], row[3]) for row in rows}) == 80_000
    with open(lab.storage / "winners.csv", encoding="utf-8", newline="") as file:
        winners = collections.Counter(int(row[0]) for row in csv.reader(file))
    assert {agency: winners.get(agency, 0) for agency in DEFAULT_WINNERS} == DEFAULT_WINNERS
    for agency, expected in DEFAULT_WINNERS.items():
        tasks = lab.tasks(f"client{agency}")
        assert tasks[0]["Status"]["ContainerStatus"]["ExitCode"] == 0
        log = lab.container_log(tasks[0])
        assert f"action: consulta_ganadores | result: success | cant_ganadores: {expected}" in log, log[-2000:]
        if agency in resumed:
            assert len(tasks) >= 2, (agency, [t["Status"]["State"] for t in tasks])
            assert re.search(r"action: verificar_apuestas \| result: success \| stored: [1-9]", log), log[-2000:]
    central = lab.tasks("server")[0]
    assert central["Status"]["State"] == "running"
    log = lab.container_log(central)
    assert log.count("action: sorteo | result: success") == 1, log[-3000:]
    return log


def no_new_privileges(lab: swarm_lab.Lab, task: dict[str, Any]) -> bool:
    """Whether the task's main process has no_new_privs (the lab's engines run --no-new-privileges)."""
    node = lab.node(lab.node_names()[task["NodeID"]])
    pid = node.docker("inspect", "-f", "{{.State.Pid}}", task["Status"]["ContainerStatus"]["ContainerID"]).stdout
    status = Path(f"/proc/{pid.strip()}/status").read_text()
    return re.search(r"^NoNewPrivs:\s+1$", status, re.M) is not None


def test_a_node_running_agencies_is_lost_mid_round(lab: swarm_lab.Lab) -> None:
    """The central on node 1; node 2 or 3, with agencies sending, lost (engine, containers, shims
    killed, links cut). Swarm marks it down and starts its agencies' tasks on the other nodes;
    they resume where the storage says. Nothing lost, nothing twice, exact winners."""
    lab.up(agencies=5, storage_nodes=(1,), agency_env=SLOW_AGENCIES, images=IMAGES)
    deployed = time.monotonic()
    flowing = wait_until(lambda: (where := agency_nodes(lab)) and len(where) == 5 and where, 90,
                         "the five agencies running")
    assert lab.placement()["server"] == 1
    assert len(set(flowing.values())) >= 2, flowing  # spread over the nodes
    on_node = {node: sorted(a for a, n in flowing.items() if n == node) for node in (2, 3)}
    target = max(on_node, key=lambda node: len(on_node[node]))
    victims = set(on_node[target])
    assert victims, flowing
    # Lose it while its agencies are half way: each has stored some bets and none is done.
    wait_until(lambda: all(stored(lab)[str(a)] >= 500 for a in victims), 90, f"agencies {victims} sending")
    at_loss = stored(lab)
    assert all(at_loss[str(a)] < 16_000 for a in victims), at_loss
    assert not (lab.storage / "winners.csv").exists()
    lost_at = time.monotonic()
    lab.lose(target)

    manager = lab.manager()
    wait_until(lambda: "Down" in manager.docker("node", "ls", "--format", "{{.Status}}").stdout, 60,
               f"node {target} marked down")
    down_after = time.monotonic() - lost_at
    def started_again() -> bool:
        newest = {a: lab.tasks(f"client{a}") for a in victims}
        return all(len(tasks) >= 2 and tasks[0]["Status"]["State"] in ("running", "complete")
                   for tasks in newest.values())

    wait_until(started_again, 90, "the lost agencies started again elsewhere")
    rescheduled_after = time.monotonic() - lost_at
    round_after = wait_round(lab, lost_at)
    log = check_round(lab, victims)
    assert "action: storage_recovery" in log and log.count("action: storage_recovery") == 1  # one central
    assert no_new_privileges(lab, lab.tasks("server")[0])
    print(f"\nlab: engines {lab.timings['engines']:.1f} s, images {lab.timings['images']:.1f} s; agencies "
          f"{sorted(victims)} lost with node {target} at {dict(at_loss)} bets stored, "
          f"{lost_at - deployed:.1f} s after the deploy; node down after {down_after:.1f} s, agencies running "
          f"again after {rescheduled_after:.1f} s, round complete {round_after:.1f} s after the loss")


def test_the_central_node_is_lost_and_swarm_moves_the_central(lab: swarm_lab.Lab) -> None:
    """The storage on the shared directory, reachable from nodes 2 and 3 (lottery.storage=true):
    the central's node lost mid-round, Swarm starts the central on the other one by itself,
    recovery, the agencies (which kept retrying, or were started again) finish. One central at a
    time: a second one on the same storage is refused by the instance lock."""
    lab.up(agencies=5, storage_nodes=(2, 3), agency_env=SLOW_AGENCIES, images=IMAGES)
    deployed = time.monotonic()
    wait_until(lambda: len(agency_nodes(lab)) == 5, 90, "the five agencies running")
    central_node = wait_until(lambda: lab.placement().get("server"), 60, "the central running")
    assert central_node in (2, 3)
    first_central = lab.tasks("server")[0]
    wait_until(lambda: sum(stored(lab).values()) >= 5_000, 90, "bets stored")
    at_loss = stored(lab)
    assert sum(at_loss.values()) < 80_000 and not (lab.storage / "winners.csv").exists(), at_loss
    lost_at = time.monotonic()
    lab.lose(central_node)
    other = 5 - central_node

    def moved() -> bool:
        tasks = lab.tasks("server")
        return tasks[0]["ID"] != first_central["ID"] and tasks[0]["Status"]["State"] == "running"

    wait_until(moved, 120, "Swarm to start the central again")
    moved_after = time.monotonic() - lost_at
    assert lab.placement()["server"] == other
    round_after = wait_round(lab, lost_at)
    log = check_round(lab, set())
    assert "action: storage_recovery | result: success" in log
    assert no_new_privileges(lab, lab.tasks("server")[0])

    # One central at a time: another on the same storage (node 1, the shared directory) is refused.
    credentials = [arg for name in ("ca.pem", "server.pem", "server-key.pem")
                   for arg in ("-v", f"{lab.secrets / name}:/run/secrets/{name}:ro")]
    second = lab.node(1).docker(
        "run", "--rm", "--user", "10001:10001", "--read-only", "--cap-drop", "ALL", "-e", "AGENCIES=5",
        "-v", f"{lab.storage}:/storage", *credentials, IMAGES[0], check=False, timeout=60)
    assert second.returncode == 1, second.stdout + second.stderr
    assert "action: storage_lock | result: fail" in second.stdout + second.stderr
    with open(lab.storage / "bets.csv", encoding="utf-8", newline="") as bets:
        assert sum(1 for _ in csv.reader(bets)) == 80_000  # untouched by it
    print(f"\nlab: engines {lab.timings['engines']:.1f} s, images {lab.timings['images']:.1f} s; central's node "
          f"{central_node} lost at {sum(at_loss.values())} bets stored, {lost_at - deployed:.1f} s after the deploy; "
          f"central running on node {other} after {moved_after:.1f} s, round complete {round_after:.1f} s after "
          "the loss")


def test_lab_cleans_up_after_a_failed_start(images, monkeypatch) -> None:
    """A start that fails half way (an image the host does not have, checked first; then a
    deploy that fails after the engines and the swarm are up) leaves nothing behind."""
    swarm_lab.down()
    before = host_state()
    with pytest.raises(swarm_lab.LabError, match="is not on the host engine"):
        swarm_lab.Lab(3).up(images=("lottery-test/absent:none", IMAGES[1]))
    assert not swarm_lab.RUN_DIR.exists()

    def broken_deploy(self, images=()) -> None:
        raise swarm_lab.LabError("deploy failed on purpose")

    monkeypatch.setattr(swarm_lab.Lab, "deploy", broken_deploy)
    with pytest.raises(swarm_lab.LabError, match="on purpose"):
        swarm_lab.Lab(3).up(images=IMAGES)
    assert host_state() == before
    assert not swarm_lab.LAB_DIR.exists() and not swarm_lab.RUN_DIR.exists()
    assert "lottery-lab" not in Path("/proc/self/mountinfo").read_text()
    assert not [pid for pid in lab_nodes._pids() if "/run/lottery-lab/" in lab_nodes._cmdline(pid)]
