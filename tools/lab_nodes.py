"""The nodes of the swarm lab (tools/swarm_lab.py): each a `dockerd` in a network namespace of its
own, the bridge that joins them, their processes, mounts and cgroups (found by the lab's paths
only, never by name), and the engines' start, images and swarm. What a lab is and how it is used
is swarm_lab.py's; this module owns the machinery under it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LAB_DIR = Path(os.environ.get("LOTTERY_LAB_DIR", "/tmp/lottery-swarm-lab"))
RUN_DIR = Path("/run/lottery-lab")
STATE = RUN_DIR / "lab.json"
NETNS_DIR = Path("/var/run/netns")
BRIDGE_NS = "llab-br"
SUBNET = "192.168.231"
STACK = "lottery"
SERVER_UID = 10001
DEFAULT_IMAGES = ("server:latest", "client:latest")
ENGINE_START_TIMEOUT = 60.0
DOCKER_TIMEOUT = 120.0


class LabError(Exception):
    """The lab could not be built or driven."""


def log(message: str) -> None:
    print(f"swarm_lab: {message}", flush=True)


def run(*args: str, timeout: float = DOCKER_TIMEOUT, check: bool = True,
        stdin: Any = None) -> subprocess.CompletedProcess[str]:
    try:
        result = subprocess.run(args, capture_output=True, text=True, timeout=timeout, stdin=stdin)
    except subprocess.TimeoutExpired as err:
        raise LabError(f"{' '.join(args[:6])} ... did not finish in {timeout:.0f} s") from err
    if check and result.returncode != 0:
        raise LabError(f"{' '.join(args)} exited {result.returncode}: {result.stderr.strip() or result.stdout.strip()}")
    return result


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise LabError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


class Node:
    """One node of the lab: names and paths (nothing is created here)."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.name = f"node{number}"
        self.netns = f"llab-n{number}"
        self.address = f"{SUBNET}.{10 + number}"
        self.data_root = LAB_DIR / self.name / "data-root"
        self.exec_root = RUN_DIR / f"n{number}"
        self.pidfile = RUN_DIR / f"n{number}.pid"
        self.socket = RUN_DIR / f"n{number}.sock"
        self.config = LAB_DIR / self.name / "daemon.json"
        self.log = LAB_DIR / self.name / "dockerd.log"
        self.cgroup_parent = f"lottery-lab-n{number}"
        self.veth_node, self.veth_bridge = f"llab{number}a", f"llab{number}b"

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    def docker(self, *args: str, timeout: float = DOCKER_TIMEOUT, check: bool = True,
               stdin: Any = None) -> subprocess.CompletedProcess[str]:
        return run("docker", "-H", self.host, *args, timeout=timeout, check=check, stdin=stdin)


def nodes_of(count: int) -> list[Node]:
    return [Node(number) for number in range(1, count + 1)]


# --- processes, mounts, cgroups: found by the lab's paths only ------------------------------------


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def _cgroup_pids(node: Node) -> set[int]:
    """The processes of the node's containers: every pid under its --cgroup-parent."""
    found: set[int] = set()
    base = Path("/sys/fs/cgroup/pids") / node.cgroup_parent
    if not base.is_dir():
        base = Path("/sys/fs/cgroup") / node.cgroup_parent  # cgroup v2
    for procs in base.rglob("cgroup.procs") if base.is_dir() else []:
        with contextlib.suppress(OSError):
            found.update(int(line) for line in procs.read_text().split())
    return found


def node_processes(node: Node) -> set[int]:
    """dockerd, its containerd, the shims (all name the node's exec root or socket on their command
    line) and every process of its containers (its cgroup parent)."""
    marks = (str(node.exec_root) + "/", str(node.socket), str(node.pidfile))
    found = {pid for pid in _pids() if any(mark in _cmdline(pid) for mark in marks)}
    found.discard(os.getpid())
    return found | _cgroup_pids(node)


def kill_node_processes(node: Node, timeout: float = 20) -> None:
    """SIGKILL everything of the node until nothing is left (a killed engine alone would leave its
    containers running)."""
    deadline = time.monotonic() + timeout
    while True:
        pids = node_processes(node)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            raise LabError(f"{node.name}: processes {sorted(pids)} survive SIGKILL")
        time.sleep(0.2)


def _mounts_under(prefixes: Iterable[Path]) -> list[str]:
    roots = [str(prefix) for prefix in prefixes]
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].encode().decode("unicode_escape")
        if any(point == root or point.startswith(root + "/") for root in roots):
            found.append(point)
    return found


def unmount_under(prefixes: Sequence[Path]) -> None:
    for _ in range(5):
        points = sorted(set(_mounts_under(prefixes)), key=len, reverse=True)
        if not points:
            return
        for point in points:
            run("umount", "-l", point, check=False, timeout=30)
    left = _mounts_under(prefixes)
    if left:
        raise LabError(f"still mounted: {left[:5]}")


def remove_cgroups(node: Node) -> None:
    """rmdir the node's cgroup parent (and the container cgroups under it) in every hierarchy."""
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        base = hierarchy / node.cgroup_parent
        candidates = [base] if base.is_dir() else []
        if hierarchy.name == node.cgroup_parent:
            candidates = [hierarchy]
        for top in candidates:
            for directory in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(str(p)), reverse=True):
                with contextlib.suppress(OSError):
                    directory.rmdir()
            with contextlib.suppress(OSError):
                top.rmdir()


# --- the network ----------------------------------------------------------------------------------


def netns_exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def create_network(nodes: list[Node]) -> None:
    run("ip", "netns", "add", BRIDGE_NS)
    run("ip", "-n", BRIDGE_NS, "link", "set", "lo", "up")
    run("ip", "-n", BRIDGE_NS, "link", "add", "br0", "type", "bridge")
    run("ip", "-n", BRIDGE_NS, "link", "set", "br0", "up")
    for node in nodes:
        run("ip", "netns", "add", node.netns)
        run("ip", "-n", node.netns, "link", "set", "lo", "up")
        run("ip", "link", "add", node.veth_node, "netns", node.netns, "type", "veth",
            "peer", "name", node.veth_bridge, "netns", BRIDGE_NS)
        run("ip", "-n", node.netns, "link", "set", node.veth_node, "name", "eth0")
        run("ip", "-n", node.netns, "addr", "add", f"{node.address}/24", "dev", "eth0")
        run("ip", "-n", node.netns, "link", "set", "eth0", "up")
        run("ip", "-n", BRIDGE_NS, "link", "set", node.veth_bridge, "master", "br0")
        run("ip", "-n", BRIDGE_NS, "link", "set", node.veth_bridge, "up")


def cut_links(node: Node) -> None:
    """The node's cable pulled: its veth pair deleted (both ends go)."""
    run("ip", "-n", BRIDGE_NS, "link", "del", node.veth_bridge, check=False)


# --- engines --------------------------------------------------------------------------------------


def start_engine(node: Node) -> None:
    for directory in (node.data_root, node.exec_root, node.config.parent):
        directory.mkdir(parents=True, exist_ok=True)
    node.config.write_text("{}\n")  # not the host's /etc/docker/daemon.json
    command = ["nsenter", f"--net={NETNS_DIR / node.netns}", "dockerd",
               "--config-file", str(node.config), "--data-root", str(node.data_root),
               "--exec-root", str(node.exec_root), "--pidfile", str(node.pidfile), "-H", node.host,
               "--cgroup-parent", node.cgroup_parent, "--no-new-privileges", "--log-level", "warn"]
    # The nodes have no route out of the lab: a task uses the image already loaded, without trying
    # to pull it first (moby's swarm executor reads this variable).
    env = {**os.environ, "DOCKER_SERVICE_PREFER_OFFLINE_IMAGE": "1"}
    with open(node.log, "ab") as out:
        subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                         start_new_session=True, env=env)


def engine_ready(node: Node) -> bool:
    return node.docker("info", "-f", "{{.ID}}", check=False, timeout=10).returncode == 0


def load_images(nodes: list[Node], images: Sequence[str]) -> None:
    archive = LAB_DIR / "images.tar"
    run("docker", "save", "-o", str(archive), *images, timeout=600)
    loads = [subprocess.Popen(["docker", "-H", node.host, "load", "-i", str(archive)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for node in nodes]
    for node, load in zip(nodes, loads, strict=True):
        _, err = load.communicate(timeout=600)
        if load.returncode != 0:
            raise LabError(f"{node.name}: docker load failed: {err.strip()}")
    archive.unlink()


def form_swarm(nodes: list[Node]) -> None:
    first = nodes[0]
    first.docker("swarm", "init", "--advertise-addr", first.address, "--listen-addr", f"{first.address}:2377")
    token = first.docker("swarm", "join-token", "-q", "manager").stdout.strip()
    for node in nodes[1:]:
        node.docker("swarm", "join", "--token", token, "--advertise-addr", node.address,
                    "--listen-addr", f"{node.address}:2377", f"{first.address}:2377")
    wait_until(lambda: first.docker("node", "ls", "-q").stdout.split().__len__() == len(nodes), 60,
               "every node in the swarm")
