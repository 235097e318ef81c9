"""A connection's protocol state, as the handler and the group commit see it: who it is, what it
waits for, where its answers go. No socket: the worker pairs each Session with its Connection
and delivers what the handler sends through an `Outbox`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(eq=False)
class Session:
    peer: str  # "address:port", for the log
    health: bool = False  # on the health port: ECHO only
    agency: int | None = None  # the verified identity, once the TLS handshake is done
    token: int = 0  # its token on the shared board (board.py): current while no newer session exists
    pending: int = 0  # batches and FINs kept for the group commit or in flight, not answered yet
    held: int | None = None  # the agency whose winners query waits for the draw
    open: bool = True  # False once its connection is closed
    closing: bool = False  # its last answer is queued; nothing more is read or answered


class Outbox(Protocol):
    """Where a session's answers go (the worker: its connection's output buffer)."""

    def send(self, session: Session, frame: bytes) -> None:
        """Queue one whole frame for the session's peer."""

    def close_after_send(self, session: Session) -> None:
        """Close the session's connection once what is queued has left."""
