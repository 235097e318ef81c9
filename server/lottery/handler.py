"""Message handling: one decoded message of one session in, its answers and effects out.

No socket here: answers go to an `Outbox`, batches to the group commit, and the storage is the
only other thing touched, so every rule is unit-tested message by message without processes
(tests/test_handler.py). Answers on a session leave in the order its requests came in: before
any other answer, the session's batches waiting for the group commit are committed and answered.

What each message does: ECHO is echoed (on the health port only while the central can store, see
`HealthCheck`); HELLO is answered RESUME (what is stored of the agency); BET is validated and kept
for the group commit; FIN is recorded; a WINNERS_QUERY is answered from the draw's result, or
held until the round is drawn. A message naming another agency than the session's certificate
is refused with AGENCY_MISMATCH.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from . import protocol
from .commit import GroupCommit
from .protocol import ErrorCode, MsgType, ProtocolError
from .refusals import log_refused_payload
from .session import Outbox, Session
from .storage import Storage

log = logging.getLogger(__name__)

CLIENT_TYPES = frozenset({MsgType.ECHO, MsgType.HELLO, MsgType.BET, MsgType.FIN, MsgType.WINNERS_QUERY})


class Handler:
    """`winners` gives the draw's result by agency, or None before the draw; `health_problem`
    says why the central cannot store now, or None. Batches and FINs go to the group commit
    (commit.py), which answers them."""

    def __init__(
        self,
        storage: Storage,
        commit: GroupCommit,
        outbox: Outbox,
        winners: Callable[[], dict[int, list[str]] | None],
        health_problem: Callable[[], str | None],
        worker: int,
    ) -> None:
        self.storage = storage
        self.commit = commit
        self.outbox = outbox
        self.winners = winners
        self.health_problem = health_problem
        self.worker = worker

    # --- answers ------------------------------------------------------------------------------

    def reply(self, session: Session, msg: protocol.Message) -> None:
        self.reply_frame(session, protocol.encode(msg))

    def reply_frame(self, session: Session, frame: bytes) -> None:
        """Queue one answer, after the session's batches waiting for the group commit."""
        if session.pending:
            self.commit.run()
        if session.open:
            self.outbox.send(session, frame)

    def refuse(self, session: Session, err: ProtocolError, logged: bool = False) -> None:
        """Answer ERROR; close after it if the code says so. `logged`: the caller logged it."""
        if not logged:
            log.warning(
                "action: receive_message | result: fail | peer: %s | code: %s | reason: %s",
                session.peer,
                err.code.name,
                err.reason,
            )
        self.reply(session, protocol.Error(err.code, err.position, err.reason))
        if err.code in protocol.CLOSING_CODES:
            self.outbox.close_after_send(session)

    # --- dispatch -----------------------------------------------------------------------------

    def handle(self, session: Session, msg_type: int, payload: bytes) -> None:
        """Handle one message of `session` (its header already checked)."""
        if session.health:
            self._health(session, msg_type, payload)
            return
        if msg_type not in CLIENT_TYPES:
            self.refuse(session, ProtocolError(ErrorCode.UNKNOWN_TYPE, f"type {msg_type} not accepted from an agency"))
            return
        try:
            msg = protocol.decode_payload(msg_type, payload)
            if isinstance(msg, (protocol.Hello, protocol.Bet, protocol.Fin, protocol.WinnersQuery)):
                position = msg.first if isinstance(msg, protocol.Bet) else 0
                if msg.agency != session.agency:
                    raise ProtocolError(
                        ErrorCode.AGENCY_MISMATCH,
                        f"the certificate is agency-{session.agency}'s, the message names agency {msg.agency}",
                        position,
                    )
        except ProtocolError as err:
            if msg_type == MsgType.BET:
                log_refused_payload(payload, err)
            self.refuse(session, err, logged=msg_type == MsgType.BET)
            return
        if isinstance(msg, protocol.Bet):
            self.commit.add(session, msg)  # answered after this turn's group commit
        elif isinstance(msg, protocol.Echo):
            log.info("action: echo | result: success | peer: %s | bytes: %d", session.peer, len(msg.payload))
            self.reply(session, msg)
        elif isinstance(msg, protocol.Hello):
            self._hello(session, msg.agency)
        elif isinstance(msg, protocol.Fin):
            self.commit.add(session, msg)  # answered after this turn's group commit, after its batches
        elif isinstance(msg, protocol.WinnersQuery):
            self._winners_query(session, msg.agency)

    def _health(self, session: Session, msg_type: int, payload: bytes) -> None:
        """The health port: ECHO only, and only while the central can store."""
        if msg_type != MsgType.ECHO:
            self.refuse(session, ProtocolError(ErrorCode.UNKNOWN_TYPE, "the health port answers ECHO only"))
            self.outbox.close_after_send(session)
            return
        problem = self.health_problem()
        if problem is not None:
            log.warning("action: health | result: fail | peer: %s | reason: %s", session.peer, problem)
            self.reply(session, protocol.Error(ErrorCode.INTERNAL_ERROR, 0, f"cannot store: {problem}"))
            self.outbox.close_after_send(session)
            return
        log.debug("action: echo | result: success | peer: %s | bytes: %d", session.peer, len(payload))
        self.reply_frame(session, protocol.frame(MsgType.ECHO, payload))

    def _hello(self, session: Session, agency: int) -> None:
        if session.pending:
            self.commit.run()  # RESUME must count this session's batches before it
        state, finished = self.storage.resume(agency)
        log.info(
            "action: hello | result: success | agency: %d | stored: %d | chain: %08x | finished: %d | peer: %s",
            agency,
            state.stored,
            state.chain,
            finished,
            session.peer,
        )
        self.reply(session, protocol.Resume(agency, state.stored, state.chain, finished))

    def _winners_query(self, session: Session, agency: int) -> None:
        if self.winners() is None:
            if session.pending:
                self.commit.run()  # its batches are answered before the query is held
            session.held = agency  # answered by release_held; never with partial results
            log.info("action: consulta_ganadores | result: in_progress | agency: %d | waiting: draw", agency)
            return
        self.answer_winners(session, agency)

    def answer_winners(self, session: Session, agency: int) -> None:
        documents = (self.winners() or {}).get(agency, [])
        for page in protocol.winners_pages(agency, documents):
            self.reply_frame(session, page)
        log.info(
            "action: consulta_ganadores | result: success | agency: %d | cant_ganadores: %d", agency, len(documents)
        )

    def release_held(self, session: Session) -> bool:
        """Answer the session's held winners query once the round is drawn; True if it did."""
        if session.held is None or self.winners() is None:
            return False
        agency, session.held = session.held, None
        self.answer_winners(session, agency)
        return True
