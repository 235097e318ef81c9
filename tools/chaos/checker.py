"""The checker (owns tools/chaos/checker.py): what a run produced and whether it was right.

It reads bets.csv with the csv module and compares, per agency, the multiset of stored rows
(their five fields) with the valid rows of the agency's file: lost, duplicated, invalid or
foreign rows. It checks every agency's exit code and the winners its last log states, and times
the recovery: from the end of the fault to the exit of the last agency.
"""

from __future__ import annotations

import collections
import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

from processes import tail

from .workload import AgencyData, Bet5

WINNERS_LINE = re.compile(r"action: consulta_ganadores \| result: success \| cant_ganadores: (\d+)")
Stored = dict[int, collections.Counter[Bet5]]


@dataclass
class FaultEvent:
    """When a fault ended (wall clock) and what it was."""

    ended: float
    landed: bool  # it hit the system mid-run (some agency was still running)
    description: str


@dataclass
class RunResult:
    """One run of one fault: its figures and what was wrong (nothing if it was correct)."""

    fault: str
    run: int
    seed: int
    expected: int = 0
    stored: int = 0
    lost: int = 0
    duplicated: int = 0
    recovery: float | None = None
    started: float | None = None  # wall clock: the agencies were launched
    duration: float | None = None  # from `started` to the exit of the last agency
    problems: list[str] = field(default_factory=list)
    description: str = ""
    kept: Path | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def record(self, event: FaultEvent) -> None:
        """The fault's description, marked if it only landed after the agencies ended."""
        self.description = event.description + ("" if event.landed else " [landed after the agencies ended]")


@dataclass
class AgencyOutcome:
    """What the last process of an agency left: exit code, log, exit time (wall clock)."""

    code: int | None
    log: str
    exited_at: float | None


def read_stored(bets_csv: Path) -> tuple[Stored, list[str]]:
    """bets.csv parsed with the csv module: per agency, a multiset of its five fields."""
    stored: Stored = collections.defaultdict(collections.Counter)
    malformed: list[str] = []
    if not bets_csv.exists():
        return stored, malformed
    with open(bets_csv, encoding="utf-8", errors="replace", newline="") as rows:
        for number, row in enumerate(csv.reader(rows), start=1):
            if len(row) != 6 or not row[0].isdigit():
                malformed.append(f"line {number}: {row!r}")
                continue
            stored[int(row[0])][tuple(row[1:])] += 1
    return stored, malformed


def compare_agency(result: RunResult, agency: AgencyData, held: collections.Counter[Bet5]) -> None:
    """Lost and duplicated bets of one agency (multisets of five fields), and rows that must not be there."""
    lost = agency.expected - held
    extra = held - agency.expected
    duplicated = collections.Counter({k: v for k, v in extra.items() if k in agency.expected})
    invalid = collections.Counter({k: v for k, v in extra.items() if k in agency.invalid})
    foreign = extra - duplicated - invalid
    result.lost += sum(lost.values())
    result.duplicated += sum(duplicated.values())
    name = f"agency {agency.agency}"
    if lost:
        result.problems.append(f"{name}: {sum(lost.values())} bet(s) lost, e.g. {list(lost)[:3]}")
    if duplicated:
        result.problems.append(f"{name}: {sum(duplicated.values())} bet(s) duplicated, e.g. {list(duplicated)[:3]}")
    if invalid:
        result.problems.append(f"{name}: {sum(invalid.values())} invalid row(s) stored: {list(invalid)}")
    if foreign:
        result.problems.append(f"{name}: {sum(foreign.values())} row(s) stored that its file does not hold, "
                               f"e.g. {list(foreign)[:3]}")


def check_outcome(result: RunResult, agency: AgencyData, outcome: AgencyOutcome | None) -> None:
    """Exit code 0 and the exact number of winners in the agency's last log."""
    name = f"agency {agency.agency}"
    if outcome is None:
        result.problems.append(f"{name}: no outcome recorded")
        return
    if outcome.code != 0:
        result.problems.append(f"{name}: exit code {outcome.code}\n{tail(outcome.log)}")
    found = WINNERS_LINE.findall(outcome.log)
    if not found:
        if outcome.code == 0:
            result.problems.append(f"{name}: exited 0 but logged no winners\n{tail(outcome.log)}")
    elif int(found[-1]) != agency.winners:
        result.problems.append(f"{name}: {found[-1]} winners logged, its file holds {agency.winners}")


def check_run(result: RunResult, data: list[AgencyData], bets_csv: Path,
              outcomes: dict[int, AgencyOutcome], event: FaultEvent | None) -> None:
    """Fill `result` with the comparison of what was stored against what the files hold."""
    stored, malformed = read_stored(bets_csv)
    result.expected = sum(agency.bets for agency in data)
    result.stored = sum(sum(counter.values()) for counter in stored.values()) + len(malformed)
    if malformed:
        result.problems.append(f"{len(malformed)} malformed row(s) in bets.csv, e.g. {malformed[:3]}")
    for unknown in sorted(set(stored) - {agency.agency for agency in data}):
        result.problems.append(f"{sum(stored[unknown].values())} row(s) stored for unknown agency {unknown}")
    for agency in data:
        compare_agency(result, agency, stored.get(agency.agency, collections.Counter()))
        check_outcome(result, agency, outcomes.get(agency.agency))
    exits = [o.exited_at for o in outcomes.values() if o.exited_at is not None]
    if exits and len(exits) == len(outcomes):
        if event is not None:
            result.recovery = max(0.0, max(exits) - event.ended)
        if result.started is not None:
            result.duration = max(exits) - result.started
