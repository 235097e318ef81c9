#!/usr/bin/env python3
"""Launching the benchmark's agencies and waiting for them (owns tools/bench_launch.py), for
tools/bench.py; run as a script it measures what launching costs.

    python tools/bench_launch.py                       # 1,000 launches of /bin/true, 3 rounds
    python tools/bench_launch.py --count 500 --program bin/client --rounds 5

`spawn_all` starts each process with os.posix_spawn (a vfork and an exec, nothing else) from an
argument vector and an environment prepared before the clock starts; each process opens its own
log file (a file action run in the child), so the launcher opens no file and builds nothing per
process while the clock runs. `wait_all` sees each exit through a pidfd the moment it happens and
reaps it with os.wait4, which also gives the CPU time the process used.

The script launches --count quick processes both ways, the former one (subprocess.Popen with an
environment dict built per process and a log file opened by the launcher per process) and
posix_spawn, and prints for each: the seconds from the first launch to the return of the last
(launch_seconds), to the exit of the last (exit_seconds), and the CPU seconds the launcher used
while launching (launcher_cpu_seconds).
"""

from __future__ import annotations

import argparse
import os
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from processes import ErrorType  # tools/ is on sys.path when run

LOG_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC  # no O_CLOEXEC: it becomes the output of the program exec runs


@dataclass(frozen=True)
class Launch:
    """One process to start: its argument vector (argv[0] a path), its whole environment, and the
    file its standard output and error go to (created or truncated)."""

    argv: list[str]
    env: dict[str, str]
    log: Path


@dataclass(frozen=True)
class Exits:
    """How a set of processes ended: the monotonic time the last one exited, the CPU time (user +
    system) they used together, and each one's exit code (negative: killed by that signal)."""

    last: float
    cpu: float
    codes: list[int]


def spawn_all(launches: Sequence[Launch]) -> list[int]:
    """Start every process of `launches` and return their pids, in order (if one cannot be
    started, those started are killed and reaped). Standard input is inherited; so is any
    descriptor without close-on-exec (Python opens none without it)."""
    pids: list[int] = []
    try:
        for launch in launches:
            actions = [(os.POSIX_SPAWN_OPEN, 1, str(launch.log), LOG_FLAGS, 0o644), (os.POSIX_SPAWN_DUP2, 1, 2)]
            pids.append(os.posix_spawn(launch.argv[0], launch.argv, launch.env, file_actions=actions))
    except BaseException:
        for pid in pids:  # children not reaped yet: their pids cannot have been reused
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        raise
    return pids


def wait_all(pids: Sequence[int], timeout: float, error: ErrorType = TimeoutError) -> Exits:
    """Wait for every child of `pids` and reap it; `error` if some still run after `timeout` s
    (those are killed, through their pidfd, and left for the next wait to reap).

    Each exit is seen through a pidfd the moment it happens: Popen.wait(timeout) polls with
    sleeps of up to 50 ms, which would add up to 50 ms to a run of a few tenths of a second."""
    poller = select.poll()
    pending: dict[int, tuple[int, int]] = {}  # pidfd -> (index, pid)
    for index, pid in enumerate(pids):
        fd = os.pidfd_open(pid)
        poller.register(fd, select.POLLIN)
        pending[fd] = (index, pid)
    codes = [0] * len(pids)
    deadline = time.monotonic() + timeout
    last, cpu = time.monotonic(), 0.0
    try:
        while pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise error(f"{len(pending)} agencies still running after {timeout:g}s")
            for fd, _ in poller.poll(remaining * 1000):
                last = time.monotonic()
                poller.unregister(fd)
                os.close(fd)
                index, pid = pending.pop(fd)
                _, status, usage = os.wait4(pid, 0)
                codes[index] = os.waitstatus_to_exitcode(status)
                cpu += usage.ru_utime + usage.ru_stime
    finally:
        for fd in pending:
            signal.pidfd_send_signal(fd, signal.SIGKILL)
            os.close(fd)
    return Exits(last, cpu, codes)


def _launcher_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _agency_env(index: int, work: Path) -> dict[str, str]:
    """An environment like an agency's: this process's plus ten settings."""
    return {**os.environ, "CLI_CONFIG": str(work / "config.yaml"), "CLI_SERVER_ADDRESS": "127.0.0.1:1",
            "CLI_LOG_LEVEL": "INFO", "CLI_TLS_CA": str(work / "ca.pem"), "CLI_TLS_SERVERNAME": "localhost",
            "CLI_ID": str(index), "CLI_DATA_PATH": str(work / f"agency-{index}.csv"),
            "CLI_TLS_CERT": str(work / f"agency-{index}.pem"), "CLI_TLS_KEY": str(work / f"agency-{index}-key.pem")}


def _with_popen(program: str, count: int, work: Path, keep: list[object]) -> tuple[float, float, float, list[int]]:
    """The former way: a log file opened per process, then Popen with an environment built per
    process. The Popen objects go to `keep`: one collected while its process runs would have the
    process reaped by the next Popen (subprocess's cleanup), before wait_all could see it."""
    logs = [open(work / f"popen-{index}.log", "wb+") for index in range(1, count + 1)]  # noqa: SIM115
    try:
        started, cpu = time.monotonic(), _launcher_cpu()
        procs = [subprocess.Popen([program], stdout=logs[index - 1], stderr=subprocess.STDOUT,
                                  env=_agency_env(index, work)) for index in range(1, count + 1)]
        launched, cpu = time.monotonic(), _launcher_cpu() - cpu
        keep.extend(procs)
        return started, launched, cpu, [proc.pid for proc in procs]
    finally:
        for log in logs:
            log.close()


def _with_spawn(program: str, count: int, work: Path, keep: list[object]) -> tuple[float, float, float, list[int]]:
    """spawn_all over launches prepared before the clock starts."""
    launches = [Launch([program], _agency_env(index, work), work / f"spawn-{index}.log")
                for index in range(1, count + 1)]
    started, cpu = time.monotonic(), _launcher_cpu()
    pids = spawn_all(launches)
    return started, time.monotonic(), _launcher_cpu() - cpu, pids


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=1000, help="processes launched per round and way")
    parser.add_argument("--program", default="/bin/true", help="a program that exits at once")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    program = shutil.which(args.program) or args.program
    work = Path(tempfile.mkdtemp(prefix="lottery-launch-"))
    try:
        for round_ in range(1, args.rounds + 1):
            for name, way in (("popen", _with_popen), ("posix_spawn", _with_spawn)):
                keep: list[object] = []
                started, launched, cpu, pids = way(program, args.count, work, keep)
                exits = wait_all(pids, 120)
                print(f"launch {round_}: way: {name} | processes: {args.count} | "
                      f"launch_seconds: {launched - started:.3f} | "
                      f"exit_seconds: {exits.last - started:.3f} | launcher_cpu_seconds: {cpu:.3f} | "
                      f"children_cpu_seconds: {exits.cpu:.3f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
