"""Recovery: bring the storage files to a consistent state before any worker starts.

The supervisor runs it once, holding the instance lock. The checkpoint at the start of the
journal is trusted (bets.csv was synced before it was written); each batch record after it is
checked against bets.csv with its chain (the batch's bytes there must be its agency's bet lines,
the agency id before each, whose chain continues the agency's to the record's), and the longest
valid prefix is kept: a torn journal line, a batch whose bytes did not all reach the disk, and
bytes past the last batch are cut. None of them was acknowledged (an answer follows a sync), so
their agencies resend them. A journal of an older version's format is refused (OlderJournal),
never cut. Reads stream; memory does not depend on the journal's length.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .durable import StorageError, sync_dir, sync_path, write_file_atomically
from .files import BETS_FILE, JOURNAL_FILE, LOCK_FILE, bet_lines
from .journal import MAX_JOURNAL_LINE, JournalRecord, JournalView, OlderJournal
from .protocol import chain

MAX_BATCH_BYTES = 64 << 10  # a stored batch is at most one frame's bets plus the agency ids


class RoundMismatch(StorageError):
    """The storage holds a round for another number of agencies than configured."""

    def __init__(self, directory: Path, round_agencies: int, agencies: int) -> None:
        super().__init__(f"{directory} holds a round for {round_agencies} agencies, the configuration says {agencies}")
        self.directory = directory
        self.round_agencies = round_agencies
        self.agencies = agencies


@dataclass(frozen=True)
class RecoveryReport:
    agencies: int
    batches: int
    fins: int
    bets_bytes: int
    journal_bytes: int
    cut_bets_bytes: int
    cut_journal_bytes: int


def _drop_cached_pages(file: BinaryIO) -> None:
    """Forget clean cached pages, so what is verified next is read from the disk: after a failed
    writeback the cache may hold bytes the disk does not (dirty pages are kept, and synced later)."""
    os.posix_fadvise(file.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


def _holds_batch(data: bytes, record: JournalRecord, view: JournalView) -> bool:
    """Whether `data`, the bytes of bets.csv a batch record covers, are that batch: its count of
    its agency's bet lines, whose chain continues the agency's (as `view` has it so far) to the
    record's."""
    agency, _, count, _, chain_after = record.values
    lines = bet_lines(agency, data)
    return lines is not None and lines.count(b"\n") == count and chain(lines, view.state(agency).chain) == chain_after


def recover(directory: Path, agencies: int) -> RecoveryReport:
    """Recover the storage in `directory` (see the module docstring); a new storage gets an
    empty round for `agencies`. RoundMismatch if it holds a round for another count."""
    directory.mkdir(parents=True, exist_ok=True)
    bets_path, journal_path = directory / BETS_FILE, directory / JOURNAL_FILE
    (directory / (JOURNAL_FILE + ".tmp")).unlink(missing_ok=True)  # an interrupted checkpoint
    (directory / LOCK_FILE).touch(exist_ok=True)
    if not journal_path.exists():
        if bets_path.exists() and bets_path.stat().st_size:
            raise StorageError(f"{bets_path} holds bets but {JOURNAL_FILE} is missing")
        bets_path.touch(exist_ok=True)
        write_file_atomically(journal_path, JournalView(agencies=agencies).checkpoint())
    view = JournalView()
    with open(journal_path, "rb") as journal, open(bets_path, "rb") as bets:
        _drop_cached_pages(journal)
        _drop_cached_pages(bets)
        first = journal.readline(MAX_JOURNAL_LINE)
        try:
            record: JournalRecord | None = JournalRecord.parse(first.rstrip(b"\n"))
        except StorageError:
            record = None
        if record is None or record.kind != "checkpoint" or not first.endswith(b"\n"):
            raise StorageError(
                f"{journal_path} does not start with a checkpoint (damaged, or written by an older version)"
            )
        view.apply(record, len(first))
        if view.agencies != agencies:
            raise RoundMismatch(directory, view.agencies, agencies)
        bets_size = os.fstat(bets.fileno()).st_size
        if bets_size < view.bets_end:
            raise StorageError(f"{bets_path} is {bets_size} bytes, its checkpoint vouches for {view.bets_end}")
        bets.seek(view.bets_end)
        while True:
            line = journal.readline(MAX_JOURNAL_LINE)
            if not line.endswith(b"\n"):
                break  # the end, or a torn last line
            try:
                record = JournalRecord.parse(line[:-1])
            except OlderJournal:
                raise
            except StorageError:
                break
            if record.kind == "checkpoint":
                break  # only ever the first line
            if record.kind == "batch":
                size = record.values[3] - view.bets_end
                if not 0 < size <= MAX_BATCH_BYTES:
                    break
                data = bets.read(size)
                if len(data) != size or not _holds_batch(data, record, view):
                    break  # these bytes never fully reached the disk
            view.apply(record, len(line))
        journal_size = os.fstat(journal.fileno()).st_size
    cut_journal = journal_size - view.offset
    cut_bets = bets_size - view.bets_end
    if cut_journal:
        os.truncate(journal_path, view.offset)
    if cut_bets:
        os.truncate(bets_path, view.bets_end)
    for path in (bets_path, journal_path):  # what was verified is now durable
        sync_path(path)
    sync_dir(directory)
    return RecoveryReport(
        view.agencies, view.batches, len(view.fins), view.bets_end, view.offset, cut_bets, cut_journal
    )
