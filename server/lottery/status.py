"""`make status`: a table of a running central's round, read from its storage without touching it.

    python3 -m lottery.status [--storage DIR]      # in server/ (in the container: /app)

Per agency: bets stored, batches, whether its FIN is recorded, and its winners once drawn; then
whether the draw is pending or done and which agencies it still waits for. Aggregates only: no
name and no document is printed.

Why a reader of the storage, run where the storage is (inside the server container), rather than a
STATUS message on the health port: it adds nothing to what the central exposes on the network, it
needs no port (published or not), and it works whatever the central's processes are doing, even
while one of them is stuck (it reads the files lock-free: it never takes the append lock, so it
can never wait for a process). It says the central is down, and exits 1 at once, when no process
holds the storage's instance lock (the kernel's table of locks says so; the reader does not take
the lock itself, which would keep a starting central out).

The journal is folded as it is on disk at that moment: a batch being appended may show a moment
before its fsync (an answer never precedes the fsync; this table is not an answer).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from . import draw
from .files import INSTANCE_LOCK_FILE, JOURNAL_FILE
from .journal import JournalView
from .locks import flock_holder

READ_CHUNK = 1 << 20


class StatusError(Exception):
    """The central's status cannot be read (no storage, the central is down)."""


def read_view(directory: Path) -> JournalView:
    """The journal folded as it is now, complete lines only, without any lock."""
    view = JournalView()
    with open(directory / JOURNAL_FILE, "rb") as journal:
        carry = b""
        while chunk := journal.read(READ_CHUNK):
            data = carry + chunk
            carry = data[view.fold(data) :]
    return view


def table(directory: Path) -> str:
    lock = directory / INSTANCE_LOCK_FILE
    if not (directory / JOURNAL_FILE).exists():
        raise StatusError(f"no round in {directory}: no {JOURNAL_FILE} (is STORAGE_DIR right?)")
    if not lock.exists() or flock_holder(os.stat(lock)) is None:
        raise StatusError(f"the central is not running on {directory} (no process holds {INSTANCE_LOCK_FILE})")
    view = read_view(directory)
    drawn = draw.draw_done(directory)
    winners = draw.load_winners(directory) if drawn else {}
    rows = [("agency", "bets", "batches", "fin", "winners")]
    for agency in range(1, view.agencies + 1):
        won = str(len(winners.get(agency, ()))) if drawn else "-"
        fin = "yes" if agency in view.fins else "no"
        rows.append((str(agency), str(view.state(agency).stored), str(view.agency_batches.get(agency, 0)), fin, won))
    total_won = str(sum(len(documents) for documents in winners.values())) if drawn else "-"
    rows.append(("total", str(sum(view.state(a).stored for a in range(1, view.agencies + 1))), str(view.batches),
                 f"{view.finished(view.agencies)}/{view.agencies}", total_won))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(widths[0]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row))
             for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    lines.insert(-1, lines[1])
    waiting = view.waiting_for(view.agencies)
    lines.append(f"draw: {'done' if drawn else 'pending'} | agencies awaited: {','.join(map(str, waiting)) or 'none'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m lottery.status", description=__doc__.split("\n\n")[0])
    parser.add_argument("--storage", type=Path, default=Path(os.environ.get("STORAGE_DIR", "/storage")),
                        help="the storage directory (default: $STORAGE_DIR, else /storage)")
    args = parser.parse_args(argv)
    try:
        print(table(args.storage))
    except (StatusError, OSError) as err:
        print(f"status: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
