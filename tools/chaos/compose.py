"""The Docker driver (owns tools/chaos/compose.py): one run as the Compose project `lottery-chaos`
(docker-compose-chaos.yaml at the repo root, made by compose_maker.py and tweaked: the harness's
agency settings, a free /24 so that a container can come back with its own address, images under
tags of the harness's own), and the images it runs, built once by `make docker-image`.

`run_compose` makes the run: data, compose file, `up`, the fault's `inject`, the wait for every
agency container, the collection of logs and bets.csv, the check. The project is taken down in a
`finally` block, also when a recorded signal unwinds the run.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import json
import os
import random
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from processes import tail

from .checker import AgencyOutcome, FaultEvent, RunResult, check_run
from .common import (
    AGENCY_RETRY,
    DOCKER_TIMEOUT,
    IMAGE_BUILD_TIMEOUT,
    ROOT,
    RUN_TIMEOUT,
    SHUTDOWN_TIMEOUT,
    STOP,
    HarnessError,
    RunProblem,
    run_command,
    wait_progress,
    wait_until,
)
from .workload import DOCKER_AGENCIES, DOCKER_ROWS_FACTOR, AgencyData, make_data

COMPOSE_PROJECT = "lottery-chaos"
COMPOSE_FILE = ROOT / "docker-compose-chaos.yaml"
COMPOSE_NETWORK = f"{COMPOSE_PROJECT}_lottery_net"
STORAGE_VOLUME = "server-storage"  # compose_maker.py's name for the central's storage volume
# `make docker-image` tags server:latest and client:latest, which any other checkout's build
# retags: the harness copies them at once to tags of its own, which its compose file uses.
IMAGES = {"server": "lottery-chaos/server:latest", "client": "lottery-chaos/client:latest"}
DOCKER_ENV_SCRIPT = ROOT.parent / "shared" / "ci" / "docker-env.sh"
# (running, exit code, finished at) of a container.
State = tuple[bool, int, float | None]


def docker(*args: str, timeout: float = DOCKER_TIMEOUT, check: bool = True,
           interruptible: bool = True) -> subprocess.CompletedProcess[str]:
    """A docker command; RunProblem if it fails (with `check`) or outlasts `timeout`."""
    try:
        result = run_command(["docker", *args], timeout, interruptible=interruptible)
    except subprocess.TimeoutExpired:
        raise RunProblem(f"docker {' '.join(args)} did not finish within {timeout:.0f} s") from None
    if check and result.returncode != 0:
        raise RunProblem(f"docker {' '.join(args)} exited {result.returncode}: {result.stderr.strip()[-1500:]}")
    return result


def parse_docker_time(text: str) -> float | None:
    """A container's FinishedAt (RFC 3339, nanoseconds) as a Unix time."""
    found = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", text.strip())
    if not found or found.group(1).startswith("0001"):
        return None
    zone = "+00:00" if found.group(3) == "Z" else found.group(3)
    fraction = (found.group(2) or "0")[:6].ljust(6, "0")
    return dt.datetime.fromisoformat(f"{found.group(1)}.{fraction}{zone}").timestamp()


def build_images() -> None:
    """`make docker-image` once; base images from PYTHON_IMAGE/GO_IMAGE, which the shared
    docker-env.sh exports when they are not set already."""
    if run_command(["docker", "info"], 60).returncode != 0:
        raise HarnessError("network_cut needs Docker and `docker info` failed "
                           "(here: source ../shared/ci/docker-env.sh), or leave out network_cut")
    command = "make docker-image"
    if "PYTHON_IMAGE" not in os.environ and DOCKER_ENV_SCRIPT.exists():
        command = f"source {DOCKER_ENV_SCRIPT} >/dev/null && {command}"
    print(f"chaos: building the images ({command})", flush=True)
    try:
        built = run_command(["bash", "-c", command], IMAGE_BUILD_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise HarnessError(f"`{command}` did not finish within {IMAGE_BUILD_TIMEOUT:.0f} s") from None
    if built.returncode != 0:
        raise HarnessError(f"`{command}` failed:\n{built.stdout[-2000:]}\n{built.stderr[-2000:]}")
    built_ids = built_image_ids(built.stdout + built.stderr)
    for source, target in IMAGES.items():
        image = built_ids.get(f"{source}:latest", f"{source}:latest")
        tagged = run_command(["docker", "tag", image, target], 60)
        if tagged.returncode != 0:
            raise HarnessError(f"docker tag {image} {target} failed: {tagged.stderr.strip()}")


def built_image_ids(output: str) -> dict[str, str]:
    """{"server:latest": image id} from a build's output (`Successfully built ID` is followed by
    `Successfully tagged NAME`), so that the private tags name this build's images even if another
    checkout retags server:latest meanwhile. Empty when the builder prints no such lines."""
    ids: dict[str, str] = {}
    last = None
    for line in output.splitlines():
        if found := re.match(r"Successfully built ([0-9a-f]+)", line.strip()):
            last = found.group(1)
        elif (found := re.match(r"Successfully tagged (\S+)", line.strip())) and last:
            ids[found.group(1)] = last
    return ids


def free_subnet() -> str:
    """A /24 of 10.0.0.0/8 that no Docker network and no host route uses, for the chaos network:
    with a configured subnet a container can be reconnected with its own address."""
    used: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    ids = docker("network", "ls", "-q").stdout.split()
    if ids:
        subnets = docker("network", "inspect", "-f", "{{range .IPAM.Config}}{{.Subnet}} {{end}}", *ids).stdout
        used += [ipaddress.ip_network(text, strict=False) for text in subnets.split() if ":" not in text]
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        routes = run_command(["ip", "-4", "route"], 10).stdout
        for line in routes.splitlines():
            with contextlib.suppress(ValueError, IndexError):
                used.append(ipaddress.ip_network(line.split()[0], strict=False))
    pick = random.SystemRandom()  # not the run's generator: the timings stay reproducible
    for _ in range(200):
        candidate = ipaddress.ip_network(f"10.{pick.randint(64, 250)}.{pick.randint(0, 255)}.0/24")
        if not any(candidate.overlaps(other) for other in used):
            return str(candidate)
    raise HarnessError("no free /24 in 10.0.0.0/8 for the chaos network")


class ComposeSystem:
    """The project `lottery-chaos` from compose_maker.py's file, with the harness's agency settings."""

    def __init__(self, run_dir: Path, data: list[AgencyData], rng: random.Random) -> None:
        self.run_dir = run_dir
        self.data = data
        self.rng = rng
        self.clients = [f"client{agency.agency}" for agency in data]
        self.total_bytes = sum(agency.stored_bytes for agency in data)
        self.host_storage: Path | None = None

    def compose(self, *args: str, timeout: float = DOCKER_TIMEOUT, check: bool = True,
                interruptible: bool = True) -> subprocess.CompletedProcess[str]:
        return docker("compose", "-p", COMPOSE_PROJECT, "-f", str(COMPOSE_FILE), *args, timeout=timeout, check=check,
                      interruptible=interruptible)

    def write_compose_file(self) -> None:
        made = run_command([sys.executable, "compose_maker.py", str(len(self.data)), "--output", str(COMPOSE_FILE),
                            "--data-dir", str(self.data[0].path.parent)], 60)
        if made.returncode != 0:
            raise RunProblem(f"compose_maker.py failed: {made.stderr.strip()}")
        spec = yaml.safe_load(COMPOSE_FILE.read_text())
        spec["services"]["server"]["environment"] += [f"SHUTDOWN_TIMEOUT={SHUTDOWN_TIMEOUT}", "WORKERS=2"]
        spec["services"]["server"]["image"] = IMAGES["server"]
        for name in self.clients:
            settings = {**AGENCY_RETRY, "CLI_BATCH_MAXAMOUNT": str(self.rng.randint(10, 50)),
                        "CLI_BATCH_WINDOW": str(self.rng.randint(2, 4))}
            spec["services"][name]["environment"] += [f"{key}={value}" for key, value in settings.items()]
            spec["services"][name]["image"] = IMAGES["client"]
        for network in spec["networks"].values():
            network["ipam"] = {"config": [{"subnet": free_subnet()}]}
        COMPOSE_FILE.write_text(yaml.safe_dump(spec, sort_keys=False, allow_unicode=True))

    def check_names_free(self) -> None:
        """Fail clearly if a container outside this project holds one of the fixed names."""
        for name in ["server", *self.clients]:
            found = docker("ps", "-a", "--filter", f"name=^/{name}$", "--format",
                           '{{.Label "com.docker.compose.project"}}').stdout.splitlines()
            foreign = [project or "(none)" for project in found if project != COMPOSE_PROJECT]
            if foreign:
                raise HarnessError(f"a container named {name!r} exists from compose project {foreign[0]!r}, not "
                                   f"{COMPOSE_PROJECT!r}: network_cut needs the names server and clientN; take that "
                                   f"project down (or `docker rm -f {name}`) and run again")

    def down(self) -> None:
        """Take the project down; a cleanup, so a recorded signal does not cut it short."""
        if COMPOSE_FILE.exists():
            self.compose("down", "-v", "--remove-orphans", "-t", "2", check=False, interruptible=False)

    def states(self) -> dict[str, State]:
        out = docker("inspect", "-f", "{{.Name}} {{.State.Running}} {{.State.ExitCode}} {{.State.FinishedAt}}",
                     *self.clients).stdout
        states = {}
        for line in out.splitlines():
            name, running, code, finished = line.split()
            states[name.lstrip("/")] = (running == "true", int(code), parse_docker_time(finished))
        return states

    def running(self) -> list[str]:
        return [name for name, (running, _, _) in self.states().items() if running]

    def storage_on_host(self) -> Path | None:
        """The storage volume's directory when the engine runs on this machine (read directly,
        much faster than `docker exec`), else None."""
        out = docker("volume", "inspect", "-f", "{{.Mountpoint}}", f"{COMPOSE_PROJECT}_{STORAGE_VOLUME}",
                     check=False).stdout.strip()
        return Path(out) if out and Path(out).is_dir() else None

    def stored_bytes(self) -> int:
        if self.host_storage is not None:
            try:
                return (self.host_storage / "bets.csv").stat().st_size
            except OSError:
                return 0
        out = docker("exec", "server", "python3", "-c",
                     "import os; p='/storage/bets.csv'; print(os.path.getsize(p) if os.path.exists(p) else 0)",
                     check=False).stdout.strip()
        return int(out) if out.isdigit() else 0

    def wait_progress(self, fraction: float) -> bool:
        return wait_progress(self.stored_bytes, lambda: bool(self.running()), fraction * self.total_bytes)

    def wait_clients(self) -> None:
        try:
            wait_until(lambda: not self.running(), RUN_TIMEOUT, "every agency container to exit", interval=0.3)
        except RunProblem:
            stuck = self.running()
            raise RunProblem(f"containers {stuck} still running {RUN_TIMEOUT:.0f} s after the start (a hang); "
                             f"last lines of {stuck[0]}:\n{tail(self.logs(stuck[0]))}") from None

    def address(self, container: str, interruptible: bool = True) -> str:
        networks = json.loads(docker("inspect", "-f", "{{json .NetworkSettings.Networks}}", container,
                                     interruptible=interruptible).stdout)
        return str((networks.get(COMPOSE_NETWORK) or {}).get("IPAddress", ""))

    def phase(self, container: str) -> str:
        """What the agency was doing, from its log: sending bets, or waiting for its winners after its FIN."""
        return "waiting for its winners" if "action: fin | result: success" in self.logs(container) else "sending"

    def logs(self, container: str) -> str:
        result = docker("logs", container, check=False)
        return result.stdout + result.stderr

    def collect(self) -> dict[int, AgencyOutcome]:
        """Save every container's log and bets.csv into the run dir; the agencies' outcomes."""
        states = self.states()
        outcomes = {}
        for agency, name in zip(self.data, self.clients, strict=True):
            log = self.logs(name)
            (self.run_dir / f"{name}.log").write_text(log, encoding="utf-8")
            running, code, finished = states[name]
            outcomes[agency.agency] = AgencyOutcome(None if running else code, log, finished)
        (self.run_dir / "server.log").write_text(self.logs("server"), encoding="utf-8")
        docker("cp", "server:/storage/bets.csv", str(self.run_dir / "bets.csv"), check=False)
        return outcomes


def run_compose(inject: Callable[[ComposeSystem, random.Random], FaultEvent], result: RunResult, run_dir: Path,
                rows: int, rng: random.Random) -> None:
    """One run under Docker Compose: `inject` the fault into the running project, then check."""
    data = make_data(run_dir / "data", DOCKER_AGENCIES, rows * DOCKER_ROWS_FACTOR, rng)
    system = ComposeSystem(run_dir, data, rng)
    system.check_names_free()
    system.down()  # a leftover of an interrupted run of ours
    system.write_compose_file()
    event = None
    try:
        result.started = time.time()
        system.compose("up", "-d", timeout=DOCKER_TIMEOUT)
        system.host_storage = system.storage_on_host()
        event = inject(system, rng)
        result.record(event)
        system.wait_clients()
    except RunProblem as err:
        result.problems.append(str(err))
    finally:
        try:
            # Interrupted: no verdict to make, only the project to take down.
            outcomes = None if STOP.requested else system.collect()
        finally:
            system.down()
    STOP.check()
    assert outcomes is not None
    check_run(result, data, run_dir / "bets.csv", outcomes, event)
