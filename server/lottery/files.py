"""The files of the storage directory (STORAGE_DIR), one round of one central, and the line format
of bets.csv both ways (`csv_parts`, `bet_lines`):

- ``bets.csv``       the bets, one RFC 4180 line each: ``agency,first_name,last_name,document,birthdate,number``.
- ``journal.log``    what is stored: a checkpoint, then a record per change (journal.py).
- ``storage.lock``   the append lock (``flock``; locks.AppendLock): held around every change and every
                     fold of the journal, never across an fsync of bets.
- ``instance.lock``  held by one central for its whole life (``flock``, with its pid inside).
- ``winners.csv``    the draw's result (draw.py); its existence is the fact "the round is drawn".
- ``announced``      empty; exists once the draw has been announced in the log (barrier.py).
"""

BETS_FILE = "bets.csv"
JOURNAL_FILE = "journal.log"
LOCK_FILE = "storage.lock"
INSTANCE_LOCK_FILE = "instance.lock"
WINNERS_FILE = "winners.csv"
ANNOUNCED_FILE = "announced"


def csv_parts(agency: int, bets: bytes) -> tuple[bytes, memoryview]:
    """A batch's bet lines (protocol.md's `lines`, each ending in a newline) as bets.csv lines,
    the agency id before each, in two parts to join: `b"".join(csv_parts(...))` is the bytes.
    Two parts because the storage joins a whole group's at once: the batch is copied once, by
    the one `replace`, instead of once more for each prefix and cut."""
    prefix = b"%d," % agency
    rest = bets.replace(b"\n", b"\n" + prefix)  # each newline followed by the next line's prefix
    return prefix, memoryview(rest)[: len(rest) - len(prefix)]  # (the last newline's is cut)


def csv_lines(agency: int, bets: bytes) -> bytes:
    """`csv_parts` joined: a batch's bet lines as bets.csv lines."""
    return b"".join(csv_parts(agency, bets))


def bet_lines(agency: int, data: bytes) -> bytes | None:
    """The bet lines that `csv_lines(agency, ...)` made `data` of (recovery checks their chain),
    or None if `data` is not lines that each start with the agency id and end in a newline."""
    prefix = b"%d," % agency
    if not data.startswith(prefix) or not data.endswith(b"\n"):
        return None
    lines = data.replace(b"\n" + prefix, b"\n")[len(prefix) :]
    if len(data) - len(lines) != len(prefix) * data.count(b"\n"):
        return None  # some line did not start with the prefix
    return lines
