"""The central's log output (server/lottery/logs.py): the line format, and held lines.

The fast formatter must write exactly what logging.Formatter writes with the same format (the
log lines are a contract), and each line must go out as one write of the line and its newline.
"""

from __future__ import annotations

import logging
import os
import sys

import pytest

from lottery import logs


def record(message: str, *args: object, level: int = logging.INFO, created: float | None = None,
           exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("boom")
        except ValueError:
            exc_info = sys.exc_info()
    made = logging.LogRecord("lottery.test", level, __file__, 1, message, args, exc_info)
    if created is not None:
        made.created = created
    return made


@pytest.mark.parametrize(
    "made",
    [
        record("action: apuesta_recibida | result: success | cantidad: %d | agency: %d | seq: %d", 100, 3, 201),
        record("action: handshake | result: fail | peer: %s | reason: %s", "127.0.0.1:5", "ñandú %d", level=30),
        record("action: storage_sync | result: fail | error: %s", "EIO", level=logging.CRITICAL, created=0.5),
        record("100% literal, no arguments", created=1_800_000_000.999),
        record("action: crash | result: fail", level=logging.ERROR, exc=True),
    ],
)
def test_the_fast_formatter_writes_what_logging_formatter_writes(made: logging.LogRecord) -> None:
    expected = logging.Formatter(logs.FORMAT, logs.DATE_FORMAT).format(made)
    made.exc_text = None  # computed by the first formatter; the second computes its own
    assert logs.LineFormatter().format(made) == expected


def test_the_date_follows_the_clock_across_seconds() -> None:
    formatter, reference = logs.LineFormatter(), logging.Formatter(logs.FORMAT, logs.DATE_FORMAT)
    for created in (1_800_000_000.1, 1_800_000_000.9, 1_800_000_001.0, 1_800_000_000.5, 1_800_086_400.0):
        made = record("tick", created=created)
        assert formatter.format(made) == reference.format(made)


def test_each_line_is_one_write_of_the_formatted_line_and_its_newline() -> None:
    read_end, write_end = os.pipe()
    try:
        handler = logs.FdHandler(write_end)
        handler.setFormatter(logs.LineFormatter())
        handler.handle(record("action: fin | result: success | agency: %d | bets: %d", 4, 1000, created=0.0))
        written = os.read(read_end, 1 << 16)
    finally:
        os.close(read_end)
        os.close(write_end)
    assert written.endswith(b" INFO action: fin | result: success | agency: 4 | bets: 1000\n")
    assert written.count(b"\n") == 1
