"""The workload (owns tools/chaos/workload.py): each run's agency files and what the central must
end up holding of them.

An agency file is tools/gen_data.py's rows plus special rows at random positions, written as
RFC 4180 CSV with Python's csv module: valid names holding commas, double quotes, semicolons and
apostrophes, and invalid rows (impossible dates, a non-numeric document, a missing field, ...)
that must never be stored. Reading a file back sorts its rows into valid and invalid by the
central's own rule for a bet line (server/lottery/bets.py).
"""

from __future__ import annotations

import collections
import csv
import random
from dataclasses import dataclass, field
from pathlib import Path

import gen_data
from lottery.bets import FIELD_NAMES, bet_line, bet_line_error

WINNING_NUMBER = "7574"
AGENCIES = 3
DOCKER_AGENCIES = 4  # under Docker the fault's commands are slower: a longer run, more room to land
DOCKER_ROWS_FACTOR = 2
ROWS_PER_AGENCY = 5000
Bet5 = tuple[str, ...]  # (first_name, last_name, document, birthdate, number) as in the file

# Rows every agency file gets besides gen_data's: valid names that need RFC 4180 quoting (a comma
# or a double quote) or hold a semicolon or an apostrophe, and invalid rows. The document is
# filled in per agency; "7574" rows are winners when valid.
SPECIAL_VALID: tuple[Bet5, ...] = (
    ("Pérez, Juan", "Gómez", "", "1985-06-01", "7574"),
    ('Ana "la Tana"', "O'Neill", "", "1990-01-01", "12"),
    ("José; María", "D'Alessandro", "", "1970-12-31", "99"),
    ('"Quoted"', "Smith, Jr.", "", "2000-02-29", "7574"),
    ("María José", 'Núñez; "Peña", hija', "", "1964-03-15", "4321"),
    ("Ñandú, Él", "d'Artagnan", "", "1999-09-09", "1"),
    ("O'Brien", "Sáenz; Ortiz", "", "1955-05-05", "7574"),
    ('""', "Ruiz", "", "1981-08-08", "77"),
)
SPECIAL_INVALID: tuple[Bet5, ...] = (
    ("Bea", "Díaz", "", "1990-02-30", "5"),  # no such date
    ("Lía", "Sanz, Paz", "", "2001-02-29", "7574"),  # not a leap year
    ("Eva", "Ruiz", "10a5", "1990-01-01", "7574"),  # document not numeric
    ("Cid", "Paz", "", "1990-01-01"),  # a field missing
    ("", "Vacío", "", "1990-01-01", "5"),  # empty first name
    ("Ugo", "Largo", "", "1990-01-01", "123456789012"),  # number longer than 10 digits
)


@dataclass
class AgencyData:
    """One agency's file and what the central must end up holding of it."""

    agency: int
    path: Path
    expected: collections.Counter[Bet5] = field(default_factory=collections.Counter)  # valid rows
    invalid: collections.Counter[Bet5] = field(default_factory=collections.Counter)  # rows never to store
    winners: int = 0
    stored_bytes: int = 0  # size of its rows in bets.csv once all are stored

    @property
    def bets(self) -> int:
        return sum(self.expected.values())


def stored_line(fields: Bet5) -> bytes:
    """The canonical bet line (with its newline) the central stores for five field values."""
    return bet_line(fields)  # type: ignore[arg-type]  # five fields: is_valid_row checked


def is_valid_row(fields: list[str]) -> bool:
    """The central's own rule: five fields whose canonical line it accepts."""
    if len(fields) != len(FIELD_NAMES):
        return False
    return bet_line_error(stored_line(tuple(fields))[:-1]) is None


def special_rows(agency: int, rng: random.Random) -> list[list[str]]:
    """The quoted-name and invalid rows of one agency, with their own documents."""
    rows = []
    for index, row in enumerate(SPECIAL_VALID + SPECIAL_INVALID):
        fields = list(row)
        if fields[2] == "":
            fields[2] = str(90_000_000 + agency * 10_000 + index)
        rows.append(fields)
    rng.shuffle(rows)
    return rows


def write_agency_file(path: Path, agency: int, rows: int, rng: random.Random) -> None:
    """gen_data's rows plus the special ones at random positions, as RFC 4180 CSV (CRLF)."""
    base = [line.split(",") for line in
            gen_data.agency_lines(agency, rows, rng.randint(1, 4), rng.randrange(1 << 30))]
    for extra in special_rows(agency, rng):
        base.insert(rng.randrange(len(base) + 1), extra)
    with open(path, "w", encoding="utf-8", newline="") as out:
        csv.writer(out, lineterminator="\r\n").writerows(base)


def classify_agency_file(agency: int, path: Path) -> AgencyData:
    """Read the file back with the csv module and sort its rows into valid and invalid."""
    data = AgencyData(agency, path)
    with open(path, encoding="utf-8", newline="") as source:
        for fields in csv.reader(source):
            if not fields:
                continue
            if is_valid_row(fields):
                data.expected[tuple(fields)] += 1
                data.winners += fields[4] == WINNING_NUMBER
                data.stored_bytes += len(f"{agency},".encode()) + len(stored_line(tuple(fields)))
            else:
                data.invalid[tuple(fields)] += 1
    return data


def make_data(directory: Path, agencies: int, rows: int, rng: random.Random) -> list[AgencyData]:
    """Write and classify the files agency-1.csv .. agency-N.csv of one run."""
    directory.mkdir(parents=True, exist_ok=True)
    made = []
    for agency in range(1, agencies + 1):
        path = directory / f"agency-{agency}.csv"
        write_agency_file(path, agency, rows, rng)
        made.append(classify_agency_file(agency, path))
    return made
