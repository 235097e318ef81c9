"""The local driver (owns tools/chaos/local.py): one run's central and agencies as processes on
127.0.0.1, the storage on disk or on a tmpfs, and the agency binary with its TLS credentials.

`run_local` makes the run: data, storage, central, agencies, the fault's `inject` on the running
system, the wait for every agency, the final SIGTERM of the central, the check. Processes are
killed and the tmpfs unmounted in `finally` blocks, also when a recorded signal unwinds the run.
"""

from __future__ import annotations

import collections
import contextlib
import os
import random
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import processes
from processes import central_env, children, free_port, process_gone, tail

from .checker import AgencyOutcome, FaultEvent, RunResult, check_run
from .common import (
    AGENCY_RETRY,
    BUILD_TIMEOUT,
    CENTRAL_START_TIMEOUT,
    CENTRAL_STOP_TIMEOUT,
    CLIENT_DIR,
    PROCESS_EXIT_TIMEOUT,
    RUN_TIMEOUT,
    SHUTDOWN_TIMEOUT,
    STOP,
    HarnessError,
    RunProblem,
    read_text,
    run_command,
    wait_progress,
    wait_until,
)
from .workload import AGENCIES, AgencyData, make_data

TMPFS_SIZE = "8m"


@dataclass
class Central:
    """processes.Central with the harness's settings, in a session of its own, its log appended
    over restarts; its waits raise RunProblem and unwind on a recorded signal."""

    process: processes.Central
    credentials: Path

    @classmethod
    def create(cls, storage: Path, log_path: Path, agencies: int, credentials: Path) -> Central:
        port = free_port()
        env = central_env(port, free_port(port), storage, agencies, credentials, WORKERS=2, WORKER_CONNECTIONS=64,
                          IDLE_TIMEOUT=30, SHUTDOWN_TIMEOUT=SHUTDOWN_TIMEOUT, LOGGING_LEVEL="INFO")
        return cls(processes.Central(env, log_path, new_session=True), credentials)

    @property
    def port(self) -> int:
        return self.process.port

    def log(self) -> str:
        return self.process.log()

    def start(self) -> None:
        """Start it and wait until it answers an ECHO; RunProblem if it exits or never answers."""
        self.process.start(CENTRAL_START_TIMEOUT, error=RunProblem, check=STOP.check)

    def alive(self) -> bool:
        return self.process.running()

    def kill(self) -> None:
        """SIGKILL the supervisor (frozen first) and every worker, as a crash would."""
        try:
            self.process.kill(PROCESS_EXIT_TIMEOUT)
        except (TimeoutError, subprocess.TimeoutExpired) as err:
            raise RunProblem(f"the killed central did not exit: {err}") from None

    def terminate(self) -> int:
        """SIGTERM and wait for the supervisor and its workers: the supervisor's exit code."""
        proc = self.process.proc
        if proc is None:
            raise RunProblem("the central was never started")
        workers = children(proc.pid)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            wait_until(lambda: proc.poll() is not None, CENTRAL_STOP_TIMEOUT, "the central to exit")
        except RunProblem:
            self.kill()
            raise RunProblem(f"the central did not exit within {CENTRAL_STOP_TIMEOUT:.0f} s of SIGTERM:\n"
                             f"{tail(self.log())}") from None
        wait_until(lambda: all(process_gone(pid) for pid in workers), PROCESS_EXIT_TIMEOUT,
                   "the stopped central's workers to exit")
        return proc.wait()

    def cleanup(self) -> None:
        """Kill whatever is left of it (never raises for a process already gone)."""
        if self.alive():
            with contextlib.suppress(RunProblem):
                self.kill()
        if self.process.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.proc.pid, signal.SIGKILL)


@dataclass
class AgencyProcess:
    """One run of the Go agency binary; a watcher thread stamps its exit time."""

    agency: int
    log_path: Path
    batch_max: int
    proc: subprocess.Popen[bytes]
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
        self.central = Central.create(storage, run_dir / "central.log", len(data), credentials_dir(binary))
        self.window = {agency.agency: rng.randint(2, 4) for agency in data}
        self.agencies: dict[int, AgencyProcess] = {}
        self.generations: collections.Counter[int] = collections.Counter()
        self.total_bytes = sum(agency.stored_bytes for agency in data)

    def launch(self, agency: int, batch_max: int) -> AgencyProcess:
        self.generations[agency] += 1
        log_path = self.run_dir / f"agency-{agency}.{self.generations[agency]}.log"
        credentials = self.central.credentials
        env = {**os.environ, **AGENCY_RETRY, "CLI_CONFIG": str(CLIENT_DIR / "config.yaml"), "CLI_ID": str(agency),
               "CLI_SERVER_ADDRESS": f"127.0.0.1:{self.central.port}", "CLI_TLS_SERVERNAME": "localhost",
               "CLI_TLS_CA": str(credentials / "ca.pem"), "CLI_TLS_CERT": str(credentials / f"agency-{agency}.pem"),
               "CLI_TLS_KEY": str(credentials / f"agency-{agency}-key.pem"),
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
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(process.proc.pid, signal.SIGKILL)
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
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(process.proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.proc.wait(timeout=PROCESS_EXIT_TIMEOUT)
        self.central.cleanup()


@contextlib.contextmanager
def tmpfs(directory: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` mounted on `directory` for the block; always unmounted after it."""
    if os.geteuid() != 0:
        raise HarnessError("disk_full mounts a tmpfs and needs root (run as root, or leave out disk_full)")
    directory.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)],
                             timeout=30, capture_output=True, text=True)
    if mounted.returncode != 0:
        raise HarnessError(f"mount -t tmpfs on {directory} failed: {mounted.stderr.strip()}")
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


def run_local(inject: Callable[[ProcessSystem, random.Random], FaultEvent], on_tmpfs: bool, result: RunResult,
              run_dir: Path, binary: Path, rows: int, rng: random.Random) -> None:
    """One run as processes: `inject` the fault into the running system, then check the result."""
    data = make_data(run_dir / "data", AGENCIES, rows, rng)
    with contextlib.ExitStack() as stack:
        if on_tmpfs:
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
            event = inject(system, rng)
            result.record(event)
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


def build_agency_binary(work: Path) -> Path:
    """The Go agency built into `work`, with mutual TLS credentials for the central and agencies
    1..9 issued beside it by the project's own issuing code (client/cmd/certs)."""
    binary = work / "client"
    env = {**os.environ, "CGO_ENABLED": "0"}
    steps = (("go build of the agency", ["go", "build", "-mod=vendor", "-o", str(binary), "."]),
             ("issuing the TLS credentials",
              ["go", "run", "-mod=vendor", "./cmd/certs", "-dir", str(credentials_dir(binary)), "-agencies", "9"]))
    for what, command in steps:
        try:
            done = run_command(command, BUILD_TIMEOUT, cwd=CLIENT_DIR, env=env)
        except subprocess.TimeoutExpired:
            raise HarnessError(f"{what} did not finish within {BUILD_TIMEOUT:.0f} s") from None
        if done.returncode != 0:
            raise HarnessError(f"{what} failed:\n{done.stderr[-3000:]}")
    return binary


def credentials_dir(binary: Path) -> Path:
    return binary.parent / "secrets"
