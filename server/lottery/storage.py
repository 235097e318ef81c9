"""The storage API one process of the central uses: store batches, record FINs, say what is
stored, sync, checkpoint. The files, their format and recovery live in files.py, journal.py and
recovery.py; the locks in locks.py; how writes fail in durable.py.

Rules, each relied upon elsewhere:

- **Whole or nothing.** A group of batches is appended with one ``write`` of bets.csv and then
  their journal lines, under the append lock. A failed write is undone (both files cut back)
  before the lock is released and raises `WriteFailed`: nothing half-stored is ever visible, and
  the next append after the cause is gone (a full disk) simply succeeds. A process killed in the
  middle leaves bytes past the journal's end; the next holder of the lock cuts them first.
- **Nothing answered before it is durable.** `commit` (batches and FINs) and `resume` return only
  after `sync`, whatever the outcome they report, so an ACK, a duplicate ACK, a FIN_ACK, a
  DUPLICATE_FIN or a RESUME always states a fact on disk. One sync covers every process's earlier
  appends (group commit); it runs outside the lock. A worker's storage syncs in a thread of its
  own (syncer.py): `stage` appends without waiting, `syncer.request` asks for the sync and
  `syncer.done` says which have returned, so the worker answers a staged group only once its
  ticket is done.
- **Exactly once, whatever the batching.** An agency's bets are stored in position order with no
  gap or overlap, each batch on top of exactly the bets its ``chain`` names; the per-agency state
  is (bets stored, their chain, the first position of the last batch), O(1) whatever the bets.
- **Nothing stored for a connection that is gone.** `commit` asks, under the lock, whether
  each request's connection still is its agency's live session: a new session's RESUME (read under
  the same lock) can then never be overtaken by a batch of an older connection.
- **Bounded state and restart.** A process keeps only per-agency state, folding the journal in
  streaming chunks. `compact` rewrites the journal as a new checkpoint (after syncing bets.csv;
  atomic rename), so recovery and every worker's start read at most one checkpoint and a bounded
  tail, whatever the number of batches stored.
"""

from __future__ import annotations

import enum
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

from .board import Board
from .durable import StorageError, WriteFailed, sync, write_all, write_file_atomically
from .files import BETS_FILE, JOURNAL_FILE, WINNERS_FILE, csv_parts
from .journal import AgencyState, JournalRecord, JournalView, batch_record, fin_record
from .locks import AppendLock
from .protocol import Bet, Fin
from .syncer import Syncer

log = logging.getLogger(__name__)

READ_CHUNK = 1 << 20  # the journal is folded this many bytes at a time


class Outcome(enum.Enum):
    STORED = "stored"
    DUPLICATE = "duplicate"  # a resend of the last stored batch: acknowledge again, store nothing
    GAP = "gap"  # bets before the batch's first are not stored yet
    MISMATCH = "mismatch"  # not on top of the stored bets (chain), or other bets for stored positions
    FINISHED = "finished"  # new bets after the agency's FIN
    ROUND_CLOSED = "round_closed"  # new bets after the draw
    ABANDONED = "abandoned"  # its connection is closed or superseded: not stored, not answered


class FinOutcome(enum.Enum):
    RECORDED = "recorded"
    DUPLICATE = "duplicate"
    GAP = "gap"
    MISMATCH = "mismatch"
    FINISHED = "finished"  # another FIN was recorded
    ROUND_CLOSED = "round_closed"


class Verdict(NamedTuple):
    """A decision on one batch or FIN, with the agency's stored state it was decided against (a
    named tuple: one is made per batch, and it is half the cost of a frozen dataclass)."""

    outcome: Outcome | FinOutcome  # a FinOutcome for a FIN
    state: AgencyState


class Storage:
    """One process's handle on the shared storage files (opened after `recovery.recover`).

    `board` and `process` name the process's row on the shared board, where the append lock's
    holders are shown (None in tools and tests that run without a central). `background_sync`
    (a worker's): every sync runs in a thread of its own (syncer.py)."""

    def __init__(
        self, directory: Path, board: Board | None = None, process: int = 0, background_sync: bool = False
    ) -> None:
        self.directory = directory
        self.view = JournalView()
        # Paths as str: they are stat'ed on every append, and a Path is converted on each use.
        self._journal_path = str(directory / JOURNAL_FILE)
        self._winners_path = str(directory / WINNERS_FILE)
        self._drawn = False
        self.lock = AppendLock(directory, board, process)
        self._bets_fd = os.open(directory / BETS_FILE, os.O_RDWR | os.O_APPEND)
        self._journal_fd = os.open(self._journal_path, os.O_RDWR | os.O_APPEND)
        self._syncer = Syncer(self._sync_files) if background_sync else None
        with self._locked():
            pass  # folds the journal in

    def close(self) -> None:
        if self._syncer is not None:
            self._syncer.close()
        for fd in (self._bets_fd, self._journal_fd):
            os.close(fd)
        self.lock.close()

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.lock.acquire()
        try:
            self._refresh()
            yield
        finally:
            self.lock.release()

    def _refresh(self) -> None:
        """Fold in the journal lines other processes appended; follow a checkpoint's new file;
        cut a dead writer's leftovers."""
        if os.stat(self._journal_path).st_ino != os.fstat(self._journal_fd).st_ino:
            self._sync_idle()  # the sync thread may be syncing the old file's descriptor
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

    def try_refresh(self) -> JournalView | None:
        """The current view, or None without waiting if another process holds the lock."""
        if not self.lock.try_acquire():
            return None
        try:
            self._refresh()
            return self.view
        finally:
            self.lock.release()

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
        if self._syncer is not None:
            self._syncer.sync_now()
        else:
            self._sync_files()

    @property
    def syncer(self) -> Syncer:
        """The sync thread (only with `background_sync`): its tickets, its eventfd, its running
        sync's age. The storage keeps the files: it waits for the thread before it changes a
        descriptor."""
        assert self._syncer is not None
        return self._syncer

    def _sync_idle(self) -> None:
        if self._syncer is not None:
            self._syncer.idle()

    def _sync_files(self) -> None:
        sync(self._bets_fd, BETS_FILE)
        sync(self._journal_fd, JOURNAL_FILE)

    def _append(self, bets: bytes, records: list[JournalRecord]) -> None:
        """Append under the lock, whole or not at all: a failed write is cut back before the
        lock is released, and raises WriteFailed."""
        lines = [record.encode() for record in records]
        journal = b"".join(lines)
        try:
            if bets:
                write_all(self._bets_fd, bets)
            write_all(self._journal_fd, journal)
        except OSError as err:
            try:
                os.ftruncate(self._journal_fd, self.view.offset)
                os.ftruncate(self._bets_fd, self.view.bets_end)
            except OSError as undo:  # the files are in an unknown state: stop
                raise StorageError(f"cannot undo a failed append: {undo.strerror or undo}") from err
            raise WriteFailed(f"append: {err.strerror or err}") from err
        for record, line in zip(records, lines, strict=True):  # folded as written, without parsing it back
            self.view.apply(record, len(line))

    def store_batches(self, batches: list[Bet], live: Callable[[int], bool] | None = None) -> list[Verdict]:
        """`commit` of batches only."""
        return self.commit(batches, live)

    def record_fin(self, agency: int, bets: int, chain: int) -> tuple[FinOutcome, AgencyState]:
        """`commit` of one FIN: that `agency` sent all its bets, `bets` of them with `chain`."""
        verdict = self.commit([Fin(agency, bets, chain)])[0]
        assert isinstance(verdict.outcome, FinOutcome)
        return verdict.outcome, verdict.state

    def commit(self, requests: Sequence[Bet | Fin], live: Callable[[int], bool] | None = None) -> list[Verdict]:
        """`stage` the requests, then sync: returns once every verdict is durable."""
        verdicts = self.stage(requests, live)
        self.sync()  # outside the lock: one sync covers every process's appends so far
        return verdicts

    def stage(self, requests: Sequence[Bet | Fin], live: Callable[[int], bool] | None = None) -> list[Verdict]:
        """Append what is new among `requests`, batches and FINs, in order; one verdict
        per request (an Outcome for a batch, a FinOutcome for a FIN), each decided against the
        requests before it: a FIN counts the batches before it, a batch after its agency's FIN
        is FINISHED.

        `live(i)`, asked under the lock, says whether request i's connection is still its
        agency's live session; a request whose connection is gone is not stored (ABANDONED).
        No verdict may be answered before a sync that started after this call returned (`sync`,
        or the `syncer`'s `request` and `done`); then STORED and DUPLICATE with ACK, RECORDED with FIN_ACK,
        the others with their ERROR (each states a fact on disk). Raises WriteFailed (nothing
        stored)."""
        verdicts: list[Verdict] = []
        with self._locked():
            view = self.view
            pending: dict[int, AgencyState] = {}  # agencies stored by this call, not yet folded
            fins: dict[int, tuple[int, int]] = {}  # FINs recorded by this call, not yet folded
            bets_parts: list[bytes | memoryview] = []
            records: list[JournalRecord] = []
            end = view.bets_end
            # One look per call: the draw needs every agency's FIN, after which no batch can be
            # stored anyway; whether it has happened only picks a late request's refusal.
            drawn = self.drawn()
            for index, request in enumerate(requests):
                agency = request.agency
                state = pending.get(agency) or view.state(agency)
                if live is not None and not live(index):
                    verdicts.append(Verdict(Outcome.ABANDONED, state))
                    continue
                recorded = fins.get(agency) or view.fins.get(agency)
                if isinstance(request, Fin):
                    outcome: Outcome | FinOutcome = self._decide_fin(request, state, recorded, drawn)
                    if outcome is FinOutcome.RECORDED:
                        records.append(fin_record(agency, request.bets, request.chain))
                        fins[agency] = (request.bets, request.chain)
                    verdicts.append(Verdict(outcome, state))
                    continue
                after = request.chain_after
                outcome = self._decide(request, after, state, drawn, recorded is not None)
                verdicts.append(Verdict(outcome, state))
                if outcome is Outcome.STORED:
                    prefix, rest = csv_parts(agency, request.bets)
                    end += len(prefix) + len(rest)
                    bets_parts += (prefix, rest)
                    records.append(batch_record(request, end, after))
                    pending[agency] = AgencyState(request.last, after, request.first)
            if records:
                self._append(b"".join(bets_parts), records)
        return verdicts

    @staticmethod
    def _decide(bet: Bet, chain_after: int, state: AgencyState, drawn: bool, finished: bool) -> Outcome:
        if bet.first <= state.stored:  # positions already stored: only an exact resend passes
            exact = bet.first == state.last_first and bet.last == state.stored and chain_after == state.chain
            return Outcome.DUPLICATE if exact else Outcome.MISMATCH
        if drawn:
            return Outcome.ROUND_CLOSED
        if finished:
            return Outcome.FINISHED
        if bet.first != state.stored + 1:
            return Outcome.GAP
        if bet.chain != state.chain:
            return Outcome.MISMATCH
        return Outcome.STORED

    @staticmethod
    def _decide_fin(fin: Fin, state: AgencyState, recorded: tuple[int, int] | None, drawn: bool) -> FinOutcome:
        if recorded == (fin.bets, fin.chain):
            return FinOutcome.DUPLICATE  # perhaps appended by a process that has not synced yet
        if drawn:
            return FinOutcome.ROUND_CLOSED
        if recorded is not None:
            return FinOutcome.FINISHED
        if state.stored != fin.bets:
            return FinOutcome.GAP
        if state.chain != fin.chain:
            return FinOutcome.MISMATCH
        return FinOutcome.RECORDED

    def resume(self, agency: int) -> tuple[AgencyState, bool]:
        """What is durably stored of `agency`, and whether its FIN is recorded."""
        with self._locked():
            state, finished = self.view.state(agency), agency in self.view.fins
        if state.stored or finished:  # else nothing is stated, so nothing needs to be durable
            self.sync()  # another process may have appended it without syncing yet
        return state, finished

    def try_compact(self) -> tuple[int, int] | None:
        """Rewrite the journal as a checkpoint of the current state; (bytes before, after), or
        None without waiting if another process holds the lock.

        bets.csv is synced first, under the lock, because the checkpoint vouches for its bytes
        without a CRC. Other processes notice the new file under the lock and fold it."""
        if not self.lock.try_acquire():
            return None
        try:
            self._refresh()
            before = self.view.offset
            self._sync_idle()
            sync(self._bets_fd, BETS_FILE)
            data = self.view.checkpoint()
            write_file_atomically(self.directory / JOURNAL_FILE, data)
            os.close(self._journal_fd)
            self._journal_fd = os.open(self._journal_path, os.O_RDWR | os.O_APPEND)
            self.view.offset = len(data)
        finally:
            self.lock.release()
        return before, len(data)
