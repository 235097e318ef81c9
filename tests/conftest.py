"""Shared test fixtures: the real server as a process, raw protocol sockets, the real Go agency binary.

Every wait here has a timeout; a test that would hang fails instead.
"""

from __future__ import annotations

import csv
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

ROOT = Path(__file__).resolve().parents[1]
SERVER_DIR = ROOT / "server"
CLIENT_DIR = ROOT / "client"
sys.path.insert(0, str(SERVER_DIR))

from lottery import protocol  # noqa: E402

DATA = ROOT / ".data"
# Winners per agency of the default data set in .data/ (the README states the same figures).
DEFAULT_WINNERS = {1: 3, 2: 0, 3: 2, 4: 5, 5: 1}
WINNERS_LINE = re.compile(r"action: consulta_ganadores \| result: success \| cant_ganadores: (\d+)")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(predicate, timeout: float, what: str, interval: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class ServerProcess:
    """The real server (server/main.py) as a child process, logging to a file."""

    def __init__(self, storage: Path, log_path: Path, agencies: int = 1, port: int | None = None,
                 **env: object) -> None:
        self.port = port or free_port()
        self.storage = storage
        self.log_path = log_path
        self.env = {
            **os.environ,
            "SERVER_PORT": str(self.port),
            "SERVER_IP": "127.0.0.1",
            "STORAGE_DIR": str(storage),
            "AGENCIES": str(agencies),
            "WORKERS": "2",
            "IDLE_TIMEOUT": "30",
            "SHUTDOWN_TIMEOUT": "3",
            **{key: str(value) for key, value in env.items()},
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> "ServerProcess":
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, str(SERVER_DIR / "main.py")],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        wait_until(lambda: "action: listen | result: success" in self.log() or self.proc.poll() is not None,
                   10, "the server to listen")
        assert self.proc.poll() is None, f"server exited early:\n{self.log()}"
        wait_until(lambda: self.log().count("action: worker_start") >= int(self.env["WORKERS"]), 10,
                   "the workers to start")
        return self

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""

    def wait_log(self, pattern: str, timeout: float = 10, count: int = 1) -> None:
        wait_until(lambda: len(re.findall(pattern, self.log())) >= count, timeout,
                   f"{count} log line(s) matching {pattern!r}; log:\n{self.log()[-3000:]}")

    def send_signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 15) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signum)
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        """SIGKILL the supervisor and its workers, as a crash would."""
        assert self.proc is not None
        for pid in worker_pids(self.proc.pid):
            os.kill(pid, signal.SIGKILL)
        self.proc.kill()
        self.proc.wait(timeout=10)


def worker_pids(parent: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == parent:
                pids.append(int(entry.name))
    return pids


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator:
    servers: list[ServerProcess] = []

    def start(agencies: int = 1, storage: Path | None = None, port: int | None = None,
              **env: object) -> ServerProcess:
        server = ServerProcess(storage or tmp_path / "storage", tmp_path / f"server{len(servers)}.log",
                               agencies, port, **env)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        if server.proc is not None and server.proc.poll() is None:
            server.kill()


class Peer:
    """A raw protocol connection to the server, for tests that speak bytes."""

    def __init__(self, port: int, timeout: float = 10) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)

    def send(self, msg: protocol.Message) -> None:
        self.sock.sendall(protocol.encode(msg))

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_exact(self, n: int) -> bytes:
        data = bytearray()
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise EOFError(f"connection closed after {len(data)} of {n} bytes")
            data += chunk
        return bytes(data)

    def recv(self) -> protocol.Message:
        return protocol.read_frame(self.read_exact)

    def closed_by_server(self) -> bool:
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def peers() -> Iterator:
    opened: list[Peer] = []

    def connect(port: int, timeout: float = 10) -> Peer:
        peer = Peer(port, timeout)
        opened.append(peer)
        return peer

    yield connect
    for peer in opened:
        peer.close()


@pytest.fixture(scope="session")
def client_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real Go agency, built once per test session."""
    out = tmp_path_factory.mktemp("bin") / "client"
    subprocess.run(
        ["go", "build", "-mod=vendor", "-o", str(out), "."],
        cwd=CLIENT_DIR,
        check=True,
        env={**os.environ, "CGO_ENABLED": "0"},
        timeout=300,
    )
    return out


def agency_env(agency: int, port: int, data: Path, **extra: object) -> dict[str, str]:
    return {
        **os.environ,
        "CLI_CONFIG": str(CLIENT_DIR / "config.yaml"),
        "CLI_ID": str(agency),
        "CLI_SERVER_ADDRESS": f"127.0.0.1:{port}",
        "CLI_DATA_PATH": str(data),
        "CLI_LOG_LEVEL": "INFO",
        **{key: str(value) for key, value in extra.items()},
    }


class Agency:
    """The real Go agency (the `client_binary`) as a process, logging to a file."""

    def __init__(self, binary: Path, agency: int, port: int, data: Path, log: Path, **extra: object) -> None:
        self.agency = agency
        self.log_path = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen([str(binary)], env=agency_env(agency, port, data, **extra), stdout=out,
                                         stderr=subprocess.STDOUT)

    def wait(self, timeout: float = 120) -> int:
        return self.proc.wait(timeout=timeout)

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def winners(self) -> int:
        found = WINNERS_LINE.search(self.log())
        assert found, f"agency {self.agency} logged no winners:\n{self.log()[-2000:]}"
        return int(found.group(1))


@pytest.fixture
def launch(client_binary, tmp_path: Path) -> Iterator:
    """Start real agencies: launch(agency, port, data_file, **CLI_overrides); killed at the end."""
    started: list[Agency] = []

    def run(agency: int, port: int, data: Path, **extra: object) -> Agency:
        client = Agency(client_binary, agency, port, data, tmp_path / f"agency{agency}-{len(started)}.log", **extra)
        started.append(client)
        return client

    yield run
    for client in started:
        if client.proc.poll() is None:
            client.proc.kill()
            client.proc.wait(timeout=10)


Row = tuple[str, str, str, str, str]  # first_name, last_name, document, birthdate, number


def csv_rows(storage: Path) -> list[list[str]]:
    """The rows of bets.csv (`agency,first_name,last_name,document,birthdate,number`), read with
    the csv module: bets.csv is RFC 4180, and a name may hold commas and double quotes."""
    with open(storage / "bets.csv", encoding="utf-8", newline="") as bets:
        return list(csv.reader(bets))


def stored_documents(storage: Path) -> list[str]:
    """The document of every row of bets.csv, in order."""
    return [row[3] for row in csv_rows(storage)]


def row(agency: int, values: Row) -> list[str]:
    """The bets.csv row (as csv.reader reads it) of one bet of `agency`."""
    return [str(agency), *values]


def bet(document: str, number: str = "1", first: str = "Ana", last: str = "López",
        birthdate: str = "1990-01-01") -> Row:
    return (first, last, document, birthdate, number)


def chain_of(bets: list[Row], previous: int = 0) -> int:
    """The chain (protocol.md) of `bets`, continued from the chain of the bets before them."""
    return protocol.chain(protocol.bet_lines(bets), previous)


def batch(agency: int, first: int, bets: list[Row], chain: int = 0) -> protocol.Bet:
    """A hand-made batch at an explicit position with an explicit chain, for refusals (a gap, a
    wrong chain, an unknown agency). Batches that continue an agency's bets: `AgencyBets`."""
    return protocol.Bet(agency, first, len(bets), chain, protocol.bet_lines(bets))


class AgencyBets:
    """One agency's bets as a version 2 agency numbers them: each `batch` holds the positions after
    the previous batch's and carries the chain of every bet before it; `fin` announces them all.

    `stored` and `chain` are the last position numbered so far and the chain of bets 1..stored:
    what the central stores once every batch made so far is acknowledged, and what RESUME then
    says. Start from a RESUME with `AgencyBets(agency, stored, chain)`."""

    def __init__(self, agency: int, stored: int = 0, chain: int = 0) -> None:
        self.agency = agency
        self._stored = stored
        self._chain = chain
        self.batches: list[protocol.Bet] = []  # every batch made, in position order

    @property
    def stored(self) -> int:
        return self._stored

    @property
    def chain(self) -> int:
        return self._chain

    def batch(self, bets: list[Row]) -> protocol.Bet:
        made = batch(self.agency, self._stored + 1, bets, self._chain)
        self._stored, self._chain = made.last, made.chain_after
        self.batches.append(made)
        return made

    def fin(self) -> protocol.Fin:
        return protocol.Fin(self.agency, self._stored, self._chain)

    def resume(self, finished: bool = False) -> protocol.Resume:
        """The RESUME the central answers once every batch made so far is stored."""
        return protocol.Resume(self.agency, self._stored, self._chain, finished)
