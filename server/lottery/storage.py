"""Durable storage of bets, FINs and batch identities, shared by every server process.

Files in the storage directory:

- ``bets.csv``    the bets, one per line: ``agency,first_name,last_name,document,birthdate,number``.
- ``journal.log`` one line per stored batch, ``batch <agency> <seq> <end> <crc32>``, where
                  ``end`` is the size of bets.csv after the batch and ``crc32`` covers the batch's
                  bytes; and one line per FIN, ``fin <agency> <batches>``. It is the only record
                  of which batches are stored, so deduplication and the FIN barrier survive a
                  restart, and it is what lets recovery cut a torn tail.
- ``storage.lock`` the cross-process lock (``flock``; the kernel drops it if its holder dies).

Every process keeps a read offset into the journal and folds the lines it has not seen yet
into its view (last stored seq per agency, FINs) each time it takes the lock, so no state is
shared in memory. The lock is held only around appending; ``fdatasync`` happens after it is
released and covers every writer's earlier appends (group commit).

Rules: a batch is written whole by one ``write`` of bets.csv followed by its journal line;
an acknowledgement is sent only after both files are synced. A writer that finds bytes past
the journal's last ``end`` (a writer died mid-append) cuts them before appending.
"""

from __future__ import annotations

import enum
import fcntl
import logging
import os
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from .protocol import Bet

log = logging.getLogger(__name__)

BETS_FILE = "bets.csv"
JOURNAL_FILE = "journal.log"
LOCK_FILE = "storage.lock"


class StorageError(Exception):
    """The storage files are unusable (I/O error, or a journal that is not ours)."""


class Outcome(enum.Enum):
    STORED = "stored"
    DUPLICATE = "duplicate"  # already stored: acknowledge again, store nothing
    GAP = "gap"  # a previous batch of the agency is missing
    FINISHED = "finished"  # a new batch after the agency's FIN


class FinOutcome(enum.Enum):
    RECORDED = "recorded"
    DUPLICATE = "duplicate"
    GAP = "gap"


@dataclass(frozen=True)
class JournalRecord:
    """One journal line: ``batch <agency> <seq> <end> <crc32>`` or ``fin <agency> <batches>``."""

    kind: str  # "batch" or "fin"
    agency: int
    seq: int  # the batch's seq; for a FIN, the batches it announces
    end: int = 0  # batch: size of bets.csv after it
    crc: int = 0  # batch: CRC32 of its bytes in bets.csv

    def encode(self) -> bytes:
        if self.kind == "batch":
            return b"batch %d %d %d %08x\n" % (self.agency, self.seq, self.end, self.crc)
        return b"fin %d %d\n" % (self.agency, self.seq)

    @classmethod
    def parse(cls, line: bytes) -> "JournalRecord":
        """The record in one line (without its newline); StorageError if it is not one."""
        parts = line.split(b" ")
        try:
            if parts[0] == b"batch" and len(parts) == 5:
                return cls("batch", int(parts[1]), int(parts[2]), int(parts[3]), int(parts[4], 16))
            if parts[0] == b"fin" and len(parts) == 3:
                return cls("fin", int(parts[1]), int(parts[2]))
        except ValueError:
            pass
        raise StorageError(f"corrupt journal line {line[:80]!r}")


@dataclass
class JournalView:
    """What the journal says so far; rebuilt from the file, never shared between processes."""

    offset: int = 0  # bytes of journal.log folded in
    bets_end: int = 0  # size bets.csv must have
    batches: int = 0
    last_seq: dict[int, int] = field(default_factory=dict)
    fins: dict[int, int] = field(default_factory=dict)  # agency -> batches announced

    def fold(self, data: bytes) -> int:
        """Fold in the complete lines at the start of `data`, the journal's bytes from `offset`
        on, and advance `offset` past them; returns the bytes consumed."""
        consumed = 0
        while True:
            newline = data.find(b"\n", consumed)
            if newline < 0:
                return consumed
            self.apply(JournalRecord.parse(data[consumed:newline]), newline + 1 - consumed)
            consumed = newline + 1

    def apply(self, record: JournalRecord, size: int) -> None:
        """Fold in one record that took `size` bytes of the journal."""
        if record.kind == "batch":
            self.last_seq[record.agency] = record.seq
            self.bets_end = record.end
            self.batches += 1
        else:
            self.fins[record.agency] = record.seq
        self.offset += size


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def csv_lines(agency: int, bets: bytes) -> bytes:
    """A batch's bet lines as bets.csv lines: the agency id prepended to each."""
    prefix = b"%d," % agency
    return prefix + bets[:-1].replace(b"\n", b"\n" + prefix) + b"\n"


@dataclass(frozen=True)
class RecoveryReport:
    batches: int
    fins: int
    bets_bytes: int
    cut_bets_bytes: int
    cut_journal_bytes: int


def recover(directory: Path) -> RecoveryReport:
    """Bring the files to a consistent state before any worker starts.

    Verifies every journaled batch against bets.csv with its CRC and keeps the longest valid
    prefix: a torn journal line, a batch whose bytes did not all reach the disk, and bets past
    the last journaled batch are cut. None of them was acknowledged, so their agencies resend.
    """
    directory.mkdir(parents=True, exist_ok=True)
    bets_path, journal_path = directory / BETS_FILE, directory / JOURNAL_FILE
    for path in (bets_path, journal_path, directory / LOCK_FILE):
        path.touch(exist_ok=True)
    journal = journal_path.read_bytes()
    view = JournalView()  # what is valid so far
    with open(bets_path, "rb") as bets:
        for line in journal.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break  # torn last line
            try:
                record = JournalRecord.parse(line[:-1])
            except StorageError:
                break
            if record.kind == "batch":
                size = record.end - view.bets_end
                data = bets.read(size) if size >= 0 else b""
                if size < 0 or len(data) != size or zlib.crc32(data) != record.crc:
                    break  # these bytes never fully reached the disk
            view.apply(record, len(line))
    good_journal, good_bets = view.offset, view.bets_end
    cut_journal = len(journal) - good_journal
    cut_bets = bets_path.stat().st_size - good_bets
    if cut_journal:
        os.truncate(journal_path, good_journal)
    if cut_bets:
        os.truncate(bets_path, good_bets)
    if cut_journal or cut_bets:
        for path in (bets_path, journal_path):
            fd = os.open(path, os.O_WRONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    _fsync_dir(directory)
    return RecoveryReport(view.batches, len(view.fins), good_bets, cut_bets, cut_journal)


class Storage:
    """One process's handle on the shared storage files."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.view = JournalView()
        self._lock_fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        self._bets_fd = os.open(directory / BETS_FILE, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        self._journal_fd = os.open(
            directory / JOURNAL_FILE, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644
        )
        with self._locked():
            pass  # folds the journal in

    def close(self) -> None:
        for fd in (self._bets_fd, self._journal_fd, self._lock_fd):
            os.close(fd)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            self._refresh()
            yield
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _refresh(self) -> None:
        """Fold in the journal lines other processes appended; cut a dead writer's leftovers."""
        size = os.fstat(self._journal_fd).st_size
        if size > self.view.offset:
            data = os.pread(self._journal_fd, size - self.view.offset, self.view.offset)
            consumed = self.view.fold(data)
            if consumed < len(data):  # a writer died in the middle of a journal line
                os.ftruncate(self._journal_fd, self.view.offset)
                log.warning(
                    "action: storage_repair | result: success | cut_journal_bytes: %d",
                    len(data) - consumed,
                )
        bets_size = os.fstat(self._bets_fd).st_size
        if bets_size != self.view.bets_end:
            if bets_size < self.view.bets_end:
                raise StorageError(f"{BETS_FILE} is shorter than the journal says")
            os.ftruncate(self._bets_fd, self.view.bets_end)  # a writer died mid-batch
            log.warning(
                "action: storage_repair | result: success | cut_bets_bytes: %d",
                bets_size - self.view.bets_end,
            )

    def refresh(self) -> JournalView:
        """The current view of the journal (FINs, last seqs), read under the lock."""
        with self._locked():
            return self.view

    def sync(self) -> None:
        """Make every append so far, by any process, durable."""
        os.fdatasync(self._bets_fd)
        os.fdatasync(self._journal_fd)

    def store_batches(self, batches: list[Bet]) -> list[Outcome]:
        """Store what is new among `batches` (in order) and sync; one outcome per batch.

        The caller may acknowledge STORED and DUPLICATE batches as soon as this returns.
        """
        outcomes: list[Outcome] = []
        with self._locked():
            view = self.view
            pending_seq: dict[int, int] = {}
            bets_chunks: list[bytes] = []
            journal_lines: list[bytes] = []
            end = view.bets_end
            for batch in batches:
                last = pending_seq.get(batch.agency, view.last_seq.get(batch.agency, 0))
                if batch.seq <= last:
                    outcomes.append(Outcome.DUPLICATE)
                elif batch.agency in view.fins:
                    outcomes.append(Outcome.FINISHED)
                elif batch.seq != last + 1:
                    outcomes.append(Outcome.GAP)
                else:
                    data = csv_lines(batch.agency, batch.bets)
                    end += len(data)
                    bets_chunks.append(data)
                    record = JournalRecord("batch", batch.agency, batch.seq, end, zlib.crc32(data))
                    journal_lines.append(record.encode())
                    pending_seq[batch.agency] = batch.seq
                    outcomes.append(Outcome.STORED)
            if bets_chunks:
                _write_all(self._bets_fd, b"".join(bets_chunks))
                journal = b"".join(journal_lines)
                _write_all(self._journal_fd, journal)
                view.fold(journal)
        self.sync()  # outside the lock: one sync covers every process's appends so far
        return outcomes

    def record_fin(self, agency: int, batches: int) -> FinOutcome:
        """Record that `agency` sent all of batches 1..`batches`, durably."""
        with self._locked():
            view = self.view
            if agency in view.fins:
                return FinOutcome.DUPLICATE
            if view.last_seq.get(agency, 0) != batches:
                return FinOutcome.GAP
            line = JournalRecord("fin", agency, batches).encode()
            _write_all(self._journal_fd, line)
            view.fold(line)
        self.sync()
        return FinOutcome.RECORDED
