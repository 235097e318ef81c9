"""The command line (owns tools/chaos/cli.py): argparse, then `main`, which prepares what the
chosen faults need (the agency binary, the Docker images, root), makes every run of every fault
with its own seed, prints each run's line and the final table, and returns the exit code: 0 all
correct, 1 a run failed, 2 the harness could not go on, 130 interrupted (SIGTERM or Ctrl-C)."""

from __future__ import annotations

import argparse
import os
import random
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import __doc__ as OVERVIEW
from .checker import RunResult
from .common import STOP, HarnessError, Interrupted, RunProblem, record_signals
from .compose import COMPOSE_FILE, build_images, run_compose
from .faults import DOCKER, FAULTS, PROCESSES, TMPFS, Fault
from .local import build_agency_binary, run_local
from .report import report_run, run_report, summarize
from .workload import ROWS_PER_AGENCY

INTERRUPTED = 130


@dataclass
class Options:
    runs: int
    faults: list[str]
    seed: int
    rows: int
    keep: bool


def parse_args(argv: list[str] | None) -> Options:
    names = ",".join(FAULTS)
    parser = argparse.ArgumentParser(prog="chaos", description=OVERVIEW,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20, help="runs per fault (default 20)")
    parser.add_argument("--faults", default=names, help=f"comma list out of {names} (default all)")
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


def run_seed(seed: int, fault: str, run: int) -> int:
    return random.Random(f"{seed}:{fault}:{run}").randrange(1 << 32)


def one_run(fault: Fault[Any], run: int, options: Options, work: Path, binary: Path | None) -> RunResult:
    """One run of `fault` by the driver its needs name; its directory is kept if it failed."""
    seed = run_seed(options.seed, fault.name, run)
    result = RunResult(fault.name, run, seed)
    run_dir = work / f"{fault.name}-{run}"
    run_dir.mkdir(parents=True)
    rng = random.Random(seed)
    try:
        if DOCKER in fault.needs:
            run_compose(fault.inject, result, run_dir, options.rows, rng)
        else:
            assert binary is not None, "the agency binary is built for every fault that needs processes"
            run_local(fault.inject, TMPFS in fault.needs, result, run_dir, binary, options.rows, rng)
    except RunProblem as err:
        result.problems.append(str(err))
    if result.ok and not options.keep:
        shutil.rmtree(run_dir, ignore_errors=True)
    else:
        result.kept = run_dir
        (run_dir / "result.txt").write_text(run_report(result, options.runs) + "\n", encoding="utf-8")
    return result


def prepare(faults: list[Fault[Any]], work: Path) -> Path | None:
    """What the faults need, before any run: root for a tmpfs, the Docker images, the agency
    binary (HarnessError if one cannot be had); the binary, if a fault runs processes."""
    needs = frozenset().union(*(fault.needs for fault in faults))
    on_tmpfs = [fault.name for fault in faults if TMPFS in fault.needs]
    if on_tmpfs and os.geteuid() != 0:
        names = ", ".join(on_tmpfs)
        raise HarnessError(f"{names} mounts a tmpfs and needs root (run as root, or leave out {names})")
    binary = build_agency_binary(work) if PROCESSES in needs else None
    if DOCKER in needs:
        build_images()
    return binary


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    record_signals()
    faults = [FAULTS[name] for name in options.faults]
    work = Path(tempfile.mkdtemp(prefix="lottery-chaos-"))
    print(f"chaos: seed {options.seed} | faults {','.join(options.faults)} | runs per fault {options.runs} | "
          f"work dir {work}", flush=True)
    started = time.monotonic()
    results: list[RunResult] = []
    aborted = None
    try:
        binary = prepare(faults, work)
        for fault in faults:
            for run in range(1, options.runs + 1):
                STOP.check()  # a signal recorded between runs ends the session here
                result = one_run(fault, run, options, work, binary)
                results.append(result)
                report_run(result, options.runs)
    except HarnessError as err:
        aborted = str(err)
    except (Interrupted, KeyboardInterrupt):  # the runs' finally blocks have cleaned up
        aborted = "interrupted"
    finally:
        COMPOSE_FILE.unlink(missing_ok=True)
    code = summarize(results, options.faults, options.seed, options.keep, work, time.monotonic() - started, aborted)
    return INTERRUPTED if aborted == "interrupted" else code
