#!/usr/bin/env python3
"""Benchmark: the real server and N real Go agencies as processes on 127.0.0.1.

    python tools/bench.py                                  # 5 agencies, 80,000 bets (the default set's size)
    python tools/bench.py --agencies 50 --bets 1000000
    python tools/bench.py --restart-batches 3000000        # restart over 3,000,000 one-bet batches
    python tools/bench.py --sweep                          # 5 to 1,000 agencies, 1,000,000 bets: a table

With --sweep [COUNTS] it runs the same benchmark for each number of agencies in COUNTS (default
5,10,50,100,500,1000; --bets is the total, default 1,000,000 for a sweep) and ends with a table of
bets per second, server CPU and peak memory per count, then the same figures as a Mermaid
`xychart-beta` block (bets per second against agencies) to paste into docs/benchmarks.md.

It generates a data set with tools/gen_data.py into a temporary directory, builds the agency
binary, starts the server with its storage in that directory (fsync'd acknowledgements, as in
production), launches every agency at once and waits for all of them. It checks the result
(every agency exits 0 and reports the winners its file holds, every bet is stored once), then
prints: bets, agencies, wall seconds from the launch of the first agency to the exit of the
last one (so it includes every connection, batch, fsync, the draw and every winners reply),
bets per second, the CPU time (user + system) of the server's processes and of the agencies
together (on a machine with few cores they compete, so CPU time shows where wall time goes), and
the server's peak memory: the sum of the peak resident set (VmHWM) of the supervisor and its
workers. With --runs N it ends with the median and range of each time over the runs.

With --restart-batches N it measures a restart instead: N bets sent as N one-bet batches by
--agencies agencies (batch.maxAmount 1; the journal is checkpointed as it grows), then the
central is killed (SIGKILL, supervisor and workers) and started again on the same storage. It
prints the journal's size, the seconds from the start to `action: listen` and to the first ECHO
answered (on the health port), and the peak resident memory of the largest process of the
restarted central. Everything runs with mutual TLS, as in production: the credentials are issued
into the temporary directory by the project's issuing code (client/cmd/certs).
"""

from __future__ import annotations

import argparse
import os
import re
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from processes import (  # tools/ is on sys.path when run
    Central,
    central_env,
    children,
    cpu_seconds,
    free_port,
    peak_rss_kib,
)

ROOT = Path(__file__).resolve().parents[1]


SWEEP = "5,10,50,100,500,1000"
SWEEP_BETS = 1_000_000


@dataclass(frozen=True)
class Figures:
    """One run's figures."""

    wall: float
    server_cpu: float
    agencies_cpu: float
    server_memory_mib: float


def fail(message: str) -> SystemExit:
    """How bench.py gives up: exit with `bench: <message>`."""
    return SystemExit(f"bench: {message}")


def wait_all(procs: list[subprocess.Popen[bytes]], timeout: float) -> tuple[float, float]:
    """Wait for every process; return the monotonic time the last one exited and the CPU time
    (user + system) they used together.

    Each exit is seen through a pidfd the moment it happens: Popen.wait(timeout) polls with
    sleeps of up to 50 ms, which would add up to 50 ms to a run of a few tenths of a second."""
    poller = select.poll()
    pending = {}
    for proc in procs:
        fd = os.pidfd_open(proc.pid)
        poller.register(fd, select.POLLIN)
        pending[fd] = proc
    deadline = time.monotonic() + timeout
    last, cpu = time.monotonic(), 0.0
    while pending:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise fail(f"{len(pending)} agencies still running after {timeout:g}s")
        for fd, _ in poller.poll(remaining * 1000):
            last = time.monotonic()
            poller.unregister(fd)
            os.close(fd)
            proc = pending.pop(fd)
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            cpu += usage.ru_utime + usage.ru_stime
    return last, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agencies", type=int, default=5)
    parser.add_argument("--bets", type=int, default=80_000, help="total over all agencies")
    parser.add_argument("--workers", type=int, default=0, help="server WORKERS (0 = one per CPU)")
    parser.add_argument("--batch-max-amount", type=int, default=0, help="agency batch.maxAmount (0 = config.yaml's)")
    parser.add_argument("--window", type=int, default=0, help="agency batch.window (0 = config.yaml's)")
    parser.add_argument("--runs", type=int, default=1, help="repeat; report each run, then the median and range")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory and print it")
    parser.add_argument("--restart-batches", type=int, default=0, metavar="N",
                        help="measure a restart over N one-bet batches instead (implies --batch-max-amount 1)")
    parser.add_argument("--sweep", nargs="?", const=SWEEP, default=None, metavar="COUNTS",
                        help=f"run for each number of agencies in COUNTS (default {SWEEP}) and print a table")
    args = parser.parse_args()
    if args.sweep is not None:
        return sweep(args, parser)
    if args.restart_batches:
        args.bets, args.batch_max_amount = args.restart_batches, 1
        args.window = args.window or 256
    if args.agencies < 1 or args.bets < args.agencies:
        parser.error("need at least one agency and one bet per agency")

    work = Path(tempfile.mkdtemp(prefix="lottery-bench-"))
    data, expected = prepare(args, work)
    binary = work / "client"
    subprocess.run(["go", "build", "-mod=vendor", "-o", str(binary), "."], cwd=ROOT / "client", check=True,
                   env={**os.environ, "CGO_ENABLED": "0"})
    # Mutual TLS, as in production: credentials for the server and every agency, issued by the
    # project's own issuing code into the temporary directory.
    subprocess.run(["go", "run", "-mod=vendor", "./cmd/certs", "-dir", str(work / "secrets"), "-agencies",
                    str(args.agencies)], cwd=ROOT / "client", check=True, stdout=subprocess.DEVNULL,
                   env={**os.environ, "CGO_ENABLED": "0"})
    if args.restart_batches:
        run_once(args, work, data, binary, expected, 1)
        for run in range(1, args.runs + 1):
            measure_restart(args, work / "storage-1", run)
        results = []
    else:
        results = [run_once(args, work, data, binary, expected, run) for run in range(1, args.runs + 1)]
    if results and args.runs > 1:
        print(f"median (range) of {args.runs} runs: " + summary(results))
    if args.keep:
        print(f"kept: {work}")
    else:
        subprocess.run(["rm", "-rf", str(work)], check=False)
    return 0


def summary(results: list[Figures]) -> str:
    figures = []
    for name, values in (("wall_seconds", [r.wall for r in results]),
                         ("server_cpu_seconds", [r.server_cpu for r in results]),
                         ("agencies_cpu_seconds", [r.agencies_cpu for r in results])):
        figures.append(f"{name}: {statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})")
    return " | ".join(figures)


def prepare(args: argparse.Namespace, work: Path) -> tuple[Path, dict[int, int]]:
    """The data set of args.agencies agencies and args.bets bets in `work`, and each agency's winners."""
    data = work / f"data-{args.agencies}"
    subprocess.run([sys.executable, str(ROOT / "tools" / "gen_data.py"), "--agencies", str(args.agencies),
                    "--bets", str(args.bets), "--out", str(data)], check=True, stdout=subprocess.DEVNULL)
    expected = {}
    for agency in range(1, args.agencies + 1):
        expected[agency] = len(re.findall(rb",7574\r?\n", (data / f"agency-{agency}.csv").read_bytes()))
    return data, expected


def sweep(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """The benchmark for each number of agencies in args.sweep, then a table and a chart."""
    try:
        counts = [int(count) for count in args.sweep.split(",")]
    except ValueError:
        parser.error(f"--sweep takes numbers of agencies separated by commas, not {args.sweep!r}")
    if args.bets == parser.get_default("bets"):
        args.bets = SWEEP_BETS
    if not counts or min(counts) < 1 or args.bets < max(counts):
        parser.error("need at least one agency per count and one bet per agency")
    work = Path(tempfile.mkdtemp(prefix="lottery-bench-"))
    binary = work / "client"
    subprocess.run(["go", "build", "-mod=vendor", "-o", str(binary), "."], cwd=ROOT / "client", check=True,
                   env={**os.environ, "CGO_ENABLED": "0"})
    subprocess.run(["go", "run", "-mod=vendor", "./cmd/certs", "-dir", str(work / "secrets"), "-agencies",
                    str(max(counts))], cwd=ROOT / "client", check=True, stdout=subprocess.DEVNULL,
                   env={**os.environ, "CGO_ENABLED": "0"})
    rows = []
    for count in counts:
        args.agencies = count
        data, expected = prepare(args, work)
        results = [run_once(args, work, data, binary, expected, run) for run in range(1, args.runs + 1)]
        wall = statistics.median(r.wall for r in results)
        rows.append((count, args.bets / wall, statistics.median(r.server_cpu for r in results),
                     statistics.median(r.agencies_cpu for r in results),
                     max(r.server_memory_mib for r in results), wall))
        subprocess.run(["rm", "-rf", str(data), *(str(p) for p in work.glob("storage-*"))], check=False)
    print(f"\nsweep: {args.bets:,} bets, medians of {args.runs} run(s) per count")
    print("| agencies | bets/s | wall (s) | server CPU (s) | agencies' CPU (s) | server peak memory (MiB) |")
    print("| -------: | -----: | -------: | -------------: | ----------------: | -----------------------: |")
    for count, rate, server_cpu, agencies_cpu, memory, wall in rows:
        print(f"| {count:,} | {rate:,.0f} | {wall:.2f} | {server_cpu:.2f} | {agencies_cpu:.2f} | {memory:.1f} |")
    print("\n```mermaid\nxychart-beta")
    print(f'    title "Bets per second, {args.bets:,} bets, by number of agencies"')
    print(f"    x-axis [{', '.join(str(row[0]) for row in rows)}]")
    print(f'    y-axis "bets per second" 0 --> {int(max(row[1] for row in rows) * 1.2)}')
    print(f"    bar [{', '.join(str(int(row[1])) for row in rows)}]")
    print("```")
    if args.keep:
        print(f"kept: {work}")
    else:
        subprocess.run(["rm", "-rf", str(work)], check=False)
    return 0


def central(args: argparse.Namespace, storage: Path, log_path: Path) -> Central:
    """The central on a free port with the bench's settings (TLS credentials in storage/../secrets)."""
    port = free_port()
    env = central_env(port, free_port(port), storage, args.agencies, storage.parent / "secrets",
                      WORKERS=args.workers, LOGGING_LEVEL="INFO", WORKER_CONNECTIONS=max(256, args.agencies))
    return Central(env, log_path)


def measure_restart(args: argparse.Namespace, storage: Path, run: int) -> None:
    """Start the central on a storage left by a killed one; time it and weigh its processes."""
    server = central(args, storage, storage.parent / f"restart-{run}.log")
    journal = (storage / "journal.log").stat().st_size
    started = time.monotonic()
    proc = server.launch()
    try:
        server.wait_listening(60, error=fail, interval=0.01)
        listening = time.monotonic() - started
        server.wait_answering(60, error=fail, interval=0.01)
        answered = time.monotonic() - started
        time.sleep(0.5)  # the workers have folded the journal by now
        memory = max(peak_rss_kib(pid) for pid in [proc.pid, *children(proc.pid)])
    finally:
        server.kill(30)
    print(f"restart {run}: batches: {args.restart_batches} | journal_bytes: {journal} | "
          f"listen_seconds: {listening:.3f} | first_echo_seconds: {answered:.3f} | "
          f"largest_process_peak_memory_mib: {memory / 1024:.1f}")


def run_once(args: argparse.Namespace, work: Path, data: Path, binary: Path, expected: dict[int, int],
             run: int) -> Figures:
    storage = work / f"storage-{run}"
    server = central(args, storage, work / f"server-{run}.log")
    port = server.port
    try:
        server.start(10, error=fail)
        time.sleep(0.2)  # let the workers finish starting
        agency_env = {**os.environ, "CLI_CONFIG": str(ROOT / "client" / "config.yaml"),
                      "CLI_SERVER_ADDRESS": f"127.0.0.1:{port}", "CLI_LOG_LEVEL": "INFO",
                      "CLI_TLS_CA": str(work / "secrets" / "ca.pem"), "CLI_TLS_SERVERNAME": "localhost"}
        if args.batch_max_amount:
            agency_env["CLI_BATCH_MAXAMOUNT"] = str(args.batch_max_amount)
        if args.window:
            agency_env["CLI_BATCH_WINDOW"] = str(args.window)
        logs = [open(work / f"agency-{run}-{a}.log", "wb+") for a in range(1, args.agencies + 1)]  # noqa: SIM115
        started = time.monotonic()
        agencies = [
            subprocess.Popen([str(binary)], stdout=logs[a - 1], stderr=subprocess.STDOUT,
                             env={**agency_env, "CLI_ID": str(a), "CLI_DATA_PATH": str(data / f"agency-{a}.csv"),
                                  "CLI_TLS_CERT": str(work / "secrets" / f"agency-{a}.pem"),
                                  "CLI_TLS_KEY": str(work / "secrets" / f"agency-{a}-key.pem")})
            for a in range(1, args.agencies + 1)
        ]
        last, agencies_cpu = wait_all(agencies, 600)
        wall = last - started
        codes = [agency.returncode for agency in agencies]
        server_pids = server.pids()
        memory = sum(peak_rss_kib(pid) for pid in server_pids)
        server_cpu = sum(cpu_seconds(pid) for pid in server_pids)
        problems = []
        for agency, (code, log) in enumerate(zip(codes, logs, strict=True), start=1):
            log.seek(0)
            text = log.read().decode("utf-8", "replace")
            log.close()
            found = re.search(r"action: consulta_ganadores \| result: success \| cant_ganadores: (\d+)", text)
            if code != 0 or not found or int(found.group(1)) != expected[agency]:
                problems.append(f"agency {agency}: exit {code}, expected {expected[agency]} winners\n{text[-800:]}")
        with open(storage / "bets.csv", "rb") as bets:
            stored = sum(1 for _ in bets)
        if stored != args.bets:
            problems.append(f"{stored} bets stored, {args.bets} sent")
    finally:
        if args.restart_batches:  # a crash, as the restart will find it
            server.kill(30)
            server_code = 0
        else:
            server_code = server.stop(signal.SIGTERM, 30)
    if server_code != 0:
        problems.append(f"server exit code {server_code}")
    if problems:
        print("\n".join(problems), file=sys.stderr)
        raise fail("the run was not correct; figures not reported")
    print(f"run {run}: bets: {args.bets} | agencies: {args.agencies} | wall_seconds: {wall:.3f} | "
          f"bets_per_second: {args.bets / wall:,.0f} | server_cpu_seconds: {server_cpu:.2f} | "
          f"agencies_cpu_seconds: {agencies_cpu:.2f} | server_peak_memory_mib: {memory / 1024:.1f} | "
          f"winners: {sum(expected.values())}")
    return Figures(wall, server_cpu, agencies_cpu, memory / 1024)


if __name__ == "__main__":
    sys.exit(main())
