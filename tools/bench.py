#!/usr/bin/env python3
"""Benchmark: the real server and N real Go agencies as processes on 127.0.0.1 (owns the command
line of tools/bench.py; a run is in bench_run.py, the side-by-side in bench_vs.py).

    python tools/bench.py                                  # 5 agencies, 80,000 bets (the default set's size)
    python tools/bench.py --agencies 50 --bets 1000000
    python tools/bench.py --vs /tmp/base                   # this checkout against another one: a table
    python tools/bench.py --restart-batches 3000000        # restart over 3,000,000 one-bet batches
    python tools/bench.py --sweep                          # 5 to 1,000 agencies, 1,000,000 bets: a table
    python tools/bench.py --profile /tmp/prof              # and the central's top 25 functions by CPU time
    python tools/bench.py --agencies 1000 --bets 1000000 --floor  # and the floor under the per-agency cost

It generates a data set with tools/gen_data.py into a temporary directory, builds the agency
binary as client/Dockerfile does (CGO_ENABLED=0 go build -mod=vendor -trimpath -ldflags='-s -w':
the shipped binary, run with the ENV its image sets: GOMAXPROCS=1), starts the server with its
storage in that directory (fsync'd acknowledgements, as in production), launches every agency at
once (posix_spawn, environments prepared beforehand: tools/bench_launch.py) and waits for all of
them. It checks the result (every agency exits 0 and reports the winners its file holds, every bet
is stored once), then prints a `run N:` line: bets, agencies, wall seconds from the launch of the
first agency to the exit of the last one (so it includes every connection, batch, fsync, the draw
and every winners reply), bets per second, the CPU time (user + system) of the server's processes
and of the agencies together (on a machine with few cores they compete, so CPU time shows where
wall time goes), and the server's memory, two ways (tools/bench_memory.py):

- server_peak_memory_mib: the sum of the peak resident set (VmHWM) of the supervisor and each
  worker. Pages the workers share with the supervisor since the fork, and shared libraries, count
  once per process: it overstates what the central holds, more so with more workers.
- server_peak_pss_mib: the peak of the sum of their proportional set sizes (Pss: a page shared by
  n processes counts 1/n in each), sampled every --pss-interval seconds (0.05) in a thread from
  the launch of the agencies until the last exits, plus once at the end: the memory the central
  as a whole holds at once. Sampling can miss a peak shorter than the interval.

With --runs N it ends with the median and range of each time over the runs.

With --vs CHECKOUT it compares this checkout with another checkout of the project (e.g. `git
worktree add /tmp/base <commit>`) on the same data set: each side with its own central, agency
binary (same build flags, run with the ENV its own image sets) and credentials, the runs
alternating (--runs pairs, default 5), and ends with the medians, the median of the pairwise
ratios this/other and a Markdown table (tools/bench_vs.py). With --profile DIR the central's
supervisor and workers run under cProfile (CPU time; tools/profile_hook/) writing into DIR, and it
ends with the top 25 functions by internal time, merged over processes and runs (per side with
--vs); profiled figures are slower.

With --sweep [COUNTS] it runs the same benchmark for each number of agencies in COUNTS (default
5,10,50,100,500,1000; --bets is the total, default 1,000,000 for a sweep) and ends with a table of
bets per second, server CPU and peak memory per count, then the same figures as a Mermaid
`xychart-beta` block (bets per second against agencies) to paste into docs/benchmarks.md.

With --floor each run is followed by a floor run (tools/bench_floor.py): as many bare agencies
(client/cmd/floor) against a bare central, each only starting, reading its credentials and making
the mutual TLS 1.3 handshake, to measure what the design costs per agency whatever the code does.
It prints a `floor N:` line per run and ends with their medians and the median of the ratios
floor/this (with --vs, floor/other: the floor against the code compared with).

With --floor-bets each run is followed by a per-bet floor run (tools/bench_floor_bets.py): the
same agencies and data against a bare central that only checks each BET by the rules, stores its
lines with one write and one fdatasync per loop turn, and searches them for winners: what the
central must spend per bet whatever the rest of its code does. It prints a `floor-bets N:` line
per run, then their medians and the ratios floor-bets/this (or /other).

With --restart-batches N it measures a restart instead: N bets sent as N one-bet batches by
--agencies agencies (batch.maxAmount 1; the journal is checkpointed as it grows), then the
central is killed (SIGKILL, supervisor and workers) and started again on the same storage. It
prints the journal's size, the seconds from the start to `action: listen` and to the first ECHO
answered (on the health port), and the peak resident memory of the largest process of the
restarted central. Everything runs with mutual TLS, as in production: the credentials are issued
into the temporary directory by the checkout's issuing code (client/cmd/certs).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from bench_floor import build_floor, run_floor
from bench_floor_bets import run_floor_bets
from bench_profile import report
from bench_run import ROOT, BenchError, build_side, measure_restart, prepare, run_once
from bench_vs import compare, floor_summary, medians

SWEEP = "5,10,50,100,500,1000"
SWEEP_BETS = 1_000_000
PSS_INTERVAL = 0.05
VS_RUNS = 5


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agencies", type=int, default=5)
    parser.add_argument("--bets", type=int, default=80_000, help="total over all agencies")
    parser.add_argument("--workers", type=int, default=0, help="server WORKERS (0 = one per CPU)")
    parser.add_argument("--batch-max-amount", type=int, default=0, help="agency batch.maxAmount (0 = config.yaml's)")
    parser.add_argument("--window", type=int, default=0, help="agency batch.window (0 = config.yaml's)")
    parser.add_argument("--runs", type=int, default=None,
                        help=f"repeat; report each run, then the median and range (default 1; {VS_RUNS} with --vs)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory and print it")
    parser.add_argument("--restart-batches", type=int, default=0, metavar="N",
                        help="measure a restart over N one-bet batches instead (implies --batch-max-amount 1)")
    parser.add_argument("--sweep", nargs="?", const=SWEEP, default=None, metavar="COUNTS",
                        help=f"run for each number of agencies in COUNTS (default {SWEEP}) and print a table")
    parser.add_argument("--vs", type=Path, default=None, metavar="CHECKOUT",
                        help="compare with another checkout of the project, runs alternating, and print a table")
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR",
                        help="profile the central's processes (cProfile, CPU time) into DIR; print the top functions")
    parser.add_argument("--floor", action="store_true",
                        help="follow each run with a floor run: bare agencies and central, handshakes only")
    parser.add_argument("--floor-bets", action="store_true",
                        help="follow each run with a per-bet floor run: the agencies, and a bare central that "
                             "only checks, stores, syncs and searches each bet")
    parser.add_argument("--pss-interval", type=float, default=PSS_INTERVAL, metavar="SECONDS",
                        help=f"sample the central's Pss every SECONDS during a run (default {PSS_INTERVAL}; "
                             "0: only at the launch and at the end)")
    args = parser.parse_args(argv)
    if args.vs is not None:
        if args.sweep is not None or args.restart_batches:
            parser.error("--vs compares plain runs: it does not go with --sweep or --restart-batches")
        args.vs = args.vs.resolve()
        if not (args.vs / "server" / "main.py").is_file() or not (args.vs / "client" / "go.mod").is_file():
            parser.error(f"--vs {args.vs}: not a checkout of the project (no server/main.py or client/go.mod)")
    if (args.floor or args.floor_bets) and (args.sweep is not None or args.restart_batches):
        parser.error("--floor and --floor-bets go with plain runs and --vs, not with --sweep or --restart-batches")
    if args.profile is not None and args.restart_batches:
        parser.error("--profile does not go with --restart-batches (a killed central writes no profile)")
    if args.runs is None:
        args.runs = VS_RUNS if args.vs is not None else 1
    if args.runs < 1 or args.pss_interval < 0:
        parser.error("--runs must be at least 1 and --pss-interval not negative")
    if args.sweep is not None:
        try:
            args.counts = [int(count) for count in args.sweep.split(",")]
        except ValueError:
            parser.error(f"--sweep takes numbers of agencies separated by commas, not {args.sweep!r}")
        if args.bets == parser.get_default("bets"):
            args.bets = SWEEP_BETS
        if not args.counts or min(args.counts) < 1 or args.bets < max(args.counts):
            parser.error("need at least one agency per count and one bet per agency")
        return args
    if args.restart_batches:
        args.bets, args.batch_max_amount = args.restart_batches, 1
        args.window = args.window or 256
    if args.agencies < 1 or args.bets < args.agencies:
        parser.error("need at least one agency and one bet per agency")
    return args


def main() -> int:
    args = parse()
    work = Path(tempfile.mkdtemp(prefix="lottery-bench-"))
    try:
        if args.vs is not None:
            compare(args, work)
        elif args.sweep is not None:
            sweep(args, work)
        else:
            bench(args, work)
    except BenchError as err:
        print(f"bench: {err}", file=sys.stderr)
        print(f"kept: {work}", file=sys.stderr)
        return 1
    if args.keep:
        print(f"kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def bench(args: argparse.Namespace, work: Path) -> None:
    """--runs runs of this checkout (or a restart measured --runs times after one run)."""
    data, expected = prepare(args.agencies, args.bets, work)
    side = build_side("this", ROOT, work, args.agencies)
    if args.restart_batches:
        run_once(args, side, data, expected, 1)
        for run in range(1, args.runs + 1):
            measure_restart(args, side, work / "storage-1", run)
        return
    bare = build_floor(side) if args.floor else None
    results, floors, bets_floors = [], [], []
    for run in range(1, args.runs + 1):
        results.append(run_once(args, side, data, expected, run, profile=profile_dir(args, f"run-{run}")))
        if bare is not None:
            floors.append(run_floor(args, bare, run))
        if args.floor_bets:
            bets_floors.append(run_floor_bets(args, side, data, run))
    if args.runs > 1:
        print(f"median (range) of {args.runs} runs: " + medians(results))
    if floors:
        print(floor_summary(list(zip(floors, results, strict=True)), "this"))
    if bets_floors:
        print(floor_summary(list(zip(bets_floors, results, strict=True)), "this", "floor-bets"))
    if args.profile is not None:
        print(report(args.profile, str(ROOT)))


def profile_dir(args: argparse.Namespace, name: str) -> Path | None:
    return None if args.profile is None else args.profile / name


def sweep(args: argparse.Namespace, work: Path) -> None:
    """The benchmark for each number of agencies in args.counts, then a table and a chart."""
    side = build_side("this", ROOT, work, max(args.counts))
    rows = []
    for count in args.counts:
        args.agencies = count
        data, expected = prepare(args.agencies, args.bets, work)
        results = [run_once(args, side, data, expected, run, profile=profile_dir(args, f"{count}-run-{run}"))
                   for run in range(1, args.runs + 1)]
        wall = statistics.median(r.wall for r in results)
        rows.append((count, args.bets / wall, statistics.median(r.server_cpu for r in results),
                     statistics.median(r.agencies_cpu for r in results),
                     max(r.server_memory_mib for r in results), wall))
        shutil.rmtree(data, ignore_errors=True)
        for storage in work.glob("storage-*"):
            shutil.rmtree(storage, ignore_errors=True)
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
    if args.profile is not None:
        print(report(args.profile, str(ROOT)))


if __name__ == "__main__":
    sys.exit(main())
