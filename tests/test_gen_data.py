"""Tests of tools/gen_data.py, the deterministic agency bet file generator (owns this file).

The CLI is run as a subprocess of the real script; bet lines are checked with the server's own
validator, lottery.bets.bet_line_error.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GEN_DATA = ROOT / "tools" / "gen_data.py"
sys.path.insert(0, str(ROOT / "server"))
sys.path.insert(0, str(ROOT / "tools"))

import gen_data  # noqa: E402
from lottery.bets import bet_line_error  # noqa: E402

WINNING = b"7574"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(GEN_DATA), *args], capture_output=True, text=True, timeout=120
    )


def generate(out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = run("--out", str(out), *args)
    assert result.returncode == 0, result.stderr
    return result


def rows(path: Path) -> list[list[bytes]]:
    data = path.read_bytes()
    assert data.endswith(b"\r\n")
    return [line.split(b",") for line in data[:-2].split(b"\r\n")]


def winners(path: Path) -> int:
    return sum(1 for row in rows(path) if row[4] == WINNING)


@pytest.fixture(scope="module")
def small_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 agencies, 6003 bets, winners 3,0,2,5,1 and the default (6 % 4 = 2) for agency 6."""
    out = tmp_path_factory.mktemp("small")
    generate(out, "--agencies", "6", "--bets", "6003", "--winners", "3,0,2,5,1", "--seed", "11")
    return out


def test_same_arguments_give_identical_bytes(tmp_path: Path) -> None:
    args = ("--agencies", "3", "--bets", "3000", "--winners", "1,2,0", "--seed", "5")
    generate(tmp_path / "a", *args)
    generate(tmp_path / "b", *args)
    for i in (1, 2, 3):
        name = f"agency-{i}.csv"
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_seed_changes_the_data(tmp_path: Path) -> None:
    generate(tmp_path / "a", "--agencies", "1", "--bets", "500", "--seed", "1")
    generate(tmp_path / "b", "--agencies", "1", "--bets", "500", "--seed", "2")
    first = (tmp_path / "a" / "agency-1.csv").read_bytes()
    assert first != (tmp_path / "b" / "agency-1.csv").read_bytes()


def test_agency_alone_equals_agency_from_full_run(small_set: Path, tmp_path: Path) -> None:
    generate(tmp_path, "--agencies", "6", "--bets", "6003", "--winners", "3,0,2,5,1",
             "--seed", "11", "--only", "6")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["agency-6.csv"]
    assert (tmp_path / "agency-6.csv").read_bytes() == (small_set / "agency-6.csv").read_bytes()


def test_only_beyond_agencies_gets_base_share(tmp_path: Path) -> None:
    result = generate(tmp_path, "--only", "6,7")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["agency-6.csv", "agency-7.csv"]
    assert len(rows(tmp_path / "agency-6.csv")) == 16000
    assert winners(tmp_path / "agency-6.csv") == 2  # 6 % 4
    assert winners(tmp_path / "agency-7.csv") == 3  # 7 % 4
    assert "agency-6.csv: 16000 bets, 2 winners" in result.stdout
    assert "agency-7.csv: 16000 bets, 3 winners" in result.stdout


def test_exact_winners_per_agency(small_set: Path) -> None:
    got = [winners(small_set / f"agency-{i}.csv") for i in range(1, 7)]
    assert got == [3, 0, 2, 5, 1, 2]


def test_bets_split_evenly_remainder_first(small_set: Path) -> None:
    counts = [len(rows(small_set / f"agency-{i}.csv")) for i in range(1, 7)]
    assert counts == [1001, 1001, 1001, 1000, 1000, 1000]
    assert sum(counts) == 6003


def test_summary_line_per_file(tmp_path: Path) -> None:
    result = generate(tmp_path, "--agencies", "2", "--bets", "21", "--winners", "4,1")
    assert result.stdout.splitlines() == [
        f"{tmp_path / 'agency-1.csv'}: 11 bets, 4 winners",
        f"{tmp_path / 'agency-2.csv'}: 10 bets, 1 winners",
    ]


def test_crlf_no_header_no_quotes(small_set: Path) -> None:
    for path in small_set.iterdir():
        data = path.read_bytes()
        assert data.endswith(b"\r\n")
        assert data.count(b"\n") == data.count(b"\r\n") == data.count(b"\r")
        assert b'"' not in data
        first = data.split(b"\r\n", 1)[0].split(b",")
        assert first[2].isdigit() and first[4].isdigit()  # a bet, not a header


def test_rows_valid_per_protocol(small_set: Path) -> None:
    for path in small_set.iterdir():
        for line in path.read_bytes()[:-2].split(b"\r\n"):
            assert bet_line_error(line) is None, (path.name, line)
            first, last, document, birthdate, number = line.decode("utf-8").split(",")
            assert len(document) == 8
            born = dt.date.fromisoformat(birthdate)
            assert dt.date(1940, 1, 1) <= born <= dt.date(2005, 12, 31)
            assert 0 <= int(number) <= 9999
            assert number == str(int(number))


def test_accents_and_two_first_names(small_set: Path) -> None:
    text = (small_set / "agency-1.csv").read_text(encoding="utf-8")
    for accented in ("á", "é", "í", "ó", "ú", "ñ"):
        assert accented in text
    first_names = [line.split(",")[0] for line in text.splitlines()]
    assert any(" " in name for name in first_names)
    assert any(" " not in name for name in first_names)


def test_documents_unique_across_agencies(small_set: Path, tmp_path: Path) -> None:
    generate(tmp_path, "--agencies", "6", "--bets", "6003", "--seed", "11", "--only", "7,89")
    paths = [*small_set.iterdir(), *tmp_path.iterdir()]
    documents = [row[2] for path in paths for row in rows(path)]
    assert len(documents) == 6003 + 2 * 1000
    assert len(set(documents)) == len(documents)
    assert all(len(doc) == 8 for doc in documents)


def test_feb_29_only_in_leap_years() -> None:
    lines = gen_data.agency_lines(3, 50_000, 0, 1)
    feb29 = [line.split(",")[3] for line in lines if line.split(",")[3].endswith("-02-29")]
    assert feb29, "50000 random dates should include some Feb 29"
    assert all(int(day[:4]) % 4 == 0 for day in feb29)


def test_default_winners_rule() -> None:
    assert [gen_data.winners_for_agency(i) for i in range(1, 10)] == [3, 0, 2, 5, 1, 2, 3, 0, 1]
    assert gen_data.winners_for_agency(2, [7, 8]) == 8
    assert gen_data.winners_for_agency(3, [7, 8]) == gen_data.default_winners(3) == 3


def test_generate_agency_matches_cli(tmp_path: Path) -> None:
    generate(tmp_path / "cli", "--agencies", "4", "--bets", "400", "--winners", "0,0,6",
             "--seed", "9")
    gen_data.generate_agency(str(tmp_path / "api.csv"), 3, 100, 6, 9)
    assert (tmp_path / "api.csv").read_bytes() == (tmp_path / "cli" / "agency-3.csv").read_bytes()


@pytest.mark.parametrize(
    "args",
    [
        ("--bets", "4", "--agencies", "2", "--winners", "3,0"),  # 3 winners, 2 bets
        ("--only", "0"),
        ("--only", "9990"),
        ("--agencies", "0"),
        ("--winners", "1,x"),
        ("--bets", "-5"),
    ],
)
def test_bad_arguments_exit_2_and_write_nothing(tmp_path: Path, args: tuple[str, ...]) -> None:
    out = tmp_path / "out"
    result = run("--out", str(out), *args)
    assert result.returncode == 2
    assert "error" in result.stderr
    assert not out.exists()


def test_default_data_set_in_repo_is_reproducible(tmp_path: Path) -> None:
    """The committed .data set is what `python tools/gen_data.py` writes; the README states its
    winners (3, 0, 2, 5, 1) and size (5 x 16000)."""
    data = ROOT / ".data"
    generate(tmp_path)
    for i, expected in enumerate([3, 0, 2, 5, 1], start=1):
        name = f"agency-{i}.csv"
        assert (data / name).read_bytes() == (tmp_path / name).read_bytes(), name
        assert winners(data / name) == expected
        assert len(rows(data / name)) == 16000
