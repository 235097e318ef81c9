"""Helpers for running the real system as processes on 127.0.0.1, shared by tools/bench.py,
tools/chaos/ and the tests (owns tools/processes.py): a free port, a process's children, killing
processes and waiting for their exit, their peak and proportional memory and CPU time, a
deadline-bound `wait_until`, and `Central`: the central (server/main.py, of this checkout or
another) as a child process started with an environment, its output appended to a log file,
waited for until it listens and answers ECHO on its health port."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parents[1]
SERVER_DIR = ROOT / "server"
if str(SERVER_DIR) not in sys.path:
    sys.path.insert(0, str(SERVER_DIR))

from lottery import protocol  # noqa: E402  (server/ is not an installed package)

LISTEN_LINE = "action: listen | result: success"
T = TypeVar("T")
ErrorType = Callable[[str], BaseException]  # an exception class, or a function making one from a message


def free_port(*taken: int) -> int:
    """A port nobody listens on now, other than `taken` (a port just released may come back)."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port not in taken:
            return int(port)


def children(parent: int) -> list[int]:
    """Pids whose parent is `parent`, from /proc (a central's workers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue  # gone meanwhile
            if int(stat[1]) == parent:
                found.append(int(entry.name))
    return found


def process_gone(pid: int) -> bool:
    """Gone or a zombie: either way it holds no descriptor (locks, sockets) any more."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")


def peak_rss_kib(pid: int) -> int:
    """The peak resident set (VmHWM) of `pid`, in KiB; LookupError if /proc has none (a zombie)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise LookupError(f"no VmHWM for {pid}")


def pss_kib(pid: int) -> int:
    """The proportional set size (Pss in /proc/<pid>/smaps_rollup) of `pid` now, in KiB: its
    resident pages, each shared page counted as its share (1/n for n processes mapping it);
    LookupError if /proc has none (a zombie), OSError if the process is gone."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    raise LookupError(f"no Pss for {pid}")


def cpu_seconds(pid: int) -> float:
    """The CPU time (user + system) `pid` has used so far, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def kill_and_wait(pids: list[int], timeout: float) -> None:
    """SIGKILL `pids` and return once every one has exited (TimeoutError if one has not after
    `timeout` seconds). A kill is only delivered, not done, when os.kill returns: the process
    still holds its files (a central's instance lock) until it has exited. Exited children are
    left for their parent to reap."""
    exits = []  # pidfds, readable once their process has exited
    try:
        for pid in pids:
            try:
                exits.append(os.pidfd_open(pid))
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass  # gone already
        deadline = time.monotonic() + timeout
        for fd in exits:
            readable, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not readable:
                raise TimeoutError(f"a killed process has not exited after {timeout:g}s")
    finally:
        for fd in exits:
            os.close(fd)


def wait_until(predicate: Callable[[], T], timeout: float, what: str, *, interval: float = 0.02,
               error: ErrorType = TimeoutError, check: Callable[[], None] | None = None) -> T:
    """Poll `predicate` every `interval` seconds until it returns something true, and return that.
    After `timeout` seconds raise `error("timed out after N s waiting for <what>")` (TimeoutError
    unless the caller names its own: AssertionError in the tests, the harness's RunProblem).
    `check`, if given, is called before every look: it may raise to unwind (a recorded signal)."""
    deadline = time.monotonic() + timeout
    while True:
        if check is not None:
            check()
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise error(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def tail(text: str, lines: int = 12, indent: str = "      ") -> str:
    """The last `lines` lines of `text`, each indented (for a log quoted in an error)."""
    return "\n".join(indent + line for line in text.rstrip().splitlines()[-lines:])


def echo_answered(port: int, payload: bytes = b"ping", timeout: float = 1.0) -> bool:
    """One ECHO round trip on a central's health port, with the protocol module's own encoding."""
    request = protocol.encode(protocol.Echo(payload))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
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


def central_env(port: int, health_port: int, storage: Path, agencies: int, credentials: Path,
                **settings: object) -> dict[str, str]:
    """This process's environment plus a central's settings: 127.0.0.1:`port`, the health port,
    its storage, the number of agencies, mutual TLS with ca.pem, server.pem and server-key.pem of
    `credentials` (as client/cmd/certs issues them), then `settings` (WORKERS=2, ...) on top."""
    return {**os.environ, "SERVER_IP": "127.0.0.1", "SERVER_PORT": str(port), "HEALTH_PORT": str(health_port),
            "STORAGE_DIR": str(storage), "AGENCIES": str(agencies), "TLS_CA": str(credentials / "ca.pem"),
            "TLS_CERT": str(credentials / "server.pem"), "TLS_KEY": str(credentials / "server-key.pem"),
            **{key: str(value) for key, value in settings.items()}}


@dataclass
class Central:
    """The real central (server/main.py) as a child process with `env` (see `central_env`), its
    output appended to `log_path` over restarts. `new_session` starts it in a session of its own
    (a terminal's Ctrl-C does not reach it; `kill` also kills that process group). `server_dir`
    is the server/ directory whose main.py runs: this checkout's unless another one's is named
    (tools/bench.py --vs runs another checkout's central)."""

    env: dict[str, str]
    log_path: Path
    new_session: bool = False
    server_dir: Path = SERVER_DIR
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def port(self) -> int:
        return int(self.env["SERVER_PORT"])

    @property
    def health_port(self) -> int:
        return int(self.env["HEALTH_PORT"])

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""

    def launch(self) -> subprocess.Popen[bytes]:
        """Start the process and return at once."""
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, str(self.server_dir / "main.py")], env=self.env, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=self.new_session)
        return self.proc

    def start(self, timeout: float, *, echo: bool = True, error: ErrorType = TimeoutError,
              check: Callable[[], None] | None = None, log_lines: int = 12) -> subprocess.Popen[bytes]:
        """Launch it and wait until it logs `action: listen` (one more time than its log held
        before) and, with `echo`, answers an ECHO on its health port. `error(message)` is raised
        if it exits meanwhile or a wait runs out, with the last `log_lines` lines of its log."""
        listening = self.log().count(LISTEN_LINE)
        proc = self.launch()
        self.wait_listening(timeout, listening, error=error, check=check, log_lines=log_lines)
        if echo:
            self.wait_answering(timeout, error=error, check=check)
        return proc

    def wait_listening(self, timeout: float, listening: int = 0, *, error: ErrorType = TimeoutError,
                       check: Callable[[], None] | None = None, log_lines: int = 12, interval: float = 0.02) -> None:
        """Wait until its log holds more than `listening` listen lines; `error` if it exits first."""
        proc = self.proc
        assert proc is not None, "the central was never launched"
        try:
            wait_until(lambda: self.log().count(LISTEN_LINE) > listening or proc.poll() is not None,
                       timeout, "the central to listen", interval=interval, check=check)
        except TimeoutError as err:
            raise error(f"{err}\n{tail(self.log(), log_lines)}") from None
        if proc.poll() is not None:
            raise error(f"the central exited {proc.returncode} at start:\n{tail(self.log(), log_lines)}")

    def wait_answering(self, timeout: float, *, error: ErrorType = TimeoutError,
                       check: Callable[[], None] | None = None, interval: float = 0.05) -> None:
        """Wait until it answers an ECHO on its health port."""
        wait_until(lambda: echo_answered(self.health_port), timeout, "the central's first ECHO", interval=interval,
                   error=error, check=check)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def pids(self) -> list[int]:
        """The supervisor and its workers."""
        return [] if self.proc is None else [self.proc.pid, *children(self.proc.pid)]

    def kill(self, timeout: float = 10) -> None:
        """SIGKILL the supervisor and every worker, as a crash would, and return once every one
        has exited (an exiting worker releases the instance lock, which a restart takes at once).
        The supervisor is frozen (SIGSTOP) first, so that it forks no worker between the look at
        /proc and the kill."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(proc.pid, signal.SIGSTOP)
        kill_and_wait(self.pids(), timeout)
        if self.new_session:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)  # anything of its session /proc did not show
        proc.wait(timeout=timeout)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 15) -> int:
        """Send `signum` (if it still runs) and wait for its exit code (subprocess.TimeoutExpired
        after `timeout` seconds)."""
        assert self.proc is not None, "the central was never launched"
        if self.proc.poll() is None:
            self.proc.send_signal(signum)
        return self.proc.wait(timeout=timeout)
