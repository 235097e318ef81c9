"""One benchmark run and what it needs (owns tools/bench_run.py), for tools/bench.py and
tools/bench_vs.py: a checkout made ready to run (`Side`: its agency binary built as the
Dockerfile builds it, the credentials its own client/cmd/certs issues, its server/), the data set
and each agency's winners, `run_once` (the central, every agency at once, the checks, the figures
and the `run N:` line) and `measure_restart` (the `restart N:` line)."""

from __future__ import annotations

import argparse
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench_launch import Launch, spawn_all, wait_all
from bench_memory import PssSampler
from bench_profile import hook_env
from processes import Central, central_env, children, cpu_seconds, free_port, peak_rss_kib

ROOT = Path(__file__).resolve().parents[1]
# The agency binary as client/Dockerfile builds it (the shipped one): static, vendored modules,
# no file system paths, no symbol table or debug information.
GO_BUILD = ["go", "build", "-mod=vendor", "-trimpath", "-ldflags=-s -w"]
GO_ENV = {"CGO_ENABLED": "0"}
WINNERS = re.compile(r"action: consulta_ganadores \| result: success \| cant_ganadores: (\d+)")


class BenchError(Exception):
    """A run that could not be measured or was not correct; bench.py exits with its message."""


@dataclass(frozen=True)
class Figures:
    """One run's figures (memory in MiB: see bench_memory for what each sum means)."""

    wall: float
    server_cpu: float
    agencies_cpu: float
    server_memory_mib: float
    server_pss_mib: float = 0.0


@dataclass(frozen=True)
class Side:
    """A checkout ready to be benchmarked: the agency binary built from its client/, credentials
    for its central and agencies issued by its client/cmd/certs, its server/ and client/config.yaml,
    and `work`, the directory its runs write into (storage-N/, server-N.log, agency-N-A.log)."""

    name: str
    checkout: Path
    work: Path
    binary: Path
    secrets: Path
    label: str
    image_env: dict[str, str]  # what its client/Dockerfile's image sets (ENV): its agencies run with it

    @property
    def server_dir(self) -> Path:
        return self.checkout / "server"

    @property
    def client_config(self) -> Path:
        return self.checkout / "client" / "config.yaml"


def describe(checkout: Path) -> str:
    """The checkout's commit, abbreviated, with `+changes` if tracked files differ from it."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(checkout), *args], capture_output=True, text=True,
                              check=True).stdout.strip()
    try:
        commit = git("rev-parse", "--short", "HEAD")
        return commit + ("+changes" if git("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.CalledProcessError):
        return checkout.name


def build_side(name: str, checkout: Path, work: Path, agencies: int) -> Side:
    """Build `checkout`'s agency binary and issue its credentials for `agencies` agencies into `work`."""
    work.mkdir(parents=True, exist_ok=True)
    client = checkout / "client"
    env = {**os.environ, **GO_ENV}
    try:
        subprocess.run([*GO_BUILD, "-o", str(work / "client"), "."], cwd=client, check=True, env=env)
        # Mutual TLS, as in production: credentials for the server and every agency, issued by the
        # checkout's own issuing code into the temporary directory.
        subprocess.run(["go", "run", "-mod=vendor", "./cmd/certs", "-dir", str(work / "secrets"), "-agencies",
                        str(agencies)], cwd=client, check=True, stdout=subprocess.DEVNULL, env=env)
        # The central starts from compiled modules, as in its image (server/Dockerfile): else each
        # start would compile them again under PYTHONDONTWRITEBYTECODE (about 30 ms of its CPU).
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(checkout / "server")], check=True,
                       stdout=subprocess.DEVNULL)
    except subprocess.CalledProcessError as err:
        raise BenchError(f"{name} ({checkout}): {' '.join(err.cmd)} failed with exit code {err.returncode}") from None
    image_env = dockerfile_env(client / "Dockerfile")
    return Side(name, checkout, work, work / "client", work / "secrets", describe(checkout), image_env)


def dockerfile_env(dockerfile: Path) -> dict[str, str]:
    """The variables the final stage of `dockerfile` sets with ENV (`ENV K=V K2=V2` lines, the only
    form the project's Dockerfiles use): the agency's image runs it with them, so a side's agencies
    run with its own (GOMAXPROCS=1 since issue 14; the code before set none)."""
    env: dict[str, str] = {}
    for line in dockerfile.read_text(encoding="utf-8").splitlines():
        instruction, _, rest = line.strip().partition(" ")
        if instruction.upper() == "FROM":
            env = {}  # a new stage: the build stage's variables are not the image's
        elif instruction.upper() == "ENV":
            for word in shlex.split(rest):
                key, sep, value = word.partition("=")
                if not sep:
                    raise BenchError(f"{dockerfile}: ENV {word!r}: only the KEY=VALUE form is read here")
                env[key] = value
    return env


def prepare(agencies: int, bets: int, work: Path) -> tuple[Path, dict[int, int]]:
    """The data set of `agencies` agencies and `bets` bets in `work` (this checkout's
    tools/gen_data.py), and each agency's winners."""
    data = work / f"data-{agencies}"
    subprocess.run([sys.executable, str(ROOT / "tools" / "gen_data.py"), "--agencies", str(agencies),
                    "--bets", str(bets), "--out", str(data)], check=True, stdout=subprocess.DEVNULL)
    expected = {}
    for agency in range(1, agencies + 1):
        expected[agency] = len(re.findall(rb",7574\r?\n", (data / f"agency-{agency}.csv").read_bytes()))
    return data, expected


def central(args: argparse.Namespace, side: Side, storage: Path, log_path: Path,
            profile: Path | None = None) -> Central:
    """The side's central on a free port with the bench's settings, profiled into `profile` if given."""
    port = free_port()
    settings = hook_env(profile) if profile is not None else {}
    env = central_env(port, free_port(port), storage, args.agencies, side.secrets, WORKERS=args.workers,
                      LOGGING_LEVEL="INFO", WORKER_CONNECTIONS=max(256, args.agencies), **settings)
    return Central(env, log_path, server_dir=side.server_dir)


def _error(message: str) -> BenchError:
    return BenchError(message)


def measure_restart(args: argparse.Namespace, side: Side, storage: Path, run: int) -> None:
    """Start the central on a storage left by a killed one; time it and weigh its processes."""
    server = central(args, side, storage, storage.parent / f"restart-{run}.log")
    journal = (storage / "journal.log").stat().st_size
    started = time.monotonic()
    proc = server.launch()
    try:
        server.wait_listening(60, error=_error, interval=0.01)
        listening = time.monotonic() - started
        server.wait_answering(60, error=_error, interval=0.01)
        answered = time.monotonic() - started
        time.sleep(0.5)  # the workers have folded the journal by now
        memory = max(peak_rss_kib(pid) for pid in [proc.pid, *children(proc.pid)])
    finally:
        server.kill(30)
    print(f"restart {run}: batches: {args.restart_batches} | journal_bytes: {journal} | "
          f"listen_seconds: {listening:.3f} | first_echo_seconds: {answered:.3f} | "
          f"largest_process_peak_memory_mib: {memory / 1024:.1f}")


def agency_launches(args: argparse.Namespace, side: Side, data: Path, port: int, run: int) -> list[Launch]:
    """Every agency's argument vector, environment and log file, prepared before the clock starts."""
    env = {**os.environ, "CLI_CONFIG": str(side.client_config), "CLI_SERVER_ADDRESS": f"127.0.0.1:{port}",
           "CLI_LOG_LEVEL": "INFO", "CLI_TLS_CA": str(side.secrets / "ca.pem"), "CLI_TLS_SERVERNAME": "localhost"}
    if args.batch_max_amount:
        env["CLI_BATCH_MAXAMOUNT"] = str(args.batch_max_amount)
    if args.window:
        env["CLI_BATCH_WINDOW"] = str(args.window)
    return [Launch([str(side.binary)],
                   {**env, **side.image_env, "CLI_ID": str(a), "CLI_DATA_PATH": str(data / f"agency-{a}.csv"),
                    "CLI_TLS_CERT": str(side.secrets / f"agency-{a}.pem"),
                    "CLI_TLS_KEY": str(side.secrets / f"agency-{a}-key.pem")},
                   side.work / f"agency-{run}-{a}.log")
            for a in range(1, args.agencies + 1)]


def run_once(args: argparse.Namespace, side: Side, data: Path, expected: dict[int, int], run: int, *,
             tag: str = "", profile: Path | None = None) -> Figures:
    """One run: the side's central, then every agency at once; checked, printed as `run N: <tag>...`."""
    storage = side.work / f"storage-{run}"
    server = central(args, side, storage, side.work / f"server-{run}.log", profile)
    problems = []
    try:
        proc = server.start(10, error=_error)
        time.sleep(0.2)  # let the workers finish starting
        launches = agency_launches(args, side, data, server.port, run)
        sampler = PssSampler(proc.pid, args.pss_interval).start()
        try:
            started = time.monotonic()
            exits = wait_all(spawn_all(launches), 600, error=_error)
        finally:
            pss = sampler.stop()
        wall = exits.last - started
        server_pids = server.pids()
        memory = sum(peak_rss_kib(pid) for pid in server_pids)
        server_cpu = sum(cpu_seconds(pid) for pid in server_pids)
        for agency, (code, launch) in enumerate(zip(exits.codes, launches, strict=True), start=1):
            text = launch.log.read_text(encoding="utf-8", errors="replace")
            found = WINNERS.search(text)
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
        raise BenchError(f"run {run}{' ' + tag if tag else ''}: the run was not correct; figures not reported")
    print(f"run {run}: {tag}bets: {args.bets} | agencies: {args.agencies} | wall_seconds: {wall:.3f} | "
          f"bets_per_second: {args.bets / wall:,.0f} | server_cpu_seconds: {server_cpu:.2f} | "
          f"agencies_cpu_seconds: {exits.cpu:.2f} | server_peak_memory_mib: {memory / 1024:.1f} | "
          f"winners: {sum(expected.values())} | server_peak_pss_mib: {pss / 1024:.1f}", flush=True)
    return Figures(wall, server_cpu, exits.cpu, memory / 1024, pss / 1024)
