"""Durable storage of one lottery round, shared by every process of one central.

Files in the storage directory:

- ``bets.csv``      the bets, one per line: ``agency,first_name,last_name,document,birthdate,number``.
- ``journal.log``   what is stored. It always starts with a checkpoint, the round's state as of a
                    point where ``bets.csv`` was synced::

                        checkpoint <agencies> <bets_end> <batches>
                        agency <id> <stored> <chain> <last_first>   one per agency with bets
                        fin <id> <bets> <chain>                     one per recorded FIN

                    and goes on with one record per change since that checkpoint::

                        batch <agency> <first> <count> <end> <crc32> <chain>
                        fin <agency> <bets> <chain>

                    A batch holds the agency's bets ``first .. first + count - 1``; bets.csv is
                    ``end`` bytes after it, ``crc32`` covers its bytes there, and ``chain`` is the
                    agency's chain after it (protocol.md). CRCs and chains are hexadecimal. The
                    journal is the only record of what is stored, so deduplication, the FIN
                    barrier and the round's agency count survive a restart.
- ``storage.lock``  the append lock (``flock``), held only around appending.
- ``instance.lock`` held by one central for its whole life (``flock``, with its pid inside).
- ``winners.csv``   the draw's result (draw.py); its existence is the fact "the round is drawn".

Rules, each relied upon elsewhere:

- **One central per storage.** `InstanceLock` is taken before recovery and held until every
  process of the central has exited; a second central refuses to start and touches nothing.
- **Whole or nothing.** A batch is appended with one ``write`` of bets.csv and then its journal
  line, under the append lock. A failed write is undone (both files cut back) before the lock is
  released and raises `WriteFailed`: nothing half-stored is ever visible, and the next append
  after the cause is gone (a full disk) simply succeeds.
- **Nothing answered before it is durable.** `store_batches` and `record_fin` return only after
  `sync`, whatever the outcome they report, so an ACK, a duplicate ACK, a FIN_ACK or a
  DUPLICATE_FIN always states a fact on disk. One sync covers every process's earlier appends
  (group commit); it runs outside the lock.
- **fsync failure is fail-stop.** A failed ``fsync``/``fdatasync`` raises `SyncFailed`: the page
  cache may have dropped the data it covered, so the process must stop rather than answer; the
  next start's `recover` decides from what is really on disk.
- **Exactly once, whatever the batching.** An agency's bets are stored in position order with no
  gap or overlap, each batch on top of exactly the bets its ``chain`` names; the per-agency state
  is (bets stored, their chain, the first position of the last batch), O(1) whatever the bets.
- **Bounded state and restart.** A process keeps only per-agency state (see above, and the FIN),
  folding the journal in streaming chunks. `Storage.compact` rewrites the journal as a new
  checkpoint (after syncing bets.csv; atomic rename), so recovery and every worker's start read
  at most one checkpoint and a bounded tail, whatever the number of batches stored.
"""

from __future__ import annotations

import enum
import errno
import fcntl
import logging
import os
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterator

from .protocol import Bet

log = logging.getLogger(__name__)

BETS_FILE = "bets.csv"
JOURNAL_FILE = "journal.log"
LOCK_FILE = "storage.lock"
INSTANCE_LOCK_FILE = "instance.lock"
WINNERS_FILE = "winners.csv"

READ_CHUNK = 1 << 20  # the journal is folded this many bytes at a time
MAX_JOURNAL_LINE = 128  # longer than any record: a longer "line" is damage, not a record
MAX_BATCH_BYTES = 64 << 10  # a stored batch is at most one frame's bets plus the agency ids


class StorageError(Exception):
    """The storage is unusable (damaged files, an I/O error): the process must stop."""


class SyncFailed(StorageError):
    """fsync/fdatasync failed: what it covered may be lost; stop before answering (fail-stop)."""


class WriteFailed(Exception):
    """An append failed (e.g. ENOSPC) and was undone: nothing changed, a later try may succeed."""


class StorageInUse(StorageError):
    """Another central holds this storage's instance lock."""

    def __init__(self, directory: Path, holder: str) -> None:
        super().__init__(f"{directory} is in use by another central ({holder})")
        self.directory = directory
        self.holder = holder


class RoundMismatch(StorageError):
    """The storage holds a round for another number of agencies than configured."""

    def __init__(self, directory: Path, round_agencies: int, agencies: int) -> None:
        super().__init__(
            f"{directory} holds a round for {round_agencies} agencies, the configuration says {agencies}"
        )
        self.directory = directory
        self.round_agencies = round_agencies
        self.agencies = agencies


class Outcome(enum.Enum):
    STORED = "stored"
    DUPLICATE = "duplicate"  # a resend of the last stored batch: acknowledge again, store nothing
    GAP = "gap"  # bets before the batch's first are not stored yet
    MISMATCH = "mismatch"  # not on top of the stored bets (chain), or other bets for stored positions
    FINISHED = "finished"  # new bets after the agency's FIN
    ROUND_CLOSED = "round_closed"  # new bets after the draw


class FinOutcome(enum.Enum):
    RECORDED = "recorded"
    DUPLICATE = "duplicate"
    GAP = "gap"
    MISMATCH = "mismatch"
    FINISHED = "finished"  # another FIN was recorded
    ROUND_CLOSED = "round_closed"


@dataclass(frozen=True)
class AgencyState:
    """What is stored of one agency: bets 1..`stored`, their `chain`, the last batch's first."""

    stored: int = 0
    chain: int = 0
    last_first: int = 0


@dataclass(frozen=True)
class Verdict:
    """A decision on one batch, with the agency's stored state it was decided against."""

    outcome: Outcome
    state: AgencyState


# kind -> the base each value is written in: decimal, or hexadecimal for CRCs and chains
_BASES = {
    "checkpoint": (10, 10, 10),
    "agency": (10, 10, 16, 10),
    "fin": (10, 10, 16),
    "batch": (10, 10, 10, 10, 16, 16),
}
# kind -> the line's format; hexadecimal values are 8 digits
_FORMATS = {
    kind: kind.encode() + b"".join(b" %08x" if base == 16 else b" %d" for base in bases) + b"\n"
    for kind, bases in _BASES.items()
}
_KINDS = {kind.encode(): kind for kind in _BASES}


@dataclass(frozen=True)
class JournalRecord:
    """One journal line (see the module docstring); `values` are its integers in order."""

    kind: str  # "checkpoint", "agency", "fin" or "batch"
    values: tuple[int, ...]

    def encode(self) -> bytes:
        return _FORMATS[self.kind] % self.values

    @classmethod
    def parse(cls, line: bytes) -> "JournalRecord":
        """The record in one line (without its newline); StorageError if it is not one."""
        kind, *fields = line.split(b" ")
        name = _KINDS.get(kind)
        if name is not None and len(_BASES[name]) == len(fields):
            try:
                values = tuple(map(int, fields, _BASES[name]))
            except ValueError:
                pass
            else:
                if min(values) >= 0:
                    return cls(name, values)
        raise StorageError(f"corrupt journal line {line[:80]!r}")


def batch_record(bet: Bet, end: int, crc: int, chain_after: int) -> JournalRecord:
    return JournalRecord("batch", (bet.agency, bet.first, bet.count, end, crc, chain_after))


def fin_record(agency: int, bets: int, chain: int) -> JournalRecord:
    return JournalRecord("fin", (agency, bets, chain))


@dataclass
class JournalView:
    """The round's state as the journal tells it; rebuilt from the file, never shared in memory.

    Its size depends on the number of agencies only, not on the batches stored."""

    offset: int = 0  # bytes of journal.log folded in
    agencies: int = 0  # the round's agency count (from the checkpoint)
    bets_end: int = 0  # size bets.csv must have
    batches: int = 0  # batches stored in the round
    agency_states: dict[int, AgencyState] = field(default_factory=dict)
    fins: dict[int, tuple[int, int]] = field(default_factory=dict)  # agency -> (bets, chain)

    def state(self, agency: int) -> AgencyState:
        return self.agency_states.get(agency, _NOTHING_STORED)

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
        values = record.values
        if record.kind == "batch":
            agency, first, count, end, _, chain = values
            self.agency_states[agency] = AgencyState(first + count - 1, chain, first)
            self.bets_end = end
            self.batches += 1
        elif record.kind == "fin":
            self.fins[values[0]] = (values[1], values[2])
        elif record.kind == "agency":
            self.agency_states[values[0]] = AgencyState(*values[1:])
        else:  # a checkpoint starts the file: the state lines after it rebuild the rest
            self.agencies, self.bets_end, self.batches = values
            self.agency_states.clear()
            self.fins.clear()
        self.offset += size

    def checkpoint(self) -> bytes:
        """The journal's content for a checkpoint of this state."""
        records = [JournalRecord("checkpoint", (self.agencies, self.bets_end, self.batches))]
        records += [
            JournalRecord("agency", (a, s.stored, s.chain, s.last_first)) for a, s in sorted(self.agency_states.items())
        ]
        records += [fin_record(a, *fin) for a, fin in sorted(self.fins.items())]
        return b"".join(record.encode() for record in records)

    def finished(self, agencies: int) -> int:
        """How many of agencies 1..`agencies` have a FIN."""
        return sum(1 for agency in self.fins if 1 <= agency <= agencies)


_NOTHING_STORED = AgencyState()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _sync(fd: int, what: str) -> None:
    try:
        os.fdatasync(fd)
    except OSError as err:
        raise SyncFailed(f"fdatasync of {what}: {err.strerror or err}") from err


def _sync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        try:
            os.fsync(fd)
        except OSError as err:
            raise SyncFailed(f"fsync of {directory}: {err.strerror or err}") from err
    finally:
        os.close(fd)


def write_file_atomically(path: Path, data: bytes) -> None:
    """Replace `path` with `data`: temporary file, fsync, rename, directory fsync.

    WriteFailed if writing fails (nothing changed), SyncFailed if an fsync does."""
    temporary = path.with_name(path.name + ".tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    except OSError as err:
        raise WriteFailed(f"create {temporary}: {err.strerror or err}") from err
    try:
        try:
            _write_all(fd, data)
        except OSError as err:
            raise WriteFailed(f"write {temporary}: {err.strerror or err}") from err
        _sync(fd, str(temporary))
    except BaseException:
        os.close(fd)
        temporary.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(temporary, path)
    _sync_dir(path.parent)


def csv_lines(agency: int, bets: bytes) -> bytes:
    """A batch's bet lines as bets.csv lines: the agency id prepended to each."""
    prefix = b"%d," % agency
    return prefix + bets[:-1].replace(b"\n", b"\n" + prefix) + b"\n"


# --- one central per storage -----------------------------------------------------------------


class InstanceLock:
    """The exclusive lock that makes a storage directory belong to one central.

    Taken before recovery with a non-blocking ``flock``. Forked workers inherit the descriptor, so
    the lock is held until every process of the central has exited: a new central can never
    recover the files under a worker that is still writing.
    """

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / INSTANCE_LOCK_FILE
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = os.pread(self.fd, 64, 0).decode("ascii", "replace").strip()
            os.close(self.fd)
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise StorageInUse(directory, f"pid {holder}" if holder else "pid unknown") from None
            raise
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, b"%d\n" % os.getpid(), 0)

    def close(self) -> None:
        os.close(self.fd)


# --- recovery --------------------------------------------------------------------------------


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


def recover(directory: Path, agencies: int) -> RecoveryReport:
    """Bring the files to a consistent state before any worker starts; the caller holds the
    instance lock. A new storage gets an empty round for `agencies`.

    The checkpoint at the start of the journal is trusted (bets.csv was synced before it was
    written); each batch after it is checked against bets.csv with its CRC, and the longest valid
    prefix is kept: a torn journal line, a batch whose bytes did not all reach the disk, and bytes
    past the last batch are cut. None of them was acknowledged, so their agencies resend them.
    Reads stream; memory does not depend on the journal's length.
    """
    directory.mkdir(parents=True, exist_ok=True)
    bets_path, journal_path = directory / BETS_FILE, directory / JOURNAL_FILE
    (directory / (JOURNAL_FILE + ".tmp")).unlink(missing_ok=True)  # an interrupted checkpoint
    (directory / LOCK_FILE).touch(exist_ok=True)
    if not journal_path.exists():
        if bets_path.exists() and bets_path.stat().st_size:
            raise StorageError(f"{bets_path} holds bets but {JOURNAL_FILE} is missing")
        bets_path.touch(exist_ok=True)
        fresh = JournalView(agencies=agencies)
        write_file_atomically(journal_path, fresh.checkpoint())
    view = JournalView()
    with open(journal_path, "rb") as journal, open(bets_path, "rb") as bets:
        _drop_cached_pages(journal)
        _drop_cached_pages(bets)
        first = journal.readline(MAX_JOURNAL_LINE)
        try:
            record = JournalRecord.parse(first.rstrip(b"\n"))
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
            except StorageError:
                break
            if record.kind == "checkpoint":
                break  # only ever the first line
            if record.kind == "batch":
                size = record.values[3] - view.bets_end
                if not 0 < size <= MAX_BATCH_BYTES:
                    break
                data = bets.read(size)
                if len(data) != size or zlib.crc32(data) != record.values[4]:
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
        fd = os.open(path, os.O_WRONLY)
        try:
            _sync(fd, str(path))
        finally:
            os.close(fd)
    _sync_dir(directory)
    return RecoveryReport(
        view.agencies, view.batches, len(view.fins), view.bets_end, view.offset, cut_bets, cut_journal
    )


# --- the shared files, one handle per process ------------------------------------------------


class Storage:
    """One process's handle on the shared storage files (opened after `recover`)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.view = JournalView()
        # Paths as str: they are stat'ed on every append, and a Path is converted on each use.
        self._journal_path = str(directory / JOURNAL_FILE)
        self._winners_path = str(directory / WINNERS_FILE)
        self._drawn = False
        self._lock_fd = os.open(directory / LOCK_FILE, os.O_RDWR)
        self._bets_fd = os.open(directory / BETS_FILE, os.O_RDWR | os.O_APPEND)
        self._journal_fd = os.open(self._journal_path, os.O_RDWR | os.O_APPEND)
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
        """Fold in the journal lines other processes appended; follow a checkpoint's new file;
        cut a dead writer's leftovers."""
        if os.stat(self._journal_path).st_ino != os.fstat(self._journal_fd).st_ino:
            os.close(self._journal_fd)  # compacted by another process: fold the new file
            self._journal_fd = os.open(self._journal_path, os.O_RDWR | os.O_APPEND)
            self.view = JournalView()
        size = os.fstat(self._journal_fd).st_size
        position, carry = self.view.offset, b""
        while position < size:
            data = carry + os.pread(self._journal_fd, min(READ_CHUNK, size - position), position)
            if len(data) == len(carry):
                break  # the file shrank under us: only a repair under the lock does that
            position += len(data) - len(carry)
            carry = data[self.view.fold(data) :]
        if carry:  # a writer died in the middle of a journal line
            os.ftruncate(self._journal_fd, self.view.offset)
            log.warning("action: storage_repair | result: success | cut_journal_bytes: %d", len(carry))
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
        """The current view of the journal (agency states, FINs), read under the lock."""
        with self._locked():
            return self.view

    def journal_identity(self) -> tuple[int, int]:
        """(inode, size) of journal.log: it changes whenever the journal may have."""
        status = os.stat(self._journal_path)
        return status.st_ino, status.st_size

    def drawn(self) -> bool:
        """Whether the round's draw has happened (winners.csv exists); once true, always true."""
        if not self._drawn:
            self._drawn = os.path.exists(self._winners_path)
        return self._drawn

    def sync(self) -> None:
        """Make every append so far, by any process, durable; SyncFailed if it cannot."""
        _sync(self._bets_fd, BETS_FILE)
        _sync(self._journal_fd, JOURNAL_FILE)

    def _append(self, bets: bytes, records: list[JournalRecord]) -> None:
        """Append under the lock, whole or not at all: a failed write is cut back before the
        lock is released, and raises WriteFailed."""
        lines = [record.encode() for record in records]
        journal = b"".join(lines)
        try:
            if bets:
                _write_all(self._bets_fd, bets)
            _write_all(self._journal_fd, journal)
        except OSError as err:
            try:
                os.ftruncate(self._journal_fd, self.view.offset)
                os.ftruncate(self._bets_fd, self.view.bets_end)
            except OSError as undo:  # the files are in an unknown state: stop
                raise StorageError(f"cannot undo a failed append: {undo.strerror or undo}") from err
            raise WriteFailed(f"append: {err.strerror or err}") from err
        for record, line in zip(records, lines):  # folded as written, without parsing it back
            self.view.apply(record, len(line))

    def store_batches(self, batches: list[Bet]) -> list[Verdict]:
        """Store what is new among `batches` (in order), then sync; one verdict per batch.

        Returns only once every verdict is durable, so the caller may answer at once: STORED and
        DUPLICATE with ACK, the others with their ERROR. Raises WriteFailed (nothing stored) or
        SyncFailed (stop)."""
        verdicts: list[Verdict] = []
        with self._locked():
            view = self.view
            pending: dict[int, AgencyState] = {}  # agencies stored by this call, not yet folded
            bets_chunks: list[bytes] = []
            records: list[JournalRecord] = []
            end = view.bets_end
            # One look per call: the draw needs every agency's FIN, after which no batch can be
            # stored anyway; whether it has happened only picks a late batch's refusal.
            drawn = self.drawn()
            for bet in batches:
                state = pending.get(bet.agency) or view.state(bet.agency)
                after = bet.chain_after
                outcome = self._decide(bet, after, state, drawn)
                verdicts.append(Verdict(outcome, state))
                if outcome is Outcome.STORED:
                    data = csv_lines(bet.agency, bet.bets)
                    end += len(data)
                    bets_chunks.append(data)
                    records.append(batch_record(bet, end, zlib.crc32(data), after))
                    pending[bet.agency] = AgencyState(bet.last, after, bet.first)
            if bets_chunks:
                self._append(b"".join(bets_chunks), records)
        self.sync()  # outside the lock: one sync covers every process's appends so far
        return verdicts

    def _decide(self, bet: Bet, chain_after: int, state: AgencyState, drawn: bool) -> Outcome:
        if bet.first <= state.stored:  # positions already stored: only an exact resend passes
            exact = bet.first == state.last_first and bet.last == state.stored and chain_after == state.chain
            return Outcome.DUPLICATE if exact else Outcome.MISMATCH
        if drawn:
            return Outcome.ROUND_CLOSED
        if bet.agency in self.view.fins:
            return Outcome.FINISHED
        if bet.first != state.stored + 1:
            return Outcome.GAP
        if bet.chain != state.chain:
            return Outcome.MISMATCH
        return Outcome.STORED

    def record_fin(self, agency: int, bets: int, chain: int) -> tuple[FinOutcome, AgencyState]:
        """Record that `agency` sent all its bets, `bets` of them with `chain`; returns once
        durable, with the agency's stored state the FIN was decided against."""
        with self._locked():
            view = self.view
            state = view.state(agency)
            if agency in view.fins and view.fins[agency] == (bets, chain):
                outcome = FinOutcome.DUPLICATE  # perhaps appended by a process that has not synced yet
            elif self.drawn():
                outcome = FinOutcome.ROUND_CLOSED
            elif agency in view.fins:
                outcome = FinOutcome.FINISHED
            elif state.stored != bets:
                outcome = FinOutcome.GAP
            elif state.chain != chain:
                outcome = FinOutcome.MISMATCH
            else:
                self._append(b"", [fin_record(agency, bets, chain)])
                outcome = FinOutcome.RECORDED
        self.sync()
        return outcome, state

    def resume(self, agency: int) -> tuple[AgencyState, bool]:
        """What is durably stored of `agency`, and whether its FIN is recorded."""
        with self._locked():
            state, finished = self.view.state(agency), agency in self.view.fins
        if state.stored or finished:  # else nothing is stated, so nothing needs to be durable
            self.sync()  # another process may have appended it without syncing yet
        return state, finished

    def compact(self) -> tuple[int, int]:
        """Rewrite the journal as a checkpoint of the current state; (bytes before, after).

        bets.csv is synced first, under the lock, because the checkpoint vouches for its bytes
        without a CRC. Other processes notice the new file under the lock and fold it."""
        with self._locked():
            before = self.view.offset
            _sync(self._bets_fd, BETS_FILE)
            data = self.view.checkpoint()
            write_file_atomically(self.directory / JOURNAL_FILE, data)
            os.close(self._journal_fd)
            self._journal_fd = os.open(self._journal_path, os.O_RDWR | os.O_APPEND)
            self.view.offset = len(data)
        return before, len(data)
