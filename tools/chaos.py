#!/usr/bin/env python3
"""Fault-injection harness: the real central and real Go agencies under faults (owns tools/chaos.py).

    python3 tools/chaos.py                                   # every fault, 20 runs each
    python3 tools/chaos.py --runs 2                          # the short run tests/test_chaos.py makes
    python3 tools/chaos.py --runs 5 --faults central_kill,agency_kill --seed 1234
    make chaos                                               # 20 runs per fault (CHAOS_ARGS=... adds options)

For each fault it makes N runs, each with its own random timings drawn from a seed derived from
--seed (printed at the start: the same --seed, fault and run number replay the same data and
timings). Every run starts from an empty storage with fresh data written here: 3 agencies (4
under Docker, with twice the rows), each a CSV file of a few thousand bets from
tools/gen_data.py plus rows whose names hold commas, double quotes, semicolons and apostrophes
(RFC 4180 quoting, written with Python's csv module) and a few invalid rows (impossible dates, a
non-numeric document, a missing field, ...) that must never be stored. Agencies use small
batches and windows (batch.maxAmount 10-50, window 2-4) and retry settings that outlast every
fault (100 attempts, 50 ms to 1 s backoff, 2 s I/O timeout). The fault fires when a random
10-75 % of the bets are in bets.csv, so it lands mid-run whatever the machine's speed.

Faults:
  central_kill     SIGKILL the central (the supervisor, frozen first, and every worker, found as
                   its children in /proc), start it again on the same port and storage after a
                   random short delay.
  agency_kill      SIGKILL a random running agency, start it again on the same file, half of the
                   time with another batch.maxAmount (protocol v2: it resumes after what is stored).
  network_cut      under Docker Compose (project `lottery-chaos`, docker-compose-chaos.yaml at the
                   repo root, made by compose_maker.py and tweaked): disconnect a running agency's
                   container from the network for 1-3 s, then connect it again with its own
                   address (the network gets a free /24 so that it can: a cut, not a new address).
                   Images: `make docker-image` once, its images tagged lottery-chaos/server and
                   lottery-chaos/client at once so that another checkout's build cannot swap them.
                   Fails (exit 2) if containers named server/clientN belong to another project.
  disk_full        STORAGE_DIR on an 8 MiB tmpfs mounted here (root needed); a filler file takes
                   every free byte for 1-2 s, then is deleted: the central refuses with
                   INTERNAL_ERROR meanwhile and the run must finish by itself.
  central_restart  SIGTERM the central (it must exit 0), start it again after a short delay.

After each run it parses bets.csv with the csv module and checks that every valid row of every
agency file is stored exactly once (as a multiset of its five fields per agency), that no
invalid row is stored, that every agency exits 0 and that each agency's
`action: consulta_ganadores | result: success | cant_ganadores: N` equals its valid rows with
number 7574. A row's validity is the central's own rule (server/lottery/protocol.py). It prints
one line per run, then one table: fault | runs | bets expected | bets stored | lost | duplicated
| slowest recovery (s), the recovery being the time from the end of the fault (restart issued,
network reconnected, room restored) to the exit of the last agency. Exit code 0 only if every
run was correct; otherwise 1, with what was wrong in which run and the kept directory holding
that run's logs, data, bets.csv and result.txt; 2 if the harness could not go on (no Docker, no
root for the tmpfs, a build failed, the container names taken).

Every wait has a deadline; processes are killed, the tmpfs unmounted and the compose project
taken down in `finally` blocks.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import csv
import datetime as dt
import errno
import ipaddress
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import yaml

ROOT = Path(__file__).resolve().parents[1]
SERVER_DIR = ROOT / "server"
CLIENT_DIR = ROOT / "client"
sys.path.insert(0, str(SERVER_DIR))
sys.path.insert(0, str(ROOT / "tools"))

import gen_data  # noqa: E402  (tools/ is not a package)
from processes import children, free_port, kill_and_wait  # noqa: E402
from lottery import protocol  # noqa: E402

FAULTS: tuple[str, ...] = ("central_kill", "agency_kill", "network_cut", "disk_full", "central_restart")
WINNING_NUMBER = "7574"
AGENCIES = 3
DOCKER_AGENCIES = 4  # under Docker the fault's commands are slower: a longer run, more room to land
DOCKER_ROWS_FACTOR = 2
ROWS_PER_AGENCY = 5000
Bet5 = tuple[str, ...]  # (first_name, last_name, document, birthdate, number) as in the file

# Deadlines (seconds).
CENTRAL_START_TIMEOUT = 20.0
CENTRAL_STOP_TIMEOUT = 20.0
PROCESS_EXIT_TIMEOUT = 10.0
RUN_TIMEOUT = 120.0  # from the start of the agencies to the exit of the last one
TRIGGER_TIMEOUT = 60.0
DOCKER_TIMEOUT = 180.0
IMAGE_BUILD_TIMEOUT = 1200.0

SHUTDOWN_TIMEOUT = 3
AGENCY_RETRY = {
    "CLI_RETRY_ATTEMPTS": "100",
    "CLI_RETRY_INITIALBACKOFF": "50ms",
    "CLI_RETRY_MAXBACKOFF": "1s",
    "CLI_IO_TIMEOUT": "2s",
    "CLI_LOG_LEVEL": "INFO",
}
WINNERS_LINE = re.compile(r"action: consulta_ganadores \| result: success \| cant_ganadores: (\d+)")
LISTEN_LINE = "action: listen | result: success"

COMPOSE_PROJECT = "lottery-chaos"
COMPOSE_FILE = ROOT / "docker-compose-chaos.yaml"
COMPOSE_NETWORK = f"{COMPOSE_PROJECT}_lottery_net"
STORAGE_VOLUME = "server-storage"  # compose_maker.py's name for the central's storage volume
# `make docker-image` tags server:latest and client:latest, which any other checkout's build
# retags: the harness copies them at once to tags of its own, which its compose file uses.
IMAGES = {"server": "lottery-chaos/server:latest", "client": "lottery-chaos/client:latest"}
DOCKER_ENV_SCRIPT = ROOT.parent / "shared" / "ci" / "docker-env.sh"
TMPFS_SIZE = "8m"

# Rows every agency file gets besides gen_data's: valid names that need RFC 4180 quoting (a comma
# or a double quote) or hold a semicolon or an apostrophe, and invalid rows. The document is
# filled in per agency; "7574" rows are winners when valid.
SPECIAL_VALID: tuple[Bet5, ...] = (
    ("Pérez, Juan", "Gómez", "", "1985-06-01", "7574"),
    ('Ana "la Tana"', "O'Neill", "", "1990-01-01", "12"),
    ("José; María", "D'Alessandro", "", "1970-12-31", "99"),
    ('"Quoted"', "Smith, Jr.", "", "2000-02-29", "7574"),
    ("María José", 'Núñez; "Peña", hija', "", "1964-03-15", "4321"),
    ("Ñandú, Él", "d'Artagnan", "", "1999-09-09", "1"),
    ("O'Brien", "Sáenz; Ortiz", "", "1955-05-05", "7574"),
    ('""', "Ruiz", "", "1981-08-08", "77"),
)
SPECIAL_INVALID: tuple[Bet5, ...] = (
    ("Bea", "Díaz", "", "1990-02-30", "5"),  # no such date
    ("Lía", "Sanz, Paz", "", "2001-02-29", "7574"),  # not a leap year
    ("Eva", "Ruiz", "10a5", "1990-01-01", "7574"),  # document not numeric
    ("Cid", "Paz", "", "1990-01-01"),  # a field missing
    ("", "Vacío", "", "1990-01-01", "5"),  # empty first name
    ("Ugo", "Largo", "", "1990-01-01", "123456789012"),  # number longer than 10 digits
)


class RunProblem(Exception):
    """Something in a run went wrong in a way that ends it early (the central did not start, a
    wait ran out): recorded as a problem of the run."""


class HarnessError(Exception):
    """The harness itself cannot go on (no Docker, no root for the tmpfs, a build failed)."""


# --- small helpers -------------------------------------------------------------------------------


def wait_until(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.02) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise RunProblem(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def process_gone(pid: int) -> bool:
    """Gone or a zombie: either way it holds no descriptor (locks, sockets) any more."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")


def signal_quietly(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signum)


def echo_answered(port: int) -> bool:
    """One ECHO round trip on the central's health port, with the protocol module's own encoding."""
    request = protocol.encode(protocol.Echo(b"chaos"))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(request)
            answer = b""
            while len(answer) < len(request):
                chunk = sock.recv(len(request) - len(answer))
                if not chunk:
                    return False
                answer += chunk
            return answer == request
    except OSError:
        return False


def wait_progress(stored_bytes: Callable[[], int], anyone_running: Callable[[], bool], target: float,
                  timeout: float = TRIGGER_TIMEOUT) -> bool:
    """Wait until bets.csv holds `target` bytes: True, or False if every agency exited first.
    The size is polled every few ms; whether agencies still run (dearer under Docker) every 0.25 s."""
    deadline = time.monotonic() + timeout
    next_look = time.monotonic() + 0.25
    while time.monotonic() < deadline:
        if stored_bytes() >= target:
            return True
        if time.monotonic() >= next_look:
            if not anyone_running():
                return False
            next_look = time.monotonic() + 0.25
        time.sleep(0.003)
    raise RunProblem(f"timed out after {timeout:.0f} s waiting for {target:.0f} bytes of bets to be stored")


def read_text(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""


def tail(text: str, lines: int = 12) -> str:
    return "\n".join("      " + line for line in text.rstrip().splitlines()[-lines:])


# --- data ----------------------------------------------------------------------------------------


@dataclass
class AgencyData:
    """One agency's file and what the central must end up holding of it."""

    agency: int
    path: Path
    expected: collections.Counter = field(default_factory=collections.Counter)  # valid rows
    invalid: collections.Counter = field(default_factory=collections.Counter)  # rows never to store
    winners: int = 0
    stored_bytes: int = 0  # size of its rows in bets.csv once all are stored

    @property
    def bets(self) -> int:
        return sum(self.expected.values())


def is_valid_row(fields: list[str]) -> bool:
    """The central's own rule: five fields whose canonical line it accepts."""
    if len(fields) != len(protocol.FIELD_NAMES):
        return False
    return protocol.bet_line_error(protocol.bet_line(tuple(fields))[:-1]) is None


def special_rows(agency: int, rng: random.Random) -> list[list[str]]:
    """The quoted-name and invalid rows of one agency, with their own documents."""
    rows = []
    for index, row in enumerate(SPECIAL_VALID + SPECIAL_INVALID):
        fields = list(row)
        if fields[2] == "":
            fields[2] = str(90_000_000 + agency * 10_000 + index)
        rows.append(fields)
    rng.shuffle(rows)
    return rows


def write_agency_file(path: Path, agency: int, rows: int, rng: random.Random) -> None:
    """gen_data's rows plus the special ones at random positions, as RFC 4180 CSV (CRLF)."""
    base = [line.split(",") for line in
            gen_data.agency_lines(agency, rows, rng.randint(1, 4), rng.randrange(1 << 30))]
    for extra in special_rows(agency, rng):
        base.insert(rng.randrange(len(base) + 1), extra)
    with open(path, "w", encoding="utf-8", newline="") as out:
        csv.writer(out, lineterminator="\r\n").writerows(base)


def classify_agency_file(agency: int, path: Path) -> AgencyData:
    """Read the file back with the csv module and sort its rows into valid and invalid."""
    data = AgencyData(agency, path)
    with open(path, encoding="utf-8", newline="") as source:
        for fields in csv.reader(source):
            if not fields:
                continue
            if is_valid_row(fields):
                data.expected[tuple(fields)] += 1
                data.winners += fields[4] == WINNING_NUMBER
                data.stored_bytes += len(f"{agency},".encode()) + len(protocol.bet_line(tuple(fields)))
            else:
                data.invalid[tuple(fields)] += 1
    return data


def make_data(directory: Path, agencies: int, rows: int, rng: random.Random) -> list[AgencyData]:
    directory.mkdir(parents=True, exist_ok=True)
    made = []
    for agency in range(1, agencies + 1):
        path = directory / f"agency-{agency}.csv"
        write_agency_file(path, agency, rows, rng)
        made.append(classify_agency_file(agency, path))
    return made


# --- results -------------------------------------------------------------------------------------


@dataclass
class FaultEvent:
    """When a fault ended (wall clock) and what it was."""

    ended: float
    landed: bool  # it hit the system mid-run (some agency was still running)
    description: str


@dataclass
class RunResult:
    fault: str
    run: int
    seed: int
    expected: int = 0
    stored: int = 0
    lost: int = 0
    duplicated: int = 0
    recovery: float | None = None
    started: float | None = None  # wall clock: the agencies were launched
    duration: float | None = None  # from `started` to the exit of the last agency
    problems: list[str] = field(default_factory=list)
    description: str = ""
    kept: Path | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class AgencyOutcome:
    """What the last process of an agency left: exit code, log, exit time (wall clock)."""

    code: int | None
    log: str
    exited_at: float | None


def read_stored(bets_csv: Path) -> tuple[dict[int, collections.Counter], list[str]]:
    """bets.csv parsed with the csv module: per agency, a multiset of its five fields."""
    stored: dict[int, collections.Counter] = collections.defaultdict(collections.Counter)
    malformed: list[str] = []
    if not bets_csv.exists():
        return stored, malformed
    with open(bets_csv, encoding="utf-8", errors="replace", newline="") as rows:
        for number, row in enumerate(csv.reader(rows), start=1):
            if len(row) != 6 or not row[0].isdigit():
                malformed.append(f"line {number}: {row!r}")
                continue
            stored[int(row[0])][tuple(row[1:])] += 1
    return stored, malformed


def compare_agency(result: RunResult, agency: AgencyData, held: collections.Counter) -> None:
    """Lost and duplicated bets of one agency (multisets of five fields), and rows that must not be there."""
    lost = agency.expected - held
    extra = held - agency.expected
    duplicated = collections.Counter({k: v for k, v in extra.items() if k in agency.expected})
    invalid = collections.Counter({k: v for k, v in extra.items() if k in agency.invalid})
    foreign = extra - duplicated - invalid
    result.lost += sum(lost.values())
    result.duplicated += sum(duplicated.values())
    name = f"agency {agency.agency}"
    if lost:
        result.problems.append(f"{name}: {sum(lost.values())} bet(s) lost, e.g. {list(lost)[:3]}")
    if duplicated:
        result.problems.append(f"{name}: {sum(duplicated.values())} bet(s) duplicated, e.g. {list(duplicated)[:3]}")
    if invalid:
        result.problems.append(f"{name}: {sum(invalid.values())} invalid row(s) stored: {list(invalid)}")
    if foreign:
        result.problems.append(f"{name}: {sum(foreign.values())} row(s) stored that its file does not hold, "
                               f"e.g. {list(foreign)[:3]}")


def check_outcome(result: RunResult, agency: AgencyData, outcome: AgencyOutcome | None) -> None:
    """Exit code 0 and the exact number of winners in the agency's last log."""
    name = f"agency {agency.agency}"
    if outcome is None:
        result.problems.append(f"{name}: no outcome recorded")
        return
    if outcome.code != 0:
        result.problems.append(f"{name}: exit code {outcome.code}\n{tail(outcome.log)}")
    found = WINNERS_LINE.findall(outcome.log)
    if not found:
        if outcome.code == 0:
            result.problems.append(f"{name}: exited 0 but logged no winners\n{tail(outcome.log)}")
    elif int(found[-1]) != agency.winners:
        result.problems.append(f"{name}: {found[-1]} winners logged, its file holds {agency.winners}")


def check_run(result: RunResult, data: list[AgencyData], bets_csv: Path,
              outcomes: dict[int, AgencyOutcome], event: FaultEvent | None) -> None:
    """Fill `result` with the comparison of what was stored against what the files hold."""
    stored, malformed = read_stored(bets_csv)
    result.expected = sum(agency.bets for agency in data)
    result.stored = sum(sum(counter.values()) for counter in stored.values()) + len(malformed)
    if malformed:
        result.problems.append(f"{len(malformed)} malformed row(s) in bets.csv, e.g. {malformed[:3]}")
    for unknown in sorted(set(stored) - {agency.agency for agency in data}):
        result.problems.append(f"{sum(stored[unknown].values())} row(s) stored for unknown agency {unknown}")
    for agency in data:
        compare_agency(result, agency, stored.get(agency.agency, collections.Counter()))
        check_outcome(result, agency, outcomes.get(agency.agency))
    exits = [o.exited_at for o in outcomes.values() if o.exited_at is not None]
    if exits and len(exits) == len(outcomes):
        if event is not None:
            result.recovery = max(0.0, max(exits) - event.ended)
        if result.started is not None:
            result.duration = max(exits) - result.started


# --- the system as processes ---------------------------------------------------------------------


@dataclass
class Central:
    """The real central (server/main.py) as a process on 127.0.0.1; its log is appended over restarts."""

    port: int
    health_port: int
    storage: Path
    log_path: Path
    agencies: int
    credentials: Path
    proc: subprocess.Popen | None = None

    def env(self) -> dict[str, str]:
        return {**os.environ, "SERVER_PORT": str(self.port), "SERVER_IP": "127.0.0.1",
                "STORAGE_DIR": str(self.storage), "AGENCIES": str(self.agencies), "WORKERS": "2",
                "WORKER_CONNECTIONS": "64", "IDLE_TIMEOUT": "30", "SHUTDOWN_TIMEOUT": str(SHUTDOWN_TIMEOUT),
                "LOGGING_LEVEL": "INFO", "HEALTH_PORT": str(self.health_port),
                "TLS_CA": str(self.credentials / "ca.pem"), "TLS_CERT": str(self.credentials / "server.pem"),
                "TLS_KEY": str(self.credentials / "server-key.pem")}

    def log(self) -> str:
        return read_text(self.log_path)

    def start(self) -> None:
        """Start it and wait until it answers an ECHO; RunProblem if it exits or never answers."""
        listening = self.log().count(LISTEN_LINE)
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, str(SERVER_DIR / "main.py")], env=self.env(),
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        proc = self.proc
        try:
            wait_until(lambda: self.log().count(LISTEN_LINE) > listening or proc.poll() is not None,
                       CENTRAL_START_TIMEOUT, "the central to listen")
        except RunProblem as err:
            raise RunProblem(f"{err}\n{tail(self.log())}") from None
        if proc.poll() is not None:
            raise RunProblem(f"the central exited {proc.returncode} at start:\n{tail(self.log())}")
        wait_until(lambda: echo_answered(self.health_port), CENTRAL_START_TIMEOUT, "the central's first ECHO",
                   interval=0.05)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the supervisor and every worker, as a crash would. The supervisor is frozen
        (SIGSTOP) first so that it forks no worker between the look at /proc and the kill."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        signal_quietly(proc.pid, signal.SIGSTOP)
        kill_and_wait([proc.pid, *children(proc.pid)], PROCESS_EXIT_TIMEOUT)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # anything of its session /proc did not show
        proc.wait(timeout=PROCESS_EXIT_TIMEOUT)

    def terminate(self) -> int:
        """SIGTERM and wait for the supervisor and its workers: the supervisor's exit code."""
        proc = self.proc
        if proc is None:
            raise RunProblem("the central was never started")
        workers = children(proc.pid)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=CENTRAL_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            raise RunProblem(f"the central did not exit within {CENTRAL_STOP_TIMEOUT:.0f} s of SIGTERM:\n"
                             f"{tail(self.log())}") from None
        wait_until(lambda: all(process_gone(pid) for pid in workers), PROCESS_EXIT_TIMEOUT,
                   "the stopped central's workers to exit")
        return code

    def cleanup(self) -> None:
        if self.alive():
            with contextlib.suppress(RunProblem, subprocess.TimeoutExpired):
                self.kill()
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)


@dataclass
class AgencyProcess:
    """One run of the Go agency binary; a watcher thread stamps its exit time."""

    agency: int
    log_path: Path
    batch_max: int
    proc: subprocess.Popen
    exited_at: float | None = None

    def watch(self) -> None:
        def wait() -> None:
            self.proc.wait()
            self.exited_at = time.time()

        threading.Thread(target=wait, daemon=True).start()

    def running(self) -> bool:
        return self.exited_at is None and self.proc.poll() is None

    def log(self) -> str:
        return read_text(self.log_path)


class ProcessSystem:
    """The central and the agencies of one run, as processes on 127.0.0.1."""

    def __init__(self, run_dir: Path, storage: Path, binary: Path, data: list[AgencyData],
                 rng: random.Random) -> None:
        self.run_dir = run_dir
        self.storage = storage
        self.binary = binary
        self.data = {agency.agency: agency for agency in data}
        self.rng = rng
        port = free_port()
        health_port = free_port(port)
        self.central = Central(port, health_port, storage, run_dir / "central.log", len(data), credentials_dir(binary))
        self.window = {agency.agency: rng.randint(2, 4) for agency in data}
        self.agencies: dict[int, AgencyProcess] = {}
        self.generations: dict[int, int] = collections.Counter()
        self.total_bytes = sum(agency.stored_bytes for agency in data)

    def launch(self, agency: int, batch_max: int) -> AgencyProcess:
        self.generations[agency] += 1
        log_path = self.run_dir / f"agency-{agency}.{self.generations[agency]}.log"
        env = {**os.environ, **AGENCY_RETRY, "CLI_CONFIG": str(CLIENT_DIR / "config.yaml"), "CLI_ID": str(agency),
               "CLI_SERVER_ADDRESS": f"127.0.0.1:{self.central.port}", "CLI_TLS_SERVERNAME": "localhost",
               "CLI_TLS_CA": str(self.central.credentials / "ca.pem"),
               "CLI_TLS_CERT": str(self.central.credentials / f"agency-{agency}.pem"),
               "CLI_TLS_KEY": str(self.central.credentials / f"agency-{agency}-key.pem"),
               "CLI_DATA_PATH": str(self.data[agency].path), "CLI_BATCH_MAXAMOUNT": str(batch_max),
               "CLI_BATCH_WINDOW": str(self.window[agency])}
        with open(log_path, "wb") as out:
            proc = subprocess.Popen([str(self.binary)], env=env, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        process = AgencyProcess(agency, log_path, batch_max, proc)
        process.watch()
        self.agencies[agency] = process
        return process

    def start(self) -> None:
        self.central.start()
        for agency in self.data:
            self.launch(agency, self.rng.randint(10, 50))

    def running(self) -> list[int]:
        return sorted(a for a, process in self.agencies.items() if process.running())

    def stored_bytes(self) -> int:
        try:
            return (self.storage / "bets.csv").stat().st_size
        except OSError:
            return 0

    def wait_progress(self, fraction: float) -> bool:
        return wait_progress(self.stored_bytes, lambda: bool(self.running()), fraction * self.total_bytes)

    def kill_agency(self, agency: int) -> None:
        process = self.agencies[agency]
        signal_quietly(process.proc.pid, signal.SIGKILL)
        process.proc.wait(timeout=PROCESS_EXIT_TIMEOUT)

    def wait_agencies(self) -> None:
        try:
            wait_until(lambda: not self.running(), RUN_TIMEOUT, "every agency to exit", interval=0.02)
        except RunProblem:
            stuck = self.running()
            raise RunProblem(f"agencies {stuck} still running {RUN_TIMEOUT:.0f} s after the start (a hang); "
                             f"last lines of agency {stuck[0]}:\n{tail(self.agencies[stuck[0]].log())}\n"
                             f"  central:\n{tail(self.central.log())}") from None
        wait_until(lambda: all(p.exited_at is not None for p in self.agencies.values()), PROCESS_EXIT_TIMEOUT,
                   "the exit watchers")

    def outcomes(self) -> dict[int, AgencyOutcome]:
        return {a: AgencyOutcome(p.proc.poll(), p.log(), p.exited_at) for a, p in self.agencies.items()}

    def cleanup(self) -> None:
        for process in self.agencies.values():
            if process.proc.poll() is None:
                signal_quietly(process.proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.proc.wait(timeout=PROCESS_EXIT_TIMEOUT)
        self.central.cleanup()


# --- process faults ------------------------------------------------------------------------------


def fault_central_kill(system: ProcessSystem, rng: random.Random) -> FaultEvent:
    fraction, delay = rng.uniform(0.1, 0.75), rng.uniform(0.2, 1.5)
    landed = system.wait_progress(fraction)
    system.central.kill()
    time.sleep(delay)
    ended = time.time()
    system.central.start()
    return FaultEvent(ended, landed, f"SIGKILL at {fraction:.0%} stored, restart after {delay:.2f} s")


def fault_central_restart(system: ProcessSystem, rng: random.Random) -> FaultEvent:
    fraction, delay = rng.uniform(0.1, 0.75), rng.uniform(0.2, 1.0)
    landed = system.wait_progress(fraction)
    code = system.central.terminate()
    if code != 0:
        raise RunProblem(f"the central exited {code} after SIGTERM (0 expected):\n{tail(system.central.log())}")
    time.sleep(delay)
    ended = time.time()
    system.central.start()
    return FaultEvent(ended, landed, f"SIGTERM at {fraction:.0%} stored (exit 0), restart after {delay:.2f} s")


def fault_agency_kill(system: ProcessSystem, rng: random.Random) -> FaultEvent:
    fraction, delay = rng.uniform(0.1, 0.75), rng.uniform(0.05, 1.0)
    change_batch = rng.random() < 0.5
    landed = system.wait_progress(fraction)
    running = system.running()
    agency = rng.choice(running) if running else rng.choice(sorted(system.agencies))
    old = system.agencies[agency].batch_max
    phase = "waiting for its winners" if "action: fin | result: success" in system.agencies[agency].log() else "sending"
    system.kill_agency(agency)
    time.sleep(delay)
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


def fault_disk_full(system: ProcessSystem, rng: random.Random) -> FaultEvent:
    fraction, hold = rng.uniform(0.1, 0.7), rng.uniform(1.0, 2.0)
    filler = system.storage.parent / "filler"
    landed = system.wait_progress(fraction)
    refused_before = system.central.log().count("action: storage_write | result: fail")
    try:
        written = fill_until_full(filler)
        time.sleep(hold)
    finally:
        filler.unlink(missing_ok=True)
    ended = time.time()
    refused = system.central.log().count("action: storage_write | result: fail") - refused_before
    return FaultEvent(ended, landed, f"disk full at {fraction:.0%} stored ({written >> 10} KiB filler) for "
                                     f"{hold:.2f} s, {refused} append(s) refused")


PROCESS_FAULTS: dict[str, Callable[[ProcessSystem, random.Random], FaultEvent]] = {
    "central_kill": fault_central_kill,
    "agency_kill": fault_agency_kill,
    "disk_full": fault_disk_full,
    "central_restart": fault_central_restart,
}


@contextlib.contextmanager
def tmpfs(directory: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` mounted on `directory` for the block; always unmounted after it."""
    if os.geteuid() != 0:
        raise HarnessError("disk_full mounts a tmpfs and needs root (run as root, or leave out disk_full)")
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)], check=True,
                   timeout=30, capture_output=True)
    try:
        yield directory
    finally:
        result = subprocess.run(["umount", str(directory)], timeout=30, capture_output=True)
        if result.returncode != 0:
            subprocess.run(["umount", "-l", str(directory)], timeout=30, capture_output=True)


def keep_storage(storage: Path, run_dir: Path) -> None:
    """Copy the storage files next to the logs (a tmpfs storage disappears with its mount)."""
    if storage.is_dir() and storage.parent != run_dir:
        with contextlib.suppress(OSError):
            shutil.copytree(storage, run_dir / "storage", dirs_exist_ok=True)


def run_process_fault(fault: str, result: RunResult, run_dir: Path, binary: Path, rows: int,
                      rng: random.Random) -> None:
    data = make_data(run_dir / "data", AGENCIES, rows, rng)
    with contextlib.ExitStack() as stack:
        if fault == "disk_full":
            storage = stack.enter_context(tmpfs(run_dir / "tmpfs", TMPFS_SIZE)) / "storage"
            stack.callback(keep_storage, storage, run_dir)  # runs before the unmount
        else:
            storage = run_dir / "storage"
        storage.mkdir(parents=True, exist_ok=True)
        system = ProcessSystem(run_dir, storage, binary, data, rng)
        stack.callback(system.cleanup)
        event = None
        try:
            result.started = time.time()
            system.start()
            event = PROCESS_FAULTS[fault](system, rng)
            result.description = event.description + ("" if event.landed else " [landed after the agencies ended]")
            system.wait_agencies()
        except RunProblem as err:
            result.problems.append(str(err))
        stop_central(system.central, result)
        check_run(result, data, storage / "bets.csv", system.outcomes(), event)


def stop_central(central: Central, result: RunResult) -> None:
    """The final SIGTERM: the central must still be running and exit 0."""
    if not central.alive():
        result.problems.append(f"the central was not running at the end:\n{tail(central.log())}")
        return
    try:
        code = central.terminate()
    except RunProblem as err:
        result.problems.append(str(err))
        return
    if code != 0:
        result.problems.append(f"the central exited {code} after the final SIGTERM\n{tail(central.log())}")


# --- the system under Docker Compose -------------------------------------------------------------


def docker(*args: str, timeout: float = DOCKER_TIMEOUT, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        result = subprocess.run(["docker", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
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
    if subprocess.run(["docker", "info"], capture_output=True, timeout=60).returncode != 0:
        raise HarnessError("network_cut needs Docker and `docker info` failed "
                           "(here: source ../shared/ci/docker-env.sh), or leave out network_cut")
    command = "make docker-image"
    if "PYTHON_IMAGE" not in os.environ and DOCKER_ENV_SCRIPT.exists():
        command = f"source {DOCKER_ENV_SCRIPT} >/dev/null && {command}"
    print(f"chaos: building the images ({command})", flush=True)
    try:
        built = subprocess.run(["bash", "-c", command], cwd=ROOT, capture_output=True, text=True,
                               timeout=IMAGE_BUILD_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise HarnessError(f"`{command}` did not finish within {IMAGE_BUILD_TIMEOUT:.0f} s") from None
    if built.returncode != 0:
        raise HarnessError(f"`{command}` failed:\n{built.stdout[-2000:]}\n{built.stderr[-2000:]}")
    built_ids = built_image_ids(built.stdout + built.stderr)
    for source, target in IMAGES.items():
        image = built_ids.get(f"{source}:latest", f"{source}:latest")
        tagged = subprocess.run(["docker", "tag", image, target], capture_output=True, text=True, timeout=60)
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
    used: list[ipaddress.IPv4Network] = []
    ids = docker("network", "ls", "-q").stdout.split()
    if ids:
        subnets = docker("network", "inspect", "-f", "{{range .IPAM.Config}}{{.Subnet}} {{end}}", *ids).stdout
        used += [ipaddress.ip_network(text, strict=False) for text in subnets.split() if ":" not in text]
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        routes = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True, timeout=10).stdout
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

    def compose(self, *args: str, timeout: float = DOCKER_TIMEOUT, check: bool = True) -> subprocess.CompletedProcess[str]:
        return docker("compose", "-p", COMPOSE_PROJECT, "-f", str(COMPOSE_FILE), *args, timeout=timeout, check=check)

    def write_compose_file(self) -> None:
        made = subprocess.run([sys.executable, "compose_maker.py", str(len(self.data)), "--output",
                               str(COMPOSE_FILE), "--data-dir", str(self.data[0].path.parent)],
                              cwd=ROOT, capture_output=True, text=True, timeout=60)
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
        if COMPOSE_FILE.exists():
            self.compose("down", "-v", "--remove-orphans", "-t", "2", check=False)

    def states(self) -> dict[str, tuple[bool, int, float | None]]:
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

    def address(self, container: str) -> str:
        networks = json.loads(docker("inspect", "-f", "{{json .NetworkSettings.Networks}}", container).stdout)
        return (networks.get(COMPOSE_NETWORK) or {}).get("IPAddress", "")

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
        for agency, name in zip(self.data, self.clients):
            log = self.logs(name)
            (self.run_dir / f"{name}.log").write_text(log, encoding="utf-8")
            running, code, finished = states[name]
            outcomes[agency.agency] = AgencyOutcome(None if running else code, log, finished)
        (self.run_dir / "server.log").write_text(self.logs("server"), encoding="utf-8")
        docker("cp", "server:/storage/bets.csv", str(self.run_dir / "bets.csv"), check=False)
        return outcomes


def fault_network_cut(system: ComposeSystem, rng: random.Random) -> FaultEvent:
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
        time.sleep(max(0.0, hold - (time.monotonic() - cut)))
    finally:
        docker("network", "connect", "--ip", address, COMPOSE_NETWORK, container, check=False)
    ended = time.time()
    back = system.address(container)
    moved = "" if back == address else f", came back as {back or 'nothing'} instead of {address}"
    return FaultEvent(ended, landed and container in running,
                      f"{container} ({phase}) cut off at {fraction:.0%} stored for {hold:.2f} s{moved}")


def run_network_cut(result: RunResult, run_dir: Path, rows: int, rng: random.Random) -> None:
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
        event = fault_network_cut(system, rng)
        result.description = event.description + ("" if event.landed else " [landed after the agencies ended]")
        system.wait_clients()
    except RunProblem as err:
        result.problems.append(str(err))
    finally:
        try:
            outcomes = system.collect()
        finally:
            system.down()
    check_run(result, data, run_dir / "bets.csv", outcomes, event)


# --- driver --------------------------------------------------------------------------------------


@dataclass
class Options:
    runs: int
    faults: list[str]
    seed: int
    rows: int
    keep: bool


def build_agency_binary(work: Path) -> Path:
    binary = work / "client"
    try:
        built = subprocess.run(["go", "build", "-mod=vendor", "-o", str(binary), "."], cwd=CLIENT_DIR,
                               env={**os.environ, "CGO_ENABLED": "0"}, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        raise HarnessError("go build of the agency did not finish within 600 s") from None
    if built.returncode != 0:
        raise HarnessError(f"go build of the agency failed:\n{built.stderr[-3000:]}")
    # Mutual TLS as in production: credentials for the central and agencies 1..9, issued beside the
    # binary by the project's own issuing code.
    issued = subprocess.run(["go", "run", "-mod=vendor", "./cmd/certs", "-dir", str(credentials_dir(binary)),
                             "-agencies", "9"], cwd=CLIENT_DIR, env={**os.environ, "CGO_ENABLED": "0"},
                            capture_output=True, text=True, timeout=600)
    if issued.returncode != 0:
        raise HarnessError(f"issuing the TLS credentials failed:\n{issued.stderr[-3000:]}")
    return binary


def credentials_dir(binary: Path) -> Path:
    return binary.parent / "secrets"


def run_seed(seed: int, fault: str, run: int) -> int:
    return random.Random(f"{seed}:{fault}:{run}").randrange(1 << 32)


def one_run(fault: str, run: int, options: Options, work: Path, binary: Path | None) -> RunResult:
    seed = run_seed(options.seed, fault, run)
    result = RunResult(fault, run, seed)
    run_dir = work / f"{fault}-{run}"
    run_dir.mkdir(parents=True)
    rng = random.Random(seed)
    try:
        if fault == "network_cut":
            run_network_cut(result, run_dir, options.rows, rng)
        else:
            assert binary is not None
            run_process_fault(fault, result, run_dir, binary, options.rows, rng)
    except RunProblem as err:
        result.problems.append(str(err))
    if result.ok and not options.keep:
        shutil.rmtree(run_dir, ignore_errors=True)
    else:
        result.kept = run_dir
        (run_dir / "result.txt").write_text(run_report(result, options.runs) + "\n", encoding="utf-8")
    return result


def run_report(result: RunResult, runs: int) -> str:
    recovery = "-" if result.recovery is None else f"{result.recovery:.2f} s"
    duration = "-" if result.duration is None else f"{result.duration:.1f} s"
    status = "ok" if result.ok else "FAIL"
    lines = [f"{result.fault} run {result.run}/{runs} (seed {result.seed}): {status} | expected {result.expected} | "
             f"stored {result.stored} | lost {result.lost} | duplicated {result.duplicated} | run {duration} | "
             f"recovery {recovery} | {result.description}"]
    lines += [f"    - {problem}" for problem in result.problems]
    return "\n".join(lines)


def report_run(result: RunResult, runs: int) -> None:
    print(run_report(result, runs), flush=True)
    if result.kept is not None and not result.ok:
        print(f"    logs kept in {result.kept}", flush=True)


TABLE_HEADER = ("fault", "runs", "bets expected", "bets stored", "lost", "duplicated", "slowest recovery (s)")


def table(results: list[RunResult], faults: list[str]) -> str:
    rows = [TABLE_HEADER]
    for fault in faults:
        mine = [r for r in results if r.fault == fault]
        recoveries = [r.recovery for r in mine if r.recovery is not None]
        rows.append((fault, str(len(mine)), str(sum(r.expected for r in mine)), str(sum(r.stored for r in mine)),
                     str(sum(r.lost for r in mine)), str(sum(r.duplicated for r in mine)),
                     f"{max(recoveries):.2f}" if recoveries else "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(TABLE_HEADER))]
    lines = []
    for number, row in enumerate(rows):
        cells = [cell.ljust(widths[0]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row)]
        lines.append(" | ".join(cells))
        if number == 0:
            lines.append("-+-".join("-" * width for width in widths))
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20, help="runs per fault (default 20)")
    parser.add_argument("--faults", default=",".join(FAULTS), help=f"comma list out of {','.join(FAULTS)} (default all)")
    parser.add_argument("--seed", type=int, default=None, help="seed of every run's timings (default: random, printed)")
    parser.add_argument("--rows", type=int, default=ROWS_PER_AGENCY,
                        help=f"gen_data rows per agency file, besides the special rows (default {ROWS_PER_AGENCY})")
    parser.add_argument("--keep", action="store_true", help="keep every run's directory, not only failed ones")
    args = parser.parse_args(argv)
    faults = [f.strip() for f in args.faults.split(",") if f.strip()]
    unknown = [f for f in faults if f not in FAULTS]
    if unknown or not faults:
        parser.error(f"unknown fault(s) {unknown}; choose from {', '.join(FAULTS)}")
    if args.runs < 1 or args.rows < 10:
        parser.error("--runs must be >= 1 and --rows >= 10")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 31)
    return Options(args.runs, list(dict.fromkeys(faults)), seed, args.rows, args.keep)


def terminate_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so the finally blocks stop processes, unmount and take down."""
    def handler(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    terminate_on_sigterm()
    work = Path(tempfile.mkdtemp(prefix="lottery-chaos-"))
    print(f"chaos: seed {options.seed} | faults {','.join(options.faults)} | runs per fault {options.runs} | "
          f"work dir {work}", flush=True)
    started = time.monotonic()
    results: list[RunResult] = []
    aborted = None
    try:
        binary = build_agency_binary(work) if any(f != "network_cut" for f in options.faults) else None
        if "network_cut" in options.faults:
            build_images()
        for fault in options.faults:
            for run in range(1, options.runs + 1):
                result = one_run(fault, run, options, work, binary)
                results.append(result)
                report_run(result, options.runs)
    except HarnessError as err:
        aborted = str(err)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the runs' finally blocks have cleaned up
        aborted = "interrupted"
    finally:
        COMPOSE_FILE.unlink(missing_ok=True)
    code = summarize(results, options, work, time.monotonic() - started, aborted)
    return 130 if aborted == "interrupted" else code


def summarize(results: list[RunResult], options: Options, work: Path, seconds: float, aborted: str | None) -> int:
    """The table, the failed runs and the exit code: 0 only if every run was correct."""
    print()
    print(table(results, options.faults))
    failed = [r for r in results if not r.ok]
    print(f"\nchaos: {len(results)} runs in {seconds:.1f} s, seed {options.seed}, {len(failed)} failed")
    for result in failed:
        print(f"  {result.fault} run {result.run} (seed {result.seed}): {len(result.problems)} problem(s); "
              f"logs in {result.kept}")
    if aborted:
        print(f"chaos: error, stopped before the end: {aborted}", file=sys.stderr)
    if failed or aborted or options.keep:
        print(f"chaos: kept {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    if aborted:
        return 2
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
