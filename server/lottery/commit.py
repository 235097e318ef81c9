"""The group commit: every batch a worker receives in one loop turn, from all its connections, is
stored with one append and one sync, then answered (owns the per-batch log lines too).

A pipelining agency sends many batches at once, so one sync acknowledges many. A batch whose
connection closed, or whose session a newer one superseded, since it arrived is not stored: the
storage asks, under its lock, whether each batch's session is still live (`Storage.store_batches`),
so a new session's RESUME is never overtaken by an older connection's batch.
"""

from __future__ import annotations

import logging

from . import protocol
from .board import Board
from .durable import WriteFailed
from .protocol import ErrorCode
from .refusals import batch_refusal, log_refused_batch
from .session import Outbox, Session
from .storage import Outcome, Storage, Verdict

log = logging.getLogger(__name__)


class GroupCommit:
    def __init__(self, storage: Storage, board: Board, outbox: Outbox, worker: int) -> None:
        self.storage = storage
        self.board = board
        self.outbox = outbox
        self.worker = worker
        self.pending: list[tuple[Session, protocol.Bet]] = []

    def add(self, session: Session, bet: protocol.Bet) -> None:
        """Keep `bet` for this turn's commit; it is answered then, in order."""
        self.pending.append((session, bet))
        session.pending += 1

    def run(self) -> None:
        """Store every batch kept so far with one append and one sync, then answer each."""
        if not self.pending:
            return
        pending, self.pending = self.pending, []
        for session, _ in pending:
            session.pending = 0

        def live(index: int) -> bool:  # asked under the storage's lock
            session = pending[index][0]
            return session.open and session.agency is not None and self.board.current(session.agency, session.token)

        try:
            verdicts = self.storage.store_batches([bet for _, bet in pending], live)
        except WriteFailed as err:
            storage_failed(self.outbox, [(session, bet.first) for session, bet in pending], err, self.worker)
            return
        debug = log.isEnabledFor(logging.DEBUG)
        for (session, bet), verdict in zip(pending, verdicts, strict=True):
            self._answer(session, bet, verdict, debug)

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
