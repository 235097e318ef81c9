"""The group commit: every batch and FIN a worker receives in one loop turn, from all its
connections, is stored with one append and one sync, then answered (owns the per-batch and FIN
log lines too).

A pipelining agency sends many batches at once, so one sync acknowledges many; with many agencies
finishing, their FINs share the syncs of the others' batches instead of one sync each. A request
whose connection closed, or whose session a newer one superseded, since it arrived is not stored:
the storage asks, under its lock, whether each request's session is still live
(`Storage.stage`), so a new session's RESUME is never overtaken by an older connection's batch.

**The loop does not wait for the sync.** At the end of a turn `start` appends the group and asks
the storage's sync thread for a sync (syncer.py); the loop goes back to its sockets, and
`on_synced` answers each group once its sync has returned, in the order the groups were made.
Meanwhile the next frames are read and checked, and wait for the next group. Whoever must
answer a session in order after its requests (a RESUME, an echo, a held winners query, the
shutdown) calls `run`, which waits for the groups in flight and commits the rest at once.
`session.pending` counts a session's requests kept or in flight, not answered yet.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable

from . import protocol
from .board import Board
from .durable import WriteFailed
from .protocol import ErrorCode
from .refusals import batch_refusal, fin_refusal, log_refused_batch
from .session import Outbox, Session
from .storage import FinOutcome, Outcome, Storage, Verdict

log = logging.getLogger(__name__)

Request = tuple[Session, protocol.Bet | protocol.Fin]  # a batch or a FIN, with the session it came on

# Groups appended and waiting for their sync, at most. A turn that would append one more waits
# for the oldest first: with a slow or hung disk a worker then holds at most this many turns'
# requests, and the disk paces its peers as it did before the sync thread.
MAX_GROUPS_IN_FLIGHT = 2


class GroupCommit:
    def __init__(self, storage: Storage, board: Board, outbox: Outbox, worker: int, nudge: Callable[[], None]) -> None:
        self.storage = storage
        self.board = board
        self.outbox = outbox
        self.worker = worker
        self.nudge = nudge  # tells the supervisor to look at the barrier again (a FIN)
        self.pending: list[Request] = []
        # Groups appended and waiting for their sync, oldest first: (ticket, requests, verdicts).
        self.in_flight: deque[tuple[int, list[Request], list[Verdict]]] = deque()

    def add(self, session: Session, request: protocol.Bet | protocol.Fin) -> None:
        """Keep a batch or a FIN for this turn's commit; it is answered then, in order."""
        self.pending.append((session, request))
        session.pending += 1

    def start(self) -> None:
        """Append every batch and FIN kept so far, and ask for their sync; `on_synced` answers
        them once it has returned. Waits first while MAX_GROUPS_IN_FLIGHT groups are."""
        if not self.pending:
            return
        while len(self.in_flight) >= MAX_GROUPS_IN_FLIGHT:
            self.storage.syncer.wait(self.in_flight[0][0])
            self.on_synced()
        staged = self._stage()
        if staged is not None:
            self.in_flight.append((self.storage.syncer.request(), *staged))

    def on_synced(self) -> None:
        """Answer every group whose sync has returned. Raises SyncFailed if one failed: nothing
        it covered is ever answered (fail-stop)."""
        done = self.storage.syncer.done()
        while self.in_flight and self.in_flight[0][0] <= done:
            _, pending, verdicts = self.in_flight.popleft()
            self._answer_all(pending, verdicts)

    def run(self) -> None:
        """Append every batch and FIN kept so far, wait for one sync that covers them and the
        groups in flight, and answer all of them, oldest first: on return nothing is left
        unanswered."""
        staged = self._stage()
        if staged is None and not self.in_flight:
            return
        self.storage.sync()
        if self.in_flight:
            self.on_synced()
        if staged is not None:
            self._answer_all(*staged)

    def _stage(self) -> tuple[list[Request], list[Verdict]] | None:
        """Append the kept requests (not yet durable): the requests and their verdicts, or None
        when there is nothing to append or the append failed (each request is then refused)."""
        if not self.pending:
            return None
        pending, self.pending = self.pending, []

        def live(index: int) -> bool:  # asked under the storage's lock
            session = pending[index][0]
            return session.open and session.agency is not None and self.board.current(session.agency, session.token)

        try:
            verdicts = self.storage.stage([request for _, request in pending], live)
        except WriteFailed as err:
            for session, _ in pending:
                session.pending -= 1
            positions = [(session, getattr(request, "first", 0)) for session, request in pending]  # 0: a FIN
            storage_failed(self.outbox, positions, err, self.worker)
            return None
        return pending, verdicts

    def _answer_all(self, pending: list[Request], verdicts: list[Verdict]) -> None:
        """Answer a durable group, request by request in the order they arrived."""
        for session, _ in pending:
            session.pending -= 1
        debug = log.isEnabledFor(logging.DEBUG)
        nudge = False
        for (session, request), verdict in zip(pending, verdicts, strict=True):
            if isinstance(request, protocol.Fin):
                nudge = self._answer_fin(session, request, verdict) or nudge
            else:
                self._answer(session, request, verdict, debug)
        if nudge:
            self.nudge()  # the supervisor re-checks the barrier (a DUPLICATE may be a retry)

    def _answer_fin(self, session: Session, fin: protocol.Fin, verdict: Verdict) -> bool:
        """Answer a FIN; True if it is recorded (now or before), so the barrier may have moved."""
        outcome = verdict.outcome
        if outcome is Outcome.ABANDONED:
            log.info(
                "action: fin_abandoned | result: success | agency: %d | bets: %d | reason: its connection ended"
                " (closed or superseded) before it was recorded; not recorded",
                fin.agency,
                fin.bets,
            )
            return False
        assert isinstance(outcome, FinOutcome)
        if outcome is FinOutcome.RECORDED:
            log.info("action: fin | result: success | agency: %d | bets: %d", fin.agency, fin.bets)
            self.outbox.send(session, protocol.encode(protocol.FinAck(fin.agency)))
            return True
        code, reason = fin_refusal(outcome, fin, verdict.state, self.storage.view.fins.get(fin.agency))
        log.warning(
            "action: fin | result: fail | agency: %d | bets: %d | code: %s | reason: %s",
            fin.agency,
            fin.bets,
            code.name,
            reason,
        )
        self.outbox.send(session, protocol.encode(protocol.Error(code, 0, reason)))
        return outcome is FinOutcome.DUPLICATE

    def _answer(self, session: Session, bet: protocol.Bet, verdict: Verdict, debug: bool) -> None:
        if verdict.outcome is Outcome.ABANDONED:
            log.info(
                "action: batch_abandoned | result: success | cantidad: %d | agency: %d | seq: %d"
                " | reason: its connection ended (closed or superseded) before it was stored; not stored",
                bet.count,
                bet.agency,
                bet.first,
            )
            return
        if verdict.outcome is Outcome.STORED:
            log.info(
                "action: apuesta_recibida | result: success | cantidad: %d | agency: %d | seq: %d",
                bet.count,
                bet.agency,
                bet.first,
            )
            if debug:
                log_each_bet(bet)
            self.outbox.send(session, protocol.ack_frame(bet.agency, bet.last))
        elif verdict.outcome is Outcome.DUPLICATE:
            log.info("action: batch_duplicate | result: success | agency: %d | seq: %d", bet.agency, bet.first)
            self.outbox.send(session, protocol.ack_frame(bet.agency, bet.last))
        else:
            assert isinstance(verdict.outcome, Outcome)
            err = batch_refusal(verdict.outcome, bet, verdict.state)
            log_refused_batch(bet.agency, bet.first, bet.count, err)
            self.outbox.send(session, protocol.encode(protocol.Error(err.code, err.position, err.reason)))


def storage_failed(outbox: Outbox, requests: list[tuple[Session, int]], err: WriteFailed, worker: int) -> None:
    """An append failed and was undone (a full disk): each request gets INTERNAL_ERROR naming the
    cause, with its batch's first position, and its connection is closed; the agency comes back
    and resends."""
    log.error("action: storage_write | result: fail | worker: %d | error: %s", worker, err)
    reason = f"storage failure: {err}"
    for session, position in requests:
        if session.open and not session.closing:
            outbox.send(session, protocol.encode(protocol.Error(ErrorCode.INTERNAL_ERROR, position, reason)))
    for session, _ in requests:
        if session.open:
            outbox.close_after_send(session)


def log_each_bet(bet: protocol.Bet) -> None:
    """The DEBUG line per stored bet. Split on the protocol's own line end only: str.splitlines()
    would also split a name at U+2028, which is valid in a name. Names may be quoted and hold
    commas; the document and the number never do, so they are found from the end."""
    for line in bet.bets[:-1].split(b"\n"):
        _, document, _, number = line.rsplit(b",", 3)
        log.debug(
            "action: apuesta_almacenada | result: success | dni: %s | numero: %s",
            document.decode("ascii"),
            number.decode("ascii"),
        )
