#!/usr/bin/env python3
"""A real three-node Docker Swarm on one machine, running the lottery stack (docs/swarm.md).

    python tools/swarm_lab.py up [--agencies N] [--nodes 3] [--storage-nodes 1,2,3] [--no-deploy]
                                 [--agency-env KEY=VALUE ...] [--server-image IMG] [--client-image IMG]
    python tools/swarm_lab.py lose NODE     # the machine NODE is lost: engine, containers, shims, links
    python tools/swarm_lab.py status
    python tools/swarm_lab.py down          # removes everything `up` made, also after a failed run

Each node is its own `dockerd` (own --data-root, --exec-root, --pidfile, unix socket,
--cgroup-parent, an empty --config-file, and --no-new-privileges), started under
`nsenter --net=/var/run/netns/llab-nK` in a network namespace this tool creates. (`ip netns exec`
would remount /sys and the engine would then find no devices cgroup.) The nodes' namespaces are
joined by veth pairs to a bridge that lives in a namespace of its own, `llab-br` (the host's
FORWARD policy drops bridged traffic; nothing of the lab touches the host's namespace), on
192.168.231.0/24: node K is 192.168.231.1K, with no default route. Every address the lab uses is
inside namespaces it created, and nothing in them can reach anything else (the engines run with
DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1, so a task does not even try to pull its image). Node 1
initializes the swarm, nodes 2 and 3 join as managers too (losing any one node keeps the raft
quorum). The images (the host engine's SERVER_IMAGE / CLIENT_IMAGE, as
`make docker-image` builds them) are copied onto each node with `docker save | docker load`.

The stack is compose_maker.py's stack file, deployed from node 1 with `--resolve-image never`,
with LOTTERY_STORAGE and LOTTERY_DATA_DIR set to directories of the lab on the host: every node
runs in the host's mount namespace, so a host directory bind-mounted by absolute path is the same
on every node, the lab's stand-in for NFS. The nodes listed by --storage-nodes get the label
lottery.storage=true (the central may run there).

Everything lives under /tmp/lottery-swarm-lab (files: data roots, credentials, shared storage,
logs) and /run/lottery-lab (exec roots, sockets, pid files, the state file lab.json). `down`
kills the lab's processes (found by their exec root, never by name), unmounts what its engines
mounted, deletes its namespaces, links and cgroups and removes both directories. It runs on any
failure of `up` too. The host's own engine and its swarm state are never touched: every docker
command here names a lab socket with -H.

Needs root, iproute2 (`ip`), util-linux (`nsenter`), dockerd, and the images on the host engine.
This file owns the lab (up, deploy, lose a node, down, the command line); the nodes' machinery
(namespaces, engines, processes, mounts, cgroups) is tools/lab_nodes.py's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from lab_nodes import (  # tools/ is on sys.path when run
    BRIDGE_NS,
    DEFAULT_IMAGES,
    DOCKER_TIMEOUT,
    ENGINE_START_TIMEOUT,
    LAB_DIR,
    NETNS_DIR,
    ROOT,
    RUN_DIR,
    SERVER_UID,
    STACK,
    STATE,
    LabError,
    Node,
    create_network,
    cut_links,
    engine_ready,
    form_swarm,
    kill_node_processes,
    load_images,
    log,
    netns_exists,
    nodes_of,
    remove_cgroups,
    run,
    start_engine,
    unmount_under,
    wait_until,
)

# --- the lab --------------------------------------------------------------------------------------


class Lab:
    """The lab as a Python object (the tests drive it): `up`, `lose`, `down`."""

    def __init__(self, count: int = 3) -> None:
        self.nodes = nodes_of(count)
        self.shared = LAB_DIR / "shared"
        self.storage = self.shared / "storage"
        self.data = self.shared / "data"
        self.secrets = LAB_DIR / "secrets"
        self.compose_file = LAB_DIR / "docker-compose.yaml"
        self.stack_file = LAB_DIR / "docker-compose.stack.yaml"
        self.lost: set[int] = set()
        self.timings: dict[str, float] = {}

    # state: what exists, so that `down` (in this process or another) removes exactly that
    def _save(self, **extra: Any) -> None:
        state = json.loads(STATE.read_text()) if STATE.exists() else {}
        state.update(extra)
        STATE.write_text(json.dumps(state))

    def node(self, number: int) -> Node:
        return self.nodes[number - 1]

    def alive(self) -> list[Node]:
        return [node for node in self.nodes if node.number not in self.lost]

    def manager(self) -> Node:
        """A node to send swarm commands to: node 1 unless it was lost."""
        return self.alive()[0]

    def up(self, agencies: int = 5, storage_nodes: Sequence[int] = (1, 2, 3), deploy: bool = True,
           agency_env: Sequence[str] = (), images: Sequence[str] = DEFAULT_IMAGES) -> None:
        if os.geteuid() != 0:
            raise LabError("the lab needs root (network namespaces, dockerd)")
        if STATE.exists() or any(netns_exists(n) for n in [BRIDGE_NS, *(node.netns for node in self.nodes)]):
            raise LabError("a lab exists already: run `make swarm-lab-down` (python tools/swarm_lab.py down) first")
        for image in images:
            if run("docker", "image", "inspect", image, check=False).returncode != 0:
                raise LabError(f"image {image} is not on the host engine: make docker-image")
        try:
            RUN_DIR.mkdir(parents=True, exist_ok=True)
            self._save(nodes=len(self.nodes), netns_dir_existed=NETNS_DIR.exists(), started=time.time())
            LAB_DIR.mkdir(parents=True, exist_ok=True)
            LAB_DIR.chmod(0o755)  # the containers' users traverse it to the shared data and storage
            started = time.monotonic()
            create_network(self.nodes)
            for node in self.nodes:
                start_engine(node)
            for node in self.nodes:
                wait_until(lambda node=node: engine_ready(node), ENGINE_START_TIMEOUT, f"{node.name}'s engine")
            self.timings["engines"] = time.monotonic() - started
            log(f"{len(self.nodes)} engines up in {self.timings['engines']:.1f} s")
            started = time.monotonic()
            load_images(self.nodes, images)
            self.timings["images"] = time.monotonic() - started
            log(f"images {', '.join(images)} loaded on every node in {self.timings['images']:.1f} s")
            form_swarm(self.nodes)
            for number in storage_nodes:
                self.label(number)
            log(f"swarm of {len(self.nodes)} managers; lottery.storage=true on node(s) "
                f"{', '.join(map(str, storage_nodes))}")
            self.prepare_stack(agencies, agency_env)
            if deploy:
                self.deploy(images)
        except BaseException:
            log("setting up failed: removing the lab")
            self.down()
            raise

    def label(self, number: int) -> None:
        node_id = self.node(number).docker("info", "-f", "{{.Swarm.NodeID}}").stdout.strip()
        self.manager().docker("node", "update", "--label-add", "lottery.storage=true", node_id)

    def prepare_stack(self, agencies: int, agency_env: Sequence[str]) -> None:
        """The stack file, the agencies' files (the default data set for 1..5) on the shared data
        directory, and the shared storage, owned by the central's user."""
        self.data.mkdir(parents=True, exist_ok=True)
        for agency in range(1, min(agencies, 5) + 1):
            shutil.copy(ROOT / ".data" / f"agency-{agency}.csv", self.data / f"agency-{agency}.csv")
        self.storage.mkdir(parents=True, exist_ok=True)
        os.chown(self.storage, SERVER_UID, SERVER_UID)
        self.storage.chmod(0o750)
        run(sys.executable, str(ROOT / "compose_maker.py"), str(agencies), "--output", str(self.compose_file),
            "--data-dir", str(self.data), "--secrets-dir", str(self.secrets), timeout=600)
        if agency_env:
            import yaml

            spec = yaml.safe_load(self.stack_file.read_text())
            for name, service in spec["services"].items():
                if name.startswith("client"):
                    service["environment"] += list(agency_env)
            self.stack_file.write_text(yaml.safe_dump(spec, sort_keys=False))

    def deploy(self, images: Sequence[str] = DEFAULT_IMAGES) -> None:
        env = {**os.environ, "SERVER_IMAGE": images[0], "CLIENT_IMAGE": images[1],
               "LOTTERY_STORAGE": str(self.storage), "LOTTERY_DATA_DIR": str(self.data),
               "DOCKER_HOST": self.manager().host}
        started = time.monotonic()
        result = subprocess.run(["docker", "stack", "deploy", "--resolve-image", "never", "-c", str(self.stack_file),
                                 STACK], capture_output=True, text=True, env=env, timeout=DOCKER_TIMEOUT)
        if result.returncode != 0:
            raise LabError(f"docker stack deploy failed: {result.stderr.strip()}")
        self.timings["deploy_command"] = time.monotonic() - started
        self.deployed_at = time.monotonic()
        log(f"stack {STACK} deployed from {self.manager().name} ({self.stack_file})")

    # --- watching ---
    def tasks(self, service: str) -> list[dict[str, Any]]:
        """The service's tasks, newest first (docker inspect of each task)."""
        manager = self.manager()
        ids = manager.docker("service", "ps", "-q", "--no-trunc", f"{STACK}_{service}", check=False).stdout.split()
        if not ids:
            return []
        found = json.loads(manager.docker("inspect", *ids, check=False).stdout or "[]")
        return sorted(found, key=lambda task: task["CreatedAt"], reverse=True)

    def node_names(self) -> dict[str, int]:
        """{swarm node id: lab node number}."""
        return {node.docker("info", "-f", "{{.Swarm.NodeID}}").stdout.strip(): node.number for node in self.alive()}

    def placement(self) -> dict[str, int]:
        """{service: lab node number} of each service's running (or starting) task."""
        ids = {}
        for node in self.nodes:
            if node.number in self.lost:
                continue
            ids[node.docker("info", "-f", "{{.Swarm.NodeID}}").stdout.strip()] = node.number
        where = {}
        for line in self.manager().docker("stack", "ps", STACK, "--no-trunc", "--filter", "desired-state=running",
                                          "--format", "{{.Name}} {{.Node}} {{.ID}}").stdout.splitlines():
            name, _, task_id = line.split()
            task = json.loads(self.manager().docker("inspect", task_id).stdout)[0]
            where[name.split(".")[0].removeprefix(f"{STACK}_")] = ids.get(task.get("NodeID", ""), 0)
        return where

    def container_log(self, task: dict[str, Any]) -> str:
        """The log of a task's container, read from the engine of the node it ran on."""
        numbers = self.node_names()
        number = numbers.get(task.get("NodeID", ""))
        container = task["Status"].get("ContainerStatus", {}).get("ContainerID")
        if not number or not container:
            return ""
        result = self.node(number).docker("logs", container, check=False)
        return result.stdout + result.stderr

    # --- losing a machine ---
    def lose(self, number: int) -> None:
        """Node `number` is lost: its engine, containerd, shims and containers SIGKILLed, its
        links cut. Its files stay (a dead machine's disk) until `down`."""
        node = self.node(number)
        kill_node_processes(node)
        cut_links(node)
        self.lost.add(number)
        self._save(lost=sorted(self.lost))
        log(f"{node.name} lost (engine, containers and shims killed, links cut)")

    # --- tearing down ---
    def down(self) -> None:
        down(len(self.nodes))


def down(count: int | None = None) -> None:
    """Remove every trace of the lab: processes, mounts, cgroups, namespaces, links, files. Works
    from the state file, or, without one, from the fixed names (a crashed run)."""
    state: dict[str, Any] = {}
    if STATE.exists():
        try:
            state = json.loads(STATE.read_text())
        except ValueError:
            state = {}
    count = count or int(state.get("nodes", 3))
    problems = []
    nodes = nodes_of(count)
    for node in nodes:
        try:
            kill_node_processes(node)
        except LabError as err:
            problems.append(str(err))
    try:
        unmount_under([LAB_DIR, RUN_DIR])
    except LabError as err:
        problems.append(str(err))
    for node in nodes:
        remove_cgroups(node)
    for name in [node.netns for node in nodes] + [BRIDGE_NS]:
        if netns_exists(name):
            run("ip", "netns", "del", name, check=False)
    # The veth pairs die with their namespaces; /var/run/netns goes too if the lab made it.
    if state.get("netns_dir_existed") is False and NETNS_DIR.exists() and not any(NETNS_DIR.iterdir()):
        run("umount", str(NETNS_DIR), check=False)
        with contextlib.suppress(OSError):
            NETNS_DIR.rmdir()
    for directory in (LAB_DIR, RUN_DIR):
        shutil.rmtree(directory, ignore_errors=True)
        if directory.exists():
            problems.append(f"{directory} could not be removed")
    if problems:
        raise LabError("; ".join(problems))
    log("lab removed")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    up_parser = sub.add_parser("up", help="build the lab and deploy the stack")
    up_parser.add_argument("--agencies", type=int, default=5)
    up_parser.add_argument("--nodes", type=int, default=3)
    up_parser.add_argument("--storage-nodes", default="1,2,3",
                           help="nodes labelled lottery.storage=true, comma-separated (default 1,2,3)")
    up_parser.add_argument("--agency-env", action="append", default=[], metavar="KEY=VALUE",
                           help="one more environment variable for every agency (repeatable)")
    up_parser.add_argument("--server-image", default=os.environ.get("SERVER_IMAGE", DEFAULT_IMAGES[0]))
    up_parser.add_argument("--client-image", default=os.environ.get("CLIENT_IMAGE", DEFAULT_IMAGES[1]))
    up_parser.add_argument("--no-deploy", action="store_true", help="the swarm only, no stack")
    lose_parser = sub.add_parser("lose", help="lose a node: engine, containers, shims killed, links cut")
    lose_parser.add_argument("node", type=int)
    sub.add_parser("status", help="the nodes and the stack's tasks")
    sub.add_parser("down", help="remove the lab")
    args = parser.parse_args(argv)

    def interrupted(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, interrupted)
    try:
        if args.command == "up":
            lab = Lab(args.nodes)
            lab.up(args.agencies, [int(n) for n in args.storage_nodes.split(",") if n], not args.no_deploy,
                   args.agency_env, (args.server_image, args.client_image))
            first = lab.node(1)
            print(f"\nThe lab runs. Talk to node 1 (a manager): docker -H {first.host} stack ps {STACK}\n"
                  f"Shared storage: {lab.storage}   lose a node: python tools/swarm_lab.py lose 2\n"
                  "Remove it all: make swarm-lab-down")
        elif args.command == "lose":
            if not STATE.exists():
                raise LabError("no lab: make swarm-lab first")
            lab = Lab(int(json.loads(STATE.read_text())["nodes"]))
            lab.lose(args.node)
        elif args.command == "status":
            if not STATE.exists():
                print("no lab")
                return 1
            state = json.loads(STATE.read_text())
            lab = Lab(int(state["nodes"]))
            lab.lost = set(state.get("lost", []))
            print(lab.manager().docker("node", "ls").stdout)
            print(lab.manager().docker("stack", "ps", STACK, check=False).stdout)
        else:
            down()
    except LabError as err:
        print(f"swarm_lab: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("swarm_lab: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
