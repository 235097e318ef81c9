"""The draw: find the winning bets once every agency has finished, and keep the result.

A winner is a bet whose number is WINNING_NUMBER. The draw streams bets.csv in chunks (it never
holds every bet) and writes ``winners.csv`` (``agency,document`` lines) atomically: temporary
file, fsync, rename, fsync of the directory. The file's existence is the fact "the draw has
happened": a restarted server answers winners queries without drawing again, and the storage
refuses new bets and FINs of a drawn round. Only the supervisor draws (supervisor.py).

**The scan runs ahead of the draw** (`Scan`). bets.csv only grows, and its bytes up to the end the
journal records never change while the central runs (a failed append is cut back before its
journal line is written; a checkpoint rewrites only the journal), so the winners among them can be
found before the last FIN: the barrier scans what is new each time it looks at the journal, and
the draw itself then reads only the bets stored since. The result is the same as one scan of the
whole file; the work is done while the agencies still send, instead of after the last one.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .durable import write_file_atomically
from .files import BETS_FILE, WINNERS_FILE

WINNING_NUMBER = 7574
CHUNK_SIZE = 1 << 18  # 256 kB: the draw reads bets.csv this much at a time (a smaller peak, as fast)

# Every winning line ends with these bytes (a number such as 07574 too); lines that merely end
# the same way (17574) are told apart by parsing the number. A substring search runs at memory
# speed, so the draw costs little more than reading the file.
_NEEDLE = str(WINNING_NUMBER).encode() + b"\n"


def winners_path(directory: Path) -> Path:
    return directory / WINNERS_FILE


def draw_done(directory: Path) -> bool:
    return winners_path(directory).exists()


def _winners_in(block: bytes | bytearray, end: int) -> Iterator[tuple[int, str]]:
    """(agency, document) of the winning lines among the whole lines in block[:end].

    A line is `agency,first_name,last_name,document,birthdate,number`; the names may be quoted
    and hold commas, but the agency and the last three fields never do, so they are found by
    splitting at the first comma and at the last three."""
    hit = block.find(_NEEDLE, 0, end)
    while hit >= 0:
        start = block.rfind(b"\n", 0, hit) + 1
        line = block[start : hit + len(_NEEDLE) - 1]
        head, document, _, number = line.rsplit(b",", 3)
        if int(number) == WINNING_NUMBER:
            yield int(head[: head.index(b",")]), document.decode("ascii")
        hit = block.find(_NEEDLE, hit + len(_NEEDLE), end)


def find_winners(bets_path: Path, size: int) -> list[tuple[int, str]]:
    """(agency, document) of every winning bet in the first `size` bytes of `bets_path`."""
    return _scan(bets_path, 0, size)[0]


def _scan(bets_path: Path, start: int, size: int) -> tuple[list[tuple[int, str]], int]:
    """The winners among the whole lines in bytes `start` to `size` of `bets_path`, and where the
    last of those lines ends.

    The file is read into one reused buffer (a line cut by a chunk's end is moved to its start),
    so the draw allocates nothing per chunk: the supervisor's memory stays flat however large
    bets.csv grows."""
    winners: list[tuple[int, str]] = []
    buffer = bytearray(2 * CHUNK_SIZE)
    held = 0  # bytes of a line not finished yet, at the start of the buffer
    position = start  # the file's offset of the buffer's first byte
    with open(bets_path, "rb", buffering=0) as bets:
        bets.seek(start)
        while position + held < size:
            want = min(CHUNK_SIZE, size - position - held)
            if held + want > len(buffer):  # a line longer than a chunk: only in tests
                buffer.extend(bytes(held + want - len(buffer)))
            with memoryview(buffer) as view:
                got = bets.readinto(view[held : held + want])
            if not got:
                break
            end = held + got
            cut = buffer.rfind(b"\n", 0, end) + 1  # only whole lines; the rest waits for the next chunk
            winners.extend(_winners_in(buffer, cut))
            buffer[: end - cut] = buffer[cut:end]
            position, held = position + cut, end - cut
    return winners, position


SCAN_AHEAD = 32 << 20  # bytes one look of the barrier scans at most (about 30 ms): it keeps its tick


@dataclass
class Scan:
    """The winners among the first `end` bytes of bets.csv, found ahead of the draw."""

    end: int = 0
    winners: list[tuple[int, str]] = field(default_factory=list)

    def advance(self, bets_path: Path, end: int, limit: int | None = None) -> None:
        """Scan on towards `end`, an end of bets.csv the journal records (so at a line
        boundary): `limit` bytes at most, all of them without one. Raises OSError (the next
        call tries again)."""
        if end > self.end:
            target = end if limit is None else min(end, self.end + limit)
            winners, self.end = _scan(bets_path, self.end, target)
            self.winners += winners


def run_draw(directory: Path, bets_size: int, scan: Scan | None = None) -> int:
    """Draw over the first `bets_size` (synced) bytes of bets.csv and persist the result; returns
    the number of winners. `scan`: what the barrier found ahead; only the rest is read. Raises
    OSError or WriteFailed (retry later) or SyncFailed (stop)."""
    scan = scan if scan is not None else Scan()
    scan.advance(directory / BETS_FILE, bets_size)
    content = b"".join(b"%d,%s\n" % (agency, doc.encode()) for agency, doc in scan.winners)
    write_file_atomically(winners_path(directory), content)
    return len(scan.winners)


def load_winners(directory: Path) -> dict[int, list[str]]:
    """The persisted draw result, by agency. Only winners are kept, so it is small."""
    by_agency: dict[int, list[str]] = {}
    with open(winners_path(directory), "rb") as result:
        for line in result:
            agency, document = line.rstrip(b"\n").split(b",")
            by_agency.setdefault(int(agency), []).append(document.decode("ascii"))
    return by_agency
