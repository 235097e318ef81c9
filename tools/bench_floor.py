#!/usr/bin/env python3
"""The floor under an agency's fixed cost (owns tools/bench_floor.py), for tools/bench.py --floor.

A floor run is a benchmark run with everything but the connection taken out. N bare agencies
(client/cmd/floor, built and run as the agency is) connect at once to a bare central, this file
run as a script. Each agency starts the Go runtime, catches the stop signals, reads its
credentials and makes a mutual TLS 1.3 handshake. The bare central has the same workers, each
with the central's own TLS context (server/lottery/transport.py), and the same identity check.
Each agency then sends one byte, gets it back, and exits.

No bets, no session messages, no storage, no draw, no log lines: what is left is what the design
costs per agency whatever the code does (a Go process, and a verified handshake on each side).
The run is measured as a real one is (tools/bench_launch.py's launcher, wall time from the first
launch to the last exit, the CPU of each side) and printed as a `floor N:` line.
"""

from __future__ import annotations

import argparse
import os
import resource
import select
import selectors
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench_launch import Exits, Launch, spawn_all, wait_all
from bench_run import GO_BUILD, GO_ENV, BenchError, Figures, Side, agency_launches
from processes import children, cpu_seconds, free_port, kill_and_wait

READY = "floor: listening"


def build_floor(side: Side) -> Side:
    """The side with its agency binary replaced by its bare agency, built with the same flags, and
    its own directory for the bare agencies' logs."""
    work = side.work / "floor"
    work.mkdir(parents=True, exist_ok=True)
    binary = work / "agency"
    env = {**os.environ, **GO_ENV}
    try:
        subprocess.run([*GO_BUILD, "-o", str(binary), "./cmd/floor"], cwd=side.checkout / "client", check=True,
                       env=env)
    except subprocess.CalledProcessError as err:
        raise BenchError(f"{side.checkout}: {' '.join(err.cmd)} failed with exit code {err.returncode}") from None
    return replace(side, binary=binary, work=work)


def run_floor(args: argparse.Namespace, bare: Side, run: int, *, tag: str = "") -> Figures:
    """args.agencies bare agencies against the bare central; checked, printed as `floor N: ...`."""
    # The agency's own environment and image settings; a bare agency reads only its server
    # address and credentials (CLI_SERVER_ADDRESS, CLI_TLS_*), so it is given no data set.
    exits, launches, wall, server_cpu = run_against_bare_central(
        args, bare, Path(__file__), [], lambda port: agency_launches(args, bare, Path("/nonexistent"), port, run),
        READY, f"floor {run}")
    failed = [f"agency {a}: exit {code}\n{launch.log.read_text(errors='replace')[-400:]}"
              for a, (code, launch) in enumerate(zip(exits.codes, launches, strict=True), start=1) if code != 0]
    if failed:
        print("\n".join(failed), file=sys.stderr)
        raise BenchError(f"floor {run}{' ' + tag if tag else ''}: {len(failed)} bare agencies failed")
    print(f"floor {run}: {tag}agencies: {args.agencies} | wall_seconds: {wall:.3f} | "
          f"server_cpu_seconds: {server_cpu:.2f} | agencies_cpu_seconds: {exits.cpu:.2f}", flush=True)
    return Figures(wall, server_cpu, exits.cpu, 0.0)


def run_against_bare_central(args: argparse.Namespace, side: Side, script: Path, options: list[str],
                             launches_at: Callable[[int], list[Launch]], ready: str,
                             what: str) -> tuple[Exits, list[Launch], float, float]:
    """Start the bare central `script` (bare_central below, with `options` beside the common
    ones) for `side`, launch `launches_at(port)` once it prints `ready`, and stop it once they
    have exited: their exits, the launches, the wall time from the first launch to the last exit,
    and the bare central's CPU."""
    port = free_port()
    workers = args.workers or os.cpu_count() or 1
    command = [sys.executable, str(script.resolve()), "--port", str(port), "--workers", str(workers),
               "--agencies", str(args.agencies), "--secrets", str(side.secrets), "--server-dir",
               str(side.server_dir), *options]
    central = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert central.stdout is not None
        started_up, _, _ = select.select([central.stdout], [], [], 10)
        if not started_up or central.stdout.readline().strip() != ready:
            raise BenchError(f"{what}: the bare central did not start")
        launches = launches_at(port)
        started = time.monotonic()
        exits = wait_all(spawn_all(launches), 600, error=BenchError)
        server_cpu = sum(cpu_seconds(pid) for pid in [central.pid, *children(central.pid)])
    finally:
        central.terminate()
        try:
            central.wait(10)
        except subprocess.TimeoutExpired:
            kill_and_wait([central.pid, *children(central.pid)], 10)
            central.wait()
    return exits, launches, exits.last - started, server_cpu


# --- the bare central -----------------------------------------------------------------------------


def serve(listener: socket.socket, context: ssl.SSLContext, agencies: int, agency_of: Any) -> None:
    """One worker: accept, handshake without blocking, check the identity as the central does,
    echo the byte, close at the agency's close. Runs until killed."""
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, None)
    while True:
        for key, _ in selector.select():
            if key.data is None:
                accept(listener, context, selector)
            else:
                step(key.fileobj, key.data, selector, agencies, agency_of)  # type: ignore[arg-type]


def accept(listener: socket.socket, context: ssl.SSLContext, selector: selectors.BaseSelector,
           new_state: Any = lambda: {"authenticated": False}) -> None:
    """Accept every waiting connection, each registered with its TLS socket and `new_state()`."""
    while True:
        try:
            sock, _ = listener.accept()
        except BlockingIOError:
            return
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        selector.register(conn, selectors.EVENT_READ, new_state())


def handshake(conn: ssl.SSLSocket, state: Any, selector: selectors.BaseSelector, agencies: int,
              agency_of: Any) -> int | None:
    """One step of the TLS handshake without blocking; the agency once it is done and its
    certificate names an agency of the round (ssl.SSLError if not), else None (wait)."""
    try:
        conn.do_handshake()
    except ssl.SSLWantReadError:
        selector.modify(conn, selectors.EVENT_READ, state)
        return None
    except ssl.SSLWantWriteError:
        selector.modify(conn, selectors.EVENT_WRITE, state)
        return None
    agency: int | None = agency_of(conn.getpeercert())
    if agency is None or not 1 <= agency <= agencies:
        raise ssl.SSLError(f"not an agency of this round: {conn.getpeercert()}")
    selector.modify(conn, selectors.EVENT_READ, state)
    return agency


def step(conn: ssl.SSLSocket, state: dict[str, bool], selector: selectors.BaseSelector, agencies: int,
         agency_of: Any) -> None:
    try:
        if not state["authenticated"]:
            if handshake(conn, state, selector, agencies, agency_of) is None:
                return
            state["authenticated"] = True
        data = conn.recv(64)
        if data:
            conn.send(data)  # one byte into an empty send buffer: it cannot block
            return
    except ssl.SSLWantReadError:
        return
    except (ssl.SSLError, OSError):
        pass
    selector.unregister(conn)
    conn.close()


def bare_central(description: str, ready: str,
                 prepare: Callable[[argparse.Namespace, socket.socket, ssl.SSLContext, Any], Callable[[], None]],
                 options: Callable[[argparse.ArgumentParser], None] = lambda parser: None) -> int:
    """A bare central's process: its arguments (`options` adds its own), the side's TLS context
    and identity (its server/lottery/transport.py), the listening socket, the workers forked on it,
    the line `ready` once they are, and their stop on SIGTERM. `prepare(args, listener, context,
    transport)` runs before the fork (imports belong there, paid once) and returns what each
    worker runs until it is killed."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--agencies", type=int, required=True)
    parser.add_argument("--secrets", type=Path, required=True)
    parser.add_argument("--server-dir", type=Path, required=True)
    options(parser)
    args = parser.parse_args()
    sys.path.insert(0, str(args.server_dir))
    from lottery import transport  # the side's own TLS context and identity

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    context = transport.server_context(args.secrets / "ca.pem", args.secrets / "server.pem",
                                       args.secrets / "server-key.pem")
    listener = socket.create_server(("127.0.0.1", args.port), backlog=max(1024, args.agencies))
    listener.setblocking(False)
    work = prepare(args, listener, context, transport)
    stops = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stops)  # for sigwait below
    workers = []
    for _ in range(args.workers):
        pid = os.fork()
        if pid == 0:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, stops)
            try:
                work()
            finally:
                os._exit(1)
        workers.append(pid)
    print(ready, flush=True)
    signal.sigwait(stops)
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    return 0


def main() -> int:
    return bare_central("The bare central of tools/bench.py --floor.", READY,
                        lambda args, listener, context, transport:
                        lambda: serve(listener, context, args.agencies, transport.agency_of))


if __name__ == "__main__":
    sys.exit(main())
