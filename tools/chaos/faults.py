"""The nemesis (owns tools/chaos/faults.py): every fault the harness injects, in ONE registry.

A `Fault` is its name, what it needs (`processes`: the central and agencies as local processes;
`docker`: the system under Docker Compose; `tmpfs`: the central's storage on a small tmpfs, which
only root can mount) and `inject`, which waits until a random share of the bets is stored, does
its harm, undoes it and returns a `FaultEvent` (when the harm ended, whether it landed mid-run,
what it was). The drivers (local.py, compose.py) run the system; the faults only act on it.
"""

from __future__ import annotations

import errno
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from processes import tail

from .checker import FaultEvent
from .common import RunProblem, pause
from .compose import COMPOSE_NETWORK, ComposeSystem, docker
from .local import ProcessSystem

PROCESSES, DOCKER, TMPFS = "processes", "docker", "tmpfs"
System = TypeVar("System", ProcessSystem, ComposeSystem)


@dataclass(frozen=True)
class Fault(Generic[System]):
    """One fault: its name, what it needs and how it is injected into a running system."""

    name: str
    needs: frozenset[str]
    inject: Callable[[System, random.Random], FaultEvent]


def central_kill(system: ProcessSystem, rng: random.Random) -> FaultEvent:
    fraction, delay = rng.uniform(0.1, 0.75), rng.uniform(0.2, 1.5)
    landed = system.wait_progress(fraction)
    system.central.kill()
    pause(delay)
    ended = time.time()
    system.central.start()
    return FaultEvent(ended, landed, f"SIGKILL at {fraction:.0%} stored, restart after {delay:.2f} s")


def central_restart(system: ProcessSystem, rng: random.Random) -> FaultEvent:
    fraction, delay = rng.uniform(0.1, 0.75), rng.uniform(0.2, 1.0)
    landed = system.wait_progress(fraction)
    code = system.central.terminate()
    if code != 0:
        raise RunProblem(f"the central exited {code} after SIGTERM (0 expected):\n{tail(system.central.log())}")
    pause(delay)
    ended = time.time()
    system.central.start()
    return FaultEvent(ended, landed, f"SIGTERM at {fraction:.0%} stored (exit 0), restart after {delay:.2f} s")


def agency_kill(system: ProcessSystem, rng: random.Random) -> FaultEvent:
    fraction, delay = rng.uniform(0.1, 0.75), rng.uniform(0.05, 1.0)
    change_batch = rng.random() < 0.5
    landed = system.wait_progress(fraction)
    running = system.running()
    agency = rng.choice(running) if running else rng.choice(sorted(system.agencies))
    old = system.agencies[agency].batch_max
    phase = "waiting for its winners" if "action: fin | result: success" in system.agencies[agency].log() else "sending"
    system.kill_agency(agency)
    pause(delay)
    new = old
    if change_batch:
        new = rng.choice([n for n in (1, 3, 7, 10, 25, 40, 60, 100) if n != old])
    ended = time.time()
    system.launch(agency, new)
    how = f"batch.maxAmount {old} -> {new}" if change_batch else f"same batch.maxAmount {old}"
    return FaultEvent(ended, landed and agency in running,
                      f"SIGKILL agency {agency} ({phase}) at {fraction:.0%} stored, restart after {delay:.2f} s, {how}")


def fill_until_full(path: Path, timeout: float = 30.0) -> int:
    """Write `path` until the file system says ENOSPC; the bytes written."""
    written = 0
    deadline = time.monotonic() + timeout
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (1 << 20, 4096, 1):
            chunk = b"\0" * size
            while time.monotonic() < deadline:
                try:
                    written += os.write(fd, chunk)
                except OSError as err:
                    if err.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(fd)
    return written


def disk_full(system: ProcessSystem, rng: random.Random) -> FaultEvent:
    fraction, hold = rng.uniform(0.1, 0.7), rng.uniform(1.0, 2.0)
    filler = system.storage.parent / "filler"
    landed = system.wait_progress(fraction)
    refused_before = system.central.log().count("action: storage_write | result: fail")
    try:
        written = fill_until_full(filler)
        pause(hold)
    finally:
        filler.unlink(missing_ok=True)
    ended = time.time()
    refused = system.central.log().count("action: storage_write | result: fail") - refused_before
    return FaultEvent(ended, landed, f"disk full at {fraction:.0%} stored ({written >> 10} KiB filler) for "
                                     f"{hold:.2f} s, {refused} append(s) refused")


def network_cut(system: ComposeSystem, rng: random.Random) -> FaultEvent:
    """Disconnect a running agency's container for 1-3 s, then connect it again with the same
    address: a cut, not a new address (with which its connection could only die by timeouts)."""
    fraction, hold = rng.uniform(0.1, 0.7), rng.uniform(1.0, 3.0)
    landed = system.wait_progress(fraction)
    running = system.running()
    container = rng.choice(running) if running else rng.choice(system.clients)
    address = system.address(container)
    docker("network", "disconnect", COMPOSE_NETWORK, container)
    cut = time.monotonic()
    try:
        phase = system.phase(container)
        pause(max(0.0, hold - (time.monotonic() - cut)))
    finally:
        docker("network", "connect", "--ip", address, COMPOSE_NETWORK, container, check=False, interruptible=False)
    ended = time.time()
    back = system.address(container)
    moved = "" if back == address else f", came back as {back or 'nothing'} instead of {address}"
    return FaultEvent(ended, landed and container in running,
                      f"{container} ({phase}) cut off at {fraction:.0%} stored for {hold:.2f} s{moved}")


# Every fault, in the order the harness runs them by default.
FAULTS: dict[str, Fault[Any]] = {fault.name: fault for fault in (
    Fault("central_kill", frozenset({PROCESSES}), central_kill),
    Fault("agency_kill", frozenset({PROCESSES}), agency_kill),
    Fault("network_cut", frozenset({DOCKER}), network_cut),
    Fault("disk_full", frozenset({PROCESSES, TMPFS}), disk_full),
    Fault("central_restart", frozenset({PROCESSES}), central_restart),
)}
