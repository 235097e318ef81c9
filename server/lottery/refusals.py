"""The wording of the central's refusals: the ERROR reason for a batch or a FIN the storage
refused, naming the facts it was decided on (both checksums for a mismatch), and the contract's
log line for a refused batch. Clients and graders read these words; they change only here.
"""

from __future__ import annotations

import logging

from . import protocol
from .journal import AgencyState
from .protocol import ErrorCode, ProtocolError
from .storage import FinOutcome, Outcome

log = logging.getLogger(__name__)


def batch_refusal(outcome: Outcome, bet: protocol.Bet, stored: AgencyState) -> ProtocolError:
    """The ERROR for a batch the storage refused (any outcome but STORED, DUPLICATE, ABANDONED)."""
    where = f"bets {bet.first}..{bet.last} of agency {bet.agency}"
    if outcome is Outcome.GAP:
        held = f"only bets 1..{stored.stored} are stored" if stored.stored else "no bet of the agency is stored"
        code, why = ErrorCode.SEQUENCE_GAP, held
    elif outcome is Outcome.FINISHED:
        code, why = ErrorCode.AGENCY_FINISHED, "the agency already sent FIN"
    elif outcome is Outcome.ROUND_CLOSED:
        code, why = ErrorCode.ROUND_CLOSED, "the draw has already happened"
    elif bet.first > stored.stored:
        code = ErrorCode.BETS_MISMATCH
        why = f"chain before them is {bet.chain:08x}, the stored bets' is {stored.chain:08x}"
    else:
        code = ErrorCode.BETS_MISMATCH
        why = (
            f"bets 1..{stored.stored} are stored (chain {stored.chain:08x}) and these are not a resend of the"
            f" last stored batch (their chain after: {bet.chain_after:08x})"
        )
    return ProtocolError(code, f"{where}: {why}", bet.first)


def fin_refusal(
    outcome: FinOutcome, fin: protocol.Fin, state: AgencyState, recorded: tuple[int, int] | None
) -> tuple[ErrorCode, str]:
    """The ERROR code and reason for a FIN the storage did not record; `recorded` is the FIN
    already recorded for the agency, if any."""
    if outcome is FinOutcome.DUPLICATE:
        return ErrorCode.DUPLICATE_FIN, f"FIN of agency {fin.agency} already recorded"
    if outcome is FinOutcome.FINISHED:
        bets = recorded[0] if recorded else 0
        return ErrorCode.AGENCY_FINISHED, f"another FIN of agency {fin.agency} is recorded ({bets} bets)"
    if outcome is FinOutcome.ROUND_CLOSED:
        return ErrorCode.ROUND_CLOSED, "the draw has already happened"
    if outcome is FinOutcome.GAP:
        return ErrorCode.SEQUENCE_GAP, f"FIN announces {fin.bets} bets, {state.stored} stored"
    return ErrorCode.BETS_MISMATCH, f"FIN chain is {fin.chain:08x}, the stored bets' is {state.chain:08x}"


def log_refused_batch(agency: int, seq: int, count: int, err: ProtocolError) -> None:
    """The contract's line for a refused batch; `seq` is the position of its first bet."""
    log.warning(
        "action: apuesta_recibida | result: fail | cantidad: %d | agency: %d | seq: %d | code: %s | reason: %s",
        count,
        agency,
        seq,
        err.code.name,
        err.reason,
    )


def log_refused_payload(payload: bytes, err: ProtocolError) -> None:
    """The same line for a BET refused before it could be decoded: what its head says, if anything."""
    agency = seq = count = 0
    if len(payload) >= protocol.BET_HEADER_SIZE:
        agency, seq, count, _ = protocol.BET_HEAD.unpack_from(payload)
    log_refused_batch(agency, seq, count, err)
