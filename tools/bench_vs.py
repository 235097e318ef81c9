"""The side-by-side benchmark (owns tools/bench_vs.py): tools/bench.py --vs CHECKOUT compares
this checkout with another one of the project (`git worktree add /tmp/base <commit>`), in one
sitting, on the same data set.

Each side runs its own central (CHECKOUT/server/main.py), its own agency binary (built from
CHECKOUT/client with the same flags as this one's: the Dockerfile's) with its own config.yaml and
the environment its own image sets (the ENV lines of CHECKOUT/client/Dockerfile), and its own
credentials, issued by its own client/cmd/certs. The runs alternate, this checkout
then the other, --runs pairs, so that a change in the machine's load falls on both sides alike;
every run is checked as a plain run is. It prints each run's `run N: side: this|other | ...` line,
one `median (range) of N runs, side: ...` line per side, a `ratio this/other, median of N pairs:`
line, then the comparison as a Markdown table to paste into docs/benchmarks.md: per side the
median and range of each figure, and the median over the pairs of the ratio this/other (below 1:
this checkout is faster or smaller). With --floor a floor run (tools/bench_floor.py) follows each
pair, and it also prints the floor runs' medians and the median of the ratios floor/other: the
floor under the per-agency cost, set against the code compared with.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench_floor import build_floor, run_floor
from bench_floor_bets import run_floor_bets
from bench_profile import report
from bench_run import ROOT, Figures, Side, build_side, prepare, run_once


@dataclass(frozen=True)
class Figure:
    """One row of the table: its name in the `key: value` lines and in the table, how to take
    it from a run's Figures, and how many decimals to print."""

    key: str
    title: str
    value: Callable[[Figures], float]
    decimals: int


def figures(bets: int) -> list[Figure]:
    return [
        Figure("wall_seconds", "wall (s)", lambda f: f.wall, 3),
        Figure("bets_per_second", "bets per second", lambda f: bets / f.wall, 0),
        Figure("server_cpu_seconds", "server CPU (s)", lambda f: f.server_cpu, 2),
        Figure("agencies_cpu_seconds", "agencies' CPU (s)", lambda f: f.agencies_cpu, 2),
        Figure("server_peak_memory_mib", "server memory, sum of peak RSS (MiB)", lambda f: f.server_memory_mib, 1),
        Figure("server_peak_pss_mib", "server memory, peak of summed PSS (MiB)", lambda f: f.server_pss_mib, 1),
    ]


def number(value: float, decimals: int) -> str:
    return f"{value:,.{decimals}f}"


def spread(values: list[float], decimals: int) -> str:
    """The median, then the range in parentheses."""
    return (f"{number(statistics.median(values), decimals)} "
            f"({number(min(values), decimals)}-{number(max(values), decimals)})")


def ratio(pairs: list[tuple[Figures, Figures]], figure: Figure) -> float:
    """The median over the pairs of this run's figure over the other run's (1.0 when both are 0)."""
    ratios = []
    for this, other in pairs:
        mine, theirs = figure.value(this), figure.value(other)
        ratios.append(mine / theirs if theirs else (1.0 if not mine else float("inf")))
    return statistics.median(ratios)


TIMES = ("wall_seconds", "server_cpu_seconds", "agencies_cpu_seconds")  # what a floor run also has (no bets, no memory)


def medians(results: list[Figures]) -> str:
    """The median (range) of each time over `results`: `wall_seconds: ... | ...`."""
    return " | ".join(f"{figure.key}: {spread([figure.value(r) for r in results], 3)}"
                      for figure in figures(0) if figure.key in TIMES)


def floor_summary(runs: list[tuple[Figures, Figures]], against: str, floor: str = "floor") -> str:
    """Two lines: the floor runs' medians (ranges), and the median over the runs of the floor's
    figure over the real run's (`against`: this, or the other checkout with --vs) beside it:
    `runs` pairs each floor run with its real run, as `ratio` takes a pair. `floor`: which floor
    (`floor`, or `floor-bets` for the per-bet floor)."""
    ratios = " | ".join(f"{figure.key}: {ratio(runs, figure):.3f}" for figure in figures(0) if figure.key in TIMES)
    return (f"median (range) of {len(runs)} {floor} runs: {medians([run for run, _ in runs])}\n"
            f"ratio {floor}/{against}, median of {len(runs)} runs: {ratios}")


def table(args: argparse.Namespace, sides: tuple[Side, Side], pairs: list[tuple[Figures, Figures]]) -> str:
    """The comparison as Markdown: a heading line, then one row per figure."""
    this, other = sides
    lines = [f"{args.bets:,} bets, {args.agencies} agencies, workers {args.workers or 'one per CPU'}, "
             f"{len(pairs)} pair{'s' if len(pairs) != 1 else ''} of runs (this checkout first in each); "
             "median (range)",
             "",
             f"| figure | this: {this.label} | other: {other.label} | this/other (median of pairs) |",
             "| :----- | ---: | ---: | ---: |"]
    for figure in figures(args.bets):
        lines.append(f"| {figure.title} | {spread([figure.value(p[0]) for p in pairs], figure.decimals)} | "
                     f"{spread([figure.value(p[1]) for p in pairs], figure.decimals)} | "
                     f"{ratio(pairs, figure):.3f} |")
    return "\n".join(lines)


def compare(args: argparse.Namespace, work: Path) -> None:
    """Build both sides, run them alternately args.runs times each, print the lines and the table."""
    data, expected = prepare(args.agencies, args.bets, work)
    sides = (build_side("this", ROOT, work / "this", args.agencies),
             build_side("other", args.vs, work / "other", args.agencies))
    print(f"vs: this: {ROOT} ({sides[0].label}) | other: {args.vs} ({sides[1].label})", flush=True)
    bare = build_floor(sides[0]) if args.floor else None
    pairs, floors, bets_floors = [], [], []
    for run in range(1, args.runs + 1):
        results = [run_once(args, side, data, expected, run, tag=f"side: {side.name} | ",
                            profile=None if args.profile is None else args.profile / side.name / f"run-{run}")
                   for side in sides]
        pairs.append((results[0], results[1]))
        if bare is not None:
            floors.append(run_floor(args, bare, run))
        if args.floor_bets:
            bets_floors.append(run_floor_bets(args, sides[0], data, run))
    rows = figures(args.bets)
    for index, side in enumerate(sides):
        values = " | ".join(f"{figure.key}: {spread([figure.value(p[index]) for p in pairs], figure.decimals)}"
                            for figure in rows)
        print(f"median (range) of {args.runs} runs, side: {side.name}: {values}")
    print(f"ratio this/other, median of {args.runs} pairs: "
          + " | ".join(f"{figure.key}: {ratio(pairs, figure):.3f}" for figure in rows))
    if floors:
        print(floor_summary([(floor, pair[1]) for floor, pair in zip(floors, pairs, strict=True)], "other"))
    if bets_floors:
        print(floor_summary([(floor, pair[1]) for floor, pair in zip(bets_floors, pairs, strict=True)], "other",
                            "floor-bets"))
    print()
    print(table(args, sides, pairs))
    if args.profile is not None:
        for side in sides:
            print()
            print(report(args.profile / side.name, f"{side.name} ({side.label})"))
