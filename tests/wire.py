"""Test-side helpers for the wire protocol that the central itself never needs: reading one frame
from a blocking exact-read callable, and building a BET's lines from field tuples."""

from __future__ import annotations

from collections.abc import Callable

from lottery import bets, protocol


class TruncatedFrame(Exception):
    """The peer closed the connection in the middle of a frame."""


def read_frame(read_exact: Callable[[int], bytes]) -> protocol.Message:
    """Read one message with `read_exact(n)`, which returns exactly n bytes or raises."""
    msg_type, length = protocol.parse_header(read_exact(protocol.HEADER_SIZE))
    return protocol.decode_payload(msg_type, read_exact(length) if length else b"")


def bet_lines(rows: list[tuple[str, str, str, str, str]]) -> bytes:
    """The `lines` block of a BET from (first, last, document, birthdate, number) tuples."""
    return b"".join(bets.bet_line(row) for row in rows)
