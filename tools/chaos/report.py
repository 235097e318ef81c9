"""The report (owns tools/chaos/report.py): one line per run (with its problems), the final table
fault | runs | bets expected | bets stored | lost | duplicated | slowest recovery (s), and the
summary that ends a session with its exit code."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from .checker import RunResult

TABLE_HEADER = ("fault", "runs", "bets expected", "bets stored", "lost", "duplicated", "slowest recovery (s)")


def run_report(result: RunResult, runs: int) -> str:
    """The run's line, then one indented line per problem."""
    recovery = "-" if result.recovery is None else f"{result.recovery:.2f} s"
    duration = "-" if result.duration is None else f"{result.duration:.1f} s"
    status = "ok" if result.ok else "FAIL"
    lines = [f"{result.fault} run {result.run}/{runs} (seed {result.seed}): {status} | expected {result.expected} | "
             f"stored {result.stored} | lost {result.lost} | duplicated {result.duplicated} | run {duration} | "
             f"recovery {recovery} | {result.description}"]
    lines += [f"    - {problem}" for problem in result.problems]
    return "\n".join(lines)


def report_run(result: RunResult, runs: int) -> None:
    print(run_report(result, runs), flush=True)
    if result.kept is not None and not result.ok:
        print(f"    logs kept in {result.kept}", flush=True)


def table(results: list[RunResult], faults: list[str]) -> str:
    """One row per fault: its runs' sums and the slowest recovery."""
    rows = [TABLE_HEADER]
    for fault in faults:
        mine = [r for r in results if r.fault == fault]
        recoveries = [r.recovery for r in mine if r.recovery is not None]
        rows.append((fault, str(len(mine)), str(sum(r.expected for r in mine)), str(sum(r.stored for r in mine)),
                     str(sum(r.lost for r in mine)), str(sum(r.duplicated for r in mine)),
                     f"{max(recoveries):.2f}" if recoveries else "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(TABLE_HEADER))]
    lines = []
    for number, row in enumerate(rows):
        cells = [cell.ljust(widths[0]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row)]
        lines.append(" | ".join(cells))
        if number == 0:
            lines.append("-+-".join("-" * width for width in widths))
    return "\n".join(lines)


def summarize(results: list[RunResult], faults: list[str], seed: int, keep: bool, work: Path, seconds: float,
              aborted: str | None) -> int:
    """The table, the failed runs and the exit code: 0 only if every run was correct, 1 if one
    failed, 2 if the harness stopped before the end (`aborted` says why)."""
    print()
    print(table(results, faults))
    failed = [r for r in results if not r.ok]
    print(f"\nchaos: {len(results)} runs in {seconds:.1f} s, seed {seed}, {len(failed)} failed")
    for result in failed:
        print(f"  {result.fault} run {result.run} (seed {result.seed}): {len(result.problems)} problem(s); "
              f"logs in {result.kept}")
    if aborted:
        print(f"chaos: error, stopped before the end: {aborted}", file=sys.stderr)
    if failed or aborted or keep:
        print(f"chaos: kept {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    if aborted:
        return 2
    return 1 if failed else 0
