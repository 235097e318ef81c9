#!/usr/bin/env python3
"""Deterministic, seeded generator of agency bet files (owns `.data/agency-<i>.csv`).

Each file holds one agency's bets, one per line, CRLF-terminated, UTF-8, no header, no quoting:

    first name,last name,document,birthdate,number

Every line is a valid bet per docs/protocol.md. The winning number is 7574: an agency gets
exactly its requested number of winning bets, at pseudo-random positions, and every other bet
has a number in 0..9999 other than 7574.

Determinism: an agency's file depends only on (seed, agency id, its bet count, its winner
count); each agency draws from its own `random.Random(f"{seed}:{agency}")`. So generating one
agency alone (`--only 6`) gives the same bytes as generating it together with the others.

Documents are unique across agencies without looking at the other files: agency `a`, row `i`
gets `10_000_000 + a * 1_000_000 + p(i)`, where `p` is a seeded injection of the row indices
into 0..999_999. Agencies 1..89 thus get 8-digit documents (11000000..99999999); agencies
90..9989 get 9- or 10-digit ones, still valid and unique; higher ids are refused, as are more
than 1_000_000 bets in one agency.

`compose_maker.py` imports `generate_agency`, `bets_for_agency`, `winners_for_agency` and
`default_winners` so the files it creates for agencies beyond the default set match this CLI.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import random
import sys
import tempfile
from collections.abc import Sequence

WINNING_NUMBER = 7574
MAX_NUMBER = 9999
DEFAULT_SEED = 7574
DEFAULT_AGENCIES = 5
DEFAULT_BETS = 80_000
DEFAULT_WINNERS: tuple[int, ...] = (3, 0, 2, 5, 1)
DEFAULT_OUT = ".data"

DOCUMENT_BASE = 10_000_000
DOCUMENTS_PER_AGENCY = 1_000_000
# The highest agency whose documents still fit in 10 digits: 9989.
MAX_AGENCY = (9_999_999_999 - DOCUMENT_BASE - (DOCUMENTS_PER_AGENCY - 1)) // DOCUMENTS_PER_AGENCY
MAX_BETS_PER_AGENCY = DOCUMENTS_PER_AGENCY

FIRST_BIRTHDATE = dt.date(1940, 1, 1)
LAST_BIRTHDATE = dt.date(2005, 12, 31)
TWO_FIRST_NAMES_PROBABILITY = 0.2

FIRST_NAMES: tuple[str, ...] = (
    "José", "María", "Juan", "Pablo", "Martín", "Lucía", "Sofía", "Mateo", "Santiago",
    "Valentina", "Agustín", "Camila", "Joaquín", "Julián", "Sebastián", "Nicolás", "Tomás",
    "Andrés", "Inés", "Belén", "Ramón", "Germán", "Damián", "Facundo", "Florencia", "Rocío",
    "Milagros", "Ángel", "Álvaro", "Óscar", "Héctor", "Íñigo", "Iván", "Ana", "Carolina",
    "Gonzalo", "Lionel", "Emilia", "Martina", "Renata", "Ezequiel", "Mónica", "Verónica",
    "Raúl", "Noelia", "Jesús", "Simón", "Ignacio", "Leonel", "Micaela", "Abril", "Zoe",
    "Hernán", "Rubén", "Candela", "Guadalupe", "Máximo", "Benjamín", "Lautaro", "Bárbara",
)
LAST_NAMES: tuple[str, ...] = (
    "Núñez", "Peña", "Ibáñez", "Martín", "González", "Rodríguez", "Gómez", "Fernández",
    "López", "Díaz", "Martínez", "Pérez", "García", "Sánchez", "Romero", "Sosa", "Álvarez",
    "Torres", "Ruiz", "Ramírez", "Flores", "Acosta", "Benítez", "Medina", "Suárez", "Herrera",
    "Aguirre", "Giménez", "Gutiérrez", "Pereyra", "Rojas", "Molina", "Castro", "Ortiz",
    "Silva", "Núñez del Prado", "Muñoz", "Domínguez", "Vázquez", "Méndez", "Chávez",
    "Ledesma", "Ríos", "Córdoba", "Cabrera", "Quiroga", "Echeverría", "Ojeda", "Lorca",
    "Báez", "Cáceres", "Maldonado", "Villalba", "Ponce", "Iñíguez", "Sáenz", "Olmedo",
    "Jiménez", "Montaña", "Bustos",
)

DEFAULT_WINNERS_RULE = (
    "an agency beyond the --winners list gets `agency % 4` winners (6 -> 2, 7 -> 3, 8 -> 0, ...)"
)


class GenerationError(ValueError):
    """Arguments that cannot produce a valid file (too many winners, agency id out of range)."""


def default_winners(agency: int) -> int:
    """Winners of an agency that a winners list does not name: `agency % 4`."""
    return agency % 4


def winners_for_agency(agency: int, winners: Sequence[int] = DEFAULT_WINNERS) -> int:
    """Winners of `agency` (1-based): its entry of `winners`, else `default_winners(agency)`."""
    if 1 <= agency <= len(winners):
        return winners[agency - 1]
    return default_winners(agency)


def bets_for_agency(
    agency: int, total: int = DEFAULT_BETS, agencies: int = DEFAULT_AGENCIES
) -> int:
    """Bets of `agency` when `total` bets are split evenly over agencies 1..`agencies`.

    The remainder goes one bet each to the first agencies. An agency beyond `agencies` (e.g.
    `--only 6` with 5 agencies, or compose_maker.py 6) gets the base share `total // agencies`.
    """
    base, remainder = divmod(total, agencies)
    return base + 1 if agency <= remainder else base


def _documents(rng: random.Random, agency: int, bets: int) -> list[int]:
    offsets = rng.sample(range(DOCUMENTS_PER_AGENCY), bets)
    first = DOCUMENT_BASE + agency * DOCUMENTS_PER_AGENCY
    return [first + offset for offset in offsets]


def _first_name(rng: random.Random) -> str:
    first = rng.choice(FIRST_NAMES)
    if rng.random() < TWO_FIRST_NAMES_PROBABILITY:
        second = rng.choice(FIRST_NAMES)
        while second == first:
            second = rng.choice(FIRST_NAMES)
        return f"{first} {second}"
    return first


def _losing_number(rng: random.Random) -> int:
    number = rng.randrange(MAX_NUMBER)  # 0..9998: one value fewer than 0..9999
    return number + 1 if number >= WINNING_NUMBER else number


def agency_lines(agency: int, bets: int, winners: int, seed: int) -> list[str]:
    """The bet lines (without line terminator) of one agency; pure function of its arguments."""
    if not 1 <= agency <= MAX_AGENCY:
        raise GenerationError(f"agency {agency} is outside 1..{MAX_AGENCY}")
    if not 0 <= bets <= MAX_BETS_PER_AGENCY:
        raise GenerationError(
            f"agency {agency}: {bets} bets is outside 0..{MAX_BETS_PER_AGENCY}"
        )
    if not 0 <= winners <= bets:
        raise GenerationError(f"agency {agency}: {winners} winners but only {bets} bets")
    rng = random.Random(f"{seed}:{agency}")
    documents = _documents(rng, agency, bets)
    winning_rows = set(rng.sample(range(bets), winners))
    first_day = FIRST_BIRTHDATE.toordinal()
    last_day = LAST_BIRTHDATE.toordinal()
    lines = []
    for row in range(bets):
        first = _first_name(rng)
        last = rng.choice(LAST_NAMES)
        birthdate = dt.date.fromordinal(rng.randint(first_day, last_day)).isoformat()
        number = WINNING_NUMBER if row in winning_rows else _losing_number(rng)
        lines.append(f"{first},{last},{documents[row]},{birthdate},{number}")
    return lines


def write_atomically(path: str, data: bytes) -> None:
    """Write `data` to `path` through a temporary file, fsync and rename: never half a file."""
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def generate_agency(
    path: str, agency: int, bets: int, winners: int, seed: int = DEFAULT_SEED
) -> None:
    """Write agency `agency`'s file at `path` (atomically): `bets` bets, exactly `winners` of
    them with the winning number. Raises GenerationError on impossible arguments."""
    lines = agency_lines(agency, bets, winners, seed)
    data = "".join(line + "\r\n" for line in lines).encode("utf-8")
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    write_atomically(path, data)


def agency_path(out: str, agency: int) -> str:
    return os.path.join(out, f"agency-{agency}.csv")


# --- command line -------------------------------------------------------------------------------


def _int_list(text: str) -> list[int]:
    values = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit():
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a comma-separated list of integers >= 0"
            )
        values.append(int(part))
    return values


def _agency_list(text: str) -> list[int]:
    values = _int_list(text)
    if any(value < 1 for value in values):
        raise argparse.ArgumentTypeError(f"{text!r}: agency ids start at 1")
    return values


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer >= 1")
    return int(text)


def _non_negative(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer >= 0")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=(
            "Write deterministic agency bet files <out>/agency-<i>.csv "
            "(CRLF, UTF-8, no header; winning number 7574)."
        ),
        epilog=(
            f"Winners: {DEFAULT_WINNERS_RULE}. Bets: --bets is split evenly over agencies "
            "1..--agencies, the remainder one each to the first ones; an --only agency beyond "
            "--agencies gets the base share (bets // agencies). Each file depends only on "
            "(seed, agency, its bets, its winners), so --only regenerates identical files. "
            "Documents are 10000000 + agency*1000000 + a seeded offset < 1000000: unique "
            "across agencies, 8 digits for agencies 1..89, 9-10 digits up to agency "
            f"{MAX_AGENCY}, higher ids refused."
        ),
    )
    parser.add_argument("--agencies", type=_positive, default=DEFAULT_AGENCIES,
                        help=f"number of agencies (default {DEFAULT_AGENCIES})")
    parser.add_argument("--bets", type=_non_negative, default=DEFAULT_BETS,
                        help=f"total bets over all agencies (default {DEFAULT_BETS})")
    parser.add_argument("--winners", type=_int_list, default=list(DEFAULT_WINNERS),
                        help="winners per agency, comma list for agencies 1, 2, ... "
                        f"(default {','.join(map(str, DEFAULT_WINNERS))}); "
                        + DEFAULT_WINNERS_RULE.replace("%", "%%"))
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED,
                        help=f"random seed (default {DEFAULT_SEED})")
    parser.add_argument("--out", default=DEFAULT_OUT,
                        help=f"output directory (default {DEFAULT_OUT})")
    parser.add_argument("--only", type=_agency_list, default=None,
                        help="write only these agencies, comma list (e.g. 6,7)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    agencies = args.only if args.only is not None else range(1, args.agencies + 1)
    plan = []
    for agency in dict.fromkeys(agencies):  # de-duplicated, order kept
        bets = bets_for_agency(agency, args.bets, args.agencies)
        winners = winners_for_agency(agency, args.winners)
        if agency > MAX_AGENCY:
            parser.error(f"agency {agency} is outside 1..{MAX_AGENCY}")
        if bets > MAX_BETS_PER_AGENCY:
            parser.error(f"agency {agency} would get {bets} bets, over {MAX_BETS_PER_AGENCY}")
        if winners > bets:
            parser.error(f"agency {agency} would get {winners} winners but only {bets} bets")
        plan.append((agency, bets, winners))
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        parser.error(f"--out {args.out!r} exists and is not a directory")
    for agency, bets, winners in plan:
        path = agency_path(args.out, agency)
        if os.path.isdir(path):
            print(f"error: {path} is a directory, not a file; remove it", file=sys.stderr)
            return 1
        try:
            generate_agency(path, agency, bets, winners, args.seed)
        except OSError as err:
            print(f"error: cannot write {path}: {err}", file=sys.stderr)
            return 1
        print(f"{path}: {bets} bets, {winners} winners")
    return 0


if __name__ == "__main__":
    sys.exit(main())
