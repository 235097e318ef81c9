"""Shared test fixtures: the real server as a process, raw protocol sockets, the real Go agency binary.

Every wait here has a timeout; a test that would hang fails instead.
"""

from __future__ import annotations

import contextlib
import csv
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

ROOT = Path(__file__).resolve().parents[1]
SERVER_DIR = ROOT / "server"
CLIENT_DIR = ROOT / "client"
sys.path.insert(0, str(SERVER_DIR))
sys.path.insert(0, str(ROOT / "tools"))

from lottery import protocol, recovery  # noqa: E402
from lottery.storage import Storage  # noqa: E402
from processes import (  # noqa: E402,F401  (shared with tools/)
    Central,
    central_env,
    children as worker_pids,
    free_port,
    kill_and_wait,
    wait_until as wait_until_or,
)
from wire import bet_lines, read_frame  # noqa: E402

DATA = ROOT / ".data"
# Winners per agency of the default data set in .data/ (the README states the same figures).
DEFAULT_WINNERS = {1: 3, 2: 0, 3: 2, 4: 5, 5: 1}
T = TypeVar("T")
WINNERS_LINE = re.compile(r"action: consulta_ganadores \| result: success \| cant_ganadores: (\d+)")


# Test credentials, issued once per session by the project's own issuing code (client/cmd/certs)
# into a temporary directory: no private key is ever committed. Agencies 1..TEST_AGENCIES.
TEST_AGENCIES = 250
CREDENTIALS = Path(tempfile.mkdtemp(prefix="lottery-test-credentials-"))


def issue_credentials(directory: Path, agencies: int, *extra: str) -> list[str]:
    """Run the issuing command (go run ./cmd/certs); returns the names of the files it created."""
    result = subprocess.run(
        ["go", "run", "-mod=vendor", "./cmd/certs", "-dir", str(directory), "-agencies", str(agencies), *extra],
        cwd=CLIENT_DIR, capture_output=True, text=True, timeout=300, env={**os.environ, "CGO_ENABLED": "0"},
    )
    assert result.returncode == 0, result.stderr
    return [line.split("/")[-1] for line in result.stdout.splitlines()]


def tls_env() -> dict[str, str]:
    """The server's TLS settings for the test credentials."""
    return {"TLS_CA": str(CREDENTIALS / "ca.pem"), "TLS_CERT": str(CREDENTIALS / "server.pem"),
            "TLS_KEY": str(CREDENTIALS / "server-key.pem")}


_AGENCY_CONTEXTS: dict[int, ssl.SSLContext] = {}


def agency_context(agency: int, credentials: Path = CREDENTIALS) -> ssl.SSLContext:
    """A TLS 1.3 client context with agency `agency`'s certificate (as the Go agency's)."""
    if credentials == CREDENTIALS and agency in _AGENCY_CONTEXTS:
        return _AGENCY_CONTEXTS[agency]
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_verify_locations(cafile=str(credentials / "ca.pem"))
    context.load_cert_chain(str(credentials / f"agency-{agency}.pem"), str(credentials / f"agency-{agency}-key.pem"))
    if credentials == CREDENTIALS:
        _AGENCY_CONTEXTS[agency] = context
    return context


@pytest.fixture(scope="session", autouse=True)
def credentials() -> Iterator[Path]:
    issue_credentials(CREDENTIALS, TEST_AGENCIES)
    yield CREDENTIALS
    shutil.rmtree(CREDENTIALS, ignore_errors=True)


def wait_until(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.02) -> T:
    """processes.wait_until, failing the test (AssertionError) when `timeout` runs out."""
    return wait_until_or(predicate, timeout, what, interval=interval, error=AssertionError)


class ServerProcess:
    """The real server (server/main.py) as a child process, logging to a file: processes.Central
    with the test credentials, 2 workers and short timeouts, started without an ECHO (a test
    counts what reaches the health port) and waited for until every worker has started."""

    def __init__(self, storage: Path, log_path: Path, agencies: int = 1, port: int | None = None,
                 **env: object) -> None:
        self.port = port or free_port()
        self.health_port = int(str(env.pop("HEALTH_PORT", 0))) or free_port(self.port)
        self.storage = storage
        self.log_path = log_path
        settings: dict[str, object] = {"WORKERS": "2", "IDLE_TIMEOUT": "30", "SHUTDOWN_TIMEOUT": "3", **env}
        self.central = Central(central_env(self.port, self.health_port, storage, agencies, CREDENTIALS, **settings),
                               log_path)

    @property
    def env(self) -> dict[str, str]:
        return self.central.env

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        return self.central.proc

    def start(self) -> ServerProcess:
        self.central.start(10, echo=False, error=AssertionError, log_lines=200)
        wait_until(lambda: self.log().count("action: worker_start") >= int(self.env["WORKERS"]), 10,
                   "the workers to start")
        return self

    def log(self) -> str:
        return self.central.log()

    def wait_log(self, pattern: str, timeout: float = 10, count: int = 1) -> None:
        wait_until(lambda: len(re.findall(pattern, self.log())) >= count, timeout,
                   f"{count} log line(s) matching {pattern!r}; log:\n{self.log()[-3000:]}")

    def send_signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 15) -> int:
        return self.central.stop(signum, timeout)

    def kill(self) -> None:
        """SIGKILL the supervisor and its workers, as a crash would, and return once every one
        has exited: an exiting worker releases the instance lock, which a restart takes at once."""
        self.central.kill(10)


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
    """A raw protocol connection to the server, for tests that speak bytes: mutual TLS as agency
    `agency` (its test certificate), or plaintext with agency=None (the health port, attacks)."""

    def __init__(self, port: int, timeout: float = 10, agency: int | None = 1,
                 context: ssl.SSLContext | None = None) -> None:
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        if context is None and agency is not None:
            context = agency_context(agency)
        self.sock = sock if context is None else context.wrap_socket(sock, server_hostname="localhost")

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
        return read_frame(self.read_exact)

    def closed_by_server(self) -> bool:
        """Whether the server ended the connection before sending one more byte: EOF, a reset,
        or a fatal TLS alert (OpenSSL sends one when it meets an EOF in the middle of a record)."""
        try:
            return self.sock.recv(1) == b""
        except (ConnectionResetError, ssl.SSLError):
            return True

    def shutdown_write(self) -> None:
        """Hang up the sending side (a TCP half-close) and keep reading: over TLS too, without a
        close_notify (ssl.SSLSocket.shutdown would also drop the TLS state the answers need)."""
        socket.socket.shutdown(self.sock, socket.SHUT_WR)

    def close(self) -> None:
        self.sock.close()

    @classmethod
    def handshake_pending(cls, port: int, agency: int, timeout: float = 10) -> Peer:
        """A TLS connection of agency `agency` whose handshake is started (the ClientHello is
        sent) but not finished: for connections the server has not accepted yet. Finish it with
        `finish_handshake`."""
        peer = cls.__new__(cls)
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        peer.sock = agency_context(agency).wrap_socket(raw, server_hostname="localhost",
                                                       do_handshake_on_connect=False)
        peer.sock.setblocking(False)
        with contextlib.suppress(ssl.SSLWantReadError):
            peer.sock.do_handshake()
        peer.sock.settimeout(timeout)
        return peer

    def finish_handshake(self, timeout: float = 10) -> None:
        self.sock.settimeout(timeout)
        self.sock.do_handshake()


def health_echo(port: int, payload: bytes = b"are you there?", timeout: float = 5) -> bool:
    """One ECHO on the plaintext health port (`ServerProcess.health_port`): whether the same
    bytes came back, i.e. the central is up and serving."""
    try:
        peer = Peer(port, timeout, agency=None)
    except OSError:
        return False
    try:
        peer.send(protocol.Echo(payload))
        return peer.recv() == protocol.Echo(payload)
    except (OSError, EOFError, protocol.ProtocolError):
        return False
    finally:
        peer.close()


def raise_nofile_limit() -> int:
    """Raise this process's RLIMIT_NOFILE soft limit to its hard limit (for tests that hold
    thousands of sockets); returns the new soft limit."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def run_server_foreground(storage: Path, timeout: float = 20, **env: object) -> subprocess.CompletedProcess[str]:
    """The server in the foreground (one worker, the test credentials, free ports), for starts
    that must fail: its whole output in `.stdout`, its exit code in `.returncode`."""
    full = {**os.environ, "SERVER_IP": "127.0.0.1", "SERVER_PORT": str(free_port()),
            "HEALTH_PORT": str(free_port()), "STORAGE_DIR": str(storage), "WORKERS": "1", **tls_env(),
            **{k: str(v) for k, v in env.items()}}
    return subprocess.run([sys.executable, str(SERVER_DIR / "main.py")], env=full, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture
def peers() -> Iterator:
    opened: list[Peer] = []

    def connect(port: int, timeout: float = 10, agency: int | None = 1, context: ssl.SSLContext | None = None) -> Peer:
        peer = Peer(port, timeout, agency, context)
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
        "CLI_TLS_CA": str(CREDENTIALS / "ca.pem"),
        "CLI_TLS_CERT": str(CREDENTIALS / f"agency-{agency}.pem"),
        "CLI_TLS_KEY": str(CREDENTIALS / f"agency-{agency}-key.pem"),
        "CLI_TLS_SERVERNAME": "localhost",
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


def open_storage(directory: Path, agencies: int) -> Storage:
    """The storage in `directory`, recovered for a round of `agencies`, as a process of the central
    opens it (without a board: no central runs)."""
    recovery.recover(directory, agencies)
    return Storage(directory)


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
    return protocol.chain(bet_lines(bets), previous)


def batch(agency: int, first: int, bets: list[Row], chain: int = 0) -> protocol.Bet:
    """A hand-made batch at an explicit position with an explicit chain, for refusals (a gap, a
    wrong chain, an unknown agency). Batches that continue an agency's bets: `AgencyBets`."""
    return protocol.Bet(agency, first, len(bets), chain, bet_lines(bets))


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
